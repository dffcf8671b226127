"""Load benchmark of ``criticloop graph run``: prompts/s, orchestrator CPU per prompt, peak
requests in flight, peak RSS and SQLite write time, against loopback servers.

    .venv/bin/python bench/scale.py                     # 2,000 prompts, 0 and 200 ms, 1..64
    .venv/bin/python bench/scale.py --prompts 200 --latency-ms 0 --concurrency 1,8 --no-record

Each configuration is one ``run_feedback`` call (what ``criticloop graph run`` calls once it
holds the run lock) in a fresh child process over a fresh data home, so CPU time and peak RSS
are that run's alone. The policy (``CRITICLOOP_POLICY__BASE_URL``) and one LLM judge critic
(``helpfulness`` on the ``crew`` backend, ``CRITICLOOP_JUDGE__BASE_URL``) are loopback
servers in another process (``bench/_loopback.py``): fixed texts after a sleep of the
configured latency, so their CPU is not counted. Candidates are served (one request per prompt
with ``n=K``) or supplied in the import file (``--source supplied``). Critics: the local
coherence and compliance critics (the MiniLM embedder) plus the judge (``local+judge``), or the
judge alone (``judge``), or constant-time fakes in place of every critic and the embedder
(``constant``: what is left is the orchestrator's own cost). The concurrency setting c sets ``CRITICLOOP_CONCURRENCY`` and
``CRITICLOOP_POLICY__MAX_IN_FLIGHT``, and ``CRITICLOOP_JUDGE__MAX_IN_FLIGHT`` to 2c (a pair is
judged in both orders at once).

Measured in the child: wall and CPU seconds (``time.process_time``, every thread of the
process) of the run; peak RSS (``ru_maxrss``); SQLite write time = seconds inside the
outermost ``Store.transaction()`` of each thread (every store write goes through one:
``BEGIN IMMEDIATE``, the statements, ``COMMIT``, waits for the write lock included) plus
seconds in the LangGraph checkpointer's ``put``/``put_writes`` (its lock waits included).
The servers count requests and the most in flight at once. Prints a table and appends it to
bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "RESULTS.md"
JUDGED = "helpfulness"  # the critic the served judge plays
ROUNDS = {"served": 2, "supplied": 1}  # round trips a prompt waits for (K=2): its generation,
# its pair's judge calls (both orders at once); only to size --seconds-per-config runs


# ---- the parent: servers, one child per configuration, the table ---------------------------


class Loopback:
    """``bench/_loopback.py`` in its own process, for one latency."""

    def __init__(self, latency_ms: float, likelihood: bool = False):
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "_loopback.py"), "--latency-ms", str(latency_ms)]
            + ["--likelihood"] * likelihood,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.urls = json.loads(self.proc.stdout.readline())

    def stats(self, reset: bool = True) -> dict[str, dict[str, int]]:
        out = {}
        for name, url in self.urls.items():
            root = url.removesuffix("/v1")
            with urllib.request.urlopen(f"{root}/stats?reset={int(reset)}", timeout=10) as r:
                out[name] = json.load(r)
        return out

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait(10)


def prompts_for(latency_ms: float, concurrency: int, source: str, args: argparse.Namespace) -> int:
    """Prompts for one configuration: ``--prompts``, or fewer where the servers' latency alone
    would make the run longer than ``--seconds-per-config`` (200 ms at c=1: 0.6 s a prompt)."""
    if latency_ms <= 0 or not args.seconds_per_config:
        return args.prompts
    per_prompt = ROUNDS[source] * latency_ms / 1000 / concurrency
    fit = int(args.seconds_per_config / per_prompt)
    return max(min(args.prompts, fit), min(args.prompts, args.min_prompts))


def run_child(config: dict[str, Any], work: Path) -> dict[str, Any]:
    out = work / f"result-{os.getpid()}-{time.monotonic_ns()}.json"
    env = {
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "1",
        "HF_HUB_OFFLINE": "1",
        "CREWAI_DISABLE_TELEMETRY": "true",
        "OTEL_SDK_DISABLED": "true",
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(config), str(out)]
    log = out.with_suffix(".log")
    with log.open("w") as stderr:
        done = subprocess.run(cmd, env=env, stderr=stderr)
    if done.returncode:  # a run that dies is a result too: say how
        last = [x for x in log.read_text().splitlines() if x.strip()][-1:]
        return {**config, "error": f"exit {done.returncode}: {last[0][:200] if last else ''}"}
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2000, help="Prompts per configuration.")
    parser.add_argument("--latency-ms", default="0,200", help="Server latencies, comma-separated.")
    parser.add_argument("--concurrency", default="1,8,16,32,64", help="Concurrency settings.")
    parser.add_argument(
        "--workers",
        default="1",
        help="Judging processes (graph run --workers), comma-separated; the concurrency is "
        "shared among them. Not with --critics constant (its fakes live in this process).",
    )
    parser.add_argument(
        "--source", default="served", help="served, supplied (comma-separated: both)."
    )
    parser.add_argument(
        "--critics",
        default="local+judge",
        help="local+judge, judge, constant (fakes at no cost: the orchestrator alone); "
        "comma-separated for several.",
    )
    parser.add_argument(
        "--seconds-per-config",
        type=float,
        default=0,
        help="With latency, fewer prompts where latency alone would take longer (0: never).",
    )
    parser.add_argument("--min-prompts", type=int, default=100)
    parser.add_argument(
        "--likelihood",
        action="store_true",
        help="The policy server offers prompt logprobs, as vLLM does: the coherence critic "
        "(local critics) asks it for each reply's likelihood.",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="Runs of each configuration (the spread shows)."
    )
    parser.add_argument("--sample", action="store_true", help="Sample the stacks of each run.")
    parser.add_argument("--json", type=Path, help="Also write the rows here.")
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child[0]), Path(args.child[1]))

    rows = []
    work = Path(tempfile.mkdtemp(prefix="criticloop-scale-"))
    for latency in [float(x) for x in args.latency_ms.split(",")]:
        servers = Loopback(latency, args.likelihood)
        try:
            for critics in args.critics.split(","):
                for source in args.source.split(","):
                    for c, w in [
                        (int(c), int(w))
                        for w in args.workers.split(",")
                        for c in args.concurrency.split(",")
                        if critics != "constant" or w == "1"
                    ]:
                        n = prompts_for(latency, c, source, args)
                        config = {
                            "prompts": n,
                            "concurrency": c,
                            "workers": w,
                            "latency_ms": latency,
                            "source": source,
                            "critics": critics,
                            "urls": servers.urls,
                            "work": str(work),
                            "sample": args.sample,
                            "likelihood": args.likelihood,
                        }
                        for _ in range(args.repeat):
                            servers.stats(reset=True)
                            row = run_child(config, work)
                            row["servers"] = servers.stats(reset=True)
                            rows.append(row)
                            print(row.get("error") or line(row), file=sys.stderr, flush=True)
        finally:
            servers.close()
    report = render(rows, args)
    print(report)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if not args.no_record:
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write("\n" + report)


def critics(row: dict[str, Any]) -> str:
    """The critics column: with the served likelihood where the coherence critic asked for it."""
    served = row.get("likelihood_from_server") and row["critics"] != "judge"
    return row["critics"] + (" (served likelihood)" if served else "")


def line(row: dict[str, Any]) -> str:
    return (
        f"{row['latency_ms']:g} ms c={row['concurrency']} w={row['workers']} {row['source']} "
        f"{critics(row)}: "
        f"{row['prompts']} prompts {row['prompts_per_s']:.1f}/s, cpu {row['cpu_ms_per_prompt']:.0f} "
        f"ms/prompt, in flight {row['servers']['policy']['peak_in_flight']}/"
        f"{row['servers']['judge']['peak_in_flight']}, outcomes {row['outcomes']}"
    )


def ideal(row: dict[str, Any], instant: dict[tuple, float]) -> float | None:
    """c requests in flight / latency, bounded by the instant-server rate of the same setup and
    c: what the orchestrator would do if one round trip a prompt were all it waited for."""
    if not row["latency_ms"]:
        return None
    cap = instant.get((row["source"], critics(row), row["concurrency"], row["workers"]), math.inf)
    return min(row["concurrency"] / (row["latency_ms"] / 1000), cap)


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    runs: dict[tuple, list[float]] = {}  # the instant-server runs of each setup (--repeat)
    for r in rows:
        if not r["latency_ms"] and "error" not in r:
            key = (r["source"], critics(r), r["concurrency"], r["workers"])
            runs.setdefault(key, []).append(r["prompts_per_s"])
    instant = {key: statistics.median(rates) for key, rates in runs.items()}
    header = (
        "| latency | c | workers | candidates | critics | prompts | wall s | prompts/s | "
        "steady/s | ideal/s | % of ideal | CPU ms/prompt | CPU probe ms | "
        "peak in flight policy/judge | "
        "peak RSS MiB | peak fds | SQLite ms/prompt store+ckpt | store opens/prompt | "
        "top stages s | outcomes |\n"
        "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        "---|---|"
    )
    lines = [header]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['latency_ms']:g} ms | {r['concurrency']} | {r['workers']} | {r['source']} | "
                f"{critics(r)} | {r['prompts']} | failed: {r['error']} |"
            )
            continue
        best = ideal(r, instant)
        share = f"{100 * r['prompts_per_s'] / best:.0f}%" if best else "-"
        steady = r["steady_judging_prompts_per_s"]
        stages = ", ".join(f"{k} {v:.0f}" for k, v in list(r["stage_seconds"].items())[:3])
        opens = r["sqlite_calls"].get("store_open", 0) / r["prompts"]
        sqlite = (  # the write timer patches this process only, not the workers
            f"{r['sqlite_store_ms_per_prompt']:.0f}+{r['sqlite_checkpoint_ms_per_prompt']:.0f} | "
            f"{opens:.1f}"
            if r["workers"] == 1
            else "- | -"
        )
        rss = f"{r['peak_rss_mib']:.0f}"
        if r.get("peak_worker_rss_mib"):
            rss += f" + {r['workers']}x{r['peak_worker_rss_mib']:.0f}"
        lines.append(
            f"| {r['latency_ms']:g} ms | {r['concurrency']} | {r['workers']} | {r['source']} | "
            f"{critics(r)} | "
            f"{r['prompts']} | {r['wall_s']:.1f} | {r['prompts_per_s']:.1f} | "
            f"{f'{steady:.1f}' if steady else '-'} | {f'{best:.1f}' if best else '-'} | "
            f"{share} | {r['cpu_ms_per_prompt']:.0f} | {r.get('cpu_probe_ms', '-')} | "
            f"{r['servers']['policy']['peak_in_flight']}/{r['servers']['judge']['peak_in_flight']} | "
            f"{rss} | {r['peak_open_fds']} | {sqlite} | {stages} | "
            f"{', '.join(f'{k} {v}' for k, v in sorted(r['outcomes'].items()))} |"
        )
    import torch

    today = datetime.date.today().isoformat()
    command = (
        "PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/scale.py "
        + " ".join(a for a in sys.argv[1:])
    )
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU; loopback "
        f"servers in a separate process on the same cores"
    )
    return (
        f"### graph run under load (loopback servers), {today}\n\n"
        f"Machine: {machine}. Command: `{command}`. K=2 candidates per prompt, general prompts; "
        f"the judge critic is {JUDGED} on the crew backend, both orders (2 judge calls a "
        f"prompt). prompts/s = prompts / run wall (start-up included); steady/s = the middle "
        f"80% of prompts finishing judging. CPU probe: milliseconds of a fixed pure-Python loop "
        f"just before the run (lower: a faster machine at the time). ideal = c / latency, "
        f"bounded by the instant-server (median) "
        f"rate at the same c (a served prompt waits for 2 round trips: its generation, then its "
        f"pair judged in both orders at once; a supplied one 1). Judge in-flight limit 2c. "
        f"workers: judging processes (`graph run --workers`), which share c; their CPU is in "
        f"CPU ms/prompt, peak RSS is the run's process + workers x the largest worker. "
        f"Peak fds: open file descriptors of the run's process. SQLite ms/prompt (one process "
        f"only): seconds in the outermost store "
        f"transactions of all threads + checkpoint writes, summed over threads (lock waits "
        f"included), per prompt.\n\n" + "\n".join(lines) + "\n"
    )


# ---- the child: one run of the graph, measured ----------------------------------------------


def write_inputs(home: Path, config: dict[str, Any]) -> tuple[Path, Path]:
    sys.path.insert(0, str(BENCH))  # the loopback's texts, for supplied candidates
    from _loopback import candidate_texts

    home.mkdir(parents=True)
    topics = ["a leaking tap", "a slow laptop", "a sourdough starter", "a bike chain", "a budget"]
    verbs = ["fix", "plan", "explain", "improve", "check"]
    with (home / "prompts.jsonl").open("w") as f:
        for i in range(config["prompts"]):
            pid = f"p-{i:05d}"
            record = {
                "id": pid,
                "task_type": "general",
                "prompt": f"How do I {verbs[i % 5]} {topics[(i // 5) % 5]} for job {i}? (case {pid})",
            }
            if config["source"] == "supplied":
                record["candidates"] = candidate_texts(pid, 2)
            f.write(json.dumps(record) + "\n")
    weights = (
        f"{JUDGED} = 1.0"
        if config["critics"] == "judge"
        else f"{JUDGED} = 0.6\ncoherence = 0.3\ncompliance = 0.1"
    )
    backend = "local" if config["critics"] == "constant" else "crew"
    (home / "profiles.toml").write_text(
        f'version = "scale-{config["critics"]}"\n\n[routing]\nhuman_budget = 10\n\n'
        f'[backends]\ndefault = "local"\n{JUDGED} = "{backend}"\n\n'
        f"[tasks.general.critics]\n{weights}\n"
    )
    return home / "prompts.jsonl", home / "profiles.toml"


class ConstantCritic:
    """A fake critic (``--critics constant``): a score by length at no cost, so what is left is
    the orchestrator's own time (graph, checkpoints, store, the policy client)."""

    version = "constant"

    def __init__(self, name: str):
        self.name = self.dimension = name

    def applies(self, case: Any) -> bool:
        return True

    def __call__(self, case: Any, signals: Any = None) -> Any:
        from criticloop.agents import Score

        return Score(self.name, min(1.0, len(case.judged_text) / 200), 0.9, "constant", "constant")


