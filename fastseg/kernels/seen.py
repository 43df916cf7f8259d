"""Persistent, exact sets of keys kept as immutable sorted run files in a folder (a tiny LSM).

A daily refresh remembers every order already counted (:class:`PairSet` of exact
``(customer code, order key)`` int64 pairs) and every row hash already seen (:class:`KeySet` of
uint64 keys). A set is a folder plus a list of run-file names; the caller keeps that list in its
own atomically written manifest. :meth:`add` writes one new run holding the new keys,
:meth:`compact` merges all runs into one new run; neither ever modifies or deletes a file, and
:func:`remove_unlisted` deletes the runs a committed manifest no longer names.

Run files
---------
A run is a few ``.npy`` arrays written one after the other into one file (``np.load`` reads the
first): ``meta`` (int64: format, count, base, shift), ``ua``, ``starts`` and ``values``. The keys
are grouped in buckets, sorted within a bucket, buckets in key order:

* :class:`PairSet`: a bucket per customer code ``a``; ``values`` holds the order keys ``b``.
  *Dense* runs (codes spanning at most about twice the pair count) index bucket ``a - base``
  directly and ``ua`` is empty; *sparse* runs list their distinct codes in ``ua`` (binary
  search). ``starts`` has one more entry than buckets.
* :class:`KeySet`: bucket ``(key - base) >> shift`` (about 4 keys a bucket); ``values`` holds the
  keys themselves.

Files are opened with ``mmap``: a :meth:`contains` reads two or three cache lines a query (the
bucket's two ``starts`` entries, its few values), whatever the size of the set. The runs of a set
are disjoint (an add writes only keys not yet in the set), so ``len`` is the sum of the runs'.

Measured
--------
On the 2-core machine (numba 0.68), with ``bench/seen_sets.py``; the machine was shared, so
wall times are given with the CPU time of the process (all threads) and the load average:

* ``PairSet.add`` of 1e8 random pairs (a in 0..1e7, b random int64) into an empty set: CPU
  8-12 s; wall 9.3 s in the quietest run (load not recorded; the first pass was still serial),
  12-22 s at load 4-5; peak extra memory 1.98 GB (the input arrays not counted); run file
  0.88 GB. Phases at load 4: first bucket pass 4.3 s, second (parallel) pass 1.7 s, marking the
  new keys 1.0 s, writing (with an fsync, since removed: fastseg's outputs are not fsync-ed) 2.4 s.
* Then, from a freshly opened set, ``contains`` + ``add`` of 1e5 new random pairs: 0.03-0.12 s
  (``contains`` 0.02-0.05 s). ``compact`` of the 1e8 run and that one: CPU 1.4-2.4 s, peak extra
  memory 1.2 GB, wall 1.8-9 s (it rewrites 0.88 GB, then fsync-ed; the disk was shared too).
* ``KeySet.add`` of 1e8 random uint64 keys: CPU 9-11 s, wall 13-18 s at load 4, peak extra
  memory 2.04 GB, file 0.93 GB; then ``contains`` + ``add`` of 1e5: 0.04-0.17 s at load 4
  (``contains`` 0.02 s); ``compact``: CPU 1.7 s, 0.94 GB extra.

The lexicographic pair sort is a two-pass bucket sort: a stable scatter by the high bits of the
bucket into a few thousand high buckets (the write streams stay in cache), then, in parallel, an
in-cache counting sort of each high bucket by the low bits and an insertion sort of each bucket
by value (a merge sort for buckets of more than 32). One direct counting-sort pass over the 1e7
customer buckets took 8.8 s alone for 1e8 pairs (a cache and TLB miss a write); ``np.lexsort``
takes 5.1 s for 1e7 pairs (so about a minute for 1e8). Codes spanning more than twice the pair
count (a daily batch of 1e5 pairs over 1e7 customers) are first replaced by their rank among the
distinct codes, found by a bucket sort of the codes (``np.unique(..., return_inverse=True)`` is
4x slower).

A set has one writer at a time; readers of other processes open the run list the writer's
manifest names.
"""

from __future__ import annotations

import mmap
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

import numpy as np
from numba import get_num_threads, njit, prange
from numpy.typing import NDArray

