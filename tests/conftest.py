"""Hermetic tests: every test gets its own data home and ignores the developer's .env.

The bundled policy is converted from GGUF once per session into ``models_cache`` and linked
into each test's data home, so tests that load it pay the conversion only once.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from criticloop.settings import Settings
from criticloop.store import DEMO_FILES, Store, read_records

REPO = Path(__file__).resolve().parent.parent
# Before anything imports huggingface_hub (which reads these once): tests never touch a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# `faketime DATE make test` proves no test reads the calendar. libfaketime 0.9 needs help with
# Python's clocks: see tests/faketime/sitecustomize.py, loaded here and by every subprocess.
if "faketime" in os.environ.get("LD_PRELOAD", ""):
    if os.environ.get("FAKETIME_DONT_FAKE_MONOTONIC") != "1":
        pytest.exit(
            "under faketime, run `faketime DATE make test` (or set FAKETIME_DONT_FAKE_MONOTONIC=1):"
            " with a faked monotonic clock every timed wait in Python blocks forever",
            returncode=2,
        )
    _SHIM = Path(__file__).parent / "faketime"
    _PATH = [str(_SHIM), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in _PATH if p)
    runpy.run_path(str(_SHIM / "sitecustomize.py"))
_FOREIGN = ("LANGSMITH_", "LANGCHAIN_", "OPENAI_", "ANTHROPIC_", "CREWAI_STORAGE_DIR")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-snapshots",
        action="store_true",
        help="Rewrite the reviewer app's text snapshots (tests/snapshots) from this run.",
    )


@pytest.fixture(autouse=True)
def hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("CRITICLOOP_") or name.startswith(_FOREIGN):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("CRITICLOOP_HOME", str(home))
    # graph run trains after judging by default; the tests that want training ask for it.
    monkeypatch.setenv("CRITICLOOP_TRAINING__NIGHTLY", "never")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # no .env here unless a test writes one
    return home


@pytest.fixture
def settings(hermetic: Path) -> Settings:
    return Settings.load(env_file=None)


@pytest.fixture
def store(settings: Settings):
    with Store.open(settings.db_path) as opened:
        yield opened


@pytest.fixture
def demo_store(store: Store) -> Store:
    store.import_records([r for path in DEMO_FILES for r in read_records(path)])
    return store


@pytest.fixture(scope="session")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir holding the converted bundled policy, shared by the whole session (and by
    the session's xdist workers: the conversion takes a file lock, the second waits for it)."""
    from criticloop.agents import ensure_bundled_policy

    if os.environ.get("PYTEST_XDIST_WORKER"):
        cache = tmp_path_factory.getbasetemp().parent / "models"
    else:
        cache = tmp_path_factory.mktemp("models")
    ensure_bundled_policy(cache)
    return cache


