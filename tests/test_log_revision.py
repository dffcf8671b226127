"""The revise step of production feedback logs (`criticloop feedback revise`, and a phase of
`criticloop graph run`): answers users rated down are rewritten from the user's comment
(`feedback`) or afresh (`alternative`) by the teacher or else the policy, the critics judge the
rewrite against the rated answer, and a rewrite that scores higher makes a `log-revision` pair;
one that does not makes none, with the reason recorded. Running again revises nothing twice.

Everything here is scripted: a fake writer returns fixed texts and records the conversations it
was given, and fake critics score by what a text says, so exact texts can be checked."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_cli
from criticloop.agents import Candidate, Score
from criticloop.graphs import log_revision_pending, run_log_revision
from criticloop.reward import Profiles
from criticloop.settings import Settings
from criticloop.store import Store, read_feedback_log

Q = {"role": "user", "content": "How do I descale a kettle?"}
BAD = "Just buy a new kettle."
GOOD = "Boil equal parts vinegar and water, then rinse twice."
COMMENT = "Useless: I asked how to descale it, not to buy another."
BETTER = "GOOD: Fill it with equal parts white vinegar and water, boil, wait an hour, rinse."
WORSE = "BAD: kettles are hard."

LOG = [
    # thumbs down with a comment: goes to revision
    {"user_id": "u1", "messages": [Q, {"role": "assistant", "content": BAD}],
     "ratings": [{"turn": 1, "thumbs": "down", "comment": COMMENT}]},
    # two stars, no comment: negative too
    {"user_id": "u2", "messages": [{"role": "user", "content": "Name a warm colour."},
                                   {"role": "assistant", "content": "Blue."}],
     "ratings": [{"turn": 1, "stars": 2}]},
    # liked, and three stars: not negative
    {"user_id": "u3", "messages": [Q, {"role": "assistant", "content": GOOD}],
     "ratings": [{"turn": 1, "thumbs": "up", "stars": 3}]},
]  # fmt: skip


@dataclass
class FakeWriter:
    """A scripted policy (or teacher): every rewrite is ``text``; the conversations it was asked
    to continue are kept in ``seen``."""

    text: str
    name: str = "fake-writer"
    seen: list[list[dict[str, str]]] = field(default_factory=list)
    adapter_version: str | None = None

    @property
    def ref(self) -> SimpleNamespace:
        return SimpleNamespace(name=self.name)

    def generate(self, requests, sampling, batch_size, on_batch=None):
        for key, conversation, indices in requests:
            self.seen.append(conversation)
            yield [Candidate(key, i, self.text, 12, 6, "stop") for i in indices]


@dataclass(frozen=True)
class FakeCritic:
    """Scores 0.9 a text that starts with GOOD, 0.1 one that starts with BAD, else 0.4."""

    name: str
    dimension: str = ""
    version: str = "fake-1"
    backend: str = "fake"

    def applies(self, case) -> bool:
        return True

    def __call__(self, case, signals) -> Score:
        text = case.response
        score = 0.9 if text.startswith("GOOD") else 0.1 if text.startswith("BAD") else 0.4
        return Score(self.name, score, 0.9, f"fake says {score}", self.version)


def _fake_critics(settings: Settings) -> dict[str, FakeCritic]:
    profiles = Profiles.load(settings.profiles)
    names = {n for task in ("general",) for n in profiles.for_prompt(task, None).weights}
    return {name: FakeCritic(name, name) for name in names}


@pytest.fixture
def logged(store: Store, tmp_path: Path) -> Store:
    path = tmp_path / "prod.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in LOG) + "\n", encoding="utf-8")
    store.import_feedback(read_feedback_log(path), "prod")
    return store


def _revise(settings: Settings, writer: FakeWriter, mode: str, **kwargs):
    return run_log_revision(
        settings,
        mode=mode,
        critics=_fake_critics(settings),
        load_policy=lambda: writer,
        load_embedder_fn=lambda: None,
        **kwargs,
    )


def _pairs(store: Store) -> list[dict]:
    return list(store.db.query("SELECT * FROM pairs ORDER BY rowid"))


def test_negative_turns_are_revised_from_the_comment_in_feedback_mode(logged, settings):
    writer = FakeWriter(BETTER)
    assert log_revision_pending(settings, "feedback") == 2
    summary = _revise(settings, writer, "feedback")
    assert summary["turns"] == 2 and summary["pairs"] == 2 and summary["not_made"] == {}
    assert len(writer.seen) == 2  # the liked answer is not revised
    kettle = writer.seen[0][-1]["content"]
    assert COMMENT in kettle and BAD in kettle and Q["content"] in kettle
    assert "thumbs down" in kettle
    assert "2 stars" in writer.seen[1][-1]["content"]
    pairs = _pairs(logged)
    assert {p["source"] for p in pairs} == {"log-revision"}
    first = pairs[0]
    assert first["chosen"] == BETTER and first["rejected"] == BAD and first["margin"] > 0
    chosen = logged.db["generations"].get(first["chosen_generation_id"])
    assert chosen["text"] == BETTER and chosen["prompt_id"] == first["prompt_id"]
    assert chosen["model"] == "fake-writer" and chosen["run_id"] == summary["run_id"]
    assert logged.db["generations"].get(first["rejected_generation_id"])["model"] == "log"
    rows = logged.log_revisions("feedback")
    assert [r["outcome"] for r in rows] == ["pair", "pair"]
    assert rows[0]["pair_id"] == first["id"] and rows[0]["rewards"]
    assert logged.get_run(summary["run_id"])["status"] == "done"


def test_alternative_mode_answers_afresh_without_the_comment(logged, settings):
    writer = FakeWriter(BETTER)
    summary = _revise(settings, writer, "alternative")
    assert summary["pairs"] == 2
    kettle = writer.seen[0]
    text = json.dumps(kettle)
    assert COMMENT not in text and BAD not in text  # neither the comment nor the rated answer
    assert kettle[-1] == Q  # the conversation as the user left it
    assert {r["mode"] for r in logged.log_revisions()} == {"alternative"}
    # the other mode has not been tried on them yet
    assert log_revision_pending(settings, "feedback") == 2


def test_a_rewrite_scored_lower_makes_no_pair_and_says_why(logged, settings):
    summary = _revise(settings, FakeWriter(WORSE), "feedback")
    assert summary["pairs"] == 0
    assert summary["not_made"] == {"the rewrite did not score higher": 2}
    assert _pairs(logged) == []
    rows = logged.log_revisions("feedback")
    assert [r["outcome"] for r in rows] == ["dropped", "dropped"]
    assert rows[0]["reason"].startswith("revision did not score higher (0.100 vs 0.400)")
    assert rows[0]["pair_id"] is None and rows[0]["rewrite_generation_id"]
    assert log_revision_pending(settings, "feedback") == 0  # decided: not tried again


def test_rerun_is_a_no_op(logged, settings):
    writer = FakeWriter(BETTER)
    _revise(settings, writer, "feedback")
    before = {t: logged.db[t].count for t in ("pairs", "generations", "log_revisions", "runs")}
    again = _revise(settings, writer, "feedback")
    assert again["turns"] == 0 and again["run_id"] is None and len(writer.seen) == 2
    assert {t: logged.db[t].count for t in before} == before


def test_a_killed_run_keeps_its_rewrites_and_the_rerun_judges_them(logged, settings, monkeypatch):
    """Killed between writing a rewrite and recording its outcome: the rerun finds the rewrite
    stored (no new generation) and finishes the job."""
    from criticloop.store import Store as StoreClass

    real = StoreClass.record_log_revision

    def die(self, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreClass, "record_log_revision", die)
    writer = FakeWriter(BETTER)
    with pytest.raises(KeyboardInterrupt):
        _revise(settings, writer, "feedback")
    monkeypatch.setattr(StoreClass, "record_log_revision", real)
    assert len(writer.seen) == 1 and _pairs(logged) == []  # the pair rolled back with its row
    summary = _revise(settings, writer, "feedback")
    assert summary["pairs"] == 2 and len(writer.seen) == 2  # the first rewrite was reused


def test_the_teacher_writes_the_rewrites_when_configured(logged, settings, monkeypatch):
    monkeypatch.setenv("CRITICLOOP_TEACHER__MODEL", "openai:fake-teacher")
    settings = Settings.load(env_file=None)
    teacher, policy = FakeWriter(BETTER, name="teacher:fake"), FakeWriter(WORSE)
    summary = _revise(settings, policy, "feedback", load_teacher=lambda: teacher)
    assert summary["pairs"] == 2 and len(teacher.seen) == 2 and policy.seen == []
    pair = _pairs(logged)[0]
    assert logged.db["generations"].get(pair["chosen_generation_id"])["model"] == "teacher:fake"


def test_graph_run_runs_the_revise_phase(logged, settings):
    from criticloop.agents import Sampling
    from criticloop.graphs.run import RunOptions, run_feedback

    writer = FakeWriter(BETTER)
    options = RunOptions(sampling=Sampling(16, 0.7, 0.95, 0), candidates=2, progress=False)
    summary = run_feedback(
        settings,
        options,
        critics=_fake_critics(settings),
        load_policy=lambda: writer,
        load_embedder_fn=lambda: None,
    )
    assert summary["prompts"] == 0  # log prompts are never judged as prompts
    assert summary["log_revision"]["pairs"] == 2
    assert {p["source"] for p in _pairs(logged)} == {"log-revision"}
    again = run_feedback(
        settings,
        options,
        critics=_fake_critics(settings),
        load_policy=lambda: writer,
        load_embedder_fn=lambda: None,
    )
    assert "log_revision" not in again and len(writer.seen) == 2


def test_graph_run_can_leave_the_phase_off(logged, settings, monkeypatch):
    from criticloop.agents import Sampling
    from criticloop.graphs.run import RunOptions, run_feedback

    monkeypatch.setenv("CRITICLOOP_FEEDBACK__REVISE_NIGHTLY", "false")
    settings = Settings.load(env_file=None)
    options = RunOptions(sampling=Sampling(16, 0.7, 0.95, 0), candidates=2, progress=False)
    summary = run_feedback(settings, options, critics=_fake_critics(settings))
    assert "log_revision" not in summary and _pairs(logged) == []


def test_the_mode_comes_from_the_settings(logged, settings, monkeypatch):
    monkeypatch.setenv("CRITICLOOP_FEEDBACK__REVISE", "alternative")
    settings = Settings.load(env_file=None)
    assert _revise(settings, FakeWriter(BETTER), None)["mode"] == "alternative"


def test_the_cli_reports_nothing_to_revise_and_json(tmp_path):
    assert run_cli("init").returncode == 0
    result = run_cli("feedback", "revise")
    assert result.returncode == 0 and "nothing to revise (feedback)" in result.stdout
    result = run_cli("feedback", "revise", "--revise", "alternative", "--json")
    assert result.returncode == 0
    summary = json.loads(result.stdout)
    assert summary["mode"] == "alternative" and summary["turns"] == 0


def test_the_text_report_counts_pairs_made_and_not_made_by_reason():
    from criticloop.cli._feedback import describe_revision

    text = describe_revision(
        {"turns": 3, "mode": "feedback", "run_id": "log-revision-1", "pairs": 1,
         "not_made": {"the rewrite did not score higher": 2}, "unjudged": 0, "failed": {}}
    )  # fmt: skip
    assert "pairs made      1 (log-revision)" in text
    assert "not made        2" in text and "2  the rewrite did not score higher" in text


def test_status_shows_ratings_by_source_and_what_revision_made_of_them(logged, settings):
    assert "log_revisions       none yet" in run_cli("status", check=True).stdout
    _revise(settings, FakeWriter(WORSE), "feedback")
    _revise(settings, FakeWriter(BETTER), "alternative")
    out = run_cli("status", check=True).stdout
    assert "ratings             log: 1 good, 2 bad, 1 neither (1 with a comment)\n" in out
    assert "log_revisions       alternative: 2 pair; feedback: 2 dropped\n" in out
    assert "since_training      2 pairs, 4 ratings, 1 good ratings or rewrites" in out
    ratings = json.loads(run_cli("status", "--json", check=True).stdout)["ratings"]
    assert ratings["by_source"] == {"log": {"good": 1, "bad": 2, "neutral": 1, "commented": 1}}
