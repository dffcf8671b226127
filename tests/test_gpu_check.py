"""The GPU check (bench/gpu): its plan, its wheel list and its refusal without a GPU, here on CPU;
and its first steps for real, small, on CPU. No test downloads anything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GPU = REPO / "bench" / "gpu"
STEPS = (
    "setup",
    "dpo_bf16",
    "qlora_4bit",
    "ppo",
    "subprocess_launcher",
    "dpo_lora_1b",
    "accelerate_launcher",
)
# The dry run must work where none of these can be imported (the GPU machine before install).
_BLOCKED = "torch trl bitsandbytes datasets peft transformers pydantic criticloop".split()


def _run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
        timeout=120,
    )


def test_dry_run_names_every_step_and_needs_no_training_stack(tmp_path):
    block = "; ".join(f"sys.modules[{name!r}] = None" for name in _BLOCKED)
    shim = tmp_path / "blocked_python"
    shim.write_text(
        f'#!/bin/sh\nexec {sys.executable} -c "import runpy, sys; {block}; '
        f'sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name=\'__main__\')" "$@"\n'
    )
    shim.chmod(0o755)
    result = _run(
        "bash", str(GPU / "check.sh"), "--dry-run", env={"PYTHON": str(shim), "OUT": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr
    for step in STEPS:
        assert f"  {step}: " in result.stdout
    assert f"results to {tmp_path / 'gpu-check.json'}" in result.stdout
    assert "bitsandbytes: " in result.stdout and "trl: " in result.stdout


def test_cpu_smoke_plan_skips_the_gpu_only_steps():
    result = _run(sys.executable, str(GPU / "check.py"), "--dry-run", "--cpu-smoke")
    assert result.returncode == 0, result.stderr
    assert "qlora_4bit: skipped in cpu-smoke (no CUDA device)" in result.stdout
    assert "dpo_lora_1b: skipped in cpu-smoke (no CUDA device)" in result.stdout


def test_prepare_lists_the_wheels_without_downloading():
    before = sorted(p.name for p in (REPO / ".whl").glob("*"))
    result = _run("bash", str(GPU / "prepare.sh"), "--list")
    assert result.returncode == 0, result.stderr
    listed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("wheel ")]
    names = {spec.split("==")[0] for spec in listed}
    assert {"trl", "datasets", "pydantic", "pydantic-core", "sqlite-utils", "bitsandbytes"} <= names
    assert all("==" in spec and spec.split("==")[1] for spec in listed)
    assert sorted(p.name for p in (REPO / ".whl").glob("*")) == before
    assert _run("bash", str(GPU / "prepare.sh"), "--bogus").returncode == 2


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine may have a GPU")
def test_check_refuses_cleanly_without_a_gpu(tmp_path):
    result = _run("bash", str(GPU / "check.sh"), env={"OUT": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no CUDA GPU" in result.stderr
    assert not (tmp_path / "gpu-check.json").exists()
    direct = _run(sys.executable, str(GPU / "check.py"))
    assert direct.returncode == 2 and direct.stderr.count("\n") == 1
    assert "no CUDA device" in direct.stderr


@pytest.mark.slow
def test_cpu_smoke_runs_the_first_steps_for_real(model_home, tmp_path):
    """setup and DPO through criticloop.training.train, a tiny model, one step, on CPU (the
    bundled tokenizer comes from the converted SmolLM2 when .whl/smollm2 is absent)."""
    results = tmp_path / "results.json"
    result = _run(
        sys.executable,
        str(GPU / "check.py"),
        "--cpu-smoke",
        "--steps",
        "setup,dpo_bf16,qlora_4bit",
        "--workdir",
        str(tmp_path / "work"),
        "--results",
        str(results),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(results.read_text())
    assert report["mode"] == "cpu-smoke" and report["machine"]["gpu"] is None
    steps = report["steps"]
    assert steps["setup"]["status"] == "ok" and steps["setup"]["figures"]["pairs"] > 0
    dpo = steps["dpo_bf16"]
    assert dpo["status"] == "ok", dpo
    assert dpo["figures"]["steps"] == 1 and dpo["figures"]["lora_learned"]
    assert dpo["figures"]["launcher"] == "inprocess" and dpo["seconds"] > 0
    assert steps["qlora_4bit"] == {"status": "skipped", "seconds": 0.0, "reason": "no CUDA device"}
    assert set(steps) == {"setup", "dpo_bf16", "qlora_4bit"}
