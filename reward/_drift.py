"""Drift: is people's agreement with the automatic judgement holding up?

Every case a person decides in the reviewer app is a fresh check on the judgement the graph
would have made. With an active reward model the check is its calibration: among the cases
people decided, did they agree as often as the model's stated confidence said they would? (A
calibrated model is right at its stated rate on any subset chosen by confidence, so escalated
cases are a fair sample for this even though they are the uncertain ones.) Without one, the
profile reward's pick is compared with people, each window against all earlier windows.

Grouped per time window (day, week or month), per brand and per task type, each with a
Wilson interval; a group whose agreement moved more than the profile's ``drift_threshold`` and
significantly so is flagged, and the nightly run's summary carries the flags.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..agents import Critic
from ..store import Store
from . import _calstats as cs
from ._aggregator import FEATURES, confidence_and_correct
from ._calibrate import gather, load_model
from ._profiles import Profiles


def _no_signals():
    raise AssertionError("drift never scores: it reads the scores the graph recorded")


def drift_report(store: Store, profiles: Profiles, critics: dict[str, Critic]) -> dict[str, Any]:
    """Agreement and calibration per window, brand and task type, with the flags."""
    options = profiles.calibration
    gathered = gather(
        store, profiles, critics, load_signals=_no_signals, source="reviewer", score_missing=False
    )
    row = store.active_reward_model()
    examples = gathered.examples
    if row is not None:
        examples = [e for e in examples if e.at >= row["created_at"]]
    report: dict[str, Any] = {
        "model": row["version"] if row else None,
        "basis": (
            f"people vs {row['version']}'s stated confidence"
            if row
            else "people vs the profile reward's pick"
        ),
        "window": options.drift_window,
        "threshold": options.drift_threshold,
        "decisions": len(examples),
        "left_out": gathered.left_out,
    }
    if not examples:
        report.update(windows=[], brands=[], task_types=[], flags=[])
        return report
    y = np.array([e.y for e in examples])
    if row is not None:
        p = load_model(row).predict(np.array([e.x for e in examples]))
        confidence, correct = confidence_and_correct(p, y)
    else:
        reward = np.array([e.x[FEATURES.index("reward_diff")] for e in examples])
        confidence = None
        correct = ((reward > 0) == (y == 1)).astype(int)
    labels = cs.windows([e.at for e in examples], period=options.drift_window)
    check = _Checker(correct, confidence, options.drift_threshold, options.drift_min_decisions)
    windows = check.groups(labels, sequential=row is None)
    brands = check.groups([e.brand or "(no brand)" for e in examples])
    tasks = check.groups([e.task_type for e in examples])
    latest = windows[-1]
    report.update(
        windows=windows,
        brands=brands,
        task_types=tasks,
        flags=[
            f"{kind} {c['window']}: {c['why']}"
            for kind, checks in (("window", [latest]), ("brand", brands), ("task", tasks))
            for c in checks
            if c["fired"]
        ],
    )
    return report


class _Checker:
    def __init__(
        self,
        correct: np.ndarray,
        confidence: np.ndarray | None,
        threshold: float,
        min_n: int,
    ):
        self.correct = correct
        self.confidence = confidence
        self.threshold = threshold
        self.min_n = min_n

    def groups(self, labels: Sequence[str], *, sequential: bool = False) -> list[dict[str, Any]]:
        """One check per group label (in label order). With a model, each group against the
        model's confidence on it; without (``sequential``), each window against the pooled
        earlier ones, and other groups against all the rest."""
        members: dict[str, list[int]] = defaultdict(list)
        for i, label in enumerate(labels):
            members[label].append(i)
        out = []
        seen: list[int] = []
        for label in sorted(members):
            idx = np.array(members[label])
            if self.confidence is not None:
                conf = self.confidence[idx]  # checked against its own stated confidence
                reference, reference_n = None, None
            else:
                conf = None
                rest = np.array(seen) if sequential else np.setdiff1d(np.arange(len(labels)), idx)
                reference = float(self.correct[rest].mean()) if len(rest) else None
                reference_n = int(len(rest))
            if reference is None and conf is None:
                check = cs.DriftCheck(
                    window=label,
                    n=len(idx),
                    agreement=round(float(self.correct[idx].mean()), 4),
                    ci=cs.wilson(int(self.correct[idx].sum()), len(idx)),
                    reference=None,
                    delta=None,
                    calibration_gap=None,
                    fired=False,
                    why="first window: nothing to compare with yet",
                )
            else:
                check = cs.check_drift(
                    label,
                    self.correct[idx],
                    conf,
                    reference_agreement=reference,
                    reference_n=reference_n,
                    threshold=self.threshold,
                    min_n=self.min_n,
                )
            out.append(check.as_dict())
            seen.extend(idx.tolist())
        return out


def drift_flags(store: Store, profiles: Profiles, critics: dict[str, Critic]) -> dict[str, Any]:
    """What the run summary says about drift: the latest window and any flags."""
    report = drift_report(store, profiles, critics)
    latest = report["windows"][-1] if report["windows"] else None
    return {
        "basis": report["basis"],
        "decisions": report["decisions"],
        "latest": latest,
        "flagged": bool(report["flags"]),
        "flags": report["flags"],
    }


def calibration_stats(store: Store, settings: Any) -> dict[str, Any]:
    """What the reviewer app's stats screen shows about calibration: the active reward model
    (its held-out metrics, reliability bins and escalation policy) and the drift trend."""
    from ._critics import build_critics

    try:
        profiles = Profiles.load(settings.profiles)
        row = store.active_reward_model()
        drift = drift_report(store, profiles, build_critics(profiles, settings))
    except Exception as exc:  # noqa: BLE001 - the stats screen shows what it can
        return {"error": f"{type(exc).__name__}: {exc}"}
    model = None
    if row is not None:
        held = row["report"].get("held_out") or {}
        model = {
            "version": row["version"],
            "labels": row["labels"],
            "created_at": row["created_at"],
            "policy": row["policy"],
            "held_out": {k: held.get(k) for k in ("n", "model", "length", "profile_reward")},
            "reliability": held.get("reliability") or [],
            "diagram": row["diagram_path"],
        }
    return {"model": model, "fitted": len(store.reward_models()), "drift": drift}
