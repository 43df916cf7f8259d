"""Compile a segment catalog: type-check rules against a schema, deduplicate predicates into
atoms, and turn every rule into a small postfix opcode program.

The engine (:mod:`fastseg.segmenting`) evaluates each :class:`Atom` once as a Polars boolean
expression, packs it into a bitset, and runs each segment's program over those bitsets:

===========  =====  ===========================================================
opcode       value  meaning
===========  =====  ===========================================================
OP_ATOM      0      push atom bitset ``arg``
OP_SEGMENT   1      push the result of compiled segment ``arg`` (an earlier one)
OP_AND       2      pop two, push their intersection
OP_OR        3      pop two, push their union
OP_NOT       4      pop one, push its complement
OP_TRUE      5      push every customer
OP_FALSE     6      push no customer
===========  =====  ===========================================================

Null semantics are two-valued and resolved inside each atom, so programs never see a null: a
comparison with a missing value (null, or NaN in a float column) is false, ``IS NULL`` is true
for it, and ``NOT`` simply complements.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import hashlib
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl

from fastseg.errors import ParameterError, RuleError, RuleSyntaxError
from fastseg.rules.ast import (
    Aggregate,
    And,
    Anniversary,
    Arith,
    Between,
    Bool,
    Compare,
    Const,
    Contains,
    DateLit,
    Expr,
    Field,
    In,
    IsNull,
    IsTrue,
    Neg,
    Not,
    Number,
    Operand,
    Or,
    RelDate,
    SegmentRef,
    String,
    Today,
    Value,
    render,
    render_value,
    resolve_date,
    walk,
    walk_terms,
)
from fastseg.rules.parse import _position, parse_rule
from fastseg.schema import EVENT_TYPES, PREDICTED_FIELDS, PREDICTED_TYPES, RFM_GROUPS

if TYPE_CHECKING:
    from fastseg.rules.catalog import Catalog

__all__ = [
    "OP_AND",
    "OP_ATOM",
    "OP_FALSE",
    "OP_NOT",
    "OP_OR",
    "OP_SEGMENT",
    "OP_TRUE",
    "RFM_GROUPS",
    "AggSpec",
    "Atom",
    "CompiledCatalog",
    "CompiledGroup",
    "CompiledSegment",
    "Problem",
    "aggregate_spec",
    "catalog_problems",
    "check_catalog",
    "compile_catalog",
    "required_aggregates",
    "scores_schema",
]

OP_ATOM, OP_SEGMENT, OP_AND, OP_OR, OP_NOT, OP_TRUE, OP_FALSE = 0, 1, 2, 3, 4, 5, 6


def scores_schema(
    *,
    category: bool = True,
    discount: bool = True,
    profile: bool = True,
    events: bool = True,
    predictions: bool = True,
    customer_id: pl.DataType | None = None,
) -> dict[str, pl.DataType]:
    """The documented columns of the scores frame (``fastseg score`` output) and their dtypes.

    Used to check rules without data and to test the built-in catalog. Optional parts follow
    the inputs: ``category``/``discount`` columns of the orders, a customers file
    (``profile``), an events file (``events``), ``run --predict`` (``predictions``).

    Examples
    --------
    >>> scores_schema(profile=False)["recency_days"]
    Int64
    """
    schema: dict[str, pl.DataType] = {
        "customer_id": customer_id if customer_id is not None else pl.Int64(),
        "recency_days": pl.Int64(),
        "frequency": pl.Int64(),
        "monetary": pl.Float64(),
        "aov": pl.Float64(),
        "first_order_date": pl.Date(),
        "last_order_date": pl.Date(),
        "r_score": pl.UInt8(),
        "f_score": pl.UInt8(),
        "m_score": pl.UInt8(),
        "rfm_cell": pl.String(),
        "rfm_score": pl.UInt8(),
        "rfm_group": pl.String(),
        "tenure_days": pl.Int64(),
        "avg_days_between_orders": pl.Float64(),
    }
    for n in (30, 90, 365):
        schema[f"orders_{n}d"] = pl.Int64()
    for n in (30, 90, 365):
        schema[f"revenue_{n}d"] = pl.Float64()
    schema["refund_count"] = pl.Int64()
    schema["refund_amount"] = pl.Float64()
    if category:
        schema["distinct_categories"] = pl.Int64()
        schema["top_category"] = pl.String()
    if discount:
        schema["discount_share"] = pl.Float64()
    if profile:
        schema.update(
            signup_ts=pl.Datetime("us"),
            birth_date=pl.Date(),
            gender=pl.String(),
            country=pl.String(),
            region=pl.String(),
            city=pl.String(),
            email_opt_in=pl.Boolean(),
            sms_opt_in=pl.Boolean(),
            tags=pl.List(pl.String()),
        )
    if events:
        for event in EVENT_TYPES:
            schema[f"{event}_30d"] = pl.Int64()
            schema[f"{event}_90d"] = pl.Int64()
            schema[f"days_since_{event}"] = pl.Int64()
    if predictions:
        schema.update(PREDICTED_TYPES)
    return schema


# ============================================================================ aggregates

_CLEAN_RE = re.compile(r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*")


def _name_part(text: str) -> str:
    """A column-name-safe, collision-free rendering of a value or an event type."""
    if _CLEAN_RE.fullmatch(text):
        return text
    slug = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()[:24]
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{slug}_{digest}" if slug else digest


def _python_value(value: Value) -> object:
    if isinstance(value, Number):
        return _canonical_number(value.value)
    if isinstance(value, String | Bool):
        return value.value
    msg = f"filter values must be numbers, strings or true/false, not {render_value(value)}"
    raise RuleError(msg)


def _canonical_number(x: int | float) -> int | float:
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**53:
        return int(x)
    return x


def _filter_part(column: str, values: tuple[Value, ...]) -> str:
    py = sorted({_python_value(v) for v in values}, key=lambda v: (type(v).__name__, v))
    if len(py) == 1 and isinstance(py[0], str):
        return f"{_name_part(column)}_{_name_part(py[0])}"
    if len(py) == 1 and isinstance(py[0], bool):
        return f"{_name_part(column)}_{str(py[0]).lower()}"
    if len(py) == 1 and isinstance(py[0], int) and py[0] >= 0:
        return f"{_name_part(column)}_{py[0]}"
    text = "|".join(f"{type(v).__name__}:{v!r}" for v in py)
    return f"{_name_part(column)}_{_name_part(text)}"


def _bound_part(bound: DateLit | RelDate | Today) -> str:
    if isinstance(bound, Today):
        return "0d"
    if isinstance(bound, RelDate):
        return f"{-bound.amount}{bound.unit}"
    return bound.value.strftime("%Y%m%d")


def _since_part(
    since: DateLit | RelDate | Today | None, until: DateLit | RelDate | Today | None = None
) -> str:
    if since is None:
        head = "all" if until is None else ""
    elif isinstance(since, DateLit):
        head = f"since_{_bound_part(since)}"
    else:
        head = _bound_part(since)
    if until is None:
        return head
    tail = f"until_{_bound_part(until)}"
    return f"{head}_{tail}" if head else tail


#: the columns of the canonical order rows the aggregates read besides the filter columns:
#: ``_order`` (1 on the row that counts an order: not a refund, first line of its order),
#: ``_order_key`` (one value per order of a customer: the order id's key, or the row's number
#: when rows are orders)
ORDER_ROW_COLUMNS = ("customer_id", "order_date", "amount", "_order", "_order_key", "quantity")


#: columns the row pass makes for the aggregates (never in a source's schema)
_ROW_INTERNAL = frozenset({"_order", "_order_key"})


@dataclass(frozen=True)
class AggSpec:
    """One windowed aggregate over the raw orders or events, computed per customer.

    Evaluate :meth:`expr` inside ``group_by("customer_id").agg(...)`` over the canonical raw
    frame of ``source``; join the result on ``customer_id`` and fill customers absent from
    the group-by with ``fill``. Its output column is ``name``. The row pass computes the same
    numbers without a ``group_by`` (:mod:`fastseg.pipeline`); :meth:`expr` is their definition.

    Attributes
    ----------
    name : str
        Output column, e.g. ``orders_90d`` or ``revenue_1y__channel_app``.
    source : {"orders", "events"}
        Raw frame to aggregate.
    columns : tuple of str
        Source columns the expression reads (besides ``customer_id``).
    aggregate : Aggregate
        The syntax node it comes from (dates still symbolic).
    fill : int or float
        Value of customers without any row in the source.
    """

    name: str
    source: Literal["orders", "events"]
    columns: tuple[str, ...]
    aggregate: Aggregate
    fill: int | float = 0

    @property
    def dtype(self) -> pl.DataType:
        """Float64 for revenue and units, Int64 for counts."""
        return pl.Float64() if self.aggregate.func in ("revenue", "units") else pl.Int64()

    @property
    def line_level(self) -> bool:
        """Whether an order counts by any of its lines (``orders()`` with filters)."""
        return self.aggregate.func == "orders" and bool(self.aggregate.filters)

    def since_date(self, as_of: dt.date) -> dt.date | None:
        """First date inside the window when scoring at ``as_of`` (``None``: all history)."""
        since = self.aggregate.since
        return None if since is None else resolve_date(since, as_of)

    def until_date(self, as_of: dt.date) -> dt.date | None:
        """Last date inside the window (inclusive) when scoring at ``as_of`` (``None``: the
        scoring date, after which no row is read)."""
        until = self.aggregate.until
        return None if until is None else resolve_date(until, as_of)

    def filter_values(self) -> list[tuple[str, list[object]]]:
        """Each filter column with its values as Python objects (deduplicated, sorted)."""
        return [
            (c, sorted({_python_value(v) for v in vals}, key=lambda v: (type(v).__name__, v)))
            for c, vals in self.aggregate.filters
        ]

    def condition(self, as_of: dt.date) -> pl.Expr | None:
        """The row condition (window, event type, filters) as a never-null expression, or
        ``None`` when every row counts. Orders' ``units``/``distinct``/line-level ``orders``
        also need the line not to be a refund (``amount >= 0``)."""
        agg = self.aggregate
        conds: list[pl.Expr] = []
        date_col = "event_date" if self.source == "events" else "order_date"
        since, until = self.since_date(as_of), self.until_date(as_of)
        if since is not None:
            conds.append(pl.col(date_col) >= pl.lit(since, dtype=pl.Date()))
        if until is not None:
            conds.append(pl.col(date_col) <= pl.lit(until, dtype=pl.Date()))
        if agg.func == "events":
            conds.append(pl.col("event") == pl.lit(agg.event, dtype=pl.String()))
        for column, py in self.filter_values():
            if len(py) == 1:
                conds.append(pl.col(column) == pl.lit(py[0]))
            else:
                conds.append(pl.col(column).is_in(py))
        if agg.func in ("units", "distinct") or self.line_level:
            conds.append(pl.col("amount") >= 0)
        cond: pl.Expr | None = None
        for c in conds:
            cond = c if cond is None else cond & c
        return None if cond is None else cond.fill_null(False)

    def expr(self, as_of: dt.date) -> pl.Expr:
        """Aggregation expression for ``group_by("customer_id").agg(...)``; 0 for no row.

        Examples
        --------
        >>> spec = aggregate_spec(parse_rule("orders(since: -30d) > 0").operand)
        >>> spec.name
        'orders_30d'
        """
        agg = self.aggregate
        cond = self.condition(as_of)
        if agg.func == "revenue":
            amount = pl.col("amount").cast(pl.Float64)
            result = (
                amount.sum() if cond is None else pl.when(cond).then(amount).otherwise(0.0).sum()
            )
        elif agg.func == "units":
            assert cond is not None
            qty = pl.col("quantity").cast(pl.Float64).fill_nan(None).fill_null(0.0)
            result = pl.when(cond).then(qty).otherwise(0.0).sum()
        elif agg.func == "distinct":
            assert cond is not None and agg.of is not None
            col = pl.col(agg.of)
            result = col.filter(cond & col.is_not_null()).n_unique()
        elif self.line_level:
            assert cond is not None
            result = pl.col("_order_key").filter(cond).n_unique()
        elif agg.func == "orders":
            order = pl.col("_order").cast(pl.Int64)
            result = order.sum() if cond is None else pl.when(cond).then(order).otherwise(0).sum()
        else:
            assert cond is not None
            result = cond.cast(pl.Int64).sum()
        return result.cast(self.dtype).alias(self.name)


def aggregate_spec(node: Aggregate) -> AggSpec:
    """The :class:`AggSpec` (deterministic column name, source, columns) of an aggregate call.

    Unfiltered windows are named like the precomputed feature columns (``orders_30d``,
    ``revenue_365d``, ``email_open_30d``), so those need no extra pass over the data.
    """
    since = _since_part(node.since, node.until)
    if node.func == "events":
        assert node.event is not None
        base = f"{_name_part(node.event)}_{since}"
        source: Literal["orders", "events"] = "events"
        columns = ["event"]
    else:
        source = "orders"
        if node.func == "distinct":
            assert node.of is not None
            base = f"distinct_{_name_part(node.of)}_{since}"
            columns = ["amount", node.of]
        else:
            base = f"{node.func}_{since}"
            columns = {
                "orders": ["_order_key", "amount"] if node.filters else ["_order"],
                "revenue": ["amount"],
                "units": ["quantity", "amount"],
            }[node.func]
    if node.since is not None or node.until is not None:
        columns.append("event_date" if source == "events" else "order_date")
    parts = [base] + [_filter_part(c, v) for c, v in node.filters]
    columns.extend(c for c, _ in node.filters)
    fill: int | float = 0.0 if node.func in ("revenue", "units") else 0
    return AggSpec("__".join(parts), source, tuple(dict.fromkeys(columns)), node, fill)


# ============================================================================ atoms

_KIND_NAMES = {
    "numeric": "a number",
    "date": "a date",
    "datetime": "a datetime",
    "bool": "a Boolean",
    "string": "a string",
    "list": "a list",
    "other": "an unsupported type",
}


def _normalize_dtype(dtype: object) -> pl.DataType:
    if isinstance(dtype, type) and issubclass(dtype, pl.DataType):
        try:
            return dtype()
        except TypeError:  # List/Array classes need an inner type
            return pl.List(pl.Null())
    if isinstance(dtype, pl.DataType):
        return dtype
    msg = f"schema types must be Polars data types, got {dtype!r}"
    raise ParameterError(msg)


def _kind(dtype: pl.DataType) -> str:
    if dtype.is_numeric():
        return "numeric"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if isinstance(dtype, pl.Date):
        return "date"
    if isinstance(dtype, pl.Boolean):
        return "bool"
    if isinstance(dtype, pl.String | pl.Categorical | pl.Enum):
        return "string"
    if isinstance(dtype, pl.List | pl.Array):
        return "list"
    return "other"


@dataclass(frozen=True)
class _AtomSpec:
    """Resolved predicate: everything :meth:`Atom.expr` needs, as plain hashable data."""

    form: str  # cmp between in not_in contains not_contains is_null not_null is_true
    column: str
    dtype: pl.DataType
    op: str = ""
    values: tuple[object, ...] = ()
    #: a computed operand (arithmetic, anniversary) instead of the column: a term tree of
    #: tuples, see :func:`_term_expr`
    term: tuple | None = None
    #: ``cmp`` with another term on the right (field-to-field comparisons)
    rhs: tuple | None = None


@dataclass(frozen=True)
class Atom:
    """One deduplicated predicate over the scores frame.

    Attributes
    ----------
    key : str
        Canonical text with relative dates resolved, e.g. ``"last_order_date > 2026-01-01"``.
    fields : tuple of str
        Columns of the (aggregate-augmented) scores frame it reads.
    """

    key: str
    fields: tuple[str, ...]
    spec: _AtomSpec = field(repr=False, compare=False)

    def expr(self) -> pl.Expr:
        """Boolean expression over the scores frame, never null (nulls resolved to False,
        or True for ``IS NULL``), aliased to :attr:`key`."""
        expr = _atom_expr(self.spec)
        if not self.fields:  # numbers only (``2 > 1``): one value per customer all the same
            value = bool(pl.select(expr).to_series()[0])
            expr = pl.repeat(pl.lit(value), pl.len())
        return expr.alias(self.key)


def _literal(value: object, spec: _AtomSpec) -> pl.Expr:
    dtype = spec.dtype
    if isinstance(dtype, pl.Datetime) and isinstance(value, dt.date):
        midnight = dt.datetime(value.year, value.month, value.day)
        lit = pl.lit(midnight, dtype=pl.Datetime(dtype.time_unit or "us"))
        if dtype.time_zone:
            lit = lit.dt.replace_time_zone(dtype.time_zone, ambiguous="earliest")
        return lit
    if isinstance(value, dt.date):
        return pl.lit(value, dtype=pl.Date())
    if isinstance(value, str):
        return pl.lit(value, dtype=pl.String())
    if isinstance(value, bool):
        return pl.lit(value, dtype=pl.Boolean())
    return pl.lit(value)


def _column(name: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if dtype.is_float():
        return col.fill_nan(None)
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return col.cast(pl.String)
    return col


def _anniversary_expr(col: pl.Expr, dtype: pl.DataType, as_of: dt.date) -> pl.Expr:
    """The next anniversary (month and day) of a date on or after ``as_of``; 29 February is
    28 February in years that have none."""
    day = col.dt.date() if isinstance(dtype, pl.Datetime) else col
    month, mday = day.dt.month(), day.dt.day()

    def in_year(year: int) -> pl.Expr:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        d = mday if leap else pl.when((month == 2) & (mday == 29)).then(28).otherwise(mday)
        return pl.date(pl.lit(year), month, d)

    this = in_year(as_of.year)
    if as_of.year >= 9999:
        return pl.when(this >= pl.lit(as_of)).then(this)
    return pl.when(this >= pl.lit(as_of)).then(this).otherwise(in_year(as_of.year + 1))


def _term_expr(term: tuple) -> pl.Expr:
    """Polars expression of a term tree: ``("col", name, dtype)``, ``("num", value)``,
    ``("bin", op, left, right)``, ``("neg", operand)``, ``("anniv", name, dtype, as_of)``.
    Arithmetic is in float64; NaN becomes null, nulls propagate, division by zero is null."""
    if term[0] in ("bin", "neg"):
        # NaN (from inf - inf, or a NaN operand) propagates through every operation, so it
        # is made null once, at the top: per node it would double the expression each level
        return _arith(term).fill_nan(None)
    return _leaf(term)


def _leaf(term: tuple) -> pl.Expr:
    tag = term[0]
    if tag == "col":
        return _column(term[1], term[2])
    if tag == "num":
        return pl.lit(float(term[1]), dtype=pl.Float64)
    assert tag == "anniv"
    return _anniversary_expr(pl.col(term[1]), term[2], term[3])


def _arith(term: tuple) -> pl.Expr:
    """Each operand appears once in the expression (no when/then on a sub-expression), so the
    expression grows linearly with the term."""
    tag = term[0]
    if tag == "neg":
        return -_arith(term[1]).cast(pl.Float64)
    if tag != "bin":
        return _leaf(term).cast(pl.Float64)
    op, a, b = term[1], _arith(term[2]), _arith(term[3])
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    # division by zero is null: the zero divisor (+0.0 and -0.0, made one by adding 0.0)
    # becomes null before dividing
    return a / (b + 0.0).replace(0.0, None)


def _base(spec: _AtomSpec) -> pl.Expr:
    if spec.term is not None:
        return _term_expr(spec.term)
    col = pl.col(spec.column)
    dtype = spec.dtype
    if dtype.is_float():
        return col.fill_nan(None)
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return col.cast(pl.String)
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Categorical | pl.Enum):
        return col.cast(pl.List(pl.String))
    return col


_CMP: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _atom_expr(spec: _AtomSpec) -> pl.Expr:
    base = _base(spec)
    form = spec.form
    if form == "is_null":
        return base.is_null()
    if form == "not_null":
        return base.is_not_null()
    if form == "is_true":
        return base.fill_null(False)
    if form == "cmp" and spec.rhs is not None:
        right = _term_expr(spec.rhs)
        cond = _CMP[spec.op](*_comparable(base, spec.dtype, right, spec.rhs))
        missing = base.is_null() | right.is_null()
        return pl.when(missing).then(False).otherwise(cond.fill_null(False))
    if form == "cmp":
        cond = _CMP[spec.op](base, _literal(spec.values[0], spec))
    elif form in ("between", "not_between"):
        low, high = (_literal(v, spec) for v in spec.values)
        cond = (base >= low) & (base <= high)
        if form == "not_between":
            cond = ~cond
    elif form in ("in", "not_in"):
        values = list(spec.values)
        if spec.dtype.is_numeric():
            exact = all(isinstance(v, int) for v in values) and spec.dtype.is_integer()
            base = base.cast(pl.Int64 if exact else pl.Float64)
            values = values if exact else [float(v) for v in values]  # type: ignore[arg-type]
            series = pl.Series(values, dtype=pl.Int64 if exact else pl.Float64)
        elif isinstance(spec.dtype, pl.Datetime):
            midnights = [dt.datetime(v.year, v.month, v.day) for v in values]  # type: ignore[attr-defined]
            series = pl.Series(midnights, dtype=pl.Datetime(spec.dtype.time_unit or "us"))
            if spec.dtype.time_zone:
                series = series.dt.replace_time_zone(spec.dtype.time_zone, ambiguous="earliest")
        elif isinstance(spec.dtype, pl.Date):
            series = pl.Series(values, dtype=pl.Date)
        elif isinstance(spec.dtype, pl.Boolean):
            series = pl.Series(values, dtype=pl.Boolean)
        else:
            series = pl.Series(values, dtype=pl.String)
        cond = base.is_in(series.implode())
        if form == "not_in":
            cond = ~cond
    elif form in ("contains", "not_contains"):
        value = spec.values[0]
        if isinstance(spec.dtype, pl.List | pl.Array):
            inner = spec.dtype.inner
            if isinstance(inner, pl.Categorical | pl.Enum):
                inner = pl.String()
            typed = inner is not None and inner != pl.Null and not isinstance(inner, pl.Datetime)
            lit = pl.lit(value, dtype=inner) if typed else pl.lit(value)
            cond = (base.list if isinstance(spec.dtype, pl.List) else base.arr).contains(lit)
        else:
            cond = base.str.contains(str(value), literal=True)
        if form == "not_contains":
            cond = ~cond
    else:  # pragma: no cover - the compiler only builds the forms above
        msg = f"unknown atom form {form!r}"
        raise AssertionError(msg)
    # a missing value makes every comparison false, also under the negated forms
    return pl.when(base.is_null()).then(False).otherwise(cond.fill_null(False))


def _term_dtype(term: tuple) -> pl.DataType:
    tag = term[0]
    if tag == "col":
        return term[2]
    if tag == "anniv":
        return pl.Date()
    return pl.Float64()


def _comparable(
    left: pl.Expr, left_dtype: pl.DataType, right: pl.Expr, rhs: tuple
) -> tuple[pl.Expr, pl.Expr]:
    """Two terms of one kind made comparable: a date beside a datetime becomes the midnight
    that starts it (in the datetime's zone), as date literals do."""
    right_dtype = _term_dtype(rhs)
    for a, da, b, db, swap in (
        (left, left_dtype, right, right_dtype, False),
        (right, right_dtype, left, left_dtype, True),
    ):
        if isinstance(da, pl.Datetime) and isinstance(db, pl.Date):
            b = b.cast(pl.Datetime(da.time_unit or "us"))
            if da.time_zone:
                b = b.dt.replace_time_zone(da.time_zone, ambiguous="earliest", non_existent="null")
            return (b, a) if swap else (a, b)
    return left, right


def _render_py(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return render_value(String(value))
    if isinstance(value, dt.date):
        return value.isoformat()
    return repr(value)


def _term_text(term: tuple) -> str:
    """Canonical text of a term tree (fully parenthesized), for atom keys."""
    tag = term[0]
    if tag == "col":
        name = term[1]
        return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f"`{name}`"
    if tag == "num":
        return repr(term[1])
    if tag == "anniv":
        return f"anniversary({_term_text(('col', term[1], term[2]))})"
    if tag == "neg":
        return f"-({_term_text(term[1])})"
    return f"({_term_text(term[2])} {term[1]} {_term_text(term[3])})"


def _atom_key(spec: _AtomSpec) -> str:
    if spec.term is not None:
        c = _term_text(spec.term)
    elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec.column):
        c = spec.column
    else:
        c = f"`{spec.column}`"
    if spec.rhs is not None:
        return f"{c} {spec.op} {_term_text(spec.rhs)}"
    v = [_render_py(x) for x in spec.values]
    return {
        "cmp": lambda: f"{c} {spec.op} {v[0] if v else ''}",
        "between": lambda: f"{c} BETWEEN {v[0]} AND {v[1]}",
        "not_between": lambda: f"{c} NOT BETWEEN {v[0]} AND {v[1]}",
        "in": lambda: f"{c} IN ({', '.join(v)})",
        "not_in": lambda: f"{c} NOT IN ({', '.join(v)})",
        "contains": lambda: f"{c} CONTAINS {v[0] if v else ''}",
        "not_contains": lambda: f"{c} NOT CONTAINS {v[0] if v else ''}",
        "is_null": lambda: f"{c} IS NULL",
        "not_null": lambda: f"{c} IS NOT NULL",
        "is_true": lambda: f"{c} = true",
    }[spec.form]()


# ============================================================================ type checking


class _Missing(Exception):
    """A field or source the rule needs is absent from the data (skippable)."""

    def __init__(self, names: list[str], reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.names = names
        self.reason = reason
        self.hint = hint  # added to the "unknown field" message


class _TypeMismatch(RuleError):
    """A rule compares a field with a value of the wrong type (depends on the data's dtypes)."""


def _value_text(value: Value) -> str:
    kind = {
        Number: "the number",
        String: "the string",
        Bool: "the Boolean",
        DateLit: "the date",
        RelDate: "the relative date",
        Today: "",
    }[type(value)]
    return f"{kind} {render_value(value)}".strip()


_EXPECTED_VALUE = {
    "numeric": "a number",
    "date": "a date such as 2026-01-31, -30d or today",
    "datetime": "a date such as 2026-01-31, -30d or today (midnight of that day)",
    "bool": "true or false",
    "string": "a 'string'",
}


class _Checker:
    """Resolves one rule's predicates against a schema into atom specs."""

    def __init__(
        self,
        schema: Mapping[str, pl.DataType],
        as_of: dt.date,
        sources: Mapping[str, Mapping[str, pl.DataType] | None] | None,
        lenient: bool = False,
    ) -> None:
        self.schema = schema
        self.as_of = as_of
        self.sources = sources
        self.lenient = lenient  # unknown fields are ignored (check without data)

    # -- operands
    def operand(self, operand: Operand) -> tuple[str, pl.DataType, AggSpec | None]:
        if isinstance(operand, Field):
            if operand.name not in self.schema:
                raise _Missing([operand.name], f"field '{operand.name}'")
            return operand.name, self.schema[operand.name], None
        spec = aggregate_spec(operand)
        self._check_filters(operand)
        self._check_window(spec)
        if spec.name in self.schema:
            dtype = self.schema[spec.name]
            if not dtype.is_numeric():
                msg = (
                    f"column '{spec.name}' (for {render(IsTrue(operand))}) is {dtype}, not a number"
                )
                raise _TypeMismatch(msg)
            return spec.name, dtype, None
        if self.sources is not None:
            source_schema = self.sources.get(spec.source)
            call = render(IsTrue(operand))
            if source_schema is None:
                raise _Missing([spec.name], f"{spec.source} data (for {call})")
            absent = [c for c in spec.columns if c not in source_schema and c not in _ROW_INTERNAL]
            if absent:
                cols = ", ".join(f"'{c}'" for c in absent)
                raise _Missing(absent, f"{spec.source} column(s) {cols} (for {call})")
            for column, values in operand.filters:
                kind = _kind(_normalize_dtype(source_schema[column]))
                for value in values:
                    self._check_value(
                        kind, value, f"{spec.source} column '{column}'", source_schema[column]
                    )
        return spec.name, spec.dtype, spec

    def _check_window(self, spec: AggSpec) -> None:
        """``until`` before ``since`` is an error (the window would be empty)."""
        if spec.aggregate.since is None or spec.aggregate.until is None:
            return
        try:
            since, until = spec.since_date(self.as_of), spec.until_date(self.as_of)
        except (OverflowError, ValueError):
            msg = f"the window of {render(IsTrue(spec.aggregate))} is out of the date range"
            raise RuleError(msg) from None
        if since is not None and until is not None and since > until:
            msg = (
                f"the window of {render(IsTrue(spec.aggregate))} is reversed: since "
                f"{since.isoformat()} is after until {until.isoformat()}; give the earlier "
                "date as since"
            )
            raise RuleError(msg)

    def _check_filters(self, operand: Aggregate) -> None:
        for column, values in operand.filters:
            kinds = {"number" if isinstance(v, Number) else type(v).__name__ for v in values}
            if len(kinds) > 1:
                msg = (
                    f"filter '{column}' of {operand.func}() mixes value types "
                    f"({', '.join(render_value(v) for v in values)}); use one type"
                )
                raise RuleError(msg)

    # -- values
    def _check_value(self, kind: str, value: Value, what: str, dtype: pl.DataType) -> None:
        ok = {
            "numeric": isinstance(value, Number),
            "date": isinstance(value, DateLit | RelDate | Today),
            "datetime": isinstance(value, DateLit | RelDate | Today),
            "bool": isinstance(value, Bool),
            "string": isinstance(value, String),
        }.get(kind, False)
        if ok:
            return
        if kind not in _EXPECTED_VALUE:
            msg = f"{what} is {dtype}, which rules cannot compare; test it with IS NULL"
            raise _TypeMismatch(msg)
        hint = ""
        if isinstance(value, String) and kind in ("date", "datetime"):
            try:
                dt.date.fromisoformat(value.value)
                hint = f"; remove the quotes: {value.value}"
            except ValueError:
                pass
        if isinstance(value, String) and kind == "numeric":
            try:
                float(value.value)
                hint = f"; remove the quotes: {value.value}"
            except ValueError:
                pass
        msg = (
            f"{what} is {_KIND_NAMES[kind]} ({dtype}); compare it with "
            f"{_EXPECTED_VALUE[kind]}, not {_value_text(value)}{hint}"
        )
        raise _TypeMismatch(msg)

    def _resolve(self, kind: str, value: Value) -> object:
        if isinstance(value, DateLit | RelDate | Today):
            try:
                return resolve_date(value, self.as_of)
            except (OverflowError, ValueError):
                msg = f"{render_value(value)} from {self.as_of} is out of the date range"
                raise RuleError(msg) from None
        if isinstance(value, Number):
            return _canonical_number(value.value)
        return value.value

    # -- terms
    def term(
        self, operand: Operand, *, rhs: bool = False
    ) -> tuple[tuple, str, pl.DataType, list[AggSpec]]:
        """A term's tree (see :func:`_term_expr`), kind, dtype and the aggregates it needs."""
        if isinstance(operand, Number):
            return ("num", _canonical_number(operand.value)), "numeric", pl.Float64(), []
        if isinstance(operand, Field | Aggregate):
            try:
                column, dtype, agg = self.operand(operand)
            except _Missing as exc:
                if rhs and isinstance(operand, Field):
                    exc.hint = f" (to compare with the text, quote it: '{operand.name}')"
                raise
            dtype = _normalize_dtype(dtype)
            return ("col", column, dtype), _kind(dtype), dtype, [agg] if agg else []
        if isinstance(operand, Anniversary):
            column, dtype, _ = self.operand(operand.field)
            dtype = _normalize_dtype(dtype)
            if _kind(dtype) not in ("date", "datetime"):
                msg = (
                    f"anniversary() needs a date field; field '{column}' is "
                    f"{_KIND_NAMES[_kind(dtype)]} ({dtype})"
                )
                raise _TypeMismatch(msg)
            return ("anniv", column, dtype, self.as_of), "date", pl.Date(), []
        parts = [operand.operand] if isinstance(operand, Neg) else [operand.left, operand.right]
        trees, aggs = [], []
        for part in parts:
            tree, kind, dtype, more = self.term(part)
            if kind != "numeric":
                name = (
                    render(IsTrue(part)) if not isinstance(part, Field) else f"field '{part.name}'"
                )
                msg = (
                    f"arithmetic needs numbers: {name} is {_KIND_NAMES[kind]} ({dtype}) in "
                    f"{render(IsTrue(operand))}"
                )
                raise _TypeMismatch(msg)
            trees.append(tree)
            aggs += more
        if isinstance(operand, Neg):
            return ("neg", trees[0]), "numeric", pl.Float64(), aggs
        return ("bin", operand.op, trees[0], trees[1]), "numeric", pl.Float64(), aggs

    # -- predicates
    def predicate(self, node: Expr) -> tuple[_AtomSpec, list[AggSpec]]:
        """The atom spec of a predicate and the aggregates it needs."""
        assert isinstance(node, Compare | Between | In | Contains | IsNull | IsTrue)
        operand = node.operand
        rhs = node.value if isinstance(node, Compare) else None
        rhs_term = isinstance(rhs, Field | Aggregate | Anniversary | Arith | Neg)
        if isinstance(operand, Field | Aggregate) and not rhs_term:
            column, dtype, agg = self.operand(operand)
            return self._predicate(node, column, dtype), [agg] if agg else []
        tree, kind, dtype, aggs = self.term(operand)
        text = _term_text(tree)
        if not rhs_term:
            spec = self._predicate(node, text, dtype)
            return dataclasses.replace(spec, term=tree), aggs
        assert isinstance(node, Compare)
        rtree, rkind, rdtype, raggs = self.term(node.value, rhs=True)  # type: ignore[arg-type]
        self._check_pair(node, kind, dtype, rkind, rdtype)
        spec = _AtomSpec("cmp", text, dtype, node.op, (), term=tree, rhs=rtree)
        return spec, aggs + raggs

    def _check_pair(
        self, node: Compare, kind: str, dtype: pl.DataType, rkind: str, rdtype: pl.DataType
    ) -> None:
        """Both sides of a field-to-field comparison must be of one kind."""
        left, right = render(IsTrue(node.operand)), render(IsTrue(node.value))  # type: ignore[arg-type]
        dates = ("date", "datetime")
        same = kind == rkind or (kind in dates and rkind in dates)
        if kind in ("list", "other") or rkind in ("list", "other"):
            same = False
        if same and kind == "datetime" and rkind == "datetime":
            zones = {getattr(dtype, "time_zone", None), getattr(rdtype, "time_zone", None)}
            if len(zones) > 1:
                msg = (
                    f"{left} ({dtype}) and {right} ({rdtype}) are in different time zones; "
                    "compare columns of one zone"
                )
                raise _TypeMismatch(msg)
        if not same:
            msg = (
                f"cannot compare {left} ({_KIND_NAMES[kind]}, {dtype}) with {right} "
                f"({_KIND_NAMES[rkind]}, {rdtype}); both sides must be numbers, dates or strings"
            )
            raise _TypeMismatch(msg)
        if kind == "bool" and node.op not in ("=", "!="):
            msg = f"{left} is a Boolean; compare it with = or !=, not {node.op}"
            raise _TypeMismatch(msg)

    def _predicate(
        self,
        node: Compare | Between | In | Contains | IsNull | IsTrue,
        column: str,
        dtype: pl.DataType,
    ) -> _AtomSpec:
        dtype = _normalize_dtype(dtype)
        kind = _kind(dtype)
        what = (
            f"field '{column}'"
            if isinstance(node.operand, Field)
            else f"{render(IsTrue(node.operand))}"
        )
        if isinstance(node, IsNull):
            return _AtomSpec("not_null" if node.negated else "is_null", column, dtype)
        if isinstance(node, IsTrue):
            if kind != "bool":
                example = {"numeric": f"{column} > 0", "string": f"{column} = 'x'"}.get(
                    kind, f"{column} IS NOT NULL"
                )
                msg = (
                    f"{what} is {_KIND_NAMES[kind]} ({dtype}), not a Boolean: a bare name is "
                    f"only a condition for Boolean fields; write e.g. {example}"
                )
                raise _TypeMismatch(msg)
            return _AtomSpec("is_true", column, dtype)
        if isinstance(node, Contains):
            if kind == "list":
                inner = getattr(dtype, "inner", None)
                inner_kind = _kind(inner) if inner is not None and inner != pl.Null else None
                if inner_kind is not None:
                    self._check_value(inner_kind, node.value, f"elements of {what}", inner)
                elif not isinstance(node.value, Number | String | Bool):
                    self._check_value("string", node.value, f"elements of {what}", dtype)
                value = self._resolve(inner_kind or "string", node.value)
            elif kind == "string":
                self._check_value("string", node.value, what, dtype)
                value = self._resolve(kind, node.value)
            else:
                msg = (
                    f"CONTAINS needs a list or string field; {what} is {_KIND_NAMES[kind]} "
                    f"({dtype}): use =, IN or BETWEEN"
                )
                raise _TypeMismatch(msg)
            form = "not_contains" if node.negated else "contains"
            return _AtomSpec(form, column, dtype, values=(value,))
        if kind == "list":
            word = (
                "NOT CONTAINS"
                if getattr(node, "negated", False)
                or (isinstance(node, Compare) and node.op == "!=")
                else "CONTAINS"
            )
            msg = f"{what} is a list ({dtype}); test its elements with {word} 'x'"
            raise _TypeMismatch(msg)
        if isinstance(node, Compare):
            self._check_value(kind, node.value, what, dtype)
            if kind == "bool" and node.op not in ("=", "!="):
                msg = f"{what} is a Boolean; use = true, = false or the bare name, not {node.op}"
                raise _TypeMismatch(msg)
            value = self._resolve(kind, node.value)
            self._check_group(column, [node.value])
            if kind == "bool" and node.op == "!=":  # non-null x != true  <=>  x = false
                return _AtomSpec("cmp", column, dtype, "=", (not value,))
            return _AtomSpec("cmp", column, dtype, node.op, (value,))
        if isinstance(node, Between):
            if kind == "bool":
                msg = f"{what} is a Boolean; BETWEEN needs numbers, dates or strings"
                raise _TypeMismatch(msg)
            self._check_value(kind, node.low, what, dtype)
            self._check_value(kind, node.high, what, dtype)
            low, high = self._resolve(kind, node.low), self._resolve(kind, node.high)
            if low > high:  # type: ignore[operator]
                msg = (
                    f"BETWEEN bounds of {what} are reversed: {_render_py(low)} is after "
                    f"{_render_py(high)}; write the smaller bound first"
                )
                raise RuleError(msg)
            form = "not_between" if node.negated else "between"
            return _AtomSpec(form, column, dtype, values=(low, high))
        assert isinstance(node, In)
        for value in node.values:
            self._check_value(kind, value, what, dtype)
        self._check_group(column, list(node.values))
        resolved = sorted({self._resolve(kind, v) for v in node.values})  # type: ignore[type-var]
        if len(resolved) == 1:
            return _AtomSpec("cmp", column, dtype, "!=" if node.negated else "=", (resolved[0],))
        return _AtomSpec("not_in" if node.negated else "in", column, dtype, values=tuple(resolved))

    def _check_group(self, column: str, values: list[Value]) -> None:
        if column != "rfm_group":
            return
        for value in values:
            if isinstance(value, String) and value.value not in RFM_GROUPS:
                close = difflib.get_close_matches(value.value, RFM_GROUPS, n=1, cutoff=0.5)
                hint = (
                    f"did you mean '{close[0]}'?" if close else f"one of: {', '.join(RFM_GROUPS)}"
                )
                msg = f"unknown RFM group '{value.value}'; {hint}"
                raise RuleError(msg)


# ============================================================================ compiled catalog


@dataclass(frozen=True)
class CompiledSegment:
    """A segment ready for evaluation; ``program`` is int32 ``(L, 2)`` postfix (opcode, arg)."""

    name: str
    description: str
    rule: str
    program: np.ndarray = field(compare=False)
    depends_on: tuple[str, ...]


@dataclass(frozen=True)
class CompiledGroup:
    """An exclusive grouping: the first matching segment of ``segments`` (indices into
    :attr:`CompiledCatalog.segments`) wins; customers matching none get ``fallback``."""

    name: str
    segments: tuple[int, ...]
    fallback: str


@dataclass(frozen=True)
class CompiledCatalog:
    """Atoms, programs (in dependency order), groups and the aggregates they need."""

    as_of: dt.date
    atoms: tuple[Atom, ...]
    segments: tuple[CompiledSegment, ...]
    groups: tuple[CompiledGroup, ...]
    skipped: tuple[tuple[str, str], ...]
    aggregates: tuple[AggSpec, ...]

    def segment_index(self, name: str) -> int:
        """Position of the compiled segment ``name`` in :attr:`segments`."""
        for i, seg in enumerate(self.segments):
            if seg.name == name:
                return i
        msg = f"no compiled segment '{name}'"
        raise KeyError(msg)


def _suggest(name: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    lower = [k for k in known if k.lower() == name.lower() and k not in close]
    close = lower + close
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close[:3]) + "?"
    shown = ", ".join(sorted(known)[:60])
    more = " ..." if len(known) > 60 else ""
    return f"known fields: {shown}{more}"


def _parse_all(catalog: Catalog, errors: list[str] | None = None) -> dict[str, Expr]:
    trees: dict[str, Expr] = {}
    for seg in catalog.segments:
        try:
            trees[seg.name] = parse_rule(seg.rule)
        except RuleSyntaxError as exc:
            wrapped = RuleSyntaxError(
                f"segment '{seg.name}': {exc}", line=exc.line, column=exc.column, rule=exc.rule
            )
            if errors is None:
                raise wrapped from None
            errors.append(str(wrapped))
    return trees


def _references(tree: Expr) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.name for n in walk(tree) if isinstance(n, SegmentRef)))


