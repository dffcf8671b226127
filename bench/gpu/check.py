"""The GPU check: criticloop's GPU training paths, each step timed, into one JSON results file.

    bash bench/gpu/check.sh                      # on a CUDA machine, after bench/gpu/prepare.sh
    python bench/gpu/check.py --dry-run          # the plan; needs no GPU, TRL or bitsandbytes
    python bench/gpu/check.py --cpu-smoke        # the same steps, a tiny model, one step, on CPU

Steps: DPO in bf16 and QLoRA 4-bit on a model of the bundled SmolLM2-135M's shape, PPO (three
steps), a job through the subprocess launcher and one through ``accelerate launch``, and DPO
LoRA on a 1B Llama-shaped model (tokens/s, peak GPU memory). The bundled SmolLM2 cannot travel
to the GPU machine (its GGUF is 98 MB; a run carries 64 MiB), so the SmolLM2 and 1B models are
built from a config with random weights and the bundled tokenizer: the figures measure the
machinery and the cost of the shapes, not what the models learn. DPO jobs go through
``criticloop.training.train`` (the store, the job directory, the launcher, the registry) on
constructed pairs; PPO through ``run_ppo`` with a scripted length reward, since the critics'
models and packages do not travel either.

Each step runs in its own process with a time limit, so a crash, a hang or an out-of-memory in
one is recorded (failed, with its reason) and the next step still runs. The results file
(``$OUT/gpu-check.json`` when OUT is set, else ``bench/gpu/results.json``) is rewritten after
every step, so a run stopped early leaves what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
WHEELS = REPO / ".whl"
ASSETS = WHEELS / "smollm2"
ASSET_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
EXPECTED_WHEELS = (
    "trl",
    "datasets",
    "dill",
    "multiprocess",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "annotated_types",
    "typing_inspection",
    "python_dotenv",
    "typing_extensions",
    "sqlite_utils",
    "sqlite_fts4",
    "click_default_group",
    "platformdirs",
)
VERSIONS = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "trl",
    "datasets",
    "bitsandbytes",
    "pydantic",
    "huggingface_hub",
    "pyarrow",
    "fsspec",
    "numpy",
    "tokenizers",
    "safetensors",
)
BUDGET_S = 420  # check.sh must finish in under 8 minutes, wheel install included

# The 1B Llama shape (random weights); the vocabulary is the bundled tokenizer's, so its ids fit.
LLAMA_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
}


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    gpu: dict[str, Any]  # the job's settings on a GPU
    smoke: dict[str, Any] | None  # on CPU in --cpu-smoke; None: GPU only
    timeout_s: int
    needs: tuple[str, ...] = field(default=())  # modules that must import, else skipped


STEPS = (
    Step(
        "setup",
        "data home with the demo prompts and constructed pairs; SmolLM2-135M-shaped model "
        "(random weights, bundled tokenizer from .whl/smollm2)",
        {"model": "smollm2-shape"},
        {"model": "tiny"},
        180,
    ),
    Step(
        "dpo_bf16",
        "criticloop.training.train: DPO, LoRA, launcher inprocess, bf16 on CUDA",
        {
            "method": "dpo",
            "launcher": "inprocess",
            "max_steps": 8,
            "batch_size": 4,
            "max_length": 512,
            "save_steps": 4,
        },
        {
            "method": "dpo",
            "launcher": "inprocess",
            "max_steps": 1,
            "batch_size": 2,
            "max_length": 128,
            "save_steps": 1,
        },
        150,
    ),
    Step(
        "qlora_4bit",
        "criticloop.training.train: DPO on 4-bit NF4 base weights (QLoRA), launcher inprocess",
        {
            "method": "dpo",
            "launcher": "inprocess",
            "quantize": "4bit",
            "max_steps": 8,
            "batch_size": 4,
            "max_length": 512,
            "save_steps": 4,
        },
        None,
        150,
        ("bitsandbytes",),
    ),
    Step(
        "ppo",
        "criticloop.training._online.run_ppo (criticloop's PPO) with a scripted length reward",
        {
            "method": "ppo",
            "rl_steps": 3,
            "batch_size": 4,
            "rl_samples_per_prompt": 2,
            "rl_max_new_tokens": 48,
        },
        {
            "method": "ppo",
            "rl_steps": 1,
            "batch_size": 2,
            "rl_samples_per_prompt": 2,
            "rl_max_new_tokens": 8,
        },
        150,
    ),
    Step(
        "subprocess_launcher",
        "criticloop.training.train with --launcher subprocess (python -m "
        "criticloop.training.worker JOB_DIR)",
        {
            "method": "dpo",
            "launcher": "subprocess",
            "max_steps": 4,
            "batch_size": 4,
            "max_length": 512,
            "save_steps": 2,
        },
        {
            "method": "dpo",
            "launcher": "subprocess",
            "max_steps": 1,
            "batch_size": 2,
            "max_length": 128,
            "save_steps": 1,
        },
        150,
    ),
    Step(
        "dpo_lora_1b",
        "criticloop.training.train: DPO LoRA on a 1B Llama-shaped model (random weights; "
        "hidden 2048, 16 layers, 32 heads, intermediate 8192), bf16; tokens/s, peak memory",
        {
            "method": "dpo",
            "launcher": "inprocess",
            "max_steps": 20,
            "batch_size": 8,
            "max_length": 1024,
            "save_steps": 100,
        },
        None,
        240,
    ),
    Step(
        "accelerate_launcher",
        "criticloop.training.train with --launcher accelerate (accelerate launch with the "
        "default bundled ddp preset, one process per GPU; --cpu-smoke: a one-process CPU config)",
        {
            "method": "dpo",
            "launcher": "accelerate",
            "max_steps": 2,
            "batch_size": 4,
            "max_length": 512,
            "save_steps": 1,
        },
        {
            "method": "dpo",
            "launcher": "accelerate",
            "max_steps": 1,
            "batch_size": 2,
            "max_length": 128,
            "save_steps": 1,
        },
        150,
    ),
)
BY_NAME = {step.name: step for step in STEPS}


# ---- the plan -----------------------------------------------------------------------------------


def wheel_status() -> list[tuple[str, str | None]]:
    """(distribution, the carried wheel's file name or None) for each expected wheel."""
    present = sorted(p.name for p in WHEELS.glob("*.whl"))
    names = [*EXPECTED_WHEELS, "bitsandbytes"]
    return [(n, next((p for p in present if p.startswith(f"{n}-")), None)) for n in names]


def print_plan(args: argparse.Namespace) -> None:
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    print(f"GPU check plan ({mode}); results to {results_path(args)}; budget {args.budget} s")
    for step in STEPS:
        settings = step.smoke if args.cpu_smoke else step.gpu
        if settings is None:
            print(f"  {step.name}: skipped in cpu-smoke (no CUDA device)")
            continue
        print(f"  {step.name}: {step.what}")
        print(f"      settings {json.dumps(settings)}; limit {step.timeout_s} s")
    print(f"wheels in {WHEELS.relative_to(REPO)}/ (bash bench/gpu/prepare.sh fetches them):")
    for name, wheel in wheel_status():
        note = wheel or (
            "missing: the QLoRA step is skipped" if name == "bitsandbytes" else "missing"
        )
        print(f"  {name}: {note}")
    missing = [f for f in ASSET_FILES if not (ASSETS / f).exists()]
    print(
        f"tokenizer files in {ASSETS.relative_to(REPO)}/: "
        + (f"missing {', '.join(missing)}" if missing else "present")
    )


# ---- the driver ---------------------------------------------------------------------------------


def results_path(args: argparse.Namespace) -> Path:
    if args.results:
        return Path(args.results)
    out = os.environ.get("OUT")
    return Path(out, "gpu-check.json") if out else REPO / "bench" / "gpu" / "results.json"


def machine() -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "gpus": torch.cuda.device_count(),
            "bf16": torch.cuda.is_bf16_supported(),
        }
    versions = {}
    for name in VERSIONS:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    info["versions"] = versions
    info["carried_wheels"] = [w for _, w in wheel_status() if w]
    return info


