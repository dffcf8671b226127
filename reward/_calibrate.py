"""``criticloop calibrate``: learn from people how to read the critics, and when to ask them.

1. Every A/B decision people made (in the reviewer app, or imported with ``criticloop labels
   import``) becomes an example: the critics' scores of both candidates (the scores the graph
   recorded at the critics' current versions; imported pairs are scored here once, by the
   profile's local critics and, with ``--crew``, its crew critics, and the scores are kept)
   and the people's majority.
2. ``aggregator.fit_reward_model`` fits and calibrates P(people prefer A), cross-validated,
   and picks the escalation threshold on a calibration split it never fitted on.
3. The model is stored as the next version (``rm-<n>``) with its report and a reliability
   diagram (PNG); it becomes the graph's escalation policy unless no threshold reaches the
   target. With too little data nothing is stored: the profile's weights stay in charge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agents import (
    Case,
    Critic,
    Signals,
    critic_versions,
    load_embedder,
    run_critic,
    warm_thread,
)
from ..errors import ConfigError, NotFoundError
from ..progress import progress
from ..settings import Settings
from ..store import CriticCall, CritiqueRecord, Store, content_hash
from ._aggregator import Example, Fit, RewardModel, fit_reward_model, pair_features
from ._models import prepare_reward_critics
from ._profiles import Profiles
from ._weighted import aggregate

log = logging.getLogger(__name__)
RUN_KIND = "calibrate"


@dataclass
class Gathered:
    """The labelled pairs turned into examples, and why the others were left out."""

    examples: list[Example]
    left_out: dict[str, int]
    scored: int  # generations the critics scored for this calibration
    critic_versions: dict[str, str]


def gather(
    store: Store,
    profiles: Profiles,
    critics: dict[str, Critic],
    *,
    load_signals: Callable[[], Signals],
    source: str | None = None,
    dataset: str | None = None,
    score_missing: bool = True,
    crew: bool = False,
    run_id: str | None = None,
) -> Gathered:
    """Examples from every labelled pair in the store (or one source/dataset). Responses the
    local critics have not scored are scored here (``score_missing``); with ``crew``, the
    profile's crew (LLM) critics also judge the pairs they have not judged."""
    versions = critic_versions(critics)
    left_out: dict[str, int] = {}
    rows = store.labelled_pairs(dataset=dataset, source=source)
    decisive = []
    for row in rows:
        if row["majority"] in ("a", "b"):
            decisive.append(row)
        else:
            why = "people tied" if row["majority"] == "tie" else "no majority among people"
            left_out[why] = left_out.get(why, 0) + 1
    contexts: dict[str, tuple] = {}
    weights_of: dict[str, dict[str, float]] = {}
    for row in decisive:
        if row["prompt_id"] not in contexts:
            contexts[row["prompt_id"]] = store.prompt_context(row["prompt_id"])
            prompt = contexts[row["prompt_id"]][0]
            weights_of[row["prompt_id"]] = profiles.for_prompt(
                prompt["task_type"], prompt["brand_id"]
            ).weights
    generation_ids = [g for row in decisive for g in (row["a"], row["b"])]
    scores = store.critic_scores(generation_ids, versions)
    texts = {g: store.get_generation(g) for g in dict.fromkeys(generation_ids)}

    def needed(row: dict[str, Any], gen: str) -> list[str]:
        case = Case.of(*contexts[row["prompt_id"]], texts[gen]["text"])
        return [
            name
            for name, w in weights_of[row["prompt_id"]].items()
            if w > 0
            and name in critics
            and name not in scores.get(gen, {})
            and critics[name].applies(case)
        ]

    todo = {
        gen: names
        for row in decisive
        for gen in (row["a"], row["b"])
        if (names := needed(row, gen))
    }

    def is_crew(name: str) -> bool:
        return getattr(critics[name], "pairwise", False)

    local_todo = {
        gen: local for gen, names in todo.items() if (local := [n for n in names if not is_crew(n)])
    }
    scored = 0
    if score_missing and local_todo:
        scored = _score(store, critics, local_todo, texts, contexts, load_signals, run_id, scores)
    crew_todo = [
        (row, name)
        for row in decisive
        for name in dict.fromkeys(n for g in (row["a"], row["b"]) for n in todo.get(g, []))
        if is_crew(name)
    ]
    if score_missing and crew and crew_todo:
        scored += _judge(store, critics, crew_todo, texts, contexts, run_id, scores)
    examples = []
    for row in decisive:
        weights = weights_of[row["prompt_id"]]
        missing = [n for g in (row["a"], row["b"]) for n in needed(row, g)]
        if missing:
            why = f"no {missing[0]} score"
            if not score_missing:
                why = "not scored by the current critics"
            elif is_crew(missing[0]) and crew:
                why += " (its judge gave no verdict)"
            elif is_crew(missing[0]):
                why += " (a crew critic: --crew has it judge the labelled pairs)"
            left_out[why] = left_out.get(why, 0) + 1
            continue
        a = aggregate(row["a"], scores.get(row["a"], {}), weights)
        b = aggregate(row["b"], scores.get(row["b"], {}), weights)
        examples.append(
            Example(
                key=f"{row['a']}|{row['b']}",
                group=row["prompt_id"],
                x=pair_features(a, b, weights),
                y=int(row["majority"] == "a"),
                length_diff=len(texts[row["a"]]["text"]) - len(texts[row["b"]]["text"]),
                task_type=contexts[row["prompt_id"]][0]["task_type"],
                brand=contexts[row["prompt_id"]][0]["brand_id"],
                source=row["source"],
                at=row["created_at"],
            )
        )
    return Gathered(examples, left_out, scored, versions)


