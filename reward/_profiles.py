"""Critic profiles: which critics apply per task type and brand, their weights and thresholds.

Profiles live in a TOML file users edit (the default is ``reward/profiles.toml``; point
``CRITICLOOP_PROFILES`` at your own). It is validated on load with errors that name the file
and the key, and its version (the ``version`` key plus a hash of the content) goes into every
run's record.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from ..store import content_hash
from ..vocab import TASK_TYPES

DEFAULT_PROFILES = Path(__file__).with_name("profiles.toml")


class Routing(BaseModel):
    """Thresholds the feedback graph routes by (see profiles.toml for their meaning)."""

    model_config = ConfigDict(extra="forbid")

    pair_margin: float = Field(0.05, ge=0, le=1)
    min_confidence: float = Field(0.3, ge=0, le=1)
    max_disagreement: float = Field(0.4, ge=0, le=1)
    good_enough: float = Field(0.45, ge=0, le=1)
    max_revisions: int = Field(1, ge=0, le=5)
    human_budget: int = Field(10, ge=0)


class Calibration(BaseModel):
    """How ``criticloop calibrate`` learns from people and how the graph escalates with it."""

    model_config = ConfigDict(extra="forbid")

    target_agreement: float = Field(0.8, gt=0.5, lt=1)
    risk: float = Field(0.1, gt=0, lt=0.5)
    min_labels: int = Field(100, ge=20)
    calibration_share: float = Field(0.3, ge=0.1, le=0.6)
    drift_threshold: float = Field(0.1, gt=0, lt=1)
    drift_window: Literal["day", "week", "month"] = "week"
    drift_min_decisions: int = Field(20, ge=5)


def _known_critic(name: str) -> None:
    from ..agents import CRITICS
    from ..agents import critics as _registers_builtins  # noqa: F401

    if name not in CRITICS:
        raise ValueError(f"unknown critic {name!r} (known: {', '.join(sorted(CRITICS))})")


class _Weights(BaseModel):
    model_config = ConfigDict(extra="forbid")

    critics: dict[str, float] = Field(default_factory=dict)
    routing: dict[str, Any] = Field(default_factory=dict)

    @field_validator("critics")
    @classmethod
    def _known_critics(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            _known_critic(name)
            if weight < 0:
                raise ValueError(f"weight of {name!r} must be >= 0")
        return value


class RewardModelEntry(BaseModel):
    """A ``[reward_models.NAME]`` table: where a reward model is (see reward/_models.py)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    adapter: str | None = None
    url: str | None = None
    served_model: str | None = None
    api_key_env: str | None = None
    activation: Literal["none", "sigmoid"] = "none"
    center: float = 0.0
    scale: float = Field(1.0, gt=0)
    max_length: int = Field(1024, ge=16)
    batch_size: int = Field(8, ge=1)
    timeout: float = Field(60.0, gt=0)
    device: str = "auto"

    @model_validator(mode="after")
    def _one_source(self) -> RewardModelEntry:
        if self.url and self.adapter:
            raise ValueError("give url (a served model) or model/adapter (a local one), not both")
        if not (self.url or self.model or self.adapter):
            raise ValueError("give model (a directory or downloaded hub id), adapter, or url")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, not {self.url!r}")
        return self


TRAINED = "trained"
"""The reward-model name meaning the active one of ``criticloop train --method reward``."""


def _backend(value: str) -> str:
    if value in ("local", "crew"):
        return value
    kind, _, name = value.partition(":")
    if kind == "reward_model" and name:
        return value
    raise ValueError(
        f"backend {value!r} must be local, crew or reward_model:NAME (NAME: a [reward_models] "
        f"table, {TRAINED!r} or a trained version)"
    )


class _ProfileFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = "unversioned"
    routing: Routing = Field(default_factory=Routing)
    calibration: Calibration = Field(default_factory=Calibration)
    tasks: dict[str, _Weights] = Field(default_factory=dict)
    brands: dict[str, _Weights] = Field(default_factory=dict)
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    backends: dict[str, str] = Field(default_factory=dict)
    reward_models: dict[str, RewardModelEntry] = Field(default_factory=dict)

    @field_validator("backends")
    @classmethod
    def _known_backend_critics(cls, value: dict[str, str]) -> dict[str, str]:
        for name, backend in value.items():
            if name != "default":
                _known_critic(name)
            _backend(backend)
            if name in ("default", "reward_model") and backend.startswith("reward_model:"):
                raise ValueError(
                    f"{name} cannot be a reward model's: give each critic its own backend "
                    "(the reward_model critic names its model in options.reward_model.model)"
                )
        return value

    @model_validator(mode="after")
    def _reward_models_named(self) -> _ProfileFile:
        for name, backend in self.backends.items():
            rm = backend.partition(":")[2]
            if backend.startswith("reward_model:") and not _known_rm(rm, self.reward_models):
                raise ValueError(
                    f"backends.{name}: no [reward_models.{rm}] table (names: "
                    f"{', '.join([*self.reward_models, TRAINED]) or TRAINED})"
                )
        weighted = any(
            w.critics.get("reward_model", 0) > 0 for w in (*self.tasks.values(), *self.brands.values())
        )
        model = self.options.get("reward_model", {}).get("model")
        if weighted and not model:
            raise ValueError(
                "critic reward_model is weighted but options.reward_model.model names no model "
                f"(a [reward_models] table or {TRAINED!r})"
            )
        if model is not None and not _known_rm(str(model), self.reward_models):
            raise ValueError(
                f"options.reward_model.model: no [reward_models.{model}] table (names: "
                f"{', '.join([*self.reward_models, TRAINED])})"
            )
        return self

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: dict[str, _Weights]) -> dict[str, _Weights]:
        for task in value:
            if task not in TASK_TYPES:
                raise ValueError(f"unknown task type {task!r} (known: {', '.join(TASK_TYPES)})")
        return value


