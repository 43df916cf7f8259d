"""Canonical columns, the user's column mapping, and typing of raw inputs.

Orders have three required columns, ``customer_id``, ``order_ts`` and ``amount`` (or, for line-item
exports, ``quantity`` and ``unit_price`` in place of ``amount``), and optional ones. Users map their
own names with ``--col CANONICAL=THEIRS`` (CLI) or ``columns={"order_ts": "OrderDate"}`` (API).

Typing rules (checked with ``collect_schema()`` before any row is read):

* ``customer_id``: integers (kept as ``Int64``), strings (kept as ``String``, surrounding
  whitespace trimmed, an id left empty missing: the same rule in every source), or floats that
  hold whole numbers (pandas turns integer ids with gaps into floats).
* ``order_ts`` / ``event_ts``: ``Date``; ``Datetime`` naive or time-zone aware; or ISO 8601 text
  (``2026-01-31``, ``2026-01-31T10:15:00``, ``2026-01-31 10:15:00.123+02:00``). Only the calendar
  date is used: for a time-zone-aware column, the date in that column's zone; for text, the date as
  written (an offset is not applied).
* ``amount``, ``quantity``, ``unit_price``, ``discount``: numbers, or text holding numbers.
* ``category``, ``channel``: text (anything else is cast to text).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from fastseg.errors import ParameterError, SchemaError

__all__ = [
    "EVENT_COLUMNS",
    "ORDER_COLUMNS",
    "REQUIRED_ORDER_COLUMNS",
    "Conversion",
    "parse_column_map",
    "resolve_columns",
    "typed_date",
]

ORDER_COLUMNS: dict[str, str] = {
    "customer_id": "customer id (integer or text)",
    "order_ts": "order date or timestamp",
    "amount": "order or line amount; refunds are negative",
    "order_id": "order id; rows sharing one are lines of one order",
    "quantity": "units on the row",
    "unit_price": "price per unit (amount = quantity x unit_price when amount is absent)",
    "category": "product category",
    "channel": "sales channel (web, app, store...)",
    "discount": "discount amount on the row",
}
REQUIRED_ORDER_COLUMNS = ("customer_id", "order_ts", "amount")
EVENT_COLUMNS: dict[str, str] = {
    "customer_id": "customer id",
    "event_ts": "event date or timestamp",
    "event": "event type (email_open, site_visit...)",
}
CUSTOMER_COLUMNS: dict[str, str] = {
    "customer_id": "customer id",
    "email": "email address (an identifier of fastseg export)",
    "phone": "phone number (an identifier of fastseg export)",
    "first_name": "first name",
    "last_name": "last name",
}

#: Engagement event types the synthetic data and the built-in segments use (any others are
#: accepted: each event type in the data gets its own features).
EVENT_TYPES: tuple[str, ...] = (
    "email_open",
    "email_click",
    "site_visit",
    "product_view",
    "add_to_cart",
    "checkout_started",
)

#: The 10-group R x F grid used across the industry (k = 5): group -> ((R lo, R hi), (F lo, F hi)).
RFM_GROUP_GRID: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "champions": ((5, 5), (4, 5)),
    "loyal_customers": ((3, 4), (4, 5)),
    "potential_loyalists": ((4, 5), (2, 3)),
    "new_customers": ((5, 5), (1, 1)),
    "promising": ((4, 4), (1, 1)),
    "need_attention": ((3, 3), (3, 3)),
    "about_to_sleep": ((3, 3), (1, 2)),
    "cant_lose_them": ((1, 2), (5, 5)),
    "at_risk": ((1, 2), (3, 4)),
    "hibernating": ((1, 2), (1, 2)),
}
#: Every ``rfm_group`` value; customers without an order are ``prospects`` (last).
RFM_GROUPS: tuple[str, ...] = (*RFM_GROUP_GRID, "prospects")

_ISO_DATE = (
    r"^\s*\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*(Z|[+-]\d{2}(:?\d{2})?)?\s*$"
)


def parse_column_map(
    items: Sequence[str] | Mapping[str, str] | None, *, known: Mapping[str, str] = ORDER_COLUMNS
) -> dict[str, str]:
    """Parse ``["order_ts=OrderDate", ...]`` (or a dict) into ``{canonical: theirs}``.

    Raises
    ------
    ParameterError
        An item is not ``CANONICAL=THEIRS``, names an unknown canonical column, or maps one twice.
    """
    if items is None:
        return {}
    pairs: list[tuple[str, str]] = []
    if isinstance(items, Mapping):
        pairs = [(str(k), str(v)) for k, v in items.items()]
    else:
        for item in items:
            canon, sep, theirs = str(item).partition("=")
            if not sep or not canon.strip() or not theirs.strip():
                msg = f"--col: expected CANONICAL=THEIRS (e.g. order_ts=OrderDate), got {item!r}"
                raise ParameterError(msg)
            pairs.append((canon.strip(), theirs.strip()))
    out: dict[str, str] = {}
    for canon, theirs in pairs:
        if canon not in known:
            close = difflib.get_close_matches(canon, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msg = f"--col: unknown canonical column {canon!r}{hint}; allowed: {', '.join(known)}"
            raise ParameterError(msg)
        if canon in out and out[canon] != theirs:
            msg = f"--col: {canon!r} is mapped twice ({out[canon]!r} and {theirs!r})"
            raise ParameterError(msg)
        out[canon] = theirs
    return out


def resolve_columns(
    found: Iterable[str] | Mapping[str, pl.DataType],
    mapping: Mapping[str, str],
    *,
    label: str,
    required: Sequence[str],
    optional: Iterable[str] = (),
    alternatives: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, str]:
    """Match canonical columns to the source's columns.

    Returns ``{canonical: source column}`` for every required column and every optional one that is
    present (mapped explicitly or under its canonical name). ``found`` is the source's column
    names, or its schema (then suggestions for missing columns also match the type). ``alternatives`` lets a required column
    be replaced by others (``amount`` by ``quantity`` and ``unit_price``).

    Raises
    ------
    SchemaError
        A mapped column is not in the source, or required columns are missing: every missing one is
        listed with the columns that were found and the ``--col`` to map them.
    """
    types: Mapping[str, pl.DataType] | None = found if isinstance(found, Mapping) else None
    found = list(found)
    found_set = set(found)
    shown = ", ".join(found[:40]) + (f", ... ({len(found)} in all)" if len(found) > 40 else "")
    bad_maps = [(c, t) for c, t in mapping.items() if t not in found_set]
    if bad_maps:
        parts = []
        for canon, theirs in bad_maps:
            close = difflib.get_close_matches(theirs, found, n=1)
            hint = f", did you mean {close[0]!r}?" if close else ""
            parts.append(f"--col {canon}={theirs}: no column {theirs!r}{hint}")
        msg = f"{label}: {'; '.join(parts)} (found: {shown})"
        raise SchemaError(msg)

    def locate(canon: str) -> str | None:
        if canon in mapping:
            return mapping[canon]
        return canon if canon in found_set else None

    out: dict[str, str] = {}
    missing: list[str] = []
    alternatives = alternatives or {}
    for canon in required:
        col = locate(canon)
        if col is not None:
            out[canon] = col
            continue
        alts = alternatives.get(canon, ())
        alt_cols = {a: locate(a) for a in alts}
        if alts and all(v is not None for v in alt_cols.values()):
            continue  # replaced by its alternatives, which are added below as optional
        missing.append(canon)
    for canon in list(optional) + [a for alts in alternatives.values() for a in alts]:
        col = locate(canon)
        if col is not None and canon not in out:
            out[canon] = col
    if missing:
        names = ", ".join(repr(m) for m in missing)
        how = []
        taken = set(out.values()) | set(mapping.values())
        for m in missing:
            guess = suggest_column(m, found, types, taken)
            if guess is not None:
                taken.add(guess)
            how.append(f"--col {m}={guess or 'YOUR_COLUMN'}")
        extra = ""
        for canon in missing:
            if alternatives.get(canon):
                extra = (
                    f" ('{canon}' may instead be computed from "
                    + " and ".join(repr(a) for a in alternatives[canon])
                    + ")"
                )
        noun = "column" if len(missing) == 1 else "columns"
        msg = f"{label}: missing required {noun} {names}{extra} (found: {shown}); map yours with {' '.join(how)}"
        raise SchemaError(msg)
    return out


#: words in column names that mean a canonical column (matched as whole words of the name:
#: ``OrderDate`` -> order, date; ``cust_no`` -> cust, no)
_MEANINGS: dict[str, tuple[str, ...]] = {
    "customer_id": (
        "customer",
        "cust",
        "client",
        "user",
        "member",
        "buyer",
        "shopper",
        "account",
        "contact",
    ),
    "order_ts": (
        "date",
        "time",
        "ts",
        "timestamp",
        "datetime",
        "created",
        "placed",
        "purchased",
        "ordered",
    ),
    "event_ts": ("date", "time", "ts", "timestamp", "datetime", "created", "occurred", "at"),
    "amount": (
        "amount",
        "amt",
        "total",
        "revenue",
        "sales",
        "value",
        "price",
        "net",
        "gross",
        "spend",
        "paid",
        "subtotal",
    ),
    "event": ("event", "type", "action", "activity", "kind"),
}
#: the type kinds a column may have to stand for a canonical column
_KINDS_OK: dict[str, tuple[str, ...]] = {
    "customer_id": ("int", "str", "float"),
    "order_ts": ("date", "datetime", "str"),
    "event_ts": ("date", "datetime", "str"),
    "amount": ("int", "float", "str"),
    "event": ("str",),
}


def _words(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def suggest_column(
    canon: str,
    found: Sequence[str],
    types: Mapping[str, pl.DataType] | None = None,
    taken: Iterable[str] = (),
) -> str | None:
    """The source column that most likely holds ``canon``, judged by meaning and type, or None.

    A column qualifies when a word of its name means ``canon`` (``OrderDate`` for ``order_ts``,
    ``cust`` for ``customer_id``), its type suits (when ``types`` is given), it is not taken by
    another canonical column, and it is not named like another canonical column (``order_id``,
    ``discount``...). Never a guess by spelling alone: no suggestion is better than a wrong one.
    """
    meaning = _MEANINGS.get(canon)
    if not meaning:
        return None
    others = (set(ORDER_COLUMNS) | set(EVENT_COLUMNS)) - {canon}
    taken = set(taken)
    for name in found:
        if name in taken or name in others:
            continue
        words = _words(name)
        if not any(w in meaning for w in words):
            continue
        if canon.endswith("_ts") and "id" in words:
            continue
        if types is not None and name in types and _kind(types[name]) not in _KINDS_OK[canon]:
            continue
        return name
    return None


@dataclass(frozen=True)
class Conversion:
    """A column converted from text (or float ids): check afterwards that no value was lost."""

    canonical: str
    source: str
    raw: str  # name of the raw column kept beside the converted one
    expected: str


def _kind(dtype: pl.DataType) -> str:
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype.is_integer():
        return "int"
    if dtype.is_float() or isinstance(dtype, pl.Decimal):
        return "float"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum | pl.Categorical):
        return "str"
    if dtype == pl.Boolean:
        return "bool"
    if dtype == pl.Null:
        return "null"
    return "other"


def typed_date(
    canon: str, col: str, dtype: pl.DataType, label: str
) -> tuple[pl.Expr, Conversion | None]:
    """Expression giving the calendar date of a date/datetime/ISO-text column, aliased ``canon``."""
    kind = _kind(dtype)
    c = pl.col(col)
    if kind == "date":
        return c.alias(canon), None
    if kind == "datetime":
        return c.dt.date().alias(canon), None
    if kind == "null":
        return pl.lit(None, dtype=pl.Date).alias(canon), None
    if kind == "str":
        text = c.cast(pl.String)
        parsed = (
            pl.when(text.str.contains(_ISO_DATE))
            .then(text.str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False))
            .otherwise(None)
        )
        raw = f"__raw_{canon}"
        return parsed.alias(canon), Conversion(canon, col, raw, "an ISO date or timestamp")
    msg = (
        f"{label}: column {col!r} ({canon}) has type {dtype}; expected a date, a datetime or ISO "
        "date text (e.g. 2026-01-31 or 2026-01-31T10:15:00)"
    )
    raise SchemaError(msg)


def typed_number(
    canon: str, col: str, dtype: pl.DataType, label: str
) -> tuple[pl.Expr, Conversion | None]:
    """Expression giving a Float64 number column, aliased ``canon``."""
    kind = _kind(dtype)
    c = pl.col(col)
    if kind in ("int", "float", "null", "bool"):
        return c.cast(pl.Float64).alias(canon), None
    if kind == "str":
        expr = c.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        return expr.alias(canon), Conversion(canon, col, f"__raw_{canon}", "a number")
    msg = f"{label}: column {col!r} ({canon}) has type {dtype}; expected numbers"
    raise SchemaError(msg)


def typed_id(
    canon: str, col: str, dtype: pl.DataType, label: str
) -> tuple[pl.Expr, Conversion | None]:
    """Expression giving an Int64 or String id column, aliased ``canon``."""
    kind = _kind(dtype)
    c = pl.col(col)
    if kind == "int":
        return c.cast(pl.Int64).alias(canon), None
    if kind == "str":  # surrounding whitespace trimmed; an id left empty is missing
        text = c.cast(pl.String).str.strip_chars()
        return pl.when(text != "").then(text).alias(canon), None
    if kind == "null":
        return pl.lit(None, dtype=pl.Int64).alias(canon), None
    if kind == "float":
        f = c.cast(pl.Float64)
        expr = (
            pl.when(f.is_nan()).then(None).when(f == f.floor()).then(f.cast(pl.Int64, strict=False))
        )
        return expr.alias(canon), Conversion(canon, col, f"__raw_{canon}", "a whole-number id")
    msg = f"{label}: column {col!r} ({canon}) has type {dtype}; expected integer or text ids"
    raise SchemaError(msg)


def typed_text(canon: str, col: str, dtype: pl.DataType, label: str) -> tuple[pl.Expr, None]:
    """Expression giving a String column, aliased ``canon``."""
    if isinstance(dtype, pl.List | pl.Struct | pl.Array):
        msg = f"{label}: column {col!r} ({canon}) has type {dtype}; expected text"
        raise SchemaError(msg)
    return pl.col(col).cast(pl.String).alias(canon), None


def check_conversions(
    df: pl.DataFrame, conversions: Sequence[Conversion], label: str
) -> pl.DataFrame:
    """Raise a :class:`SchemaError` naming the first value that could not be converted.

    Drops the raw columns kept for the check and returns the frame.
    """
    for conv in conversions:
        lost = df[conv.raw].is_not_null() & df[conv.canonical].is_null()
        if not lost.any():  # the common case: one cheap pass, no text touched
            continue
        values = df[conv.raw].filter(lost)
        if conv.raw.startswith("__raw_") and values.dtype == pl.String:
            values = values.filter(values.str.strip_chars() != "")  # blank text reads as null
        n_lost = values.len()
        if n_lost:
            first = values[0]
            more = f" and {n_lost - 1:,} more" if n_lost > 1 else ""
            named = f"{conv.source!r}" + (
                f" ({conv.canonical})" if conv.source != conv.canonical else ""
            )
            msg = f"{label}: column {named} has value {first!r}{more} that cannot be read as {conv.expected}"
            raise SchemaError(msg)
    return df.drop([c.raw for c in conversions])
