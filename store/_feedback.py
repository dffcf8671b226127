"""Production conversation logs with users' ratings, into the store.

    criticloop feedback import conversations.jsonl feedback_export.jsonl

What users of a deployed assistant said about its answers (a thumb, stars, a category label such
as the seed systems' UR2/UR3/UR5, a comment) is data criticloop can learn from. A file is read
and checked whole by :func:`read_feedback_log`; :meth:`FeedbackVerbs.import_feedback` then
stores, in one transaction, for every rated assistant turn:

* a **prompt**: the conversation up to the user turn before the answer, with the record's
  task type, brand, campaign and persona. Its id is ``log-`` + a hash of that content, so the
  same conversation prefix from any log is one prompt, and prompts.source is ``log:<dataset>``:
  like labelled pairs, log prompts are for learning, and no generation, graph run or gate picks
  them up;
* the rated **answer**, as a generation of that prompt with model ``log`` (a supplied candidate:
  config ``log-`` + a hash of its text, so two answers to one prompt are two generations);
* one **review** per rating and kind, with source ``log``, reviewer ``log:<user_id>``
  (``log:anonymous`` without one) and ``generation_id`` the answer: kind ``thumbs`` (``thumbs``
  up/down; a category label is mapped to a thumb by ``settings.feedback.labels`` and kept raw in
  ``label``), kind ``stars`` (1-5) and kind ``comment``. A rating's comment is also kept on its
  thumbs and stars rows; the log's ``created_at`` goes into ``logged_at``.

Reviews sit beside the critics' critiques, never over them. Importing the same file again changes
nothing; a user's changed rating of the same answer updates its review.

Two record shapes, told apart line by line:

``conversation``
    ``{"messages": [...], "ratings": [{"turn": 3, "thumbs": "down", "comment": "..."}], ...}``:
    OpenAI-style ``messages`` (system, user and assistant turns, ``role`` and ``content``); each
    rating names the index of the assistant message it rates in ``turn`` and gives one or more of
    ``thumbs`` (``up``/``down``), ``stars`` (1-5), ``label`` and ``comment``, optionally its own
    ``user_id`` and ``created_at``. A rating may instead sit on the assistant message itself,
    ``{"role": "assistant", "content": "...", "rating": {...}}`` (or ``"ratings": [...]``),
    without ``turn``. ``thumbs``, ``stars``, ``label`` and ``comment`` on the conversation
    itself rate its last assistant turn (seed 003's logs: a category for the answer the user's
    last message reacts to). Optional: ``id``, ``task_type``, ``brand``, ``campaign``,
    ``persona``, ``user_id``, ``created_at``.
``flat``
    The seed systems' feedback table, one row per rated output: ``prompt`` (text, or messages
    ending with the user's turn), ``model_output``, ``feedback_type`` (``thumbs_up``,
    ``thumbs_down``, ``rating``, ``comment``, ``label``; ``preference`` rows are skipped: one
    output is no comparison), ``rating`` (stars, 1-5, or null), ``comment``, ``label``,
    ``user_id``, ``brand_id``, ``campaign_id``, ``task_type`` (``budgeting`` reads as
    ``retail_media_budget``), ``persona``, ``created_at``, ``id``.

A line that breaks these rules (not JSON, an unknown key, a mistyped field, stars outside 1-5, a
``turn`` that is not an assistant message, a rating with nothing in it, an unknown task type) is
an :class:`InputError` naming ``file:line``, and nothing of the file is imported; so is an unknown
brand or campaign, found while storing. What real logs hold is skipped and counted by reason, the
first few with their ``file:line``: conversations nobody rated (``unrated``), a rated answer with
no user turn right before it (``not_after_user``), an empty answer or turn, a label the settings
do not map (``unmapped_label``), texts past ``CRITICLOOP_LIMITS__TEXT_CHARS`` (``too_long``),
exact repeats (``duplicate``), and a rating the same user changed later in the file
(``superseded``: the later one counts).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlite_utils import Database

from ..errors import InputError
from ..vocab import TASK_TYPES
from ._common import _key, now
from ._files import _decode_utf8, read_input
from ._labels import Skip, SkippedRows, check_dataset
from ._limits import Limits, decode_line, default_limits, json_decoder
from ._records import Prompt
from ._rows import GenerationRecord, ReviewRecord

LOG_MODEL = "log"
"""Model name (and finish reason) of an answer that came from a feedback log."""
LOG_PROMPTS = "log:"
"""prompts.source prefix of a feedback log's prompts: generation and the graph leave them out."""
ANONYMOUS = "anonymous"
NEGATIVE_STARS = 2
"""A logged answer rated this many stars or fewer (or a thumb down) goes to revision."""
REVISE_MODES = ("feedback", "alternative")
"""How the revise step rewrites an answer users rated down: from the user's comment (and the
answer), or a fresh answer to the conversation without them."""
TASK_ALIASES = {"budgeting": "retail_media_budget", "budget": "retail_media_budget"}
"""Task types the seed systems' logs use, read as criticloop's."""
FEEDBACK_TYPES = ("thumbs_up", "thumbs_down", "rating", "stars", "comment", "label", "preference")

