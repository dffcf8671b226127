"""``criticloop traces``: what the graph did, from the store, with LangSmith on or off.

criticloop traces                  # recent runs: prompts, traces, judge calls, cost
criticloop traces RUN              # the run's prompt threads: invocations, seconds, outcome
criticloop traces RUN PROMPT       # the thread's tree: traces > nodes > judge calls
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import NotFoundError
from ._context import Context, pass_context, print_json


@click.command()
@click.argument("run_id", required=False)
@click.argument("prompt_id", required=False)
@click.option(
    "-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Runs listed."
)
@click.option("--full", is_flag=True, help="Show each node's inputs and outputs in full.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def traces(
    obj: Context, run_id: str | None, prompt_id: str | None, limit: int, full: bool, as_json: bool
) -> None:
    """Inspect graph runs: runs, then a run's threads, then one thread's tree of nodes.

    Every invocation of a prompt's thread (the first pass, a continuation after a crash, the
    resume after a review) is a trace; its nodes are listed with their seconds, what they read
    and what they returned, and each critic node with its judge calls (tokens, seconds, cost).
    With LangSmith tracing on, the same traces are in LangSmith under the ids shown.
    """
    with obj.open_store() as store:
        if run_id is None:
            runs = store.traced_runs(limit)
            if as_json:
                return print_json(runs)
            if not runs:
                click.echo("no graph runs yet: run `criticloop graph run`")
                return
            for r in runs:
                cost = f", ${r['cost_usd']:.4f}" if r["cost_usd"] is not None else ""
                where = (
                    f", LangSmith project {r['langsmith_project']}"
                    if r["langsmith_project"]
                    else ""
                )
                click.echo(
                    f"{r['id']}  {r['status']:<7} {r['started_at'][:19]}  {r['prompts']} prompts, "
                    f"{r['traces']} traces, {r['critic_calls']} critic calls{cost}{where}"
                )
            return
        store.get_run(run_id)  # NotFoundError names it
        if prompt_id is None:
            threads = store.run_threads(run_id)
            if as_json:
                return print_json(threads)
            if not threads:
                click.echo(f"run {run_id} has no traces (it ran before tracing was recorded)")
            for t in threads:
                click.echo(
                    f"{t['prompt_id']:<24} {t['traces']} trace(s) [{t['kinds']}] "
                    f"{t['seconds'] or 0:.2f} s  {t['outcome'] or t['last_status']}: {t['reason'] or ''}"
                )
            return
        tree = _thread_tree(store, run_id, prompt_id)
        if as_json:
            return print_json(tree)
        _echo_tree(tree, obj, full)


def _thread_tree(store: Any, run_id: str, prompt_id: str) -> dict[str, Any]:
    found = store.traces_for(run_id, prompt_id)
    if not found:
        raise NotFoundError(f"run {run_id} has no trace of prompt {prompt_id!r}")
    decision = store.get_decision(run_id, prompt_id)
    out = []
    for trace in found:
        calls = store.critic_calls_for(trace["id"])
        spans = []
        for span in store.spans_for(trace["id"]):
            critic = (
                span["node"].removeprefix("critic_") if span["node"].startswith("critic_") else None
            )
            spans.append({**span, "calls": [c for c in calls if c["critic"] == critic]})
        out.append({**trace, "spans": spans})
    return {
        "run_id": run_id,
        "prompt_id": prompt_id,
        "outcome": decision and {k: decision[k] for k in ("outcome", "status", "reason")},
        "traces": out,
    }


def _echo_tree(tree: dict[str, Any], obj: Context, full: bool) -> None:
    outcome = tree["outcome"]
    said = (
        f"{outcome['outcome']} ({outcome['status']}): {outcome['reason']}"
        if outcome
        else "no decision"
    )
    click.echo(f"run {tree['run_id']} / prompt {tree['prompt_id']}: {said}")
    host = None
    for i, trace in enumerate(tree["traces"]):
        last = i == len(tree["traces"]) - 1
        head, pad = ("└─", "   ") if last else ("├─", "│  ")
        seconds = f"{trace['seconds']:.2f} s" if trace["seconds"] is not None else "unfinished"
        error = f"  {trace['error']}" if trace["error"] else ""
        click.echo(
            f"{head} trace {trace['id']}  {trace['kind']}  {trace['status']}  {seconds}{error}"
        )
        if trace["langsmith_project"]:
            host = host or _langsmith_host(obj)
            click.echo(
                f"{pad}   LangSmith: project {trace['langsmith_project']}, run {trace['id']} at {host}"
            )
        idle = [  # critic nodes with nothing to judge here (not weighted, or not applicable)
            s["node"].removeprefix("critic_")
            for s in trace["spans"]
            if s["node"].startswith("critic_") and not s["outputs"] and not s["error"] and not full
        ]
        spans = [s for s in trace["spans"] if s["node"].removeprefix("critic_") not in idle]
        if idle:
            click.echo(f"{pad}   (critics with nothing to judge here: {', '.join(idle)})")
        for j, span in enumerate(spans):
            s_last = j == len(spans) - 1
            s_head = "└─" if s_last else "├─"
            s_pad = "   " if s_last else "│  "
            line = f"{pad}{s_head} {span['node']:<22} {span['seconds']:.3f} s  {_describe(span)}"
            click.echo(line.rstrip())
            for k, call in enumerate(span["calls"]):
                c_head = "└─" if k == len(span["calls"]) - 1 else "├─"
                click.echo(f"{pad}{s_pad}{c_head} {_describe_call(call)}")
            if full:
                for label in ("inputs", "outputs"):
                    body = json.dumps(span[label], indent=2, ensure_ascii=False, default=str)
                    for text in f"{label}: {body}".splitlines():
                        click.echo(f"{pad}{s_pad}   {text}")


def _describe(span: dict[str, Any]) -> str:
    """One line on what a node did, from its recorded outputs."""
    if span["error"]:
        return span["error"]
    out = span["outputs"] or {}
    if "scores" in out:
        parts = []
        for candidate, by_critic in out["scores"].items():
            for score in by_critic.values():
                value = "unscored" if score["score"] is None else f"{score['score']:.2f}"
                conf = "" if score["confidence"] is None else f" conf {score['confidence']:.2f}"
                veto = " VETO" if score.get("veto") else ""
                parts.append(f"{candidate[:8]} {value}{conf}{veto}")
        return "; ".join(parts)
    if "decision" in out:
        d = out["decision"]
        return f"-> {d['route']}: {d['reason']}"
    if "candidates" in out:
        return f"{len(out['candidates'])} candidate(s): " + ", ".join(
            f"{c['id'][:8]} ({c['source']})" for c in out["candidates"]
        )
    if "outcome" in out:
        return f"{out['outcome'].get('outcome')}: {out['outcome'].get('reason')}"
    return ""


def _describe_call(call: dict[str, Any]) -> str:
    if call["backend"] == "local":
        return f"local call {call['seconds']:.3f} s" + ("" if call["ok"] else f"  {call['error']}")
    tokens = f"{call['prompt_tokens'] or 0}+{call['completion_tokens'] or 0} tokens"
    cost = f", ${call['cost_usd']:.6f}" if call["cost_usd"] is not None else ""
    order = "/".join(g[:8] for g in call["generation_ids"])
    state = "ok" if call["ok"] else f"FAILED: {call['error']}"
    return (
        f"{call['backend']} {call['model']} [{order}] {call['attempts']} attempt(s), {tokens}, "
        f"{call['seconds']:.2f} s{cost}  {state}"
    )


def _langsmith_host(obj: Context) -> str:
    """The LangSmith web host for the configured endpoint (no network call: a deep link needs
    the workspace and project ids, which only the API knows)."""
    from langsmith.utils import get_host_url

    endpoint = obj.settings.langsmith_endpoint or "https://api.smith.langchain.com"
    return get_host_url(None, endpoint)


COMMANDS = [traces]
