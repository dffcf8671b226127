"""The feedback-graph commands: ``generate``, ``graph run/show/decide`` and ``review``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from ..vocab import TASK_TYPES
from ._context import (
    Context,
    SamplingChoice,
    Selection,
    pass_context,
    print_json,
    prompt_selection,
    sampling_options,
)


@click.command()
@prompt_selection
@sampling_options
@click.option("--batch-size", type=click.IntRange(min=1), help="Sequences per forward pass.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def generate(
    obj: Context, selection: Selection, choice: SamplingChoice, batch_size, as_json
) -> None:
    """Sample K candidate responses per prompt with the local policy and store them.

    Uses the chat template with each prompt's conversation history, persona and campaign.
    Candidates already stored for the same prompt and settings are kept, not regenerated, so
    an interrupted run picks up where it stopped. Defaults come from CRITICLOOP_GENERATION__*.
    """
    from ..graphs import run_generate

    defaults = obj.settings.generation
    with obj.open_store() as store:
        summary = run_generate(
            obj.settings,
            store,
            prompt_ids=selection.prompt_ids,
            task_types=selection.task_types,
            limit=selection.limit,
            candidates=choice.k(obj.settings),
            sampling=choice.sampling(obj.settings),
            batch_size=batch_size or defaults.batch_size,
            progress=not as_json,
        )
    if as_json:
        print_json(summary.as_dict())
        return
    click.echo(
        f"generated {summary.generated} candidates for {summary.prompts} prompts "
        f"(K={summary.candidates_per_prompt}; {summary.already_present} were already stored) "
        f"with {summary.model}"
    )
    if summary.generated:
        tasks = ", ".join(f"{k} {v}" for k, v in sorted(summary.by_task_type.items()))
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary.finish_reasons.items()))
        click.echo(f"  by task    {tasks}")
        click.echo(f"  ended by   {reasons}")
        click.echo(
            f"  speed      {summary.completion_tokens} tokens in {summary.generation_seconds:.1f} s"
            f" = {summary.tokens_per_second:.1f} tokens/s"
        )
        click.echo(f"  run        {summary.run_id}")
    click.echo(f"  stored in  {summary.database}")


@click.group()
def graph() -> None:
    """The feedback graph: run it, show it, answer its escalations."""


@graph.command("run")
@prompt_selection
@sampling_options
@click.option("--concurrency", type=click.IntRange(1, 64), help="Prompts in flight at once.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Processes that judge, sharing the concurrency (default: CRITICLOOP_WORKERS, 1).",
)
@click.option(
    "--human-budget", type=click.IntRange(min=0), help="Escalations this run may leave for people."
)
@click.option(
    "--train",
    "train_mode",
    type=click.Choice(["auto", "never", "always"]),
    help="Then train and gate an adapter: auto when enough new pairs exist (default: settings).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def graph_run(
    obj: Context,
    selection: Selection,
    choice: SamplingChoice,
    concurrency,
    workers,
    human_budget,
    train_mode,
    as_json,
) -> None:
    """Generate, judge and route every prompt that needs it, then train: the nightly job.

    Picks prompts with no decision under the current model, adapter and settings, generates
    K candidates, scores them with the critics, and records pairs, escalations (answered with
    `criticloop review`), revisions and drops. Then, with --train auto (the default) and enough
    new pairs, trains an adapter and lets the gate decide whether it replaces the current one.
    Killed, it continues the same run next time.
    """
    from ..store import run_lock

    with obj.open_store():  # fail early: no database
        pass
    settings = obj.settings
    with run_lock(settings.db_path, "graph"):  # before anything heavy: one run at a time
        from ..graphs.run import (  # the heavy imports, once there is work to do
            RunOptions,
            run_feedback,
        )

        options = RunOptions(
            sampling=choice.sampling(settings),
            candidates=choice.k(settings),
            concurrency=concurrency or settings.concurrency,
            workers=workers or settings.workers,
            prompt_ids=selection.prompt_ids,
            task_types=selection.task_types,
            limit=selection.limit,
            human_budget=human_budget,
            progress=not as_json,
        )
        summary = run_feedback(settings, options)
        mode = train_mode or settings.training.nightly
        if mode != "never":
            from ..training import nightly_training

            summary["training"] = nightly_training(settings, mode, summary["run_id"])
    if as_json:
        print_json(summary)
        return
    if summary["run_id"] is None:
        click.echo(
            "nothing to judge: every selected prompt already has a decision under this model, "
            "adapter and sampling settings (import new prompts, or run with another --seed)"
        )
    else:
        _echo_run(summary)
    if "log_revision" in summary:
        from ._feedback import describe_revision

        revision = summary["log_revision"]
        if "error" in revision:
            click.echo(f"feedback log revision failed: {revision['error']}")
        else:
            click.echo(describe_revision(revision))
    if "training" in summary:
        from ._train import echo_training

        training = summary["training"]
        if training["status"] == "skipped":
            click.echo(f"training skipped: {training['reason']}")
        else:
            echo_training(training)


def _echo_run(summary: dict[str, Any]) -> None:
    outcomes = summary["outcomes"]
    click.echo(
        f"run {summary['run_id']}: {summary['prompts']} prompts, {summary['candidates']} candidates, "
        f"{summary['critic_calls']} critic calls ({summary['unscored']} unscored)"
    )
    if summary.get("candidates_from"):
        click.echo(f"  candidates  from {summary['candidates_from']}")
    if summary.get("likelihood"):
        click.echo(f"  likelihood  {summary['likelihood']}")
    pairs_by = ", ".join(f"{k} {v}" for k, v in sorted(summary["pairs"].items())) or "none"
    click.echo(f"  pairs       {sum(summary['pairs'].values())} ({pairs_by})")
    click.echo(
        f"  escalated   {outcomes.get('escalated', 0)} waiting for review"
        f"; revised {outcomes.get('revision', 0)}; dropped {outcomes.get('dropped', 0)}"
    )
    vetoes = ", ".join(f"{k} {v}" for k, v in sorted(summary["vetoes"].items())) or "none"
    click.echo(f"  vetoes      {vetoes}")
    unjudged = summary.get("unjudged") or {}
    if unjudged:
        why = "; ".join(f"{n} {reason}" for reason, n in sorted(unjudged.items()))
        click.echo(f"  unjudged    {sum(unjudged.values())}, judged again next run: {why}")
    failed = summary.get("failed") or {}
    if failed:
        why = "; ".join(f"{pid}: {reason}" for pid, reason in sorted(failed.items()))
        click.echo(f"  set aside   {len(failed)} (later runs skip them until edited): {why}")
    usage = summary.get("critic_usage") or {}
    per_critic = usage.get("per_critic", {})
    judges = {k: v for k, v in per_critic.items() if v["backend"] not in ("local", "reward_model")}
    models = {k: v for k, v in per_critic.items() if v["backend"] == "reward_model"}
    if models:
        click.echo(
            "  rewards     "
            + ", ".join(
                f"{k.partition('/')[0]} {v['calls']} scored ({v['failed']} failed)"
                for k, v in models.items()
            )
            + " by reward model"
        )
    if judges:
        cost = usage.get("cost_usd")
        click.echo(
            f"  judges      {sum(v['calls'] for v in judges.values())} LLM calls, "
            f"{usage['prompt_tokens']}+{usage['completion_tokens']} tokens, "
            + (f"${cost:.4f}" if cost is not None else "no price for this model")
            + "; "
            + ", ".join(f"{k} {v['calls']} calls {v['seconds']:.1f}s" for k, v in judges.items())
        )
    learned = summary.get("reward_model") or {}
    if learned.get("version"):
        decided = learned["decisions"].get(learned["version"], {})
        click.echo(
            f"  routed by   {learned['version']} (confidence >= {learned['threshold']:.2f} for "
            f"{learned['target']:.0%} agreement at risk {learned['risk']:g}) on "
            f"{sum(decided.values())} prompts; the profile's thresholds on the rest"
        )
    drift = learned.get("drift") or {}
    if drift.get("flagged"):
        click.echo(f"  DRIFT       {'; '.join(drift['flags'])} (criticloop drift)")
    elif drift.get("latest"):
        latest = drift["latest"]
        click.echo(
            f"  drift       none flagged; {latest['window']}: agreement with people "
            f"{latest['agreement']:.0%} on {latest['n']} decisions"
        )
    if summary.get("langsmith"):
        ls = summary["langsmith"]
        errors = f" ({ls['errors']} tracing errors)" if ls["errors"] else ""
        click.echo(f"  langsmith   project {ls['project']} at {ls['url']}{errors}")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in summary["stage_seconds"].items())
    click.echo(f"  time        {summary['wall_seconds']:.1f} s wall; {stages}")
    click.echo(f"  stored in   {summary['database']}")


@graph.command("show")
@pass_context
def graph_show(obj: Context) -> None:
    """Print the feedback graph as a Mermaid diagram."""
    from ..agents import Sampling
    from ..graphs.feedback import ThreadStores, build_feedback_graph
    from ..graphs.run import make_resources
    from ..reward import Profiles

    settings = obj.settings
    profiles = Profiles.load(settings.profiles)
    resources = make_resources(
        settings, ThreadStores(settings.db_path), profiles, Sampling(1, 0.0, 1.0, 0), 1
    )
    click.echo(build_feedback_graph(resources).get_graph().draw_mermaid())


@graph.command("decide")
@click.argument("run_id")
@click.argument("prompt_id")
@click.option(
    "--prefer",
    type=click.Choice(["a", "b", "tie"]),
    required=True,
    help="a: the critics' choice; b: the other candidate; tie.",
)
@click.option("--reviewer", help="Who decided (default: settings, then the login name).")
@click.option("--comment", help="Why, in a sentence.")
@click.option(
    "--rewrite",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A file with your corrected version of the --prefer candidate (becomes chosen).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@pass_context
def graph_decide(
    obj: Context, run_id, prompt_id, prefer, reviewer, comment, rewrite, as_json
) -> None:
    """Decide an escalated case without the reviewer app: records the verdict and, once the case
    has the verdicts it needs, resumes its graph thread."""
    from ..graphs.review import ReviewDesk, reviewer_name

    text = None
    if rewrite is not None:
        try:
            text = rewrite.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the rewrite: {exc}", source=str(rewrite)) from None
    desk = ReviewDesk(obj.settings, reviewer_name(obj.settings, reviewer))
    try:
        complete = desk.verdict(f"{run_id}/{prompt_id}", prefer, rewrite=text, comment=comment)
        outcomes = desk.settle(f"{run_id}/{prompt_id}") if complete else []
    finally:
        desk.close()
    outcome = (
        outcomes[0]
        if outcomes
        else {"outcome": "escalated", "reason": "waiting for more reviewers"}
    )
    if as_json:
        print_json(outcome)
    else:
        click.echo(f"{prompt_id}: {outcome.get('outcome')} ({outcome.get('reason')})")


@click.command()
@click.option(
    "--reviewer", help="Your reviewer id (default: CRITICLOOP_REVIEW__REVIEWER, then login)."
)
@click.option("--brand", help="Only cases of this brand (id).")
@click.option("--task-type", type=click.Choice(TASK_TYPES), help="Only cases of this task type.")
@click.option("--run", "run_id", help="Only cases from this run.")
@click.option("--search", help="Only cases whose prompt or candidates contain these words.")
@click.option("--theme", type=click.Choice(["dark", "light"]), help="Colour theme.")
@pass_context
def review(obj: Context, reviewer, brand, task_type, run_id, search, theme) -> None:
    """Review escalated cases in the terminal (keyboard or mouse; works over SSH).

    For each case: the prompt with its brand, campaign and persona, candidates A (the critics'
    choice) and B side by side with every critic's score, confidence and rationale, and why it
    was escalated. Choose A, B or a tie, rewrite a candidate, rate with stars or thumbs, comment,
    skip, undo. Each decision is saved at once and resumes the case's graph thread, which makes
    the pair. Two reviewers never get the same case at once.
    """
    from ..graphs.review import ReviewDesk, reviewer_name
    from ..store import CaseFilter

    settings = obj.settings
    with obj.open_store():  # fail early, with the usual message, when there is no database
        pass
    _need_a_terminal()  # before a case is leased: without one the app could never give it back
    name = reviewer_name(settings, reviewer)
    filters = CaseFilter(brand, task_type, run_id, search)
    desk = ReviewDesk(settings, name)
    if brand:
        desk.store.get_brand(brand)  # an unknown brand is an error, not an empty queue
    from ..tui import ReviewApp

    ReviewApp(settings, name, filters=filters, theme=theme, desk=desk).run()


def _need_a_terminal() -> None:
    """The reviewer app draws a full screen and reads keys: it needs a terminal that can."""
    term = os.environ.get("TERM", "")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        why = "stdin or stdout is not a terminal"
    elif term in ("", "dumb"):
        why = f"TERM={term}" if term else "TERM is not set"
    else:
        return
    raise click.UsageError(
        f"criticloop review needs an interactive terminal ({why}); to decide cases without "
        "one, use `criticloop graph decide RUN PROMPT --prefer a|b|tie`"
    )


COMMANDS = [generate, graph, review]
