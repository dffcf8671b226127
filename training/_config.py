"""The parsed configuration a training job runs from: plain data, separate from the runners.

Built from the settings (and command-line overrides) by the CLI, written to the job's
directory as ``config.json``, and read back by the worker process, so a subprocess, an
``accelerate launch`` and an in-process run train from exactly the same description.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

# Fields that do not change what is learned: a job may resume under new values of these.
_NOT_IN_KEY = {"output_dir", "home", "launcher", "job_id"}


@dataclass(frozen=True)
class TrainConfig:
    method: str  # dpo, ppo, grpo, rloo, reward
    job_id: str
    base_model: str  # the name recorded with generations and adapters
    model_path: str  # what from_pretrained loads
    home: str  # the data home (the RL methods' critics read prompts from its store)
    output_dir: str
    launcher: str
    device: str  # cpu or cuda
    quantize: str = "none"  # none | 4bit
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int = 0
    batch_size: int = 4
    gradient_accumulation: int = 1
    max_length: int = 1024
    beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = "all-linear"
    gradient_checkpointing: bool = True
    save_steps: int = 10
    seed: int = 0
    rl_steps: int = 8
    rl_samples_per_prompt: int = 4
    rl_max_new_tokens: int = 64
    kl_coef: float = 0.05
    veto_penalty: float = -1.0
    temperature: float = 1.0
    reward: str = "critics"  # RL: critics | rm:NAME | mix | mix:NAME
    reward_mix: float = 0.5
    rm_tuning: str = "full"  # --method reward: lora | full (resolved)
    rm_dimension: str = ""

    @property
    def bf16(self) -> bool:
        return self.device == "cuda"

    def key(self) -> str:
        """A hash of everything that changes what is learned."""
        kept = {k: v for k, v in asdict(self).items() if k not in _NOT_IN_KEY}
        return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]

    def target_modules(self) -> str | list[str]:
        value = self.lora_target_modules.strip()
        return value if value == "all-linear" else [m.strip() for m in value.split(",") if m]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key()}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), indent=2, sort_keys=True))

    @classmethod
    def read(cls, path: Path) -> TrainConfig:
        data = json.loads(path.read_text())
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
