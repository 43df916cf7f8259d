"""Per-customer state of the rule aggregates and ``top_category``, in the row pass.

Sums and counts are masked scatter-adds into arrays indexed by customer code. Distinct things
per customer (the orders of ``orders(sku: ...)``, the values of ``distinct(col)``) and the
revenue per (customer, category) are kept exactly in :class:`PairTable`: an open-addressing
hash table of ``(customer code, int64 key)`` pairs (Fibonacci hashing, linear probing, grown by
doubling below a load of 0.5), with a float64 sum per pair and a count of new pairs per
customer. Keys are exact (order id keys, dictionary codes of values, value bits), never hashes
of values, so the numbers do not depend on how the rows are split into batches.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from fastseg.errors import ParameterError
from fastseg.kernels import CACHE

__all__ = ["CategoryRevenue", "PairTable", "masked_add", "masked_bits", "masked_count"]

_LOAD = 0.5


@njit(cache=CACHE)
def _masked_add_kernel(codes, mask, values, out):  # pragma: no cover - jitted
    for i in range(codes.shape[0]):
        if mask[i]:
            out[codes[i]] += values[i]


@njit(cache=CACHE)
def _masked_count_kernel(codes, mask, out):  # pragma: no cover - jitted
    for i in range(codes.shape[0]):
        if mask[i]:
            out[codes[i]] += 1


def _check(codes: NDArray[np.int64], mask: NDArray[np.bool_], out: np.ndarray) -> None:
    if codes.shape[0] != mask.shape[0]:
        msg = f"codes ({codes.shape[0]}) and mask ({mask.shape[0]}) must have the same length"
        raise ParameterError(msg)
    if codes.shape[0] and int(codes.max()) >= out.shape[0]:
        msg = f"customer code {int(codes.max())} beyond the {out.shape[0]} accumulators"
        raise ParameterError(msg)


def masked_add(
    codes: NDArray[np.int64],
    mask: NDArray[np.bool_],
    values: NDArray[np.float64],
    out: NDArray[np.float64],
) -> None:
    """``out[codes[i]] += values[i]`` for every ``i`` where ``mask[i]`` (in place)."""
    _check(codes, mask, out)
    if values.shape[0] != codes.shape[0] or out.dtype != np.float64:
        msg = "masked_add: values must match codes and out must be float64"
        raise ParameterError(msg)
    _masked_add_kernel(
        np.ascontiguousarray(codes, np.int64),
        np.ascontiguousarray(mask, np.bool_),
        np.ascontiguousarray(values, np.float64),
        out,
    )


def masked_count(codes: NDArray[np.int64], mask: NDArray[np.bool_], out: NDArray[np.int64]) -> None:
    """``out[codes[i]] += 1`` for every ``i`` where ``mask[i]`` (in place)."""
    _check(codes, mask, out)
    if out.dtype != np.int64:
        msg = "masked_count: out must be int64"
        raise ParameterError(msg)
    _masked_count_kernel(
        np.ascontiguousarray(codes, np.int64), np.ascontiguousarray(mask, np.bool_), out
    )


@njit(cache=CACHE)
def _masked_bits_kernel(codes, keys, mask, bits, over):  # pragma: no cover - jitted
    n_over = 0
    for i in range(codes.shape[0]):
        if mask[i]:
            k = keys[i]
            if 0 <= k < 64:
                bits[codes[i]] |= np.uint64(1) << np.uint64(k)
            else:
                over[i] = True
                n_over += 1
    return n_over


def masked_bits(
    codes: NDArray[np.int64],
    keys: NDArray[np.int64],
    mask: NDArray[np.bool_],
    bits: NDArray[np.uint64],
) -> NDArray[np.bool_] | None:
    """Set bit ``keys[i]`` of ``bits[codes[i]]`` where ``mask[i]`` and the key is in 0..63;
    returns the masked rows whose key is not (None when there are none)."""
    _check(codes, mask, bits)
    if keys.shape[0] != codes.shape[0] or bits.dtype != np.uint64:
        msg = "masked_bits: keys must match codes and bits must be uint64"
        raise ParameterError(msg)
    over = np.zeros(codes.shape[0], np.bool_)
    n = _masked_bits_kernel(
        np.ascontiguousarray(codes, np.int64),
        np.ascontiguousarray(keys, np.int64),
        np.ascontiguousarray(mask, np.bool_),
        bits,
        over,
    )
    return over if n else None


@njit(cache=CACHE, inline="always")
def _slot(code, key, shift):  # pragma: no cover - jitted
    x = np.uint64(code) * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(key)
    x ^= x >> np.uint64(31)
    return (x * np.uint64(0x9E3779B97F4A7C15)) >> shift


@njit(cache=CACHE)
def _insert_kernel(
    table_code, table_key, table_sum, shift, limit, n, codes, keys, mask, values, counts, start
):  # pragma: no cover - jitted
    """Insert rows ``start..`` of the batch (``mask``ed) until the table holds ``limit`` pairs;
    returns ``(next row, pairs held)``. ``table_code`` -1: empty slot; ``counts[code]`` +1 per
    new pair; ``values`` (may be empty) added to the pair's sum."""
    size = np.uint64(table_code.shape[0] - 1)
    with_values = values.shape[0] > 0
    i = start
    while i < codes.shape[0]:
        if mask[i]:
            if n >= limit:
                return i, n
            c = codes[i]
            k = keys[i]
            h = _slot(c, k, shift)
            while True:
                tc = table_code[h]
                if tc == -1:
                    table_code[h] = c
                    table_key[h] = k
                    counts[c] += 1
                    n += 1
                    break
                if tc == c and table_key[h] == k:
                    break
                h = (h + np.uint64(1)) & size
            if with_values:
                table_sum[h] += values[i]
        i += 1
    return i, n


