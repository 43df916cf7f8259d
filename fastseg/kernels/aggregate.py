"""Per-customer aggregation of orders: dense customer codes, then one fused pass over the rows.

Two steps, each a private kernel behind a typed wrapper:

* :func:`encode_int_ids` turns arbitrary ``int64`` customer ids into dense codes ``0..C-1`` in
  ascending id order: a direct lookup table when the ids span a range not much larger than the
  rows, an open-addressing hash table (then a sort of the C distinct ids) otherwise.
* :func:`aggregate_orders` makes one pass over the rows and updates one record per order row
  (:func:`acc_dtype`: all fields of a customer sit in one or two cache lines, so each row costs
  about one cache miss, whatever the number of features).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from fastseg.errors import ParameterError
from fastseg.kernels import CACHE

__all__ = [
    "acc_dtype",
    "accumulate",
    "add_windows",
    "copy_records",
    "STATE_DTYPE",
    "STATE_FIELDS",
    "aggregate_events",
    "compact_rows",
    "aggregate_orders",
    "encode_int_ids",
    "grow_accumulators",
    "merge_accumulators",
    "CategoryCodes",
    "new_accumulators",
]

_I32_MAX = np.iinfo(np.int32).max
_I32_MIN = np.iinfo(np.int32).min


def acc_dtype(n_windows: int) -> np.dtype:
    """One customer's accumulator: a record of 64 + 12 x ``n_windows`` bytes (rounded to 8).

    ``first_day``/``last_day`` of the orders (``INT32_MAX``/``INT32_MIN`` when none);
    ``orders``, ``refunds`` (rows with amount < 0), ``discount_orders``; per window ``w``:
    ``win_orders[w]``, ``win_revenue[w]``; ``monetary`` (all amounts), ``gross`` (amounts >= 0),
    ``refund_amount`` (-sum of amounts < 0); ``cats``, a bit per category code below 64.
    One record is one or two cache lines: each order row costs about one cache miss.
    """
    return np.dtype(
        [
            ("first_day", np.int32),
            ("last_day", np.int32),
            ("orders", np.int32),
            ("refunds", np.int32),
            ("discount_orders", np.int32),
            ("win_orders", np.int32, (n_windows,)),
            ("monetary", np.float64),
            ("gross", np.float64),
            ("refund_amount", np.float64),
            ("win_revenue", np.float64, (n_windows,)),
            ("cats", np.uint64),
        ],
        align=True,
    )


# ----------------------------------------------------------------------------------- id encoding


@njit(cache=CACHE)
def _remap_kernel(codes, rank):  # pragma: no cover - jitted
    for i in range(codes.shape[0]):
        codes[i] = rank[codes[i]]


def encode_int_ids(ids: NDArray[np.int64]) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
    """Dense codes for integer ids, in ascending id order.

    Parameters
    ----------
    ids
        ``int64`` customer ids, no nulls.

    Returns
    -------
    codes, uniques
        ``codes[i]`` in ``0..C-1`` (``int32``) with ``uniques[codes[i]] == ids[i]``; ``uniques``
        ascending.

    Examples
    --------
    >>> codes, uniques = encode_int_ids(np.array([30, 10, 30, 20]))
    >>> codes.tolist(), uniques.tolist()
    ([2, 0, 2, 1], [10, 20, 30])
    """
    from fastseg.kernels.encode import IdEncoder

    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.shape[0] == 0:
        return np.empty(0, np.int32), np.empty(0, np.int64)
    lo, hi = int(ids.min()), int(ids.max())
    enc = IdEncoder(lo, hi, max_span=max(4 * ids.shape[0], 1 << 20))
    codes = enc.encode(ids)  # first-seen order
    order = enc.sort_order()
    rank = np.empty(order.shape[0], np.int32)
    rank[order] = np.arange(order.shape[0], dtype=np.int32)
    _remap_kernel(codes, rank)
    return codes, enc.uniques[order]


# ----------------------------------------------------------------------------------- aggregation


@njit(cache=CACHE, inline="always")
def accumulate(r, d, a, flags, k, since):  # pragma: no cover - jitted
    """Add one clean row (day ``d``, amount ``a``, flags, category code ``k``) to record ``r``."""
    if a >= 0.0:
        o = np.int32(flags & 1)
        r.orders += o
        r.discount_orders += o & np.int32(flags >> 1)
        if d < r.first_day:
            r.first_day = d
        if d > r.last_day:
            r.last_day = d
        r.gross += a
        if k >= 0:
            r.cats |= np.uint64(1) << np.uint64(k)
    else:
        o = np.int32(0)
        r.refunds += 1
        r.refund_amount -= a
    r.monetary += a
    add_to_windows(r, d, a, o, since)


@njit(cache=CACHE, inline="always")
def add_to_windows(r, d, a, o, since):  # pragma: no cover - jitted
    """Add one row (day ``d``, amount ``a``, order count ``o``) to record ``r``'s windows."""
    # windows are nested (sorted ascending by length): test the widest first, usually false
    for w in range(since.shape[0] - 1, -1, -1):
        if d < since[w]:
            break
        r.win_orders[w] += o
        r.win_revenue[w] += a


