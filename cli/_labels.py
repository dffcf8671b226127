"""``criticloop labels``: people's A/B judgements from files, for calibrating the critics.

criticloop labels import pandalm_testset-v1.json hh_harmless-base_test.jsonl.gz
criticloop labels list
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._context import Context, dataset_names, echo_skipped, pass_context, print_json

# store.LABEL_FORMATS, without importing the store
_FORMATS = ("auto", "pandalm", "hh", "plain", "trl")


@click.group()
def labels() -> None:
    """Labelled preference pairs: import people's A/B judgements, list what is stored."""


@labels.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(_FORMATS),
    default="auto",
    show_default=True,
    help="File format; auto decides from the first row's keys.",
)
@click.option(
    "--dataset",
    help="Dataset name for every FILE. Default: each file's name without .json/.jsonl/.gz.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summaries as JSON.")
@pass_context
def labels_import(
    obj: Context, files: tuple[Path, ...], fmt: str, dataset: str | None, as_json: bool
) -> None:
    """Import labelled A/B pairs from FILES as reviews with source "import".

    Formats: pandalm (a JSON array or JSONL of instruction, input, response1, response2,
    annotator1..N with 0 = tie, 1 = response1, 2 = response2), hh (Anthropic HH-RLHF JSONL,
    gzipped or not, of chosen/rejected transcripts), plain (JSONL of prompt or messages, a,
    b, label a|b|tie, optional id, task_type, annotator) and trl (TRL preference JSONL of
    prompt, chosen, rejected, standard or conversational: what `pairs export` writes).

    Every file is read whole before anything is written. Rows that cannot be used (identical
    responses, missing or mistyped fields, labels outside the scheme, repeats) are skipped and
    counted by reason, and the first few of each are named as file:line on stderr. A file that
    is not JSON, whose rows are not objects, or with no usable row at all, is refused with its
    file:line and nothing is imported. Importing the same file again changes nothing.
    """
    from ..store import read_labelled_pairs

    loaded = [
        (path, name, read_labelled_pairs(path, fmt, obj.settings.limits))
        for path, name in zip(files, dataset_names(files, dataset), strict=True)
    ]
    with obj.open_store(create=True) as store, store.transaction():
        summaries = [
            {
                "file": str(path),
                "format": pairs.format,
                "rows": pairs.rows,
                **store.import_labels(pairs, name),
                "first_skipped": pairs.first_skipped,
                "skip_examples": pairs.skip_examples,
            }
            for path, name, pairs in loaded
        ]
    echo_skipped(summaries)
    if as_json:
        return print_json(summaries)
    for summary in summaries:
        click.echo(_describe(summary))


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
    m = s["majority"]
    split = f", no majority {m['none']}" if m["none"] else ""
    return (
        f"{s['file']}: dataset {s['dataset']} ({s['format']}, {s['rows']} rows): "
        f"pairs {counts(s['pairs'])}, reviews {counts(s['reviews'])}, {skips}; "
        f"majority a {m['a']}, b {m['b']}, tie {m['tie']}{split}{_dimensions(s['dimensions'])}"
    )


def _dimensions(pairs_per: dict[str, int]) -> str:
    """'; dimensions overall 5, helpfulness 3' when any label judges one dimension, else ''."""
    if not any(pairs_per):
        return ""
    named = sorted(pairs_per.items(), key=lambda kv: (kv[0] != "", kv[0]))
    return "; dimensions " + ", ".join(f"{d or 'overall'} {n}" for d, n in named)


@labels.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def labels_list(obj: Context, as_json: bool) -> None:
    """List the labelled datasets: imported ones, and "reviewer" for the reviewer app's verdicts.

    For each: pairs, reviews, annotators, how the majority of labels fell (a, b, tie, or no
    majority), when its first and last labels were given, and its pairs per dimension when
    labels judge one (plain files' ``dimension``).
    """
    with obj.open_store() as store:
        datasets = store.label_datasets()
    if as_json:
        return print_json(datasets)
    if not datasets:
        click.echo("no labelled pairs yet: run `criticloop labels import FILE`")
        return
    width = max(len(d["dataset"]) for d in datasets)
    for d in datasets:
        m = d["majority"]
        click.echo(
            f"{d['dataset']:<{width}}  {d['source']:<8} {d['pairs']:>6} pairs {d['reviews']:>6} "
            f"reviews {d['annotators']:>3} annotators  majority a {m['a']} / b {m['b']} / "
            f"tie {m['tie']} / none {m['none']}  {(d['first'] or '')[:19]} .. "
            f"{(d['last'] or '')[:19]}{_dimensions(d['dimensions'])}"
        )


COMMANDS = [labels]