@njit(cache=CACHE)
def _rehash_kernel(
    old_code, old_key, old_sum, new_code, new_key, new_sum, shift
):  # pragma: no cover - jitted
    size = np.uint64(new_code.shape[0] - 1)
    for i in range(old_code.shape[0]):
        c = old_code[i]
        if c == -1:
            continue
        h = _slot(c, old_key[i], shift)
        while new_code[h] != -1:
            h = (h + np.uint64(1)) & size
        new_code[h] = c
        new_key[h] = old_key[i]
        new_sum[h] = old_sum[i]


@njit(cache=CACHE)
def _top_kernel(code, key, total, rank, best_key, best_sum):  # pragma: no cover - jitted
    for i in range(code.shape[0]):
        c = code[i]
        if c == -1:
            continue
        k = key[i]
        s = total[i]
        b = best_key[c]
        if b == -1 or s > best_sum[c] or (s == best_sum[c] and rank[k] < rank[b]):
            best_key[c] = k
            best_sum[c] = s


class PairTable:
    """An exact set of ``(customer code, int64 key)`` pairs with a float64 sum per pair.

    ``counts[code]`` is the number of distinct keys of each customer (it grows with
    :meth:`grow`); :meth:`entries` gives every pair with its sum.
    """

    def __init__(self, customers: int = 1, capacity: int = 1 << 10) -> None:
        cap = 1 << max(4, int(capacity - 1).bit_length())
        self._alloc(cap)
        self.n = 0
        self.counts = np.zeros(max(1, customers), np.int64)

    def _alloc(self, cap: int) -> None:
        self.code = np.full(cap, -1, np.int64)
        self.key = np.zeros(cap, np.int64)
        self.sum = np.zeros(cap, np.float64)
        self.shift = np.uint64(64 - (cap.bit_length() - 1))

    def grow(self, customers: int) -> None:
        """Room for customer codes below ``customers``."""
        if customers > self.counts.shape[0]:
            grown = np.zeros(max(customers, 2 * self.counts.shape[0]), np.int64)
            grown[: self.counts.shape[0]] = self.counts
            self.counts = grown

    def _double(self) -> None:
        old = (self.code, self.key, self.sum)
        self._alloc(2 * old[0].shape[0])
        _rehash_kernel(*old, self.code, self.key, self.sum, self.shift)

    def add(
        self,
        codes: NDArray[np.int64],
        keys: NDArray[np.int64],
        mask: NDArray[np.bool_],
        values: NDArray[np.float64] | None = None,
    ) -> None:
        """Insert the pairs ``(codes[i], keys[i])`` where ``mask[i]``; add ``values[i]`` to
        their sums."""
        m = codes.shape[0]
        if (
            keys.shape[0] != m
            or mask.shape[0] != m
            or (values is not None and values.shape[0] != m)
        ):
            msg = "PairTable.add: codes, keys, mask and values must have the same length"
            raise ParameterError(msg)
        if m == 0:
            return
        if int(codes.max()) >= self.counts.shape[0] or int(codes.min()) < 0:
            msg = f"PairTable.add: customer codes must lie in 0..{self.counts.shape[0] - 1}"
            raise ParameterError(msg)
        codes = np.ascontiguousarray(codes, np.int64)
        keys = np.ascontiguousarray(keys, np.int64)
        mask = np.ascontiguousarray(mask, np.bool_)
        vals = (
            np.empty(0, np.float64) if values is None else np.ascontiguousarray(values, np.float64)
        )
        start = 0
        while True:
            limit = int(self.code.shape[0] * _LOAD)
            start, self.n = _insert_kernel(
                self.code, self.key, self.sum, self.shift, limit, self.n,
                codes, keys, mask, vals, self.counts, start,
            )  # fmt: skip
            if start >= m:
                return
            self._double()

    def entries(self) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
        """Every pair ``(codes, keys, sums)``, in table order."""
        used = self.code != -1
        return self.code[used], self.key[used], self.sum[used]

    def top(self, customers: int, rank: NDArray[np.int64]) -> NDArray[np.int64]:
        """Per customer code, the key with the largest sum (ties: the smallest ``rank[key]``),
        -1 for a customer without a pair. Keys must index ``rank``."""
        best = np.full(max(customers, self.counts.shape[0]), -1, np.int64)
        best_sum = np.zeros(best.shape[0], np.float64)
        rank = np.ascontiguousarray(rank, np.int64)
        if self.n and int(self.key[self.code != -1].max()) >= rank.shape[0]:
            msg = "PairTable.top: a key beyond rank"
            raise ParameterError(msg)
        _top_kernel(self.code, self.key, self.sum, rank, best, best_sum)
        return best[:customers]


