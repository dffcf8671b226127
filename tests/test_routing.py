"""Rewards and routing: pure functions, no models."""

from __future__ import annotations

import pytest
from criticloop.graphs.routing import decide, route_after_judging
from criticloop.reward import Comparison, Reward, Routing, aggregate, compare

WEIGHTS = {"helpfulness": 0.5, "coherence": 0.3, "compliance": 0.2}
ROUTING = Routing(pair_margin=0.05, min_confidence=0.3, max_disagreement=0.4, good_enough=0.45)


def _score(score, confidence=0.8, veto=False, rules=()):
    evidence = {"violations": [{"rule": r} for r in rules]} if rules else {}
    return {"score": score, "confidence": confidence, "veto": veto, "evidence": evidence}


def _reward(cid, helpfulness, coherence, compliance=1.0, confidence=0.8, veto_rules=()):
    scores = {
        "helpfulness": _score(helpfulness, confidence),
        "coherence": _score(coherence, confidence),
        "compliance": _score(
            0.0 if veto_rules else compliance, confidence, bool(veto_rules), veto_rules
        ),
    }
    return aggregate(cid, scores, WEIGHTS)


def test_weighted_mean_keeps_the_vector():
    reward = _reward("a", 0.8, 0.6)
    assert reward.total == pytest.approx((0.5 * 0.8 + 0.3 * 0.6 + 0.2 * 1.0) / 1.0)
    assert reward.vector == {"helpfulness": 0.8, "coherence": 0.6, "compliance": 1.0}
    assert reward.usable and not reward.vetoed


def test_unscored_critics_drop_out_of_the_mean():
    scores = {
        "helpfulness": _score(0.9),
        "coherence": {"score": None, "confidence": None, "evidence": {}},
    }
    reward = aggregate("a", scores, WEIGHTS)
    assert reward.total == pytest.approx(0.9)
    assert reward.unscored == ("coherence",)
    assert aggregate("b", {}, WEIGHTS).total is None


def test_a_veto_zeroes_the_reward_and_names_the_rule():
    reward = _reward("a", 0.99, 0.99, veto_rules=("banned_claim", "missing_disclosure"))
    assert reward.total == 0.0 and not reward.usable
    assert reward.vetoes == ("banned_claim", "missing_disclosure")


def test_compare_margin_pareto_and_disagreement():
    better, worse = _reward("a", 0.9, 0.8), _reward("b", 0.5, 0.7)
    c = compare(better, worse, WEIGHTS)
    assert c.margin > 0.1 and c.pareto and c.disagreement == 0
    mixed = compare(_reward("a", 0.9, 0.2), _reward("b", 0.4, 0.9), WEIGHTS)
    assert mixed.margin > 0 and not mixed.pareto
    assert mixed.disagreement == pytest.approx(0.3)  # coherence (weight 0.3 of 1.0) prefers b


def test_clear_winner_makes_a_synthetic_pair():
    decision = decide([_reward("a", 0.9, 0.8), _reward("b", 0.4, 0.6)], WEIGHTS, ROUTING)
    assert decision.route == "pair" and decision.source == "synthetic"
    assert (decision.chosen, decision.rejected) == ("a", "b")
    assert decision.margin > ROUTING.pair_margin


def test_vetoed_candidate_is_the_rejected_one():
    rewards = [
        _reward("a", 0.95, 0.9, veto_rules=("banned_claim",)),
        _reward("b", 0.7, 0.7),
        _reward("c", 0.6, 0.6),
    ]
    decision = decide(rewards, WEIGHTS, ROUTING)
    assert decision.route == "pair"
    assert (decision.chosen, decision.rejected) == ("b", "a")
    assert "banned_claim" in decision.reason


@pytest.mark.parametrize(
    "a, b, why",
    [
        (_reward("a", 0.70, 0.70), _reward("b", 0.69, 0.71), "small margin"),
        (_reward("a", 0.9, 0.8, confidence=0.1), _reward("b", 0.4, 0.5), "low confidence"),
        (_reward("a", 1.0, 0.1), _reward("b", 0.3, 0.9), "critics disagree"),
    ],
)
def test_uncertain_cases_escalate(a, b, why):
    routing = ROUTING.model_copy(update={"max_disagreement": 0.25})
    decision = decide([a, b], WEIGHTS, routing)
    assert decision.route == "escalate"
    assert why in decision.reason
    assert 0 < decision.uncertainty <= 1


def test_unscored_escalates():
    a = aggregate(
        "a",
        {"helpfulness": _score(0.9), "coherence": _score(0.9), "compliance": _score(1.0)},
        WEIGHTS,
    )
    b = aggregate(
        "b",
        {
            "helpfulness": _score(0.3),
            "coherence": {"score": None, "confidence": None, "evidence": {}},
            "compliance": _score(1.0),
        },
        WEIGHTS,
    )
    decision = decide([a, b], WEIGHTS, ROUTING)
    assert decision.route == "escalate" and "unscored: coherence" in decision.reason


def test_order_dependent_judge_is_not_confident():
    def first_always_wins(x, y, weights):  # a fake pairwise judge with position bias
        return Comparison(margin=0.3, pareto=False, disagreement=0.0)

    decision = decide(
        [_reward("a", 0.9, 0.8), _reward("b", 0.4, 0.6)],
        WEIGHTS,
        ROUTING,
        comparator=first_always_wins,
    )
    assert decision.route == "escalate" and "flips when the order is swapped" in decision.reason


