"""The architecture holds: the import contracts in pyproject.toml (floors, no circles, private
modules kept private) and import hygiene (a module imports only what it needs: the headless
floors never load the reviewer app, the training stack or CrewAI, and ``--help`` loads no
torch). Each module is imported alone, as a user's process would: in a process forked from
one that holds only the third-party floor (see FLOOR), no criticloop module."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
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


# Importing a module alone costs seconds of torch, transformers and LangGraph, 94 times over.
# One interpreter imports the third-party floor once (none of it is HEAVY), then forks a child
# per module: each child starts from that floor with no criticloop module loaded, so what it
# imports, and whether it imports at all, is its own.
FLOOR = (
    "numpy", "torch", "transformers", "safetensors", "pydantic", "pydantic_settings", "click",
    "yaml", "httpx", "sqlite_utils", "langchain_core.runnables", "langchain_core.tracers",
    "langsmith.run_trees", "langgraph.graph", "langgraph.checkpoint.sqlite", "scipy.stats",
    "sklearn.linear_model", "datasets", "accelerate",
)  # fmt: skip
_FORKER = """
import importlib, json, os, sys
for floor in FLOOR:
    importlib.import_module(floor)
early = [m for m in HEAVY if m in sys.modules] + [m for m in sys.modules if m.startswith("criticloop")]
if early:
    sys.exit("the floor loads " + repr(early))
names, running, found = sys.argv[1:], {}, {}

def reap():
    pid, status = os.wait()
    name, read = running.pop(pid)
    with os.fdopen(read) as pipe:
        found[name] = pipe.read() if status == 0 else "ERROR " + pipe.read()[-500:]

for name in names:
    if len(running) == 2:
        reap()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        out = os.fdopen(write, "w")
        try:
            importlib.import_module(name)
            out.write(repr([m for m in HEAVY if m in sys.modules]))
            code = 0
        except BaseException as exc:
            import traceback
            out.write(traceback.format_exc())
            code = 1
        out.close()
        os._exit(code)
    os.close(write)
    running[pid] = (name, read)
while running:
    reap()
print(json.dumps(found))
"""


def _loaded_after_import(names: list[str]) -> dict[str, str]:
    """Per module: the heavy packages in sys.modules after importing it alone (or its error)."""
    code = f"FLOOR = {FLOOR!r}\nHEAVY = {HEAVY!r}\n" + _FORKER
    result = subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


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
    loaded = _loaded_after_import(modules)
    assert sorted(loaded) == modules
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
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "False"
