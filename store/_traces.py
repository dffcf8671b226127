"""Trace verbs: graph invocations node by node, judge calls with their cost, and the outbox of
people's decisions bound for LangSmith.

Every ``graph.invoke`` of a prompt's thread is a *trace* (its id is also the LangSmith root
run id when tracing is on); each node execution in it is a *span* with its inputs, outputs and
seconds. ``criticloop traces`` reads them with LangSmith off.

A review of a case whose run was traced to LangSmith queues feedback rows in the same
transaction as the review (``feedback_outbox``), so a crash right after the key press loses
nothing; a poster sends them later and marks them sent. Withdrawing or replacing a review
drops its unsent rows and queues deletes for the sent ones.
"""

from __future__ import annotations

import json
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from ._common import _decode, _key, insert_rows, now, update_row

FEEDBACK_KEYS = {
    "preference": "human_preference",
    "rewrite": "human_rewrite",
    "stars": "human_stars",
    "thumbs": "human_thumbs",
    "comment": "human_comment",
}
"""The LangSmith feedback key of each review kind."""


@dataclass(frozen=True)
class CriticCall:
    """One critic call: a local critic on one candidate, or one LLM judgement of a pair."""

    critic: str
    backend: str
    generation_ids: tuple[str, ...]
    seconds: float
    ok: bool = True
    model: str | None = None
    attempts: int = 1
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    error: str | None = None
    trace_id: str | None = None
    run_id: str | None = None
    prompt_id: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def of_judge(cls, critic: str, call: Any, **where: Any) -> CriticCall:
        """The record of one LLM judge call (an ``agents._crew.CallRecord``); ``where``: its
        ``run_id``, ``prompt_id``, ``trace_id`` and, when the call has none, ``generation_ids``."""
        where.setdefault("generation_ids", ())
        return cls(
            critic=critic,
            backend="crew",
            model=call.model,
            seconds=call.seconds,
            ok=call.ok,
            attempts=call.attempts,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            cost_usd=call.cost_usd,
            error=call.error,
            **{**where, "generation_ids": call.generation_ids or where["generation_ids"]},
        )


