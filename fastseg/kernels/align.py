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

__all__ = ["merge_sorted_int", "merge_sorted_text", "transitions"]


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


@njit(cache=CACHE)
def _transitions_kernel(pc, pr, cc, cr, c2p, p2c, g, customers, rev_before, rev_after):
    # pragma: no cover - jitted
    for i in range(cc.shape[0]):
        j = c2p[i]
        if j >= 0:
            k = pc[j] * g + cc[i]
            rev_before[k] += pr[j]
        else:
            k = cc[i]  # before code 0: (new)
        customers[k] += 1
        rev_after[k] += cr[i]
    for j in range(pc.shape[0]):
        if p2c[j] < 0:
            k = pc[j] * g + (g - 1)  # after code g - 1: (gone)
            customers[k] += 1
            rev_before[k] += pr[j]


def transitions(
    prev_codes: NDArray[np.uint32],
    prev_values: NDArray[np.float64],
    cur_codes: NDArray[np.uint32],
    cur_values: NDArray[np.float64],
    c2p: NDArray[np.int64],
    p2c: NDArray[np.int64],
    n_codes: int,
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Customers and value sums per (before, after) group code pair, ``[n_codes * n_codes]``
    flattened before-major; code 0 as ``before`` is a new customer, code ``n_codes - 1`` as
    ``after`` a customer gone (``c2p``/``p2c`` as from the merge, -1: not in the other run)."""
    size = n_codes * n_codes
    customers = np.zeros(size, dtype=np.int64)
    rev_before = np.zeros(size, dtype=np.float64)
    rev_after = np.zeros(size, dtype=np.float64)
    _transitions_kernel(
        np.ascontiguousarray(prev_codes, dtype=np.uint32),
        np.ascontiguousarray(prev_values, dtype=np.float64),
        np.ascontiguousarray(cur_codes, dtype=np.uint32),
        np.ascontiguousarray(cur_values, dtype=np.float64),
        np.ascontiguousarray(c2p, dtype=np.int64),
        np.ascontiguousarray(p2c, dtype=np.int64),
        np.int64(n_codes),
        customers,
        rev_before,
        rev_after,
    )
    return customers, rev_before, rev_after
