"""KTO with a LoRA adapter: TRL's ``KTOTrainer`` on every rated answer, good or bad.

KTO needs no pairs: each answer is desirable (thumbs up, 4-5 stars) or undesirable (thumbs down,
1-2 stars). The reference is the base with the adapter disabled, as for DPO. The two kinds are
rarely equally many, so their losses are weighted as TRL recommends for imbalanced data
(:func:`~criticloop.training._examples.kto_weights`), and the counts and weights are recorded in
the job's metrics. KTO estimates its KL term from mismatched answers within a batch, so it
samples in order (TRL's requirement) and needs batches of two or more.
"""

from __future__ import annotations

from typing import Any

from ._config import TrainConfig
from ._dpo import LogFn, _number, fit, load_base, lora_config, peak_memory_mb, trainer_args
from ._examples import kto_weights


def run_kto(config: TrainConfig, rows: list[dict[str, Any]], log: LogFn) -> dict[str, Any]:
    """Train a LoRA adapter with KTO; save it to ``output_dir/adapter``; return the metrics."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    desirable = sum(1 for row in rows if row["label"])
    undesirable = len(rows) - desirable
    desirable_weight, undesirable_weight = kto_weights(desirable, undesirable)
    training = config.training
    args = trainer_args(  # before the model loads, for ZeRO-3 (see run_dpo)
        config,
        KTOConfig,
        beta=training.beta,
        max_length=training.max_length,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
    )
    model, tokenizer = load_base(config)
    trainer = KTOTrainer(
        model=model,
        args=args,
        # Rows come in the order they were rated; mixed once (seeded) so that each batch, whose
        # answers TRL pairs up for the KL term in order, holds both kinds.
        train_dataset=Dataset.from_list(rows).shuffle(seed=training.seed),
        processing_class=tokenizer,
        peft_config=lora_config(config),
    )
    result, resumed_from, seconds = fit(trainer, config, log)
    steps = [h for h in trainer.state.log_history if "loss" in h]
    last = steps[-1] if steps else {}
    return {
        "steps": trainer.state.global_step,
        "resumed_from": resumed_from,
        "train_loss": _number(result.training_loss),
        "final_loss": _number(last.get("loss")),
        "kl_last": _number(last.get("kl")),
        "reward_margin": _number(last.get("rewards/margins")),
        "examples": len(rows),
        "desirable": desirable,
        "undesirable": undesirable,
        "desirable_weight": desirable_weight,
        "undesirable_weight": undesirable_weight,
        # TRL's recommended range for this is [1, 4/3] (Eq. 8 of the KTO paper)
        "weighted_ratio": round(
            desirable_weight * desirable / (undesirable_weight * undesirable), 4
        )
        if undesirable
        else None,
        "seconds": round(seconds, 2),
        "peak_memory_mb": peak_memory_mb(),
    }
