"""Agreement of the critics plus the learned aggregator with people, on labelled pairwise files.

    .venv/bin/python bench/agreement.py FILE...                  # cross-validated on each file
    .venv/bin/python bench/agreement.py --train A --eval B [C]   # fit on A, measure on B, C
    .venv/bin/python bench/agreement.py                          # the PandaLM and HH files
    .venv/bin/python bench/agreement.py --profile P.toml ...     # any critic set, reward models too
    .venv/bin/python bench/agreement.py ... --json OUT.json      # the figures for machines
    .venv/bin/python bench/agreement.py FILE --oof bench/.cache/rm/oof-minilm-FILE.json

``--profile`` measures the critics its ``general`` task weights, on their backends: a
``reward_model`` critic or ``helpfulness = "reward_model:NAME"`` scores with that reward model
(a ``[reward_models]`` table, or ``trained`` from ``$CRITICLOOP_HOME``'s registry). Each
figure is also given for every critic alone (the sign of its score difference).

``--oof FILE`` adds a reward model's out-of-fold scores (written by ``bench/reward_models.py
--cv``: each response scored by the fold's model that never trained on it) as the
``reward_model`` critic at weight ``--oof-weight``, so "critics + reward model" can be
cross-validated on the file the reward model was trained on without the model having seen the
pairs it scores.

Files: PandaLM (``instruction/input/response1/response2/annotator1..3``), HH-RLHF
(``chosen/rejected`` transcripts, .jsonl or .jsonl.gz) or plain ``{"prompt", "a", "b",
"label"}`` JSONL, read by the same loaders as ``criticloop labels import``. The critics score
every response as the graph would (the profile's ``general`` critics; MiniLM embeddings and,
unless ``--no-policy``, the policy's likelihood for coherence), the aggregator is fitted and
calibrated exactly as ``criticloop calibrate`` does, and every figure is printed beside the
trivial baseline "the longer response wins" (confidence: the length difference) and the
profile's weighted reward (confidence: the reward difference). Ties in the people's majority
are left out. Scores are cached in bench/.cache (keyed by file, critic versions and policy),
so a rerun only refits. Appends the tables, machine and date to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from criticloop.agents import Case, Signals, load_embedder, run_critic
from criticloop.reward import (
    FEATURES,
    TARGETS,
    Example,
    Profiles,
    aggregate,
    build_critics,
    confidence_and_correct,
    evaluate_model,
    fit_reward_model,
    pair_features,
)
from criticloop.reward import _calstats as cs
from criticloop.settings import Settings
from criticloop.store import read_labelled_pairs
from helpfulness_agreement import machine  # bench/ is on the path when run as a script

RESULTS = Path(__file__).with_name("RESULTS.md")
CACHE = Path(__file__).with_name(".cache")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_FILES = ("pandalm_testset-v1.json", "hh_harmless-base_test.jsonl.gz")
PER_CRITIC: dict[str, dict[str, tuple[list[str], list]]] = {}  # file -> critic set -> scores


def scored_examples(
    path: Path, settings: Settings, profiles: Profiles, *, policy: bool, oof: dict | None = None
) -> tuple[list[Example], dict[str, int], float]:
    """The file's decisive pairs as examples (critics' features, people's majority); ``oof``
    ({"weight", "scores"}) adds precomputed out-of-fold reward-model scores as a critic."""
    pairs = read_labelled_pairs(path)
    critics = build_critics(profiles, settings)
    weights = dict(profiles.for_prompt("general").weights)
    names = [n for n, w in weights.items() if w > 0]
    versions = {n: critics[n].version for n in names}
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    key = hashlib.sha256(json.dumps([digest, versions, policy]).encode()).hexdigest()[:16]
    cache = CACHE / f"{path.name}-{key}.json"
    counts = {"rows": pairs.rows, "ties": 0, "no_majority": 0, **dict(pairs.skipped)}
    decisive = []
    for pair in pairs:
        if pair.majority in ("a", "b"):
            decisive.append(pair)
        else:
            counts["ties" if pair.majority == "tie" else "no_majority"] += 1
    seconds = 0.0
    if cache.exists():
        scores = json.loads(cache.read_text())
    else:
        began = time.perf_counter()
        scores = _score(decisive, critics, names, settings, policy)
        seconds = time.perf_counter() - began
        CACHE.mkdir(exist_ok=True)
        cache.write_text(json.dumps(scores))
    if oof is not None:
        scores, names = _with_oof(decisive, scores, oof["scores"], path), [*names, "reward_model"]
        weights["reward_model"] = oof["weight"]
    examples = []
    PER_CRITIC.setdefault(path.name, {})[json.dumps(versions, sort_keys=True)] = (names, scores)
    for i, pair in enumerate(decisive):
        a = aggregate("a", scores[i][0], weights)
        b = aggregate("b", scores[i][1], weights)
        examples.append(
            Example(
                key=pair.key,
                group=hashlib.sha256(json.dumps(pair.messages).encode()).hexdigest()[:16],
                x=pair_features(a, b, weights),
                y=int(pair.majority == "a"),
                length_diff=len(pair.a) - len(pair.b),
            )
        )
    return examples, counts, seconds


def _with_oof(pairs, scores: list, table: dict[str, float], path: Path) -> list:
    """``scores`` with each response's out-of-fold reward-model score as the ``reward_model``
    critic (key: bench/reward_models.py's ``response_key``)."""
    from reward_models import response_key

    out, missing = [], 0
    for pair, both in zip(pairs, scores, strict=True):
        conversation = [{"role": m["role"], "content": m["content"]} for m in pair.messages]
        sides = []
        for text, per in zip((pair.a, pair.b), both, strict=True):
            unit = table.get(response_key(conversation, text))
            missing += unit is None
            rm = None if unit is None else {"score": unit, "confidence": abs(2 * unit - 1)}
            sides.append({**per, **({"reward_model": rm} if rm else {})})
        out.append(sides)
    if missing:
        sys.exit(f"{path.name}: {missing} responses have no out-of-fold score (another file?)")
    return out


def per_critic(examples: Sequence[Example], scores_by_example: list, names: list[str]) -> dict:
    """Accuracy of each critic alone: the sign of its score difference (ties count half)."""
    out = {}
    for name in names:
        correct = []
        for example, (a, b) in zip(examples, scores_by_example, strict=True):
            sa, sb = (a.get(name) or {}).get("score"), (b.get(name) or {}).get("score")
            if sa is None or sb is None:
                correct.append(0.5)
            else:
                correct.append(0.5 if sa == sb else float((sa > sb) == (example.y == 1)))
        out[name] = {"accuracy": float(np.mean(correct)) if correct else None, "n": len(correct)}
    return out


def _score(pairs, critics, names, settings: Settings, policy: bool) -> list:
    model = None
    if policy:
        from criticloop.agents import Policy

        model = Policy.load(settings)
    signals = Signals(load_embedder(settings), model)
    cases = [
        Case(
            f"bench-{i}",
            pair.task_type,
            tuple((m["role"], m["content"]) for m in pair.messages),
            text,
        )
        for i, pair in enumerate(pairs)
        for text in (pair.a, pair.b)
    ]
    step = 16 if policy else 256  # the policy's logits take memory per slice
    from criticloop.reward import prepare_reward_critics

    for start in range(0, len(cases), step):
        batch = cases[start : start + step]  # a pair's two answers share a prompt id: rivals
        signals.prepare(batch)
        prepare_reward_critics(critics, names, batch)
        print(f"\r  scored {min(start + step, len(cases))}/{len(cases)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    out = []
    for i in range(len(pairs)):
        both = []
        for case in cases[2 * i : 2 * i + 2]:
            per = {}
            for name in names:
                if critics[name].applies(case):
                    score = run_critic(critics[name], case, signals)
                    per[name] = {**score.as_dict(), "veto": score.veto}
            both.append(per)
        out.append(both)
    return out


def baselines(examples: Sequence[Example]) -> dict[str, dict]:
    """Accuracy and coverage at each target for "longer wins" and the profile reward, each
    with the size of its difference as its confidence."""
    y = np.array([e.y for e in examples])
    out = {}
    for name, values in (
        ("longer response wins", np.array([e.length_diff for e in examples], dtype=float)),
        ("profile reward", np.array([e.x[FEATURES.index("reward_diff")] for e in examples])),
    ):
        correct = np.where(values == 0, 0.5, ((values > 0) == (y == 1)).astype(float))
        ranked = np.abs(values) / (np.abs(values).max() or 1.0)  # a ranking, not a probability
        out[name] = {
            "accuracy": float(correct.mean()),
            "coverage_at": [
                cs.coverage_at(0.5 + ranked / 2, (correct >= 1).astype(int), t) for t in TARGETS
            ],
            "escalation": cs.escalation_curve(0.5 + ranked / 2, (correct >= 1).astype(int)),
        }
    return out


FIGURES: list[dict] = []


def _row(label: str, n: int, name: str, acc: float, ece: float | None, cover: list) -> str:
    FIGURES.append(
        {
            "data": label,
            "n": n,
            "method": name,
            "accuracy": acc,
            "ece": ece,
            "coverage_at": {str(t): c["coverage"] for t, c in zip(TARGETS, cover, strict=False)},
        }
    )
    cells = " | ".join(f"{c['coverage']:.0%}" for c in cover) if cover else " | ".join("" for _ in TARGETS)
    e = "-" if ece is None else f"{ece:.3f}"
    return f"| {label} | {n} | {name} | {acc:.1%} | {e} | {cells} |"


def report(label: str, held: dict, base: dict) -> list[str]:
    n = held["n"]
    lines = [
        _row(
            label,
            n,
            "critics + learned aggregator",
            held["model"]["accuracy"],
            held["model"]["ece"],
            held["coverage_at"],
        )
    ]
    for name, b in base.items():
        lines.append(_row(label, n, name, b["accuracy"], None, b["coverage_at"]))
    return lines


def escalation_table(label: str, curve: list, base: dict) -> list[str]:
    length = base["longer response wins"]["escalation"]
    lines = []
    for row, lrow in zip(curve, length, strict=True):
        lines.append(
            f"| {label} | {row['budget']:.0%} | {row['uncertainty']:.1%} | "
            f"{row['random']:.1%} ({row['random_lo']:.1%}-{row['random_hi']:.1%}) | "
            f"{lrow['uncertainty']:.1%} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="cross-validate on each")
    parser.add_argument("--train", type=Path, help="fit on this file ...")
    parser.add_argument("--eval", type=Path, nargs="+", default=[], help="... measure on these")
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--risk", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="splits for the stability table")
    parser.add_argument("--no-policy", action="store_true", help="coherence without the NLL")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md")
    parser.add_argument(
        "--profile", type=Path, help="critic profile to measure (its general task's critics)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument(
        "--oof", type=Path, nargs="+", default=[],
        help="out-of-fold reward-model scores (bench/reward_models.py --cv) to add as a critic",
    )  # fmt: skip
    parser.add_argument("--oof-weight", type=float, default=0.5, help="its weight in the reward")
    args = parser.parse_args()
    if args.train is None and args.eval:
        parser.error("--eval needs --train")
    if args.oof and args.train is not None:
        parser.error("--oof is for cross-validation on the file the scores came from, not --train")
    files = list(args.files)
    if not files and args.train is None:
        files = [SHARED / name for name in DEFAULT_FILES]
        missing = [f for f in files if not f.exists()]
        if missing:
            print(
                f"skipped: {missing[0]} is absent (the shared data folder sits beside the project)"
            )
            return
    settings = Settings.load()
    settings.apply_offline_policy()
    profiles = Profiles.load(args.profile or settings.profiles)
    policy = not args.no_policy

    header = [
        "| data | pairs measured | method | accuracy | ECE | cov@70% | cov@80% | cov@90% |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    esc_header = [
        "| data | sent to people | by uncertainty | at random (95% band) | by length gap |",
        "|---|---:|---:|---:|---:|",
    ]
    table, escalation, notes, stability = [], [], [], []
    began = time.perf_counter()
    oofs = {}
    for oof_path in args.oof:
        scored = json.loads(oof_path.read_text())
        oofs[scored["file"]] = {"weight": args.oof_weight, "scores": scored["scores"]}
    for path in files:
        examples, counts, seconds = scored_examples(
            path, settings, profiles, policy=policy, oof=oofs.get(path.name)
        )
        fit = fit_reward_model(examples, target=args.target, risk=args.risk, seed=args.seed)
        held_idx = fit.held_out["index"]
        base = baselines([examples[i] for i in held_idx])
        label = f"{path.name} (held-out split)"
        table += report(label, fit.report["held_out"], base)
        cv = fit.report["cross_validated"]
        cv_label, n_fit = f"{path.name} (5-fold CV, fit split)", fit.report["split"]["fit"]
        table.append(
            _row(cv_label, n_fit, "critics + learned aggregator", cv["model"]["accuracy"],
                 cv["model"]["ece"], [])
        )  # fmt: skip
        table.append(_row(cv_label, n_fit, "longer response wins", cv["length"]["accuracy"], None, []))
        table += _alone_rows(path)
        escalation += escalation_table(path.name, fit.report["escalation"], base)
        notes.append(_note(path.name, counts, examples, fit, seconds))
        stability += _stability(path.name, examples, args)
    if args.train is not None:
        train, counts, seconds = scored_examples(args.train, settings, profiles, policy=policy)
        fit = fit_reward_model(train, target=args.target, risk=args.risk, seed=args.seed)
        notes.append(_note(args.train.name + " (train)", counts, train, fit, seconds))
        for path in args.eval:
            examples, counts, seconds = scored_examples(path, settings, profiles, policy=policy)
            held = evaluate_model(
                fit.model, examples, threshold=fit.threshold.threshold, seed=args.seed
            )
            base = baselines(examples)
            label = f"{path.name} (fitted on {args.train.name})"
            table += report(label, held, base)
            table += _alone_rows(path)
            escalation += escalation_table(label, held["escalation"], base)
            applied = held.get("policy") or {}
            notes.append(
                f"- {label}: {len(examples)} decisive pairs ({_counts(counts)}); the threshold "
                f"chosen on {args.train.name} ({_num(fit.threshold.threshold)}) decides "
                f"{_num(applied.get('coverage'), pct=True)} here with agreement "
                f"{_num(applied.get('agreement'), pct=True)} (the guarantee holds only for data "
                "like the calibration split)."
            )
    elapsed = time.perf_counter() - began
    text = "\n".join(header + table)
    stab = "\n".join(
        [
            f"| data | over {args.repeats} splits (seeds) | mean | min | max |",
            "|---|---|---:|---:|---:|",
            *stability,
        ]
    )
    esc = "\n".join(esc_header + escalation)
    print(text)
    print()
    print(esc)
    print()
    if stability:
        print(stab)
        print()
    print("\n".join(notes))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "argv": sys.argv[1:],
                    "profile": profiles.version,
                    "critics": sorted(profiles.for_prompt("general").critics),
                    "policy": policy,
                    "machine": machine(),
                    "date": str(datetime.date.today()),
                    "seconds": round(elapsed, 1),
                    "figures": FIGURES,
                },
                indent=2,
                default=float,
            )
        )
    if args.no_record:
        return
    mode = "with the policy's likelihood" if policy else "without the policy (--no-policy)"
    if args.oof:
        mode += (
            f", plus out-of-fold reward-model scores ({', '.join(p.name for p in args.oof)}) as "
            f"the reward_model critic at weight {args.oof_weight:g}"
        )
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(
            f"\n### Critics + learned aggregator vs people, {datetime.date.today()}\n\n"
            f"Machine: {machine()}. `bench/agreement.py` {' '.join(sys.argv[1:])}; critics of the "
            f"profile's general task ({', '.join(sorted(profiles.for_prompt('general').critics))}; "
            f"profile {profiles.version}), {mode}; target {args.target:.0%} at risk {args.risk:g}; "
            f"seed {args.seed}; {elapsed:.0f} s. People's majority, ties left out. cov@X: share "
            "of held-out pairs decided automatically (most confident first) while their "
            "agreement stays >= X (empirical, no guarantee); for the baselines the confidence "
            "is the size of their difference.\n\n"
            f"{text}\n\nEscalation for the same human budget: agreement of the automatically "
            f"decided pairs.\n\n{esc}\n\n"
            + (
                f"The same on other splits of the file (held-out split of each seed; "
                f"'guaranteed coverage': what the threshold chosen for {args.target:.0%} at "
                f"risk {args.risk:g} decides).\n\n{stab}\n\n"
                if stability
                else ""
            )
            + "\n".join(notes)
            + "\n"
        )


