"""What every command group shares: the context the root hands down (settings built on first
use), ``--json`` printing, and the option decorators for choosing prompts and sampling (one
declaration for ``generate`` and ``graph run``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..vocab import TASK_TYPES

if TYPE_CHECKING:
    from ..settings import Settings
    from ..store import Store


class Context:
    """What the root command hands its subcommands: settings built on first use."""

    def __init__(self, home: Path | None, env_file: Path | None):
        self._home = home
        self._env_file = env_file
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from ..settings import Settings

            overrides = {"home": self._home} if self._home else {}
            self._settings = Settings.load(env_file=self._env_file, **overrides)
            self._settings.apply_offline_policy()
        return self._settings

    def open_store(self, *, create: bool = False) -> Store:
        from ..store import Store

        return Store.open(self.settings.db_path, create=create)


pass_context = click.make_pass_decorator(Context)


def prompt_selection(command):
    """-n/--limit, -t/--task-type, -p/--prompt: which prompts a job works on."""
    options = [
        click.option("-n", "--limit", type=click.IntRange(min=1), help="Only the first N prompts."),
        click.option(
            "-t",
            "--task-type",
            "task_types",
            multiple=True,
            type=click.Choice(TASK_TYPES),
            help="Only prompts of this task type (repeatable).",
        ),
        click.option(
            "-p", "--prompt", "prompt_ids", multiple=True, help="Only this prompt id (repeatable)."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def sampling_options(command):
    """-k and the sampling settings; unset ones come from CRITICLOOP_GENERATION__*."""
    options = [
        click.option(
            "-k", "--candidates", type=click.IntRange(1, 32), help="Candidates per prompt."
        ),
        click.option(
            "--max-new-tokens", type=click.IntRange(min=1), help="New tokens per candidate."
        ),
        click.option("--temperature", type=click.FloatRange(min=0), help="0 for greedy decoding."),
        click.option(
            "--top-p", type=click.FloatRange(min=0, max=1, min_open=True), help="Nucleus mass."
        ),
        click.option("--seed", type=int, help="Sampling seed; a new seed gives new candidates."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def sampling_from(settings: Settings, max_new_tokens, temperature, top_p, seed):
    from ..agents import Sampling

    defaults = settings.generation
    return Sampling(
        max_new_tokens=max_new_tokens or defaults.max_new_tokens,
        temperature=defaults.temperature if temperature is None else temperature,
        top_p=top_p or defaults.top_p,
        seed=defaults.seed if seed is None else seed,
    )


def print_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, default=str))
