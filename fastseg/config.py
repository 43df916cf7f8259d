"""Constants defined once: the day numbering, the default windows, the seeds of the hashes."""

from __future__ import annotations

import datetime as dt

__all__ = [
    "DEFAULT_WINDOWS",
    "EPOCH",
    "EVENT_REASONS",
    "EVENT_WINDOWS",
    "MAX_WINDOW",
    "REASONS",
    "SKEW_RATIO",
]

#: day 0 of the day numbers the kernels use (days since 1970-01-01)
EPOCH = dt.date(1970, 1, 1)
#: trailing windows of the order features, in days
DEFAULT_WINDOWS: tuple[int, ...] = (30, 90, 365)
#: the longest trailing window, in days (about 270 years: longer than any order history)
MAX_WINDOW = 100_000
#: trailing windows of the event features, in days
EVENT_WINDOWS: tuple[int, ...] = (30, 90)
#: why an order row cannot be used, in the order rows are checked (each row gets the first that
#: applies); the check kernel's reason codes index this tuple
REASONS: tuple[str, ...] = (
    "missing_customer_id",
    "missing_timestamp",
    "missing_amount",
    "after_as_of",
)
#: why an event cannot be used, in the order events are checked
EVENT_REASONS: tuple[str, ...] = (
    "missing_customer_id",
    "missing_timestamp",
    "missing_event",
    "after_as_of",
)
#: values are skewed (a report axis is logarithmic, a cluster feature is log-transformed) when the
#: 99th percentile of the positive values is at least this many times their median
SKEW_RATIO = 20.0