from fastseg.errors import ParameterError
from fastseg.kernels import CACHE

__all__ = ["KeySet", "PairSet", "remove_unlisted"]

_FORMAT = 1
_SMALL = 32  # segments up to this long are insertion-sorted
_A_LIMIT = 1 << 31
_KEYS_PER_BUCKET = 4
_PARALLEL_FROM = 1 << 16  # rows from which the first pass runs in parallel
_LOW_BITS = 12  # low bucket bits sorted in cache by the second pass


# --------------------------------------------------------------------------------------------
# kernels (private; never validate)
# --------------------------------------------------------------------------------------------


@njit(cache=CACHE, nogil=True)
def _hist_kernel(g, base, shift, nb):  # pragma: no cover - jitted
    """Bucket sizes of ``(g - base) >> shift`` (every bucket within ``0 .. nb - 1``)."""
    counts = np.zeros(nb + 1, dtype=np.int64)
    for i in range(g.shape[0]):
        counts[np.int64((g[i] - base) >> shift) + 1] += 1
    return counts


@njit(cache=CACHE, parallel=True)
def _high_scatter_kernel(g, v, base, shift, lowbits, nhigh, nchunks):  # pragma: no cover
    """First pass of the bucket sort: scatter (low bucket bits, value, row) by the high bits of
    bucket ``(g - base) >> shift``, stably, ``nchunks`` row ranges in parallel; return the high
    buckets' starts and the three arrays.

    A few thousand high buckets keep the write streams in cache: one pass over ``nb`` buckets
    directly took 9 s for 1e8 pairs (a cache and TLB miss per write).
    """
    n = g.shape[0]
    step = (n + nchunks - 1) // nchunks
    counts = np.zeros((nchunks, nhigh), dtype=np.int64)
    for c in prange(nchunks):
        for i in range(c * step, min(n, (c + 1) * step)):
            counts[c, np.int64((g[i] - base) >> shift) >> lowbits] += 1
    hstarts = np.empty(nhigh + 1, dtype=np.int64)
    pos = np.empty((nchunks, nhigh), dtype=np.int64)
    acc = 0
    for h in range(nhigh):
        hstarts[h] = acc
        for c in range(nchunks):
            pos[c, h] = acc
            acc += counts[c, h]
    hstarts[nhigh] = acc
    lowmask = (np.int64(1) << lowbits) - 1
    tl = np.empty(n, dtype=np.uint16)
    tv = np.empty(n, dtype=v.dtype)
    tp = np.empty(n, dtype=np.int64)
    for c in prange(nchunks):
        p = pos[c]
        for i in range(c * step, min(n, (c + 1) * step)):
            k = np.int64((g[i] - base) >> shift)
            h = k >> lowbits
            j = p[h]
            p[h] = j + 1
            tl[j] = k & lowmask
            tv[j] = v[i]
            tp[j] = i
    return hstarts, tl, tv, tp


@njit(cache=CACHE, inline="always")
def _sort_segment(sv, sp, lo, hi):  # pragma: no cover - jitted
    """Sort ``sv[lo:hi]`` (carrying ``sp``) stably by value."""
    if hi - lo <= _SMALL:
        for i in range(lo + 1, hi):
            x = sv[i]
            p = sp[i]
            j = i - 1
            while j >= lo and sv[j] > x:
                sv[j + 1] = sv[j]
                sp[j + 1] = sp[j]
                j -= 1
            sv[j + 1] = x
            sp[j + 1] = p
    else:
        o = np.argsort(sv[lo:hi], kind="mergesort")
        tv = sv[lo:hi][o]
        tp = sp[lo:hi][o]
        sv[lo:hi] = tv
        sp[lo:hi] = tp