def _score(
    store: Store,
    critics: dict[str, Critic],
    todo: dict[str, list[str]],
    texts: dict[str, dict[str, Any]],
    contexts: dict[str, tuple],
    load_signals: Callable[[], Signals],
    run_id: str | None,
    scores: dict[str, dict[str, dict[str, Any]]],
) -> int:
    """Score generations the critics have not judged at their current versions; record the
    critiques (so the next calibration reuses them) and add them to ``scores``."""
    cases = {gen: Case.of(*contexts[texts[gen]["prompt_id"]], texts[gen]["text"]) for gen in todo}
    signals = load_signals()
    began = time.perf_counter()

    batch = list(cases.values())
    bar = progress(len(batch), True, desc="scoring labelled pairs", unit="response")
    models = sorted(  # reward-model critics score in batches too, a pair's answers as rivals
        {n for names in todo.values() for n in names}
        & {n for n, c in critics.items() if getattr(c, "backend", "local") == "reward_model"}
    )
    batch.sort(key=lambda case: case.prompt_id)
    for start in range(0, len(batch), 16):  # slices bound the memory the policy's logits take
        signals.prepare(batch[start : start + 16])
        prepare_reward_critics(critics, models, batch[start : start + 16])
        bar.update(len(batch[start : start + 16]))
    bar.close()
    log.info("shared signals for %d responses in %.1f s", len(cases), time.perf_counter() - began)
    for gen, names in todo.items():
        for name in names:
            critic = critics[name]
            score = run_critic(critic, cases[gen], signals)
            backend = getattr(critic, "backend", "local")
            store.record_critique(CritiqueRecord.of(gen, name, score, backend, run_id))
            scores.setdefault(gen, {})[name] = {**score.as_dict(), "veto": score.veto}
    return len(todo)


def _judge(
    store: Store,
    critics: dict[str, Critic],
    todo: list[tuple[dict[str, Any], str]],
    texts: dict[str, dict[str, Any]],
    contexts: dict[str, tuple],
    run_id: str | None,
    scores: dict[str, dict[str, dict[str, Any]]],
) -> int:
    """Have crew critics judge labelled pairs (A against B, both orders, as the graph does);
    record the verdicts and each call's tokens and cost, and add the scores to ``scores``. A
    pair the judge gave no verdict on is not recorded, so the next calibration asks again."""

    judged: set[str] = set()
    calls = sum(2 if critics[n].llm.settings.both_orders else 1 for _, n in todo)  # type: ignore[attr-defined]
    log.info(
        "crew critics judge %d labelled pair(s): %d judge calls, more with retries",
        len(todo),
        calls,
    )
    bar = progress(len(todo), True, desc="judging labelled pairs", unit="pair")
    warm_thread()  # the calls' threads copy this one's context: the SDK's classes built once
    for row, name in todo:
        critic = critics[name]
        context = contexts[row["prompt_id"]]
        a, b = (Case.of(*context, texts[g]["text"]) for g in (row["a"], row["b"]))
        judgement = critic.compare(a, b, row["a"], row["b"])  # type: ignore[attr-defined]
        for call in judgement.calls:
            store.record_critic_call(
                CriticCall.of_judge(name, call, run_id=run_id, prompt_id=row["prompt_id"])
            )
        for gen, score in zip((row["a"], row["b"]), judgement.scores, strict=True):
            if score.scored:
                store.record_critique(CritiqueRecord.of(gen, name, score, "crew", run_id))
                scores.setdefault(gen, {})[name] = {**score.as_dict(), "veto": score.veto}
                judged.add(gen)
        bar.update(1)
    bar.close()
    return len(judged)


