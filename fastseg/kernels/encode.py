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

__all__ = ["IdEncoder", "needs_trim"]

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

    def table(self) -> tuple[NDArray[np.int64], NDArray[np.int32]] | None:
        """The hash table (keys, codes) of a ``hash``-mode encoder (None otherwise), to save
        with :attr:`uniques` and give back to :meth:`restore` in a later process."""
        return (self._keys, self._vals) if self.mode == "hash" else None

    @classmethod
    def restore(
        cls, uniques: NDArray[np.int64], keys: NDArray[np.int64], vals: NDArray[np.int32]
    ) -> IdEncoder:
        """A ``hash``-mode encoder as :meth:`table` and :attr:`uniques` left it (no id hashed
        again: 9M ids cost ~1 s to insert, their table ~0.2 s to read)."""
        n = uniques.shape[0]
        if (
            keys.shape[0] != vals.shape[0]
            or keys.shape[0] < 2 * n
            or keys.shape[0] & (keys.shape[0] - 1)
        ):
            msg = "IdEncoder.restore: not the table of these ids"
            raise ParameterError(msg)
        if int(np.count_nonzero(vals >= 0)) != n:
            msg = "IdEncoder.restore: not the table of these ids"
            raise ParameterError(msg)
        enc = cls()
        enc._uniques = np.empty(max(n, 1 << 10), np.int64)
        enc._uniques[:n] = uniques
        enc.n_unique = n
        enc._keys = np.ascontiguousarray(keys, np.int64)
        enc._vals = np.ascontiguousarray(vals, np.int32)
        return enc

    def close(self) -> None:
        """Free the lookup tables (codes can no longer be given); :attr:`uniques` stays."""
        if self.mode == "direct":
            self._lut = np.empty(0, np.int32)
        else:
            self._keys = np.empty(0, np.int64)
            self._vals = np.empty(0, np.int32)
        self._uniques = self._uniques[: self.n_unique].copy()

    def sort_order(self) -> NDArray[np.int64]:
        """Codes in ascending id order: ``uniques[sort_order()]`` is sorted."""
        import polars as pl  # its sort runs on every core (the ids are distinct: any sort will do)

        return pl.Series(self.uniques).arg_sort().to_numpy().astype(np.int64)


# ------------------------------------------------------------------------------- text ids

_P1 = np.uint64(0x9E3779B97F4A7C15)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)


@njit(cache=CACHE, inline="always")
def _fmix(x):  # pragma: no cover - jitted
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


@njit(cache=CACHE, nogil=True)
def _hash_text_kernel(offsets, data, out):  # pragma: no cover - jitted
    # 64-bit hash of each byte string data[offsets[i]:offsets[i+1]], eight bytes at a time
    for i in range(out.shape[0]):
        lo, hi = offsets[i], offsets[i + 1]
        h = np.uint64(hi - lo) * _P2
        j = lo
        while j + 8 <= hi:
            w = np.uint64(0)
            for b in range(8):
                w |= np.uint64(data[j + b]) << np.uint64(8 * b)
            h = (h ^ _fmix(w * _P1)) * _P2
            j += 8
        w = np.uint64(0)
        b = 0
        while j < hi:
            w |= np.uint64(data[j]) << np.uint64(8 * b)
            j += 1
            b += 1
        out[i] = np.int64(_fmix(h ^ (w * _P1)))


@njit(cache=CACHE, nogil=True)
def _append_text_kernel(offsets, data, rows, s_offsets, s_data, n_names, n_bytes):
    # pragma: no cover - jitted; append strings `rows` of (offsets, data) to the store
    for k in range(rows.shape[0]):
        i = rows[k]
        lo, hi = offsets[i], offsets[i + 1]
        for j in range(lo, hi):
            s_data[n_bytes] = data[j]
            n_bytes += 1
        n_names += 1
        s_offsets[n_names] = n_bytes
    return n_bytes


@njit(cache=CACHE, nogil=True)
def _check_text_kernel(offsets, data, codes, s_offsets, s_data, start, length):
    # pragma: no cover - jitted; first i whose string differs from its code's, or -1.
    # The stored strings sit anywhere in memory: a first loop only gathers where each starts
    # (simple independent loads, many cache misses in flight at once), a second touches their
    # first byte (the same), and only then are the bytes compared.
    n = codes.shape[0]
    for i in range(n):
        c = codes[i]
        start[i] = s_offsets[c]
        length[i] = s_offsets[c + 1] - start[i]
    touch = np.uint8(0)
    for i in range(n):
        if length[i] > 0:
            touch ^= s_data[start[i]]
    for i in range(n):
        lo, hi = offsets[i], offsets[i + 1]
        if hi - lo != length[i]:
            return i
        slo = start[i]
        for j in range(hi - lo):
            if data[lo + j] != s_data[slo + j]:
                return i
    return -1 if touch >= 0 else -2


@njit(cache=CACHE)
def _is_space(cp):  # pragma: no cover - jitted
    """Unicode White_Space (what Polars' ``strip_chars()`` and Arrow's trim remove)."""
    if cp == 32 or 9 <= cp <= 13:
        return True
    if cp < 128:
        return False
    return (
        cp == 0x85
        or cp == 0xA0
        or cp == 0x1680
        or 0x2000 <= cp <= 0x200A
        or cp == 0x2028
        or cp == 0x2029
        or cp == 0x202F
        or cp == 0x205F
        or cp == 0x3000
    )