@njit(cache=CACHE, nogil=True)
def _aggregate_direct_kernel(codes, day, amount, flags, cats, since, acc):  # pragma: no cover
    for i in range(codes.shape[0]):
        accumulate(acc[codes[i]], day[i], amount[i], flags[i], cats[i], since)


@njit(cache=CACHE)
def _histogram_range(codes, shift, lo, hi, counts):  # pragma: no cover - jitted
    for i in range(lo, hi):
        counts[codes[i] >> shift] += 1


@njit(cache=CACHE)
def _scatter_range(
    codes, day, amount, flags, cats, shift, lo, hi, pos, pc, pd, pa, pf, pk
):  # pragma: no cover
    for i in range(lo, hi):
        c = codes[i]
        p = c >> shift
        j = pos[p]
        pos[p] = j + 1
        pc[j] = c
        pd[j] = day[i]
        pa[j] = amount[i]
        pf[j] = flags[i]
        pk[j] = cats[i]


@njit(cache=CACHE, parallel=True)
def _partition_kernel(
    codes, day, amount, flags, cats, shift, t, starts, pc, pd, pa, pf, pk
):  # pragma: no cover
    # Parallel, stable radix partition: each of T row chunks counts its rows per partition, the
    # offsets interleave (partition-major, chunk-minor), then each chunk scatters its own rows.
    n = codes.shape[0]
    n_parts = starts.shape[0] - 1
    step = (n + t - 1) // t
    counts = np.zeros((t, n_parts), np.int64)
    for k in prange(t):
        _histogram_range(codes, shift, min(n, k * step), min(n, (k + 1) * step), counts[k])
    pos = np.empty((t, n_parts), np.int64)
    acc = 0
    for p in range(n_parts):
        starts[p] = acc
        for k in range(t):
            pos[k, p] = acc
            acc += counts[k, p]
    starts[n_parts] = acc
    for k in prange(t):
        _scatter_range(
            codes,
            day,
            amount,
            flags,
            cats,
            shift,
            min(n, k * step),
            min(n, (k + 1) * step),
            pos[k],
            pc,
            pd,
            pa,
            pf,
            pk,
        )


@njit(cache=CACHE, parallel=True)
def _aggregate_partitions_kernel(starts, pc, pd, pa, pf, pk, since, acc):  # pragma: no cover
    # partitions hold disjoint customers: threads never write the same accumulator record
    for p in prange(starts.shape[0] - 1):
        lo, hi = starts[p], starts[p + 1]
        _aggregate_direct_kernel(pc[lo:hi], pd[lo:hi], pa[lo:hi], pf[lo:hi], pk[lo:hi], since, acc)


#: accumulator bytes per partition meant to stay cache-resident (L2 512 KiB, L3 32 MiB shared)
_PART_BYTES = 1 << 19
#: rows per customer record a batch needs for partitioning to pay (see aggregate_orders)
_ROWS_PER_RECORD = 4
#: rows partitioned at a time (bounds the partition buffers: ~18 bytes a row)
_CHUNK_ROWS = 1 << 22


def new_accumulators(n_customers: int, n_windows: int) -> NDArray[np.void]:
    """Empty accumulators (records of :func:`acc_dtype`) for :func:`aggregate_orders`."""
    acc = np.zeros(n_customers, acc_dtype(n_windows))
    acc["first_day"] = _I32_MAX
    acc["last_day"] = _I32_MIN
    return acc


