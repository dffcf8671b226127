"""Coherence: does the response, and any ad inserted into it, fit the conversation?

Signals (all from :class:`Signals`, cached by :meth:`Signals.prepare`):

- fluency: the policy's mean negative log-likelihood per token of the response given the
  conversation, mapped to 0-1 by a logistic curve (see :func:`fluency`);
- continuity: mean cosine similarity of consecutive sentences (MiniLM);
- topic fit: cosine similarity of the whole response to the user's last turn;
- ad fit (only with a campaign and ad sentences): mean similarity of each ad sentence to the rest
  of the response and to the request, so an ad about something else pulls coherence down.

Cosines are mapped to 0-1 by a linear ramp between a floor (unrelated MiniLM pairs sit near 0)
and a ceiling (sentences of one on-topic answer sit around 0.35-0.6).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

from .._critic import BaseCritic, Case, Score, clamp, critic, ramp, truncation
from .._text import find_ad, words

if TYPE_CHECKING:
    from .._signals import Signals

_FLAG = 0.6  # a component below this is named in the rationale


@critic("coherence")
@dataclass(frozen=True)
class CoherenceCritic(BaseCritic, name="coherence", version="1"):
    """Scores how well a response (and its ad) fits the conversation; see the module docstring.
    Keyword arguments override its reference points and weights."""

    # Reference points for the NLL curve, measured with the bundled SmolLM2-135M: fluent on-topic
    # answers score 2-4 nats/token, an answer with an unrelated ad spliced in about 5-6, word salad
    # about 10 (uniform over its 49k vocabulary would be 10.8). The midpoint 5.0 puts "fluent but
    # surprising" at 0.5 and the scale 1.0 takes word salad to ~0.
    nll_midpoint: float = 5.0
    nll_scale: float = 1.0
    continuity_floor: float = 0.0
    continuity_ceiling: float = 0.45
    topic_floor: float = 0.05
    topic_ceiling: float = 0.55
    ad_fit_floor: float = 0.0
    ad_fit_ceiling: float = 0.4
    w_fluency: float = 0.3
    w_continuity: float = 0.2
    w_topic: float = 0.25
    w_ad_fit: float = 0.25

    def fluency(self, nll: float) -> float:
        """Logistic map of mean NLL per token to 0-1: lower NLL, more fluent."""
        return 1.0 / (1.0 + math.exp((nll - self.nll_midpoint) / self.nll_scale))

    def judge(self, case: Case, text: str, signals: Signals) -> Score:
        evidence: dict = {}
        parts: dict[str, float] = {}
        weights: dict[str, float] = {}

        nll = signals.response_nll(case)
        n_tokens = 0
        if nll is not None:
            mean_nll, n_tokens = nll
            parts["fluency"] = self.fluency(mean_nll)
            weights["fluency"] = self.w_fluency
            evidence["mean_nll"] = round(mean_nll, 4)
            evidence["nll_tokens"] = n_tokens

        ad = find_ad(text, case.brand, case.campaign, case.compliance.get("required_disclosure"))
        sents = ad.sentences
        if len(sents) >= 2:
            pairs = [signals.similarity(a, b) for a, b in pairwise(sents)]
            continuity = statistics.fmean(pairs)
            parts["continuity"] = ramp(continuity, self.continuity_floor, self.continuity_ceiling)
            weights["continuity"] = self.w_continuity
            evidence["continuity"] = round(continuity, 4)
            weakest = min(range(len(pairs)), key=pairs.__getitem__)
            evidence["weakest_link"] = {
                "sentence": weakest + 2,
                "similarity": round(pairs[weakest], 4),
            }

        topic = signals.similarity(text, case.request) if case.request.strip() else None
        if topic is not None:
            parts["topic_fit"] = ramp(topic, self.topic_floor, self.topic_ceiling)
            weights["topic_fit"] = self.w_topic
            evidence["topic_similarity"] = round(topic, 4)

        context = [t for t in (ad.rest, case.request) if t.strip()]
        if case.campaign and ad.has_ad and context:
            ad_fit = statistics.fmean(
                statistics.fmean(signals.similarity(s, c) for c in context) for s in ad.ad_sentences
            )
            parts["ad_fit"] = ramp(ad_fit, self.ad_fit_floor, self.ad_fit_ceiling)
            weights["ad_fit"] = self.w_ad_fit
            evidence["ad_fit"] = round(ad_fit, 4)
            evidence["ad_sentences"] = [i + 1 for i in ad.ad_indices]

        if not parts:
            return self.unscored("no signal applies to this response")
        total = sum(weights.values())
        score = sum(weights[k] * parts[k] for k in parts) / total
        evidence["components"] = {k: round(v, 4) for k, v in parts.items()}
        evidence["sentences"] = len(sents)
        evidence.update(truncation(case))
        return self.scored(
            score,
            _confidence(parts, n_tokens or len(words(text)), case),
            _rationale(parts, evidence, len(sents)),
            evidence,
        )


def _confidence(parts: dict[str, float], n_tokens: int, case: Case) -> float:
    # Short replies give a noisy NLL and few sentence pairs; signals that disagree (fluent but
    # off-topic, say) leave the verdict open; a missing likelihood removes the strongest signal.
    support = 1.0 - math.exp(-n_tokens / 25.0)
    spread = statistics.pstdev(parts.values()) if len(parts) > 1 else 0.5
    agreement = 1.0 - spread  # components are 0-1, so the spread is at most 0.5
    coverage = len(parts) / (4 if case.campaign else 3)
    conf = 0.15 + 0.45 * support * agreement + 0.4 * coverage * agreement
    if case.truncated:
        conf -= 0.1
    return clamp(conf, 0.05, 0.95)


def _rationale(parts: dict[str, float], evidence: dict, n_sentences: int) -> str:
    # Worst first, except that an off-topic ad leads: it is usually what broke the rest too.
    problems = []  # (sort key, what to fix)
    if parts.get("ad_fit", 1.0) < _FLAG:
        where = ", ".join(str(i) for i in evidence.get("ad_sentences", []))
        problems.append(
            (
                -1.0,
                f"the ad (sentence {where} of {n_sentences}) is off-topic: only "
                f"{evidence['ad_fit']:.2f} similar to the answer and request",
            )
        )
    if parts.get("topic_fit", 1.0) < _FLAG:
        problems.append(
            (
                parts["topic_fit"],
                f"the response drifts from the request (similarity "
                f"{evidence['topic_similarity']:.2f})",
            )
        )
    if parts.get("continuity", 1.0) < _FLAG:
        link = evidence["weakest_link"]
        problems.append(
            (
                parts["continuity"],
                f"sentences do not follow on from each other (mean similarity "
                f"{evidence['continuity']:.2f}, weakest at sentence {link['sentence']})",
            )
        )
    if parts.get("fluency", 1.0) < _FLAG:
        problems.append(
            (
                parts["fluency"],
                f"the text reads as unlikely to the policy (mean NLL "
                f"{evidence['mean_nll']:.2f}/token)",
            )
        )
    if problems:
        text = "; ".join(p for _, p in sorted(problems, key=lambda item: item[0]))
        return text[0].upper() + text[1:] + "."
    if "ad_fit" in parts:
        return (
            f"The answer stays on the request and the ad fits it "
            f"({evidence['ad_fit']:.2f} similar to the answer and request)."
        )
    return "The answer stays on the request and its sentences follow on from each other."
