"""Reward models trained on people's labels: agreement with people on another dataset and
cross-validated, against "the longer response wins", with CPU training time and scoring speed.

    .venv/bin/python bench/reward_models.py                       # minilm and smollm2 bases
    .venv/bin/python bench/reward_models.py --bases minilm --cv minilm
    .venv/bin/python bench/reward_models.py --max-steps 60        # cap each training run

For each base (``minilm``: the bundled MiniLM encoder as a cross-encoder, trained whole;
``smollm2``: the bundled 135M policy with a score head, LoRA), a reward model is trained with the
same code as ``criticloop train --method reward`` (TRL RewardTrainer, its default settings
unless capped here) on every decisive pair of one file and measured on every decisive pair of
the other (PandaLM -> HH and HH -> PandaLM), and, for the bases in ``--cv``, by 5-fold
cross-validation within each file (folds by prompt). The cross-validated models' scores of the
pairs they did not see (out of fold) go to ``bench/.cache/rm/oof-<base>-<file>.json``, which
``bench/agreement.py --oof`` adds to the critics as a feature without a leak. Each trained model is left in
``bench/.cache/rm/`` with a profile ``bench/.cache/rm/<base>-<file>.toml`` that adds it as the
``reward_model`` critic beside the default critics, for ``bench/agreement.py --profile``.
Appends the table, machine and date to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from criticloop.reward import DEFAULT_PROFILES
from criticloop.settings import Settings
from criticloop.store import read_labelled_pairs
from criticloop.training._config import TrainConfig
from criticloop.training._jobs import reward_base
from criticloop.training._reward import _Scorer, evaluate_pairs, resolve_tuning, run_reward
from helpfulness_agreement import machine  # bench/ is on the path when run as a script

RESULTS = Path(__file__).with_name("RESULTS.md")
CACHE = Path(__file__).with_name(".cache") / "rm"
FOLDS = Path(__file__).with_name("rm-folds")
"""Finished cross-validation folds: their held-out figures and out-of-fold scores (keyed by a
hash of conversation and response, no text). Kept in git: a SmolLM2 fold takes 15-25 minutes
on 2 cores, so a 5-fold CV may span several sessions of work on a fresh checkout."""
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = ("pandalm_testset-v1.json", "hh_harmless-base_test.jsonl.gz")


def decisive(path: Path) -> list[dict]:
    """The file's pairs people decided, as reward-model rows (conversation, chosen, rejected)."""
    rows = []
    for pair in read_labelled_pairs(path):
        if pair.majority not in ("a", "b"):
            continue
        chosen, rejected = (pair.a, pair.b) if pair.majority == "a" else (pair.b, pair.a)
        conversation = [{"role": m["role"], "content": m["content"]} for m in pair.messages]
        group = hashlib.sha256(json.dumps(conversation).encode()).hexdigest()[:16]
        rows.append(
            {"conversation": conversation, "chosen": chosen, "rejected": rejected, "group": group}
        )
    return rows


def train(base: str, rows: list[dict], out: Path, args, settings: Settings) -> tuple[float, Path]:
    """Train on ``rows``; return (seconds, the model's directory) and leave it at ``out``."""
    ref = reward_base(settings, base)
    training = settings.training.model_copy(
        update={
            "method": "reward",
            "max_steps": args.max_steps or 0,
            "max_length": args.max_length or settings.training.max_length,
            "save_steps": 100_000,
            "seed": args.seed,
        }
    )
    config = TrainConfig.build(
        settings,
        training,
        ref,
        "cpu",
        "inprocess",
        job_id=out.name,
        output_dir=str(out),
        rm_tuning=resolve_tuning("auto", ref.source),
    )
    if args.reuse and (out / "metrics.json").exists():  # trained by an earlier run: measure only
        return float(json.loads((out / "metrics.json").read_text())["seconds"]), out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    began = time.perf_counter()
    metrics = run_reward(config, rows, [1.0] * len(rows), [], lambda entry: None)
    seconds = time.perf_counter() - began
    (out / "metrics.json").write_text(json.dumps({**metrics, "config": config.as_dict()}, default=str))
    return seconds, out


def scorer_of(out: Path, settings: Settings, base: str, max_length: int):
    from criticloop.reward import RewardModelSpec, load_sequence_classifier

    meta = json.loads((out / "metrics.json").read_text())
    lora = meta["tuning"] == "lora"
    ref = reward_base(settings, base)
    spec = RewardModelSpec(
        name=out.name,
        model=ref.source if lora else str(out / "adapter"),
        adapter=str(out / "adapter") if lora else None,
        center=meta["center"],
    )
    model, tokenizer = load_sequence_classifier(spec, "cpu")
    return _Scorer(model, tokenizer, max_length), spec


