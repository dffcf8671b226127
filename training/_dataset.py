"""The dataset builder: quality checks every training method's data goes through.

    kept, report = build_dataset(rows, tokenizer, kind="pairs", limits=DatasetLimits(...))

DPO pairs (``_data.load_preferences``), the reward model's pairs (``_reward.load_reward_pairs``),
SFT and KTO rows, and the files ``criticloop pairs export`` and ``criticloop sft export`` write
pass the same checks, in this order; each removal is counted by its reason with a first example:

- ``bad_role``, ``empty_turn``, ``no_user_turn_last``, ``identical`` (format): every message has
  a known role (system, user, assistant) and text; the conversation ends with a user turn before
  the answer; a pair's chosen and rejected answers differ;
- ``prompt_too_long``, ``response_too_long``: the conversation, and the longest answer, in
  tokens, against ``CRITICLOOP_TRAINING__MAX_PROMPT_TOKENS`` and ``..._MAX_RESPONSE_TOKENS``.
  Tokens are the tokenizer's when one is at hand (``add_special_tokens=False``, the turns
  rendered as ``role: text`` lines); without one, ``ceil(characters / chars_per_token)``
  (``CRITICLOOP_TRAINING__CHARS_PER_TOKEN``, 4: about right for English with BPE vocabularies);
- ``duplicate``: the same example (its turns but the system message, and its answers) after
  normalising (case, whitespace, punctuation);
- ``near_duplicate``: the Jaccard similarity of its word 3-gram shingles with an example already
  kept is at least ``CRITICLOOP_TRAINING__NEAR_DUPLICATE_THRESHOLD`` (0.8: one word changed in 40 is
  about 0.85; 1 turns the check off).

What is kept is counted in tokens (prompt plus answers), in total and per example.
Pure Python, no torch: the export commands import this without loading a model.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

ROLES = ("system", "user", "assistant")
Kind = Literal["pairs", "sft", "kto"]


@dataclass(frozen=True)
class DatasetLimits:
    """The checks' thresholds (defaults: ``TrainingSettings``')."""

    max_prompt_tokens: int = 1024
    max_response_tokens: int = 1024
    near_duplicate_threshold: float = 0.8
    chars_per_token: float = 4.0

    @classmethod
    def from_settings(cls, training: Any) -> DatasetLimits:
        return cls(
            max_prompt_tokens=training.max_prompt_tokens,
            max_response_tokens=training.max_response_tokens,
            near_duplicate_threshold=training.near_duplicate_threshold,
            chars_per_token=training.chars_per_token,
        )


@dataclass
class DatasetReport:
    """What the checks removed, by reason (a count and the first example), and what was kept."""

    kind: str
    tokenizer: str  # the tokenizer's name, or "chars/4.0" for the fallback
    kept: int = 0
    removed: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)
    tokens: list[int] = field(default_factory=list)  # per kept example: prompt plus answers

    def remove(self, reason: str, example: str) -> None:
        self.removed[reason] += 1
        self.first.setdefault(reason, example)

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)

    def token_summary(self) -> dict[str, Any]:
        n = len(self.tokens)
        return {
            "counted_with": self.tokenizer,
            "total": self.total_tokens,
            "mean": round(self.total_tokens / n, 1) if n else 0,
            "min": min(self.tokens) if n else 0,
            "max": max(self.tokens) if n else 0,
            "per_example": list(self.tokens),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "kept": self.kept,
            "removed": dict(self.removed),
            "first_removed": dict(self.first),
            "tokens": self.token_summary(),
        }

    def lines(self) -> list[str]:
        """The report as text lines, for the commands' output."""
        t = self.token_summary()
        out = [
            f"kept {self.kept} examples, {t['total']} tokens ({self.tokenizer}): "
            f"{t['mean']} per example on average, {t['min']}-{t['max']}"
        ]
        for reason, count in sorted(self.removed.items()):
            out.append(f"  removed {count} {reason} (first: {self.first[reason]})")
        return out


def token_counter(tokenizer: Any | None, chars_per_token: float) -> Callable[[str], int]:
    """Count tokens with ``tokenizer`` (any ``transformers`` tokenizer), or estimate them from
    characters when there is none."""
    if tokenizer is None:
        return lambda text: math.ceil(len(text) / chars_per_token) if text else 0
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _text(value: Any) -> str | None:
    """A message list's text, or a plain string; None when it is neither."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return "\n".join(str(m.get("content", "")) for m in value)
    return None


def _messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return list(value) if isinstance(value, list) else []


def split_row(row: dict[str, Any], kind: str) -> tuple[list[dict[str, Any]], list[Any]]:
    """(the conversation before the answer, the answers) of a row of ``kind``.

    pairs: ``prompt`` (or ``conversation``), ``chosen``, ``rejected``; sft: ``messages`` ending
    with the assistant's answer, or ``prompt`` and ``completion``; kto: ``prompt``,
    ``completion`` and ``label``. Messages or plain strings, as TRL reads them.
    """
    prompt = row.get("prompt", row.get("conversation"))
    if kind == "pairs":
        return _messages(prompt), [row.get("chosen"), row.get("rejected")]
    if kind == "sft" and "messages" in row:
        messages = _messages(row["messages"])
        if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
            return messages[:-1], [[messages[-1]]]
        return messages, [None]
    return _messages(prompt), [row.get("completion")]


def normalise(text: str) -> str:
    """Lower case, NFKC, punctuation dropped, whitespace collapsed: what counts as the same."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def shingles(text: str, n: int = 3) -> frozenset[str]:
    words = text.split()
    if len(words) <= n:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


