"""What SFT and KTO learn from: single answers people approved of (SFT) or rated (KTO).

SFT learns the good answers: generations rated thumbs up or 4-5 stars, people's rewrites, the
revisions the critics accepted (pairs of source ``revision``, ``human-revision`` and
``log-revision``: their chosen side) and what people chose over another answer (``human``
pairs). Each example is sampled by its source's weight, as DPO samples pairs
(``source_weights``: a pair's chosen answer by its pair's source, a good rating by ``human``'s
weight, a rewrite by ``human-revision``'s).

KTO learns every rated answer: thumbs up or 4-5 stars is desirable, thumbs down or 1-2 stars
undesirable; 3 stars says neither and is left out (and counted). Several ratings of one answer
are one example, by their majority; an answer rated both ways equally often is left out.

Rows are TRL's conversational prompt-completion rows: the prompt is the conversation the policy
answered (the stored turns plus the task's system message), the completion the answer alone,
so SFT's loss is on that last assistant turn only. Held-out prompts never appear.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..store import Store
from ._data import is_heldout, policy_conversation
from ._dataset import DatasetBuilder, DatasetLimits

SFT_PAIR_SOURCES = ("revision", "human-revision", "log-revision", "human")
"""Pairs whose chosen answer is a good example in itself (a synthetic pair's is only better)."""


@dataclass
class ExampleData:
    """SFT or KTO rows with their sampling weights, and a hash naming exactly this data."""

    rows: list[dict[str, Any]]
    weights: list[float]
    data_hash: str
    sources: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    row_sources: list[str] = field(default_factory=list)  # each row's source, for the checks

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def desirable(self) -> int:
        return sum(1 for row in self.rows if row.get("label") is True)

    @property
    def undesirable(self) -> int:
        return sum(1 for row in self.rows if row.get("label") is False)


def rating_verdict(rating: dict[str, Any]) -> bool | None:
    """True for a good rating (thumbs up, 4-5 stars), False for a bad one, None for 3 stars."""
    if rating["kind"] == "thumbs":
        return rating["thumbs"] == "up" if rating["thumbs"] in ("up", "down") else None
    stars = rating["stars"]
    if stars is None or stars == 3:
        return None
    return stars >= 4


def _rated_answers(
    store: Store, heldout_percent: int, skipped: Counter[str]
) -> list[tuple[dict[str, Any], bool]]:
    """(rating row, good?) per rated generation outside the held-out prompts, by majority."""
    votes: dict[str, list[int]] = {}
    first: dict[str, dict[str, Any]] = {}
    for rating in store.iter_ratings():
        verdict = rating_verdict(rating)
        if verdict is None:
            skipped["3 stars (neither good nor bad)"] += 1
            continue
        if is_heldout(rating["prompt_id"], heldout_percent):
            skipped["held out for the gate"] += 1
            continue
        if not rating["text"].strip():
            skipped["empty answer"] += 1
            continue
        gid = rating["generation_id"]
        first.setdefault(gid, rating)
        counts = votes.setdefault(gid, [0, 0])
        counts[0 if verdict else 1] += 1
    answers = []
    for gid, (good, bad) in votes.items():
        if good == bad:
            skipped["rated good and bad equally often"] += good + bad
            continue
        if good + bad > 1:
            skipped["further ratings of the same answer"] += good + bad - 1
        answers.append((first[gid], good > bad))
    return answers


def load_sft_examples(
    store: Store, source_weights: dict[str, float], heldout_percent: int
) -> ExampleData:
    """Every good answer outside the held-out prompts, each once (at its highest weight)."""
    skipped: Counter[str] = Counter()
    found: dict[tuple[str, str], tuple[float, str]] = {}  # (prompt, text) -> (weight, source)
    order: list[tuple[str, str]] = []

    def add(prompt_id: str, text: str, source: str, weight_of: str) -> None:
        text = text.strip()
        weight = source_weights.get(weight_of, 0.0)
        if weight <= 0:
            skipped[f"source {weight_of} weighted 0"] += 1
        elif is_heldout(prompt_id, heldout_percent):
            skipped["held out for the gate"] += 1
        elif not text:
            skipped["empty answer"] += 1
        elif (prompt_id, text) in found:
            skipped["duplicate"] += 1
            if weight > found[(prompt_id, text)][0]:
                found[(prompt_id, text)] = (weight, source)
        else:
            found[(prompt_id, text)] = (weight, source)
            order.append((prompt_id, text))

    contradicted = {pair_id for pair in store.contradictory_pairs() for pair_id in pair}
    for pair in store.iter_pairs():
        if pair["source"] not in SFT_PAIR_SOURCES:
            continue
        if pair["id"] in contradicted:
            skipped["contradicted by another pair (A over B and B over A)"] += 1
            continue
        add(pair["prompt_id"], pair["chosen"], f"pair:{pair['source']}", pair["source"])
    for rewrite in store.iter_rewrites():
        add(rewrite["prompt_id"], rewrite["text"], "rewrite", "human-revision")
    for rating, good in _rated_answers(store, heldout_percent, skipped):
        if good:
            add(rating["prompt_id"], rating["text"], f"rating:{rating['source']}", "human")
        else:
            skipped["rated bad (KTO learns from these)"] += 1
    rows, weights, sources, row_sources = [], [], Counter(), []
    contexts: dict[str, list[dict[str, str]]] = {}
    for prompt_id, text in order:
        weight, source = found[(prompt_id, text)]
        if prompt_id not in contexts:
            contexts[prompt_id] = policy_conversation(store, prompt_id)
        rows.append(
            {"prompt": contexts[prompt_id], "completion": [{"role": "assistant", "content": text}]}
        )
        weights.append(weight)
        sources[source] += 1
        row_sources.append(source)
    return ExampleData(rows, weights, _hash(rows, weights), sources, skipped, row_sources)


def load_kto_examples(store: Store, heldout_percent: int) -> ExampleData:
    """Every rated answer outside the held-out prompts, labelled desirable or not."""
    skipped: Counter[str] = Counter()
    rows, sources, row_sources = [], Counter(), []
    contexts: dict[str, list[dict[str, str]]] = {}
    for rating, good in _rated_answers(store, heldout_percent, skipped):
        prompt_id = rating["prompt_id"]
        if prompt_id not in contexts:
            contexts[prompt_id] = policy_conversation(store, prompt_id)
        rows.append(
            {
                "prompt": contexts[prompt_id],
                "completion": [{"role": "assistant", "content": rating["text"].strip()}],
                "label": good,
            }
        )
        sources[f"rating:{rating['source']}"] += 1
        row_sources.append(f"rating:{rating['source']}")
    weights = [1.0] * len(rows)
    return ExampleData(rows, weights, _hash(rows, weights), sources, skipped, row_sources)


def kto_weights(desirable: int, undesirable: int, ratio: float = 7 / 6) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) for imbalanced data, as TRL's KTOTrainer
    recommends (Eq. 8 of the KTO paper): desirable_weight * desirable / (undesirable_weight *
    undesirable) within [1, 4/3]. The larger side keeps weight 1 and only the smaller one is
    raised (TRL: one of the two, not both); ``ratio`` sits inside that range."""
    if desirable <= 0 or undesirable <= 0 or desirable == undesirable:
        return 1.0, 1.0
    if desirable > undesirable:
        return 1.0, round(desirable / (undesirable * ratio), 4)
    return round(undesirable * ratio / desirable, 4), 1.0


def _hash(rows: list[dict[str, Any]], weights: list[float]) -> str:
    digest = hashlib.sha256()
    for row, weight in zip(rows, weights, strict=True):
        digest.update(json.dumps([row, weight], sort_keys=True).encode())
    return digest.hexdigest()[:16]


EXAMPLE_METHODS = ("sft", "kto")
"""The methods that learn from single answers (``examples.jsonl`` in the job's directory)."""


def load_examples(store: Store, training: Any) -> ExampleData:
    """The data of an SFT or KTO job (``training``: its TrainingSettings); a one-line
    InputError naming what is missing when there is too little."""
    held = "held-out prompts are left out"
    if training.method == "sft":
        data = _checked(
            load_sft_examples(store, training.source_weights, training.heldout_percent), training
        )
        if not data.rows:
            raise InputError(
                "no good answers to train SFT on (thumbs up or 4-5 stars on an answer, a "
                "rewrite, or pairs from revisions or people; criticloop review or a feedback "
                f"log import adds them); {held}"
            )
        return data
    data = _checked(load_kto_examples(store, training.heldout_percent), training)
    if not data.desirable or not data.undesirable:
        stars = data.skipped.get("3 stars (neither good nor bad)", 0)
        raise InputError(
            f"KTO needs rated answers of both kinds: {data.desirable} desirable (thumbs up, "
            f"4-5 stars) and {data.undesirable} undesirable (thumbs down, 1-2 stars) found, "
            f"{stars} at 3 stars left out; {held}"
        )
    if training.batch_size < 2:
        raise InputError("KTO needs --batch-size 2 or more (its KL term compares answers in a batch)")
    return data


def _checked(data: ExampleData, training: Any) -> ExampleData:
    """``data`` through the dataset checks every method's data goes through (length in tokens,
    duplicates and near-duplicates, format): what they remove is counted with the skips."""
    builder = DatasetBuilder(training.method, DatasetLimits.from_settings(training))
    kept = [
        (row, weight, source)
        for row, weight, source in zip(data.rows, data.weights, data.row_sources, strict=True)
        if builder.check(row) is None
    ]
    rows, weights = [r for r, _, _ in kept], [w for _, w, _ in kept]
    row_sources = [s for _, _, s in kept]
    skipped = data.skipped + Counter({f"check: {k}": n for k, n in builder.report.removed.items()})
    return ExampleData(
        rows, weights, _hash(rows, weights), Counter(row_sources), skipped, row_sources
    )
