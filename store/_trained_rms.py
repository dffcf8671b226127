"""Trained reward models: versions, the active one per dimension, activation and retirement.

Not to be confused with :mod:`._rewardmodels`, the learned *aggregator* of critic scores that
``criticloop calibrate`` fits: these are neural sequence classifiers trained on people's pairs.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any

from sqlite_utils import Database

from ..errors import NotFoundError
from ._common import _decode, now

_JSON = ("metrics", "config")


class TrainedRewardModelVerbs:
    """Trained-reward-model verbs of :class:`~criticloop.store.Store` (mixed in)."""

    db: Database

    def transaction(self) -> AbstractContextManager[Database]:  # provided by Store
        raise NotImplementedError

    def record_trained_reward_model(
        self,
        version: str,
        *,
        dimension: str,
        base_model: str,
        base_path: str,
        tuning: str,
        path: str,
        center: float,
        metrics: dict[str, Any],
        config: dict[str, Any],
        data_hash: str,
        pairs: int,
        job_id: str | None,
        activate: bool,
        diagram_path: str | None = None,
    ) -> None:
        """Register a trained reward model (once per version); ``activate`` retires the active
        one of its dimension."""
        with self.transaction():
            self.db["trained_reward_models"].insert(
                {
                    "version": version,
                    "status": "inactive",
                    "dimension": dimension,
                    "base_model": base_model,
                    "base_path": base_path,
                    "tuning": tuning,
                    "path": path,
                    "center": center,
                    "metrics": json.dumps(metrics, sort_keys=True, default=float),
                    "config": json.dumps(config, sort_keys=True, default=str),
                    "data_hash": data_hash,
                    "pairs": pairs,
                    "job_id": job_id,
                    "diagram_path": diagram_path,
                    "created_at": now(),
                },
                pk="version",
                ignore=True,
            )
            if activate:
                self.activate_trained_reward_model(version)

    def trained_reward_model(self, version: str) -> dict[str, Any]:
        row = next(
            self.db.query("SELECT * FROM trained_reward_models WHERE version = ?", [version]), None
        )
        if row is None:
            raise NotFoundError(
                f"no trained reward model {version!r} (criticloop reward-models list shows them)"
            )
        return _decode(row, *_JSON)

    def trained_reward_models(self) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT * FROM trained_reward_models ORDER BY created_at DESC, rowid DESC"
        )
        return [_decode(row, *_JSON) for row in rows]

    def active_trained_reward_model(self, dimension: str = "") -> dict[str, Any] | None:
        """The active model of ``dimension``, else the active overall one; None if neither."""
        for dim in dict.fromkeys((dimension, "")):
            row = next(
                self.db.query(
                    "SELECT * FROM trained_reward_models WHERE status = 'active' AND dimension = ?",
                    [dim],
                ),
                None,
            )
            if row:
                return _decode(row, *_JSON)
        return None

    def activate_trained_reward_model(self, version: str) -> None:
        with self.transaction():
            row = self.trained_reward_model(version)
            self.db.execute(
                "UPDATE trained_reward_models SET status = 'retired' "
                "WHERE status = 'active' AND dimension = ?",
                [row["dimension"]],
            )
            self.db.execute(
                "UPDATE trained_reward_models SET status = 'active' WHERE version = ?", [version]
            )

    def deactivate_trained_reward_model(self, version: str) -> None:
        with self.transaction():
            self.trained_reward_model(version)
            self.db.execute(
                "UPDATE trained_reward_models SET status = 'inactive' WHERE version = ?", [version]
            )
