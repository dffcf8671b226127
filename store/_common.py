"""Small helpers shared by the store's modules."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from ._records import content_hash


def now(offset_seconds: float = 0.0) -> str:
    """UTC ISO timestamps: they sort as text, so SQL can compare them."""
    stamp = datetime.now(UTC) + timedelta(seconds=offset_seconds)
    return stamp.isoformat(timespec="milliseconds")


def _key(*parts: Any) -> str:
    return content_hash(list(parts))[:24]


def _decode(row: dict[str, Any], *json_columns: str) -> dict[str, Any]:
    for column in json_columns:
        if row.get(column) is not None:
            row[column] = json.loads(row[column])
    return row


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
