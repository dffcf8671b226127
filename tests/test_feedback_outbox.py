"""The outbox of people's decisions bound for LangSmith, in a real store: one row per review
kind with the body LangSmith gets, replacing a rating before it is sent drops the old row,
after it is sent queues a delete, and undoing a sent verdict queues its delete too."""

from __future__ import annotations

import json

import pytest
from criticloop.store import SUPPLIED, DecisionRecord, read_records


@pytest.fixture
def case(store, tmp_path):
    """One escalated case whose run was traced to LangSmith: (decision id, A's id, B's id)."""
    prompts = tmp_path / "prompts.jsonl"
    row = {"id": "q-1", "prompt": "How do I boil an egg?", "candidates": ["Simmer 9 min.", "Eggs."]}
    prompts.write_text(json.dumps(row) + "\n")
    store.import_records(read_records(prompts))
    run_id = store.start_run("graph", {"prompts": ["q-1"]})
    a, b = (g["id"] for g in store.generations_for("q-1"))
    store.record_decision(
        DecisionRecord(
            run_id=run_id,
            prompt_id="q-1",
            config_hash=SUPPLIED,
            outcome="escalated",
            status="waiting",
            reason="critics disagree",
            rewards={},
            chosen_generation_id=a,
            rejected_generation_id=b,
        )
    )
    store.start_trace("trace-1", run_id, "q-1", "start", langsmith_project="nightly")
    return f"{run_id}/q-1", a, b


def _outbox(store) -> list[dict]:
    rows = store.db.query("SELECT * FROM feedback_outbox ORDER BY created_at, id")
    return [{**r, "body": json.loads(r["body"])} for r in rows]


def _created(store, key: str) -> list[dict]:
    return [r for r in _outbox(store) if r["key"] == key and r["op"] == "create"]


def test_each_kind_becomes_its_feedback_key_with_score_and_candidate(store, case):
    decision, a, b = case
    store.annotate(decision, "ana", a, stars=5)
    store.annotate(decision, "ana", b, thumbs="down")
    store.annotate(decision, "ana", a, comment="needs the disclosure label")
    store.record_verdict(decision, "ana", "b", rewrite="Simmer nine minutes, then cool. Ad: EggCo.")

    (stars,) = _created(store, "human_stars")
    (thumbs,) = _created(store, "human_thumbs")
    (comment,) = _created(store, "human_comment")
    (rewrite,) = _created(store, "human_rewrite")
    assert {r["trace_id"] for r in _outbox(store)} == {"trace-1"}
    assert stars["body"]["score"] == 5 and stars["body"]["value"] == "A"
    assert thumbs["body"]["score"] == 0.0 and thumbs["body"]["value"] == "B"
    assert comment["body"]["comment"] == "needs the disclosure label"
    assert comment["body"]["value"] == "A" and "score" not in comment["body"]
    assert rewrite["body"]["value"] == "b" and rewrite["body"]["score"] == 0.0
    assert rewrite["body"]["correction"] == {"output": "Simmer nine minutes, then cool. Ad: EggCo."}
    assert rewrite["body"]["source_info"]["reviewer"] == "ana"
    assert all(r["status"] == "pending" for r in _outbox(store))


def test_a_rerating_replaces_unsent_feedback_and_deletes_sent_feedback(store, case):
    decision, a, _ = case
    store.annotate(decision, "ana", a, stars=5)
    store.annotate(decision, "ana", a, stars=4)  # not sent yet: the 5 never leaves
    (first,) = _outbox(store)
    assert first["body"]["score"] == 4

    store.mark_feedback(first["id"])  # sent to LangSmith
    store.annotate(decision, "ana", a, stars=2)
    rows = _outbox(store)
    (delete,) = [r for r in rows if r["op"] == "delete"]
    assert delete["body"] == {"id": first["id"]} and delete["status"] == "pending"
    (latest,) = [r for r in _created(store, "human_stars") if r["status"] == "pending"]
    assert latest["body"]["score"] == 2

    store.annotate(decision, "ana", a, stars=1)  # the sent one is deleted once, not again
    assert sum(r["op"] == "delete" for r in _outbox(store)) == 1


def test_undoing_a_sent_verdict_queues_its_delete(store, case):
    decision, _, _ = case
    store.record_verdict(decision, "ana", "a")
    (verdict,) = _created(store, "human_preference")
    assert verdict["body"]["score"] == 1.0 and verdict["body"]["value"] == "a"
    store.mark_feedback(verdict["id"])

    store.withdraw_verdict(decision, "ana")
    (delete,) = [r for r in _outbox(store) if r["op"] == "delete"]
    assert delete["body"] == {"id": verdict["id"]} and delete["key"] == "human_preference"
    assert [r["id"] for r in store.pending_feedback()] == [delete["id"]]


def test_a_run_not_traced_to_langsmith_queues_nothing(store, case):
    decision, a, _ = case
    store.db.execute("UPDATE traces SET langsmith_project = NULL")
    store.annotate(decision, "ana", a, stars=5)
    store.record_verdict(decision, "ana", "tie")
    assert _outbox(store) == []
