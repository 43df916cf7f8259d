"""Incremental dense codes for customer ids arriving in batches.

:class:`IdEncoder` gives every distinct ``int64`` id a code ``0, 1, 2, ...`` in first-seen order,
batch after batch, and at the end the permutation that sorts the codes by id. Two modes:

* ``direct``: ids within a known, not too wide range ``[lo, lo + span)`` — a lookup table of
  ``span`` int32 codes (a few MB for millions of customers: it stays in cache);
* ``hash``: any ids — an open-addressing hash table kept at most half full.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from fastseg.errors import ParameterError
from fastseg.kernels import CACHE

__all__ = ["IdEncoder"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=CACHE)
def _direct_kernel(ids, lo, lut, uniques, n_unique, codes):  # pragma: no cover - jitted
    for i in range(ids.shape[0]):
        k = ids[i] - lo
        c = lut[k]
        if c < 0:
            c = n_unique
            lut[k] = c
            uniques[c] = ids[i]
            n_unique += 1
        codes[i] = c
    return n_unique


@njit(cache=CACHE)
def _slot(key, mask):  # pragma: no cover - jitted
    h = (np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(17)
    return np.int64(h & np.uint64(mask))


@njit(cache=CACHE)
def _hash_kernel(ids, keys, vals, uniques, n_unique, codes):  # pragma: no cover - jitted
    mask = keys.shape[0] - 1
    for i in range(ids.shape[0]):
        k = ids[i]
        s = _slot(k, mask)
        while True:
            v = vals[s]
            if v < 0:
                keys[s] = k
                vals[s] = n_unique
                uniques[n_unique] = k
                codes[i] = n_unique
                n_unique += 1
                break
            if keys[s] == k:
                codes[i] = v
                break
            s = (s + 1) & mask
    return n_unique


@njit(cache=CACHE)
def _rehash_kernel(uniques, n_unique, keys, vals):  # pragma: no cover - jitted
    mask = keys.shape[0] - 1
    for j in range(n_unique):
        k = uniques[j]
        s = _slot(k, mask)
        while vals[s] >= 0:
            s = (s + 1) & mask
        keys[s] = k
        vals[s] = j


class IdEncoder:
    """Dense codes for int64 ids, batch after batch.

    Parameters
    ----------
    lo, hi
        Smallest and largest id of the whole input, when known: ids in ``[lo, hi]`` with a span
        of at most ``max_span`` use the direct lookup table; otherwise a hash table.
    max_span
        Widest id range served by the lookup table (4 bytes per id in the range).

    Examples
    --------
    >>> enc = IdEncoder()
    >>> enc.encode(np.array([30, 10, 30])).tolist(), enc.encode(np.array([20, 10])).tolist()
    ([0, 1, 0], [2, 1])
    >>> enc.uniques.tolist(), enc.sort_order().tolist()
    ([30, 10, 20], [1, 2, 0])
    """

    def __init__(
        self, lo: int | None = None, hi: int | None = None, *, max_span: int = 1 << 26
    ) -> None:
        self.n_unique = 0
        self._uniques = np.empty(1 << 10, np.int64)
        self.lo = lo
        if lo is not None and hi is not None and 0 <= hi - lo < max_span:
            self.mode = "direct"
            self._lut = np.full(hi - lo + 1, -1, np.int32)
        else:
            self.mode = "hash"
            self._keys = np.empty(1 << 12, np.int64)
            self._vals = np.full(1 << 12, -1, np.int32)

    @property
    def uniques(self) -> NDArray[np.int64]:
        """Distinct ids seen so far, in first-seen (code) order."""
        return self._uniques[: self.n_unique]

    def _reserve(self, extra: int) -> None:
        need = self.n_unique + extra
        if need > self._uniques.shape[0]:
            grown = np.empty(max(need, 2 * self._uniques.shape[0]), np.int64)
            grown[: self.n_unique] = self._uniques[: self.n_unique]
            self._uniques = grown
        if self.mode == "hash" and 2 * need > self._keys.shape[0]:
            cap = self._keys.shape[0]
            while 2 * need > cap:
                cap *= 2
            self._keys = np.empty(cap, np.int64)
            self._vals = np.full(cap, -1, np.int32)
            _rehash_kernel(self._uniques, self.n_unique, self._keys, self._vals)

    def encode(self, ids: NDArray[np.int64]) -> NDArray[np.int32]:
        """Codes of ``ids`` (new ids get the next codes)."""
        ids = np.ascontiguousarray(ids, np.int64)
        codes = np.empty(ids.shape[0], np.int32)
        if ids.shape[0] == 0:
            return codes
        if self.n_unique + ids.shape[0] >= 2**31:
            msg = "more than 2**31 distinct customers in one run; split the customers into batches"
            raise ParameterError(msg)
        self._reserve(ids.shape[0])
        if self.mode == "direct":
            lo = self.lo
            assert lo is not None
            if int(ids.min()) < lo or int(ids.max()) - lo >= self._lut.shape[0]:
                msg = "IdEncoder: id outside the range given at construction"
                raise ParameterError(msg)
            self.n_unique = _direct_kernel(ids, lo, self._lut, self._uniques, self.n_unique, codes)
        else:
            self.n_unique = _hash_kernel(
                ids, self._keys, self._vals, self._uniques, self.n_unique, codes
            )
        return codes

    def sort_order(self) -> NDArray[np.int64]:
        """Codes in ascending id order: ``uniques[sort_order()]`` is sorted."""
        return np.argsort(self.uniques, kind="stable")