_CONVERSATION_KEYS = (
    "id", "messages", "ratings", "task_type", "brand", "campaign", "persona", "user_id",
    "created_at", "thumbs", "stars", "label", "comment",
)  # fmt: skip
_RATING_FIELDS = ("thumbs", "stars", "label", "comment")
_MESSAGE_KEYS = ("role", "content", "rating", "ratings")
_RATING_KEYS = ("turn", "thumbs", "stars", "label", "comment", "user_id", "created_at")
_FLAT_KEYS = (
    "id", "prompt", "model_output", "feedback_type", "rating", "comment", "label", "user_id",
    "brand_id", "brand", "campaign_id", "campaign", "task_type", "persona", "created_at",
)  # fmt: skip
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class LoggedRating:
    """One review to store: a user's thumb, stars or comment on one answer to one prompt."""

    origin: str  # "file:line" it came from (the latest, when a later line superseded it)
    prompt: Prompt  # the conversation before the answer, ending with the user's turn
    answer: str
    reviewer: str  # log:<user_id>
    kind: str  # thumbs | stars | comment
    thumbs: str | None = None
    stars: int | None = None
    comment: str | None = None
    label: str | None = None  # the raw category label a thumb was mapped from
    logged_at: str | None = None

    @property
    def prompt_id(self) -> str:
        return self.prompt.natural_key()

    @property
    def slot(self) -> tuple[str, str, str, str]:
        """What a later rating of the same answer replaces: prompt, answer, user and kind."""
        return (self.prompt_id, self.answer, self.reviewer, self.kind)

    @property
    def values(self) -> tuple[Any, ...]:
        return (self.thumbs, self.stars, self.comment, self.label, self.logged_at)


class FeedbackLog(SkippedRows, list[LoggedRating]):
    """What :func:`read_feedback_log` returns: the reviews to store in file order, the rows
    read (by shape), the ratings used, and the ratings skipped by reason (``first_skipped``: the
    first ``file:line`` of each, ``skip_examples``: the first few as ``file:line: why``)."""

    def __init__(self, ratings: Iterable[LoggedRating] = (), *, source: str = ""):
        super().__init__(ratings)
        self.source = source
        self.rows = 0
        self.shapes: dict[str, int] = {"conversation": 0, "flat": 0}
        self.ratings = 0


class _Bad(Exception):
    """A line that breaks the format: the whole file is refused, naming the line."""


class _Labels(dict[str, str]):
    """Category label (case folded) -> up | down; ``names`` as the settings spell them."""

    def __init__(self, labels: Mapping[str, str]):
        super().__init__((k.strip().casefold(), v) for k, v in labels.items())
        self.names = sorted(labels)


