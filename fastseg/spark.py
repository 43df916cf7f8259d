"""fastseg on Spark: the same scores and segments as one machine, from a PySpark DataFrame.

:func:`score` and :func:`run` take a Spark DataFrame of orders (and optional Spark DataFrames of
profiles and events) and return Spark DataFrames equal, customer by customer, to
:func:`fastseg.score` and :func:`fastseg.run` on the same rows. No order row is collected to the
driver; what the driver sees is a few numbers per partition.

How (see docs/spark.md):

1. the scoring date (``as_of`` not given): the latest order date, typed exactly as fastseg types
   it (:func:`fastseg.sources.order_stats` per input partition, one small job);
2. profile text columns typed once over all profiles (counts per partition, added up), so every
   partition types them the same way;
3. orders, profiles and events (columns prefixed, a tag column, a row number keeping the input
   order) are unioned and repartitioned once by customer id into ``P`` partitions; each
   partition's rows go through the one-machine code (:func:`fastseg.api._features`,
   ``mapInArrow``, Arrow only, no pandas); the feature frames are persisted as Arrow IPC blobs.
   When the latest dated rows were all unusable, the features are made again with the latest
   usable date, as one machine does;
4. the exact global quantile edges in a few rounds (:class:`fastseg.edges.RFMEdgeSearch`), each
   a small job over the persisted features;
5. scores (and segments) per partition with the fitted scorer, as Spark DataFrames.

A fastseg error in a task (a bad value, ``strict``) is raised on the driver as that fastseg error
with its one-line message, not as a Java stack trace.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import io
import pickle
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from fastseg import errors as E
from fastseg.errors import DataError, FastsegError, MissingDependencyError, ParameterError
from fastseg.sources import WHITE_SPACE

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from fastseg.orders import RowReport
    from fastseg.scoring import RFMScorer

__all__ = ["SparkRun", "run", "score"]

TAG = "__fastseg_tag"
KEY = "__fastseg_key"
ROW = "__fastseg_row"
#: prefixes of the sources' columns in the union (no two sources' columns ever meet)
PREFIX = {"orders": "o:", "customers": "c:", "events": "e:"}
TAGS = {"orders": 0, "customers": 1, "events": 2}
#: ``spark.sql.execution.arrow.maxRecordsPerBatch`` while fastseg's jobs run (Spark's default,
#: 10,000, makes many small batches; a partition's batches are put together anyway)
ARROW_BATCH_ROWS = 1 << 17
#: customers per persisted feature blob (a few MB each)
BLOB_ROWS = 1 << 17
_BLOB_SCHEMA = "part INT, kind STRING, data BINARY"
_MARK = re.compile(r"\[fastseg-error:(\w+):([A-Za-z0-9+/=]*)\]")


def _java_class(chars: str) -> str:
    """A Java regex character class of exactly ``chars``."""
    return "[" + "".join(f"\\x{{{ord(ch):04x}}}" for ch in chars) + "]"


def _pyspark() -> Any:
    try:
        import pyspark
    except ImportError:
        msg = (
            "fastseg.spark needs PySpark 4 or later: pip install 'fastseg[spark]' "
            "(and a Java 17+ runtime)"
        )
        raise MissingDependencyError(msg) from None
    return pyspark


# ------------------------------------------------------------------------------------ errors


def _relabel(text: str) -> str:
    """Messages name the inputs as Spark DataFrames (tasks read them as Arrow tables)."""
    return text.replace("(Arrow table)", "(Spark DataFrame)")


@contextlib.contextmanager
def _relabeled() -> Iterator[None]:
    """On the driver: a fastseg error about the empty tables the inputs are planned on names
    the Spark DataFrames instead."""
    try:
        yield
    except FastsegError as exc:
        if "(Arrow table)" not in str(exc):
            raise
        raise type(exc)(_relabel(str(exc))) from None


def _mark(exc: FastsegError) -> str:
    text = base64.b64encode(_relabel(str(exc)).encode()).decode()
    return f"[fastseg-error:{type(exc).__name__}:{text}]"


@contextlib.contextmanager
def _worker_errors() -> Iterator[None]:
    """In a task: a fastseg error becomes a RuntimeError whose message carries it, marked, so
    the driver can find it in whatever Spark wraps around it."""
    try:
        yield
    except FastsegError as exc:
        raise RuntimeError(_mark(exc)) from None


def _fastseg_error(exc: BaseException) -> FastsegError | None:
    """The fastseg error a failed Spark job carries (None: none)."""
    seen: set[int] = set()
    texts = []
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        texts.append(str(e))
        java = getattr(e, "java_exception", None)
        if java is not None:
            with contextlib.suppress(Exception):
                texts.append(str(java.toString()))
        e = e.__cause__ or e.__context__
    for text in texts:
        m = _MARK.search(text)
        if m:
            cls = getattr(E, m.group(1), None)
            if not (isinstance(cls, type) and issubclass(cls, FastsegError)):
                cls = FastsegError
            return cls(base64.b64decode(m.group(2)).decode())
    return None


@contextlib.contextmanager
def _driver_errors() -> Iterator[None]:
    """Around Spark actions: a fastseg error raised in a task is raised again here, alone."""
    try:
        yield
    except FastsegError:
        raise
    except Exception as exc:
        err = _fastseg_error(exc)
        if err is None:
            raise
        raise err from None


# ------------------------------------------------------------------------------------ the plan


@dataclass
class _Plan:
    """Everything a task needs (pickled into every job)."""

    columns: Any
    customer_columns: Any
    event_columns: Any
    windows: tuple[int, ...]
    strict: bool
    tz: str | None
    aggregates: list[Any]
    extra_columns: list[str]
    btyd: bool
    top_category: bool
    has_customers: bool
    has_events: bool
    schemas: dict[str, pa.Schema]  # each source's Arrow schema, as tasks see it
    id_dtype: Any  # the orders' customer_id dtype (Int64 or String)
    ev_cols: list[str]
    as_of: dt.date | None = None
    text_kinds: dict[str, tuple[str, str]] | None = None
    catalog: Any = None
    sources: dict[str, Any] = field(default_factory=dict)
    #: the features frame's columns over all partitions (a partition without an event type's
    #: events lacks its columns) and the values of those a partition lacks
    frame_schema: Any = None
    fills: dict[str, Any] = field(default_factory=dict)


def _arrow_schema(df: DataFrame) -> pa.Schema:
    """The Arrow schema ``mapInArrow`` gives tasks for ``df`` (no job is run)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    tz = df.sparkSession.conf.get("spark.sql.session.timeZone", None)
    with _driver_errors():
        return to_arrow_schema(df.schema, timezone=tz)


