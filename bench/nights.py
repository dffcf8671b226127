"""Does the nightly loop make the model better? N nights of the real nightly job, each night's
promoted policy measured against the base model on a fixed evaluation slice, by the judges that
made the training data and by one that did not.

    .venv/bin/python bench/nights.py                        # 3 nights, the settings below
    .venv/bin/python bench/nights.py --nights 1 --per-night 6 --eval-limit 4 --rm-steps 10 \\
        --no-record                                         # a smoke run (minutes)

Set-up, in a fresh home under ``bench/.cache/nights/`` (``--work``): ``criticloop init`` (the demo
brands, campaigns and prompts); the independent judge, a reward model that makes no training data
(``criticloop labels import`` of the shared PandaLM file, then ``criticloop train --method
reward``: the bundled MiniLM cross-encoder; the profile never uses it as a critic); and the
gate's ``CRITICLOOP_GATE__INDEPENDENT=rm:trained`` so the gate's drift guard reads it.

Prompts: ``bench/nights_prompts.jsonl``, 180 written for this benchmark. The 30 marked
``metadata.split = eval`` are the evaluation slice: they are never imported into the nightly
home, so nothing trains on them (they live in a second home that only the evaluation reads).
The 150 others are dealt to the nights by a hash of their id (50 a night for 3 nights). Each
night imports its prompts and runs ``criticloop graph run --train auto --json -p ...`` on them:
generation, the critics, pairs, escalations, then DPO on every pair so far and the gate, which
promotes the new adapter or keeps the current one. Escalations are left waiting (no scripted
reviewer): the pairs are the critics' alone.

After each night, on the evaluation slice, the promoted adapter (or the base, when nothing was
promoted yet) against the base model, same seeds, with ``training/_compare.py`` (what the gate
uses): (a) the critics' win rate, sign test over prompts and mean reward; (b) the independent
reward model's; (c) hard-rule rates (any veto, missing disclosure, banned claims, naming a
competitor, the ad present on ad prompts whose campaign fits); (d) words per answer; (e) the KL
from the base, nats per answer, on the promoted adapter's answers. And for the night's pairs:
how often the independent judge agrees that the chosen answer is the better one (pair accuracy),
and the gate's power at the effect it measured.

Prints a table per night, writes ``bench/nights.png`` (reward, win rate, hard-rule violations and
length per night) and appends the tables, settings, machine and date to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpfulness_agreement import machine  # bench/ is on the path when run as a script

BENCH = Path(__file__).parent
RESULTS = BENCH / "RESULTS.md"
PROMPTS = BENCH / "nights_prompts.jsonl"
PLOT = BENCH / "nights.png"
SHARED = BENCH.resolve().parents[1] / "shared" / "data"
LABELS = SHARED / "pandalm_testset-v1.json"

SETTINGS = {
    # What a night runs with (the rest are criticloop's defaults); --set KEY=VALUE overrides.
    "CRITICLOOP_GENERATION__CANDIDATES": "2",
    "CRITICLOOP_GENERATION__MAX_NEW_TOKENS": "96",
    "CRITICLOOP_TRAINING__MIN_NEW_PAIRS": "16",
    "CRITICLOOP_GATE__PROMPTS": "16",
    "CRITICLOOP_GATE__SAMPLES_PER_PROMPT": "2",
    "CRITICLOOP_GATE__MAX_NEW_TOKENS": "96",
    "CRITICLOOP_GATE__INDEPENDENT": "rm:trained",
}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_prompts(path: Path) -> tuple[list[dict], list[dict]]:
    """(training prompts in dealing order, the evaluation slice)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("metadata", {}).get("split") != "eval"]
    held = [r for r in rows if r.get("metadata", {}).get("split") == "eval"]
    return sorted(train, key=lambda r: _hash(r["id"])), held