def drive(args: argparse.Namespace) -> int:
    import torch

    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print(
            "no CUDA device here: the GPU check runs on a GPU machine "
            "(--dry-run shows the plan, --cpu-smoke runs it small on CPU)",
            file=sys.stderr,
        )
        return 2
    began = time.monotonic()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="criticloop-gpu-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = results_path(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "mode": "cpu-smoke" if smoke else "gpu",
        "machine": machine(),
        "workdir": str(workdir),
        "steps": {},
    }
    chosen = args.steps.split(",") if args.steps else [s.name for s in STEPS]
    for step in STEPS:
        if step.name not in chosen:
            continue
        left = args.budget - (time.monotonic() - began)
        results["steps"][step.name] = record = run_step(step, smoke, workdir, left, results)
        line = f"{step.name}: {record['status']} in {record['seconds']} s"
        print(line + (f" ({record['reason']})" if record.get("reason") else ""), flush=True)
        results["seconds"] = round(time.monotonic() - began, 1)
        out.write_text(json.dumps(results, indent=2) + "\n")
    failed = [n for n, r in results["steps"].items() if r["status"] == "failed"]
    print(f"results: {out} ({len(failed)} failed: {', '.join(failed) or 'none'})")
    return 1 if failed else 0


def run_step(step: Step, smoke: bool, workdir: Path, left: float, results) -> dict[str, Any]:
    settings = step.smoke if smoke else step.gpu
    if settings is None:
        return {"status": "skipped", "seconds": 0.0, "reason": "no CUDA device"}
    setup = results["steps"].get("setup")
    if step.name != "setup" and (setup is None or setup["status"] != "ok"):
        return {"status": "skipped", "seconds": 0.0, "reason": "setup did not finish"}
    for module in step.needs:
        if importlib.util.find_spec(module) is None:
            return {
                "status": "skipped",
                "seconds": 0.0,
                "reason": f"{module} is not installed (not carried in .whl: prepare.sh "
                "leaves it out when it does not fit in 64 MiB)",
            }
    if left < 20:
        return {"status": "skipped", "seconds": 0.0, "reason": "out of the check's time budget"}
    limit = min(step.timeout_s, left)
    result_file = workdir / f"{step.name}.json"
    log_file = workdir / f"{step.name}.log"
    result_file.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child", step.name, "--workdir", str(workdir)]
    if smoke:
        command.append("--cpu-smoke")
    started = time.monotonic()
    with log_file.open("w") as log:
        # Its own session, so a timeout also ends the worker or `accelerate launch` it started
        # (and the GPU memory they hold) before the next step.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code: int | None = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            code = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # what is left of the step, if anything
        process.wait()
    seconds = round(time.monotonic() - started, 1)
    record: dict[str, Any] = {"seconds": seconds, "settings": settings}
    if result_file.exists():
        record |= json.loads(result_file.read_text())
    elif code is None:
        record |= {"status": "failed", "reason": f"timed out after {limit:.0f} s"}
    else:
        record |= {"status": "failed", "reason": f"exited with {code} and no result"}
    if record["status"] != "ok":
        record["log_tail"] = log_file.read_text(errors="replace").splitlines()[-30:]
    return record