def signals_loader(settings: Settings) -> Callable[[], Signals]:
    """The graph's shared signals: MiniLM embeddings and the base policy's likelihood (the
    coherence critic reads it), so calibration scores exactly as the graph does."""

    def load() -> Signals:
        from ..agents import open_policy

        return Signals(load_embedder(settings), open_policy(settings))

    return load


def data_hash(examples: Sequence[Example]) -> str:
    return content_hash(sorted(f"{e.key}:{e.y}" for e in examples))


def calibrate(
    settings: Settings,
    *,
    target: float | None = None,
    risk: float | None = None,
    source: str | None = None,
    dataset: str | None = None,
    seed: int = 0,
    diagram: Path | None = None,
    activate: bool = True,
    critics: dict[str, Critic] | None = None,
    load_signals: Callable[[], Signals] | None = None,
    crew: bool = False,
) -> dict[str, Any]:
    """Fit, report, version and (when it can decide anything) activate a reward model.
    ``crew``: the profile's crew critics judge the labelled pairs they have not judged."""
    from ._critics import build_critics

    profiles = Profiles.load(settings.profiles)
    options = profiles.calibration
    target = options.target_agreement if target is None else target
    risk = options.risk if risk is None else risk
    if not 0.5 < target < 1 or not 0 < risk < 0.5:
        raise ConfigError("calibrate: --target must be in (0.5, 1) and --risk in (0, 0.5)")
    critics = critics if critics is not None else build_critics(profiles, settings)
    with Store.open(settings.db_path, create=False) as store:
        if dataset is not None:
            known = sorted({r["dataset"] for r in store.labelled_pairs(source="import")})
            if dataset not in known:
                raise NotFoundError(
                    f"no labelled pairs in dataset {dataset!r} (known: {', '.join(known) or 'none'})"
                )
        run_id = store.start_run(
            RUN_KIND,
            {"target": target, "risk": risk, "source": source, "dataset": dataset, "seed": seed},
        )
        status, summary = "failed", {"run_id": run_id}
        try:
            rows = store.labelled_pairs(dataset=dataset, source=source)
            decisive = sum(r["majority"] in ("a", "b") for r in rows)
            if decisive < options.min_labels:  # no model to load, nothing to score
                summary = {
                    "run_id": run_id,
                    "labelled_pairs": len(rows),
                    "examples": decisive,
                    "left_out": (
                        {"tied or no majority": len(rows) - decisive}
                        if len(rows) > decisive
                        else {}
                    ),
                    "scored_now": 0,
                    "target": target,
                    "risk": risk,
                    **_too_little(decisive, options.min_labels),
                }
                status = "done"
                return summary
            gathered = gather(
                store,
                profiles,
                critics,
                load_signals=load_signals or signals_loader(settings),
                source=source,
                dataset=dataset,
                crew=crew,
                run_id=run_id,
            )
            summary = _fit_and_record(
                store, settings, gathered, target, risk, options, seed, diagram, activate
            )
            summary["run_id"] = run_id
            status = "done"
        finally:
            store.finish_run(run_id, status, summary)
    return summary


def _fit_and_record(
    store: Store,
    settings: Settings,
    gathered: Gathered,
    target: float,
    risk: float,
    options: Any,
    seed: int,
    diagram: Path | None,
    activate: bool,
) -> dict[str, Any]:
    examples = gathered.examples
    base = {
        "labelled_pairs": len(examples) + sum(gathered.left_out.values()),
        "examples": len(examples),
        "left_out": gathered.left_out,
        "scored_now": gathered.scored,
        "target": target,
        "risk": risk,
    }
    if len(examples) < options.min_labels:
        return {**base, **_too_little(len(examples), options.min_labels, gathered.left_out)}
    fit = fit_reward_model(
        examples,
        target=target,
        risk=risk,
        calibration_share=options.calibration_share,
        seed=seed,
    )
    fit.report["drift_reference"] = drift_reference(fit)
    fit.report["task_types"] = fit.report["examples"]["by_task_type"]
    can_decide = fit.threshold.threshold is not None
    version = store.record_reward_model(
        model=fit.model.as_dict(),
        policy=fit.threshold.as_dict(),
        report=fit.report,
        data_hash=data_hash(examples),
        labels=len(examples),
        critic_versions=gathered.critic_versions,
        activate=activate and can_decide,
    )
    path = diagram or settings.home / "calibration" / f"{version}-reliability.png"
    write_diagram(fit, version, path)
    store.set_diagram(version, str(path))
    status = "active" if activate and can_decide else "inactive"
    if not can_decide:
        why = (
            f"no confidence threshold keeps {target:.0%} agreement at risk {risk} on "
            f"{fit.report['split']['calibration']} held-out pairs: every case would go to people, "
            "so the graph keeps its current policy (lower --target, raise --risk, or label more)"
        )
    elif not activate:
        why = "fitted with --no-activate: the graph keeps its current policy"
    else:
        why = "the graph routes by it from the next run"
    return {
        **base,
        "status": status,
        "version": version,
        "why": why,
        "diagram": str(path),
        "report": fit.report,
    }