@njit(cache=CACHE, parallel=True)
def _low_sort_kernel(hstarts, tl, tv, tp, lowbits, starts):  # pragma: no cover - jitted
    """Second pass, in place and in parallel over high buckets: counting sort of each high
    bucket by its low bits (in cache), then each bucket by value; fills the bucket ``starts``
    (``nhigh << lowbits`` buckets and one end entry)."""
    nl = np.int64(1) << lowbits
    nh = hstarts.shape[0] - 1
    for h in prange(nh):
        lo = hstarts[h]
        hi = hstarts[h + 1]
        cnt = np.zeros(nl, dtype=np.int64)
        for j in range(lo, hi):
            cnt[tl[j]] += 1
        acc = lo
        for j in range(nl):
            c = cnt[j]
            starts[h * nl + j] = acc
            cnt[j] = acc
            acc += c
        bv = tv[lo:hi].copy()
        bp = tp[lo:hi].copy()
        bl = tl[lo:hi].copy()
        for j in range(hi - lo):
            q = bl[j]
            d = cnt[q]
            cnt[q] = d + 1
            tv[d] = bv[j]
            tp[d] = bp[j]
        for j in range(nl):
            _sort_segment(tv, tp, starts[h * nl + j], cnt[j])
    starts[nh * nl] = tp.shape[0]