def write_profile(spec, path: Path) -> None:
    table = f'[reward_models.rm]\nmodel = "{spec.model}"\ncenter = {spec.center}\n'
    if spec.adapter:
        table += f'adapter = "{spec.adapter}"\n'
    text = DEFAULT_PROFILES.read_text().replace(
        "[tasks.general.critics]\n", "[tasks.general.critics]\nreward_model = 0.5\n", 1
    )
    path.write_text(text + f'\n[options.reward_model]\nmodel = "rm"\n\n{table}')


def response_key(conversation: list[dict], text: str) -> str:
    """The key of one scored response in an out-of-fold file (bench/agreement.py reads it)."""
    return hashlib.sha256(json.dumps([conversation, text]).encode()).hexdigest()[:16]


class Recording:
    """A scorer that also keeps each response's score as the critic would give it (0-1)."""

    def __init__(self, scorer, spec, into: dict[str, float]):
        self.scorer, self.spec, self.into = scorer, spec, into

    def __call__(self, items):
        raw = self.scorer(items)
        for (conversation, text), value in zip(items, raw, strict=True):
            self.into[response_key(conversation, text)] = self.spec.to_unit(value)
        return raw


def longer_wins(rows: list[dict]) -> float:
    correct = [
        0.5 if len(r["chosen"]) == len(r["rejected"]) else float(len(r["chosen"]) > len(r["rejected"]))
        for r in rows
    ]
    return float(np.mean(correct))


