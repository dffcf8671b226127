"""Two policies on one base answering the same prompts, judged side by side: the promotion gate's
comparison (a new adapter against the one in service) and ``bench/nights.py``'s evaluation (the
promoted adapter against the base model).

Both sides answer with the same sampling seeds. Each pair of answers is judged by:

- the critics (the profile's weighted reward, both orders; see :func:`outcome`);
- an independent judge when one is given: a reward model that made none of the training data,
  whose 0-1 scores decide win, tie or loss by the same tie margin;
- the hard rules: the critics' vetoes (missing disclosure, banned claims, disparaging a
  competitor, personal data, profanity, judge manipulation), and, read from the text, whether it
  names a competitor at all and whether it carries the campaign's ad;
- length in words, to catch a judge that rewards length;
- KL(candidate || baseline): the candidate's answers scored under both sides; the mean of
  log p_candidate(y) - log p_baseline(y) over them estimates it in nats per answer. The answers
  are sampled at the gate's temperature and top-p, not from the model's plain distribution,
  and there are few of them, so a small KL can come out slightly negative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelError
from ..reward import compare

WIN, TIE, LOSS = 1.0, 0.5, 0.0
KL_MAX_TOKENS = 512
"""Tokens of an answer scored for KL (generated answers are far shorter)."""


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


@dataclass
class Answer:
    """One side's answer to one prompt sample, as the judges saw it."""

    text: str
    reward: float  # the critics' scalar (veto penalty when a hard rule is broken)
    rules: tuple[str, ...]  # hard rules broken (the critics' vetoes)
    words: int
    competitor: bool  # names one of the brand's competitors
    ad: bool | None  # carries the campaign's ad (None: the prompt has no campaign)
    independent: float | None = None  # the independent judge's 0-1 score


@dataclass
class Compared:
    prompt_id: str
    sample: int
    task_type: str
    ad_asked: bool  # an ad_insertion prompt whose campaign fits (metadata ad_fit is not "poor")
    candidate: Answer
    baseline: Answer
    critics: float  # WIN/TIE/LOSS for the candidate
    inconsistent: bool
    margin: float
    independent: float | None = None  # WIN/TIE/LOSS by the independent judge
    kl: float | None = None  # log p_candidate - log p_baseline of the candidate's answer


@dataclass
class Comparison:
    rows: list[Compared] = field(default_factory=list)
    independent_name: str | None = None

    def per_prompt(self, judge: str = "critics") -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for row in self.rows:
            value = row.critics if judge == "critics" else row.independent
            if value is not None:
                out.setdefault(row.prompt_id, []).append(value)
        return out

    def side(self, name: str) -> list[Answer]:
        return [getattr(row, name) for row in self.rows]

    def stats(self, name: str) -> dict[str, Any]:
        """Means over one side's answers: reward, independent score, length, rule rates."""
        answers = self.side(name)
        asked = [getattr(r, name) for r in self.rows if r.ad_asked]
        n = len(answers)
        rules: dict[str, int] = {}
        for a in answers:
            for rule in dict.fromkeys(a.rules):
                rules[rule] = rules.get(rule, 0) + 1
        independent = [a.independent for a in answers if a.independent is not None]
        return {
            "answers": n,
            "reward": _mean([a.reward for a in answers]),
            "independent": _mean(independent) if independent else None,
            "words": _mean([a.words for a in answers]),
            "violations": sum(bool(a.rules) for a in answers),
            "violation_rate": _mean([float(bool(a.rules)) for a in answers]),
            "rules": dict(sorted(rules.items())),
            "competitor_rate": _mean([float(a.competitor) for a in answers]),
            "ad_asked": len(asked),
            "ad_rate": _mean([float(bool(a.ad)) for a in asked]) if asked else None,
        }

    def kl(self) -> float | None:
        """KL(candidate || baseline) estimated on the candidate's answers, in nats per answer
        (None when nothing was scored)."""
        values = [r.kl for r in self.rows if r.kl is not None]
        return round(_mean(values), 4) if values else None


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def judge_answers(
    texts: dict[tuple[str, int], tuple[str, str]],
    judge: Any,
    tie_margin: float,
    *,
    independent: Any = None,
    ratios: dict[tuple[str, int], float] | None = None,
) -> Comparison:
    """Judge each (prompt, sample)'s (candidate, baseline) answers, rows in a stable order;
    ``ratios`` are the candidate answers' log-likelihood ratios (KL)."""
    comparison = Comparison()
    from ..agents import find_ad, find_phrases

    if independent is not None:
        comparison.independent_name = independent.version
    for (pid, index), (cand_text, base_text) in sorted(texts.items()):
        weights = judge.weights(pid)
        cand, base = judge.rewards(pid, [cand_text, base_text])
        forward = compare(cand, base, weights).margin
        backward = compare(base, cand, weights).margin
        result, inconsistent = outcome(forward, backward, tie_margin)
        prompt, brand, campaign = judge.context(pid)
        competitors = list(((brand or {}).get("compliance") or {}).get("competitors") or [])
        disclosure = ((brand or {}).get("compliance") or {}).get("required_disclosure")

        def answer(text: str, reward: Any) -> Answer:
            ad = None
            if campaign:
                ad = bool(find_ad(text, brand, campaign, disclosure).ad_indices)
            return Answer(
                text=text,
                reward=judge.scalar(reward),
                rules=tuple(reward.vetoes),
                words=len(text.split()),
                competitor=bool(find_phrases(text, competitors)),
                ad=ad,
            )

        row = Compared(
            prompt_id=pid,
            sample=index,
            task_type=prompt["task_type"],
            ad_asked=bool(
                campaign
                and prompt["task_type"] == "ad_insertion"
                and (prompt.get("metadata") or {}).get("ad_fit") != "poor"
            ),
            candidate=answer(cand_text, cand),
            baseline=answer(base_text, base),
            critics=result,
            inconsistent=inconsistent,
            margin=forward,
            kl=(ratios or {}).get((pid, index)),
        )
        if independent is not None:
            c, b = independent.rewards(pid, [cand_text, base_text])
            row.candidate.independent, row.baseline.independent = c, b
            row.independent = {1: WIN, 0: TIE, -1: LOSS}[_side(c - b, tie_margin)]
        comparison.rows.append(row)
    return comparison