def default_labels() -> dict[str, str]:
    from ..settings import FeedbackSettings

    return dict(FeedbackSettings().labels)


# ---- reading -------------------------------------------------------------------------------------


def read_feedback_log(
    path: Path, labels: Mapping[str, str] | None = None, limits: Limits | None = None
) -> FeedbackLog:
    """Parse and check a whole feedback log (JSONL, gzipped or not); return its reviews in file
    order.

    ``labels`` maps category labels to ``up`` or ``down`` (matched ignoring case; default
    ``settings.feedback.labels``). Errors name ``file:line``; see the module for what is an
    error and what is skipped and counted.
    """
    path = Path(path)
    source = str(path)
    limits = limits or default_limits()
    mapping = _Labels(labels or default_labels())
    data = read_input(path)
    if data[:2] == b"\x1f\x8b" or path.suffix.lower() == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"not valid gzip: {exc}", source=source) from None
    text = _decode_utf8(data, source).removeprefix("\ufeff")
    decoder = json_decoder(limits)
    log = FeedbackLog(source=source)
    index: dict[tuple[str, str, str, str], int] = {}
    # split on "\n" only: str.splitlines() would also split inside strings holding U+2028
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        # long texts skip their rating (too_long), not the file
        obj = decode_line(decoder, line, limits, source, number, texts=False)
        if not isinstance(obj, dict):
            raise InputError("each line must be a JSON object", source=source, line=number)
        log.rows += 1
        origin = f"{source}:{number}"
        try:
            if "messages" in obj:
                log.shapes["conversation"] += 1
                rated = _conversation(obj, origin, mapping, log, limits)
            elif "model_output" in obj:
                log.shapes["flat"] += 1
                rated = _flat(obj, origin, mapping, log, limits)
            else:
                found = ", ".join(sorted(obj)[:8]) or "an empty object"
                raise _Bad(
                    f"neither a conversation ('messages') nor a flat feedback row "
                    f"('prompt', 'model_output'): {found}"
                )
        except _Bad as exc:
            raise InputError(str(exc), source=source, line=number) from None
        for rating in rated:
            if rating.slot in index:
                at = index[rating.slot]
                if log[at].values == rating.values:
                    log.skip("duplicate", origin, f"repeats the {rating.kind} of {log[at].origin}")
                    continue
                log.skip(
                    "superseded",
                    log[at].origin,
                    f"the same user's {rating.kind} changed at line {number}: the later counts",
                )
                log[at] = rating
                continue
            index[rating.slot] = len(log)
            log.append(rating)
    if not log.rows:
        raise InputError("no conversations or feedback rows in this file", source=source)
    if not log:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(log.skipped.items()))
        first = next(iter(log.skip_examples.values()))[0]
        raise InputError(
            f"no usable rating: {log.rows} rows, ratings skipped ({reasons}); the first: {first}",
            source=source,
        )
    return log


