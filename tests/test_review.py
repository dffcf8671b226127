"""The review queue without the app: leases, verdicts, resuming and rewinding graph threads,
several reviewers per case, agreement, and the migration that made room for them."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from criticloop.errors import NotFoundError
from criticloop.graphs.review import ReviewDesk
from criticloop.graphs.run import waiting_for_review, open_checkpointer, thread_config
from criticloop.store import CaseFilter, Store, critic_agreement, reviewer_agreement

pytestmark = pytest.mark.slow  # the queue comes from a real graph run (review_template)


def _thread(settings, case_id: str):
    """The LangGraph thread of a case, as its checkpoints have it."""
    from criticloop.agents import Sampling
    from criticloop.graphs.feedback import ThreadStores, build_feedback_graph
    from criticloop.graphs.run import make_resources
    from criticloop.reward import Profiles

    run_id, prompt_id = case_id.split("/", 1)
    checkpointer = open_checkpointer(settings)
    resources = make_resources(
        settings, ThreadStores(settings.db_path), Profiles.load(), Sampling(8, 0.0, 1.0, 0), 2
    )
    graph = build_feedback_graph(resources, checkpointer)
    snapshot = graph.get_state(thread_config(run_id, prompt_id))
    checkpointer.conn.close()
    return snapshot


def test_a_verdict_resumes_the_thread_which_makes_a_human_pair(review_home):
    desk = ReviewDesk(review_home, "ana")
    case = desk.next_case()
    assert case is not None and case.decision["status"] == "waiting"
    assert waiting_for_review(_thread(review_home, case.id))
    critiques_before = desk.store.db["critiques"].count

    assert desk.verdict(case.id, "b", comment="B shows its working") is True
    outcomes = desk.settle(case.id)
    desk.close()

    assert outcomes[0]["outcome"] == "human" and outcomes[0]["reason"] == "ana chose B"
    with Store.open(review_home.db_path) as store:
        pair = store.db["pairs"].get(outcomes[0]["pair_id"])
        decision = store.get_decision(*case.id.split("/", 1))
        (review,) = store.case_reviews(case.id)
        assert store.db["critiques"].count == critiques_before  # beside the critics, not over
        assert store.db["leases"].count == 0
    assert pair["source"] == "human"
    assert pair["chosen_generation_id"] == case.b.id and pair["chosen"] == case.b.text
    assert decision["status"] == "done" and decision["pair_id"] == pair["id"]
    assert review["preference"] == "b" and review["comment"] == "B shows its working"
    snapshot = _thread(review_home, case.id)
    assert not waiting_for_review(snapshot) and snapshot.values["outcome"]["pair_id"] == pair["id"]


def test_a_rewrite_becomes_chosen_as_human_revision(review_home):
    desk = ReviewDesk(review_home, "ana")
    case = desk.next_case()
    better = "Rest your eyes every 20 minutes and light the page evenly. Sponsored: Lumen."
    desk.verdict(case.id, "a", rewrite=better)
    (outcome,) = desk.settle(case.id)
    desk.close()
    with Store.open(review_home.db_path) as store:
        pairs = [store.db["pairs"].get(p) for p in outcome["pairs"]]
    sources = sorted(p["source"] for p in pairs)
    assert sources == ["human", "human-revision", "human-revision"]
    revisions = [p for p in pairs if p["source"] == "human-revision"]
    assert {p["chosen"] for p in revisions} == {better}
    assert {p["rejected"] for p in revisions} == {case.a.text, case.b.text}


def test_a_tie_with_ratings_apart_makes_the_pair_the_ratings_prefer(review_home):
    desk = ReviewDesk(review_home, "ana")
    case = desk.next_case()
    desk.annotate(case, "a", stars=2)
    desk.annotate(case, "b", stars=5)
    desk.verdict(case.id, "tie")
    (outcome,) = desk.settle(case.id)
    desk.close()
    assert outcome["reason"] == "ana chose a tie; ratings prefer B (ana)"
    with Store.open(review_home.db_path) as store:
        pair = store.db["pairs"].get(outcome["pair_id"])
    assert pair["source"] == "human" and pair["chosen_generation_id"] == case.b.id


def test_undo_deletes_the_pair_and_rewinds_the_thread_to_its_interrupt(review_home):
    desk = ReviewDesk(review_home, "ana")
    case = desk.next_case()
    desk.verdict(case.id, "a")
    desk.settle(case.id)
    assert not waiting_for_review(_thread(review_home, case.id))

    assert desk.undo(case.id) is True
    assert waiting_for_review(_thread(review_home, case.id))
    with Store.open(review_home.db_path) as store:
        decision = store.get_decision(*case.id.split("/", 1))
        assert decision["status"] == "waiting" and decision["outcome"] == "escalated"
        assert decision["reason"] == case.decision["reason"]  # the escalation's own, again
        assert store.db["pairs"].count_where("source = 'human'") == 0
        assert store.case_reviews(case.id) == []

    again = desk.next_case(only=case.id)
    assert again is not None and again.id == case.id
    desk.verdict(case.id, "b")
    (outcome,) = desk.settle(case.id)
    desk.close()
    with Store.open(review_home.db_path) as store:
        (pair,) = list(store.db["pairs"].rows_where("source = 'human'"))
    assert pair["id"] == outcome["pair_id"] and pair["chosen_generation_id"] == case.b.id


def test_a_verdict_whose_resume_never_ran_is_settled_later(review_home):
    """The app was killed between recording the verdict and resuming the thread."""
    desk = ReviewDesk(review_home, "ana")
    case = desk.next_case()
    desk.verdict(case.id, "a")
    desk.close()  # no settle: the process "died"

    later = ReviewDesk(review_home, "bo")
    outcomes = later.settle()
    assert [o["case"] for o in outcomes] == [case.id]
    assert later.settle() == []  # settled once, never twice
    later.close()
    with Store.open(review_home.db_path) as store:
        assert store.db["pairs"].count_where("source = 'human'") == 1


def test_two_desks_never_hold_the_same_case_and_a_dead_lease_expires(review_home):
    ana, bo = ReviewDesk(review_home, "ana"), ReviewDesk(review_home, "bo")
    held = [ana.next_case().id, bo.next_case().id]
    assert held[0] != held[1]
    assert ana.queue()["open"] == 3  # four waiting, one of them with bo
    assert bo.next_case(only=held[0]) is None

    # ana's app dies; once its lease runs out, the case is open to others again
    ana.store.db.execute(
        "UPDATE leases SET expires_at = '2000-01-01' WHERE holder = ?", [ana.holder]
    )
    ana.store.db.conn.commit()
    assert bo.next_case(only=held[0]).id == held[0]
    ana.close()
    bo.close()


def test_n_reviews_per_case_and_agreement(review_home):
    settings = review_home.model_copy(
        update={"review": review_home.review.model_copy(update={"reviews_per_item": 2})}
    )
    ana, bo = ReviewDesk(settings, "ana"), ReviewDesk(settings, "bo")
    first = ana.next_case()
    assert ana.verdict(first.id, "a") is False  # one of two verdicts: still waiting
    assert ana.settle(first.id) == []
    assert ana.next_case(only=first.id) is None  # ana has decided it
    assert bo.next_case(only=first.id).id == first.id  # bo gets it as the second reviewer
    assert bo.verdict(first.id, "a") is True
    (agreed,) = bo.settle(first.id)
    assert agreed["reason"] == "ana chose A; bo chose A: majority A" and agreed["pair_id"]

    second = ana.next_case()
    ana.verdict(second.id, "a")
    bo.next_case(only=second.id)
    bo.verdict(second.id, "b")
    (split,) = bo.settle(second.id)
    assert split["pair_id"] is None and "no majority" in split["reason"]

    people = ana.stats()["people"]
    assert (people["cases"], people["pairs"], people["agree"]) == (2, 2, 1)
    assert people["rate"] == 0.5
    ana.close()
    bo.close()


def test_filters_and_full_text_search(review_home):
    desk = ReviewDesk(review_home, "ana")
    case = desk.next_case(CaseFilter(search="France"))
    assert case.prompt["id"] == "capital"
    assert desk.next_case(CaseFilter(search="132")).prompt["id"] == "sums"  # candidate text
    assert desk.next_case(CaseFilter(brand="lumen")).prompt["id"] == "read"
    assert desk.next_case(CaseFilter(task_type="creative")) is None
    assert desk.next_case(CaseFilter(search='"unbalanced (quote')) is None  # not an FTS error
    summary = desk.queue(CaseFilter(task_type="general"))
    assert summary["waiting"] == 4 and summary["matching"] == 3
    desk.close()


def test_deciding_a_closed_case_is_a_clear_error(review_home):
    desk = ReviewDesk(review_home, "ana")
    case = desk.next_case()
    desk.verdict(case.id, "tie")
    (outcome,) = desk.settle(case.id)
    assert outcome["pair_id"] is None and outcome["reason"] == "ana chose a tie"
    with pytest.raises(NotFoundError, match="not waiting"):
        desk.verdict(case.id, "a")
    desk.close()


def test_graph_decide_uses_the_same_path(review_home, tmp_path):
    with Store.open(review_home.db_path) as store:
        case = store.waiting_decisions()[0]
    rewrite = tmp_path / "better.txt"
    rewrite.write_text("A clearer, corrected answer.")
    result = run_cli(
        "graph", "decide", case["run_id"], case["prompt_id"], "--prefer", "b",
        "--rewrite", str(rewrite), "--reviewer", "cli", "--json", check=True,
    )  # fmt: skip
    outcome = json.loads(result.stdout)
    assert outcome["outcome"] == "human" and outcome["reason"] == "cli rewrote B"
    assert len(outcome["pairs"]) == 3


def test_agreement_arithmetic():
    a, b = "g-a", "g-b"
    rewards = {
        a: {"total": 0.7, "vector": {"helpfulness": 0.9, "coherence": 0.5}, "vetoes": []},
        b: {"total": 0.6, "vector": {"helpfulness": 0.4, "coherence": 0.5}, "vetoes": []},
    }
    verdicts = [
        {
            "decision_id": "d1",
            "reviewer": "x",
            "preference": "a",
            "a": a,
            "b": b,
            "rewards": rewards,
        },
        {
            "decision_id": "d2",
            "reviewer": "x",
            "preference": "b",
            "a": a,
            "b": b,
            "rewards": rewards,
        },
        {
            "decision_id": "d3",
            "reviewer": "x",
            "preference": "tie",
            "a": a,
            "b": b,
            "rewards": rewards,
        },
    ]
    critics = critic_agreement(verdicts)
    assert critics["overall"] == {
        "agree": 1, "n": 2, "rate": 0.5, "no_preference": 0, "human_tie": 1
    }  # fmt: skip
    assert critics["helpfulness"]["n"] == 2 and critics["coherence"]["no_preference"] == 2
    # Fleiss' kappa: two raters always agreeing on varied items is 1; always splitting is < 0
    same = [
        {"decision_id": f"d{i}", "reviewer": r, "preference": p}
        for i, p in enumerate("abab")
        for r in ("x", "y")
    ]
    assert reviewer_agreement(same)["kappa"] == 1.0
    split = [
        {"decision_id": f"d{i}", "reviewer": r, "preference": p}
        for i in range(4)
        for r, p in (("x", "a"), ("y", "b"))
    ]
    assert reviewer_agreement(split)["kappa"] == -1.0 and reviewer_agreement(split)["rate"] == 0
    # three raters, worked by hand: P-bar = 2/3, P_e = (5^2 + 3^2 + 4^2) / 12^2, kappa = 23/47
    by_hand = [
        {"decision_id": f"d{i}", "reviewer": f"r{j}", "preference": p}
        for i, votes in enumerate(("aaa", "aab", ("b", "b", "tie"), ("tie",) * 3))
        for j, p in enumerate(votes)
    ]
    assert reviewer_agreement(by_hand)["kappa"] == round(23 / 47, 4)


def _decide_in_a_child(home, case_id, reviewer, preference, start, results):
    """`graph decide` in a forked process: a verdict, then settling the case."""
    import os

    from criticloop.errors import CriticloopError
    from criticloop.settings import Settings

    os.environ["CRITICLOOP_HOME"] = str(home)
    settings = Settings.load(env_file=None)
    start.wait()
    try:
        desk = ReviewDesk(settings, reviewer)
        try:
            if desk.verdict(case_id, preference):
                desk.settle(case_id)
        finally:
            desk.close()
        results.put((reviewer, preference, "decided"))
    except CriticloopError as exc:
        results.put((reviewer, preference, f"refused: {exc}"))


def test_two_processes_deciding_one_case_at_once_never_leave_contradictory_pairs(review_home):
    """20 races of two real processes on one case: the same reviewer choosing A in one and B
    in the other (10), and two reviewers choosing differently (10). One verdict wins each
    round, the other is refused; the case holds exactly the pair of the verdict on record."""
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    with Store.open(review_home.db_path) as store:
        case = store.waiting_decisions()[0]
    case_id, a, b = case["id"], case["chosen_generation_id"], case["rejected_generation_id"]
    for race in range(20):
        rivals = [("ana", "a"), ("ana", "b")] if race < 10 else [("ana", "a"), ("bo", "b")]
        start, results = fork.Barrier(2), fork.Queue()
        children = [
            fork.Process(
                target=_decide_in_a_child,
                args=(review_home.home, case_id, reviewer, preference, start, results),
            )
            for reviewer, preference in rivals
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(120)
            assert child.exitcode == 0
        outcomes = sorted(results.get(timeout=5) for _ in children)
        decided = [o for o in outcomes if o[2] == "decided"]
        refused = [o for o in outcomes if o[2].startswith("refused")]
        assert len(decided) == 1 and len(refused) == 1, outcomes
        winner, preference, _ = decided[0]
        with Store.open(review_home.db_path) as store:
            decision = store.db["decisions"].get(case_id)
            (verdict,) = store.verdicts(case_id)
            human = list(
                store.db["pairs"].rows_where(
                    "run_id = ? AND prompt_id = ? AND source = 'human'",
                    [case["run_id"], case["prompt_id"]],
                )
            )
        assert decision["status"] == "done" and decision["outcome"] == "human"
        assert (verdict["reviewer"], verdict["preference"]) == (winner, preference)
        (pair,) = human  # one pair, in the direction of the verdict on record
        assert pair["chosen_generation_id"] == (a if preference == "a" else b)
        assert decision["pair_id"] == pair["id"]
        undo = ReviewDesk(review_home, winner)  # reopen for the next round
        assert undo.undo(case_id) is True
        undo.close()
