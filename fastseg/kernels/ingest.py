"""Raw Arrow columns of order rows to clean, compact arrays, in one pass.

The row path (:mod:`fastseg.pipeline`) hands this kernel the buffers of a batch of rows exactly
as a reader (:mod:`fastseg.sources`) made them (values plus Arrow validity bitmaps); the kernel, in
one pass and without the GIL:

* decides why a row cannot be used, with the same rules and order as
  :data:`fastseg.config.REASONS`: ``missing_customer_id``, ``missing_timestamp``,
  ``missing_amount`` (null, NaN or infinite), ``after_as_of``; and counts each reason;
* turns timestamps into days since 1970-01-01 (floor division, exact for any int64);
* checks whether order ids are present and strictly increasing, and passes them on (when they
  are not proven so, :class:`fastseg.kernels.lines.OrderLines` counts each order once);
* hashes every row (when duplicates are to be counted) over the values as read;
* writes the usable rows, compacted, as customer id, day, amount, flags (bit 0: an order,
  amount >= 0; bit 1: a discount > 0) and the category's local code.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from fastseg.config import EVENT_REASONS, REASONS
from fastseg.errors import ParameterError
from fastseg.kernels import CACHE

__all__ = ["REASON_CODES", "IngestBuffers", "RunDuplicates", "day_of", "ingest_rows"]

#: reason codes, in the order rows are checked (index into the counts array)
REASON_CODES = REASONS

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


@njit(cache=CACHE, inline="always")
def _valid(bitmap, offset, i):  # pragma: no cover - jitted
    if bitmap.shape[0] == 0:
        return True
    j = offset + i
    return (bitmap[j >> 3] >> (j & 7)) & 1 == 1


@njit(cache=CACHE, inline="always")
def _floor_div(t, per_day, inv):  # pragma: no cover - jitted
    # exact floor(t / per_day) for any int64: a float estimate, then one correction step
    if per_day == 1:
        return t
    d = np.int64(np.float64(t) * inv)
    r = t - d * per_day
    while r < 0:
        d -= 1
        r += per_day
    while r >= per_day:
        d += 1
        r -= per_day
    return d


@njit(cache=CACHE, inline="always")
def _mix(h, v):  # pragma: no cover - jitted
    # splitmix64-style combine of one 64-bit value into the running hash
    x = (h ^ v) * _M1
    x = (x ^ (x >> np.uint64(30))) * _M2
    x = (x ^ (x >> np.uint64(27))) * _M3
    return x ^ (x >> np.uint64(31))


@njit(cache=CACHE, nogil=True)
def _day_kernel(ts, per_day, out):  # pragma: no cover - jitted
    inv = 1.0 / per_day
    for i in range(ts.shape[0]):
        out[i] = _floor_div(ts[i], per_day, inv)


@njit(cache=CACHE, nogil=True)
def _ingest_kernel(
    cid,
    cid_bm,
    cid_off,
    ts,
    ts_bm,
    ts_off,
    per_day,
    amt,
    amt_bits,
    amt_bm,
    amt_off,
    oid,
    oid_bm,
    oid_off,
    last_oid,
    disc,
    disc_bits,
    disc_bm,
    disc_off,
    cat,
    cat_bm,
    cat_off,
    cat_local,
    cat_hash,
    qty_bits,
    qty_bm,
    qty_off,
    as_of_day,
    out_cid,
    out_day,
    out_amt,
    out_flags,
    out_cat,
    out_oid,
    reasons,
    hashes,
    counts,
    lo,
    span,
):  # pragma: no cover - jitted
    # span > 0: write customer codes cid - lo (checked to lie in 0..span-1), not ids
    # out_oid non-empty: write each usable row's order id (flag bit 2: the id is missing)
    # reasons non-empty: write each row's reason code (-1: used)
    n = cid.shape[0]
    want_oid = out_oid.shape[0] > 0
    want_reason = reasons.shape[0] > 0
    inv = 1.0 / per_day
    has_oid = oid.shape[0] > 0
    has_disc = disc.shape[0] > 0
    has_cat = cat.shape[0] > 0
    want_hash = hashes.shape[0] > 0
    oid_ok = True
    m = 0
    for i in range(n):
        o_ok = True
        if has_oid:
            if not _valid(oid_bm, oid_off, i):
                oid_ok = False
                o_ok = False
            else:
                o = oid[i]
                if o <= last_oid:
                    oid_ok = False
                last_oid = o
        c_ok = _valid(cid_bm, cid_off, i)
        t_ok = _valid(ts_bm, ts_off, i)
        a_ok = _valid(amt_bm, amt_off, i)
        k_ok = has_cat and _valid(cat_bm, cat_off, i)
        a = amt[i]
        if want_hash:
            # every value as read, nulls told apart from any value
            h = np.uint64(0x51ED27)
            h = _mix(h, np.uint64(cid[i]) if c_ok else np.uint64(0xDEAD01))
            h = _mix(h, np.uint64(ts[i]) if t_ok else np.uint64(0xDEAD02))
            bits = np.uint64(0) if a == 0.0 else amt_bits[i]  # -0.0 == 0.0
            h = _mix(h, bits if a_ok else np.uint64(0xDEAD03))
            if has_cat:
                h = _mix(h, cat_hash[cat[i]] if k_ok else np.uint64(0xDEAD04))
            if has_disc:
                dv = disc[i]
                dbits = np.uint64(0) if dv == 0.0 else disc_bits[i]
                h = _mix(h, dbits if _valid(disc_bm, disc_off, i) else np.uint64(0xDEAD05))
            if qty_bits.shape[0] > 0:
                h = _mix(h, qty_bits[i] if _valid(qty_bm, qty_off, i) else np.uint64(0xDEAD06))
            hashes[i] = h
        why = -1
        d = np.int64(0)
        if not c_ok:
            why = 0
        elif not t_ok:
            why = 1
        elif not a_ok or not np.isfinite(a):
            why = 2
        else:
            d = _floor_div(ts[i], per_day, inv)
            if d > as_of_day:
                why = 3
        if want_reason:
            reasons[i] = why
        if why >= 0:
            counts[why] += 1
            continue
        flags = np.uint8(1) if a >= 0.0 else np.uint8(0)
        if want_oid:
            if o_ok:
                out_oid[m] = oid[i]
            else:
                out_oid[m] = 0
                flags |= np.uint8(4)
        if has_disc and _valid(disc_bm, disc_off, i):
            dv = disc[i]
            if dv > 0.0:  # NaN compares false: no discount, as fill_nan(0) > 0
                flags |= np.uint8(2)
        code = cid[i]
        if span > 0:
            code -= lo
            if code < 0 or code >= span:
                return -1 - i, oid_ok, last_oid  # id outside the range planned for
        out_cid[m] = code
        out_day[m] = np.int32(d)
        out_amt[m] = a
        out_flags[m] = flags
        out_cat[m] = cat_local[cat[i]] if k_ok and a >= 0.0 else -1
        m += 1
    return m, oid_ok, last_oid


def day_of(ts: NDArray[np.int64], per_day: int) -> NDArray[np.int64]:
    """``floor(ts / per_day)`` for int64 timestamps (days since 1970-01-01 for epoch units).

    >>> day_of(np.array([-1, 0, 86_399, 86_400]), 86_400).tolist()
    [-1, 0, 0, 1]
    """
    ts = np.ascontiguousarray(ts, np.int64)
    if per_day < 1:
        msg = f"day_of: per_day must be positive, got {per_day}"
        raise ParameterError(msg)
    out = np.empty(ts.shape[0], np.int64)
    _day_kernel(ts, np.int64(per_day), out)
    return out


class IngestBuffers:
    """Output arrays for :func:`ingest_rows`, allocated once and reused batch after batch."""

    def __init__(
        self, rows: int, *, hashes: bool, order_ids: bool = False, reasons: bool = False
    ) -> None:
        self.cid = np.empty(rows, np.int64)
        self.day = np.empty(rows, np.int32)
        self.amount = np.empty(rows, np.float64)
        self.flags = np.empty(rows, np.uint8)
        self.cat = np.empty(rows, np.int32)
        self.hashes = np.empty(rows if hashes else 0, np.uint64)
        self.order_id = np.empty(rows if order_ids else 0, np.int64)
        self.reasons = np.empty(rows if reasons else 0, np.int8)

    @property
    def rows(self) -> int:
        return self.cid.shape[0]


_EMPTY_I64 = np.empty(0, np.int64)
_EMPTY_F64 = np.empty(0, np.float64)
_EMPTY_I32 = np.empty(0, np.int32)
_EMPTY_U64 = np.empty(0, np.uint64)
_EMPTY_BM = np.empty(0, np.uint8)


Column = tuple[
    NDArray, NDArray[np.uint8], int
]  # values, validity bitmap (empty: all valid), bit offset


def ingest_rows(
    cid: Column,
    ts: Column,
    per_day: int,
    amount: Column,
    as_of_day: int,
    out: IngestBuffers,
    counts: NDArray[np.int64],
    *,
    order_id: Column | None = None,
    last_order_id: int = np.iinfo(np.int64).min,
    discount: Column | None = None,
    category: Column | None = None,
    category_local: NDArray[np.int32] | None = None,
    category_hash: NDArray[np.uint64] | None = None,
    hashed_only: Column | None = None,
    id_range: tuple[int, int] | None = None,
) -> tuple[int, bool, int]:
    """Check, count, hash and compact one batch of raw order rows.

    Parameters
    ----------
    cid, ts, amount
        ``(values, validity bitmap, bit offset)``: int64 customer ids; int64 timestamps in units
        of ``1 / per_day`` days (``per_day=1`` for dates as days since 1970-01-01); float64
        amounts. An empty bitmap means every value is present.
    as_of_day
        Scoring date as days since 1970-01-01: later rows are left out (``after_as_of``).
    out
        Buffers with room for every row of the batch; ``out.hashes`` empty to skip hashing.
    counts
        int64[4], incremented per reason of :data:`REASON_CODES`.
    order_id, last_order_id
        int64 order ids and the last one of the previous batch, to check they increase.
    discount
        float64 discounts (a row has a discount when > 0).
    category, category_local, category_hash
        int32 dictionary indices, the local code of each dictionary entry (-1 for none), and a
        64-bit hash of each entry's value (for the row hashes).
    hashed_only
        One more column (float64, e.g. ``quantity``) that only enters the row hashes.
    id_range
        ``(lo, span)``: write customer codes ``id - lo`` instead of ids, checking that they lie
        in ``0 .. span - 1``.

    Returns
    -------
    used, ids_increasing, last_order_id
        The first ``used`` entries of ``out.cid/day/amount/flags/cat`` hold the usable rows
        (``out.cat`` is -1 on refund rows: only orders count towards categories); when
        ``out.order_id`` has room, the usable rows' order ids too (flag bit 2 set where the id
        is missing); when ``out.reasons`` has room, every row's reason code (index into
        :data:`REASON_CODES`, -1 for a used row).

    Raises
    ------
    ParameterError
        A customer id outside ``id_range``.
    """
    n = cid[0].shape[0]
    cols = [("ts", ts), ("amount", amount)]
    for name, col in (("order_id", order_id), ("discount", discount), ("category", category)):
        if col is not None:
            cols.append((name, col))
    for name, col in cols:
        if col[0].shape[0] != n:
            msg = f"ingest_rows: {name} has {col[0].shape[0]} rows, customer_id has {n}"
            raise ParameterError(msg)
    if out.rows < n or (out.hashes.shape[0] and out.hashes.shape[0] < n):
        msg = f"ingest_rows: buffers hold {out.rows} rows, the batch has {n}"
        raise ParameterError(msg)
    if counts.shape != (len(REASON_CODES),) or counts.dtype != np.int64:
        msg = "ingest_rows: counts must be int64[4]"
        raise ParameterError(msg)
    oid = order_id or (_EMPTY_I64, _EMPTY_BM, 0)
    disc = discount or (_EMPTY_F64, _EMPTY_BM, 0)
    cat = category or (_EMPTY_I32, _EMPTY_BM, 0)
    if category is not None and (category_local is None or category_hash is None):
        msg = "ingest_rows: category needs category_local and category_hash"
        raise ParameterError(msg)
    qty = hashed_only or (_EMPTY_F64, _EMPTY_BM, 0)
    qty_bits = qty[0].view(np.uint64) if qty[0].shape[0] else _EMPTY_U64
    local = _EMPTY_I32 if category_local is None else category_local
    chash = _EMPTY_U64 if category_hash is None else category_hash
    lo, span = id_range if id_range is not None else (0, 0)
    used, ok, last = _ingest_kernel(
        cid[0],
        cid[1],
        cid[2],
        ts[0],
        ts[1],
        ts[2],
        np.int64(per_day),
        amount[0],
        amount[0].view(np.uint64),
        amount[1],
        amount[2],
        oid[0],
        oid[1],
        oid[2],
        np.int64(last_order_id),
        disc[0],
        disc[0].view(np.uint64),
        disc[1],
        disc[2],
        cat[0],
        cat[1],
        cat[2],
        local,
        chash,
        qty_bits,
        qty[1],
        qty[2],
        np.int64(as_of_day),
        out.cid,
        out.day,
        out.amount,
        out.flags,
        out.cat,
        out.order_id,
        out.reasons,
        out.hashes[:n] if out.hashes.shape[0] else out.hashes,
        counts,
        np.int64(lo),
        np.int64(span),
    )
    if used < 0:
        value = int(cid[0][-1 - int(used)])
        msg = f"customer id {value} lies outside the range {lo}..{lo + span - 1} planned for"
        raise ParameterError(msg)
    return int(used), bool(ok), int(last)


# ------------------------------------------------------------------------------------ events

#: reason codes of events, in the order rows are checked
EVENT_REASON_CODES = EVENT_REASONS


@njit(cache=CACHE, nogil=True)
def _events_ingest_kernel(
    cid,
    cid_bm,
    cid_off,
    ts,
    ts_bm,
    ts_off,
    per_day,
    idx,
    idx_bm,
    idx_off,
    entry_type,
    as_of_day,
    out_cid,
    out_day,
    out_type,
    counts,
):  # pragma: no cover - jitted
    inv = 1.0 / per_day
    m = 0
    for i in range(cid.shape[0]):
        if not _valid(cid_bm, cid_off, i):
            counts[0] += 1
            continue
        if not _valid(ts_bm, ts_off, i):
            counts[1] += 1
            continue
        e = entry_type[idx[i]] if _valid(idx_bm, idx_off, i) else -1
        if e < 0:
            counts[2] += 1
            continue
        d = _floor_div(ts[i], per_day, inv)
        if d > as_of_day:
            counts[3] += 1
            continue
        out_cid[m] = cid[i]
        out_day[m] = np.int32(d)
        out_type[m] = e
        m += 1
    return m


def ingest_events(
    cid: Column,
    ts: Column,
    per_day: int,
    types: Column,
    entry_type: NDArray[np.int64],
    as_of_day: int,
    out: tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64]],
    counts: NDArray[np.int64],
) -> int:
    """Check, count and compact one batch of raw events (see :data:`EVENT_REASON_CODES`).

    ``types`` holds dictionary indices and ``entry_type`` the event type index of each entry
    (-1: no type). Writes the usable rows' customer ids, days and type indices to ``out`` and
    returns how many there are.
    """
    n = cid[0].shape[0]
    if ts[0].shape[0] != n or types[0].shape[0] != n:
        msg = "ingest_events: customer_id, timestamp and event columns must have the same length"
        raise ParameterError(msg)
    if any(a.shape[0] < n for a in out):
        msg = f"ingest_events: out arrays hold fewer than the batch's {n} rows"
        raise ParameterError(msg)
    if counts.shape != (len(EVENT_REASON_CODES),) or counts.dtype != np.int64:
        msg = "ingest_events: counts must be int64[4]"
        raise ParameterError(msg)
    entry = np.ascontiguousarray(entry_type, np.int64)
    if entry.shape[0] == 0:
        entry = np.full(1, -1, np.int64)  # no entries: every row lacks a type
    return int(
        _events_ingest_kernel(
            cid[0],
            cid[1],
            cid[2],
            ts[0],
            ts[1],
            ts[2],
            np.int64(per_day),
            types[0],
            types[1],
            types[2],
            entry,
            np.int64(as_of_day),
            out[0],
            out[1],
            out[2],
            counts,
        )
    )


# ------------------------------------------------------------------------ duplicates in ts runs


@njit(cache=CACHE)
def _count_equal(h):  # pragma: no cover - jitted
    # sorts h in place; rows whose hash equals an earlier row's
    n = h.shape[0]
    if n == 2:
        return 1 if h[0] == h[1] else 0
    if n <= 24:  # insertion sort: most runs are short, np.sort's set-up costs more
        for j in range(1, n):
            v = h[j]
            k = j - 1
            while k >= 0 and h[k] > v:
                h[k + 1] = h[k]
                k -= 1
            h[k + 1] = v
    else:
        h.sort()
    d = 0
    for j in range(1, h.shape[0]):
        if h[j] == h[j - 1]:
            d += 1
    return d


@njit(cache=CACHE, nogil=True)
def _run_dups_kernel(ts, ts_bm, ts_off, hashes, carry, state):  # pragma: no cover - jitted
    # state: [carry_n, carry_ts, have_prev, prev_ts, dups, sorted_ok]
    n = ts.shape[0]
    cn = state[0]
    prev = state[3]
    have = state[2] == 1
    dups = state[4]
    for i in range(n):
        if not _valid(ts_bm, ts_off, i):
            continue  # rows without a timestamp are counted by the caller
        t = ts[i]
        if have and t < prev:
            state[5] = 0
            return
        if have and t == prev:
            carry[cn] = hashes[i]
            cn += 1
        else:
            if cn > 1:
                dups += _count_equal(carry[:cn])
            carry[0] = hashes[i]
            cn = 1
            prev = t
            have = True
    state[0] = cn
    state[2] = 1 if have else 0
    state[3] = prev
    state[4] = dups


class RunDuplicates:
    """Exact duplicate rows of a stream whose timestamps never decrease, in one pass.

    Identical rows share their timestamp, so when the rows come in timestamp order a duplicate
    can only sit in the same run of equal timestamps as its twin: each run's row hashes are
    sorted and compared (runs are short), instead of sorting the hashes of every row. Rows
    without a timestamp are left to the caller. :attr:`sorted` turns False at the first
    timestamp smaller than the one before; the count is then unusable and the caller counts
    over all hashes instead.
    """

    def __init__(self) -> None:
        self._carry = np.empty(1 << 12, np.uint64)
        self._state = np.array([0, 0, 0, 0, 0, 1], np.int64)

    @property
    def sorted(self) -> bool:
        return bool(self._state[5])

    def add(self, ts: Column, hashes: NDArray[np.uint64]) -> None:
        """Add a batch: raw timestamps (``(values, bitmap, offset)``) and their row hashes."""
        if not self.sorted:
            return
        values = np.ascontiguousarray(ts[0], np.int64)
        if values.shape[0] != hashes.shape[0]:
            msg = "RunDuplicates.add: ts and hashes must have the same length"
            raise ParameterError(msg)
        need = int(self._state[0]) + values.shape[0]
        if need > self._carry.shape[0]:  # a run may span the whole batch
            grown = np.empty(max(need, 2 * self._carry.shape[0]), np.uint64)
            grown[: self._state[0]] = self._carry[: self._state[0]]
            self._carry = grown
        _run_dups_kernel(values, ts[1], ts[2], hashes, self._carry, self._state)

    def count(self) -> int:
        """Duplicates seen so far (call after the last batch; valid only while sorted)."""
        n = int(self._state[0])
        tail = _count_equal(self._carry[:n].copy()) if n > 1 else 0
        return int(self._state[4]) + int(tail)
