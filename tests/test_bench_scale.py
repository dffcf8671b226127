"""The load benchmark (bench/scale.py) end to end on a handful of prompts: loopback servers in
their own process, one child run of the graph, every measured column filled in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
