"""``criticloop train``, ``criticloop adapters ...`` and ``criticloop jobs``: the training side
of the command line (registered on the root command by ``cli.py``)."""

from __future__ import annotations

from typing import Any

import click

from ..vocab import TRAIN_METHODS
from .cli import _Context, _print_json, cli, pass_context


@cli.command()
@click.option("--method", type=click.Choice(TRAIN_METHODS), help="Default: the settings' (dpo).")
@click.option(
    "--launcher",
    type=click.Choice(["auto", "inprocess", "subprocess", "accelerate"]),
    help="Where the job runs; auto: in-process on CPU, a subprocess on one GPU, accelerate on more.",
)
@click.option("--max-steps", type=click.IntRange(min=0), help="Stop after this many steps.")
@click.option(
    "--epochs", type=click.FloatRange(min=0, min_open=True), help="Passes over the pairs."
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Pairs (or prompts) per step.")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), help="LoRA rate.")
@click.option("--quantize", type=click.Choice(["none", "4bit"]), help="4bit: QLoRA (CUDA only).")
@click.option("--save-steps", type=click.IntRange(min=1), help="Checkpoint every N steps.")
@click.option("--no-gate", is_flag=True, help="Register the adapter without evaluating it.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def train(obj: _Context, method, launcher, no_gate, as_json, **overrides) -> None:
    """Train a LoRA adapter, then promote it only if the gate finds it better.

    DPO learns from the preference pairs in the store; PPO, GRPO and RLOO sample responses and
    learn from the critics' reward. The job, its metrics and the adapter are recorded; an
    interrupted job with the same data and settings resumes from its last checkpoint.
    """
    from ..training._cycle import train_and_gate

    settings = obj.settings
    changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if method:
        changes["method"] = method
    if launcher:
        changes["launcher"] = launcher
    training = settings.training.model_copy(update=changes)
    with obj.open_store():
        pass
    summary = train_and_gate(settings, training, gate=not no_gate)
    if as_json:
        _print_json(summary)
    else:
        echo_training(summary)
    if summary["status"] == "failed":
        raise SystemExit(1)


def echo_training(summary: dict[str, Any]) -> None:
    if summary["status"] == "failed":
        click.echo(f"training failed: {summary['reason']}")
        return
    m = summary["metrics"]
    resumed = f", resumed from {m['resumed_from']}" if m.get("resumed_from") else ""
    figures = ", ".join(
        f"{k.replace('_', ' ')} {m[k]}"
        for k in ("final_loss", "reward_accuracy", "reward_first", "reward_last", "kl_last")
        if m.get(k) is not None
    )
    click.echo(
        f"trained {summary['adapter']} ({summary['method']}, job {summary['job_id']}): "
        f"{m.get('steps')} steps in {m.get('seconds')} s{resumed}; {figures}"
    )
    gate = summary.get("gate")
    if gate:
        verdict = "promoted" if gate["decision"] == "promote" else "kept the current adapter"
        click.echo(f"gate: {verdict}: {gate['reason']}")


@cli.group()
def adapters() -> None:
    """The adapter registry: list, evaluate, promote by hand, roll back."""


@adapters.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def adapters_list(obj: _Context, as_json: bool) -> None:
    """Every trained adapter, newest first, with its status, parent and gate result."""
    with obj.open_store() as store:
        rows = store.list_adapters()
        for row in rows:
            reports = store.gate_reports(row["version"])
            row["gate"] = reports[0]["report"] if reports else None
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no adapters yet: criticloop train makes one (or graph run --train auto)")
        return
    click.echo(f"{'version':<38} {'status':<10} {'method':<6} {'parent':<38} {'win rate':<9} data")
    for row in rows:
        gate = row["gate"]
        win = f"{gate['win_rate']:.0%}" if gate and gate.get("win_rate") is not None else "-"
        click.echo(
            f"{row['version']:<38} {row['status']:<10} {row['method']:<6} "
            f"{row['parent_version'] or '(base model)':<38} {win:<9} {row['data_hash'] or '-'}"
        )


@adapters.command("evaluate")
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def adapters_evaluate(obj: _Context, version: str, as_json: bool) -> None:
    """Run the gate for VERSION against the adapter in service; promote it if it passes."""
    from ..training import run_gate

    with obj.open_store() as store:
        store.get_adapter(version)
    report = run_gate(obj.settings, version)
    if as_json:
        _print_json(report.as_dict())
        return
    verdict = "promoted" if report.decision == "promote" else "kept the current adapter"
    click.echo(f"gate for {version} against {report.baseline or 'the base model'}: {verdict}")
    click.echo(f"  {report.reason}")


@adapters.command("promote")
@click.argument("version")
@pass_context
def adapters_promote(obj: _Context, version: str) -> None:
    """Put VERSION in service by hand, whatever the gate said."""
    with obj.open_store() as store:
        replaced = store.promote_adapter(version, "promoted by hand")
    click.echo(f"{version} is in service (replaced {replaced or 'the base model'})")


@adapters.command("rollback")
@pass_context
def adapters_rollback(obj: _Context) -> None:
    """Retire the adapter in service and restore the one it replaced."""
    from ..agents import policy_ref

    name = policy_ref(obj.settings, convert=False).name
    with obj.open_store() as store:
        retired, restored = store.rollback_adapter(name)
    click.echo(f"retired {retired}; in service now: {restored or 'the base model'}")


@cli.command()
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Jobs to show."
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def jobs(obj: _Context, limit: int, as_json: bool) -> None:
    """Training jobs, newest first: status, what they produced, why they failed."""
    with obj.open_store() as store:
        rows = store.list_jobs(limit)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no training jobs yet")
        return
    for row in rows:
        outcome = row["adapter_version"] or row["reason"] or ""
        click.echo(
            f"{row['id']:<34} {row['method']:<5} {row['status']:<8} {row['launcher']:<10} "
            f"{row['examples']:>5} examples  {outcome}"
        )
