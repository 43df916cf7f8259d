"""Exact quantile edges and branchless binning.

Two public functions, used by :mod:`fastseg.scoring`:

- :func:`quantile_edges` returns the ``k - 1`` order statistics ``e_s`` (the ``m_s``-th smallest
  value, ``m_s = ceil(s * n / k)``, ``s = 1 .. k - 1``). With them, ``1 + #{s : e_s < x}`` equals
  ``1 + floor(k * #{values < x} / n)`` for every ``x`` (see ``docs/rfm.md``).
- :func:`apply_edges` returns ``1 + #{edges < x}`` (or ``<=`` when ``inclusive``) as ``uint8``.
- :func:`combine_scores` turns R, F, M scores into cell codes, R+F+M and group codes in one pass.

How the edges are found (exact, no sort of the whole array)
-----------------------------------------------------------
Every value is mapped to an ``int64`` *key* whose integer order is the value order (integers are
their own key; a float's bit pattern has its 63 low bits flipped when negative). One pass finds
the smallest and largest key (the wrapper rejects NaN from them); a second pass builds a histogram
of ``(key - min) >> shift`` over at most 65 536 buckets, or of ``key - min`` itself (exact) when
the key range is small, as for day counts and order counts. Cumulative counts tell the bucket of
each wanted rank. When buckets are exact the edges are known; otherwise a third pass gathers the
keys of the (at most ``k - 1``) wanted buckets and ``numpy.partition`` finishes on that small
candidate set. Float keys are logarithmic in the value, so buckets adapt to skewed money amounts.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray

from fastseg.errors import ParameterError
from fastseg.kernels import CACHE

__all__ = ["apply_edges", "combine_scores", "quantile_edges"]

_RADIX_BITS = 16
# Key ranges up to this size get one exact counting bucket per key (integers: one per value).
_EXACT_SPAN = 1 << 22
_LOW63 = np.int64(0x7FFF_FFFF_FFFF_FFFF)
_MAX_EXACT_INT = 1 << 53
_MAX_EDGES = 254  # scores are uint8: 1 + 254 edges = 255
_BLOCK = 1024


# --------------------------------------------------------------------------------------------
# kernels (private; never validate)
# --------------------------------------------------------------------------------------------


@njit(cache=CACHE, nogil=True)
def _key_range_kernel(bits: NDArray[np.int64], fmask: np.int64) -> tuple[int, int]:
    """Smallest and largest order key of ``bits`` (int64 view of int64 or float64 values)."""
    lo = bits[0] ^ ((bits[0] >> 63) & fmask)
    hi = lo
    for i in range(bits.shape[0]):
        b = bits[i]
        key = b ^ ((b >> 63) & fmask)
        lo = min(lo, key)
        hi = max(hi, key)
    return lo, hi


@njit(cache=CACHE, nogil=True)
def _histogram_kernel(
    bits: NDArray[np.int64],
    fmask: np.int64,
    kmin: np.int64,
    shift: np.int64,
    mask: np.int64,
    counts: NDArray[np.int64],
) -> None:
    """``counts[b] += 1`` for the bucket ``b = ((key - kmin) >> shift) & mask`` of every value.

    The subtraction wraps and the shift is arithmetic, but the bucket bits are exact because the
    true (unsigned) difference is below ``2**64``; ``mask`` drops the sign-extended bits.
    """
    for i in range(bits.shape[0]):
        b = bits[i]
        key = b ^ ((b >> 63) & fmask)
        counts[((key - kmin) >> shift) & mask] += 1


@njit(cache=CACHE, nogil=True)
def _histogram4_kernel(
    bits: NDArray[np.int64], fmask: np.int64, kmin: np.int64, counts: NDArray[np.int64]
) -> None:
    """Exact histogram of ``key - kmin`` into four interleaved sub-histograms (``4 * nb``).

    For small key ranges (day counts, order counts): runs of equal values would otherwise
    serialise on one counter. Only called when ``key - kmin`` cannot overflow.
    """
    nb = counts.shape[0] // 4
    n = bits.shape[0]
    n4 = n - n % 4
    for i in range(0, n4, 4):
        for lane in range(4):
            b = bits[i + lane]
            key = b ^ ((b >> 63) & fmask)
            counts[lane * nb + (key - kmin)] += 1
    for i in range(n4, n):
        b = bits[i]
        key = b ^ ((b >> 63) & fmask)
        counts[key - kmin] += 1


@njit(cache=CACHE, nogil=True)
def _gather_kernel(
    bits: NDArray[np.int64],
    fmask: np.int64,
    kmin: np.int64,
    shift: np.int64,
    mask: np.int64,
    slot_of_bucket: NDArray[np.int32],
    cursor: NDArray[np.int64],
    out: NDArray[np.int64],
) -> None:
    """Copy the key of every value whose bucket has a slot into ``out`` at ``cursor[slot]``."""
    for i in range(bits.shape[0]):
        b = bits[i]
        key = b ^ ((b >> 63) & fmask)
        slot = slot_of_bucket[((key - kmin) >> shift) & mask]
        if slot >= 0:
            out[cursor[slot]] = key
            cursor[slot] += 1


@njit(cache=CACHE, nogil=True)
def _bin_kernel(
    values: NDArray[np.float64] | NDArray[np.int64],
    thresholds: NDArray[np.float64] | NDArray[np.int64],
    base: np.uint8,
    strict: bool,
    out: NDArray[np.uint8],
) -> int:
    """``out[i] = base + #{t : t < values[i]}`` (``strict``) or ``#{t : t <= values[i]}``.

    Blocked so that the inner loop is one comparison per element against one threshold: it
    vectorises (no branch per element) and the block stays in L1 across thresholds. Returns the
    number of NaN values (always 0 for integers), counted in the same pass.
    """
    n = values.shape[0]
    m = thresholds.shape[0]
    one = np.uint8(1)
    zero = np.uint8(0)
    nan = 0
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        o = out[start:stop]
        x = values[start:stop]
        w = stop - start
        for i in range(w):
            o[i] = base
            nan += 1 if x[i] != x[i] else 0
        for j in range(m):
            t = thresholds[j]
            if strict:
                for i in range(w):
                    o[i] += one if x[i] > t else zero
            else:
                for i in range(w):
                    o[i] += one if x[i] >= t else zero
    return nan


@njit(cache=CACHE, nogil=True)
def _count_nan_kernel(values: NDArray[np.float64]) -> int:
    c = 0
    for i in range(values.shape[0]):
        c += 1 if values[i] != values[i] else 0
    return c


# --------------------------------------------------------------------------------------------
# helpers (Python, scalar work only)
# --------------------------------------------------------------------------------------------


def _as_values(values: object, name: str) -> tuple[NDArray[np.float64] | NDArray[np.int64], bool]:
    """Validate a 1-D float64/int64 array; return it C-contiguous and whether it is float."""
    if not isinstance(values, np.ndarray):
        msg = f"{name} must be a numpy array of float64 or int64, got {type(values).__name__}"
        raise ParameterError(msg)
    if values.ndim != 1:
        msg = f"{name} must be one-dimensional, got {values.ndim} dimensions"
        raise ParameterError(msg)
    if values.dtype == np.float64:
        is_float = True
    elif values.dtype == np.int64:
        is_float = False
    else:
        msg = f"{name} must have dtype float64 or int64, got {values.dtype}; convert it first"
        raise ParameterError(msg)
    return np.ascontiguousarray(values), is_float


def _decode(keys: NDArray[np.int64], is_float: bool) -> NDArray[np.float64]:
    """Inverse of the order key, as float64 (integers are exact up to 2**53)."""
    if not is_float:
        return keys.astype(np.float64)
    bits = keys ^ ((keys >> 63) & _LOW63)
    return bits.view(np.float64) + 0.0  # + 0.0 turns -0.0 into 0.0


def _float_key(x: float) -> int:
    b = int(np.array([x], dtype=np.float64).view(np.int64)[0])
    return b ^ (0x7FFF_FFFF_FFFF_FFFF if b < 0 else 0)


_KEY_POS_INF = _float_key(math.inf)
_KEY_NEG_INF = _float_key(-math.inf)


def edge_ranks(n: int, k: int) -> list[int]:
    """0-based ranks ``ceil(s * n / k) - 1`` (``s = 1 .. k - 1``) of the edges, exact integers.

    Examples
    --------
    >>> edge_ranks(8, 5)
    [1, 3, 4, 6]
    """
    return [(s * n + k - 1) // k - 1 for s in range(1, k)]


# --------------------------------------------------------------------------------------------
# public wrappers
# --------------------------------------------------------------------------------------------


def quantile_edges(values: NDArray[np.float64] | NDArray[np.int64], k: int) -> NDArray[np.float64]:
    """Exact order-statistic edges that split ``values`` into ``k`` quantile scores.

    Returns ``e_s`` = the ``m_s``-th smallest value, ``m_s = ceil(s * n / k)``, for
    ``s = 1 .. k - 1`` (nondecreasing). Then ``apply_edges(x, e)`` ==
    ``1 + floor(k * #{v in values : v < x} / n)`` for any ``x``: ties share a score and the
    result does not depend on the order of ``values``.

    Parameters
    ----------
    values : ndarray of float64 or int64, 1-D, non-empty
        The population. NaN is rejected; integers must lie within ``±2**53`` (exact as float64).
    k : int
        Number of scores, 1 to 255 (``k - 1`` edges are returned).

    Returns
    -------
    ndarray of float64, shape (k - 1,)

    Raises
    ------
    ParameterError
        Empty input, NaN, wrong dtype or shape, ``k`` out of range, integers beyond ``2**53``.

    Examples
    --------
    >>> import numpy as np
    >>> quantile_edges(np.array([1, 1, 1, 2, 2, 3, 5, 8]), 5)
    array([1., 2., 2., 5.])
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= 255:
        msg = f"k must be an integer from 1 to 255, got {k!r}"
        raise ParameterError(msg)
    k = int(k)
    arr, is_float = _as_values(values, "values")
    n = arr.shape[0]
    if n == 0:
        msg = "values is empty: quantile edges need at least one value"
        raise ParameterError(msg)
    if k == 1:
        return np.empty(0, dtype=np.float64)
    bits = arr.view(np.int64)
    fmask = _LOW63 if is_float else np.int64(0)
    lo_, hi_ = _key_range_kernel(bits, fmask)
    kmin, kmax = int(lo_), int(hi_)
    if is_float and (kmax > _KEY_POS_INF or kmin < _KEY_NEG_INF):
        count = _count_nan_kernel(arr)
        msg = f"values contain {count} NaN of {n}; drop or fill them before computing edges"
        raise ParameterError(msg)
    if not is_float and (kmin < -_MAX_EXACT_INT or kmax > _MAX_EXACT_INT):
        msg = (
            f"integer values must lie within ±2**53 to give exact float64 edges, "
            f"got the range {kmin}..{kmax}"
        )
        raise ParameterError(msg)
    ranks = edge_ranks(n, k)
    span = kmax - kmin
    if span == 0:
        return _decode(np.full(k - 1, kmin, dtype=np.int64), is_float)

    if span < _EXACT_SPAN and (span < (1 << _RADIX_BITS) or span <= 2 * n):
        shift = 0
        nb = span + 1
    else:
        shift = max(0, span.bit_length() - _RADIX_BITS)
        nb = 1 << _RADIX_BITS
    if shift == 0:
        counts4 = np.zeros(4 * nb, dtype=np.int64)
        _histogram4_kernel(bits, fmask, np.int64(kmin), counts4)
        counts = counts4.reshape(4, nb).sum(axis=0)
    else:
        counts = np.zeros(nb, dtype=np.int64)
        _histogram_kernel(bits, fmask, np.int64(kmin), np.int64(shift), np.int64(nb - 1), counts)
    cum = np.cumsum(counts)
    buckets = np.searchsorted(cum, np.asarray(ranks, dtype=np.int64), side="right")
    before = np.where(buckets > 0, cum[np.maximum(buckets - 1, 0)], 0)
    local = np.asarray(ranks, dtype=np.int64) - before

    keys = np.empty(k - 1, dtype=np.int64)
    if shift == 0:
        keys[:] = kmin + buckets
        return _decode(keys, is_float)

    wanted = np.unique(buckets)
    slot_of_bucket = np.full(nb, -1, dtype=np.int32)
    slot_of_bucket[wanted] = np.arange(wanted.shape[0], dtype=np.int32)
    sizes = counts[wanted]
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    cand = np.empty(int(sizes.sum()), dtype=np.int64)
    _gather_kernel(
        bits,
        fmask,
        np.int64(kmin),
        np.int64(shift),
        np.int64(nb - 1),
        slot_of_bucket,
        starts.copy(),
        cand,
    )
    for slot, bucket in enumerate(wanted.tolist()):
        sel = np.flatnonzero(buckets == bucket)
        part = cand[starts[slot] : starts[slot] + sizes[slot]]
        kth = local[sel]
        part.partition(np.unique(kth))
        keys[sel] = part[kth]
    return _decode(keys, is_float)


def _int_thresholds(edges: NDArray[np.float64], inclusive: bool) -> tuple[NDArray[np.int64], int]:
    """Integer thresholds ``t`` with ``e < x  <=>  t <= x`` (``e <= x`` when inclusive).

    Returns the thresholds inside the int64 range and the number of edges every int64 is above.
    """
    lo, hi = -(1 << 63), (1 << 63) - 1
    out: list[int] = []
    always = 0
    for e in edges.tolist():
        if math.isinf(e):
            if e < 0:
                always += 1
            continue
        t = math.ceil(e) if inclusive else math.floor(e) + 1
        if t <= lo:
            always += 1
        elif t <= hi:
            out.append(t)
    return np.asarray(out, dtype=np.int64), always


def apply_edges(
    values: NDArray[np.float64] | NDArray[np.int64],
    edges: NDArray[np.float64] | list[float],
    *,
    inclusive: bool = False,
) -> NDArray[np.uint8]:
    """Score every value as ``1 + #{e in edges : e < x}`` (``e <= x`` when ``inclusive``).

    Branchless: each value is compared with every edge (``k - 1 <= 254`` of them) and the
    comparisons summed, so the edges need not be sorted and the time does not depend on the data.
    Integer values are compared exactly (edges become integer thresholds), not through float64.

    Parameters
    ----------
    values : ndarray of float64 or int64, 1-D
        Values to score; NaN is rejected.
    edges : array-like of float64, 1-D
        At most 254 edges, no NaN (``±inf`` allowed).
    inclusive : bool, default False
        Count edges ``<= x`` instead of ``< x``.

    Returns
    -------
    ndarray of uint8, same length as ``values``, in ``1 .. len(edges) + 1``

    Examples
    --------
    >>> import numpy as np
    >>> apply_edges(np.array([1, 2, 3, 5, 8]), np.array([1.0, 2.0, 2.0, 5.0]))
    array([1, 2, 4, 4, 5], dtype=uint8)
    >>> apply_edges(np.array([1, 2, 3, 5, 8]), np.array([1.0, 2.0, 2.0, 5.0]), inclusive=True)
    array([2, 4, 4, 5, 5], dtype=uint8)
    """
    arr, is_float = _as_values(values, "values")
    try:
        e = np.asarray(edges, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        msg = f"edges must be numbers, got {edges!r}"
        raise ParameterError(msg) from exc
    if e.ndim != 1 or e.shape[0] > _MAX_EDGES:
        msg = f"edges must be a 1-D sequence of at most {_MAX_EDGES} numbers, got shape {e.shape}"
        raise ParameterError(msg)
    if np.isnan(e).any():
        msg = f"edges must not contain NaN, got {e.tolist()}"
        raise ParameterError(msg)
    out = np.empty(arr.shape[0], dtype=np.uint8)
    if arr.shape[0] == 0:
        return out
    if is_float:
        nan = _bin_kernel(arr, np.ascontiguousarray(e), np.uint8(1), not inclusive, out)
        if nan:
            msg = f"values contain {nan} NaN of {arr.shape[0]}; drop or fill them before scoring"
            raise ParameterError(msg)
    else:
        t, always = _int_thresholds(e, inclusive)
        _bin_kernel(arr, t, np.uint8(1 + always), False, out)
    return out


@njit(cache=CACHE, nogil=True)
def _combine_kernel(
    r: NDArray[np.uint8],
    f: NDArray[np.uint8],
    m: NDArray[np.uint8],
    scored: NDArray[np.bool_],
    k: np.int64,
    group_lut: NDArray[np.uint8],
    unscored_group: np.uint8,
    cell: NDArray[np.int32],
    total: NDArray[np.uint8],
    group: NDArray[np.uint8],
) -> None:
    """Cell code, R+F+M and group code per customer (``unscored_group`` where not scored)."""
    for i in range(r.shape[0]):
        ri = np.int64(r[i]) - 1
        fi = np.int64(f[i]) - 1
        cell[i] = (ri * k + fi) * k + (np.int64(m[i]) - 1)
        total[i] = r[i] + f[i] + m[i]
        group[i] = group_lut[ri * k + fi] if scored[i] else unscored_group


def combine_scores(
    r: NDArray[np.uint8],
    f: NDArray[np.uint8],
    m: NDArray[np.uint8],
    scored: NDArray[np.bool_],
    group_lut: NDArray[np.uint8],
    unscored_group: int,
) -> tuple[NDArray[np.int32], NDArray[np.uint8], NDArray[np.uint8]]:
    """Combine R, F, M scores (each ``1..k``) into cell codes, sums and group codes, one pass.

    Parameters
    ----------
    r, f, m : ndarray of uint8, same length
        Scores in ``1..k``.
    scored : ndarray of bool
        Customers that are scored; the others get ``unscored_group``.
    group_lut : ndarray of uint8, shape (k * k,)
        Group code of each (R, F) cell, at ``(r - 1) * k + (f - 1)``.
    unscored_group : int
        Group code of customers that are not scored.

    Returns
    -------
    cell : ndarray of int32
        ``((r - 1) * k + (f - 1)) * k + (m - 1)``.
    total : ndarray of uint8
        ``r + f + m``.
    group : ndarray of uint8
        Group codes.
    """
    n = r.shape[0]
    lut = np.ascontiguousarray(group_lut, dtype=np.uint8)
    k = math.isqrt(lut.shape[0])
    if k * k != lut.shape[0] or not 1 <= k <= 85:
        msg = f"group_lut must have k * k entries for k in 1..85, got {lut.shape[0]}"
        raise ParameterError(msg)
    arrays = (r, f, m, scored)
    dtypes = (np.uint8, np.uint8, np.uint8, np.bool_)
    for name, a, dt in zip(("r", "f", "m", "scored"), arrays, dtypes, strict=True):
        if not isinstance(a, np.ndarray) or a.dtype != dt or a.shape != (n,):
            msg = f"{name} must be a 1-D {np.dtype(dt).name} array of length {n}"
            raise ParameterError(msg)
    cell = np.empty(n, dtype=np.int32)
    total = np.empty(n, dtype=np.uint8)
    group = np.empty(n, dtype=np.uint8)
    _combine_kernel(
        np.ascontiguousarray(r),
        np.ascontiguousarray(f),
        np.ascontiguousarray(m),
        np.ascontiguousarray(scored),
        np.int64(k),
        lut,
        np.uint8(unscored_group),
        cell,
        total,
        group,
    )
    return cell, total, group
