"""Labelled preference pairs from files (PandaLM, HH-RLHF, plain JSONL) into the store.

    criticloop labels import pandalm_testset-v1.json hh_harmless-base_test.jsonl.gz
    criticloop labels list

People's A/B judgements are what the critics are calibrated against. A file is read and checked
whole by :func:`read_labelled_pairs`; :meth:`LabelVerbs.import_labels` then stores each pair as a
prompt, two generations (A and B) and one ``preference`` review per annotator with source
``import``, in one transaction. Formats:

``pandalm``
    A JSON array (or JSONL) of ``{instruction, input, response1, response2, annotator1..N}``;
    labels 0 = tie, 1 = response1 (A), 2 = response2 (B). The prompt is the instruction, then the
    input after a blank line. Non-text responses (JSON ``true``) are kept as ``str(value)``.
``hh``
    Anthropic HH-RLHF JSONL (``.gz`` too): ``{chosen, rejected}`` transcripts of
    ``\\n\\nHuman: ...\\n\\nAssistant: ...`` turns sharing all but the last Assistant turn. Chosen
    becomes A or B by a hash of the row, so labels are not all ``a``. Rows whose transcripts do
    not split into (conversation, chosen, rejected) are skipped and counted by reason.
``plain``
    JSONL ``{prompt | messages, a, b, label: a|b|tie}`` with optional ``id``, ``task_type``,
    ``annotator`` (default ``label``) and ``dimension``: what the label judges, a critic's name
    such as ``helpfulness`` (default: the overall preference). Rows of the same pair and
    dimension by different annotators merge; one pair may be labelled on several dimensions.
``trl``
    TRL preference JSONL, what ``criticloop pairs export`` writes: ``{prompt, chosen,
    rejected}`` as strings (standard) or as chat messages (conversational), or chosen and
    rejected as whole conversations sharing all but the last assistant turn (implicit prompt).
    Chosen becomes A or B by a hash of the row, as for ``hh``; other keys are ignored.

Public data comes with quirks, so a row that cannot be used (a missing or mistyped field, a label
outside the scheme, two identical responses, an empty prompt, a conversation that does not end
with the user) is skipped and counted by reason, and the first few ``file:line``s of each reason
are kept to show; so is an exact repeat of a row. A file that is not what any format promises
(not UTF-8, not JSON, rows that are not objects, no row usable at all) is an :class:`InputError`
naming ``file:line``, and nothing of it is imported.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlite_utils import Database

from ..errors import InputError
from ..vocab import TASK_TYPES
from ._common import _VERDICT_IN, _key
from ._files import _decode_utf8, read_input
from ._limits import LimitError, Limits, check, decode_line, default_limits, json_decoder
from ._records import SLUG, Prompt
from ._rows import GenerationRecord, ReviewRecord

LABEL_FORMATS = ("auto", "pandalm", "hh", "plain", "trl")
LABELS = ("a", "b", "tie")
REVIEWER_DATASET = "reviewer"
"""The dataset name :meth:`LabelVerbs.label_datasets` gives reviews made in the reviewer app."""
_PANDALM_LABELS = {0: "tie", 1: "a", 2: "b"}
_ANNOTATOR = re.compile(r"annotator(\d+)")
_PLAIN_KEYS = (
    "id", "prompt", "messages", "a", "b", "label", "task_type", "annotator", "dimension"
)  # fmt: skip
DIMENSION = re.compile(r"[a-z][a-z0-9_]{0,63}")
"""A label's dimension: a critic's name (``helpfulness``); '' is the overall preference."""
_HH_MARK = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def majority_label(labels: Iterable[str]) -> str | None:
    """The label more than half the annotators gave, or None (a split, or no labels)."""
    counts = Counter(labels)
    total = sum(counts.values())
    return next((label for label, n in counts.items() if 2 * n > total), None)


IMPORTED = "import:"
"""prompts.source of a labelled pair's prompt: the graph and generation never pick these up."""


