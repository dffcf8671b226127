"""Reward models trained on people's decisions: TRL's ``RewardTrainer`` (Bradley-Terry loss).

    criticloop labels import pandalm_testset-v1.json
    criticloop train --method reward                 # --rm-base smollm2, --rm-synthetic

What it learns from: every A/B pair people decided (the reviewer app and imported labels; ties
and split votes left out), plus the critics' synthetic pairs only when asked, each sampled by its
source's weight as DPO does (people's decisions weigh as ``human``). A share of prompts chosen by
a hash of the prompt id is held out and never trained on; the model is measured there: accuracy
(the chosen response scores higher), and, reading sigmoid(r_A - r_B) as P(A preferred), log-loss,
ECE and a reliability diagram.

Bases: ``minilm`` (all-MiniLM-L6-v2, 22M parameters, read as a cross-encoder over the
conversation and the response; trained whole), ``smollm2`` (the bundled 135M policy with a
score head; LoRA) or any model directory. The conversation is what the critic sees: the stored
turns, no system message. The input is built by
:func:`~criticloop.reward.encode`, the same function the critic scores with.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..store import Store
from ._config import TrainConfig
from ._data import is_heldout
from ._dataset import DatasetBuilder, DatasetLimits, DatasetReport

FULL_TUNING_MAX_PARAMS = 50_000_000
PEOPLE = "human"  # the source weight people's decisions take


@dataclass
class RewardData:
    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    weights: list[float]
    data_hash: str
    sources: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    report: DatasetReport | None = None  # the dataset checks: what they removed, tokens kept


def load_reward_pairs(
    store: Store,
    source_weights: dict[str, float],
    heldout_percent: int,
    *,
    synthetic: bool = False,
    dimension: str = "",
    limits: DatasetLimits | None = None,
    tokenizer: Any | None = None,
) -> RewardData:
    """People's decisive pairs on ``dimension`` ('' their overall preference) and, when asked,
    the critics' synthetic pairs (overall only), split by prompt."""
    if synthetic and dimension:
        raise InputError(
            f"--rm-synthetic adds the critics' overall preference; a {dimension!r} reward model "
            "learns from labels on that dimension only"
        )
    train: list[dict[str, Any]] = []
    heldout: list[dict[str, Any]] = []
    weights: list[float] = []
    sources: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    seen: set[tuple[str, str, str]] = set()
    messages: dict[str, list[dict[str, str]]] = {}
    builder = DatasetBuilder("pairs", limits, tokenizer)  # format, length, near-duplicates

    def conversation(prompt_id: str) -> list[dict[str, str]]:
        if prompt_id not in messages:
            prompt, _, _ = store.prompt_context(prompt_id)
            messages[prompt_id] = [
                {"role": m["role"], "content": m["content"]} for m in prompt["messages"]
            ]
        return messages[prompt_id]

    def add(prompt_id: str, chosen: str, rejected: str, source: str, weight: float) -> None:
        if not chosen.strip() or not rejected.strip() or chosen == rejected:
            skipped["empty or identical"] += 1
            return
        if (prompt_id, chosen, rejected) in seen:
            skipped["duplicate"] += 1
            return
        seen.add((prompt_id, chosen, rejected))
        row = {
            "prompt_id": prompt_id,
            "conversation": conversation(prompt_id),
            "chosen": chosen,
            "rejected": rejected,
            "source": source,
        }
        reason = builder.check(row, prompt_id)
        if reason:
            skipped[reason] += 1
            return
        if is_heldout(prompt_id, heldout_percent):
            heldout.append(row)
        else:
            train.append(row)
            weights.append(weight)
        sources[source] += 1

    people = source_weights.get(PEOPLE, 1.0) or 1.0
    for pair in store.labelled_pairs(dimension=dimension):
        if pair["majority"] not in ("a", "b"):
            skipped["tie or split vote"] += 1
            continue
        a = store.get_generation(pair["a"])["text"]
        b = store.get_generation(pair["b"])["text"]
        chosen, rejected = (a, b) if pair["majority"] == "a" else (b, a)
        add(pair["prompt_id"], chosen, rejected, f"people:{pair['source']}", people)
    if synthetic:
        contradicted = {pid for pair in store.contradictory_pairs() for pid in pair}
        for pair in store.iter_pairs():
            weight = source_weights.get(pair["source"], 0.0)
            if pair["source"] not in ("synthetic", "revision"):
                continue  # people's pairs came in above, from their reviews
            if pair["id"] in contradicted:
                skipped["contradicted by another pair"] += 1
            elif weight <= 0:
                skipped[f"source {pair['source']} weighted 0"] += 1
            else:
                add(pair["prompt_id"], pair["chosen"], pair["rejected"], pair["source"], weight)
    digest = hashlib.sha256()
    for row, weight in zip(train, weights, strict=True):
        digest.update(json.dumps([row, weight], sort_keys=True).encode())
    digest.update(json.dumps(heldout, sort_keys=True).encode())
    return RewardData(
        train, heldout, weights, digest.hexdigest()[:16], sources, skipped, builder.report
    )


def resolve_tuning(requested: str, base_path: str) -> str:
    """auto: full fine-tuning for small bases (under 50M parameters), else LoRA."""
    if requested != "auto":
        return requested
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_path)
    hidden = getattr(config, "hidden_size", 0)
    layers = getattr(config, "num_hidden_layers", 0)
    vocab = getattr(config, "vocab_size", 0)
    approx = 12 * layers * hidden * hidden + vocab * hidden
    return "full" if approx < FULL_TUNING_MAX_PARAMS else "lora"


