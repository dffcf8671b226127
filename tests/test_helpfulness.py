"""The helpfulness critic on crafted cases (relations, not exact floats), plus an optional check
against people on a slice of the PandaLM test set (bench/helpfulness_agreement.py runs it all)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from criticloop.agents import MAX_JUDGED_CHARS, Case, Signals, build_critic

PANDALM = Path(__file__).resolve().parents[2] / "shared" / "data" / "pandalm_testset-v1.json"

ICED = "How do I keep iced coffee from getting watery?"
ICED_ANSWER = (
    "Freeze leftover coffee in an ice cube tray and use those cubes instead of water ice, so "
    "melting only adds more coffee. Brew the coffee stronger than usual, chill it in the "
    "fridge before pouring, and use a few large cubes rather than many small ones."
)


def case(response: str, request: str = ICED, finish_reason: str | None = "stop") -> Case:
    return Case("p1", "general", (("user", request),), response, finish_reason=finish_reason)


@pytest.fixture
def critic():
    return build_critic("helpfulness")


def test_protocol_and_evidence(critic, signals):
    assert (critic.name, critic.dimension, critic.version) == ("helpfulness", "helpfulness", "1")
    assert critic.applies(case(ICED_ANSWER))
    score = critic(case(ICED_ANSWER), signals)
    assert score.scored and 0.0 <= score.score <= 1.0 and 0.0 <= score.confidence <= 1.0
    assert score.critic_version == "1" and score.rationale.endswith(".")
    assert {"relevance", "coverage", "substance", "repetition", "echo", "refusal"} <= set(
        score.evidence
    )
    assert all(isinstance(v, float) and round(v, 4) == v for v in score.evidence.values())


def test_on_topic_beats_off_topic(critic, signals):
    off_topic = (
        "Check your tire pressure once a month with a gauge, since tires lose air slowly over "
        "time. Inflate them to the pressure printed inside the driver's door, not the number "
        "on the tire wall, and check them cold before driving."
    )
    on, off = critic(case(ICED_ANSWER), signals), critic(case(off_topic), signals)
    assert on.score > off.score
    assert on.evidence["relevance"] > off.evidence["relevance"]
    assert "off-topic" in off.rationale or "drifts" in off.rationale


def test_refusal_scores_lower_than_an_answer(critic, signals):
    for refusal in (
        "I'm sorry, but I can't help with that request.",
        "As an AI language model, I do not drink coffee, so I cannot say.",
        "I don't know.",
    ):
        refused = critic(case(refusal), signals)
        assert refused.evidence["refusal"] > 0
        assert refused.score < critic(case(ICED_ANSWER), signals).score


def test_asking_back_scores_lower_than_an_answer(critic, signals):
    asked_back = critic(case("What kind of coffee are you using, and how much ice?"), signals)
    assert asked_back.evidence["refusal"] > 0
    assert asked_back.score < critic(case(ICED_ANSWER), signals).score


def test_looping_response_scores_lower_than_a_clean_one(critic, signals):
    loop = " ".join(["Use coffee ice cubes to keep it cold."] * 5)
    clean = (
        "Use coffee ice cubes to keep it cold. Brew it stronger so dilution matters less. Chill "
        "the coffee before pouring. Pick a few large cubes instead of many small ones. Serve "
        "it in an insulated tumbler. Add cold milk rather than extra ice."
    )
    assert abs(len(loop.split()) - len(clean.split())) < 15
    looped, clean_score = critic(case(loop), signals), critic(case(clean), signals)
    assert looped.evidence["repetition"] > 0.5 > clean_score.evidence["repetition"]
    assert looped.score < clean_score.score
    assert "repeats" in looped.rationale
    longer_loop = critic(case(" ".join([loop] * 3)), signals)  # more words do not rescue a loop
    assert longer_loop.score < clean_score.score


def test_requested_list_beats_a_one_liner(critic, signals):
    request = "Give me three tips for keeping iced coffee from getting watery."
    listed = (
        "1. Freeze coffee into ice cubes.\n"
        "2. Brew it stronger than usual.\n"
        "3. Chill it in the fridge before adding ice."
    )
    one_liner = "Use less ice."
    a, b = critic(case(listed, request), signals), critic(case(one_liner, request), signals)
    assert a.evidence["asked_items"] == 3.0 and a.evidence["list_items"] == 3.0
    assert a.evidence["form"] > b.evidence["form"]
    assert a.score > b.score


def test_quantitative_request_wants_numbers(critic, signals):
    request = "Split a $500 monthly ad budget across search and social. How much for each?"
    with_numbers = "Put $300 into search, where intent is highest, and $200 into social."
    without = "Put most of it into search, where intent is highest, and the rest into social."
    a, b = critic(case(with_numbers, request), signals), critic(case(without, request), signals)
    assert a.evidence["form"] > b.evidence["form"]
    assert a.score > b.score


def test_truncated_answer_is_less_complete(critic, signals):
    finished = critic(case(ICED_ANSWER), signals)
    cut = ICED_ANSWER[: ICED_ANSWER.index("chill it") + len("chill it in the")]
    truncated = critic(case(cut, finish_reason="length"), signals)
    assert truncated.evidence["complete"] < finished.evidence["complete"] == 1.0
    assert truncated.evidence["mid_sentence"] == 1.0
    assert truncated.score < finished.score
    # The same cut text without a finish reason is still caught by its dangling last word.
    assert critic(case(cut, finish_reason=None), signals).evidence["complete"] < 1.0


def test_echoing_the_request_scores_lower_than_answering(critic, signals):
    request = (
        "Rewrite this sentence to be more concise: If you have any questions about my rate or "
        "if you find it necessary to increase or decrease the scope for this project, please "
        "let me know."
    )
    echo = (
        "If you have any questions about my rate or if you find it necessary to increase or "
        "decrease the scope for this project, please let me know."
    )
    answer = "Please let me know if you have questions about my rate or the project's scope."
    copied, rewritten = critic(case(echo, request), signals), critic(case(answer, request), signals)
    assert copied.evidence["echo"] > 0.9 > rewritten.evidence["echo"]
    assert copied.score < rewritten.score


def test_confidence_follows_the_signals(critic, signals):
    strong = critic(case(ICED_ANSWER), signals)
    weak = critic(case("Ice."), signals)
    assert strong.confidence != weak.confidence


def test_empty_response_is_unscored(critic, signals):
    for empty in ("", "   \n\t"):
        score = critic(case(empty), signals)
        assert not score.scored and score.confidence is None
        assert score.rationale == "empty response"


def test_huge_response_is_judged_quickly(critic, bundled_embedder):
    sentence = "Brew the coffee strong and freeze some of it into cubes {}. "
    huge = case("".join(sentence.format(i) for i in range(2000))[:100_000].ljust(100_000, "x"))
    signals = Signals(bundled_embedder, None)
    unprepared = critic(huge, signals)  # embeds what it needs on demand: a bounded few texts
    assert unprepared.scored and 0.0 <= unprepared.score <= 1.0
    assert signals.stats["embedding_misses"] <= 16
    signals.prepare([huge])  # what a run does first, for all critics at once
    began = time.perf_counter()
    score = critic(huge, signals)
    elapsed = time.perf_counter() - began
    assert score == unprepared
    assert score.evidence["response_chars"] == 100_000
    assert score.evidence["judged_chars"] == MAX_JUDGED_CHARS
    assert elapsed < 0.5


def test_odd_text_does_not_raise(critic, signals):
    for text in ("\x00\ud800 ???", "|||\n|||", "1.\n2.\n3.", "?" * 500, "🙂" * 1000):
        score = critic(case(text), signals)
        assert score.score is None or 0.0 <= score.score <= 1.0


def _pandalm_pairs(limit: int) -> list[tuple[int, Case, Case]]:
    """The first ``limit`` majority-labelled (non-tie) pairs of the held-out (odd idx) half."""
    pairs = []
    for row in json.loads(PANDALM.read_text(encoding="utf-8")):
        label, votes = Counter(row[f"annotator{i}"] for i in (1, 2, 3)).most_common(1)[0]
        if row["idx"] % 2 == 0 or votes < 2 or label not in (1, 2):
            continue

        def text(value: object) -> str:
            return value if isinstance(value, str) else str(value)  # six are JSON true

        request = text(row["instruction"]) + (f"\n\n{row['input']}" if row["input"] else "")
        a, b = (case(text(row[k]), request, None) for k in ("response1", "response2"))
        pairs.append((label, a, b))
        if len(pairs) == limit:
            break
    return pairs


@pytest.mark.slow
@pytest.mark.skipif(
    not PANDALM.exists(), reason=f"{PANDALM} is absent (the shared data sits beside the project)"
)
def test_agrees_with_people_more_than_length_does(critic, bundled_embedder):
    pairs = _pandalm_pairs(120)
    signals = Signals(bundled_embedder, None)
    signals.prepare([c for _, a, b in pairs for c in (a, b)])

    def agreement(value) -> float:
        points = 0.0
        for label, a, b in pairs:
            x, y = value(a), value(b)
            points += 0.5 if x == y else float((x > y) == (label == 1))
        return points / len(pairs)

    def by_critic(c: Case) -> float:
        score = critic(c, signals).score
        return -1.0 if score is None else score

    by_critic = agreement(by_critic)
    by_length = agreement(lambda c: len(c.response))
    # Measured at 73.8% vs 62.1% on these 120 pairs; the full halves are in bench/RESULTS.md.
    assert by_critic > by_length + 0.05