def _empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def _map_in_arrow(df: DataFrame, fn: Any, schema: Any) -> DataFrame:
    """``df.mapInArrow(fn, schema)`` without pandas.

    PySpark's ``mapInArrow`` goes through ``pandas_udf``, which checks for pandas (and, with
    pandas 3, warns that PySpark does not fully support it) although the Arrow path never uses
    it. With pandas installed the warning is silenced; without it, the same UDF is made without
    the check (PySpark's own ``_create_vectorized_udf``, as ``pandas_udf`` makes it).
    """
    import importlib.util

    if importlib.util.find_spec("pandas") is None:  # looked up, not imported (0.3 s)
        from pyspark.sql import DataFrame as SparkDataFrame
        from pyspark.sql.pandas.functions import _create_vectorized_udf
        from pyspark.util import PythonEvalType

        udf = _create_vectorized_udf(fn, schema, PythonEvalType.SQL_MAP_ARROW_ITER_UDF, "pandas")
        col = udf(*[df[c] for c in df.columns])
        return SparkDataFrame(df._jdf.mapInArrow(col._jc, False, None), df.sparkSession)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
        return df.mapInArrow(fn, schema)


def _tables(batches: Iterator[pa.RecordBatch]) -> pa.Table | None:
    got = [b for b in batches if b.num_rows]
    return pa.Table.from_batches(got) if got else None


def _split(table: pa.Table | None, plan: _Plan) -> dict[str, pa.Table]:
    """The union's rows of one partition back into the sources' tables, in input order."""
    out = {}
    for what, tag in TAGS.items():
        schema = plan.schemas.get(what)
        if schema is None:
            continue
        if table is None:
            out[what] = _empty(schema)
            continue
        import pyarrow.compute as pc

        part = table.filter(pc.equal(table[TAG], tag))
        if part.num_rows > 1:
            part = part.take(pc.sort_indices(part[ROW]))
        cols = [part[PREFIX[what] + name] for name in schema.names]
        out[what] = pa.Table.from_arrays(cols, names=schema.names)
    return out


def _to_blobs(part: int, frame: pl.DataFrame) -> Iterator[tuple[int, str, bytes]]:
    for start in range(0, max(frame.height, 1), BLOB_ROWS):
        if frame.height == 0:
            return
        buf = io.BytesIO()
        frame.slice(start, BLOB_ROWS).write_ipc(buf, compression="uncompressed")
        yield part, "frame", buf.getvalue()


def _batch(rows: Sequence[tuple[int, str, bytes]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r[0] for r in rows], pa.int32()),
            pa.array([r[1] for r in rows], pa.string()),
            pa.array([r[2] for r in rows], pa.binary()),
        ],
        names=["part", "kind", "data"],
    )


def _frames(batches: Iterator[pa.RecordBatch]) -> Iterator[pl.DataFrame]:
    """The feature frames of a partition's blobs."""
    for b in batches:
        kinds, data = b.column(1), b.column(2)
        for i in range(b.num_rows):
            if kinds[i].as_py() == "frame":
                yield pl.read_ipc(io.BytesIO(data[i].as_py()))


def _partition_id() -> int:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return ctx.partitionId() if ctx is not None else 0


# ------------------------------------------------------------------------------------ tasks


