"""The criticloop database: one SQLite file (WAL) and the verbs over it.

Every write runs in ``BEGIN IMMEDIATE`` so two processes writing at once queue on the lock
instead of failing with "database is locked", and every row has a natural key so a rerun
updates or skips instead of duplicating.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError as _RowMissing

from ..errors import BusyError, InputError, NotFoundError, StoreError
from ..vocab import PAIR_SOURCES, REVIEW_KINDS
from ._common import (
    _alive,
    _decode,
    insert_rows,
    now,
    process_started,
    select_all,
    select_one,
    update_row,
)
from ._feedback import FeedbackVerbs
from ._labels import LabelVerbs
from ._migrations import migrations
from ._ratings import RatingVerbs
from ._records import Brand, Campaign, ImportRecord, Prompt, content_hash
from ._review import ReviewVerbs
from ._rewardmodels import RewardModelVerbs
from ._rows import (
    CritiqueRecord,
    DecisionRecord,
    GenerationRecord,
    ImportSummary,
    Outcome,
    PairRecord,
    ReviewRecord,
)
from ._traces import TraceVerbs
from ._trained_rms import TrainedRewardModelVerbs
from ._training import TrainingVerbs

BUSY_TIMEOUT_S = 60.0
SUPPLIED = "supplied"
"""Config hash and model name of candidates that came with the prompt instead of the policy."""
_NOT_IMPORTED = "source NOT LIKE 'import:%' AND source NOT LIKE 'log:%'"
"""SQL: a prompt of the user's own, not one of a labelled pair or a feedback log (those are for
learning from people's judgements: no generation, graph run or gate picks them up)."""


