"""The parsed configuration a training job runs from: plain data, separate from the runners.

A job's config is the settings' :class:`~criticloop.settings.TrainingSettings` (nested whole, its
``auto`` choices resolved), the job's identity (what it trains, where, on what device), and the
settings the worker's judge needs (models, profiles, the LLM judge; never a secret). It is built
once by :meth:`TrainConfig.build`, written to the job's directory as ``config.json`` and read
back by the worker process, so a subprocess, an ``accelerate launch`` and an in-process run train
from exactly the same description, and none of them rereads the environment for it: the worker's
:class:`~criticloop.settings.Settings` are rebuilt from ``config.json`` (:meth:`settings`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from ..settings import (
    ENV_PREFIX,
    ENV_SOURCES,
    NESTED_DELIMITER,
    EmbedderSettings,
    GenerationSettings,
    JudgeSettings,
    PolicySettings,
    Settings,
    TrainingSettings,
)

# Fields that do not change what is learned: a job may resume under new values of these.
_NOT_IN_KEY = {"output_dir", "home", "launcher", "job_id"}
# Training settings that do not either: where the job runs and when the nightly job trains.
_TRAINING_NOT_IN_KEY = {
    "launcher",
    "accelerate_config",
    # Where generation runs. use_vllm itself stays in the key: GRPO then corrects its loss for
    # vLLM's sampling (TRL's importance sampling correction).
    "vllm_server_base_url",
    "vllm_server_timeout",
    "device_hour_price",  # what the job costs, not what it learns
    "nightly",
    "min_new_pairs",
    "auto_methods",
    "min_new_ratings",
    "min_new_examples",
}
# What only the RL methods' judge reads: it changes what they learn, not what DPO or a reward
# model learns.
_JUDGING = ("policy", "embedder", "generation", "profiles", "judge")
RL_METHODS = ("ppo", "grpo", "rloo")


class TrainConfig(BaseModel):
    """One job: ``training`` (every knob, with defaults and help in ``TrainingSettings``), the
    job's identity and resolved values, and the judge's settings for the RL methods."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The job's identity.
    job_id: str
    base_model: str  # the name recorded with generations and adapters
    model_path: str  # what from_pretrained loads
    home: str  # the data home (the RL methods' critics read prompts from its store)
    output_dir: str
    device: str  # cpu or cuda
    # The settings' training section, with its method, launcher and rm_tuning resolved.
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    temperature: float = 1.0  # RL sampling temperature: generation.temperature, 0 read as 1
    # What the worker's judge reads (PPO/GRPO/RLOO): the settings it used to reread from the
    # environment. Secrets are not here: see settings().
    policy: PolicySettings = Field(default_factory=PolicySettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    profiles: Path | None = None
    judge: JudgeSettings = Field(default_factory=JudgeSettings)

    @field_validator("judge")
    @classmethod
    def _no_secret(cls, judge: JudgeSettings) -> JudgeSettings:
        # config.json is on disk and the registry keeps as_dict(): never a key in either.
        return judge.model_copy(update={"api_key": None}) if judge.api_key else judge

    @classmethod
    def build(
        cls,
        settings: Settings,
        training: TrainingSettings,
        ref: Any,
        device: str,
        launcher: str,
        *,
        job_id: str = "",
        output_dir: str = "",
        rm_tuning: str | None = None,
    ) -> TrainConfig:
        """The job's config from the settings, its training settings (the CLI's overrides
        applied), the model it trains (``ref``: a ModelRef) and the resolved device, launcher
        and, for a reward model, tuning."""
        resolved = {"launcher": launcher} | ({"rm_tuning": rm_tuning} if rm_tuning else {})
        return cls(
            job_id=job_id,
            base_model=ref.name,
            model_path=ref.source,
            home=str(settings.home),
            output_dir=output_dir,
            device=device,
            training=training.model_copy(update=resolved),
            temperature=settings.generation.temperature or 1.0,
            policy=settings.policy,
            embedder=settings.embedder,
            generation=settings.generation,
            profiles=settings.profiles,
            judge=settings.judge,
        )

    def for_job(self, job_id: str, output_dir: Path | str) -> TrainConfig:
        """This config for the job ``job_id`` in ``output_dir`` (a new or a resumed one)."""
        return self.model_copy(update={"job_id": job_id, "output_dir": str(output_dir)})

    def with_training(self, **changes: Any) -> TrainConfig:
        return self.model_copy(update={"training": self.training.model_copy(update=changes)})

    def settings(self) -> Settings:
        """The Settings the worker judges with, from this config alone: the environment is not
        read for them, so the worker judges as the launching process configured it. The one
        exception is the judge's API key, a secret that is never written to disk: the worker
        takes it from its environment (or ``.env``), as the launching process did."""
        judge = self.judge.model_copy(update={"api_key": _Secrets().judge_api_key})
        # model_construct: every part is already validated, and BaseSettings' own constructor
        # would fill the sections not given here from the environment.
        return Settings.model_construct(
            home=Path(self.home),
            policy=self.policy,
            embedder=self.embedder,
            generation=self.generation,
            profiles=self.profiles,
            training=self.training,
            judge=judge,
        )

    @property
    def method(self) -> str:
        return self.training.method

    @property
    def launcher(self) -> str:
        return self.training.launcher

    @property
    def bf16(self) -> bool:
        return self.device == "cuda"

    def target_modules(self) -> str | list[str]:
        value = self.training.lora_target_modules.strip()
        return value if value == "all-linear" else [m.strip() for m in value.split(",") if m]

    def key(self) -> str:
        """A hash of everything that changes what is learned."""
        return _key(self._record())

    def as_dict(self) -> dict[str, Any]:
        """The record kept with jobs, adapters and reward models: the training settings flat at
        the top (readers ask ``config.get("learning_rate")``, as of records written before they
        were nested), the identity beside them, the judge's settings under their names."""
        record = self._record()
        return {**record, "key": _key(record)}

    def _record(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        return {**data.pop("training"), **data}

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2))

    @classmethod
    def read(cls, path: Path) -> TrainConfig:
        return cls.model_validate_json(path.read_text())


# as_dict() puts the training settings beside the job's fields: no name may be both.
if _clash := set(TrainingSettings.model_fields) & set(TrainConfig.model_fields):
    raise TypeError(f"TrainingSettings and TrainConfig both have {sorted(_clash)}")


def _key(record: dict[str, Any]) -> str:
    skipped = _NOT_IN_KEY | _TRAINING_NOT_IN_KEY
    if record["method"] not in RL_METHODS:
        skipped |= set(_JUDGING)
    kept = {k: v for k, v in record.items() if k not in skipped}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


class _Secrets(BaseSettings):
    """The worker's one secret, read from its environment and ``.env`` as Settings reads it:
    secrets are never written to config.json, so they cannot come from there."""

    model_config = ENV_SOURCES

    judge_api_key: SecretStr | None = Field(
        None, validation_alias=f"{ENV_PREFIX}JUDGE{NESTED_DELIMITER}API_KEY"
    )