def test_nothing_good_enough_revises_then_drops():
    weak = [_reward("a", 0.3, 0.3, compliance=0.2), _reward("b", 0.2, 0.2, compliance=0.2)]
    first = decide(weak, WEIGHTS, ROUTING)
    assert first.route == "revise" and first.chosen == "a"
    assert decide(weak, WEIGHTS, ROUTING, revisions=1).route == "drop"
    all_vetoed = [
        _reward("a", 0.9, 0.9, veto_rules=("profanity",)),
        _reward("b", 0.8, 0.8, veto_rules=("pii",)),
    ]
    assert decide(all_vetoed, WEIGHTS, ROUTING).route == "revise"


def test_revision_becomes_chosen_only_if_it_scores_higher():
    original, better, worse = _reward("a", 0.3, 0.3), _reward("r", 0.8, 0.7), _reward("r", 0.2, 0.2)
    win = decide([original, better], WEIGHTS, ROUTING, revisions=1, revision=("r", "a"))
    assert win.route == "pair" and win.source == "revision"
    assert (win.chosen, win.rejected) == ("r", "a")
    lose = decide([original, worse], WEIGHTS, ROUTING, revisions=1, revision=("r", "a"))
    assert lose.route == "drop" and "did not score higher" in lose.reason
    vetoed = _reward("r", 0.99, 0.99, veto_rules=("banned_claim",))
    assert (
        decide([original, vetoed], WEIGHTS, ROUTING, revisions=1, revision=("r", "a")).route
        == "drop"
    )


def test_route_function_reads_the_decision():
    assert route_after_judging({"decision": {"route": "escalate"}}) == "escalate"


def test_reward_round_trips_through_json_state():
    reward = _reward("a", 0.8, 0.6, veto_rules=("pii",))
    assert Reward.from_dict(reward.as_dict()) == reward


def _rated(reviewer: str, candidate: str, stars: int | None = None, thumbs: str | None = None):
    return {"reviewer": reviewer, "candidate": candidate, "stars": stars, "thumbs": thumbs}


@pytest.mark.parametrize(
    "ratings, expected",
    [
        ([_rated("ana", "a", 5), _rated("ana", "b", 2)], ("a", ["ana"])),
        ([_rated("ana", "a", thumbs="down"), _rated("ana", "b", thumbs="up")], ("b", ["ana"])),
        ([_rated("ana", "a", 4), _rated("ana", "b", thumbs="down")], ("a", ["ana"])),
        ([_rated("ana", "a", 4), _rated("ana", "b", 3)], (None, [])),  # 3 is neither
        ([_rated("ana", "a", 5)], (None, [])),  # one candidate rated says nothing of the other
        (
            [_rated("ana", "a", 5), _rated("ana", "a", thumbs="down"), _rated("ana", "b", 1)],
            (None, []),
        ),
        (
            [
                _rated("ana", "a", 5),
                _rated("ana", "b", 1),
                _rated("bo", "a", 1),
                _rated("bo", "b", 5),
            ],
            (None, []),  # reviewers who disagree cancel out
        ),
        (
            [
                _rated("bo", "b", 4),
                _rated("bo", "a", 2),
                _rated("ana", "b", thumbs="up"),
                _rated("ana", "a", thumbs="down"),
                _rated("cy", "a", 3),
            ],
            ("b", ["ana", "bo"]),
        ),
    ],
)
def test_ratings_break_a_tie_by_the_seed_rule(ratings, expected):
    from criticloop.graphs.feedback import rating_preference
    from criticloop.settings import ReviewSettings

    assert rating_preference(ratings, ReviewSettings()) == expected


def test_rating_thresholds_follow_settings_and_must_leave_a_gap():
    from criticloop.graphs.feedback import rating_preference
    from criticloop.settings import ReviewSettings

    strict = ReviewSettings(rating_chosen_min=5, rating_rejected_max=1)
    assert rating_preference([_rated("ana", "a", 4), _rated("ana", "b", 1)], strict) == (None, [])
    with pytest.raises(ValueError, match="rating_rejected_max"):
        ReviewSettings(rating_chosen_min=3, rating_rejected_max=3)


def _unscored(cid: str) -> Reward:
    none = {"score": None, "confidence": None, "evidence": {}}
    return aggregate(cid, {name: none for name in WEIGHTS}, WEIGHTS)


def test_answers_nobody_could_score_are_judged_again_not_dropped():
    decision = decide([_unscored("a"), _unscored("b")], WEIGHTS, ROUTING)
    assert decision.route == "defer" and decision.chosen is None
    assert decision.reason == (
        "no candidate could be judged (unscored: coherence, compliance, helpfulness)"
    )
    # one vetoed, one unscored: the unscored one is not known to be bad
    vetoed = _reward("v", 0.9, 0.9, veto_rules=("banned_claim",))
    assert decide([vetoed, _unscored("b")], WEIGHTS, ROUTING).route == "defer"
    # every candidate scored and vetoed: that is a verdict, revise as before
    both_vetoed = [vetoed, _reward("w", 0.9, 0.9, veto_rules=("profanity",))]
    assert decide(both_vetoed, WEIGHTS, ROUTING).route == "revise"
    # a revision the judge could not score is not "no better": it is judged again
    original = _reward("o", 0.3, 0.3)
    later = decide([original, _unscored("r")], WEIGHTS, ROUTING, revisions=1, revision=("r", "o"))
    assert later.route == "defer" and later.reason.startswith("the revision could not be judged")
    assert route_after_judging({"decision": later.as_dict()}) == "defer"