def _alone_rows(path: Path) -> list[str]:
    """Each critic alone on every decisive pair of the file (no fitting): the sign of its
    score difference."""
    rows = []
    for names, scores in PER_CRITIC.get(path.name, {}).values():
        pairs = read_labelled_pairs(path)
        ys = [int(p.majority == "a") for p in pairs if p.majority in ("a", "b")]
        fake = [Example(key="", group="", x=np.zeros(1), y=y) for y in ys]
        for name, fig in per_critic(fake, scores, names).items():
            rows.append(
                _row(f"{path.name} (all pairs, no fit)", fig["n"], f"{name} alone",
                     fig["accuracy"], None, [])
            )  # fmt: skip
    return rows


def _stability(name: str, examples: Sequence[Example], args) -> list[str]:
    rows: dict[str, list[float]] = {}
    for seed in range(args.repeats):
        fit = fit_reward_model(examples, target=args.target, risk=args.risk, seed=seed)
        held = fit.report["held_out"]
        base = baselines([examples[i] for i in fit.held_out["index"]])
        values = {
            "accuracy, critics + learned aggregator": held["model"]["accuracy"],
            "accuracy, longer response wins": base["longer response wins"]["accuracy"],
            "accuracy, profile reward": base["profile reward"]["accuracy"],
            "ECE": held["model"]["ece"],
            "coverage at 80% (empirical)": held["coverage_at"][1]["coverage"],
            "guaranteed coverage": fit.threshold.coverage,
        }
        for key, value in values.items():
            rows.setdefault(key, []).append(value)
    out = []
    for key, values in rows.items():
        fmt = "{:.3f}" if key == "ECE" else "{:.1%}"
        cells = " | ".join(fmt.format(v) for v in (np.mean(values), min(values), max(values)))
        out.append(f"| {name} | {key} | {cells} |")
    return out


def _num(value, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if pct else f"{value:.3f}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v)


def _note(name: str, counts: dict, examples: Sequence[Example], fit, seconds: float) -> str:
    policy = fit.threshold
    cv = fit.report["cross_validated"]
    conf, correct = confidence_and_correct(fit.held_out["p"], fit.held_out["y"])
    scored = f"; scored in {seconds:.0f} s" if seconds else "; scores from the cache"
    guarantee = (
        f"threshold {policy.threshold:.3f} decides {policy.coverage:.0%} of the held-out split "
        f"with agreement {policy.agreement:.1%} (>= {policy.lower_bound:.1%} at "
        f"{1 - policy.risk:.0%})"
        if policy.threshold is not None
        else f"no threshold meets {policy.target:.0%} at risk {policy.risk:g}"
    )
    return (
        f"- {name}: {len(examples)} decisive pairs ({_counts(counts)}){scored}; calibrator "
        f"{cv['calibrator']} (CV log-loss {cv['calibrator_log_loss']}); {guarantee}; held-out "
        f"mean confidence {conf.mean():.3f} vs agreement {correct.mean():.3f}."
    )


if __name__ == "__main__":
    main()
