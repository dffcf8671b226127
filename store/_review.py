"""The review queue: escalated cases, the leases that keep two reviewers off one case, people's
verdicts and annotations, and the numbers the reviewer app's stats screen shows.

A *verdict* decides a case (an A/B/tie preference, or a rewrite of the better candidate); stars,
thumbs and comments *annotate* it. Both are rows of ``reviews`` tied to the case by
``decision_id``, beside the critics' critiques, never over them. With ``reviews_per_item`` N > 1 a
case stays open until N different reviewers have given a verdict.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from ..errors import BusyError, InputError, NotFoundError
from ._common import _VERDICT_IN, _decode, now
from ._rows import ReviewRecord


@dataclass(frozen=True)
class CaseFilter:
    """Which escalated cases to offer: by brand, task type, run, or a full-text search over the
    prompt and its candidates."""

    brand: str | None = None
    task_type: str | None = None
    run_id: str | None = None
    search: str | None = None

    def describe(self) -> str:
        parts = [
            f"{name} {value}"
            for name, value in (
                ("brand", self.brand),
                ("task", self.task_type),
                ("run", self.run_id),
                ("search", self.search and repr(self.search)),
            )
            if value
        ]
        return ", ".join(parts) or "all"

    def __bool__(self) -> bool:
        return any((self.brand, self.task_type, self.run_id, self.search))


ALL_CASES = CaseFilter()


def fts_query(text: str) -> str:
    """A user's words as an FTS5 query that cannot be a syntax error: every word quoted."""
    words = [w.replace('"', '""') for w in text.split()]
    return " ".join(f'"{w}"' for w in words if w)


