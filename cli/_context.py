"""What every command group shares: the context the root hands down (settings built on first
use), ``--json`` printing, and the option decorators for choosing prompts and sampling (one
declaration for ``generate`` and ``graph run``)."""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..vocab import TASK_TYPES

if TYPE_CHECKING:
    from ..agents import Sampling
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


@dataclass(frozen=True)
class Selection:
    """Which prompts a job works on (-n, -t, -p)."""

    limit: int | None
    task_types: tuple[str, ...]
    prompt_ids: tuple[str, ...]


@dataclass(frozen=True)
class SamplingChoice:
    """-k and the sampling options as given; unset ones come from CRITICLOOP_GENERATION__*."""

    candidates: int | None
    max_new_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None

    def k(self, settings: Settings) -> int:
        return self.candidates or settings.generation.candidates

    def sampling(self, settings: Settings) -> Sampling:
        from ..agents import Sampling

        defaults = settings.generation
        return Sampling(
            max_new_tokens=self.max_new_tokens or defaults.max_new_tokens,
            temperature=defaults.temperature if self.temperature is None else self.temperature,
            top_p=self.top_p or defaults.top_p,
            seed=defaults.seed if self.seed is None else self.seed,
        )


def _bundled(options: list, into: type, name: str):
    """A decorator adding ``options`` to a command whose callback gets them as one ``name``
    argument of type ``into`` (one declaration for every command that takes them)."""
    fields = [f.name for f in dataclasses.fields(into)]

    def decorate(function):
        @functools.wraps(function)
        def callback(*args, **kwargs):
            kwargs[name] = into(**{f: kwargs.pop(f) for f in fields})
            return function(*args, **kwargs)

        for option in reversed(options):
            callback = option(callback)
        return callback

    return decorate


prompt_selection = _bundled(
    [
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
    ],
    Selection,
    "selection",
)
sampling_options = _bundled(
    [
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
    ],
    SamplingChoice,
    "choice",
)


def print_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, default=str))


def dataset_names(files: tuple[Path, ...], dataset: str | None) -> list[str]:
    """The dataset name of each imported file: ``--dataset`` or its file name, checked."""
    from ..errors import InputError
    from ..store import check_dataset, default_dataset

    if dataset:
        check_dataset(dataset)
    names = []
    for path in files:
        name = dataset or default_dataset(path)
        try:
            check_dataset(name)
        except InputError:
            raise InputError(
                f"the file name makes the dataset name {name!r}, which cannot be used: "
                "give --dataset",
                source=str(path),
            ) from None
        names.append(name)
    return names


def echo_skipped(summaries: list[dict[str, Any]]) -> None:
    """The first few skipped rows of each reason, per imported file, on stderr."""
    for summary in summaries:
        for reason, examples in sorted(summary["skip_examples"].items()):
            more = summary["skipped"][reason] - len(examples)
            tail = f" (and {more} more)" if more > 0 else ""
            click.echo(f"skipped {reason}: {'; '.join(examples)}{tail}", err=True)
