"""Training verbs: jobs, the adapter registry, promotion and rollback, and the gate's reports.

Exactly one adapter per base model is ``promoted`` at a time: it is the one generation loads.
Promoting another retires it and remembers it as ``replaced_version``, so a rollback puts back
precisely what was in service before (or the bare base model when nothing was).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqlite_utils import Database

from ..errors import InputError, NotFoundError
from ._common import _alive, _decode, now, process_started

_JSON = ("config", "metrics")


class TrainingVerbs:
    """Training verbs of :class:`~criticloop.store.Store` (mixed in)."""

    db: Database

    def transaction(self) -> AbstractContextManager[Database]:  # provided by Store
        raise NotImplementedError

    # ---- jobs --------------------------------------------------------------------------------

    def start_job(
        self,
        *,
        method: str,
        launcher: str,
        base_model: str,
        parent_version: str | None,
        config: dict[str, Any],
        data_hash: str,
        examples: int,
        output_dir: str,
        log_path: str,
        run_id: str | None = None,
        job_id: str | None = None,
    ) -> str:
        """Record a training job as running in this process; return its id."""
        job_id = job_id or f"train-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        stamp = now()
        with self.transaction():
            self.db["training_jobs"].insert(
                {
                    "id": job_id,
                    "method": method,
                    "status": "running",
                    "launcher": launcher,
                    "base_model": base_model,
                    "parent_version": parent_version,
                    "config": json.dumps(config, sort_keys=True, default=str),
                    "data_hash": data_hash,
                    "examples": examples,
                    "output_dir": output_dir,
                    "log_path": log_path,
                    "metrics": json.dumps({}),
                    "pid": os.getpid(),
                    "pid_started": process_started(os.getpid()),
                    "run_id": run_id,
                    "created_at": stamp,
                    "updated_at": stamp,
                }
            )
        return job_id

    def claim_job(self, job_id: str) -> dict[str, Any]:
        """Take over an interrupted job to resume it in this process."""
        with self.transaction():
            self.get_job(job_id)
            self.db["training_jobs"].update(
                job_id,
                {
                    "status": "running",
                    "pid": os.getpid(),
                    "pid_started": process_started(os.getpid()),
                    "reason": None,
                    "finished_at": None,
                },
            )
        return self.get_job(job_id)

    def update_job(self, job_id: str, metrics: dict[str, Any]) -> None:
        """Record progress (the metrics so far) of a running job."""
        with self.transaction():
            self.db["training_jobs"].update(
                job_id, {"metrics": json.dumps(metrics, default=str), "updated_at": now()}
            )

    def finish_job(
        self,
        job_id: str,
        status: str,
        *,
        metrics: dict[str, Any] | None = None,
        adapter_version: str | None = None,
        reason: str | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "status": status,
            "reason": reason,
            "adapter_version": adapter_version,
            "updated_at": now(),
            "finished_at": now(),
        }
        if metrics is not None:
            values["metrics"] = json.dumps(metrics, default=str)
        with self.transaction():
            self.db["training_jobs"].update(job_id, values)

    def record_job_cost(
        self,
        job_id: str,
        *,
        wall_seconds: float,
        devices: int,
        tokens: int | None = None,
        price: float | None = None,
    ) -> dict[str, Any]:
        """Add an attempt's wall time to the job (a resumed job sums its attempts), set the
        tokens its trainer saw when known, and work out device-hours (wall seconds x devices /
        3600) and, with a price per device-hour, the cost. Returns the job's figures."""
        with self.transaction():
            job = self.get_job(job_id)
            wall = (job.get("wall_seconds") or 0.0) + max(wall_seconds, 0.0)
            hours = wall * devices / 3600
            figures = {
                "wall_seconds": round(wall, 3),
                "tokens": tokens if tokens is not None else job.get("tokens"),
                "devices": devices,
                "device_hours": round(hours, 6),
                "device_hour_price": price,
                "cost": round(hours * price, 6) if price is not None else None,
            }
            self.db["training_jobs"].update(job_id, figures)
        return figures

    def get_job(self, job_id: str) -> dict[str, Any]:
        row = next(self.db.query("SELECT * FROM training_jobs WHERE id = ?", [job_id]), None)
        if row is None:
            raise NotFoundError(f"no training job {job_id!r}")
        return _decode(row, *_JSON)

    def list_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        self.fail_dead_jobs()
        sql = "SELECT * FROM training_jobs ORDER BY created_at DESC, rowid DESC LIMIT ?"
        return [_decode(row, *_JSON) for row in self.db.query(sql, [limit])]

    def fail_dead_jobs(self) -> int:
        """Mark failed the running jobs whose process is gone (killed, or the machine died)."""
        with self.transaction():
            rows = self.db.query(
                "SELECT id, pid, pid_started FROM training_jobs WHERE status = 'running'"
            )
            dead = [r["id"] for r in rows if not (r["pid"] and _alive(r["pid"], r["pid_started"]))]
            for job_id in dead:
                self.db["training_jobs"].update(
                    job_id,
                    {
                        "status": "failed",
                        "reason": "killed: the process ended without finishing",
                        "finished_at": now(),
                        "updated_at": now(),
                    },
                )
        return len(dead)

    def resumable_job(self, method: str, data_hash: str, config_key: str) -> dict[str, Any] | None:
        """The latest failed job with this method, data and config that produced no adapter:
        its checkpoints let a new attempt continue where it stopped."""
        self.fail_dead_jobs()
        sql = """
            SELECT * FROM training_jobs
            WHERE method = ? AND data_hash = ? AND adapter_version IS NULL
            ORDER BY created_at DESC, rowid DESC LIMIT 1
        """
        row = next(self.db.query(sql, [method, data_hash]), None)
        if row is None or row["status"] != "failed":
            return None
        job = _decode(row, *_JSON)
        return job if job["config"].get("key") == config_key else None

    def iter_sft_examples(self) -> Iterator[dict[str, Any]]:
        """Answers people endorsed, for supervised fine-tuning, oldest first: rewrites
        (``reviews`` of kind rewrite), generations rated up (thumbs ``up`` or 4-5 stars) and the
        chosen side of people's pairs (sources ``human`` and ``human-revision``). Each is
        ``{id, prompt_id, messages, answer, source}``; one answer to a prompt comes once, from
        the first source that gives it (a rewrite is also its pair's chosen side)."""
        sql = """
            SELECT 'rewrite:' || r.id AS id, r.prompt_id, r.rewrite AS answer,
                   'rewrite' AS source, r.created_at
            FROM reviews r WHERE r.kind = 'rewrite' AND r.rewrite IS NOT NULL
            UNION ALL
            SELECT 'rating:' || r.id, r.prompt_id, g.text,
                   CASE WHEN r.kind = 'thumbs' THEN 'thumbs-up' ELSE 'stars' END, r.created_at
            FROM reviews r JOIN generations g ON g.id = r.generation_id
            WHERE (r.kind = 'thumbs' AND r.thumbs = 'up') OR (r.kind = 'stars' AND r.stars >= 4)
            UNION ALL
            SELECT 'pair:' || p.id, p.prompt_id, p.chosen, 'pair:' || p.source, p.created_at
            FROM pairs p WHERE p.source IN ('human', 'human-revision')
            ORDER BY created_at, id
        """
        messages: dict[str, list[dict[str, Any]]] = {}
        given: set[tuple[str, str]] = set()
        for row in list(self.db.query(sql)):
            key = (row["prompt_id"], (row["answer"] or "").strip())
            if key in given:
                continue
            given.add(key)
            if row["prompt_id"] not in messages:
                prompt = next(
                    self.db.query("SELECT messages FROM prompts WHERE id = ?", [row["prompt_id"]])
                )
                messages[row["prompt_id"]] = json.loads(prompt["messages"])
            yield {
                "id": row["id"],
                "prompt_id": row["prompt_id"],
                "messages": messages[row["prompt_id"]],
                "answer": row["answer"] or "",
                "source": row["source"],
            }

    def last_trained_at(self) -> str | None:
        """When the newest finished job started: pairs after it are new to training."""
        row = self.db.execute(
            "SELECT max(created_at) FROM training_jobs WHERE status = 'done'"
        ).fetchone()
        return row[0]

    def count_pairs_since(self, stamp: str | None) -> int:
        if stamp is None:
            return self.db.execute("SELECT count(*) FROM pairs").fetchone()[0]
        return self.db.execute(
            "SELECT count(*) FROM pairs WHERE created_at > ?", [stamp]
        ).fetchone()[0]

    # ---- adapters ----------------------------------------------------------------------------

    def record_adapter(
        self,
        version: str,
        *,
        base_model: str,
        method: str,
        path: str,
        metrics: dict[str, Any],
        status: str = "candidate",
        parent_version: str | None = None,
        run_id: str | None = None,
        data_hash: str | None = None,
        config: dict[str, Any] | None = None,
        job_id: str | None = None,
    ) -> None:
        """Register a trained LoRA adapter (once per version). Registering one as promoted
        retires the adapter it replaces."""
        row = {
            "version": version,
            "base_model": base_model,
            "method": method,
            "path": path,
            "parent_version": parent_version,
            "run_id": run_id,
            "metrics": json.dumps(metrics, sort_keys=True, default=str),
            "status": "candidate",
            "created_at": now(),
            "data_hash": data_hash,
            "config": json.dumps(config or {}, sort_keys=True, default=str),
            "job_id": job_id,
        }
        with self.transaction():
            self.db["adapters"].insert(row, pk="version", ignore=True)
            if status == "promoted":
                self.promote_adapter(version, "registered as promoted")
            elif status != "candidate":
                self.db["adapters"].update(version, {"status": status})

    def get_adapter(self, version: str) -> dict[str, Any]:
        row = next(self.db.query("SELECT * FROM adapters WHERE version = ?", [version]), None)
        if row is None:
            raise NotFoundError(f"no adapter {version!r} (criticloop adapters list shows them)")
        return _decode(row, *_JSON)

    def list_adapters(self, base_model: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE base_model = ?", [base_model]) if base_model else ("", [])
        sql = f"SELECT * FROM adapters {where} ORDER BY created_at DESC, rowid DESC"
        return [_decode(row, *_JSON) for row in self.db.query(sql, params)]

    def promoted_adapter(self, base_model: str) -> dict[str, Any] | None:
        """The adapter generation uses for ``base_model``; None means the bare base model."""
        row = next(
            self.db.query(
                "SELECT * FROM adapters WHERE status = 'promoted' AND base_model = ? "
                "ORDER BY promoted_at DESC LIMIT 1",
                [base_model],
            ),
            None,
        )
        return _decode(row, *_JSON) if row else None

    def promote_adapter(self, version: str, reason: str) -> str | None:
        """Put ``version`` in service; return the version it replaced (None: the base model)."""
        with self.transaction():
            adapter = self.get_adapter(version)
            if adapter["status"] == "promoted":
                return adapter["replaced_version"]
            current = self.promoted_adapter(adapter["base_model"])
            replaced = current["version"] if current else None
            if current:
                self.db["adapters"].update(
                    replaced, {"status": "retired", "reason": f"replaced by {version}"}
                )
            self.db["adapters"].update(
                version,
                {
                    "status": "promoted",
                    "promoted_at": now(),
                    "replaced_version": replaced,
                    "reason": reason,
                },
            )
        return replaced

    def reject_adapter(self, version: str, reason: str) -> None:
        with self.transaction():
            if self.get_adapter(version)["status"] == "promoted":
                raise InputError(f"adapter {version} is in service; roll it back instead")
            self.db["adapters"].update(version, {"status": "rejected", "reason": reason})

    def rollback_adapter(self, base_model: str) -> tuple[str, str | None]:
        """Retire the adapter in service and put back the one it replaced (None: base model).
        Returns (retired version, version now in service)."""
        with self.transaction():
            current = self.promoted_adapter(base_model)
            if current is None:
                raise InputError(
                    f"no adapter is in service for {base_model}: generation already uses the "
                    "base model"
                )
            self.db["adapters"].update(
                current["version"], {"status": "retired", "reason": "rolled back"}
            )
            previous = current["replaced_version"]
            if previous:
                self.db["adapters"].update(
                    previous,
                    {
                        "status": "promoted",
                        "promoted_at": now(),
                        "reason": f"restored by rolling back {current['version']}",
                    },
                )
        return current["version"], previous

    # ---- the gate ----------------------------------------------------------------------------

    def record_gate_report(
        self,
        candidate_version: str,
        baseline_version: str | None,
        decision: str,
        reason: str,
        report: dict[str, Any],
        run_id: str | None = None,
    ) -> str:
        report_id = f"gate-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        with self.transaction():
            self.db["gate_reports"].insert(
                {
                    "id": report_id,
                    "candidate_version": candidate_version,
                    "baseline_version": baseline_version,
                    "decision": decision,
                    "reason": reason,
                    "report": json.dumps(report, sort_keys=True, default=str),
                    "run_id": run_id,
                    "created_at": now(),
                }
            )
        return report_id

    def gate_reports(self, candidate_version: str) -> list[dict[str, Any]]:
        sql = "SELECT * FROM gate_reports WHERE candidate_version = ? ORDER BY created_at DESC"
        return [_decode(row, "report") for row in self.db.query(sql, [candidate_version])]
