"""The direct path for Parquet orders: decoded columns straight into the kernels.

The general streaming path (:func:`fastseg.pipeline._stream`) builds a Polars frame per batch and
checks, types and filters it with Polars expressions before the aggregation kernel sees it. For
the most common input — Parquet files whose columns already have the right types — every one of
those steps can be done in a single pass over the raw Arrow buffers instead:

* a reader thread decodes one row group at a time with pyarrow (which releases the GIL) while
  the main thread aggregates the previous one, so reading and aggregating overlap on two cores;
  at most two batches are in memory, whatever the size of the file;
* :func:`fastseg.kernels.ingest.ingest_rows` counts the rows that cannot be used (same reasons,
  same order as :func:`fastseg.orders.reason_expr`), turns timestamps into days, checks order
  ids, hashes rows for the duplicate count and compacts the usable rows;
* :class:`fastseg.features.OrderAggregator` aggregates them (same accumulators as the general
  path, so the features are the same by construction; the tests also compare both paths).

Categories are read as Parquet dictionaries: their values are hashed once per row group, not
once per row.

Anything else falls back to the general path: other formats, columns that need converting
(text numbers or dates, float ids, time-zone-aware timestamps), line items without an amount,
rejects kept aside (they need the rows as read), rule aggregates with filters.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fastseg import orders as O
from fastseg.errors import InputError

__all__ = ["DirectPlan", "OrderIdsRepeat", "plan_direct", "stream_direct"]

#: canonical order columns the direct path reads
SUPPORTED = ("customer_id", "order_ts", "amount", "order_id", "category", "discount", "quantity")
_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}
#: row groups larger than this many batches are read in slices (bounds memory)
_MAX_GROUP_BATCHES = 2
_EPOCH = dt.date(1970, 1, 1)
_CAT_SEED = 0x5EED


class OrderIdsRepeat(Exception):
    """Order ids turned out not to be strictly increasing (or missing) while streaming."""


@dataclass(frozen=True)
class DirectPlan:
    """What the direct path reads: the files and the source column of each canonical one."""

    files: tuple[Path, ...]
    columns: dict[str, str]  # canonical -> source column
    label: str
    text_ids: bool = False  # customer ids are text: read as dictionaries, coded per value

    @property
    def read(self) -> dict[str, str]:
        """The columns to read: ``quantity`` (when ``amount`` is there) only enters the hashes
        that count duplicate rows, which unique order ids make needless."""
        if "order_id" in self.columns:
            return {k: v for k, v in self.columns.items() if k != "quantity"}
        return self.columns


def _arrow_ok(canon: str, t: Any) -> bool:
    import pyarrow as pa

    if canon == "customer_id" and _is_text(t):
        return True
    if canon in ("customer_id", "order_id"):
        return bool(pa.types.is_signed_integer(t)) or t in (pa.uint8(), pa.uint16(), pa.uint32())
    if canon == "order_ts":
        return bool(pa.types.is_date32(t)) or (
            pa.types.is_timestamp(t) and t.tz is None and t.unit in _PER_DAY
        )
    if canon in ("amount", "discount", "quantity"):
        return bool(pa.types.is_integer(t) or pa.types.is_floating(t)) and t != pa.uint64()
    if canon == "category":
        return _is_text(t)
    return False


def _is_text(t: Any) -> bool:
    """Text, or a dictionary of text (what the reader decodes as a dictionary)."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def plan_direct(
    plan: O.OrderPlan, *, rejects: Any = None, aggregates: Sequence[Any] = ()
) -> DirectPlan | None:
    """A :class:`DirectPlan` when the direct path can read ``plan``'s orders, else None."""
    import pyarrow.parquet as pq

    src = plan.source
    if src.kind != "parquet" or not src.files or plan.conversions or rejects is not None:
        return None
    if any(getattr(a, "source", None) == "orders" for a in aggregates):
        return None
    cols = dict(plan.columns)
    if "amount" not in cols or any(c not in SUPPORTED for c in cols):
        return None
    try:
        for path in src.files:
            found = pq.read_schema(path)
            for canon, col in cols.items():
                idx = found.get_field_index(col)
                if idx < 0 or not _arrow_ok(canon, found.field(idx).type):
                    return None
    except (OSError, ValueError, TypeError):  # unreadable footers: the general path says why
        return None
    text_ids = plan.frame.collect_schema()["customer_id"] == pl.String
    return DirectPlan(tuple(src.files), cols, src.label, text_ids=text_ids)


