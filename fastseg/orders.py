"""Plan order sources (columns mapped and typed, no row read); read profiles and events.

Rows that cannot be used are counted by reason and reported — never silently dropped:

``missing_customer_id``
    no customer id (guest checkouts);
``missing_timestamp``
    no order timestamp;
``missing_amount``
    a null, NaN or infinite amount;
``after_as_of``
    dated after the scoring date.

Each left-out row gets the first reason that applies, in that order (:data:`fastseg.config.REASONS`;
the order rows are checked by :mod:`fastseg.pipeline`). ``rejects=PATH`` writes them with their
reason; ``strict=True`` turns any of them into an error. Exact duplicate rows are counted and
reported but kept (they may be real repeat purchases).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fastseg import schema
from fastseg.config import REASONS
from fastseg.errors import DataError, FastsegError, InputError, SchemaError
from fastseg.io import Source, scan_source

__all__ = [
    "REASONS",
    "RowReport",
    "collect",
    "load_customers",
    "load_events",
    "plan_customers",
    "plan_orders",
]


#: optional order columns read whenever present: the features use them.
FEATURE_COLUMNS = ("order_id", "category", "discount")


@dataclass
class RowReport:
    """How many rows a source had, how many were used, and how many were left out and why."""

    source: str
    rows_read: int
    rows_used: int
    left_out: dict[str, int]
    duplicates: int = 0
    rejects_path: Path | None = None

    @property
    def rows_left_out(self) -> int:
        return sum(self.left_out.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_used": self.rows_used,
            "rows_left_out": self.rows_left_out,
            "left_out": dict(self.left_out),
            "exact_duplicate_rows": self.duplicates,
            "rejects_path": str(self.rejects_path) if self.rejects_path else None,
        }


def collect(lf: pl.LazyFrame, label: str, source: Source | None = None) -> pl.DataFrame:
    """``lf.collect()``, turning reader errors (corrupt file, bad CSV) into one-line InputErrors
    (for CSV ``source``, naming the line where the file stops being readable)."""
    try:
        return lf.collect()
    except FastsegError:
        raise
    except (pl.exceptions.PolarsError, OSError) as exc:
        from fastseg.sources import read_error

        raise read_error(exc, label, source) from exc


def csv_ids_as_int(name: str = "customer_id") -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """CSV is read as text: ids are stripped of surrounding spaces (an id left empty is
    missing), and ids that are all plain integers become Int64.

    Returns ``(text, as_int, all_int)``: the stripped ids, the ids as integers, and the
    aggregate saying whether every id is a plain integer — written as Int64 writes it (digits,
    an optional minus, no leading zeros or plus sign), so that the integer and the text name
    the same customer (``"000123"`` is an id to keep as written).
    """
    stripped = pl.col(name).str.strip_chars()
    text = pl.when(stripped == "").then(None).otherwise(stripped)
    as_int = text.cast(pl.Int64, strict=False)
    all_int = (text.is_null() | (as_int.cast(pl.String) == text).fill_null(False)).all()
    return text, as_int, all_int


def plain_int(name: str) -> pl.Expr:
    """Text column ``name`` as Int64 where it is a plain integer (as Int64 writes it), else null."""
    as_int = pl.col(name).cast(pl.Int64, strict=False)
    return pl.when(as_int.cast(pl.String) == pl.col(name)).then(as_int)


def csv_id_batch(df: pl.DataFrame, name: str = "customer_id") -> pl.DataFrame:
    """:func:`csv_ids_as_int` applied to one frame (a batch, or a whole file) read from CSV:
    its ids stripped, and integers when every one of them is a plain integer."""
    return csv_ids_typed(csv_ids_stripped(df, name), name)


def csv_ids_stripped(df: pl.DataFrame, name: str = "customer_id") -> pl.DataFrame:
    """The first half of :func:`csv_id_batch`: ids stripped, an id left empty missing."""
    return df.with_columns(csv_ids_as_int(name)[0].alias(name))


def csv_ids_typed(df: pl.DataFrame, name: str = "customer_id") -> pl.DataFrame:
    """The second half of :func:`csv_id_batch`: stripped ids as Int64 when all are plain."""
    as_int = pl.col(name).cast(pl.Int64, strict=False)
    plain = (as_int.cast(pl.String) == pl.col(name)).fill_null(False)
    all_int = (pl.col(name).is_null() | plain).all()
    if df.select(all_int).item():
        return df.with_columns(pl.col(name).cast(pl.Int64))
    return df


def _csv_int_ids(df: pl.DataFrame, src: Source) -> pl.DataFrame:
    """Apply :func:`csv_ids_as_int` to a whole frame read from CSV."""
    if src.kind != "csv" or df["customer_id"].dtype != pl.String:
        return df
    return csv_id_batch(df)


def _schema(src: Source) -> pl.Schema:
    try:
        return src.frame.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"cannot read {src.label}: {first} (is it a valid {src.kind} file?)"
        raise InputError(msg) from exc


def _project(
    src: Source,
    resolved: Mapping[str, str],
    found: pl.Schema,
    kinds: Mapping[str, str],
    *,
    keep_raw: Iterable[str] = (),
    tz: str | None = None,
) -> tuple[pl.LazyFrame, list[schema.Conversion]]:
    """Select, rename and type the resolved columns; keep raw text columns that need checking.

    ``tz``: dates are the local dates in that zone (:func:`fastseg.schema.typed_date`)."""
    exprs: list[pl.Expr] = []
    conversions: list[schema.Conversion] = []
    typers = {
        "id": schema.typed_id,
        "date": schema.typed_date,
        "number": schema.typed_number,
        "text": schema.typed_text,
    }
    for canon, col in resolved.items():
        kind = kinds.get(canon, "keep")
        if kind == "keep":
            exprs.append(pl.col(col).alias(canon))
            continue
        if kind == "date":
            expr, conv = schema.typed_date(canon, col, found[col], src.label, tz)
        else:
            expr, conv = typers[kind](canon, col, found[col], src.label)
        exprs.append(expr)
        if conv is not None:
            conversions.append(conv)
            exprs.append(pl.col(col).alias(conv.raw))
    for canon in keep_raw:
        if canon in resolved:
            exprs.append(pl.col(resolved[canon]).alias(f"{canon}_raw"))
    return src.frame.select(exprs), conversions


ORDER_KINDS = {
    "customer_id": "id",
    "order_ts": "date",
    "amount": "number",
    "quantity": "number",
    "unit_price": "number",
    "discount": "number",
    "category": "text",
    "channel": "text",
    "sku": "keep",
    "order_id": "keep",
}


def as_date(value: dt.date | dt.datetime | str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        from fastseg.errors import ParameterError

        msg = f"{name}: expected a date like 2026-01-31, got {value!r}"
        raise ParameterError(msg) from None


@dataclass(frozen=True)
class OrderPlan:
    """A typed lazy projection of an order source, before any row is read.

    ``frame`` has the canonical columns (``order_ts`` as a Date; ``amount`` or ``quantity`` and
    ``unit_price``), plus raw text columns kept to check conversions, plus ``order_ts_raw`` when
    rejects keep the original timestamp.
    """

    source: Source
    frame: pl.LazyFrame
    conversions: tuple[schema.Conversion, ...]
    columns: dict[str, str]  # canonical (or the source's own, for rule filters) -> source column


def plan_orders(
    source: Any,
    *,
    columns: Mapping[str, str] | Sequence[str] | None = None,
    extra_columns: Iterable[str] = (),
    keep_raw_ts: bool = False,
    tz: str | None = None,
) -> OrderPlan:
    """Scan an order source, check its schema and map its columns; read no row.

    ``tz`` (an IANA zone): zone-aware timestamps are cut into days in that zone; naive ones
    are taken as local already. None: each timestamp's date in its own zone (as written)."""
    mapping = schema.parse_column_map(columns)
    src = scan_source(source, what="orders")
    found = _schema(src)
    extra = [c for c in extra_columns if c not in schema.ORDER_COLUMNS or c not in mapping]
    optional = [c for c in schema.ORDER_COLUMNS if c not in schema.REQUIRED_ORDER_COLUMNS]
    wanted_optional = [c for c in optional if c in FEATURE_COLUMNS or c in extra or c in mapping]
    resolved = schema.resolve_columns(
        found,
        mapping,
        label=src.label,
        required=schema.REQUIRED_ORDER_COLUMNS,
        optional=wanted_optional,
        alternatives={"amount": ("quantity", "unit_price")},
    )
    used_cols = set(resolved.values())
    for name in extra:  # the source's own columns asked for by rules
        if name not in resolved and name in found.names() and name not in used_cols:
            resolved[name] = name
    keep_raw = ("order_ts",) if keep_raw_ts else ()
    lf, conversions = _project(src, resolved, found, dict(ORDER_KINDS), keep_raw=keep_raw, tz=tz)
    return OrderPlan(src, lf, tuple(conversions), resolved)


