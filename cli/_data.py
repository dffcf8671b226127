"""The data commands: ``init``, ``import``, ``pairs export``, ``sft export`` and ``status``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import click

from ._context import Context, pass_context, print_json


@click.command()
@click.option("--no-demo", is_flag=True, help="Create an empty database; load no demo data.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def init(obj: Context, no_demo: bool, as_json: bool) -> None:
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
        print_json(result)
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


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def import_(obj: Context, files: tuple[Path, ...], as_json: bool) -> None:
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
        print_json(summary)
    else:
        click.echo(_describe_import(summary))


@click.group()
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
@click.option(
    "--tokenizer",
    metavar="policy|DIR",
    help="Count tokens with this tokenizer (policy: the policy's) for the length checks; "
    "default: estimate them from characters (CRITICLOOP_TRAINING__CHARS_PER_TOKEN).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def pairs_export(
    obj: Context, out: Path, fmt: str, max_chars: int, tokenizer: str | None, as_json: bool
) -> None:
    """Write the stored pairs as TRL preference JSONL to OUT.

    Empty, identical, over-length and duplicate pairs are skipped and counted, and so are the
    pairs the dataset checks remove (bad format, prompt or response too long in tokens, exact or
    near-duplicates); the tokens of what is written are counted.
    """
    from ..store import write_preference_jsonl
    from ..training import DatasetBuilder, DatasetLimits

    limits = DatasetLimits.from_settings(obj.settings.training)
    builder = DatasetBuilder("pairs", limits, load_tokenizer(obj, tokenizer))
    with obj.open_store() as store:
        report = write_preference_jsonl(
            store.iter_pairs(), out, fmt, max_chars, store.contradictory_pairs(), builder.check
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
        print_json({**report.as_dict(), "checks": builder.report.as_dict()})
        return
    click.echo(f"wrote {report.written} pairs ({fmt}) to {out}")
    for reason, count in sorted(report.skipped.items()):
        first = builder.report.first.get(reason) or report.examples[reason]  # with its detail
        click.echo(f"  skipped {count} {reason} (first: {first})")
    echo_tokens(builder.report)


def load_tokenizer(obj: Context, name: str | None):
    """The tokenizer the length checks count with: None (estimate from characters), the
    policy's, or one from a directory; transformers loads only when one is asked for."""
    if not name:
        return None
    from transformers import AutoTokenizer

    from ..agents import policy_ref

    source = policy_ref(obj.settings).source if name == "policy" else name
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"cannot load a tokenizer from {source}: {exc}") from None


def echo_tokens(report) -> None:
    t = report.token_summary()
    click.echo(
        f"  tokens ({t['counted_with']}): {t['total']} in all, {t['mean']} per example "
        f"(min {t['min']}, max {t['max']})"
    )


@click.group()
def sft() -> None:
    """Supervised fine-tuning examples: export them for training."""


@sft.command("export")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--tokenizer",
    metavar="policy|DIR",
    help="Count tokens with this tokenizer (policy: the policy's) for the length checks; "
    "default: estimate them from characters (CRITICLOOP_TRAINING__CHARS_PER_TOKEN).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def sft_export(obj: Context, out: Path, tokenizer: str | None, as_json: bool) -> None:
    """Write the answers people endorsed as TRL conversational SFT JSONL to OUT.

    Each line is {"messages": [...the conversation, the assistant's answer]}. The answers:
    people's rewrites, generations rated thumbs up or 4-5 stars, and the chosen side of
    people's pairs. The dataset checks (format, length in tokens, exact and near-duplicates)
    remove what they should, each reason counted with its first example.
    """
    from ..store import write_sft_jsonl
    from ..training import DatasetBuilder, DatasetLimits

    limits = DatasetLimits.from_settings(obj.settings.training)
    builder = DatasetBuilder("sft", limits, load_tokenizer(obj, tokenizer))
    with obj.open_store() as store:
        examples = list(store.iter_sft_examples())
        sources = Counter(example["source"].split(":")[0] for example in examples)
        report = write_sft_jsonl(examples, out, builder.check)
    if as_json:
        print_json(
            {**report.as_dict(), "sources": dict(sources), "checks": builder.report.as_dict()}
        )
        return
    found = ", ".join(f"{n} {source}" for source, n in sorted(sources.items())) or "none"
    click.echo(f"wrote {report.written} SFT examples to {out} (found: {found})")
    for reason, count in sorted(report.skipped.items()):
        first = builder.report.first.get(reason) or report.examples[reason]  # with its detail
        click.echo(f"  skipped {count} {reason} (first: {first})")
    echo_tokens(builder.report)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def status(obj: Context, as_json: bool) -> None:
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
            "ratings": store.rating_stats(),
        }
    if as_json:
        print_json(result)
        return
    for key, value in result.items():
        if key not in ("counts", "ratings"):
            click.echo(f"{key:<20}{value}")
    click.echo(f"{'counts':<20}" + ", ".join(f"{k} {v}" for k, v in result["counts"].items()))
    for key, line in _rating_lines(result["ratings"]).items():
        click.echo(f"{key:<20}{line}")


def _rating_lines(stats: dict[str, Any]) -> dict[str, str]:
    """Ratings of single answers by where they came from, the revise step's outcomes, and the
    new data ``graph run --train auto`` weighs."""
    rated = [
        f"{source}: {c['good']} good, {c['bad']} bad, {c['neutral']} neither"
        + (f" ({c['commented']} with a comment)" if c["commented"] else "")
        for source, c in stats["by_source"].items()
    ]
    revised = [
        f"{mode}: " + ", ".join(f"{n} {outcome}" for outcome, n in outcomes.items())
        for mode, outcomes in stats["revisions"].items()
    ]
    new = stats["since_training"]
    return {
        "ratings": "; ".join(rated) or "none yet (criticloop feedback import, or the reviewer app)",
        "log_revisions": "; ".join(revised) or "none yet (criticloop feedback revise)",
        "since_training": f"{new['pairs']} pairs, {new['ratings']} ratings, "
        f"{new['positives']} good ratings or rewrites (what graph run --train auto weighs)",
    }


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


COMMANDS = [init, import_, pairs, sft, status]