@dataclass(frozen=True)
class LabelledPair:
    """One A/B comparison people labelled: the conversation, the two responses, the labels."""

    origin: str  # "file:line" of the (first) row it came from
    key: str  # the row's own id, else a hash of conversation, a and b (no dataset in it)
    messages: list[dict[str, str]]  # role/content turns, ending with a user turn
    a: str
    b: str
    labels: dict[str, str]  # annotator -> a | b | tie
    task_type: str = "general"
    dimension: str = ""  # what the labels judge ('' the overall preference)

    @property
    def majority(self) -> str | None:
        return majority_label(self.labels.values())


SHOWN_SKIPS = 3
"""How many skipped rows of each reason are kept with their file:line and why."""


class SkippedRows:
    """What a reader of real data skipped: counts by reason, the first ``file:line`` of each
    (``first_skipped``) and the first few as ``file:line: why`` (``skip_examples``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped: dict[str, int] = {}
        self.first_skipped: dict[str, str] = {}
        self.skip_examples: dict[str, list[str]] = {}

    def skip(self, reason: str, origin: str, why: str = "") -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.first_skipped.setdefault(reason, origin)
        shown = self.skip_examples.setdefault(reason, [])
        if len(shown) < SHOWN_SKIPS:
            shown.append(f"{origin}: {why}" if why else origin)


class LabelledPairs(SkippedRows, list[LabelledPair]):
    """What :func:`read_labelled_pairs` returns: the pairs in file order, and the rows it read,
    the format it used, and the rows it skipped by reason: ``first_skipped`` holds the first
    ``file:line`` of each reason, ``skip_examples`` the first few as ``file:line: why``."""

    def __init__(self, pairs: Iterable[LabelledPair] = (), *, source: str = "", fmt: str = ""):
        super().__init__(pairs)
        self.source = source
        self.format = fmt
        self.rows = 0


class Skip(Exception):
    """A row that cannot be used: counted under ``reason``, ``why`` says what is wrong with it."""

    def __init__(self, reason: str, why: str = ""):
        super().__init__(why or reason)
        self.reason = reason
        self.why = why


# ---- reading -------------------------------------------------------------------------------------


def default_dataset(path: Path) -> str:
    """A file's dataset name: its name without ``.gz`` and ``.json``/``.jsonl``/``.ndjson``."""
    name = Path(path).name
    name = name.removesuffix(".gz")
    for suffix in (".jsonl", ".ndjson", ".json"):
        name = name.removesuffix(suffix)
    return name


def check_dataset(name: str) -> str:
    """``name`` if it can name an imported dataset, else InputError."""
    if not re.fullmatch(SLUG, name or "") or name == REVIEWER_DATASET:
        raise InputError(
            f"{name!r} cannot name a dataset: use letters, digits, '.', '_' and '-' "
            f"(not {REVIEWER_DATASET!r}, which means the reviewer app's reviews)"
        )
    return name


