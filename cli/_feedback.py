"""``criticloop feedback``: production conversation logs with users' ratings.

criticloop feedback import conversations.jsonl feedback_export.jsonl
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._context import Context, dataset_names, echo_skipped, pass_context, print_json


@click.group()
def feedback() -> None:
    """Production feedback logs: users' thumbs, stars, labels and comments on answers."""


@feedback.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--dataset",
    help="Dataset name for every FILE. Default: each file's name without .json/.jsonl/.gz.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summaries as JSON.")
@pass_context
def feedback_import(
    obj: Context, files: tuple[Path, ...], dataset: str | None, as_json: bool
) -> None:
    """Import users' ratings from production logs (JSONL) as reviews with source "log".

    A line is a conversation, {"messages": [...], "ratings": [{"turn": I, "thumbs": "up" |
    "down", "stars": 1-5, "label": "UR2", "comment": "..."}], optional id, task_type, brand,
    campaign, persona, user_id, created_at} (a rating may instead sit on its assistant message
    as "rating", or thumbs/stars/label/comment on the conversation rate its last assistant
    turn), or a flat feedback row, {prompt, model_output, feedback_type, rating,
    comment, user_id, brand_id, task_type, created_at}. Each rated answer becomes a prompt (the
    conversation before it), the answer (model "log") and one review per thumb, stars and
    comment; labels become thumbs by CRITICLOOP_FEEDBACK__LABELS.

    Every file is read whole before anything is written: a line that breaks the format is
    refused with its file:line and nothing is imported. Unrated conversations, labels not
    mapped, empty or over-long texts and repeats are skipped and counted, the first few named
    on stderr. Importing the same file again changes nothing.
    """
    from ..store import read_feedback_log

    settings = obj.settings
    loaded = [
        (path, name, read_feedback_log(path, settings.feedback.labels, settings.limits))
        for path, name in zip(files, dataset_names(files, dataset), strict=True)
    ]
    with obj.open_store(create=True) as store, store.transaction():
        summaries = [
            {
                "file": str(path),
                "rows": log.rows,
                "shapes": log.shapes,
                "ratings": log.ratings,
                **store.import_feedback(log, name),
                "first_skipped": log.first_skipped,
                "skip_examples": log.skip_examples,
            }
            for path, name, log in loaded
        ]
    echo_skipped(summaries)
    if as_json:
        return print_json(summaries)
    for summary in summaries:
        click.echo(_describe(summary))


@feedback.command("revise")
@click.option(
    "--revise",
    "mode",
    type=click.Choice(["feedback", "alternative"]),
    help="feedback: rewrite the answer from the user's comment; alternative: a fresh answer "
    "without it (default: CRITICLOOP_FEEDBACK__REVISE).",
)
@click.option("-n", "--limit", type=click.IntRange(min=1), help="Only the first N answers.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="New tokens per rewrite.")
@click.option("--temperature", type=click.FloatRange(min=0), help="0 for greedy decoding.")
@click.option("--seed", type=int, help="Sampling seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def feedback_revise(
    obj: Context,
    mode: str | None,
    limit: int | None,
    max_new_tokens: int | None,
    temperature: float | None,
    seed: int | None,
    as_json: bool,
) -> None:
    """Rewrite the answers users rated down, and keep the rewrites the critics score higher.

    Every imported log answer with a thumb down or 2 stars or fewer that has not been revised
    in this mode is rewritten by the teacher (CRITICLOOP_TEACHER__MODEL, when it writes
    revisions) or else the policy, then judged by the critics against the rated answer. A
    rewrite that scores higher makes a pair with source log-revision (chosen: the rewrite,
    rejected: the rated answer); one that does not makes none, and why is recorded. Running
    again revises nothing twice; `criticloop graph run` runs this step too.
    """
    from ..store import run_lock
    from ._context import SamplingChoice

    with obj.open_store():  # fail early: no database
        pass
    settings = obj.settings
    sampling = SamplingChoice(None, max_new_tokens, temperature, None, seed).sampling(settings)
    with run_lock(settings.db_path, "graph"):  # one writer of rewrites at a time
        from ..graphs import run_log_revision

        summary = run_log_revision(settings, mode=mode, limit=limit, sampling=sampling)
    if as_json:
        return print_json(summary)
    click.echo(describe_revision(summary))


def describe_revision(s: dict[str, Any]) -> str:
    """The text report of a revise step: answers revised, pairs made and not made, by reason."""
    if not s["turns"]:
        return (
            f"nothing to revise ({s['mode']}): every answer users rated down is revised already "
            "(import more: criticloop feedback import FILE)"
        )
    lines = [
        f"revised {s['turns']} answers users rated down ({s['mode']}), run {s['run_id']}",
        f"  pairs made      {s['pairs']} (log-revision)",
    ]
    not_made = s["not_made"]
    lines.append(f"  not made        {sum(not_made.values())}")
    lines += [f"    {n:>3}  {reason}" for reason, n in not_made.items()]
    if s["unjudged"]:
        lines.append(f"  unjudged        {s['unjudged']} (no critic could score; judged next run)")
    if s["failed"]:
        lines.append(f"  failed          {len(s['failed'])}")
        lines += [f"    {gid}: {why}" for gid, why in s["failed"].items()]
    return "\n".join(lines)


def _describe(s: dict[str, Any]) -> str:
    def counts(what: dict[str, int]) -> str:
        total = sum(what.values())
        parts = [f"{what['inserted']} new"]
        if what["updated"]:
            parts.append(f"{what['updated']} updated")
        parts.append(f"{what['unchanged']} unchanged")
        return f"{total} ({', '.join(parts)})"

    skipped = s["skipped"]
    skips = (
        f"skipped {sum(skipped.values())} ("
        + ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items()))
        + ")"
        if skipped
        else "skipped 0"
    )
    shapes = ", ".join(f"{n} {shape}" for shape, n in s["shapes"].items() if n)
    thumbs, stars = s["thumbs"], s["stars"]
    labelled = f"; {thumbs['from_labels']} from labels" if thumbs["from_labels"] else ""
    rated = sum(stars.values())
    mean = sum(int(k) * n for k, n in stars.items()) / rated if rated else 0.0
    star_text = f"stars {rated} (mean {mean:.1f})" if rated else "stars 0"
    return (
        f"{s['file']}: dataset {s['dataset']} ({s['rows']} rows: {shapes}; {s['ratings']} "
        f"ratings): prompts {counts(s['prompts'])}, answers {counts(s['answers'])}, "
        f"reviews {counts(s['reviews'])}; thumbs {thumbs['up'] + thumbs['down']} (up "
        f"{thumbs['up']}, down {thumbs['down']}{labelled}), {star_text}, comments "
        f"{s['comments']}; {skips}"
    )


COMMANDS = [feedback]
