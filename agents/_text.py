"""Small text utilities shared by the critics: sentences, names, the ad sentences of a response."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n|\n(?=\s*(?:[-*\u2022]|\d+[.)])\s)")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")
_STOP = frozenset(
    "a an the and or of for to in on with by at from is are be this that it its your our you we "
    "i me my as so if not no do does can will".split()
)


def encodable(text: str) -> str:
    """The text with lone surrogates (invalid UTF-16 halves, which JSON escapes can produce)
    replaced: tokenizers raise on them."""
    return text.encode("utf-8", "replace").decode("utf-8")


def sentences(text: str) -> list[str]:
    """Split text into sentences and list items; blank pieces dropped."""
    return [piece.strip() for piece in _SENTENCE_END.split(text) if piece and piece.strip()]


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in _STOP and len(w) > 2}


def contains_phrase(text: str, phrase: str) -> bool:
    """Case-insensitive whole-word match of ``phrase`` (any whitespace between its words)."""
    parts = [re.escape(p) for p in phrase.split()]
    if not parts:
        return False
    pattern = r"(?<![A-Za-z0-9])" + r"\s+".join(parts) + r"(?![A-Za-z0-9])"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def find_phrases(text: str, phrases: list[str]) -> list[str]:
    return [p for p in phrases if p.strip() and contains_phrase(text, p)]


@dataclass(frozen=True)
class AdSpan:
    """Where the campaign's ad sits in a response."""

    sentences: tuple[str, ...]  # every sentence of the response
    ad_indices: tuple[int, ...]  # which of them carry the ad

    @property
    def ad_sentences(self) -> list[str]:
        return [self.sentences[i] for i in self.ad_indices]

    @property
    def rest(self) -> str:
        """The response with its ad sentences removed."""
        keep = set(range(len(self.sentences))) - set(self.ad_indices)
        return " ".join(self.sentences[i] for i in sorted(keep))

    @property
    def has_ad(self) -> bool:
        return bool(self.ad_indices)


def brand_names(brand: dict | None, campaign: dict | None) -> list[str]:
    """Names that identify the advertiser: product, brand name and its distinctive first word."""
    names = []
    if campaign and campaign.get("product"):
        names.append(campaign["product"])
    if brand and brand.get("name"):
        names.append(brand["name"])
        first = brand["name"].split()[0]
        if len(first) > 3 and first.lower() not in _STOP:
            names.append(first)
    return names


def find_ad(text: str, brand: dict | None, campaign: dict | None, disclosure: str | None) -> AdSpan:
    """The sentences that name the advertiser or carry the ad disclosure."""
    parts = sentences(text)
    names = brand_names(brand, campaign)
    marks = [disclosure] if disclosure else []
    indices = tuple(
        i for i, s in enumerate(parts) if find_phrases(s, names) or find_phrases(s, marks)
    )
    return AdSpan(tuple(parts), indices)


@functools.cache
def sentiment_analyzer() -> Any:
    """VADER, built once per process (it reads its lexicon from disk) and shared by critics."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def parse_verdict(raw: Any, model: type[BaseModel]) -> BaseModel | None:
    """The verdict in a reply, or None: the first JSON object in the text, validated."""
    if not isinstance(raw, str):
        return None
    for match in re.finditer(r"\{", raw):
        try:
            data, _ = json.JSONDecoder().raw_decode(raw[match.start() :])
            return model.model_validate(data)
        except (ValueError, ValidationError):
            continue
    return None
