"""``criticloop calibrate`` and ``criticloop drift``.

criticloop calibrate                      # fit on every labelled pair, report, version, activate
criticloop calibrate --target 0.9 --risk 0.05
criticloop calibrate --list               # the fitted versions
criticloop calibrate --activate rm-2      # route by an earlier fit; --off: back to the profile
criticloop drift                          # agreement with people per window, brand, task type
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._context import Context, pass_context, print_json


@click.command()
@click.option(
    "--target",
    type=float,
    help="Agreement with people the automatic decisions must keep (profile: 0.8).",
)
@click.option("--risk", type=float, help="Allowed chance that they do not (profile: 0.1).")
@click.option("--dataset", help="Fit only on one imported dataset (see: criticloop labels list).")
@click.option(
    "--source",
    type=click.Choice(["reviewer", "import"]),
    help="Fit only on the reviewer app's decisions or only on imported labels.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Splits and folds.")
@click.option(
    "--diagram",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where the reliability diagram PNG goes.",
)
@click.option(
    "--crew",
    is_flag=True,
    help="Have the profile's crew (LLM) critics judge the labelled pairs they have not judged "
    "(a judge call per pair and order, with its cost).",
)
@click.option("--no-activate", is_flag=True, help="Fit and report, but keep the current policy.")
@click.option("--list", "list_", is_flag=True, help="List the fitted reward models.")
@click.option(
    "--activate", "activate_version", metavar="VERSION", help="Route by this fitted model."
)
@click.option("--off", is_flag=True, help="Route by the profile's thresholds again.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def calibrate(
    obj: Context,
    target: float | None,
    risk: float | None,
    dataset: str | None,
    source: str | None,
    seed: int,
    diagram: Path | None,
    crew: bool,
    no_activate: bool,
    list_: bool,
    activate_version: str | None,
    off: bool,
    as_json: bool,
) -> None:
    """Learn from people's decisions how to read the critics, and when to ask people.

    Fits a calibrated P(people prefer A over B) on every A/B decision made in the reviewer app
    or imported with `criticloop labels import`, reports cross-validated accuracy, log-loss,
    Brier score and ECE against the profile reward and "the longer response wins", writes a
    reliability diagram, and chooses the confidence threshold above which the graph decides
    without a person: with probability 1 - RISK those decisions agree with people at least
    TARGET of the time.
    """
    if list_ or activate_version or off:
        with obj.open_store() as store:
            if activate_version:
                store.activate_reward_model(activate_version)
            elif off:
                store.deactivate_reward_models()
            models = store.reward_models()
        if as_json:
            print_json(models)
        else:
            _echo_models(models)
        return
    from ..reward import calibrate as run

    settings = obj.settings
    obj.open_store().close()  # a missing database is a clear error before any model loads
    summary = run(
        settings,
        target=target,
        risk=risk,
        source=source,
        dataset=dataset,
        seed=seed,
        diagram=diagram,
        activate=not no_activate,
        crew=crew,
    )
    if as_json:
        print_json(summary)
    else:
        echo_calibration(summary)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _metrics(m: dict[str, Any]) -> str:
    return (
        f"accuracy {_pct(m['accuracy'])}  log-loss {m['log_loss']:.3f}  "
        f"Brier {m['brier']:.3f}  ECE {m['ece']:.3f}"
    )


def echo_calibration(summary: dict[str, Any]) -> None:
    left = ", ".join(f"{why} {n}" for why, n in summary["left_out"].items()) or "none"
    if summary["status"] == "too_little_data":
        click.echo(summary["message"])
        if summary["left_out"]:
            click.echo(f"  left out: {left}")
        return
    report = summary["report"]
    sources = ", ".join(f"{k} {v}" for k, v in report["examples"]["by_source"].items())
    click.echo(
        f"{summary['version']}: fitted on {summary['examples']} decisive labelled pairs "
        f"({sources}); left out: {left}"
    )
    if summary["scored_now"]:
        click.echo(f"  critics scored {summary['scored_now']} responses that had no score yet")
    cv, split = report["cross_validated"], report["split"]
    losses = ", ".join(f"{k} {v:.3f}" for k, v in cv["calibrator_log_loss"].items())
    click.echo(
        f"  cross-validated ({split['folds']} folds, {split['fit']} pairs): {_metrics(cv['model'])}"
    )
    click.echo(
        f"    calibrator {cv['calibrator']} (log-loss {losses}); uncalibrated ECE {cv['uncalibrated']['ece']:.3f}"
    )
    click.echo(
        f"    baselines: profile reward {_pct(cv['profile_reward']['accuracy'])}, "
        f"longer response wins {_pct(cv['length']['accuracy'])}"
    )
    held = report["held_out"]
    if held.get("n"):
        click.echo(f"  held out ({held['n']} pairs, never fitted on): {_metrics(held['model'])}")
        click.echo(
            f"    baselines: profile reward {_pct(held['profile_reward']['accuracy'])}, "
            f"longer response wins {_pct(held['length']['accuracy'])}"
        )
        cover = ", ".join(
            f"{c['target']:.0%} -> {_pct(c['coverage'])}" for c in held["coverage_at"]
        )
        click.echo(f"    coverage at target agreement (no guarantee): {cover}")
    policy = report["policy"]
    if policy["threshold"] is None:
        click.echo(
            f"  escalation: no threshold meets {policy['target']:.0%} agreement at risk "
            f"{policy['risk']:g}"
        )
    else:
        click.echo(
            f"  escalation: confidence >= {policy['threshold']:.3f} is decided automatically: "
            f"{_pct(policy['coverage'])} of held-out pairs, agreement {_pct(policy['agreement'])} "
            f"(>= {_pct(policy['lower_bound'])} with probability {1 - policy['risk']:.0%}; "
            f"target {policy['target']:.0%})"
        )
    curve = report.get("escalation") or []
    if curve:
        click.echo("  agreement of the automatic decisions, by share sent to people:")
        click.echo("    escalated   by uncertainty   at random (95% band)")
        for c in curve:
            click.echo(
                f"    {c['budget']:>8.0%}   {_pct(c['uncertainty']):>14}   "
                f"{_pct(c['random'])} ({_pct(c['random_lo'])}-{_pct(c['random_hi'])})"
            )
    click.echo(f"  reliability diagram: {summary['diagram']}")
    click.echo(f"  {summary['status']}: {summary['why']}")


def _echo_models(models: list[dict[str, Any]]) -> None:
    if not models:
        click.echo("no reward models yet: run `criticloop calibrate`")
        return
    click.echo(
        f"{'version':<8} {'status':<9} {'labels':>6} {'threshold':>9} {'coverage':>8} {'held-out acc':>12}  created"
    )
    for m in models:
        policy = m["policy"]
        held = (m["report"].get("held_out") or {}).get("model") or {}
        threshold = "-" if policy.get("threshold") is None else f"{policy['threshold']:.3f}"
        click.echo(
            f"{m['version']:<8} {m['status']:<9} {m['labels']:>6} {threshold:>9} "
            f"{_pct(policy.get('coverage')):>8} {_pct(held.get('accuracy')):>12}  {m['created_at'][:19]}"
        )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def drift(obj: Context, as_json: bool) -> None:
    """Agreement between people and the automatic judgement per time window, brand and task
    type, with 95% intervals; flags shifts beyond the profile's drift_threshold."""
    from ..reward import Profiles, build_critics, drift_report

    settings = obj.settings
    profiles = Profiles.load(settings.profiles)
    with obj.open_store() as store:
        report = drift_report(store, profiles, build_critics(profiles, settings))
    if as_json:
        print_json(report)
        return
    click.echo(f"{report['basis']}; {report['decisions']} decisions by people")
    if not report["decisions"]:
        click.echo("nothing to check yet: decisions made in `criticloop review` are the checks")
        return
    for title, key in (("window", "windows"), ("brand", "brands"), ("task type", "task_types")):
        click.echo(f"  {title:<12} {'n':>5} {'agreement':>9} {'95% interval':>14}  verdict")
        for c in report[key]:
            lo, hi = c["ci"] or (None, None)
            flag = "SHIFT " if c["fired"] else ""
            click.echo(
                f"  {c['window']:<12} {c['n']:>5} {_pct(c['agreement']):>9} "
                f"{_pct(lo):>6}-{_pct(hi):<7}  {flag}{c['why']}"
            )
    if report["flags"]:
        click.echo("flags: " + "; ".join(report["flags"]))


COMMANDS = [calibrate, drift]