# ------------------------------------------------------------------------------------- reading


def _tables(dp: DirectPlan, batch_rows: int) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(dict.fromkeys(dp.read.values()))
    text = [c for c in ("category", "customer_id", "event") if c in dp.columns]
    dict_cols = [dp.columns[c] for c in text if c != "customer_id" or dp.text_ids] or None
    for path in dp.files:
        pf = pq.ParquetFile(path, read_dictionary=dict_cols)
        md = pf.metadata
        for g in range(md.num_row_groups):
            rows = md.row_group(g).num_rows
            if rows == 0:
                continue
            if rows <= _MAX_GROUP_BATCHES * batch_rows:
                yield pf.read_row_group(g, columns=names)
            else:
                for b in pf.iter_batches(batch_size=batch_rows, row_groups=[g], columns=names):
                    yield pa.Table.from_batches([b])


class _Prefetch:
    """Iterate ``it`` in a background thread, forwarding its errors.

    At most ``ahead`` items exist at once, counting the one the consumer holds (it is done with
    an item when it asks for the next): with 2, the thread makes the next item while the
    consumer works on the current one, and never a third.
    """

    _END = object()

    def __init__(self, it: Iterator[Any], ahead: int = 2) -> None:
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._slots = threading.Semaphore(ahead)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(it,), daemon=True)
        self._t.start()

    def _run(self, it: Iterator[Any]) -> None:
        try:
            while True:
                while not self._slots.acquire(timeout=0.05):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                item = next(it, self._END)
                self._q.put(item)
                if item is self._END:
                    return
        except BaseException as exc:  # forwarded to the consumer, raised there
            self._q.put(("__error__", exc))

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._q.get()
            if item is self._END:
                return
            if isinstance(item, tuple) and len(item) == 2 and item[0] == "__error__":
                raise item[1]
            yield item
            del item
            self._slots.release()

    def close(self) -> None:
        self._stop.set()
        self._t.join()