class NearDuplicates:
    """Exact Jaccard similarity of word 3-gram shingles against every example kept so far,
    reached through an inverted index (shingle -> examples), so only examples sharing a
    shingle are compared.

    Why our own and not a library: neither datasketch (MinHash/LSH) nor rapidfuzz is installed
    in the project's environment, and adding a dependency for this is not worth it. MinHash
    only approximates this same Jaccard similarity, which pays off for millions of examples;
    stores here hold thousands, where the exact figure is cheap. rapidfuzz's edit-distance
    ratios compare every pair of examples (no index) and are sensitive to reordered
    paragraphs, which shingles are not.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.kept: list[tuple[frozenset[str], str]] = []
        self.index: dict[str, list[int]] = defaultdict(list)

    def match(self, text: str) -> tuple[str, float] | None:
        """The kept example (its label) ``text`` nearly duplicates, with the similarity."""
        if self.threshold >= 1:
            return None
        mine = shingles(text)
        if not mine:
            return None
        shared: Counter[int] = Counter()
        for shingle in mine:
            for i in self.index.get(shingle, ()):
                shared[i] += 1
        best: tuple[str, float] | None = None
        for i, common in shared.items():
            theirs, label = self.kept[i]
            similarity = common / (len(mine) + len(theirs) - common)
            if similarity >= self.threshold and (best is None or similarity > best[1]):
                best = (label, similarity)
        return best

    def add(self, text: str, label: str) -> None:
        mine = shingles(text)
        for shingle in mine:
            self.index[shingle].append(len(self.kept))
        self.kept.append((mine, label))


class DatasetBuilder:
    """The checks, one row at a time (:meth:`check`), remembering what it kept so duplicates
    of earlier rows are caught; :attr:`report` says what it removed and kept."""

    def __init__(
        self,
        kind: Kind = "pairs",
        limits: DatasetLimits | None = None,
        tokenizer: Any | None = None,
    ) -> None:
        if kind not in ("pairs", "sft", "kto"):
            raise ValueError(f"unknown dataset kind {kind!r} (pairs, sft or kto)")
        self.kind = kind
        self.limits = limits or DatasetLimits()
        self.count = token_counter(tokenizer, self.limits.chars_per_token)
        name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        self.report = DatasetReport(
            kind, name if tokenizer is not None else f"chars/{self.limits.chars_per_token:g}"
        )
        self.seen: set[str] = set()
        self.rows = 0
        self.near = NearDuplicates(self.limits.near_duplicate_threshold)

    def check(self, row: dict[str, Any], label: str | None = None) -> str | None:
        """Keep ``row`` (None) or return the reason it is removed; either way it is reported."""
        self.rows += 1
        label = label or str(row.get("id") or f"row {self.rows}")
        reason, detail = self._reason(row, label)
        if reason:
            self.report.remove(reason, f"{label}{': ' + detail if detail else ''}")
        return reason

    def _reason(self, row: dict[str, Any], label: str) -> tuple[str | None, str]:
        prompt, answers = split_row(row, self.kind)
        for message in prompt:
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                role = message.get("role") if isinstance(message, dict) else message
                return "bad_role", f"role {role!r}"
            if not isinstance(message.get("content"), str) or not message["content"].strip():
                return "empty_turn", f"an empty {message['role']} turn"
        if not prompt or prompt[-1]["role"] != "user":
            last = prompt[-1]["role"] if prompt else "nothing"
            return "no_user_turn_last", f"the conversation ends with {last}, not a user turn"
        texts = [_text(answer) for answer in answers]
        for answer in answers:
            if isinstance(answer, list) and any(
                not isinstance(m, dict) or m.get("role") != "assistant" for m in answer
            ):
                return "bad_role", "an answer that is not the assistant's"
        if any(text is None or not text.strip() for text in texts):
            return "empty_turn", "an empty answer"
        if self.kind == "pairs" and texts[0].strip() == texts[1].strip():
            return "identical", "chosen == rejected"
        prompt_text = "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
        prompt_tokens = self.count(prompt_text)
        if prompt_tokens > self.limits.max_prompt_tokens:
            return "prompt_too_long", f"{prompt_tokens} > {self.limits.max_prompt_tokens} tokens"
        answer_tokens = [self.count(text) for text in texts]
        if max(answer_tokens) > self.limits.max_response_tokens:
            return (
                "response_too_long",
                f"{max(answer_tokens)} > {self.limits.max_response_tokens} tokens",
            )
        # The system message is left out of what makes two examples the same: many prompts
        # share one, and a long one would make every pair of them look alike.
        turns = "\n".join(f"{m['role']}: {m['content']}" for m in prompt if m["role"] != "system")
        whole = normalise("\n".join([turns, *texts]))
        if whole in self.seen:
            return "duplicate", "the same text as an earlier example"
        near = self.near.match(whole)
        if near:
            return "near_duplicate", f"{near[1]:.0%} like {near[0]}"
        self.seen.add(whole)
        self.near.add(whole, label)
        self.report.kept += 1
        self.report.tokens.append(prompt_tokens + sum(answer_tokens))
        return None, ""


def build_dataset(
    rows: Iterable[dict[str, Any]],
    tokenizer: Any | None = None,
    kind: Kind = "pairs",
    limits: DatasetLimits | None = None,
) -> tuple[list[dict[str, Any]], DatasetReport]:
    """The rows that pass every check, in order, and the report of what was removed and why."""
    builder = DatasetBuilder(kind, limits, tokenizer)
    kept = [row for row in rows if builder.check(row) is None]
    return kept, builder.report
