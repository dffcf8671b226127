"""Persona consistency: does the response stay in the persona it was given?

Signals (applies when the case has a persona):

- persona similarity: MiniLM cosine similarity of the response to the persona description, and
  of its closest sentence (one in-character line counts even in a long practical answer);
- breaking character: "as an AI", "language model", "I am an assistant", "I don't have personal
  experiences", or introducing itself under a name other than the persona's ("You are Mara, ..."
  then "I'm Claude"). Each break multiplies the score by ``break_factor``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._critic import BaseCritic, Case, Score, clamp, critic, ramp, truncation
from .._text import sentences, words

if TYPE_CHECKING:
    from .._signals import Signals

_MAX_SENTENCES = 200  # plenty to find the most in-character line

_BREAKS = re.compile(
    # Longer alternatives first, so "as an AI language model" is one break, not two.
    r"\bas an? (?:AI language model|language model|AI assistant|artificial intelligence|"
    r"machine learning model|virtual assistant|chatbot|LLM|AI)\b"
    r"|\b(?:large )?language model\b"
    r"|\bI(?:'m| am) (?:just |only |merely )?(?:an? )?(?:AI language model|AI assistant|"
    r"artificial intelligence|computer program|virtual assistant|chatbot|assistant|bot|LLM|AI)\b"
    r"|\bI (?:do not|don't|cannot|can't) have (?:personal |real |any )?(?:experiences|feelings|"
    r"emotions|a body|opinions|preferences)\b"
    r"|\bmy (?:training data|knowledge cutoff|programming|developers|creators)\b"
    r"|\b(?:OpenAI|Anthropic|Hugging ?Face|SmolLM)\b",
    re.IGNORECASE,
)
_PERSONA_NAME = re.compile(r"\b(?:You are|You're|Your name is)\s+([A-Z][a-z]+)\b")
# Only unmistakable self-introductions: "I'm Canadian" or "I'm Sorry" must not read as a name.
_SELF_NAME = re.compile(
    r"\b(?:[Mm]y name is|[Cc]all me)\s+([A-Z][a-z]+)\b"
    r"|\bI(?:'m| am)\s+([A-Z][a-z]+)(?=,?\s+(?:a|an|your|the)\s)"
)


def character_breaks(text: str, persona: str) -> list[str]:
    """Phrases in ``text`` that step out of the persona."""
    found = [m.group(0) for m in _BREAKS.finditer(text)]
    own = _PERSONA_NAME.search(persona)
    if own:
        for m in _SELF_NAME.finditer(text):
            name = m.group(1) or m.group(2)
            if name != own.group(1):
                found.append(m.group(0))
    return found


@critic("persona")
@dataclass(frozen=True)
class PersonaCritic(
    BaseCritic, name="persona", dimension="persona_consistency", version="1", needs=("persona",)
):
    """Scores how well a response keeps its persona; see the module docstring. Keyword arguments
    override its ramp, weights and penalty."""

    similarity_floor: float = 0.0
    similarity_ceiling: float = 0.45  # an in-character answer sits around 0.2-0.5
    w_whole: float = 0.6
    w_best_sentence: float = 0.4
    break_factor: float = 0.25

    def judge(self, case: Case, text: str, signals: Signals) -> Score:
        persona = (case.persona or "").strip()
        whole = signals.similarity(text, persona)
        sims = [signals.similarity(s, persona) for s in sentences(text)[:_MAX_SENTENCES]]
        best = max(sims, default=whole)
        low, high = self.similarity_floor, self.similarity_ceiling
        fit = self.w_whole * ramp(whole, low, high) + self.w_best_sentence * ramp(best, low, high)
        fit /= self.w_whole + self.w_best_sentence
        breaks = character_breaks(text, persona)
        score = fit * self.break_factor ** len(breaks)
        evidence: dict[str, Any] = {
            "persona_similarity": round(whole, 4),
            "best_sentence_similarity": round(best, 4),
            "best_sentence": sims.index(best) + 1 if sims else None,
            "character_breaks": breaks,
            **truncation(case),
        }
        # A break is a plain fact; otherwise the embedding is sure only on enough text and away
        # from the middle of its ramp.
        support = 1.0 - math.exp(-len(words(text)) / 25.0)
        if breaks:
            confidence = 0.8 + 0.05 * min(len(breaks), 3)
        else:
            confidence = 0.25 + 0.35 * support + 0.3 * abs(fit - 0.5) * 2.0
        return self.scored(
            score, clamp(confidence, 0.05, 0.95), _rationale(evidence, fit), evidence
        )


def _rationale(evidence: dict, fit: float) -> str:
    if evidence["character_breaks"]:
        said = ", ".join(repr(b) for b in dict.fromkeys(evidence["character_breaks"]))
        return f"Breaks character ({said}); answer as the persona, never as an AI or assistant."
    sim = evidence["persona_similarity"]
    if fit < 0.5:
        return (
            f"Stays in character but reads little like the persona (similarity {sim:.2f}); "
            "use its voice, role and habits."
        )
    return f"Stays in character and reads like the persona (similarity {sim:.2f})."
