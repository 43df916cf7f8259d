"""The one row path: any order source to per-customer features, streaming.

Every source — Parquet (file, folder, glob), Arrow IPC, CSV, in-memory Polars/pandas/Arrow
frames and LazyFrames — goes the same way:

1. :func:`fastseg.sources.order_stats` plans the pass before any row is read (row count, latest
   date, customer and order id ranges: Parquet footers, or one light query);
2. :func:`fastseg.sources.open_orders` chooses the reader, which yields bounded Arrow tables of
   canonical columns (at most two alive at a time);
3. one check kernel (:func:`fastseg.kernels.ingest.ingest_rows`) per table: each left-out reason
   defined once, timestamps to days, discount flags, row hashes for the duplicate count,
   compaction of the usable rows;
4. customer codes (an offset for compact integer ids, a hash table otherwise, text ids by
   dictionary and hash with an exact check) and the lines of one order counted once
   (:class:`fastseg.kernels.lines.OrderLines`, whatever the order the lines come in);
5. the per-customer accumulators (:class:`fastseg.features.OrderAggregator`), whose records of
   two batches or partitions merge exactly, and the rule compiler's windowed aggregates over
   orders (:class:`fastseg.aggregates.RuleAggregates`), updated by the same customer codes.

Memory grows with the customers (and, for line items whose order ids are not proven
increasing, with the orders), never with the rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fastseg import orders as O
from fastseg import sources as S
from fastseg.buckets import RSS_SHARE as _RSS_SHARE
from fastseg.buckets import StateTooLarge
from fastseg.buckets import rss_now as _rss_now
from fastseg.config import EPOCH
from fastseg.errors import DataError, FastsegError, ParameterError
from fastseg.features import DEFAULT_WINDOWS, OrderAggregator, check_windows
from fastseg.outputs import write_frame
from fastseg.progress import Stage

__all__ = ["BATCH_ROWS", "OrderFeatures", "aggregate_rules", "order_features"]

#: rows per streamed batch (Parquet row groups up to twice this are read whole). Each row in
#: flight costs ~150 bytes; each batch touches most customers' accumulators once, so much
#: smaller batches cost time (see docs/performance.md).
BATCH_ROWS = 1 << 20
_CAT_SEED = 0x5EED
_OID_SEED = 0x0DD5


@dataclass
class OrderFeatures:
    """Per-customer order features and what it took to make them."""

    frame: pl.DataFrame
    as_of: dt.date
    report: O.RowReport
    schema: pl.Schema  # of the canonical order rows (for type-checking rule filters)
    aggregates: tuple[pl.DataFrame, dict[str, Any]] | None = None  # rule aggregates over orders
    reader: str = "arrow"
    #: the left-out rows with their reason (``rejects=True``), for the caller to write
    rejects: pl.DataFrame | None = None
    #: the day number (days since the epoch) of the latest usable row (None: no usable row)
    max_used_day: int | None = None


def aggregate_rules(
    rows: pl.DataFrame, specs: Sequence[Any], as_of: dt.date, existing: Sequence[str]
) -> tuple[pl.DataFrame, dict[str, Any]] | None:
    """Windowed rule aggregates of one batch's rows in one ``group_by``.

    Aggregates already present as features (``orders_30d``...) are not computed again; those
    needing a column the rows lack are left out (the rule compiler then skips or rejects the
    segments that use them, naming the missing column).
    """
    todo = {
        s.name: s
        for s in specs
        if s.name not in existing and all(c in rows.columns for c in s.columns)
    }
    if not todo:
        return None
    out = rows.group_by("customer_id").agg([s.expr(as_of).alias(name) for name, s in todo.items()])
    return out, {name: getattr(s, "fill", 0) for name, s in todo.items()}


def order_features(
    source: Any,
    *,
    columns: Mapping[str, str] | Sequence[str] | None = None,
    as_of: dt.date | dt.datetime | str | None = None,
    strict: bool = False,
    rejects: str | Path | bool | None = None,
    windows: Sequence[int] = DEFAULT_WINDOWS,
    aggregates: Sequence[Any] = (),
    extra_columns: Sequence[str] = (),
    batch_rows: int = BATCH_ROWS,
    reader: str | None = None,
    progress: Stage | None = None,
    btyd: bool = False,
    top_category: bool = False,
    tz: str | None = None,
    opened: Any = None,
    budget: Any = None,
    partial: bool = False,
    refresh: Any = None,
) -> OrderFeatures:
    """Read an order history and aggregate it per customer (see :mod:`fastseg.pipeline`).

    ``aggregates`` are the rule compiler's windowed aggregates over orders, computed in the
    same pass per customer code (:mod:`fastseg.aggregates`); their frame is
    :attr:`OrderFeatures.aggregates`. ``reader`` forces one of
    :data:`fastseg.sources.READERS` (tests); by default the source decides. ``progress`` (a
    :class:`fastseg.progress.Stage`) gets the row count once it is known and the rows of each
    batch as it is done. ``top_category`` adds that column (when the orders have categories;
    it costs about a third of the pass, so only when a rule uses it). ``btyd`` adds the BTYD
    summary columns
    (:data:`fastseg.features.BTYD_COLUMNS`), from the distinct purchase days kept in the pass.
    ``tz``: order days are local days in that zone (:func:`fastseg.orders.plan_orders`).
    ``opened``: ``(plan, stats, open_reader)`` made already by the caller (the buckets of
    :mod:`fastseg.buckets`: the plan of the original source, one bucket's statistics, and a
    function ``(plan, stats, batch_rows) -> reader`` replaying the bucket's tables); ``source``,
    ``columns``, ``extra_columns`` and ``tz`` are then the plan's. ``budget`` (a
    :class:`fastseg.buckets.Budget`): the pass raises :class:`fastseg.buckets.StateTooLarge`
    as soon as its state would pass it. ``partial``: the rows are some customers' (a bucket):
    the checks of the whole (no row, no usable row, ``strict``) are the caller's, and
    ``as_of`` must be given.
    """
    windows = check_windows(windows)
    as_of = O.as_date(as_of, "as_of")
    if reader is not None and reader not in S.READERS:
        msg = f"reader: expected one of {', '.join(S.READERS)}, got {reader!r}"
        raise ParameterError(msg)
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        msg = f"batch_rows: expected a positive whole number, got {batch_rows!r}"
        raise ParameterError(msg)
    open_reader = None
    if opened is not None:
        plan, stats, open_reader = opened
    else:
        plan = O.plan_orders(
            source, columns=columns, extra_columns=extra_columns, keep_raw_ts=True, tz=tz
        )
        stats = S.order_stats(plan, need_max_date=as_of is None)
    label = plan.source.label
    if stats.n == 0 and not partial and (refresh is None or refresh.old is None):
        msg = f"orders: {label} has no rows; nothing to score"
        raise DataError(msg)
    if progress is not None:
        progress.update(0, stats.n)
    defaulted = as_of is None
    if refresh is not None:
        as_of = refresh.scoring_date(as_of, stats.max_date)
    if as_of is None:
        as_of = stats.max_date
        if as_of is None:
            raise O.no_dates_error(plan)
    specs = [a for a in aggregates if a.source == "orders"]
    keep = rejects is not None and rejects is not False
    opts = {
        "btyd": btyd,
        "top_category": top_category,
        "open_reader": open_reader,
        "budget": budget,
        "refresh": refresh,
    }
    rows = _row_pass(plan, stats, as_of, windows, specs, keep, batch_rows, reader, progress, **opts)
    latest_used = rows.max_used_day if refresh is None else refresh.latest_used(rows.max_used_day)
    if refresh is not None and latest_used is not None and refresh.old is not None:
        latest_used = max(latest_used, (dt.date.fromisoformat(refresh.old["as_of"]) - EPOCH).days)
    if defaulted and latest_used is not None and latest_used < rows.as_of_day:
        # The latest dated rows were all left out (no customer id, no amount): the scoring date
        # is the latest usable row's, and the windows count from it, so the rows are read again.
        as_of = EPOCH + dt.timedelta(days=latest_used)
        rows.close()
        if progress is not None:
            progress.restart()
        if refresh is not None:
            refresh.reset()
        rows = _row_pass(
            plan, stats, as_of, windows, specs, keep, batch_rows, reader, progress, **opts
        )
    report = rows.report()
    if report.rows_left_out and strict and not partial:
        raise O.strict_error(report, as_of)
    if refresh is not None and report.left_out.get("after_as_of"):
        raise _after_state_date(report, as_of, stats.max_date)
    if report.rows_used == 0 and not partial and (refresh is None or refresh.old is None):
        raise O.no_usable_error(report, as_of)
    rejected = None
    if keep:
        rejected = O.rejects_frame(rows.rejected or [rows.empty_rejects()])
        if not isinstance(rejects, bool):  # a path: written now, atomically (the API stages it)
            report.rejects_path = write_frame(rejected, rejects, option="--rejects")
    rows.close()  # the order-lines table and the batch buffers: not needed for the output
    if refresh is not None:  # the new state's files, before finish() reorders the records
        refresh.save(rows, as_of, stats.max_date, report, plan.frame.collect_schema())
    extra = rows.rule_aggregates()
    if extra is not None and refresh is not None and refresh.hidden:  # kept, not output
        agg_frame, fills = extra
        agg_frame = agg_frame.drop([c for c in refresh.hidden if c in agg_frame.columns])
        fills = {k: v for k, v in fills.items() if k not in refresh.hidden}
        extra = (agg_frame, fills) if agg_frame.width > 1 else None
    frame = rows.agg.finish()
    _check_finite(frame, plan)
    return OrderFeatures(
        frame, as_of, report, _row_schema(plan), extra, rows.rd.kind, rejected, rows.max_used_day
    )


def _after_state_date(report: O.RowReport, as_of: dt.date, latest: dt.date | None) -> DataError:
    n = report.left_out["after_as_of"]
    msg = (
        f"orders: {n:,} rows in {report.source} are dated after the scoring date {as_of}; a "
        "saved state cannot hold orders for a later date (they would never be counted): drop "
        "--as-of (the latest order's date is the scoring date)"
        + (f" or give --as-of {latest} or later" if latest is not None else "")
    )
    return DataError(msg)


def _check_finite(frame: pl.DataFrame, plan: O.OrderPlan) -> None:
    """Sums of finite amounts that overflow (past ~1.8e308) are an error naming the column and
    the first customer, not an infinite revenue passed on to the scores."""
    sums = [c for c in frame.columns if c == "monetary" or c.startswith("revenue_")]
    bad = frame.filter(pl.any_horizontal(pl.col(sums).is_infinite())) if sums else frame.clear()
    if bad.height:
        col = plan.columns.get("amount", "amount")
        source = "amounts" if "amount" in plan.columns else "line totals (quantity x unit_price)"
        msg = (
            f"orders: {plan.source.label}: the {source} of customer {bad['customer_id'][0]!r}"
            + (f" and {bad.height - 1:,} more" if bad.height > 1 else "")
            + f" add up past the largest number a float64 holds (column {col!r}); check the "
            "column's values and unit (amounts like 1e308 are not money)"
        )
        raise DataError(msg)


def _row_pass(
    plan: O.OrderPlan,
    stats: S.OrderStats,
    as_of: dt.date,
    windows: tuple[int, ...],
    specs: Sequence[Any],
    keep_rejects: bool,
    batch_rows: int,
    reader: str | None,
    progress: Stage | None = None,
    btyd: bool = False,
    top_category: bool = False,
    open_reader: Any = None,
    budget: Any = None,
    refresh: Any = None,
) -> _RowPass:
    if open_reader is not None:
        rd = open_reader(plan, stats, batch_rows)
    else:
        rd = S.open_orders(plan, stats, batch_rows=batch_rows, reader=reader)
    rows = _RowPass(
        rd, stats, as_of, windows, specs, keep_rejects, progress, btyd, top_category, refresh
    )
    rows.budget = budget
    rows.check_budget(initial=True)
    with _read_errors(plan):
        rows.run()
    return rows


@contextlib.contextmanager
def _read_errors(plan: O.OrderPlan) -> Iterator[None]:
    """Reader errors (a corrupt file, a bad CSV line) as one line naming the source."""
    try:
        yield
    except FastsegError:
        raise
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise S.read_error(exc, plan.source.label, plan.source) from exc


def spill_rows(
    plan: O.OrderPlan,
    stats: S.OrderStats,
    as_of: dt.date,
    *,
    windows: tuple[int, ...],
    specs: Sequence[Any],
    keep_rejects: bool,
    batch_rows: int,
    reader: str | None,
    n_buckets: int,
    folder: Path,
    progress: Stage | None = None,
) -> tuple[Any, int, str]:
    """Read the order rows as the row pass would (the same columns, the reader's row hashes)
    and spill them to ``n_buckets`` customer buckets under ``folder``
    (:func:`fastseg.buckets.spill_orders`). Returns ``(spill, per_row_bytes, reader kind)``."""
    import dataclasses

    from fastseg.buckets import spill_orders

    rd = S.open_orders(plan, stats, batch_rows=batch_rows, reader=reader)
    shape = _RowPass(
        rd, dataclasses.replace(stats, id_range=None), as_of, windows, specs, keep_rejects
    )
    hashes = shape.want_dups and rd.row_hashes
    as_text = bool(stats.text_ids or stats.csv_ids)
    with _read_errors(plan):
        spill = spill_orders(rd, shape.need, hashes, n_buckets, folder, as_text, progress)
    return spill, shape.per_row_bytes, rd.kind


def _row_schema(plan: O.OrderPlan) -> pl.Schema:
    """The canonical order rows' schema (``order_ts`` as ``order_date``), as rules see it."""
    found = plan.frame.collect_schema()
    out: dict[str, pl.DataType] = {}
    for name, dtype in found.items():
        if name.endswith("_raw") or name.startswith("__raw_"):
            continue
        out["order_date" if name == "order_ts" else name] = dtype
    # without an amount column the rows' amount is quantity x unit_price, made as they are read
    out.setdefault("amount", pl.Float64())
    return pl.Schema(out)


class _RowPass:
    """One pass over a reader's tables: check, code, count order lines, aggregate."""

    def __init__(
        self,
        rd: S.OrderReader,
        stats: S.OrderStats,
        as_of: dt.date,
        windows: tuple[int, ...],
        specs: Sequence[Any],
        keep_rejects: bool,
        progress: Stage | None = None,
        btyd: bool = False,
        top_category: bool = False,
        refresh: Any = None,
    ) -> None:
        from fastseg.kernels.ingest import REASON_CODES, RunDuplicates

        self.refresh = refresh  # a fastseg.state.Refresh: the pass starts from a saved state
        self.progress = progress
        self.rd, self.stats, self.as_of, self.specs = rd, stats, as_of, list(specs)
        self.keep_rejects = keep_rejects
        self.as_of_day = (as_of - EPOCH).days
        cols = rd.columns
        self.want_dups = "order_id" not in cols
        self.lines_mode = "none"
        if "order_id" in cols and not stats.oid_increasing:
            self.lines_mode = "group" if rd.kind == "arrow" and stats.oid_groups_disjoint else "all"
        if "order_id" in cols and refresh is not None:  # lines of orders of earlier inputs too
            self.lines_mode = "all"
        self.agg = OrderAggregator(
            as_of,
            windows,
            id_range=None if stats.text_ids or refresh is not None else stats.id_range,
            rows=stats.n,
            btyd=btyd,
            top_category=top_category,
        )
        if not stats.text_ids and not stats.csv_ids:  # CSV ids are typed batch by batch
            self.agg.id_dtype = pl.Int64()
        elif stats.text_ids:  # also with no row at all (a part of the customers, see partial)
            self.agg.id_dtype = pl.String()
        self.counts = np.zeros(len(REASON_CODES), np.int64)
        self.reason_names = REASON_CODES
        self.hashes: list[np.ndarray] = []
        self.no_ts: list[np.ndarray] = []  # hashes of rows without a timestamp
        self.runs = RunDuplicates()
        self.rejected: list[pl.DataFrame] = []
        self.n_read = 0
        self.max_used_day: int | None = None  # the latest day of a usable row
        self._buffers: Any = None
        self._lines: Any = None
        self._group = -2
        self._rejects_schema: pl.Schema | None = None
        self._last_categories: tuple[Any, np.ndarray, np.ndarray] | None = None
        # what the tables must hold
        need = ["customer_id", "order_ts", "amount", "category", "discount"]
        if self.lines_mode != "none":
            need.append("order_id")
        from fastseg.aggregates import RuleAggregates

        existing = {f"{k}_{w}d" for w in windows for k in ("orders", "revenue")}
        todo = [s for s in self.specs if s.name not in existing]  # already order features
        self.rules = RuleAggregates(todo, as_of, list(cols))
        # without order lines to count (no order id, or ids proven strictly increasing: no two
        # rows share one) every usable row is its own order: line-level orders need no ids
        self.rule_order_ids = False
        if self.rule_order_ids:
            need.append("order_id")
        kept = refresh.kept_columns() if refresh is not None else []  # a state's rule columns
        self.filter_cols = [
            c for c in dict.fromkeys([*self.rules.table_columns, *kept]) if c in cols
        ]
        need += self.filter_cols
        if keep_rejects:
            need += [*cols, "order_ts_raw"]
        if self.want_dups:  # rows are told apart by every column read
            need += list(cols)
        self.need = list(dict.fromkeys(need))
        self.budget: Any = None  # a fastseg.buckets.Budget: raise StateTooLarge past it
        if refresh is not None:
            refresh.load(self)

    @property
    def per_row_bytes(self) -> int:
        """State that grows with the rows, not the customers: the duplicate count's row hashes
        (8 bytes a row, 16 while joined), the order-lines table (16-byte pairs, half full)."""
        return (16 if self.want_dups else 0) + (32 if self.lines_mode != "none" else 0)

    def check_budget(self, initial: bool = False) -> None:
        b = self.budget
        if b is None:
            return
        agg = self.agg
        customers = agg.acc.shape[0] if agg.offset is not None else agg.encoder.n_unique
        if initial and agg.offset is None:
            return
        state = b.pass_bytes(customers, self.n_read, self.per_row_bytes)
        # the model, or what the process holds (readers differ: Polars' CSV reader holds more)
        if state > b.state or (not initial and _rss_now() > _RSS_SHARE * b.limit):
            raise StateTooLarge(customers, self.n_read, state)

    # ------------------------------------------------------------------------------- the loop

    def run(self) -> None:
        with self.rd.tables(self.need, hashes=self.want_dups and self.rd.row_hashes) as tables:
            for group, whole, table, row_hashes in tables:
                if table.num_rows:
                    self._table(group, whole, table, row_hashes)
                    self.check_budget()
                    if self.progress is not None:
                        self.progress.advance(table.num_rows)

    def _lines_for(self, group: int, whole: bool, increasing: bool) -> Any:
        """The order lines table for a table of rows (None: each row is its own order).

        Order ids of one Parquet row group never meet another group's when the footers show
        disjoint increasing ranges: a row group read whole whose ids increase needs no table,
        another gets one of its own; the rows of other sources share one table."""
        from fastseg.kernels.lines import OrderLines

        if self.lines_mode == "none":
            return None
        if self.lines_mode == "all":
            if self._lines is None:
                span = max(1 << 20, 4 * self.stats.n)  # a table no larger than the rows
                self._lines = OrderLines(*(self.stats.oid_range or (None, None)), max_span=span)
                if self.refresh is not None:
                    self._lines = self.refresh.lines(self._lines)
            return self._lines
        if whole and increasing:
            return None
        if group != self._group or whole:
            assert self.stats.groups is not None
            span = max(1 << 16, 4 * self.rd.batch_rows * S.MAX_GROUP_BATCHES)
            self._lines = OrderLines(*self.stats.groups[group], max_span=span)
            self._group = group
        return self._lines

    def _table(self, group: int, whole: bool, table: Any, row_hashes: np.ndarray | None) -> None:
        import pyarrow as pa

        from fastseg.kernels.ingest import IngestBuffers, ingest_rows

        n = table.num_rows
        names = table.column_names
        b = self._buffers
        if b is None or b.rows < n:
            b = self._buffers = IngestBuffers(
                max(n, self.rd.batch_rows),
                hashes=self.want_dups and not self.rd.row_hashes,
                order_ids=self.lines_mode != "none" or self.rule_order_ids,
                reasons=self.keep_rejects or bool(self.rules) or self.refresh is not None,
            )
        ts_arr = S.one_chunk(table.column("order_ts"))
        extra: dict[str, Any] = {}
        with_oids = self.lines_mode != "none" or self.rule_order_ids
        if with_oids:
            extra["order_id"] = self._order_ids(S.one_chunk(table.column("order_id")))
        if "discount" in names:
            extra["discount"] = S.column(S.one_chunk(table.column("discount")), np.float64)
        if "category" in names:
            extra |= self._categories(S.one_chunk(table.column("category")))
        kernel_hashes = self.want_dups and not self.rd.row_hashes
        if kernel_hashes:
            rest = [c for c in names if c not in _KERNEL_HASHED]
            if rest:
                extra["hashed_only"] = self._rest_hashes(table.select(rest))
        ts_col = S.column(ts_arr, np.int64)
        cid = S.one_chunk(table.column("customer_id"))
        text = S.is_text(cid.type)
        agg = self.agg
        if self.stats.csv_ids:  # one batch of text ids makes every id text, as written
            if text and agg.id_dtype is not None and agg.id_dtype != pl.String:
                agg.ids_to_text()
            elif not text and agg.id_dtype == pl.String:
                cid, text = cid.cast(pa.large_string()), True
        cid_col = self._text_codes(cid) if text else S.column(cid, np.int64)
        with self._stats_checked():
            used, increasing, _ = ingest_rows(
                cid_col,
                ts_col,
                S.per_day(ts_arr.type),
                S.column(S.one_chunk(table.column("amount")), np.float64),
                self.as_of_day,
                b,
                self.counts,
                id_range=None if agg.offset is None else (agg.offset, agg.acc.shape[0]),
                **extra,
            )
        lines = self._lines_for(group, whole, increasing)
        if self.want_dups:
            batch_hashes = row_hashes if row_hashes is not None else b.hashes[:n].copy()
            self.hashes.append(batch_hashes)
            self.runs.add(ts_col, batch_hashes)
            if ts_arr.null_count:
                valid = ts_arr.is_valid().to_numpy(zero_copy_only=False)
                self.no_ts.append(batch_hashes[~valid])
        if self.keep_rejects and (used < n or self._rejects_schema is None):
            self._reject(table, b.reasons[:n])
        self.n_read += n
        if used:
            top = int(b.day[:used].max())
            self.max_used_day = top if self.max_used_day is None else max(self.max_used_day, top)
        del ts_col, cid_col, extra
        codes = agg.add_arrays(
            b.cid[:used],
            b.day[:used],
            b.amount[:used],
            b.flags[:used],
            b.cat[:used] if "category" in names else None,
            has_discount="discount" in names,
            coded=agg.offset is not None or text,
            lines=lines,
            order_ids=b.order_id[:used] if lines is not None else None,
        )
        if self.refresh is not None and codes is not None:
            usable = np.flatnonzero(b.reasons[:n] < 0)
            self.refresh.keep_rows(self, codes, table, usable)
        if self.rules and codes is not None:
            self.rules.add(
                codes,
                agg.acc.shape[0],
                b.day[:used],
                b.amount[:used],
                b.flags[:used],
                table,
                np.flatnonzero(b.reasons[:n] < 0),
                b.order_id[:used] if with_oids else None,
            )

    # ----------------------------------------------------------------------------- columns

    def _order_ids(self, arr: Any) -> tuple[np.ndarray, np.ndarray, int]:
        """Order ids as int64 keys: integers as they are; text that is a plain integer (as
        Int64 writes it, so one text has one key) as that integer, as CSV gives them; anything
        else by a 64-bit hash of the value (two ids of one customer sharing a key: a chance of
        about 1 in 10^12)."""
        import pyarrow as pa

        if pa.types.is_integer(arr.type) and arr.type != pa.uint64():
            return S.column(arr, np.int64)
        values = pl.Series(arr)
        hashed = values.hash(seed=_OID_SEED).to_numpy().view(np.int64)
        if values.dtype == pl.String:
            as_int = values.cast(pl.Int64, strict=False)
            plain = (as_int.cast(pl.String) == values).fill_null(False).to_numpy()
            if plain.any():
                hashed = np.where(plain, as_int.fill_null(0).to_numpy(), hashed)
        if arr.null_count == 0:
            return hashed, np.empty(0, np.uint8), 0
        bits = np.packbits(arr.is_valid().to_numpy(zero_copy_only=False), bitorder="little")
        return hashed, bits, 0

    def _categories(self, cat: Any) -> dict[str, Any]:
        """The category column as dictionary indices, each entry's local code and hash; row
        groups mostly share one dictionary, which is then coded once."""
        cat = S.dictionary(cat)
        last = self._last_categories
        if last is None or not last[0].equals(cat.dictionary):
            values = pl.Series(cat.dictionary)
            chash = values.hash(seed=_CAT_SEED).to_numpy().astype(np.uint64)
            present = values.is_not_null().to_numpy()
            local = self.agg.categories.encode(chash, present).astype(np.int32)
            self.agg.name_categories(local, values.cast(pl.String).to_list())
            chash[~present] = np.uint64(0xDEAD04)
            last = self._last_categories = (cat.dictionary, local, chash)
        return {
            "category": S.column(cat.indices, np.int32),
            "category_local": last[1],
            "category_hash": last[2],
        }

    def _text_codes(self, arr: Any) -> tuple[np.ndarray, np.ndarray, int]:
        """Customer codes per row of a text id column: the dictionary's distinct values are
        coded by the aggregator (hash + exact check), rows by index."""
        import pyarrow as pa

        arr = S.trimmed_ids(S.dictionary(arr))
        values = arr.dictionary
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            values = values.cast(pa.large_string())
        entry = self.agg.text_codes_arrow(values)
        idx, bitmap, offset = S.column(arr.indices, np.int64)
        if entry.shape[0] == 0:  # every id of the batch is missing
            return np.zeros(idx.shape[0], np.int64), bitmap, offset
        return np.take(entry, idx, mode="clip"), bitmap, offset  # null rows: any code, masked

    @staticmethod
    def _rest_hashes(table: Any) -> tuple[np.ndarray, np.ndarray, int]:
        """One 64-bit hash per row of the columns the check kernel does not hash itself."""
        h = pl.from_arrow(table).hash_rows(seed=0x5EED).to_numpy()
        return h.view(np.float64), np.empty(0, np.uint8), 0

    # ------------------------------------------------------------------------ side outputs

    def _reject(self, table: Any, reasons: np.ndarray) -> None:
        import pyarrow as pa

        bad = np.flatnonzero(reasons >= 0)
        order = [c for c in self.rd.columns for c in (c, f"{c}_raw")]  # as the source has them
        names = sorted(table.column_names, key=lambda c: order.index(c) if c in order else 1 << 20)
        rows = pl.from_arrow(table.select(names).take(pa.array(bad)))
        assert isinstance(rows, pl.DataFrame)
        why = pl.Series("reason", self.reason_names)
        rows = rows.with_columns(why.gather(reasons[bad]).alias("reason"))
        if "order_ts_raw" in rows.columns:  # the polars reader: the timestamp as read is raw
            rows = rows.rename({"order_ts": "order_date"})
        rows = rows.with_columns(pl.col(pl.Categorical).cast(pl.String))
        self._rejects_schema = rows.schema
        if rows.height:
            self.rejected.append(rows)

    def empty_rejects(self) -> pl.DataFrame:
        """No row left out: an empty rejects file with the columns a left-out row would have."""
        if self._rejects_schema is not None:
            return pl.DataFrame(schema=self._rejects_schema)
        raw = self.rd.kind == "polars"  # its tables carry the timestamps as read beside
        cols: dict[str, Any] = {"reason": pl.String}
        for c in self.need:
            if c == "order_ts" and raw:
                cols["order_date"] = pl.Null
            elif c in self.rd.columns or (c == "order_ts_raw" and raw):
                cols[c] = pl.Null
        return pl.DataFrame(schema=cols)

    def close(self) -> None:
        """Free the state only the pass needed."""
        self._lines = None
        self._buffers = None
        self._last_categories = None

    def rule_aggregates(self) -> tuple[pl.DataFrame, dict[str, Any]] | None:
        """The rule aggregates per customer seen (call before ``agg.finish()``)."""
        if not self.rules:
            return None
        ids, n = self.agg._ids()
        if ids is None or n == 0:
            return None
        if not isinstance(ids, pl.Series):
            ids = pl.Series("customer_id", ids, dtype=self.agg.id_dtype or pl.Int64())
        return self.rules.frame(ids, n)

    def report(self) -> O.RowReport:
        left_out = dict(zip(self.reason_names, (int(c) for c in self.counts), strict=True))
        used = self.n_read - sum(left_out.values())
        report = O.RowReport(
            source=self.rd.label, rows_read=self.n_read, rows_used=used, left_out=left_out
        )
        if self.want_dups and self.hashes:
            if self.runs.sorted:  # rows in timestamp order: twins sit in one run of timestamps
                rest = np.concatenate(self.no_ts) if self.no_ts else np.empty(0, np.uint64)
                report.duplicates = self.runs.count() + O.count_duplicate_hashes(rest)
            else:
                report.duplicates = O.count_duplicate_hashes(np.concatenate(self.hashes))
        return report

    def _stats_checked(self) -> Any:
        """Customer ids outside the range the footers' statistics gave mean wrong statistics:
        say so (one line, naming the source and the fix) instead of an internal range error."""
        import contextlib

        rd = self.rd

        @contextlib.contextmanager
        def checked() -> Any:
            try:
                yield
            except ParameterError as exc:
                msg = (
                    f"{rd.label}: the Parquet statistics of column "
                    f"{rd.columns['customer_id']!r} do not cover its values ({exc}); rewrite "
                    "the file (pyarrow or Polars write correct ones)"
                )
                raise DataError(msg) from exc

        return checked()


#: the columns the check kernel hashes itself when counting duplicates
_KERNEL_HASHED = ("customer_id", "order_ts", "amount", "category", "discount")