def measure_only(args) -> None:
    """Each cached model on each file (e.g. bench/if_probe.jsonl), beside "longer wins"."""
    settings = Settings.load()
    settings.apply_offline_policy()
    max_length = args.max_length or settings.training.max_length
    lines = [
        "| model (base, fitted on) | measured on | pairs | accuracy | ECE | longer response wins |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for out in sorted(p for p in CACHE.glob("*") if (p / "metrics.json").exists()):
        base = out.name.split("-")[0]
        scorer, _ = scorer_of(out, settings, base, max_length)
        for path in args.measure:
            rows = decisive(path)
            held = evaluate_pairs(scorer, rows)
            lines.append(
                f"| {out.name} | {path.name} | {held['n']} | {held['accuracy']:.1%} | "
                f"{held['ece']:.3f} | {longer_wins(rows):.1%} |"
            )
            print(lines[-1], file=sys.stderr)
    table = "\n".join(lines)
    print(table)
    if not args.no_record:
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write(
                f"\n### Trained reward models on other data, {datetime.date.today()}\n\n"
                f"Machine: {machine()}. `bench/reward_models.py {' '.join(sys.argv[1:])}`: the "
                "models trained by the run above, measured without training.\n\n"
                f"{table}\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", nargs="+", default=["minilm", "smollm2"])
    parser.add_argument("--cv", nargs="*", default=["minilm"], help="bases to cross-validate")
    parser.add_argument("--max-steps", type=int, default=0, help="cap each run (0: one epoch)")
    parser.add_argument("--max-length", type=int, default=0, help="tokens (0: the settings')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-cross", action="store_true", help="only the cross-validation (no PandaLM <-> HH)"
    )
    parser.add_argument(
        "--cv-files", nargs="+", choices=["pandalm", "hh"], default=["pandalm", "hh"],
        help="the files to cross-validate on",
    )  # fmt: skip
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--reuse", action="store_true", help="keep models a run left in bench/.cache/rm (its training time)"
    )
    parser.add_argument(
        "--measure",
        type=Path,
        nargs="+",
        help="train nothing: measure the models trained before (bench/.cache/rm) on these files",
    )
    args = parser.parse_args()
    if args.measure:
        return measure_only(args)
    files = [SHARED / name for name in FILES]
    if any(not f.exists() for f in files):
        print(f"skipped: {SHARED} lacks {FILES} (the shared data folder sits beside the project)")
        return
    settings = Settings.load()
    settings.apply_offline_policy()
    data = {f.name: decisive(f) for f in files}
    max_length = args.max_length or settings.training.max_length
    figures = []
    began = time.perf_counter()
    for base in args.bases:
        crossed = () if args.no_cross else ((files[0], files[1]), (files[1], files[0]))
        for fit_on, measure_on in crossed:
            out = CACHE / f"{base}-{fit_on.name.split('.')[0]}"
            seconds, out = train(base, data[fit_on.name], out, args, settings)
            scorer, spec = scorer_of(out, settings, base, max_length)
            held = evaluate_pairs(scorer, data[measure_on.name])
            write_profile(spec, out.with_suffix(".toml"))
            steps = json.loads((out / "metrics.json").read_text())["steps"]
            figure = {
                "base": base, "tuning": json.loads((out / "metrics.json").read_text())["tuning"],
                "fit_on": fit_on.name, "measured_on": measure_on.name,
                "pairs_fit": len(data[fit_on.name]), "pairs_measured": held["n"],
                "steps": steps, "accuracy": held["accuracy"], "ece": held["ece"],
                "log_loss": held["log_loss"], "train_seconds": round(seconds, 1),
                "ms_per_response": held["ms_per_response"],
                "longer_wins": longer_wins(data[measure_on.name]),
            }  # fmt: skip
            figures.append(figure)
            print(json.dumps(figure), file=sys.stderr)
        if base not in args.cv:
            continue
        for path in [f for f in files if f.name.split("_")[0] in args.cv_files]:
            rows = data[path.name]
            groups = sorted({r["group"] for r in rows})
            fold = {g: int(hashlib.sha256(f"{args.seed}:{g}".encode()).hexdigest(), 16) % 5 for g in groups}
            accs, eces, secs, correct_len = [], [], [], []
            oof: dict[str, float] = {}
            for k in range(5):
                fit = [r for r in rows if fold[r["group"]] != k]
                test = [r for r in rows if fold[r["group"]] == k]
                # A finished fold is kept (FOLDS): a stopped run picks up at the first fold
                # without a result of the same settings.
                key = {"base": base, "file": path.name, "fold": k, "seed": args.seed,
                       "max_steps": args.max_steps, "max_length": max_length, "pairs": len(test)}  # fmt: skip
                digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
                done = FOLDS / f"{base}-fold{k}-{digest[:12]}.json"  # the key is inside
                if done.exists() and json.loads(done.read_text())["key"] == key:
                    kept = json.loads(done.read_text())
                    held, seconds, tuning = kept["held"], kept["seconds"], kept["tuning"]
                    oof.update(kept["oof"])
                    print(f"fold {k} of {path.name}: kept from {done}", file=sys.stderr)
                else:
                    mine: dict[str, float] = {}
                    with tempfile.TemporaryDirectory() as tmp:
                        seconds, out = train(base, fit, Path(tmp) / f"cv{k}", args, settings)
                        scorer, spec = scorer_of(out, settings, base, max_length)
                        held = evaluate_pairs(Recording(scorer, spec, mine), test)
                        tuning = json.loads((out / "metrics.json").read_text())["tuning"]
                    oof.update(mine)
                    done.parent.mkdir(parents=True, exist_ok=True)
                    partial = done.with_suffix(".partial")
                    partial.write_text(json.dumps({"key": key, "held": held, "seconds": seconds,
                                                   "tuning": tuning, "oof": mine}))  # fmt: skip
                    partial.replace(done)
                    print(f"fold {k} of {path.name}: {held['accuracy']:.1%} ({seconds:.0f} s)",
                          file=sys.stderr)  # fmt: skip
                accs.append(held["accuracy"] * held["n"])
                eces.append(held["ece"] * held["n"])
                secs.append(seconds)
                correct_len.append(longer_wins(test) * len(test))
            n = len(rows)
            CACHE.mkdir(parents=True, exist_ok=True)
            (CACHE / f"oof-{base}-{path.name.split('.')[0]}.json").write_text(
                json.dumps({"file": path.name, "base": base, "argv": sys.argv[1:], "scores": oof})
            )
            figure = {
                "base": base, "fit_on": f"{path.name} (5-fold CV)", "measured_on": path.name,
                "pairs_fit": round(n * 0.8), "pairs_measured": n, "accuracy": sum(accs) / n,
                "ece": sum(eces) / n, "log_loss": None, "train_seconds": round(float(np.mean(secs)), 1),
                "ms_per_response": None, "longer_wins": sum(correct_len) / n, "steps": None,
                "tuning": tuning,
            }  # fmt: skip
            figures.append(figure)
            print(json.dumps(figure), file=sys.stderr)
    elapsed = time.perf_counter() - began
    lines = [
        "| base (tuning) | fitted on | measured on | pairs fitted | pairs measured | steps | "
        "accuracy | ECE | longer response wins | CPU training s | ms per scored response |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        ms = "-" if f["ms_per_response"] is None else f"{f['ms_per_response']:.1f}"
        steps = "-" if f["steps"] is None else str(f["steps"])
        lines.append(
            f"| {f['base']} ({f['tuning']}) | {f['fit_on']} | {f['measured_on']} | "
            f"{f['pairs_fit']} | {f['pairs_measured']} | {steps} | {f['accuracy']:.1%} | "
            f"{f['ece']:.3f} | {f['longer_wins']:.1%} | {f['train_seconds']:.0f} | {ms} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "figures": figures}, indent=2))
    if args.no_record:
        return
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(
            f"\n### Trained reward models vs people, {datetime.date.today()}\n\n"
            f"Machine: {machine()}. `bench/reward_models.py {' '.join(sys.argv[1:])}`; "
            f"{elapsed:.0f} s in all. TRL RewardTrainer with the default training settings "
            f"(learning rate {settings.training.learning_rate:g}, batch {settings.training.batch_size}, "
            f"one epoch{f', capped at {args.max_steps} steps' if args.max_steps else ''}, "
            f"max length {max_length} tokens); people's majority, ties left out; accuracy: the "
            "chosen response scores higher; ECE of sigmoid(r_A - r_B) over both orders. CV "
            "rows: 5 folds by prompt, pooled; training seconds per fold.\n\n"
            f"{table}\n"
        )


if __name__ == "__main__":
    main()
