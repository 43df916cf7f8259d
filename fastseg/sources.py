"""Every order source as one thing: a bounded stream of Arrow tables of canonical columns.

:func:`open_orders` is the one place that decides how an order source is read. Two readers, one
output — Arrow tables whose columns carry canonical names and types (``customer_id`` integer or
text, ``order_ts`` a naive timestamp or a date, ``amount`` numeric, and ``order_id``,
``category``, ``discount`` and rule-filter columns when present), at most two tables alive at a
time:

* ``arrow`` — Parquet files whose columns already have their types: pyarrow decodes one row
  group at a time (text ids and categories as dictionaries) in a reader thread while the caller
  works on the previous one;
* ``polars`` — everything else (CSV/TSV, Arrow IPC, in-memory Polars/pandas/Arrow frames,
  columns that need typing such as text numbers, zoned timestamps or float ids): Polars types
  the rows batch by batch (errors name the column and value), then hands them over as Arrow.

What comes after — the row checks, customer codes and accumulators (:mod:`fastseg.pipeline`) —
is the same for both. :func:`order_stats` plans the pass before any row is read: row count,
latest date, customer and order id ranges, from the Parquet footers when they have them, else
from one light query.
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
from fastseg import schema
from fastseg.errors import FastsegError, InputError, ParameterError
from fastseg.io import Source

__all__ = [
    "READERS",
    "OrderReader",
    "OrderStats",
    "open_orders",
    "order_stats",
]

#: the readers :func:`open_orders` chooses from (tests force each)
READERS = ("arrow", "polars")
#: canonical order columns the arrow reader takes as typed
_TYPED = ("customer_id", "order_ts", "amount", "order_id", "category", "discount", "quantity")
PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}
#: row groups larger than this many batches are read in slices (bounds memory)
MAX_GROUP_BATCHES = 2
#: columns a reader makes rather than reads: the line items' amount, the timestamps as read
_MADE = ("amount", "order_ts_raw")
#: batches read per slice of a Polars scan: bounds Polars' read-ahead (see :func:`_polars_batches`)
SEGMENT_BATCHES = 2


@dataclass(frozen=True)
class OrderStats:
    """What is known of an order source before its rows are read.

    ``groups``: per Parquet row group (in reading order), its order-id ``(min, max)`` when the
    footers give them for every group, else None. ``oid_increasing``: the order ids were proven
    present and strictly increasing (every row is its own order).
    """

    n: int
    max_date: dt.date | None
    id_range: tuple[int, int] | None
    text_ids: bool
    csv_ids: bool = False
    oid_range: tuple[int, int] | None = None
    oid_increasing: bool = False
    groups: tuple[tuple[int, int], ...] | None = None
    #: set by the buckets of :mod:`fastseg.buckets`: their tables each hold every line of their
    #: orders (whole row groups of one bucket), whatever the order-id ranges
    groups_disjoint: bool | None = None

    @property
    def oid_groups_disjoint(self) -> bool:
        """Row groups hold increasing, non-overlapping order-id ranges: lines of one order can
        only share a row group."""
        if self.groups_disjoint is not None:
            return self.groups_disjoint
        g = self.groups
        return g is not None and all(g[i][0] > g[i - 1][1] for i in range(1, len(g)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_error(exc: BaseException, label: str, source: Source | None = None) -> InputError:
    """A reader's exception as one line naming the source; for CSV, the file and line where it
    stops being readable (found by :func:`fastseg.io.csv_problem`) when that can be told."""
    if source is not None and source.kind == "csv":
        from fastseg.io import csv_problem, csv_separator

        for path in source.files:
            problem = csv_problem(path, csv_separator(path))
            if problem is not None:
                return InputError(f"cannot read '{path}': {problem}")
    return InputError(f"cannot read {label}: {_first_line(exc)}")


# ------------------------------------------------------------------------------------- planning


def _footer_stats(plan: O.OrderPlan, need_max_date: bool) -> OrderStats | None:
    """The plan from Parquet footers alone (row counts, min/max statistics), when every file
    has them for the columns involved; None otherwise."""
    import pyarrow.parquet as pq

    if plan.source.kind != "parquet" or not plan.source.files:
        return None
    names = plan.frame.collect_schema()
    cid_type = names["customer_id"]
    text_ids = cid_type == pl.String
    if not cid_type.is_integer() and not text_ids:
        return None
    ts_col, cid_col = plan.columns["order_ts"], plan.columns["customer_id"]
    oid_col = plan.columns.get("order_id")
    found = plan.source.frame.collect_schema()
    ts_type = found[ts_col]
    if need_max_date and not (
        ts_type == pl.Date or (isinstance(ts_type, pl.Datetime) and ts_type.time_zone is None)
    ):
        return None  # zone-aware or text timestamps: their dates are not in the statistics
    int_oids = oid_col is not None and found[oid_col].is_integer()
    n, lo, hi, top = 0, None, None, None
    groups: list[tuple[int, int]] | None = [] if int_oids else None
    try:
        for path in plan.source.files:
            md = pq.ParquetFile(path).metadata
            leaves = {md.schema.column(i).name: i for i in range(md.num_columns)}
            for g in range(md.num_row_groups):
                rg = md.row_group(g)
                n += rg.num_rows
                if rg.num_rows == 0:
                    continue
                if not text_ids:  # text ids are hashed: no id range needed
                    st = rg.column(leaves[cid_col]).statistics
                    if st is not None and st.has_min_max:
                        lo = st.min if lo is None else min(lo, st.min)
                        hi = st.max if hi is None else max(hi, st.max)
                    elif st is None or st.null_count != rg.num_rows:
                        return None
                if groups is not None:
                    ost = rg.column(leaves[oid_col]).statistics
                    if ost is None or not ost.has_min_max or ost.null_count:
                        groups = None
                    else:
                        groups.append((int(ost.min), int(ost.max)))
                if need_max_date:
                    tst = rg.column(leaves[ts_col]).statistics
                    if tst is None or not tst.has_min_max:
                        if tst is not None and tst.null_count == rg.num_rows:
                            continue
                        return None
                    value = tst.max
                    day = value.date() if isinstance(value, dt.datetime) else value
                    if not isinstance(day, dt.date):
                        return None
                    top = day if top is None else max(top, day)
    except (OSError, KeyError, ValueError, TypeError, AttributeError):
        return None
    oid_range = None
    if groups:
        oid_range = (min(g[0] for g in groups), max(g[1] for g in groups))
    return OrderStats(
        n=n,
        max_date=top,
        id_range=None if lo is None or text_ids else (int(lo), int(hi)),
        text_ids=text_ids,
        oid_range=oid_range,
        groups=tuple(groups) if groups is not None else None,
    )


def _query_stats(plan: O.OrderPlan, need_max_date: bool) -> OrderStats:
    """Row count, latest date, id ranges and whether order ids increase, in one light query."""
    lf = plan.frame
    names = lf.collect_schema()
    exprs: list[pl.Expr] = [pl.len().alias("n")]
    if need_max_date:
        exprs.append(pl.col("order_ts").max().alias("max_date"))
    cid = names["customer_id"]
    csv_ids = cid == pl.String and plan.source.kind == "csv"  # typed batch by batch
    text_ids = cid == pl.String and not csv_ids
    if cid.is_integer():
        exprs += [
            pl.col("customer_id").min().alias("id_min"),
            pl.col("customer_id").max().alias("id_max"),
        ]
    oid = names.get("order_id")
    if oid is not None:
        if oid.is_integer():
            exprs += [
                O.ids_increasing().alias("oid_increasing"),
                pl.col("order_id").min().alias("oid_min"),
                pl.col("order_id").max().alias("oid_max"),
            ]
        elif oid == pl.String:  # CSV reads every column as text
            exprs.append(O.ids_increasing_text().alias("oid_increasing"))
            plain = O.plain_int("order_id")  # their range sizes the order-lines table
            exprs += [plain.min().alias("oid_min"), plain.max().alias("oid_max")]
    try:
        got = lf.select(exprs).collect(engine="streaming").row(0, named=True)
    except FastsegError:
        raise
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise read_error(exc, plan.source.label, plan.source) from exc
    id_range = None
    if cid.is_integer() and got.get("id_min") is not None:
        id_range = (int(got["id_min"]), int(got["id_max"]))
    oid_range = None
    if got.get("oid_min") is not None:
        oid_range = (int(got["oid_min"]), int(got["oid_max"]))
    return OrderStats(
        n=int(got["n"]),
        max_date=got.get("max_date"),
        id_range=id_range,
        text_ids=text_ids,
        csv_ids=csv_ids,
        oid_range=oid_range,
        oid_increasing=bool(got.get("oid_increasing")) or got["n"] < 2,
    )


def order_stats(plan: O.OrderPlan, *, need_max_date: bool) -> OrderStats:
    """Plan the pass over ``plan``'s rows: from the Parquet footers when they suffice, else by
    one light query (a full parse for CSV)."""
    return _footer_stats(plan, need_max_date) or _query_stats(plan, need_max_date)


# ------------------------------------------------------------------------------------- readers


def arrow_typed(canon: str, t: Any) -> bool:
    import pyarrow as pa

    if canon in ("customer_id", "order_id") and is_text(t):
        return True
    if canon in ("customer_id", "order_id"):
        return bool(pa.types.is_signed_integer(t)) or t in (pa.uint8(), pa.uint16(), pa.uint32())
    if canon == "order_ts":
        return bool(pa.types.is_date32(t)) or (
            pa.types.is_timestamp(t) and t.tz is None and t.unit in PER_DAY
        )
    if canon in ("amount", "discount", "quantity", "unit_price"):
        return bool(pa.types.is_integer(t) or pa.types.is_floating(t)) and t != pa.uint64()
    if canon in ("category", "channel"):
        return is_text(t)
    return True  # the source's own columns asked for by rule filters: passed through as read


def is_text(t: Any) -> bool:
    """Text, or a dictionary of text (what the reader decodes as a dictionary)."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


