"""One limit per served endpoint, shared by everything in the process that calls it.

A server's capacity is the server's, not one caller's: the policy's candidates, the gate's
samples and the judges that go to the same URL wait on the same limit. ``with limit:`` holds
one of ``max_in_flight`` places and, when ``requests_per_minute`` is set, one token of
LangChain's token bucket (a burst of at most a few seconds' worth).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

_LIMITS: dict[str, EndpointLimit] = {}
_GUARD = threading.Lock()


@dataclass
class EndpointLimit:
    url: str
    max_in_flight: int
    requests_per_minute: float | None = None
    in_flight: int = 0
    peak_in_flight: int = 0
    requests: int = 0
    _slots: FairSlots = field(init=False, repr=False)
    _bucket: Any = field(init=False, repr=False, default=None)
    _count: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._slots = FairSlots(self.max_in_flight)
        if self.requests_per_minute:
            from langchain_core.rate_limiters import InMemoryRateLimiter

            per_second = self.requests_per_minute / 60
            self._bucket = InMemoryRateLimiter(
                requests_per_second=per_second,
                check_every_n_seconds=min(0.1, 1 / per_second / 4),
                max_bucket_size=max(1.0, per_second),
            )

    def __enter__(self) -> EndpointLimit:
        self._slots.acquire()
        if self._bucket is not None:
            self._bucket.acquire(blocking=True)
        with self._count:
            self.in_flight += 1
            self.requests += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._count:
            self.in_flight -= 1
        self._slots.release()


class FairSlots:
    """``n`` places handed out in the order they were asked for.

    ``threading.Semaphore`` lets a thread that gives a place back take it again at once, ahead
    of threads already waiting: the policy's generation threads, each releasing and asking
    again for its next prompt, could hold every place until the last prompt was written while
    a judge's likelihood request to the same server waited behind them all."""

    def __init__(self, n: int):
        self._free = n
        self._lock = threading.Lock()
        self._waiting: deque[threading.Lock] = deque()

    def acquire(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return True
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        if turn.acquire(timeout=-1 if timeout is None else timeout):
            return True
        with self._lock:
            if turn in self._waiting:  # nobody handed it a place: give up the turn
                self._waiting.remove(turn)
                return False
        return True  # a place was handed over just as the wait ended

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().release()  # the place goes to the first in line
            else:
                self._free += 1

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)


def endpoint_limit(
    url: str, max_in_flight: int, requests_per_minute: float | None = None
) -> EndpointLimit:
    """The process's limit for ``url``. Callers of one URL share it; one asking for other
    numbers replaces it once nothing is in flight (settings changed between runs), and
    otherwise waits on the limit as it stands."""
    with _GUARD:
        limit = _LIMITS.get(url)
        same = limit and (limit.max_in_flight, limit.requests_per_minute) == (
            max_in_flight,
            requests_per_minute,
        )
        if limit is None or (not same and limit.in_flight == 0):
            limit = _LIMITS[url] = EndpointLimit(url, max_in_flight, requests_per_minute)
        return limit


def endpoint_limits() -> dict[str, EndpointLimit]:
    """Every endpoint called so far in this process, for a run's summary."""
    with _GUARD:
        return dict(_LIMITS)


def reset_endpoint_limits() -> None:
    """Forget every limit (tests, and a process that changes its settings)."""
    with _GUARD:
        _LIMITS.clear()
