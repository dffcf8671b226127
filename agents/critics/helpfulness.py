"""Helpfulness: does the response answer what was asked, fully, without looping or dodging?

Signals, all local and cheap once :meth:`Signals.prepare` has embedded the texts (no policy
likelihood: on PandaLM it did not separate better answers from worse ones):

- relevance: cosine similarity of the request's and the response's MiniLM embeddings, and an
  off-topic penalty below a floor;
- coverage: share of the request's sub-questions addressed (two or more), else of its content
  words taken up;
- substance: log word count against what the request needs (a label or title a few words, a
  list about ten per item, an essay or email a few hundred), saturating there: longer is
  better only up to what was asked for;
- asked-for form: a list when the request asks for items or steps (about N of them when it
  says N), numbers when it is quantitative (a budget, "how many");
- completeness: generation stopped at the token limit, or the text ends mid-sentence;
- refusal and evasion: "I can't help", "as an AI", "I don't know", a bare question sent back;
- degeneration: repeated lines, repeated word 4-grams, near-duplicate sentences (embeddings);
- echo: share of the response's word 4-grams copied from the request.

Checked against people on the PandaLM test set by ``bench/helpfulness_agreement.py`` (results in
bench/RESULTS.md).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .._critic import BaseCritic, Case, Score, clamp, critic, truncation
from .._text import content_words, sentences, words

if TYPE_CHECKING:
    from .._signals import Signals

_MAX_SENTENCES = 12  # sentences checked for near-duplicates: unprepared, each is an embedding
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
# What the request needs in words: a count of items, else the kind of output it names, else
# the kind of task. Short outputs (a title, a label) win over "write", which alone says little.
_SHORT_OUTPUT = re.compile(
    r"\b(?:title|headline|name|slogan|tagline|motto|hashtags?|one word|a word|one sentence|"
    r"a sentence|yes or no|true or false|label|synonyms?|antonyms?|acronym|abbreviation)\b",
    re.IGNORECASE,
)
_LONG_ASK = re.compile(
    r"\b(?:essay|article|blog|story|stories|e-?mail|letter|explain|describe|plan|guide|"
    r"discuss|compare|proposal|report|review|itinerary|detailed|step[- ]by[- ]step|"
    r"introduction|script|speech|poem|lesson|recipe|strategy|analy[sz]e|analysis)\b",
    re.IGNORECASE,
)
_SHORT_ASK = re.compile(
    r"\b(?:classify|categori[sz]e|choose|select|pick|identify|detect|determine|decide|"
    r"which|extract|correct|fix|rewrite|paraphrase|translate|spell|verify|convert)\b",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"\b(?:I(?:'m| am) (?:sorry|afraid)[^.!?\n]{0,40}\b(?:can(?:'t|not)|unable to|not able to)"
    r" (?:help|assist|answer|provide|do|comply|fulfil+|complete|write|give|create|generate)|"
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
_QUESTION_ASK = re.compile(
    r"\b(?:question|questions|ask|asks|quiz|interview|survey|title|headline|chat|dialogue|"
    r"conversation|respond|reply|follow[- ]up)\b",
    re.IGNORECASE,
)
_LIST_LINE = re.compile(r"^\s*(?:[-*\u2022+]|\d{1,3}[.)]|[a-zA-Z][.)])\s+\S")
_MARKER = re.compile(r"^\s*(?:[-*\u2022+]|\d{1,3}[.)]|[a-zA-Z][.)])\s+")
_TERMINAL = tuple(".!?)]\"'`*:;\u201d\u2019>")
_DANGLING = frozenset(
    "a an the and or but of for to in on with by at from as that which who whose is are was "
    "were be been your our my their his her its this these those than then if so because".split()
)


@critic("helpfulness")
@dataclass(frozen=True)
class HelpfulnessCritic(BaseCritic, name="helpfulness", version="1"):
    """Scores how helpfully a response answers the request; see the module docstring. Keyword
    arguments override its weights and thresholds.

    score = quality x keep. quality is the weighted mean of relevance, coverage, substance and
    asked-for form; keep multiplies one factor (1 - penalty x signal) per failure: off-topic,
    refusal, repetition, echo and incompleteness, so each removes its share of what is left.
    The weights were tuned on the even-idx (dev) half of PandaLM only: substance dominates
    because people there preferred the fuller answer unless it looped or copied the request.
    """

    # quality: weighted mean of 0-1 signals
    w_relevance: float = 0.1
    w_coverage: float = 0.05
    w_substance: float = 0.8
    w_form: float = 0.05
    # keep: each factor is 1 - penalty x signal (signals 0-1)
    off_topic_penalty: float = 0.5
    refusal_penalty: float = 0.6
    repetition_penalty: float = 0.5
    echo_penalty: float = 0.3
    echo_free: float = 0.0  # share of copied 4-grams tolerated before echo counts
    cutoff_penalty: float = 0.15
    # words at which substance saturates: short outputs/tasks, unmarked requests, long forms
    # (a request for N items needs 10 words per item)
    short_need_words: float = 8.0
    default_need_words: float = 150.0
    long_need_words: float = 400.0
    coverage_saturation: float = 0.15  # share of the request's content words that counts as full
    # MiniLM cosines: on-topic answers sit around 0.4-0.7 (full relevance at the ceiling); the
    # off-topic penalty grows linearly below the floor (about the 5th percentile on PandaLM)
    relevance_ceiling: float = 0.7
    off_topic_below: float = 0.15
    near_duplicate: float = 0.92  # cosine at which two sentences count as the same one

    def judge(self, case: Case, text: str, signals: Signals) -> Score:
        f = self.features(case, signals)
        score = self.combine(f)
        evidence: dict = {k: round(float(v), 4) for k, v in f.items()}
        evidence.update(truncation(case, flag=False))  # its evidence has always been all numbers
        return self.scored(score, self._confidence(f, score, case), _rationale(f), evidence)

    def combine(self, f: dict[str, float]) -> float:
        """The score from the signals (0 unhelpful .. 1 helpful)."""
        weights = (self.w_relevance, self.w_coverage, self.w_substance, self.w_form)
        values = (f["relevance_scaled"], f["coverage"], f["substance"], f["form"])
        quality = sum(w * v for w, v in zip(weights, values, strict=True)) / max(sum(weights), 1e-9)
        echo = clamp((f["echo"] - self.echo_free) / max(1.0 - self.echo_free, 1e-9))
        keep = (
            (1.0 - self.off_topic_penalty * f["off_topic"])
            * (1.0 - self.refusal_penalty * f["refusal"])
            * (1.0 - self.repetition_penalty * f["repetition"])
            * (1.0 - self.echo_penalty * echo)
            * (1.0 - self.cutoff_penalty * (1.0 - f["complete"]))
        )
        return clamp(quality * keep)

    # ---- signals ----------------------------------------------------------------------------

    def features(self, case: Case, signals: Signals) -> dict[str, float]:
        """Every named signal the score is made of (the evidence)."""
        text = case.judged_text
        request = case.request
        tokens = words(text)
        n_words = len(tokens)
        lines = [line.strip() for line in text.splitlines() if line.strip()]

        relevance = signals.similarity(request, text) if request.strip() else 0.0
        relevance_scaled = clamp(relevance / max(self.relevance_ceiling, 1e-6))

        need = self._need_words(request)
        substance = clamp(math.log1p(n_words) / math.log1p(need))

        wanted = _asked_count(request)
        list_asked = wanted is not None or bool(_LIST_ASK.search(request))
        items = sum(1 for line in lines if _LIST_LINE.match(line))
        if list_asked:
            if wanted:
                form = clamp(1.0 - abs(items - wanted) / wanted) if items else 0.2
            else:
                form = 1.0 if items >= 2 else 0.4
        else:
            form = 1.0
        quantitative = bool(_QUANT.search(request))
        if quantitative and not re.search(r"\d", text):
            form *= 0.5

        cut_off = 1.0 if case.finish_reason == "length" else 0.0
        mid_sentence = _ends_mid_sentence(text, lines)
        complete = 1.0 - max(cut_off, mid_sentence)

        return {
            "relevance": relevance,
            "relevance_scaled": relevance_scaled,
            "off_topic": clamp(
                (self.off_topic_below - relevance) / max(self.off_topic_below, 1e-6)
            ),
            "coverage": _coverage(request, text, self.coverage_saturation),
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
            "refusal": _refusal(request, text, n_words),
            "repetition": self._repetition(text, tokens, lines, signals),
            "echo": _echo(request, tokens),
        }

    def _need_words(self, request: str) -> float:
        wanted = _asked_count(request)
        if wanted:
            return max(self.short_need_words, 10.0 * wanted)
        if _SHORT_OUTPUT.search(request):
            return self.short_need_words
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
        parts = [p for p in sentences(text) if len(p.split()) >= 3][:_MAX_SENTENCES]
        if len(parts) >= 3:
            vectors = np.stack([signals.embed(p) for p in parts])
            sims = np.tril(vectors @ vectors.T, k=-1)  # each sentence against those before it
            near = float((sims.max(axis=1) >= self.near_duplicate).sum()) / len(parts)
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
    """1 when the text stops on a dangling word, 0.5 when prose stops without punctuation."""
    tail = text.rstrip()
    if not tail or tail.endswith(_TERMINAL):
        return 0.0
    last = lines[-1] if lines else tail
    last_words = words(last)
    if last_words and last_words[-1] in _DANGLING and len(last_words) > 2:
        return 1.0
    if _LIST_LINE.match(last) or "|" in last or len(last_words) < 8:
        return 0.0  # a list item, a table row or a short label needs no full stop
    punctuated = sum(1 for line in lines[:-1] if line.endswith(_TERMINAL))
    return 0.5 if punctuated or len(lines) == 1 else 0.0


def _refusal(request: str, text: str, n_words: int) -> float:
    """1 for a refusal or an "as an AI" dodge, 0.5 for a short reply that only asks back."""
    head = " ".join(sentences(text)[:2])[:300]
    if _REFUSAL.search(head):
        return 1.0 if n_words < 60 else 0.5
    stripped = text.strip()
    if stripped.endswith("?") and n_words < 25 and not _QUESTION_ASK.search(request):
        return 0.5
    return 0.0


def _coverage(request: str, text: str, saturation: float) -> float:
    """Share of the request's sub-questions addressed or, with fewer than two, of its content
    words taken up, full at ``saturation`` (an answer need not repeat every word it was asked)."""
    said = content_words(text)
    questions = [q for q in sentences(request) if q.rstrip().endswith("?")]
    if len(questions) >= 2:
        addressed = 0
        for question in questions:
            asked = content_words(question)
            if asked and len(asked & said) >= max(1, len(asked) // 3):
                addressed += 1
        return addressed / len(questions)
    asked = content_words(request)
    if not asked:
        return 1.0
    return clamp(len(asked & said) / len(asked) / max(saturation, 1e-6))


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
    """The most damaging problem, said as something a reviser can fix."""
    if f["refusal"] >= 1.0:
        return "The response refuses or dodges the request; answer it directly."
    if f["off_topic"] >= 0.5:
        return "The response is off-topic; address what the request actually asks."
    if f["repetition"] >= 0.3:
        return "The response repeats itself; cut the repeated lines and say something new."
    if f["echo"] >= 0.5:
        return "The response mostly copies the request; answer it instead of restating it."
    if f["refusal"] > 0:
        return "The response asks back instead of answering; answer first, then ask."
    if f["cut_off"]:
        return "Generation stopped at the token limit; finish the answer or allow more tokens."
    if f["complete"] < 1.0:
        return "The response stops mid-sentence; finish the answer."
    if f["list_asked"] and f["form"] < 0.6:
        if f["asked_items"]:
            return f"The request asks for {int(f['asked_items'])} items; give them as a list."
        return "The request asks for several items; give them as a list."
    if f["quantitative"] and f["form"] < 1.0:
        return "The request is quantitative; give concrete numbers."
    if f["relevance_scaled"] < 0.3:
        return "The response drifts from the request; tie it back to what was asked."
    if f["substance"] < 0.6:
        return "The response is thin for what was asked; add the missing substance."
    return "On-topic, complete and free of loops; check its facts, which this critic cannot judge."
