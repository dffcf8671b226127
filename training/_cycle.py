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


def new_feedback(settings: Settings) -> dict[str, int]:
    """What arrived since the last finished training job started: ``pairs``, ``ratings``
    (thumbs or stars on an answer) and ``positives`` (good answers SFT learns from)."""
    with Store.open(settings.db_path, create=False) as store:
        return store.feedback_counts_since(store.last_trained_at())


# auto_methods' entries: what each waits for, its threshold's setting, and its name in words.
_AUTO_RULES = {
    "dpo": ("pairs", "min_new_pairs", "new pairs"),
    "kto": ("ratings", "min_new_ratings", "new ratings"),
    "sft": ("positives", "min_new_examples", "new good answers"),
}


def choose_method(counts: dict[str, int], training: TrainingSettings) -> tuple[str | None, str]:
    """The method ``graph run --train auto`` trains, by the new data in ``counts``, and why:
    the first of ``training.auto_methods`` whose new data reaches its threshold. The pairs'
    entry (dpo) trains the configured method when that one learns from pairs or prompts (ppo,
    grpo, rloo, reward): new pairs trigger it as they always did. None when nothing is due."""
    short = []
    for entry in training.auto_methods:
        kind, setting, words = _AUTO_RULES[entry]
        need = getattr(training, setting)
        if counts.get(kind, 0) >= need:
            method = entry
            if entry == "dpo" and training.method not in _AUTO_RULES:
                method = training.method
            why = f"{counts[kind]} {words} since the last training (at least {need}): {method}"
            return method, why
        short.append(
            f"{counts.get(kind, 0)} {words} since the last training, fewer than {need} "
            f"(CRITICLOOP_TRAINING__{setting.upper()})"
        )
    return None, "; ".join(short) or "CRITICLOOP_TRAINING__AUTO_METHODS is empty"


def nightly_training(settings: Settings, mode: str, run_id: str | None) -> dict[str, Any]:
    """The nightly job's training phase (``mode`` auto or always; the CLI does not call it
    for never): ``auto`` trains once enough new data exists, with the method that data calls
    for (:func:`choose_method`); ``always`` trains the configured method."""
    counts = new_feedback(settings)
    waiting = counts["pairs"]
    training = settings.training
    if mode == "auto":
        method, why = choose_method(counts, training)
        if method is None:
            return {"status": "skipped", "reason": why, "new_pairs": waiting, "new_data": counts}
        training = training.model_copy(update={"method": method})
    try:
        summary = train_and_gate(settings, training, run_id=run_id)
    except InputError as exc:  # nothing to train on, or settings that cannot train here
        summary = {"status": "skipped", "reason": str(exc), "promoted": False}
    if mode == "auto":
        summary["chosen_because"] = why
    summary["new_pairs"] = waiting
    summary["new_data"] = counts
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
