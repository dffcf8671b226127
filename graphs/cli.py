"""The ``criticloop`` command line.

    criticloop init                 # create the data home and load the demo data
    criticloop generate -k 2        # sample K candidates for every prompt with the local policy
    criticloop pairs export out.jsonl

Only click is imported at module level: ``--help`` must answer instantly, so settings, the
store and the models are imported inside the commands. Library code raises
:class:`criticloop.errors.CriticloopError`; this module alone turns errors into one line on
stderr and an exit code (1: the operation failed, 2: bad usage, configuration or input).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import CriticloopError, InputError
from ..vocab import TASK_TYPES

if TYPE_CHECKING:
    from ..settings import Settings
    from ..store import Store


class _Context:
    """What the root command hands its subcommands: settings built on first use."""

    def __init__(self, home: Path | None, env_file: Path | None):
        self._home = home
        self._env_file = env_file
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from ..settings import Settings

            overrides = {"home": self._home} if self._home else {}
            self._settings = Settings.load(env_file=self._env_file, **overrides)
            self._settings.apply_offline_policy()
        return self._settings

    def open_store(self, *, create: bool = False) -> Store:
        from ..store import Store

        return Store.open(self.settings.db_path, create=create)


pass_context = click.make_pass_decorator(_Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="criticloop")
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    help="Data home (database, checkpoints, models, adapters). Default: $CRITICLOOP_HOME or the "
    "user data directory.",
)
@click.option(
    "--env-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path(".env"),
    show_default=True,
    help="Read settings and keys from this file if it exists.",
)
@click.pass_context
def cli(ctx: click.Context, home: Path | None, env_file: Path) -> None:
    """criticloop: turn model outputs into training signal.

    Generates candidate responses with a local policy, has critic agents score them, turns the
    scores into rewards and DPO pairs, escalates uncertain cases to people, and trains LoRA
    adapters. Everything runs offline on the bundled models by default.
    """
    ctx.obj = _Context(home, env_file)


def _prompt_selection(command):
    """-n/--limit, -t/--task-type, -p/--prompt: which prompts a job works on."""
    options = [
        click.option("-n", "--limit", type=click.IntRange(min=1), help="Only the first N prompts."),
        click.option(
            "-t",
            "--task-type",
            "task_types",
            multiple=True,
            type=click.Choice(TASK_TYPES),
            help="Only prompts of this task type (repeatable).",
        ),
        click.option(
            "-p", "--prompt", "prompt_ids", multiple=True, help="Only this prompt id (repeatable)."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _sampling_options(command):
    """-k and the sampling settings; unset ones come from CRITICLOOP_GENERATION__*."""
    options = [
        click.option(
            "-k", "--candidates", type=click.IntRange(1, 32), help="Candidates per prompt."
        ),
        click.option(
            "--max-new-tokens", type=click.IntRange(min=1), help="New tokens per candidate."
        ),
        click.option("--temperature", type=click.FloatRange(min=0), help="0 for greedy decoding."),
        click.option(
            "--top-p", type=click.FloatRange(min=0, max=1, min_open=True), help="Nucleus mass."
        ),
        click.option("--seed", type=int, help="Sampling seed; a new seed gives new candidates."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _sampling(settings: Settings, max_new_tokens, temperature, top_p, seed):
    from ..agents import Sampling

    defaults = settings.generation
    return Sampling(
        max_new_tokens=max_new_tokens or defaults.max_new_tokens,
        temperature=defaults.temperature if temperature is None else temperature,
        top_p=top_p or defaults.top_p,
        seed=defaults.seed if seed is None else seed,
    )


@cli.command()
@click.option("--no-demo", is_flag=True, help="Create an empty database; load no demo data.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def init(obj: _Context, no_demo: bool, as_json: bool) -> None:
    """Create the data home and database, and load the demo brands and prompts.

    Safe to run again: it applies new migrations and leaves existing data as it is.
    """
    from ..store import DEMO_FILES, read_records

    settings = obj.settings
    with obj.open_store(create=True) as store:
        for folder in (settings.models_dir, settings.adapters_dir):
            folder.mkdir(parents=True, exist_ok=True)
        imported = {}
        if not no_demo:
            records = [r for path in DEMO_FILES for r in read_records(path)]
            imported = store.import_records(records).as_dict()
        result = {
            "home": str(settings.home),
            "database": str(store.path),
            "migrations": store.applied_migrations(),
            "imported": imported,
            "counts": store.counts(),
        }
    if as_json:
        _print_json(result)
        return
    click.echo(f"data home  {result['home']}")
    click.echo(f"database   {result['database']} ({len(result['migrations'])} migrations applied)")
    if imported:
        click.echo(f"demo data  {_describe_import(imported)}")
    counts = result["counts"]
    click.echo(
        f"now holds  {counts['brands']} brands, {counts['campaigns']} campaigns, "
        f"{counts['prompts']} prompts"
    )


@cli.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def import_(obj: _Context, files: tuple[Path, ...], as_json: bool) -> None:
    """Load your own brands, campaigns and prompts from JSONL or YAML FILES.

    Each record has a "kind" (brand, campaign or prompt; prompt when left out). A prompt has
    "task_type" (ad_insertion, retail_media_budget, creative, persona_chat,
    feedback_conversation, general), "prompt" text or "messages" ending with a user turn,
    and optional "id", "persona", "brand", "campaign", "metadata". See README.md for the
    full schema. Files are checked whole first: a file with an error writes nothing.
    Importing the same records again changes nothing.
    """
    from ..store import read_records

    records = [r for path in files for r in read_records(path, obj.settings.limits)]
    with obj.open_store(create=True) as store:
        summary = store.import_records(records).as_dict()
    if as_json:
        _print_json(summary)
    else:
        click.echo(_describe_import(summary))


@cli.command()
@_prompt_selection
@_sampling_options
@click.option("--batch-size", type=click.IntRange(min=1), help="Sequences per forward pass.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def generate(
    obj: _Context,
    limit,
    task_types,
    prompt_ids,
    candidates,
    max_new_tokens,
    temperature,
    top_p,
    seed,
    batch_size,
    as_json,
) -> None:
    """Sample K candidate responses per prompt with the local policy and store them.

    Uses the chat template with each prompt's conversation history, persona and campaign.
    Candidates already stored for the same prompt and settings are kept, not regenerated, so
    an interrupted run picks up where it stopped. Defaults come from CRITICLOOP_GENERATION__*.
    """
    from ._generate import run_generate

    defaults = obj.settings.generation
    sampling = _sampling(obj.settings, max_new_tokens, temperature, top_p, seed)
    with obj.open_store() as store:
        summary = run_generate(
            obj.settings,
            store,
            prompt_ids=prompt_ids,
            task_types=task_types,
            limit=limit,
            candidates=candidates or defaults.candidates,
            sampling=sampling,
            batch_size=batch_size or defaults.batch_size,
            progress=not as_json,
        )
    if as_json:
        _print_json(summary.as_dict())
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


@cli.group()
def graph() -> None:
    """The feedback graph: run it, show it, answer its escalations."""


@graph.command("run")
@_prompt_selection
@_sampling_options
@click.option("--concurrency", type=click.IntRange(1, 64), help="Prompts in flight at once.")
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
    obj: _Context,
    limit,
    task_types,
    prompt_ids,
    candidates,
    max_new_tokens,
    temperature,
    top_p,
    seed,
    concurrency,
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
        from .run import RunOptions, run_feedback  # the heavy imports, once there is work to do

        options = RunOptions(
            sampling=_sampling(settings, max_new_tokens, temperature, top_p, seed),
            candidates=candidates or settings.generation.candidates,
            concurrency=concurrency or settings.concurrency,
            prompt_ids=prompt_ids,
            task_types=task_types,
            limit=limit,
            human_budget=human_budget,
            progress=not as_json,
        )
        summary = run_feedback(settings, options)
        mode = train_mode or settings.training.nightly
        if mode != "never":
            from ..training._cycle import nightly_training

            summary["training"] = nightly_training(settings, mode, summary["run_id"])
    if as_json:
        _print_json(summary)
        return
    if summary["run_id"] is None:
        click.echo(
            "nothing to judge: every selected prompt already has a decision under this model, "
            "adapter and sampling settings (import new prompts, or run with another --seed)"
        )
    else:
        _echo_run(summary)
    if "training" in summary:
        from ._train_cli import echo_training

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
def graph_show(obj: _Context) -> None:
    """Print the feedback graph as a Mermaid diagram."""
    from ..agents import Sampling
    from .feedback import ThreadStores, build_feedback_graph
    from .profiles import Profiles
    from .run import make_resources

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
    obj: _Context, run_id, prompt_id, prefer, reviewer, comment, rewrite, as_json
) -> None:
    """Decide an escalated case without the reviewer app: records the verdict and, once the case
    has the verdicts it needs, resumes its graph thread."""
    from .review import ReviewDesk, reviewer_name

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
        _print_json(outcome)
    else:
        click.echo(f"{prompt_id}: {outcome.get('outcome')} ({outcome.get('reason')})")


@cli.command()
@click.option(
    "--reviewer", help="Your reviewer id (default: CRITICLOOP_REVIEW__REVIEWER, then login)."
)
@click.option("--brand", help="Only cases of this brand (id).")
@click.option("--task-type", type=click.Choice(TASK_TYPES), help="Only cases of this task type.")
@click.option("--run", "run_id", help="Only cases from this run.")
@click.option("--search", help="Only cases whose prompt or candidates contain these words.")
@click.option("--theme", type=click.Choice(["dark", "light"]), help="Colour theme.")
@pass_context
def review(obj: _Context, reviewer, brand, task_type, run_id, search, theme) -> None:
    """Review escalated cases in the terminal (keyboard or mouse; works over SSH).

    For each case: the prompt with its brand, campaign and persona, candidates A (the critics'
    choice) and B side by side with every critic's score, confidence and rationale, and why it
    was escalated. Choose A, B or a tie, rewrite a candidate, rate with stars or thumbs, comment,
    skip, undo. Each decision is saved at once and resumes the case's graph thread, which makes
    the pair. Two reviewers never get the same case at once.
    """
    from ..store import CaseFilter
    from .review import ReviewDesk, reviewer_name

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


@cli.group()
def pairs() -> None:
    """Preference pairs: export them for training."""


@pairs.command("export")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["conversational", "standard"]),
    default="conversational",
    show_default=True,
    help="conversational: prompt/chosen/rejected as chat messages; standard: plain strings.",
)
@click.option(
    "--max-chars",
    type=click.IntRange(min=1),
    default=16_000,
    show_default=True,
    help="Skip pairs whose prompt plus longer response exceeds this many characters.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def pairs_export(obj: _Context, out: Path, fmt: str, max_chars: int, as_json: bool) -> None:
    """Write the stored pairs as TRL preference JSONL to OUT.

    Empty, identical, over-length and duplicate pairs are skipped and counted.
    """
    from ..store import write_preference_jsonl

    with obj.open_store() as store:
        report = write_preference_jsonl(
            store.iter_pairs(), out, fmt, max_chars, store.contradictory_pairs()
        )
    if report.contradictions:
        shown = ", ".join(f"{x} vs {y}" for x, y in report.contradictions[:5])
        more = len(report.contradictions) - 5
        click.echo(
            f"left out {len(report.contradictions)} contradictory pairs of pairs (A over B and "
            f"B over A for one prompt): {shown}" + (f" and {more} more" if more > 0 else ""),
            err=True,
        )
    if as_json:
        _print_json(report.as_dict())
        return
    click.echo(f"wrote {report.written} pairs ({fmt}) to {out}")
    for reason, count in sorted(report.skipped.items()):
        click.echo(f"  skipped {count} {reason} (first: {report.examples[reason]})")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def status(obj: _Context, as_json: bool) -> None:
    """Show the data home, the models in use and what the database holds."""
    settings = obj.settings
    with obj.open_store() as store:
        result = {
            "home": str(settings.home),
            "database": str(store.path),
            "policy": settings.policy.model,
            "embedder": settings.embedder.model,
            "offline": settings.models_are_local(),
            "langsmith_tracing": settings.langsmith_tracing,
            "waiting_for_review": len(store.waiting_decisions()),
            "reward_model": _reward_model_line(store.active_reward_model()),
            "last_graph_run": _run_line(store.latest_run("graph")),
            "counts": store.counts(),
        }
    if as_json:
        _print_json(result)
        return
    for key, value in result.items():
        if key != "counts":
            click.echo(f"{key:<20}{value}")
    click.echo(f"{'counts':<20}" + ", ".join(f"{k} {v}" for k, v in result["counts"].items()))


def _run_line(run: dict[str, Any] | None) -> str:
    """The nightly job at a glance: still going, finished, or stopped without finishing."""
    from ..store import Store

    if run is None:
        return "none yet (criticloop graph run)"
    if Store.run_is_live(run):
        return f"{run['id']} running in process {run['pid']} since {run['started_at'][:19]}Z"
    if run["status"] == "running":
        return f"{run['id']} stopped unfinished: the next graph run continues it"
    when = (run["finished_at"] or run["started_at"])[:19]
    return f"{run['id']} {run['status']} at {when}Z"


def _reward_model_line(row: dict[str, Any] | None) -> str:
    if row is None:
        return "none (the profile's thresholds escalate; see criticloop calibrate)"
    policy = row["policy"]
    return (
        f"{row['version']} on {row['labels']} labelled pairs: decides alone at confidence >= "
        f"{policy['threshold']:.2f} ({policy['coverage']:.0%} of held-out pairs, "
        f"{policy['target']:.0%} agreement at risk {policy['risk']:g})"
    )


def _describe_import(summary: dict[str, dict[str, int]]) -> str:
    parts = []
    for outcome in ("inserted", "updated", "unchanged"):
        counts = summary.get(outcome) or {}
        if counts:
            listed = ", ".join(f"{n} {kind}s" for kind, n in sorted(counts.items()))
            parts.append(f"{outcome} {listed}")
    return "; ".join(parts) or "nothing to import"


def _print_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, default=str))


def _log_to_stderr() -> None:
    """criticloop's own progress notes go to stderr as ``criticloop: ...``; libraries stay quiet."""
    logger = logging.getLogger("criticloop")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("criticloop: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: domain and usage errors become one line and an exit code."""
    _log_to_stderr()
    try:
        code = cli.main(args=argv, prog_name="criticloop", standalone_mode=False)
    except CriticloopError as exc:
        click.echo(f"criticloop: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"criticloop: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("criticloop: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


from . import _calibrate_cli, _labels_cli, _traces_cli, _train_cli  # noqa: E402,F401,I001  (register commands)
