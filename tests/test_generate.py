"""`criticloop generate` end to end with the bundled policy: store, rerun, kill and resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli
from criticloop.store import Store

pytestmark = pytest.mark.slow

SMALL = ["--max-new-tokens", "8", "--batch-size", "4"]


def _generations(home: Path) -> list[dict]:
    with Store.open(home / "criticloop.db") as store:
        return list(store.db.query("SELECT * FROM generations ORDER BY prompt_id, candidate_index"))


def test_generate_stores_candidates_and_a_rerun_adds_nothing(model_home):
    run_cli("init", check=True)
    # persona chats and multi-turn feedback conversations: the prompts with the most context
    args = ["generate", "-k", "2", *SMALL]
    for prompt in ("persona-001", "persona-002", "feedback-001", "feedback-002"):
        args += ["-p", prompt]
    first = run_cli(*args, "--json", check=True)
    summary = json.loads(first.stdout)
    assert summary["prompts"] == 4 and summary["generated"] == 8
    assert summary["completion_tokens"] > 0 and summary["tokens_per_second"] > 0
    rows = _generations(model_home)
    assert len(rows) == 8
    assert all(r["text"] and r["model"].startswith("SmolLM2-135M-Instruct") for r in rows)
    assert json.loads(rows[0]["sampling"]) == {
        "max_new_tokens": 8,
        "temperature": 0.8,
        "top_p": 0.95,
        "seed": 0,
    }
    with Store.open(model_home / "criticloop.db") as store:
        run = store.get_run(summary["run_id"])
    assert run["status"] == "done" and run["summary"]["generated"] == 8

    again = json.loads(run_cli(*args, "--json", check=True).stdout)
    assert again["generated"] == 0 and again["already_present"] == 8 and again["run_id"] is None
    assert len(_generations(model_home)) == 8

    more = json.loads(run_cli(*args, "-k", "3", "--json", check=True).stdout)
    assert more["generated"] == 4  # only the third candidate of each prompt
    new_seed = json.loads(run_cli(*args, "--seed", "7", "-k", "1", "--json", check=True).stdout)
    assert new_seed["generated"] == 4  # new seed: new config, new candidates


def test_text_summary_says_what_and_where(model_home):
    run_cli("init", check=True)
    result = run_cli("generate", "-p", "general-001", "-p", "ad-001", "-k", "1", *SMALL, check=True)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("generated 2 candidates for 2 prompts (K=1; 0 were already stored)")
    assert any(line.strip().startswith("speed") and "tokens/s" in line for line in lines)
    assert lines[-1].strip() == f"stored in  {model_home / 'criticloop.db'}"


def test_unknown_prompt_id(model_home):
    run_cli("init", check=True)
    result = run_cli("generate", "-p", "no-such-prompt")
    assert result.returncode == 2
    assert result.stderr.strip() == "criticloop: error: unknown prompt 'no-such-prompt'"


def test_killed_run_loses_nothing_and_resumes(model_home):
    run_cli("init", check=True)
    exe = Path(sys.executable).parent / "criticloop"
    args = [
        str(exe),
        "generate",
        "-t",
        "general",
        "-k",
        "2",
        "--max-new-tokens",
        "16",
        "--batch-size",
        "2",
        "--json",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (model_home / "criticloop.db").exists() and len(_generations(model_home)) >= 4:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    survived = {(r["prompt_id"], r["candidate_index"]): r["text"] for r in _generations(model_home)}
    assert 4 <= len(survived) < 12

    resumed = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
    assert resumed["already_present"] == len(survived)
    assert resumed["generated"] == 12 - len(survived)
    rows = _generations(model_home)
    keys = [(r["prompt_id"], r["candidate_index"]) for r in rows]
    assert len(rows) == 12 and len(set(keys)) == 12
    assert all(survived[k] == r["text"] for k, r in zip(keys, rows, strict=True) if k in survived)
    with Store.open(model_home / "criticloop.db") as store:
        statuses = sorted(r["status"] for r in store.db["runs"].rows)
    assert statuses == ["done", "failed"]  # the killed run is marked, not left "running"
