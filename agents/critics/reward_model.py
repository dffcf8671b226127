"""Reward model: a learned scorer of the whole response (its own dimension, ``reward_model``).

The profile weights it like any critic and names the model in its options::

    [tasks.general.critics]
    reward_model = 0.5

    [options.reward_model]
    model = "trained"       # the active reward model trained by `criticloop train --method reward`
    # model = "skywork"     # or a [reward_models.skywork] table of the profile (a directory,
                            # a downloaded hub id, an adapter, or a vLLM server's url)

``criticloop graph run`` replaces this placeholder with a
:class:`~criticloop.reward.RewardModelCritic` on the named model; without a model
it cannot judge, and the profile refuses to weight it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._critic import Case, Score, critic

if TYPE_CHECKING:
    from .._signals import Signals

DIMENSION = "reward_model"


@dataclass(frozen=True)
class UnresolvedRewardModel:
    """The critic before the graph has loaded its model (``model`` names it)."""

    model: str | None = None
    name: str = DIMENSION
    dimension: str = DIMENSION
    version: str = "unresolved"
    backend: str = "reward_model"

    def applies(self, case: Case) -> bool:
        return True

    def __call__(self, case: Case, signals: Signals) -> Score:
        return Score.unscored(
            self.dimension,
            "no reward model loaded (set options.reward_model.model in the profile)",
            self.version,
        )


@critic(DIMENSION)
def reward_model(model: str | None = None) -> UnresolvedRewardModel:
    return UnresolvedRewardModel(model=model)