@dataclass(frozen=True)
class OrderReader:
    """How an order source is read, and what its tables hold.

    ``columns``: canonical name -> source column (the arrow reader renames to canonical names).
    ``row_hashes``: the reader hashes rows itself (the ``polars`` reader hashes the values as
    read, before typing) and yields them with each table.
    """

    kind: str
    plan: O.OrderPlan
    columns: dict[str, str]
    batch_rows: int
    csv_ids: bool = False

    @property
    def label(self) -> str:
        return self.plan.source.label

    @property
    def row_hashes(self) -> bool:
        return self.kind == "polars"

    @contextlib.contextmanager
    def tables(self, need: Sequence[str], *, hashes: bool) -> Iterator[Iterator[Any]]:
        """``(group, whole, table, row hashes or None)`` of the rows, in order, at most two
        tables at a time; ``group`` numbers the Parquet row groups (arrow reader; -1
        otherwise), ``whole`` says the table is all of its row group.

        ``need``: the canonical columns to read, of those the source has (``amount`` is made
        from ``quantity`` x ``unit_price`` for line items; ``order_ts_raw``, the polars
        reader's timestamps as read, for rejects). ``hashes``: the polars reader hashes each
        row as read (the arrow reader's rows are hashed by the check kernel).
        """
        want = [c for c in dict.fromkeys(need) if c in self.columns or c in _MADE]
        if "amount" in need and "amount" not in self.columns:
            want += [c for c in ("quantity", "unit_price") if c not in want]
        if self.kind == "arrow":
            it = _arrow_tables(self, [c for c in want if c != "order_ts_raw"])
        else:
            it = _polars_tables(self, want, hashes)
        with _prefetched(it, self.label, self.plan.source) as tables:
            yield tables