# ---- the steps, each in its own process ---------------------------------------------------------


def child(name: str, workdir: Path, smoke: bool) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    step = BY_NAME[name]
    settings = step.smoke if smoke else step.gpu
    try:
        figures = STEP_RUNNERS[name](workdir, settings, smoke)
        outcome = {"status": "ok", "figures": figures}
    except Exception as exc:  # noqa: BLE001 - the step fails with its reason; the next one runs
        import traceback

        traceback.print_exc()
        text = str(exc).splitlines()[0] if str(exc) else ""
        outcome = {"status": "failed", "reason": f"{type(exc).__name__}: {text}"[:400]}
    (workdir / f"{name}.json").write_text(json.dumps(outcome, default=str))
    return 0


def _settings(workdir: Path, model: str):
    from criticloop.settings import Settings

    return Settings.load(
        env_file=None, home=workdir / "home", policy={"model": str(workdir / model)}
    )


def _pair_text(seed: int, words: int) -> str:
    """A long, distinct answer: seeded word salad, so no two pairs are near-duplicates."""
    vocab = (
        "the a clear answer explains each step with care and gives an example of how this "
        "works in practice so that a reader can follow it then check the result against what "
        "was asked before moving on to the next part of the question where details matter most"
    ).split()
    rng = random.Random(seed)
    return " ".join(rng.choice(vocab) for _ in range(words)).capitalize() + "."


