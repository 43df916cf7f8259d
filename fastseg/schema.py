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

Profiles (``--customers``) keep every column; their text columns are typed by content
(:func:`type_text_columns`): ISO dates become ``Date``, ISO timestamps ``Datetime``, flag columns
``Boolean``, and only when every value reads, so that no value is ever turned into a null.
Events have ``customer_id``, ``event_ts`` and ``event``. Each input has its own mapping option:
``--col`` (orders), ``--customers-col`` (profiles), ``--events-col`` (events).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from fastseg.errors import ParameterError, SchemaError

__all__ = [
    "CUSTOMER_COLUMNS",
    "EVENT_COLUMNS",
    "FLAG_TOKENS",
    "MAPPING_OPTIONS",
    "ORDER_COLUMNS",
    "PROFILE_KINDS",
    "REQUIRED_ORDER_COLUMNS",
    "Conversion",
    "parse_column_map",
    "resolve_columns",
    "text_column_types",
    "type_text_columns",
    "check_time_zone",
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
    "sku": "product id or SKU of the line (rule filters: orders(sku: 'A-1'))",
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
    "signup_ts": "signup date or timestamp (recent_signups)",
    "birth_date": "date of birth (the age_* segments)",
    "gender": "gender",
    "country": "country code (us_customers, eu_customers)",
    "region": "region",
    "city": "city",
    "email_opt_in": "agreed to email marketing (a flag)",
    "sms_opt_in": "agreed to SMS marketing (a flag)",
    "tags": "profile tags (a list of text, e.g. vip, wholesale)",
    "email": "email address (an identifier of fastseg export)",
    "phone": "phone number (an identifier of fastseg export)",
    "first_name": "first name",
    "last_name": "last name",
}
#: how the known profile columns are typed from text (:func:`text_column_types`): ``flag``
#: columns accept every token of :data:`FLAG_TOKENS` and become nothing else; ``date`` and
#: ``datetime`` columns become Date or Datetime by their values (an empty one: this type) and
#: never flags; ``text`` columns are never converted (a country ``NO`` is Norway).
PROFILE_KINDS: dict[str, str] = {
    "signup_ts": "datetime",
    "birth_date": "date",
    "gender": "text",
    "country": "text",
    "region": "text",
    "city": "text",
    "email_opt_in": "flag",
    "sms_opt_in": "flag",
    "tags": "text",
}
#: the flag pairs (true, false) text columns are read as, compared trimmed and case-insensitively
FLAG_TOKENS: tuple[tuple[str, str], ...] = (
    ("y", "n"),
    ("yes", "no"),
    ("true", "false"),
    ("t", "f"),
    ("1", "0"),
)

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


#: the columns ``fastseg run --predict`` adds (fastseg.predicting) and their types: a rule over one
#: of them is skipped, with that hint, when predictions were not asked for
PREDICTED_TYPES: dict[str, pl.DataType] = {
    "btyd_frequency": pl.Int64(),
    "btyd_recency": pl.Int64(),
    "btyd_T": pl.Int64(),
    "btyd_monetary": pl.Float64(),
    "p_alive": pl.Float64(),
    "expected_orders_30d": pl.Float64(),
    "expected_orders_90d": pl.Float64(),
    "expected_orders_365d": pl.Float64(),
    "expected_order_value": pl.Float64(),
    "clv": pl.Float64(),
    "clv_score": pl.UInt8(),
    "churn_risk": pl.Enum(["high", "medium", "low"]),
}
PREDICTED_FIELDS = tuple(PREDICTED_TYPES)


#: the option that maps each input's columns, and an example of its use
MAPPING_OPTIONS: dict[str, tuple[str, str]] = {
    "orders": ("--col", "order_ts=OrderDate"),
    "customers": ("--customers-col", "customer_id=CustID"),
    "events": ("--events-col", "event_ts=EventDate"),
}


