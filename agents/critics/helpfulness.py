"""Helpfulness: does the response answer what was asked, fully, without looping or dodging?

Signals, all local and cheap once :meth:`Signals.prepare` has embedded the texts:

- relevance: cosine similarity of the request's and the response's MiniLM embeddings;
- coverage: share of the request's content words the response takes up;
- substance: word count against what the request needs (a short-answer question needs a few
  words, "write an email" a paragraph), saturating, so longer is not always better;
- asked-for form: a list when the request asks for N items or steps (and about N of them),
  numbers when it is quantitative (a budget, "how many");
- completeness: the response ends mid-sentence, or generation stopped at the token limit;
- refusal and evasion: "I can't help", "as an AI", "I don't know", a question sent back;
- degeneration: repeated lines, repeated word 4-grams, near-duplicate sentences (embeddings);
- echo: the response copies the request instead of answering it.

Checked against people on the PandaLM test set by ``bench/helpfulness_pandalm.py``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._critic import Case, Score, clamp, critic
from .._text import content_words, sentences, words

if TYPE_CHECKING:
    from .._signals import Signals

VERSION = "1"
DIMENSION = "helpfulness"

_MAX_SENTENCES = 60  # near-duplicate check is quadratic in sentences: cap it
_NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "a couple of": 2, "a few": 3,
}  # fmt: skip
_ITEM_NOUNS = (
    r"(?:tips|steps|ideas|ways|reasons|examples|items|points|questions|suggestions|options|"
    r"things|names|words|sentences|facts|benefits|tricks|strategies|recommendations|"
    r"alternatives|methods|features|places|books|songs|movies|products|lines|bullets|"
    r"slogans|titles|headlines|hooks|taglines|queries|keywords)"
)
_COUNT = re.compile(
    r"\b(\d{1,2}|two|three|four|five|six|seven|eight|nine|ten|a couple of|a few)\s+"
    r"(?:[a-z-]+\s+){0,2}?" + _ITEM_NOUNS + r"\b",
    re.IGNORECASE,
)
_LIST_ASK = re.compile(
    r"\b(?:list|enumerate|bullet|outline|steps|brainstorm|" + _ITEM_NOUNS[3:-1] + r")\b",
    re.IGNORECASE,
)
_QUANT = re.compile(
    r"\b(?:how (?:many|much|long|far|old)|budget|cost|price|calculate|compute|total|sum|"
    r"percent(?:age)?|average|estimate|convert|allocat\w*|spend|dollars?|ratio)\b|[$€£%]",
    re.IGNORECASE,
)
_SHORT_ASK = re.compile(
    r"\b(?:classify|categori[sz]e|choose|select|pick|identify|detect|determine|decide|"
    r"true or false|yes or no|which (?:one|of)|one word|a word|label|rate|tag|"
    r"is (?:it|this|the)|extract|find the|answer|correct|fix|rewrite|paraphrase|translate|"
    r"title|name|spell|synonym|antonym)\b",
    re.IGNORECASE,
)
_LONG_ASK = re.compile(
    r"\b(?:write|essay|article|blog|story|stories|email|letter|explain|describe|plan|guide|"
    r"discuss|compare|summar\w+|proposal|report|review|itinerary|outline|detailed|"
    r"step[- ]by[- ]step|introduction|cover letter|post|script|speech|poem|lesson)\b",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"\b(?:I(?:'m| am) (?:sorry|afraid)[^.!?\n]{0,40}\b(?:can(?:'t|not)|unable|not able)|"
    r"I (?:can(?:'t|not)|won't|will not|am unable to|'m unable to|am not able to|'m not able to)"
    r" (?:help|assist|answer|provide|do|comply|fulfil+|complete|write|give|create|generate)|"
    r"as an (?:AI|artificial intelligence|AI language model|language model)|"
    r"I(?:'m| am) (?:just )?an? (?:AI|language model|chatbot|virtual assistant)|"
    r"I (?:do not|don't) (?:know|have (?:access|the ability|enough information|personal))|"
    r"I(?:'m| am) not (?:sure|certain) (?:what|how|if|whether|I)|"
    r"(?:it is|it's) not (?:possible|appropriate) for me|"
    r"(?:cannot|can't) be (?:determined|answered))",
    re.IGNORECASE,
)
_LIST_LINE = re.compile(r"^\s*(?:[-*\u2022+]|\d{1,3}[.)]|[a-zA-Z][.)])\s+\S")
_MARKER = re.compile(r"^\s*(?:[-*\u2022+]|\d{1,3}[.)]|[a-zA-Z][.)])\s+")
_TERMINAL = tuple(".!?)]\"'`*:;\u201d\u2019>")
_DANGLING = frozenset(
    "a an the and or but of for to in on with by at from as that which who whose is are was "
    "were be been your our my their his her its this these those than then if so because".split()
)


@dataclass(frozen=True)
class HelpfulnessCritic:
    """Scores how helpfully a response answers the request; see the module docstring."""

    w_relevance: float = 0.25
    w_coverage: float = 0.1
    w_substance: float = 0.3
    w_form: float = 0.1
    w_complete: float = 0.15
    w_clean: float = 0.1
    refusal_penalty: float = 0.45
    repetition_penalty: float = 0.5
    echo_penalty: float = 0.4
    truncation_penalty: float = 0.15
    short_need_words: float = 8.0
    default_need_words: float = 40.0
    long_need_words: float = 150.0
    relevance_floor: float = 0.05
    relevance_ceiling: float = 0.6
    near_duplicate: float = 0.92
    name: str = "helpfulness"
    dimension: str = DIMENSION
    version: str = VERSION

    def applies(self, case: Case) -> bool:
        return True

    def __call__(self, case: Case, signals: Signals) -> Score:
        text = case.judged_text
        if not text.strip():
            return Score.unscored(DIMENSION, "empty response", VERSION)
        f = self.features(case, signals)
        parts = {
            "relevance": self.w_relevance * f["relevance_scaled"],
            "coverage": self.w_coverage * f["coverage"],
            "substance": self.w_substance * f["substance"],
            "form": self.w_form * f["form"],
            "complete": self.w_complete * f["complete"],
            "clean": self.w_clean * (1.0 - f["repetition"]),
        }
        raw = sum(parts.values())
        raw -= self.refusal_penalty * f["refusal"]
        raw -= self.repetition_penalty * f["repetition"]
        raw -= self.echo_penalty * f["echo"]
        raw -= self.truncation_penalty * f["cut_off"]
        score = clamp(raw)
        evidence = {k: round(float(v), 4) for k, v in f.items()}
        if case.truncated:
            evidence["judged_chars"] = len(text)
            evidence["response_chars"] = len(case.response)
        return Score(
            dimension=DIMENSION,
            score=round(score, 4),
            confidence=round(self._confidence(f, score, case), 4),
            rationale=_rationale(f),
            critic_version=VERSION,
            evidence=evidence,
        )

    # ---- signals ----------------------------------------------------------------------------

    def features(self, case: Case, signals: Signals) -> dict[str, float]:
        text = case.judged_text
        request = case.request
        tokens = words(text)
        n_words = len(tokens)
        lines = [line.strip() for line in text.splitlines() if line.strip()]

        relevance = signals.similarity(request, text) if request.strip() else 0.0
        span = max(self.relevance_ceiling - self.relevance_floor, 1e-6)
        relevance_scaled = clamp((relevance - self.relevance_floor) / span)

        asked = content_words(request)
        said = content_words(text)
        coverage = len(asked & said) / len(asked) if asked else 1.0

        need = self._need_words(request)
        substance = clamp(math.log1p(n_words) / math.log1p(need))

        wanted = _asked_count(request)
        list_asked = wanted is not None or bool(_LIST_ASK.search(request))
        items = sum(1 for line in lines if _LIST_LINE.match(line))
        if list_asked:
            if wanted:
                form = clamp(1.0 - abs(items - wanted) / wanted) if items else 0.0
            else:
                form = 1.0 if items >= 2 else 0.3
        else:
            form = 1.0
        quantitative = bool(_QUANT.search(request))
        if quantitative and not re.search(r"\d", text):
            form *= 0.5

        cut_off = 1.0 if case.finish_reason == "length" else 0.0
        mid_sentence = _ends_mid_sentence(text, lines)
        complete = 1.0 - max(cut_off, mid_sentence)

        refusal = _refusal(text, n_words)
        repetition = self._repetition(text, tokens, lines, signals)
        echo = _echo(request, tokens)

        return {
            "relevance": relevance,
            "relevance_scaled": relevance_scaled,
            "coverage": coverage,
            "words": float(n_words),
            "need_words": need,
            "substance": substance,
            "list_asked": float(list_asked),
            "asked_items": float(wanted or 0),
            "list_items": float(items),
            "quantitative": float(quantitative),
            "form": form,
            "cut_off": cut_off,
            "mid_sentence": mid_sentence,
            "complete": complete,
            "refusal": refusal,
            "repetition": repetition,
            "echo": echo,
        }

    def _need_words(self, request: str) -> float:
        wanted = _asked_count(request)
        if wanted:
            return max(self.short_need_words, 8.0 * wanted)
        if _LONG_ASK.search(request):
            return self.long_need_words
        if _SHORT_ASK.search(request):
            return self.short_need_words
        return self.default_need_words

    def _repetition(
        self, text: str, tokens: list[str], lines: list[str], signals: Signals
    ) -> float:
        """0 clean .. 1 looping: the worst of repeated lines, 4-grams and near-duplicate sentences."""
        keys = [_MARKER.sub("", line).lower().strip(" .") for line in lines]
        keys = [k for k in keys if k]
        dup_lines = (len(keys) - len(set(keys))) / len(keys) if len(keys) >= 3 else 0.0
        grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
        rep_grams = 0.0
        if len(grams) >= 8:
            counts = Counter(grams)
            rep_grams = sum(c - 1 for c in counts.values()) / len(grams)
        near = 0.0
        parts = sentences(text)[:_MAX_SENTENCES]
        if len(parts) >= 3:
            vectors = [signals.embed(p) for p in parts]
            dup = 0
            for i in range(1, len(vectors)):
                if max(float(vectors[i] @ vectors[j]) for j in range(i)) >= self.near_duplicate:
                    dup += 1
            near = dup / len(parts)
        return clamp(max(dup_lines, rep_grams, near))

    def _confidence(self, f: dict[str, float], score: float, case: Case) -> float:
        # Firm when the signals agree on an extreme (a refusal, a loop, a clean on-topic answer);
        # weaker for very short texts, where the embedding and word counts say little.
        decisiveness = abs(score - 0.5) * 2.0
        support = clamp(f["words"] / 30.0)
        conf = 0.35 + 0.35 * decisiveness + 0.3 * support
        if case.truncated:
            conf -= 0.1
        return clamp(conf, 0.05, 0.95)


def _asked_count(request: str) -> int | None:
    match = _COUNT.search(request)
    if not match:
        return None
    token = match.group(1).lower()
    count = int(token) if token.isdigit() else _NUMBER_WORDS.get(token)
    return count if count and 1 < count <= 50 else None


def _ends_mid_sentence(text: str, lines: list[str]) -> float:
    tail = text.rstrip()
    if not tail or tail.endswith(_TERMINAL):
        return 0.0
    last = lines[-1] if lines else tail
    last_words = words(last)
    if last_words and last_words[-1] in _DANGLING:
        return 1.0
    if _LIST_LINE.match(last) or len(last_words) < 6:
        return 0.0  # a bare list item or a short label needs no full stop
    return 0.6


def _refusal(text: str, n_words: int) -> float:
    head = text[:400]
    if _REFUSAL.search(head):
        return 1.0 if n_words < 60 else 0.5
    stripped = text.strip()
    if stripped.endswith("?") and n_words < 25 and stripped.count("?") >= 1:
        return 0.5  # a short reply that only asks back
    return 0.0


def _echo(request: str, tokens: list[str]) -> float:
    """Share of the response's word 4-grams copied from the request (0 for short answers)."""
    if len(tokens) < 8:
        return 0.0
    asked = words(request)
    source = {tuple(asked[i : i + 4]) for i in range(len(asked) - 3)}
    if not source:
        return 0.0
    grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
    return sum(1 for g in grams if g in source) / len(grams)


def _rationale(f: dict[str, float]) -> str:
    if f["refusal"] >= 1.0:
        return "The response refuses or dodges the request; answer it directly."
    if f["repetition"] >= 0.3:
        return "The response repeats itself; remove the repeated lines and add new content."
    if f["echo"] >= 0.6:
        return "The response mostly copies the request; answer it instead of restating it."
    if f["complete"] < 0.5:
        return "The response stops mid-sentence; finish the answer."
    if f["list_asked"] and f["form"] < 0.6:
        if f["asked_items"]:
            return f"The request asks for {int(f['asked_items'])} items; give them as a list."
        return "The request asks for several items; give them as a list."
    if f["quantitative"] and f["form"] < 1.0:
        return "The request is quantitative; give concrete numbers."
    if f["relevance_scaled"] < 0.3:
        return "The response is off-topic; address what the request actually asks."
    if f["substance"] < 0.6:
        return "The response is thin for what was asked; add the missing substance."
    return "The response addresses the request with enough substance; no change needed."


@critic("helpfulness")
def helpfulness(**options: float) -> HelpfulnessCritic:
    """The helpfulness critic; keyword arguments override its weights and thresholds."""
    return HelpfulnessCritic(**options)