def step_setup(workdir: Path, settings: dict[str, Any], smoke: bool) -> dict[str, Any]:
    import shutil

    from criticloop.store import DEMO_FILES, PairRecord, Store, read_records
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    assets = ASSETS
    if not all((assets / f).exists() for f in ASSET_FILES):
        if not smoke:
            raise FileNotFoundError(f"{assets} lacks the tokenizer: run bench/gpu/prepare.sh")
        from criticloop.agents import policy_ref
        from criticloop.settings import Settings

        assets = Path(policy_ref(Settings.load(env_file=None)).source)  # the bundled model
    home = workdir / "home"
    shutil.rmtree(home, ignore_errors=True)
    with Store.open(home / "criticloop.db") as store:
        store.import_records([r for path in DEMO_FILES for r in read_records(path)])
        pairs = 0
        for i, pid in enumerate(store.prompt_ids()):
            chosen = _pair_text(i, 40 if smoke else 220)
            store.record_pair(PairRecord(pid, chosen, "No.", "synthetic", margin=0.4))
            pairs += 1
    tokenizer = AutoTokenizer.from_pretrained(assets)
    shape = json.loads((assets / "config.json").read_text())
    if smoke:
        shape |= TINY
    config = LlamaConfig(**{k: v for k, v in shape.items() if not k.startswith("_")})
    config.vocab_size = max(config.vocab_size, len(tokenizer))
    model = LlamaForCausalLM(config)
    target = workdir / "smollm2-shape"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    for extra in ("generation_config.json", "chat_template.jinja"):
        if (assets / extra).exists():
            shutil.copy2(assets / extra, target / extra)
    return {
        "pairs": pairs,
        "model": "tiny Llama (smoke)" if smoke else "SmolLM2-135M shape, random weights",
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer_from": str(assets),
    }


