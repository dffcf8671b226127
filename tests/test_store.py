"""The store: migrations, natural keys, transactions, search, verbs."""

from __future__ import annotations

import sqlite3

import pytest
from criticloop.errors import InputError, NotFoundError, StoreError
from criticloop.store import (
    CritiqueRecord,
    GenerationRecord,
    PairRecord,
    ReviewRecord,
    Store,
    read_records,
)

TABLES = {
    "brands",
    "campaigns",
    "prompts",
    "generations",
    "critiques",
    "pairs",
    "reviews",
    "runs",
    "jobs",
    "adapters",
    "leases",
    "training_jobs",
    "gate_reports",
    "traces",
    "spans",
    "critic_calls",
    "feedback_outbox",
    "prompt_failures",
}
MIGRATIONS = [
    "m001_initial",
    "m002_decisions",
    "m003_review",
    "m004_training",
    "m005_traces",
    "m006_calibration",
    "m007_run_owner",
    "m008_prompt_failures",
    "m009_trained_reward_models",
    "m010_label_dimensions",
    "m011_feedback_logs",
    "m012_job_costs",
    "m013_log_revisions",
]


def test_migrations_create_every_table_in_wal_mode(store: Store):
    assert store.applied_migrations() == MIGRATIONS
    assert TABLES <= set(store.db.table_names())
    assert store.db.journal_mode == "wal"
    assert {"prompts_fts", "generations_fts"} <= set(store.db.table_names())


def test_reopening_applies_nothing_twice(settings, store: Store):
    store.close()
    with Store.open(settings.db_path) as again:
        assert again.applied_migrations() == MIGRATIONS
        rows = again.db.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0]
        assert rows == len(MIGRATIONS)


def test_opening_a_migrated_store_takes_no_write_lock(settings, store: Store):
    """A run opens a connection per thread that works on its prompts. With nothing to migrate,
    opening writes nothing and checks no foreign key (a scan of every such table): it goes
    ahead while another connection holds the write lock, instead of queueing behind it."""
    import threading

    store.close()
    writer = sqlite3.connect(settings.db_path)
    writer.execute("BEGIN IMMEDIATE")
    opened: list[Store] = []
    opener = threading.Thread(target=lambda: opened.append(Store.open(settings.db_path)))
    try:
        opener.start()
        opener.join(timeout=5)
        assert opened, "Store.open waited for the write lock"
    finally:
        writer.rollback()
        writer.close()
        opener.join()
        for again in opened:
            again.close()


def test_open_without_create_needs_a_database(settings):
    with pytest.raises(StoreError, match="criticloop init"):
        Store.open(settings.db_path, create=False)


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path):
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        Store.open(bogus)


def test_demo_import_is_idempotent(store: Store):
    from criticloop.store import DEMO_FILES

    records = [r for path in DEMO_FILES for r in read_records(path)]
    first = store.import_records(records)
    assert first.inserted == {"brand": 3, "campaign": 6, "prompt": 40}
    before = store.counts()
    second = store.import_records(records)
    assert second.inserted == {} and second.updated == {}
    assert second.unchanged == {"brand": 3, "campaign": 6, "prompt": 40}
    assert store.counts() == before


def test_demo_data_covers_every_task_type(demo_store: Store):
    from criticloop.store import TASK_TYPES

    seen = {p["task_type"] for p in demo_store.list_prompts()}
    assert seen == set(TASK_TYPES)
    persona = demo_store.list_prompts(task_types=["persona_chat"])
    assert persona and all(p["persona"] for p in persona)
    ads = demo_store.list_prompts(task_types=["ad_insertion"])
    assert all(p["campaign_id"] and p["brand_id"] for p in ads)  # brand inherited from campaign
    feedback = demo_store.list_prompts(task_types=["feedback_conversation"])
    assert all(len(p["messages"]) >= 3 for p in feedback)


def test_changed_record_updates_in_place(store: Store, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "q1", "prompt": "What is DPO?"}\n')
    store.import_records(read_records(path))
    path.write_text('{"id": "q1", "prompt": "What is DPO, briefly?"}\n')
    summary = store.import_records(read_records(path))
    assert summary.updated == {"prompt": 1}
    assert store.get_prompt("q1")["text"] == "What is DPO, briefly?"
    assert store.counts()["prompts"] == 1