def _conversation(
    obj: dict[str, Any], origin: str, labels: Mapping[str, str], log: FeedbackLog, limits: Limits
) -> list[LoggedRating]:
    _known_keys(obj, _CONVERSATION_KEYS, "a conversation")
    context = _context(obj, "brand", "campaign")
    user = _user(obj, "user_id", None)
    when = _when(obj, "created_at", None)
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise _Bad("'messages' must be a non-empty list of role/content turns")
    turns: list[dict[str, str]] = []
    ratings: list[tuple[int, dict[str, Any], str]] = []  # (turn, rating, where)
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _Bad(f"{where} must be an object with 'role' and 'content'")
        _known_keys(message, _MESSAGE_KEYS, where)
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise _Bad(f"{where}.role must be system, user or assistant, not {role!r}")
        if not isinstance(content, str):
            raise _Bad(f"{where}.content must be a string, not {_json_type(content)}")
        turns.append({"role": role, "content": content})
        for key in ("rating", "ratings"):
            if key not in message:
                continue
            if role != "assistant":
                raise _Bad(f"{where} is the {role}'s turn: only assistant turns are rated")
            inline = message[key]
            for j, rating in enumerate(inline if isinstance(inline, list) else [inline]):
                spot = f"{where}.{key}" + (f"[{j}]" if isinstance(inline, list) else "")
                if isinstance(rating, dict) and "turn" in rating:
                    raise _Bad(f"{spot}: a rating on its message has no 'turn'")
                ratings.append((i, rating, spot))
    listed = obj.get("ratings", [])
    if not isinstance(listed, list):
        raise _Bad("'ratings' must be a list of ratings, each with the 'turn' it rates")
    for j, rating in enumerate(listed):
        spot = f"ratings[{j}]"
        if not isinstance(rating, dict):
            raise _Bad(f"{spot} must be an object")
        turn = rating.get("turn")
        if isinstance(turn, bool) or not isinstance(turn, int):
            raise _Bad(f"{spot}.turn must be the index of the assistant message it rates")
        if not 0 <= turn < len(turns) or turns[turn]["role"] != "assistant":
            what = f"a {turns[turn]['role']} message" if 0 <= turn < len(turns) else "no message"
            raise _Bad(f"{spot}.turn {turn} is {what}: a rating rates an assistant message")
        ratings.append((turn, rating, spot))
    whole = {k: obj[k] for k in _RATING_FIELDS if k in obj}
    if whole:  # the seed systems' shape: one rating of the last answer (before user feedback)
        last = [i for i, t in enumerate(turns) if t["role"] == "assistant"]
        if not last:
            raise _Bad("a rating of the conversation rates its last assistant turn: there is none")
        ratings.append((last[-1], whole, "conversation"))
    if not ratings:
        log.skip("unrated", origin, "no rating in this conversation")
        return []
    out: list[LoggedRating] = []
    for turn, rating, spot in ratings:
        log.ratings += 1
        parts = _rating(rating, spot, labels, user, when, origin, log)
        if not parts:
            continue
        try:
            prompt, answer = _prompt_and_answer(turns[:turn], turns[turn]["content"], context)
            _within(prompt, answer, parts, limits)
        except Skip as skip:
            log.skip(skip.reason, origin, f"{spot}: {skip.why}")
            continue
        out += [LoggedRating(origin=origin, prompt=prompt, answer=answer, **p) for p in parts]
    return out


def _flat(
    obj: dict[str, Any], origin: str, labels: Mapping[str, str], log: FeedbackLog, limits: Limits
) -> list[LoggedRating]:
    _known_keys(obj, _FLAT_KEYS, "a flat feedback row")
    for pair in (("brand", "brand_id"), ("campaign", "campaign_id")):
        if all(obj.get(k) is not None for k in pair):
            raise _Bad(f"give {pair[0]!r} or {pair[1]!r}, not both")
    brand_key = "brand" if obj.get("brand") is not None else "brand_id"
    campaign_key = "campaign" if obj.get("campaign") is not None else "campaign_id"
    context = _context(obj, brand_key, campaign_key)
    if "prompt" not in obj:
        raise _Bad("missing key 'prompt'")
    prompt = obj["prompt"]
    if isinstance(prompt, str):
        turns = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and all(
        isinstance(m, dict)
        and set(m) <= {"role", "content"}
        and m.get("role") in _ROLES
        and isinstance(m.get("content"), str)
        for m in prompt
    ):
        turns = [{"role": m["role"], "content": m["content"]} for m in prompt]
    else:
        raise _Bad("'prompt' must be text or a list of role/content messages")
    answer = obj["model_output"]
    if not isinstance(answer, str):
        raise _Bad(f"'model_output' must be a string, not {_json_type(answer)}")
    kind = obj.get("feedback_type")
    if kind not in FEEDBACK_TYPES:
        raise _Bad(f"'feedback_type' must be one of {', '.join(FEEDBACK_TYPES)}, not {kind!r}")
    log.ratings += 1
    if kind == "preference":
        log.skip("preference_row", origin, "a preference needs two outputs; this row has one")
        return []
    rating: dict[str, Any] = {}
    if kind in ("thumbs_up", "thumbs_down"):
        rating["thumbs"] = kind.removeprefix("thumbs_")
    if obj.get("rating") is not None:
        rating["stars"] = obj["rating"]
    elif kind in ("rating", "stars"):
        raise _Bad(f"feedback_type {kind!r} needs a 'rating' of 1-5 stars")
    for key in ("comment", "label"):
        if obj.get(key) is not None:
            rating[key] = obj[key]
    if kind in ("comment", "label") and not (
        isinstance(rating.get(kind), str) and rating[kind].strip()
    ):
        raise _Bad(f"feedback_type {kind!r} needs a non-empty {kind!r}")
    user = _user(obj, "user_id", None)
    when = _when(obj, "created_at", None)
    parts = _rating(rating, "", labels, user, when, origin, log)
    if not parts:
        return []
    try:
        prompt_record, answer = _prompt_and_answer(turns, answer, context)
        _within(prompt_record, answer, parts, limits)
    except Skip as skip:
        log.skip(skip.reason, origin, skip.why)
        return []
    return [LoggedRating(origin=origin, prompt=prompt_record, answer=answer, **p) for p in parts]


