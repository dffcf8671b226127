"""Small helpers shared by the store's modules."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..vocab import VERDICT_KINDS
from ._records import content_hash

_VERDICT_IN = "kind IN ({})".format(", ".join(repr(k) for k in VERDICT_KINDS))
"""SQL: a ``reviews`` row is a verdict (it decides a case), not an annotation."""


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


def _alive(pid: int, started: float | None = None) -> bool:
    """Whether process ``pid`` still runs; with ``started`` (its start time when it took the
    work, see :func:`process_started`), also that it is the same process, not a reused pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        pass
    if started is not None:
        current = process_started(pid)
        return current is None or abs(current - started) < 1.0
    return True


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc; None where there is
    no /proc (macOS) or the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def insert_rows(db: Any, table: str, rows: list[dict[str, Any]], *, replace: bool = False) -> None:
    """``INSERT`` (or ``INSERT OR REPLACE``) ``rows`` into an existing ``table``, values stored
    as sqlite-utils stores them (dicts and lists as JSON).

    For the writes every prompt makes (spans, critiques, calls, decisions, pairs): sqlite-utils'
    ``Table.insert`` first asks ``sqlite_master`` whether the table and a view of that name
    exist and reads the table's columns, three or four statements around each insert. The
    tables are the migrations'; a missing one is an error here, never created on the fly."""
    from sqlite_utils.db import jsonify_if_needed

    if not rows:
        return
    columns = list(dict.fromkeys(column for row in rows for column in row))
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    names = ", ".join(f"[{column}]" for column in columns)
    marks = ", ".join("?" for _ in columns)
    db.conn.executemany(
        f"{verb} INTO [{table}] ({names}) VALUES ({marks})",
        [[jsonify_if_needed(row.get(column)) for column in columns] for row in rows],
    )


def update_row(db: Any, table: str, row_id: str, values: dict[str, Any]) -> None:
    """``UPDATE table SET ... WHERE id = row_id`` (see :func:`insert_rows` for why not
    sqlite-utils' ``Table.update``)."""
    from sqlite_utils.db import jsonify_if_needed

    sets = ", ".join(f"[{column}] = ?" for column in values)
    params = [jsonify_if_needed(value) for value in values.values()]
    cursor = db.conn.execute(f"UPDATE [{table}] SET {sets} WHERE id = ?", [*params, row_id])
    if cursor.rowcount == 0:
        from sqlite_utils.db import NotFoundError

        raise NotFoundError(f"no row {row_id!r} in {table}")


def select_all(db: Any, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    """The rows of a query as dicts (what sqlite-utils' ``rows_where`` gives, without its
    questions to ``sqlite_master`` first)."""
    cursor = db.conn.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def select_one(db: Any, sql: str, params: Any = ()) -> dict[str, Any] | None:
    rows = select_all(db, sql, params)
    return rows[0] if rows else None
