"""Only for `faketime DATE make test`: libfaketime 0.9 with the monotonic clock left real
(FAKETIME_DONT_FAKE_MONOTONIC=1, which timed waits need) fails every time.sleep with EINVAL, as
it shifts the absolute monotonic deadline Python passes to clock_nanosleep by the date's
offset. An Event's timed wait measures the same interval without clock_nanosleep.

conftest.py puts this folder on PYTHONPATH when libfaketime is preloaded, so every Python
process of the test run (pytest and the criticloop commands it starts) loads it; otherwise
nothing imports it.
"""

import os
import threading
import time

if "faketime" in os.environ.get("LD_PRELOAD", ""):

    def _sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        threading.Event().wait(seconds)

    time.sleep = _sleep