def read_labelled_pairs(
    path: Path, fmt: str = "auto", limits: Limits | None = None
) -> LabelledPairs:
    """Parse and check a whole labelled-pairs file; return its pairs in file order.

    ``fmt`` is ``pandalm``, ``hh``, ``plain``, ``trl`` or ``auto`` (decided from the first
    row's keys). Errors and skipped rows name ``file:line`` (for a JSON array, the line the
    element starts on).
    """
    if fmt not in LABEL_FORMATS:
        raise InputError(f"unknown format {fmt!r} (expected {', '.join(LABEL_FORMATS)})")
    path = Path(path)
    source = str(path)
    limits = limits or default_limits()
    data = read_input(path)
    if data[:2] == b"\x1f\x8b" or path.suffix.lower() == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"not valid gzip: {exc}", source=source) from None
    text = _decode_utf8(data, source).removeprefix("\ufeff")
    is_array = text.lstrip()[:1] == "["
    rows = list(
        _array_rows(text, source, limits) if is_array else _jsonl_rows(text, source, limits)
    )
    if not rows:
        raise InputError("no labelled pairs in this file", source=source)
    if fmt == "auto":
        fmt = _detect(rows[0], source, is_array and path.suffix.lower() == ".json")
    parse = {
        "pandalm": _pandalm_row,
        "hh": _hh_row,
        "plain": _plain_row,
        "trl": _trl_row,
        "auto": None,
    }[fmt]
    result = LabelledPairs(source=source, fmt=fmt)
    result.rows = len(rows)
    first_line: dict[tuple[str, str], int] = {}  # (pair key, dimension) -> line of its first row
    index: dict[tuple[str, str], int] = {}  # (pair key, dimension) -> position in result
    for obj, line in rows:
        origin = f"{source}:{line}"
        if not isinstance(obj, dict):  # not a file of this kind at all
            raise InputError("each row must be a JSON object", source=source, line=line)
        try:
            pair = parse(obj, origin)
            _within(pair, limits)
            slot = (pair.key, pair.dimension)
            if slot in index:
                pair = _merge(result[index[slot]], pair, first_line[slot])
                if pair is None:
                    result.skip("duplicate", origin)
                    continue
                result[index[slot]] = pair
                continue
        except Skip as skip:
            result.skip(skip.reason, origin, skip.why)
            continue
        index[slot] = len(result)
        first_line[slot] = line
        result.append(pair)
    if rows and not result:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(result.skipped.items()))
        first = next(iter(result.skip_examples.values()))[0]
        raise InputError(
            f"no usable row: {len(rows)} skipped ({reasons}); the first: {first}", source=source
        )
    return result


def _within(pair: LabelledPair, limits: Limits) -> None:
    """A pair whose texts are past ``limits.text_chars`` is skipped, like other unusable rows."""
    texts = [m["content"] for m in pair.messages] + [pair.a, pair.b]
    longest = max(len(t) for t in texts)
    if longest > limits.text_chars:
        raise Skip(
            "too_long",
            f"a text of {longest} characters (at most {limits.text_chars}; "
            "CRITICLOOP_LIMITS__TEXT_CHARS)",
        )


def _jsonl_rows(text: str, source: str, limits: Limits) -> Iterator[tuple[Any, int]]:
    decoder = json_decoder(limits)
    # split on "\n" only: str.splitlines() would also split inside strings holding U+2028
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        # long texts skip their row (_within), not the file
        yield decode_line(decoder, line, limits, source, number, texts=False), number


def _array_rows(text: str, source: str, limits: Limits) -> Iterator[tuple[Any, int]]:
    """The elements of a JSON array, each with the line it starts on."""
    decoder = json_decoder(limits)
    space = re.compile(r"\s*")
    line, counted = 1, 0  # the line number at offset ``counted``

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    def fail(message: str, pos: int) -> InputError:
        return InputError(f"invalid JSON: {message}", source=source, line=line_at(pos))

    pos = space.match(text).end() + 1  # past "["
    pos = space.match(text, pos).end()
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            start = line_at(pos)
            begun = pos
            try:
                obj, pos = decoder.raw_decode(text, pos)
                size = len(text[begun:pos].encode("utf-8", "surrogatepass"))
                if size > limits.line_bytes:
                    raise LimitError(f"an element of {size} bytes (at most {limits.line_bytes})")
                check(obj, limits, texts=False)  # long texts skip their row (_within)
                yield obj, start
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"invalid JSON: {exc.msg} (column {exc.colno})", source=source, line=exc.lineno
                ) from None
            except RecursionError:
                raise InputError(
                    f"nested more than {limits.depth} levels deep", source=source, line=start
                ) from None
            except LimitError as exc:
                raise InputError(str(exc), source=source, line=start) from None
            pos = space.match(text, pos).end()
            if text.startswith(",", pos):
                pos = space.match(text, pos + 1).end()
                continue
            if text.startswith("]", pos):
                pos += 1
                break
            raise fail("expected ',' or ']' after an array element", pos)
    pos = space.match(text, pos).end()
    if pos != len(text):
        raise fail("extra data after the array", pos)