#: (category, revenue) slots kept with each customer before the shared pair table is used: a
#: 64-byte record (one cache line) of 8 category bytes (category code + 1; 0: free) and 7 sums
SLOTS = 7
_BYTE = np.uint64(0xFF)


@njit(cache=CACHE)
def _slots_kernel(rec_u, rec_f, codes, cats, amount, over):  # pragma: no cover - jitted
    """Add each row with a category and an amount >= 0 to its customer's slot of that category
    (the first free one when new); ``over[i]`` set where the slots are full or the category
    code is beyond 254 (none taken). ``rec_u``/``rec_f``: one buffer as uint64 and float64."""
    n_over = 0
    for i in range(codes.shape[0]):
        k = cats[i]
        a = amount[i]
        if k < 0 or not a >= 0.0:
            continue
        c = codes[i]
        done = False
        if k < 255:
            packed = rec_u[c, 0]
            want = np.uint64(k + 1)
            for j in range(7):
                b = (packed >> np.uint64(8 * j)) & np.uint64(0xFF)
                if b == want:
                    rec_f[c, j + 1] += a
                    done = True
                    break
                if b == 0:
                    rec_u[c, 0] = packed | (want << np.uint64(8 * j))
                    rec_f[c, j + 1] = a
                    done = True
                    break
        if not done:
            over[i] = True
            n_over += 1
    return n_over


