"""Domain errors. Library code raises these; only the CLI turns them into a one-line message.

``exit_code`` follows the CLI contract: 1 for an operation that failed, 2 for bad usage,
configuration or input.
"""

from __future__ import annotations


class CriticloopError(Exception):
    """Base of every error criticloop reports to a user."""

    exit_code = 1


class ConfigError(CriticloopError):
    """Settings, profiles or command-line options that cannot be used."""

    exit_code = 2


class InputError(CriticloopError):
    """A user's data file is malformed; the message names ``file:line``."""

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        where = f"{source}:{line}: " if source and line else f"{source}: " if source else ""
        super().__init__(f"{where}{message}")
        self.source = source
        self.line = line


class NotFoundError(CriticloopError):
    """Something named by the user (a brand, a campaign, a prompt) does not exist."""

    exit_code = 2


class StoreError(CriticloopError):
    """The database or the data home cannot be opened or written."""


class ModelError(CriticloopError):
    """A model cannot be found, loaded or run."""


class BusyError(CriticloopError):
    """Another process is doing this work now (a second nightly job, say)."""
