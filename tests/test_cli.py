"""The command line: help everywhere, one-line errors, light imports. Most tests call the CLI's
``main`` in this process; the ones here that prove the console script itself run it as a process."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from conftest import run_cli, run_process
from criticloop import cli as cli_module


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


ALL_COMMANDS = list(_commands(cli_module.cli))


def test_expected_commands_exist():
    assert {("init",), ("import",), ("generate",), ("pairs", "export"), ("status",)} <= set(
        ALL_COMMANDS
    )


@pytest.mark.parametrize("path", [(), *ALL_COMMANDS], ids=lambda p: " ".join(p) or "criticloop")
def test_every_command_has_help(path):
    result = run_cli(*path, "--help", check=True)
    assert result.stdout.startswith("Usage: criticloop")
    command = cli_module.cli
    for name in path:
        command = command.commands[name]
    assert command.help and len(command.help) > 20
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"


HEAVY = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "crewai",
    "textual",
    "langgraph",
    "sqlite_utils",
    "pydantic_settings",
)


def test_help_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from criticloop.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "module",
    [
        "criticloop.store",
        "criticloop.settings",
        "criticloop.agents",
        "criticloop.cli",
        "criticloop.training",
    ],
)
def test_headless_modules_keep_training_and_ui_stacks_out(module):
    code = f"import sys, {module}\nprint([m for m in ('trl', 'peft', 'textual', 'crewai', 'torch') if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_usage_errors_are_one_line_exit_2():
    result = run_process("generate", "--candidates", "0")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--candidates" in result.stderr and "Traceback" not in result.stderr
    result = run_process("frobnicate")
    assert result.returncode == 2 and "No such command 'frobnicate'" in result.stderr


def test_commands_before_init_say_what_to_do():
    result = run_cli("status")
    assert result.returncode == 1
    assert "run `criticloop init` first" in result.stderr


def test_init_then_status(hermetic):
    init = run_process("init", "--json", check=True)
    payload = json.loads(init.stdout)
    assert payload["database"] == str(hermetic / "criticloop.db")
    assert payload["counts"]["prompts"] == 40
    assert (hermetic / "models").is_dir() and (hermetic / "adapters").is_dir()
    status = json.loads(run_process("status", "--json", check=True).stdout)
    assert status["offline"] is True and status["counts"]["brands"] == 3
    assert status["last_graph_run"] == "none yet (criticloop graph run)"


def test_status_tells_a_live_run_from_one_that_stopped(store):
    import os

    from criticloop.cli._data import _run_line

    run = store.start_run("graph", {})
    assert _run_line(store.latest_run("graph")).startswith(
        f"{run} running in process {os.getpid()}"
    )
    store.db["runs"].update(run, {"pid": 2**22 + 12345})  # killed: no such process
    assert _run_line(store.latest_run("graph")) == (
        f"{run} stopped unfinished: the next graph run continues it"
    )
    store.finish_run(run, "done", {})
    assert _run_line(store.latest_run("graph")).startswith(f"{run} done at 20")


def test_data_home_that_cannot_be_used(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("CRITICLOOP_HOME", str(blocker / "home"))
    result = run_process("init")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("criticloop: error: cannot open database")


def test_corrupt_database_is_one_line(hermetic):
    hermetic.mkdir(parents=True)
    (hermetic / "criticloop.db").write_bytes(b"garbage" * 1000)
    result = run_process("status")
    assert result.returncode == 1
    assert result.stderr.startswith("criticloop: error: cannot open database")
    assert "Traceback" not in result.stderr
