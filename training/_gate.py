"""The promotion gate: a new adapter against the one in service, on held-out prompts.

    criticloop adapters evaluate VERSION     # or automatically after training

Both adapters answer the same held-out prompts with the same sampling seeds. The critics judge
each pair of answers in both orders (A against B, then B against A); a pair counts as a win or
a loss only when both orders agree and the reward difference exceeds the tie margin, otherwise
a tie. (The bundled critics score each answer on its own, so their two orders always agree; a
pairwise LLM judge can disagree with itself, and then the pair is a tie.)

The win rate counts ties as half. The answers to one prompt are not independent (the same
question, often similar answers), so both statistics count prompts, not comparisons: the 95%
interval is a percentile bootstrap that resamples whole prompts (``scipy.stats.bootstrap``), and
the sign test asks whether more prompts came out better (mean outcome above a tie) than worse
by more than chance, one-sided exact binomial over the prompts that were not even
(``scipy.stats.binomtest``). Two samples of a prompt that agree are one observation, not two.

Guards against a policy that learns what its own judge likes rather than what people want
(see :mod:`._compare` for what is measured on both sides):

- hard rules: when the candidate's answers break hard rules (the critics' vetoes) on more
  answers than the baseline's, by more than ``gate.max_violation_rise``, the gate keeps the
  baseline whatever the win rate;
- drift: when the candidate's answers grow longer than ``gate.max_length_growth`` allows, or
  its KL from the baseline passes ``gate.max_kl``, while the independent judge
  (``gate.independent``, a reward model that made no training data) does not find it better,
  the report carries a flag, which the run summary and ``criticloop jobs`` show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InputError
from ..settings import GateSettings, Settings
from ..store import Store
from ._compare import LOSS, TIE, WIN, Comparison, answers_of_both, judge_answers, outcome
from ._data import heldout_prompts, policy_conversation
from ._judge import CriticJudge

__all__ = ["GateReport", "outcome", "run_gate", "score_outcomes", "sign_test"]
SIGN_TEST = "one-sided exact sign test over prompts (better vs worse by mean outcome)"
INTERVAL = "95% percentile bootstrap over prompts"


@dataclass
class GateReport:
    candidate: str
    baseline: str | None  # None: the base model with no adapter
    prompts: int = 0
    comparisons: int = 0
    wins: int = 0
    losses: int = 0
    ties: int = 0
    inconsistent: int = 0  # the two orders disagreed (counted as ties)
    prompts_better: int = 0  # prompts whose mean outcome is above a tie
    prompts_worse: int = 0
    prompts_even: int = 0
    win_rate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    test: str = SIGN_TEST
    interval: str = INTERVAL
    mean_reward_candidate: float | None = None
    mean_reward_baseline: float | None = None
    decision: str = "keep"
    reason: str = ""
    rule: str = "significant"
    candidate_stats: dict[str, Any] = field(default_factory=dict)  # see Comparison.stats
    baseline_stats: dict[str, Any] = field(default_factory=dict)
    power: float | None = None  # the sign test's power at the share of prompts found better
    kl: float | None = None  # KL(candidate || baseline), nats per answer, on its answers
    independent: dict[str, Any] | None = None  # the independent judge's verdict
    flags: list[str] = field(default_factory=list)  # drift: length or KL up, no real gain
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The report without the per-comparison outcomes."""
        return {k: v for k, v in self.as_dict().items() if k != "outcomes"}


def sign_test(better: int, worse: int) -> float:
    """One-sided exact sign test: P(at least ``better`` of ``better + worse`` | no difference).

    The gate counts prompts here (see :func:`prompt_sign_test`), never comparisons."""
    from scipy.stats import binomtest

    n = better + worse
    if n == 0:
        return 1.0
    return float(binomtest(better, n, 0.5, alternative="greater").pvalue)


