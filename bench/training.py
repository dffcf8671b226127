"""Training cost: criticloop's DPO job against a plain TRL DPO script, and PPO rollout/update.

    .venv/bin/python bench/training.py                 # on the pairs in $CRITICLOOP_HOME (make demo)
    .venv/bin/python bench/training.py --steps 12 --repeats 3

DPO: the same pairs, LoRA and trainer settings run through ``run_dpo`` (what ``criticloop
train`` runs: source-weighted sampler, step log, NaN guard) and through a plain TRL script
written as a TRL user would. Each run is a fresh subprocess, alternating, so neither inherits
a warm allocator; the target is a time-per-token ratio of at most 1.05. PPO: seconds per step in
rollout (generation, critic reward, reference and value passes) and in the update. On a CUDA
machine it also measures DPO LoRA tokens/s and peak memory for the bundled model and a 1B
Llama-shaped model built from a config (random weights), with and without 4-bit.
Prints a table and appends it, with the machine and date, to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, CPU, torch {torch.__version__}"


def base_config(args, workdir: Path, model_path: str, quantize: str = "none"):
    import torch
    from criticloop.settings import TrainingSettings
    from criticloop.training import TrainConfig

    return TrainConfig(
        job_id="bench",
        base_model="bench",
        model_path=model_path,
        home=str(workdir),
        output_dir=str(workdir / "out"),
        device="cuda" if torch.cuda.is_available() else "cpu",
        training=TrainingSettings(
            method="dpo",
            launcher="inprocess",
            quantize=quantize,
            max_steps=args.steps,
            batch_size=args.batch_size,
            max_length=args.max_length,
            save_steps=10_000,  # neither variant checkpoints inside the measured steps
        ),
    )


# ---- one measured run, in its own process ------------------------------------------------------


def step_timer(times: list[float]):
    from transformers import TrainerCallback

    class _Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.began)

    return _Timer()


def run_ours(config, data_file: Path) -> dict:
    from criticloop.training._dpo import run_dpo
    from criticloop.training._jobs import quiet_libraries

    quiet_libraries()
    rows = [json.loads(line) for line in data_file.open()]
    weights = [row.pop("weight") for row in rows]
    began = time.perf_counter()
    metrics = run_dpo(config, rows, weights, log=lambda entry: None)
    return {
        "wall": time.perf_counter() - began,
        "train_seconds": metrics["seconds"],
        "tokens": metrics["tokens"],
        "peak_memory_mb": metrics["peak_memory_mb"],
        "steps": metrics["steps"],
    }


def run_plain(config, data_file: Path) -> dict:
    """What a TRL user writes: load, DPOConfig, DPOTrainer with a LoRA config, train."""
    import torch
    from criticloop.training._dpo import peak_memory_mb, quiet_trainer
    from criticloop.training._jobs import quiet_libraries
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    quiet_libraries()
    began = time.perf_counter()
    rows = [json.loads(line) for line in data_file.open()]
    for row in rows:
        row.pop("weight")
    tokenizer = AutoTokenizer.from_pretrained(config.model_path)
    dtype = torch.bfloat16 if config.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(config.model_path, dtype=dtype)
    args = DPOConfig(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.training.batch_size,
        learning_rate=config.training.learning_rate,
        max_steps=config.training.max_steps,
        beta=config.training.beta,
        max_length=config.training.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=config.bf16,
        use_cpu=config.device == "cpu",
        gradient_checkpointing=config.training.gradient_checkpointing,
        seed=config.training.seed,
        disable_tqdm=True,
    )
    peft_config = LoraConfig(
        r=config.training.lora_r,
        lora_alpha=config.training.lora_alpha,
        lora_dropout=config.training.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    quiet_trainer(trainer)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {
        "wall": time.perf_counter() - began,
        "train_seconds": seconds,
        "tokens": trainer._total_train_tokens,
        "peak_memory_mb": peak_memory_mb(),
        "steps": trainer.state.global_step,
    }


def child(variant: str, config_file: Path, data_file: Path) -> None:
    from criticloop.training import TrainConfig

    config = TrainConfig.read(config_file)
    result = (run_ours if variant == "ours" else run_plain)(config, data_file)
    print("RESULT " + json.dumps(result))


def measure(variant: str, config, data_file: Path, workdir: Path) -> dict:
    # A fresh output directory each run: a checkpoint left by an earlier run would be resumed.
    out = Path(tempfile.mkdtemp(dir=workdir, prefix=f"{variant}-"))
    config = config.for_job(config.job_id, out)
    config_file = out / "config.json"
    config.write(config_file)
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, str(config_file), str(data_file)],
        capture_output=True,
        text=True,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{variant} run failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


# ---- the benchmarks ----------------------------------------------------------------------------


def dpo_pairs(settings, workdir: Path) -> tuple[Path, int]:
    from criticloop.store import Store
    from criticloop.training import load_preferences

    with Store.open(settings.db_path, create=False) as store:
        data = load_preferences(
            store, settings.training.source_weights, settings.training.heldout_percent
        )
    if not data.rows:
        raise SystemExit(f"no pairs in {settings.db_path}: run make demo first")
    path = workdir / "pairs.jsonl"
    with path.open("w") as handle:
        for row, weight in zip(data.rows, data.weights, strict=True):
            handle.write(json.dumps({**row, "weight": weight}) + "\n")
    return path, len(data.rows)


def bench_dpo(args, settings, workdir: Path, model_path: str, label: str, quantize="none"):
    data_file, pairs = dpo_pairs(settings, workdir)
    config = base_config(args, workdir, model_path, quantize)
    runs: dict[str, list[dict]] = {"ours": [], "plain": []}
    for _ in range(args.repeats):
        for variant in ("plain", "ours"):
            runs[variant].append(measure(variant, config, data_file, workdir))
            print(f"  {label} {variant}: {runs[variant][-1]}", file=sys.stderr)
    rows = []
    for variant, results in runs.items():
        per_token = [r["train_seconds"] / r["tokens"] for r in results]
        rows.append(
            {
                "label": label,
                "variant": variant,
                "pairs": pairs,
                "steps": results[0]["steps"],
                "step_s": statistics.median(r["train_seconds"] / r["steps"] for r in results),
                "tokens_s": statistics.median(1 / t for t in per_token),
                "peak_mb": max(r["peak_memory_mb"] for r in results),
                "per_token": statistics.median(per_token),
                "per_token_range": (min(per_token), max(per_token)),
            }
        )
    return rows


def bench_ppo(args, settings) -> list[dict]:
    from criticloop.agents import policy_ref
    from criticloop.store import Store
    from criticloop.training._config import TrainConfig
    from criticloop.training._data import training_prompts
    from criticloop.training._jobs import quiet_libraries
    from criticloop.training._online import run_online

    quiet_libraries()
    import torch

    ref = policy_ref(settings)
    with Store.open(settings.db_path, create=False) as store:
        prompt_ids = training_prompts(store, settings.training.heldout_percent)
    steps: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        training = settings.training.model_copy(
            update={
                "method": "ppo",
                "batch_size": args.ppo_prompts,
                "rl_steps": args.ppo_steps,
                "rl_samples_per_prompt": 2,
                "rl_max_new_tokens": args.ppo_tokens,
            }
        )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        config = TrainConfig.build(
            settings, training, ref, device, "inprocess", job_id="bench", output_dir=tmp
        )
        run_online(config, prompt_ids, steps.append)
    return steps


def gpu_models(workdir: Path, bundled: str) -> list[tuple[str, str]]:
    """The bundled model and a 1B Llama-shaped one with random weights (TinyLlama's shape)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(bundled)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    )
    path = workdir / "llama-1b-random"
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return [("SmolLM2-135M", bundled), ("Llama 1.1B (random)", str(path))]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="DPO steps per run")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each DPO variant")
    parser.add_argument("--ppo-steps", type=int, default=3)
    parser.add_argument("--ppo-prompts", type=int, default=4)
    parser.add_argument("--ppo-tokens", type=int, default=48)
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md")
    args = parser.parse_args()

    import torch
    from criticloop.agents import policy_ref
    from criticloop.settings import Settings

    settings = Settings.load()
    settings.apply_offline_policy()
    bundled = policy_ref(settings).source
    lines = [
        f"### Training, {datetime.date.today()}",
        "",
        f"Machine: {machine()}. DPO: {args.steps} steps, batch {args.batch_size}, LoRA r=16 "
        f"all-linear, max_length {args.max_length}, {args.repeats} runs per variant (median).",
        "",
        "| model | variant | pairs | steps | s/step | tokens/s | peak MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows = bench_dpo(args, settings, workdir, bundled, "SmolLM2-135M")
        if torch.cuda.is_available():
            for label, path in gpu_models(workdir, bundled)[1:]:
                rows += bench_dpo(args, settings, workdir, path, label)
            for label, path in gpu_models(workdir, bundled):
                rows += bench_dpo(args, settings, workdir, path, f"{label} 4-bit", "4bit")
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['variant']} | {r['pairs']} | {r['steps']} | {r['step_s']:.2f} "
            f"| {r['tokens_s']:.0f} | {r['peak_mb']:.0f} |"
        )
    ours = next(r for r in rows if r["variant"] == "ours")
    plain = next(r for r in rows if r["variant"] == "plain")
    ratio = ours["per_token"] / plain["per_token"]
    verdict = "meets" if ratio <= 1.05 else "misses"
    lines += [
        "",
        f"- criticloop/plain TRL time per token on {ours['label']}: {ratio:.3f} ({verdict} the "
        "1.05 target). Peak MB is the process's max RSS on CPU, CUDA max allocated on a GPU.",
        "- ms per token, fastest to slowest run: "
        + "; ".join(
            f"{r['variant']} {r['per_token_range'][0] * 1e3:.2f}-{r['per_token_range'][1] * 1e3:.2f}"
            for r in (ours, plain)
        )
        + " (a ratio inside that spread is noise, not overhead).",
    ]
    steps = bench_ppo(args, settings)
    lines += [
        "",
        f"PPO on {ours['label']} with the critics as reward: {args.ppo_prompts} prompts x 2 "
        f"samples per step, {args.ppo_tokens} new tokens, 2 PPO epochs.",
        "",
        "| step | rollout s | update s | total s | reward | KL | clip frac |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in steps:
        lines.append(
            f"| {s['step']:.0f} | {s['rollout_seconds']:.2f} | {s['update_seconds']:.2f} | "
            f"{s['seconds']:.2f} | {s['reward_mean']:.3f} | {s['kl']:.3f} | "
            f"{s['clip_fraction']:.3f} |"
        )
    if not torch.cuda.is_available():
        lines += [
            "",
            "- No GPU on this machine: the 1B model, 4-bit QLoRA and GPU step times were not "
            "measured here.",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_record:
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
