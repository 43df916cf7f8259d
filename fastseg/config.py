"""Constants defined once: the day numbering, the default windows, the seeds of the hashes."""

from __future__ import annotations

import datetime as dt

__all__ = ["DEFAULT_WINDOWS", "EPOCH", "EVENT_WINDOWS"]

#: day 0 of the day numbers the kernels use (days since 1970-01-01)
EPOCH = dt.date(1970, 1, 1)
#: trailing windows of the order features, in days
DEFAULT_WINDOWS: tuple[int, ...] = (30, 90, 365)
#: trailing windows of the event features, in days
EVENT_WINDOWS: tuple[int, ...] = (30, 90)