def run_reward(
    config: TrainConfig,
    train: list[dict[str, Any]],
    weights: list[float],
    heldout: list[dict[str, Any]],
    log,
) -> dict[str, Any]:
    """Train on ``train``; save the model (``output_dir/adapter``); measure it on ``heldout``."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from ..agents import quiet_transformers
    from ..reward import encode
    from ._dpo import fit, peak_memory_mb, trainer_args

    quiet_transformers()
    training = config.training
    torch.manual_seed(training.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        config.model_path,
        num_labels=1,
        dtype=torch.bfloat16 if config.bf16 else torch.float32,
    )
    model.config.pad_token_id = tokenizer.pad_token_id

    class WeightedRewardTrainer(RewardTrainer):
        def _get_train_sampler(self, train_dataset=None):
            # As DPO's: the dataloader's copy has lost the weight column; this one has it.
            generator = torch.Generator().manual_seed(training.seed)
            return torch.utils.data.WeightedRandomSampler(
                self.train_dataset["weight"],
                num_samples=len(self.train_dataset),
                replacement=True,
                generator=generator,
            )

    def tokenized(row: dict[str, Any]) -> dict[str, list[int]]:
        conversation, length = row["conversation"], training.max_length
        return {
            "chosen_ids": encode(tokenizer, conversation, row["chosen"], length),
            "rejected_ids": encode(tokenizer, conversation, row["rejected"], length),
        }

    dataset = Dataset.from_list(
        [{**tokenized(row), "weight": w} for row, w in zip(train, weights, strict=True)]
    )
    peft_config = None
    if training.rm_tuning == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=training.lora_r,
            lora_alpha=training.lora_alpha,
            lora_dropout=training.lora_dropout,
            target_modules=config.target_modules(),
            task_type="SEQ_CLS",
        )
    args = trainer_args(
        config,
        RewardConfig,
        max_length=training.max_length,
        gradient_checkpointing=False,  # small bases; checkpointing an encoder saves nothing here
    )
    trainer = WeightedRewardTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    before = _snapshot(trainer.model)
    result, resumed_from, seconds = fit(trainer, config, log)
    tokenizer.save_pretrained(str(Path(config.output_dir) / "adapter"))
    changed = _changed(before, trainer.model)
    scorer = _Scorer(trainer.model, tokenizer, training.max_length)
    sample = random.Random(training.seed).sample(train, min(len(train), 256))
    center = float(
        sum(scorer([(r["conversation"], r[k]) for r in sample for k in ("chosen", "rejected")]))
        / max(1, 2 * len(sample))
    )
    measured = evaluate_pairs(scorer, heldout)
    steps = [h for h in trainer.state.log_history if "loss" in h]
    return {
        "steps": trainer.state.global_step,
        "resumed_from": resumed_from,
        "train_loss": _round(result.training_loss),
        "final_loss": _round(steps[-1].get("loss")) if steps else None,
        "train_accuracy_last": _round(steps[-1].get("accuracy")) if steps else None,
        "pairs": len(train),
        "heldout_pairs": len(heldout),
        "center": round(center, 6),
        "weights_changed": changed,
        "tuning": training.rm_tuning,
        "seconds": round(seconds, 2),
        "ms_per_response": measured.pop("ms_per_response", None),
        "heldout": measured,
        "peak_memory_mb": peak_memory_mb(),
    }


class _Scorer:
    """Raw rewards from a model in memory (``score_batched`` bound to it)."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int, batch_size: int = 16):
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size = max_length, batch_size

    def __call__(self, items: list[tuple[list[dict[str, str]], str]]) -> list[float]:
        from ..reward import score_batched

        return score_batched(self.model, self.tokenizer, items, self.max_length, self.batch_size)


def evaluate_pairs(score, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy, log-loss, ECE and the reliability table of P(chosen) = sigmoid(r_c - r_r),
    with both orders of each pair (so P(A) is measured on both sides of 0.5)."""
    import time

    import numpy as np

    from ..reward import ece, log_loss, reliability, sigmoid

    if not pairs:
        return {"n": 0, "note": "no held-out pairs (more prompts are needed)"}
    began = time.perf_counter()
    raw = score(
        [(p["conversation"], p[k]) for p in pairs for k in ("chosen", "rejected")]
    )
    ms = 1000 * (time.perf_counter() - began) / max(1, len(raw))
    diff = np.array(raw[0::2]) - np.array(raw[1::2])
    p = sigmoid(np.concatenate([diff, -diff]))
    y = np.concatenate([np.ones(len(diff)), np.zeros(len(diff))])
    correct = np.where(diff == 0, 0.5, (diff > 0).astype(float))
    return {
        "n": len(pairs),
        "accuracy": round(float(correct.mean()), 4),
        "log_loss": round(log_loss(p, y), 4),
        "ece": round(ece(p, y), 4),
        "reliability": reliability(p, y),
        "ms_per_response": round(ms, 2),
    }


def write_reliability_diagram(heldout: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in heldout.get("reliability", []) if r["n"]]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    if rows:
        ax.plot(
            [r["mean_p"] for r in rows], [r["observed"] for r in rows], marker="o",
            label=f"held out (n={heldout['n']} pairs, both orders)",
        )  # fmt: skip
    ax.set_xlabel("stated P(A preferred)")
    ax.set_ylabel("how often people preferred A")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _snapshot(model: Any) -> dict[str, Any]:
    return {
        n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
    }


def _changed(before: dict[str, Any], model: Any) -> bool:
    now = dict(model.named_parameters())
    return any(not bool((now[n].detach() == t).all()) for n, t in before.items() if n in now)


def _round(value: Any) -> Any:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return round(v, 6) if math.isfinite(v) else None