def parse_column_map(
    items: Sequence[str] | Mapping[str, str] | None,
    *,
    known: Mapping[str, str] = ORDER_COLUMNS,
    what: str = "orders",
) -> dict[str, str]:
    """Parse ``["order_ts=OrderDate", ...]`` (or a dict) into ``{canonical: theirs}``.

    ``what`` (``"orders"``, ``"customers"`` or ``"events"``) names the input, and so the option
    the errors name (:data:`MAPPING_OPTIONS`).

    Raises
    ------
    ParameterError
        An item is not ``CANONICAL=THEIRS``, names an unknown canonical column, maps one twice,
        or maps two to the same column.

    Examples
    --------
    >>> parse_column_map(["customer_id=CustID"], known=CUSTOMER_COLUMNS, what="customers")
    {'customer_id': 'CustID'}
    """
    if items is None:
        return {}
    option, example = MAPPING_OPTIONS[what]
    pairs: list[tuple[str, str]] = []
    if isinstance(items, Mapping):
        pairs = [(str(k), str(v)) for k, v in items.items()]
    else:
        for item in items:
            canon, sep, theirs = str(item).partition("=")
            if not sep or not canon.strip() or not theirs.strip():
                msg = f"{option}: expected CANONICAL=THEIRS (e.g. {example}), got {item!r}"
                raise ParameterError(msg)
            pairs.append((canon.strip(), theirs.strip()))
    out: dict[str, str] = {}
    for canon, theirs in pairs:
        if canon not in known:
            close = difflib.get_close_matches(canon, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msg = (
                f"{option}: unknown canonical column {canon!r}{hint}; "
                f"allowed for {what}: {', '.join(known)}"
            )
            raise ParameterError(msg)
        if canon in out and out[canon] != theirs:
            msg = f"{option}: {canon!r} is mapped twice ({out[canon]!r} and {theirs!r})"
            raise ParameterError(msg)
        other = next((c for c, t in out.items() if t == theirs and c != canon), None)
        if other is not None:
            msg = (
                f"{option}: {other!r} and {canon!r} both map to {theirs!r}; map each canonical "
                "column to a column of its own"
            )
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
    what: str = "orders",
) -> dict[str, str]:
    """Match canonical columns to the source's columns.

    Returns ``{canonical: source column}`` for every required column and every optional one that is
    present (mapped explicitly or under its canonical name). ``found`` is the source's column
    names, or its schema (then suggestions for missing columns also match the type).
    ``alternatives`` lets a required column be replaced by others (``amount`` by ``quantity`` and
    ``unit_price``). ``what`` names the input, and so the option the errors propose
    (:data:`MAPPING_OPTIONS`: ``--col`` for orders, ``--customers-col``, ``--events-col``).

    Raises
    ------
    SchemaError
        A mapped column is not in the source, or required columns are missing: every missing one is
        listed with the columns that were found and the option to map them.
    """
    option = MAPPING_OPTIONS[what][0]
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
            parts.append(f"{option} {canon}={theirs}: no column {theirs!r}{hint}")
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
            how.append(f"{option} {m}={guess or 'YOUR_COLUMN'}")
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
#: words of a column name that make it an id (preferred for ``customer_id``) ...
_ID_WORDS = ("id", "no", "nr", "num", "number", "key", "code", "ref")
#: ... and words that make it something else about the customer
_NOT_AN_ID = (
    "name",
    "first",
    "last",
    "email",
    "mail",
    "phone",
    "address",
    "city",
    "country",
    "since",
    "date",
    "type",
    "segment",
    "status",
)
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
    others = (set(ORDER_COLUMNS) | set(EVENT_COLUMNS) | set(CUSTOMER_COLUMNS)) - {canon}
    taken = set(taken)
    fits: list[str] = []
    for name in found:
        if name in taken or name in others:
            continue
        words = _words(name)
        if not any(w in meaning for w in words):
            continue
        if canon.endswith("_ts") and "id" in words:
            continue
        if canon == "customer_id" and any(w in _NOT_AN_ID for w in words):
            continue  # CustomerName, contact_email: about the customer, not its id
        if types is not None and name in types and _kind(types[name]) not in _KINDS_OK[canon]:
            continue
        fits.append(name)
    if canon == "customer_id":  # CustID before CustomerSince
        fits.sort(key=lambda n: not any(w in _ID_WORDS for w in _words(n)))
    return fits[0] if fits else None


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
    canon: str, col: str, dtype: pl.DataType, label: str, tz: str | None = None
) -> tuple[pl.Expr, Conversion | None]:
    """Expression giving the calendar date of a date/datetime/ISO-text column, aliased ``canon``.

    Without ``tz`` a zone-aware datetime gives its date in its own zone (UTC for most files)
    and ISO text its date as written. With ``tz`` (an IANA zone, see :func:`check_time_zone`)
    zone-aware values (a datetime with a zone, text with an offset or ``Z``) are converted to
    ``tz`` first; naive values are taken as local already and dates are unchanged.
    """
    kind = _kind(dtype)
    c = pl.col(col)
    if kind == "date":
        return c.alias(canon), None
    if kind == "datetime":
        if tz is not None and getattr(dtype, "time_zone", None) is not None:
            c = c.dt.convert_time_zone(tz)
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
        if tz is not None:
            parsed = (
                pl.when(text.str.contains(_ISO_OFFSET))
                .then(pl.coalesce(local_date_of_text(text, tz), parsed))
                .otherwise(parsed)
            )
        raw = f"__raw_{canon}"
        return parsed.alias(canon), Conversion(canon, col, raw, "an ISO date or timestamp")
    msg = (
        f"{label}: column {col!r} ({canon}) has type {dtype}; expected a date, a datetime or ISO "
        "date text (e.g. 2026-01-31 or 2026-01-31T10:15:00)"
    )
    raise SchemaError(msg)