@njit(cache=CACHE)
def _code_point(data, j, end):  # pragma: no cover - jitted
    """The code point whose UTF-8 lead byte is ``data[j]`` (0 when cut off by ``end`` or 4 bytes
    long: no 4-byte character is whitespace)."""
    c = data[j]
    if c < 0x80:
        return c
    if c < 0xE0:
        return ((c & 0x1F) << 6) | (data[j + 1] & 0x3F) if j + 1 < end else 0
    if c < 0xF0:
        if j + 2 >= end:
            return 0
        return ((c & 0x0F) << 12) | ((data[j + 1] & 0x3F) << 6) | (data[j + 2] & 0x3F)
    return 0


@njit(cache=CACHE)
def _needs_trim_kernel(offsets, data):  # pragma: no cover - jitted
    for i in range(offsets.shape[0] - 1):
        a, b = offsets[i], offsets[i + 1]
        if a == b or _is_space(_code_point(data, a, b)):  # empty, or a space first
            return True
        j = b - 1  # the last code point: back to its lead byte
        while j > a and (data[j] & 0xC0) == 0x80:
            j -= 1
        if _is_space(_code_point(data, j, b)):
            return True
    return False


def needs_trim(arr: object) -> bool:
    """True when some text of an Arrow string array (no nulls) is empty or starts or ends with
    Unicode whitespace — the ids that :func:`fastseg.sources.trimmed_ids` must change. One pass
    over the offsets and the first and last characters: the common case costs next to nothing.
    """
    offsets, data = TextIds._buffers(arr)
    return bool(_needs_trim_kernel(offsets, data))


class TextIds:
    """Dense codes for text ids given as Arrow strings, batch after batch, exactly.

    Each text is hashed (64 bits) and coded by an :class:`IdEncoder`; the first text of every
    code is kept (one byte buffer and its offsets) and every later text is compared with it, so
    two texts sharing a hash can never share a code unnoticed: :meth:`encode` returns the index
    of the first such text instead of codes.

    Examples
    --------
    >>> import pyarrow as pa
    >>> ids = TextIds()
    >>> ids.encode(pa.array(["b", "a", "b"]))[0].tolist(), ids.encode(pa.array(["c", "a"]))[0].tolist()
    ([0, 1, 0], [2, 1])
    >>> ids.names().to_pylist()
    ['b', 'a', 'c']
    """

    def __init__(self) -> None:
        self.encoder = IdEncoder()
        self._offsets = np.zeros(1 << 10, np.int64)
        self._data = np.empty(1 << 16, np.uint8)
        self._bytes = 0

    @property
    def n_unique(self) -> int:
        return self.encoder.n_unique

    @staticmethod
    def _buffers(arr: object) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
        import pyarrow as pa

        assert isinstance(arr, pa.Array)
        if arr.null_count:
            msg = "TextIds.encode: the texts must have no nulls"
            raise ParameterError(msg)
        if pa.types.is_string(arr.type):
            kind: object = np.int32
        elif pa.types.is_large_string(arr.type):
            kind = np.int64
        else:
            msg = f"TextIds.encode: expected Arrow strings, got {arr.type}"
            raise ParameterError(msg)
        bufs = arr.buffers()
        n = len(arr)
        offsets = np.frombuffer(bufs[1], dtype=kind)[arr.offset : arr.offset + n + 1]
        data = (
            np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
        )
        return offsets.astype(np.int64), data

    def encode(self, arr: object) -> tuple[NDArray[np.int32], int]:
        """``(codes, -1)`` for the texts of an Arrow string array with no nulls, or
        ``(codes, i)`` when text ``i`` shares its hash with another text (codes unusable)."""
        offsets, data = self._buffers(arr)
        n = offsets.shape[0] - 1
        hashed = np.empty(n, np.int64)
        _hash_text_kernel(offsets, data, hashed)
        before = self.encoder.n_unique
        codes = self.encoder.encode(hashed)
        new = self.encoder.n_unique - before
        if new:
            rows = np.flatnonzero(codes >= before)
            first = np.empty(new, np.int64)
            first[codes[rows][::-1] - before] = rows[::-1]  # the first row of each new code
            need = self._bytes + int((offsets[first + 1] - offsets[first]).sum())
            if need > self._data.shape[0]:
                grown = np.empty(max(need, 2 * self._data.shape[0]), np.uint8)
                grown[: self._bytes] = self._data[: self._bytes]
                self._data = grown
            if self.encoder.n_unique + 1 > self._offsets.shape[0]:
                grown_o = np.zeros(
                    max(self.encoder.n_unique + 1, 2 * self._offsets.shape[0]), np.int64
                )
                grown_o[: before + 1] = self._offsets[: before + 1]
                self._offsets = grown_o
            self._bytes = _append_text_kernel(
                offsets, data, first, self._offsets, self._data, before, self._bytes
            )
        start, length = np.empty(n, np.int64), np.empty(n, np.int64)
        bad = _check_text_kernel(offsets, data, codes, self._offsets, self._data, start, length)
        return codes, int(bad)

    def names(self) -> object:
        """The first text of every code, in code order, as an Arrow large-string array."""
        import pyarrow as pa

        n = self.encoder.n_unique
        offsets = pa.py_buffer(self._offsets[: n + 1].copy())
        data = pa.py_buffer(self._data[: self._bytes].copy())
        return pa.LargeStringArray.from_buffers(n, offsets, data)