def strict_error(report: RowReport, as_of: dt.date) -> DataError:
    """The error ``strict=True`` raises when rows had to be left out."""
    msg = (
        f"orders: {report.rows_left_out:,} of {report.rows_read:,} rows in {report.source} cannot be "
        f"used ({_reasons_text(report.left_out, as_of)}); fix them, or run without --strict to "
        "leave them out (--rejects PATH keeps them)"
    )
    return DataError(msg)


def no_usable_error(report: RowReport, as_of: dt.date) -> DataError:
    """The error raised when every row was left out."""
    msg = (
        f"orders: no usable order in {report.source}: all {report.rows_read:,} rows left out "
        f"({_reasons_text(report.left_out, as_of)})"
    )
    return DataError(msg)


def rejects_frame(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """The left-out rows (canonical columns plus ``reason``) as one frame, ready to write."""
    bad = (
        pl.concat(list(frames), how="diagonal_relaxed")
        if frames
        else pl.DataFrame({"reason": []}, schema={"reason": pl.String})
    )
    if "order_ts_raw" in bad.columns:  # the timestamp as read, not just its date
        bad = bad.drop("order_date").rename({"order_ts_raw": "order_ts"})
    cols = ["reason"] + [c for c in bad.columns if c != "reason" and not c.startswith("_")]
    return bad.select(cols)


def no_dates_error(plan: OrderPlan) -> DataError | SchemaError:
    """No row has a readable date: name the column and a value that does not read, if any."""
    col = plan.columns["order_ts"]
    named = f"{col!r}" + (" (order_ts)" if col != "order_ts" else "")
    label = plan.source.label
    try:
        sample = (
            plan.source.frame.select(pl.col(col).cast(pl.String).str.strip_chars())
            .filter(pl.col(col).is_not_null() & (pl.col(col) != ""))
            .head(1)
            .collect()
        )
    except (pl.exceptions.PolarsError, OSError):
        sample = pl.DataFrame()
    if sample.height:
        value = sample.item()
        msg = (
            f"orders: {label}: column {named} has no value that reads as a date (first: "
            f"{value!r}); fastseg reads ISO 8601 dates such as 2026-01-31 or 2026-01-31T10:15:00: "
            "convert the column, or map the date column with --col order_ts=COLUMN"
        )
        return SchemaError(msg)
    msg = f"orders: {label}: column {named} is empty in every row; nothing to score"
    return DataError(msg)


def _reasons_text(left_out: Mapping[str, int], as_of: dt.date | None) -> str:
    parts = []
    for r, n in left_out.items():
        if n:
            extra = f" (dated after {as_of})" if r == "after_as_of" and as_of else ""
            parts.append(f"{r}: {n:,}{extra}")
    return ", ".join(parts)


def ids_increasing(name: str = "order_id") -> pl.Expr:
    """Whether the ids of column ``name`` are present and strictly increasing — a proof, cheap
    to check, that no two rows share one. Values compare as they are typed (numbers as numbers,
    text as text); :func:`ids_increasing_text` also tries text as numbers."""
    oid = pl.col(name)
    if_ok = oid.null_count() == 0
    return if_ok & _increasing(oid)


def _increasing(oid: pl.Expr) -> pl.Expr:
    return (oid.slice(1) > oid.slice(0, pl.len() - 1)).all()


def ids_increasing_text(name: str = "order_id") -> pl.Expr:
    """:func:`ids_increasing` for text ids: as numbers when all are plain integers."""
    oid = pl.col(name)
    as_int = oid.str.strip_chars().cast(pl.Int64, strict=False)
    numeric = (as_int.null_count() == 0) & _increasing(as_int)
    return (oid.null_count() == 0) & (numeric | _increasing(oid))


def row_hashes(df: pl.DataFrame) -> pl.Series:
    """A 64-bit hash of every row over the columns read, timestamps as read (not just dates)."""
    raw_ts = "order_ts_raw" in df.columns
    cols = [
        c
        for c in df.columns
        if not c.startswith(("__raw_", "_")) and not (raw_ts and c == "order_date")
    ]
    return df.select(pl.struct(cols).hash(seed=0x5EED)).to_series()


def count_duplicate_hashes(hashes: np.ndarray) -> int:
    """Rows whose hash equals an earlier row's (sorts ``hashes`` in place)."""
    if hashes.shape[0] < 2:
        return 0
    hashes.sort()
    return int(np.count_nonzero(hashes[1:] == hashes[:-1]))


# --------------------------------------------------------------------------- profiles and events


def plan_customers(
    source: Any, columns: Mapping[str, str] | Sequence[str] | None = None
) -> tuple[Source, dict[str, str], pl.Schema]:
    """Scan a profile source and map its columns; read no row.

    Returns the source, ``{canonical: source column}`` for ``customer_id`` and every canonical
    profile column present (mapped with ``columns`` or under its own name), and the source's
    schema.
    """
    mapping = schema.parse_column_map(columns, known=schema.CUSTOMER_COLUMNS, what="customers")
    src = scan_source(source, what="customers")
    found = _schema(src)
    resolved = schema.resolve_columns(
        found,
        mapping,
        label=src.label,
        required=["customer_id"],
        optional=[c for c in schema.CUSTOMER_COLUMNS if c != "customer_id"],
        what="customers",
    )
    return src, resolved, found


def customer_names(resolved: Mapping[str, str], found: pl.Schema) -> dict[str, str]:
    """``{name in the profiles frame: source column}``: the canonical columns under their
    canonical names, then every other column under its own (a column with a canonical name
    that the mapping gives to another column is not read)."""
    names = dict(resolved)
    used = set(resolved.values()) | set(resolved)
    names.update({c: c for c in found.names() if c not in used})
    return names


def load_customers(
    source: Any,
    *,
    columns: Mapping[str, str] | Sequence[str] | None = None,
    tz: str | None = None,
    text_kinds: Mapping[str, tuple[str, str]] | None = None,
) -> tuple[pl.DataFrame, RowReport]:
    """Read customer profiles: ``customer_id`` plus every other column.

    ``columns`` maps canonical profile columns (:data:`fastseg.schema.CUSTOMER_COLUMNS`) to the
    source's. Text columns are typed by their values (:func:`fastseg.schema.type_text_columns`:
    ISO dates and timestamps, flags). Profiles without a customer id are left out and counted; a
    customer id that appears twice keeps its first profile (the others are counted as
    ``duplicate_customer_id``). ``tz``: zone-aware timestamps are converted to that zone (see
    :func:`fastseg.schema.type_text_columns`), so rules compare them with local midnights.
    ``text_kinds``: how the text columns read, decided already over all parts of the profiles
    (:func:`fastseg.schema.decide_text_types`; a Spark job's partitions); None: from these rows.
    """
    src, resolved, found = plan_customers(source, columns)
    col = resolved["customer_id"]
    id_expr, conv = schema.typed_id("customer_id", col, found[col], src.label)
    names = customer_names(resolved, found)
    rest = [pl.col(c).alias(name) for name, c in names.items() if name != "customer_id"]
    exprs = [id_expr, *rest]
    if conv is not None:
        exprs.append(pl.col(col).alias(conv.raw))
    df = collect(src.frame.select(exprs), src.label, src)
    df = _csv_int_ids(schema.check_conversions(df, [conv] if conv else [], src.label), src)
    n = df.height
    no_id = int(df["customer_id"].null_count())
    df = df.filter(pl.col("customer_id").is_not_null())
    before = df.height
    if not bool(df.select(ids_increasing("customer_id")).item()):  # else unique already
        df = df.filter(pl.col("customer_id").is_first_distinct())
    df = schema.type_text_columns(df, exclude=["customer_id"], tz=tz, kinds=text_kinds)
    report = RowReport(
        source=src.label,
        rows_read=n,
        rows_used=df.height,
        left_out={"missing_customer_id": no_id, "duplicate_customer_id": before - df.height},
    )
    return df, report


def _plan_events(
    source: Any,
    columns: Mapping[str, str] | Sequence[str] | None,
    extra_columns: Iterable[str] = (),
    tz: str | None = None,
) -> tuple[Source, dict[str, str], list[schema.Conversion], pl.LazyFrame]:
    mapping = schema.parse_column_map(columns, known=schema.EVENT_COLUMNS, what="events")
    src = scan_source(source, what="events")
    found = _schema(src)
    resolved = schema.resolve_columns(
        found, mapping, label=src.label, required=list(schema.EVENT_COLUMNS), what="events"
    )
    used_cols = set(resolved.values())
    for name in extra_columns:  # the source's own columns event aggregates filter on
        if name not in resolved and name in found.names() and name not in used_cols:
            resolved[name] = name
    kinds = {"customer_id": "id", "event_ts": "date", "event": "text"}
    lf, conversions = _project(src, resolved, found, kinds, tz=tz)
    return src, resolved, conversions, lf


def plan_events(
    source: Any,
    columns: Mapping[str, str] | Sequence[str] | None = None,
    extra_columns: Iterable[str] = (),
) -> tuple[Source, dict[str, str], list[schema.Conversion]]:
    """Scan an event source and map its columns (``{canonical: source column}``, with the
    ``extra_columns`` it has under their own names) and the conversions its types need; read
    no row."""
    src, resolved, conversions, _ = _plan_events(source, columns, extra_columns)
    return src, resolved, conversions


def load_events(
    source: Any,
    *,
    as_of: dt.date,
    columns: Mapping[str, str] | Sequence[str] | None = None,
    extra_columns: Iterable[str] = (),
    tz: str | None = None,
) -> tuple[pl.DataFrame, RowReport]:
    """Read engagement events into ``customer_id``, ``event_date`` (Date), ``event`` (String),
    plus the ``extra_columns`` the source has (the columns event aggregates filter on).

    Events with no customer id, no timestamp or no type, or dated after ``as_of``, are left out
    and counted. ``tz``: the event days are local days in that zone (as the orders').
    """
    src, resolved, conversions, lf = _plan_events(source, columns, extra_columns, tz)
    df = collect(lf, src.label, src)
    df = schema.check_conversions(df, conversions, src.label).rename({"event_ts": "event_date"})
    df = _csv_int_ids(df, src)
    n = df.height
    cid_null = pl.col("customer_id").is_null()
    ts_null = pl.col("event_date").is_null()
    ev_null = pl.col("event").is_null()
    after = pl.col("event_date") > as_of
    stats = df.select(
        cid_null.sum().alias("missing_customer_id"),
        (~cid_null & ts_null).sum().alias("missing_timestamp"),
        (~cid_null & ~ts_null & ev_null).sum().alias("missing_event"),
        (~cid_null & ~ts_null & ~ev_null & after).sum().alias("after_as_of"),
    ).row(0, named=True)
    left_out = {k: int(v) for k, v in stats.items()}
    if sum(left_out.values()):
        df = df.filter(~cid_null & ~ts_null & ~ev_null & ~after)
    report = RowReport(source=src.label, rows_read=n, rows_used=df.height, left_out=left_out)
    return df, report


def check_id_types(
    orders: pl.DataFrame, other: pl.DataFrame, what: str, label: str
) -> pl.DataFrame:
    """Make ``other``'s customer ids the same type as the orders', or explain why they cannot be."""
    want, have = orders.schema["customer_id"], other.schema["customer_id"]
    if want == have:
        return other
    if want == pl.String:
        return other.with_columns(pl.col("customer_id").cast(pl.String))
    option = schema.MAPPING_OPTIONS[what][0]
    msg = (
        f"{what}: customer ids in {label} are text but the orders' are integers; "
        f"use the same ids in both (e.g. map the matching column with {option} "
        "customer_id=COLUMN, or the orders' with --col customer_id=COLUMN)"
    )
    raise SchemaError(msg)