def sign_test_power(decisive: int, share_better: float, alpha: float) -> float:
    """Power of the one-sided sign test over ``decisive`` prompts (better or worse, not even)
    when a prompt comes out better with probability ``share_better``: the chance it finds the
    candidate better at level ``alpha``."""
    from scipy.stats import binom, binomtest

    if decisive < 1:
        return 0.0
    critical = next(
        (k for k in range(decisive + 1) if binomtest(k, decisive, 0.5, "greater").pvalue < alpha),
        None,
    )
    return 0.0 if critical is None else float(binom.sf(critical - 1, decisive, share_better))


def prompts_for_power(
    share_better: float, share_even: float, alpha: float, power: float = 0.8, most: int = 2000
) -> int | None:
    """Prompts the gate needs for ``power`` at this effect (None: more than ``most``, or no
    effect to find)."""
    if share_better <= 0.5 or share_even >= 1:
        return None
    return next(
        (
            m
            for m in range(1, most + 1)
            if sign_test_power(round(m * (1 - share_even)), share_better, alpha) >= power
        ),
        None,
    )


def prompt_sign_test(per_prompt: Sequence[Sequence[float]]) -> tuple[float, int, int, int]:
    """(p-value, prompts better, worse, even): the sign test over each prompt's mean outcome."""
    means = [sum(g) / len(g) for g in per_prompt if g]
    better = sum(m > TIE for m in means)
    worse = sum(m < TIE for m in means)
    return sign_test(better, worse), better, worse, len(means) - better - worse


