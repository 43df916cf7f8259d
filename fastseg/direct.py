"""Events streamed from Parquet: one row group at a time into the events kernel.

Parquet events with integer customer ids (as the orders'), naive timestamps or dates and text
event types go through :func:`fastseg.kernels.ingest.ingest_events` (the four event reasons in
:func:`fastseg.orders.load_events`' order) and the incremental events kernel, event types read
as dictionaries, so memory grows with customers and event types, not events. Other event
inputs are read in memory by :func:`fastseg.orders.load_events`; both give the same features.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fastseg import orders as O
from fastseg import sources as S
from fastseg.config import EPOCH as _EPOCH

__all__ = [
    "EVENT_SCHEMA",
    "EventPlan",
    "event_features_direct",
    "event_schema",
    "plan_direct_events",
]


@dataclass(frozen=True)
class EventPlan:
    """What the events reader reads: the files and the source column of each canonical one."""

    files: tuple[Path, ...]
    columns: dict[str, str]  # canonical -> source column
    label: str


@contextlib.contextmanager
def _stats_checked(dp: EventPlan) -> Iterator[None]:
    """Customer ids outside the range the footers' statistics gave mean wrong statistics."""
    from fastseg.errors import DataError, ParameterError

    try:
        yield
    except ParameterError as exc:
        msg = (
            f"{dp.label}: the Parquet statistics of column {dp.columns['customer_id']!r} do not "
            f"cover its values ({exc}); rewrite the file (pyarrow or Polars write correct ones)"
        )
        raise DataError(msg) from exc


# ------------------------------------------------------------------------------------- events

#: the canonical event rows' schema (what rule filters over events are checked against)
EVENT_SCHEMA = pl.Schema({"customer_id": pl.Int64, "event_date": pl.Date, "event": pl.String})


def plan_direct_events(
    source: Any, columns: Any = None, extra_columns: Sequence[str] = ()
) -> EventPlan | None:
    """A :class:`EventPlan` when the events are Parquet files with integer customer ids, naive
    timestamps or dates and text event types; else None (the in-memory path reads them).
    ``extra_columns`` (the columns event aggregates filter on) are read too, where present."""
    import pyarrow.parquet as pq

    src, resolved, conversions = O.plan_events(source, columns, extra_columns)
    if src.kind != "parquet" or not src.files or conversions:
        return None
    kinds = {"customer_id": "customer_id", "event_ts": "order_ts", "event": "category"}
    try:
        for path in src.files:
            found = pq.read_schema(path)
            for canon, col in resolved.items():
                if canon not in kinds:  # a filter column: read as it is
                    continue
                idx = found.get_field_index(col)
                if idx < 0 or S.is_text(found.field(idx).type) and canon == "customer_id":
                    return None
                if not S.arrow_typed(kinds[canon], found.field(idx).type):
                    return None
    except (OSError, ValueError, TypeError):
        return None
    return EventPlan(tuple(src.files), dict(resolved), src.label)


def event_schema(dp: EventPlan) -> pl.Schema:
    """The canonical event rows' schema with the filter columns ``dp`` reads (from the first
    file's footer), as rule filters over events are checked against."""
    out = dict(EVENT_SCHEMA)
    extra = [c for c in dp.columns if c not in ("customer_id", "event_ts", "event")]
    if extra:
        found = pl.scan_parquet(dp.files[0]).collect_schema()
        out |= {c: found[dp.columns[c]] for c in extra if dp.columns[c] in found}
    return pl.Schema(out)


def _event_tables(dp: EventPlan, batch_rows: int) -> Iterator[Any]:
    names = list(dict.fromkeys(dp.columns.values()))
    tables = S.parquet_tables(dp.files, names, [dp.columns["event"]], batch_rows)
    return (t for _, _, t in tables if t.num_rows)


def event_features_direct(
    dp: EventPlan,
    as_of: dt.date,
    windows: Sequence[int],
    batch_rows: int = 1 << 20,
    *,
    aggregates: Sequence[Any] = (),
) -> tuple[pl.DataFrame, O.RowReport]:
    """:func:`fastseg.features.event_features` of the events of ``dp`` (and their row report),
    streamed one row group at a time: memory grows with customers and event types, not events.

    ``aggregates``: the rule compiler's event aggregates (counts); each streamed table's usable
    events are grouped by customer and the counts added up, so they are exact. They come out as
    columns of the frame (0 for customers without a matching event); those naming a column the
    events lack, or already an event feature, are left out."""
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
    canon = {v: k for k, v in cols.items()}
    specs = [a for a in aggregates if all(c in cols or c == "event_date" for c in a.columns)]
    partials: list[pl.DataFrame] = []
    with S.reading(_event_tables(dp, batch_rows), dp.label) as tables:
        for table in tables:
            n = table.num_rows
            if specs:
                partials.append(_event_aggregates(table, canon, as_of, specs))
            if out is None or out[0].shape[0] < n:
                m = max(n, batch_rows)
                out = (np.empty(m, np.int64), np.empty(m, np.int32), np.empty(m, np.int64))
            ts_arr = S.one_chunk(table.column(cols["event_ts"]))
            per_day = 1 if pa.types.is_date32(ts_arr.type) else S.PER_DAY[ts_arr.type.unit]
            ev = S.one_chunk(table.column(cols["event"]))
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
                S.column(S.one_chunk(table.column(cols["customer_id"])), np.int64),
                S.column(ts_arr, np.int64),
                per_day,
                S.column(ev.indices, np.int32),
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
    left_out = dict(zip(EVENT_REASON_CODES, (int(c) for c in reasons), strict=True))
    used_rows = n_read - sum(left_out.values())
    report = O.RowReport(source=dp.label, rows_read=n_read, rows_used=used_rows, left_out=left_out)
    order = encoder.sort_order()
    ids = pl.Series("customer_id", encoder.uniques[order], dtype=pl.Int64)
    # types seen only on left-out rows get no columns (as when the events are read in memory)
    names = list(type_index)
    kept = [t for t in range(type_seen.shape[0]) if type_seen[t]]
    frame = event_frame(
        ids, [names[t] for t in kept], counts, last, windows, as_of_day, rows=order, type_at=kept
    )
    todo = [a.name for a in specs if a.name not in frame.columns]
    if todo:
        summed = pl.concat(partials).group_by("customer_id").agg(pl.col(todo).sum())
        frame = frame.join(summed, on="customer_id", how="left").with_columns(
            pl.col(todo).fill_null(0)
        )
    return frame, report


def _event_aggregates(
    table: Any, canon: dict[str, str], as_of: dt.date, specs: Sequence[Any]
) -> pl.DataFrame:
    """The event aggregates of one table's usable events (those :func:`ingest_events` keeps:
    customer id, timestamp and type present, dated no later than ``as_of``)."""
    rows = pl.from_arrow(table)
    assert isinstance(rows, pl.DataFrame)
    rows = rows.rename({c: canon[c] for c in rows.columns if c in canon and canon[c] != c})
    rows = rows.rename({"event_ts": "event_date"})
    date = pl.col("event_date")
    if isinstance(rows.schema["event_date"], pl.Datetime):
        date = date.dt.date()
    rows = rows.with_columns(
        date.alias("event_date"), pl.col(pl.Categorical).cast(pl.String)
    ).filter(
        pl.col("customer_id").is_not_null()
        & pl.col("event_date").is_not_null()
        & pl.col("event").is_not_null()
        & (pl.col("event_date") <= as_of)
    )
    return rows.group_by("customer_id").agg([a.expr(as_of) for a in specs])


def _id_range(dp: EventPlan) -> tuple[int | None, int | None]:
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
