"""Reading users' brand/campaign/prompt files (JSONL or YAML) and writing TRL preference JSONL.

Input schema (one record per JSONL line, or YAML): every record has a ``kind`` (``prompt`` when
left out) and the fields of :class:`Brand`, :class:`Campaign` or :class:`Prompt`. A YAML file is
either a list of records or a mapping with ``brands``, ``campaigns`` and ``prompts`` lists.
Errors name ``file:line``; a file with any error is rejected whole. What one file may hold is
bounded by ``settings.limits`` (see ``_limits.py``): texts, line sizes, nesting, integers, and
values after YAML aliases are expanded.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml
from pydantic import TypeAdapter, ValidationError

from ..errors import InputError, StoreError
from ._limits import LimitError, Limits, check, decode_line, default_limits, json_decoder
from ._records import Brand, Campaign, ImportRecord, Prompt

_KINDS = {"brand": Brand, "campaign": Campaign, "prompt": Prompt}
_SECTIONS = {"brands": "brand", "campaigns": "campaign", "prompts": "prompt"}
_LINE = "__line__"


def read_records(path: Path, limits: Limits | None = None) -> list[tuple[ImportRecord, str]]:
    """Parse and validate a whole file; return ``(record, "file:line")`` in file order."""
    path = Path(path)
    limits = limits or default_limits()
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".yaml", ".yml"):
        raise InputError("unknown file type: use .jsonl or .yaml", source=str(path))
    text = _decode_utf8(read_input(path), str(path)).removeprefix("\ufeff")  # a BOM is no data
    if suffix in (".jsonl", ".ndjson"):
        raw = list(_jsonl_objects(text, str(path), limits))
    else:
        raw = list(_yaml_objects(text, str(path), limits))
    if not raw:
        raise InputError("no records in this file", source=str(path))
    records = [(_validate(obj, str(path), line), f"{path}:{line}") for obj, line in raw]
    _reject_duplicates(records)
    return _dependencies_first(records)


def read_input(path: Path) -> bytes:
    """The bytes of an input file: a regular file (a FIFO with no writer would block, a
    directory or device is no data file), or InputError."""
    import stat

    source = str(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError("no such file", source=source) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=source) from None
    if not stat.S_ISREG(mode):
        raise InputError("not a regular file (a pipe, device or directory)", source=source)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=source) from None


def _decode_utf8(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"not valid UTF-8 (byte {data[exc.start]:#04x})", source=source, line=line
        ) from None


def _jsonl_objects(
    text: str, source: str, limits: Limits
) -> Iterable[tuple[dict[str, Any], int]]:
    decoder = json_decoder(limits)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        obj = decode_line(decoder, line, limits, source, number)
        if not isinstance(obj, dict):
            raise InputError("each line must be a JSON object", source=source, line=number)
        yield obj, number


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line each mapping starts on."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 - yaml's signature
        mapping = super().construct_mapping(node, deep=deep)
        mapping[_LINE] = node.start_mark.line + 1
        return mapping


def _yaml_objects(
    text: str, source: str, limits: Limits
) -> Iterable[tuple[dict[str, Any], int]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if len(line) > limits.line_bytes:  # characters: at least as many bytes
            raise InputError(
                f"a line of more than {limits.line_bytes} bytes", source=source, line=number
            )
    try:
        # aliases are not expanded here: an anchor used twice is one shared object
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(
            f"invalid YAML: {problem}", source=source, line=mark.line + 1 if mark else None
        ) from None
    except RecursionError:
        raise InputError(f"nested more than {limits.depth} levels deep", source=source) from None
    except ValueError as exc:  # an integer of thousands of digits
        raise InputError(f"a value YAML cannot read: {exc}", source=source) from None
    if doc is None:
        return
    if isinstance(doc, dict):
        doc.pop(_LINE, None)
        unknown = set(doc) - set(_SECTIONS)
        if unknown:
            raise InputError(
                f"unknown top-level key {sorted(unknown)[0]!r} (expected brands, campaigns, prompts)",
                source=source,
            )
        sections = [(doc.get(section) or [], section, kind) for section, kind in _SECTIONS.items()]
    elif isinstance(doc, list):
        sections = [(doc, None, None)]
    else:
        raise InputError(
            "a YAML file must hold a list of records or a mapping of lists", source=source
        )
    lines: dict[int, int] = {}  # id of a record already read -> its line
    for items, section, kind in sections:
        if not isinstance(items, list):
            raise InputError(f"{section!r} must be a list", source=source)
        for item in items:
            if isinstance(item, dict) and id(item) in lines:
                raise InputError(
                    "a record repeats another through a YAML alias: write each record once",
                    source=source,
                    line=lines[id(item)],
                )
            yield _yaml_item(item, source, kind, limits, lines)


def _yaml_item(
    item: Any, source: str, default_kind: str | None, limits: Limits, lines: dict[int, int]
) -> tuple[dict[str, Any], int]:
    if not isinstance(item, dict):
        raise InputError("each record must be a mapping", source=source)
    line = item[_LINE]
    lines[id(item)] = line
    try:
        check(item, limits)  # before anything walks it: aliases may expand it enormously
    except LimitError as exc:
        raise InputError(str(exc), source=source, line=line) from None
    del item[_LINE]
    _strip_lines(item)
    if default_kind:
        item.setdefault("kind", default_kind)
    return item, line


def _strip_lines(value: Any) -> None:
    if isinstance(value, dict):
        value.pop(_LINE, None)
        for child in value.values():
            _strip_lines(child)
    elif isinstance(value, list):
        for child in value:
            _strip_lines(child)


def _validate(obj: dict[str, Any], source: str, line: int) -> ImportRecord:
    kind = obj.get("kind", "prompt")
    model = _KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise InputError(
            f"unknown kind {kind!r} (expected brand, campaign or prompt)", source=source, line=line
        )
    try:
        return TypeAdapter(model).validate_python(obj)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise InputError(
            f"{kind}: {where + ': ' if where else ''}{message}", source=source, line=line
        ) from None


def _reject_duplicates(records: list[tuple[ImportRecord, str]]) -> None:
    seen: dict[tuple[str, str], tuple[ImportRecord, str]] = {}
    for record, origin in records:
        key = (record.kind, record.natural_key() if isinstance(record, Prompt) else record.id)
        if key in seen and seen[key][0] != record:
            source, _, line = origin.rpartition(":")
            first = seen[key][1].rpartition(":")[2]
            raise InputError(
                f"{record.kind} {key[1]!r} is defined twice with different content (first at line {first})",
                source=source,
                line=int(line),
            )
        seen.setdefault(key, (record, origin))


def _dependencies_first(records: list[tuple[ImportRecord, str]]) -> list[tuple[ImportRecord, str]]:
    """Brands, then campaigns, then prompts, so a file may list them in any order."""
    order = {"brand": 0, "campaign": 1, "prompt": 2}
    return sorted(records, key=lambda item: order[item[0].kind])


# ---- export ------------------------------------------------------------------------------------

ExportFormat = Literal["conversational", "standard"]


@dataclass
class ExportReport:
    path: Path
    format: str
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    contradictions: list[tuple[str, str]] = field(default_factory=list)  # pair ids, both left out

    def skip(self, reason: str, pair_id: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.examples.setdefault(reason, pair_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "written": self.written,
            "skipped": self.skipped,
            "first_skipped": self.examples,
            "contradictions": [list(c) for c in self.contradictions],
        }


def write_preference_jsonl(
    pairs: Iterable[dict[str, Any]],
    out: Path,
    fmt: ExportFormat,
    max_chars: int,
    contradictions: Iterable[tuple[str, str]] = (),
    check: Callable[[dict[str, Any], str], str | None] | None = None,
) -> ExportReport:
    """Write TRL preference rows; invalid and duplicate pairs are counted, not written, and so
    are both pairs of each contradiction (``Store.contradictory_pairs``: A over B and B over A
    for one prompt), which the report names.

    ``conversational`` keeps the whole conversation as messages (TRL applies the model's chat
    template); ``standard`` writes plain strings, with earlier turns of a multi-turn
    conversation rendered as ``Role: text`` lines before the last user turn.
    The file appears complete or not at all (written to a temporary file, then renamed), and
    only ever as a regular file: an OUT that exists as anything else (a device, a FIFO, a
    directory) is refused, since the rename would replace it. A failed write (a full disk)
    leaves no file behind and raises StoreError.

    ``check(row, pair_id)``, when given, sees each row that passed these checks and returns
    the reason to leave it out, or None (the dataset builder's checks, from the command line).
    """
    out = Path(out)
    report = ExportReport(path=out, format=fmt, contradictions=list(contradictions))
    contradicted = {pair_id for pair in report.contradictions for pair_id in pair}
    seen: set[tuple[str, str, str]] = set()
    with _replacing(out) as handle:
        for pair in pairs:
            messages = pair["messages"]
            chosen, rejected = pair["chosen"].strip(), pair["rejected"].strip()
            prompt_text = _render_prompt(messages)
            if pair["id"] in contradicted:
                report.skip("contradictory", pair["id"])
                continue
            if not chosen or not rejected:
                report.skip("empty", pair["id"])
                continue
            if chosen == rejected:
                report.skip("identical", pair["id"])
                continue
            if len(prompt_text) + max(len(chosen), len(rejected)) > max_chars:
                report.skip("over_length", pair["id"])
                continue
            key = (prompt_text, chosen, rejected)
            if key in seen:
                report.skip("duplicate", pair["id"])
                continue
            seen.add(key)
            if fmt == "conversational":
                row = {
                    "prompt": messages,
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            else:
                row = {"prompt": prompt_text, "chosen": chosen, "rejected": rejected}
            as_messages = {"prompt": messages, "chosen": chosen, "rejected": rejected}
            reason = check(as_messages, pair["id"]) if check else None
            if reason:
                report.skip(reason, pair["id"])
                continue
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            report.written += 1
    return report


@contextmanager
def _replacing(out: Path) -> Iterator[TextIO]:
    """A text handle whose contents replace ``out`` when the block ends, whole or not at all:
    written to a temporary file beside it, synced (a full disk shows here, not after the
    rename), then renamed over it. Any failure removes the temporary file; an OSError becomes
    StoreError naming ``out``."""
    fd, tmp = _temp_beside(out)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _temp_beside(out: Path) -> tuple[int, str]:
    """A temporary file beside ``out`` to write, then rename over it: refused (StoreError) when
    ``out`` exists as anything but a regular file or its folder cannot hold it."""
    try:
        mode = out.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        pass  # nothing there to replace (mkdir below names a parent that is not a directory)
    except OSError as exc:
        raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from None
    else:
        if not stat.S_ISREG(mode):
            raise StoreError(
                f"cannot write {out}: it exists and is not a regular file "
                f"({_file_kind(mode)}); give a file path"
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except FileExistsError:
        raise StoreError(f"cannot write {out}: {out.parent} is not a directory") from None
    except OSError as exc:
        raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from None


def write_sft_jsonl(
    examples: Iterable[dict[str, Any]],
    out: Path,
    check: Callable[[dict[str, Any], str], str | None] | None = None,
) -> ExportReport:
    """Write SFT examples (``Store.iter_sft_examples``) as TRL's conversational language
    modelling rows, ``{"messages": [...the conversation, {"role": "assistant", ...}]}``;
    ``check(row, id)`` may leave a row out with its reason. Written like
    :func:`write_preference_jsonl`: whole or not at all, only as a regular file."""
    out = Path(out)
    report = ExportReport(path=out, format="conversational")
    with _replacing(out) as handle:
        for example in examples:
            row = {
                "messages": [
                    *example["messages"],
                    {"role": "assistant", "content": example["answer"].strip()},
                ]
            }
            reason = check(row, example["id"]) if check else None
            if reason:
                report.skip(reason, example["id"])
                continue
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            report.written += 1
    return report


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _render_prompt(messages: list[dict[str, str]]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