def test_full_text_search_finds_prompts_and_generations(demo_store: Store):
    hits = demo_store.search_prompts("watery")
    assert any(h["id"] == "ad-001" for h in hits)
    demo_store.record_generations([_generation("ad-001", 0, text="Try coffee ice cubes tonight.")])
    assert [g["prompt_id"] for g in demo_store.search_generations("cubes")] == ["ad-001"]


def _generation(
    prompt_id: str, index: int, text: str = "an answer", config: str = "cfg"
) -> GenerationRecord:
    return GenerationRecord(
        prompt_id=prompt_id,
        config_hash=config,
        candidate_index=index,
        text=text,
        model="fake-model",
        sampling={"temperature": 0.8},
    )


def test_generations_have_natural_keys(demo_store: Store):
    records = [_generation("ad-001", i) for i in range(3)]
    assert demo_store.record_generations(records) == 3
    assert demo_store.record_generations(records) == 0
    assert demo_store.completed_candidates("ad-001", "cfg") == {0, 1, 2}
    assert demo_store.completed_candidates("ad-001", "other") == set()


def test_critiques_pairs_and_reviews(demo_store: Store):
    a, b = _generation("ad-001", 0, "A text"), _generation("ad-001", 1, "B text")
    demo_store.record_generations([a, b])
    critique = CritiqueRecord(
        generation_id=a.id,
        critic="coherence",
        score=0.7,
        confidence=0.9,
        rationale="fits",
        critic_version="1",
        backend="local",
        evidence={"nll": 2.1},
    )
    assert demo_store.record_critique(critique) is True
    assert demo_store.record_critique(critique) is False
    assert demo_store.critiques_for(a.id)[0]["evidence"] == {"nll": 2.1}
    unscored = CritiqueRecord(
        generation_id=b.id,
        critic="salience",
        score=None,
        confidence=None,
        rationale="no campaign attached",
        critic_version="1",
        backend="local",
    )
    assert demo_store.record_critique(unscored)

    pair = PairRecord(
        prompt_id="ad-001",
        chosen="A text",
        rejected="B text",
        source="synthetic",
        margin=0.3,
        chosen_generation_id=a.id,
        rejected_generation_id=b.id,
    )
    assert demo_store.record_pair(pair) is True
    assert demo_store.record_pair(pair) is False
    with pytest.raises(InputError):
        demo_store.record_pair(
            PairRecord(prompt_id="ad-001", chosen="x", rejected="y", source="vibes")
        )

    review = ReviewRecord(
        prompt_id="ad-001",
        reviewer="ana",
        kind="preference",
        generation_id=a.id,
        other_generation_id=b.id,
        preference="a",
    )
    assert demo_store.record_review(review) == "inserted"
    changed = ReviewRecord(
        prompt_id="ad-001",
        reviewer="ana",
        kind="preference",
        generation_id=a.id,
        other_generation_id=b.id,
        preference="tie",
    )
    assert demo_store.record_review(changed) == "updated"
    rows = list(demo_store.db["reviews"].rows)
    assert len(rows) == 1 and rows[0]["preference"] == "tie"
    stars = ReviewRecord(
        prompt_id="ad-001", reviewer="ana", kind="stars", generation_id=a.id, stars=6
    )
    with pytest.raises(sqlite3.IntegrityError):
        demo_store.record_review(stars)


def test_a_failed_transaction_writes_nothing(demo_store: Store):
    before = demo_store.counts()
    with pytest.raises(RuntimeError):
        with demo_store.transaction():
            demo_store.record_generations([_generation("ad-001", 0)])
            raise RuntimeError("crash mid-way")
    assert demo_store.counts() == before


def test_unknown_names_are_not_found(demo_store: Store):
    with pytest.raises(NotFoundError, match="unknown brand 'nope'"):
        demo_store.get_brand("nope")
    with pytest.raises(NotFoundError):
        demo_store.list_prompts(brand="nope")


def test_runs_left_running_by_a_dead_process_are_marked_failed(store: Store):
    run = store.start_run("generate", {"x": 1})
    store.db["runs"].update(run, {"pid": 2**22 + 12345})  # no such process
    store.start_run("generate", {"x": 2})
    assert store.get_run(run)["status"] == "failed"


