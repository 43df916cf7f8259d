"""Order-key summaries and interval histograms for exact quantile edges over chunks.

Used by :mod:`fastseg.edges` (:class:`fastseg.edges.EdgeSearch`). The order keys are those of
:mod:`fastseg.kernels.quantile`: integers are their own key, a float's bit pattern has its 63 low
bits flipped when negative, so that integer order of the keys is the value order (``-0.0`` sorts
just below ``+0.0``; NaN keys lie outside the keys of ``±inf``).

- :func:`key_summary` returns the count, the NaN count and the smallest and largest key of a chunk.
- :func:`interval_histograms` counts, for a few disjoint key intervals ``[lo, hi]``, the keys of a
  chunk in each of the interval's buckets ``(key - lo) >> shift``.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from fastseg.errors import ParameterError
from fastseg.kernels import CACHE
from fastseg.kernels.quantile import _KEY_NEG_INF, _KEY_POS_INF, _LOW63, _as_values, _decode

__all__ = ["decode_keys", "interval_histograms", "key_summary", "order_bits"]

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_COARSE_BITS = 16
_MAX_BINS = 1 << 24  # 128 MiB of counts: far above what fastseg.edges asks for


# --------------------------------------------------------------------------------------------
# kernels (private; never validate)
# --------------------------------------------------------------------------------------------


@njit(cache=CACHE, nogil=True)
def _summary_kernel(
    bits: NDArray[np.int64], fmask: np.int64, nan_lo: np.int64, nan_hi: np.int64
) -> tuple[int, int, int]:
    """NaN count (keys outside ``[nan_lo, nan_hi]``), smallest and largest key; ``n >= 1``."""
    lo = bits[0] ^ ((bits[0] >> 63) & fmask)
    hi = lo
    nan = 0
    for i in range(bits.shape[0]):
        b = bits[i]
        key = b ^ ((b >> 63) & fmask)
        lo = min(lo, key)
        hi = max(hi, key)
        nan += 1 if (key < nan_lo or key > nan_hi) else 0
    return nan, lo, hi


@njit(cache=CACHE, nogil=True)
def _one_interval_kernel(
    bits: NDArray[np.int64],
    fmask: np.int64,
    lo: np.int64,
    hi: np.int64,
    shift: np.int64,
    mask: np.int64,
    counts: NDArray[np.int64],
) -> None:
    """``counts[((key - lo) >> shift) & mask] += 1`` for every key in ``[lo, hi]``.

    The subtraction wraps and the shift is arithmetic, but the bucket is exact: the true
    (unsigned) difference is below ``2**64`` and ``mask`` drops the sign-extended bits.
    """
    for i in range(bits.shape[0]):
        b = bits[i]
        key = b ^ ((b >> 63) & fmask)
        if key >= lo and key <= hi:
            counts[((key - lo) >> shift) & mask] += 1


@njit(cache=CACHE, nogil=True)
def _intervals_kernel(
    bits: NDArray[np.int64],
    fmask: np.int64,
    los: NDArray[np.int64],
    his: NDArray[np.int64],
    shifts: NDArray[np.int64],
    masks: NDArray[np.int64],
    offsets: NDArray[np.int64],
    table: NDArray[np.int32],
    cshift: np.int64,
    cmask: np.int64,
    counts: NDArray[np.int64],
) -> None:
    """Like :func:`_one_interval_kernel` for disjoint intervals sorted by ``lo``.

    ``table[c]`` describes the coarse bucket ``c = (key - los[0]) >> cshift``: ``j >= 0`` when
    interval ``j`` is the only one meeting it, -1 when none does, ``-2 - j`` when several do,
    the first being ``j``; its last entry (-1) serves keys outside ``[los[0], his[-1]]``. The
    range test is a select, not a branch: keys inside and outside come in random order, and a
    mispredicted branch per key cost 3x the time. Most keys then meet no interval (-1), a
    branch that predicts well.
    """
    m = los.shape[0]
    first = los[0]
    last = his[m - 1]
    outside = table.shape[0] - 1
    for i in range(bits.shape[0]):
        b = bits[i]
        key = b ^ ((b >> 63) & fmask)
        inside = (key >= first) & (key <= last)
        c = ((key - first) >> cshift) & cmask
        t = table[c if inside else outside]
        if t == -1:
            continue
        j = t if t >= 0 else -2 - t
        while j < m and los[j] <= key:
            if key <= his[j]:
                counts[offsets[j] + (((key - los[j]) >> shifts[j]) & masks[j])] += 1
                break
            j += 1


# --------------------------------------------------------------------------------------------
# public wrappers
# --------------------------------------------------------------------------------------------


def order_bits(values: object, kind: str, name: str = "values") -> tuple[NDArray[np.int64], bool]:
    """Validate a 1-D array of the ``kind`` ("int": int64, "float": float64); int64 view of it.

    Raises
    ------
    ParameterError
        Not a 1-D numpy array, or a dtype that does not match ``kind``.
    """
    arr, is_float = _as_values(values, name)
    want_float = kind == "float"
    if is_float != want_float:
        want = "float64" if want_float else "int64"
        msg = f"{name} must have dtype {want} for kind={kind!r}, got {arr.dtype}; convert it first"
        raise ParameterError(msg)
    return arr.view(np.int64), is_float


def _fmask(is_float: bool) -> np.int64:
    return _LOW63 if is_float else np.int64(0)


def key_summary(bits: NDArray[np.int64], is_float: bool) -> tuple[int, int, int, int]:
    """Count, NaN count, smallest and largest order key of ``bits`` (from :func:`order_bits`).

    An empty array gives ``(0, 0, 2**63 - 1, -2**63)`` (identities of min and max).
    """
    n = int(bits.shape[0])
    if n == 0:
        return 0, 0, _I64_MAX, _I64_MIN
    nan_lo, nan_hi = (_KEY_NEG_INF, _KEY_POS_INF) if is_float else (_I64_MIN, _I64_MAX)
    nan, lo, hi = _summary_kernel(bits, _fmask(is_float), np.int64(nan_lo), np.int64(nan_hi))
    return n, int(nan), int(lo), int(hi)


def interval_histograms(
    bits: NDArray[np.int64],
    is_float: bool,
    los: NDArray[np.int64],
    his: NDArray[np.int64],
    shifts: NDArray[np.int64],
) -> NDArray[np.int64]:
    """Histograms of ``(key - lo) >> shift`` over the keys in each interval ``[lo, hi]``.

    Parameters
    ----------
    bits : ndarray of int64
        From :func:`order_bits`.
    is_float : bool
        Whether ``bits`` are float64 bit patterns.
    los, his : ndarray of int64
        Disjoint intervals (inclusive), sorted by ``lo``, ``lo <= hi``.
    shifts : ndarray of int64
        Per interval, in ``0 .. 63``.

    Returns
    -------
    ndarray of int64
        The histograms one after the other; interval ``j`` has ``((hi - lo) >> shift) + 1`` bins.
    """
    los = np.ascontiguousarray(los, dtype=np.int64)
    his = np.ascontiguousarray(his, dtype=np.int64)
    shifts = np.ascontiguousarray(shifts, dtype=np.int64)
    m = los.shape[0]
    if his.shape != (m,) or shifts.shape != (m,):
        msg = "los, his and shifts must be 1-D arrays of one length"
        raise ParameterError(msg)
    lo_l, hi_l, sh_l = los.tolist(), his.tolist(), shifts.tolist()
    sizes = []
    for j in range(m):
        if not (lo_l[j] <= hi_l[j] and 0 <= sh_l[j] <= 63):
            msg = f"interval {j} is invalid: lo={lo_l[j]}, hi={hi_l[j]}, shift={sh_l[j]}"
            raise ParameterError(msg)
        if j and lo_l[j] <= hi_l[j - 1]:
            msg = "intervals must be disjoint and sorted by lo"
            raise ParameterError(msg)
        sizes.append(((hi_l[j] - lo_l[j]) >> sh_l[j]) + 1)
    total = sum(sizes)
    if total > _MAX_BINS:
        msg = f"the intervals need {total} histogram bins, more than {_MAX_BINS}; raise the shifts"
        raise ParameterError(msg)
    if m == 0 or bits.shape[0] == 0:
        return np.zeros(total, dtype=np.int64)
    # low 64 - shift bits set (all 64 for shift 0), as int64 bit patterns
    masks = np.array([_low_mask(s) for s in sh_l], dtype=np.int64)
    fmask = _fmask(is_float)
    counts = np.zeros(total, dtype=np.int64)
    if m == 1:
        _one_interval_kernel(bits, fmask, los[0], his[0], shifts[0], np.int64(masks[0]), counts)
        return counts
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    first_of, cshift = _coarse_table(lo_l, hi_l)
    _intervals_kernel(
        bits,
        fmask,
        los,
        his,
        shifts,
        masks,
        offsets,
        first_of,
        np.int64(cshift),
        _low_mask(cshift),
        counts,
    )
    return counts


def _low_mask(shift: int) -> np.int64:
    """The low ``64 - shift`` bits set, as an int64 bit pattern (drops sign-extended bits)."""
    return np.array([(1 << (64 - shift)) - 1], dtype=np.uint64).view(np.int64)[0]


def _coarse_table(lo_l: list[int], hi_l: list[int]) -> tuple[NDArray[np.int32], int]:
    """The coarse table of :func:`_intervals_kernel` over ``[lo_l[0], hi_l[-1]]``.

    ``2**12`` coarse buckets (L1-resident) for a few intervals, up to ``2**16`` for hundreds, so
    that a coarse bucket rarely holds keys of several intervals; plus one entry (-1) for keys
    outside.
    """
    first = lo_l[0]
    span = hi_l[-1] - first
    coarse_bits = min(_COARSE_BITS, max(12, 8 + len(lo_l).bit_length()))
    cshift = max(0, span.bit_length() - coarse_bits)
    nc = (span >> cshift) + 1
    seen = np.zeros(nc, dtype=np.int32)  # how many intervals meet each coarse bucket
    table = np.full(nc + 1, -1, dtype=np.int32)
    for j in range(len(lo_l) - 1, -1, -1):  # from the last: the first interval writes last
        a, b = (lo_l[j] - first) >> cshift, ((hi_l[j] - first) >> cshift) + 1
        seen[a:b] += 1
        table[a:b] = j
    several = np.flatnonzero(seen > 1)
    table[several] = -2 - table[several]
    return table, cshift


def decode_keys(keys: NDArray[np.int64], is_float: bool) -> NDArray[np.float64]:
    """Order keys back to float64 values, exactly as :func:`fastseg.kernels.quantile.quantile_edges`
    decodes its edges (``-0.0`` becomes ``0.0``)."""
    return _decode(np.ascontiguousarray(keys, dtype=np.int64), is_float)
