"""DPO with a LoRA adapter: TRL's ``DPOTrainer`` over the store's pairs.

The reference is the base model with the adapter disabled (TRL does this when it gets a PEFT
config and no reference model), so DPO costs one model in memory. Pair sources are weighted by
sampling: a pair with weight 3 is drawn three times as often as one with weight 1, which in
expectation is the same gradient as weighting its loss. On CUDA it trains in bf16, with 4-bit
NF4 base weights (QLoRA) when asked. Checkpoints every ``save_steps`` let an interrupted job
resume where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ._config import TrainConfig

LogFn = Callable[[dict[str, Any]], None]


def load_base(config: TrainConfig, *, for_training: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer) for training: bf16 on CUDA, NF4 4-bit when quantize is 4bit."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..agents import quiet_transformers

    quiet_transformers()
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if config.bf16 else torch.float32}
    if config.training.quantize == "4bit":
        if config.device != "cuda":
            raise InputError("--quantize 4bit (QLoRA) needs a CUDA GPU; this job runs on CPU")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    tokenizer = AutoTokenizer.from_pretrained(config.model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(config.model_path, **kwargs)
    if config.training.quantize == "4bit" and for_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.training.gradient_checkpointing
        )
    return model, tokenizer


def lora_config(config: TrainConfig):
    from peft import LoraConfig

    training = config.training
    return LoraConfig(
        r=training.lora_r,
        lora_alpha=training.lora_alpha,
        lora_dropout=training.lora_dropout,
        target_modules=config.target_modules(),
        task_type="CAUSAL_LM",
    )


def trainer_args(config: TrainConfig, args_class: type, **extra: Any) -> Any:
    """The transformers/TRL arguments every method shares; ``extra`` adds or overrides."""
    training = config.training
    shared = {
        "output_dir": str(Path(config.output_dir) / "checkpoints"),
        "per_device_train_batch_size": training.batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation,
        "learning_rate": training.learning_rate,
        "num_train_epochs": training.epochs,
        "max_steps": training.max_steps or -1,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": training.save_steps,
        "save_total_limit": 2,
        "report_to": [],
        "bf16": config.bf16,
        "use_cpu": config.device == "cpu",
        "gradient_checkpointing": training.gradient_checkpointing,
        "seed": training.seed,
        "data_seed": training.seed,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    return args_class(**(shared | extra))


def step_logger(log: LogFn):
    """The job's TrainerCallback: passes each logged step on, fails the job on a NaN loss, and
    skips the checkpoint transformers writes after the last step (``fit`` saves the adapter
    the moment training returns, and a finished job's checkpoints are deleted unread)."""
    from transformers import TrainerCallback

    class _StepLog(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = False

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "train_runtime" in logs:
                return
            loss = logs.get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise FloatingPointError(f"loss became {loss} at step {state.global_step}")
            log({"step": state.global_step, **{k: _number(v) for k, v in logs.items()}})

    return _StepLog()


def fit(trainer: Any, config: TrainConfig, log: LogFn) -> tuple[Any, str | None, float]:
    """Train, resuming from the job's last checkpoint if it has one, and save the adapter to
    ``output_dir/adapter``. Returns (TRL's train output, the checkpoint resumed from, seconds)."""
    import torch

    trainer.add_callback(step_logger(log))
    quiet_trainer(trainer)
    resume = last_checkpoint(config.output_dir)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - began
    trainer.save_model(str(Path(config.output_dir) / "adapter"))
    return output, Path(resume).name if resume else None, seconds


def quiet_trainer(trainer: Any) -> None:
    """Without tqdm, transformers prints every log dict on stdout; the step log has them."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _number(value: Any) -> Any:
    try:
        return round(float(value), 6)
    except (TypeError, ValueError):
        return value


def last_checkpoint(output_dir: str) -> str | None:
    """The job's newest *complete* checkpoint. transformers writes ``trainer_state.json`` last
    and not atomically, so a job killed while saving leaves a folder without a readable one,
    and resuming from it fails; ``get_last_checkpoint`` would pick that folder."""
    complete = []
    for path in (Path(output_dir) / "checkpoints").glob("checkpoint-*"):
        try:
            json.loads((path / "trainer_state.json").read_text())
            complete.append((int(path.name.removeprefix("checkpoint-")), path))
        except (OSError, ValueError):
            continue
    return str(max(complete)[1]) if complete else None


def run_dpo(
    config: TrainConfig, rows: list[dict[str, Any]], weights: list[float], log: LogFn
) -> dict[str, Any]:
    """Train a LoRA adapter with DPO; save it to ``output_dir/adapter``; return the metrics."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    class WeightedDPOTrainer(DPOTrainer):
        def _get_train_sampler(self, train_dataset=None):
            # The dataloader's copy has lost the weight column (not a model input); this one has
            # the same rows in the same order.
            dataset = self.train_dataset
            generator = torch.Generator().manual_seed(config.training.seed)
            return torch.utils.data.WeightedRandomSampler(
                dataset["weight"], num_samples=len(dataset), replacement=True, generator=generator
            )

    training = config.training
    # Before the model loads: under DeepSpeed ZeRO-3 (the zero3 preset) the arguments make
    # from_pretrained load the weights sharded across the GPUs, not whole on every rank.
    args = trainer_args(config, DPOConfig, beta=training.beta, max_length=training.max_length)
    model, tokenizer = load_base(config)
    dataset = Dataset.from_list(
        [{**row, "weight": w} for row, w in zip(rows, weights, strict=True)]
    )
    trainer = WeightedDPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(config),
    )
    result, resumed_from, seconds = fit(trainer, config, log)
    steps = [h for h in trainer.state.log_history if "loss" in h]
    last = steps[-1] if steps else {}
    tokens = trainer._total_train_tokens if hasattr(trainer, "_total_train_tokens") else None
    return {
        "steps": trainer.state.global_step,
        "resumed_from": resumed_from,
        "train_loss": _number(result.training_loss),
        "final_loss": _number(last.get("loss")),
        "reward_accuracy": _number(last.get("rewards/accuracies")),
        "reward_margin": _number(last.get("rewards/margins")),
        "pairs": len(rows),
        "seconds": round(seconds, 2),
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1) if tokens and seconds else None,
        "peak_memory_mb": peak_memory_mb(),
    }


def peak_memory_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
