"""The load benchmark (bench/scale.py) end to end on a handful of prompts: loopback servers in
their own process, one child run of the graph, every measured column filled in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_the_load_benchmark_runs_the_graph_against_loopback_servers(tmp_path: Path):
    out = tmp_path / "rows.json"
    cmd = [sys.executable, str(BENCH / "scale.py"), "--prompts", "4", "--latency-ms", "0",
           "--concurrency", "2", "--workers", "1,2", "--critics", "judge", "--no-record",
           "--json", str(out)]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = json.loads(out.read_text())
    for row in (one, two):
        assert row["prompts"] == 4 and row["failed"] == 0
        assert sum(row["outcomes"].values()) == 4
        assert row["servers"]["policy"]["requests"] == 4  # one request per prompt, n=K
        assert row["servers"]["judge"]["requests"] == 8  # one pair a prompt, both orders
        assert row["cpu_ms_per_prompt"] > 0 and row["peak_rss_mib"] > 0
        assert row["steady_judging_prompts_per_s"] is None  # under 20 prompts: no steady part
    assert one["sqlite_store_ms_per_prompt"] > 0 and one["sqlite_checkpoint_ms_per_prompt"] > 0
    assert one["peak_worker_rss_mib"] is None and two["peak_worker_rss_mib"] > 100
    assert two["cpu_ms_per_prompt"] > one["cpu_ms_per_prompt"]  # the workers' CPU is counted
    assert two["stage_seconds"]["helpfulness"] > 0  # the workers' stage times came back
    assert "| 0 ms | 2 | 1 | served | judge | 4 |" in done.stdout
    assert "| 0 ms | 2 | 2 | served | judge | 4 |" in done.stdout


def test_the_loopback_policy_offers_the_likelihood_as_vllm_does_with_the_flag():
    """With --likelihood the benchmark's policy server answers /tokenize and prompt logprobs
    the way ServedPolicy reads vLLM's, so the coherence critic asks it for every reply; without
    it, the server offers none (as OpenAI's API)."""
    from criticloop.agents import LikelihoodUnavailable, ModelRef, ServedPolicy
    from criticloop.settings import PolicySettings

    items = [([{"role": "user", "content": "How do I boil an egg?"}], "Boil it nine minutes."),
             ([{"role": "user", "content": "Hi"}], "")]  # fmt: skip
    for flag in (["--likelihood"], []):
        server = subprocess.Popen(
            [sys.executable, str(BENCH / "_loopback.py"), *flag],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            url = json.loads(server.stdout.readline())["policy"]
            policy = ServedPolicy(PolicySettings(base_url=url), ModelRef("loopback", "served"))
            if flag:
                reply, empty = policy.response_logprobs(items, 64)
                assert len(reply) == 4 and all(-2 < lp < 0 for lp in reply) and empty == []
                assert policy.response_logprobs(items[:1], 2) == [reply[:2]]
            else:
                with pytest.raises(LikelihoodUnavailable):
                    policy.response_logprobs(items, 64)
        finally:
            server.stdin.close()
            server.wait(timeout=30)