def _train(workdir: Path, model: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """One job through criticloop.training.train; its figures, and what the store recorded."""
    from criticloop.store import Store
    from criticloop.training import train
    from safetensors.torch import load_file

    settings = _settings(workdir, model)
    training = settings.training.model_copy(update=overrides)
    result = train(settings, training)
    with Store.open(settings.db_path, create=False) as store:
        job = store.get_job(result.job_id)
    m = result.metrics
    losses = [e["loss"] for e in m.get("log", []) if "loss" in e]
    tensors = load_file(str(Path(result.adapter_path) / "adapter_model.safetensors"))
    learned = any(t.abs().sum() > 0 for n, t in tensors.items() if "lora_B" in n)
    if m.get("steps") != overrides["max_steps"]:
        raise RuntimeError(f"trained {m.get('steps')} steps, not {overrides['max_steps']}")
    if not learned:
        raise RuntimeError("every LoRA B matrix is still zero: the adapter did not learn")
    return {
        "job": result.job_id,
        "launcher": job["launcher"],
        "job_status": job["status"],
        "steps": m.get("steps"),
        "losses": losses,
        "tokens": m.get("tokens") or (m.get("cost") or {}).get("tokens"),
        "tokens_per_second": m.get("tokens_per_second"),
        "train_seconds": m.get("seconds"),
        "seconds_per_step": round(m["seconds"] / m["steps"], 3) if m.get("steps") else None,
        "peak_memory_mb": m.get("peak_memory_mb"),
        "lora_learned": learned,
        "bf16": job["config"].get("device") == "cuda",
    }


def step_dpo(workdir: Path, settings: dict[str, Any], smoke: bool) -> dict[str, Any]:
    return _train(workdir, "smollm2-shape", settings)


def step_launcher(workdir: Path, settings: dict[str, Any], smoke: bool) -> dict[str, Any]:
    if settings["launcher"] == "accelerate" and smoke:
        # On a GPU the job takes criticloop's default (the bundled ddp preset, one process
        # per GPU); on CPU that preset cannot run, so a one-process CPU config stands in.
        config = workdir / "accelerate.yaml"
        config.write_text(
            "compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nnum_machines: 1\n"
            "num_processes: 1\nmixed_precision: 'no'\nuse_cpu: true\n"
        )
        settings = {**settings, "accelerate_config": config}
    figures = _train(workdir, "smollm2-shape", settings)
    if figures["launcher"] != settings["launcher"]:
        raise RuntimeError(f"the job ran with launcher {figures['launcher']}")
    return figures


def step_1b(workdir: Path, settings: dict[str, Any], smoke: bool) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target = workdir / "llama-1b"
    tokenizer = AutoTokenizer.from_pretrained(workdir / "smollm2-shape")
    config = LlamaConfig(vocab_size=len(tokenizer), **LLAMA_1B)
    began = time.perf_counter()
    with torch.device("cuda"):  # random init on the GPU: seconds, not a minute of CPU
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    del model
    torch.cuda.empty_cache()
    built = round(time.perf_counter() - began, 1)
    return {
        "parameters": parameters,
        "build_seconds": built,
        **_train(workdir, "llama-1b", settings),
    }


class ScriptedLengthReward:
    """A fake judge for PPO: longer answers score higher, up to 1. The critics' models (MiniLM,
    the profanity and sentiment models) do not travel to the GPU machine."""

    def scalars(self, prompt_id: str, texts: list[str]) -> list[float]:
        return [min(len(t.split()) / 40, 1.0) for t in texts]


def step_ppo(workdir: Path, settings: dict[str, Any], smoke: bool) -> dict[str, Any]:
    from criticloop.agents import pick_device, policy_ref
    from criticloop.store import Store
    from criticloop.training import TrainConfig
    from criticloop.training._data import policy_conversation, training_prompts
    from criticloop.training._jobs import quiet_libraries
    from criticloop.training._online import run_ppo

    quiet_libraries()
    base = _settings(workdir, "smollm2-shape")
    training = base.training.model_copy(update=settings)
    with Store.open(base.db_path, create=False) as store:
        prompt_ids = training_prompts(store, training.heldout_percent)
        conversations = [policy_conversation(store, pid) for pid in prompt_ids]
    device = pick_device(base.policy.device)
    config = TrainConfig.build(
        base,
        training,
        policy_ref(base),
        device,
        "inprocess",
        job_id="gpu-check-ppo",
        output_dir=str(workdir / "ppo"),
    )
    steps: list[dict[str, Any]] = []
    metrics = run_ppo(config, prompt_ids, conversations, ScriptedLengthReward(), steps.append)
    if metrics["steps"] != settings["rl_steps"]:
        raise RuntimeError(f"ran {metrics['steps']} PPO steps, not {settings['rl_steps']}")
    keys = ("rollout_seconds", "update_seconds", "reward_mean", "kl", "policy_loss", "value_loss")
    return {
        **metrics,
        "device": device,
        "per_step": [{k: round(s[k], 4) for k in keys} for s in steps],
    }


STEP_RUNNERS = {
    "setup": step_setup,
    "dpo_bf16": step_dpo,
    "qlora_4bit": step_dpo,
    "ppo": step_ppo,
    "subprocess_launcher": step_launcher,
    "dpo_lora_1b": step_1b,
    "accelerate_launcher": step_launcher,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="Print the plan and exit.")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="Tiny model, one step each, GPU-only steps skipped.",
    )
    parser.add_argument("--steps", help="Only these steps, comma-separated (setup is needed).")
    parser.add_argument("--budget", type=int, default=BUDGET_S, help="Seconds for all steps.")
    parser.add_argument(
        "--results", help="Results file (default $OUT/gpu-check.json or bench/gpu/results.json)."
    )
    parser.add_argument("--workdir", help="Working directory (default: a new temporary one).")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, Path(args.workdir), args.cpu_smoke)
    unknown = set(args.steps.split(",") if args.steps else ()) - set(BY_NAME)
    if unknown:
        parser.error(f"unknown steps {', '.join(sorted(unknown))} (steps: {', '.join(BY_NAME)})")
    if args.dry_run:
        print_plan(args)
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
