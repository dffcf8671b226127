"""Production feedback logs (`criticloop feedback import`): conversations rated on assistant turns
and the seed systems' flat feedback rows become prompts, answers and reviews with source `log`;
bad lines are refused as file:line with nothing written; quirks of real logs are skipped and
counted; importing again changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from criticloop.errors import InputError
from criticloop.settings import Settings
from criticloop.store import DEMO_FEEDBACK, PairRecord, Store, read_feedback_log

SYSTEM = {"role": "system", "content": "Be brief."}
Q1 = {"role": "user", "content": "How do I descale a kettle?"}
A1 = {"role": "assistant", "content": "Boil equal parts vinegar and water, then rinse twice."}
Q2 = {"role": "user", "content": "And without vinegar?"}
A2 = {"role": "assistant", "content": "Citric acid works: one tablespoon per litre."}

CONVERSATIONS = [
    # thumbs and stars on one turn, with the log's user and time
    {
        "id": "c1",
        "user_id": "u1",
        "created_at": "2026-11-20T10:00:00Z",
        "messages": [SYSTEM, Q1, A1],
        "ratings": [{"turn": 2, "thumbs": "up", "stars": 5}],
    },
    # multi-turn: a label on the first answer (inline), a label and a comment on the second
    {
        "user_id": "u2",
        "messages": [
            Q1,
            {**A1, "rating": {"label": "UR5"}},
            Q2,
            {**A2, "rating": {"label": "ur2", "comment": "Wrong amount."}},
        ],
    },
    # a comment alone, anonymous; stars with a rating's own user
    {
        "messages": [Q1, A1],
        "ratings": [
            {"turn": 1, "comment": "Smelled for days."},
            {"turn": 1, "stars": 2, "user_id": "u3"},
        ],
    },
]

FLAT_ROWS = [
    {
        "id": 1,
        "prompt": "Allocate $2.5M across Amazon, Walmart, Target",
        "model_output": "Amazon 48%, Walmart 32%, Target 20%",
        "feedback_type": "thumbs_up",
        "rating": 4,
        "comment": "good split",
        "user_id": "mgr-7",
        "brand_id": None,
        "task_type": "budgeting",
        "created_at": "2025-01-17T09:00:00",
    },
    {
        "prompt": "Allocate $2.5M across Amazon, Walmart, Target",
        "model_output": "Put it all on Target.",
        "feedback_type": "thumbs_down",
        "rating": None,
        "comment": "",
        "user_id": "mgr-7",
        "task_type": "budgeting",
    },
    {
        "prompt": "Write a tagline",
        "model_output": "Made to last.",
        "feedback_type": "rating",
        "rating": 3,
        "task_type": "creative",
    },
]


def _jsonl(path: Path, rows: list) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _log_reviews(store: Store) -> list[dict]:
    return list(store.db.query("SELECT * FROM reviews WHERE source = 'log' ORDER BY rowid"))


def _tables(store: Store) -> dict[str, list]:
    return {
        t: list(store.db.query(f"SELECT * FROM {t} ORDER BY id"))
        for t in ("prompts", "generations", "reviews")
    }


def test_a_log_with_mixed_ratings_imports_as_reviews_with_source_log(store, tmp_path):
    path = _jsonl(tmp_path / "prod.jsonl", CONVERSATIONS)
    log = read_feedback_log(path)
    assert (log.rows, log.shapes, log.ratings, log.skipped) == (
        3,
        {"conversation": 3, "flat": 0},
        5,
        {},
    )
    summary = store.import_feedback(log, "prod")
    # prompts: [Q1] with and without the system turn, and [Q1, A1, Q2]
    assert summary["prompts"] == {"inserted": 3, "updated": 0, "unchanged": 0}
    assert summary["answers"] == {"inserted": 3, "updated": 0, "unchanged": 0}  # A1 twice
    assert summary["reviews"] == {"inserted": 7, "updated": 0, "unchanged": 0}
    assert summary["thumbs"] == {"up": 2, "down": 1, "from_labels": 2}
    assert summary["stars"] == {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1}
    assert summary["comments"] == 2

    rows = _log_reviews(store)
    assert len(rows) == 7 and {r["dataset"] for r in rows} == {"prod"}
    by = {(r["reviewer"], r["kind"], r["thumbs"] or r["stars"] or r["comment"]): r for r in rows}
    up = by[("log:u1", "thumbs", "up")]
    assert up["logged_at"] == "2026-11-20T10:00:00Z" and up["label"] is None
    answer = store.get_generation(up["generation_id"])
    assert answer["text"] == A1["content"] and answer["model"] == "log"
    prompt = store.get_prompt(up["prompt_id"])
    assert prompt["messages"] == [SYSTEM, Q1] and prompt["id"].startswith("log-")
    assert prompt["source"] == "log:prod"
    down = by[("log:u2", "thumbs", "down")]
    assert down["label"] == "ur2" and down["comment"] == "Wrong amount."
    second = store.get_prompt(down["prompt_id"])
    assert second["messages"] == [Q1, A1, Q2]
    assert store.get_generation(down["generation_id"])["text"] == A2["content"]
    assert by[("log:u2", "comment", "Wrong amount.")]["generation_id"] == down["generation_id"]
    assert (
        by[("log:u3", "stars", 2)]["generation_id"]
        == by[("log:u2", "thumbs", "up")]["generation_id"]
    )  # the same answer to the same prompt, rated by two users
    assert ("log:anonymous", "comment", "Smelled for days.") in by
    # the contract training reads: thumbs or stars rows on the rated answer's generation
    ratings = list(
        store.db.query(
            "SELECT kind, thumbs, stars FROM reviews WHERE source = 'log' "
            "AND kind IN ('thumbs', 'stars') AND generation_id IS NOT NULL"
        )
    )
    assert len(ratings) == 5
    # log prompts are for learning: generation and the graph leave them out
    assert store.list_prompts() == [] and store.prompt_ids() == []
    assert len(store.prompt_ids(imported=True)) == 3
    assert len(store.logged_ratings("prod")) == 7


def test_the_seed_systems_flat_rows_import(store, tmp_path):
    path = _jsonl(tmp_path / "feedback_export.jsonl", FLAT_ROWS)
    log = read_feedback_log(path)
    assert log.shapes == {"conversation": 0, "flat": 3}
    summary = store.import_feedback(log, "export")
    assert summary["prompts"]["inserted"] == 2  # two outputs of one prompt
    assert summary["answers"]["inserted"] == 3
    assert summary["thumbs"] == {"up": 1, "down": 1, "from_labels": 0}
    assert summary["stars"]["4"] == 1 and summary["stars"]["3"] == 1
    rows = _log_reviews(store)
    kinds = sorted((r["reviewer"], r["kind"]) for r in rows)
    assert kinds == [
        ("log:anonymous", "stars"),
        ("log:mgr-7", "comment"),
        ("log:mgr-7", "stars"),
        ("log:mgr-7", "thumbs"),
        ("log:mgr-7", "thumbs"),
    ]
    prompt = store.get_prompt(rows[0]["prompt_id"])
    assert prompt["task_type"] == "retail_media_budget"  # the seed's "budgeting"
    assert rows[0]["logged_at"] == "2025-01-17T09:00:00"


def test_reimporting_changes_nothing(store, tmp_path):
    path = _jsonl(tmp_path / "prod.jsonl", [*CONVERSATIONS, *FLAT_ROWS])
    store.import_feedback(read_feedback_log(path), "prod")
    before = _tables(store)
    again = store.import_feedback(read_feedback_log(path), "prod")
    for what in ("prompts", "answers", "reviews"):
        assert again[what]["inserted"] == again[what]["updated"] == 0
    assert _tables(store) == before  # not even a timestamp moved


def test_a_changed_rating_updates_its_review(store, tmp_path):
    first = _jsonl(tmp_path / "day1.jsonl", [CONVERSATIONS[0]])
    store.import_feedback(read_feedback_log(first), "prod")
    changed = {**CONVERSATIONS[0], "ratings": [{"turn": 2, "thumbs": "down", "stars": 5}]}
    later = _jsonl(tmp_path / "day2.jsonl", [changed])
    summary = store.import_feedback(read_feedback_log(later), "prod")
    assert summary["reviews"] == {"inserted": 0, "updated": 1, "unchanged": 1}
    assert [r["thumbs"] for r in _log_reviews(store) if r["kind"] == "thumbs"] == ["down"]


def test_quirks_of_real_logs_are_skipped_and_counted(store, tmp_path):
    rows = [
        CONVERSATIONS[0],
        {"messages": [Q1, A1]},  # nobody rated it
        {"messages": [Q1, A1], "ratings": [{"turn": 1, "label": "UR1"}]},  # not mapped
        {"messages": [A1, Q1, A2], "ratings": [{"turn": 0, "thumbs": "up"}]},  # a greeting
        {"messages": [Q1, A1, A2], "ratings": [{"turn": 2, "thumbs": "up"}]},  # two in a row
        {
            "messages": [Q1, {"role": "assistant", "content": "  "}],
            "ratings": [{"turn": 1, "stars": 1}],
        },
        CONVERSATIONS[0],  # the same line again
        {**CONVERSATIONS[0], "ratings": [{"turn": 2, "thumbs": "down", "stars": 5}]},  # changed
    ]
    path = _jsonl(tmp_path / "prod.jsonl", rows)
    log = read_feedback_log(path)
    assert log.skipped == {
        "unrated": 1,
        "unmapped_label": 1,
        "not_after_user": 2,
        "empty_answer": 1,
        "duplicate": 3,  # the repeated line's thumbs and stars, the changed line's stars
        "superseded": 1,
    }
    assert log.first_skipped["unrated"] == f"{path}:2"
    assert "'UR1' is not in CRITICLOOP_FEEDBACK__LABELS" in log.skip_examples["unmapped_label"][0]
    summary = store.import_feedback(log, "prod")
    assert summary["reviews"]["inserted"] == 2 and summary["skipped"] == log.skipped
    thumbs = [r for r in _log_reviews(store) if r["kind"] == "thumbs"]
    assert [t["thumbs"] for t in thumbs] == ["down"]  # the later line counts


def test_labels_come_from_the_settings(store, tmp_path, monkeypatch):
    monkeypatch.setenv("CRITICLOOP_FEEDBACK__LABELS", '{"UR1": "down", "great": "up"}')
    settings = Settings.load(env_file=None)
    rows = [
        {"messages": [Q1, A1], "ratings": [{"turn": 1, "label": "UR1"}]},
        {"messages": [Q2, A2], "ratings": [{"turn": 1, "label": "UR5", "stars": 4}]},
    ]
    log = read_feedback_log(_jsonl(tmp_path / "p.jsonl", rows), settings.feedback.labels)
    assert log.skipped == {"unmapped_label": 1}  # UR5 is not in this table; its stars count
    assert [(r.kind, r.thumbs, r.stars, r.label) for r in log] == [
        ("thumbs", "down", None, "UR1"),
        ("stars", None, 4, None),
    ]
    monkeypatch.setenv("CRITICLOOP_FEEDBACK__LABELS", '{"UR1": "down", "ur1": "up"}')
    with pytest.raises(Exception, match="differ only in case"):
        Settings.load(env_file=None)


BAD_LINES = [
    # (the bad line, what the error says)
    ('{"messages": [', "invalid JSON"),
    ('["a list"]', "each line must be a JSON object"),
    ({"prompt": "hi"}, "neither a conversation"),
    ({"messages": [Q1, A1], "ratings": [{"turn": 1, "stars": 7}]}, "ratings[0].stars must be"),
    ({"messages": [Q1, A1], "ratings": [{"turn": 1, "thumbs": "sideways"}]}, "thumbs must be 'up'"),
    ({"messages": [Q1, A1], "ratings": [{"turn": 0, "thumbs": "up"}]}, "turn 0 is a user message"),
    ({"messages": [Q1, A1], "ratings": [{"turn": 5, "thumbs": "up"}]}, "turn 5 is no message"),
    ({"messages": [Q1, A1], "ratings": [{"turn": 1}]}, "a rating needs thumbs, stars"),
    (
        {"messages": [Q1, A1], "ratings": [{"turn": 1, "thumbs": "up"}], "mood": 1},
        "unknown key 'mood'",
    ),
    ({"messages": [{**Q1, "rating": {"thumbs": "up"}}, A1]}, "only assistant turns are rated"),
    (
        {"messages": [Q1, A1], "task_type": "poetry", "ratings": [{"turn": 1, "stars": 3}]},
        "unknown task_type",
    ),
    ({"messages": [Q1, A1], "ratings": [{"turn": 1, "thumbs": "up", "label": "UR2"}]}, "disagree"),
    (
        {"messages": [Q1, A1], "created_at": "last tuesday", "ratings": [{"turn": 1, "stars": 3}]},
        "ISO 8601",
    ),
    ({**FLAT_ROWS[0], "feedback_type": "meh"}, "'feedback_type' must be one of"),
    ({**FLAT_ROWS[2], "rating": None}, "needs a 'rating' of 1-5 stars"),
    ({**FLAT_ROWS[2], "rating": 4.5}, "rating must be a whole number of stars"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_a_bad_line_is_named_and_nothing_is_written(settings, tmp_path, line, message):
    path = _jsonl(tmp_path / "prod.jsonl", [*CONVERSATIONS, line, FLAT_ROWS[0]])
    result = run_cli("feedback", "import", str(path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"criticloop: error: {path}:4: ")
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not settings.db_path.exists()  # checked whole before the store is opened


def test_an_unknown_brand_is_named_and_the_import_rolls_back(store, settings, tmp_path):
    rows = [*CONVERSATIONS, {**CONVERSATIONS[0], "brand": "nobody"}]
    path = _jsonl(tmp_path / "prod.jsonl", rows)
    store.close()
    result = run_cli("feedback", "import", str(path))
    assert result.returncode == 2
    assert f"{path}:4: unknown brand 'nobody'" in result.stderr
    with Store.open(settings.db_path) as again:
        assert again.counts()["reviews"] == again.counts()["prompts"] == 0


def test_a_log_with_no_usable_rating_is_refused(tmp_path):
    path = _jsonl(tmp_path / "prod.jsonl", [{"messages": [Q1, A1]}])
    with pytest.raises(
        InputError, match=r"no usable rating: 1 rows, ratings skipped \(unrated 1\)"
    ):
        read_feedback_log(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputError, match="no conversations or feedback rows"):
        read_feedback_log(empty)


def test_over_long_texts_skip_their_rating(tmp_path):
    limits = Settings.load(env_file=None, limits={"text_chars": 60}).limits
    long = {"role": "assistant", "content": "x" * 61}
    rows = [CONVERSATIONS[0], {"messages": [Q1, long], "ratings": [{"turn": 1, "stars": 1}]}]
    log = read_feedback_log(_jsonl(tmp_path / "p.jsonl", rows), limits=limits)
    assert log.skipped == {"too_long": 1} and len(log) == 2


def test_the_cli_prints_counts_and_json(tmp_path):
    path = _jsonl(tmp_path / "prod.jsonl", [*CONVERSATIONS, {"messages": [Q1, A1]}, *FLAT_ROWS])
    first = run_cli("feedback", "import", str(path), check=True)
    assert first.stdout.startswith(f"{path}: dataset prod (7 rows: 4 conversation, 3 flat; ")
    assert "reviews 12 (12 new, 0 unchanged)" in first.stdout
    assert "skipped 1 (unrated 1)" in first.stdout
    assert f"skipped unrated: {path}:4: no rating in this conversation" in first.stderr
    again = json.loads(run_cli("feedback", "import", str(path), "--json", check=True).stdout)
    (summary,) = again
    assert summary["reviews"] == {"inserted": 0, "updated": 0, "unchanged": 12}
    assert summary["dataset"] == "prod" and summary["skipped"] == {"unrated": 1}


def test_the_demo_feedback_imports_cleanly(demo_store, tmp_path):
    log = read_feedback_log(DEMO_FEEDBACK)
    assert log.skipped == {} and log.shapes["conversation"] >= 30
    summary = demo_store.import_feedback(log, "demo")
    assert summary["reviews"]["inserted"] == len(log) > 60
    assert summary["thumbs"]["down"] > 5 and summary["thumbs"]["from_labels"] > 5
    assert summary["comments"] > 10
    brands = {r["brand_id"] for r in demo_store.logged_ratings()}
    assert {"lanternfield-coffee", "cairnline-outfitters", "meadowpath-wellness"} <= brands
    again = demo_store.import_feedback(read_feedback_log(DEMO_FEEDBACK), "demo")
    assert again["reviews"]["unchanged"] == len(log)


def test_the_migration_allows_log_reviews_and_log_revision_pairs(store, tmp_path):
    path = _jsonl(tmp_path / "prod.jsonl", [CONVERSATIONS[0]])
    store.import_feedback(read_feedback_log(path), "prod")
    up = next(r for r in _log_reviews(store) if r["kind"] == "thumbs")
    better = "Use citric acid, then rinse."
    assert store.record_pair(
        PairRecord(up["prompt_id"], better, A1["content"], "log-revision",
                   rejected_generation_id=up["generation_id"])
    )  # fmt: skip
    assert store.db["pairs"].count == 1
    schema = store.db.execute("SELECT sql FROM sqlite_master WHERE name = 'reviews'").fetchone()[0]
    assert "'log'" in schema and "label TEXT" in schema and "logged_at TEXT" in schema
    indexes = {i.name for i in store.db["reviews"].indexes}
    assert {"reviews_decision", "reviews_source", "reviews_generation"} <= indexes


def test_the_migration_keeps_every_review_and_pair(tmp_path):
    from criticloop.store._migrations import migrations
    from sqlite_utils import Database

    path = tmp_path / "old.db"
    old = Database(path)
    migrations.apply(old, stop_before="m011_feedback_logs")
    stamp = "2026-01-01T00:00:00.000+00:00"
    old["prompts"].insert(
        {"id": "p1", "task_type": "general", "messages": "[]", "text": "hi", "metadata": "{}",
         "source": "f", "content_hash": "h", "created_at": stamp, "updated_at": stamp}
    )  # fmt: skip
    old["generations"].insert(
        {"id": "g1", "prompt_id": "p1", "config_hash": "c", "candidate_index": 0, "text": "yo",
         "model": "m", "sampling": "{}", "created_at": stamp}
    )  # fmt: skip
    old["reviews"].insert(
        {"id": "rv-1", "prompt_id": "p1", "generation_id": "g1", "reviewer": "ana", "kind": "stars",
         "stars": 4, "created_at": stamp, "updated_at": stamp, "source": "import",
         "dataset": "d", "dimension": "helpfulness"}
    )  # fmt: skip
    old["pairs"].insert(
        {"id": "pr-1", "prompt_id": "p1", "chosen": "yo", "rejected": "no", "source": "human",
         "created_at": stamp}
    )  # fmt: skip
    old.close()
    with Store.open(path) as store:
        row = store.db["reviews"].get("rv-1")
        assert (row["stars"], row["source"], row["dataset"], row["dimension"]) == (
            4,
            "import",
            "d",
            "helpfulness",
        )
        assert row["label"] is None and row["logged_at"] is None
        assert [p["id"] for p in store.db["pairs"].rows] == ["pr-1"]
        assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_a_gzipped_log_reads_as_the_plain_one(tmp_path):
    import gzip

    plain = _jsonl(tmp_path / "prod.jsonl", CONVERSATIONS)
    packed = tmp_path / "prod.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert [r.values for r in read_feedback_log(packed)] == [
        r.values for r in read_feedback_log(plain)
    ]
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(InputError, match="not valid gzip"):
        read_feedback_log(broken)


def test_a_rating_of_the_whole_conversation_rates_its_last_answer(store, tmp_path):
    """Seed 003's logs: a category for the conversation, which ends with the user's reaction to
    the last answer."""
    feedback = {"role": "user", "content": "That is not what I asked."}
    rows = [
        {"messages": [Q1, A1, Q2, A2, feedback], "label": "UR3", "user_id": "u9"},
        {"messages": [Q1], "thumbs": "up"},
    ]
    path = _jsonl(tmp_path / "seed.jsonl", rows[:1])
    (rating,) = read_feedback_log(path)
    assert (rating.kind, rating.thumbs, rating.label, rating.answer) == (
        "thumbs",
        "down",
        "UR3",
        A2["content"],
    )
    assert rating.prompt.conversation() == [Q1, A1, Q2]
    with pytest.raises(InputError, match=":2: a rating of the conversation rates its last"):
        read_feedback_log(_jsonl(tmp_path / "bad.jsonl", rows))