def _rating(
    rating: Any,
    spot: str,
    labels: Mapping[str, str],
    user: str | None,
    when: str | None,
    origin: str,
    log: FeedbackLog,
) -> list[dict[str, Any]]:
    """The reviews one rating makes (keyword arguments of :class:`LoggedRating` less the prompt
    and answer); [] when all it holds is a label the settings do not map (skipped, counted)."""
    at = f"{spot}." if spot else ""
    if not isinstance(rating, dict):
        raise _Bad(f"{spot or 'the rating'} must be an object")
    if spot:
        _known_keys(rating, _RATING_KEYS, spot)
    thumbs = rating.get("thumbs")
    if thumbs is not None and thumbs not in ("up", "down"):
        raise _Bad(f"{at}thumbs must be 'up' or 'down', not {thumbs!r}")
    stars = rating.get("stars")
    if stars is not None and (
        isinstance(stars, bool) or not isinstance(stars, int) or not 1 <= stars <= 5
    ):
        what = "stars" if spot else "rating"
        raise _Bad(f"{at}{what} must be a whole number of stars from 1 to 5, not {stars!r}")
    comment = rating.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise _Bad(f"{at}comment must be a string, not {_json_type(comment)}")
    comment = (comment or "").strip() or None
    label = rating.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise _Bad(f"{at}label must be a non-empty string, not {label!r}")
    label = label.strip() if label else None
    if thumbs is None and stars is None and label is None and comment is None:
        raise _Bad(f"{spot or 'the row'}: a rating needs thumbs, stars, a label or a comment")
    user = _user(rating, "user_id", user)
    when = _when(rating, "created_at", when)
    from_label = None
    if label is not None:
        from_label = labels.get(label.casefold())
        if from_label is None:
            known = ", ".join(getattr(labels, "names", sorted(labels))) or "none"
            log.skip(
                "unmapped_label",
                origin,
                f"{at}label {label!r} is not in CRITICLOOP_FEEDBACK__LABELS (known: {known})",
            )
            if thumbs is None and stars is None and comment is None:
                return []
        elif thumbs is not None and thumbs != from_label:
            raise _Bad(f"{at}thumbs {thumbs!r} and label {label!r} ({from_label}) disagree")
    common = {"reviewer": f"log:{user or ANONYMOUS}", "logged_at": when}
    out = []
    if thumbs is not None or from_label is not None:
        mapped = label if from_label is not None else None
        out.append(
            {**common, "kind": "thumbs", "thumbs": thumbs or from_label, "comment": comment,
             "label": mapped}
        )  # fmt: skip
    if stars is not None:
        out.append({**common, "kind": "stars", "stars": stars, "comment": comment})
    if comment is not None:
        out.append({**common, "kind": "comment", "comment": comment})
    return out