def grow_accumulators(
    acc: NDArray[np.void], n_customers: int, *, in_place: bool = False
) -> NDArray[np.void]:
    """Accumulators with room for at least ``n_customers`` (growing by half), keeping the
    contents.

    ``in_place=True`` (for an owner that knows no view of ``acc`` exists: a view would point
    at freed memory afterwards) grows an array that owns its memory where it is: a large block
    is remapped by the allocator, not copied, so the old and the new state are never both in
    memory. Otherwise, and for arrays that do not own their memory, a grown copy is returned.
    """
    old = acc.shape[0]
    if old >= n_customers:
        return acc
    cap = max(n_customers, old + old // 2)
    if in_place and acc.flags.owndata and acc.base is None:
        acc.resize(cap, refcheck=False)  # the new records are zeroed
    else:
        grown = np.zeros(cap, acc.dtype)
        grown[:old] = acc
        acc = grown
    acc["first_day"][old:] = _I32_MAX
    acc["last_day"][old:] = _I32_MIN
    return acc


def aggregate_orders(
    codes: NDArray[np.integer],
    day: NDArray[np.int32],
    amount: NDArray[np.float64],
    flags: NDArray[np.uint8],
    since: NDArray[np.int32],
    acc: NDArray[np.void],
    categories: NDArray[np.int8] | None = None,
    *,
    parallel: bool = True,
) -> NDArray[np.void]:
    """Add order rows to per-customer accumulators, in one pass.

    Parameters
    ----------
    codes
        Dense customer code per row (``0..len(acc)-1``).
    day
        Order date as days since 1970-01-01.
    amount
        Row amount (no NaN); refunds are negative.
    flags
        Bit 0: the row counts as an order (when its amount is >= 0; see :mod:`fastseg.orders`);
        bit 1: the row carries a discount.
    since
        First day of each trailing window (``as_of - N``), ascending window lengths, so
        descending days: a row is in window ``w`` when ``day >= since[w]``.
    acc
        Accumulators from :func:`new_accumulators` (or an earlier call): added to in place, so
        batches of rows can be aggregated one after the other.
    categories
        Category code per row in ``0..63``, or -1 (no category, or counted elsewhere).
    parallel
        Use every Numba thread (partitioning rows by customer first when the accumulators do
        not fit in cache); False runs one thread, for callers that keep the other core busy.

    Returns
    -------
    acc

    Notes
    -----
    Each row updates one customer's record, at random. With several threads, rows are first
    partitioned by customer code (a counting-sort scatter on the high bits) so that each
    partition's records stay in cache and threads never share one.
    """
    n = codes.shape[0]
    for name, arr in (("day", day), ("amount", amount), ("flags", flags)):
        if arr.shape[0] != n:
            msg = f"aggregate_orders: {name} has {arr.shape[0]} rows, codes has {n}"
            raise ParameterError(msg)
    if acc.dtype != acc_dtype(len(since)):
        msg = f"aggregate_orders: accumulators are not records for {len(since)} windows"
        raise ParameterError(msg)
    if n and (int(codes.min()) < 0 or int(codes.max()) >= acc.shape[0]):
        msg = f"aggregate_orders: customer codes must be in 0..{acc.shape[0] - 1}"
        raise ParameterError(msg)
    if categories is not None and n and int(np.max(categories)) > 63:
        msg = "aggregate_orders: category codes must be below 64"
        raise ParameterError(msg)
    cats = (
        np.full(n, -1, np.int8) if categories is None else np.ascontiguousarray(categories, np.int8)
    )
    codes = np.ascontiguousarray(codes)
    if codes.dtype not in (np.int32, np.int64):
        codes = codes.astype(np.int64)
    day = np.ascontiguousarray(day, np.int32)
    amount = np.ascontiguousarray(amount, np.float64)
    flags = np.ascontiguousarray(flags, np.uint8)
    since = np.ascontiguousarray(since, np.int32)
    per_part = max(1, _PART_BYTES // acc.dtype.itemsize)
    # Partitioning pays only when each customer's record is hit several times per batch: with
    # fewer rows than a few per customer, every row misses the cache either way, and the
    # scatter is one more pass (docs/performance.md). The thread count is asked last: asking
    # starts the threading layer.
    if (
        not parallel
        or acc.shape[0] <= 2 * per_part
        or n < _ROWS_PER_RECORD * acc.shape[0]
        or (threads := numba.get_num_threads()) == 1
    ):
        _aggregate_direct_kernel(codes, day, amount, flags, cats, since, acc)
        return acc
    shift = max(0, int(per_part).bit_length() - 1)
    n_parts = ((acc.shape[0] - 1) >> shift) + 1
    starts = np.zeros(n_parts + 1, np.int64)
    # Rows go through in chunks, so the partition buffers stay small (about 18 bytes a row of
    # the chunk) while each chunk still brings every customer's rows together per partition.
    chunk = min(n, _CHUNK_ROWS)
    pc, pd = np.empty(chunk, codes.dtype), np.empty(chunk, np.int32)
    pa, pf, pk = np.empty(chunk, np.float64), np.empty(chunk, np.uint8), np.empty(chunk, np.int8)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        m = hi - lo
        _partition_kernel(
            codes[lo:hi],
            day[lo:hi],
            amount[lo:hi],
            flags[lo:hi],
            cats[lo:hi],
            shift,
            threads,
            starts,
            pc[:m],
            pd[:m],
            pa[:m],
            pf[:m],
            pk[:m],
        )
        _aggregate_partitions_kernel(starts, pc[:m], pd[:m], pa[:m], pf[:m], pk[:m], since, acc)
    return acc


# ----------------------------------------------------------------------------------- merging


@njit(cache=CACHE)
def _merge_kernel(acc, src, into, lut):  # pragma: no cover - jitted
    for i in range(src.shape[0]):
        s = src[i]
        r = acc[into[i]]
        if s.first_day < r.first_day:
            r.first_day = s.first_day
        if s.last_day > r.last_day:
            r.last_day = s.last_day
        r.orders += s.orders
        r.refunds += s.refunds
        r.discount_orders += s.discount_orders
        for w in range(s.win_orders.shape[0]):
            r.win_orders[w] += s.win_orders[w]
            r.win_revenue[w] += s.win_revenue[w]
        r.monetary += s.monetary
        r.gross += s.gross
        r.refund_amount += s.refund_amount
        m = s.cats
        if m != 0:
            for k in range(64):
                if (m >> np.uint64(k)) & np.uint64(1):
                    j = lut[k]
                    if j < 64:
                        r.cats |= np.uint64(1) << np.uint64(j)


@njit(cache=CACHE, nogil=True)
def _windows_kernel(codes, day, amount, flags, since, acc):  # pragma: no cover - jitted
    for i in range(codes.shape[0]):
        a = amount[i]
        o = np.int32(flags[i] & 1) if a >= 0.0 else np.int32(0)
        add_to_windows(acc[codes[i]], day[i], a, o, since)


@njit(cache=CACHE, nogil=True)
def _records_kernel(acc, rec, to_acc):  # pragma: no cover - jitted
    # one pass over both: the all-time fields of acc[i] from rec[i] (to_acc) or the reverse
    for i in range(rec.shape[0]):
        a = acc[i]
        r = rec[i]
        if to_acc:
            a.first_day = r.first_day
            a.last_day = r.last_day
            a.orders = r.orders
            a.refunds = r.refunds
            a.discount_orders = r.discount_orders
            a.monetary = r.monetary
            a.gross = r.gross
            a.refund_amount = r.refund_amount
            a.cats = r.cats
        else:
            r.first_day = a.first_day
            r.last_day = a.last_day
            r.orders = a.orders
            r.refunds = a.refunds
            r.discount_orders = a.discount_orders
            r.monetary = a.monetary
            r.gross = a.gross
            r.refund_amount = a.refund_amount
            r.cats = a.cats


#: the record fields a saved state keeps (:meth:`fastseg.features.OrderAggregator.
#: export_state`): all but the trailing windows, which a later scoring date moves
STATE_FIELDS = (
    "first_day", "last_day", "orders", "refunds", "discount_orders", "monetary", "gross",
    "refund_amount", "cats",
)  # fmt: skip
STATE_DTYPE = np.dtype(
    [(f, np.int32) for f in STATE_FIELDS[:5]]
    + [(f, np.float64) for f in STATE_FIELDS[5:8]]
    + [("cats", np.uint64)]
)


def copy_records(acc: NDArray[np.void], rec: NDArray[np.void], *, to_acc: bool) -> None:
    """Copy the all-time fields (:data:`STATE_DTYPE`) between accumulators ``acc`` and saved
    records ``rec`` — into ``acc[:len(rec)]`` when ``to_acc``, else out of it — in one pass (a
    field at a time would pass over the records once per field)."""
    if rec.dtype != STATE_DTYPE or rec.shape[0] > acc.shape[0]:
        msg = "copy_records: rec must be saved records no longer than acc"
        raise ParameterError(msg)
    _records_kernel(acc, rec, to_acc)


def add_windows(
    codes: NDArray[np.integer],
    day: NDArray[np.int32],
    amount: NDArray[np.float64],
    flags: NDArray[np.uint8],
    since: NDArray[np.int32],
    acc: NDArray[np.void],
) -> None:
    """Add rows to the trailing-window fields of ``acc`` only (``win_orders``,
    ``win_revenue``; the rows' other fields are counted already), in row order, as
    :func:`aggregate_orders` adds them: a refresh (:mod:`fastseg.state`) recomputes the windows
    of a new scoring date from the recent rows it kept."""
    n = codes.shape[0]
    if day.shape[0] != n or amount.shape[0] != n or flags.shape[0] != n:
        msg = "add_windows: codes, day, amount and flags must have the same length"
        raise ParameterError(msg)
    if acc.dtype != acc_dtype(len(since)):
        msg = f"add_windows: accumulators are not records for {len(since)} windows"
        raise ParameterError(msg)
    if n and (int(codes.min()) < 0 or int(codes.max()) >= acc.shape[0]):
        msg = f"add_windows: customer codes must be in 0..{acc.shape[0] - 1}"
        raise ParameterError(msg)
    _windows_kernel(
        np.ascontiguousarray(codes),
        np.ascontiguousarray(day, np.int32),
        np.ascontiguousarray(amount, np.float64),
        np.ascontiguousarray(flags, np.uint8),
        np.ascontiguousarray(since, np.int32),
        acc,
    )


def merge_accumulators(
    acc: NDArray[np.void], src: NDArray[np.void], into: NDArray[np.integer], lut: NDArray[np.int64]
) -> None:
    """Add records ``src[i]`` into ``acc[into[i]]``, in place: counts and sums added, first and
    last days as min and max, category bit ``k`` of ``src`` set as bit ``lut[k]`` (bits whose
    ``lut`` is 64 or more are the caller's: they become exact pairs).

    Integer fields merge exactly; float sums equal the sums of all rows up to rounding (the
    order of additions differs).
    """
    if acc.dtype != src.dtype:
        msg = "merge_accumulators: the records differ (windows?)"
        raise ParameterError(msg)
    into = np.ascontiguousarray(into, np.int64)
    if into.shape[0] != src.shape[0]:
        msg = "merge_accumulators: into must give one record of acc per record of src"
        raise ParameterError(msg)
    if into.shape[0] and (int(into.min()) < 0 or int(into.max()) >= acc.shape[0]):
        msg = f"merge_accumulators: into must lie in 0..{acc.shape[0] - 1}"
        raise ParameterError(msg)
    lut = np.ascontiguousarray(lut, np.int64)
    if lut.shape[0] != 64:
        msg = "merge_accumulators: lut must map the 64 category bits"
        raise ParameterError(msg)
    _merge_kernel(acc, src, into, lut)


# ----------------------------------------------------------------------------------- events


@njit(cache=CACHE)
def _events_kernel(codes, etype, day, since, counts, last):  # pragma: no cover - jitted
    n_win = since.shape[0]
    for i in range(codes.shape[0]):
        c = codes[i]
        e = etype[i]
        d = day[i]
        if d > last[c, e]:
            last[c, e] = d
        for w in range(n_win):
            if d >= since[w]:
                counts[c, e, w] += 1


def aggregate_events(
    codes: NDArray[np.int64],
    n_customers: int,
    etype: NDArray[np.int64],
    n_types: int,
    day: NDArray[np.int32],
    since: NDArray[np.int32],
    out: tuple[NDArray[np.int64], NDArray[np.int32]] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Per customer and event type: counts in each trailing window and the last event day.

    ``out``: arrays from an earlier call (or of at least the shapes below) to add to, so that
    batches of events can be aggregated one after the other.

    Returns
    -------
    counts : int64[n_customers, n_types, len(since)]
    last : int32[n_customers, n_types]
        Last event day, ``np.iinfo(np.int32).min`` where the customer has no event of that type.
    """
    n = codes.shape[0]
    if etype.shape[0] != n or day.shape[0] != n:
        msg = "aggregate_events: codes, etype and day must have the same length"
        raise ParameterError(msg)
    if out is None:
        counts = np.zeros((n_customers, n_types, since.shape[0]), np.int64)
        last = np.full((n_customers, n_types), np.iinfo(np.int32).min, np.int32)
    else:
        counts, last = out
        if counts.shape[:2] != last.shape or counts.shape[0] < n_customers:
            msg = "aggregate_events: out arrays do not fit the customers and types"
            raise ParameterError(msg)
        if counts.shape[1] < n_types or counts.shape[2] != since.shape[0]:
            msg = "aggregate_events: out arrays do not fit the types and windows"
            raise ParameterError(msg)
    _events_kernel(
        np.ascontiguousarray(codes),
        np.ascontiguousarray(etype, np.int64),
        np.ascontiguousarray(day, np.int32),
        np.ascontiguousarray(since, np.int32),
        counts,
        last,
    )
    return counts, last


# ----------------------------------------------------------------------------------- categories


@njit(cache=CACHE)
def _category_local_kernel(hashes, counted, keys, vals, n_cats, local):  # pragma: no cover
    mask = keys.shape[0] - 1
    for i in range(hashes.shape[0]):
        if not counted[i]:
            local[i] = -1
            continue
        h = hashes[i]
        s = np.int64((h * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) & mask
        while True:
            v = vals[s]
            if v < 0:
                keys[s] = h
                vals[s] = n_cats
                local[i] = n_cats
                n_cats += 1
                if 2 * n_cats > keys.shape[0]:
                    return -n_cats  # table half full: the caller grows it and calls again
                break
            if keys[s] == h:
                local[i] = v
                break
            s = (s + 1) & mask
    return n_cats


class CategoryCodes:
    """Small local indices (first-seen order) for category values, given as 64-bit hashes.

    Two different values sharing a 64-bit hash would be merged; with thousands of categories the
    chance is below 1e-12.
    """

    def __init__(self) -> None:
        self.n = 0
        self._keys = np.zeros(1 << 8, np.uint64)
        self._vals = np.full(1 << 8, -1, np.int64)

    def _grow(self) -> None:
        keys, vals = self._keys, self._vals
        cap = keys.shape[0] * 4
        self._keys, self._vals = np.zeros(cap, np.uint64), np.full(cap, -1, np.int64)
        used = vals >= 0
        n = self.n
        self.n = 0
        order = np.argsort(vals[used])
        again = np.empty(order.shape[0], np.int64)
        got = _category_local_kernel(
            keys[used][order], np.ones(order.shape[0], np.bool_), self._keys, self._vals, 0, again
        )
        assert got == n and (again == np.arange(n)).all()
        self.n = n

    @property
    def hashes(self) -> NDArray[np.uint64]:
        """The categories' hashes, in local index order."""
        used = self._vals >= 0
        out = np.empty(self.n, np.uint64)
        out[self._vals[used]] = self._keys[used]
        return out

    def encode(self, hashes: NDArray[np.uint64], counted: NDArray[np.bool_]) -> NDArray[np.int64]:
        """Local index per row (-1 where not ``counted``)."""
        hashes = np.ascontiguousarray(hashes, np.uint64)
        counted = np.ascontiguousarray(counted, np.bool_)
        if hashes.shape[0] != counted.shape[0]:
            msg = "CategoryCodes.encode: hashes and counted must have the same length"
            raise ParameterError(msg)
        local = np.empty(hashes.shape[0], np.int64)
        start = 0
        while True:
            got = _category_local_kernel(
                hashes[start:], counted[start:], self._keys, self._vals, self.n, local[start:]
            )
            if got >= 0:
                self.n = got
                return local
            # grown past half full at some row: grow, then go on after the rows already done
            self.n = -got
            done = start + int(np.flatnonzero(local[start:] == self.n - 1)[0]) + 1
            self._grow()
            start = done


@njit(cache=CACHE)
def _compact_rows_kernel(acc, rows):  # pragma: no cover - jitted
    for j in range(rows.shape[0]):
        r = rows[j]
        if r != j:
            acc[j] = acc[r]


def compact_rows(acc: NDArray[np.void], rows: NDArray[np.int64]) -> None:
    """Move accumulator records ``rows`` (ascending) to the front, in place: no second copy."""
    rows = np.ascontiguousarray(rows, np.int64)
    if rows.shape[0] > 1 and bool(np.any(np.diff(rows) <= 0)):
        msg = "compact_rows: rows must be strictly ascending"
        raise ParameterError(msg)
    _compact_rows_kernel(acc, rows)


# ----------------------------------------------------------------------------------- features


@njit(cache=CACHE, inline="always")
def _popcount(x):  # pragma: no cover - jitted
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(cache=CACHE)
def _features_kernel(
    acc,
    rows,
    as_of_day,
    frequency,
    monetary,
    recency,
    first,
    last,
    tenure,
    avg_days,
    aov,
    share,
    refund_count,
    refund_amount,
    win_orders,
    win_revenue,
    valid,
    several,
    categories,
):  # pragma: no cover - jitted
    for i in range(rows.shape[0]):
        r = acc[rows[i]]
        n = r.orders
        categories[i] = _popcount(r.cats)
        frequency[i] = n
        monetary[i] = r.monetary
        refund_count[i] = r.refunds
        refund_amount[i] = r.refund_amount
        for w in range(win_orders.shape[0]):
            win_orders[w, i] = r.win_orders[w]
            win_revenue[w, i] = r.win_revenue[w]
        valid[i] = n > 0
        several[i] = n > 1
        f = r.first_day if n > 0 else 0
        t = r.last_day if n > 0 else 0
        first[i] = f
        last[i] = t
        recency[i] = as_of_day - t
        tenure[i] = as_of_day - f
        avg_days[i] = (t - f) / max(n - 1, 1)
        aov[i] = r.gross / max(n, 1)
        share[i] = r.discount_orders / max(n, 1)


def _touched(shape: int | tuple[int, ...], dtype: type) -> NDArray:
    """An array whose pages numpy has written already: fresh pages first touched inside a
    kernel fault at ~1.5 GB/s here, by numpy's fill at ~7 GB/s (docs/PERF_NOTES: 9M customers'
    feature columns, 1.4 GB, took 3.5 s instead of 0.7 s)."""
    out = np.empty(shape, dtype)
    out.fill(0)
    return out


def feature_arrays(
    acc: NDArray[np.void], as_of_day: int, rows: NDArray[np.int64] | None = None
) -> dict[str, NDArray]:
    """Per-customer feature columns of accumulator records ``acc[rows]`` (all of ``acc`` when
    ``rows`` is None), contiguous, in one pass, without copying the records.

    Returns int64 ``frequency``, ``recency_days``, ``tenure_days``, ``refund_count`` and
    ``win_orders`` (windows x customers); float64 ``monetary``, ``refund_amount``,
    ``win_revenue``, ``avg_days_between_orders``, ``aov``, ``discount_share``; int32 days
    ``first_order_date``, ``last_order_date``; and the masks ``valid`` (an order: the derived
    columns are null otherwise) and ``several`` (two orders or more: ``avg_days_between_orders``
    is null otherwise), and ``categories``, the number of category bits set in ``cats``.
    """
    rows = np.arange(acc.shape[0]) if rows is None else np.ascontiguousarray(rows, np.int64)
    if rows.shape[0] and (int(rows.min()) < 0 or int(rows.max()) >= acc.shape[0]):
        msg = f"feature_arrays: rows must lie in 0..{acc.shape[0] - 1}"
        raise ParameterError(msg)
    n = rows.shape[0]
    n_win = acc.dtype["win_orders"].shape[0]
    i64 = ("frequency", "recency_days", "tenure_days", "refund_count")
    f64 = ("monetary", "refund_amount", "avg_days_between_orders", "aov", "discount_share")
    out: dict[str, NDArray] = {k: _touched(n, np.int64) for k in i64}
    out |= {k: _touched(n, np.float64) for k in f64}
    out |= {k: _touched(n, np.int32) for k in ("first_order_date", "last_order_date")}
    out |= {k: _touched(n, np.bool_) for k in ("valid", "several")}
    out["categories"] = _touched(n, np.int64)
    out["win_orders"] = _touched((n_win, n), np.int64)
    out["win_revenue"] = _touched((n_win, n), np.float64)
    _features_kernel(
        acc,
        rows,
        np.int64(as_of_day),
        out["frequency"],
        out["monetary"],
        out["recency_days"],
        out["first_order_date"],
        out["last_order_date"],
        out["tenure_days"],
        out["avg_days_between_orders"],
        out["aov"],
        out["discount_share"],
        out["refund_count"],
        out["refund_amount"],
        out["win_orders"],
        out["win_revenue"],
        out["valid"],
        out["several"],
        out["categories"],
    )
    return out
