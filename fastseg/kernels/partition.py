"""Rows to customer buckets: the hash of a customer id picks its bucket, and a stable counting
sort groups a batch's rows by bucket (used by :mod:`fastseg.buckets` to spill order rows).

The bucket of a hash ``h`` is ``(h >> 32) * n_buckets >> 32`` (the high bits, scaled: no modulo
bias, and independent of the low bits the id hash tables use).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from fastseg.errors import ParameterError
from fastseg.kernels import CACHE

__all__ = ["bucket_order", "buckets_of_hashes", "mix_int_ids"]

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=CACHE, nogil=True)
def _mix_kernel(ids: NDArray[np.int64], out: NDArray[np.uint64]) -> None:  # pragma: no cover
    for i in range(ids.shape[0]):
        z = np.uint64(ids[i]) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        out[i] = z ^ (z >> np.uint64(31))


@njit(cache=CACHE, nogil=True)
def _buckets_kernel(
    hashes: NDArray[np.uint64], n_buckets: np.uint64, out: NDArray[np.int32]
) -> None:  # pragma: no cover
    for i in range(hashes.shape[0]):
        out[i] = np.int32(((hashes[i] >> np.uint64(32)) * n_buckets) >> np.uint64(32))


@njit(cache=CACHE, nogil=True)
def _order_kernel(
    buckets: NDArray[np.int32], counts: NDArray[np.int64], order: NDArray[np.int64]
) -> None:  # pragma: no cover
    for i in range(buckets.shape[0]):
        counts[buckets[i] + 1] += 1
    for b in range(1, counts.shape[0]):
        counts[b] += counts[b - 1]
    pos = counts[:-1].copy()
    for i in range(buckets.shape[0]):
        b = buckets[i]
        order[pos[b]] = i
        pos[b] += 1


def mix_int_ids(ids: NDArray[np.int64]) -> NDArray[np.uint64]:
    """A well-mixed 64-bit hash of each integer id (splitmix64)."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    out = np.empty(ids.shape[0], dtype=np.uint64)
    _mix_kernel(ids, out)
    return out


def buckets_of_hashes(hashes: NDArray[np.uint64], n_buckets: int) -> NDArray[np.int32]:
    """The bucket (``0 .. n_buckets - 1``) of each 64-bit hash."""
    if not 1 <= n_buckets <= 1 << 20:
        msg = f"n_buckets must be from 1 to 2**20, got {n_buckets}"
        raise ParameterError(msg)
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    out = np.empty(hashes.shape[0], dtype=np.int32)
    _buckets_kernel(hashes, np.uint64(n_buckets), out)
    return out


def bucket_order(
    buckets: NDArray[np.int32], n_buckets: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Row order grouping rows by bucket, stable (rows of a bucket keep their order), and the
    bucket boundaries: rows ``order[starts[b]:starts[b + 1]]`` are bucket ``b``'s."""
    buckets = np.ascontiguousarray(buckets, dtype=np.int32)
    if buckets.shape[0] and (buckets.min() < 0 or buckets.max() >= n_buckets):
        msg = f"bucket numbers must lie in 0..{n_buckets - 1}"
        raise ParameterError(msg)
    starts = np.zeros(n_buckets + 1, dtype=np.int64)
    order = np.empty(buckets.shape[0], dtype=np.int64)
    _order_kernel(buckets, starts, order)
    return order, starts
