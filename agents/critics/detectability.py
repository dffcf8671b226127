"""Detectability: how obviously the response reads as an ad (score = 1 - detectability).

Signals (applies only when a campaign is attached):

- embedding shift: 1 - cosine similarity between the response and the same response with its ad
  sentences removed (:attr:`AdSpan.rest`), the measure the seed system used: an ad that changes
  what the text is about shows;
- stand-out: how little the ad sentences resemble the rest of the answer (or the request when the
  answer is nothing but the ad);
- promotional language in the ad sentences and the sentence after each (where a call to action
  usually follows the pitch): exclamation marks, ALL-CAPS words, calls to action, superlatives and
  hype, prices and discounts, URLs, weighted and saturating.

detectability = 1 - (1 - semantic) * (1 - promo): either a jarring ad or hard-sell language is
enough to give it away. With no ad sentence every term is 0 (rest is the response itself).
MiniLM reads only the first ~256 word pieces of a text, so for long answers the shift term sees
only their beginning; the sentence-level terms still see every ad sentence.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._critic import BaseCritic, Case, Score, clamp, critic, truncation
from .._text import find_ad, words

if TYPE_CHECKING:
    from .._signals import Signals

_CALL_TO_ACTION = re.compile(
    r"\b(?:buy (?:it |one |yours )?(?:now|today)|order (?:now|today|yours)|shop now|click(?: here)?|"
    r"sign up (?:now|today)|subscribe (?:now|today)|act (?:now|fast)|limited[- ]time|"
    r"don'?t miss(?: out)?|hurry|grab (?:yours|one) (?:now|today)|while (?:supplies|stocks?) last|"
    r"get yours|add (?:it )?to (?:your )?cart|use (?:promo |discount )?code|call now|"
    r"visit (?:our|the) (?:website|store|site))\b",
    re.IGNORECASE,
)
_HYPE = re.compile(
    r"\b(?:best(?: ever)?|greatest|ultimate|amazing|incredible|unbeatable|revolutionary|"
    r"game[- ]changer|life[- ]changing|world'?s (?:best|finest)|number one|#1|must[- ]have|"
    r"perfect|unmatched|unrivaled|unrivalled|spectacular|mind[- ]blowing|awesome|exclusive|"
    r"finest|top[- ]rated|like never before|second to none)\b",
    re.IGNORECASE,
)
_PRICE = re.compile(
    r"[$€£]\s?\d[\d,.]*|\b\d+(?:\.\d+)?\s?(?:%|percent)\s*off\b|"
    r"\b(?:discount(?:ed)?|on sale|coupon|promo(?:tion)? code|free shipping|half[- ]price|bogo)\b",
    re.IGNORECASE,
)
_URL = re.compile(
    r"\b(?:https?://|www\.)[^\s!?,;)]*[^\s!?,;).]|\b[\w-]+\.(?:com|net|org|shop|store|co)\b",
    re.IGNORECASE,
)
_CAPS = re.compile(r"\b[A-Z]{3,}\b")
_ACRONYM_OK = frozenset({"USA", "FAQ", "DIY", "USB", "GPS", "BPA", "SPF", "UV", "ABV"})


def promotional_cues(text: str) -> dict[str, list[str]]:
    """Every promotional cue in ``text``, by kind."""
    caps = [w for w in _CAPS.findall(text) if w not in _ACRONYM_OK]
    return {
        "exclamations": re.findall(r"!", text),
        "all_caps": caps,
        "calls_to_action": [m.group(0) for m in _CALL_TO_ACTION.finditer(text)],
        "hype": [m.group(0) for m in _HYPE.finditer(text)],
        "prices": [m.group(0) for m in _PRICE.finditer(text)],
        "urls": [m.group(0) for m in _URL.finditer(text)],
    }


@critic("detectability")
@dataclass(frozen=True)
class DetectabilityCritic(BaseCritic, name="detectability", version="1", needs=("campaign",)):
    """Scores how well the ad is woven in (1 - detectability); see the module docstring.
    Keyword arguments override its ceilings and cue weights."""

    shift_ceiling: float = 0.5  # 1 - cosine at which the shift alone is fully detectable
    standout_ceiling: float = 0.5  # ad~rest cosine at or above which the ad blends in fully
    w_shift: float = 0.5
    w_standout: float = 0.5
    promo_scale: float = 2.0  # weighted cues for 1 - 1/e promotional detectability
    w_exclamation: float = 1.0
    w_caps: float = 1.0
    w_call_to_action: float = 2.0
    w_hype: float = 0.75  # "best" alone is a weak cue; it adds up with others
    w_price: float = 1.5
    w_url: float = 1.5

    def judge(self, case: Case, text: str, signals: Signals) -> Score:
        ad = find_ad(text, case.brand, case.campaign, case.compliance.get("required_disclosure"))
        rest = ad.rest

        if not ad.has_ad:
            shift = 0.0  # nothing removed: the rest is the response itself
        elif rest.strip():
            shift = 1.0 - signals.similarity(text, rest)
        else:
            shift = 1.0  # nothing but the ad
        shift_term = clamp(shift / self.shift_ceiling)

        context = rest if rest.strip() else case.request
        blends = [signals.similarity(s, context) for s in ad.ad_sentences if context.strip()]
        blend = statistics.fmean(blends) if blends else None
        standout = clamp(1.0 - blend / self.standout_ceiling) if blend is not None else 0.0
        standout_term = standout if ad.has_ad else 0.0
        semantic = (self.w_shift * shift_term + self.w_standout * standout_term) / (
            self.w_shift + self.w_standout
        )

        region = sorted({j for i in ad.ad_indices for j in (i, i + 1) if j < len(ad.sentences)})
        cues = promotional_cues(" ".join(ad.sentences[j] for j in region))
        weighted = (
            self.w_exclamation * len(cues["exclamations"])
            + self.w_caps * len(cues["all_caps"])
            + self.w_call_to_action * len(cues["calls_to_action"])
            + self.w_hype * len(cues["hype"])
            + self.w_price * len(cues["prices"])
            + self.w_url * len(cues["urls"])
        )
        promo = 1.0 - math.exp(-weighted / self.promo_scale)
        detectability = 1.0 - (1.0 - semantic) * (1.0 - promo)

        evidence: dict = {
            "detectability": round(detectability, 4),
            "embedding_shift": round(shift, 4),
            "ad_rest_similarity": round(blend, 4) if blend is not None else None,
            "ad_compared_with": "rest" if rest.strip() else "request",
            "semantic": round(semantic, 4),
            "promotional": round(promo, 4),
            "promotional_cues": {k: v for k, v in cues.items() if v},
            "ad_sentences": [i + 1 for i in ad.ad_indices],
            "sentences": len(ad.sentences),
            **truncation(case),
        }
        return self.scored(
            1.0 - detectability,
            _confidence(ad.has_ad, semantic, promo, detectability, text),
            _rationale(ad.has_ad, evidence, cues),
            evidence,
        )


def _confidence(has_ad: bool, semantic: float, promo: float, detect: float, text: str) -> float:
    support = 1.0 - math.exp(-len(words(text)) / 25.0)
    if not has_ad:
        # Certain nothing is advertised, unless the text is too short to tell much apart.
        return clamp(0.6 + 0.35 * support, 0.05, 0.95)
    # Hard sell is unambiguous; otherwise the embedding terms carry it and are sure only away
    # from the middle and on enough text.
    decisiveness = max(promo, abs(detect - 0.5) * 2.0)
    agreement = 1.0 - abs(semantic - promo) if promo < 0.5 else 1.0
    return clamp(0.2 + 0.35 * decisiveness + 0.25 * support + 0.2 * agreement, 0.05, 0.95)


def _rationale(has_ad: bool, evidence: dict, cues: dict[str, list[str]]) -> str:
    if not has_ad:
        return "No ad sentence found, so nothing reads as an ad."
    where = ", ".join(str(i) for i in evidence["ad_sentences"])
    level = evidence["detectability"]
    verdict = "blatant" if level >= 0.66 else "noticeable" if level >= 0.33 else "woven in"
    text = f"The ad (sentence {where} of {evidence['sentences']}) is {verdict}"
    found = []
    if cues["exclamations"]:
        found.append(f"{len(cues['exclamations'])} exclamation mark(s)")
    for kind, label in (
        ("all_caps", "all-caps"),
        ("calls_to_action", "calls to action"),
        ("hype", "hype"),
        ("prices", "price/discount talk"),
        ("urls", "URLs"),
    ):
        if cues[kind]:
            found.append(f"{label} ({', '.join(dict.fromkeys(cues[kind]))})")
    if found:
        text += ": " + "; ".join(found) + "; drop the hard sell"
    blend = evidence["ad_rest_similarity"]
    if blend is not None:
        other = (
            "the rest of the answer" if evidence["ad_compared_with"] == "rest" else "the request"
        )
        text += f"{';' if found else ':'} the ad is {blend:.2f} similar to {other}"
    return text + "."