#: ISO timestamp text that ends in a UTC offset or ``Z``
_ISO_OFFSET = r"^\s*\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}(:?\d{2})?)\s*$"


def local_date_of_text(text: pl.Expr, tz: str) -> pl.Expr:
    """The date in zone ``tz`` of ISO timestamp text with an offset (null for other text)."""
    return _utc_of_text(text).dt.convert_time_zone(tz).dt.date()


def _utc_of_text(text: pl.Expr) -> pl.Expr:
    """ISO timestamp text with an offset as a UTC Datetime(us) (null for other text)."""
    norm = (
        text.str.strip_chars()
        .str.replace(r"\s*Z$", "+00:00")
        .str.replace(r"\s+([+-]\d)", "$1")
        .str.replace(" ", "T", literal=True)
        .str.replace(r"([+-]\d{2})$", "${1}:00")
        .str.replace(r"T(\d{2}:\d{2})([+-])", "T${1}:00${2}")
    )
    fmt = "%Y-%m-%dT%H:%M:%S%.f%z"
    return norm.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False)


def check_time_zone(tz: str | None, option: str = "tz") -> str | None:
    """``tz`` when it names an IANA time zone (None stays None), else a ParameterError naming
    ``option``, the value and the closest zone names."""
    if tz is None:
        return None
    import zoneinfo

    name = tz.strip() if isinstance(tz, str) else tz
    if isinstance(name, str) and name:
        try:
            zoneinfo.ZoneInfo(name)
            pl.Series([0], dtype=pl.Datetime("us", "UTC")).dt.convert_time_zone(name)
            return name
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, pl.exceptions.PolarsError):
            pass
    zones = sorted(zoneinfo.available_timezones())
    close = difflib.get_close_matches(str(name), zones, n=1, cutoff=0.6)
    if not close:  # case or spelling of the city alone
        by_lower = {z.lower(): z for z in zones}
        close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.6)
        close = [by_lower[c] for c in close]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    msg = (
        f"{option}: unknown time zone {tz!r}; use an IANA name such as Europe/Berlin or "
        f"America/New_York{hint}"
    )
    raise ParameterError(msg)


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


# --------------------------------------------------------------------------- profile text columns

#: ``YYYY-MM-DD``, then optionally ``T`` or a space and ``HH:MM``, ``:SS``, a fraction of a
#: second (up to 9 digits) and ``Z`` or an offset (``+02:00``, ``+0200``, ``+02``); ``T`` and
#: ``Z`` in either case. Checked on trimmed text.
_ISO_PARTS = (
    r"(?i)^(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ](?P<hh>[01][0-9]|2[0-3]):(?P<mm>[0-5][0-9])"
    r"(?::(?P<ss>[0-5][0-9])(?P<frac>\.[0-9]{1,9})?)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?)?$"
)
_DATE_ONLY = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def _values(name: str) -> pl.Expr:
    """Text column ``name`` trimmed, an empty value null."""
    text = pl.col(name).str.strip_chars()
    return pl.when(text != "").then(text)


