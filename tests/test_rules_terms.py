"""Arithmetic, field-to-field comparisons and anniversaries in rules: the engine (atoms as
Polars expressions) equals the plain-Python reference (tests/reference.py), row by row."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastseg.errors import RuleError, RuleSyntaxError
from fastseg.rules import compile_catalog, parse_rule
from fastseg.rules.ast import Arith, Field, Neg, Number, render
from fastseg.rules.catalog import Catalog, SegmentDef
from tests.reference import _r_anniversary, rpn_eval_ref, rule_mask_ref

AS_OF = dt.date(2026, 3, 31)
NAN = math.nan

_SCHEMA = {
    "i": pl.Int64,
    "j": pl.Int64,
    "f": pl.Float64,
    "g": pl.Float64,
    "d": pl.Date,
    "e": pl.Date,
    "ts": pl.Datetime("us"),
    "s": pl.String,
    "t": pl.String,
    "b": pl.Boolean,
    "c": pl.Boolean,
}


def _cat(*rules: str) -> Catalog:
    return Catalog(tuple(SegmentDef(f"s{k}", "", r) for k, r in enumerate(rules)))


def _evaluate(catalog: Catalog, frame: pl.DataFrame, as_of: dt.date = AS_OF) -> list[np.ndarray]:
    compiled = compile_catalog(catalog, frame.schema, as_of)
    masks = [frame.select(a.expr()).to_series().to_numpy() for a in compiled.atoms]
    for m in masks:
        assert m.dtype == np.bool_  # never null
    out: list[np.ndarray] = []
    for seg in compiled.segments:
        out.append(rpn_eval_ref(seg.program, masks, out, frame.height))
    return out


def _check(rules: list[str], frame: pl.DataFrame, as_of: dt.date = AS_OF) -> None:
    catalog = _cat(*rules)
    got = _evaluate(catalog, frame, as_of)
    for rule, mask in zip(rules, got, strict=True):
        expected = rule_mask_ref(parse_rule(rule), frame, as_of)
        np.testing.assert_array_equal(mask, expected, err_msg=rule)


# ----------------------------------------------------------------------------- by hand


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "recency_days": [100, 10, None, 50, 0],
            "avg_days_between_orders": [30.0, 20.0, 5.0, 0.0, NAN],
            "birth_date": [
                dt.date(1990, 4, 10),
                dt.date(1992, 2, 29),
                None,
                dt.date(1980, 3, 30),
                dt.date(2000, 3, 31),
            ],
            "revenue_90d": [10.0, 100.0, 0.0, 40.0, 5.0],
            "revenue_180d_until_91d": [100.0, 100.0, 0.0, 0.0, 20.0],
            "first_order_date": [dt.date(2026, 1, 1)] * 5,
            "last_order_date": [
                dt.date(2026, 3, 1),
                dt.date(2025, 1, 1),
                None,
                dt.date(2026, 1, 1),
                dt.date(2026, 3, 31),
            ],
        }
    )


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("recency_days > 2 * avg_days_between_orders", [True, False, False, True, False]),
        # division by zero is null, so false; NaN is missing
        ("recency_days / avg_days_between_orders > 1", [True, False, False, False, False]),
        ("(recency_days / avg_days_between_orders) IS NULL", [False, False, True, True, True]),
        ("recency_days + 1 = 11", [False, True, False, False, False]),
        ("recency_days - 10 * 2 = 80", [True, False, False, False, False]),  # * before -
        ("(recency_days - 10) * 2 = 180", [True, False, False, False, False]),
        ("100 - recency_days - 50 = 0", [False, False, False, True, False]),  # left-assoc
        ("-recency_days < -40", [True, False, False, True, False]),
        (
            "revenue(since: -90d) < 0.5 * revenue(since: -180d, until: -91d)",
            [True, False, False, False, True],
        ),
        ("last_order_date > first_order_date", [True, False, False, False, True]),
        ("last_order_date = first_order_date", [False, False, False, True, False]),
        ("NOT (last_order_date > first_order_date)", [False, True, True, True, False]),
        # the next anniversary on or after 2026-03-31: 29 February is 28 February in 2027
        ("anniversary(birth_date) BETWEEN today AND +30d", [True, False, False, False, True]),
        ("anniversary(birth_date) = 2027-02-28", [False, True, False, False, False]),
        ("anniversary(birth_date) = today", [False, False, False, False, True]),
        ("anniversary(birth_date) < today", [False] * 5),
        ("anniversary(birth_date) IS NULL", [False, False, True, False, False]),
    ],
)
def test_forms_by_hand(rule, expected):
    frame = _frame()
    assert _evaluate(_cat(rule), frame)[0].tolist() == expected
    _check([rule], frame)


def test_anniversary_in_leap_years_and_across_new_year():
    frame = pl.DataFrame({"d": [dt.date(1992, 2, 29), dt.date(1990, 1, 5), dt.date(1990, 12, 31)]})
    # in a leap year 29 February is itself
    got = _evaluate(_cat("anniversary(d) = 2028-02-29"), frame, dt.date(2028, 2, 1))[0]
    assert got.tolist() == [True, False, False]
    # late December: the window wraps into January
    got = _evaluate(_cat("anniversary(d) BETWEEN today AND +10d"), frame, dt.date(2026, 12, 30))
    assert got[0].tolist() == [False, True, True]


def test_anniversary_of_a_datetime_in_its_zone():
    ts = pl.Series([dt.datetime(2020, 4, 1, 23, 30)]).dt.replace_time_zone("UTC")
    frame = pl.DataFrame({"signup_ts": ts.dt.convert_time_zone("Europe/Berlin")})
    # 23:30 UTC on 1 April is 2 April in Berlin
    assert _evaluate(_cat("anniversary(signup_ts) = 2026-04-02"), frame)[0].tolist() == [True]


def test_date_beside_datetime_compares_with_midnight():
    frame = pl.DataFrame(
        {
            "ts": [dt.datetime(2026, 1, 1, 0, 0), dt.datetime(2026, 1, 1, 5), None],
            "d": [dt.date(2026, 1, 1), dt.date(2026, 1, 1), dt.date(2026, 1, 1)],
        }
    )
    assert _evaluate(_cat("ts > d"), frame)[0].tolist() == [False, True, False]
    assert _evaluate(_cat("d >= ts"), frame)[0].tolist() == [True, False, False]
    _check(["ts > d", "d >= ts", "ts = d"], frame)


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("d + 1 > 3", "arithmetic needs numbers: field 'd' is a date"),
        ("s * 2 > 3", "arithmetic needs numbers: field 's' is a string"),
        ("i > d", "cannot compare i (a number, Int64) with d (a date, Date)"),
        ("s = i", "cannot compare s"),
        ("b > c", "is a Boolean; compare it with = or !=, not >"),
        ("anniversary(i) = today", "anniversary() needs a date field; field 'i' is a number"),
        ("i + j", "not a Boolean"),
        ("i > bob", "unknown field 'bob' (to compare with the text, quote it: 'bob')"),
        ("anniversary(d) > 3", "compare it with a date"),
    ],
)
def test_type_errors(rule, fragment):
    frame = pl.DataFrame(schema=_SCHEMA)
    with pytest.raises(RuleError) as info:
        compile_catalog(_cat(rule), frame.schema, AS_OF)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "rule",
    [
        "x -30d > 1",
        "a + > 3",
        "(a + b",
        "a % 2 > 1",
        "a ** 2 > 1",
        "a = 1 +",
        "anniversary() = today",
    ],
)
def test_syntax_errors(rule):
    with pytest.raises(RuleSyntaxError):
        parse_rule(rule)


def test_precedence_and_parentheses_in_the_tree():
    tree = parse_rule("a - 3 * b >= -c / (d + 1)")
    assert tree.operand == Arith("-", Field("a"), Arith("*", Number(3), Field("b")))
    assert tree.value == Arith("/", Neg(Field("c")), Arith("+", Field("d"), Number(1)))
    # a signed number right after a term subtracts: a -3 is a - 3
    assert parse_rule("a -3 > 0").operand == Arith("-", Field("a"), Number(3))
    # parentheses around a condition still group conditions
    assert render(parse_rule("((a > 1)) AND (b)")) == "a > 1 AND b"
    assert render(parse_rule("(a + 1) > 2")) == "a + 1 > 2"


# ----------------------------------------------------------------------------- hypothesis

_NUM = ["i", "j", "f", "g"]

_number_term = st.recursive(
    st.sampled_from(_NUM) | st.sampled_from(["0", "1", "2", "-1", "0.5", "3"]),
    lambda kids: st.one_of(
        st.tuples(kids, st.sampled_from("+-*/"), kids).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(kids, st.sampled_from("+-*/"), kids).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        kids.map(lambda t: f"-({t})"),
    ),
    max_leaves=4,
)


@st.composite
def _predicate(draw) -> str:
    kind = draw(st.sampled_from(["num", "num", "date", "string", "bool", "anniv"]))
    op = draw(st.sampled_from(["=", "!=", ">", ">=", "<", "<="]))
    if kind == "num":
        left = draw(_number_term)
        form = draw(st.sampled_from(["cmp_term", "cmp_lit", "between", "in", "null"]))
        if form == "cmp_term":
            return f"{left} {op} {draw(_number_term)}"
        if form == "cmp_lit":
            return f"{left} {op} {draw(st.sampled_from(['0', '1', '-2', '2.5']))}"
        if form == "between":
            return f"{left} {draw(st.sampled_from(['BETWEEN', 'NOT BETWEEN']))} -1 AND 2"
        if form == "in":
            return f"{left} IN (0, 1, 2)"
        return f"({left}) IS {draw(st.sampled_from(['', 'NOT ']))}NULL"
    if kind == "date":
        a, b = draw(st.sampled_from(["d", "e", "ts"])), draw(st.sampled_from(["d", "e", "ts"]))
        return f"{a} {op} {b}"
    if kind == "string":
        return f"{draw(st.sampled_from(['s', 't']))} {op} {draw(st.sampled_from(['s', 't']))}"
    if kind == "bool":
        return f"b {draw(st.sampled_from(['=', '!=']))} c"
    col = draw(st.sampled_from(["d", "ts"]))
    bound = draw(st.sampled_from(["+30d", "+1m", "+1y", "today", "2026-12-31"]))
    form = draw(st.sampled_from(["between", "cmp", "field"]))
    if form == "between":
        return f"anniversary({col}) BETWEEN today AND {bound}"
    if form == "cmp":
        return f"anniversary({col}) {op} {bound}"
    return f"anniversary({col}) {op} e"


_rule = st.recursive(
    _predicate(),
    lambda kids: st.one_of(
        st.tuples(kids, kids).map(lambda t: f"({t[0]}) AND ({t[1]})"),
        st.tuples(kids, kids).map(lambda t: f"{t[0]} OR {t[1]}"),
        kids.map(lambda t: f"NOT ({t})"),
    ),
    max_leaves=3,
)

_DATES = st.none() | st.dates(dt.date(1988, 1, 1), dt.date(2027, 12, 31))
_frames = st.integers(0, 8).flatmap(
    lambda n: st.fixed_dictionaries(
        {
            "i": st.lists(st.none() | st.integers(-3, 3), min_size=n, max_size=n),
            "j": st.lists(st.none() | st.integers(-(2**40), 2**40), min_size=n, max_size=n),
            "f": st.lists(
                st.none() | st.sampled_from([NAN, -1.5, 0.0, 0.5, 2.0, 1e308, -math.inf]),
                min_size=n,
                max_size=n,
            ),
            "g": st.lists(st.none() | st.floats(-5, 5, width=32), min_size=n, max_size=n),
            "d": st.lists(_DATES, min_size=n, max_size=n),
            "e": st.lists(_DATES, min_size=n, max_size=n),
            "ts": st.lists(
                st.none() | st.datetimes(dt.datetime(1990, 2, 27), dt.datetime(2027, 4, 2)),
                min_size=n,
                max_size=n,
            ),
            "s": st.lists(
                st.none() | st.sampled_from(["a", "b", "ab", ""]), min_size=n, max_size=n
            ),
            "t": st.lists(st.none() | st.sampled_from(["a", "b", "ba"]), min_size=n, max_size=n),
            "b": st.lists(st.none() | st.booleans(), min_size=n, max_size=n),
            "c": st.lists(st.none() | st.booleans(), min_size=n, max_size=n),
        }
    )
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_rule, min_size=1, max_size=3),
    _frames,
    st.dates(dt.date(2024, 2, 27), dt.date(2026, 12, 31)),
)
def test_engine_equals_reference(rules, data, as_of):
    frame = pl.DataFrame(data, schema=_SCHEMA)
    _check(rules, frame, as_of)


@settings(max_examples=150, deadline=None)
@given(st.lists(_rule, min_size=1, max_size=1))
def test_render_round_trips(rules):
    tree = parse_rule(rules[0])
    assert parse_rule(render(tree)) == tree


@given(
    st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31)),
    st.dates(dt.date(2000, 1, 1), dt.date(2100, 1, 1)),
)
def test_anniversary_reference_is_the_next_one(day, as_of):
    got = _r_anniversary(day, as_of)
    assert got >= as_of and (got - as_of).days <= 366
    assert (got.month, got.day) == (day.month, day.day) or (
        (day.month, day.day) == (2, 29) and (got.month, got.day) == (2, 28)
    )


def test_long_chains_are_refused_in_one_line_not_a_recursion_error():
    for rule in (" AND ".join(["a > 1"] * 3000), "a" + " + a" * 3000 + " > 1"):
        with pytest.raises(RuleSyntaxError, match="more than 250 levels") as info:
            parse_rule(rule)
        assert "\n" not in str(info.value)


def test_deep_arithmetic_builds_a_linear_expression():
    # each operand appears once in the Polars expression: 200 levels evaluate at once (a
    # when/then per level would double the expression at each one)
    frame = pl.DataFrame({"a": [1, 3, None], "b": [0.0, -0.0, 2.0]})
    rule = "a" + " * 1" * 200 + " / (b" + " + 0" * 40 + ") > 0"
    assert _evaluate(_cat(rule), frame)[0].tolist() == [False, False, False]
    _check([rule, "a / b IS NULL", "a / (b - b) IS NULL"], frame)


def test_reversed_aggregate_window_is_an_error():
    from fastseg.rules.compile import scores_schema

    with pytest.raises(RuleError, match=r"is reversed: since 2025-12-22 is after until 2025-12-12"):
        compile_catalog(
            _cat("orders(since: -10d, until: -20d) > 0"), scores_schema(), dt.date(2026, 1, 1)
        )
    compiled = compile_catalog(  # one day is a window
        _cat("revenue(since: -3d, until: -3d) > 0"), scores_schema(), dt.date(2026, 1, 1)
    )
    assert compiled.aggregates[0].name == "revenue_3d_until_3d"