def _arrow_plan_ok(plan: O.OrderPlan) -> bool:
    import pyarrow.parquet as pq

    src = plan.source
    if src.kind != "parquet" or not src.files or plan.conversions:
        return False
    try:
        for path in src.files:
            found = pq.read_schema(path)
            for canon, col in plan.columns.items():
                idx = found.get_field_index(col)
                if idx < 0 or not arrow_typed(canon, found.field(idx).type):
                    return False
    except (OSError, ValueError, TypeError):  # unreadable footers: the polars reader says why
        return False
    return True


def open_orders(
    plan: O.OrderPlan, stats: OrderStats, *, batch_rows: int, reader: str | None = None
) -> OrderReader:
    """The reader for ``plan`` (``reader`` forces one of :data:`READERS`; the arrow reader
    only reads Parquet whose columns need no typing)."""
    kind = reader or ("arrow" if _arrow_plan_ok(plan) else "polars")
    if kind == "arrow" and not _arrow_plan_ok(plan):
        msg = (
            f"reader='arrow' cannot read {plan.source.label}: it reads Parquet whose columns "
            "need no typing; leave reader unset to let the source choose"
        )
        raise ParameterError(msg)
    return OrderReader(kind, plan, dict(plan.columns), batch_rows, stats.csv_ids)