def _order(
    catalog: Catalog, trees: Mapping[str, Expr], errors: list[str] | None = None
) -> list[str]:
    """Segment names in dependency order (catalog order where free); checks references."""
    names = [s.name for s in catalog.segments]
    known = set(names)
    groups = {g.name for g in catalog.groups}
    deps: dict[str, tuple[str, ...]] = {}
    for name in names:
        if name not in trees:
            continue
        refs = _references(trees[name])
        for ref in refs:
            if ref not in known:
                kind = " (a group, not a segment)" if ref in groups else ""
                close = difflib.get_close_matches(ref, names, n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                msg = f"segment '{name}' refers to unknown segment '{ref}'{kind}{hint}"
                if errors is None:
                    raise RuleError(msg)
                errors.append(msg)
        deps[name] = tuple(r for r in refs if r in known and r in trees)
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for root in names:
        if root not in deps or state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            if i < len(deps[node]):
                stack[-1] = (node, i + 1)
                nxt = deps[node][i]
                if state.get(nxt) == 1:
                    cycle = path[path.index(nxt) :] + [nxt]
                    msg = f"segment cycle: {' -> '.join(cycle)}; break it by removing one reference"
                    if errors is None:
                        raise RuleError(msg)
                    errors.append(msg)
                    return order
                if not state.get(nxt):
                    state[nxt] = 1
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                stack.pop()
                path.pop()
                state[node] = 2
                order.append(node)
    return order


def _check_groups(catalog: Catalog, errors: list[str] | None = None) -> None:
    names = [s.name for s in catalog.segments]
    for group in catalog.groups:
        for member in group.segments:
            if member not in names:
                close = difflib.get_close_matches(member, names, n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                msg = f"group '{group.name}' lists unknown segment '{member}'{hint}"
                if errors is None:
                    raise RuleError(msg)
                errors.append(msg)


def _normalize_schema(schema: Mapping[str, object]) -> dict[str, pl.DataType]:
    return {str(k): _normalize_dtype(v) for k, v in dict(schema).items()}


def compile_catalog(
    catalog: Catalog,
    schema: Mapping[str, pl.DataType],
    as_of: dt.date,
    *,
    missing: Literal["skip", "error"] = "error",
    sources: Mapping[str, Mapping[str, pl.DataType] | None] | None = None,
) -> CompiledCatalog:
    """Type-check every rule against ``schema`` and compile the catalog.

    Parameters
    ----------
    catalog : Catalog
        Segments and groups (see :func:`fastseg.rules.catalog.load_catalog`).
    schema : mapping of column name to Polars dtype
        Columns of the scores frame the rules run on.
    as_of : datetime.date
        Scoring date; relative dates (``-30d``, ``today``) resolve against it.
    missing : {"error", "skip"}
        What to do when a user segment needs a field absent from ``schema``: raise
        :class:`RuleError` naming the closest known fields, or skip the segment. Built-in
        segments (``SegmentDef.builtin``) are always skipped, never an error. Skipped segments
        are listed in ``skipped`` with the reason; segments referencing them and groups
        listing them are skipped too.
    sources : mapping, optional
        Schemas of the raw ``"orders"`` and ``"events"`` frames (``None`` or no key: that
        source is absent). When given, aggregates needing an absent source or column count
        as missing fields and filter values are type-checked; when omitted, every aggregate
        is assumed computable.

    Returns
    -------
    CompiledCatalog

    Raises
    ------
    RuleSyntaxError, RuleError
        Syntax errors, unknown references, cycles, type mismatches, unknown fields
        (``missing="error"``).
    """
    if missing not in ("skip", "error"):
        msg = f"missing must be 'skip' or 'error', got {missing!r}"
        raise ParameterError(msg)
    if not isinstance(as_of, dt.date) or isinstance(as_of, dt.datetime):
        msg = f"as_of must be a datetime.date, got {as_of!r}"
        raise ParameterError(msg)
    norm = _normalize_schema(schema)
    norm_sources = (
        None
        if sources is None
        else {k: (None if v is None else _normalize_schema(v)) for k, v in sources.items()}
    )
    trees = _parse_all(catalog)
    order = _order(catalog, trees)
    _check_groups(catalog)
    checker = _Checker(norm, as_of, norm_sources)
    defs = {s.name: s for s in catalog.segments}

    atoms: list[Atom] = []
    atom_index: dict[str, int] = {}
    aggregates: dict[str, AggSpec] = {}
    compiled: list[CompiledSegment] = []
    index: dict[str, int] = {}
    skipped: list[tuple[str, str]] = []
    skipped_names: set[str] = set()

    for name in order:
        seg = defs[name]
        tree = trees[name]
        refs = _references(tree)
        bad = [r for r in refs if r in skipped_names]
        if bad:
            skipped.append((name, f"depends on skipped segment '{bad[0]}'"))
            skipped_names.add(name)
            continue
        program: list[tuple[int, int]] = []
        local_aggs: dict[str, AggSpec] = {}
        local_atoms: list[Atom] = []
        try:
            _emit(tree, checker, program, local_atoms, local_aggs, index)
        except _Missing as exc:
            if missing == "skip" or getattr(seg, "builtin", False):
                skipped.append((name, _skip_reason(tree, checker)))
                skipped_names.add(name)
                continue
            if exc.reason.startswith("field '"):
                field_name = exc.names[0]
                msg = (
                    f"segment '{name}': unknown field '{field_name}'{exc.hint}; "
                    f"{_suggest(field_name, norm)}"
                )
            else:
                msg = f"segment '{name}': needs {exc.reason}, which the data does not have"
            raise RuleError(msg) from None
        except _TypeMismatch as exc:
            if getattr(seg, "builtin", False):
                skipped.append((name, f"type mismatch: {exc}"))
                skipped_names.add(name)
                continue
            msg = f"segment '{name}': {exc}"
            raise RuleError(msg) from None
        except RuleError as exc:
            msg = f"segment '{name}': {exc}"
            raise RuleError(msg) from None
        # commit atoms (deduplicated by key) and renumber the program's atom args
        remap: dict[int, int] = {}
        for j, atom in enumerate(local_atoms):
            k = atom_index.get(atom.key)
            if k is None:
                k = atom_index[atom.key] = len(atoms)
                atoms.append(atom)
            remap[j] = k
        arr = np.array(
            [(op, remap[arg] if op == OP_ATOM else arg) for op, arg in program],
            dtype=np.int32,
        ).reshape(-1, 2)
        aggregates.update(local_aggs)
        index[name] = len(compiled)
        compiled.append(
            CompiledSegment(seg.name, seg.description, seg.rule, np.ascontiguousarray(arr), refs)
        )

    groups: list[CompiledGroup] = []
    for group in catalog.groups:
        gone = [m for m in group.segments if m not in index]
        if gone:
            skipped.append((group.name, f"group member segment '{gone[0]}' was skipped"))
            continue
        groups.append(
            CompiledGroup(group.name, tuple(index[m] for m in group.segments), group.fallback)
        )
    return CompiledCatalog(
        as_of=as_of,
        atoms=tuple(atoms),
        segments=tuple(compiled),
        groups=tuple(groups),
        skipped=tuple(skipped),
        aggregates=tuple(aggregates[k] for k in sorted(aggregates)),
    )


def _skip_reason(tree: Expr, checker: _Checker) -> str:
    """Why a rule cannot run on this data, naming every absent field and source."""
    fields: list[str] = []
    other: list[str] = []
    for term in walk_terms(tree):
        if isinstance(term, Field | Aggregate):
            try:
                checker.operand(term)
            except _Missing as exc:
                if isinstance(term, Field):
                    fields.append(term.name)
                else:
                    other.append(exc.reason)
            except RuleError:
                pass
    parts = []
    if fields:
        hint = (
            " (predictions: fastseg run --predict)" if set(fields) & set(PREDICTED_FIELDS) else ""
        )
        parts.append("missing fields: " + ", ".join(dict.fromkeys(fields)) + hint)
    if other:
        parts.append("missing " + "; ".join(dict.fromkeys(other)))
    return "; ".join(parts)


def _emit(
    node: Expr,
    checker: _Checker,
    program: list[tuple[int, int]],
    atoms: list[Atom],
    aggs: dict[str, AggSpec],
    index: Mapping[str, int],
) -> None:
    if isinstance(node, And | Or):
        _emit(node.left, checker, program, atoms, aggs, index)
        _emit(node.right, checker, program, atoms, aggs, index)
        program.append((OP_AND if isinstance(node, And) else OP_OR, 0))
    elif isinstance(node, Not):
        _emit(node.operand, checker, program, atoms, aggs, index)
        program.append((OP_NOT, 0))
    elif isinstance(node, Const):
        program.append((OP_TRUE if node.value else OP_FALSE, 0))
    elif isinstance(node, SegmentRef):
        program.append((OP_SEGMENT, index[node.name]))
    else:
        spec, needed = checker.predicate(node)
        for agg in needed:
            aggs[agg.name] = agg
        key = _atom_key(spec)
        for j, atom in enumerate(atoms):
            if atom.key == key:
                program.append((OP_ATOM, j))
                return
        atoms.append(Atom(key, _spec_fields(spec), spec))
        program.append((OP_ATOM, len(atoms) - 1))


def _spec_fields(spec: _AtomSpec) -> tuple[str, ...]:
    """The scores columns an atom reads."""
    if spec.term is None:
        return (spec.column,)
    names: list[str] = []

    def visit(tree: tuple) -> None:
        if tree[0] in ("col", "anniv"):
            names.append(tree[1])
        elif tree[0] == "neg":
            visit(tree[1])
        elif tree[0] == "bin":
            visit(tree[2])
            visit(tree[3])

    visit(spec.term)
    if spec.rhs is not None:
        visit(spec.rhs)
    return tuple(dict.fromkeys(names))


def required_aggregates(
    catalog: Catalog,
    as_of: dt.date | None = None,
    *,
    present: Collection[str] = (),
) -> tuple[AggSpec, ...]:
    """Windowed aggregates the catalog's rules use, deduplicated, sorted by name.

    Needs no data: call it before reading to plan one pass over orders and one over events.
    Aggregate names do not depend on ``as_of`` (accepted for symmetry with
    :func:`compile_catalog`; :meth:`AggSpec.expr` takes the date). Names in ``present``
    (columns the scores frame already has, e.g. ``orders_30d``) are left out.
    """
    trees = _parse_all(catalog)
    specs: dict[str, AggSpec] = {}
    for tree in trees.values():
        for term in walk_terms(tree):
            if isinstance(term, Aggregate):
                spec = aggregate_spec(term)
                if spec.name not in present:
                    specs[spec.name] = spec
    return tuple(specs[k] for k in sorted(specs))


@dataclass(frozen=True)
class Problem:
    """One problem of a catalog found without data (see :func:`catalog_problems`).

    Attributes
    ----------
    text : str
        The one-line message, e.g. ``"segment 'a': unknown field 'frequncy'; did you mean
        'frequency'?"``; ``str(problem)`` is this text.
    segment : str or None
        The segment (or group) it is about; ``None`` for a cycle.
    line, column : int
        Where in the segment's rule (1-based); 0 when it is not about a place in a rule.
    field : str or None
        The unknown field or column, when that is the problem.
    rule : str
        The segment's rule text ("" when not about a rule).
    kind : str
        ``syntax``, ``reference`` (segments, groups, cycles), ``field`` (unknown field),
        ``source`` (an aggregate's source is absent), ``column`` (unknown column of a source),
        ``filter`` (a filter value's type), ``type`` (a predicate's types); ``catalog`` for
        a problem of the file itself (names, keys) found by the caller.
    """

    text: str
    segment: str | None = None
    line: int = 0
    column: int = 0
    field: str | None = None
    rule: str = ""
    kind: str = "type"

    def __str__(self) -> str:
        return self.text

    def located(self) -> str:
        """:attr:`text` with the place in the rule after the segment's name (syntax errors
        already say where they are)."""
        prefix = f"segment '{self.segment}': "
        if (
            not self.line
            or not self.text.startswith(prefix)
            or self.text.startswith(prefix + "syntax error at line")
        ):
            return self.text
        where = f"segment '{self.segment}' at line {self.line}, column {self.column}: "
        return where + self.text[len(prefix) :]


_PREDICATES = (Compare, Between, In, Contains, IsNull, IsTrue)


def _term_pos(predicate: Expr) -> int:
    """Offset of a predicate's first positioned term in the rule (-1: none)."""
    for term in walk_terms(predicate):
        pos = getattr(term, "pos", -1)
        if pos >= 0:
            return pos
    return -1


def catalog_problems(
    catalog: Catalog,
    schema: Mapping[str, pl.DataType] | None = None,
    *,
    sources: Mapping[str, Mapping[str, pl.DataType] | None] | None = None,
    extra_field: Callable[[str], pl.DataType | None] | None = None,
    advice: Callable[[str], str] | None = None,
    segments: Collection[str] | None = None,
) -> list[Problem]:
    """Every problem of a catalog found without data, with its place in the rule.

    Parameters
    ----------
    catalog : Catalog
        The catalog to check.
    schema : mapping, optional
        The scores frame the rules will run on. ``None``: the documented scores frame
        (:func:`scores_schema`), ignoring fields it does not know (profile columns vary).
    sources : mapping, optional
        Schemas of the raw ``"orders"`` and ``"events"`` rows (``None`` or no key: that source
        is absent), to check aggregates' filter columns and value types. A column typed
        ``pl.Null`` is known but its values are not type-checked. Omitted: aggregates are
        assumed computable.
    extra_field : callable, optional
        The dtype of a field absent from ``schema`` that the data may still have (event
        features when the event types are only known from the rows), or ``None``.
    advice : callable, optional
        Extra advice for an unknown field, appended to the suggestion (e.g. which input
        brings it); "" for none.
    segments : collection of str, optional
        Report only problems of these segments and groups (and cycles through them).

    Returns
    -------
    list of Problem
        Syntax errors, unknown segment references, cycles, unknown group members, then per
        segment (catalog order) every unknown field and type mismatch, each predicate once.
    """
    errors: list[str] = []
    trees = _parse_all(catalog, errors)
    by_rule = {s.name: s.rule for s in catalog.segments}
    problems: list[Problem] = []
    for text in errors:  # syntax errors: the wrapped RuleSyntaxError's text
        name = re.match(r"segment '([^']*)': ", text)
        seg = name.group(1) if name else None
        m = re.search(r"syntax error at line (\d+), column (\d+)", text)
        line, col = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        problems.append(
            Problem(text, seg, line, col, rule=by_rule.get(seg or "", ""), kind="syntax")
        )
    errors = []
    _order(catalog, trees, errors)
    _check_groups(catalog, errors)
    for text in errors:
        name = re.match(r"(?:segment|group) '([^']*)'", text)
        problems.append(Problem(text, name.group(1) if name else None, kind="reference"))
    lenient = schema is None
    norm = _normalize_schema(schema if schema is not None else scores_schema())
    if extra_field is not None:
        for tree in trees.values():
            for term in walk_terms(tree):
                if isinstance(term, Field) and term.name not in norm:
                    dtype = extra_field(term.name)
                    if dtype is not None:
                        norm[term.name] = _normalize_dtype(dtype)
    norm_sources = (
        None
        if sources is None
        else {k: (None if v is None else _normalize_schema(v)) for k, v in sources.items()}
    )
    checker = _Checker(norm, dt.date.today(), norm_sources)
    for seg in catalog.segments:
        tree = trees.get(seg.name)
        if tree is None:
            continue
        for node in walk(tree):
            if isinstance(node, _PREDICATES):
                problems.extend(
                    _predicate_problems(seg.name, seg.rule, node, checker, lenient, advice)
                )
    if segments is not None:
        keep = set(segments)
        problems = [
            p
            for p in problems
            if p.segment in keep
            or (p.segment is None and any(f" {n} " in f" {p.text} " for n in keep))
        ]
    return problems


def _with_advice(hint: str, advice: Callable[[str], str] | None, name: str) -> str:
    """A suggestion with the caller's advice: after a close name, or instead of the list of
    every known name."""
    tip = advice(name) if advice is not None else ""
    if not tip:
        return hint
    return f"{hint} (or {tip})" if hint.startswith("did you mean") else tip


def _known_columns(checker: _Checker, source: str) -> list[str]:
    found = (checker.sources or {}).get(source) or {}
    return [c for c in found if c not in ("customer_id",)]


def _predicate_problems(
    segment: str,
    rule: str,
    node: Expr,
    checker: _Checker,
    lenient: bool,
    advice: Callable[[str], str] | None,
) -> list[Problem]:
    """The problems of one predicate: each unknown field or aggregate column at its place,
    else its type mismatch (at its first term)."""
    out: list[Problem] = []

    def add(message: str, pos: int, name: str | None = None, kind: str = "type") -> None:
        line, col = _position(rule, pos) if pos >= 0 else (0, 0)
        text = f"segment '{segment}': {message}"
        out.append(Problem(text, segment, line, col, name, rule, kind))

    for term in walk_terms(node):
        if isinstance(term, Field):
            if term.name in checker.schema or lenient:
                continue
            hint = _with_advice(_suggest(term.name, checker.schema), advice, term.name)
            add(f"unknown field '{term.name}'; {hint}", term.pos, term.name, "field")
        elif isinstance(term, Aggregate):
            _aggregate_problems(term, checker, advice, add)
    if out:
        return out
    try:
        checker.predicate(node)
    except _Missing as exc:  # a term the walk above did not see (new syntax): still reported
        if not lenient:
            add(f"unknown field '{exc.names[0]}'", _term_pos(node), exc.names[0], "field")
    except RuleError as exc:
        add(str(exc), _blamed_pos(node, str(exc)))
    return out


def _blamed_pos(node: Expr, message: str) -> int:
    """Offset of the field a type error names (``field 'x'``), else of the predicate's first
    term."""
    named = re.search(r"field '([^']+)'", message)
    if named:
        for term in walk_terms(node):
            if isinstance(term, Field) and term.name == named.group(1) and term.pos >= 0:
                return term.pos
    return _term_pos(node)


def _aggregate_problems(
    term: Aggregate,
    checker: _Checker,
    advice: Callable[[str], str] | None,
    add: Callable[..., None],
) -> None:
    """Problems of an aggregate call (``add``-ed): absent source, unknown filter columns,
    value types."""
    call = render(IsTrue(term))
    source = "events" if term.func == "events" else "orders"
    found = (checker.sources or {}).get(source)
    if found is not None:  # columns typed Null are known but not type-checked
        untyped = {c for c, d in found.items() if isinstance(d, pl.Null)}
        if untyped:
            term = replace(term, filters=tuple(f for f in term.filters if f[0] not in untyped))
    try:
        checker.operand(term)
    except _Missing as exc:
        if checker.sources is not None and checker.sources.get(source) is None:
            more = advice(f"{source}()") if advice is not None else ""
            add(
                f"{call} needs {source} data, which the inputs do not have{more}",
                term.pos,
                None,
                "source",
            )
        else:
            for name in exc.names:
                known = _known_columns(checker, source)
                close = _suggest(name, known).replace("known fields:", f"the {source} have:", 1)
                hint = _with_advice(close, advice, f"{source}.{name}")
                add(
                    f"unknown {source} column '{name}' in {call}; {hint}",
                    term.pos,
                    name,
                    "column",
                )
    except RuleError as exc:
        add(str(exc), term.pos, None, "filter")


def check_catalog(catalog: Catalog, schema: Mapping[str, pl.DataType] | None = None) -> list[str]:
    """Every problem of a catalog found without data; an empty list means it is valid.

    Reports syntax errors (one line each: position, what was expected, the rule around it),
    unknown segment references, cycles and unknown group members. Fields are type-checked
    against ``schema``, or when it is ``None`` against the documented scores frame
    (:func:`scores_schema`) ignoring fields it does not know (profile columns may vary).
    :func:`catalog_problems` gives the same problems with their places, and checks
    aggregates against the raw sources' schemas.
    """
    return [p.text for p in catalog_problems(catalog, schema)]
