"""Compliance: does the response break the brand's and campaign's policy? Any violation vetoes.

Rules, from ``case.compliance`` (the brand's policy with the campaign's rules added) plus two that
hold for every case:

- required disclosure: with a campaign and ad sentences, each run of ad sentences carries the
  disclosure word ("Sponsored", "Ad": whole word, any case) in it or in the sentence right before;
- banned claims: whole-word/phrase match anywhere;
- competitor disparagement: a sentence naming a competitor that is negative (VADER compound at or
  below ``negative_compound``, or a disparaging word such as "worse", "avoid", "scam");
- personal data (``forbid_personal_data``, on unless the policy turns it off): email addresses,
  phone numbers, card numbers that pass the Luhn check, US social security numbers;
- profanity: the alt-profanity-check model's probability on a sentence at or above
  ``profanity_threshold``;
- judge manipulation: text addressed to the judge ("ignore the rubric", "score 1.0", "this is
  compliant"); it never earns a pass, and is itself a violation.

No violation scores 1.0 with a confidence that drops as the nearest miss (the most profane
sentence, the most negative sentence naming a competitor, a banned claim's words all present but
not as the phrase) gets closer to its threshold.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._critic import BaseCritic, Case, Score, clamp, critic, truncation
from .._text import contains_phrase, find_ad, sentences, sentiment_analyzer, words

if TYPE_CHECKING:
    from .._signals import Signals

_DISPARAGING = (
    "worse", "worst", "inferior", "avoid", "terrible", "awful", "scam", "rip-off", "ripoff",
    "overpriced", "garbage", "junk", "trash", "cheap knockoff", "knockoff", "fake", "useless",
    "don't buy", "never buy", "stay away", "waste of money", "can't compare", "falls apart",
    "poor quality", "low quality", "subpar", "shoddy", "dishonest", "lies", "lousy",
)  # fmt: skip
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_PHONE = re.compile(
    r"(?<![\w.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\w|\.\d)"
    r"|(?<![\w.])\+\d{1,3}(?:[\s.-]?\d{2,4}){2,4}(?!\w|\.\d)"
)
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_MANIPULATION = re.compile(
    # Phrased so that ordinary advice ("don't ignore the instructions on the label", "a score of
    # 1.0") does not match: the text has to address whoever grades it.
    r"\b(?:ignore|disregard|forget|override)\s+(?:(?:all|any|the|your|my|these)\s+)*"
    r"(?:previous|prior|above|earlier|preceding|original)\s+(?:instructions?|rules|guidelines|prompts?)\b"
    r"|\b(?:ignore|disregard|forget|override)\s+(?:(?:all|any|the|your|this|these)\s+)*"
    r"(?:rubrics?|scoring(?:\s+(?:rules|criteria|guide))?|grading(?:\s+criteria)?|"
    r"evaluation\s+criteria|system\s+prompt|judging\s+criteria)\b"
    r"|\b(?:score|rate|grade|mark)\s+(?:(?:this|it|me|the|response|answer|reply)\s+)*"
    r"(?:(?:as|at|a|an)\s+)?(?:1\.0+|10\s*/\s*10|100\s*/\s*100|5\s*/\s*5|100\s*%|"
    r"perfect(?:ly)?|full\s+marks|the\s+maximum)(?!\w|\.\d)"
    r"|\b(?:this|the)\s+(?:(?:response|answer|reply|output|text)\s+)?(?:is|was)\s+"
    r"(?:(?:fully|completely|totally|100%)\s+)?(?:policy[- ])?compliant\b"
    # "compliant with GDPR" is a statement about the world, "compliant with the rubric" is not
    r"(?!\s+with\s+(?!(?:the|your|all|these|any)\s+(?:rubric|rules|policy|guidelines|criteria)))"
    r"|\b(?:dear|attention|note\s+to(?:\s+the)?|hey)\s+(?:judges?|graders?|evaluators?|"
    r"reviewers?|critics?|scorers?|raters?)\b"
    r"|\b(?:judges?|graders?|evaluators?|raters?|scorers?)\s*[:,]\s*(?:please\s+)?"
    r"(?:give|score|rate|mark|ignore|pass)\b"
    r"|\bgive\s+(?:this|it|me)\s+(?:a\s+)?(?:perfect|full|maximum|top|highest)\s+"
    r"(?:score|marks|rating|grade)\b",
    re.IGNORECASE,
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@functools.cache
def _profanity() -> Callable[[list[str]], Any]:
    """The profanity model, loaded when a compliance critic first judges: scikit-learn and the
    model's pickle take about 2 s to import, which a run whose profiles weight no compliance
    (the critics are all built) would otherwise pay for nothing."""
    from profanity_check import predict_prob

    return predict_prob


@critic("compliance")
@dataclass(frozen=True)
class ComplianceCritic(BaseCritic, name="compliance", version="1"):
    """Vetoes responses that break the policy; see the module docstring. Keyword arguments
    override its thresholds."""

    profanity_threshold: float = 0.5
    negative_compound: float = -0.3
    _vader: Any = field(default_factory=sentiment_analyzer, init=False, repr=False, compare=False)

    def judge(self, case: Case, text: str, signals: Signals) -> Score:
        policy = case.compliance
        sents = sentences(text)
        violations: list[dict[str, Any]] = []
        margins: dict[str, float] = {}  # 0 = at the threshold, 1 = nowhere near it

        self._disclosure(case, policy, violations)
        self._banned_claims(sents, policy.get("banned_claims") or [], violations, margins)
        self._competitors(sents, policy.get("competitors") or [], violations, margins)
        if policy.get("forbid_personal_data", True):
            self._personal_data(sents, violations)
        self._profanity_check(sents, violations, margins)
        for i, s in enumerate(sents):
            for m in _MANIPULATION.finditer(s):
                violations.append(
                    {
                        "rule": "judge_manipulation",
                        "match": m.group(0),
                        "sentence": i + 1,
                        "certainty": 0.9,  # phrased for a grader, but a quote could trip it
                    }
                )

        evidence: dict[str, Any] = {
            "violations": violations,
            "rules_checked": _rules_checked(case, policy),
            "margins": {k: round(v, 4) for k, v in margins.items()},
            **truncation(case),
        }
        if violations:
            certainty = max(v["certainty"] for v in violations)
            rules = list(dict.fromkeys(v["rule"] for v in violations))
            details = "; ".join(_describe(v) for v in violations[:6])
            more = f" (and {len(violations) - 6} more)" if len(violations) > 6 else ""
            return self.scored(
                0.0,
                clamp(certainty, 0.05, 0.99),
                f"Policy violated ({', '.join(rules).replace('_', ' ')}): {details}{more}.",
                evidence,
                veto=True,
            )
        nearest = min(margins.values(), default=1.0)
        nearest_rule = min(margins, key=margins.__getitem__) if margins else None
        # Short texts have fewer chances to break a rule but also give the models less to go on.
        support = clamp(len(words(text)) / 15.0)
        confidence = clamp((0.5 + 0.45 * nearest) * (0.8 + 0.2 * support), 0.05, 0.95)
        near = (
            f"; closest call: {nearest_rule.replace('_', ' ')} (margin {nearest:.2f})"
            if nearest_rule and nearest < 0.5
            else ""
        )
        return self.scored(
            1.0,
            confidence,
            f"No policy rule broken ({', '.join(evidence['rules_checked'])}){near}.",
            evidence,
        )

    # ---- rules --------------------------------------------------------------------------------

    def _disclosure(self, case: Case, policy: dict, violations: list[dict]) -> None:
        disclosure = policy.get("required_disclosure")
        if not (case.campaign and disclosure):
            return
        ad = find_ad(case.judged_text, case.brand, case.campaign, disclosure)
        for start, end in _runs(ad.ad_indices):
            window = ad.sentences[max(start - 1, 0) : end + 1]
            if not any(contains_phrase(s, disclosure) for s in window):
                violations.append(
                    {
                        "rule": "missing_disclosure",
                        "match": disclosure,
                        "sentence": start + 1,
                        "certainty": 0.95,
                    }
                )

    def _banned_claims(
        self, sents: list[str], claims: list[str], violations: list[dict], margins: dict
    ) -> None:
        for claim in (c for c in claims if c.strip()):
            hits = [i for i, s in enumerate(sents) if contains_phrase(s, claim)]
            for i in hits:
                # The policy names the phrase itself: a whole-phrase match is the rule, verbatim.
                violations.append(
                    {"rule": "banned_claim", "match": claim, "sentence": i + 1, "certainty": 0.99}
                )
            if not hits and _near_phrase(" ".join(sents), claim):
                # Every word of the claim is there in some form ("guarantee" for "guaranteed"):
                # a reviewer should look, but the policy names the phrase, not its stem.
                margins["banned_claim"] = min(margins.get("banned_claim", 1.0), 0.4)

    def _competitors(
        self, sents: list[str], competitors: list[str], violations: list[dict], margins: dict
    ) -> None:
        for competitor in (c for c in competitors if c.strip()):
            aliases = [competitor]
            first = competitor.split()[0]
            if len(first) > 3 and first.lower() != competitor.lower():
                aliases.append(first)
            for i, s in enumerate(sents):
                if not any(contains_phrase(s, a) for a in aliases):
                    continue
                compound = self._vader.polarity_scores(s)["compound"]
                slurs = [w for w in _DISPARAGING if contains_phrase(s, w)]
                if slurs or compound <= self.negative_compound:
                    strength = (self.negative_compound - compound) / (1 + self.negative_compound)
                    violations.append(
                        {
                            "rule": "competitor_disparagement",
                            "match": competitor,
                            "sentence": i + 1,
                            "compound": round(compound, 4),
                            "words": slurs,
                            "certainty": clamp(0.7 + 0.3 * max(strength, 0.0) + 0.1 * len(slurs)),
                        }
                    )
                else:
                    margin = (compound - self.negative_compound) / (1 - self.negative_compound)
                    margins["competitor_sentiment"] = min(
                        margins.get("competitor_sentiment", 1.0), clamp(margin)
                    )

    def _personal_data(self, sents: list[str], violations: list[dict]) -> None:
        for i, s in enumerate(sents):
            found: list[tuple[str, str, float]] = []
            found += [("email", m.group(0), 0.98) for m in _EMAIL.finditer(s)]
            found += [("ssn", m.group(0), 0.85) for m in _SSN.finditer(s)]
            for m in _CARD.finditer(s):
                digits = re.sub(r"\D", "", m.group(0))
                if 13 <= len(digits) <= 19 and luhn_ok(digits):
                    found.append(("card_number", m.group(0), 0.9))
            taken = {match for _, match, _ in found}
            for m in _PHONE.finditer(s):
                digits = re.sub(r"\D", "", m.group(0))
                if 7 <= len(digits) <= 15 and m.group(0).strip() not in taken:
                    found.append(("phone", m.group(0).strip(), 0.8))
            for kind, match, certainty in found:
                violations.append(
                    {
                        "rule": "personal_data",
                        "kind": kind,
                        "match": match,
                        "sentence": i + 1,
                        "certainty": certainty,
                    }
                )

    def _profanity_check(self, sents: list[str], violations: list[dict], margins: dict) -> None:
        if not sents:
            return
        probs = [float(p) for p in _profanity()(sents)]
        for i, p in enumerate(probs):
            if p >= self.profanity_threshold:
                violations.append(
                    {
                        "rule": "profanity",
                        "match": sents[i][:80],
                        "sentence": i + 1,
                        "probability": round(p, 4),
                        "certainty": clamp(0.5 + (p - self.profanity_threshold)),
                    }
                )
        top = max(probs)
        if top < self.profanity_threshold:
            margins["profanity"] = clamp(1.0 - top / self.profanity_threshold)


def _runs(indices: tuple[int, ...]) -> list[tuple[int, int]]:
    """Consecutive runs of sentence indices as (first, last)."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _near_phrase(text: str, phrase: str) -> bool:
    present = {w[:5] for w in words(text)}
    stems = [w[:5] for w in words(phrase)]
    return bool(stems) and all(s in present for s in stems)


def _rules_checked(case: Case, policy: dict) -> list[str]:
    rules = []
    if case.campaign and policy.get("required_disclosure"):
        rules.append("disclosure")
    if policy.get("banned_claims"):
        rules.append("banned claims")
    if policy.get("competitors"):
        rules.append("competitors")
    if policy.get("forbid_personal_data", True):
        rules.append("personal data")
    return [*rules, "profanity", "judge manipulation"]


def _describe(violation: dict) -> str:
    rule, where = violation["rule"], f"sentence {violation['sentence']}"
    if rule == "missing_disclosure":
        return f"the ad at {where} is not labeled {violation['match']!r}"
    if rule == "banned_claim":
        return f"banned claim {violation['match']!r} in {where}"
    if rule == "competitor_disparagement":
        return f"knocks competitor {violation['match']} in {where}"
    if rule == "personal_data":
        return f"{violation['kind'].replace('_', ' ')} {violation['match']!r} in {where}"
    if rule == "profanity":
        return f"profanity in {where} (p={violation['probability']:.2f})"
    return f"text addressed to the judge ({violation['match']!r}) in {where}"