def _prompt_and_answer(
    turns: list[dict[str, str]], answer: str, context: dict[str, Any]
) -> tuple[Prompt, str]:
    answer = answer.strip()
    if not answer:
        raise Skip("empty_answer", "the rated answer is empty")
    if not any(t["role"] == "user" for t in turns):
        raise Skip("not_after_user", "no user turn before the rated answer")
    if turns[-1]["role"] != "user":
        raise Skip("not_after_user", "the turn before the rated answer is not the user's")
    if any(not t["content"].strip() for t in turns):
        raise Skip("empty_turn", "a turn before the rated answer is empty")
    try:
        prompt = Prompt.model_validate({**context, "messages": turns})
    except ValidationError as exc:  # the context was checked: the conversation is at fault
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise Skip("invalid_conversation", f"{where + ': ' if where else ''}{message}") from None
    return prompt.model_copy(update={"id": "log-" + prompt.content_hash()[:16]}), answer


def _within(prompt: Prompt, answer: str, parts: list[dict[str, Any]], limits: Limits) -> None:
    """A rating whose texts are past ``limits.text_chars`` is skipped (``too_long``)."""
    texts = [m.content for m in prompt.messages] + [answer]
    texts += [p["comment"] or "" for p in parts] + [p["reviewer"] for p in parts]
    longest = max(len(t) for t in texts)
    if longest > limits.text_chars:
        raise Skip(
            "too_long",
            f"a text of {longest} characters (at most {limits.text_chars}; "
            "CRITICLOOP_LIMITS__TEXT_CHARS)",
        )


def _context(obj: dict[str, Any], brand_key: str, campaign_key: str) -> dict[str, Any]:
    """task_type, brand, campaign and persona of a record, checked (errors are the file's)."""
    task_type = obj.get("task_type")
    if task_type is None:
        task_type = "general"
    if not isinstance(task_type, str):
        raise _Bad(f"'task_type' must be a string, not {_json_type(task_type)}")
    task_type = TASK_ALIASES.get(task_type, task_type)
    if task_type not in TASK_TYPES:
        raise _Bad(f"unknown task_type {task_type!r} (expected {', '.join(TASK_TYPES)})")
    context: dict[str, Any] = {"task_type": task_type}
    for key, field in ((brand_key, "brand"), (campaign_key, "campaign")):
        value = obj.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise _Bad(f"{key!r} must be a {field} id (a non-empty string)")
        context[field] = str(value)
    persona = obj.get("persona")
    if persona is not None:
        if not isinstance(persona, str):
            raise _Bad(f"'persona' must be a string, not {_json_type(persona)}")
        context["persona"] = persona
    try:  # the context alone, with a stand-in conversation
        Prompt.model_validate({**context, "prompt": "?"})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise _Bad(f"{where + ': ' if where else ''}{message}") from None
    return context


def _user(obj: dict[str, Any], key: str, default: str | None) -> str | None:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise _Bad(f"{key!r} must be a non-empty string or an integer")
    return str(value).strip()


def _when(obj: dict[str, Any], key: str, default: str | None) -> str | None:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value.strip())
            return value.strip()
        except ValueError:
            pass
    raise _Bad(f"{key!r} must be an ISO 8601 time (2026-11-21T10:30:00Z), not {value!r}")