def _bucket_index(lo: int, hi: int, n: int, dtype: type) -> tuple[np.generic, np.generic, int]:
    """Base, shift and bucket count for about 4 of ``n`` keys in ``[lo, hi]`` a bucket."""
    target = max(1, n // _KEYS_PER_BUCKET)
    shift = min(63, max(0, (hi - lo).bit_length() - (target.bit_length() - 1)))
    return dtype(lo), dtype(shift), ((hi - lo) >> shift) + 1


def _bucket_sort(
    g: np.ndarray, v: np.ndarray, base: np.generic, shift: np.generic, nb: int
) -> tuple[NDArray[np.int64], np.ndarray, NDArray[np.int64]]:
    """Stable sort of ``v`` (and row numbers) by bucket ``(g - base) >> shift`` (in
    ``0 .. nb - 1``), then by value: ``(starts, sorted values, rows)``."""
    lowbits = min(_LOW_BITS, max(1, (nb - 1).bit_length()))
    nhigh = ((nb - 1) >> lowbits) + 1
    nchunks = get_num_threads() if g.shape[0] >= _PARALLEL_FROM else 1
    hstarts, tl, tv, tp = _high_scatter_kernel(g, v, base, shift, np.int64(lowbits), nhigh, nchunks)
    starts = np.empty((nhigh << lowbits) + 1, dtype=np.int64)
    _low_sort_kernel(hstarts, tl, tv, tp, np.int64(lowbits), starts)
    return starts[: nb + 1], tv, tp


@njit(cache=CACHE, nogil=True)
def _rank_kernel(sa, rows):  # pragma: no cover - jitted
    """Distinct values of the sorted ``sa`` and, per row, the rank of its value among them."""
    n = sa.shape[0]
    m = 1
    for i in range(1, n):
        m += 1 if sa[i] != sa[i - 1] else 0
    ua = np.empty(m, dtype=sa.dtype)
    rank = np.empty(n, dtype=np.int64)
    k = 0
    ua[0] = sa[0]
    for i in range(n):
        if i and sa[i] != sa[i - 1]:
            k += 1
            ua[k] = sa[i]
        rank[rows[i]] = k
    return ua, rank


@njit(cache=CACHE, nogil=True)
def _first_new_kernel(starts, sv, sp, found, check, new, kept):  # pragma: no cover - jitted
    """Clear ``new`` (query order, ``~found`` on entry) of every repeat of a value in a segment;
    move the first of each run of equal values, unless ``found`` (read only when ``check``), to
    the front of ``sv``, counting them per segment in ``kept``; return how many.

    Repeats are rare: the random accesses to ``new`` and ``found`` (2 s for 1e8 queries) happen
    only for them, or when the set was not empty.
    """
    w = 0
    for s in range(starts.shape[0] - 1):
        lo = starts[s]
        hi = starts[s + 1]
        c = 0
        for j in range(lo, hi):
            if j > lo and sv[j] == sv[j - 1]:
                new[sp[j]] = False
                continue
            if check and found[sp[j]]:
                continue
            sv[w] = sv[j]
            w += 1
            c += 1
        kept[s] = c
    return w


@njit(cache=CACHE, inline="always")
def _bsearch(vals, lo, hi, x):  # pragma: no cover - jitted
    """Whether ``x`` is in the sorted ``vals[lo:hi]``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        v = vals[mid]
        if v < x:
            lo = mid + 1
        elif v > x:
            hi = mid
        else:
            return True
    return False


@njit(cache=CACHE, nogil=True)
def _contains_pairs_kernel(qa, qb, ua, base, starts, vals, found):  # pragma: no cover - jitted
    """``found[i] |= (qa[i], qb[i]) in run`` for a pair run (dense when ``ua`` is empty)."""
    nseg = starts.shape[0] - 1
    m = ua.shape[0]
    for i in range(qa.shape[0]):
        if found[i]:
            continue
        a = qa[i]
        if m == 0:
            k = a - base
            if k < 0 or k >= nseg:
                continue
        else:
            lo = 0
            hi = m
            while lo < hi:
                mid = (lo + hi) >> 1
                if ua[mid] < a:
                    lo = mid + 1
                else:
                    hi = mid
            if lo == m or ua[lo] != a:
                continue
            k = lo
        if _bsearch(vals, starts[k], starts[k + 1], qb[i]):
            found[i] = True


@njit(cache=CACHE, nogil=True)
def _contains_keys_kernel(qk, base, shift, starts, vals, found):  # pragma: no cover - jitted
    """``found[i] |= qk[i] in run`` for a key run (uint64 keys)."""
    nb = np.uint64(starts.shape[0] - 1)
    for i in range(qk.shape[0]):
        if found[i]:
            continue
        x = qk[i]
        if x < base:
            continue
        k = (x - base) >> shift
        if k >= nb:
            continue
        j = np.int64(k)
        if _bsearch(vals, starts[j], starts[j + 1], x):
            found[i] = True


@njit(cache=CACHE, nogil=True)
def _merge_keys_kernel(x, y):  # pragma: no cover - jitted
    """Union of two sorted arrays of distinct keys, sorted."""
    out = np.empty(x.shape[0] + y.shape[0], dtype=x.dtype)
    i = 0
    j = 0
    w = 0
    while i < x.shape[0] and j < y.shape[0]:
        a = x[i]
        b = y[j]
        if a < b:
            out[w] = a
            i += 1
        elif b < a:
            out[w] = b
            j += 1
        else:
            out[w] = a
            i += 1
            j += 1
        w += 1
    while i < x.shape[0]:
        out[w] = x[i]
        i += 1
        w += 1
    while j < y.shape[0]:
        out[w] = y[j]
        j += 1
        w += 1
    return out[:w]


@njit(cache=CACHE, inline="always")
def _seg_code(ua, base, k):  # pragma: no cover - jitted
    return ua[k] if ua.shape[0] else base + k


@njit(cache=CACHE, nogil=True)
def _merge_pairs_kernel(ua1, base1, st1, v1, ua2, base2, st2, v2):  # pragma: no cover - jitted
    """Union of two pair runs: (codes of the non-empty segments, their starts, values)."""
    n1 = st1.shape[0] - 1
    n2 = st2.shape[0] - 1
    codes = np.empty(n1 + n2, dtype=np.int64)
    starts = np.empty(n1 + n2 + 1, dtype=np.int64)
    out = np.empty(v1.shape[0] + v2.shape[0], dtype=np.int64)
    s = 0
    t = 0
    w = 0
    m = 0
    while s < n1 or t < n2:
        if s < n1 and st1[s] == st1[s + 1]:
            s += 1
            continue
        if t < n2 and st2[t] == st2[t + 1]:
            t += 1
            continue
        c1 = _seg_code(ua1, base1, s) if s < n1 else np.int64(_A_LIMIT)
        c2 = _seg_code(ua2, base2, t) if t < n2 else np.int64(_A_LIMIT)
        codes[m] = min(c1, c2)
        starts[m] = w
        m += 1
        i, ie = (st1[s], st1[s + 1]) if c1 <= c2 else (0, 0)
        j, je = (st2[t], st2[t + 1]) if c2 <= c1 else (0, 0)
        s += 1 if c1 <= c2 else 0
        t += 1 if c2 <= c1 else 0
        while i < ie and j < je:
            a = v1[i]
            b = v2[j]
            if a < b:
                out[w] = a
                i += 1
            elif b < a:
                out[w] = b
                j += 1
            else:
                out[w] = a
                i += 1
                j += 1
            w += 1
        while i < ie:
            out[w] = v1[i]
            i += 1
            w += 1
        while j < je:
            out[w] = v2[j]
            j += 1
            w += 1
    starts[m] = w
    return codes[:m], starts[: m + 1], out[:w]


# --------------------------------------------------------------------------------------------
# run files
# --------------------------------------------------------------------------------------------


def _write_run(folder: Path, prefix: str, arrays: Sequence[np.ndarray]) -> str:
    """Write ``arrays`` one after the other as ``.npy`` blobs into a new file; return its name."""
    name = f"{prefix}-{uuid.uuid4().hex}.npy"
    tmp = folder / f".{name}.tmp"
    try:
        with open(tmp, "wb") as f:
            for arr in arrays:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
        os.replace(tmp, folder / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return name


def _read_run(path: Path) -> list[np.ndarray]:
    """Memory-map the arrays of a run file (read-only views of one ``mmap``)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        arrays = []
        while f.tell() < size:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(f)
            count = int(np.prod(shape))
            offset = f.tell()
            arr = (
                np.frombuffer(mm, dtype=dtype, count=count, offset=offset)
                if count
                else np.empty(0, dtype=dtype)
            )
            arrays.append(arr)
            f.seek(offset + count * dtype.itemsize)
    return arrays


class _Run:
    """One run file, memory-mapped: ``ua``, ``starts``, ``values`` and the index parameters."""

    __slots__ = ("base", "n", "name", "nbytes", "shift", "starts", "ua", "values")

    def __init__(self, folder: Path, name: str, value_dtype: np.dtype) -> None:
        path = folder / name
        try:
            arrays = _read_run(path)
            meta, ua, starts, values = arrays
        except (OSError, ValueError) as e:
            msg = f"cannot read run file {path}: {e}"
            raise ParameterError(msg) from e
        if (
            meta.dtype != np.int64
            or meta.shape[0] < 4
            or int(meta[0]) != _FORMAT
            or values.dtype != value_dtype
            or ua.dtype != np.int64
            or starts.dtype != np.int64
            or starts.shape[0] < 1
            or int(starts[-1]) != values.shape[0]
            or int(meta[1]) != values.shape[0]
            or (ua.shape[0] and ua.shape[0] + 1 != starts.shape[0])
        ):
            msg = f"{path} is not a run file of this kind of set (or it is damaged)"
            raise ParameterError(msg)
        self.name = name
        self.n = int(meta[1])
        self.base = meta[2:3].view(value_dtype)[0]
        self.shift = meta[3:4].view(value_dtype)[0]
        self.ua, self.starts, self.values = ua, starts, values
        self.nbytes = path.stat().st_size


def _meta(n: int, base: int, shift: int, value_dtype: type) -> NDArray[np.int64]:
    """``[format, count, base, shift]``; base and shift as bit patterns of the value dtype."""
    meta = np.array([_FORMAT, n, 0, 0], dtype=np.int64)
    meta[2:] = np.array([base, shift], dtype=value_dtype).view(np.int64)
    return meta


# --------------------------------------------------------------------------------------------
# the sets
# --------------------------------------------------------------------------------------------


class _RunSet:
    """What :class:`KeySet` and :class:`PairSet` share: the run list, sizes, add and compact."""

    _prefix: str
    _dtype: type

    def __init__(self, folder: Path, runs: list[_Run]) -> None:
        self.folder = folder
        self._runs = runs

    @classmethod
    def open(cls, folder: Path, runs: Sequence[str] = ()) -> Self:
        """Open the set made of the run files ``runs`` (names relative to ``folder``).

        Raises
        ------
        ParameterError
            ``folder`` is not a folder, or a run is missing or not a run file of this class.
        """
        folder = Path(folder)
        if not folder.is_dir():
            msg = f"{folder} is not a folder; create it first"
            raise ParameterError(msg)
        if isinstance(runs, str):
            msg = "runs must be a sequence of file names, not one string"
            raise ParameterError(msg)
        names = [str(r) for r in runs]
        if len(set(names)) != len(names):
            msg = "runs names a file twice"
            raise ParameterError(msg)
        return cls(folder, [_Run(folder, r, np.dtype(cls._dtype)) for r in names])

    @property
    def runs(self) -> list[str]:
        """File names (relative to the folder) the set consists of now."""
        return [r.name for r in self._runs]

    @property
    def nbytes(self) -> int:
        """Bytes on disk of the set's runs."""
        return sum(r.nbytes for r in self._runs)

    def __len__(self) -> int:
        return sum(r.n for r in self._runs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.folder)!r}, {len(self)} keys in {len(self._runs)} runs)"

    def _found(self, *keys: np.ndarray) -> NDArray[np.bool_]:
        found = np.zeros(keys[0].shape[0], dtype=np.bool_)
        if found.shape[0]:
            for run in self._runs:
                self._probe(run, keys, found)
        return found

    def contains(self, *keys: object) -> NDArray[np.bool_]:
        """Exact membership of each query (any order, duplicates allowed).

        Raises
        ------
        ParameterError
            Queries of the wrong shape, dtype or range.
        """
        return self._found(*self._validate(*keys))

    def add(self, *keys: object) -> NDArray[np.bool_]:
        """Insert the queries; return which were new.

        A query is new when the set did not hold it and no earlier query of the call equals it.
        The new distinct keys go to one new run file (none when nothing is new).

        Raises
        ------
        ParameterError
            Queries of the wrong shape, dtype or range.
        """
        keys = self._validate(*keys)
        n = keys[0].shape[0]
        new = np.zeros(n, dtype=np.bool_)
        if n == 0:
            return new
        check = any(r.n for r in self._runs)
        found = self._found(*keys) if check else new
        np.logical_not(found, out=new)
        starts, sv, sp, index = self._sort(keys)
        kept = np.zeros(starts.shape[0] - 1, dtype=np.int64)
        w = int(_first_new_kernel(starts, sv, sp, found, check, new, kept))
        del found
        del sp
        if w:
            arrays = self._new_run_arrays(sv[:w], kept, index)
            name = _write_run(self.folder, self._prefix, arrays)
            self._runs.append(_Run(self.folder, name, np.dtype(self._dtype)))
        return new

    def compact(self, max_runs: int = 8) -> None:
        """Merge all runs into one new run file when there are more than ``max_runs`` runs or
        the runs other than the largest hold more than a quarter of the largest's keys.

        Existing files are never modified or deleted.

        Raises
        ------
        ParameterError
            ``max_runs`` below 1.
        """
        if int(max_runs) < 1:
            msg = f"max_runs must be at least 1, got {max_runs}"
            raise ParameterError(msg)
        if len(self._runs) < 2:
            return
        sizes = sorted(r.n for r in self._runs)
        if len(self._runs) <= max_runs and 4 * sum(sizes[:-1]) <= sizes[-1]:
            return
        arrays = self._merge(sorted(self._runs, key=lambda r: r.n))
        name = _write_run(self.folder, self._prefix, arrays)
        self._runs = [_Run(self.folder, name, np.dtype(self._dtype))]

    # subclass hooks
    def _validate(self, *keys: object) -> tuple[np.ndarray, ...]:  # pragma: no cover
        raise NotImplementedError

    def _probe(self, run: _Run, keys: tuple[np.ndarray, ...], found: np.ndarray) -> None:
        raise NotImplementedError  # pragma: no cover

    def _sort(
        self, keys: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
        raise NotImplementedError  # pragma: no cover

    def _new_run_arrays(
        self, values: np.ndarray, kept: np.ndarray, index: object
    ) -> list[np.ndarray]:
        raise NotImplementedError  # pragma: no cover

    def _merge(self, runs: list[_Run]) -> list[np.ndarray]:
        raise NotImplementedError  # pragma: no cover


def _as_1d(x: object, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        msg = f"{name} must be a 1-D array, got {arr.ndim} dimensions"
        raise ParameterError(msg)
    if arr.size and arr.dtype.kind not in "iu":
        msg = f"{name} must hold integers, got dtype {arr.dtype}"
        raise ParameterError(msg)
    return arr


class KeySet(_RunSet):
    """Exact, persistent set of uint64 keys (row hashes), in run files ``keys-*.npy``.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> s = KeySet.open(d)
    >>> s.add(np.array([5, 7, 5], np.uint64)).tolist()
    [True, True, False]
    >>> KeySet.open(d, s.runs).contains(np.array([7, 8], np.uint64)).tolist()
    [True, False]
    """

    _prefix = "keys"
    _dtype = np.uint64

    def _validate(self, *keys: object) -> tuple[np.ndarray, ...]:
        if len(keys) != 1:
            msg = f"KeySet takes one array of keys, got {len(keys)}"
            raise ParameterError(msg)
        k = _as_1d(keys[0], "keys")
        if k.size and k.dtype.kind == "i" and int(k.min()) < 0:
            msg = "keys must be >= 0 (uint64); view signed hashes as uint64 first"
            raise ParameterError(msg)
        return (np.ascontiguousarray(k, dtype=np.uint64),)

    def _probe(self, run: _Run, keys: tuple[np.ndarray, ...], found: np.ndarray) -> None:
        _contains_keys_kernel(keys[0], run.base, run.shift, run.starts, run.values, found)

    def _sort(
        self, keys: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
        k = keys[0]
        base, shift, nb = _bucket_index(int(k.min()), int(k.max()), k.shape[0], np.uint64)
        starts, sv, sp = _bucket_sort(k, k, base, shift, nb)
        return starts, sv, sp, (base, shift)

    @staticmethod
    def _run_arrays(values: np.ndarray) -> list[np.ndarray]:
        n = values.shape[0]
        base, shift, nb = _bucket_index(int(values[0]), int(values[-1]), n, np.uint64)
        starts = _hist_kernel(values, base, shift, nb)
        np.cumsum(starts, out=starts)
        return [_meta(n, int(base), int(shift), np.uint64), np.empty(0, np.int64), starts, values]

    def _new_run_arrays(
        self, values: np.ndarray, kept: np.ndarray, index: object
    ) -> list[np.ndarray]:
        n = values.shape[0]
        if 2 * n < kept.shape[0] * _KEYS_PER_BUCKET:  # few new keys: buckets sized for them
            return self._run_arrays(values)
        base, shift = index  # most keys new: the queries' buckets, about 4 keys each
        starts = np.zeros(kept.shape[0] + 1, dtype=np.int64)
        np.cumsum(kept, out=starts[1:])
        return [_meta(n, int(base), int(shift), np.uint64), np.empty(0, np.int64), starts, values]

    def _merge(self, runs: list[_Run]) -> list[np.ndarray]:
        merged = runs[0].values
        for r in runs[1:]:
            merged = _merge_keys_kernel(merged, r.values)
        return self._run_arrays(merged)


class PairSet(_RunSet):
    """Exact, persistent set of ``(a, b)`` int64 pairs, ``0 <= a < 2**31`` (dense customer
    codes), ``b`` any int64; in run files ``pairs-*.npy``.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> s = PairSet.open(d)
    >>> s.add(np.array([1, 1, 2]), np.array([-5, -5, -5])).tolist()
    [True, False, True]
    >>> PairSet.open(d, s.runs).contains(np.array([1, 2, 1]), np.array([-5, 0, 0])).tolist()
    [True, False, False]
    """

    _prefix = "pairs"
    _dtype = np.int64

    def _validate(self, *keys: object) -> tuple[np.ndarray, ...]:
        if len(keys) != 2:
            msg = f"PairSet takes two arrays (a, b), got {len(keys)}"
            raise ParameterError(msg)
        a = _as_1d(keys[0], "a")
        b = _as_1d(keys[1], "b")
        if a.shape != b.shape:
            msg = f"a and b must have one length, got {a.shape[0]} and {b.shape[0]}"
            raise ParameterError(msg)
        if a.size and (int(a.min()) < 0 or int(a.max()) >= _A_LIMIT):
            msg = "a must hold customer codes in 0 .. 2**31 - 1"
            raise ParameterError(msg)
        if b.size and b.dtype == np.uint64 and int(b.max()) >= 1 << 63:
            msg = "b must fit int64"
            raise ParameterError(msg)
        return np.ascontiguousarray(a, dtype=np.int64), np.ascontiguousarray(b, dtype=np.int64)

    def _probe(self, run: _Run, keys: tuple[np.ndarray, ...], found: np.ndarray) -> None:
        a, b = keys
        _contains_pairs_kernel(a, b, run.ua, run.base, run.starts, run.values, found)

    def _sort(
        self, keys: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
        a, b = keys
        n = a.shape[0]
        lo, hi = int(a.min()), int(a.max())
        if hi - lo + 1 <= max(2 * n, 1024):  # dense: counting sort by a, then each segment by b
            starts, sv, sp = _bucket_sort(a, b, np.int64(lo), np.int64(0), hi - lo + 1)
            return starts, sv, sp, lo
        # codes spanning a wide range: bucket by the rank of the code among the distinct codes
        # (np.unique with return_inverse is 4x slower than these two bucket sorts)
        base, shift, nb = _bucket_index(lo, hi, n, np.int64)
        _, sa, p1 = _bucket_sort(a, a, base, shift, nb)
        ua, rank = _rank_kernel(sa, p1)
        del sa, p1
        starts, sv, sp = _bucket_sort(rank, b, np.int64(0), np.int64(0), ua.shape[0])
        return starts, sv, sp, ua

    def _new_run_arrays(
        self, values: np.ndarray, kept: np.ndarray, index: object
    ) -> list[np.ndarray]:
        n = values.shape[0]
        if isinstance(index, int):  # dense codes from index
            nz = np.flatnonzero(kept)
            lo, hi = index + int(nz[0]), index + int(nz[-1])
            if hi - lo + 1 <= max(2 * n, 1024):
                counts = np.zeros(hi - lo + 2, dtype=np.int64)
                counts[1:] = kept[nz[0] : nz[-1] + 1]
                return self._arrays(n, lo, np.empty(0, np.int64), np.cumsum(counts), values)
            ua = nz.astype(np.int64) + index
            kept = kept[nz]
        else:
            keep = kept > 0
            ua, kept = index[keep], kept[keep]
        starts = np.zeros(ua.shape[0] + 1, dtype=np.int64)
        np.cumsum(kept, out=starts[1:])
        return self._arrays(n, 0, ua, starts, values)

    @staticmethod
    def _arrays(
        n: int, base: int, ua: np.ndarray, starts: np.ndarray, values: np.ndarray
    ) -> list[np.ndarray]:
        return [_meta(n, base, 0, np.int64), ua, starts, values]

    def _merge(self, runs: list[_Run]) -> list[np.ndarray]:
        r = runs[0]
        ua, base, starts, values = r.ua, r.base, r.starts, r.values
        for r in runs[1:]:
            ua, starts, values = _merge_pairs_kernel(
                ua, base, starts, values, r.ua, r.base, r.starts, r.values
            )
            base = np.int64(0)
        n = values.shape[0]
        lo, hi = int(ua[0]), int(ua[-1])
        if hi - lo + 1 <= max(2 * n, 1024):
            counts = np.zeros(hi - lo + 2, dtype=np.int64)
            counts[ua - lo + 1] = np.diff(starts)
            return self._arrays(n, lo, np.empty(0, np.int64), np.cumsum(counts), values)
        return self._arrays(n, 0, ua, starts, values)


def remove_unlisted(folder: Path, keep: Iterable[str], prefix: str) -> None:
    """Delete the run files ``{prefix}-*.npy`` (and leftover temporary files of such runs) in
    ``folder`` that ``keep`` does not name; call it after committing the manifest, while no
    :meth:`~KeySet.add` or :meth:`~KeySet.compact` of the folder is under way.

    Raises
    ------
    ParameterError
        An empty ``prefix``, or one holding a path separator.
    """
    if not prefix or "/" in prefix or os.sep in prefix:
        msg = f"prefix must be a plain, non-empty file-name prefix, got {prefix!r}"
        raise ParameterError(msg)
    folder = Path(folder)
    kept = {str(k) for k in keep}
    for p in folder.iterdir():
        name = p.name
        stem = name[1:-4] if name.startswith(".") and name.endswith(".tmp") else None
        if stem is not None:
            if stem.startswith(f"{prefix}-") and stem.endswith(".npy"):
                p.unlink(missing_ok=True)
            continue
        if name.startswith(f"{prefix}-") and name.endswith(".npy") and name not in kept:
            p.unlink(missing_ok=True)
