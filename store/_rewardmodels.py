"""Learned reward models: versions, the active one, and the critic scores they learn from.

At most one model is ``active``: the one the feedback graph routes by. Fitting a new one that
can decide anything makes it active and retires the previous; a model whose target agreement
no threshold can meet is recorded ``inactive`` so the graph keeps what it had.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from sqlite_utils import Database

from ..errors import NotFoundError
from ._common import _decode, now

_JSON = ("model", "policy", "report", "critic_versions")


class RewardModelVerbs:
    """Reward-model verbs of :class:`~criticloop.store.Store` (mixed in)."""

    db: Database

    def transaction(self) -> AbstractContextManager[Database]:  # provided by Store
        raise NotImplementedError

    def record_reward_model(
        self,
        *,
        model: dict[str, Any],
        policy: dict[str, Any],
        report: dict[str, Any],
        data_hash: str,
        labels: int,
        critic_versions: dict[str, str],
        activate: bool,
        diagram_path: str | None = None,
    ) -> str:
        """Store a fitted model under the next version (``rm-<n>``); return the version."""
        with self.transaction():
            count = self.db.execute("SELECT count(*) FROM reward_models").fetchone()[0]
            version = f"rm-{count + 1}"
            if activate:
                self.db.execute(
                    "UPDATE reward_models SET status = 'retired' WHERE status = 'active'"
                )
            self.db["reward_models"].insert(
                {
                    "version": version,
                    "status": "active" if activate else "inactive",
                    "model": json.dumps(model),
                    "policy": json.dumps(policy),
                    "report": json.dumps(report, default=float),
                    "data_hash": data_hash,
                    "labels": labels,
                    "critic_versions": json.dumps(critic_versions, sort_keys=True),
                    "diagram_path": diagram_path,
                    "created_at": now(),
                }
            )
        return version

    def set_diagram(self, version: str, path: str) -> None:
        with self.transaction():
            self.db["reward_models"].update(version, {"diagram_path": path})

    def activate_reward_model(self, version: str) -> None:
        """Route by ``version`` from now on (a rollback to an earlier fit)."""
        self.reward_model(version)
        with self.transaction():
            self.db.execute("UPDATE reward_models SET status = 'retired' WHERE status = 'active'")
            self.db.execute(
                "UPDATE reward_models SET status = 'active' WHERE version = ?", [version]
            )

    def deactivate_reward_models(self) -> None:
        """Back to the profile's weights and thresholds."""
        with self.transaction():
            self.db.execute("UPDATE reward_models SET status = 'retired' WHERE status = 'active'")

    def reward_model(self, version: str) -> dict[str, Any]:
        row = next(self.db["reward_models"].rows_where("version = ?", [version]), None)
        if row is None:
            raise NotFoundError(f"no reward model {version!r} (see: criticloop calibrate --list)")
        return _decode(row, *_JSON)

    def active_reward_model(self) -> dict[str, Any] | None:
        rows = list(self.db["reward_models"].rows_where("status = 'active'", limit=1))
        return _decode(rows[0], *_JSON) if rows else None

    def reward_models(self) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT version, status, labels, policy, report, diagram_path, created_at "
            "FROM reward_models ORDER BY created_at DESC, version DESC"
        )
        return [_decode(dict(r), "policy", "report") for r in rows]

    def critic_scores(
        self, generation_ids: Iterable[str], versions: Mapping[str, str]
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """The latest score of each generation by each critic at its current version:
        generation -> critic -> the Score dict the reward is aggregated from. ``versions``
        maps critic -> 'backend:version'; scores from other versions are ignored."""
        ids = list(dict.fromkeys(generation_ids))
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self.db.execute(
                f"""SELECT generation_id, critic, backend, critic_version, score, confidence,
                           rationale, evidence
                    FROM critiques WHERE generation_id IN ({",".join("?" * len(chunk))})
                    ORDER BY created_at""",
                chunk,
            )
            for gen, critic, backend, version, score, confidence, rationale, evidence in rows:
                if versions.get(critic) != f"{backend}:{version}":
                    continue
                evidence = json.loads(evidence)
                out.setdefault(gen, {})[critic] = {
                    "score": score,
                    "confidence": confidence,
                    "rationale": rationale,
                    "veto": bool(evidence.get("veto")),
                    "evidence": evidence,
                }
        return out

    def decision_models(self, run_id: str) -> dict[str, dict[str, int]]:
        """Per reward model (or 'profile'), the outcomes of a run's decisions."""
        rows = self.db.execute(
            "SELECT coalesce(reward_model, 'profile'), outcome, count(*) FROM decisions "
            "WHERE run_id = ? GROUP BY 1, 2",
            [run_id],
        )
        out: dict[str, dict[str, int]] = {}
        for model, outcome, n in rows:
            out.setdefault(model, {})[outcome] = n
        return out
