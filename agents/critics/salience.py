"""Salience: is the sponsor's product clearly and correctly named, and how prominently?

Signals (applies only when a campaign is attached):

- naming: the exact product name scores highest; the brand's full name or its distinctive first
  word score less, plus credit for the product's own words in the same sentence ("Cairnline
  Drizzle rain shell" for "Cairnline Drizzle 2.5L Rain Shell");
- position: the sentence of the first mention (earlier is more prominent);
- mentions: how many times the product or brand is named (saturating);
- ad copy: MiniLM cosine similarity of the best ad sentence to the campaign's ad_copy;
- keywords: share of the campaign keywords the response covers (whole phrase, or half credit
  when all of a keyword's content words appear).

A response that never names the product or brand scores 0: the naming term gates the rest.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._critic import BaseCritic, Case, Score, clamp, critic, ramp, truncation
from .._text import brand_names, contains_phrase, content_words, find_ad, words

if TYPE_CHECKING:
    from .._signals import Signals


def _name_pattern(names: list[str]) -> re.Pattern[str] | None:
    """One pattern over all names, longest first, so "Acme Anvil" is not counted as "Acme" too."""
    ordered = sorted({n for n in names if n.strip()}, key=len, reverse=True)
    if not ordered:
        return None
    alternatives = "|".join(r"\s+".join(re.escape(p) for p in n.split()) for n in ordered)
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE)


@critic("salience")
@dataclass(frozen=True)
class SalienceCritic(BaseCritic, name="salience", version="1", needs=("campaign",)):
    """Scores how clearly and prominently the product is named; see the module docstring.
    Keyword arguments override its credits, ramps and weights."""

    exact_product: float = 1.0
    full_brand: float = 0.6
    brand_word: float = 0.5
    product_words_credit: float = 0.3
    mention_scale: float = 1.5  # mentions for 1 - 1/e of the mention credit
    copy_floor: float = 0.1
    copy_ceiling: float = 0.7
    keyword_ceiling: float = 0.5  # covering half the keywords is full credit
    base: float = 0.35  # what naming the product earns before prominence
    w_position: float = 0.35
    w_mentions: float = 0.2
    w_copy: float = 0.3
    w_keywords: float = 0.15

    def judge(self, case: Case, text: str, signals: Signals) -> Score:
        campaign, brand = case.campaign or {}, case.brand or {}
        product = campaign.get("product") or ""
        ad = find_ad(text, case.brand, case.campaign, case.compliance.get("required_disclosure"))
        sents = ad.sentences
        n = len(sents)
        names = brand_names(case.brand, case.campaign)
        pattern = _name_pattern(names)
        matches = list(pattern.finditer(text)) if pattern else []
        naming_sentences = [i for i, s in enumerate(sents) if pattern and pattern.search(s)]

        kw_score, covered = self._keywords(text, campaign.get("keywords") or [])
        evidence: dict = {
            "product": product,
            "mentions": len(matches),
            "matched_names": sorted({m.group(0) for m in matches}),
            "sentences": n,
            "keywords_covered": covered,
            "keyword_coverage": round(kw_score, 4),
            **truncation(case),
        }

        if not naming_sentences:
            # Generic talk of the product's own words ("cold brew concentrate") without the name
            # may be a looser reference: less sure the reader missed it.
            own = content_words(product) - content_words(brand.get("name") or "")
            near = len(own & content_words(text)) / len(own) if own else 0.0
            evidence["product_words_without_name"] = round(near, 4)
            shown = " or ".join(dict.fromkeys(x for x in names[:2] if x))
            return self.scored(
                0.0,
                clamp(0.95 - 0.4 * near),
                f"Never names {shown or 'the product'}; name the product, early, in a "
                "sentence that carries the ad copy's point.",
                evidence,
            )

        quality, named_as = self._naming(sents, naming_sentences, product, brand, names)
        first = naming_sentences[0]
        position = 1.0 - first / n
        mentions = 1.0 - math.exp(-len(matches) / self.mention_scale)
        ad_copy = campaign.get("ad_copy") or ""
        copy_sim = (
            max(signals.similarity(sents[i], ad_copy) for i in naming_sentences)
            if ad_copy.strip()
            else None
        )
        parts = {"position": position, "mentions": mentions, "keywords": kw_score}
        weights = {
            "position": self.w_position,
            "mentions": self.w_mentions,
            "keywords": self.w_keywords,
        }
        if copy_sim is not None:
            parts["ad_copy"] = ramp(copy_sim, self.copy_floor, self.copy_ceiling)
            weights["ad_copy"] = self.w_copy
            evidence["ad_copy_similarity"] = round(copy_sim, 4)
        prominence = sum(weights[k] * parts[k] for k in parts) / sum(weights.values())
        score = quality * (self.base + (1.0 - self.base) * prominence)
        evidence.update(
            naming=round(quality, 4),
            named_as=named_as,
            first_mention_sentence=first + 1,
            ad_sentences=[i + 1 for i in naming_sentences],
            components={k: round(v, 4) for k, v in parts.items()},
        )
        # Firm when naming is exact and the prominence terms agree; short answers say less.
        support = 1.0 - math.exp(-len(words(text)) / 20.0)
        agreement = 1.0 - 2.0 * statistics.pstdev(parts.values())
        confidence = clamp(0.3 + 0.25 * quality + 0.25 * support + 0.2 * agreement, 0.05, 0.95)
        return self.scored(
            score, confidence, _rationale(evidence, quality, product, named_as), evidence
        )

    def _naming(
        self,
        sents: tuple[str, ...],
        indices: list[int],
        product: str,
        brand: dict,
        names: list[str],
    ) -> tuple[float, str]:
        """Best naming quality over the naming sentences, and the name it was earned with."""
        own = content_words(product) - content_words(brand.get("name") or "")
        best, best_name = 0.0, ""
        for i in indices:
            s = sents[i]
            if product and contains_phrase(s, product):
                return self.exact_product, product
            base, used = 0.0, ""
            if brand.get("name") and contains_phrase(s, brand["name"]):
                base, used = self.full_brand, brand["name"]
            elif any(contains_phrase(s, n) for n in names):
                base, used = self.brand_word, next(n for n in names if contains_phrase(s, n))
            share = len(own & content_words(s)) / len(own) if own else 0.0
            quality = min(base + self.product_words_credit * share, self.exact_product - 0.05)
            if quality > best:
                best, best_name = quality, used
        return best, best_name

    def _keywords(self, text: str, keywords: list[str]) -> tuple[float, list[str]]:
        keywords = [k for k in keywords if k.strip()]
        if not keywords:
            return 0.0, []
        present = content_words(text)
        covered, credit = [], 0.0
        for keyword in keywords:
            if contains_phrase(text, keyword):
                covered.append(keyword)
                credit += 1.0
            elif (kw := content_words(keyword)) and kw <= present:
                covered.append(keyword)
                credit += 0.5
        return ramp(credit / len(keywords), 0.0, self.keyword_ceiling), covered


def _rationale(evidence: dict, quality: float, product: str, used: str) -> str:
    n, first = evidence["sentences"], evidence["first_mention_sentence"]
    where = "early" if first <= max(1, n / 3) else "midway" if first <= 2 * n / 3 else "late"
    times = {1: "once", 2: "twice"}.get(evidence["mentions"], f"{evidence['mentions']} times")
    if quality >= 1.0:
        text = f"Names {product} {times}, {where} in the answer (sentence {first} of {n})"
    else:
        text = (
            f"Names only {used!r}, not the exact product {product} ({times}, first {where} in "
            f"the answer, sentence {first} of {n})"
        )
    if "ad_copy_similarity" in evidence:
        text += f"; the ad sentence is {evidence['ad_copy_similarity']:.2f} similar to the ad copy"
    covered = evidence["keywords_covered"]
    text += f"; covers keywords {', '.join(covered)}" if covered else "; covers no campaign keyword"
    return text + "."
