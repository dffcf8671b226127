"""The critics a profile asks for, each on its backend, and the reward models profiles and
trained versions stand for. The nightly job, calibration, drift and training's judges all build
their critics here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..agents import Critic, build_critic
from ..errors import ConfigError
from ..settings import Settings
from ..store import Store
from ._profiles import TRAINED, Profiles


def build_critics(
    profiles: Profiles,
    settings: Settings | None = None,
    load_judge_policy: Callable[[], Any] | None = None,
) -> dict[str, Critic]:
    """Every registered critic, each on its backend: the profile's [backends] table, or
    CRITICLOOP_JUDGE__BACKEND for all of them (``settings`` None: all local). The bundled crew
    judge runs on ``load_judge_policy()``, the base policy."""
    from ..agents import CRITICS
    from ..agents import critics as _registers_builtins  # noqa: F401

    critics = {
        name: build_critic(name, **profiles.critic_options(name)) for name in sorted(CRITICS)
    }
    _reward_model_critics(critics, profiles, settings)
    if settings is None:
        return critics
    forced = settings.judge.backend
    crew = [
        n
        for n in critics
        if (forced if forced != "profile" else profiles.backend(n)) == "crew"
        and getattr(critics[n], "backend", "local") != "reward_model"
    ]
    if crew:
        from ..agents import CrewCritic, JudgeLLM

        llm = JudgeLLM(settings.judge, load_judge_policy)
        for name in crew:
            critics[name] = CrewCritic(name, critics[name], llm)
    return critics


def _reward_model_critics(
    critics: dict[str, Critic], profiles: Profiles, settings: Settings | None
) -> None:
    """Put reward models where the profile says: the ``reward_model`` critic's own model, and
    every critic whose backend is ``reward_model:NAME``. Each model is checked now (a missing
    model or one that is not a reward model is a one-line error) and loaded on first use, once,
    however many critics share it."""
    from ._models import RewardModelCritic, RewardScorer, check_local

    wanted: dict[str, str] = {}  # only critics some task weights: the others never judge
    own = profiles.critic_options("reward_model").get("model")
    if own and profiles.weighted("reward_model"):
        wanted["reward_model"] = str(own)
    for name in critics:
        backend = profiles.backend(name)
        if name != "reward_model" and backend.startswith("reward_model:") and profiles.weighted(name):
            wanted[name] = backend.partition(":")[2]
    scorers: dict[str, RewardScorer] = {}
    for name, rm in wanted.items():
        spec = reward_model_spec(rm, profiles, settings, dimension=name)
        if spec.label not in scorers:
            check_local(spec)
            scorers[spec.label] = RewardScorer(spec)
        inner = None if name == "reward_model" else critics[name]
        dimension = "reward_model" if inner is None else inner.dimension
        critics[name] = RewardModelCritic(name, dimension, scorers[spec.label], inner)


def reward_model_spec(
    name: str, profiles: Profiles | None, settings: Settings | None, *, dimension: str = ""
):
    """The reward model ``name`` stands for: a ``[reward_models.NAME]`` table of the profile,
    ``trained`` (the active trained model of ``dimension``, else the overall one) or a trained
    version."""
    from ._models import RewardModelSpec

    entry = profiles.reward_model_entry(name) if profiles is not None else None
    if entry is not None:
        return RewardModelSpec(name=name, **entry.model_dump())
    if settings is None or not settings.db_path.exists():
        raise ConfigError(
            f"reward model {name!r}: no [reward_models.{name}] table in the profile and no "
            "store to find a trained one in"
        )
    with Store.open(settings.db_path, create=False) as store:
        if name == TRAINED:
            dim = "" if dimension == "reward_model" else dimension
            row = store.active_trained_reward_model(dim)
            if row is None:
                raise ConfigError(
                    "reward model 'trained': none is active (criticloop train --method reward "
                    "trains one; criticloop reward-models activate VERSION picks one)"
                )
        else:
            row = store.trained_reward_model(name)
    return trained_spec(row)


def trained_spec(row: dict[str, Any]):
    """The spec of a registered trained reward model."""
    from ._models import RewardModelSpec

    lora = row["tuning"] == "lora"
    return RewardModelSpec(
        name=row["version"],
        model=row["base_path"] if lora else row["path"],
        adapter=row["path"] if lora else None,
        center=float(row["center"]),
        max_length=int(row["config"].get("max_length", 1024)),
        version=row["version"],
    )