class Home:
    """A criticloop home driven through its command line, as a user's nightly job is."""

    def __init__(self, path: Path, env: dict[str, str]):
        self.path = path
        self.env = {**os.environ, **env, "CRITICLOOP_HOME": str(path)}
        self.exe = str(Path(sys.executable).parent / "criticloop")

    def run(self, *args: str, timeout: float = 3600) -> Any:
        began = time.perf_counter()
        proc = subprocess.run(
            [self.exe, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        seconds = time.perf_counter() - began
        if proc.returncode != 0:
            sys.exit(f"criticloop {' '.join(args[:3])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        out = proc.stdout
        print(f"  criticloop {' '.join(a for a in args[:4])} ... {seconds:.0f} s", file=sys.stderr)
        return json.loads(out) if "--json" in args else out

    def settings(self):
        from criticloop.settings import Settings

        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            settings = Settings.load(env_file=None)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        settings.apply_offline_policy()
        return settings


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def setup(work: Path, args) -> tuple[Home, Home, dict]:
    """The nightly home (demo data, the independent reward model) and the evaluation home."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**SETTINGS, **dict(kv.split("=", 1) for kv in args.set)}
    night = Home(work / "home", env)
    night.run("init", "--json")
    night.run("labels", "import", str(LABELS), "--json")
    trained = night.run(
        "train", "--method", "reward", "--max-steps", str(args.rm_steps), "--json"
    )
    (rm,) = [r for r in night.run("reward-models", "list", "--json") if r["status"] == "active"]
    evaluation = Home(work / "eval-home", env)
    evaluation.run("init", "--json")  # the demo brands and campaigns (its prompts never run)
    (work / "home" / "models").mkdir(exist_ok=True)
    shutil.rmtree(work / "eval-home" / "models", ignore_errors=True)
    (work / "eval-home" / "models").symlink_to(work / "home" / "models")  # converted once
    return night, evaluation, {**rm, "trained": trained}


def independent_pair_accuracy(night: Home, run_id: str | None, rm: dict) -> dict[str, Any]:
    """How often the independent reward model prefers the chosen answer of the night's pairs."""
    from criticloop.reward import RewardScorer, trained_spec
    from criticloop.store import Store

    if run_id is None:
        return {"pairs": 0}
    settings = night.settings()
    with Store.open(settings.db_path, create=False) as store:
        pairs = list(store.db.query("SELECT * FROM pairs WHERE run_id = ?", [run_id]))
        contexts = {p["prompt_id"]: store.prompt_context(p["prompt_id"])[0] for p in pairs}
    scorer = RewardScorer(trained_spec(rm))
    agree, by_source = [], {}
    for pair in pairs:
        conversation = [
            {"role": m["role"], "content": m["content"]} for m in contexts[pair["prompt_id"]]["messages"]
        ]
        chosen, rejected = scorer.score_many(
            [(conversation, pair["chosen"]), (conversation, pair["rejected"])]
        )
        right = 1.0 if chosen > rejected else 0.5 if chosen == rejected else 0.0
        agree.append(right)
        by_source.setdefault(pair["source"], []).append(right)
    return {
        "pairs": len(pairs),
        "accuracy": sum(agree) / len(agree) if agree else None,
        "by_source": {k: round(sum(v) / len(v), 3) for k, v in by_source.items()},
    }


def gate_power(gate: dict | None, alpha: float) -> dict[str, Any]:
    """The gate's power at the effect it measured (the share of its non-even prompts that came
    out better) on the prompts it had, and the prompts 80% power would need."""
    from criticloop.training._gate import prompts_for_power

    if not gate or not gate.get("prompts"):
        return {}
    decisive = gate["prompts_better"] + gate["prompts_worse"]
    share = gate["prompts_better"] / decisive if decisive else None
    out: dict[str, Any] = {"decisive_prompts": decisive, "share_better": share, "power": gate.get("power")}
    if share is not None:
        out["prompts_for_80"] = prompts_for_power(share, gate["prompts_even"] / gate["prompts"], alpha)
    return out


def evaluate(
    night: Home, evaluation: Home, eval_rows: list[dict], rm: dict, args, cache: dict,
    adapter: dict | None = None,
):
    """The promoted adapter (or ``adapter``, or the base) against the base on the evaluation
    slice."""
    from criticloop.agents import Policy, Sampling, policy_ref
    from criticloop.reward import trained_spec
    from criticloop.store import Store
    from criticloop.training._compare import answers_of_both, judge_answers
    from criticloop.training._gate import verdict
    from criticloop.training._judge import CriticJudge, ModelReward

    settings = evaluation.settings()
    with Store.open(night.settings().db_path, create=False) as store:
        promoted = adapter or store.promoted_adapter(policy_ref(settings, convert=False).name)
    key = promoted["version"] if promoted else "base"
    if key in cache:
        return {**cache[key], "reused": True}
    if "judge" not in cache:
        cache["judge"] = CriticJudge(settings)
        cache["independent"] = ModelReward(trained_spec(rm), cache["judge"])
    judge, independent = cache["judge"], cache["independent"]
    gate = settings.gate
    with Store.open(settings.db_path, create=False) as store:
        from criticloop.training._data import policy_conversation

        ids = [r["id"] for r in eval_rows]
        requests = [(pid, policy_conversation(store, pid), range(args.eval_samples)) for pid in ids]
    policy = Policy.load(settings, policy_ref(settings))
    sampling = Sampling(
        max_new_tokens=gate.max_new_tokens, temperature=gate.temperature,
        top_p=settings.generation.top_p, seed=gate.seed,
    )  # fmt: skip
    began = time.perf_counter()
    texts, ratios = answers_of_both(
        policy, promoted, None, requests, sampling, settings.generation.batch_size
    )
    comparison = judge_answers(texts, judge, gate.tie_margin, independent=independent, ratios=ratios)
    result = {
        "policy": key,
        "seconds": round(time.perf_counter() - began, 1),
        "critics": verdict(comparison, "critics", gate),
        "independent": verdict(comparison, "independent", gate),
        "promoted": comparison.stats("candidate"),
        "base": comparison.stats("baseline"),
        "kl": comparison.kl(),
    }
    cache[key] = result
    return result


def probe(night: Home, evaluation: Home, eval_rows: list[dict], rm: dict, args) -> str:
    """Does more training move the policy? On every pair the nights made, DPO adapters with
    other step counts and learning rates (``--probe STEPS:LR``), each measured on the
    evaluation slice like a promoted one (registered, never promoted)."""
    from criticloop.store import Store

    lines = [
        "| DPO steps | learning rate | beta | training s | critics: win rate vs base (p) | "
        "independent: win rate (p) | independent: mean, adapter / base | words, adapter / base | "
        "hard rules broken, adapter / base | KL from base (nats/answer) |",
        "|---:|---:|---:|---:|---|---|---|---|---|---:|",
    ]
    cache: dict = {}
    for spec in args.probe:
        if ":" not in spec:  # an adapter the nights trained (and the gate kept out): measure it
            with Store.open(night.settings().db_path, create=False) as store:
                adapter = store.get_adapter(spec)
            e = evaluate(night, evaluation, eval_rows, rm, args, cache, adapter)
            config = adapter["config"]
            steps = f"{spec} ({adapter['metrics'].get('steps')} steps)"
            lines.append(_probe_row(steps, config.get("learning_rate"), config.get("beta"), "-", e))
            print(lines[-1], file=sys.stderr)
            continue
        steps, lr, *rest = spec.split(":")
        beta = rest[0] if rest else night.settings().training.beta
        trainer = Home(night.path, {})
        trainer.env = {**night.env, "CRITICLOOP_TRAINING__BETA": str(beta)}
        trained = trainer.run(
            "train", "--no-gate", "--json", "--max-steps", steps, "--learning-rate", lr
        )
        with Store.open(night.settings().db_path, create=False) as store:
            adapter = store.get_adapter(trained["adapter"])
        e = evaluate(night, evaluation, eval_rows, rm, args, cache, adapter)
        metrics = trained["metrics"]
        lines.append(_probe_row(metrics.get("steps"), lr, beta, metrics.get("seconds"), e))
        print(lines[-1], file=sys.stderr)
    return "\n".join(lines)


def _probe_row(steps, lr, beta, seconds, e: dict) -> str:
    c, i, a, b = e["critics"], e["independent"], e["promoted"], e["base"]
    return (
        f"| {steps} | {lr} | {beta} | {seconds} | "
        f"{c['win_rate']:.0%} (p={c['p_value']:.3g}) | {i['win_rate']:.0%} (p={i['p_value']:.3g}) | "
        f"{a['independent']:.3f} / {b['independent']:.3f} | {a['words']:.0f} / {b['words']:.0f} | "
        f"{a['violation_rate']:.0%} / {b['violation_rate']:.0%} | "
        + ("-" if e["kl"] is None else f"{e['kl']:.2f}")
        + " |"
    )


def rule_rate(stats: dict, rule: str) -> float:
    return stats["rules"].get(rule, 0) / stats["answers"] if stats["answers"] else 0.0


def tables(nights: list[dict]) -> str:
    job = [
        "| night | prompts | pairs (by source) | escalated, left waiting | DPO steps | training s | "
        "gate | gate win rate (95% CI) | gate p | gate power at its effect | pair accuracy by the independent judge | drift flags |",
        "|---:|---:|---|---:|---:|---:|---|---|---:|---:|---:|---|",
    ]
    ev = [
        "| night | policy | critics: win rate vs base (p) | critics: mean reward, promoted / base | "
        "independent: win rate (p) | independent: mean score, promoted / base | hard rules broken, promoted / base | "
        "missing disclosure | banned claim | names a competitor | ad present when asked | words, promoted / base | KL from base (nats/answer) |",
        "|---:|---|---|---|---|---|---|---|---|---|---|---|---:|",
    ]
    for n in nights:
        run, training = n["run"], n["run"].get("training") or {}
        gate = training.get("gate") or {}
        pairs = run.get("pairs") or {}
        pw = n["power"]
        acc = n["pair_accuracy"]
        job.append(
            f"| {n['night']} | {run.get('prompts', 0)} | {sum(pairs.values())} ("
            + (", ".join(f"{k} {v}" for k, v in sorted(pairs.items())) or "none")
            + f") | {(run.get('outcomes') or {}).get('escalated', 0)} | "
            f"{(training.get('metrics') or {}).get('steps', '-')} | "
            f"{(training.get('metrics') or {}).get('seconds', '-')} | "
            f"{gate.get('decision', training.get('status', '-'))} | "
            + (
                f"{gate['win_rate']:.0%} ({gate['ci_low']:.0%}-{gate['ci_high']:.0%})"
                if gate.get("win_rate") is not None else "-"
            )
            + f" | {gate.get('p_value', '-')} | "
            + (f"{pw['power']:.0%}" if pw.get("power") is not None else "-")
            + " | "
            + (f"{acc['accuracy']:.0%} of {acc['pairs']}" if acc.get("accuracy") is not None else "-")
            + f" | {'; '.join(gate.get('flags') or []) or 'none'} |"
        )  # fmt: skip
        e = n["eval"]
        p, b = e["promoted"], e["base"]
        c, i = e["critics"], e["independent"]
        ad = (
            f"{p['ad_rate']:.0%} / {b['ad_rate']:.0%}" if p.get("ad_rate") is not None else "-"
        )
        ev.append(
            f"| {n['night']} | {e['policy']} | {c['win_rate']:.0%} (p={c['p_value']:.3g}) | "
            f"{p['reward']:.3f} / {b['reward']:.3f} | {i['win_rate']:.0%} (p={i['p_value']:.3g}) | "
            f"{p['independent']:.3f} / {b['independent']:.3f} | "
            f"{p['violation_rate']:.0%} / {b['violation_rate']:.0%} | "
            f"{rule_rate(p, 'missing_disclosure'):.0%} / {rule_rate(b, 'missing_disclosure'):.0%} | "
            f"{rule_rate(p, 'banned_claim'):.0%} / {rule_rate(b, 'banned_claim'):.0%} | "
            f"{p['competitor_rate']:.0%} / {b['competitor_rate']:.0%} | {ad} | "
            f"{p['words']:.0f} / {b['words']:.0f} | "
            + ("-" if e["kl"] is None else f"{e['kl']:.2f}")
            + " |"
        )
    return "The nightly job:\n\n" + "\n".join(job) + "\n\nOn the evaluation slice:\n\n" + "\n".join(ev)


def plot(nights: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [n["night"] for n in nights]
    ev = [n["eval"] for n in nights]
    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    ax = axes[0][0]
    ax.plot(x, [e["promoted"]["reward"] for e in ev], "o-", label="critics, promoted")
    ax.plot(x, [e["base"]["reward"] for e in ev], "o--", label="critics, base")
    ax.plot(x, [e["promoted"]["independent"] for e in ev], "s-", label="independent, promoted")
    ax.plot(x, [e["base"]["independent"] for e in ev], "s--", label="independent, base")
    ax.set_title("mean reward on the evaluation slice")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    for judge, marker in (("critics", "o"), ("independent", "s")):
        rates = [e[judge]["win_rate"] for e in ev]
        low = [r - e[judge]["ci_low"] for r, e in zip(rates, ev, strict=True)]
        high = [e[judge]["ci_high"] - r for r, e in zip(rates, ev, strict=True)]
        ax.errorbar(x, rates, yerr=[low, high], marker=marker, capsize=3, label=judge)
    gates = [(n["run"].get("training") or {}).get("gate") or {} for n in nights]
    if any(gates):
        ax.plot(x, [g.get("win_rate") for g in gates], "^:", label="gate: the night's new adapter, critics")
        ax.plot(
            x, [(g.get("independent") or {}).get("win_rate") for g in gates], "v:",
            label="gate: the night's new adapter, independent",
        )  # fmt: skip
    ax.axhline(0.5, color="grey", lw=1, ls=":")
    ax.set_ylim(0, 1)
    ax.set_title("promoted vs base: win rate (95% CI)")
    ax.legend(fontsize=7)
    ax = axes[1][0]
    ax.plot(x, [e["promoted"]["violation_rate"] for e in ev], "o-", label="promoted")
    ax.plot(x, [e["base"]["violation_rate"] for e in ev], "o--", label="base")
    if any(gates):
        ax.plot(x, [(g.get("candidate_stats") or {}).get("violation_rate") for g in gates], "^:",
                label="gate: new adapter (held-out prompts)")
        ax.plot(x, [(g.get("baseline_stats") or {}).get("violation_rate") for g in gates], "v:",
                label="gate: current (held-out prompts)")
    ax.set_title("answers breaking a hard rule")
    ax.legend(fontsize=7)
    ax = axes[1][1]
    ax.plot(x, [e["promoted"]["words"] for e in ev], "o-", label="promoted")
    ax.plot(x, [e["base"]["words"] for e in ev], "o--", label="base")
    if any(gates):
        ax.plot(x, [(g.get("candidate_stats") or {}).get("words") for g in gates], "^:",
                label="gate: new adapter (held-out prompts)")
        ax.plot(x, [(g.get("baseline_stats") or {}).get("words") for g in gates], "v:",
                label="gate: current (held-out prompts)")
    ax.set_title("words per answer")
    ax.legend(fontsize=7)
    for row in axes:
        for a in row:
            a.set_xlabel("night")
            a.set_xticks(x)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=3)
    parser.add_argument("--per-night", type=int, default=0, help="prompts a night (0: all dealt)")
    parser.add_argument("--eval-limit", type=int, default=0, help="evaluation prompts (0: all 30)")
    parser.add_argument("--eval-samples", type=int, default=2, help="answers per prompt and side")
    parser.add_argument("--rm-steps", type=int, default=200, help="the independent model's steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", type=Path, default=BENCH / ".cache" / "nights")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--replot", type=Path, help="only redraw the PNG from a --json file")
    parser.add_argument(
        "--probe", nargs="+", metavar="STEPS:LR[:BETA]|VERSION",
        help="no nights: on the pairs an earlier run left in --work, train DPO adapters with "
        "these settings (or take a trained VERSION) and measure each on the evaluation slice",
    )  # fmt: skip
    args = parser.parse_args()
    if args.replot:
        return plot(json.loads(args.replot.read_text())["nights"], PLOT)
    if not LABELS.exists():
        print(f"skipped: {LABELS} is absent (the shared data folder sits beside the project)")
        return
    began = time.perf_counter()
    train_rows, eval_rows = load_prompts(PROMPTS)
    if args.eval_limit:
        eval_rows = eval_rows[: args.eval_limit]
    if args.probe:
        return probe_only(args, eval_rows, began)
    night_home, eval_home, rm = setup(args.work, args)
    eval_home.run("import", str(write_jsonl(args.work / "eval.jsonl", eval_rows)), "--json")
    held = rm["metrics"].get("heldout") or {}
    print(
        f"independent judge {rm['version']}: MiniLM reward model on PandaLM's labels, "
        f"{rm['pairs']} pairs, held-out accuracy {held.get('accuracy')}",
        file=sys.stderr,
    )
    nights, cache = [], {}
    alpha = night_home.settings().gate.alpha
    for k in range(args.nights):
        rows = train_rows[k :: args.nights]
        if args.per_night:
            rows = rows[: args.per_night]
        night_began = time.perf_counter()
        night_home.run("import", str(write_jsonl(args.work / f"night-{k + 1}.jsonl", rows)), "--json")
        ids = [a for r in rows for a in ("-p", r["id"])]
        run = night_home.run("graph", "run", "--train", "auto", "--json", *ids)
        gate = (run.get("training") or {}).get("gate")
        result = {
            "night": k + 1,
            "run": run,
            "pair_accuracy": independent_pair_accuracy(night_home, run.get("run_id"), rm),
            "power": gate_power(gate, alpha),
            "eval": evaluate(night_home, eval_home, eval_rows, rm, args, cache),
            "seconds": round(time.perf_counter() - night_began, 1),
        }
        nights.append(result)
        print(tables(nights[-1:]), file=sys.stderr)
    elapsed = time.perf_counter() - began
    text = tables(nights)
    print(text)
    plot(nights, PLOT)
    if args.json:
        args.json.write_text(json.dumps({"nights": nights, "rm": rm}, indent=2, default=str))
    if args.no_record:
        return
    env = {**SETTINGS, **dict(kv.split("=", 1) for kv in args.set)}
    per_night = ", ".join(f"{n['seconds'] / 60:.1f}" for n in nights)
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(
            f"\n### Nights: does the loop improve the policy?, {datetime.date.today()}\n\n"
            f"Machine: {machine()}. `bench/nights.py {' '.join(sys.argv[1:])}`; {elapsed / 60:.1f} "
            f"minutes in all (per night: {per_night}). "
            f"Settings: {', '.join(f'{k}={v}' for k, v in env.items())}; the rest criticloop's "
            f"defaults. Independent judge: {rm['version']}, the bundled MiniLM cross-encoder "
            f"trained on PandaLM's human labels ({rm['pairs']} pairs, {args.rm_steps} steps; "
            f"held-out accuracy {held.get('accuracy')}), never a critic of the nightly profile. "
            f"Escalations were left waiting (no scripted reviewer). Evaluation slice: "
            f"{len(eval_rows)} prompts x {args.eval_samples} answers per side, same seeds. "
            f"Plot: `{PLOT.relative_to(BENCH.parent)}`.\n\n{text}\n"
        )


def probe_only(args, eval_rows: list[dict], began: float) -> None:
    env = {**SETTINGS, **dict(kv.split("=", 1) for kv in args.set)}
    night, evaluation = Home(args.work / "home", env), Home(args.work / "eval-home", env)
    if not (night.path / "criticloop.db").exists():
        sys.exit(f"--probe needs the homes an earlier run left in {args.work}")
    (rm,) = [r for r in night.run("reward-models", "list", "--json") if r["status"] == "active"]
    with __import__("sqlite3").connect(night.path / "criticloop.db") as db:
        pairs = db.execute("SELECT count(*) FROM pairs").fetchone()[0]
    table = probe(night, evaluation, eval_rows, rm, args)
    print(table)
    if args.no_record:
        return
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(
            f"\n### Nights: does more training move the policy?, {datetime.date.today()}\n\n"
            f"Machine: {machine()}. `bench/nights.py {' '.join(sys.argv[1:])}`; "
            f"{(time.perf_counter() - began) / 60:.1f} minutes. DPO adapters trained on the "
            f"{pairs} pairs the nights above left (held-out prompts left out, as always), not "
            f"promoted, each against the base on the evaluation slice ({len(eval_rows)} prompts x "
            f"{args.eval_samples} answers per side, same seeds); independent judge {rm['version']}."
            f"\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