def _arrow_tables(r: OrderReader, want: Sequence[str]) -> Iterator[tuple[int, bool, Any, None]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = r.columns
    source_names = list(dict.fromkeys(cols[c] for c in want if c in cols))
    dict_cols = [cols[c] for c in ("category", "customer_id") if c in want]
    # text columns rule filters read (channel, sku, the source's own): as dictionaries too, so
    # a filter looks at each batch's few distinct values instead of encoding every row
    plain = {"customer_id", "order_ts", "amount", "quantity", "unit_price", "discount", "order_id"}
    rest = [cols[c] for c in want if c in cols and c not in plain and cols[c] not in dict_cols]
    if rest:
        found = r.plan.source.frame.collect_schema()
        dict_cols += [c for c in rest if found.get(c) == pl.String]
    for group, whole, table in parquet_tables(
        r.plan.source.files, source_names, dict_cols, r.batch_rows
    ):
        out = {c: table.column(cols[c]) for c in want if c in cols}
        if "amount" not in out:  # line items
            out["amount"] = pc.multiply(
                out["quantity"].cast(pa.float64()), out["unit_price"].cast(pa.float64())
            )
        yield group, whole, pa.table(out), None


def _polars_batches(
    lf: pl.LazyFrame, batch_rows: int, *, sliceable: bool
) -> Iterator[pl.DataFrame]:
    """The rows of ``lf`` in batches, holding at most a few batches in memory.

    Polars' ``collect_batches`` reads ahead without bound when the consumer is slower than the
    reader (a whole CSV file of 10M rows, 2.5 GB, was seen buffered); slicing the scan into
    segments of ``SEGMENT_BATCHES`` batches bounds that. Parquet, Arrow IPC and plain CSV skip
    to a slice cheaply (CSV by counting lines); compressed CSV and in-memory frames are read in
    one go (a slice would decompress the file again; a frame is already in memory).
    """
    if not sliceable:
        yield from lf.collect_batches(chunk_size=batch_rows)
        return
    segment = batch_rows * SEGMENT_BATCHES
    offset = 0
    while True:
        got = 0
        for batch in lf.slice(offset, segment).collect_batches(chunk_size=batch_rows):
            got += batch.height
            yield batch
        if got < segment:
            return
        offset += segment


def _polars_tables(
    r: OrderReader, want: Sequence[str], hashes: bool
) -> Iterator[tuple[int, bool, Any, np.ndarray | None]]:
    plan = r.plan
    conversions = [c for c in plan.conversions if c.canonical in want]
    lf = plan.frame
    raw_ts = "order_ts_raw" in want
    if hashes:  # rows are told apart by every column read, timestamps as read
        read = [c for c in lf.collect_schema().names() if not c.startswith("__raw_")]
        conversions = list(plan.conversions)
    else:
        read = [c for c in want if c in plan.columns or c == "order_ts_raw"]
    lf = lf.select([*read, *(c.raw for c in conversions)])
    gz = any(f.name.lower().endswith(".gz") for f in plan.source.files)
    sliceable = plan.source.kind in ("parquet", "ipc") or (plan.source.kind == "csv" and not gz)
    label = plan.source.label
    for raw in _polars_batches(lf, r.batch_rows, sliceable=sliceable):
        batch = schema.check_conversions(raw, conversions, label)
        del raw
        if r.csv_ids:  # stripped; typed below, after the rows are hashed as text
            batch = O.csv_ids_stripped(batch)
        if "amount" not in batch.columns:
            batch = batch.with_columns((pl.col("quantity") * pl.col("unit_price")).alias("amount"))
        row_hashes = None
        if hashes:  # every column as read (timestamps too, not just their dates)
            row_hashes = O.row_hashes(batch.rename({"order_ts": "order_date"})).to_numpy()
            batch = batch.select([c for c in want if c != "order_ts_raw" or raw_ts])
        if r.csv_ids:  # integers when every id of the batch is a plain integer
            batch = O.csv_ids_typed(batch)
        yield -1, False, batch.to_arrow(compat_level=pl.CompatLevel.oldest()), row_hashes


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
def _prefetched(
    it: Iterator[Any], label: str, source: Source | None = None
) -> Iterator[Iterator[Any]]:
    """``it`` run ahead by a reader thread; any read error, in the thread or the ``with``
    body, becomes an :class:`InputError` naming the source; the thread is stopped and the
    decoders' memory released on the way out."""
    import pyarrow as pa

    reader = _Prefetch(it)
    try:
        yield iter(reader)
    except FastsegError:
        raise
    except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
        raise read_error(exc, label, source) from exc
    finally:
        reader.close()
        pa.default_memory_pool().release_unused()  # before the output is built


@contextlib.contextmanager
def reading(it: Iterator[Any], label: str) -> Iterator[Iterator[Any]]:
    """:func:`_prefetched` for other streams of tables (the events)."""
    with _prefetched(it, label) as tables:
        yield tables


def parquet_tables(
    files: Sequence[Path], columns: Sequence[str], dict_cols: Sequence[str], batch_rows: int
) -> Iterator[tuple[int, bool, Any]]:
    """``(group, whole, table)``: the non-empty row groups of Parquet ``files`` in order, numbered
    across the files, each read whole when it has at most :data:`MAX_GROUP_BATCHES` batches of
    rows (``whole``), else in slices of ``batch_rows``; ``dict_cols`` read as dictionaries."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    group = 0
    for path in files:
        pf = pq.ParquetFile(path, read_dictionary=list(dict_cols) or None)
        md = pf.metadata
        for g in range(md.num_row_groups):
            rows = md.row_group(g).num_rows
            if rows == 0:
                continue
            if rows <= MAX_GROUP_BATCHES * batch_rows:
                yield group, True, pf.read_row_group(g, columns=list(columns))
            else:
                for b in pf.iter_batches(
                    batch_size=batch_rows, row_groups=[g], columns=list(columns)
                ):
                    yield group, False, pa.Table.from_batches([b])
            group += 1


# ------------------------------------------------------------------------------- Arrow columns


def column(arr: Any, dtype: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """``(values as dtype, validity bitmap or empty, bit offset)`` of a primitive Arrow array."""
    import pyarrow as pa

    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date64(t):
        phys: Any = np.int64
    elif pa.types.is_date32(t):
        phys = np.int32
    elif pa.types.is_boolean(t):
        arr = arr.cast(pa.uint8())
        t = arr.type
        phys = np.uint8
    else:
        phys = np.dtype(t.to_pandas_dtype())
    buffers = arr.buffers()
    values = np.frombuffer(buffers[1], dtype=phys)[arr.offset : arr.offset + len(arr)]
    if values.dtype != dtype:
        values = values.astype(dtype)
    if arr.null_count == 0 or buffers[0] is None:
        return values, np.empty(0, np.uint8), 0
    return values, np.frombuffer(buffers[0], dtype=np.uint8), arr.offset


def one_chunk(col: Any) -> Any:
    """A chunked Arrow column as one array."""
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def dictionary(arr: Any) -> Any:
    """A text Arrow array as a dictionary array whose values hold no null."""
    import pyarrow as pa

    if pa.types.is_dictionary(arr.type) and arr.dictionary.null_count:
        arr = arr.cast(arr.type.value_type)  # nulls belong in the indices, not the values
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    return arr


#: Unicode White_Space: what Polars' ``strip_chars()`` removes, and so what ids are trimmed of
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + ("\u2028\u2029\u202f\u205f\u3000")
)


def trimmed_ids(arr: Any) -> Any:
    """A dictionary array of text ids with the documented id rule applied: surrounding
    whitespace trimmed, an id left empty missing (null). Only the distinct values are looked
    at, and only changed when :func:`fastseg.kernels.encode.needs_trim` finds one to change."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from fastseg.kernels.encode import needs_trim

    values = arr.dictionary
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return arr
    if len(values) == 0 or not needs_trim(values):
        return arr
    values = pc.utf8_trim(values, characters=WHITE_SPACE)
    empty = pc.equal(pc.utf8_length(values), 0)
    indices = arr.indices
    if pc.any(empty).as_py():
        gone = pc.indices_nonzero(empty)
        indices = pc.if_else(pc.is_in(indices, value_set=gone), None, indices)
    return pa.DictionaryArray.from_arrays(indices, values)


def per_day(t: Any) -> int:
    """Timestamp units per day of an Arrow date32/timestamp type."""
    import pyarrow as pa

    return 1 if pa.types.is_date32(t) else PER_DAY[t.unit]
