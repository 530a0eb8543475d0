"""Exceptions raised by gmsa. Each message says what was wrong, where, and what to do."""

from __future__ import annotations


class GMSAError(Exception):
    """Base class for every error gmsa raises on purpose."""


class ConfigError(GMSAError, ValueError):
    """A configuration value is invalid; the message names the field and the value."""


class CheckpointError(GMSAError):
    """A checkpoint is missing, incomplete, or does not match the base model."""


class DataError(GMSAError, ValueError):
    """A data file is malformed; the message names the file and the line."""

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem
