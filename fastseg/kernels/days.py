"""Distinct purchase days per customer, for the BTYD summary, in the row pass.

A customer's purchase days are the distinct days of their rows with an amount >= 0 (a day with a
purchase: an order's lines normally share its day; lines on other days make those days purchase
days too), so the result does not depend on the order of the rows. Rows arrive in any order, so
the days are kept exactly in an open-addressing hash set of ``(customer code, day)`` keys
(``uint64``: code in the high 32 bits), grown by doubling below a load of 0.75: about 11-21 bytes
per distinct customer-day. Beside it, per customer: the number of distinct days, the first
purchase day and the gross revenue of that day (every row with amount >= 0 on it), so the
revenue of the repeat days is the customer's gross minus the first day's; the first and last
purchase days are those of the order features (the same rows).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from fastseg.kernels import CACHE

__all__ = ["PurchaseDays"]

_EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
_I32_MAX = np.iinfo(np.int32).max
_LOAD = 0.75


@njit(cache=CACHE, inline="always")
def _slot(key, shift):  # pragma: no cover - jitted
    """Fibonacci hashing: the top bits of key * 2^64/phi (every key bit reaches them)."""
    return (key * np.uint64(0x9E3779B97F4A7C15)) >> shift


@njit(cache=CACHE)
def _insert_kernel(
    keys, shift, codes, day, amount, flags, days, first, first_gross
):  # pragma: no cover
    """Add a batch; returns the number of new keys."""
    mask = np.uint64(keys.shape[0] - 1)
    empty = np.uint64(0xFFFFFFFFFFFFFFFF)
    added = 0
    for i in range(codes.shape[0]):
        a = amount[i]
        if not a >= 0.0:
            continue
        c = codes[i]
        d = day[i]
        if d < first[c]:
            first[c] = d
            first_gross[c] = a
        elif d == first[c]:
            first_gross[c] += a
        key = (np.uint64(c) << np.uint64(32)) | np.uint64(np.uint32(d))
        h = _slot(key, shift)
        while True:
            k = keys[h]
            if k == empty:
                keys[h] = key
                days[c] += 1
                added += 1
                break
            if k == key:
                break
            h = (h + np.uint64(1)) & mask
    return added


@njit(cache=CACHE)
def _rehash_kernel(old, new, shift):  # pragma: no cover - jitted
    mask = np.uint64(new.shape[0] - 1)
    empty = np.uint64(0xFFFFFFFFFFFFFFFF)
    for i in range(old.shape[0]):
        key = old[i]
        if key == empty:
            continue
        h = _slot(key, shift)
        while new[h] != empty:
            h = (h + np.uint64(1)) & mask
        new[h] = key


@njit(cache=CACHE)
def _remap_keys_kernel(keys, into, out_codes, out_days):  # pragma: no cover - jitted
    """The keys of ``keys`` as (new code, day) pairs, codes mapped through ``into``."""
    empty = np.uint64(0xFFFFFFFFFFFFFFFF)
    n = 0
    for i in range(keys.shape[0]):
        key = keys[i]
        if key == empty:
            continue
        out_codes[n] = into[np.int64(key >> np.uint64(32))]
        out_days[n] = np.int32(np.uint32(key & np.uint64(0xFFFFFFFF)))
        n += 1
    return n


def _shift(size: int) -> np.uint64:
    """64 - log2(size): the shift that leaves the top log2(size) bits of a hash."""
    return np.uint64(64 - (size.bit_length() - 1))


class PurchaseDays:
    """The purchase-day state of an :class:`fastseg.features.OrderAggregator` (see the module
    docstring). ``capacity`` customers to start with; :meth:`grow` before codes beyond it."""

    def __init__(self, capacity: int, rows: int | None = None) -> None:
        size = 1 << 16  # grown by doubling as days come: same-day rows need no room
        self.keys = np.full(size, _EMPTY, np.uint64)
        self.n_keys = 0
        self.days = np.zeros(max(capacity, 1), np.int32)
        self.first = np.full(max(capacity, 1), _I32_MAX, np.int32)
        self.first_gross = np.zeros(max(capacity, 1), np.float64)

    def grow(self, n_customers: int) -> None:
        """Room for codes below ``n_customers``."""
        have = self.days.shape[0]
        if n_customers <= have:
            return
        new = max(n_customers, 2 * have)
        self.days = np.concatenate([self.days, np.zeros(new - have, np.int32)])
        self.first = np.concatenate([self.first, np.full(new - have, _I32_MAX, np.int32)])
        self.first_gross = np.concatenate([self.first_gross, np.zeros(new - have)])

    def _reserve(self, more: int) -> None:
        size = self.keys.shape[0]
        while (self.n_keys + more) > size * _LOAD:
            size <<= 1
        if size != self.keys.shape[0]:
            new = np.full(size, _EMPTY, np.uint64)
            _rehash_kernel(self.keys, new, _shift(size))
            self.keys = new

    def add(
        self,
        codes: NDArray[np.integer],
        day: NDArray[np.int32],
        amount: NDArray[np.float64],
        flags: NDArray[np.uint8],
    ) -> None:
        """Add a batch of clean rows (codes already within :meth:`grow`'s room)."""
        if codes.shape[0] == 0:
            return
        self._reserve(codes.shape[0])
        self.n_keys += _insert_kernel(
            self.keys,
            _shift(self.keys.shape[0]),
            np.ascontiguousarray(codes),
            np.ascontiguousarray(day, dtype=np.int32),
            np.ascontiguousarray(amount, dtype=np.float64),
            np.ascontiguousarray(flags, dtype=np.uint8),
            self.days,
            self.first,
            self.first_gross,
        )

    def merge(self, other: PurchaseDays, into: NDArray[np.int64]) -> None:
        """Add ``other``'s days, its code ``i`` being this one's ``into[i]``."""
        n_other = other.days.shape[0]
        codes = np.empty(other.n_keys, np.int64)
        days = np.empty(other.n_keys, np.int32)
        n = _remap_keys_kernel(other.keys, into, codes, days)
        # the keys carry the days; the first day's gross is merged per customer
        self.grow(int(into.max()) + 1 if into.size else 0)
        flags = np.ones(n, np.uint8)
        self._reserve(n)
        self.n_keys += _insert_kernel(
            self.keys,
            _shift(self.keys.shape[0]),
            codes[:n],
            days[:n],
            np.zeros(n),
            flags,
            self.days,
            np.full(self.days.shape[0], np.iinfo(np.int32).min, np.int32),  # no first-day update
            np.zeros(self.days.shape[0]),
        )
        seen = other.first[:n_other] < _I32_MAX
        src = np.flatnonzero(seen)
        dst = into[src]
        mine = self.first[dst]
        theirs = other.first[src]
        earlier = theirs < mine
        same = theirs == mine
        self.first[dst[earlier]] = theirs[earlier]
        self.first_gross[dst[earlier]] = other.first_gross[src[earlier]]
        np.add.at(self.first_gross, dst[same], other.first_gross[src[same]])

    def take(self, rows: NDArray[np.int64] | None, n: int) -> tuple[NDArray, NDArray]:
        """(distinct purchase days, gross of the first purchase day) of codes ``rows`` (all
        first ``n`` codes when None)."""
        if rows is None:
            return self.days[:n].copy(), self.first_gross[:n].copy()
        return self.days[rows], self.first_gross[rows]

    def close(self) -> None:
        self.keys = np.empty(0, np.uint64)
