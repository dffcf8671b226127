"""Critic suite throughput and the feedback graph's own overhead, on the demo prompts.

    .venv/bin/python bench/critics.py            # or: make bench

1. Generates K candidates per demo prompt with the bundled policy (timed: seconds per response).
2. Judges them with the whole suite: the shared-signal pass (one embedding pass, one policy
   forward pass) and every critic, timed per critic: responses judged per second.
3. Runs the real graph over copies of that database twice: with the real critics, and with
   constant-time critics (fakes) over a null embedder, whose time per prompt is the graph's own
   overhead (orchestration, checkpoints, store writes).
Prints a table and appends it to bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from criticloop.agents import Case, Policy, Sampling, Score, Signals, build_critic, load_embedder
from criticloop.agents import critics as _registers  # noqa: F401
from criticloop.agents._critic import CRITICS
from criticloop.graphs._generate import run_generate
from criticloop.graphs.run import RunOptions, run_feedback
from criticloop.settings import Settings
from criticloop.store import DEMO_FILES, Store, read_records

RESULTS = Path(__file__).with_name("RESULTS.md")


class ConstantCritic:
    """A fake critic: the same score at no cost, to isolate the graph's own time."""

    version = "constant"

    def __init__(self, name: str):
        self.name = self.dimension = name

    def applies(self, case: Case) -> bool:
        return True

    def __call__(self, case: Case, signals: Signals) -> Score:
        return Score(self.name, 0.8, 0.9, "constant", self.version)


class NullEmbedder:
    """A fake embedder returning zero vectors instantly."""

    def encode(self, texts, **_):
        return np.zeros((len(list(texts)), 8), dtype=np.float32)


def machine() -> str:
    import platform

    import torch

    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    base = Settings.load()
    work = Path(tempfile.mkdtemp(prefix="criticloop-bench-"))
    home = work / "gen"
    home.mkdir()
    (home / "models").symlink_to(base.models_dir, target_is_directory=True)
    base.models_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings.load(env_file=None, home=home)
    settings.apply_offline_policy()
    sampling = Sampling(args.max_new_tokens, 0.8, 0.95, seed=0)
    with Store.open(settings.db_path) as store:
        store.import_records([r for p in DEMO_FILES for r in read_records(p)])
        prompts = [p["id"] for p in store.list_prompts()][: args.prompts]
        began = time.perf_counter()
        generated = run_generate(
            settings,
            store,
            prompt_ids=prompts,
            candidates=args.candidates,
            sampling=sampling,
            batch_size=settings.generation.batch_size,
            progress=False,
        )
        gen_seconds = time.perf_counter() - began
    per_response_gen = generated.generation_seconds / max(1, generated.generated)

    # --- 2. the critic suite on its own --------------------------------------------------
    policy = Policy.load(settings)
    embedder = load_embedder(settings)
    signals = Signals(embedder, policy)
    cases = []
    with Store.open(settings.db_path) as store:
        for pid in prompts:
            prompt, brand, campaign = store.prompt_context(pid)
            for g in store.generations_for(pid):
                cases.append(Case.of(prompt, brand, campaign, g["text"], g["finish_reason"]))
    began = time.perf_counter()
    signals.prepare(cases)
    prepare_s = time.perf_counter() - began
    per_critic = {}
    for name in sorted(CRITICS):
        critic = build_critic(name)
        applicable = [c for c in cases if critic.applies(c)]
        began = time.perf_counter()
        for case in applicable:
            critic(case, signals)
        per_critic[name] = (len(applicable), time.perf_counter() - began)
    suite_s = prepare_s + sum(s for _, s in per_critic.values())
    misses = {k: v for k, v in signals.stats.items() if k.endswith("misses")}

    # --- 3. the graph, real and with constant critics -----------------------------------
    def graph_run(tag: str, **inject) -> dict:
        target = work / tag
        target.mkdir()
        (target / "models").symlink_to(base.models_dir, target_is_directory=True)
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{settings.db_path}{suffix}")
            if src.exists():
                shutil.copy(src, target / src.name)
        run_settings = Settings.load(env_file=None, home=target)
        options = RunOptions(
            sampling=sampling, candidates=args.candidates, concurrency=2, progress=False
        )
        return run_feedback(run_settings, options, **inject)

    real = graph_run("real", load_policy=lambda: policy, load_embedder_fn=lambda: embedder)
    fake = graph_run(
        "constant",
        critics={name: ConstantCritic(name) for name in CRITICS},
        load_policy=lambda: None,
        load_embedder_fn=NullEmbedder,
    )
    n = len(prompts)
    real_per_prompt = real["wall_seconds"] / n + per_response_gen * args.candidates
    overhead_per_prompt = fake["wall_seconds"] / n
    shutil.rmtree(work, ignore_errors=True)

    rows = [
        ("generation (policy, batched)", generated.generated, per_response_gen),
        ("shared signals: embeddings + policy forward", len(cases), prepare_s / len(cases)),
        *[(f"critic {name}", k, s / k if k else 0.0) for name, (k, s) in per_critic.items()],
        ("whole critic suite", len(cases), suite_s / len(cases)),
    ]
    table = (
        "| stage | responses | ms per response | responses/s |\n|---|---:|---:|---:|\n"
        + "\n".join(
            f"| {label} | {k} | {1000 * s:.1f} | {1 / s if s else float('inf'):.1f} |"
            for label, k, s in rows
        )
    )
    graph_table = (
        "| graph run | prompts | wall s | s per prompt |\n|---|---:|---:|---:|\n"
        f"| real critics (candidates already generated) | {n} | {real['wall_seconds']:.1f} | {real['wall_seconds'] / n:.3f} |\n"
        f"| constant-time critics, null embedder (graph + store only) | {n} | {fake['wall_seconds']:.1f} | {overhead_per_prompt:.3f} |\n"
    )
    verdicts = (
        f"- Critic suite per response {1000 * suite_s / len(cases):.0f} ms vs generating it "
        f"{1000 * per_response_gen:.0f} ms: suite is {per_response_gen / (suite_s / len(cases)):.1f}x cheaper.\n"
        f"- Graph overhead {overhead_per_prompt:.3f} s per prompt = "
        f"{100 * overhead_per_prompt / real_per_prompt:.1f}% of a real run's {real_per_prompt:.2f} s per prompt "
        f"(generation of {args.candidates} candidates + judging).\n"
        f"- Shared signals: {dict(signals.stats)}; on-demand misses {misses or 'none'}.\n"
        f"- Real graph outcomes: {real['outcomes']}; pairs {real['pairs']}; vetoes {real['vetoes']}.\n"
    )
    report = (
        f"### Critics and graph overhead, {datetime.date.today().isoformat()}\n\n"
        f"Machine: {machine()}. {n} demo prompts x {args.candidates} candidates, max_new_tokens="
        f"{args.max_new_tokens}; generation wall {gen_seconds:.1f} s.\n\n{table}\n\n{graph_table}\n{verdicts}"
    )
    print(report)
    if not args.no_record:
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write("\n" + report)


if __name__ == "__main__":
    main()
