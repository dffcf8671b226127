"""Labelled preference pairs from files (PandaLM, HH-RLHF, plain JSONL) into the store."""

from __future__ import annotations


class LabelVerbs:
    """Store verbs for imported labelled pairs (mixed into :class:`Store`)."""