def tiny_llama(models_cache: Path, path: Path, head: str, **extra) -> Path:
    """A Llama of random weights, 2 layers of width 32, with SmolLM2's tokenizer and chat
    template, saved to ``path``: for what does not depend on a model's quality (resuming, the
    wiring of a head), at a fraction of the bundled model's cost."""
    import transformers
    from transformers import AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(models_cache / "smollm2-135m-instruct")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        **extra,
    )
    getattr(transformers, head)(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Path:
    """A tiny causal Llama to train as the policy (``CRITICLOOP_POLICY__MODEL``)."""
    return tiny_llama(models_cache, tmp_path_factory.mktemp("tiny") / "policy", "LlamaForCausalLM")


@pytest.fixture
def model_home(hermetic: Path, models_cache: Path) -> Path:
    """The test's data home with the converted policy already in place."""
    hermetic.mkdir(parents=True, exist_ok=True)
    (hermetic / "models").symlink_to(models_cache, target_is_directory=True)
    return hermetic


def run_process(
    *args: str, check: bool = False, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """Run the installed ``criticloop`` console script in a real subprocess: for what only a
    process shows (a kill, a second process racing the first, what a command imports, the
    console script itself)."""
    exe = Path(sys.executable).parent / "criticloop"
    result = subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(f"criticloop {' '.join(args)} -> {result.returncode}\n{result.stderr}")
    return result


def run_cli(
    *args: str, check: bool = False, env: dict[str, str] | None = None, **_: object
) -> subprocess.CompletedProcess:
    """Run ``criticloop ARGS`` in this process, through the console script's own ``main``
    (the same one-line errors and exit codes), with stdout and stderr captured apart.

    A subprocess pays about 4 s for imports and the first model load; in-process the second
    command on a model costs a second. ``env`` replaces the environment for the call, as
    ``subprocess.run(env=...)`` does. An exception that escapes ``main`` is a traceback on
    stderr and exit 1, as the console script would show it.
    """
    import logging
    import traceback

    from click.testing import CliRunner
    from criticloop.cli import main

    saved = dict(os.environ)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    runner = CliRunner()
    code = 0
    try:
        with runner.isolation() as (out, err, _):
            # the criticloop logger's handler was made for the stderr of the first command
            # (pytest adds capture handlers of its own to the logger: those stay as they are)
            for handler in logging.getLogger("criticloop").handlers:
                if type(handler) is logging.StreamHandler:
                    handler.setStream(sys.stderr)
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # noqa: BLE001  (what the console script would print)
                sys.stderr.write(traceback.format_exc())
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    result = subprocess.CompletedProcess(["criticloop", *args], code, stdout, stderr)
    if check and code != 0:
        raise AssertionError(f"criticloop {' '.join(args)} -> {code}\n{stderr}")
    return result


def kill_after_first_checkpoint(*args: str, home: Path) -> dict:
    """Start ``criticloop train ARGS`` (``--launcher subprocess --save-steps 1 --json``) as a
    real process, SIGKILL its worker once the job's first checkpoint is complete
    (``trainer_state.json`` is written last), and return the parent's JSON summary: the job as
    a machine crash mid-training leaves it."""
    import json
    import signal
    import time

    exe = Path(sys.executable).parent / "criticloop"
    parent = subprocess.Popen(
        [str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    training = home / "training"
    deadline = time.monotonic() + 300
    while not list(training.glob("*/checkpoints/checkpoint-1/trainer_state.json")):
        assert parent.poll() is None, parent.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.5)
    for pid in _worker_pids(training):
        os.kill(pid, signal.SIGKILL)
    out, err = parent.communicate(timeout=120)
    assert parent.returncode == 1, err
    return json.loads(out)


def _worker_pids(job_dir_parent: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "criticloop.training.worker" in cmdline and str(job_dir_parent) in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="session")
def bundled_policy(models_cache: Path):
    """The bundled SmolLM2 policy, loaded once per session."""
    from criticloop.agents import Policy

    settings = Settings(_env_file=None, home=models_cache.parent / "policy-home")
    settings.models_dir.parent.mkdir(parents=True, exist_ok=True)
    # The session's xdist workers share models_cache's folder: the first to get here links it.
    with contextlib.suppress(FileExistsError):
        settings.models_dir.symlink_to(models_cache, target_is_directory=True)
    return Policy.load(settings)


@pytest.fixture(scope="session")
def bundled_embedder():
    from criticloop.agents import load_embedder

    return load_embedder(Settings(_env_file=None))


@pytest.fixture
def signals(bundled_embedder, bundled_policy):
    """Fresh shared-signal caches over the real bundled embedder and policy."""
    from criticloop.agents import Signals

    return Signals(bundled_embedder, bundled_policy)


# ---- the review queue: escalated cases from a real graph run ------------------------------------

REVIEW_CASES = [
    {
        "kind": "brand",
        "id": "lumen",
        "name": "Lumen Lamps",
        "voice": {"tone": "calm, practical", "preferred_terms": ["warm light"]},
        "compliance": {"required_disclosure": "Sponsored", "banned_claims": ["guaranteed"]},
    },
    {
        "kind": "campaign",
        "id": "lumen-desk",
        "brand": "lumen",
        "name": "Desk lamp",
        "product": "Lumen Desk Lamp",
        "ad_copy": "The Lumen Desk Lamp gives soft, even light for late reading without glare.",
        "keywords": ["reading", "desk"],
    },
    {
        "id": "read",
        "task_type": "ad_insertion",
        "campaign": "lumen-desk",
        "prompt": "How can I read late at night without tiring my eyes?",
        "candidates": [
            "Keep the page evenly lit and rest your eyes every half hour. Sponsored: the Lumen "
            "Desk Lamp gives soft, even light for late reading.",
            "Use a bright light and take breaks. Sponsored: the Lumen Desk Lamp helps.",
        ],
    },
    {
        "id": "capital",
        "prompt": "What is the capital of France?",
        "candidates": ["The capital of France is Paris.", "Paris is the capital city of France."],
    },
    {
        "id": "picnic",
        "prompt": "Give me three tips for a rainy-day picnic.",
        "candidates": [
            "1. Pick a covered spot. 2. Pack food that stays good when damp. 3. Bring towels.",
            "Find a pavilion, bring a waterproof blanket, and pack warm drinks in a flask.",
        ],
    },
    {
        "id": "sums",
        "messages": [
            {"role": "user", "content": "I am checking my homework."},
            {"role": "assistant", "content": "Sure, what is the question?"},
            {"role": "user", "content": "What is 12 times 11?"},
        ],
        "candidates": [
            "12 times 11 is 132.",
            "12 times 11 is 132, since 12 x 10 = 120 and 120 + 12 = 132.",
        ],
    },
]


def copy_database(source: Path, target: Path) -> None:
    """Copy a live SQLite file (WAL included) with SQLite's backup API."""
    import sqlite3

    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


@pytest.fixture(scope="session")
def review_template(tmp_path_factory, bundled_policy, bundled_embedder) -> tuple[Path, str]:
    """A data home whose graph run escalated every case to people (real critics, real
    checkpointed threads waiting at their interrupt()), built once per session."""
    import json
    import re

    from criticloop.agents import Sampling
    from criticloop.graphs.run import RunOptions, run_feedback
    from criticloop.reward import DEFAULT_PROFILES

    home = tmp_path_factory.mktemp("review-template")
    profiles = home / "profiles.toml"
    text = DEFAULT_PROFILES.read_text()
    text = re.sub(r"^min_confidence = .*$", "min_confidence = 1.0", text, count=1, flags=re.M)
    text = re.sub(r"^good_enough = .*$", "good_enough = 0.0", text, count=1, flags=re.M)
    profiles.write_text(text)
    cases = home / "cases.jsonl"
    cases.write_text("".join(json.dumps(row) + "\n" for row in REVIEW_CASES))
    settings = Settings(_env_file=None, home=home, profiles=profiles)
    with Store.open(settings.db_path) as store:
        store.import_records(read_records(cases))
    summary = run_feedback(
        settings,
        RunOptions(
            sampling=Sampling(32, 0.0, 1.0, 0),
            candidates=2,
            concurrency=1,
            human_budget=20,
            progress=False,
        ),
        load_policy=lambda: bundled_policy,
        load_embedder_fn=lambda: bundled_embedder,
    )
    assert summary["waiting"] == 4, summary
    return home, summary["run_id"]


@pytest.fixture
def review_home(hermetic: Path, review_template) -> Settings:
    """Settings over a fresh copy of the review template: four cases waiting for people."""
    template, _ = review_template
    for name in ("criticloop.db", "checkpoints.db"):
        copy_database(template / name, hermetic / name)
    return Settings.load(env_file=None)
