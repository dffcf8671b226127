"""Learned reward models: versions, the active one, and the labelled pairs they learn from."""

from __future__ import annotations


class RewardModelVerbs:
    """Store verbs for learned reward models (mixed into :class:`Store`)."""
