"""The training worker process: ``python -m criticloop.training.worker JOB_DIR``.

Started by ``criticloop train`` for the subprocess and accelerate launchers. It trains what the
job directory describes and leaves ``result.json`` (or ``failure.json`` with the reason); the
launching process reads them and writes the store.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0], "config.json").exists():
        print(
            "usage: python -m criticloop.training.worker JOB_DIR (with config.json)",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from ._jobs import run_job

    try:
        run_job(Path(args[0]))
    except KeyboardInterrupt:
        return 130
    except Exception:  # noqa: BLE001 - the reason is in failure.json; the traceback goes to the log
        logging.exception("training failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