class ReviewVerbs:
    """Review-queue verbs of :class:`~criticloop.store.Store` (mixed in)."""

    db: Database

    def transaction(self) -> AbstractContextManager[Database]:  # provided by Store
        raise NotImplementedError

    # ---- the queue ---------------------------------------------------------------------------

    def claim_case(
        self,
        holder: str,
        reviewer: str,
        *,
        reviews_per_item: int = 1,
        lease_seconds: float = 900.0,
        filters: CaseFilter = ALL_CASES,
        exclude: Iterable[str] = (),
        only: str | None = None,
    ) -> dict[str, Any] | None:
        """Lease the most uncertain open case (or case ``only``) to ``holder`` (one running app)
        and return its decision row; None when none is open to this reviewer. A holder keeps one
        lease: the previous one is let go. Expired leases (an app that died) are cleared first."""
        with self.transaction():
            self.db.execute(
                "DELETE FROM leases WHERE holder = ? OR expires_at <= ?", [holder, now()]
            )
            rows = self._open_cases(
                holder, reviewer, reviews_per_item, filters, exclude, only=only, limit=1
            )
            if not rows:
                return None
            case = rows[0]
            self.db["leases"].insert(
                {
                    "decision_id": case["id"],
                    "holder": holder,
                    "reviewer": reviewer,
                    "expires_at": now(lease_seconds),
                    "created_at": now(),
                }
            )
        return _decode(case, "rewards")

    def queue_summary(
        self,
        holder: str,
        reviewer: str,
        *,
        reviews_per_item: int = 1,
        filters: CaseFilter = ALL_CASES,
    ) -> dict[str, int]:
        """How many cases wait (in all, and matching ``filters``), how many of those are open to
        this reviewer, and why the rest are not: decided and being resumed, given a verdict by
        this reviewer and waiting for more reviewers, or leased by others."""
        open_now = self._open_cases(holder, reviewer, reviews_per_item, filters)
        where, params = self._filter_sql(filters)
        matching = {
            r[0]
            for r in self.db.execute(
                "SELECT d.id FROM decisions d JOIN prompts p ON p.id = d.prompt_id "
                f"WHERE d.status = 'waiting'{where}",
                params,
            )
        }
        mine = {
            r[0]
            for r in self.db.execute(
                f"SELECT DISTINCT decision_id FROM reviews WHERE reviewer = ? AND {_VERDICT_IN}",
                [reviewer],
            )
        }
        all_waiting = self.db.execute(
            "SELECT count(*) FROM decisions WHERE status = 'waiting'"
        ).fetchone()[0]
        settling = {d["id"] for d in self.cases_to_settle(reviews_per_item)} & matching
        return {
            "waiting": all_waiting,
            "matching": len(matching),
            "open": len(open_now),
            "settling": len(settling),
            "awaiting_others": len((matching & mine) - settling),
        }

    def _open_cases(
        self,
        holder: str,
        reviewer: str,
        reviews_per_item: int,
        filters: CaseFilter,
        exclude: Iterable[str] = (),
        *,
        only: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Waiting cases this reviewer may take: not decided by them, not held by another app
        of theirs, and with fewer verdicts plus others' leases than ``reviews_per_item``."""
        where, params = self._filter_sql(filters)
        exclude = list(exclude)
        if exclude:
            where += f" AND d.id NOT IN ({', '.join('?' for _ in exclude)})"
            params += exclude
        if only is not None:
            where += " AND d.id = ?"
            params.append(only)
        sql = f"""
            SELECT d.* FROM decisions d
            JOIN prompts p ON p.id = d.prompt_id
            LEFT JOIN (
                SELECT decision_id, count(DISTINCT reviewer) AS n, max(reviewer = ?) AS mine
                FROM reviews WHERE decision_id IS NOT NULL AND {_VERDICT_IN}
                GROUP BY decision_id
            ) v ON v.decision_id = d.id
            LEFT JOIN (
                SELECT decision_id, count(*) AS n, max(reviewer = ?) AS mine
                FROM leases WHERE expires_at > ? AND holder != ?
                GROUP BY decision_id
            ) h ON h.decision_id = d.id
            WHERE d.status = 'waiting'
              AND coalesce(v.mine, 0) = 0 AND coalesce(h.mine, 0) = 0
              AND coalesce(v.n, 0) + coalesce(h.n, 0) < ?
              {where}
            ORDER BY d.uncertainty DESC, d.created_at, d.id
        """
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        head = [reviewer, reviewer, now(), holder, reviews_per_item]
        return [dict(row) for row in self.db.query(sql, head + params)]

    def _filter_sql(self, filters: CaseFilter) -> tuple[str, list[Any]]:
        """SQL conditions (``p``: prompts, ``d``: decisions) and their parameters."""
        where, params = "", []
        if filters.brand:
            where += " AND p.brand_id = ?"
            params.append(filters.brand)
        if filters.task_type:
            where += " AND p.task_type = ?"
            params.append(filters.task_type)
        if filters.run_id:
            where += " AND d.run_id = ?"
            params.append(filters.run_id)
        query = fts_query(filters.search or "")
        if query:
            where += (
                " AND (p.rowid IN (SELECT rowid FROM prompts_fts WHERE prompts_fts MATCH ?)"
                " OR EXISTS (SELECT 1 FROM generations g"
                " JOIN generations_fts f ON f.rowid = g.rowid"
                " WHERE generations_fts MATCH ?"
                " AND g.id IN (d.chosen_generation_id, d.rejected_generation_id)))"
            )
            params += [query, query]
        return where, params

    def renew_lease(self, holder: str, lease_seconds: float) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE leases SET expires_at = ? WHERE holder = ?", [now(lease_seconds), holder]
            )

    def release_leases(self, holder: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM leases WHERE holder = ?", [holder])

    # ---- verdicts and annotations ------------------------------------------------------------

    def record_verdict(
        self,
        decision_id: str,
        reviewer: str,
        preference: str,
        *,
        rewrite: str | None = None,
        comment: str | None = None,
        holder: str | None = None,
        reviews_per_item: int = 1,
    ) -> list[dict[str, Any]]:
        """Record ``reviewer``'s verdict on a waiting case (replacing their earlier one) and let go
        of ``holder``'s lease, in one transaction; return the case's verdicts so far.

        ``preference``: ``a`` (the critics' choice), ``b`` or ``tie``. With ``rewrite``, the
        reviewer edited candidate ``preference`` into that text.

        Once a case has its ``reviews_per_item`` verdicts it is being decided: another verdict,
        from anyone (a second ``graph decide`` racing the first, say), is refused until it is
        settled or a verdict is undone. The check and the write are one ``BEGIN IMMEDIATE``
        transaction, so of two racing verdicts the second always sees the first.
        """

        if preference not in ("a", "b", "tie"):
            raise InputError(f"a verdict is a, b or tie, not {preference!r}")
        if rewrite is not None:
            rewrite = rewrite.strip()
            if preference == "tie" or not rewrite:
                raise InputError("a rewrite needs the candidate it edits (a or b) and some text")
        with self.transaction():
            case = self._waiting_case(decision_id)
            given = self.verdicts(decision_id)
            if len(given) >= reviews_per_item:
                who = ", ".join(f"{v['reviewer']} ({v['preference']})" for v in given)
                raise BusyError(
                    f"case {decision_id!r} already has its verdicts ({who}) and is being decided; "
                    "undo one to decide it again"
                )
            a, b = case["chosen_generation_id"], case["rejected_generation_id"]
            edited, other = (b, a) if preference == "b" else (a, b)
            self._delete_verdict(decision_id, reviewer)
            self.record_review(  # type: ignore[attr-defined]
                ReviewRecord(
                    prompt_id=case["prompt_id"],
                    reviewer=reviewer,
                    kind="rewrite" if rewrite is not None else "preference",
                    generation_id=edited if rewrite is not None else a,
                    other_generation_id=other if rewrite is not None else b,
                    preference=preference,
                    comment=comment or None,
                    rewrite=rewrite,
                    decision_id=decision_id,
                )
            )
            if holder:
                self.db.execute("DELETE FROM leases WHERE holder = ?", [holder])
            return self.verdicts(decision_id)

    def _delete_verdict(self, decision_id: str, reviewer: str) -> int:
        """Inside a transaction: delete ``reviewer``'s verdict on a case (and retract its
        LangSmith feedback); return how many reviews went."""
        ids = [
            row["id"]
            for row in self.db.query(
                f"SELECT id FROM reviews WHERE decision_id = ? AND reviewer = ? AND {_VERDICT_IN}",
                [decision_id, reviewer],
            )
        ]
        self._retract_feedback(ids)  # type: ignore[attr-defined]
        self.db.execute(
            f"DELETE FROM reviews WHERE decision_id = ? AND reviewer = ? AND {_VERDICT_IN}",
            [decision_id, reviewer],
        )
        return len(ids)

    def annotate(
        self,
        decision_id: str,
        reviewer: str,
        generation_id: str,
        *,
        stars: int | None = None,
        thumbs: str | None = None,
        comment: str | None = None,
    ) -> None:
        """Rate or comment on one candidate of a case; doing it again replaces the earlier one."""

        given = [k for k, v in (("stars", stars), ("thumbs", thumbs), ("comment", comment)) if v]
        if len(given) != 1:
            raise InputError("annotate with exactly one of stars, thumbs or comment")
        kind = given[0]
        with self.transaction():
            case = self._waiting_case(decision_id)
            if generation_id not in (case["chosen_generation_id"], case["rejected_generation_id"]):
                raise InputError(f"{generation_id!r} is not a candidate of case {decision_id!r}")
            self.record_review(  # type: ignore[attr-defined]
                ReviewRecord(
                    prompt_id=case["prompt_id"],
                    reviewer=reviewer,
                    kind=kind,
                    generation_id=generation_id,
                    stars=stars,
                    thumbs=thumbs,
                    comment=comment,
                    decision_id=decision_id,
                )
            )

    def _waiting_case(self, decision_id: str) -> dict[str, Any]:
        case = next(self.db.query("SELECT * FROM decisions WHERE id = ?", [decision_id]), None)
        if case is None:
            raise NotFoundError(f"no escalated case {decision_id!r}")
        if case["status"] != "waiting":
            raise NotFoundError(
                f"case {decision_id!r} is not waiting for review (outcome {case['outcome']})"
            )
        return case

    def case_reviews(self, decision_id: str, reviewer: str | None = None) -> list[dict[str, Any]]:
        """Every review given on a case (by ``reviewer``, if given), oldest first."""
        where, params = "decision_id = ?", [decision_id]
        if reviewer:
            where += " AND reviewer = ?"
            params.append(reviewer)
        return list(self.db["reviews"].rows_where(where, params, order_by="created_at, id"))

    def verdicts(self, decision_id: str) -> list[dict[str, Any]]:
        """The verdicts given on a case, one per reviewer, oldest first."""
        return list(
            self.db["reviews"].rows_where(
                f"decision_id = ? AND {_VERDICT_IN}", [decision_id], order_by="created_at, id"
            )
        )

    def withdraw_verdict(self, decision_id: str, reviewer: str) -> dict[str, Any] | None:
        """Undo ``reviewer``'s verdict on a case. If the verdicts had closed the case, reopen it:
        the pairs people's verdicts made for it are deleted and it waits again. Returns the case
        as it was when it had to be reopened (its graph thread must be rewound), else None."""
        with self.transaction():
            deleted = self._delete_verdict(decision_id, reviewer)
            if not deleted:
                raise NotFoundError(f"{reviewer} has no verdict on case {decision_id!r} to undo")
            case = next(self.db.query("SELECT * FROM decisions WHERE id = ?", [decision_id]))
            if case["status"] != "done" or case["outcome"] != "human":
                return None
            self.db["decisions"].update(
                decision_id,
                {
                    "status": "waiting",
                    "outcome": "escalated",
                    "pair_id": None,
                    "reason": f"reopened: {reviewer} undid their verdict",
                    "updated_at": now(),
                },
            )
            self.db.execute(
                "DELETE FROM pairs WHERE run_id = ? AND prompt_id = ? "
                "AND source IN ('human', 'human-revision')",
                [case["run_id"], case["prompt_id"]],
            )
        return _decode(case, "rewards")

    def waiting_runs(self) -> list[str]:
        """The runs that have cases waiting for review, newest first."""
        return [
            row[0]
            for row in self.db.execute(
                "SELECT DISTINCT run_id FROM decisions WHERE status = 'waiting' "
                "ORDER BY run_id DESC"
            )
        ]

    def cases_to_settle(self, reviews_per_item: int) -> list[dict[str, Any]]:
        """Waiting cases that already have enough verdicts: their graph threads must resume
        (the app that recorded the last verdict died before resuming it, or N was lowered)."""
        sql = f"""
            SELECT d.* FROM decisions d
            WHERE d.status = 'waiting' AND (
                SELECT count(DISTINCT reviewer) FROM reviews r
                WHERE r.decision_id = d.id AND r.{_VERDICT_IN}
            ) >= ?
            ORDER BY d.updated_at
        """
        return [_decode(dict(r), "rewards") for r in self.db.query(sql, [reviews_per_item])]

    # ---- stats -------------------------------------------------------------------------------

    def review_stats(self, *, recent_runs: int = 5) -> dict[str, Any]:
        """Queue size and age, decisions per reviewer, agreement between the critics and people
        (per critic and overall) and between people, and the latest runs."""
        waiting = list(
            self.db.query(
                "SELECT run_id, count(*) AS n, min(created_at) AS oldest FROM decisions "
                "WHERE status = 'waiting' GROUP BY run_id ORDER BY oldest"
            )
        )
        reviewers = list(
            self.db.query(
                f"""SELECT reviewer,
                    sum({_VERDICT_IN}) AS verdicts,
                    sum(kind = 'rewrite') AS rewrites,
                    sum(kind = 'stars') AS stars,
                    sum(kind = 'thumbs') AS thumbs,
                    sum(comment IS NOT NULL) AS comments,
                    max(updated_at) AS last
                FROM reviews WHERE source = 'reviewer'
                GROUP BY reviewer ORDER BY verdicts DESC, reviewer"""
            )
        )
        rows = self.db.query(
            f"""SELECT r.decision_id, r.reviewer, r.preference, d.chosen_generation_id AS a,
                       d.rejected_generation_id AS b, d.rewards
                FROM reviews r JOIN decisions d ON d.id = r.decision_id
                WHERE r.{_VERDICT_IN}"""
        )
        verdicts = [_decode(dict(r), "rewards") for r in rows]
        runs = [
            _decode(dict(r), "summary")
            for r in self.db.query(
                "SELECT id, kind, status, started_at, finished_at, summary FROM runs "
                "WHERE kind = 'graph' ORDER BY started_at DESC LIMIT ?",
                [recent_runs],
            )
        ]
        return {
            "queue": {
                "waiting": sum(r["n"] for r in waiting),
                "oldest": min((r["oldest"] for r in waiting), default=None),
                "by_run": waiting,
            },
            "reviewers": reviewers,
            "imported": dict(
                self.db.execute(
                    "SELECT dataset, count(*) FROM reviews WHERE source = 'import' GROUP BY dataset"
                ).fetchall()
            ),
            "critics": critic_agreement(verdicts),
            "people": reviewer_agreement(verdicts),
            "ratings": self.rating_stats(),
            "runs": runs,
        }


def critic_agreement(verdicts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """How often each critic, and the critics' combined reward, preferred the candidate people
    preferred. Ties (from people, or equal or missing critic scores) are counted apart."""
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for v in verdicts:
        if v["preference"] not in ("a", "b"):
            per["overall"]["human_tie"] += 1
            continue
        rewards = v["rewards"] or {}
        ra, rb = rewards.get(v["a"], {}), rewards.get(v["b"], {})
        scores = {"overall": (_total(ra), _total(rb))}
        for name in sorted(set(ra.get("vector", {})) | set(rb.get("vector", {}))):
            scores[name] = (ra.get("vector", {}).get(name), rb.get("vector", {}).get(name))
        for name, (sa, sb) in scores.items():
            if sa is None or sb is None or abs(sa - sb) < 1e-9:
                per[name]["no_preference"] += 1
                continue
            per[name]["n"] += 1
            per[name]["agree"] += ("a" if sa > sb else "b") == v["preference"]
    return {
        name: {
            "agree": c["agree"],
            "n": c["n"],
            "rate": round(c["agree"] / c["n"], 4) if c["n"] else None,
            "no_preference": c["no_preference"],
            **({"human_tie": c["human_tie"]} if name == "overall" else {}),
        }
        for name, c in sorted(per.items(), key=lambda kv: (kv[0] != "overall", kv[0]))
    }


def _total(reward: dict[str, Any]) -> float | None:
    if not reward:
        return None
    return 0.0 if reward.get("vetoes") else reward.get("total")


def reviewer_agreement(verdicts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Agreement between people on cases more than one of them decided: the share of reviewer
    pairs that gave the same verdict, and Fleiss' kappa (chance-corrected; categories a/b/tie)."""
    by_case: dict[str, Counter[str]] = defaultdict(Counter)
    for v in verdicts:
        by_case[v["decision_id"]][v["preference"]] += 1
    shared = [c for c in by_case.values() if sum(c.values()) >= 2]
    if not shared:
        return {"cases": 0, "pairs": 0, "agree": 0, "rate": None, "kappa": None}
    pairs = sum(n * (n - 1) // 2 for c in shared for n in [sum(c.values())])
    agree = sum(k * (k - 1) // 2 for c in shared for k in c.values())
    p_bar = sum(
        sum(k * (k - 1) for k in c.values()) / (sum(c.values()) * (sum(c.values()) - 1))
        for c in shared
    ) / len(shared)
    total = sum(sum(c.values()) for c in shared)
    p_e = sum((sum(c[cat] for c in shared) / total) ** 2 for cat in ("a", "b", "tie"))
    kappa = None if p_e >= 1 else round((p_bar - p_e) / (1 - p_e), 4)
    return {
        "cases": len(shared),
        "pairs": pairs,
        "agree": agree,
        "rate": round(agree / pairs, 4),
        "kappa": kappa,
    }