def test_a_run_in_progress_is_refused_to_a_second_process_unless_its_pid_was_reused(
    store: Store,
):
    import os

    from criticloop.errors import BusyError
    from criticloop.store._common import process_started

    run = store.start_run("graph", {"x": 1})  # this process runs it
    with pytest.raises(BusyError, match=f"graph run {run} is still running"):
        store.claim_unfinished_run("graph")
    # The pid now names a process that started an hour after the run's: a reused pid.
    store.db["runs"].update(run, {"pid_started": process_started(os.getpid()) - 3600})
    claimed = store.claim_unfinished_run("graph")
    assert claimed["id"] == run and claimed["pid_started"] == process_started(os.getpid())
    store.finish_run(run, "done", {})
    assert store.claim_unfinished_run("graph") is None


def test_a_training_job_whose_pid_was_reused_is_failed_not_left_running(store: Store):
    import os

    from criticloop.store._common import process_started

    job = store.start_job(
        method="dpo", launcher="inprocess", base_model="m", parent_version=None, config={},
        data_hash="h", examples=1, output_dir="/tmp/x", log_path="/tmp/x.log",
    )  # fmt: skip
    assert store.fail_dead_jobs() == 0  # this process runs it
    store.db["training_jobs"].update(job, {"pid_started": process_started(os.getpid()) - 3600})
    assert store.fail_dead_jobs() == 1
    assert store.get_job(job)["status"] == "failed"


def test_a_database_from_before_the_review_app_migrates(hermetic):
    """m003 rebuilds the pairs table (a new pair source): every pair survives, the decision
    that points at one still does, and foreign keys hold."""
    from criticloop.store._migrations import migrations
    from sqlite_utils import Database

    hermetic.mkdir(parents=True, exist_ok=True)
    path = hermetic / "old.db"
    old = Database(path)
    migrations.apply(old, stop_before="m003_review")
    stamp = "2026-11-01T00:00:00.000+00:00"
    old["prompts"].insert(
        {"id": "p1", "task_type": "general", "messages": "[]", "text": "hi", "metadata": "{}",
         "source": "x", "content_hash": "h", "created_at": stamp, "updated_at": stamp}
    )  # fmt: skip
    old["runs"].insert(
        {"id": "r1", "kind": "graph", "status": "done", "config": "{}", "started_at": stamp}
    )
    old["pairs"].insert(
        {"id": "pr-1", "prompt_id": "p1", "chosen": "a", "rejected": "b", "source": "human",
         "run_id": "r1", "created_at": stamp}
    )  # fmt: skip
    old["decisions"].insert(
        {"id": "r1/p1", "run_id": "r1", "prompt_id": "p1", "config_hash": "c", "outcome": "human",
         "status": "done", "reason": "x", "pair_id": "pr-1", "rewards": "{}",
         "created_at": stamp, "updated_at": stamp}
    )  # fmt: skip
    old.close()

    with Store.open(path) as store:
        assert store.applied_migrations()[-1] == MIGRATIONS[-1]
        assert [p["id"] for p in store.db["pairs"].rows] == ["pr-1"]
        assert store.get_decision("r1", "p1")["pair_id"] == "pr-1"
        assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        store.record_pair(PairRecord("p1", "better", "a", "human-revision", run_id="r1"))
        assert store.db["pairs"].count == 2


def test_a_refused_run_names_the_holder_that_has_only_just_taken_the_lock(tmp_path):
    """The holder writes its line just after taking the lock; a run refused in between waits
    for the line instead of saying 'another process'."""
    import fcntl
    import os
    import threading

    from criticloop.errors import BusyError
    from criticloop.store._locks import run_lock

    fd = os.open(tmp_path / "graph-run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held, nothing written yet
        late = threading.Timer(0.2, os.pwrite, (fd, b"process 4242, started now", 0))
        late.start()
        with pytest.raises(BusyError, match=r"graph run is still running \(process 4242"):
            with run_lock(tmp_path / "criticloop.db", "graph"):
                pass
        late.join()
    finally:
        os.close(fd)
    with run_lock(tmp_path / "criticloop.db", "graph"):  # released: taken, its line written
        assert (tmp_path / "graph-run.lock").read_text().startswith(f"process {os.getpid()},")
