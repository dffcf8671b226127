"""SFT with a LoRA adapter: TRL's ``SFTTrainer`` on the good answers (completion-only loss).

Each row is a conversational prompt-completion row: the conversation the policy answered (system
message, earlier turns) and the good answer as the one completion turn. TRL tokenizes the prompt
with the generation prompt and the prompt plus completion, and masks every token of the prompt
(labels -100): the loss is on the last assistant turn alone, never on the user's or earlier
turns. Examples are sampled by their source's weight, as DPO samples pairs.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ._config import TrainConfig
from ._dpo import LogFn, _number, fit, load_base, lora_config, peak_memory_mb, trainer_args


def sft_trainer(
    config: TrainConfig,
    rows: list[dict[str, Any]],
    weights: list[float],
    model: Any = None,
    tokenizer: Any = None,
) -> Any:
    """The job's SFTTrainer over ``rows`` (its ``train_dataset`` holds the tokenized rows with
    their ``labels``, prompt tokens at -100), on ``model`` or the job's base."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    class WeightedSFTTrainer(SFTTrainer):
        def _get_train_sampler(self, train_dataset=None):
            # TRL drops rows left with no completion token by max_length from both columns alike.
            dataset = self.train_dataset
            generator = torch.Generator().manual_seed(config.training.seed)
            return torch.utils.data.WeightedRandomSampler(
                dataset["weight"], num_samples=len(dataset), replacement=True, generator=generator
            )

    dataset = Dataset.from_list(
        [{**row, "weight": w} for row, w in zip(rows, weights, strict=True)]
    )
    args = trainer_args(
        config,
        SFTConfig,
        max_length=config.training.max_length,
        completion_only_loss=True,  # loss on the completion (the last assistant turn) only
        assistant_only_loss=False,  # that would train every assistant turn of the prompt too
        packing=False,
    )
    if model is None:  # loaded after the arguments, for ZeRO-3 (see run_dpo)
        model, tokenizer = load_base(config)
    trainer = WeightedSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(config),
    )
    if len(trainer.train_dataset) == 0:
        raise InputError(
            f"no SFT example fits in max_length {config.training.max_length} tokens with any of its "
            "answer (CRITICLOOP_TRAINING__MAX_LENGTH)"
        )
    return trainer


def run_sft(
    config: TrainConfig, rows: list[dict[str, Any]], weights: list[float], log: LogFn
) -> dict[str, Any]:
    """Train a LoRA adapter with SFT; save it to ``output_dir/adapter``; return the metrics."""
    trainer = sft_trainer(config, rows, weights)
    result, resumed_from, seconds = fit(trainer, config, log)
    steps = [h for h in trainer.state.log_history if "loss" in h]
    last = steps[-1] if steps else {}
    tokens = getattr(trainer, "_total_train_tokens", None)
    return {
        "steps": trainer.state.global_step,
        "resumed_from": resumed_from,
        "train_loss": _number(result.training_loss),
        "final_loss": _number(last.get("loss")),
        "token_accuracy": _number(last.get("mean_token_accuracy")),
        "examples": len(rows),
        "trained_examples": len(trainer.train_dataset),  # less any that max_length cut away
        "seconds": round(seconds, 2),
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1) if tokens and seconds else None,
        "peak_memory_mb": peak_memory_mb(),
    }
