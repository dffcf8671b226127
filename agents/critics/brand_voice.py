"""Brand voice: does the response sound like the brand?

Signals (applies when a brand is attached), all against the brand's own ``voice`` record:

- exemplars: MiniLM cosine similarity of the response to each voice exemplar, max and mean (the
  description stands in when a brand has no exemplars);
- preferred terms: how many of the brand's preferred terms the response uses (saturating);
- banned terms: each one present multiplies the score by ``banned_factor`` and is named;
- tone: VADER compound of the response's sentences against the exemplars' mean compound, with
  the exemplars' own spread as the tolerated width, so the exemplars define the target tone (no
  hand-made tone table). Hype and exclamation marks push VADER up, gloom pushes it down.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._critic import BaseCritic, Case, Score, clamp, critic, ramp, truncation
from .._text import find_phrases, sentences, sentiment_analyzer, words

if TYPE_CHECKING:
    from .._signals import Signals

_MAX_TONE_SENTENCES = 200  # VADER is pure Python: enough sentences to know the tone


@critic("brand_voice")
@dataclass(frozen=True)
class BrandVoiceCritic(BaseCritic, name="brand_voice", version="1", needs=("brand",)):
    """Scores how closely a response matches the brand's voice; see the module docstring.
    Keyword arguments override its ramps, weights and penalty."""

    similarity_floor: float = 0.0
    similarity_ceiling: float = 0.5  # on-voice copy sits around 0.3-0.6 to its best exemplar
    preferred_scale: float = 1.5  # preferred terms used for 1 - 1/e of the term credit
    tone_tolerance: float = 0.6  # compound distance beyond the exemplars' spread that zeroes tone
    min_tone_width: float = 0.1  # exemplars that all sound alike still leave some room
    banned_factor: float = 0.5
    w_similarity: float = 0.45
    w_preferred: float = 0.2
    w_tone: float = 0.35
    _vader: Any = field(default_factory=sentiment_analyzer, init=False, repr=False, compare=False)

    def compounds(self, text: str) -> list[float]:
        """VADER compound of each sentence of ``text``."""
        parts = sentences(text)[:_MAX_TONE_SENTENCES] or [text]
        return [self._vader.polarity_scores(s)["compound"] for s in parts]

    def tone_match(self, text: str, exemplars: list[str]) -> tuple[float, dict[str, float]]:
        """How far the response's sentences stray from the exemplars' tone, as 0-1.

        The exemplars give a centre (their mean compound) and a width (its spread): a sentence
        within one spread of the centre is on tone, beyond it counts by how far. Half the penalty
        is the mean over sentences, half the mean over the worst quarter, so one gushing or
        gloomy line in a short answer shows while a long answer is not judged by one outlier.
        """
        target = [c for e in exemplars for c in self.compounds(e)]
        centre = statistics.fmean(target)
        width = max(statistics.pstdev(target), self.min_tone_width)
        actual = self.compounds(text)
        stray = sorted((max(0.0, abs(c - centre) - width) for c in actual), reverse=True)
        worst = stray[: max(1, len(stray) // 4)]
        penalty = 0.5 * statistics.fmean(stray) + 0.5 * statistics.fmean(worst)
        facts = {
            "tone": statistics.fmean(actual),
            "target_tone": centre,
            "target_width": width,
            "tone_stray": penalty,
            "most_off_tone": max(actual, key=lambda c: abs(c - centre)),
        }
        return clamp(1.0 - penalty / self.tone_tolerance), facts

    def judge(self, case: Case, text: str, signals: Signals) -> Score:
        voice = case.voice
        exemplars = [e for e in voice.get("exemplars") or [] if e.strip()]
        references = exemplars or [d for d in [voice.get("description") or ""] if d.strip()]
        preferred = [t for t in voice.get("preferred_terms") or [] if t.strip()]
        banned_terms = [t for t in voice.get("banned_terms") or [] if t.strip()]
        if not (references or preferred or banned_terms):
            return self.unscored("the brand has no voice to compare with")

        parts: dict[str, float] = {}
        weights: dict[str, float] = {}
        evidence: dict[str, Any] = {"brand": (case.brand or {}).get("name")}
        if references:
            sims = [signals.similarity(text, r) for r in references]
            best, mean = max(sims), statistics.fmean(sims)
            # The best exemplar says "sounds like one of ours"; the mean keeps one lucky match
            # from carrying copy that is unlike the rest.
            parts["similarity"] = ramp(
                0.7 * best + 0.3 * mean, self.similarity_floor, self.similarity_ceiling
            )
            weights["similarity"] = self.w_similarity
            evidence.update(
                exemplar_max=round(best, 4),
                exemplar_mean=round(mean, 4),
                closest_exemplar=sims.index(best) + 1,
                compared_with="exemplars" if exemplars else "description",
            )
        used = find_phrases(text, preferred)
        if preferred:
            parts["preferred_terms"] = 1.0 - math.exp(-len(used) / self.preferred_scale)
            weights["preferred_terms"] = self.w_preferred
        evidence["preferred_terms_used"] = used
        if exemplars:
            parts["tone"], facts = self.tone_match(text, exemplars)
            weights["tone"] = self.w_tone
            evidence.update({k: round(v, 4) for k, v in facts.items()})
        banned = find_phrases(text, banned_terms)
        evidence["banned_terms"] = banned

        base = sum(weights[k] * parts[k] for k in parts) / sum(weights.values()) if parts else 1.0
        score = base * self.banned_factor ** len(banned)
        evidence["components"] = {k: round(v, 4) for k, v in parts.items()}
        evidence.update(truncation(case))
        return self.scored(
            score,
            _confidence(parts, banned, text, bool(exemplars)),
            _rationale(parts, evidence, preferred),
            evidence,
        )


def _confidence(parts: dict[str, float], banned: list[str], text: str, exemplars: bool) -> float:
    # A banned term is a plain fact; otherwise short texts and disagreeing signals (on-topic
    # wording in the wrong tone) leave it open, and a description is a weak stand-in for exemplars.
    support = 1.0 - math.exp(-len(words(text)) / 25.0)
    agreement = 1.0 - 2.0 * statistics.pstdev(parts.values()) if len(parts) > 1 else 0.5
    conf = 0.2 + 0.3 * support + 0.3 * agreement + (0.15 if exemplars else 0.0)
    if banned:
        conf = max(conf, 0.75 + 0.05 * len(banned))
    return clamp(conf, 0.05, 0.95)


def _rationale(parts: dict[str, float], evidence: dict, preferred: list[str]) -> str:
    notes = []
    if evidence["banned_terms"]:
        terms = ", ".join(repr(t) for t in evidence["banned_terms"])
        notes.append(f"uses banned term{'s' if len(evidence['banned_terms']) > 1 else ''} {terms}")
    if "tone" in parts and parts["tone"] < 0.5:
        off = evidence["most_off_tone"]
        direction = "gushing" if off > evidence["target_tone"] else "gloomy"
        notes.append(
            f"sounds {direction} for the brand (a sentence at VADER {off:+.2f}, its exemplars "
            f"{evidence['target_tone']:+.2f} +/- {evidence['target_width']:.2f})"
        )
    if "similarity" in parts and parts["similarity"] < 0.5:
        notes.append(
            f"reads unlike the brand's {evidence['compared_with']} (best match "
            f"{evidence['exemplar_max']:.2f})"
        )
    if preferred and not evidence["preferred_terms_used"]:
        notes.append(f"uses none of its preferred terms (e.g. {', '.join(preferred[:3])})")
    brand = evidence.get("brand") or "the brand"
    if notes:
        return f"Off the voice of {brand}: {'; '.join(notes)}."
    used = ", ".join(evidence["preferred_terms_used"]) or "none"
    if evidence.get("compared_with") == "exemplars":
        closeness = (
            f"closest exemplar {evidence['closest_exemplar']} at {evidence['exemplar_max']:.2f}"
        )
    elif "exemplar_max" in evidence:
        closeness = f"{evidence['exemplar_max']:.2f} similar to its voice description"
    else:
        closeness = "no exemplars to compare"
    return f"On the voice of {brand}: {closeness}; preferred terms used: {used}."
