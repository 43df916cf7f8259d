"""Segment evaluation (fastseg.segmenting) against plain Polars filters (tests/reference.py)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastseg import segmenting as sg
from fastseg.errors import InputError, ParameterError, SchemaError
from fastseg.kernels import bitset as bs
from tests.reference import (
    bitset_sets_ref,
    groups_ref,
    segment_filters_ref,
    segment_summary_ref,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- hand-made compiled catalogs


@dataclass(frozen=True)
class Atom:
    key: str
    fields: tuple[str, ...]
    predicate: Any

    def expr(self) -> pl.Expr:
        return self.predicate


@dataclass(frozen=True)
class Seg:
    name: str
    description: str
    rule: str
    program: np.ndarray
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    name: str
    segments: tuple[int, ...]
    fallback: str


@dataclass(frozen=True)
class Catalog:
    as_of: Any
    atoms: tuple
    segments: tuple
    groups: tuple = ()
    skipped: tuple = ()
    aggregates: tuple = ()


ATOMS = (
    Atom("r>=4", ("r_score",), (pl.col("r_score") >= 4).fill_null(False)),
    Atom("f>=2", ("frequency",), pl.col("frequency") >= 2),
    Atom("rec<=90", ("recency_days",), (pl.col("recency_days") <= 90).fill_null(False)),
    Atom("rec null", ("recency_days",), pl.col("recency_days").is_null()),
    Atom("m>=100", ("monetary",), pl.col("monetary") >= 100.0),
    Atom("vip tag", ("country",), (pl.col("country") == "DE").fill_null(False)),
)


def P(*rows: tuple[int, int]) -> np.ndarray:
    return np.array(rows, dtype=np.int32).reshape(-1, 2)


A, S, AND, OR, NOT, TRUE, FALSE = 0, 1, 2, 3, 4, 5, 6
SEGMENTS = (
    Seg("active", "recent", "", P((A, 2))),
    Seg("loyal", "two plus", "", P((A, 1), (A, 0), (AND, 0))),
    Seg("big", "spenders", "", P((A, 4), (A, 5), (OR, 0))),
    Seg("vip", "active loyal big", "", P((S, 0), (S, 1), (AND, 0), (S, 2), (AND, 0))),
    Seg("lapsed", "not active, ordered", "", P((A, 2), (NOT, 0), (A, 3), (NOT, 0), (AND, 0))),
    Seg(
        "prospects",
        "never ordered",
        "",
        P(
            (A, 3),
        ),
    ),
    Seg(
        "everyone",
        "all",
        "",
        P(
            (TRUE, 0),
        ),
    ),
    Seg("nobody", "none", "", P((FALSE, 0), (A, 0), (OR, 0), (A, 0), (NOT, 0), (AND, 0))),
)
GROUPS = (Group("tier", (3, 1, 0), "other"), Group("status", (5, 4, 0), "rest"))
CATALOG = Catalog(None, ATOMS, SEGMENTS, GROUPS, (("skipped_one", "missing fields: x"),))


def make_scores(n: int, seed: int = 0, *, string_ids: bool = False) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    freq = rng.integers(0, 5, n)
    ordered = freq > 0
    recency = pl.Series("recency_days", rng.integers(0, 400, n)).set(pl.Series(~ordered), None)
    ids = rng.permutation(n) * 7 + 3  # unsorted, not dense
    country = pl.Series("country", rng.choice(["DE", "FR", "US"], n)).set(
        pl.Series(rng.random(n) < 0.2), None
    )
    return pl.DataFrame(
        {
            "customer_id": [f"c{i}" for i in ids] if string_ids else ids.astype(np.int64),
            "recency_days": recency,
            "frequency": freq.astype(np.int64),
            "monetary": np.round(rng.gamma(2.0, 60.0, n) * ordered - 5 * (rng.random(n) < 0.1), 2),
            "r_score": pl.Series(rng.integers(1, 6, n).astype(np.uint8)).set(
                pl.Series(~ordered), None
            ),
            "country": country,
        },
        schema_overrides={"customer_id": pl.String if string_ids else pl.Int64},
    )


def _members_of(res: sg.SegmentResult) -> list[set[int]]:
    return bitset_sets_ref(res.bitsets, res.n_customers)


# ---------------------------------------------------------------- pack_frame


@pytest.mark.parametrize("n", [0, 1, 7, 8, 63, 64, 65, 1000])
def test_pack_frame_equals_values_with_nulls_false(n):
    rng = np.random.default_rng(n)
    vals = rng.random(n) < 0.5
    nulls = rng.random(n) < 0.3
    frame = pl.DataFrame(
        {
            "a": pl.Series(vals).set(pl.Series(nulls), None)
            if n
            else pl.Series([], dtype=pl.Boolean),
            "b": pl.Series(~vals, dtype=pl.Boolean),
        }
    )
    words = sg.pack_frame(frame)
    assert words.shape == (2, (n + 63) // 64)
    np.testing.assert_array_equal(bs.unpack(words, n), np.stack([vals & ~nulls, ~vals]))


def test_pack_frame_sliced_and_chunked_columns():
    base = pl.Series("x", np.arange(300) % 3 == 0)
    for offset in (0, 3, 8, 13):
        s = base.slice(offset, 200)  # bitmap at a non-zero (possibly unaligned) bit offset
        words = sg.pack_frame(s.to_frame())
        np.testing.assert_array_equal(bs.unpack(words, 200)[0], s.to_numpy())
    chunked = pl.concat([base.slice(0, 70), base.slice(5, 99)], rechunk=False)
    words = sg.pack_frame(chunked.to_frame())
    np.testing.assert_array_equal(bs.unpack(words, 169)[0], chunked.to_numpy())


def test_pack_frame_rejects_non_boolean():
    with pytest.raises(ParameterError, match="Boolean"):
        sg.pack_frame(pl.DataFrame({"a": [1, 2]}))


# ---------------------------------------------------------------- evaluate vs Polars filters


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 130, 1000])
def test_evaluate_equals_polars_filters(n):
    scores = make_scores(n, seed=n)
    res = sg.evaluate(scores, CATALOG)
    expected = segment_filters_ref(scores, CATALOG)
    assert _members_of(res) == expected
    assert res.sizes.tolist() == [len(s) for s in expected]
    assert res.names == tuple(s.name for s in SEGMENTS)
    assert res.bitsets.shape == (len(SEGMENTS), (n + 63) // 64)
    assert res.skipped == (("skipped_one", "missing fields: x"),)


@st.composite
def random_case(draw):
    n = draw(st.sampled_from([0, 1, 63, 64, 65, 129]) | st.integers(0, 260))
    seed = draw(st.integers(0, 2**32 - 1))
    n_seg = draw(st.integers(1, 6))
    progs = []
    for s in range(n_seg):
        prog: list[tuple[int, int]] = []
        depth = 0
        for _ in range(draw(st.integers(1, 9))):
            c = draw(
                st.sampled_from(["push"] + ["not"] * (depth >= 1) + ["and", "or"] * (depth >= 2))
            )
            if c == "push":
                kind = draw(
                    st.sampled_from(["atom"] * 4 + ["true", "false"] + ["seg"] * 2 * (s > 0))
                )
                if kind == "atom":
                    prog.append((A, draw(st.integers(0, len(ATOMS) - 1))))
                elif kind == "seg":
                    prog.append((S, draw(st.integers(0, s - 1))))
                else:
                    prog.append((TRUE if kind == "true" else FALSE, 0))
                depth += 1
            elif c == "not":
                prog.append((NOT, 0))
            else:
                prog.append((AND if c == "and" else OR, 0))
                depth -= 1
        if depth == 0:
            prog.append((A, 0))
            depth = 1
        prog += [(AND, 0)] * (depth - 1)
        progs.append(P(*prog))
    segs = tuple(Seg(f"s{i}", "", "", p) for i, p in enumerate(progs))
    order = draw(st.permutations(range(n_seg)))
    groups = (Group("g", tuple(order[: draw(st.integers(1, n_seg))]), "none"),)
    return make_scores(n, seed), Catalog(None, ATOMS, segs, groups)


@SETTINGS
@given(random_case())
def test_evaluate_random_programs_equal_reference(case):
    scores, cat = case
    res = sg.evaluate(scores, cat, threads=1)
    expected = segment_filters_ref(scores, cat)
    assert _members_of(res) == expected
    assert res.sizes.tolist() == [len(s) for s in expected]
    # overlaps equal set intersections, diagonal = sizes
    ov = res.overlaps()
    assert ov.columns == ["segment", *res.names]
    for i, a in enumerate(expected):
        assert ov.row(i)[1:] == tuple(len(a & b) for b in expected)
    # groups: exactly one label per customer, first match wins
    g = res.groups()
    spec = cat.groups[0]
    assert g["g"].cast(pl.String).to_list() == groups_ref(
        expected, spec.segments, res.names, spec.fallback, scores.height
    )
    assert g["customer_id"].to_list() == scores["customer_id"].to_list()


# ---------------------------------------------------------------- result tables


def test_members_long_wide_bitsets():
    scores = make_scores(300, seed=3, string_ids=True)
    res = sg.evaluate(scores, CATALOG)
    expected = segment_filters_ref(scores, CATALOG)
    ids = scores["customer_id"].to_list()
    for name, members in zip(res.names, expected, strict=True):
        assert res.members(name).to_list() == [ids[i] for i in sorted(members)]
        assert res.mask(name).to_list() == [i in members for i in range(300)]
    long = res.to_long()
    assert long.columns == ["customer_id", "segment"]
    assert long.schema["segment"] == pl.Enum(list(res.names))
    assert long.schema["customer_id"] == pl.String
    want = [(ids[i], name) for name, m in zip(res.names, expected, strict=True) for i in sorted(m)]
    assert list(zip(long["customer_id"], long["segment"].cast(pl.String), strict=True)) == want
    wide = res.to_wide()
    assert wide.columns == ["customer_id", *res.names]
    assert wide["customer_id"].to_list() == ids
    for name, members in zip(res.names, expected, strict=True):
        assert wide.schema[name] == pl.Boolean
        assert wide[name].to_list() == [i in members for i in range(300)]
    bits = res.to_bitsets()
    assert bits.names == res.names
    assert bits.customers.columns == ["index", "customer_id"]
    assert bits.customers["customer_id"].to_list() == ids
    np.testing.assert_array_equal(bits.words, res.bitsets)
    with pytest.raises(ParameterError, match="unknown segment 'nope'"):
        res.members("nope")


@pytest.mark.parametrize("string_ids", [False, True])
@pytest.mark.parametrize("n", [0, 5, 200])
def test_save_and_load_bitsets(tmp_path, string_ids, n):
    scores = make_scores(n, seed=1, string_ids=string_ids)
    if n:
        scores = scores.with_columns(
            pl.when(pl.int_range(pl.len()) == 2)
            .then(None)
            .otherwise(pl.col("customer_id"))
            .alias("customer_id")
        )
    res = sg.evaluate(scores, CATALOG)
    path = res.save_bitsets(tmp_path / "m.npz")
    loaded = sg.load_bitsets(path)
    assert loaded.names == res.names
    np.testing.assert_array_equal(loaded.words, res.bitsets)
    assert loaded.customers["customer_id"].to_list() == scores["customer_id"].to_list()
    with np.load(path) as z:  # documented format, readable with numpy alone
        assert str(z["format"]) == sg.BITSETS_FORMAT
        assert int(z["n_customers"]) == n
        assert z["words"].dtype == np.dtype("<u8")


def test_load_bitsets_errors(tmp_path):
    bad = tmp_path / "x.npz"
    np.savez(bad, words=np.zeros(1))
    with pytest.raises(InputError, match="not a fastseg-bitsets-1"):
        sg.load_bitsets(bad)
    with pytest.raises(InputError, match="cannot read"):
        sg.load_bitsets(tmp_path / "missing.npz")


@pytest.mark.parametrize("n", [0, 1, 64, 65, 500])
def test_summary_equals_reference(n):
    scores = make_scores(n, seed=7)
    res = sg.evaluate(scores, CATALOG)
    summary = res.summary()
    assert summary.columns == [
        "segment",
        "description",
        "customers",
        "share_customers",
        "revenue",
        "share_revenue",
        "aov",
        "mean_recency_days",
        "mean_frequency",
    ]
    assert summary["segment"].to_list() == list(res.names)
    assert summary["description"].to_list() == [s.description for s in SEGMENTS]
    expected = segment_summary_ref(scores, segment_filters_ref(scores, CATALOG))
    for row, want in zip(summary.iter_rows(named=True), expected, strict=True):
        for key, value in want.items():
            got = row[key]
            if value is None:
                assert got is None, (row["segment"], key)
            else:
                assert got is not None and math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-9), (
                    row["segment"],
                    key,
                    got,
                    value,
                )


def test_summary_without_value_columns():
    scores = make_scores(50, seed=2).select(
        "customer_id", "r_score", "frequency", "recency_days", "country"
    )
    res = sg.evaluate(scores, Catalog(None, ATOMS[:4], SEGMENTS[:2]))
    s = res.summary()
    assert s["revenue"].null_count() == 2 and s["aov"].null_count() == 2
    assert s["mean_frequency"].null_count() == 0


def test_groups_every_customer_once_and_labels():
    scores = make_scores(777, seed=4)
    res = sg.evaluate(scores, CATALOG)
    g = res.groups()
    assert g.columns == ["customer_id", "tier", "status"]
    assert g.schema["tier"] == pl.Enum(["vip", "loyal", "active", "other"])
    expected = segment_filters_ref(scores, CATALOG)
    for spec in GROUPS:
        assert g[spec.name].cast(pl.String).to_list() == groups_ref(
            expected, spec.segments, res.names, spec.fallback, 777
        )
        counts = g[spec.name].value_counts()
        assert counts["count"].sum() == 777


def test_empty_scores_everything_works():
    scores = make_scores(0)
    res = sg.evaluate(scores, CATALOG)
    assert res.sizes.tolist() == [0] * len(SEGMENTS)
    assert res.to_long().height == 0
    assert res.to_wide().height == 0
    assert res.groups().height == 0
    assert res.members("vip").len() == 0
    s = res.summary()
    assert s["customers"].to_list() == [0] * len(SEGMENTS)
    assert s["share_customers"].null_count() == len(SEGMENTS)
    assert res.overlaps().height == len(SEGMENTS)


def test_no_segments():
    res = sg.evaluate(make_scores(10), Catalog(None, (), ()))
    assert res.names == () and res.bitsets.shape == (0, 1)
    assert res.summary().height == 0
    assert res.to_long().height == 0
    assert res.overlaps().columns == ["segment"]
    assert res.to_wide().columns == ["customer_id"]


def test_evaluate_errors():
    with pytest.raises(SchemaError, match="no 'customer_id'"):
        sg.evaluate(make_scores(5).drop("customer_id"), CATALOG)
    with pytest.raises(SchemaError, match="'country'"):
        sg.evaluate(make_scores(5).drop("country"), CATALOG)
    with pytest.raises(ParameterError, match="polars DataFrame"):
        sg.evaluate({"customer_id": [1]}, CATALOG)


def test_threads_give_identical_results():
    scores = make_scores(70_000, seed=9)
    a = sg.evaluate(scores, CATALOG, threads=1)
    b = sg.evaluate(scores, CATALOG, threads=2)
    np.testing.assert_array_equal(a.bitsets, b.bitsets)
    np.testing.assert_array_equal(a.overlap_matrix(), b.overlap_matrix())
    assert a.summary().equals(b.summary()) or np.allclose(
        a.summary()["revenue"].to_numpy(), b.summary()["revenue"].to_numpy()
    )


def test_benchmark_helper_small():
    out = sg.benchmark_segments(300, 12, seed=1, repeat=1)
    for key in ("first_call_ms", "run_ms", "overlaps_ms", "to_long_ms", "polars_filter_ms"):
        assert out[key] >= 0
    assert out["n_customers"] == 300 and out["n_segments"] == 12
    cat = sg.synthetic_catalog(12, 64, seed=1)
    scores = sg.synthetic_scores(300, seed=1)
    assert sg.evaluate(scores, cat).sizes.tolist() == [
        len(s) for s in segment_filters_ref(scores, cat)
    ]


# ---------------------------------------------------------------- end to end through the rules


RULES = {
    "active": ("Ordered in 90 days.", "recency_days <= 90"),
    "loyal": ("Three plus orders.", "frequency >= 3"),
    "big": ("Spent 200 or more.", "monetary >= 200"),
    "vip": ("Active, loyal, big.", "segment(active) AND segment(loyal) AND segment(big)"),
    "lapsed": ("Ordered, not lately.", "NOT segment(active) AND frequency > 0"),
    "euro": ("In DE or FR.", "country IN ('DE', 'FR') OR country IS NULL"),
    "top_r": ("R score 4-5, not DE.", "r_score BETWEEN 4 AND 5 AND NOT country = 'DE'"),
}


def _compiled_rules(scores: pl.DataFrame):
    rules = pytest.importorskip("fastseg.rules.compile")
    catalog_mod = pytest.importorskip("fastseg.rules.catalog")
    catalog = catalog_mod.Catalog(
        segments=tuple(catalog_mod.SegmentDef(k, d, r) for k, (d, r) in RULES.items()),
        groups=(catalog_mod.GroupDef("tier", ("vip", "loyal", "active"), fallback="other"),),
    )
    return rules.compile_catalog(catalog, scores.schema, dt.date(2025, 1, 1))


@pytest.mark.parametrize("n", [0, 1, 64, 65, 999])
def test_end_to_end_rules_parse_compile_evaluate(n):
    scores = make_scores(n, seed=11)
    compiled = _compiled_rules(scores)
    res = sg.evaluate(scores, compiled)
    expected = segment_filters_ref(scores, compiled)
    assert _members_of(res) == expected
    assert res.names == tuple(RULES)
    # the same rules written directly as Polars filters, independent of the compiler
    direct = {
        "active": (pl.col("recency_days") <= 90).fill_null(False),
        "loyal": pl.col("frequency") >= 3,
        "big": pl.col("monetary") >= 200,
        "euro": pl.col("country").is_in(["DE", "FR"]).fill_null(False)
        | pl.col("country").is_null(),
        "top_r": pl.col("r_score").is_between(4, 5).fill_null(False)
        & ~(pl.col("country") == "DE").fill_null(False),
    }
    direct["vip"] = direct["active"] & direct["loyal"] & direct["big"]
    direct["lapsed"] = ~direct["active"] & (pl.col("frequency") > 0)
    indexed = scores.with_row_index("__row")
    for name, expr in direct.items():
        want = set(indexed.filter(expr)["__row"].to_list())
        assert _members_of(res)[res.index(name)] == want, name
    g = res.groups()["tier"].cast(pl.String).to_list()
    assert g == groups_ref(expected, compiled.groups[0].segments, res.names, "other", n)


def test_end_to_end_builtin_catalog():
    rules = pytest.importorskip("fastseg.rules.compile")
    catalog_mod = pytest.importorskip("fastseg.rules.catalog")
    schema = rules.scores_schema(profile=False, events=False, category=False, discount=False)
    n = 400
    rng = np.random.default_rng(0)
    cols: dict[str, pl.Series] = {}
    as_of = dt.date(2025, 6, 30)
    for name, dtype in schema.items():
        if isinstance(dtype, pl.Enum):  # churn_risk
            s = pl.Series(name, rng.choice(dtype.categories.to_list(), n))
        elif dtype == pl.String:
            s = pl.Series(name, rng.choice(["a", "b", "champions", "at_risk"], n))
        elif dtype == pl.Date:
            s = pl.Series(
                name, [as_of - dt.timedelta(days=int(d)) for d in rng.integers(0, 800, n)]
            )
        elif dtype.is_float():
            s = pl.Series(name, rng.gamma(2.0, 80.0, n))
        elif dtype == pl.UInt8:
            s = pl.Series(name, rng.integers(1, 6, n).astype(np.uint8))
        else:
            s = pl.Series(name, rng.integers(0, 12, n).astype(np.int64))
        cols[name] = (
            s.cast(dtype).set(pl.Series(rng.random(n) < 0.1), None)
            if name != "customer_id"
            else s.cast(dtype)
        )
    scores = pl.DataFrame(cols)
    compiled = rules.compile_catalog(
        catalog_mod.builtin_catalog(), scores.schema, as_of, missing="skip"
    )
    assert len(compiled.segments) > 5
    res = sg.evaluate(scores, compiled)
    assert _members_of(res) == segment_filters_ref(scores, compiled)
    assert res.summary().height == len(compiled.segments)
    for gname in res.groups().columns[1:]:
        assert res.groups()[gname].null_count() == 0
