"""One live run of a kind per data home, held by an OS file lock for the run's whole life.

The ``runs`` row is written only once a run knows its prompts, after the models load: a check of
that row cannot stop a second ``graph run`` started a second later. ``flock`` can: the first
process takes the lock before anything heavy loads, a second one is refused at once, and the
kernel lets go when the holder exits however it dies (kill -9 included), so a crashed run never
blocks the next night.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import BusyError, StoreError
from ._common import now

_WIDTH = 96


@contextlib.contextmanager
def run_lock(db_path: Path, kind: str) -> Iterator[None]:
    """Hold the ``kind`` run lock of the database at ``db_path``, or raise BusyError naming the
    process that holds it."""
    path = Path(db_path).with_name(f"{kind}-run.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot open the run lock {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd) or "another process"
            raise BusyError(
                f"{kind} run is still running ({holder}); a second one would do the same work. "
                "Let it finish, or stop it: the next run continues where it stopped"
            ) from None
        # One fixed-width write over the last holder's line: never empty or mixed, but at first.
        line = f"process {os.getpid()}, started {now()[:19]}Z".ljust(_WIDTH)
        os.pwrite(fd, line.encode()[:_WIDTH], 0)
        os.ftruncate(fd, _WIDTH)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _holder(fd: int, wait_s: float = 1.0) -> str:
    """The holder's line. A holder that has just taken the lock writes it a moment later (on
    a new lock file there is nothing before that): wait for it briefly."""
    deadline = time.monotonic() + wait_s
    while True:
        holder = os.pread(fd, _WIDTH, 0).decode("utf-8", "replace").strip()
        if holder or time.monotonic() > deadline:
            return holder
        time.sleep(0.02)
