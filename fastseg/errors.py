"""Errors raised by fastseg.

Every error a user can cause is a :class:`FastsegError`. Its message is one line that names
what is wrong (file, column, value, parameter) and says what to do next. The CLI prints it
in red and exits with status 1, never with a traceback.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "FastsegError",
    "InputError",
    "MissingDependencyError",
    "OutputError",
    "ParameterError",
    "RuleError",
    "RuleSyntaxError",
    "SchemaError",
]


class FastsegError(Exception):
    """Base class of every error fastseg raises on bad input."""


class InputError(FastsegError):
    """A source cannot be found, opened or decoded (missing file, corrupt Parquet, bad CSV)."""


class MissingDependencyError(FastsegError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it
    (``pip install 'fastseg[ml]'``)."""


class OutputError(FastsegError):
    """An output cannot be written where asked: it is an input, a special file, a folder fastseg
    did not write, or the write failed (disk full, permission). Names the target, never a
    temporary file."""


class SchemaError(FastsegError):
    """Required columns are missing or a column cannot be read as its type."""


class ParameterError(FastsegError, ValueError):
    """An argument is outside its allowed values."""


class DataError(FastsegError):
    """The data itself cannot be used: no usable order, or data problems under ``strict``."""


class RuleError(FastsegError):
    """A segment rule or catalog is invalid: unknown field, type mismatch, cycle, bad reference."""


class RuleSyntaxError(RuleError):
    """A rule does not parse. Carries the line and column (1-based) and what was expected."""

    def __init__(self, message: str, *, line: int = 0, column: int = 0, rule: str = "") -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.rule = rule