def _as_date(values: pl.Expr) -> pl.Expr:
    """ISO dates (``2026-01-31``) as Date; anything else, or no such day, null."""
    return pl.when(values.str.contains(_DATE_ONLY)).then(
        values.str.to_date("%Y-%m-%d", strict=False)
    )


def _as_datetime(values: pl.Expr, tz: str | None = None) -> pl.Expr:
    """ISO dates and timestamps as naive Datetime(us), the time as written (an offset or ``Z`` is
    dropped, not applied; a date alone is midnight); anything else null. With ``tz``, text with
    an offset is converted to that zone's local time (still naive)."""
    parts = values.str.extract_groups(_ISO_PARTS)
    field = parts.struct.field
    text = pl.concat_str(
        field("date"),
        pl.lit(" "),
        field("hh").fill_null("00"),
        pl.lit(":"),
        field("mm").fill_null("00"),
        pl.lit(":"),
        field("ss").fill_null("00"),
        field("frac").fill_null(""),
    )
    naive = text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us", strict=False)
    if tz is None:
        return naive
    local = _utc_of_text(values).dt.convert_time_zone(tz).dt.replace_time_zone(None)
    return (
        pl.when(values.str.contains(_ISO_OFFSET)).then(pl.coalesce(local, naive)).otherwise(naive)
    )


def _as_flag(values: pl.Expr, true_tokens: Iterable[str]) -> pl.Expr:
    return values.str.to_lowercase().is_in(list(true_tokens))


def text_column_types(
    df: pl.DataFrame, *, exclude: Iterable[str] = ()
) -> dict[str, tuple[str, str]]:
    """How each text column of a profile frame reads: ``{column: (kind, detail)}``.

    ``kind`` is ``"flag"`` (``detail``: the true tokens, ``|``-joined), ``"date"`` or
    ``"datetime"``; columns that stay text are absent. Decided from a handful of scalar
    aggregates per column, in one query:

    * values are trimmed, and an empty value counts as null; a column converts only when every
      other value reads (else it stays text: no value is ever turned into a null);
    * flags (case-insensitive): the pairs of :data:`FLAG_TOKENS`. A known flag column
      (:data:`PROFILE_KINDS`: ``email_opt_in``, ``sms_opt_in``) accepts any of their tokens; any
      other column only the tokens of one pair, and never ``1``/``0`` (integer text stays as is);
    * ISO dates (``2026-01-31``) give Date; ISO timestamps (``2026-01-31T10:15:00``, a space for
      the ``T``, seconds, fraction, ``Z`` or an offset optional), alone or mixed with dates, give
      naive Datetime(us), the time as written (an offset is dropped, not applied, as for
      ``order_ts``);
    * known columns (:data:`PROFILE_KINDS`) convert only to their kind: flag columns to Boolean,
      ``birth_date`` and ``signup_ts`` to Date or Datetime (and, when every value is empty, to
      Date and Datetime), text columns (``gender``, ``country``...) never; nor does ``exclude``.

    Examples
    --------
    >>> df = pl.DataFrame({"OptIn": ["Y", " n", ""], "Joined": ["2026-01-31", None, "2026-02-01"]})
    >>> text_column_types(df)
    {'OptIn': ('flag', 'y'), 'Joined': ('date', '')}
    """
    return decide_text_types(text_column_counts(df, exclude=exclude))


