"""One training round as the nightly job runs it: train, then let the gate decide."""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..settings import Settings, TrainingSettings
from ..store import Store
from ._gate import run_gate
from ._jobs import TrainingFailed, train


def new_pairs(settings: Settings) -> int:
    """Pairs recorded since the last finished training job started."""
    with Store.open(settings.db_path, create=False) as store:
        return store.count_pairs_since(store.last_trained_at())


def nightly_training(settings: Settings, mode: str, run_id: str | None) -> dict[str, Any]:
    """The nightly job's training phase (``mode`` auto or always; the CLI does not call it
    for never): ``auto`` trains once enough new pairs exist."""
    waiting = new_pairs(settings)
    threshold = settings.training.min_new_pairs
    if mode == "auto" and waiting < threshold:
        return {
            "status": "skipped",
            "reason": f"{waiting} new pairs since the last training, fewer than {threshold} "
            "(CRITICLOOP_TRAINING__MIN_NEW_PAIRS)",
            "new_pairs": waiting,
        }
    try:
        summary = train_and_gate(settings, run_id=run_id)
    except InputError as exc:  # nothing to train on, or settings that cannot train here
        summary = {"status": "skipped", "reason": str(exc), "promoted": False}
    summary["new_pairs"] = waiting
    if run_id:
        with Store.open(settings.db_path, create=False) as store:
            run = store.get_run(run_id)
            store.update_run_summary(run_id, {**(run["summary"] or {}), "training": summary})
    return summary


def train_and_gate(
    settings: Settings,
    training: TrainingSettings | None = None,
    *,
    run_id: str | None = None,
    gate: bool = True,
) -> dict[str, Any]:
    """Train one adapter and put it through the gate; a failed job is reported, not raised."""
    try:
        result = train(settings, training, run_id=run_id)
    except TrainingFailed as exc:
        return {"status": "failed", "reason": str(exc), "promoted": False}
    summary: dict[str, Any] = {
        "status": "done",
        "job_id": result.job_id,
        "method": result.method,
        "adapter": result.adapter_version,
        "resumed": result.resumed,
        "metrics": {k: v for k, v in result.metrics.items() if k != "log"},
        "promoted": False,
    }
    if result.method == "reward":
        summary["reward_model"] = summary.pop("adapter")
        summary["activated"] = result.metrics.get("activation", "").startswith("activated")
        return summary
    if gate:
        report = run_gate(settings, result.adapter_version, run_id=run_id)
        summary["gate"] = report.summary()
        summary["promoted"] = report.decision == "promote"
        summary["flags"] = report.flags  # drift: length or KL up with no independent gain
    return summary
