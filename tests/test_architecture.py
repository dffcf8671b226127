"""The architecture holds: the import contracts in pyproject.toml (floors, no circles, private
modules kept private) and import hygiene (a module imports only what it needs: the headless
floors never load the reviewer app, the training stack or CrewAI, and ``--help`` loads no
torch). Each module is imported alone in a fresh interpreter, as a user's process would."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import criticloop
import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a module may pull in, by where it sits: the reviewer app is textual's alone, the
# training runners load trl and peft when a job runs (never on import), CrewAI is loaded by the
# crew backend's adapter module only.
HEAVY = ("textual", "trl", "peft", "crewai")
ALLOWED = {
    "criticloop.tui": {"textual"},
    "criticloop.agents._crew_llm": {"crewai"},
}


def _modules() -> list[str]:
    names = [
        m.name
        for m in pkgutil.walk_packages(criticloop.__path__, "criticloop.")
        if not m.name.startswith(("criticloop.tests", "criticloop.bench"))
    ]
    return sorted(n for n in names if n.split(".")[1] not in ("tests", "bench"))


def _loaded_after_import(name: str) -> str:
    """The heavy packages in sys.modules after importing ``name`` alone (or its error)."""
    code = (
        f"import importlib, sys; importlib.import_module({name!r}); "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode:
        return "ERROR " + result.stderr[-500:]
    return result.stdout.strip().splitlines()[-1]


def test_the_import_contracts_hold():
    """cli > tui > graphs | training > reward > agents > store > settings > errors, vocab,
    progress; only cli imports cli and tui; no circles inside a package (the critic registry
    aside); private modules stay inside their package. `lint-imports` prints the details."""
    exe = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "4 kept, 0 broken" in result.stdout


def test_every_module_imports_alone_and_keeps_the_heavy_stacks_out():
    modules = _modules()
    assert {"criticloop.cli", "criticloop.reward", "criticloop.graphs.feedback"} <= set(modules)
    with ThreadPoolExecutor(4) as pool:
        loaded = dict(zip(modules, pool.map(_loaded_after_import, modules), strict=True))
    wrong = {}
    for name, found in loaded.items():
        if found.startswith("ERROR"):
            wrong[name] = found
            continue
        allowed = next((a for prefix, a in ALLOWED.items() if name.startswith(prefix)), set())
        extra = set(ast.literal_eval(found)) - allowed
        if extra:
            wrong[name] = sorted(extra)
    assert not wrong, wrong


@pytest.mark.parametrize(
    "group", ["graph", "train", "labels", "feedback", "calibrate", "traces", "pairs"]
)
def test_each_group_s_help_answers_without_torch(group):
    """The root's --help is checked in test_cli; each group's must be as light."""
    code = (
        "import sys\n"
        "from criticloop.cli import main\n"
        f"try:\n    main([{group!r}, '--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