def _too_little(have: int, need: int, left_out: dict[str, int] | None = None) -> dict[str, Any]:
    unused = sum((left_out or {}).values())
    return {
        "status": "too_little_data",
        "need": need,
        "message": (
            f"{have} usable decisive labelled pairs"
            + (f" ({unused} left out, as listed below)" if unused else "")
            + f"; a reward model needs at least {need}: {need - have} more (review escalated "
            "cases with `criticloop review`, or import labelled pairs with `criticloop labels "
            "import`). The profile's weights and thresholds stay in charge."
        ),
    }


def drift_reference(fit: Fit) -> dict[str, Any]:
    """What people's agreement with the model looked like at calibration, overall and among
    the cases it would escalate (the ones people go on to see)."""
    from ._aggregator import confidence_and_correct

    conf, correct = confidence_and_correct(fit.held_out["p"], fit.held_out["y"])
    out: dict[str, Any] = {
        "n": int(len(correct)),
        "agreement": round(float(correct.mean()), 4) if len(correct) else None,
    }
    if fit.threshold.threshold is not None:
        below = conf < fit.threshold.threshold
        out["escalated_n"] = int(below.sum())
        out["escalated_agreement"] = round(float(correct[below].mean()), 4) if below.any() else None
    return out


def write_diagram(fit: Fit, version: str, path: Path) -> None:
    """The reliability diagram of the held-out calibration split (and the escalation curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held = fit.report["held_out"]
    bins = held.get("reliability", [])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    mids = [(b["lo"] + b["hi"]) / 2 for b in bins if b["n"]]
    ax.bar(
        mids,
        [b["observed"] for b in bins if b["n"]],
        width=0.09,
        alpha=0.35,
        color="tab:blue",
        label="people's rate per bin",
    )
    ax.plot(
        [b["mean_p"] for b in bins if b["n"]],
        [b["observed"] for b in bins if b["n"]],
        marker="o",
        color="tab:blue",
        label="mean prediction vs rate",
    )
    for b in bins:
        if b["n"]:
            ax.annotate(str(b["n"]), ((b["lo"] + b["hi"]) / 2, 0.02), ha="center", fontsize=7)
    metrics = held.get("model", {})
    ax.set_title(
        f"{version}: reliability on {held.get('n', 0)} held-out pairs\n"
        f"ECE {metrics.get('ece', float('nan')):.3f}, Brier {metrics.get('brier', float('nan')):.3f}, "
        f"accuracy {metrics.get('accuracy', float('nan')):.1%}",
        fontsize=9,
    )
    ax.set_xlabel("predicted P(people prefer A)")
    ax.set_ylabel("share where people preferred A")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    curve = fit.report.get("escalation", [])
    if curve:
        budgets = [c["budget"] for c in curve]
        ax2.plot(budgets, [c["uncertainty"] for c in curve], marker="o", label="escalate uncertain")
        ax2.plot(budgets, [c["random"] for c in curve], marker="s", label="escalate at random")
        ax2.fill_between(
            budgets,
            [c["random_lo"] for c in curve],
            [c["random_hi"] for c in curve],
            alpha=0.2,
            color="tab:orange",
        )
    policy = fit.threshold
    if policy.threshold is not None:
        ax2.axhline(policy.target, linestyle=":", color="grey", label=f"target {policy.target:.0%}")
    ax2.set_title(
        "agreement of the automatic decisions\nfor a share of cases sent to people", fontsize=9
    )
    ax2.set_xlabel("share escalated to people")
    ax2.set_ylabel("agreement with people (auto-decided)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def load_model(row: dict[str, Any]) -> RewardModel:
    return RewardModel.from_dict(row["model"])