class TraceVerbs:
    """Trace verbs of :class:`~criticloop.store.Store` (mixed in)."""

    db: Database

    def transaction(self) -> AbstractContextManager[Database]:  # provided by Store
        raise NotImplementedError

    # ---- traces and spans --------------------------------------------------------------------

    def start_trace(
        self,
        trace_id: str,
        run_id: str,
        prompt_id: str,
        kind: str,
        langsmith_project: str | None = None,
    ) -> None:
        with self.transaction():
            insert_rows(
                self.db,
                "traces",
                [
                    {
                        "id": trace_id,
                        "run_id": run_id,
                        "prompt_id": prompt_id,
                        "kind": kind,
                        "status": "running",
                        "langsmith_project": langsmith_project,
                        "error": None,
                        "started_at": now(),
                        "seconds": None,
                    }
                ],
            )

    def finish_trace(
        self, trace_id: str, status: str, seconds: float, error: str | None = None
    ) -> None:
        with self.transaction():
            update_row(
                self.db,
                "traces",
                trace_id,
                {"status": status, "seconds": round(seconds, 4), "error": error},
            )

    def record_span(
        self,
        trace_id: str,
        node: str,
        started_at: str,
        seconds: float,
        inputs: dict[str, Any],
        outputs: dict[str, Any] | None,
        error: str | None = None,
    ) -> None:
        row = {
            "id": uuid.uuid4().hex,
            "trace_id": trace_id,
            "node": node,
            "started_at": started_at,
            "seconds": round(seconds, 4),
            "inputs": json.dumps(inputs, default=str, ensure_ascii=False),
            "outputs": None
            if outputs is None
            else json.dumps(outputs, default=str, ensure_ascii=False),
            "error": error,
        }
        with self.transaction():
            insert_rows(self.db, "spans", [row])

    def traces_for(self, run_id: str, prompt_id: str | None = None) -> list[dict[str, Any]]:
        where, params = "run_id = ?", [run_id]
        if prompt_id is not None:
            where += " AND prompt_id = ?"
            params.append(prompt_id)
        return list(self.db["traces"].rows_where(where, params, order_by="started_at, id"))

    def traced_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Recent graph runs with what their traces hold, newest first."""
        return list(
            self.db.query(
                """SELECT r.id, r.status, r.started_at, r.finished_at,
                          (SELECT COUNT(DISTINCT prompt_id) FROM traces t WHERE t.run_id = r.id)
                              AS prompts,
                          (SELECT COUNT(*) FROM traces t WHERE t.run_id = r.id) AS traces,
                          (SELECT COUNT(*) FROM critic_calls c WHERE c.run_id = r.id)
                              AS critic_calls,
                          (SELECT SUM(cost_usd) FROM critic_calls c WHERE c.run_id = r.id)
                              AS cost_usd,
                          (SELECT MAX(langsmith_project) FROM traces t WHERE t.run_id = r.id)
                              AS langsmith_project
                   FROM runs r WHERE r.kind = 'graph'
                   ORDER BY r.started_at DESC, r.rowid DESC LIMIT ?""",
                [limit],
            )
        )

    def run_threads(self, run_id: str) -> list[dict[str, Any]]:
        """Per prompt of a run: its traces, their seconds, and the decision it reached."""
        return list(
            self.db.query(
                """SELECT t.prompt_id, COUNT(*) AS traces, SUM(t.seconds) AS seconds,
                          GROUP_CONCAT(t.kind, ',') AS kinds,
                          (SELECT status FROM traces l WHERE l.run_id = t.run_id
                               AND l.prompt_id = t.prompt_id
                               ORDER BY l.started_at DESC LIMIT 1) AS last_status,
                          d.outcome, d.reason
                   FROM traces t LEFT JOIN decisions d
                        ON d.run_id = t.run_id AND d.prompt_id = t.prompt_id
                   WHERE t.run_id = ? GROUP BY t.prompt_id ORDER BY MIN(t.started_at)""",
                [run_id],
            )
        )

    def spans_for(self, trace_id: str) -> list[dict[str, Any]]:
        rows = self.db["spans"].rows_where("trace_id = ?", [trace_id], order_by="started_at, id")
        return [_decode(row, "inputs", "outputs") for row in rows]

    # ---- critic calls ------------------------------------------------------------------------

    def record_critic_call(self, call: CriticCall, key: tuple[Any, ...] | None = None) -> None:
        """Record one critic call. With ``key`` (what makes the call itself: its run, prompt,
        critic, candidates and place among the node's calls) a rerun of the same node after a
        kill replaces the killed attempt's row instead of adding a second one."""
        row = {
            "id": "cc-" + _key(*key) if key is not None else call.id,
            "trace_id": call.trace_id,
            "run_id": call.run_id,
            "prompt_id": call.prompt_id,
            "critic": call.critic,
            "backend": call.backend,
            "model": call.model,
            "generation_ids": json.dumps(list(call.generation_ids)),
            "attempts": call.attempts,
            "prompt_tokens": call.prompt_tokens,
            "completion_tokens": call.completion_tokens,
            "seconds": round(call.seconds, 4),
            "cost_usd": call.cost_usd,
            "ok": int(call.ok),
            "error": call.error,
            "created_at": now(),
        }
        with self.transaction():
            insert_rows(self.db, "critic_calls", [row], replace=True)

    def critic_calls_for(self, trace_id: str) -> list[dict[str, Any]]:
        rows = self.db["critic_calls"].rows_where(
            "trace_id = ?", [trace_id], order_by="created_at, id"
        )
        return [_decode(row, "generation_ids") for row in rows]

    def critic_costs(self, run_id: str) -> dict[str, Any]:
        """Per critic and backend: calls, failures, seconds, tokens and money, and the totals."""
        rows = self.db.query(
            """SELECT critic, backend, COUNT(*) AS calls, SUM(1 - ok) AS failed,
                      SUM(attempts) AS attempts, SUM(seconds) AS seconds,
                      SUM(prompt_tokens) AS prompt_tokens,
                      SUM(completion_tokens) AS completion_tokens,
                      SUM(cost_usd) AS cost_usd, COUNT(cost_usd) AS priced,
                      GROUP_CONCAT(DISTINCT model) AS models
               FROM critic_calls WHERE run_id = ? GROUP BY critic, backend
               ORDER BY critic, backend""",
            [run_id],
        )
        per_critic: dict[str, Any] = {}
        totals = {"calls": 0, "seconds": 0.0, "prompt_tokens": 0, "completion_tokens": 0}
        cost: float | None = None
        for row in rows:
            name = (
                row["critic"] if row["backend"] == "local" else f"{row['critic']}/{row['backend']}"
            )
            entry = {
                "backend": row["backend"],
                "calls": row["calls"],
                "failed": row["failed"],
                "seconds": round(row["seconds"] or 0.0, 3),
                "mean_seconds": round((row["seconds"] or 0.0) / row["calls"], 4),
            }
            if row["backend"] != "local":
                entry |= {
                    "models": row["models"],
                    "attempts": row["attempts"],
                    "prompt_tokens": row["prompt_tokens"] or 0,
                    "completion_tokens": row["completion_tokens"] or 0,
                    "cost_usd": None if not row["priced"] else round(row["cost_usd"], 6),
                }
                totals["prompt_tokens"] += row["prompt_tokens"] or 0
                totals["completion_tokens"] += row["completion_tokens"] or 0
                if row["priced"]:
                    cost = (cost or 0.0) + row["cost_usd"]
            per_critic[name] = entry
            totals["calls"] += row["calls"]
            totals["seconds"] += row["seconds"] or 0.0
        totals["seconds"] = round(totals["seconds"], 3)
        return {
            "per_critic": per_critic,
            **totals,
            "cost_usd": None if cost is None else round(cost, 6),
        }

    # ---- the LangSmith feedback outbox -------------------------------------------------------

    def _queue_feedback(self, review: dict[str, Any]) -> int:
        """Queue LangSmith feedback for ``review`` if its case's run was traced there; call
        inside the transaction that records the review. Returns the rows queued."""
        self._retract_feedback([review["id"]])
        if not review.get("decision_id"):
            return 0
        case = next(
            self.db.query("SELECT * FROM decisions WHERE id = ?", [review["decision_id"]]), None
        )
        if case is None:
            return 0
        # The trace where the critics judged the case: its last invocation before it waited.
        trace = next(
            self.db.query(
                """SELECT id FROM traces WHERE run_id = ? AND prompt_id = ?
                   AND langsmith_project IS NOT NULL AND kind IN ('start', 'continue', 'restart')
                   ORDER BY started_at DESC LIMIT 1""",
                [case["run_id"], case["prompt_id"]],
            ),
            None,
        )
        if trace is None:
            return 0
        kind = review["kind"]
        label = "A" if review["generation_id"] == case["chosen_generation_id"] else "B"
        body: dict[str, Any] = {
            "comment": review.get("comment"),
            "source_info": {
                "reviewer": review["reviewer"],
                "review_id": review["id"],
                "decision_id": review["decision_id"],
                "generation_id": review["generation_id"],
                "candidate": label,
            },
        }
        if kind in ("preference", "rewrite"):
            preference = review["preference"]
            body |= {"score": {"a": 1.0, "b": 0.0, "tie": 0.5}[preference], "value": preference}
            if kind == "rewrite":
                body["correction"] = {"output": review["rewrite"]}
        elif kind == "stars":
            body |= {"score": review["stars"], "value": label}
        elif kind == "thumbs":
            body |= {"score": 1.0 if review["thumbs"] == "up" else 0.0, "value": label}
        else:  # a comment on one candidate
            body |= {"value": label}
        self._outbox(review["id"], trace["id"], "create", FEEDBACK_KEYS[kind], body)
        return 1

    def _retract_feedback(self, review_ids: list[str]) -> None:
        """Inside a transaction: unsent feedback of these reviews is dropped, sent feedback
        gets a delete queued."""
        for review_id in review_ids:
            rows = list(
                self.db.query(
                    "SELECT * FROM feedback_outbox WHERE review_id = ? AND op = 'create'",
                    [review_id],
                )
            )
            for row in rows:
                if row["status"] == "sent":
                    self._outbox(
                        review_id, row["trace_id"], "delete", row["key"], {"id": row["id"]}
                    )
                    self.db.execute(  # retracted: never deleted twice
                        "UPDATE feedback_outbox SET review_id = ? WHERE id = ?",
                        [f"{review_id}#retracted", row["id"]],
                    )
                else:
                    self.db.execute("DELETE FROM feedback_outbox WHERE id = ?", [row["id"]])

    def _outbox(self, review_id: str, trace_id: str, op: str, key: str, body: dict) -> None:
        self.db["feedback_outbox"].insert(
            {
                "id": uuid.uuid4().hex if op == "create" else f"delete-{body['id']}",
                "review_id": review_id,
                "trace_id": trace_id,
                "op": op,
                "key": key,
                "body": json.dumps(body, ensure_ascii=False),
                "status": "pending",
                "attempts": 0,
                "error": None,
                "created_at": now(),
                "sent_at": None,
            },
            replace=op == "delete",
        )

    def pending_feedback(self, limit: int = 200, max_attempts: int = 5) -> list[dict[str, Any]]:
        rows = self.db["feedback_outbox"].rows_where(
            "status = 'pending' AND attempts < ?",
            [max_attempts],
            order_by="created_at, id",
            limit=limit,
        )
        return [_decode(row, "body") for row in rows]

    def mark_feedback(self, feedback_id: str, error: str | None = None) -> None:
        """Record one attempt to send: sent, or still pending with the error (failed after
        five attempts)."""
        with self.transaction():
            row = next(self.db.query("SELECT * FROM feedback_outbox WHERE id = ?", [feedback_id]))
            attempts = row["attempts"] + 1
            if error is None:
                update = {"status": "sent", "attempts": attempts, "error": None, "sent_at": now()}
            else:
                status = "failed" if attempts >= 5 else "pending"
                update = {"status": status, "attempts": attempts, "error": error[:500]}
            self.db["feedback_outbox"].update(feedback_id, update)
