"""Syntax tree of the segment rule language: small frozen dataclasses.

A parsed rule is an :data:`Expr`: logical nodes (:class:`And`, :class:`Or`, :class:`Not`,
:class:`Const`, :class:`SegmentRef`) over predicates (:class:`Compare`, :class:`Between`,
:class:`In`, :class:`Contains`, :class:`IsNull`, :class:`IsTrue`). A predicate tests an
:data:`Operand` (a :class:`Field` of the scores frame or a windowed :class:`Aggregate`)
against :data:`Value` literals. Every node renders back to rule text with :func:`render`,
and ``parse_rule(render(node)) == node`` holds for every node the parser can produce.

Relative dates stay symbolic here (:class:`RelDate`, :class:`Today`); the compiler resolves
them against the scoring date with :func:`resolve_date`.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as _field
from typing import Literal, TypeAlias

__all__ = [
    "Aggregate",
    "And",
    "Anniversary",
    "Arith",
    "Between",
    "Bool",
    "Compare",
    "Const",
    "Contains",
    "DateLit",
    "Expr",
    "Field",
    "In",
    "IsNull",
    "IsTrue",
    "Not",
    "Number",
    "Operand",
    "Or",
    "Predicate",
    "RelDate",
    "SegmentRef",
    "String",
    "Today",
    "Term",
    "Value",
    "Neg",
    "add_months",
    "render",
    "render_value",
    "resolve_date",
    "walk",
    "walk_terms",
]

CompareOp = Literal["=", "!=", ">", ">=", "<", "<="]
ArithOp = Literal["+", "-", "*", "/"]
AggFunc = Literal["orders", "revenue", "units", "distinct", "events"]
DateUnit = Literal["d", "w", "m", "y"]


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Number:
    """A numeric literal (``3``, ``-2.5``, ``1e3``); ``value`` is an int when written without
    a fraction or exponent."""

    value: int | float


@dataclass(frozen=True)
class String:
    """A quoted string literal (``'shoes'`` or ``"shoes"``)."""

    value: str


@dataclass(frozen=True)
class Bool:
    """``true`` or ``false``."""

    value: bool


@dataclass(frozen=True)
class DateLit:
    """An absolute date written ``2026-01-31``."""

    value: dt.date


@dataclass(frozen=True)
class RelDate:
    """A date relative to the scoring date: ``-30d`` is ``RelDate(-30, "d")``.

    Days and weeks are exact day offsets; months and years are calendar offsets whose day is
    clamped to the end of the target month (2026-03-31 minus 1m is 2026-02-28).
    """

    amount: int
    unit: DateUnit


@dataclass(frozen=True)
class Today:
    """``today``: the scoring date itself."""


Value: TypeAlias = Number | String | Bool | DateLit | RelDate | Today


# ----------------------------------------------------------------------------- operands


@dataclass(frozen=True)
class Field:
    """A column of the scores frame (case-sensitive name).

    ``pos`` is the offset of the name in the rule's text (-1 when built by hand); it takes no
    part in equality, so a tree compares equal to its re-parsed rendering.
    """

    name: str
    pos: int = _field(default=-1, compare=False, repr=False)


@dataclass(frozen=True)
class Aggregate:
    """A windowed aggregate over the raw orders or events.

    ``orders(since: -90d, channel: 'app')`` is
    ``Aggregate("orders", None, RelDate(-90, "d"), (("channel", (String("app"),)),))``.

    Attributes
    ----------
    func : {"orders", "revenue", "units", "distinct", "events"}
        Count of orders (with filters: orders having at least one matching line), net revenue
        (refunds included), sum of ``quantity`` of the matching lines that are not refunds,
        number of distinct values of the column ``of`` among those lines, or count of events.
    event : str or None
        The event type counted by ``events``; ``None`` for the others.
    since : DateLit, RelDate, Today or None
        Rows dated on or after this date count; ``None`` means from the first row.
    filters : tuple of (column, values)
        Equality filters on source columns, sorted by column; a row passes a filter when its
        value is one of ``values``.
    until : DateLit, RelDate, Today or None
        Rows dated on or before this date count (inclusive); ``None`` means up to the scoring
        date.
    of : str or None
        The column whose distinct values ``distinct`` counts; ``None`` for the others.
    """

    func: AggFunc
    event: str | None
    since: DateLit | RelDate | Today | None
    filters: tuple[tuple[str, tuple[Value, ...]], ...] = ()
    until: DateLit | RelDate | Today | None = None
    of: str | None = None
    pos: int = _field(default=-1, compare=False, repr=False)


@dataclass(frozen=True)
class Anniversary:
    """``anniversary(birth_date)``: the customer's next anniversary of a date column, on or
    after the scoring date (month and day; 29 February is 28 February in other years)."""

    field: Field


@dataclass(frozen=True)
class Arith:
    """``left op right`` with ``op`` one of ``+ - * /`` (numbers; nulls propagate, division
    by zero is null)."""

    op: ArithOp
    left: Term
    right: Term


@dataclass(frozen=True)
class Neg:
    """``-operand`` (unary minus of a field or a parenthesized expression)."""

    operand: Term


Term: TypeAlias = "Field | Aggregate | Anniversary | Arith | Neg | Number"
Operand: TypeAlias = "Field | Aggregate | Anniversary | Arith | Neg | Number"


# ----------------------------------------------------------------------------- predicates


@dataclass(frozen=True)
class Compare:
    """``operand op value`` with ``op`` one of ``= != > >= < <=``; ``value`` is a literal, or
    a term (a field, an aggregate, arithmetic) for field-to-field comparisons."""

    operand: Operand
    op: CompareOp
    value: Value | Term


@dataclass(frozen=True)
class Between:
    """``operand BETWEEN low AND high`` (inclusive); ``negated`` for ``NOT BETWEEN``."""

    operand: Operand
    low: Value
    high: Value
    negated: bool = False


@dataclass(frozen=True)
class In:
    """``operand IN (v, ...)``; ``negated`` for ``NOT IN``."""

    operand: Operand
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class Contains:
    """``operand CONTAINS value`` (list membership, or substring for strings)."""

    operand: Operand
    value: Value
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    """``operand IS NULL``; ``negated`` for ``IS NOT NULL``."""

    operand: Operand
    negated: bool = False


@dataclass(frozen=True)
class IsTrue:
    """A bare Boolean field used as a predicate: ``email_opt_in`` means ``email_opt_in = true``."""

    operand: Operand


Predicate: TypeAlias = Compare | Between | In | Contains | IsNull | IsTrue


# ----------------------------------------------------------------------------- logic


@dataclass(frozen=True)
class And:
    """``left AND right``."""

    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or:
    """``left OR right``."""

    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not:
    """``NOT operand``."""

    operand: Expr


@dataclass(frozen=True)
class Const:
    """``true`` or ``false`` used as a whole condition (every customer or none)."""

    value: bool


@dataclass(frozen=True)
class SegmentRef:
    """``segment(name)``: membership of another segment of the catalog."""

    name: str


Expr: TypeAlias = And | Or | Not | Const | SegmentRef | Predicate


# ----------------------------------------------------------------------------- helpers


def add_months(day: dt.date, months: int) -> dt.date:
    """Shift ``day`` by whole calendar months, clamping the day to the target month's end.

    Examples
    --------
    >>> add_months(dt.date(2026, 3, 31), -1)
    datetime.date(2026, 2, 28)
    """
    index = day.year * 12 + (day.month - 1) + months
    year, month0 = divmod(index, 12)
    if not 1 <= year <= 9999:
        msg = f"date {day.isoformat()} shifted by {months} months is out of range"
        raise OverflowError(msg)
    last = calendar.monthrange(year, month0 + 1)[1]
    return dt.date(year, month0 + 1, min(day.day, last))


def resolve_date(value: DateLit | RelDate | Today, as_of: dt.date) -> dt.date:
    """The absolute date a date literal denotes when the scoring date is ``as_of``.

    Examples
    --------
    >>> resolve_date(RelDate(-1, "y"), dt.date(2024, 2, 29))
    datetime.date(2023, 2, 28)
    """
    if isinstance(value, DateLit):
        return value.value
    if isinstance(value, Today):
        return as_of
    if value.unit == "d":
        return as_of + dt.timedelta(days=value.amount)
    if value.unit == "w":
        return as_of + dt.timedelta(weeks=value.amount)
    if value.unit == "m":
        return add_months(as_of, value.amount)
    return add_months(as_of, 12 * value.amount)


def _quote(text: str) -> str:
    escaped = (
        text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\t", "\\t")
    )
    return "'" + escaped + "'"


def render_value(value: Value) -> str:
    """Rule text of a literal (strings single-quoted with backslash escapes)."""
    if isinstance(value, Number):
        return repr(value.value)
    if isinstance(value, String):
        return _quote(value.value)
    if isinstance(value, Bool):
        return "true" if value.value else "false"
    if isinstance(value, DateLit):
        return value.value.isoformat()
    if isinstance(value, RelDate):
        return f"{value.amount:+d}{value.unit}"
    return "today"


#: the rule language's keywords (case-insensitive); a field named like one is written in backticks
KEYWORDS = frozenset(
    {
        "AND",
        "OR",
        "NOT",
        "BETWEEN",
        "IN",
        "CONTAINS",
        "IS",
        "NULL",
        "TRUE",
        "FALSE",
        "TODAY",
        "YESTERDAY",
    }
)


def _render_name(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name.upper() not in KEYWORDS:
        return name
    return f"`{name}`"


def _render_bound(value: DateLit | RelDate | Today) -> str:
    return render_value(value)


def _render_operand(operand: Operand, level: int = 0) -> str:
    """Rule text of a term; ``level`` is the binding strength of the context (0: none, 1: an
    operand of + or -, 2: of * or /, 3: of a unary minus)."""
    if isinstance(operand, Field):
        return _render_name(operand.name)
    if isinstance(operand, Number):
        return repr(operand.value)
    if isinstance(operand, Anniversary):
        return f"anniversary({_render_name(operand.field.name)})"
    if isinstance(operand, Arith):
        mine = 1 if operand.op in "+-" else 2
        # left-associative: a right child of the same strength needs parentheses
        text = (
            f"{_render_operand(operand.left, mine)} {operand.op} "
            f"{_render_operand(operand.right, mine + 1)}"
        )
        return f"({text})" if level > mine else text
    if isinstance(operand, Neg):
        return f"-{_render_operand(operand.operand, 3)}"
    args: list[str] = []
    if operand.event is not None:
        args.append(_quote(operand.event))
    if operand.of is not None:
        args.append(_render_name(operand.of))
    if operand.since is not None:
        args.append(f"since: {_render_bound(operand.since)}")
    if operand.until is not None:
        args.append(f"until: {_render_bound(operand.until)}")
    for column, values in operand.filters:
        key = f"`{column}`" if column in ("since", "until") else _render_name(column)
        if len(values) == 1:
            args.append(f"{key}: {render_value(values[0])}")
        else:
            args.append(f"{key}: ({', '.join(render_value(v) for v in values)})")
    return f"{operand.func}({', '.join(args)})"


def _render_rhs(value: Value | Term) -> str:
    if isinstance(value, String | Bool | DateLit | RelDate | Today):
        return render_value(value)
    return _render_operand(value)


_PRECEDENCE = {Or: 1, And: 2, Not: 3}


def render(node: Expr, *, _parent: int = 0) -> str:
    """Rule text of a node, with the fewest parentheses that keep its structure.

    Examples
    --------
    >>> render(And(Or(Const(True), Const(False)), Not(SegmentRef("vip"))))
    '(true OR false) AND NOT segment(vip)'
    """
    if isinstance(node, Or | And):
        level = _PRECEDENCE[type(node)]
        word = "OR" if isinstance(node, Or) else "AND"
        # left-associative: a right child of the same kind needs parentheses
        text = f"{render(node.left, _parent=level)} {word} {render(node.right, _parent=level + 1)}"
        return f"({text})" if _parent > level else text
    if isinstance(node, Not):
        return f"NOT {render(node.operand, _parent=3)}"
    if isinstance(node, Const):
        return "true" if node.value else "false"
    if isinstance(node, SegmentRef):
        return f"segment({node.name})"
    operand = _render_operand(node.operand)
    if isinstance(node, Compare):
        return f"{operand} {node.op} {_render_rhs(node.value)}"
    if isinstance(node, Between):
        word = "NOT BETWEEN" if node.negated else "BETWEEN"
        return f"{operand} {word} {render_value(node.low)} AND {render_value(node.high)}"
    if isinstance(node, In):
        word = "NOT IN" if node.negated else "IN"
        return f"{operand} {word} ({', '.join(render_value(v) for v in node.values)})"
    if isinstance(node, Contains):
        word = "NOT CONTAINS" if node.negated else "CONTAINS"
        return f"{operand} {word} {render_value(node.value)}"
    if isinstance(node, IsNull):
        return f"{operand} IS NOT NULL" if node.negated else f"{operand} IS NULL"
    return operand  # IsTrue


def walk(node: Expr) -> Iterator[Expr]:
    """Yield ``node`` and every logical or predicate node below it, depth first."""
    yield node
    if isinstance(node, And | Or):
        yield from walk(node.left)
        yield from walk(node.right)
    elif isinstance(node, Not):
        yield from walk(node.operand)


def walk_terms(node: Expr | Operand | Value) -> Iterator[Operand]:
    """Yield every term (field, aggregate, anniversary, arithmetic, number) of a predicate or a
    term, depth first; logical nodes yield the terms of their predicates."""
    if isinstance(node, And | Or | Not):
        for sub in walk(node):
            if not isinstance(sub, And | Or | Not | Const | SegmentRef):
                yield from walk_terms(sub)
        return
    if isinstance(node, Compare):
        yield from walk_terms(node.operand)
        if isinstance(node.value, Field | Aggregate | Anniversary | Arith | Neg):
            yield from walk_terms(node.value)
        return
    if isinstance(node, Between | In | Contains | IsNull | IsTrue):
        yield from walk_terms(node.operand)
        return
    if isinstance(node, Field | Aggregate | Number):
        yield node
    elif isinstance(node, Anniversary):
        yield node
        yield node.field
    elif isinstance(node, Arith):
        yield node
        yield from walk_terms(node.left)
        yield from walk_terms(node.right)
    elif isinstance(node, Neg):
        yield node
        yield from walk_terms(node.operand)
