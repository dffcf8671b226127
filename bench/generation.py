"""Generation throughput of the policy: single sequence vs batched, on the demo prompts.

    make bench                      # or: .venv/bin/python bench/generation.py --batch-sizes 1 8 16

Prints a table and appends it, with the machine and date, to bench/RESULTS.md. Uses the data
home from the settings (CRITICLOOP_HOME) only for the converted model cache.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

from criticloop.agents import Policy, Sampling, build_conversation
from criticloop.settings import Settings
from criticloop.store import DEMO_FILES, Store, read_records

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16, help="demo prompts to generate for")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md")
    args = parser.parse_args()

    settings = Settings.load()
    settings.apply_offline_policy()
    with Store.open(
        Path(os.environ.get("TMPDIR", "/tmp")) / f"criticloop-bench-{os.getpid()}.db"
    ) as store:
        store.import_records([r for path in DEMO_FILES for r in read_records(path)])
        prompts = store.list_prompts()[: args.prompts]
        requests = []
        for p in prompts:
            brand, campaign = store.brand_and_campaign(p)
            requests.append((p["id"], build_conversation(p, brand, campaign), [0]))
        path = store.path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    began = time.perf_counter()
    policy = Policy.load(settings)
    load_s = time.perf_counter() - began
    # Fixed-length decoding (no early stop would skew tokens/s): sample, then count real tokens.
    sampling = Sampling(args.max_new_tokens, 0.8, 0.95, seed=0)
    list(policy.generate(requests[:2], sampling, 2))  # warm-up
    rows = []
    for batch_size in args.batch_sizes:
        tokens, seconds = 0, 0.0
        start = time.perf_counter()
        for batch in policy.generate(requests, sampling, batch_size):
            tokens += sum(c.completion_tokens for c in batch)
        seconds = time.perf_counter() - start
        rows.append((batch_size, len(requests), tokens, seconds, tokens / seconds))

    header = (
        "| batch size | sequences | new tokens | seconds | tokens/s |\n|---:|---:|---:|---:|---:|"
    )
    table = "\n".join(f"| {b} | {n} | {t} | {s:.1f} | {r:.1f} |" for b, n, t, s, r in rows)
    title = (
        f"### Generation, {policy.ref.name}, {datetime.date.today().isoformat()}\n\n"
        f"Machine: {machine()} ({policy.device}). {args.prompts} demo prompts, "
        f"max_new_tokens={args.max_new_tokens}, temperature 0.8; model load {load_s:.1f} s.\n"
    )
    report = f"{title}\n{header}\n{table}\n"
    print(report)
    if not args.no_record:
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write("\n" + report)


if __name__ == "__main__":
    main()