def _detect(first: tuple[Any, int], source: str, json_array: bool) -> str:
    obj, line = first
    keys = set(obj) if isinstance(obj, dict) else set()
    if {"instruction", "response1"} <= keys:
        return "pandalm"
    if {"chosen", "rejected"} <= keys:
        # TRL's preference rows carry a prompt, or chosen/rejected as chat messages
        return "trl" if "prompt" in keys or isinstance(obj["chosen"], list) else "hh"
    if {"a", "b", "label"} <= keys:
        return "plain"
    if json_array:
        return "pandalm"
    found = ", ".join(sorted(keys)) or "not an object"
    raise InputError(
        f"cannot tell the format from the first row ({found}): expected instruction and "
        "response1 (pandalm), chosen and rejected (hh, or trl with a prompt), or a, b and "
        "label (plain); or give --format",
        source=source,
        line=line,
    )


def _merge(first: LabelledPair, again: LabelledPair, first_line: int) -> LabelledPair | None:
    """A second row of the same pair: other annotators' labels join it; a repeat is None."""
    if (first.messages, first.a, first.b, first.task_type) != (
        again.messages,
        again.a,
        again.b,
        again.task_type,
    ):
        raise Skip(
            "conflicting_id",
            f"id {again.key!r} is used twice with different content (first at line {first_line})",
        )
    for annotator, label in again.labels.items():
        if first.labels.get(annotator, label) != label:
            raise Skip(
                "conflicting_label",
                f"{annotator!r} labels this pair {label!r} here and "
                f"{first.labels[annotator]!r} at line {first_line}",
            )
    fresh = {k: v for k, v in again.labels.items() if k not in first.labels}
    return replace(first, labels={**first.labels, **fresh}) if fresh else None


def _text(obj: dict[str, Any], key: str, *, default: str | None = None) -> str:
    if key not in obj or (obj[key] is None and default is not None):
        if default is None:
            raise Skip("missing_key", f"missing key {key!r}")
        return default
    value = obj[key]
    if not isinstance(value, str):
        raise Skip("wrong_type", f"{key!r} must be a string, not {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _pair(
    origin: str,
    messages: list[dict[str, Any]],
    a: str,
    b: str,
    labels: dict[str, str],
    *,
    task_type: str = "general",
    key: str | None = None,
    names: tuple[str, str] = ("a", "b"),
) -> LabelledPair:
    """A checked pair: the conversation validated as a :class:`Prompt`, responses stripped."""
    try:
        prompt = Prompt.model_validate({"task_type": task_type, "messages": messages})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise Skip("invalid_conversation", f"{where + ': ' if where else ''}{message}") from None
    a, b = a.strip(), b.strip()
    if a == b:
        raise Skip(
            "identical_responses",
            f"{names[0]!r} and {names[1]!r} are the same text: nothing to compare",
        )
    conversation = prompt.conversation()
    return LabelledPair(
        origin=origin,
        key=key if key is not None else "h-" + _key(conversation, a, b),
        messages=conversation,
        a=a,
        b=b,
        labels=labels,
        task_type=prompt.task_type,
    )


def _own_id(obj: dict[str, Any], key: str) -> str | None:
    if key not in obj or obj[key] is None:
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise Skip("wrong_type", f"{key!r} must be a non-empty string or an integer")
    return str(value)


