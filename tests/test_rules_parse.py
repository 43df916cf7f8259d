"""Parser of the segment rule language: structure, values, relative dates, syntax errors."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastseg.errors import RuleError, RuleSyntaxError
from fastseg.rules.ast import (
    Aggregate,
    And,
    Between,
    Bool,
    Compare,
    Const,
    Contains,
    DateLit,
    Field,
    In,
    IsNull,
    IsTrue,
    Not,
    Number,
    Or,
    RelDate,
    SegmentRef,
    String,
    Today,
    add_months,
    render,
    resolve_date,
)
from fastseg.rules.parse import MAX_DEPTH, parse_rule
from tests.reference import _r_shift

A, B, C = (Compare(Field(n), "=", Number(1)) for n in "abc")


# ------------------------------------------------------------------ precedence and structure


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a = 1 OR b = 1 AND c = 1", Or(A, And(B, C))),
        ("a = 1 AND b = 1 OR c = 1", Or(And(A, B), C)),
        ("(a = 1 OR b = 1) AND c = 1", And(Or(A, B), C)),
        ("NOT a = 1 AND b = 1", And(Not(A), B)),
        ("NOT (a = 1 AND b = 1)", Not(And(A, B))),
        ("NOT NOT a = 1", Not(Not(A))),
        ("a = 1 OR b = 1 OR c = 1", Or(Or(A, B), C)),
        ("a = 1 AND b = 1 AND c = 1", And(And(A, B), C)),
        ("a = 1 OR NOT b = 1 AND c = 1", Or(A, And(Not(B), C))),
        ("((a = 1))", A),
        ("true", Const(True)),
        ("FALSE OR a = 1", Or(Const(False), A)),
        (
            "segment(vip) AND NOT segment(at_risk)",
            And(SegmentRef("vip"), Not(SegmentRef("at_risk"))),
        ),
        ("segment('vip')", SegmentRef("vip")),
        ("email_opt_in", IsTrue(Field("email_opt_in"))),
        ("NOT email_opt_in OR a = 1", Or(Not(IsTrue(Field("email_opt_in"))), A)),
    ],
)
def test_precedence(text, tree):
    assert parse_rule(text) == tree


@pytest.mark.parametrize(
    "text",
    [
        "a = 1 and b = 1 or not c = 1",
        "a = 1 AnD b = 1 oR NoT c = 1",
        "a = 1 AND b = 1 OR NOT c = 1",
    ],
)
def test_keywords_case_insensitive(text):
    assert parse_rule(text) == Or(And(A, B), Not(C))


def test_case_insensitive_predicates_and_functions():
    assert parse_rule("x not in (1, 2)") == In(Field("x"), (Number(1), Number(2)), True)
    assert parse_rule("x Is Not Null") == IsNull(Field("x"), True)
    assert parse_rule("x between 1 and 2") == Between(Field("x"), Number(1), Number(2))
    assert parse_rule("tags not contains 'a'") == Contains(Field("tags"), String("a"), True)
    assert parse_rule("ORDERS(SINCE: -3d) > 0") == Compare(
        Aggregate("orders", None, RelDate(-3, "d")), ">", Number(0)
    )
    assert parse_rule("x = TRUE") == Compare(Field("x"), "=", Bool(True))
    assert parse_rule("d = TODAY") == Compare(Field("d"), "=", Today())
    # field names are case-sensitive
    assert parse_rule("Frequency = 1") == Compare(Field("Frequency"), "=", Number(1))


# ------------------------------------------------------------------ predicates and values


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("x = 3", Compare(Field("x"), "=", Number(3))),
        ("x == 3", Compare(Field("x"), "=", Number(3))),
        ("x != 3", Compare(Field("x"), "!=", Number(3))),
        ("x <> 3", Compare(Field("x"), "!=", Number(3))),
        ("x > -2.5", Compare(Field("x"), ">", Number(-2.5))),
        ("x >= .5", Compare(Field("x"), ">=", Number(0.5))),
        ("x < 1e3", Compare(Field("x"), "<", Number(1000.0))),
        ("x <= +7", Compare(Field("x"), "<=", Number(7))),
        ("x>=3", Compare(Field("x"), ">=", Number(3))),
        ("s = 'it''s'", None),  # SQL doubling is not an escape: a syntax error (see below)
        ("s = 'it\\'s'", Compare(Field("s"), "=", String("it's"))),
        ('s = "double"', Compare(Field("s"), "=", String("double"))),
        ("s = ''", Compare(Field("s"), "=", String(""))),
        ("s = 'AND OR'", Compare(Field("s"), "=", String("AND OR"))),
        ("b = true", Compare(Field("b"), "=", Bool(True))),
        ("b = false", Compare(Field("b"), "=", Bool(False))),
        ("d = 2026-01-31", Compare(Field("d"), "=", DateLit(dt.date(2026, 1, 31)))),
        ("d > -30d", Compare(Field("d"), ">", RelDate(-30, "d"))),
        ("d > -2w", Compare(Field("d"), ">", RelDate(-2, "w"))),
        ("d > -3M", Compare(Field("d"), ">", RelDate(-3, "m"))),
        ("d > -1y", Compare(Field("d"), ">", RelDate(-1, "y"))),
        ("d < +7d", Compare(Field("d"), "<", RelDate(7, "d"))),
        ("d = today", Compare(Field("d"), "=", Today())),
        ("x BETWEEN 1 AND 5", Between(Field("x"), Number(1), Number(5))),
        ("x NOT BETWEEN -1y AND today", Between(Field("x"), RelDate(-1, "y"), Today(), True)),
        ("x IN (1)", In(Field("x"), (Number(1),))),
        ("c IN ('US', \"FR\")", In(Field("c"), (String("US"), String("FR")))),
        ("c NOT IN ('US')", In(Field("c"), (String("US"),), True)),
        ("tags CONTAINS 'vip'", Contains(Field("tags"), String("vip"))),
        ("x IS NULL", IsNull(Field("x"))),
        ("x IS NOT NULL", IsNull(Field("x"), True)),
        ("`odd col` = 1", Compare(Field("odd col"), "=", Number(1))),
        (
            "x = 1 # a comment\n AND y = 2",
            And(Compare(Field("x"), "=", Number(1)), Compare(Field("y"), "=", Number(2))),
        ),
    ],
)
def test_predicates_and_values(text, tree):
    if tree is None:
        with pytest.raises(RuleSyntaxError):
            parse_rule(text)
    else:
        assert parse_rule(text) == tree


def test_aggregates():
    assert parse_rule("orders(since: -90d) >= 2") == Compare(
        Aggregate("orders", None, RelDate(-90, "d")), ">=", Number(2)
    )
    assert parse_rule("revenue() > 200") == Compare(
        Aggregate("revenue", None, None), ">", Number(200)
    )
    tree = parse_rule(
        "revenue(channel: 'app', since: 2026-01-31, category: ('shoes', 'boots')) > 200"
    )
    assert tree == Compare(
        Aggregate(
            "revenue",
            None,
            DateLit(dt.date(2026, 1, 31)),
            (("category", (String("shoes"), String("boots"))), ("channel", (String("app"),))),
        ),
        ">",
        Number(200),
    )
    assert parse_rule("orders(category: ['a', 'b']) > 0") == parse_rule(
        "orders(category: ('a', 'b')) > 0"
    )
    assert parse_rule("events('email_open', since: -30d) = 0") == Compare(
        Aggregate("events", "email_open", RelDate(-30, "d")), "=", Number(0)
    )
    assert parse_rule("events('site_visit') BETWEEN 1 AND 3") == Between(
        Aggregate("events", "site_visit", None), Number(1), Number(3)
    )
    assert parse_rule("orders(since: today) > 0").operand.since == Today()


# ------------------------------------------------------------------ relative dates


@pytest.mark.parametrize(
    ("as_of", "amount", "unit", "expected"),
    [
        (dt.date(2026, 3, 31), -1, "m", dt.date(2026, 2, 28)),
        (dt.date(2024, 3, 31), -1, "m", dt.date(2024, 2, 29)),
        (dt.date(2026, 3, 31), -30, "d", dt.date(2026, 3, 1)),
        (dt.date(2026, 1, 31), -1, "m", dt.date(2025, 12, 31)),
        (dt.date(2026, 5, 31), -3, "m", dt.date(2026, 2, 28)),
        (dt.date(2024, 2, 29), -1, "y", dt.date(2023, 2, 28)),
        (dt.date(2024, 2, 29), -4, "y", dt.date(2020, 2, 29)),
        (dt.date(2026, 1, 15), -2, "w", dt.date(2026, 1, 1)),
        (dt.date(2026, 1, 31), 1, "m", dt.date(2026, 2, 28)),
        (dt.date(2026, 12, 31), -12, "m", dt.date(2025, 12, 31)),
        (dt.date(2026, 1, 10), -13, "m", dt.date(2024, 12, 10)),
    ],
)
def test_relative_dates(as_of, amount, unit, expected):
    assert resolve_date(RelDate(amount, unit), as_of) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 12, 31)),
    st.integers(-400, 400),
    st.sampled_from("dwmy"),
)
def test_relative_dates_match_reference(as_of, amount, unit):
    amount = amount if unit in "dw" else amount // 20
    assert resolve_date(RelDate(amount, unit), as_of) == _r_shift(as_of, amount, unit)


def test_today_and_absolute_dates():
    as_of = dt.date(2026, 3, 31)
    assert resolve_date(Today(), as_of) == as_of
    assert resolve_date(DateLit(dt.date(2020, 1, 1)), as_of) == dt.date(2020, 1, 1)
    assert add_months(dt.date(2026, 1, 31), 1) == dt.date(2026, 2, 28)


# ------------------------------------------------------------------ syntax errors


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("frequency >= AND 3", 1, 14, "expected a value"),
        ("frequency >=", 1, 13, "unexpected end of rule; expected a value"),
        ("x 3", 1, 3, "expected an operator"),
        ("(a = 1", 1, 7, "')' to close the '(' at line 1, column 1"),
        ("a = 1)", 1, 6, "unmatched ')'"),
        ("a = 1 AND", 1, 10, "expected a condition"),
        ("a = 1 OR OR b = 2", 1, 10, "expected a condition"),
        ("x = null", 1, 5, "IS NULL"),
        ("x = 'abc", 1, 5, "unterminated string"),
        ("x = 2026-02-30", 1, 5, "invalid date"),
        ("x > 30d", 1, 5, "needs a sign: write -30d"),
        ("x IN ()", 1, 7, "expected a value"),
        ("x IN (1, 2", 1, 11, "',' or ')'"),
        ("x IN 1", 1, 6, "'(' to start a list"),
        ("x BETWEEN 1 OR 2", 1, 13, "AND between the two bounds"),
        ("x IS 3", 1, 6, "NULL or NOT NULL"),
        ("x NOT 3", 1, 7, "BETWEEN, IN or CONTAINS after NOT"),
        ("a = 1 AND\n  b >", 2, 6, "expected a value"),
        ("a = 1 AND\n\n  b = $", 3, 7, "unexpected character '$'"),
        ("x.y = 1", 1, 2, "unexpected character '.'"),
        ("s IN (bob)", 1, 7, "quote text: 'bob'"),
        ("foo(1) > 2", 1, 1, "unknown function 'foo'"),
        ("orders(since: +3d) > 1", 1, 15, "after the scoring date"),
        ("orders(since: 5) > 1", 1, 15, "since: takes a date"),
        ("orders(since: -3d, since: -4d) > 1", 1, 20, "given twice"),
        ("orders(order_date: 1) > 1", 1, 8, "use since:"),
        ("orders(channel: -3d) > 1", 1, 8, "not dates"),
        ("events(since: -3d) > 1", 1, 8, "the event type"),
        ("segment(1)", 1, 9, "a segment name"),
        ("", 1, 1, "empty rule"),
        ("   ", 1, 4, "empty rule"),
        ("a = 1 b = 2", 1, 7, "AND, OR or the end of the rule"),
        ("IS NULL", 1, 1, "expected a condition"),
        ("NULL", 1, 1, "NULL is not a condition"),
        ("x = 1 = 2", 1, 7, "AND, OR or the end of the rule"),
    ],
)
def test_syntax_errors(text, line, column, fragment):
    with pytest.raises(RuleSyntaxError) as info:
        parse_rule(text)
    err = info.value
    assert (err.line, err.column) == (line, column)
    assert err.rule == text
    message = str(err)
    assert "\n" not in message  # one line, whatever the rule
    assert message.startswith(f"syntax error at line {line}, column {column}: ")
    assert fragment in message
    source = text.split("\n")[line - 1]
    before, after = source[: column - 1][-30:], source[column - 1 :][:30]
    assert (repr(before) + " ^ ") in message
    assert repr(after) in message if after else message.endswith("^ (end of rule)")
    assert isinstance(err, RuleError)


def test_syntax_error_shows_the_neighbourhood_of_a_long_rule():
    rule = " or ".join(f"frequency > {i}" for i in range(2000)) + " or frequency >> 3"
    with pytest.raises(RuleSyntaxError) as info:
        parse_rule(rule)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    assert "'…requency > 1999 or frequency >' ^ '> 3'" in message


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('ls')",
        "eval('1')",
        "x = os.system('rm')",
        "x = {'a': 1}",
        "x = [1]",
        "x = lambda: 1",
        "x = 1; y = 2",
        "x = `a",
        "open('/etc/passwd')",
        "x = 1 % 2",
        "x = 2 ** 3",
        "x = 1 + + ",
        "x = f'{y}'",
    ],
)
def test_untrusted_text_is_a_syntax_error(text):
    with pytest.raises(RuleSyntaxError):
        parse_rule(text)


def test_depth_limit():
    deep = "(" * (MAX_DEPTH + 5) + "a = 1" + ")" * (MAX_DEPTH + 5)
    with pytest.raises(RuleSyntaxError, match="nests deeper"):
        parse_rule(deep)
    with pytest.raises(RuleSyntaxError, match="nests deeper"):
        parse_rule("NOT " * (MAX_DEPTH + 5) + "a = 1")
    ok = "(" * 50 + "a = 1" + ")" * 50
    assert parse_rule(ok) == A


def test_non_string_rule():
    with pytest.raises(RuleSyntaxError, match="must be a string"):
        parse_rule(3)  # type: ignore[arg-type]


# ------------------------------------------------------------------ render round trip

_names = st.sampled_from(["a", "b", "frequency", "last_order_date", "odd col"])
_values = st.one_of(
    st.integers(-1000, 1000).map(Number),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(Number),
    st.text(max_size=5).map(String),
    st.booleans().map(Bool),
    st.dates(min_value=dt.date(1000, 1, 1)).map(DateLit),
    st.builds(RelDate, st.integers(-99, 99), st.sampled_from("dwmy")),
    st.just(Today()),
)
_filter_values = st.one_of(
    st.integers(-5, 5).map(Number), st.text(max_size=3).map(String), st.booleans().map(Bool)
)
_since = st.one_of(
    st.none(),
    st.just(Today()),
    st.dates(min_value=dt.date(1000, 1, 1)).map(DateLit),
    st.builds(RelDate, st.integers(-99, 0), st.sampled_from("dwmy")),
)
_aggregates = st.builds(
    lambda func, event, since, filters: Aggregate(
        func, event if func == "events" else None, since, tuple(sorted(filters.items()))
    ),
    st.sampled_from(["orders", "revenue", "events"]),
    st.text(min_size=1, max_size=5),
    _since,
    st.dictionaries(
        st.sampled_from(["category", "channel", "qty"]),
        st.lists(_filter_values, min_size=1, max_size=3).map(tuple),
        max_size=2,
    ),
)
_operands = st.one_of(_names.map(Field), _aggregates)
_predicates = st.one_of(
    st.builds(Compare, _operands, st.sampled_from(["=", "!=", ">", ">=", "<", "<="]), _values),
    st.builds(Between, _operands, _values, _values, st.booleans()),
    st.builds(In, _operands, st.lists(_values, min_size=1, max_size=3).map(tuple), st.booleans()),
    st.builds(Contains, _operands, _values, st.booleans()),
    st.builds(IsNull, _operands, st.booleans()),
    st.builds(IsTrue, _operands),
    st.builds(Const, st.booleans()),
    st.builds(SegmentRef, st.sampled_from(["vip", "at_risk"])),
)
_trees = st.recursive(
    _predicates,
    lambda kids: st.one_of(
        st.builds(And, kids, kids), st.builds(Or, kids, kids), st.builds(Not, kids)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(_trees)
def test_render_round_trip(tree):
    assert parse_rule(render(tree)) == tree


@pytest.mark.parametrize("text", ["a\nb", "tab\there", "back\\slash", "it's", "x\\ny"])
def test_render_round_trip_escapes(text: str) -> None:
    from fastseg.rules.ast import String, render_value

    tree = parse_rule("tags CONTAINS " + render_value(String(text)))
    assert tree.value == String(text)
