"""Scoring and segmenting customer buckets one after the other (see :mod:`fastseg.buckets`).

:func:`score_buckets` is what :func:`fastseg.api.score_job` does when the in-memory pass finds
that the state would not fit: spill, features per unit of buckets, exact edges over the units'
feature files, then each unit scored and handed to ``consume`` (which writes it, and for
``run`` evaluates its segments). :class:`TableParts` and :class:`MergedSegments` gather what
the units made into the run folder's tables.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from fastseg import buckets as B
from fastseg.config import EPOCH
from fastseg.errors import DataError

__all__ = ["BucketInfo", "MergedSegments", "TableParts", "score_buckets"]


@dataclass
class BucketInfo:
    """What a bucketed run did (recorded in run.json as ``buckets``)."""

    memory_limit: int
    buckets: int
    units: int
    spilled_rows: int
    customers: int
    scored: int
    group_counts: pl.DataFrame

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory_limit_bytes": self.memory_limit,
            "buckets": self.buckets,
            "units": self.units,
            "spilled_rows": self.spilled_rows,
        }


@dataclass
class TableParts:
    """One output table written unit by unit as Arrow IPC parts in the spill folder, joined
    into the output file at the end by a streaming copy (Polars ``sink_*``: bounded memory)."""

    folder: Any  # a fastseg.buckets.SpillDir (or a Path)
    name: str
    parts: list[Path] = field(default_factory=list)

    def add(self, df: pl.DataFrame) -> None:
        p = self.folder / f"{self.name}-part-{len(self.parts):05d}.arrow"
        with B.spill_errors(p.parent):
            df.write_ipc(p)
        self.parts.append(p)

    def schema(self) -> pl.Schema:
        return pl.scan_ipc(self.parts[0]).collect_schema()

    def write(self, path: Path, fmt: str) -> None:
        from fastseg.outputs import _csv_safe

        lf = pl.scan_ipc(self.parts)
        if fmt == "csv":
            sep = "\t" if path.name.lower().endswith(".tsv") else ","
            _csv_safe(lf).sink_csv(path, separator=sep)
        else:
            lf.sink_parquet(path)


def concat_bits(
    parts: Sequence[NDArray[np.uint64]], sizes: Sequence[int], k: int
) -> NDArray[np.uint64]:
    """Bitsets of customer parts one after the other: bit ``i`` of part ``j`` becomes bit
    ``sum(sizes[:j]) + i`` (words ``uint64[k, ceil(n / 64)]``, tail bits zero)."""
    n = int(sum(sizes))
    out = np.zeros((k, (n + 63) // 64), dtype=np.uint64)
    pos = 0
    for words, size in zip(parts, sizes, strict=True):
        if size == 0:
            continue
        w = words[:, : (size + 63) // 64]
        q, r = divmod(pos, 64)
        m = w.shape[1]
        if r == 0:
            out[:, q : q + m] |= w
        else:
            out[:, q : q + m] |= w << np.uint64(r)
            spill = w >> np.uint64(64 - r)
            end = min(q + m + 1, out.shape[1])
            out[:, q + 1 : end] |= spill[:, : end - q - 1]
        pos += size
    return out


@dataclass
class MergedSegments:
    """The segments of all units: what a :class:`fastseg.segmenting.SegmentResult` tells of
    the whole (names, sizes, summary, overlaps, membership words), made from the units'."""

    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    groups_spec: tuple[Any, ...]
    skipped: tuple[tuple[str, str], ...]
    summary_parts: Any = None  # fastseg.segmenting.SummaryParts
    overlap: NDArray[np.int64] | None = None
    words: list[NDArray[np.uint64]] = field(default_factory=list, repr=False)
    sizes_of_parts: list[int] = field(default_factory=list)

    @classmethod
    def first(cls, seg: Any) -> MergedSegments:
        return cls(seg.names, seg.descriptions, seg.groups_spec, seg.skipped)

    def add(self, seg: Any) -> None:
        parts = seg.summary_parts()
        self.summary_parts = (
            parts if self.summary_parts is None else self.summary_parts.merge(parts)
        )
        m = seg.overlap_matrix()
        self.overlap = m.copy() if self.overlap is None else self.overlap + m
        self.words.append(np.array(seg.bitsets, copy=True))
        self.sizes_of_parts.append(seg.n_customers)

    @property
    def n_customers(self) -> int:
        return int(sum(self.sizes_of_parts))

    @property
    def sizes(self) -> NDArray[np.int64]:
        return self.summary_parts.sizes

    def summary(self) -> pl.DataFrame:
        return self.summary_parts.frame()

    def overlap_matrix(self) -> NDArray[np.int64]:
        assert self.overlap is not None
        return self.overlap

    def overlaps(self) -> pl.DataFrame:
        from fastseg.segmenting import overlaps_frame

        return overlaps_frame(self.names, self.overlap_matrix())

    @property
    def bitsets(self) -> NDArray[np.uint64]:
        return concat_bits(self.words, self.sizes_of_parts, len(self.names))


