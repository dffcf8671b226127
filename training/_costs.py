"""What a training job cost: wall time, tokens processed, device-hours and, with a price, money.

Recorded with the job (``training_jobs``: ``wall_seconds``, ``tokens``, ``devices``,
``device_hours``, ``device_hour_price``, ``cost``) and shown by ``criticloop jobs`` and
``criticloop train``:

- wall time: the launch, from start to end, summed over attempts when a job resumes;
- tokens: what the trainer saw: TRL's ``num_input_tokens_seen`` (or ``num_tokens``) when its
  log has it, else the job's frozen data (every ``*.jsonl`` of the job but its metrics)
  tokenized with the model's tokenizer (characters / ``chars_per_token`` when it cannot load)
  times the epochs trained; unknown (None) for the RL methods, whose data is sampled as they go
  and whose log does not count it;
- device-hours: wall seconds x devices / 3600: one for an in-process job (the CPU host or one
  GPU) and a worker subprocess, every visible GPU under ``accelerate launch``;
- cost: device-hours x ``CRITICLOOP_TRAINING__DEVICE_HOUR_PRICE`` when that is set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..store import Store
from ._config import TrainConfig
from ._dataset import token_counter

_TOKEN_KEYS = ("num_input_tokens_seen", "num_tokens")


def job_devices(launcher: str) -> int:
    if launcher != "accelerate":
        return 1
    import torch

    return max(1, torch.cuda.device_count())


def logged_tokens(metrics: dict[str, Any] | None) -> int | None:
    """The trainer's own count of tokens seen, from the last step that logged one."""
    for entry in reversed((metrics or {}).get("log") or []):
        for key in _TOKEN_KEYS:
            if entry.get(key):
                return int(entry[key])
    return None


def _texts(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        if isinstance(value.get("content"), str):
            yield value["content"]
        else:
            for key, item in value.items():
                if key not in ("weight", "label", "source", "prompt_id", "id", "role"):
                    yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def data_tokens(config: TrainConfig, job_dir: Path, tokenizer: Any | None = None) -> int | None:
    """The tokens of the job's frozen training rows, once over (None: no such rows)."""
    files = sorted(p for p in job_dir.glob("*.jsonl") if p.name != "metrics.jsonl")
    if not files:
        return None
    count = token_counter(tokenizer, config.training.chars_per_token)
    total = 0
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    total += sum(count(text) for text in _texts(json.loads(line)))
    return total


def _tokenizer(config: TrainConfig):
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(config.model_path)
    except Exception:  # noqa: BLE001 - counting falls back to characters
        return None


def tokens_processed(
    config: TrainConfig, job_dir: Path, metrics: dict[str, Any], finished: bool = True
) -> int | None:
    """Tokens the trainer saw: its own count, else (for a finished job) the data's tokens times
    the epochs."""
    logged = logged_tokens(metrics)
    if logged is not None or not finished:
        return logged
    once = data_tokens(config, job_dir, _tokenizer(config))
    if once is None:
        return None
    epochs = next(
        (e["epoch"] for e in reversed(metrics.get("log") or []) if e.get("epoch")),
        config.training.epochs,
    )
    return round(once * float(epochs))


def record_cost(
    store: Store,
    config: TrainConfig,
    job_dir: Path,
    seconds: float,
    metrics: dict[str, Any],
    finished: bool = True,
) -> dict[str, Any]:
    """Record this attempt's wall time and the job's tokens, device-hours and cost; return them
    (a failed attempt's tokens are the trainer's count if it logged one)."""
    return store.record_job_cost(
        config.job_id,
        wall_seconds=seconds,
        devices=job_devices(config.launcher),
        tokens=tokens_processed(config, job_dir, metrics, finished),
        price=config.training.device_hour_price,
    )
