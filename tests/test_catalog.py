"""Catalogs: TOML loading and validation, merging, the built-in catalog and its generated doc."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from fastseg.errors import InputError, RuleError
from fastseg.rules import (
    Catalog,
    GroupDef,
    SegmentDef,
    builtin_catalog,
    builtin_markdown,
    check_catalog,
    compile_catalog,
    load_catalog,
    parse_rule,
    required_aggregates,
    scores_schema,
)
from fastseg.rules.compile import RFM_GROUPS

AS_OF = dt.date(2026, 3, 31)
DOCS = Path(__file__).resolve().parents[1] / "docs"

GOOD = """
[[segment]]
name = "vip"
description = "Top spenders."
rule = "m_score = 5 AND recency_days <= 90"

[[segment]]
name = "loyal"
rule = '''
frequency >= 3   # three or more orders
AND NOT segment(vip)
'''

[[group]]
name = "tier"
segments = ["vip", "loyal"]
"""


def test_load_text_and_file(tmp_path):
    cat = load_catalog(GOOD)
    assert cat.names == ("vip", "loyal")
    assert cat.get("vip").description == "Top spenders."
    assert cat.get("loyal").description == ""
    assert cat.groups == (GroupDef("tier", ("vip", "loyal"), "other"),)
    path = tmp_path / "cat.toml"
    path.write_text(GOOD)
    assert load_catalog(path) == cat
    assert load_catalog(str(path)) == cat
    assert load_catalog(GOOD.encode()) == cat
    assert check_catalog(cat) == []


def test_missing_file():
    with pytest.raises(InputError, match="catalog file 'nope.toml' not found"):
        load_catalog("nope.toml")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[[segment]]\nname = 'a'\nrules = 'x > 1'", "unknown key 'rules'; did you mean 'rule'?"),
        ("[[segment]]\nname = 'a'", "segment 'a': missing key 'rule'"),
        ("[[segment]]\nrule = 'x > 1'", "segment #1: missing key 'name'"),
        ("[[segments]]\nname = 'a'\nrule = 'x'", "unknown key 'segments'; did you mean 'segment'?"),
        ("[segment]\nname = 'a'\nrule = 'x'", "write each segment as a [[segment]] table"),
        ("[[segment]]\nname = 'VIP'\nrule = 'x > 1'", "segment name 'VIP' is not valid"),
        ("[[segment]]\nname = '1st'\nrule = 'x > 1'", "e.g. '_1st'"),
        ("[[segment]]\nname = 'a b'\nrule = 'x > 1'", "e.g. 'a_b'"),
        ("[[segment]]\nname = 'a'\nrule = ''", "rule must be a non-empty string"),
        ("[[segment]]\nname = 'a'\nrule = 3", "rule must be a non-empty string"),
        (
            "[[segment]]\nname = 'a'\nrule = 'x > 1'\n[[segment]]\nname = 'a'\nrule = 'x > 2'",
            "name 'a' is used by two segments",
        ),
        (
            "[[segment]]\nname = 'a'\nrule = 'x > 1'\n[[group]]\nname = 'a'\nsegments = ['a']",
            "name 'a' is used by a segment and a group",
        ),
        ("[[group]]\nname = 'g'\nsegments = []", "group 'g' lists no segment"),
        ("[[group]]\nname = 'g'\nsegments = 'a'", "segments must be a list"),
        ("[[group]]\nname = 'g'\nsegments = ['a', 'a']", "lists segment 'a' twice"),
        ("[[group]]\nname = 'g'\nsegments = ['a']\nfallback = 'a'", "fallback 'a' is also one"),
        ("[[group]]\nname = 'g'\nsegments = ['a']\nfallback = 'Other'", "fallback name 'Other'"),
        (
            "[[group]]\nname = 'g'\nsegment = ['a']",
            "unknown key 'segment'; did you mean 'segments'?",
        ),
        ("[[segment]\nname = 'a'", "invalid TOML"),
    ],
)
def test_catalog_errors(text, fragment):
    with pytest.raises(RuleError) as info:
        load_catalog(text)
    assert fragment in str(info.value)
    assert str(info.value).startswith("catalog: ")


def test_rules_are_not_parsed_at_load_but_checked():
    cat = load_catalog("[[segment]]\nname = 'a'\nrule = 'x >'\n")
    problems = check_catalog(cat)
    assert len(problems) == 1 and problems[0].startswith("segment 'a': syntax error")


def test_merge_user_wins_in_place():
    base = Catalog(
        (SegmentDef("vip", "old", "m_score = 5"), SegmentDef("big", "", "segment(vip)")),
        (GroupDef("g", ("vip",)),),
    )
    user = Catalog((SegmentDef("vip", "new", "m_score >= 4"), SegmentDef("mine", "", "true")))
    merged = base.merge(user)
    assert merged.names == ("vip", "big", "mine")
    assert merged.get("vip").description == "new"
    assert merged.groups == base.groups
    with pytest.raises(RuleError, match="'vip' is defined in both catalogs"):
        base.merge(user, on_conflict="error")
    with pytest.raises(RuleError, match="clashes with a group"):
        base.merge(Catalog((SegmentDef("g", "", "true"),)))
    with pytest.raises(RuleError, match="no segment 'vp' in the catalog; did you mean 'vip'"):
        merged.get("vp")


def test_subset_keeps_dependencies():
    cat = load_catalog(GOOD).merge(Catalog((SegmentDef("other_one", "", "true"),)))
    sub = cat.subset(["loyal"])
    assert sub.names == ("vip", "loyal") and sub.groups == ()
    assert cat.subset(["tier"]).groups == cat.groups
    with pytest.raises(RuleError, match="did you mean 'loyal'"):
        cat.subset(["loyall"])


def test_to_toml_round_trip():
    cat = builtin_catalog().merge(
        Catalog((SegmentDef("odd", 'quote " and \\ and é', "s = 'it\\'s' OR t = \"x\""),))
    )
    again = load_catalog(cat.to_toml(), builtin=True)
    assert again.groups == cat.groups
    for a, b in zip(again.segments, cat.segments, strict=True):
        assert (a.name, a.description, a.rule) == (b.name, b.description, b.rule)


# ------------------------------------------------------------------ built-in catalog


def test_builtin_catalog_contents():
    cat = builtin_catalog()
    assert len(cat.segments) >= 30
    assert all(s.builtin and s.description for s in cat.segments)
    for name in [
        "recent_purchasers", "active", "high_spenders", "one_timers", "loyal", "repeat_buyers",
        "vip", "new_customers", "at_risk", "dormant", "lapsed", "win_back", "email_subscribers",
        "engaged_subscribers", "unengaged_subscribers", "sms_subscribers", "big_ticket_buyers",
        "discount_seekers", "frequent_returners", "window_shoppers", "checkout_abandoners",
        "prospects", "age_25_34", "eu_customers",
    ]:  # fmt: skip
        cat.get(name)
    assert {f"rfm_{g}" for g in RFM_GROUPS} <= set(cat.names)
    assert {g.name for g in cat.groups} == {"lifecycle", "rfm"}
    for seg in cat.segments:
        parse_rule(seg.rule)
    assert check_catalog(cat) == []
    assert check_catalog(cat, scores_schema()) == []


def test_builtin_compiles_against_full_schema():
    cat = builtin_catalog()
    compiled = compile_catalog(cat, scores_schema(), AS_OF, missing="error")
    assert compiled.skipped == ()
    assert len(compiled.segments) == len(cat.segments)
    assert {g.name for g in compiled.groups} == {"lifecycle", "rfm"}
    assert compiled.aggregates == ()  # built-ins only use precomputed columns
    assert required_aggregates(cat) == ()
    keys = [a.key for a in compiled.atoms]
    assert len(keys) == len(set(keys))


def test_builtin_skips_segments_without_their_fields():
    cat = builtin_catalog()
    core = scores_schema(category=False, discount=False, profile=False, events=False)
    compiled = compile_catalog(cat, core, AS_OF, missing="error")
    skipped = dict(compiled.skipped)
    assert skipped["email_subscribers"] == "missing fields: email_opt_in"
    assert skipped["window_shoppers"] == "missing fields: site_visit_30d, product_view_30d"
    assert skipped["multi_category"] == "missing fields: distinct_categories"
    assert "vip" not in skipped and "rfm_champions" not in skipped
    assert {g.name for g in compiled.groups} == {"lifecycle", "rfm"}
    # the core segments still evaluate on a tiny frame
    frame = pl.DataFrame(
        {
            "recency_days": [0, 100, None],
            "frequency": [4, 1, 0],
            "first_order_date": [dt.date(2025, 1, 1), dt.date(2025, 12, 1), None],
        }
    )
    small = compile_catalog(cat.subset(["lifecycle"]), dict(core) | dict(frame.schema), AS_OF)
    assert [s.name for s in small.segments][-1] == "lapsed"


def test_builtin_with_string_customer_ids_and_profile_only():
    schema = scores_schema(events=False, customer_id=pl.String())
    compiled = compile_catalog(builtin_catalog(), schema, AS_OF)
    assert {name for name, _ in compiled.skipped} == {
        "engaged_subscribers", "unengaged_subscribers", "window_shoppers", "cart_abandoners",
        "checkout_abandoners",
    }  # fmt: skip


def test_segments_doc_is_up_to_date():
    expected = builtin_markdown()
    path = DOCS / "segments.md"
    assert path.read_text(encoding="utf-8") == expected, (
        "docs/segments.md is stale: regenerate it with "
        "python -c 'from fastseg.rules.catalog import builtin_markdown; "
        'print(builtin_markdown(), end="")\' > docs/segments.md'
    )
    for seg in builtin_catalog().segments:
        assert f"`{seg.name}`" in expected


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("customer_id", r"taken by the output column of that name \(the wide membership"),
        ("segment", "overlaps.csv labels its rows in a column 'segment'"),
    ],
)
def test_reserved_segment_names(name: str, message: str) -> None:
    text = f'[[segment]]\nname = "{name}"\nrule = "frequency >= 1"\n'
    with pytest.raises(RuleError, match=message):
        load_catalog(text)
