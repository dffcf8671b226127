"""Agreement of the helpfulness critic with people on the PandaLM test set, against length.

    .venv/bin/python bench/helpfulness_pandalm.py                 # add --no-record to only print
    .venv/bin/python bench/helpfulness_pandalm.py --with-policy   # also the policy-NLL baseline

Each PandaLM row has one instruction, two responses and three annotators' labels; the majority
label (ties and rows without a majority left out) says which response people preferred. The
critic agrees when it scores that response higher; equal scores count as half. The longer
response wins about two thirds of these pairs, so a helpfulness critic has to beat that.
Rows with an even ``idx`` are the dev half (the only half the critic's weights were tuned on),
odd ones the held-out test half. Prints a table and appends it, with the machine, date and
critic version, to bench/RESULTS.md. Reads the data from ../shared/data beside the project.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from criticloop.agents import Case, Signals, build_critic, load_embedder
from criticloop.settings import Settings

RESULTS = Path(__file__).with_name("RESULTS.md")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pandalm_testset-v1.json"


@dataclass(frozen=True)
class Pair:
    idx: int
    winner: int  # 1 or 2: the response the annotators' majority preferred
    first: Case
    second: Case


def _text(value: object) -> str:
    """Six response fields are JSON ``true``: the model answered "True"."""
    if isinstance(value, str):
        return value
    return "" if value is None else str(value)


def majority(row: dict) -> int | None:
    label, votes = Counter(row[f"annotator{i}"] for i in (1, 2, 3)).most_common(1)[0]
    return label if votes >= 2 and label in (1, 2) else None


def load_pairs(path: Path) -> list[Pair]:
    pairs = []
    for row in json.loads(path.read_text(encoding="utf-8")):
        winner = majority(row)
        if winner is None:
            continue
        instruction, extra = _text(row["instruction"]), _text(row["input"])
        request = instruction + (f"\n\n{extra}" if extra else "")
        cases = [
            Case(f"pandalm-{row['idx']}-{k}", "general", (("user", request),), _text(row[k]))
            for k in ("response1", "response2")
        ]
        pairs.append(Pair(int(row["idx"]), winner, *cases))
    return pairs


def agreement(pairs: Sequence[Pair], value: Callable[[Case], float]) -> tuple[float, int]:
    """Share of pairs where the higher value is the people's choice (equal = half), and ties."""
    points, ties = 0.0, 0
    for pair in pairs:
        a, b = value(pair.first), value(pair.second)
        if a == b:
            points += 0.5
            ties += 1
        elif (a > b) == (pair.winner == 1):
            points += 1.0
    return points / max(len(pairs), 1), ties


def bootstrap(outcomes: Sequence[float], rounds: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the mean of per-pair outcomes."""
    rng = random.Random(seed)
    n = len(outcomes)
    means = sorted(sum(rng.choices(outcomes, k=n)) / n for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def outcome(pair: Pair, value: Callable[[Case], float]) -> float:
    a, b = value(pair.first), value(pair.second)
    return 0.5 if a == b else float((a > b) == (pair.winner == 1))


def machine() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-policy", action="store_true", help="load the policy: NLL baseline")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md")
    args = parser.parse_args()

    if not DATA.exists():
        print(f"skipped: {DATA} is absent (the shared data folder sits beside the project)")
        return
    pairs = load_pairs(DATA)
    settings = Settings.load()
    settings.apply_offline_policy()
    policy = None
    if args.with_policy:
        from criticloop.agents import Policy

        policy = Policy.load(settings)
    signals = Signals(load_embedder(settings), policy)
    critic = build_critic("helpfulness")
    cases = [c for p in pairs for c in (p.first, p.second)]

    began = time.perf_counter()
    if policy is None:
        signals.prepare(cases)
    else:  # the policy's forward pass in slices of 16 bounds the memory its logits take
        for start in range(0, len(cases), 16):
            signals.prepare(cases[start : start + 16])
    prepare_s = time.perf_counter() - began

    began = time.perf_counter()
    scores = {c.prompt_id: critic(c, signals).score for c in cases}
    critic_s = time.perf_counter() - began

    def by_critic(case: Case) -> float:
        score = scores[case.prompt_id]
        return -1.0 if score is None else score

    def by_length(case: Case) -> float:
        return float(len(case.response))

    methods: list[tuple[str, Callable[[Case], float]]] = [
        (f"helpfulness critic v{critic.version}", by_critic),
        ("length baseline (longer wins)", by_length),
    ]
    if policy is not None:

        def by_nll(case: Case) -> float:
            nll = signals.response_nll(case)
            return -nll[0] if nll else float("-inf")

        methods.append(("policy NLL baseline (lower wins)", by_nll))

    halves = {
        "dev (even idx)": [p for p in pairs if p.idx % 2 == 0],
        "test (odd idx)": [p for p in pairs if p.idx % 2 == 1],
        "all": pairs,
    }
    test = halves["test (odd idx)"]
    low, high = bootstrap([outcome(p, by_critic) for p in test], args.bootstrap, args.seed)
    diffs = [outcome(p, by_critic) - outcome(p, by_length) for p in test]
    d_low, d_high = bootstrap(diffs, args.bootstrap, args.seed)

    header = "| method | " + " | ".join(f"{name} ({len(ps)})" for name, ps in halves.items())
    header += " |\n|---|" + "---:|" * len(halves)
    lines = []
    for label, value in methods:
        cells = []
        for ps in halves.values():
            share, ties = agreement(ps, value)
            cells.append(f"{100 * share:.1f}%" + (f" ({ties} ties)" if ties else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    n_responses = len(cases)
    title = (
        f"### Helpfulness critic vs people, PandaLM test set, {datetime.date.today().isoformat()}"
        f"\n\nMachine: {machine()}. Critic helpfulness v{critic.version}, "
        f"{'with' if policy else 'without'} the policy. {len(pairs)} non-tie majority pairs of "
        "999 (ties in scores count half). Weights tuned on the dev half only.\n"
    )
    footer = (
        f"\nTest-half agreement 95% bootstrap interval ({args.bootstrap} resamples): "
        f"{100 * low:.1f}%-{100 * high:.1f}%; critic minus length on the test half: "
        f"{100 * sum(diffs) / len(diffs):+.1f} points ({100 * d_low:+.1f} to {100 * d_high:+.1f}).\n"
        f"Time: signals prepared in {prepare_s:.1f} s for {n_responses} responses "
        f"({1000 * prepare_s / n_responses:.1f} ms each); the critic itself "
        f"{1000 * critic_s / n_responses:.2f} ms per response.\n"
    )
    report = f"{title}\n{header}\n" + "\n".join(lines) + f"\n{footer}"
    print(report)
    if not args.no_record:
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write("\n" + report)


if __name__ == "__main__":
    main()