def _known_keys(obj: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise _Bad(f"unknown key {unknown[0]!r} in {what} (expected {', '.join(allowed)})")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


# ---- the store -----------------------------------------------------------------------------------


class FeedbackVerbs:
    """Store verbs for production feedback logs (mixed into :class:`Store`)."""

    db: Database

    def transaction(self) -> AbstractContextManager[Database]:  # provided by Store
        raise NotImplementedError

    def import_feedback(self, ratings: Iterable[LoggedRating], dataset: str) -> dict[str, Any]:
        """Store a feedback log's ratings as prompts, answers (generations, model ``log``) and
        reviews with source ``log``, in one transaction; an unknown brand or campaign is an
        InputError at its ``file:line`` and nothing is stored. Importing again changes
        nothing; a user's changed rating updates its review. Counts what ``ratings`` skipped
        when it is a :class:`FeedbackLog`."""
        check_dataset(dataset)
        outcomes = ("inserted", "updated", "unchanged")
        summary: dict[str, Any] = {
            "dataset": dataset,
            "prompts": dict.fromkeys(outcomes, 0),
            "answers": dict.fromkeys(outcomes, 0),
            "reviews": dict.fromkeys(outcomes, 0),
            "thumbs": {"up": 0, "down": 0, "from_labels": 0},
            "stars": dict.fromkeys(("1", "2", "3", "4", "5"), 0),
            "comments": 0,
            "skipped": dict(getattr(ratings, "skipped", {})),
        }
        prompts: set[str] = set()
        answers: set[str] = set()
        with self.transaction():
            for rating in ratings:
                prompt, prompt_id = rating.prompt, rating.prompt_id
                if prompt_id not in prompts:
                    prompts.add(prompt_id)
                    self._check_context(prompt, rating.origin)
                    outcome = self._upsert_prompt(prompt, f"{LOG_PROMPTS}{dataset}")  # type: ignore[attr-defined]
                    summary["prompts"][outcome] += 1
                answer = GenerationRecord(
                    prompt_id=prompt_id,
                    config_hash=f"{LOG_MODEL}-" + _key(rating.answer)[:16],
                    candidate_index=0,
                    text=rating.answer,
                    model=LOG_MODEL,
                    sampling={},
                    finish_reason=LOG_MODEL,
                )
                if answer.id not in answers:
                    answers.add(answer.id)
                    new = self.record_generations([answer])  # type: ignore[attr-defined]
                    summary["answers"]["inserted" if new else "unchanged"] += 1
                review = ReviewRecord(
                    prompt_id=prompt_id,
                    reviewer=rating.reviewer,
                    kind=rating.kind,
                    generation_id=answer.id,
                    stars=rating.stars,
                    thumbs=rating.thumbs,
                    comment=rating.comment,
                    source="log",
                    dataset=dataset,
                    label=rating.label,
                    logged_at=rating.logged_at,
                )
                summary["reviews"][self.record_review(review)] += 1  # type: ignore[attr-defined]
                if rating.kind == "thumbs":
                    summary["thumbs"][rating.thumbs] += 1
                    summary["thumbs"]["from_labels"] += rating.label is not None
                elif rating.kind == "stars":
                    summary["stars"][str(rating.stars)] += 1
                else:
                    summary["comments"] += 1
        return summary

    def _check_context(self, prompt: Prompt, origin: str) -> None:
        def located(message: str) -> InputError:
            source, _, line = origin.rpartition(":")
            return InputError(message, source=source, line=int(line) if line.isdigit() else None)

        for table, key, what in (
            ("brands", prompt.brand, "brand"),
            ("campaigns", prompt.campaign, "campaign"),
        ):
            if key and not self.db.execute(f"SELECT 1 FROM {table} WHERE id = ?", [key]).fetchone():
                raise located(f"unknown {what} {key!r} (import it first: criticloop import FILE)")
        if prompt.campaign:
            owner = self.db["campaigns"].get(prompt.campaign)["brand_id"]
            if prompt.brand and prompt.brand != owner:
                raise located(
                    f"campaign {prompt.campaign!r} belongs to brand {owner!r}, not {prompt.brand!r}"
                )

    def logged_ratings(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """Every rating from feedback logs, oldest first: the review row with the answer's text
        (``answer``), its prompt's conversation (``messages``), task type and brand."""
        where, params = "r.source = 'log'", []
        if dataset is not None:
            where += " AND r.dataset = ?"
            params.append(dataset)
        rows = self.db.query(
            f"""SELECT r.*, g.text AS answer, p.messages, p.task_type, p.brand_id
                FROM reviews r JOIN generations g ON g.id = r.generation_id
                JOIN prompts p ON p.id = r.prompt_id
                WHERE {where} ORDER BY r.rowid""",
            params,
        )
        return [{**row, "messages": json.loads(row["messages"])} for row in rows]

    def log_turns_to_revise(
        self, mode: str, limit: int | None = None, stars_max: int = NEGATIVE_STARS
    ) -> list[dict[str, Any]]:
        """The answers users rated down (a thumb down, or at most ``stars_max`` stars) that have
        no finished revision in ``mode`` yet (``log_revisions`` outcome pair or dropped), oldest
        first: the rated generation's id (``generation_id``) and ``text``, its ``prompt_id``,
        the users' ``comments`` (distinct, in order) and what made it negative (``why``)."""
        rows = self.db.execute(
            """SELECT r.generation_id, r.prompt_id, r.kind, r.thumbs, r.stars, r.comment
               FROM reviews r
               WHERE r.source = 'log' AND r.generation_id IS NOT NULL
               ORDER BY r.rowid"""
        ).fetchall()
        done = {
            row[0]
            for row in self.db.execute(
                "SELECT rated_generation_id FROM log_revisions "
                "WHERE mode = ? AND outcome IN ('pair', 'dropped')",
                [mode],
            )
        }
        turns: dict[str, dict[str, Any]] = {}
        negative: set[str] = set()
        for generation_id, prompt_id, kind, thumbs, stars, comment in rows:
            turn = turns.setdefault(
                generation_id,
                {"generation_id": generation_id, "prompt_id": prompt_id, "comments": [],
                 "why": []},
            )  # fmt: skip
            if comment and comment not in turn["comments"]:
                turn["comments"].append(comment)
            if kind == "thumbs" and thumbs == "down":
                negative.add(generation_id)
                turn["why"].append("thumbs down")
            elif kind == "stars" and stars is not None and stars <= stars_max:
                negative.add(generation_id)
                turn["why"].append(f"{stars} star{'s' if stars != 1 else ''}")
        out = [t for g, t in turns.items() if g in negative and g not in done]
        out = out[:limit] if limit is not None else out
        for turn in out:
            turn["text"] = self.db["generations"].get(turn["generation_id"])["text"]
        return out

    def record_log_revision(
        self,
        *,
        prompt_id: str,
        rated_generation_id: str,
        mode: str,
        outcome: str,
        reason: str,
        rewrite_generation_id: str | None = None,
        margin: float | None = None,
        rewards: Mapping[str, Any] | None = None,
        pair_id: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Record (or update) what the revise step made of one rated answer in one mode."""
        key = f"{rated_generation_id}/{mode}"
        stamp = now()
        existing = self.db.execute(
            "SELECT created_at FROM log_revisions WHERE id = ?", [key]
        ).fetchone()
        self.db["log_revisions"].upsert(
            {
                "id": key,
                "prompt_id": prompt_id,
                "rated_generation_id": rated_generation_id,
                "mode": mode,
                "rewrite_generation_id": rewrite_generation_id,
                "outcome": outcome,
                "reason": reason,
                "margin": margin,
                "rewards": json.dumps(dict(rewards or {}), sort_keys=True),
                "pair_id": pair_id,
                "run_id": run_id,
                "created_at": existing[0] if existing else stamp,
                "updated_at": stamp,
            },
            pk="id",
        )
        return key

    def log_revisions(self, mode: str | None = None) -> list[dict[str, Any]]:
        """Every revision of a rated log answer, oldest first (``rewards`` parsed)."""
        where, params = ("WHERE mode = ?", [mode]) if mode else ("", [])
        rows = self.db.query(f"SELECT * FROM log_revisions {where} ORDER BY rowid", params)
        return [{**row, "rewards": json.loads(row["rewards"])} for row in rows]