@contextlib.contextmanager
def _reading(dp: DirectPlan, batch_rows: int) -> Iterator[Iterator[Any]]:
    """The non-empty row groups (or slices) of ``dp``'s files, decoded by a reader thread; any
    read error, in the thread or the ``with`` body, becomes an :class:`InputError` naming the
    source; the thread is stopped and the decoders' memory released on the way out."""
    import pyarrow as pa

    reader = _Prefetch(_tables(dp, batch_rows))
    try:
        yield (table for table in reader if table.num_rows)
    except (OSError, pa.ArrowException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read {dp.label}: {first}") from exc
    finally:
        reader.close()
        pa.default_memory_pool().release_unused()  # before the output is built


def _column(arr: Any, dtype: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """``(values as dtype, validity bitmap or empty, bit offset)`` of a primitive Arrow array."""
    import pyarrow as pa

    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date64(t):
        phys: Any = np.int64
    elif pa.types.is_date32(t):
        phys = np.int32
    else:
        phys = np.dtype(t.to_pandas_dtype())
    buffers = arr.buffers()
    values = np.frombuffer(buffers[1], dtype=phys)[arr.offset : arr.offset + len(arr)]
    if values.dtype != dtype:
        values = values.astype(dtype)
    if arr.null_count == 0 or buffers[0] is None:
        return values, np.empty(0, np.uint8), 0
    return values, np.frombuffer(buffers[0], dtype=np.uint8), arr.offset


def _text_codes(agg: Any, arr: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Customer codes per row of a text id column, as a ``(values, bitmap, offset)`` column:
    the dictionary's distinct values are coded by ``agg`` (hash + exact check), rows by index."""
    import pyarrow as pa

    if pa.types.is_dictionary(arr.type) and arr.dictionary.null_count:
        arr = arr.cast(arr.type.value_type)  # nulls belong in the indices, not the values
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    entry = agg.text_codes(pl.Series(arr.dictionary))
    idx, bitmap, offset = _column(arr.indices, np.int64)
    if entry.shape[0] == 0:  # every id of the row group is missing
        return np.zeros(idx.shape[0], np.int64), bitmap, offset
    return np.take(entry, idx, mode="clip"), bitmap, offset  # null rows: any code, masked


@contextlib.contextmanager
def _stats_checked(dp: DirectPlan) -> Iterator[None]:
    """Customer ids outside the range the footers' statistics gave mean wrong statistics: say so
    (one line, naming the source and the fix) instead of an internal range error."""
    from fastseg.errors import DataError, ParameterError

    try:
        yield
    except ParameterError as exc:
        msg = (
            f"{dp.label}: the Parquet statistics of column {dp.columns['customer_id']!r} do not "
            f"cover its values ({exc}); rewrite the file (pyarrow or Polars write correct ones)"
        )
        raise DataError(msg) from exc


def _report(dp: DirectPlan, reasons: Sequence[str], counts: np.ndarray, n_read: int) -> O.RowReport:
    left_out = dict(zip(reasons, (int(c) for c in counts), strict=True))
    used = n_read - sum(left_out.values())
    return O.RowReport(source=dp.label, rows_read=n_read, rows_used=used, left_out=left_out)


def _one_chunk(col: Any) -> Any:
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


# ------------------------------------------------------------------------------------- the pass


def stream_direct(
    dp: DirectPlan,
    plan: O.OrderPlan,
    stats: dict[str, Any],
    as_of: dt.date,
    strict: bool,
    windows: tuple[int, ...],
    batch_rows: int,
) -> tuple[pl.DataFrame, O.RowReport, pl.Schema]:
    """Aggregate the orders of ``dp`` into per-customer features in one overlapped pass.

    Returns the features, the row report and the schema of the canonical order rows. Raises
    :class:`OrderIdsRepeat` when the order ids are not strictly increasing.
    """
    import pyarrow as pa

    from fastseg.features import OrderAggregator
    from fastseg.kernels.aggregate import CategoryCodes
    from fastseg.kernels.ingest import REASON_CODES, IngestBuffers, RunDuplicates, ingest_rows

    cols = dp.columns
    want_dups = "order_id" not in cols
    id_range = None
    if stats.get("id_min") is not None and not stats.get("text_ids"):
        id_range = (int(stats["id_min"]), int(stats["id_max"]))
    agg = OrderAggregator(as_of, windows, id_range=id_range, rows=stats["n"])
    if not dp.text_ids:
        agg.id_dtype = pl.Int64()
    as_of_day = (as_of - _EPOCH).days
    counts = np.zeros(len(REASON_CODES), np.int64)
    hashes: list[np.ndarray] = []
    no_ts: list[np.ndarray] = []  # hashes of rows without a timestamp
    runs = RunDuplicates()
    buffers: IngestBuffers | None = None
    cat_codes = CategoryCodes()
    last_oid = int(np.iinfo(np.int64).min)
    n_read = 0
    with _reading(dp, batch_rows) as tables:
        for table in tables:
            n = table.num_rows
            if buffers is None or buffers.rows < n:
                buffers = IngestBuffers(max(n, batch_rows), hashes=want_dups)
            ts_arr = _one_chunk(table.column(cols["order_ts"]))
            per_day = 1 if pa.types.is_date32(ts_arr.type) else _PER_DAY[ts_arr.type.unit]
            extra: dict[str, Any] = {}
            if "order_id" in cols:
                extra["order_id"] = _column(_one_chunk(table.column(cols["order_id"])), np.int64)
                extra["last_order_id"] = last_oid
            if "discount" in cols:
                extra["discount"] = _column(_one_chunk(table.column(cols["discount"])), np.float64)
            if "category" in cols:
                cat = _one_chunk(table.column(cols["category"]))
                if not pa.types.is_dictionary(cat.type):
                    cat = cat.dictionary_encode()
                values = pl.Series(cat.dictionary)
                chash = values.hash(seed=_CAT_SEED).to_numpy().astype(np.uint64)
                present = values.is_not_null().to_numpy()
                local = cat_codes.encode(chash, present).astype(np.int32)
                chash[~present] = np.uint64(0xDEAD04)
                extra["category"] = _column(cat.indices, np.int32)
                extra["category_local"] = local
                extra["category_hash"] = chash
            if want_dups and "quantity" in cols:
                extra["hashed_only"] = _column(
                    _one_chunk(table.column(cols["quantity"])), np.float64
                )
            ts_col = _column(ts_arr, np.int64)
            if dp.text_ids:  # each distinct text of the row group coded once, exactly
                cid_col = _text_codes(agg, _one_chunk(table.column(cols["customer_id"])))
            else:
                cid_col = _column(_one_chunk(table.column(cols["customer_id"])), np.int64)
            with _stats_checked(dp):
                used, ok, last_oid = ingest_rows(
                    cid_col,
                    ts_col,
                    per_day,
                    _column(_one_chunk(table.column(cols["amount"])), np.float64),
                    as_of_day,
                    buffers,
                    counts,
                    id_range=None if agg.offset is None else (agg.offset, agg.acc.shape[0]),
                    **extra,
                )
            if not ok:
                raise OrderIdsRepeat
            if want_dups:
                batch_hashes = buffers.hashes[:n].copy()
                hashes.append(batch_hashes)
                runs.add(ts_col, batch_hashes)
                if ts_arr.null_count:
                    no_ts.append(batch_hashes[~ts_arr.is_valid().to_numpy(zero_copy_only=False)])
            del table, ts_arr, ts_col, cid_col, extra
            n_read += n
            agg.add_arrays(
                buffers.cid[:used],
                buffers.day[:used],
                buffers.amount[:used],
                buffers.flags[:used],
                buffers.cat[:used] if "category" in cols else None,
                has_discount="discount" in cols,
                coded=agg.offset is not None or dp.text_ids,
            )
    report = _report(dp, REASON_CODES, counts, n_read)
    if want_dups and hashes:
        if runs.sorted:  # rows in timestamp order: twins sit in the same run of timestamps
            rest = np.concatenate(no_ts) if no_ts else np.empty(0, np.uint64)
            report.duplicates = runs.count() + O.count_duplicate_hashes(rest)
        else:
            report.duplicates = O.count_duplicate_hashes(np.concatenate(hashes))
    if report.rows_left_out and strict:
        raise O.strict_error(report, as_of)
    if report.rows_used == 0:
        raise O.no_usable_error(report, as_of)
    return agg.finish(), report, _row_schema(plan)


def _row_schema(plan: O.OrderPlan) -> pl.Schema:
    """The canonical order rows' schema, as the general path's batches have it."""
    found = plan.frame.collect_schema()
    out: dict[str, pl.DataType] = {}
    for name, dtype in found.items():
        if name.endswith("_raw") or name.startswith("__raw_"):
            continue
        out["order_date" if name == "order_ts" else name] = dtype
    return pl.Schema(out)


# ------------------------------------------------------------------------------------- events

#: the canonical event rows' schema (what rule filters over events are checked against)
EVENT_SCHEMA = pl.Schema({"customer_id": pl.Int64, "event_date": pl.Date, "event": pl.String})


def plan_direct_events(source: Any, columns: Any = None) -> DirectPlan | None:
    """A :class:`DirectPlan` when the events are Parquet files with integer customer ids, naive
    timestamps or dates and text event types; else None (the in-memory path reads them)."""
    import pyarrow.parquet as pq

    src, resolved, conversions = O.plan_events(source, columns)
    if src.kind != "parquet" or not src.files or conversions:
        return None
    kinds = {"customer_id": "customer_id", "event_ts": "order_ts", "event": "category"}
    try:
        for path in src.files:
            found = pq.read_schema(path)
            for canon, col in resolved.items():
                idx = found.get_field_index(col)
                if idx < 0 or _is_text(found.field(idx).type) and canon == "customer_id":
                    return None
                if not _arrow_ok(kinds[canon], found.field(idx).type):
                    return None
    except (OSError, ValueError, TypeError):
        return None
    return DirectPlan(tuple(src.files), dict(resolved), src.label)


def event_features_direct(
    dp: DirectPlan, as_of: dt.date, windows: Sequence[int], batch_rows: int = 1 << 20
) -> tuple[pl.DataFrame, O.RowReport]:
    """:func:`fastseg.features.event_features` of the events of ``dp`` (and their row report),
    streamed one row group at a time: memory grows with customers and event types, not events."""
    import pyarrow as pa

    from fastseg.features import check_windows, event_frame
    from fastseg.kernels.aggregate import aggregate_events
    from fastseg.kernels.encode import IdEncoder
    from fastseg.kernels.ingest import EVENT_REASON_CODES, ingest_events

    windows = check_windows(windows)
    cols = dp.columns
    as_of_day = (as_of - _EPOCH).days
    since = np.array([as_of_day - w for w in windows], np.int32)
    lo, hi = _id_range(dp)
    encoder = IdEncoder(lo, hi)  # a lookup table when the footers give a compact id range
    type_index: dict[str, int] = {}  # event type -> index, first seen first
    counts = np.zeros((1 << 10, 8, len(windows)), np.int64)
    last = np.full((1 << 10, 8), np.iinfo(np.int32).min, np.int32)
    reasons = np.zeros(len(EVENT_REASON_CODES), np.int64)
    out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    type_seen = np.zeros(0, bool)  # types with a usable event
    n_read = 0
    with _reading(dp, batch_rows) as tables:
        for table in tables:
            n = table.num_rows
            if out is None or out[0].shape[0] < n:
                m = max(n, batch_rows)
                out = (np.empty(m, np.int64), np.empty(m, np.int32), np.empty(m, np.int64))
            ts_arr = _one_chunk(table.column(cols["event_ts"]))
            per_day = 1 if pa.types.is_date32(ts_arr.type) else _PER_DAY[ts_arr.type.unit]
            ev = _one_chunk(table.column(cols["event"]))
            if not pa.types.is_dictionary(ev.type):
                ev = ev.dictionary_encode()
            entry = np.array(
                [
                    -1 if v is None else type_index.setdefault(v, len(type_index))
                    for v in ev.dictionary.to_pylist()
                ],
                np.int64,
            )
            used = ingest_events(
                _column(_one_chunk(table.column(cols["customer_id"])), np.int64),
                _column(ts_arr, np.int64),
                per_day,
                _column(ev.indices, np.int32),
                entry,
                as_of_day,
                out,
                reasons,
            )
            n_read += n
            del table, ts_arr, ev
            with _stats_checked(dp):
                codes = encoder.encode(out[0][:used])
            seen = np.bincount(out[2][:used], minlength=len(type_index)) > 0
            type_seen = np.pad(type_seen, (0, seen.shape[0] - type_seen.shape[0])) | seen
            c_need, e_need = encoder.n_unique, len(type_index)
            if counts.shape[0] < c_need or counts.shape[1] < e_need:
                c_cap = max(
                    c_need, 2 * counts.shape[0] if counts.shape[0] < c_need else counts.shape[0]
                )
                e_cap = max(e_need, counts.shape[1])
                grown = np.zeros((c_cap, e_cap, len(windows)), np.int64)
                grown_last = np.full((c_cap, e_cap), np.iinfo(np.int32).min, np.int32)
                grown[: counts.shape[0], : counts.shape[1]] = counts
                grown_last[: last.shape[0], : last.shape[1]] = last
                counts, last = grown, grown_last
            aggregate_events(
                codes, c_need, out[2][:used], e_need, out[1][:used], since, out=(counts, last)
            )
    report = _report(dp, EVENT_REASON_CODES, reasons, n_read)
    order = encoder.sort_order()
    ids = pl.Series("customer_id", encoder.uniques[order], dtype=pl.Int64)
    # types seen only on left-out rows get no columns (as when the events are read in memory)
    names = list(type_index)
    kept = [t for t in range(type_seen.shape[0]) if type_seen[t]]
    frame = event_frame(
        ids, [names[t] for t in kept], counts, last, windows, as_of_day, rows=order, type_at=kept
    )
    return frame, report


def _id_range(dp: DirectPlan) -> tuple[int | None, int | None]:
    """The customer id range from the Parquet footers' statistics, or (None, None)."""
    import pyarrow.parquet as pq

    lo = hi = None
    try:
        for path in dp.files:
            md = pq.ParquetFile(path).metadata
            leaf = [md.schema.column(i).name for i in range(md.num_columns)].index(
                dp.columns["customer_id"]
            )
            for g in range(md.num_row_groups):
                st = md.row_group(g).column(leaf).statistics
                if md.row_group(g).num_rows == 0 or (
                    st is not None and st.null_count == md.row_group(g).num_rows
                ):
                    continue
                if st is None or not st.has_min_max:
                    return None, None
                lo = int(st.min) if lo is None else min(lo, int(st.min))
                hi = int(st.max) if hi is None else max(hi, int(st.max))
    except (OSError, ValueError, TypeError):
        return None, None
    return lo, hi