@dataclass
class _Unit:
    buckets: list[int]
    features: Path | None = None
    part: Any = None  # PartFeatures (its frame dropped once written)


def _plan_and_stats(orders: Any, options: dict[str, Any], as_of: dt.date | None) -> tuple[Any, Any]:
    from fastseg import orders as O
    from fastseg import sources as S

    order_cols = {c for a in options["aggregates"] if a.source == "orders" for c in a.columns}
    extra = sorted(order_cols | set(options["extra_columns"]))
    plan = O.plan_orders(
        orders, columns=options["columns"], extra_columns=extra, keep_raw_ts=True, tz=options["tz"]
    )
    return plan, S.order_stats(plan, need_max_date=as_of is None)


def score_buckets(
    orders: Any,
    *,
    bud: B.Budget,
    too_large: B.StateTooLarge,
    folder: Any,
    scorer: Any,
    needs_fit: bool,
    watch: Any,
    consume: Callable[[pl.DataFrame, Any], None],
    options: dict[str, Any],
) -> tuple[Any, BucketInfo]:
    """Score the customers bucket by bucket; ``consume(scores, whole)`` gets each unit's
    scores (``whole``: the :class:`fastseg.api.PartFeatures` of all units, without a frame:
    scoring date, reports, sources).
    The spill files go to ``folder`` (the caller's :func:`fastseg.buckets.spill_folder`).

    ``options`` are :func:`fastseg.api._features`' keyword arguments. Returns
    ``(PartFeatures of the whole without a frame, BucketInfo)``.
    """
    from fastseg import orders as O
    from fastseg.api import PartFeatures
    from fastseg.edges import fit_chunks
    from fastseg.pipeline import spill_rows

    as_of = options["as_of"]
    plan, stats = _plan_and_stats(orders, options, as_of)
    defaulted = as_of is None
    if as_of is None:
        as_of = stats.max_date
        if as_of is None:
            raise O.no_dates_error(plan)
    specs = [a for a in options["aggregates"] if a.source == "orders"]
    folder = folder.path if isinstance(folder, B.SpillDir) else folder
    B.release_memory()  # what the in-memory pass held
    # how many buckets: the in-memory pass's customers per row, over all the rows
    seen = max(too_large.rows_read, 1)
    est_customers = int(too_large.customers * max(stats.n, seen) / seen)
    per_row = max(too_large.state - too_large.customers * bud.per_customer, 0) // seen
    n_buckets = B.n_buckets_for(est_customers, stats.n, bud, int(per_row))
    with watch.stage("spill") as st:
        st.update(0, stats.n)
        spill, per_row, kind = spill_rows(
            plan,
            stats,
            as_of,
            windows=options["windows"],
            specs=specs,
            keep_rejects=options["rejects"],
            batch_rows=B.BATCH_ROWS,
            reader=options["reader"],
            n_buckets=n_buckets,
            folder=folder,
            progress=st,
        )
    B.release_memory()
    units = [_Unit(b) for b in B.plan_units(spill, bud, per_row)]
    id_dtype = pl.String if (spill.as_text and (spill.text_seen or not spill.csv_ids)) else pl.Int64
    prof_paths, cust_report = _split_profiles(options, spill, folder, id_dtype, watch)
    while True:
        ev_paths, ev_report, ev_schema = _split_events(
            options, spill, folder, id_dtype, as_of, watch
        )
        units = _unit_features(
            units, spill, plan, stats, kind, as_of, prof_paths, ev_paths, folder, watch, options
        )
        parts = [u.part for u in units]
        used = [p.max_used_day for p in parts if p.max_used_day is not None]
        top = max(used) if used else None
        if defaulted and top is not None and top < (as_of - EPOCH).days:
            as_of = EPOCH + dt.timedelta(days=top)  # as one machine does: read again
            continue
        break
    report = B.merge_reports([p.orders for p in parts])
    if report.rows_left_out and options["strict"]:
        raise O.strict_error(report, as_of)
    if report.rows_used == 0:
        raise O.no_usable_error(report, as_of)
    sources = dict(parts[0].sources)
    if ev_schema is not None:
        sources["events"] = ev_schema
    rejected = None
    if options["rejects"]:
        rejected = pl.concat(
            [p.rejected for p in parts if p.rejected is not None], how="vertical_relaxed"
        )

    whole = PartFeatures(
        frame=pl.DataFrame(),
        as_of=as_of,
        orders=report,
        customers=cust_report,
        events=ev_report,
        sources=sources,
        rejected=rejected,
    )

    def frames(columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        for u in units:
            assert u.features is not None
            yield pl.read_ipc(u.features, columns=columns)

    def fit_frames() -> Iterator[pl.DataFrame]:  # the columns the edges are fitted on
        return frames(["customer_id", "recency_days", "frequency", "monetary"])

    with watch.stage("scoring", unit="customers") as st:
        if needs_fit:
            try:
                fit_chunks(scorer, fit_frames)
            except DataError as exc:
                msg = f"orders {report.source}: {exc}"
                raise DataError(msg) from None
    n_customers = n_scored = 0
    groups: list[pl.DataFrame] = []
    with watch.stage("scoring", unit="customers") as st:
        for frame in frames():
            scores = scorer.transform(frame)
            del frame
            n_customers += scores.height
            n_scored += int(scores["r_score"].is_not_null().sum())
            groups.append(scores.group_by("rfm_group").agg(pl.len().alias("customers")))
            consume(scores, whole)
            st.advance(scores.height)
            del scores
            B.release_memory()
    counts = (
        pl.concat(groups)
        .group_by("rfm_group")
        .agg(pl.col("customers").sum())
        .with_columns((pl.col("customers") / max(n_customers, 1)).alias("share"))
        .sort(["customers", "rfm_group"], descending=[True, False])
    )
    info = BucketInfo(
        memory_limit=bud.limit,
        buckets=spill.n_buckets,
        units=len(units),
        spilled_rows=spill.total_rows,
        customers=n_customers,
        scored=n_scored,
        group_counts=counts,
    )
    return whole, info


def _split_profiles(
    options: dict[str, Any], spill: B.Spill, folder: Path, id_dtype: Any, watch: Any
) -> tuple[list[Path] | None, Any]:
    from fastseg.orders import check_id_types, load_customers

    customers = options["customers"]
    if customers is None:
        return None, None
    with watch.stage("read") as st:
        prof, report = load_customers(
            customers, columns=options["customer_columns"], tz=options["tz"]
        )
        prof = check_id_types(
            pl.DataFrame(schema={"customer_id": id_dtype}), prof, "customers", report.source
        )
        st.advance(report.rows_read)
        paths = B.split_frame(prof, spill.n_buckets, spill.as_text, folder, "customers")
    return paths, report


def _split_events(
    options: dict[str, Any], spill: B.Spill, folder: Path, id_dtype: Any, as_of: dt.date, watch: Any
) -> tuple[list[Path] | None, Any, Any]:
    from fastseg.orders import check_id_types, load_events

    events = options["events"]
    if events is None:
        return None, None, None
    ev_specs = [a for a in options["aggregates"] if a.source == "events"]
    ev_cols = sorted({c for a in ev_specs for c in a.columns} - {"event", "event_date"})
    with watch.stage("read") as st:
        ev, report = load_events(
            events,
            as_of=as_of,
            columns=options["event_columns"],
            extra_columns=ev_cols,
            tz=options["tz"],
        )
        ev = check_id_types(
            pl.DataFrame(schema={"customer_id": id_dtype}), ev, "events", report.source
        )
        st.advance(report.rows_read)
        paths = B.split_frame(ev, spill.n_buckets, spill.as_text, folder, "events")
    return paths, report, ev.schema


def _unit_features(
    units: list[_Unit],
    spill: B.Spill,
    plan: Any,
    stats: Any,
    kind: str,
    as_of: dt.date,
    prof_paths: list[Path] | None,
    ev_paths: list[Path] | None,
    folder: Path,
    watch: Any,
    options: dict[str, Any],
) -> list[_Unit]:
    """The features of every unit, written to the spill folder. A unit whose rows hold no
    usable row is processed with the next one (or the previous, when last)."""
    from fastseg.api import _features

    opts = {k: v for k, v in options.items() if k not in ("customers", "events", "as_of")}
    todo = [_Unit(list(u.buckets)) for u in units]
    done: list[_Unit] = []
    i = 0
    while i < len(todo):
        u = todo[i]
        rows = sum(spill.rows[b] for b in u.buckets)
        grouped = kind == "arrow" and stats.oid_groups_disjoint  # order lines table by table
        tables, ranges = B.table_plan(
            spill, u.buckets, stats.groups if grouped else None, B.BATCH_ROWS
        )
        ustats = dataclasses.replace(
            stats, n=rows, id_range=None, groups=ranges, groups_disjoint=ranges is not None
        )
        prof = B.read_parts([prof_paths[b] for b in u.buckets]) if prof_paths else None
        ev = B.read_parts([ev_paths[b] for b in u.buckets]) if ev_paths else None
        part = _features(
            None,
            batch_rows=B.BATCH_ROWS,
            customers=prof,
            events=ev,
            as_of=as_of,
            watch=watch,
            loaded=True,
            partial=True,
            opened=(plan, ustats, B.reader_factory(spill, tables, kind)),
            **opts,
        )
        del prof, ev
        if part.orders.rows_used == 0 and (i + 1 < len(todo) or done):
            if i + 1 < len(todo):
                todo[i + 1].buckets[:0] = u.buckets
                i += 1
                continue
            prev = done.pop()  # the last unit: again with the previous one
            todo[i] = _Unit(prev.buckets + u.buckets)
            continue
        u.features = folder / f"features-{i:05d}.arrow"
        with B.spill_errors(folder):
            part.frame.write_ipc(u.features)
        part.frame = pl.DataFrame()
        u.part = part
        B.release_memory()
        done.append(u)
        i += 1
    return done