class NullEmbedder:
    """A fake embedder for ``--critics constant``: zero vectors at once."""

    def encode(self, texts: Any, **_: Any) -> Any:
        import numpy as np

        return np.zeros((len(list(texts)), 8), dtype=np.float32)


class WriteTimer:
    """Seconds inside each thread's outermost store transaction and in checkpoint writes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = threading.local()
        self._mine = threading.local()  # each thread's own counters: no lock on the hot path
        self._all: list[tuple[Counter[str], Counter[str]]] = []

    def add(self, kind: str, seconds: float) -> None:
        mine = getattr(self._mine, "counters", None)
        if mine is None:
            mine = self._mine.counters = (Counter(), Counter())
            with self._lock:
                self._all.append(mine)
        mine[0][kind] += seconds
        mine[1][kind] += 1

    @property
    def seconds(self) -> Counter[str]:
        with self._lock:
            return sum((s for s, _ in self._all), Counter())

    @property
    def calls(self) -> Counter[str]:
        with self._lock:
            return sum((c for _, c in self._all), Counter())

    def install(self) -> None:
        from criticloop.store import Store
        from langgraph.checkpoint.sqlite import SqliteSaver

        timer = self
        transaction = Store.transaction

        @contextlib.contextmanager
        def timed_transaction(store):
            depth = getattr(timer._depth, "n", 0)
            timer._depth.n = depth + 1
            began = time.perf_counter()
            try:
                with transaction(store) as db:
                    yield db
            finally:
                timer._depth.n = depth
                if depth == 0:
                    timer.add("store", time.perf_counter() - began)

        Store.transaction = timed_transaction
        for name in ("put", "put_writes"):
            original = getattr(SqliteSaver, name)

            def timed(self, *a, _original=original, **kw):
                began = time.perf_counter()
                try:
                    return _original(self, *a, **kw)
                finally:
                    timer.add("checkpoint", time.perf_counter() - began)

            setattr(SqliteSaver, name, timed)

        # Where store time goes: waiting for the write lock (BEGIN IMMEDIATE), COMMIT, the
        # rest; and how many connections the run opens (each open checks the migrations).
        from sqlite_utils import Database

        execute = Database.execute

        def timed_execute(db, sql, *a, **kw):
            began = time.perf_counter()
            try:
                return execute(db, sql, *a, **kw)
            finally:
                word = sql.lstrip()[:6].upper()
                kind = {"BEGIN ": "begin", "COMMIT": "commit", "PRAGMA": "pragma"}.get(word, "sql")
                timer.add(f"store_{kind}", time.perf_counter() - began)

        Database.execute = timed_execute
        store_open = Store.open.__func__

        def counted_open(cls, *a, **kw):
            began = time.perf_counter()
            try:
                return store_open(cls, *a, **kw)
            finally:
                timer.add("store_open", time.perf_counter() - began)

        Store.open = classmethod(counted_open)


class StackSampler:
    """A poor man's py-spy: every few ms, where each busy thread of this process is."""

    IDLE = {"wait", "_wait_for_tstate_lock", "select", "accept", "readinto", "recv_into", "get",
            "_worker", "sleep", "acquire", "result", "__enter__", "_recv_bytes"}  # fmt: skip

    def __init__(self, every_s: float = 0.005):
        self.every = every_s
        self.leaf: Counter[str] = Counter()
        self.inclusive: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StackSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.every):
            for ident, frame in sys._current_frames().items():
                if ident == me or frame.f_code.co_name in self.IDLE:
                    continue
                self.samples += 1
                seen = set()
                leaf = True
                while frame is not None:
                    code = frame.f_code
                    where = f"{_short(code.co_filename)}:{code.co_name}"
                    if leaf:
                        self.leaf[where] += 1
                        leaf = False
                    if where not in seen:
                        self.inclusive[where] += 1
                        seen.add(where)
                    frame = frame.f_back

    def top(self, n: int = 25) -> dict[str, Any]:
        return {
            "busy_samples": self.samples,
            "leaf": self.leaf.most_common(n),
            "inclusive": self.inclusive.most_common(n * 2),
        }