def _pandalm_row(obj: dict[str, Any], origin: str) -> LabelledPair:
    instruction = _text(obj, "instruction")
    extra = _text(obj, "input", default="")
    prompt = "\n\n".join(part for part in (instruction.strip(), extra.strip()) if part)
    if not prompt:
        raise Skip("empty_prompt", "empty prompt: 'instruction' and 'input' are both blank")
    a, b = _pandalm_response(obj, "response1"), _pandalm_response(obj, "response2")
    annotators = sorted(
        (k for k in obj if _ANNOTATOR.fullmatch(k)), key=lambda k: int(k.removeprefix("annotator"))
    )
    if not annotators:
        raise Skip("no_labels", "no labels: expected annotator1, annotator2, ...")
    labels = {}
    for name in annotators:
        value = obj[name]
        if isinstance(value, bool) or value not in _PANDALM_LABELS:
            raise Skip(
                "bad_label",
                f"{name!r} must be 0 (tie), 1 (response1) or 2 (response2), not {value!r}",
            )
        labels[name] = _PANDALM_LABELS[value]
    return _pair(
        origin,
        [{"role": "user", "content": prompt}],
        a,
        b,
        labels,
        key=_own_id(obj, "idx"),
        names=("response1", "response2"),
    )


def _pandalm_response(obj: dict[str, Any], key: str) -> str:
    if key not in obj:
        raise Skip("missing_key", f"missing key {key!r}")
    value = obj[key]
    if value is None or isinstance(value, dict | list):
        raise Skip("wrong_type", f"{key!r} must be text, not {_json_type(value)}")
    return str(value)  # the public file has JSON true for a few responses: "True"


def _hh_row(obj: dict[str, Any], origin: str) -> LabelledPair:
    chosen, rejected = _text(obj, "chosen"), _text(obj, "rejected")
    conversation, chosen_last = _hh_split(chosen)
    other, rejected_last = _hh_split(rejected)
    if conversation != other:
        raise Skip("prefix_differs")
    if not conversation:
        raise Skip("no_human_turn")
    if conversation[-1]["role"] != "user":
        raise Skip("not_ending_with_human")
    if any(not turn["content"] for turn in conversation):
        raise Skip("empty_turn")
    return _chosen_pair(origin, conversation, chosen_last, rejected_last, [chosen, rejected])


def _chosen_pair(
    origin: str, conversation: list[dict[str, Any]], chosen: str, rejected: str, row: Any
) -> LabelledPair:
    """A chosen/rejected pair as A/B: chosen goes to A or B by a hash of the row, so a
    calibration never sees only "a" labels."""
    flip = hashlib.sha256(json.dumps(row).encode()).digest()[0] & 1
    a, b = (rejected, chosen) if flip else (chosen, rejected)
    return _pair(
        origin, conversation, a, b, {"label": "b" if flip else "a"}, names=("chosen", "rejected")
    )


def _hh_split(transcript: str) -> tuple[list[dict[str, str]], str]:
    """(the conversation before the last Assistant turn, that turn's text); consecutive turns of
    one speaker (a few public rows have two Assistant turns in a row) are joined."""
    parts = _HH_MARK.split(transcript)
    if parts[0].strip():
        raise Skip("text_before_first_turn")
    turns = [(_HH_ROLES[parts[i]], parts[i + 1].strip()) for i in range(1, len(parts), 2)]
    if not turns or turns[-1][0] != "assistant":
        raise Skip("no_final_assistant_turn")
    conversation: list[dict[str, str]] = []
    for role, content in turns[:-1]:
        if conversation and conversation[-1]["role"] == role:
            conversation[-1]["content"] = f"{conversation[-1]['content']}\n\n{content}".strip()
        else:
            conversation.append({"role": role, "content": content})
    return conversation, turns[-1][1]


