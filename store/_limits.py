"""Limits on what an input file may hold, and a JSON reader that keeps to them.

A hostile or broken file should cost a one-line error, not a traceback, a hang or gigabytes:
JSON nested 100,000 deep (RecursionError), a 5,000-digit integer (ValueError, or an integer
SQLite cannot store), NaN or Infinity (stored, they break SQLite's json_extract), a 50 MB prompt
(it stops the tokenizer, every night), YAML aliases that expand a few lines into a billion
values. The limits come from ``settings.limits`` (:class:`criticloop.settings.LimitsSettings`).
"""

from __future__ import annotations

import json
import math
from typing import Any, Protocol

from ..errors import InputError


class Limits(Protocol):
    text_chars: int
    line_bytes: int
    depth: int
    int_digits: int
    nodes: int


class LimitError(ValueError):
    """A value past a limit; the reader names ``file:line``."""


def default_limits() -> Limits:
    from ..settings import LimitsSettings

    return LimitsSettings()


def json_decoder(limits: Limits) -> json.JSONDecoder:
    """A decoder that refuses NaN, Infinity, numbers that overflow to infinity and integers of
    more than ``limits.int_digits`` digits, before Python converts them."""

    def parse_int(text: str) -> int:
        digits = len(text.lstrip("-"))
        if digits > limits.int_digits:
            raise LimitError(f"an integer of {digits} digits (at most {limits.int_digits})")
        return int(text)

    def parse_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise LimitError(f"the number {text[:20]} is too large to store")
        return value

    def parse_constant(name: str) -> Any:
        raise LimitError(f"{name} is not a number JSON allows")

    return json.JSONDecoder(
        parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant
    )


def decode(decoder: json.JSONDecoder, text: str, limits: Limits, *, texts: bool = True) -> Any:
    """One JSON value from ``text``, within the limits (JSONDecodeError for bad JSON); without
    ``texts``, long strings are left to the caller."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.line_bytes:
        raise LimitError(f"a line of {size} bytes (at most {limits.line_bytes})")
    try:
        value = decoder.decode(text)
    except RecursionError:
        raise LimitError(f"nested more than {limits.depth} levels deep") from None
    check(value, limits, texts=texts)
    return value


def decode_line(
    decoder: json.JSONDecoder,
    line: str,
    limits: Limits,
    source: str,
    number: int,
    *,
    texts: bool = True,
) -> Any:
    """:func:`decode` for line ``number`` of a JSONL file: bad JSON or a value past a limit is
    an :class:`~criticloop.errors.InputError` naming ``source:number``."""
    try:
        return decode(decoder, line, limits, texts=texts)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"invalid JSON: {exc.msg} (column {exc.colno})", source=source, line=number
        ) from None
    except LimitError as exc:
        raise InputError(str(exc), source=source, line=number) from None


def check(value: Any, limits: Limits, *, texts: bool = True) -> None:
    """Walk a parsed value (iteratively: depth cannot overflow the stack) and raise LimitError at
    the first thing past a limit: nesting, values in all (a YAML alias counts every time it is
    used), integers, non-finite floats, and with ``texts`` the characters of each string."""
    seen = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > limits.nodes:
            raise LimitError(f"more than {limits.nodes} values (YAML aliases count each use)")
        if isinstance(item, dict):
            if depth > limits.depth:
                raise LimitError(f"nested more than {limits.depth} levels deep")
            stack.extend((v, depth + 1) for v in item.values())
            stack.extend((k, depth + 1) for k in item if isinstance(k, str))
        elif isinstance(item, list | tuple):
            if depth > limits.depth:
                raise LimitError(f"nested more than {limits.depth} levels deep")
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            if texts and len(item) > limits.text_chars:
                raise LimitError(
                    f"a text of {len(item)} characters (at most {limits.text_chars}; "
                    "CRITICLOOP_LIMITS__TEXT_CHARS)"
                )
        elif isinstance(item, bool):
            pass
        elif isinstance(item, int):
            if abs(item) >= 10**limits.int_digits:
                raise LimitError(f"an integer of more than {limits.int_digits} digits")
        elif isinstance(item, float) and not math.isfinite(item):
            raise LimitError(f"{item} is not a number that can be stored")