def text_column_counts(
    df: pl.DataFrame, *, exclude: Iterable[str] = ()
) -> dict[str, dict[str, int]]:
    """The value counts :func:`text_column_types` decides from: ``{column: {name: count}}``.

    Counts of two parts of a profile frame add up (``n``, ``date``, ``datetime``, ``flag`` and
    ``pair0``...), so the decision over all parts (:func:`decide_text_types` of the sums) is the
    one over the whole frame: a Spark job types every partition the same way this way.
    """
    skip = set(exclude)
    cols = [
        c
        for c, t in df.schema.items()
        if t == pl.String and c not in skip and PROFILE_KINDS.get(c) != "text"
    ]
    if not cols:
        return {}
    every = [tok for pair in FLAG_TOKENS for tok in pair]
    aggs: list[pl.Expr] = []
    for i, c in enumerate(cols):
        v = _values(c)
        low = v.str.to_lowercase()
        aggs += [
            v.count().alias(f"{i}:n"),
            _as_date(v).count().alias(f"{i}:date"),
            _as_datetime(v).count().alias(f"{i}:datetime"),
            low.is_in(every).sum().alias(f"{i}:flag"),
        ]
        aggs += [low.is_in(list(p)).sum().alias(f"{i}:pair{j}") for j, p in enumerate(FLAG_TOKENS)]
    stats = df.select(aggs).row(0, named=True)
    names = ["n", "date", "datetime", "flag", *(f"pair{j}" for j in range(len(FLAG_TOKENS)))]
    return {c: {k: int(stats[f"{i}:{k}"] or 0) for k in names} for i, c in enumerate(cols)}


def decide_text_types(counts: Mapping[str, Mapping[str, int]]) -> dict[str, tuple[str, str]]:
    """:func:`text_column_types`'s decision from :func:`text_column_counts` (or their sums)."""
    out: dict[str, tuple[str, str]] = {}
    for c, st in counts.items():
        n, known = st["n"], PROFILE_KINDS.get(c)
        if known == "flag":
            if st["flag"] == n:
                out[c] = ("flag", "|".join(t for t, _ in FLAG_TOKENS))
        elif n == 0:
            if known in ("date", "datetime"):
                out[c] = (known, "")
        elif st["date"] == n:
            out[c] = ("date", "")
        elif st["datetime"] == n:
            out[c] = ("datetime", "")
        elif known is None:
            for j, (yes, _) in enumerate(FLAG_TOKENS):
                if st[f"pair{j}"] == n and yes != "1":
                    out[c] = ("flag", yes)
                    break
    return out


def type_text_columns(
    df: pl.DataFrame,
    *,
    exclude: Iterable[str] = (),
    tz: str | None = None,
    kinds: Mapping[str, tuple[str, str]] | None = None,
) -> pl.DataFrame:
    """``df`` with its text columns typed as :func:`text_column_types` decides, in one pass.

    ``tz``: zone-aware datetime columns are converted to that zone, and timestamp text with an
    offset to its local time there (naive); without it offsets in text are dropped.

    Examples
    --------
    >>> df = pl.DataFrame({"OptIn": ["Y", " n", ""], "Joined": ["2026-01-31 10:00", None, None]})
    >>> type_text_columns(df).schema
    Schema([('OptIn', Boolean), ('Joined', Datetime(time_unit='us', time_zone=None))])
    >>> type_text_columns(df)["OptIn"].to_list()
    [True, False, None]
    """
    exclude = set(exclude)
    if kinds is None:
        kinds = text_column_types(df, exclude=exclude)
    else:
        kinds = {c: k for c, k in kinds.items() if c in df.columns and c not in exclude}
    empty = {"flag": pl.Boolean, "date": pl.Date, "datetime": pl.Datetime("us")}
    exprs = [  # a known column without a value at all (a Null column): its type
        pl.col(c).cast(empty[PROFILE_KINDS[c]])
        for c, t in df.schema.items()
        if t == pl.Null and PROFILE_KINDS.get(c) in empty and c not in exclude
    ]
    for c, (kind, detail) in kinds.items():
        v = _values(c)
        if kind == "flag":
            expr = pl.when(v.is_not_null()).then(_as_flag(v, detail.split("|")))
        elif kind == "date":
            expr = _as_date(v)
        else:
            expr = _as_datetime(v, tz)
        exprs.append(expr.alias(c))
    if tz is not None:
        exprs += [
            pl.col(c).dt.convert_time_zone(tz)
            for c, t in df.schema.items()
            if isinstance(t, pl.Datetime) and t.time_zone is not None and c not in exclude
        ]
    return df.with_columns(exprs) if exprs else df
