"""Training: LoRA adapters from accumulated preference pairs.

DPO and PPO (plus GRPO/RLOO) runners over TRL and PEFT, QLoRA through bitsandbytes on a GPU,
and the adapter registry that promotes a new adapter only when it beats the current one.
Nothing here is imported unless a training command runs.
"""
