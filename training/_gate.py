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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InputError, ModelError
from ..graphs.reward import compare
from ..settings import GateSettings, Settings
from ..store import Store
from ._data import heldout_prompts, policy_conversation
from ._judge import CriticJudge

WIN, TIE, LOSS = 1.0, 0.5, 0.0
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


def outcome(forward_margin: float, backward_margin: float, tie_margin: float) -> tuple[float, bool]:
    """(WIN/TIE/LOSS for the candidate, whether the two orders disagreed). ``forward_margin`` is
    candidate minus baseline judged in that order; ``backward_margin`` baseline minus candidate."""
    first = _side(forward_margin, tie_margin)
    second = -_side(backward_margin, tie_margin)
    if first != second:
        return TIE, True
    return {1: WIN, 0: TIE, -1: LOSS}[first], False


def _side(margin: float, tie_margin: float) -> int:
    return 1 if margin > tie_margin else -1 if margin < -tie_margin else 0


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
    from ..agents import Policy, Sampling, policy_ref

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
    per_prompt: dict[str, list[float]] = {}
    if prompt_ids:
        policy = Policy.load(settings, policy_ref(settings))
        sampling = Sampling(
            max_new_tokens=gate.max_new_tokens,
            temperature=gate.temperature,
            top_p=settings.generation.top_p,
            seed=gate.seed,
        )
        requests = [(pid, conversations[pid], range(gate.samples_per_prompt)) for pid in prompt_ids]
        answers = _answers_of_both(policy, candidate, current, requests, sampling, settings)
        rewards_c, rewards_b = [], []
        for (pid, index), (cand_text, base_text) in sorted(answers.items()):
            weights = judge.weights(pid)
            cand, base = judge.rewards(pid, [cand_text, base_text])
            forward = compare(cand, base, weights).margin
            backward = compare(base, cand, weights).margin
            result, inconsistent = outcome(forward, backward, gate.tie_margin)
            report.inconsistent += inconsistent
            per_prompt.setdefault(pid, []).append(result)
            rewards_c.append(judge.scalar(cand))
            rewards_b.append(judge.scalar(base))
            report.outcomes.append(
                {
                    "prompt_id": pid,
                    "sample": index,
                    "outcome": {WIN: "win", TIE: "tie", LOSS: "loss"}[result],
                    "margin": round(forward, 4),
                    "candidate": cand_text,
                    "baseline": base_text,
                }
            )
        report.mean_reward_candidate = round(sum(rewards_c) / len(rewards_c), 4)
        report.mean_reward_baseline = round(sum(rewards_b) / len(rewards_b), 4)
    score_outcomes(report, per_prompt, gate)
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


def _answers_of_both(policy, candidate, current, requests, sampling, settings):
    """{(prompt, sample): (candidate's answer, baseline's answer)} with the same seeds."""
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(policy.model, candidate["path"], adapter_name="candidate")
        if current:
            model.load_adapter(current["path"], adapter_name="baseline")
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load adapter for the gate: {str(exc).splitlines()[0]}") from None
    policy.model = model.to(policy.device).eval()
    batch = settings.generation.batch_size
    texts: dict[str, dict[tuple[str, int], str]] = {}
    for side in ("candidate", "baseline"):
        if side == "baseline" and not current:
            with model.disable_adapter():
                texts[side] = _generate(policy, requests, sampling, batch)
        else:
            model.set_adapter(side)
            texts[side] = _generate(policy, requests, sampling, batch)
    return {key: (texts["candidate"][key], texts["baseline"][key]) for key in texts["candidate"]}


def _generate(policy, requests, sampling, batch_size) -> dict[tuple[str, int], str]:
    out = {}
    for candidates in policy.generate(requests, sampling, batch_size):
        for c in candidates:
            out[(c.key, c.index)] = c.text
    return out