def _known_rm(name: str, tables: dict[str, RewardModelEntry]) -> bool:
    """A profile table, the active trained model, or a trained version (checked at run time)."""
    return name in tables or name == TRAINED or name.startswith("reward-")


def _some_critic_judges(parsed: _ProfileFile, path: Path) -> None:
    """Every task type, alone and under every brand, must leave a critic with a positive weight:
    with none, every case would be dropped as if no candidate scored."""
    for task, weights in parsed.tasks.items():
        if sum(weights.critics.values()) <= 0:
            raise ConfigError(
                f"{path}: tasks.{task}.critics: the weights sum to 0, so no critic would judge "
                f"{task} prompts; give at least one a positive weight"
            )
        for brand, override in parsed.brands.items():
            if sum({**weights.critics, **override.critics}.values()) <= 0:
                raise ConfigError(
                    f"{path}: brands.{brand}.critics: with tasks.{task} the weights sum to 0, "
                    f"so no critic would judge {task} prompts of this brand"
                )


class TaskProfile(BaseModel):
    """The resolved profile for one prompt: critic weights and routing thresholds."""

    weights: dict[str, float]
    routing: Routing

    @property
    def critics(self) -> list[str]:
        return [name for name, weight in self.weights.items() if weight > 0]


class Profiles:
    """A loaded, validated profile file."""

    def __init__(self, parsed: _ProfileFile, source: Path, text: str):
        self._parsed = parsed
        self.source = source
        self.version = f"{parsed.version}+{content_hash(text)[:8]}"

    @classmethod
    def load(cls, path: Path | None = None) -> Profiles:
        path = Path(path) if path else DEFAULT_PROFILES
        try:
            if path.exists() and not path.is_file():  # a FIFO would block the read
                raise ConfigError(f"{path}: cannot read profiles: not a regular file")
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: cannot read profiles: no such file") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read profiles: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: cannot read profiles: not valid UTF-8 (byte {exc.object[exc.start]:#04x})"
            ) from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        try:
            parsed = _ProfileFile.model_validate(raw)
            for weights in (*parsed.tasks.values(), *parsed.brands.values()):
                Routing.model_validate({**parsed.routing.model_dump(), **weights.routing})
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{path}: {where + ': ' if where else ''}{message}") from None
        _some_critic_judges(parsed, path)
        return cls(parsed, path, text)

    def for_prompt(self, task_type: str, brand_id: str | None = None) -> TaskProfile:
        task = self._parsed.tasks.get(task_type) or _Weights()
        brand = self._parsed.brands.get(brand_id or "") or _Weights()
        weights = {**task.critics, **brand.critics}
        routing = {**self._parsed.routing.model_dump(), **task.routing, **brand.routing}
        return TaskProfile(weights=weights, routing=Routing.model_validate(routing))

    @property
    def human_budget(self) -> int:
        """Escalations one run may leave for people (the file's top-level routing)."""
        return self._parsed.routing.human_budget

    @property
    def calibration(self) -> Calibration:
        return self._parsed.calibration

    def backend(self, name: str) -> str:
        """Where critic ``name`` runs: 'local', 'crew' or 'reward_model:NAME' (the [backends]
        table; default local)."""
        backends = self._parsed.backends
        return backends.get(name, backends.get("default", "local"))

    def weighted(self, critic: str) -> bool:
        """Whether some task type or brand gives ``critic`` a positive weight."""
        tables = (*self._parsed.tasks.values(), *self._parsed.brands.values())
        return any(t.critics.get(critic, 0) > 0 for t in tables)

    def reward_model_entry(self, name: str) -> RewardModelEntry | None:
        return self._parsed.reward_models.get(name)

    def critic_options(self, name: str) -> dict[str, Any]:
        return dict(self._parsed.options.get(name, {}))

    def as_record(self) -> dict[str, Any]:
        """What goes into a run's record: the version and the whole resolved content."""
        return {
            "version": self.version,
            "source": str(self.source),
            "content": self._parsed.model_dump(mode="json"),
        }
