"""Everything that turns critics' scores into a judgement: the task profiles that weight the
critics, the weighted reward, the critics a profile builds (reward models among them), the
learned aggregator and its calibration statistics, ``criticloop calibrate`` and drift.

The floor between the critics (``agents``) and what drives them (``graphs``, ``training``):
both import it; it imports neither. The modules are private; these are the public names.
"""

from ._aggregator import (
    FEATURES,
    TARGETS,
    Example,
    Fit,
    RewardModel,
    confidence_and_correct,
    evaluate_model,
    fit_reward_model,
    pair_features,
)
from ._calibrate import calibrate, gather, load_model
from ._calstats import ece, log_loss, reliability, sigmoid
from ._critics import build_critics, reward_model_spec, trained_spec
from ._drift import calibration_stats, drift_flags, drift_report
from ._models import (
    RewardModelCritic,
    RewardModelSpec,
    RewardScorer,
    check_local,
    encode,
    load_sequence_classifier,
    prepare_reward_critics,
    score_batched,
)
from ._profiles import DEFAULT_PROFILES, TRAINED, Profiles, Routing
from ._weighted import CLEAR_DIFFERENCE, Comparison, Reward, aggregate, compare

__all__ = [
    "CLEAR_DIFFERENCE",
    "DEFAULT_PROFILES",
    "FEATURES",
    "TARGETS",
    "TRAINED",
    "Comparison",
    "Example",
    "Fit",
    "Profiles",
    "Reward",
    "RewardModel",
    "RewardModelCritic",
    "RewardModelSpec",
    "RewardScorer",
    "Routing",
    "aggregate",
    "build_critics",
    "calibrate",
    "calibration_stats",
    "check_local",
    "compare",
    "confidence_and_correct",
    "drift_flags",
    "drift_report",
    "ece",
    "encode",
    "evaluate_model",
    "fit_reward_model",
    "gather",
    "load_model",
    "load_sequence_classifier",
    "log_loss",
    "pair_features",
    "prepare_reward_critics",
    "reliability",
    "reward_model_spec",
    "score_batched",
    "sigmoid",
    "trained_spec",
]