def _max_date_task(plan: _Plan, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Per input partition: the latest order day (days since 1970-01-01) and the row count."""
    from fastseg import orders as O
    from fastseg import sources as S
    from fastseg.config import EPOCH

    with _worker_errors():
        table = _tables(batches)
        day, n = None, 0
        if table is not None:
            op = O.plan_orders(table, columns=plan.columns, keep_raw_ts=True, tz=plan.tz)
            stats = S.order_stats(op, need_max_date=True)
            n = stats.n
            if stats.max_date is not None:
                day = (stats.max_date - EPOCH).days
        yield pa.RecordBatch.from_arrays(
            [pa.array([day], pa.int64()), pa.array([n], pa.int64())], names=["day", "n"]
        )


def _profile_counts_task(
    plan: _Plan, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Per customer partition: the profiles' text value counts (after the duplicate ids are
    dropped, as :func:`fastseg.orders.load_customers` types them)."""
    from fastseg.orders import load_customers
    from fastseg.schema import text_column_counts

    with _worker_errors():
        tables = _split(
            _tables(batches), replace(plan, schemas={"customers": plan.schemas["customers"]})
        )
        prof, _ = load_customers(
            tables["customers"], columns=plan.customer_columns, tz=plan.tz, text_kinds={}
        )
        counts = text_column_counts(prof, exclude=["customer_id"])
        yield _batch([(_partition_id(), "counts", pickle.dumps(counts))])


def _features_task(plan: _Plan, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Per customer partition: the one-machine features of its customers, as IPC blobs, and a
    ``meta`` row (row reports, latest usable day, the sources' schemas)."""
    from fastseg.api import _features
    from fastseg.orders import check_id_types, load_customers, load_events
    from fastseg.progress import Stopwatch

    with _worker_errors():
        part = _partition_id()
        table = _tables(batches)
        meta: dict[str, Any] = {"empty": table is None}
        if table is None:
            yield _batch([(part, "meta", pickle.dumps(meta))])
            return
        tables = _split(table, plan)
        del table
        ids = pl.DataFrame(schema={"customer_id": plan.id_dtype})
        prof = ev = None
        if plan.has_customers:
            prof, meta["customers"] = load_customers(
                tables.pop("customers"),
                columns=plan.customer_columns,
                tz=plan.tz,
                text_kinds=plan.text_kinds or {},
            )
            prof = check_id_types(ids, prof, "customers", meta["customers"].source)
        if plan.has_events:
            assert plan.as_of is not None
            ev, meta["events"] = load_events(
                tables.pop("events"),
                as_of=plan.as_of,
                columns=plan.event_columns,
                extra_columns=plan.ev_cols,
                tz=plan.tz,
            )
            ev = check_id_types(ids, ev, "events", meta["events"].source)
        res = _features(
            tables.pop("orders"),
            customers=prof,
            events=ev,
            as_of=plan.as_of,
            columns=plan.columns,
            customer_columns=plan.customer_columns,
            event_columns=plan.event_columns,
            windows=plan.windows,
            strict=plan.strict,
            rejects=False,
            aggregates=plan.aggregates,
            extra_columns=plan.extra_columns,
            reader=None,
            watch=Stopwatch(),
            btyd=plan.btyd,
            top_category=plan.top_category,
            tz=plan.tz,
            loaded=True,
            partial=True,
        )
        frame = res.frame
        if frame.schema["customer_id"] != plan.id_dtype:  # a partition without any order row
            frame = frame.with_columns(pl.col("customer_id").cast(plan.id_dtype))
        if ev is not None:
            from fastseg.features import sanitize

            present = ev.filter(pl.col("event").is_not_null())["event"].unique().to_list()
            meta["event_types"] = sorted({sanitize(t) for t in present})
        meta.update(
            orders=res.orders,
            max_used_day=res.max_used_day,
            sources=res.sources,
            schema=frame.schema,
            customers_n=frame.height,
        )
        rows = list(_to_blobs(part, frame))
        rows.append((part, "meta", pickle.dumps(meta)))
        for start in range(0, len(rows), 8):
            yield _batch(rows[start : start + 8])


def _digest_task(search: Any, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Per partition: this round's edge digest of its feature frames, merged."""
    with _worker_errors():
        digests = [search.digest(f) for f in _frames(batches)]
        if digests:
            merged = type(search).merge(digests)
            yield _batch([(_partition_id(), "digest", pickle.dumps(merged))])


def _complete(frame: pl.DataFrame, plan: _Plan) -> pl.DataFrame:
    """A partition's features with the columns of all partitions, in one machine's order: the
    event counts of a type none of its customers had are 0, the days since it null (as the
    joins of one machine fill them)."""
    schema = plan.frame_schema
    if schema is None or frame.schema == schema:
        return frame
    return frame.select(
        pl.col(n).cast(t) if n in frame.columns else pl.lit(plan.fills.get(n), t).alias(n)
        for n, t in schema.items()
    )


def _score_frames(
    plan: _Plan, scorer: RFMScorer, batches: Iterator[pa.RecordBatch]
) -> Iterator[pl.DataFrame]:
    for frame in _frames(batches):
        yield scorer.transform(_complete(frame, plan))


def _conform(frame: pl.DataFrame, target: pa.Schema) -> list[pa.RecordBatch]:
    """``frame`` as an Arrow batch of exactly ``target`` (the Spark result's schema)."""
    table = frame.to_arrow()
    cols = []
    for f in target:
        col = table[f.name] if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        cols.append(col.cast(f.type))
    return pa.Table.from_arrays(cols, schema=target).combine_chunks().to_batches()


def _scores_task(
    plan: _Plan, scorer: RFMScorer, target: pa.Schema, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    with _worker_errors():
        for scores in _score_frames(plan, scorer, batches):
            if scores.height:
                yield from _conform(scores, target)


def _segments(plan: _Plan, scores: pl.DataFrame) -> Any:
    from fastseg.rules.compile import compile_catalog
    from fastseg.segmenting import evaluate

    assert plan.as_of is not None
    compiled = compile_catalog(
        plan.catalog, scores.schema, plan.as_of, missing="error", sources=plan.sources
    )
    return evaluate(scores, compiled, threads=1)


def _segments_task(
    plan: _Plan, scorer: RFMScorer, target: pa.Schema, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    with _worker_errors():
        for scores in _score_frames(plan, scorer, batches):
            if scores.height:
                long = _segments(plan, scores).to_long()
                if long.height:
                    yield from _conform(long, target)


def _summary_task(
    plan: _Plan, scorer: RFMScorer, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Per partition: the additive parts of the segment summary
    (:meth:`fastseg.segmenting.SegmentResult.summary_parts`), merged over its frames."""
    with _worker_errors():
        parts = None
        for scores in _score_frames(plan, scorer, batches):
            if scores.height:
                p = _segments(plan, scores).summary_parts()
                parts = p if parts is None else parts.merge(p)
        if parts is not None:
            yield _batch([(_partition_id(), "summary", pickle.dumps(parts))])


# ------------------------------------------------------------------------------------ driver


def _spark_types(schema: pl.Schema) -> tuple[StructType, pa.Schema]:
    """The Spark schema of a result with polars ``schema``, and the Arrow schema tasks give it.

    Spark has no unsigned integers: UInt8, UInt16 and UInt32 become the next wider signed type
    (the R/F/M scores, UInt8, are Spark ``smallint``); Enum and Categorical become text.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    wider = {
        pa.uint8(): pa.int16(),
        pa.uint16(): pa.int32(),
        pa.uint32(): pa.int64(),
        pa.uint64(): pa.int64(),
    }
    fields = []
    for f in pl.DataFrame(schema=schema).to_arrow().schema:
        t = f.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            t = pa.string()
        elif pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
            t = pa.binary()
        elif pa.types.is_timestamp(t):
            t = pa.timestamp("us", tz="UTC" if t.tz is not None else None)
        t = wider.get(t, t)
        fields.append(pa.field(f.name, t))
    target = pa.schema(fields)
    return from_arrow_schema(target, prefer_timestamp_ntz=True), target


def _merge_reports(reports: Sequence[RowReport], label: str) -> RowReport | None:
    from fastseg.orders import RowReport

    if not reports:
        return None
    left: dict[str, int] = {}
    for r in reports:
        for k, v in r.left_out.items():
            left[k] = left.get(k, 0) + v
    return RowReport(
        source=label,
        rows_read=sum(r.rows_read for r in reports),
        rows_used=sum(r.rows_used for r in reports),
        left_out=left,
        duplicates=sum(r.duplicates for r in reports),
    )


@contextlib.contextmanager
def _arrow_batches(spark: SparkSession) -> Iterator[None]:
    """``spark.sql.execution.arrow.maxRecordsPerBatch`` set for fastseg's jobs, then restored."""
    name = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(name, None)
    spark.conf.set(name, str(ARROW_BATCH_ROWS))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(name)
        else:
            spark.conf.set(name, before)


def _check_df(value: Any, what: str) -> Any:
    from pyspark.sql import DataFrame

    if not isinstance(value, DataFrame):
        hint = " (fastseg.score takes files and local frames)" if what == "orders" else ""
        msg = f"{what}: expected a PySpark DataFrame, got {type(value).__name__}{hint}"
        raise ParameterError(msg)
    return value


@dataclass
class SparkScore:
    """What :func:`score_job` produced: the scores (a Spark DataFrame) and what it took."""

    scores: DataFrame
    as_of: dt.date
    scorer: RFMScorer
    orders: RowReport
    customers: RowReport | None = None
    events: RowReport | None = None
    partitions: int = 0
    #: edge rounds run (small Spark jobs over the persisted features); 0 with given edges
    edge_rounds: int = 0
    #: seconds per job on the driver: ``as_of``, ``profile_types``, ``features`` (again:
    #: ``features_again``), ``edges``, ``summary``
    timings: dict[str, float] = field(default_factory=dict)
    _features: Any = field(default=None, repr=False)

    def unpersist(self) -> None:
        """Drop the persisted feature blobs (the results are then recomputed when used)."""
        if self._features is not None:
            self._features.unpersist()


@dataclass
class SparkRun(SparkScore):
    """What :func:`run` produced: ``scores``, ``segments`` (long membership: ``customer_id``,
    ``segment``) and ``summary`` (as :meth:`fastseg.segmenting.SegmentResult.summary`), Spark
    DataFrames."""

    segments: Any = None
    summary: Any = None


class _Job:
    """One Spark scoring job: the plan made on the driver, then the jobs of the module doc."""

    def __init__(
        self,
        orders: DataFrame,
        *,
        customers: DataFrame | None,
        events: DataFrame | None,
        as_of: Any,
        bins: int | None,
        method: str | None,
        thresholds: Any,
        columns: Any,
        customer_columns: Any,
        event_columns: Any,
        windows: Sequence[int],
        strict: bool,
        tz: str | None,
        scorer: RFMScorer | None,
        edges_in: Any,
        partitions: int | None,
        catalog: Any = None,
        top_category: bool = False,
    ) -> None:
        from fastseg import api
        from fastseg import orders as O
        from fastseg.features import check_windows
        from fastseg.schema import check_time_zone

        _pyspark()
        self.orders = _check_df(orders, "orders")
        self.customers = None if customers is None else _check_df(customers, "customers")
        self.events = None if events is None else _check_df(events, "events")
        self.spark = self.orders.sparkSession
        windows = check_windows(windows)
        self.as_of_given = api._as_date(as_of)
        tz = check_time_zone(tz)
        api._check_mappings(customers, customer_columns, events, event_columns)
        self.scorer, self.needs_fit = api._make_scorer(bins, method, thresholds, edges_in, scorer)
        if partitions is None:
            partitions = int(self.spark.conf.get("spark.sql.shuffle.partitions", "200"))
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            msg = f"partitions: expected a positive whole number, got {partitions!r}"
            raise ParameterError(msg)
        self.partitions = partitions
        aggregates: list[Any] = []
        if catalog is not None:
            from fastseg.rules.compile import required_aggregates

            aggregates = list(required_aggregates(catalog))
        ev_specs = [a for a in aggregates if a.source == "events"]
        ev_cols = sorted({c for a in ev_specs for c in a.columns} - {"event", "event_date"})
        schemas = {"orders": _arrow_schema(self.orders)}
        if self.customers is not None:
            schemas["customers"] = _arrow_schema(self.customers)
        if self.events is not None:
            schemas["events"] = _arrow_schema(self.events)
        full = dict(schemas)  # before the projections below: for the rules' column checks
        # the inputs' columns checked on the driver, on empty tables of the tasks' schemas
        with _relabeled():
            order_cols = {c for a in aggregates if a.source == "orders" for c in a.columns}
            oplan = O.plan_orders(
                _empty(schemas["orders"]),
                columns=columns,
                extra_columns=sorted(order_cols),
                keep_raw_ts=True,
                tz=tz,
            )
            self.oplan = oplan
            # only the columns fastseg reads go through the shuffle (a wide table's others not)
            used = set(oplan.columns.values())
            self.orders = self.orders.select(*[f"`{c}`" for c in self.orders.columns if c in used])
            schemas["orders"] = _arrow_schema(self.orders)
            id_dtype = oplan.frame.collect_schema()["customer_id"]
            ids = pl.DataFrame(schema={"customer_id": id_dtype})
            self.id_cols = {"orders": oplan.columns["customer_id"]}
            if self.customers is not None:
                _, resolved, _ = O.plan_customers(_empty(schemas["customers"]), customer_columns)
                self.id_cols["customers"] = resolved["customer_id"]
                prof, rep = O.load_customers(
                    _empty(schemas["customers"]), columns=customer_columns, tz=tz, text_kinds={}
                )
                O.check_id_types(ids, prof, "customers", rep.source)
            if self.events is not None:
                _, resolved, _ = O.plan_events(_empty(schemas["events"]), event_columns, ev_cols)
                self.id_cols["events"] = resolved["customer_id"]
                used = set(resolved.values())
                self.events = self.events.select(
                    *[f"`{c}`" for c in self.events.columns if c in used]
                )
                schemas["events"] = _arrow_schema(self.events)
                ev, rep = O.load_events(
                    _empty(schemas["events"]),
                    as_of=dt.date(2000, 1, 1),
                    columns=event_columns,
                    extra_columns=ev_cols,
                    tz=tz,
                )
                O.check_id_types(ids, ev, "events", rep.source)
            if catalog is not None:
                options = {
                    "columns": columns,
                    "customer_columns": customer_columns,
                    "event_columns": event_columns,
                    "windows": windows,
                    "customers": None if self.customers is None else _empty(full["customers"]),
                    "events": None if self.events is None else _empty(full["events"]),
                }
                api._check_fields_early(catalog, _empty(full["orders"]), options)
        self.plan = _Plan(
            columns=columns,
            customer_columns=customer_columns,
            event_columns=event_columns,
            windows=windows,
            strict=strict,
            tz=tz,
            aggregates=aggregates,
            extra_columns=[],
            btyd=False,
            top_category=top_category,
            has_customers=self.customers is not None,
            has_events=self.events is not None,
            schemas=schemas,
            id_dtype=id_dtype,
            ev_cols=ev_cols,
            catalog=catalog,
        )
        self.features: DataFrame | None = None

    # ---------------------------------------------------------------- the jobs

    def _key(self, df: DataFrame, what: str) -> Any:
        """The partitioning key: the customer id as fastseg reads it, one type for all inputs."""
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        col = self.id_cols[what]
        dtype = df.schema[col].dataType
        c = F.col(f"`{col}`")
        if isinstance(dtype, T.FractionalType | T.DecimalType):
            c = c.cast("long")
        if self.plan.id_dtype == pl.String:
            if isinstance(dtype, T.StringType):
                # the partitioning key trims what fastseg trims (sources.WHITE_SPACE, Unicode
                # spaces too: Java's \s is ASCII only), so one customer is one key
                ws = _java_class(WHITE_SPACE)
                return F.regexp_replace(c, f"^{ws}+|{ws}+$", "")
            return c.cast("string")
        return c.cast("long")

    def _tagged(self, what: str) -> DataFrame:
        from pyspark.sql import functions as F

        df = {"orders": self.orders, "customers": self.customers, "events": self.events}[what]
        assert df is not None
        return df.select(
            F.lit(TAGS[what]).cast("byte").alias(TAG),
            self._key(df, what).alias(KEY),
            F.monotonically_increasing_id().alias(ROW),
            *[F.col(f"`{n}`").alias(PREFIX[what] + n) for n in df.columns],
        )

    def max_day(self) -> int | None:
        """The latest order day over all partitions, typed as fastseg types it (job 1).

        A ``DateType`` or ``TimestampNTZType`` column is its own day (local already, also with
        ``tz``): Spark's ``max``. Other types (text, zone-aware timestamps) are read by
        :func:`fastseg.sources.order_stats` in every input partition.
        """
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        from fastseg.config import EPOCH

        col = self.oplan.columns["order_ts"]
        dtype = self.orders.schema[col].dataType
        if isinstance(dtype, T.DateType | T.TimestampNTZType):
            with _driver_errors():
                row = self.orders.agg(
                    F.count(F.lit(1)).alias("n"), F.to_date(F.max(F.col(f"`{col}`"))).alias("d")
                ).collect()[0]
            if row["n"] == 0:
                msg = f"orders: {self.label} has no rows; nothing to score"
                raise DataError(msg)
            if row["d"] is None:
                raise _no_dates(self.oplan)
            return (row["d"] - EPOCH).days
        fn = functools.partial(_max_date_task, self.plan)
        with _driver_errors():
            rows = _map_in_arrow(self.orders, fn, "day LONG, n LONG").collect()
        if sum(r["n"] for r in rows) == 0:
            msg = f"orders: {self.label} has no rows; nothing to score"
            raise DataError(msg)
        days = [r["day"] for r in rows if r["day"] is not None]
        if not days:
            raise _no_dates(self.oplan)
        return max(days)

    @property
    def label(self) -> str:
        return "orders (Spark DataFrame)"

    def type_profiles(self) -> None:
        """Decide the profiles' text column types over all partitions (job 2)."""
        from pyspark.sql import types as T

        from fastseg.schema import decide_text_types

        assert self.customers is not None
        if not any(isinstance(f.dataType, T.StringType) for f in self.customers.schema.fields):
            self.plan.text_kinds = {}
            return
        fn = functools.partial(_profile_counts_task, self.plan)
        union = self._tagged("customers").repartition(self.partitions, KEY)
        with _driver_errors():
            rows = _map_in_arrow(union, fn, _BLOB_SCHEMA).collect()
        total: dict[str, dict[str, int]] = {}
        for r in rows:
            for c, counts in pickle.loads(r["data"]).items():
                t = total.setdefault(c, dict.fromkeys(counts, 0))
                for k, v in counts.items():
                    t[k] += v
        self.plan.text_kinds = decide_text_types(total)

    def build_features(self, as_of: dt.date) -> list[dict[str, Any]]:
        """The features of every partition, persisted as blobs (job 3); the partitions' meta."""
        from pyspark import StorageLevel

        self.plan.as_of = as_of
        union = self._tagged("orders")
        for what in ("customers", "events"):
            if getattr(self, what) is not None:
                union = union.unionByName(self._tagged(what), allowMissingColumns=True)
        fn = functools.partial(_features_task, self.plan)
        feats = _map_in_arrow(union.repartition(self.partitions, KEY), fn, _BLOB_SCHEMA)
        feats = feats.persist(StorageLevel.MEMORY_AND_DISK)
        with _driver_errors():
            rows = feats.filter("kind = 'meta'").select("data").collect()
        if self.features is not None:
            self.features.unpersist()
        self.features = feats
        return [pickle.loads(r["data"]) for r in rows]

    def fit(self) -> int:
        """The exact global edges, in rounds over the persisted features (jobs 4...)."""
        from fastseg.edges import RFMEdgeSearch

        assert self.features is not None
        if not self.needs_fit:
            return 0
        search = RFMEdgeSearch(self.scorer)
        frames = self.features.filter("kind = 'frame'")
        while not search.done:
            fn = functools.partial(_digest_task, search)
            with _driver_errors():
                rows = _map_in_arrow(frames, fn, _BLOB_SCHEMA).collect()
            digests = [pickle.loads(r["data"]) for r in rows]
            try:
                if not digests:
                    digests = [search.digest(pl.DataFrame(schema=self.frame_schema))]
                search.advance(RFMEdgeSearch.merge(digests))
            except DataError as exc:
                msg = f"orders {self.label}: {exc}"
                raise DataError(msg) from None
        self.scorer = search.fitted()
        return search.rounds

    def run(self, *, segments: bool) -> SparkScore:
        from fastseg.config import EPOCH

        spark = self.spark
        timings: dict[str, float] = {}

        @contextlib.contextmanager
        def timed(name: str) -> Iterator[None]:
            t0 = time.perf_counter()
            yield
            timings[name] = time.perf_counter() - t0

        with _arrow_batches(spark):
            with timed("as_of"):
                day = None if self.as_of_given is not None else self.max_day()
            as_of = self.as_of_given or EPOCH + dt.timedelta(days=day or 0)
            if self.customers is not None:
                with timed("profile_types"):
                    self.type_profiles()
            with timed("features"):
                metas = self.build_features(as_of)
            used = [m["max_used_day"] for m in metas if m.get("max_used_day") is not None]
            if self.as_of_given is None and used and max(used) < (as_of - EPOCH).days:
                # the latest dated rows were all left out: the latest usable row's date, and the
                # windows count from it (as one machine reads the rows again)
                as_of = EPOCH + dt.timedelta(days=max(used))
                with timed("features_again"):
                    metas = self.build_features(as_of)
            full = [m for m in metas if not m["empty"]]
            report = _merge_reports([m["orders"] for m in full], self.label)
            if report is None or report.rows_read == 0:
                msg = f"orders: {self.label} has no rows; nothing to score"
                raise DataError(msg)
            from fastseg import orders as O

            if report.rows_left_out and self.plan.strict:
                raise O.strict_error(report, as_of)
            if report.rows_used == 0:
                raise O.no_usable_error(report, as_of)
            cust = _merge_reports(
                [m["customers"] for m in full if "customers" in m], "customers (Spark DataFrame)"
            )
            evr = _merge_reports(
                [m["events"] for m in full if "events" in m], "events (Spark DataFrame)"
            )
            with_rows = [m for m in full if m["customers_n"]] or full
            self.frame_schema, fills = _frame_schema(
                with_rows,
                {a.name: getattr(a, "fill", 0) for a in self.plan.aggregates},
                self.plan.windows,
            )
            self.plan.frame_schema, self.plan.fills = self.frame_schema, fills
            self.plan.sources = with_rows[0]["sources"]
            with timed("edges"):
                rounds = self.fit()
        empty = self.scorer.transform(pl.DataFrame(schema=self.frame_schema))
        spark_schema, target = _spark_types(empty.schema)
        assert self.features is not None
        frames = self.features.filter("kind = 'frame'")
        scores = _map_in_arrow(
            frames, functools.partial(_scores_task, self.plan, self.scorer, target), spark_schema
        )
        common = {
            "scores": scores,
            "as_of": as_of,
            "scorer": self.scorer,
            "orders": report,
            "customers": cust,
            "events": evr,
            "partitions": self.partitions,
            "edge_rounds": rounds,
            "timings": timings,
            "_features": self.features,
        }
        if not segments:
            return SparkScore(**common)
        long = _segments(self.plan, empty).to_long()  # the rules checked once, here
        seg_schema, seg_target = _spark_types(long.schema)
        seg_df = _map_in_arrow(
            frames,
            functools.partial(_segments_task, self.plan, self.scorer, seg_target),
            seg_schema,
        )
        with timed("summary"), _arrow_batches(spark), _driver_errors():
            rows = _map_in_arrow(
                frames, functools.partial(_summary_task, self.plan, self.scorer), _BLOB_SCHEMA
            ).collect()
        parts = _segments(self.plan, empty).summary_parts()
        for r in rows:
            parts = parts.merge(pickle.loads(r["data"]))
        summary = parts.frame()
        sum_schema, _ = _spark_types(summary.schema)
        summary_df = spark.createDataFrame(summary.rows(), sum_schema)
        return SparkRun(**common, segments=seg_df, summary=summary_df)


def _event_block(types: Sequence[str]) -> list[str]:
    """The event feature columns of these (column-safe, sorted) types, in
    :func:`fastseg.features.event_frame`'s order."""
    from fastseg.features import EVENT_WINDOWS

    counts = [f"{t}_{w}d" for t in types for w in EVENT_WINDOWS]
    return counts + [f"days_since_{t}" for t in types]


def _frame_schema(
    metas: Sequence[dict[str, Any]], extras: Mapping[str, Any], windows: Sequence[int]
) -> tuple[pl.Schema, dict[str, Any]]:
    """The features frame's schema over all partitions and the fills of the columns a
    partition may lack, as one machine's frame has them.

    A partition without order rows lacks the columns only orders give (``distinct_categories``,
    ``top_category``, ``discount_share``); one without an event type's events lacks that type's
    columns. The base is a partition with order rows; its event block (after the profile
    columns, before the rule aggregates ``extras``: name -> fill) becomes the block of every
    type. Fills as :func:`fastseg.features.join_customers` fills prospects (counts and sums 0,
    the rest null) and the rule aggregates theirs.
    """
    from fastseg.features import ZERO_FILL

    every = sorted({t for m in metas for t in m.get("event_types", ())})
    base = max(metas, key=lambda m: (m["orders"].rows_read > 0, m["customers_n"]))
    schema = base["schema"]
    own = set(_event_block(base.get("event_types", ())))
    block = _event_block(every)
    count_t = days_t = pl.Int64()
    for m in metas:  # the event columns' types, from a partition that has them
        if m.get("event_types"):
            mine = _event_block(m["event_types"])
            count_t, days_t = m["schema"][mine[0]], m["schema"][mine[-1]]
            break
    # an events(...) aggregate named as an event column (``email_open_30d``) is that column
    # where the type has events, an aggregate after the others where it has none
    cols = [(n, t) for n, t in schema.items() if n not in own and n not in set(block)]
    features = {f"{k}_{w}d" for k in ("orders", "revenue") for w in windows}
    later = set(extras) - set(block) - features
    at = next((i for i, (n, _) in enumerate(cols) if n in later), len(cols))
    ev_cols = [(b, days_t if b.startswith("days_since_") else count_t) for b in block]
    out = pl.Schema(cols[:at] + ev_cols + cols[at:])
    zero = re.compile(r"(orders|revenue)_\d+d")
    fills: dict[str, Any] = {
        n: 0 if (n in ZERO_FILL or zero.fullmatch(n)) else None for n in schema.names()
    }
    fills.update((n, v) for n, v in extras.items() if n not in block)
    fills.update((b, None if b.startswith("days_since_") else 0) for b in block)
    return out, fills


def _no_dates(plan: Any) -> FastsegError:
    from fastseg import orders as O

    err = O.no_dates_error(plan)
    return type(err)(_relabel(str(err)))


def score_job(
    orders: DataFrame,
    *,
    customers: DataFrame | None = None,
    events: DataFrame | None = None,
    as_of: dt.date | dt.datetime | str | None = None,
    bins: int | None = None,
    method: str | None = None,
    thresholds: Mapping[str, Sequence[float]] | Sequence[str] | None = None,
    columns: Any = None,
    customer_columns: Any = None,
    event_columns: Any = None,
    windows: Sequence[int] = (30, 90, 365),
    strict: bool = False,
    tz: str | None = None,
    scorer: RFMScorer | None = None,
    edges_in: Any = None,
    partitions: int | None = None,
) -> SparkScore:
    """:func:`score` with what it took: the scores, the scoring date, the fitted scorer, the
    merged row reports; see :func:`score` for the parameters."""
    job = _Job(
        orders,
        customers=customers,
        events=events,
        as_of=as_of,
        bins=bins,
        method=method,
        thresholds=thresholds,
        columns=columns,
        customer_columns=customer_columns,
        event_columns=event_columns,
        windows=windows,
        strict=strict,
        tz=tz,
        scorer=scorer,
        edges_in=edges_in,
        partitions=partitions,
    )
    return job.run(segments=False)


def score(orders: DataFrame, **options: Any) -> DataFrame:
    """Score every customer of a Spark DataFrame of orders: :func:`fastseg.score` on Spark.

    Parameters
    ----------
    orders : pyspark.sql.DataFrame
        Order rows: ``customer_id``, ``order_ts`` and ``amount`` (or ``quantity`` and
        ``unit_price``), or the columns ``columns`` maps to them. Spark types are read as the
        Arrow types they become (``TimestampType`` in the session time zone; ``TimestampNTZType``
        and ``DateType`` as written).
    **options
        As :func:`fastseg.score`: ``customers`` and ``events`` (Spark DataFrames), ``as_of``,
        ``bins`` (default 5), ``method``, ``thresholds``, ``columns``, ``customer_columns``,
        ``event_columns``, ``windows``, ``strict``, ``tz``, ``scorer``, ``edges_in``; and
        ``partitions``: the customer partitions ``P`` (default
        ``spark.sql.shuffle.partitions``; each holds about ``rows / P`` order rows in memory).

    Returns
    -------
    pyspark.sql.DataFrame
        One row per customer with the columns of :func:`fastseg.score` (UInt8 scores as
        ``smallint``), in no particular order. It is computed from feature blobs persisted
        with ``MEMORY_AND_DISK``; use :func:`score_job` to get a handle that can unpersist them.

    Raises
    ------
    FastsegError
        The error one machine would raise, also when a task raised it.
    """
    return score_job(orders, **options).scores


def run(
    orders: DataFrame,
    *,
    rules: Any = None,
    builtin: bool = True,
    customers: DataFrame | None = None,
    events: DataFrame | None = None,
    as_of: dt.date | dt.datetime | str | None = None,
    bins: int | None = None,
    method: str | None = None,
    thresholds: Mapping[str, Sequence[float]] | Sequence[str] | None = None,
    columns: Any = None,
    customer_columns: Any = None,
    event_columns: Any = None,
    windows: Sequence[int] = (30, 90, 365),
    strict: bool = False,
    tz: str | None = None,
    scorer: RFMScorer | None = None,
    edges_in: Any = None,
    partitions: int | None = None,
) -> SparkRun:
    """Features, scores and segments of a Spark DataFrame of orders: :func:`fastseg.run` on Spark.

    Parameters
    ----------
    orders : pyspark.sql.DataFrame
        As for :func:`score`.
    rules, builtin
        The segment catalog, as for :func:`fastseg.run` (checked on the driver first).
    customers, events, as_of, bins, method, thresholds, columns, customer_columns, event_columns, windows, strict, tz, scorer, edges_in, partitions
        As for :func:`score`.

    Returns
    -------
    SparkRun
        ``scores``, ``segments`` (``customer_id``, ``segment``: one row per membership) and
        ``summary`` (one row per segment, catalog order in the rows' data) as Spark DataFrames,
        plus ``as_of``, ``scorer`` and the merged row reports.
    """
    from fastseg import api

    catalog = api.load_rules(rules, builtin=builtin)
    job = _Job(
        orders,
        customers=customers,
        events=events,
        as_of=as_of,
        bins=bins,
        method=method,
        thresholds=thresholds,
        columns=columns,
        customer_columns=customer_columns,
        event_columns=event_columns,
        windows=windows,
        strict=strict,
        tz=tz,
        scorer=scorer,
        edges_in=edges_in,
        partitions=partitions,
        catalog=catalog,
        top_category=api._uses_field(catalog, "top_category"),
    )
    result = job.run(segments=True)
    assert isinstance(result, SparkRun)
    return result
