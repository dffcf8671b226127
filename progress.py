"""One progress bar for criticloop's long jobs (generating, judging, calibrating): tqdm on
stderr, off when the caller asks for JSON or quiet output."""

from __future__ import annotations

import sys


def progress(total: int, enabled: bool, desc: str = "judging", unit: str = "prompt"):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not enabled,
        mininterval=0.5,
        smoothing=0.1,
    )