def _plain_row(obj: dict[str, Any], origin: str) -> LabelledPair:
    unknown = sorted(set(obj) - set(_PLAIN_KEYS))
    if unknown:
        raise Skip(
            "unknown_key", f"unknown key {unknown[0]!r} (expected {', '.join(_PLAIN_KEYS)})"
        )
    a, b = _text(obj, "a"), _text(obj, "b")
    label = obj.get("label")
    if "label" not in obj:
        raise Skip("missing_key", "missing key 'label'")
    if label not in LABELS:
        raise Skip("bad_label", f"'label' must be a, b or tie, not {label!r}")
    annotator = _text(obj, "annotator", default="label").strip()
    if not annotator:
        raise Skip("wrong_type", "'annotator' must not be empty")
    task_type = _text(obj, "task_type", default="general")
    if task_type not in TASK_TYPES:
        raise Skip(
            "unknown_task_type",
            f"unknown task_type {task_type!r} (expected {', '.join(TASK_TYPES)})",
        )
    dimension = _text(obj, "dimension", default="").strip()
    if dimension and not DIMENSION.fullmatch(dimension):
        raise Skip(
            "bad_dimension",
            f"'dimension' must be a critic's name (lower case, digits, _), not {dimension!r}",
        )
    if ("prompt" in obj) == ("messages" in obj):
        raise Skip("invalid_conversation", "give either 'prompt' or 'messages'")
    if "prompt" in obj:
        text = _text(obj, "prompt")
        if not text.strip():
            raise Skip("empty_prompt", "empty prompt")
        messages = [{"role": "user", "content": text}]
    else:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            raise Skip(
                "invalid_conversation", "'messages' must be a non-empty list of role/content turns"
            )
    pair = _pair(
        origin, messages, a, b, {annotator: label}, task_type=task_type, key=_own_id(obj, "id")
    )
    return replace(pair, dimension=dimension) if dimension else pair


def _trl_row(obj: dict[str, Any], origin: str) -> LabelledPair:
    """A TRL preference row: explicit prompt (text or messages) or implicit (chosen and rejected
    are whole conversations); the responses are text or chat messages. Other keys (ids,
    scores) are ignored."""
    chosen, rejected = _turns(obj, "chosen"), _turns(obj, "rejected")
    prompt = _turns(obj, "prompt", user=True) if "prompt" in obj else []
    # Some datasets repeat the prompt at the head of chosen and rejected: drop it there.
    if prompt and chosen[: len(prompt)] == prompt and rejected[: len(prompt)] == prompt:
        chosen, rejected = chosen[len(prompt) :], rejected[len(prompt) :]
    shared = 0  # turns chosen and rejected share before they part (an implicit prompt)
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    conversation = prompt + chosen[:shared]
    chosen, rejected = chosen[shared:], rejected[shared:]
    if len(chosen) != 1 or len(rejected) != 1:
        raise Skip(
            "invalid_conversation",
            "'chosen' and 'rejected' must each end in one response after the shared turns",
        )
    if chosen[0]["role"] != "assistant" or rejected[0]["role"] != "assistant":
        raise Skip("invalid_conversation", "the chosen and rejected responses must be assistant's")
    return _chosen_pair(
        origin, conversation, chosen[0]["content"], rejected[0]["content"], [obj]
    )


def _turns(obj: dict[str, Any], key: str, *, user: bool = False) -> list[dict[str, Any]]:
    """``obj[key]`` as role/content turns: a string is one turn (the user's for a prompt,
    else the assistant's)."""
    if key not in obj:
        raise Skip("missing_key", f"missing key {key!r}")
    value = obj[key]
    if isinstance(value, str):
        return [{"role": "user" if user else "assistant", "content": value}]
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    ):
        raise Skip(
            "wrong_type", f"{key!r} must be a string or a list of role/content messages"
        )
    return [{"role": m["role"], "content": m["content"]} for m in value]


# ---- the store -----------------------------------------------------------------------------------