def answers_of_both(
    policy: Any,
    candidate: dict[str, Any] | None,
    baseline: dict[str, Any] | None,
    requests: Sequence[tuple[str, list[dict[str, str]], Sequence[int]]],
    sampling: Any,
    batch_size: int,
    *,
    kl: bool = True,
) -> tuple[dict[tuple[str, int], tuple[str, str]], dict[tuple[str, int], float]]:
    """({(prompt, sample): (candidate's answer, baseline's answer)} with the same seeds, and the
    log-likelihood ratio of each candidate answer). An adapter row of None is the base model;
    when both are None the two sides are the same answers."""
    conversations = {key: conversation for key, conversation, _ in requests}
    if candidate is None and baseline is None:
        base = _generate(policy, requests, sampling, batch_size)
        return {k: (t, t) for k, t in base.items()}, dict.fromkeys(base, 0.0)
    if getattr(policy, "served", False):
        return _served_answers(policy, candidate, baseline, requests, sampling, kl=kl)
    from peft import PeftModel

    first = candidate or baseline
    try:
        model = PeftModel.from_pretrained(
            policy.model, first["path"], adapter_name="candidate" if candidate else "baseline"
        )
        if candidate and baseline:
            model.load_adapter(baseline["path"], adapter_name="baseline")
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load adapter for the gate: {str(exc).splitlines()[0]}") from None
    policy.model = model.to(policy.device).eval()
    texts: dict[str, dict[tuple[str, int], str]] = {}
    for side, row in (("candidate", candidate), ("baseline", baseline)):
        with _active(model, side if row else None):
            texts[side] = _generate(policy, requests, sampling, batch_size)
    ratios: dict[tuple[str, int], float] = {}
    if kl:
        keys = sorted(texts["candidate"])
        items = [(conversations[pid], texts["candidate"][(pid, i)]) for pid, i in keys]
        logp: dict[str, list[float]] = {}
        for side, row in (("candidate", candidate), ("baseline", baseline)):
            with _active(model, side if row else None):
                logp[side] = [
                    sum(lps) for lps in _chunked_logprobs(policy, items, batch_size)
                ]
        ratios = {
            k: c - b for k, c, b in zip(keys, logp["candidate"], logp["baseline"], strict=True)
        }
    answers = {key: (texts["candidate"][key], texts["baseline"][key]) for key in texts["candidate"]}
    return answers, ratios


def _served_answers(policy, candidate, baseline, requests, sampling, *, kl: bool):
    """:func:`answers_of_both` through a policy server: both adapters are loaded into it and
    each side is requested by its name (the base model's for None). Without the server's
    prompt logprobs there are no likelihood ratios (the KL guard is left out)."""
    from ..agents import LikelihoodUnavailable

    conversations = {key: conversation for key, conversation, _ in requests}
    sides = {}
    for side, row in (("candidate", candidate), ("baseline", baseline)):
        if row:
            policy.ensure_adapter(row["path"], row["version"])
        sides[side] = policy.using(row["version"] if row else None)
    texts = {side: _generate(view, requests, sampling, 0) for side, view in sides.items()}
    ratios: dict[tuple[str, int], float] = {}
    if kl:
        keys = sorted(texts["candidate"])
        items = [(conversations[pid], texts["candidate"][(pid, i)]) for pid, i in keys]
        try:
            logp = {
                side: [sum(lps) for lps in view.response_logprobs(items, KL_MAX_TOKENS)]
                for side, view in sides.items()
            }
        except LikelihoodUnavailable:
            logp = None
        if logp:
            ratios = {
                k: c - b
                for k, c, b in zip(keys, logp["candidate"], logp["baseline"], strict=True)
            }
    answers = {key: (texts["candidate"][key], texts["baseline"][key]) for key in texts["candidate"]}
    return answers, ratios


class _active:
    """Run with one named adapter active, or (None) with adapters disabled: the base model."""

    def __init__(self, model: Any, name: str | None):
        self.model, self.name, self._off = model, name, None

    def __enter__(self) -> None:
        if self.name is None:
            self._off = self.model.disable_adapter()
            self._off.__enter__()
        else:
            self.model.set_adapter(self.name)

    def __exit__(self, *exc: object) -> None:
        if self._off is not None:
            self._off.__exit__(*exc)


def _chunked_logprobs(policy: Any, items, batch_size: int) -> list[list[float]]:
    out: list[list[float]] = []
    for start in range(0, len(items), batch_size):
        out += policy.response_logprobs(items[start : start + batch_size], KL_MAX_TOKENS)
    return out


def _generate(policy, requests, sampling, batch_size) -> dict[tuple[str, int], str]:
    out = {}
    for candidates in policy.generate(requests, sampling, batch_size):
        for c in candidates:
            out[(c.key, c.index)] = c.text
    return out
