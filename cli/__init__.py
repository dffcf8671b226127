"""The ``criticloop`` command line: the one door users come in by.

    criticloop init                 # create the data home and load the demo data
    criticloop generate -k 2        # sample K candidates for every prompt with the local policy
    criticloop pairs export out.jsonl

The root group lives here and adds each group module's commands (the modules never import the
root). Only click is imported at module level: ``--help`` must answer instantly, so settings,
the store and the models are imported inside the commands. Library code raises
:class:`criticloop.errors.CriticloopError`; this module alone turns errors into one line on
stderr and an exit code (1: the operation failed, 2: bad usage, configuration or input).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ..errors import CriticloopError
from . import _calibrate, _data, _feedback, _graph, _labels, _traces, _train
from ._context import Context


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="criticloop")
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    help="Data home (database, checkpoints, models, adapters). Default: $CRITICLOOP_HOME or the "
    "user data directory.",
)
@click.option(
    "--env-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path(".env"),
    show_default=True,
    help="Read settings and keys from this file if it exists.",
)
@click.pass_context
def cli(ctx: click.Context, home: Path | None, env_file: Path) -> None:
    """criticloop: turn model outputs into training signal.

    Generates candidate responses with a local policy, has critic agents score them, turns the
    scores into rewards and DPO pairs, escalates uncertain cases to people, and trains LoRA
    adapters. Everything runs offline on the bundled models by default.
    """
    ctx.obj = Context(home, env_file)


for _group in (_data, _graph, _train, _calibrate, _labels, _feedback, _traces):
    for _command in _group.COMMANDS:
        cli.add_command(_command)


def _log_to_stderr() -> None:
    """criticloop's own progress notes go to stderr as ``criticloop: ...``; libraries stay quiet."""
    logger = logging.getLogger("criticloop")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("criticloop: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: domain and usage errors become one line and an exit code."""
    _log_to_stderr()
    try:
        code = cli.main(args=argv, prog_name="criticloop", standalone_mode=False)
    except CriticloopError as exc:
        click.echo(f"criticloop: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"criticloop: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("criticloop: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
