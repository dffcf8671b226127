"""``criticloop train``, ``criticloop adapters ...`` and ``criticloop jobs``: the training side
of the command line (registered on the root command by ``cli.py``)."""

from __future__ import annotations

from typing import Any

import click
from pydantic import ValidationError

from ..vocab import TRAIN_METHODS
from ._context import Context, pass_context, print_json


@click.command()
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
@click.option(
    "--reward",
    metavar="critics|rm:NAME|mix[:NAME]",
    help="PPO/GRPO/RLOO's reward: the critics (default), a reward model (rm:trained, a trained "
    "version, or a [reward_models] table of the profile), or both weighted by --reward-mix.",
)
@click.option(
    "--reward-mix", type=click.FloatRange(0, 1), help="The reward model's weight in a mix (0.5)."
)
@click.option(
    "--rm-base",
    metavar="minilm|smollm2|DIR",
    help="--method reward: the base model (default minilm, the bundled encoder).",
)
@click.option(
    "--rm-tuning",
    type=click.Choice(["auto", "lora", "full"]),
    help="--method reward: LoRA or full fine-tuning (auto: full under 50M parameters).",
)
@click.option(
    "--rm-synthetic/--no-rm-synthetic",
    default=None,
    help="--method reward: also learn from the critics' synthetic pairs (default: people only).",
)
@click.option("--rm-dimension", help="--method reward: the dimension it judges (default overall).")
@click.option("--no-gate", is_flag=True, help="Register the adapter without evaluating it.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def train(obj: Context, method, launcher, no_gate, as_json, **overrides) -> None:
    """Train a LoRA adapter, then promote it only if the gate finds it better; or a reward model.

    DPO learns from the preference pairs in the store; SFT from the good answers (well rated,
    rewritten by people, accepted revisions), with the loss on the answer alone; KTO from every
    rated answer, good or bad; PPO, GRPO and RLOO sample responses and learn from the critics'
    reward, a reward model's, or a mix (--reward). --method reward trains a reward model on
    people's decisions and measures it on held-out prompts. The job, its
    metrics and the adapter are recorded; an interrupted job with the same data and settings
    resumes from its last checkpoint.
    """
    from ..training import train_and_gate

    settings = obj.settings
    changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if method:
        changes["method"] = method
    chosen = method or settings.training.method
    if changes.get("reward") and chosen not in ("ppo", "grpo", "rloo"):
        raise click.BadParameter(
            f"is for ppo, grpo and rloo, not {chosen}", param_hint="--reward"
        )
    rm_options = [k for k in changes if k.startswith("rm_")]
    if rm_options and chosen != "reward":
        option = "--" + rm_options[0].replace("_", "-")
        raise click.BadParameter(f"is for --method reward, not {chosen}", param_hint=option)
    if launcher:
        changes["launcher"] = launcher
    try:
        training = type(settings.training).model_validate(
            {**settings.training.model_dump(), **changes}
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        option = "--" + str(error["loc"][0]).replace("_", "-")
        raise click.BadParameter(error["msg"].removeprefix("Value error, "), param_hint=option)
    with obj.open_store():
        pass
    summary = train_and_gate(settings, training, gate=not no_gate)
    if as_json:
        print_json(summary)
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
    if summary["method"] == "reward":
        held = m.get("heldout") or {}
        measured = (
            f"held-out accuracy {held['accuracy']:.1%}, ECE {held['ece']:.3f} on {held['n']} pairs"
            if held.get("n")
            else "no held-out pairs to measure on"
        )
        click.echo(
            f"trained reward model {summary['reward_model']} ({m.get('tuning')}, job "
            f"{summary['job_id']}): {m.get('pairs')} pairs, {m.get('steps')} steps in "
            f"{m.get('seconds')} s{resumed}; final loss {m.get('final_loss')}; {measured}"
        )
        click.echo(m.get("activation", ""))
        if m.get("cost"):
            click.echo(f"cost: {describe_cost(m['cost'])}")
        return
    figures = ", ".join(
        f"{k.replace('_', ' ')} {m[k]}"
        for k in (
            "final_loss",
            "token_accuracy",
            "reward_accuracy",
            "reward_first",
            "reward_last",
            "kl_last",
        )
        if m.get(k) is not None
    )
    if m.get("desirable_weight") is not None:  # KTO: the balance of its data and its weights
        figures += (
            f"; {m['desirable']} desirable (weight {m['desirable_weight']}), "
            f"{m['undesirable']} undesirable (weight {m['undesirable_weight']})"
        )
    click.echo(
        f"trained {summary['adapter']} ({summary['method']}, job {summary['job_id']}): "
        f"{m.get('steps')} steps in {m.get('seconds')} s{resumed}; {figures}"
    )
    if m.get("cost"):
        click.echo(f"cost: {describe_cost(m['cost'])}")
    gate = summary.get("gate")
    if gate:
        verdict = "promoted" if gate["decision"] == "promote" else "kept the current adapter"
        click.echo(f"gate: {verdict}: {gate['reason']}")
        echo_gate_detail(gate)


def describe_cost(cost: dict[str, Any]) -> str:
    """A job's wall time, tokens, device-hours and cost (with a price set) in one line."""
    tokens = f"{cost['tokens']:,} tokens" if cost.get("tokens") is not None else "tokens unknown"
    devices = cost.get("devices") or 1
    text = (
        f"{cost['wall_seconds']:.1f} s wall, {tokens}, {cost['device_hours']:.4f} device-hours "
        f"({devices} device{'s' if devices != 1 else ''})"
    )
    if cost.get("cost") is not None:
        text += f", cost {cost['cost']:.4f} at {cost['device_hour_price']:g} per device-hour"
    return text


def echo_gate_detail(gate: dict[str, Any]) -> None:
    """Both sides' length and hard-rule counts, the KL, the independent judge, drift flags."""
    cand, base = gate.get("candidate_stats") or {}, gate.get("baseline_stats") or {}
    if cand:
        kl = gate.get("kl")
        click.echo(
            f"  answers     {cand['words']:.0f} words vs {base['words']:.0f}; hard rules broken "
            f"in {cand['violations']} of {cand['answers']} vs {base['violations']}"
            + (f"; KL from the baseline {kl:.2f} nats per answer" if kl is not None else "")
        )
    independent = gate.get("independent")
    if independent:
        click.echo(
            f"  independent {independent['judge']}: win rate {independent['win_rate']:.0%} "
            f"(95% CI {independent['ci_low']:.0%}-{independent['ci_high']:.0%}), sign test over "
            f"prompts p={independent['p_value']:.3g}"
        )
    for flag in gate.get("flags") or []:
        click.echo(f"  DRIFT       {flag}")


@click.group()
def adapters() -> None:
    """The adapter registry: list, evaluate, promote by hand, roll back."""


@adapters.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def adapters_list(obj: Context, as_json: bool) -> None:
    """Every trained adapter, newest first, with its status, parent and gate result."""
    with obj.open_store() as store:
        rows = store.list_adapters()
        for row in rows:
            reports = store.gate_reports(row["version"])
            row["gate"] = reports[0]["report"] if reports else None
    if as_json:
        print_json(rows)
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
def adapters_evaluate(obj: Context, version: str, as_json: bool) -> None:
    """Run the gate for VERSION against the adapter in service; promote it if it passes."""
    from ..training import run_gate

    with obj.open_store() as store:
        store.get_adapter(version)
    report = run_gate(obj.settings, version)
    if as_json:
        print_json(report.as_dict())
        return
    verdict = "promoted" if report.decision == "promote" else "kept the current adapter"
    click.echo(f"gate for {version} against {report.baseline or 'the base model'}: {verdict}")
    click.echo(f"  {report.reason}")
    echo_gate_detail(report.summary())


@adapters.command("promote")
@click.argument("version")
@pass_context
def adapters_promote(obj: Context, version: str) -> None:
    """Put VERSION in service by hand, whatever the gate said."""
    with obj.open_store() as store:
        replaced = store.promote_adapter(version, "promoted by hand")
    click.echo(f"{version} is in service (replaced {replaced or 'the base model'})")


@adapters.command("rollback")
@pass_context
def adapters_rollback(obj: Context) -> None:
    """Retire the adapter in service and restore the one it replaced."""
    from ..agents import policy_ref

    name = policy_ref(obj.settings, convert=False).name
    with obj.open_store() as store:
        retired, restored = store.rollback_adapter(name)
    click.echo(f"retired {retired}; in service now: {restored or 'the base model'}")


@click.command()
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Jobs to show."
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def jobs(obj: Context, limit: int, as_json: bool) -> None:
    """Training jobs, newest first: status, what they produced, why they failed, and the gate's
    decision and drift flags for the adapter they trained."""
    with obj.open_store() as store:
        rows = store.list_jobs(limit)
        for row in rows:
            reports = store.gate_reports(row["adapter_version"]) if row["adapter_version"] else []
            row["gate"] = (
                {
                    "decision": reports[0]["decision"],
                    "flags": reports[0]["report"].get("flags") or [],
                }
                if reports
                else None
            )
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no training jobs yet")
        return
    for row in rows:
        outcome = row["adapter_version"] or row["reason"] or ""
        gate = row["gate"]
        if gate:
            outcome += f"  gate: {gate['decision']}"
        click.echo(
            f"{row['id']:<34} {row['method']:<5} {row['status']:<8} {row['launcher']:<10} "
            f"{row['examples']:>5} examples  {outcome}"
        )
        if row.get("wall_seconds") is not None:
            click.echo(f"    {describe_cost(row)}")
        for flag in gate["flags"] if gate else []:
            click.echo(f"    DRIFT {flag}")


@click.group("reward-models")
def reward_models() -> None:
    """Reward models trained with `criticloop train --method reward`: list, activate."""


@reward_models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def reward_models_list(obj: Context, as_json: bool) -> None:
    """Every trained reward model, newest first, with what it was measured at."""
    with obj.open_store() as store:
        rows = store.trained_reward_models()
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no reward models yet: criticloop train --method reward trains one")
        return
    click.echo(
        f"{'version':<36} {'status':<8} {'dimension':<11} {'tuning':<6} {'pairs':>6} "
        f"{'held-out acc':>12} {'ECE':>6}  base"
    )
    for row in rows:
        held = row["metrics"].get("heldout") or {}
        acc = f"{held['accuracy']:.1%}" if held.get("n") else "-"
        ece = f"{held['ece']:.3f}" if held.get("n") else "-"
        click.echo(
            f"{row['version']:<36} {row['status']:<8} {row['dimension'] or 'overall':<11} "
            f"{row['tuning']:<6} {row['pairs']:>6} {acc:>12} {ece:>6}  {row['base_model']}"
        )


@reward_models.command("activate")
@click.argument("version")
@pass_context
def reward_models_activate(obj: Context, version: str) -> None:
    """Make VERSION the model `reward_model:trained` loads for its dimension."""
    with obj.open_store() as store:
        store.activate_trained_reward_model(version)
        row = store.trained_reward_model(version)
    click.echo(f"{version} is the active reward model for {row['dimension'] or 'overall'}")


@reward_models.command("deactivate")
@click.argument("version")
@pass_context
def reward_models_deactivate(obj: Context, version: str) -> None:
    """Stop loading VERSION as `reward_model:trained`."""
    with obj.open_store() as store:
        store.deactivate_trained_reward_model(version)
    click.echo(f"{version} is inactive")


COMMANDS = [train, adapters, jobs, reward_models]
