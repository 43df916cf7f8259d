"""Compiler: type checking, atoms, programs (against a row-by-row reference), aggregates."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastseg.errors import ParameterError, RuleError, RuleSyntaxError
from fastseg.rules import (
    OP_AND,
    OP_ATOM,
    OP_NOT,
    OP_OR,
    OP_SEGMENT,
    Catalog,
    SegmentDef,
    aggregate_spec,
    check_catalog,
    compile_catalog,
    parse_rule,
    required_aggregates,
    scores_schema,
)
from fastseg.rules.ast import render
from tests.reference import rpn_eval_ref, rule_mask_ref

AS_OF = dt.date(2026, 3, 31)
NAN = float("nan")


def _cat(*rules: str | tuple[str, str], builtin: bool = False) -> Catalog:
    segs = []
    for i, item in enumerate(rules):
        name, rule = item if isinstance(item, tuple) else (f"s{i}", item)
        segs.append(SegmentDef(name, "", rule, builtin))
    return Catalog(tuple(segs))


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "i": [1, 5, None, 7, 0, 5],
            "u": pl.Series([1, 2, None, 250, 0, 5], dtype=pl.UInt8),
            "f": [1.5, NAN, None, 7.0, -2.0, 5.0],
            "d": [
                dt.date(2026, 3, 31),
                dt.date(2026, 1, 1),
                None,
                dt.date(2025, 3, 31),
                dt.date(2026, 3, 1),
                dt.date(2026, 2, 28),
            ],
            "ts": [
                dt.datetime(2026, 3, 1, 0, 0),
                dt.datetime(2026, 2, 28, 23, 59),
                None,
                dt.datetime(2026, 3, 31, 12),
                dt.datetime(2026, 3, 1, 0, 0, 1),
                dt.datetime(2020, 1, 1),
            ],
            "b": [True, False, None, True, False, None],
            "s": ["US", "FR", None, "Shoes & bags", "", "us"],
            "l": [["vip", "a"], [], None, ["b", None], ["vip"], ["VIP"]],
        },
        schema_overrides={"ts": pl.Datetime("us")},
    )


def _evaluate(compiled, frame: pl.DataFrame) -> dict[str, np.ndarray]:
    masks = [frame.select(a.expr()).to_series().to_numpy() for a in compiled.atoms]
    for m in masks:
        assert m.dtype == np.bool_  # never null
    seg_masks: list[np.ndarray] = []
    for seg in compiled.segments:
        assert seg.program.dtype == np.int32 and seg.program.ndim == 2
        assert seg.program.shape[1] == 2 and seg.program.flags.c_contiguous
        seg_masks.append(rpn_eval_ref(seg.program, masks, seg_masks, frame.height))
    return {seg.name: m for seg, m in zip(compiled.segments, seg_masks, strict=True)}


def _check_against_reference(catalog: Catalog, frame: pl.DataFrame) -> None:
    compiled = compile_catalog(catalog, frame.schema, AS_OF)
    got = _evaluate(compiled, frame)
    trees = {s.name: parse_rule(s.rule) for s in catalog.segments}
    for seg in catalog.segments:
        expected = rule_mask_ref(trees[seg.name], frame, AS_OF, trees)
        np.testing.assert_array_equal(got[seg.name], expected, err_msg=seg.rule)


# ------------------------------------------------------------------ null semantics


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("i > 4", [False, True, False, True, False, True]),
        ("NOT (i > 4)", [True, False, True, False, True, False]),
        ("i != 5", [True, False, False, True, True, False]),
        ("i NOT IN (5, 7)", [True, False, False, False, True, False]),
        ("NOT i IN (5, 7)", [True, False, True, False, True, False]),
        ("i IS NULL", [False, False, True, False, False, False]),
        ("i IS NOT NULL", [True, True, False, True, True, True]),
        ("f > 1", [True, False, False, True, False, True]),  # NaN is missing, not large
        ("f IS NULL", [False, True, True, False, False, False]),
        ("f NOT BETWEEN 0 AND 6", [False, False, False, True, True, False]),
        ("b", [True, False, False, True, False, False]),
        ("NOT b", [False, True, True, False, True, True]),
        ("b = false", [False, True, False, False, True, False]),
        ("b != true", [False, True, False, False, True, False]),
        ("s CONTAINS 'S'", [True, False, False, True, False, False]),
        ("s NOT CONTAINS 'S'", [False, True, False, False, True, True]),
        ("l CONTAINS 'vip'", [True, False, False, False, True, False]),
        ("l NOT CONTAINS 'vip'", [False, True, False, True, False, True]),
        ("l IS NULL", [False, False, True, False, False, False]),
        ("d >= -1m", [True, False, False, False, True, True]),
        ("d BETWEEN 2026-01-01 AND 2026-02-28", [False, True, False, False, False, True]),
        ("ts >= -30d", [True, False, False, True, True, False]),
        ("ts < 2026-03-01", [False, True, False, False, False, True]),
        ("ts = 2026-03-01", [True, False, False, False, False, False]),
        ("u > -1", [True, True, False, True, True, True]),
        ("u IN (250, -3, 300)", [False, False, False, True, False, False]),
        ("true", [True] * 6),
        ("false OR i = 0", [False, False, False, False, True, False]),
    ],
)
def test_null_semantics(rule, expected):
    frame = _frame()
    compiled = compile_catalog(_cat(rule), frame.schema, AS_OF)
    got = _evaluate(compiled, frame)["s0"]
    assert got.tolist() == expected
    ref = rule_mask_ref(parse_rule(rule), frame, AS_OF)
    assert ref.tolist() == expected


def test_datetime_with_time_zone():
    frame = pl.DataFrame(
        {"ts": [dt.datetime(2026, 3, 1, 0, 30), dt.datetime(2026, 2, 28, 23, 30), None]}
    ).with_columns(pl.col("ts").dt.replace_time_zone("Europe/Paris").dt.cast_time_unit("ms"))
    compiled = compile_catalog(
        _cat("ts >= 2026-03-01", "ts IN (2026-03-01, 2026-02-28)"), frame.schema, AS_OF
    )
    got = _evaluate(compiled, frame)
    assert got["s0"].tolist() == [True, False, False]
    assert got["s1"].tolist() == [False, False, False]  # midnight only


def test_categorical_and_enum_fields():
    frame = pl.DataFrame(
        {
            "c": pl.Series(["a", "b", None], dtype=pl.Categorical),
            "e": pl.Series(["x", "y", "x"], dtype=pl.Enum(["x", "y"])),
            "lc": pl.Series([["a"], ["b"], None], dtype=pl.List(pl.Categorical)),
        }
    )
    cat = _cat("c = 'a'", "c > 'a'", "e IN ('y')", "lc CONTAINS 'b'", "c CONTAINS 'a'")
    got = _evaluate(compile_catalog(cat, frame.schema, AS_OF), frame)
    assert got["s0"].tolist() == [True, False, False]
    assert got["s1"].tolist() == [False, True, False]
    assert got["s2"].tolist() == [False, True, False]
    assert got["s3"].tolist() == [False, True, False]
    assert got["s4"].tolist() == [True, False, False]


# ------------------------------------------------------------------ programs and atoms


def test_atoms_deduplicated_across_segments():
    cat = _cat(
        ("a", "i >= 3 AND f > 1"),
        ("b", "i >= 3.0 OR NOT f > 1"),
        ("c", "d > -30d AND d > 2026-03-01"),  # same date once resolved
        ("d2", "s IN ('US')"),
        ("e", "s = 'US' AND b AND b = true"),
        ("f2", "i IN (7, 5, 5)"),
        ("g", "i IN (5, 7)"),
    )
    compiled = compile_catalog(cat, _frame().schema, AS_OF)
    keys = [a.key for a in compiled.atoms]
    assert len(keys) == len(set(keys))
    assert keys == [
        "i >= 3",
        "f > 1",
        "d > 2026-03-01",
        "s = 'US'",
        "b = true",
        "i IN (5, 7)",
    ]
    a, b, c, *_ = compiled.segments
    assert a.program.tolist() == [[OP_ATOM, 0], [OP_ATOM, 1], [OP_AND, 0]]
    assert b.program.tolist() == [[OP_ATOM, 0], [OP_ATOM, 1], [OP_NOT, 0], [OP_OR, 0]]
    assert c.program.tolist() == [[OP_ATOM, 2], [OP_ATOM, 2], [OP_AND, 0]]
    assert compiled.atoms[0].fields == ("i",)
    assert compiled.as_of == AS_OF


def test_segment_references_in_dependency_order():
    cat = _cat(
        ("vip", "segment(big) AND segment(active)"),
        ("not_vip", "NOT segment(vip)"),
        ("big", "i >= 5"),
        ("active", "d >= -90d"),
    )
    compiled = compile_catalog(cat, _frame().schema, AS_OF)
    names = [s.name for s in compiled.segments]
    assert names.index("big") < names.index("vip") < names.index("not_vip")
    assert names.index("active") < names.index("vip")
    vip = compiled.segments[compiled.segment_index("vip")]
    assert vip.depends_on == ("big", "active")
    for seg in compiled.segments:
        for op, arg in seg.program.tolist():
            if op == OP_SEGMENT:
                assert arg < compiled.segment_index(seg.name)
    _check_against_reference(cat, _frame())


def test_programs_match_reference_on_handmade_rules():
    rules = [
        "i > 4 AND (f < 6 OR b) AND NOT s IN ('US', 'FR')",
        "NOT (i > 5 OR f IS NULL) AND d >= -3m",
        "l CONTAINS 'vip' OR s CONTAINS 'us' OR ts BETWEEN -60d AND today",
        "i BETWEEN 1 AND 5 AND u NOT BETWEEN 2 AND 100",
        "NOT NOT (b = false OR i != 5)",
        "s >= 'M' AND s < 'zz'",
        "true AND NOT false",
        "d = 2026-03-31 OR d IN (2025-03-31, 2026-02-28) OR d IS NULL",
    ]
    _check_against_reference(_cat(*rules), _frame())


# hypothesis: random rules over random small frames --------------------------------------

_FIELD_VALUES = {
    "i": st.integers(-3, 3).map(str),
    "f": st.sampled_from(["-1.5", "0", "0.5", "2", "1e1"]),
    "d": st.sampled_from(["-1m", "-30d", "today", "2026-03-01", "-1y", "+2w"]),
    "ts": st.sampled_from(["-1m", "today", "2026-03-01"]),
    "b": st.sampled_from(["true", "false"]),
    "s": st.sampled_from(["'a'", "'b'", "'ab'", "''"]),
}


@st.composite
def _predicate_text(draw) -> str:
    name = draw(st.sampled_from(["i", "f", "d", "ts", "b", "s", "l"]))
    if name == "l":
        word = draw(st.sampled_from(["CONTAINS", "NOT CONTAINS"]))
        value = draw(st.sampled_from(["'a'", "'b'"]))
        return draw(st.sampled_from([f"l {word} {value}", "l IS NULL", "l IS NOT NULL"]))
    value = _FIELD_VALUES[name]
    v1, v2, v3 = draw(value), draw(value), draw(value)
    ops = ["=", "!="] if name == "b" else ["=", "!=", ">", ">=", "<", "<="]
    forms = [
        f"{name} {draw(st.sampled_from(ops))} {v1}",
        f"{name} IN ({v1}, {v2}, {v3})",
        f"{name} NOT IN ({v1}, {v2})",
        f"{name} IS NULL",
        f"{name} IS NOT NULL",
    ]
    if name == "b":
        forms.append("b")
    else:
        lo, hi = sorted([v1, v2], key=lambda t: _sort_key(name, t))
        forms.append(f"{name} {draw(st.sampled_from(['BETWEEN', 'NOT BETWEEN']))} {lo} AND {hi}")
    if name == "s":
        forms.append(f"s {draw(st.sampled_from(['CONTAINS', 'NOT CONTAINS']))} {v1}")
    return draw(st.sampled_from(forms))


def _sort_key(name: str, text: str):
    tree = parse_rule(f"{name} = {text}")
    from tests.reference import _r_value

    return _r_value(tree.value, AS_OF)


_rule_text = st.recursive(
    _predicate_text(),
    lambda kids: st.one_of(
        st.tuples(kids, kids).map(lambda t: f"({t[0]}) AND ({t[1]})"),
        st.tuples(kids, kids).map(lambda t: f"{t[0]} OR {t[1]}"),
        kids.map(lambda t: f"NOT ({t})"),
        st.tuples(kids, kids).map(lambda t: f"{t[0]} AND NOT {t[1]}"),
    ),
    max_leaves=6,
)

_frames = st.integers(0, 8).flatmap(
    lambda n: st.fixed_dictionaries(
        {
            "i": st.lists(st.none() | st.integers(-3, 3), min_size=n, max_size=n),
            "f": st.lists(
                st.none() | st.sampled_from([NAN, -1.5, 0.0, 0.5, 2.0, 10.0]),
                min_size=n,
                max_size=n,
            ),
            "d": st.lists(
                st.none() | st.dates(dt.date(2025, 3, 1), dt.date(2026, 4, 30)),
                min_size=n,
                max_size=n,
            ),
            "ts": st.lists(
                st.none() | st.datetimes(dt.datetime(2026, 2, 27), dt.datetime(2026, 4, 2)),
                min_size=n,
                max_size=n,
            ),
            "b": st.lists(st.none() | st.booleans(), min_size=n, max_size=n),
            "s": st.lists(
                st.none() | st.sampled_from(["a", "b", "ab", "", "ba"]), min_size=n, max_size=n
            ),
            "l": st.lists(
                st.none() | st.lists(st.none() | st.sampled_from(["a", "b"]), max_size=3),
                min_size=n,
                max_size=n,
            ),
        }
    )
)

_SCHEMA = {
    "i": pl.Int64,
    "f": pl.Float64,
    "d": pl.Date,
    "ts": pl.Datetime("us"),
    "b": pl.Boolean,
    "s": pl.String,
    "l": pl.List(pl.String),
}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_rule_text, min_size=1, max_size=4), _frames, st.booleans())
def test_programs_match_reference_random(rules, data, with_refs):
    frame = pl.DataFrame(data, schema=_SCHEMA)
    items: list[tuple[str, str]] = []
    for k, rule in enumerate(rules):
        if with_refs and k > 0:
            rule = f"({rule}) OR NOT segment(s{k - 1})"
        items.append((f"s{k}", rule))
    _check_against_reference(_cat(*items), frame)


# ------------------------------------------------------------------ type errors


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("d > 'x'", "field 'd' is a date (Date); compare it with a date"),
        ("d > '2026-01-31'", "remove the quotes: 2026-01-31"),
        ("d > 5", "not the number 5"),
        (
            "i > -30d",
            "field 'i' is a number (Int64); compare it with a number, not the relative date -30d",
        ),
        ("i = '5'", "remove the quotes: 5"),
        ("i = true", "not the Boolean true"),
        ("i CONTAINS 5", "CONTAINS needs a list or string field"),
        ("d CONTAINS 'x'", "CONTAINS needs a list or string field"),
        ("s = 5", "field 's' is a string (String); compare it with a 'string'"),
        ("s CONTAINS 5", "compare it with a 'string', not the number 5"),
        ("b > true", "use = true, = false or the bare name"),
        ("b BETWEEN true AND false", "BETWEEN needs numbers"),
        ("b = 1", "compare it with true or false"),
        ("l = 'a'", "test its elements with CONTAINS"),
        ("l IN ('a')", "test its elements with CONTAINS"),
        ("l NOT IN ('a')", "NOT CONTAINS"),
        ("l CONTAINS 1", "elements of field 'l'"),
        ("i", "a bare name is only a condition for Boolean fields; write e.g. i > 0"),
        ("s", "write e.g. s = 'x'"),
        ("i IN (1, 'a')", "not the string 'a'"),
        ("i BETWEEN 5 AND 1", "reversed"),
        ("d BETWEEN -30d AND -60d", "reversed"),
        ("ts > 3", "datetime"),
        ("rfm_group = 'champion'", "unknown RFM group 'champion'; did you mean 'champions'?"),
        ("orders(since: -30d) CONTAINS 'x'", "CONTAINS needs a list or string field"),
        ("orders(since: -30d) = 'x'", "orders(since: -30d) is a number"),
        ("orders(channel: ('app', 1)) > 0", "mixes value types"),
        ("revenue(since: -30d) > today", "not today"),
    ],
)
def test_type_errors(rule, fragment):
    schema = dict(_frame().schema) | {"rfm_group": pl.String}
    with pytest.raises(RuleError) as info:
        compile_catalog(_cat(("seg", rule)), schema, AS_OF)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("segment 'seg': ")
    assert fragment in message


def test_type_errors_are_reported_by_check_without_data():
    problems = check_catalog(_cat(("x", "recency_days > -30d"), ("y", "my_profile_col = 3")))
    assert len(problems) == 1
    assert "segment 'x'" in problems[0] and "relative date" in problems[0]
    problems = check_catalog(_cat(("y", "my_profile_col = 3")), schema={"frequency": pl.Int64})
    assert problems == ["segment 'y': unknown field 'my_profile_col'; known fields: frequency"]


# ------------------------------------------------------------------ unknown fields, refs, cycles


def test_unknown_field_suggests_closest():
    with pytest.raises(
        RuleError,
        match=r"unknown field 'frequncy'; did you mean 'frequency'( or 'btyd_frequency')?\?",
    ):
        compile_catalog(_cat(("a", "frequncy > 2")), scores_schema(), AS_OF)
    with pytest.raises(RuleError, match=r"did you mean 'Frequency'"):
        compile_catalog(_cat(("a", "frequency > 2")), {"Frequency": pl.Int64}, AS_OF)
    with pytest.raises(RuleError, match=r"known fields: a, b"):
        compile_catalog(_cat(("a", "zzz > 2")), {"b": pl.Int64, "a": pl.Int64}, AS_OF)


def test_unknown_reference():
    cat = _cat(("vip", "i > 5"), ("a", "segment(vp)"))
    with pytest.raises(
        RuleError, match=r"segment 'a' refers to unknown segment 'vp'; did you mean 'vip'\?"
    ):
        compile_catalog(cat, _frame().schema, AS_OF)
    assert check_catalog(cat) == ["segment 'a' refers to unknown segment 'vp'; did you mean 'vip'?"]


@pytest.mark.parametrize(
    ("rules", "cycle"),
    [
        ((("a", "segment(a)"),), "a -> a"),
        ((("a", "segment(b)"), ("b", "i > 1 AND segment(a)")), "a -> b -> a"),
        (
            (("x", "i > 0"), ("a", "segment(b)"), ("b", "segment(c)"), ("c", "NOT segment(a)")),
            "a -> b -> c -> a",
        ),
    ],
)
def test_cycles(rules, cycle):
    cat = _cat(*rules)
    with pytest.raises(RuleError, match=f"segment cycle: {cycle};"):
        compile_catalog(cat, _frame().schema, AS_OF)
    problems = check_catalog(cat)
    assert len(problems) == 1 and f"segment cycle: {cycle}" in problems[0]


def test_syntax_error_names_the_segment():
    with pytest.raises(RuleSyntaxError) as info:
        compile_catalog(_cat(("vip", "i >")), _frame().schema, AS_OF)
    assert str(info.value).startswith("segment 'vip': syntax error at line 1, column 4")
    assert info.value.column == 4
    problems = check_catalog(_cat(("vip", "i >"), ("ok", "i > 1"), ("bad", "(")))
    assert len(problems) == 2
    assert problems[0].startswith("segment 'vip': syntax error") and "\n" not in problems[0]


def test_group_members_must_exist():
    from fastseg.rules import GroupDef

    cat = Catalog((SegmentDef("vip", "", "i > 1"),), (GroupDef("g", ("vip", "vpi")),))
    with pytest.raises(
        RuleError, match="group 'g' lists unknown segment 'vpi'; did you mean 'vip'"
    ):
        compile_catalog(cat, _frame().schema, AS_OF)
    assert len(check_catalog(cat)) == 1


def test_parameters_are_checked():
    with pytest.raises(ParameterError, match="missing must be"):
        compile_catalog(_cat("i > 1"), _frame().schema, AS_OF, missing="ignore")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="as_of"):
        compile_catalog(_cat("i > 1"), _frame().schema, dt.datetime(2026, 1, 1))  # type: ignore[arg-type]


# ------------------------------------------------------------------ skipping


def test_missing_fields_skip_or_error():
    cat = _cat(
        ("a", "i > 1"),
        ("b", "email_opt_in AND tags CONTAINS 'x'"),
        ("c", "segment(b) OR i > 2"),
        ("d", "NOT segment(a)"),
    )
    schema = _frame().schema
    with pytest.raises(RuleError, match="segment 'b': unknown field 'email_opt_in'"):
        compile_catalog(cat, schema, AS_OF)
    compiled = compile_catalog(cat, schema, AS_OF, missing="skip")
    assert [s.name for s in compiled.segments] == ["a", "d"]
    assert compiled.skipped == (
        ("b", "missing fields: email_opt_in, tags"),
        ("c", "depends on skipped segment 'b'"),
    )
    # segment indices stay consistent after skipping
    assert compiled.segments[1].program.tolist() == [[OP_SEGMENT, 0], [OP_NOT, 0]]


def test_builtin_segments_always_skip_user_segments_error():
    builtin = _cat(("b", "email_opt_in"), builtin=True)
    user = _cat(("u", "i > 1"))
    compiled = compile_catalog(builtin.merge(user), _frame().schema, AS_OF)
    assert compiled.skipped == (("b", "missing fields: email_opt_in"),)
    with pytest.raises(RuleError, match="unknown field 'email_opt_in'"):
        compile_catalog(builtin.merge(_cat(("b", "email_opt_in"))), _frame().schema, AS_OF)
    # a built-in segment whose field has another type in the data is skipped too
    compiled = compile_catalog(_cat(("b", "i = 'x'"), builtin=True), _frame().schema, AS_OF)
    assert compiled.skipped[0][0] == "b" and "type mismatch" in compiled.skipped[0][1]


def test_group_with_skipped_member_is_skipped():
    from fastseg.rules import GroupDef

    cat = Catalog(
        (SegmentDef("a", "", "i > 1"), SegmentDef("b", "", "nope = 1")),
        (GroupDef("g1", ("a", "b")), GroupDef("g2", ("a",), "rest")),
    )
    compiled = compile_catalog(cat, _frame().schema, AS_OF, missing="skip")
    assert [g.name for g in compiled.groups] == ["g2"]
    assert compiled.groups[0].segments == (0,) and compiled.groups[0].fallback == "rest"
    assert ("g1", "group member segment 'b' was skipped") in compiled.skipped


# ------------------------------------------------------------------ aggregates


@pytest.mark.parametrize(
    ("rule", "name", "source", "columns"),
    [
        ("orders(since: -30d) > 0", "orders_30d", "orders", ("_order", "order_date")),
        ("orders(since: -2w) > 0", "orders_2w", "orders", ("_order", "order_date")),
        ("orders(since: -3m) > 0", "orders_3m", "orders", ("_order", "order_date")),
        ("revenue(since: -1y) > 0", "revenue_1y", "orders", ("amount", "order_date")),
        ("orders() > 0", "orders_all", "orders", ("_order",)),
        ("orders(since: today) > 0", "orders_0d", "orders", ("_order", "order_date")),
        (
            "orders(since: 2026-01-31) > 0",
            "orders_since_20260131",
            "orders",
            ("_order", "order_date"),
        ),
        (
            "orders(since: -90d, channel: 'app', category: 'shoes') > 0",
            "orders_90d__category_shoes__channel_app",
            "orders",
            ("_order_key", "amount", "order_date", "category", "channel"),
        ),
        (
            "events('email_open', since: -30d) = 0",
            "email_open_30d",
            "events",
            ("event", "event_date"),
        ),
        ("events('email_open') = 0", "email_open_all", "events", ("event",)),
        (
            "orders(quantity: 2) > 0",
            "orders_all__quantity_2",
            "orders",
            ("_order_key", "amount", "quantity"),
        ),
        (
            "orders(gift: true) > 0",
            "orders_all__gift_true",
            "orders",
            ("_order_key", "amount", "gift"),
        ),
        (
            "orders(since: -180d, until: -90d) > 0",
            "orders_180d_until_90d",
            "orders",
            ("_order", "order_date"),
        ),
        (
            "revenue(since: 2025-11-01, until: 2025-12-31) > 0",
            "revenue_since_20251101_until_20251231",
            "orders",
            ("amount", "order_date"),
        ),
        ("orders(until: yesterday) > 0", "orders_until_1d", "orders", ("_order", "order_date")),
        (
            "units(category: 'shoes', since: -1y) > 0",
            "units_1y__category_shoes",
            "orders",
            ("quantity", "amount", "order_date", "category"),
        ),
        (
            "distinct(category, since: -1y) >= 3",
            "distinct_category_1y",
            "orders",
            ("amount", "category", "order_date"),
        ),
    ],
)
def test_aggregate_names(rule, name, source, columns):
    spec = aggregate_spec(parse_rule(rule).operand)
    assert (spec.name, spec.source, spec.columns) == (name, source, columns)
    assert spec.fill == 0


def test_aggregate_names_are_safe_and_distinct():
    names = {
        aggregate_spec(parse_rule(r).operand).name
        for r in [
            "events('Email Open') > 0",
            "events('email open') > 0",
            "events('email_open') > 0",
            "orders(category: ('a', 'b')) > 0",
            "orders(category: ('b', 'a')) > 0",  # same set, same column
            "orders(category: 'a_b') > 0",
            "orders(category: 'Shoes & Bags') > 0",
            "orders(quantity: -2) > 0",
            "orders(quantity: 2.5) > 0",
        ]
    }
    assert len(names) == 8
    for n in names:
        assert all(c.isalnum() or c == "_" for c in n), n


def test_required_aggregates_deduplicated():
    cat = _cat(
        "orders(since: -90d) >= 2 AND revenue(since: -90d, channel: 'app') > 10",
        "orders(since: -90d) = 0 OR events('site_visit', since: -30d) > 0",
        "orders(since: -30d) > 0",
    )
    names = [s.name for s in required_aggregates(cat, AS_OF)]
    assert names == ["orders_30d", "orders_90d", "revenue_90d__channel_app", "site_visit_30d"]
    present = {"orders_30d", "site_visit_30d"}
    assert [s.name for s in required_aggregates(cat, present=present)] == [
        "orders_90d",
        "revenue_90d__channel_app",
    ]


def test_compile_uses_precomputed_columns_and_collects_the_rest():
    cat = _cat(
        ("a", "orders(since: -30d) > 0 AND revenue(since: -2w) >= 10.5"),
        ("b", "events('email_open', since: -7d) = 0 OR orders(since: -30d) >= 3"),
    )
    schema = {"orders_30d": pl.Int64}
    compiled = compile_catalog(cat, schema, AS_OF)
    assert [s.name for s in compiled.aggregates] == ["email_open_7d", "revenue_2w"]
    assert [a.key for a in compiled.atoms] == [
        "orders_30d > 0",
        "revenue_2w >= 10.5",
        "email_open_7d = 0",
        "orders_30d >= 3",
    ]
    # sources: absent events data or orders columns count as missing
    sources = {"orders": {"order_date": pl.Date, "amount": pl.Float64, "_order": pl.UInt8}}
    compiled = compile_catalog(cat, schema, AS_OF, missing="skip", sources=sources)
    assert [s.name for s in compiled.segments] == ["a"]
    assert compiled.skipped == (
        ("b", "missing events data (for events('email_open', since: -7d))"),
    )
    with pytest.raises(RuleError, match=r"orders column\(s\) 'channel'"):
        compile_catalog(_cat("orders(channel: 'app') > 0"), schema, AS_OF, sources=sources)
    with pytest.raises(RuleError, match="orders column 'channel' is a string"):
        compile_catalog(
            _cat("orders(channel: 3) > 0"),
            schema,
            AS_OF,
            sources={"orders": dict(sources["orders"], channel=pl.String)},
        )


def _orders() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2, 3, 3],
            "order_date": [
                dt.date(2026, 3, 31),
                dt.date(2026, 3, 1),
                dt.date(2026, 2, 28),
                dt.date(2025, 1, 1),
                dt.date(2026, 3, 15),
                dt.date(2026, 3, 20),
                dt.date(2026, 3, 20),
            ],
            "amount": [10.0, 20.0, 40.0, 5.0, -3.0, 7.0, 1.0],
            "_order": pl.Series([1, 1, 1, 1, 0, 1, 0], dtype=pl.UInt8),
            # one key per order: customer 3's two rows are lines of one order, row 5 a refund
            "_order_key": [1, 2, 3, 4, 5, 6, 6],
            "channel": ["app", "web", "app", None, "app", "app", "app"],
            "category": ["shoes", "shoes", "bags", "bags", "shoes", "hats", "shoes"],
        }
    )


def _agg_reference(orders: pl.DataFrame, rule: str, customer: int) -> float:
    node = parse_rule(rule).operand
    from tests.reference import _r_value

    since = None if node.since is None else _r_value(node.since, AS_OF)
    until = None if node.until is None else _r_value(node.until, AS_OF)
    total = 0.0
    keys = set()
    for row in orders.iter_rows(named=True):
        if row["customer_id"] != customer:
            continue
        if since is not None and row["order_date"] < since:
            continue
        if until is not None and row["order_date"] > until:
            continue
        if any(row[c] not in {v.value for v in vals} for c, vals in node.filters):
            continue
        if node.func == "orders" and node.filters:  # an order counts by any matching line
            if row["amount"] >= 0:
                keys.add(row["_order_key"])
            continue
        total += row["amount"] if node.func == "revenue" else row["_order"]
    return total + len(keys)


@pytest.mark.parametrize(
    "rule",
    [
        "orders(since: -30d) > 0",
        "orders() > 0",
        "revenue(since: -30d) > 0",
        "revenue(since: -1m, channel: 'app') > 0",
        "orders(since: -1y, category: ('shoes', 'hats')) > 0",
        "revenue(channel: 'app', category: 'shoes') > 0",
        "orders(since: 2026-03-20) > 0",
        "revenue(since: today) > 0",
        "orders(since: -1y, category: 'shoes') > 0",
        "orders(since: -60d, until: -10d) > 0",
        "revenue(since: 2026-03-01, until: 2026-03-20, channel: 'app') > 0",
        "orders(until: yesterday) > 0",
    ],
)
def test_order_aggregates_against_reference(rule):
    orders = _orders()
    spec = aggregate_spec(parse_rule(rule).operand)
    got = orders.group_by("customer_id").agg(spec.expr(AS_OF)).sort("customer_id")
    assert got.schema[spec.name] == spec.dtype
    for cid, value in got.iter_rows():
        assert math.isclose(value, _agg_reference(orders, rule, cid)), (cid, value)


def test_event_aggregates():
    events = pl.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2],
            "event_date": [dt.date(2026, 3, 31), dt.date(2026, 3, 1), dt.date(2026, 2, 28)]
            + [dt.date(2026, 3, 30), dt.date(2026, 3, 30)],
            "event": ["email_open", "email_open", "email_open", "site_visit", "email_open"],
        }
    )
    spec = aggregate_spec(parse_rule("events('email_open', since: -30d) > 0").operand)
    got = events.group_by("customer_id").agg(spec.expr(AS_OF)).sort("customer_id")
    assert got.rows() == [(1, 2), (2, 1)]
    assert got.schema[spec.name] == pl.Int64


def test_aggregate_programs_evaluate_after_join():
    orders = _orders()
    cat = _cat(("app_fans", "orders(since: -90d, channel: 'app') >= 2"), ("r", "revenue() < 0"))
    scores = pl.DataFrame({"customer_id": [1, 2, 3, 4]})
    compiled = compile_catalog(cat, scores.schema, AS_OF)
    aggs = orders.group_by("customer_id").agg([a.expr(AS_OF) for a in compiled.aggregates])
    scores = scores.join(aggs, on="customer_id", how="left").with_columns(
        [pl.col(a.name).fill_null(a.fill) for a in compiled.aggregates]
    )
    got = _evaluate(compiled, scores)
    assert got["app_fans"].tolist() == [True, False, False, False]
    assert got["r"].tolist() == [False, False, False, False]


def test_builtin_rendering_is_stable():
    # canonical keys of rendered rules do not change on a second round trip
    for rule in ["a = 1 OR b = 2 AND NOT c IS NULL", "x NOT BETWEEN -1y AND today"]:
        assert render(parse_rule(render(parse_rule(rule)))) == render(parse_rule(rule))