class Store(
    ReviewVerbs,
    TrainingVerbs,
    TraceVerbs,
    LabelVerbs,
    FeedbackVerbs,
    RewardModelVerbs,
    TrainedRewardModelVerbs,
    RatingVerbs,
):
    """Verbs over the criticloop database. Open with :meth:`Store.open`."""

    def __init__(self, db: Database, path: Path):
        self.db = db
        self.path = path

    # ---- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> Store:
        """Open (and migrate) the database at ``path``; StoreError if it cannot be used."""
        path = Path(path)
        if not create and not path.exists():
            raise StoreError(f"no database at {path}: run `criticloop init` first")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            db = Database(conn)
            if db.journal_mode != "wal":
                db.enable_wal()
            store = cls(db, path)
            # Only when a migration is due: the check reads every row of every table that has
            # a foreign key (150 ms at 2,000 prompts, seconds at a nightly database's size),
            # and a run opens a connection per thread that works on its prompts.
            if migrations.pending(db):
                # Foreign keys off while migrating, so a migration may rebuild a table that
                # others reference (SQLite's procedure for changes ALTER TABLE cannot make).
                db.execute("PRAGMA foreign_keys = OFF")
                with store.transaction():
                    migrations.apply(db)  # applies only what is still due under the lock
                    broken = db.execute("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise sqlite3.IntegrityError(
                            f"foreign keys broken by a migration: {broken[:3]}"
                        )
            db.execute("PRAGMA foreign_keys = ON")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        return store

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """A write transaction that takes the write lock up front (``BEGIN IMMEDIATE``)."""
        if self.db.conn.in_transaction:  # nested: the outer transaction owns the lock
            with self.db.atomic():
                yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.rollback()
            raise
        self.db.execute("COMMIT")

    def applied_migrations(self) -> list[str]:
        return [m.name for m in migrations.applied(self.db)]

    def counts(self) -> dict[str, int]:
        tables = (
            "brands campaigns prompts generations critiques decisions pairs reviews runs jobs "
            "adapters"
        ).split()
        return {t: self.db[t].count for t in tables}

    # ---- brands, campaigns, prompts ----------------------------------------------------------

    def import_records(self, records: Iterable[tuple[ImportRecord, str]]) -> ImportSummary:
        """Upsert validated records in one transaction: all of them land, or none.

        ``records`` pairs each record with where it came from (``file:line``), so a reference
        to an unknown brand or campaign is reported at the line that made it.
        """
        summary = ImportSummary()
        with self.transaction():
            for record, origin in records:
                if isinstance(record, Brand):
                    outcome = self._upsert_brand(record)
                elif isinstance(record, Campaign):
                    self._require("brands", record.brand, "brand", origin)
                    outcome = self._upsert_campaign(record)
                else:
                    if record.brand:
                        self._require("brands", record.brand, "brand", origin)
                    if record.campaign:
                        self._require("campaigns", record.campaign, "campaign", origin)
                        owner = self.db["campaigns"].get(record.campaign)["brand_id"]
                        if record.brand and record.brand != owner:
                            raise _input_error(
                                f"campaign {record.campaign!r} belongs to brand {owner!r}, "
                                f"not {record.brand!r}",
                                origin,
                            )
                    outcome = self._upsert_prompt(record, origin.rsplit(":", 1)[0])
                    if record.candidates:
                        self._record_supplied(record, origin)
                summary.count(record.kind, outcome)
        return summary

    def _require(self, table: str, key: str, what: str, origin: str) -> None:
        if not self.db.execute(f"SELECT 1 FROM {table} WHERE id = ?", [key]).fetchone():
            raise _input_error(
                f"unknown {what} {key!r} (define it in this file or import it first)", origin
            )

    def _upsert(self, table: str, row: dict[str, Any]) -> Outcome:
        existing = self.db.execute(
            f"SELECT content_hash FROM {table} WHERE id = ?", [row["id"]]
        ).fetchone()
        if existing and existing[0] == row["content_hash"]:
            return "unchanged"
        stamp = now()
        if existing:
            self.db[table].update(row["id"], {**row, "updated_at": stamp})
            return "updated"
        self.db[table].insert({**row, "created_at": stamp, "updated_at": stamp})
        return "inserted"

    def _upsert_brand(self, brand: Brand) -> Outcome:
        payload = brand.model_dump(exclude={"kind"})
        return self._upsert(
            "brands",
            {
                "id": brand.id,
                "name": brand.name,
                "voice": json.dumps(payload["voice"]),
                "compliance": json.dumps(payload["compliance"]),
                "content_hash": content_hash(payload),
            },
        )

    def _upsert_campaign(self, campaign: Campaign) -> Outcome:
        payload = campaign.model_dump(exclude={"kind"})
        return self._upsert(
            "campaigns",
            {
                "id": campaign.id,
                "brand_id": campaign.brand,
                "name": campaign.name,
                "product": campaign.product,
                "ad_copy": campaign.ad_copy,
                "keywords": json.dumps(campaign.keywords),
                "compliance": json.dumps(payload["compliance"]),
                "content_hash": content_hash(payload),
            },
        )

    def _upsert_prompt(self, prompt: Prompt, source: str) -> Outcome:
        campaign_brand = None
        if prompt.campaign:
            campaign_brand = self.db["campaigns"].get(prompt.campaign)["brand_id"]
        return self._upsert(
            "prompts",
            {
                "id": prompt.natural_key(),
                "task_type": prompt.task_type,
                "messages": json.dumps(prompt.conversation(), ensure_ascii=False),
                "text": prompt.messages[-1].content,
                "persona": prompt.persona,
                "brand_id": prompt.brand or campaign_brand,
                "campaign_id": prompt.campaign,
                "metadata": json.dumps(prompt.metadata, ensure_ascii=False),
                "source": source,
                "content_hash": prompt.content_hash(),
            },
        )

    def _record_supplied(self, prompt: Prompt, origin: str) -> None:
        """A prompt's own candidates, stored as generations of config ``supplied``."""
        key = prompt.natural_key()
        have = {
            g["candidate_index"]: g["text"]
            for g in self.generations_for(key)
            if g["config_hash"] == SUPPLIED
        }
        if have and [have[i] for i in sorted(have)] != prompt.candidates:
            raise _input_error(
                f"prompt {key!r} already has different supplied candidates; give it a new id",
                origin,
            )
        self.record_generations(
            GenerationRecord(
                prompt_id=key,
                config_hash=SUPPLIED,
                candidate_index=i,
                text=text,
                model=SUPPLIED,
                sampling={},
                finish_reason=SUPPLIED,
            )
            for i, text in enumerate(prompt.candidates)
        )

    def prompt_ids(self, *, imported: bool = False) -> list[str]:
        """Every prompt's id, in order; the prompts of imported labelled pairs and feedback
        logs only if ``imported`` (they are for learning from people: no gate or RL job should
        answer them)."""
        where = "" if imported else f" WHERE {_NOT_IMPORTED}"
        return [row[0] for row in self.db.execute(f"SELECT id FROM prompts{where} ORDER BY id")]

    def get_brand(self, brand_id: str) -> dict[str, Any]:
        return _decode(self._get("brands", brand_id, "brand"), "voice", "compliance")

    def brand_names(self) -> list[tuple[str, str]]:
        """Every brand as (id, name), by name."""
        return [(row["id"], row["name"]) for row in self.db["brands"].rows_where(order_by="name")]

    def get_campaign(self, campaign_id: str) -> dict[str, Any]:
        return _decode(self._get("campaigns", campaign_id, "campaign"), "keywords", "compliance")

    def get_prompt(self, prompt_id: str) -> dict[str, Any]:
        return _decode(self._get("prompts", prompt_id, "prompt"), "messages", "metadata")

    def brand_and_campaign(
        self, prompt: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The brand and campaign a stored prompt names (None where it names none)."""
        brand = self.get_brand(prompt["brand_id"]) if prompt.get("brand_id") else None
        campaign = self.get_campaign(prompt["campaign_id"]) if prompt.get("campaign_id") else None
        return brand, campaign

    def prompt_context(self, prompt_id: str) -> tuple[dict[str, Any], dict | None, dict | None]:
        """(prompt, brand, campaign): everything generation and the critics read about a prompt."""
        prompt = self.get_prompt(prompt_id)
        return (prompt, *self.brand_and_campaign(prompt))

    def _get(self, table: str, key: str, what: str) -> dict[str, Any]:
        row = select_one(self.db, f"SELECT * FROM [{table}] WHERE id = ?", [key])
        if row is None:
            raise NotFoundError(f"unknown {what} {key!r}")
        return row

    def list_prompts(
        self,
        *,
        task_types: Iterable[str] = (),
        brand: str | None = None,
        limit: int | None = None,
        imported: bool = False,
    ) -> list[dict[str, Any]]:
        """Prompts in a stable order (task type, id), optionally filtered. The prompts of
        imported labelled pairs and feedback logs are left out unless ``imported``: they are
        for learning from people's judgements, not for generating and judging."""
        where, params = [], []
        if not imported:
            where.append(_NOT_IMPORTED)
        task_types = list(task_types)
        if task_types:
            where.append(f"task_type IN ({', '.join('?' for _ in task_types)})")
            params += task_types
        if brand:
            self._get("brands", brand, "brand")
            where.append("brand_id = ?")
            params.append(brand)
        rows = self.db["prompts"].rows_where(
            " AND ".join(where) or None, params, order_by="task_type, id", limit=limit
        )
        return [_decode(row, "messages", "metadata") for row in rows]

    def search_prompts(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        return [
            _decode(row, "messages", "metadata")
            for row in self.db["prompts"].search(query, limit=limit)
        ]

    def search_generations(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        return list(self.db["generations"].search(query, limit=limit))

    # ---- runs and jobs -----------------------------------------------------------------------

    def start_run(self, kind: str, config: dict[str, Any]) -> str:
        """Record a new run; earlier runs of this kind whose process is gone are marked failed."""
        run_id = f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        with self.transaction():
            running = "SELECT id, pid, pid_started FROM runs WHERE status = 'running' AND kind = ?"
            for row in self.db.query(running, [kind]):
                if row["pid"] and not _alive(row["pid"], row["pid_started"]):
                    self.db["runs"].update(
                        row["id"],
                        {
                            "status": "failed",
                            "finished_at": now(),
                            "summary": json.dumps({"error": "process ended without finishing"}),
                        },
                    )
            self.db["runs"].insert(
                {
                    "id": run_id,
                    "kind": kind,
                    "status": "running",
                    "config": json.dumps(config, sort_keys=True, default=str),
                    "pid": os.getpid(),
                    "pid_started": process_started(os.getpid()),
                    "started_at": now(),
                }
            )
        return run_id

    def claim_unfinished_run(self, kind: str) -> dict[str, Any] | None:
        """The latest run of ``kind`` that did not finish (killed, or failed), now owned by this
        process; None when the latest run finished. Raises BusyError while another process
        still runs it: two at once would do the same work twice."""
        with self.transaction():
            row = self.latest_run(kind)
            if row is None or row["status"] == "done":
                return None
            self._refuse_if_live(row)
            self.db["runs"].update(
                row["id"],
                {
                    "status": "running",
                    "pid": os.getpid(),
                    "pid_started": process_started(os.getpid()),
                },
            )
        return self.get_run(row["id"])

    def latest_run(self, kind: str) -> dict[str, Any] | None:
        """The newest run of ``kind`` (its row, JSON undecoded), or None."""
        sql = "SELECT * FROM runs WHERE kind = ? ORDER BY started_at DESC, rowid DESC LIMIT 1"
        return next(self.db.query(sql, [kind]), None)

    @staticmethod
    def run_is_live(run: dict[str, Any]) -> bool:
        """Whether a run row is still being worked on by a live process (its own, not a pid
        the system reused)."""
        return bool(
            run["status"] == "running" and run["pid"] and _alive(run["pid"], run["pid_started"])
        )

    def _refuse_if_live(self, run: dict[str, Any]) -> None:
        if self.run_is_live(run):
            raise BusyError(
                f"{run['kind']} run {run['id']} is still running (process {run['pid']}, started "
                f"{run['started_at'][:19]}Z); a second one would do the same work. Let it "
                "finish, or stop it: the next run continues where it stopped"
            )

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        with self.transaction():
            self.db["runs"].update(
                run_id,
                {
                    "status": status,
                    "summary": json.dumps(summary, default=str),
                    "finished_at": now(),
                },
            )

    def update_run_summary(self, run_id: str, summary: dict[str, Any]) -> None:
        """Replace a finished run's summary (the nightly job adds its training phase)."""
        with self.transaction():
            self.db["runs"].update(run_id, {"summary": json.dumps(summary, default=str)})

    def get_run(self, run_id: str) -> dict[str, Any]:
        return _decode(self._get("runs", run_id, "run"), "config", "summary")

    # ---- generations, critiques, pairs, reviews ----------------------------------------------

    def completed_candidates(self, prompt_id: str, config_hash: str) -> set[int]:
        """Candidate indices already recorded for this prompt under this generation config."""
        rows = self.db.execute(
            "SELECT candidate_index FROM generations WHERE prompt_id = ? AND config_hash = ?",
            [prompt_id, config_hash],
        )
        return {row[0] for row in rows}

    def record_generations(self, records: Iterable[GenerationRecord]) -> int:
        """Insert candidates; ones already recorded (same prompt, config, index) are skipped."""
        rows = [
            {
                "id": r.id,
                "prompt_id": r.prompt_id,
                "config_hash": r.config_hash,
                "candidate_index": r.candidate_index,
                "text": r.text,
                "model": r.model,
                "adapter_version": r.adapter_version,
                "sampling": json.dumps(r.sampling, sort_keys=True),
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "finish_reason": r.finish_reason,
                "run_id": r.run_id,
                "created_at": now(),
            }
            for r in records
        ]
        return self._insert_new("generations", rows)

    def get_generation(self, generation_id: str) -> dict[str, Any]:
        return _decode(self._get("generations", generation_id, "generation"), "sampling")

    def generations_for(self, prompt_id: str) -> list[dict[str, Any]]:
        rows = select_all(
            self.db,
            "SELECT * FROM generations WHERE prompt_id = ? ORDER BY config_hash, candidate_index",
            [prompt_id],
        )
        return [_decode(row, "sampling") for row in rows]

    def record_critique(self, critique: CritiqueRecord) -> bool:
        row = {
            "id": critique.id,
            "generation_id": critique.generation_id,
            "critic": critique.critic,
            "score": critique.score,
            "confidence": critique.confidence,
            "rationale": critique.rationale,
            "evidence": json.dumps(critique.evidence, sort_keys=True, default=str),
            "critic_version": critique.critic_version,
            "backend": critique.backend,
            "run_id": critique.run_id,
            "created_at": now(),
        }
        return self._insert_new("critiques", [row]) == 1

    def critiques_for(self, generation_id: str) -> list[dict[str, Any]]:
        rows = self.db["critiques"].rows_where(
            "generation_id = ?", [generation_id], order_by="critic"
        )
        return [_decode(row, "evidence") for row in rows]

    def critiques_in_run(self, run_id: str, generation_ids: list[str]) -> list[dict[str, Any]]:
        """What run ``run_id`` recorded about these generations (by the critiques' unique
        index, which starts with the generation)."""
        if not generation_ids:
            return []
        marks = ", ".join("?" * len(generation_ids))
        rows = select_all(
            self.db,
            f"SELECT * FROM critiques WHERE generation_id IN ({marks}) AND run_id = ?",
            [*generation_ids, run_id],
        )
        return [_decode(row, "evidence") for row in rows]

    def record_pair(self, pair: PairRecord) -> bool:
        """Record a preference pair; the same pair from the same source is recorded once."""
        if pair.source not in PAIR_SOURCES:
            raise InputError(f"pair source must be one of {', '.join(PAIR_SOURCES)}")
        row = {
            "id": pair.id,
            "prompt_id": pair.prompt_id,
            "chosen": pair.chosen,
            "rejected": pair.rejected,
            "chosen_generation_id": pair.chosen_generation_id,
            "rejected_generation_id": pair.rejected_generation_id,
            "source": pair.source,
            "margin": pair.margin,
            "run_id": pair.run_id,
            "created_at": now(),
        }
        return self._insert_new("pairs", [row]) == 1

    def record_review(self, review: ReviewRecord) -> Outcome:
        """Record a person's decision; deciding the same thing again replaces the earlier one
        (and recording exactly what is there already changes nothing)."""
        if review.kind not in REVIEW_KINDS:
            raise InputError(f"review kind must be one of {', '.join(REVIEW_KINDS)}")
        values = {
            "prompt_id": review.prompt_id,
            "generation_id": review.generation_id,
            "other_generation_id": review.other_generation_id,
            "reviewer": review.reviewer,
            "kind": review.kind,
            "preference": review.preference,
            "stars": review.stars,
            "thumbs": review.thumbs,
            "comment": review.comment,
            "rewrite": review.rewrite,
            "decision_id": review.decision_id,
            "source": review.source,
            "dataset": review.dataset,
            "dimension": review.dimension,
            "label": review.label,
            "logged_at": review.logged_at,
        }
        stamp = now()
        with self.transaction():
            existing = next(self.db.query("SELECT * FROM reviews WHERE id = ?", [review.id]), None)
            if existing and all(existing[k] == v for k, v in values.items()):
                return "unchanged"
            if existing:
                self.db["reviews"].update(review.id, {**values, "updated_at": stamp})
            else:
                self.db["reviews"].insert(
                    {"id": review.id, **values, "created_at": stamp, "updated_at": stamp}
                )
            self._queue_feedback({"id": review.id, **values})
            return "updated" if existing else "inserted"

    def record_decision(self, decision: DecisionRecord) -> None:
        """Insert or move on the decision for (run, prompt)."""
        values = {
            "run_id": decision.run_id,
            "prompt_id": decision.prompt_id,
            "config_hash": decision.config_hash,
            "outcome": decision.outcome,
            "status": decision.status,
            "reason": decision.reason,
            "uncertainty": decision.uncertainty,
            "margin": decision.margin,
            "chosen_generation_id": decision.chosen_generation_id,
            "rejected_generation_id": decision.rejected_generation_id,
            "pair_id": decision.pair_id,
            "reward_model": decision.reward_model,
            "rewards": json.dumps(decision.rewards, sort_keys=True, default=str),
        }
        stamp = now()
        with self.transaction():
            if self.db.execute("SELECT 1 FROM decisions WHERE id = ?", [decision.id]).fetchone():
                update_row(self.db, "decisions", decision.id, {**values, "updated_at": stamp})
            else:
                row = {"id": decision.id, **values, "created_at": stamp, "updated_at": stamp}
                insert_rows(self.db, "decisions", [row])

    def get_decision(self, run_id: str, prompt_id: str) -> dict[str, Any] | None:
        try:
            return _decode(self.db["decisions"].get(f"{run_id}/{prompt_id}"), "rewards")
        except _RowMissing:
            return None

    def waiting_decisions(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Escalated cases waiting for a person, most uncertain first."""
        where, params = "status = 'waiting'", []
        if run_id:
            where += " AND run_id = ?"
            params.append(run_id)
        rows = self.db["decisions"].rows_where(
            where, params, order_by="uncertainty DESC, created_at"
        )
        return [_decode(row, "rewards") for row in rows]

    def prompts_to_judge(
        self,
        config_hash: str,
        *,
        prompt_ids: Iterable[str] = (),
        task_types: Iterable[str] = (),
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Prompts with no decision yet under this generation config (new prompts, or prompts
        not judged with the current model and adapter), leaving out quarantined prompts
        (:meth:`prompt_failures`) unless ``prompt_ids`` names them."""
        judged = {
            r[0]
            for r in self.db.execute(
                "SELECT DISTINCT prompt_id FROM decisions WHERE config_hash = ?", [config_hash]
            )
        }
        prompt_ids = list(prompt_ids)
        if prompt_ids:  # named: tried even if an earlier run quarantined it
            candidates = [self.get_prompt(pid) for pid in prompt_ids]
        else:
            judged |= set(self.prompt_failures())
            candidates = self.list_prompts(task_types=task_types)
        fresh = [p for p in candidates if p["id"] not in judged]
        return fresh[:limit] if limit else fresh

    # ---- prompts a run could not get through ---------------------------------------------------

    def record_prompt_failure(
        self, prompt_id: str, stage: str, reason: str, run_id: str | None, *, status="failed"
    ) -> None:
        """Quarantine a prompt (``status`` failed) or mark it as being tried alone (attempt);
        the row follows the prompt's content, so an edited prompt is tried again."""
        with self.transaction():
            prompt = self._get("prompts", prompt_id, "prompt")
            old = next(self.db["prompt_failures"].rows_where("prompt_id = ?", [prompt_id]), None)
            self.db["prompt_failures"].upsert(
                {
                    "prompt_id": prompt_id,
                    "content_hash": prompt["content_hash"],
                    "stage": stage,
                    "status": status,
                    "reason": reason[:500],
                    "run_id": run_id,
                    "attempts": (old["attempts"] + 1) if old else 1,
                    "created_at": old["created_at"] if old else now(),
                    "updated_at": now(),
                },
                pk="prompt_id",
            )

    def prompt_failures(self, status: str = "failed") -> dict[str, dict[str, Any]]:
        """Prompt id -> its failure row, for prompts whose content has not changed since."""
        rows = self.db.query(
            """SELECT f.* FROM prompt_failures f JOIN prompts p ON p.id = f.prompt_id
               WHERE f.status = ? AND f.content_hash = p.content_hash""",
            [status],
        )
        return {row["prompt_id"]: row for row in rows}

    def unfinished_traces(self, run_id: str) -> dict[str, int]:
        """Prompt id -> graph invocations of this run that started and never finished: the
        process died inside them."""
        rows = self.db.execute(
            """SELECT prompt_id, count(*) FROM traces WHERE run_id = ? AND status = 'running'
               GROUP BY prompt_id""",
            [run_id],
        )
        return dict(rows.fetchall())

    def run_report(self, run_id: str) -> dict[str, Any]:
        """What a feedback run has produced so far, counted from the database."""
        one = lambda sql: self.db.execute(sql, [run_id]).fetchone()[0]  # noqa: E731
        outcomes = dict(
            self.db.execute(
                "SELECT outcome, count(*) FROM decisions WHERE run_id = ? GROUP BY outcome",
                [run_id],
            ).fetchall()
        )
        pairs = dict(
            self.db.execute(
                "SELECT source, count(*) FROM pairs WHERE run_id = ? GROUP BY source", [run_id]
            ).fetchall()
        )
        vetoes: dict[str, int] = {}
        vetoed = "SELECT evidence FROM critiques WHERE run_id = ? AND critic = 'compliance' AND score = 0"
        for (evidence,) in self.db.execute(vetoed, [run_id]):
            for rule in {v.get("rule") for v in json.loads(evidence).get("violations", [])}:
                vetoes[rule] = vetoes.get(rule, 0) + 1
        return {
            "prompts": one("SELECT count(*) FROM decisions WHERE run_id = ?"),
            "candidates": one(
                "SELECT count(DISTINCT generation_id) FROM critiques WHERE run_id = ?"
            ),
            "critic_calls": one("SELECT count(*) FROM critiques WHERE run_id = ?"),
            "unscored": one("SELECT count(*) FROM critiques WHERE run_id = ? AND score IS NULL"),
            "outcomes": outcomes,
            "pairs": pairs,
            "vetoes": vetoes,
            "waiting": one(
                "SELECT count(*) FROM decisions WHERE run_id = ? AND status = 'waiting'"
            ),
        }

    def contradictory_pairs(self) -> list[tuple[str, str]]:
        """Pairs of pair ids that contradict each other: for one prompt, A over B and B over A.
        Training on both teaches nothing and confuses the loss; export and training leave them
        out and name them."""
        rows = self.db.execute(
            """SELECT x.id, y.id FROM pairs x JOIN pairs y
               ON x.prompt_id = y.prompt_id AND x.id < y.id
               AND trim(x.chosen, ' 	
') = trim(y.rejected, ' 	
')
               AND trim(x.rejected, ' 	
') = trim(y.chosen, ' 	
')
               ORDER BY x.created_at, x.id"""
        )
        return [tuple(row) for row in rows.fetchall()]

    def iter_pairs(self) -> Iterator[dict[str, Any]]:
        """Pairs joined with their prompt's conversation, oldest first."""
        sql = """
            SELECT pairs.*, prompts.messages AS messages
            FROM pairs JOIN prompts ON prompts.id = pairs.prompt_id
            ORDER BY pairs.created_at, pairs.id
        """
        for row in self.db.query(sql):
            yield _decode(row, "messages")

    def _insert_new(self, table: str, rows: list[dict[str, Any]]) -> int:
        """Insert rows whose natural key is new; return how many were new."""
        if not rows:
            return 0
        ids = [row["id"] for row in rows]
        with self.transaction():
            marks = ", ".join("?" for _ in ids)
            known = {
                r[0] for r in self.db.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", ids)
            }
            fresh = [row for row in rows if row["id"] not in known]
            insert_rows(self.db, table, fresh)
            return len(fresh)


def _input_error(message: str, origin: str) -> InputError:
    """An InputError located at ``origin`` ("file:line")."""
    source, _, line = origin.rpartition(":")
    return InputError(message, source=source or origin, line=int(line) if line.isdigit() else None)
