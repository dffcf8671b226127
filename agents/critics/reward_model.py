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

from .._critic import BaseCritic, Case, Score, critic

if TYPE_CHECKING:
    from .._signals import Signals


@critic("reward_model")
@dataclass(frozen=True)
class UnresolvedRewardModel(BaseCritic, name="reward_model", version="unresolved"):
    """The critic before the graph has loaded its model (``model`` names it)."""

    backend = "reward_model"  # what critic_versions records, not an option
    model: str | None = None

    def __call__(self, case: Case, signals: Signals) -> Score:
        # Without a model there is nothing to judge with, not even an empty response.
        return self.unscored(
            "no reward model loaded (set options.reward_model.model in the profile)"
        )
