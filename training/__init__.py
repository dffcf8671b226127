"""Training: LoRA adapters from what the feedback graph learned, and the gate that promotes them.

    criticloop train --method dpo|sft|kto|ppo|grpo|rloo
    criticloop adapters list|evaluate|promote|rollback

DPO trains on the store's preference pairs (TRL ``DPOTrainer``, weighted by source); SFT on the
good answers (TRL ``SFTTrainer``, loss on the answer only) and KTO on every rated answer (TRL
``KTOTrainer``, desirable and undesirable weighted for their imbalance); PPO
(written here: TRL 1.16 has none), GRPO and RLOO (TRL) train on prompts with the critics as the
reward. Jobs run in this process on CPU, as a subprocess on one GPU, or under ``accelerate
launch`` across several, and are recorded in the store with their metrics. A new adapter goes
into service only when the gate finds it better than the current one on held-out prompts.
Nothing here is imported unless a training command runs: torch, TRL and PEFT load inside.
"""

from ._config import TrainConfig
from ._cycle import nightly_training, train_and_gate
from ._data import PreferenceData, is_heldout, load_preferences
from ._dataset import DatasetBuilder, DatasetLimits, DatasetReport, build_dataset
from ._gate import GateReport, bootstrap_interval, run_gate, sign_test
from ._jobs import TrainingFailed, TrainResult, resolve_launcher, train
from ._judge import CriticJudge

__all__ = [
    "CriticJudge",
    "DatasetBuilder",
    "DatasetLimits",
    "DatasetReport",
    "GateReport",
    "PreferenceData",
    "TrainConfig",
    "TrainResult",
    "TrainingFailed",
    "bootstrap_interval",
    "build_dataset",
    "is_heldout",
    "load_preferences",
    "nightly_training",
    "resolve_launcher",
    "run_gate",
    "sign_test",
    "train",
    "train_and_gate",
]
