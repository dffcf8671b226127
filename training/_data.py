"""What training learns from: preference pairs (DPO) or prompts (PPO/GRPO/RLOO), from the store.

A fixed share of prompts is held out, chosen by a hash of the prompt id so the split never moves
as data accumulates: training never sees them, and the promotion gate compares adapters on them.
Each pair becomes a conversational TRL row whose prompt is the conversation the policy actually
answered (the stored turns plus the task's system message), weighted by its source.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..agents import build_conversation
from ..store import Store
from ._dataset import DatasetBuilder, DatasetLimits, DatasetReport


def is_heldout(prompt_id: str, percent: int) -> bool:
    """True for the ``percent`` share of prompts the gate keeps for itself."""
    digest = hashlib.blake2b(prompt_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100 < percent


@dataclass
class PreferenceData:
    """DPO rows with their sampling weights, and a hash naming exactly this data."""

    rows: list[dict[str, Any]]
    weights: list[float]
    data_hash: str
    sources: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    report: DatasetReport | None = None  # the dataset checks: what they removed, tokens kept

    def __len__(self) -> int:
        return len(self.rows)


def load_preferences(
    store: Store,
    source_weights: dict[str, float],
    heldout_percent: int,
    *,
    limits: DatasetLimits | None = None,
    tokenizer: Any | None = None,
) -> PreferenceData:
    """Every usable pair outside the held-out prompts, oldest first; a source with weight 0
    (or missing from the weights) is left out, and so is a pair the dataset checks
    (``_dataset``: format, length in tokens, near-duplicates) remove."""
    builder = DatasetBuilder("pairs", limits, tokenizer)
    rows, weights = [], []
    sources: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    seen: set[tuple[str, str, str]] = set()
    contexts: dict[str, list[dict[str, str]]] = {}
    contradicted = {pair_id for pair in store.contradictory_pairs() for pair_id in pair}
    for pair in store.iter_pairs():
        weight = source_weights.get(pair["source"], 0.0)
        chosen, rejected = pair["chosen"].strip(), pair["rejected"].strip()
        if pair["id"] in contradicted:
            skipped["contradicted by another pair (A over B and B over A)"] += 1
        elif weight <= 0:
            skipped[f"source {pair['source']} weighted 0"] += 1
        elif is_heldout(pair["prompt_id"], heldout_percent):
            skipped["held out for the gate"] += 1
        elif not chosen or not rejected or chosen == rejected:
            skipped["empty or identical"] += 1
        elif (pair["prompt_id"], chosen, rejected) in seen:
            skipped["duplicate"] += 1
        else:
            seen.add((pair["prompt_id"], chosen, rejected))
            if pair["prompt_id"] not in contexts:
                contexts[pair["prompt_id"]] = policy_conversation(store, pair["prompt_id"])
            row = {
                "prompt": contexts[pair["prompt_id"]],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
            reason = builder.check(row, pair["id"])
            if reason:
                skipped[reason] += 1
                continue
            rows.append(row)
            weights.append(weight)
            sources[pair["source"]] += 1
    digest = hashlib.sha256()
    for row, weight in zip(rows, weights, strict=True):
        digest.update(json.dumps([row, weight], sort_keys=True).encode())
    return PreferenceData(
        rows, weights, digest.hexdigest()[:16], sources, skipped, builder.report
    )


def policy_conversation(store: Store, prompt_id: str) -> list[dict[str, str]]:
    """The conversation the policy answers for this prompt (what generation sent it)."""
    return build_conversation(*store.prompt_context(prompt_id))


def training_prompts(store: Store, heldout_percent: int) -> list[str]:
    """Prompt ids RL methods may train on: every prompt outside the held-out share."""
    return [pid for pid in store.prompt_ids() if not is_heldout(pid, heldout_percent)]


def heldout_prompts(store: Store, heldout_percent: int, limit: int) -> list[str]:
    """The gate's prompts, in a stable order (by their hash), at most ``limit``."""
    held = [pid for pid in store.prompt_ids() if is_heldout(pid, heldout_percent)]
    held.sort(key=lambda pid: hashlib.blake2b(pid.encode(), digest_size=8).digest())
    return held[:limit]


def prompts_hash(prompt_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(prompt_ids)).encode()).hexdigest()[:16]