def bootstrap_interval(
    per_prompt: Sequence[Sequence[float]], resamples: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean outcome, resampling whole prompts
    (``scipy.stats.bootstrap`` over each prompt's outcome sum and count, paired)."""
    import numpy as np
    from scipy.stats import bootstrap

    groups = [list(g) for g in per_prompt if g]
    if not groups:
        return (math.nan, math.nan)
    sums = np.array([sum(g) for g in groups], dtype=float)
    counts = np.array([len(g) for g in groups], dtype=float)
    if len(groups) == 1:  # one prompt: nothing to resample
        mean = float(sums[0] / counts[0])
        return (mean, mean)

    def pooled_mean(s, c, axis=-1):
        return s.sum(axis=axis) / c.sum(axis=axis)

    result = bootstrap(
        (sums, counts),
        pooled_mean,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return (float(interval.low), float(interval.high))


def score_outcomes(report: GateReport, per_prompt: dict[str, list[float]], gate: GateSettings):
    """Fill in the counts, win rate, interval, p-value and the decision."""
    flat = [o for group in per_prompt.values() for o in group]
    report.prompts = len(per_prompt)
    report.comparisons = len(flat)
    report.wins = sum(o == WIN for o in flat)
    report.losses = sum(o == LOSS for o in flat)
    report.ties = sum(o == TIE for o in flat)
    report.rule = gate.require
    if flat:
        report.win_rate = round(sum(flat) / len(flat), 4)
        low, high = bootstrap_interval(list(per_prompt.values()), gate.bootstrap, gate.seed)
        report.ci_low, report.ci_high = round(low, 4), round(high, 4)
    p_value, report.prompts_better, report.prompts_worse, report.prompts_even = (
        prompt_sign_test(list(per_prompt.values()))
    )
    report.p_value = round(p_value, 6)
    decisive = report.prompts_better + report.prompts_worse
    if decisive:
        share = report.prompts_better / decisive
        report.power = round(sign_test_power(decisive, share, gate.alpha), 4)
    report.decision, report.reason = decide(report, gate)
    return report


def decide(report: GateReport, gate: GateSettings) -> tuple[str, str]:
    baseline = report.baseline or "the base model"
    if not report.comparisons:
        return (
            "keep",
            "no held-out prompts to compare on (raise CRITICLOOP_TRAINING__HELDOUT_PERCENT)",
        )
    figures = (
        f"win rate {report.win_rate:.0%} (95% CI {report.ci_low:.0%}-{report.ci_high:.0%} "
        f"over prompts), {report.wins} wins {report.losses} losses {report.ties} ties over "
        f"{report.comparisons} comparisons on {report.prompts} prompts; sign test over prompts "
        f"({report.prompts_better} better, {report.prompts_worse} worse, "
        f"{report.prompts_even} even) p={report.p_value:.3g}"
    )
    refused = violation_guard(report, gate)
    if refused:
        return "keep", f"{figures}; {refused}"
    if gate.require == "always":
        return "promote", f"{figures}; the gate is set to promote every trained adapter"
    if gate.require == "better":
        if report.win_rate > 0.5:
            return "promote", f"{figures}: better than {baseline}"
        return "keep", f"{figures}: not better than {baseline}"
    significant = report.p_value < gate.alpha and report.ci_low > 0.5
    if significant:
        return "promote", f"{figures}: significantly better than {baseline}"
    return "keep", (
        f"{figures}: not significantly better than {baseline} "
        f"(needs p < {gate.alpha:g} and the interval above 50%)"
    )


def run_gate(
    settings: Settings,
    candidate_version: str,
    *,
    judge: CriticJudge | None = None,
    run_id: str | None = None,
    record: bool = True,
) -> GateReport:
    """Compare ``candidate_version`` with the adapter in service; store and return the report.

    Promotes the candidate when the gate's rule says so, otherwise marks it rejected.
    """
    from ..agents import Sampling, open_policy, policy_ref

    gate = settings.gate
    with Store.open(settings.db_path, create=False) as store:
        candidate = store.get_adapter(candidate_version)
        policy_name = policy_ref(settings, convert=False).name
        if candidate["base_model"] != policy_name:
            raise InputError(
                f"adapter {candidate_version} was trained on {candidate['base_model']}, but the "
                f"policy is {policy_name} (CRITICLOOP_POLICY__MODEL)"
            )
        current = store.promoted_adapter(candidate["base_model"])
        if current and current["version"] == candidate_version:
            current = (
                store.get_adapter(candidate["replaced_version"])
                if candidate["replaced_version"]
                else None
            )
        prompt_ids = heldout_prompts(store, settings.training.heldout_percent, gate.prompts)
        conversations = {pid: policy_conversation(store, pid) for pid in prompt_ids}
    report = GateReport(candidate=candidate_version, baseline=current and current["version"])
    judge = judge or CriticJudge(settings)
    independent = independent_judge(settings, judge)  # a bad name fails before generating
    comparison = Comparison()
    if prompt_ids:
        policy = open_policy(settings)
        sampling = Sampling(
            max_new_tokens=gate.max_new_tokens,
            temperature=gate.temperature,
            top_p=settings.generation.top_p,
            seed=gate.seed,
        )
        requests = [(pid, conversations[pid], range(gate.samples_per_prompt)) for pid in prompt_ids]
        texts, ratios = answers_of_both(
            policy, candidate, current, requests, sampling, settings.generation.batch_size
        )
        comparison = judge_answers(
            texts,
            judge,
            gate.tie_margin,
            independent=independent,
            ratios=ratios,
        )
    fill_report(report, comparison, gate)
    if record:
        with Store.open(settings.db_path, create=False) as store:
            store.record_gate_report(
                candidate_version,
                report.baseline,
                report.decision,
                report.reason,
                report.as_dict(),
                run_id=run_id,
            )
            if report.decision == "promote":
                store.promote_adapter(candidate_version, f"gate: {report.reason}")
            elif store.get_adapter(candidate_version)["status"] == "candidate":
                store.reject_adapter(candidate_version, f"gate: {report.reason}")
    return report


def independent_judge(settings: Settings, judge: CriticJudge) -> Any:
    """The reward model named by ``gate.independent`` (None when unset)."""
    from ._judge import ModelReward, parse_reward

    spec = settings.gate.independent
    if not spec:
        return None
    _, name = parse_reward(spec)
    return ModelReward.named(settings, name or "trained", judge)


def fill_report(report: GateReport, comparison: Comparison, gate: GateSettings) -> GateReport:
    """Counts, statistics, guards and the decision from a judged comparison."""
    per_prompt = comparison.per_prompt("critics")
    report.inconsistent = sum(r.inconsistent for r in comparison.rows)
    for row in comparison.rows:
        report.outcomes.append(
            {
                "prompt_id": row.prompt_id,
                "sample": row.sample,
                "outcome": {WIN: "win", TIE: "tie", LOSS: "loss"}[row.critics],
                "margin": round(row.margin, 4),
                "candidate": row.candidate.text,
                "baseline": row.baseline.text,
                "rules": {"candidate": list(row.candidate.rules), "baseline": list(row.baseline.rules)},
                "independent": row.independent,
                "kl": row.kl,
            }
        )
    if comparison.rows:
        report.candidate_stats = comparison.stats("candidate")
        report.baseline_stats = comparison.stats("baseline")
        report.mean_reward_candidate = round(report.candidate_stats["reward"], 4)
        report.mean_reward_baseline = round(report.baseline_stats["reward"], 4)
        report.kl = comparison.kl()
        if comparison.independent_name:
            report.independent = verdict(comparison, "independent", gate)
    score_outcomes(report, per_prompt, gate)
    report.flags = drift_flags(report, gate)
    return report


def verdict(comparison: Comparison, judge: str, gate: GateSettings) -> dict[str, Any]:
    """Win rate, interval and sign test of one judge's outcomes (counted by prompt)."""
    per_prompt = comparison.per_prompt(judge)
    flat = [o for group in per_prompt.values() for o in group]
    low, high = bootstrap_interval(list(per_prompt.values()), gate.bootstrap, gate.seed)
    p_value, better, worse, even = prompt_sign_test(list(per_prompt.values()))
    return {
        "judge": comparison.independent_name if judge == "independent" else "critics",
        "win_rate": round(sum(flat) / len(flat), 4) if flat else None,
        "ci_low": round(low, 4),
        "ci_high": round(high, 4),
        "p_value": round(p_value, 6),
        "prompts_better": better,
        "prompts_worse": worse,
        "prompts_even": even,
        "mean_candidate": comparison.stats("candidate")["reward" if judge == "critics" else judge],
        "mean_baseline": comparison.stats("baseline")["reward" if judge == "critics" else judge],
    }


def violation_guard(report: GateReport, gate: GateSettings) -> str | None:
    """Why the candidate may not be promoted for breaking hard rules more often, or None."""
    cand, base = report.candidate_stats, report.baseline_stats
    if not gate.violation_guard or not cand:
        return None
    rise = cand["violations"] - base["violations"]
    if rise > gate.max_violation_rise:
        return (
            f"refused: its answers break hard rules more often ({cand['violations']} of "
            f"{cand['answers']} against {base['violations']}; "
            f"CRITICLOOP_GATE__MAX_VIOLATION_RISE={gate.max_violation_rise})"
        )
    return None


def drift_flags(report: GateReport, gate: GateSettings) -> list[str]:
    """Signs of a policy learning its judge rather than the task: length or KL beyond their
    bounds while the independent judge does not find the candidate better."""
    cand, base = report.candidate_stats, report.baseline_stats
    if not cand:
        return []
    grew = []
    if base["words"] > 0 and cand["words"] > base["words"] * (1 + gate.max_length_growth):
        grew.append(
            f"answers {cand['words'] / base['words'] - 1:+.0%} longer ({base['words']:.0f} -> "
            f"{cand['words']:.0f} words; bound +{gate.max_length_growth:.0%})"
        )
    if report.kl is not None and report.kl > gate.max_kl:
        grew.append(f"KL from the baseline {report.kl:.1f} nats per answer (bound {gate.max_kl:g})")
    if not grew:
        return []
    independent = report.independent
    if independent is None:
        return [
            f"{'; '.join(grew)}, and no independent judge to say whether it is better "
            "(CRITICLOOP_GATE__INDEPENDENT)"
        ]
    if independent["win_rate"] is not None and independent["win_rate"] > TIE and (
        independent["p_value"] < gate.alpha
    ):
        return []
    return [
        f"{'; '.join(grew)}, while the independent judge ({independent['judge']}) does not find "
        f"it better (win rate {independent['win_rate']:.0%}, p={independent['p_value']:.3g})"
    ]
