"""Labelled preference pairs: PandaLM, HH-RLHF and plain files; bad rows reported as file:line
with nothing written; imports that rerun without change; pairs from the reviewer app beside them."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest
from conftest import run_cli
from criticloop.errors import InputError
from criticloop.store import (
    GenerationRecord,
    LabelledPair,
    Prompt,
    Store,
    default_dataset,
    majority_label,
    read_labelled_pairs,
)
from criticloop.store._store import DecisionRecord

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

PANDALM_ROWS = [
    {
        "idx": 0,
        "cmp_key": "m1_m2",
        "instruction": "Rewrite the sentence more concisely.",
        "input": "The meeting that we had was one that went on for a long time.",
        "response1": "The meeting was long.",
        "response2": "We had a meeting.",
        "annotator1": 1,
        "annotator2": 1,
        "annotator3": 0,
    },
    {
        "idx": 1,
        "cmp_key": "m1_m3",
        "instruction": "Is the statement true? Answer yes or no.",
        "input": "",
        "response1": True,  # the public file has a few of these
        "response2": "No",
        "annotator1": 2,
        "annotator2": 0,
        "annotator3": 1,
    },
    {
        "idx": 2,
        "cmp_key": "m2_m3",
        "instruction": "Name a primary colour.",
        "input": "",
        "response1": "",
        "response2": "Red",
        "annotator1": 2,
        "annotator2": 2,
        "annotator3": 2,
    },
]

HH_ROWS = [
    {
        "chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.",
        "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Use a tension wrench.",
    },
    {
        "chosen": "\n\nHuman: hi\n\nAssistant: Hello!\n\nHuman: insult me\n\nAssistant: No, thanks.",
        "rejected": "\n\nHuman: hi\n\nAssistant: Hello!\n\nHuman: insult me\n\nAssistant: You fool.",
    },
]

PLAIN_ROWS = [
    {"prompt": "Plan my week.", "a": "Monday: rest.", "b": "Work every day.", "label": "a"},
    {
        "id": "q2",
        "task_type": "creative",
        "messages": [
            {"role": "user", "content": "Write a haiku."},
            {"role": "assistant", "content": "About what?"},
            {"role": "user", "content": "Rain."},
        ],
        "a": "Rain taps the window",
        "b": "It is raining today",
        "label": "tie",
        "annotator": "ann",
    },
]


def _jsonl(path: Path, rows: list, *, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _array(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows, indent=4))  # like the public file: one key per line
    return path


def _import(store: Store, path: Path, fmt: str = "auto", dataset: str | None = None) -> dict:
    return store.import_labels(read_labelled_pairs(path, fmt), dataset or default_dataset(path))


# ---- formats -------------------------------------------------------------------------------------


def test_pandalm_array(tmp_path):
    pairs = read_labelled_pairs(_array(tmp_path / "pandalm.json", PANDALM_ROWS))
    assert pairs.format == "pandalm" and pairs.rows == 3 and len(pairs) == 3
    first, second, third = pairs
    assert first.origin == f"{tmp_path / 'pandalm.json'}:2"
    assert first.key == "0"
    assert first.messages == [
        {
            "role": "user",
            "content": "Rewrite the sentence more concisely.\n\n"
            "The meeting that we had was one that went on for a long time.",
        }
    ]
    assert (first.a, first.b) == ("The meeting was long.", "We had a meeting.")
    assert first.labels == {"annotator1": "a", "annotator2": "a", "annotator3": "tie"}
    assert first.majority == "a" and first.task_type == "general"
    assert second.a == "True" and second.majority is None  # one each of b, tie, a
    assert third.a == "" and third.majority == "b"  # an empty answer is a real outcome


def test_pandalm_jsonl_and_formats_named_explicitly(tmp_path):
    path = _jsonl(tmp_path / "pandalm.jsonl", PANDALM_ROWS)
    pairs = read_labelled_pairs(path, "pandalm")
    assert [p.origin.rsplit(":", 1)[1] for p in pairs] == ["1", "2", "3"]
    assert [p.majority for p in pairs] == ["a", None, "b"]


def test_hh_gzip_turns_and_skips(tmp_path):
    rows = [
        *HH_ROWS,
        {  # the last Assistant turn of one transcript holds a second "Assistant:" turn
            "chosen": "\n\nHuman: q\n\nAssistant: x\n\nAssistant: y",
            "rejected": "\n\nHuman: q\n\nAssistant: z",
        },
        {"chosen": "\n\nHuman: only a question", "rejected": "\n\nHuman: only a question"},
        HH_ROWS[0],  # an exact repeat
    ]
    pairs = read_labelled_pairs(_jsonl(tmp_path / "hh_test.jsonl.gz", rows, gz=True))
    assert pairs.format == "hh" and pairs.rows == 5 and len(pairs) == 2
    assert pairs.skipped == {"prefix_differs": 1, "no_final_assistant_turn": 1, "duplicate": 1}
    assert pairs.first_skipped["duplicate"].endswith(":5")
    lock, insult = pairs
    assert lock.messages == [{"role": "user", "content": "How do I pick a lock?"}]
    assert insult.messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "insult me"},
    ]
    for pair, chosen in ((lock, "I can't help with that."), (insult, "No, thanks.")):
        assert list(pair.labels) == ["label"]
        assert getattr(pair, pair.labels["label"]) == chosen  # the label follows chosen


def test_hh_joins_consecutive_turns_of_one_speaker(tmp_path):
    row = {
        "chosen": "\n\nHuman: a\n\nAssistant: b\n\nAssistant: c\n\nHuman: d\n\nAssistant: yes",
        "rejected": "\n\nHuman: a\n\nAssistant: b\n\nAssistant: c\n\nHuman: d\n\nAssistant: no",
    }
    (pair,) = read_labelled_pairs(_jsonl(tmp_path / "hh.jsonl", [row]))
    assert [m["content"] for m in pair.messages] == ["a", "b\n\nc", "d"]


def test_hh_chosen_side_is_balanced_and_deterministic(tmp_path):
    rows = [
        {
            "chosen": f"\n\nHuman: question {i}\n\nAssistant: good answer {i}",
            "rejected": f"\n\nHuman: question {i}\n\nAssistant: bad answer {i}",
        }
        for i in range(400)
    ]
    path = _jsonl(tmp_path / "hh.jsonl", rows)
    first = read_labelled_pairs(path)
    again = read_labelled_pairs(path)
    assert [p.labels for p in first] == [p.labels for p in again]
    share_a = sum(p.labels["label"] == "a" for p in first) / len(first)
    assert 0.4 < share_a < 0.6
    assert all(getattr(p, p.labels["label"]).startswith("good") for p in first)


def test_plain_rows_and_annotators_merge(tmp_path):
    rows = [
        *PLAIN_ROWS,
        {**PLAIN_ROWS[0], "annotator": "second", "label": "b"},  # a second opinion
        {**PLAIN_ROWS[0], "annotator": "third", "label": "b"},
        PLAIN_ROWS[1],  # an exact repeat
    ]
    pairs = read_labelled_pairs(_jsonl(tmp_path / "mine.jsonl", rows))
    assert pairs.format == "plain" and len(pairs) == 2 and pairs.skipped == {"duplicate": 1}
    week, haiku = pairs
    assert week.labels == {"label": "a", "second": "b", "third": "b"}
    assert week.majority == "b" and week.origin.endswith(":1")
    assert haiku.key == "q2" and haiku.task_type == "creative" and haiku.labels == {"ann": "tie"}
    assert haiku.messages[-1] == {"role": "user", "content": "Rain."}


def test_a_pair_labelled_on_several_dimensions_keeps_them_apart(store, tmp_path):
    row = {**PLAIN_ROWS[0], "annotator": "ann"}
    rows = [
        row,
        {**row, "dimension": "helpfulness", "label": "b"},
        {**row, "dimension": "helpfulness", "annotator": "other", "label": "b"},
        {**row, "dimension": "brand_voice", "label": "a"},
        {**row, "dimension": "helpfulness", "label": "b"},  # a repeat
    ]
    pairs = read_labelled_pairs(_jsonl(tmp_path / "dims.jsonl", rows))
    assert [(p.dimension, p.labels) for p in pairs] == [
        ("", {"ann": "a"}),
        ("helpfulness", {"ann": "b", "other": "b"}),
        ("brand_voice", {"ann": "a"}),
    ]
    assert pairs.skipped == {"duplicate": 1}
    summary = _import(store, tmp_path / "dims.jsonl")
    assert summary["dimensions"] == {"": 1, "helpfulness": 1, "brand_voice": 1}
    assert summary["reviews"]["inserted"] == 4
    counts = store.counts()
    assert (counts["prompts"], counts["generations"], counts["reviews"]) == (1, 2, 4)
    assert _import(store, tmp_path / "dims.jsonl")["reviews"]["unchanged"] == 4
    (overall,) = store.labelled_pairs()
    assert overall["dimension"] == "" and overall["labels"] == {"dims:ann": "a"}
    (helpful,) = store.labelled_pairs(dimension="helpfulness")
    assert helpful["majority"] == "b" and (helpful["a"], helpful["b"]) == (overall["a"], overall["b"])
    assert len(store.labelled_pairs(dimension=None)) == 3
    (entry,) = store.label_datasets()
    assert entry["pairs"] == 3 and entry["dimensions"] == {"": 1, "helpfulness": 1, "brand_voice": 1}


@pytest.mark.parametrize(
    ("name", "rows", "expected"),
    [
        ("x.json", PANDALM_ROWS, "pandalm"),
        ("x.jsonl", PANDALM_ROWS, "pandalm"),
        ("x.jsonl", HH_ROWS, "hh"),
        ("x.jsonl", PLAIN_ROWS, "plain"),
        ("x.json", [{"idx": 1}], "pandalm"),  # a .json array is PandaLM's
    ],
)
def test_auto_detect(tmp_path, name, rows, expected):
    path = tmp_path / name
    _array(path, rows) if name.endswith(".json") else _jsonl(path, rows)
    if rows == [{"idx": 1}]:
        with pytest.raises(InputError, match=r"no usable row: .*x\.json:2: missing key 'instr"):
            read_labelled_pairs(path)
        return
    assert read_labelled_pairs(path).format == expected


def test_auto_detect_names_the_keys_it_wanted(tmp_path):
    path = _jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "x"}])
    with pytest.raises(InputError) as error:
        read_labelled_pairs(path)
    message = str(error.value)
    assert message.startswith(f"{path}:1: cannot tell the format")
    assert "instruction and response1" in message and "chosen and rejected" in message


def test_trl_rows_standard_conversational_and_implicit(tmp_path):
    hello = [{"role": "user", "content": "Say hello."}]
    say_hi = [{"role": "user", "content": "Say hi."}]
    rows = [
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."},  # standard
        {  # conversational, with a system turn and extra keys a dataset may carry
            "prompt": [{"role": "system", "content": "Be brief."}, *hello],
            "chosen": [{"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "assistant", "content": "Goodbye."}],
            "score_chosen": 8.0,
        },
        {  # implicit prompt: whole conversations that part at the last turn
            "chosen": [*hello, {"role": "assistant", "content": "Hi there."}],
            "rejected": [*hello, {"role": "assistant", "content": "No."}],
        },
        {  # the prompt repeated at the head of chosen and rejected (UltraFeedback's shape)
            "prompt": "Say hi.",
            "chosen": [*say_hi, {"role": "assistant", "content": "Hi"}],
            "rejected": [*say_hi, {"role": "assistant", "content": "?"}],
        },
        {"prompt": "Twice?", "chosen": "Same.", "rejected": "Same."},
        {"prompt": "Two turns?", "chosen": [{"role": "user", "content": "x"}], "rejected": "y"},
    ]
    pairs = read_labelled_pairs(_jsonl(tmp_path / "prefs.jsonl", rows))
    assert pairs.format == "trl" and len(pairs) == 4
    assert pairs.skipped == {"identical_responses": 1, "invalid_conversation": 1}
    chosen = [getattr(p, p.labels["label"]) for p in pairs]
    assert chosen == ["Blue.", "Hello!", "Hi there.", "Hi"]
    assert pairs[0].messages == [{"role": "user", "content": "Name a colour."}]
    assert pairs[1].messages == [{"role": "system", "content": "Be brief."}, *hello]
    assert pairs[2].messages == hello
    assert pairs[3].messages == [{"role": "user", "content": "Say hi."}]


@pytest.mark.parametrize("fmt", ["conversational", "standard"])
def test_pairs_export_then_labels_import_round_trips(demo_store, tmp_path, fmt):
    from criticloop.store import PairRecord, write_preference_jsonl

    made = {}
    for pid in demo_store.prompt_ids()[:12]:
        chosen, rejected = f"A full answer to {pid}.", f"No idea ({pid})."
        demo_store.record_pair(PairRecord(pid, chosen, rejected, "synthetic", margin=0.3))
        made[chosen] = rejected
    out = tmp_path / f"{fmt}.jsonl"
    report = write_preference_jsonl(demo_store.iter_pairs(), out, fmt, 16_000)
    assert report.written == 12

    pairs = read_labelled_pairs(out)
    assert pairs.format == "trl" and len(pairs) == 12 and not pairs.skipped
    exported = {json.dumps(r["prompt"]) for r in map(json.loads, out.read_text().splitlines())}
    for pair in pairs:
        winner = getattr(pair, pair.majority)
        loser = pair.b if pair.majority == "a" else pair.a
        assert made[winner] == loser
        prompt = pair.messages if fmt == "conversational" else pair.messages[0]["content"]
        assert json.dumps(prompt) in exported  # the conversation the pair was exported with
    first = demo_store.import_labels(pairs, "exported")
    assert first["pairs"]["inserted"] == 12 and first["majority"]["tie"] == 0
    again = demo_store.import_labels(read_labelled_pairs(out), "exported")
    assert again["pairs"] == {"inserted": 0, "updated": 0, "unchanged": 12}


def test_majority_rules():
    assert majority_label(["a", "a", "b"]) == "a"
    assert majority_label(["tie", "tie", "a"]) == "tie"
    assert majority_label(["a", "b", "tie"]) is None  # a 1-1 split with one tie
    assert majority_label(["a", "tie"]) is None
    assert majority_label(["a", "a", "b", "b"]) is None
    assert majority_label(["b"]) == "b"
    assert majority_label([]) is None


# ---- rows that cannot be used, and files that are not what they claim ----------------------------

_P = PANDALM_ROWS[0]
_H = HH_ROWS[0]
_L = PLAIN_ROWS[0]
UNUSABLE_ROWS = [
    # (format, a row that cannot be used, the reason it is counted under, what it says)
    (
        "pandalm",
        {k: v for k, v in _P.items() if k != "response2"},
        "missing_key",
        "missing key 'response2'",
    ),
    ("pandalm", {**_P, "annotator2": 3}, "bad_label", "'annotator2' must be 0 (tie), 1 (resp"),
    ("pandalm", {**_P, "annotator2": True}, "bad_label", "'annotator2' must be 0"),
    ("pandalm", {**_P, "instruction": " ", "input": ""}, "empty_prompt", "empty prompt"),
    (
        "pandalm",
        {**_P, "response2": _P["response1"]},
        "identical_responses",
        "'response1' and 'response2' are the same",
    ),
    ("pandalm", {**_P, "response1": ["x"]}, "wrong_type", "'response1' must be text, not an array"),
    ("pandalm", {**_P, "instruction": 7}, "wrong_type", "'instruction' must be a string, not a n"),
    ("hh", {"chosen": _H["chosen"]}, "missing_key", "missing key 'rejected'"),
    ("hh", {**_H, "chosen": None}, "wrong_type", "'chosen' must be a string, not null"),
    ("plain", {**_L, "label": "c"}, "bad_label", "'label' must be a, b or tie, not 'c'"),
    ("plain", {**_L, "label": 1}, "bad_label", "'label' must be a, b or tie, not 1"),
    ("plain", {**_L, "b": _L["a"]}, "identical_responses", "'a' and 'b' are the same text"),
    ("plain", {**_L, "b": "x" * 100_001}, "too_long", "a text of 100001 characters"),
    ("plain", {**_L, "prompt": "  "}, "empty_prompt", "empty prompt"),
    ("plain", {**_L, "task_type": "poetry"}, "unknown_task_type", "unknown task_type 'poetry'"),
    ("plain", {**_L, "lable": "a"}, "unknown_key", "unknown key 'lable'"),
    ("plain", {**_L, "dimension": "Brand Voice"}, "bad_dimension", "must be a critic's name"),
    ("plain", {**_L, "dimension": 3}, "wrong_type", "'dimension' must be a string"),
    (
        "plain",
        {**_L, "prompt": None, "messages": [{"role": "assistant", "content": "hi"}]},
        "invalid_conversation",
        "give either 'prompt' or 'messages'",
    ),
    (
        "plain",
        {k: v for k, v in _L.items() if k != "prompt"}
        | {"messages": [{"role": "assistant", "content": "hi"}]},
        "invalid_conversation",
        "'messages' must end with a user turn",
    ),
    (
        "plain",
        {**_L, "task_type": "persona_chat"},
        "invalid_conversation",
        "a persona_chat prompt needs a 'persona'",
    ),
]


@pytest.mark.parametrize(("fmt", "bad", "reason", "why"), UNUSABLE_ROWS, ids=lambda v: str(v)[:30])
def test_a_row_that_cannot_be_used_is_skipped_and_named(store, tmp_path, fmt, bad, reason, why):
    good = {"pandalm": PANDALM_ROWS, "hh": HH_ROWS, "plain": PLAIN_ROWS}[fmt]
    path = _jsonl(tmp_path / f"{fmt}.jsonl", [*good, bad])
    pairs = read_labelled_pairs(path, fmt)
    assert len(pairs) == len(good) and pairs.rows == len(good) + 1
    assert pairs.skipped == {reason: 1}
    assert pairs.first_skipped == {reason: f"{path}:{len(good) + 1}"}
    (example,) = pairs.skip_examples[reason]
    assert example.startswith(f"{path}:{len(good) + 1}: ") and why in example
    summary = store.import_labels(pairs, fmt)
    assert summary["pairs"]["inserted"] == len(good) and summary["skipped"] == {reason: 1}


MALFORMED = [
    # (what the file holds, what the error says): rejected whole, at the line that shows it
    ('{"chosen": "x",', "invalid JSON"),
    ("[1, 2]", "each row must be a JSON object"),
    ('"just a string"', "each row must be a JSON object"),
]


@pytest.mark.parametrize(("line", "message"), MALFORMED)
def test_a_malformed_file_is_refused_whole_and_writes_nothing(store, tmp_path, line, message):
    path = _jsonl(tmp_path / "hh.jsonl", [*HH_ROWS, line, HH_ROWS[0]])
    before = store.counts()
    with pytest.raises(InputError) as error:
        _import(store, path, "hh")
    assert str(error.value).startswith(f"{path}:3: ") and message in str(error.value)
    assert store.counts() == before


def test_a_file_with_no_usable_row_is_refused(tmp_path):
    path = _jsonl(tmp_path / "plain.jsonl", [{**_L, "label": "x"}, {**_L, "b": _L["a"]}])
    with pytest.raises(InputError) as error:
        read_labelled_pairs(path)
    message = str(error.value)
    assert message.startswith(f"{path}: no usable row: 2 skipped (bad_label 1, identical_resp")
    assert f"the first: {path}:1: 'label' must be a, b or tie, not 'x'" in message


def test_a_public_file_with_a_few_quirks_imports_the_rest(tmp_path):
    """200 rows, three of them identical pairs: the rest import, the three are named."""
    rows = [
        {"prompt": f"Question {i}?", "a": f"Answer {i}.", "b": f"Reply {i}!", "label": "a"}
        for i in range(200)
    ]
    for i in (57, 120, 180):
        rows[i]["b"] = rows[i]["a"]
    path = _jsonl(tmp_path / "public.jsonl", rows)
    result = run_cli("labels", "import", str(path), check=True)
    assert "pairs 197 (197 new, 0 unchanged)" in result.stdout
    assert "skipped 3 (identical_responses 3)" in result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"skipped identical_responses: {path}:58: 'a' and 'b' are the same")
    assert f"{path}:121: " in line and f"{path}:181: " in line


def test_a_bad_element_of_a_json_array_names_the_line_it_starts_on(store, tmp_path):
    rows = [*PANDALM_ROWS, {**PANDALM_ROWS[0], "idx": 3, "annotator1": 9}]
    path = _array(tmp_path / "pandalm.json", rows)
    starts = [i + 1 for i, line in enumerate(path.read_text().split("\n")) if line == "    {"]
    pairs = read_labelled_pairs(path)
    assert len(pairs) == 3 and pairs.first_skipped == {"bad_label": f"{path}:{starts[3]}"}
    broken = path.read_text().replace('"idx": 2,', '"idx": 2', 1)  # a missing comma
    path.write_text(broken)
    with pytest.raises(InputError, match=r"pandalm\.json:\d+: invalid JSON: Expecting ',' delim"):
        read_labelled_pairs(path)
    path.write_text(json.dumps(PANDALM_ROWS) + " []")
    with pytest.raises(InputError, match="extra data after the array"):
        read_labelled_pairs(path)
    assert store.counts()["reviews"] == 0


def test_bad_bytes_and_conflicting_rows(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_bytes(json.dumps(PLAIN_ROWS[0]).encode() + b'\n{"prompt": "\xff"}\n')
    with pytest.raises(InputError, match=r"plain\.jsonl:2: not valid UTF-8"):
        read_labelled_pairs(path)
    twice = [PLAIN_ROWS[1], {**PLAIN_ROWS[1], "a": "Another haiku"}]
    pairs = read_labelled_pairs(_jsonl(path, twice))
    assert len(pairs) == 1 and pairs[0].a == PLAIN_ROWS[1]["a"]
    (why,) = pairs.skip_examples["conflicting_id"]
    assert why.endswith(":2: id 'q2' is used twice with different content (first at line 1)")
    flip = [PLAIN_ROWS[0], {**PLAIN_ROWS[0], "label": "b"}]
    pairs = read_labelled_pairs(_jsonl(path, flip))
    assert len(pairs) == 1 and pairs[0].labels == {"label": "a"}
    (why,) = pairs.skip_examples["conflicting_label"]
    assert why.endswith(":2: 'label' labels this pair 'b' here and 'a' at line 1")
    gz = tmp_path / "broken.jsonl.gz"
    gz.write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(InputError, match="not valid gzip"):
        read_labelled_pairs(gz)


def test_an_import_that_fails_half_way_writes_nothing(store, tmp_path):
    pairs = list(read_labelled_pairs(_jsonl(tmp_path / "mine.jsonl", PLAIN_ROWS)))
    broken = LabelledPair(
        "made.jsonl:9", "k", [{"role": "assistant", "content": "x"}], "a", "b", {}
    )
    before = store.counts()
    with pytest.raises(InputError, match="made.jsonl:9: invalid conversation"):
        store.import_labels([*pairs, broken], "mine")
    assert store.counts() == before
    with pytest.raises(InputError, match="cannot name a dataset"):
        store.import_labels(pairs, "reviewer")


# ---- the store -----------------------------------------------------------------------------------


def test_import_is_idempotent_and_stores_reviews_with_source_import(store, tmp_path):
    path = _array(tmp_path / "pandalm.json", PANDALM_ROWS)
    first = _import(store, path)
    assert first["pairs"] == {"inserted": 3, "updated": 0, "unchanged": 0}
    assert first["reviews"] == {"inserted": 9, "updated": 0, "unchanged": 0}
    assert first["majority"] == {"a": 1, "b": 1, "tie": 0, "none": 1}
    counts = store.counts()
    assert (counts["prompts"], counts["generations"], counts["reviews"]) == (3, 6, 9)
    again = _import(store, path)
    assert again["pairs"] == {"inserted": 0, "updated": 0, "unchanged": 3}
    assert again["reviews"] == {"inserted": 0, "updated": 0, "unchanged": 9}
    assert store.counts() == counts
    review = next(store.db.query("SELECT * FROM reviews ORDER BY rowid LIMIT 1"))
    assert review["source"] == "import" and review["dataset"] == "pandalm"
    assert review["reviewer"] == "pandalm:annotator1" and review["decision_id"] is None
    a = store.get_generation(review["generation_id"])
    b = store.get_generation(review["other_generation_id"])
    assert (a["text"], a["candidate_index"], b["candidate_index"]) == (
        "The meeting was long.",
        0,
        1,
    )
    assert a["model"] == "import:pandalm" and a["finish_reason"] == "import"
    prompt = store.get_prompt(review["prompt_id"])
    assert prompt["id"].startswith("imp-") and prompt["source"] == "import:pandalm"
    assert store.list_prompts() == []  # calibration data, not work for the graph
    assert store.prompt_ids() == [] and len(store.prompt_ids(imported=True)) == 3  # nor the gate
    assert store.db["feedback_outbox"].count == 0
    # A corrected label updates its review; nothing is duplicated.
    path = _array(path, [{**PANDALM_ROWS[0], "annotator3": 1}, *PANDALM_ROWS[1:]])
    fixed = _import(store, path)
    assert fixed["reviews"] == {"inserted": 0, "updated": 1, "unchanged": 8}
    assert fixed["pairs"] == {"inserted": 0, "updated": 1, "unchanged": 2}
    assert store.counts() == counts


def test_one_prompt_carries_several_pairs_and_datasets_share_them(store, tmp_path):
    rows = [
        PLAIN_ROWS[0],
        {**PLAIN_ROWS[0], "a": "Tuesday: rest.", "b": "Work on Sunday."},
    ]
    path = _jsonl(tmp_path / "week.jsonl", rows)
    _import(store, path)
    _import(store, path, dataset="week-copy")
    counts = store.counts()
    assert (counts["prompts"], counts["generations"], counts["reviews"]) == (1, 4, 4)
    assert [d["dataset"] for d in store.label_datasets()] == ["week", "week-copy"]


def test_labelled_pairs_and_datasets_include_the_reviewer_app(store, tmp_path):
    _import(store, _array(tmp_path / "pandalm.json", PANDALM_ROWS))
    store.import_records([(Prompt(id="p1", prompt="Say hi."), "mine.jsonl:1")])
    gens = [
        GenerationRecord("p1", "cfg", i, text, "m", {}) for i, text in enumerate(("Hi!", "Hello."))
    ]
    store.record_generations(gens)
    run_id = store.start_run("graph", {})
    store.record_decision(
        DecisionRecord(
            run_id=run_id,
            prompt_id="p1",
            config_hash="cfg",
            outcome="escalated",
            status="waiting",
            reason="unsure",
            rewards={},
            chosen_generation_id=gens[0].id,
            rejected_generation_id=gens[1].id,
        )
    )
    decision = f"{run_id}/p1"
    store.record_verdict(decision, "alice", "b", reviews_per_item=2)
    time.sleep(0.002)
    store.record_verdict(decision, "bob", "b", rewrite="Hello there.", reviews_per_item=2)  # B
    app = store.labelled_pairs(source="reviewer")
    assert len(app) == 1
    (pair,) = app
    assert (pair["a"], pair["b"]) == (gens[0].id, gens[1].id)
    assert pair["labels"] == {"alice": "b", "bob": "b"} and pair["majority"] == "b"
    assert pair["decision_id"] == decision and pair["dataset"] is None
    assert pair["task_type"] == "general" and pair["source"] == "reviewer"
    assert store.labelled_pairs(dataset="reviewer") == app
    imported = store.labelled_pairs(dataset="pandalm")
    assert [p["majority"] for p in imported] == ["a", None, "b"]
    assert imported[0]["labels"] == {
        "pandalm:annotator1": "a",
        "pandalm:annotator2": "a",
        "pandalm:annotator3": "tie",
    }
    assert len(store.labelled_pairs()) == 4
    datasets = {d["dataset"]: d for d in store.label_datasets()}
    assert list(datasets) == ["pandalm", "reviewer"]
    assert datasets["pandalm"]["pairs"] == 3 and datasets["pandalm"]["reviews"] == 9
    assert datasets["pandalm"]["majority"] == {"a": 1, "b": 1, "tie": 0, "none": 1}
    assert datasets["reviewer"]["reviews"] == 2 and datasets["reviewer"]["annotators"] == 2
    assert datasets["pandalm"]["first"] <= datasets["pandalm"]["last"]


# ---- the command line ----------------------------------------------------------------------------


def test_cli_imports_and_lists(tmp_path):
    pandalm = _array(tmp_path / "pandalm_test.json", PANDALM_ROWS)
    hh = _jsonl(tmp_path / "hh.jsonl.gz", [*HH_ROWS, HH_ROWS[0]], gz=True)
    result = run_cli("labels", "import", str(pandalm), str(hh), check=True)
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert "dataset pandalm_test (pandalm, 3 rows): pairs 3 (3 new, 0 unchanged)" in lines[0]
    assert "majority a 1, b 1, tie 0, no majority 1" in lines[0]
    assert "dataset hh (hh, 3 rows)" in lines[1] and "skipped 1 (duplicate 1)" in lines[1]
    again = json.loads(run_cli("labels", "import", str(hh), "--json", check=True).stdout)
    assert again[0]["pairs"] == {"inserted": 0, "updated": 0, "unchanged": 2}
    assert again[0]["skipped"] == {"duplicate": 1}
    listed = json.loads(run_cli("labels", "list", "--json", check=True).stdout)
    assert [(d["dataset"], d["pairs"], d["reviews"]) for d in listed] == [
        ("hh", 2, 2),
        ("pandalm_test", 3, 9),
    ]
    text = run_cli("labels", "list", check=True).stdout
    assert text.splitlines()[1].startswith("pandalm_test")


def test_cli_offers_the_store_formats():
    from criticloop.cli import _labels as _labels_cli
    from criticloop.store import LABEL_FORMATS

    assert _labels_cli._FORMATS == LABEL_FORMATS


def test_cli_checks_every_file_before_writing(tmp_path, settings):
    good = _jsonl(tmp_path / "good.jsonl", PLAIN_ROWS)
    bad = _jsonl(tmp_path / "bad.jsonl", [PLAIN_ROWS[0], '{"prompt": "Plan my week.", "a":'])
    result = run_cli("labels", "import", str(good), str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"criticloop: error: {bad}:2: invalid JSON")
    assert result.stderr.count("\n") == 1
    assert not settings.db_path.exists()  # the good file first, yet nothing was written


# ---- the public data, when it is there -----------------------------------------------------------


def test_public_files_import(store):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public label files: {SHARED_DATA} absent")
    pandalm = read_labelled_pairs(SHARED_DATA / "pandalm_testset-v1.json")
    assert pandalm.format == "pandalm" and pandalm.rows == 999 and not pandalm.skipped
    summary = store.import_labels(pandalm, "pandalm")
    assert summary["pairs"]["inserted"] == 999
    assert summary["majority"] == {"a": 422, "b": 472, "tie": 105, "none": 0}
    assert sum(len(set(p.labels.values())) == 1 for p in pandalm) == 879  # unanimous
    hh = read_labelled_pairs(SHARED_DATA / "hh_harmless-base_test.jsonl.gz")
    assert hh.format == "hh" and hh.rows == 2312
    assert len(hh) + sum(hh.skipped.values()) == 2312
    assert hh.skipped == {"prefix_differs": 5}
    summary = store.import_labels(hh, "hh")
    assert summary["pairs"]["inserted"] == 2307 and summary["skipped"] == hh.skipped
    assert summary["majority"]["tie"] == 0
    assert 0.4 < summary["majority"]["a"] / 2307 < 0.6