class LabelVerbs:
    """Store verbs for labelled pairs, imported and from the reviewer app (mixed into
    :class:`Store`)."""

    db: Database

    def transaction(self) -> AbstractContextManager[Database]:  # provided by Store
        raise NotImplementedError

    def import_labels(self, pairs: Iterable[LabelledPair], dataset: str) -> dict[str, Any]:
        """Store labelled pairs as reviews with source ``import``, in one transaction.

        Each pair becomes a prompt (``imp-`` + a hash of its content), two generations (model
        ``import:<dataset>``, candidate 0 = A, 1 = B, under a config hash of their own so one
        prompt may carry several pairs) and a ``preference`` review by ``<dataset>:<annotator>``
        per label. Importing again changes nothing; a changed label updates its review. No
        LangSmith feedback is queued. Counts rows skipped while reading when ``pairs`` is a
        :class:`LabelledPairs`.
        """

        check_dataset(dataset)
        summary: dict[str, Any] = {
            "dataset": dataset,
            "pairs": dict.fromkeys(("inserted", "updated", "unchanged"), 0),
            "reviews": dict.fromkeys(("inserted", "updated", "unchanged"), 0),
            "skipped": dict(getattr(pairs, "skipped", {})),
            "majority": dict.fromkeys(("a", "b", "tie", "none"), 0),
            "dimensions": {},  # pairs per dimension ('' the overall preference)
        }
        model = f"import:{dataset}"
        with self.transaction():
            for pair in pairs:
                prompt = _prompt_of(pair)
                prompt_id = prompt.natural_key()
                self._upsert_prompt(prompt, f"{IMPORTED}{dataset}")  # type: ignore[attr-defined]
                config = "import-" + _key(pair.key, pair.a, pair.b)[:16]
                generations = [
                    GenerationRecord(
                        prompt_id=prompt_id,
                        config_hash=config,
                        candidate_index=i,
                        text=text,
                        model=model,
                        sampling={"import_key": pair.key},
                        finish_reason="import",
                    )
                    for i, text in enumerate((pair.a, pair.b))
                ]
                self.record_generations(generations)  # type: ignore[attr-defined]
                outcomes = set()
                for annotator, label in pair.labels.items():
                    if label not in LABELS:
                        raise _located(f"label of {annotator!r} must be a, b or tie", pair.origin)
                    review = ReviewRecord(
                        prompt_id=prompt_id,
                        reviewer=f"{dataset}:{annotator}",
                        kind="preference",
                        generation_id=generations[0].id,
                        other_generation_id=generations[1].id,
                        preference=label,
                        source="import",
                        dataset=dataset,
                        dimension=pair.dimension,
                    )
                    outcome = self.record_review(review)  # type: ignore[attr-defined]
                    summary["reviews"][outcome] += 1
                    outcomes.add(outcome)
                pair_outcome = outcomes.pop() if len(outcomes) == 1 else "updated"
                summary["pairs"][pair_outcome] += 1
                summary["majority"][pair.majority or "none"] += 1
                dims = summary["dimensions"]
                dims[pair.dimension] = dims.get(pair.dimension, 0) + 1
        return summary

    def labelled_pairs(
        self, dataset: str | None = None, source: str | None = None, dimension: str | None = ""
    ) -> list[dict[str, Any]]:
        """Every A/B pair people labelled, imported or in the reviewer app, oldest first.

        One row per (A, B, source, dataset): ``prompt_id``, ``task_type``, ``brand_id``, ``a``
        and ``b`` (generation ids; in the app, A is the case's chosen candidate), ``labels``
        (reviewer -> a | b | tie), ``majority`` (None for a split), ``dataset`` (None for the
        app), ``source`` (``import`` or ``reviewer``), ``decision_id`` (the app's case, of the
        latest verdict) and ``created_at`` (when the latest label was given). A rewrite counts
        as a preference for the candidate the reviewer edited. ``dataset="reviewer"`` selects
        the app's reviews. ``dimension`` selects what the labels judge: '' (the default) people's
        overall preference, a critic's name the labels given on that dimension, None all (each
        row's ``dimension`` says which).
        """
        if source not in (None, "import", "reviewer"):
            raise InputError(f"source must be import or reviewer, not {source!r}")
        where, params = "", []
        if dataset == REVIEWER_DATASET:
            where += " AND r.source = 'reviewer'"
        elif dataset is not None:
            where += " AND r.dataset = ?"
            params.append(dataset)
        if source is not None:
            where += " AND r.source = ?"
            params.append(source)
        if dimension is not None:
            where += " AND r.dimension = ?"
            params.append(dimension)
        rows = self.db.query(
            f"""SELECT r.prompt_id, r.generation_id, r.other_generation_id, r.kind, r.reviewer,
                       r.preference, r.source, r.dataset, r.decision_id, r.updated_at,
                       r.dimension, p.task_type, p.brand_id
                FROM reviews r JOIN prompts p ON p.id = r.prompt_id
                WHERE r.{_VERDICT_IN} AND r.preference IN ('a', 'b', 'tie')
                  AND r.generation_id IS NOT NULL AND r.other_generation_id IS NOT NULL{where}
                ORDER BY r.rowid""",
            params,
        )
        grouped: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            a, b = row["generation_id"], row["other_generation_id"]
            if row["kind"] == "rewrite" and row["preference"] == "b":
                a, b = b, a  # a rewrite's generation_id is the candidate edited, here B
            key = (a, b, row["source"], row["dataset"], row["dimension"])
            pair = grouped.setdefault(
                key,
                {
                    "prompt_id": row["prompt_id"],
                    "task_type": row["task_type"],
                    "brand_id": row["brand_id"],
                    "a": a,
                    "b": b,
                    "labels": {},
                    "majority": None,
                    "dataset": row["dataset"],
                    "source": row["source"],
                    "dimension": row["dimension"],
                    "decision_id": None,
                    "created_at": row["updated_at"],
                },
            )
            pair["labels"][row["reviewer"]] = row["preference"]
            if row["updated_at"] >= pair["created_at"]:
                pair["created_at"] = row["updated_at"]
                pair["decision_id"] = row["decision_id"] or pair["decision_id"]
        for pair in grouped.values():
            pair["majority"] = majority_label(pair["labels"].values())
        return list(grouped.values())

    def label_datasets(self) -> list[dict[str, Any]]:
        """Per imported dataset, and ``reviewer`` for the app's reviews: pairs, reviews,
        annotators, majority counts, pairs per dimension ('' overall) and when the first and
        last labels were given."""
        stats: dict[str, dict[str, Any]] = {}
        for pair in self.labelled_pairs(dimension=None):
            name = pair["dataset"] or REVIEWER_DATASET
            entry = stats.setdefault(
                name,
                {
                    "dataset": name,
                    "source": pair["source"],
                    "pairs": 0,
                    "reviews": 0,
                    "annotators": set(),
                    "majority": dict.fromkeys(("a", "b", "tie", "none"), 0),
                    "dimensions": {},
                },
            )
            entry["pairs"] += 1
            dims = entry["dimensions"]
            dims[pair["dimension"]] = dims.get(pair["dimension"], 0) + 1
            entry["reviews"] += len(pair["labels"])
            entry["annotators"].update(pair["labels"])
            entry["majority"][pair["majority"] or "none"] += 1
        times = self.db.query(
            f"""SELECT coalesce(dataset, '{REVIEWER_DATASET}') AS name, min(created_at) AS first,
                       max(updated_at) AS last
                FROM reviews WHERE {_VERDICT_IN} GROUP BY name"""
        )
        spans = {row["name"]: row for row in times}
        out = []
        for name in sorted(stats, key=lambda n: (n == REVIEWER_DATASET, n)):
            entry = stats[name]
            entry["annotators"] = len(entry["annotators"])
            span = spans.get(name, {})
            out.append({**entry, "first": span.get("first"), "last": span.get("last")})
        return out


def _prompt_of(pair: LabelledPair) -> Prompt:
    try:
        prompt = Prompt.model_validate({"task_type": pair.task_type, "messages": pair.messages})
    except ValidationError as exc:
        raise _located(f"invalid conversation: {exc.errors()[0]['msg']}", pair.origin) from None
    return prompt.model_copy(update={"id": "imp-" + prompt.content_hash()[:16]})


def _located(message: str, origin: str) -> InputError:
    source, _, line = origin.rpartition(":")
    return InputError(message, source=source or origin, line=int(line) if line.isdigit() else None)