@njit(cache=CACHE)
def _slots_top_kernel(rec_u, rec_f, rank, best_key, best_sum):  # pragma: no cover - jitted
    for c in range(rec_u.shape[0]):
        packed = rec_u[c, 0]
        for j in range(7):
            b = (packed >> np.uint64(8 * j)) & np.uint64(0xFF)
            if b == 0:
                break
            k = np.int64(b) - 1
            s = rec_f[c, j + 1]
            cur = best_key[c]
            if cur == -1 or s > best_sum[c] or (s == best_sum[c] and rank[k] < rank[cur]):
                best_key[c] = k
                best_sum[c] = s


def _records(n: int) -> NDArray[np.uint64]:
    """``n`` zeroed 64-byte records, aligned to 64 bytes (one cache line each)."""
    buf = np.zeros(n * 8 + 8, np.uint64)
    skip = (-buf.ctypes.data % 64) // 8
    return buf[skip : skip + n * 8].reshape(n, 8)


class CategoryRevenue:
    """Gross revenue per (customer code, category code): :data:`SLOTS` slots per customer in
    one cache line, the categories beyond them in a :class:`PairTable`. A customer's category
    lives in exactly one of the two, so each sum is that of its rows."""

    def __init__(self, customers: int = 1) -> None:
        self.rec = _records(max(1, customers))
        self.table = PairTable(max(1, customers), 1 << 10)

    def grow(self, customers: int) -> None:
        """Room for customer codes below ``customers``."""
        have = self.rec.shape[0]
        if customers > have:
            rec = _records(max(customers, 2 * have))
            rec[:have] = self.rec
            self.rec = rec
        self.table.grow(customers)

    def add(
        self, codes: NDArray[np.int64], cats: NDArray[np.int64], amount: NDArray[np.float64]
    ) -> None:
        """Add ``amount[i]`` to ``(codes[i], cats[i])`` where ``cats[i] >= 0`` and the amount
        is >= 0."""
        m = codes.shape[0]
        if cats.shape[0] != m or amount.shape[0] != m:
            msg = "CategoryRevenue.add: codes, cats and amount must have the same length"
            raise ParameterError(msg)
        if m == 0:
            return
        if int(codes.max()) >= self.rec.shape[0] or int(codes.min()) < 0:
            msg = f"CategoryRevenue.add: customer codes must lie in 0..{self.rec.shape[0] - 1}"
            raise ParameterError(msg)
        codes = np.ascontiguousarray(codes, np.int64)
        cats = np.ascontiguousarray(cats, np.int64)
        amount = np.ascontiguousarray(amount, np.float64)
        over = np.zeros(m, np.bool_)
        if _slots_kernel(self.rec, self.rec.view(np.float64), codes, cats, amount, over):
            self.table.add(codes, cats, over, amount)

    def entries(self) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
        """Every (customer code, category code, revenue)."""
        packed = self.rec[:, 0]
        byte = np.stack([(packed >> np.uint64(8 * j)) & _BYTE for j in range(SLOTS)], axis=1)
        used = byte != 0
        rows = np.nonzero(used)[0].astype(np.int64)
        sums = self.rec.view(np.float64)[:, 1:][used]
        t_code, t_key, t_sum = self.table.entries()
        return (
            np.concatenate([rows, t_code]),
            np.concatenate([byte[used].astype(np.int64) - 1, t_key]),
            np.concatenate([sums, t_sum]),
        )

    def top(self, customers: int, rank: NDArray[np.int64]) -> NDArray[np.int64]:
        """Per customer code, the category with the largest revenue (ties: the smallest
        ``rank``), -1 for none. Category codes must index ``rank``."""
        self.grow(customers)
        rank = np.ascontiguousarray(rank, np.int64)
        best = np.full(self.rec.shape[0], -1, np.int64)
        best_sum = np.zeros(best.shape[0], np.float64)
        _slots_top_kernel(self.rec, self.rec.view(np.float64), rank, best, best_sum)
        t = self.table
        if t.n:
            _top_kernel(t.code, t.key, t.sum, rank, best, best_sum)
        return best[:customers]
