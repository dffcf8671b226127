"""`criticloop pairs export`: TRL preference JSONL, validated and deduplicated."""

from __future__ import annotations

import json

from conftest import run_cli
from criticloop.store import PairRecord, Store


def _seed_pairs(settings):
    run_cli("init", check=True)
    with Store.open(settings.db_path) as store:
        pairs = [
            PairRecord(
                "general-001", "A clear answer.", "A muddled answer.", "synthetic", margin=0.4
            ),
            PairRecord("general-001", "A clear answer.", "A muddled answer.", "human"),  # same text
            PairRecord("general-002", "Same", "Same", "synthetic"),
            PairRecord("general-003", "   ", "Something", "synthetic"),
            PairRecord("general-004", "x" * 20_000, "short", "synthetic"),
            PairRecord("feedback-001", "Shorter, as you asked: 42.", "A long ramble.", "revision"),
        ]
        for pair in pairs:
            store.record_pair(pair)
        return store.get_prompt("feedback-001")["messages"]


def test_conversational_export(settings, tmp_path):
    history = _seed_pairs(settings)
    out = tmp_path / "out" / "pairs.jsonl"
    result = run_cli("pairs", "export", str(out), "--json", check=True)
    report = json.loads(result.stdout)
    assert report["written"] == 2
    assert report["skipped"] == {"duplicate": 1, "identical": 1, "empty": 1, "over_length": 1}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["prompt"][-1]["role"] == "user"
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "A clear answer."}]
    assert rows[1]["prompt"] == history  # the whole conversation, not just its last turn
    assert not list(out.parent.glob(".*.tmp"))


def test_standard_export_is_trl_readable(settings, tmp_path):
    from trl.data_utils import is_conversational

    _seed_pairs(settings)
    out = tmp_path / "pairs.jsonl"
    run_cli("pairs", "export", str(out), "--format", "standard", check=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {tuple(sorted(r)) for r in rows} == {("chosen", "prompt", "rejected")}
    assert all(isinstance(r["prompt"], str) and not is_conversational(r) for r in rows)
    assert rows[1]["prompt"].startswith("User: ")  # multi-turn history rendered as text
    conversational = tmp_path / "conv.jsonl"
    run_cli("pairs", "export", str(conversational), check=True)
    assert all(
        is_conversational(json.loads(line)) for line in conversational.read_text().splitlines()
    )


def test_text_summary(settings, tmp_path):
    _seed_pairs(settings)
    result = run_cli("pairs", "export", str(tmp_path / "p.jsonl"), check=True)
    assert (
        result.stdout.splitlines()[0] == f"wrote 2 pairs (conversational) to {tmp_path / 'p.jsonl'}"
    )
    assert "skipped 1 identical" in result.stdout


def test_unwritable_destination_is_one_line(settings, tmp_path):
    _seed_pairs(settings)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("pairs", "export", str(blocker / "pairs.jsonl"))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"criticloop: error: cannot write {blocker / 'pairs.jsonl'}: {blocker} is not a directory"
    )


def test_an_existing_special_file_is_never_replaced(settings, tmp_path):
    import os
    import stat

    _seed_pairs(settings)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = run_cli("pairs", "export", str(fifo))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "is not a regular file (a FIFO)" in result.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # still a FIFO
    result = run_cli("pairs", "export", str(tmp_path))
    assert result.returncode == 2 and "is a directory" in result.stderr  # click's check
    if os.path.exists("/dev/full"):  # a device, as root could otherwise replace it
        result = run_cli("pairs", "export", "/dev/full")
        assert result.returncode == 1 and "(a character device)" in result.stderr
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def test_a_full_disk_leaves_no_file_and_one_line(settings, tmp_path, monkeypatch):
    import errno
    import os

    _seed_pairs(settings)
    out = tmp_path / "exports" / "pairs.jsonl"
    out.parent.mkdir()
    out.write_text("yesterday's export\n")

    def full_disk(fd):  # a fake: the disk fills up while the export is flushed
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    result = run_cli("pairs", "export", str(out))
    assert result.returncode == 1
    assert result.stderr == f"criticloop: error: cannot write {out}: No space left on device\n"
    assert out.read_text() == "yesterday's export\n"  # the old file stands, no temp file left
    assert [p.name for p in out.parent.iterdir()] == ["pairs.jsonl"]


def test_contradictory_pairs_are_left_out_of_export_and_training_and_named(settings, tmp_path):
    from criticloop.training import load_preferences

    _seed_pairs(settings)
    with Store.open(settings.db_path) as store:
        one = PairRecord("general-005", "Answer X.", "Answer Y.", "synthetic", margin=0.3)
        other = PairRecord("general-005", " Answer Y.", "Answer X. ", "human")  # the reverse
        store.record_pair(one)
        store.record_pair(other)
        assert store.contradictory_pairs() == [tuple(sorted((one.id, other.id)))]
        data = load_preferences(store, {"synthetic": 1.0, "human": 1.0}, heldout_percent=0)
    assert data.skipped["contradicted by another pair (A over B and B over A)"] == 2
    out = tmp_path / "pairs.jsonl"
    result = run_cli("pairs", "export", str(out), "--json", check=True)
    report = json.loads(result.stdout)
    assert report["skipped"]["contradictory"] == 2 and report["written"] == 2
    assert sorted(report["contradictions"][0]) == sorted((one.id, other.id))
    assert "left out 1 contradictory pairs of pairs" in result.stderr
    assert one.id in result.stderr and other.id in result.stderr
    assert "Answer X." not in out.read_text()
