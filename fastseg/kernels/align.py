"""Aligning the customers of two runs: for every customer of one list, its row in the other.

fastseg writes every run's customers sorted by id, so two runs align by one linear merge
(:func:`merge_sorted`): sequential reads, no hash table. The kernels check the order as they go
(strictly increasing, by value for integers and by UTF-8 bytes for texts) and report a list that
is not sorted, so the caller can fall back to a hash join: a merge never misses a match silently.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from fastseg.kernels import CACHE

__all__ = ["merge_sorted_int", "merge_sorted_text"]


@njit(cache=CACHE)
def _strictly_increasing(a):  # pragma: no cover - jitted
    for i in range(1, a.shape[0]):  # noqa: SIM110 (numba: no generators)
        if a[i] <= a[i - 1]:
            return False
    return True


@njit(cache=CACHE)
def _merge_int_kernel(a, b, a2b, b2a):  # pragma: no cover - jitted
    i = 0
    j = 0
    while i < a.shape[0] and j < b.shape[0]:
        x = a[i]
        y = b[j]
        if x == y:
            a2b[i] = j
            b2a[j] = i
            i += 1
            j += 1
        elif x < y:
            i += 1
        else:
            j += 1


@njit(cache=CACHE)
def _cmp(oa, da, i, ob, db, j):  # pragma: no cover - jitted
    """-1, 0, 1: text i of (oa, da) against text j of (ob, db), byte by byte."""
    s, e = oa[i], oa[i + 1]
    t, f = ob[j], ob[j + 1]
    n = min(e - s, f - t)
    for k in range(n):
        x = da[s + k]
        y = db[t + k]
        if x != y:
            return -1 if x < y else 1
    if e - s == f - t:
        return 0
    return -1 if e - s < f - t else 1


@njit(cache=CACHE)
def _texts_increasing(o, d):  # pragma: no cover - jitted
    for i in range(1, o.shape[0] - 1):  # noqa: SIM110 (numba: no generators)
        if _cmp(o, d, i - 1, o, d, i) >= 0:
            return False
    return True


@njit(cache=CACHE)
def _merge_text_kernel(oa, da, ob, db, a2b, b2a):  # pragma: no cover - jitted
    na = oa.shape[0] - 1
    nb = ob.shape[0] - 1
    i = 0
    j = 0
    while i < na and j < nb:
        c = _cmp(oa, da, i, ob, db, j)
        if c == 0:
            a2b[i] = j
            b2a[j] = i
            i += 1
            j += 1
        elif c < 0:
            i += 1
        else:
            j += 1


def merge_sorted_int(
    a: NDArray[np.int64], b: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
    """``(a2b, b2a)`` for two strictly increasing id arrays (-1: not in the other), or None when
    either is not strictly increasing."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    b = np.ascontiguousarray(b, dtype=np.int64)
    if not (_strictly_increasing(a) and _strictly_increasing(b)):
        return None
    a2b = np.full(a.shape[0], -1, dtype=np.int64)
    b2a = np.full(b.shape[0], -1, dtype=np.int64)
    _merge_int_kernel(a, b, a2b, b2a)
    return a2b, b2a


def merge_sorted_text(
    a: tuple[NDArray[np.int64], NDArray[np.uint8]], b: tuple[NDArray[np.int64], NDArray[np.uint8]]
) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
    """The same for texts given as ``(offsets, utf8_bytes)`` (Arrow layout, no nulls), ordered
    by bytes; None when either is not strictly increasing."""
    (oa, da), (ob, db) = a, b
    oa = np.ascontiguousarray(oa, dtype=np.int64)
    ob = np.ascontiguousarray(ob, dtype=np.int64)
    da = np.ascontiguousarray(da, dtype=np.uint8)
    db = np.ascontiguousarray(db, dtype=np.uint8)
    if not (_texts_increasing(oa, da) and _texts_increasing(ob, db)):
        return None
    a2b = np.full(oa.shape[0] - 1, -1, dtype=np.int64)
    b2a = np.full(ob.shape[0] - 1, -1, dtype=np.int64)
    _merge_text_kernel(oa, da, ob, db, a2b, b2a)
    return a2b, b2a