class Watch:
    """The most open file descriptors and threads of this process, sampled twice a second (each
    store connection in WAL mode holds the database, -wal and -shm files)."""

    def __init__(self) -> None:
        self.fds = self.threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.fds = max(self.fds, len(os.listdir("/proc/self/fd")))
            self.threads = max(self.threads, threading.active_count())
            if self._stop.wait(0.5):
                return


def _short(path: str) -> str:
    for marker in ("site-packages/", "/criticloop/", "/main/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def cpu_probe_ms() -> float:
    """Milliseconds of a fixed pure-Python loop (the best of 3), taken before each run: how
    fast this machine's CPU is at the time. A shared machine drifts by a fifth and more
    between runs, and every figure of the run with it."""
    best = math.inf
    for _ in range(3):
        began = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - began)
    return 1000 * best


def child(config: dict[str, Any], out: Path) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from criticloop.agents import Sampling, load_embedder
    from criticloop.graphs import run as graph_run
    from criticloop.graphs.run import RunOptions, run_feedback
    from criticloop.settings import JudgeSettings, Settings
    from criticloop.store import Store, read_records

    home = Path(config["work"]) / f"home-{os.getpid()}"
    prompts, profiles = write_inputs(home, config)
    c = config["concurrency"]
    judge: dict[str, Any] = {
        "backend": "profile",
        "base_url": config["urls"]["judge"],
        "model": "loopback-judge",
        "api_key": "unused",
    }
    if "max_in_flight" in JudgeSettings.model_fields:  # the judge's own limit, where there is one:
        judge["max_in_flight"] = 2 * c  # c prompts' pairs, both orders at once
    settings = Settings.load(
        env_file=None,
        home=home,
        profiles=profiles,
        concurrency=c,
        policy={"base_url": config["urls"]["policy"], "max_in_flight": c},
        judge=judge,
    )
    settings.apply_offline_policy()
    with Store.open(settings.db_path) as store:
        store.import_records(read_records(prompts))
    # Loaded before the clock starts, as a long-lived process would have them: the embedder
    # (only the local critics use it) and CrewAI's imports.
    embedder, critics = None, None
    if config["critics"] == "constant":
        from criticloop.agents import CRITICS
        from criticloop.agents import critics as _registers  # noqa: F401

        critics = {name: ConstantCritic(name) for name in CRITICS}
        embedder = NullEmbedder()
    elif config["critics"] != "judge":
        embedder = load_embedder(settings)
        embedder.encode(["warm up"], batch_size=1, normalize_embeddings=True)
    import crewai  # noqa: F401

    timer = WriteTimer()
    timer.install()
    done: list[float] = []
    advance = graph_run.advance

    def timed_advance(*a, **kw):
        state = advance(*a, **kw)
        done.append(time.perf_counter())
        return state

    graph_run.advance = timed_advance
    workers = config.get("workers", 1)
    if workers > 1:  # the workers' advance is not this one: time their results as they come
        from criticloop.graphs import _workers

        in_workers = _workers.judge_in_workers

        def timed_workers(*a, on_result, **kw):
            def timed(*r):
                done.append(time.perf_counter())
                on_result(*r)

            return in_workers(*a, on_result=timed, **kw)

        _workers.judge_in_workers = timed_workers
        embedder = None  # each worker loads its own: their start-up is in the wall
    options = RunOptions(
        sampling=Sampling(96, 0.8, 0.95, seed=0),
        candidates=2,
        concurrency=c,
        progress=False,
        human_budget=None,
        workers=workers,
    )
    probe = cpu_probe_ms()
    sampler = StackSampler() if config.get("sample") else contextlib.nullcontext()
    cpu0, began = time.process_time(), time.perf_counter()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    with sampler, Watch() as watch:
        summary = run_feedback(
            settings,
            options,
            critics=critics,
            load_embedder_fn=(lambda: embedder) if embedder else None,
        )
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, once joined
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu += (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime)
    n = summary["prompts"]
    ended = began + wall
    steady = None
    if len(done) >= 20:  # the middle 80% of the judging phase, past start-up and tail
        done.sort()
        lo, hi = len(done) // 10, len(done) * 9 // 10
        steady = (hi - lo) / max(done[hi] - done[lo], 1e-9)
    result = {
        **{k: config[k] for k in ("concurrency", "latency_ms", "source", "critics")},
        "workers": workers,
        "peak_worker_rss_mib": children.ru_maxrss / 1024 if workers > 1 else None,
        "prompts": n,
        "wall_s": round(wall, 2),
        "prompts_per_s": n / wall,
        "steady_judging_prompts_per_s": steady,
        "first_result_s": round(min(done) - began, 2) if done else None,  # start-up
        "after_last_result_s": round(ended - max(done), 2) if done else None,  # the close
        "cpu_s": round(cpu, 2),
        "cpu_user_s": round(self1.ru_utime - self0.ru_utime, 2),  # this process only
        "cpu_system_s": round(self1.ru_stime - self0.ru_stime, 2),  # lock handoffs, fsync, I/O
        "context_switches": {
            "voluntary": self1.ru_nvcsw - self0.ru_nvcsw,
            "involuntary": self1.ru_nivcsw - self0.ru_nivcsw,
        },
        "cpu_ms_per_prompt": 1000 * cpu / n,
        "cpu_probe_ms": round(probe, 1),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sqlite_store_ms_per_prompt": 1000 * timer.seconds["store"] / n,
        "sqlite_checkpoint_ms_per_prompt": 1000 * timer.seconds["checkpoint"] / n,
        "peak_open_fds": watch.fds,
        "peak_threads": watch.threads,
        "sqlite_calls": dict(timer.calls),
        "sqlite_seconds": {k: round(v, 3) for k, v in timer.seconds.items()},
        "stage_seconds": summary["stage_seconds"],
        "outcomes": summary.get("outcomes", {}),
        "unjudged": summary.get("unjudged"),
        "failed": len(summary.get("failed") or {}),
        "critic_calls": summary.get("critic_calls"),
        "endpoints": summary.get("endpoints"),
        "candidates_from": summary.get("candidates_from"),
        "likelihood": summary.get("likelihood"),
        "likelihood_from_server": bool(config.get("likelihood")) and not summary.get("likelihood"),
    }
    if config.get("sample"):
        result["stacks"] = sampler.top()
    out.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
