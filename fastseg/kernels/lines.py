"""Lines of one order counted once, whatever the order the rows come in.

When an ``order_id`` column is present, rows sharing an order id (for one customer) are lines of
one order: only the first usable line with an amount >= 0 counts as an order (it dates the
order). :class:`OrderLines` keeps, across batches, which ``(customer code, order id)`` pairs have
been seen, and clears the order flag of every later line. Two modes, like
:class:`fastseg.kernels.encode.IdEncoder`:

* ``direct``: order ids within a known, compact range ``[lo, lo + span)`` — one int32 per id in
  the range holding the first customer seen with it (4 bytes an order id, sequential ids are the
  common case even when the rows are shuffled); an id shared by several customers, an id outside
  the range and a missing id go to the exact pair table below;
* ``hash``: an open-addressing table of exact ``(customer code, order id)`` pairs (16 bytes a
  slot, kept at most half full).

A missing order id is a value of its own: the missing-id lines of one customer are one order
(as ``is_first_distinct`` over ``(customer_id, order_id)`` treats them).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from fastseg.errors import ParameterError
from fastseg.kernels import CACHE

__all__ = ["OrderLines"]

#: customer-code bit marking the pair of a missing order id (codes are below 2**31)
_NULL_TAG = np.int64(1) << np.int64(40)


@njit(cache=CACHE, inline="always")
def _pair_slot(k1, k2, mask):  # pragma: no cover - jitted
    h = np.uint64(k1) * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(k2) * np.uint64(
        0xC2B2AE3D27D4EB4F
    )
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    return np.int64((h >> np.uint64(20)) & np.uint64(mask))


@njit(cache=CACHE, inline="always")
def _pair_seen(pairs, k1, k2):  # pragma: no cover - jitted
    """Insert (k1, k2); return 1 if it was there, 0 if inserted."""
    mask = pairs.shape[0] - 1
    s = _pair_slot(k1, k2, mask)
    while True:
        a = pairs[s, 0]
        if a < 0:
            pairs[s, 0] = k1
            pairs[s, 1] = k2
            return 0
        if a == k1 and pairs[s, 1] == k2:
            return 1
        s = (s + 1) & mask


@njit(cache=CACHE, nogil=True)
def _lines_kernel(codes, oids, flags, start, lo, first, pairs, n_pairs):  # pragma: no cover
    # Clears flag bit 0 of every order row (bit 0 set) whose (code, order id) pair was seen.
    # Returns (row to resume from, pairs): the row count when done; earlier when the pair table
    # passed half full (the caller grows it and calls again from that row).
    span = first.shape[0]
    limit = pairs.shape[0] // 2
    for i in range(start, codes.shape[0]):
        if n_pairs >= limit:
            return i, n_pairs
        f = flags[i]
        if f & 1 == 0:
            continue
        c = np.int64(codes[i])
        if f & 4:  # a missing order id: one order per customer
            if _pair_seen(pairs, c | _NULL_TAG, np.int64(0)):
                flags[i] = f & np.uint8(0xFE)
            else:
                n_pairs += 1
            continue
        o = oids[i]
        k = o - lo
        if 0 <= k < span:
            seen = first[k]
            if seen < 0:
                first[k] = c
                continue
            if seen == c:
                flags[i] = f & np.uint8(0xFE)
                continue
        if _pair_seen(pairs, c, o):  # another customer's id, or one outside the range
            flags[i] = f & np.uint8(0xFE)
        else:
            n_pairs += 1
    return codes.shape[0], n_pairs


@njit(cache=CACHE)
def _rehash_pairs_kernel(old, pairs):  # pragma: no cover - jitted
    for s in range(old.shape[0]):
        if old[s, 0] >= 0:
            _pair_seen(pairs, old[s, 0], old[s, 1])


class OrderLines:
    """Which ``(customer code, order id)`` pairs have been seen, batch after batch.

    Parameters
    ----------
    lo, hi
        Smallest and largest order id of the input, when known: ids in ``[lo, hi]`` with a
        span of at most ``max_span`` are tracked by a table of one int32 per id; otherwise
        every pair goes to a hash table.
    max_span
        Widest order-id range served by the table (4 bytes per id in the range).

    Examples
    --------
    >>> lines = OrderLines(100, 103)
    >>> flags = np.array([1, 1, 1, 0, 1], np.uint8)  # bit 0: an order row (amount >= 0)
    >>> lines.mark(np.array([7, 7, 8, 7, 8]), np.array([100, 100, 100, 101, 100]), flags)
    >>> flags.tolist()  # customer 7's second line of order 100, customer 8's too
    [1, 0, 1, 0, 0]
    """

    def __init__(
        self, lo: int | None = None, hi: int | None = None, *, max_span: int = 1 << 28
    ) -> None:
        self.lo = 0
        self._first = np.empty(0, np.int32)
        if lo is not None and hi is not None and 0 <= hi - lo < max_span:
            self.lo = int(lo)
            self._first = np.full(hi - lo + 1, -1, np.int32)
        self.mode = "direct" if self._first.shape[0] else "hash"
        self._pairs = np.full((1 << 10, 2), -1, np.int64)
        self.n_pairs = 0

    @property
    def nbytes(self) -> int:
        """Memory held (bytes)."""
        return int(self._first.nbytes + self._pairs.nbytes)

    def mark(
        self, codes: NDArray[np.integer], oids: NDArray[np.int64], flags: NDArray[np.uint8]
    ) -> None:
        """Clear flag bit 0 (in place) on every order row whose order was seen before.

        ``codes``: non-negative customer codes below 2**31; ``oids``: int64 order ids; ``flags``:
        uint8, bit 0 an order row (amount >= 0), bit 2 the order id is missing.
        """
        n = codes.shape[0]
        if oids.shape[0] != n or flags.shape[0] != n:
            msg = "OrderLines.mark: codes, oids and flags must have the same length"
            raise ParameterError(msg)
        if flags.dtype != np.uint8 or not flags.flags.c_contiguous:
            msg = "OrderLines.mark: flags must be a C-contiguous uint8 array (updated in place)"
            raise ParameterError(msg)
        codes = np.ascontiguousarray(codes)
        oids = np.ascontiguousarray(oids, np.int64)
        start = 0
        while start < n:
            start, self.n_pairs = _lines_kernel(
                codes, oids, flags, start, np.int64(self.lo), self._first, self._pairs, self.n_pairs
            )
            if start < n:  # half full: grow, then go on from that row
                old = self._pairs
                self._pairs = np.full((old.shape[0] * 4, 2), -1, np.int64)
                _rehash_pairs_kernel(old, self._pairs)
