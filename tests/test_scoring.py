"""RFMScorer (fastseg.scoring): quantile and threshold scores, groups, persistence, errors."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from fastseg.errors import DataError, FastsegError, InputError, ParameterError, SchemaError
from fastseg.scoring import (
    GROUP_GRID,
    GROUPS,
    SCORE_COLUMNS,
    NotFittedError,
    RFMScorer,
    group_table,
    parse_thresholds,
    scale_to_five,
)
from tests.reference import (
    RFM_GROUP_CELLS_REF,
    rfm_group_ref,
    rfm_transform_ref,
    threshold_score_ref,
)

SCORE_SCHEMA = {
    "r_score": pl.UInt8,
    "f_score": pl.UInt8,
    "m_score": pl.UInt8,
    "rfm_cell": pl.String,
    "rfm_score": pl.UInt8,
    "rfm_group": pl.String,
}


def features(rows: list[tuple[int | None, int | None, float | None]]) -> pl.DataFrame:
    """A features frame from (recency_days, frequency, monetary) rows; customer ids 1..n."""
    return pl.DataFrame(
        {
            "customer_id": list(range(1, len(rows) + 1)),
            "recency_days": [r[0] for r in rows],
            "frequency": [r[1] for r in rows],
            "monetary": [r[2] for r in rows],
        },
        schema={
            "customer_id": pl.Int64,
            "recency_days": pl.Int64,
            "frequency": pl.Int64,
            "monetary": pl.Float64,
        },
    )


# one customer: scored (recency, frequency >= 1, monetary) or a prospect (null, 0 or null, money)
SCORED_ROW = st.tuples(
    st.integers(0, 40) | st.integers(0, 5000),
    st.integers(1, 6),
    st.sampled_from([10.0, 25.5, 99.99, -5.0, 0.0]) | st.floats(-1e6, 1e9, allow_nan=False),
)
PROSPECT_ROW = st.tuples(st.none(), st.sampled_from([0, None]), st.sampled_from([0.0, -20.0]))
ROWS = st.lists(st.one_of(SCORED_ROW, SCORED_ROW, PROSPECT_ROW), min_size=1, max_size=40).filter(
    lambda rows: any(r[1] for r in rows)
)


# ----------------------------------------------------------------------------- golden example

# The worked example of docs/rfm.md, computed by hand there (k = 5, n = 8 scored customers).
GOLDEN = pl.DataFrame(
    {
        "customer_id": list("ABCDEFGHIJ"),
        "recency_days": [1, 3, 12, 12, 40, 95, 210, 380, None, None],
        "frequency": [1, 9, 4, 2, 4, 2, 6, 1, 0, 0],
        "monetary": [35.0, 1480.0, 520.0, 180.0, 260.0, 180.0, 610.0, 22.5, 0.0, -30.0],
    }
)
GOLDEN_SCORES = {
    "r_score": [5, 4, 3, 3, 2, 2, 1, 1, None, None],
    "f_score": [1, 5, 3, 2, 3, 2, 4, 1, None, None],
    "m_score": [1, 5, 4, 2, 3, 2, 4, 1, None, None],
    "rfm_cell": ["511", "455", "334", "322", "233", "222", "144", "111", None, None],
    "rfm_score": [7, 14, 10, 7, 8, 6, 9, 3, None, None],
    "rfm_group": [
        "new_customers",
        "loyal_customers",
        "need_attention",
        "about_to_sleep",
        "at_risk",
        "hibernating",
        "at_risk",
        "hibernating",
        "prospects",
        "prospects",
    ],
}
GOLDEN_EDGES = {
    "r": [3.0, 12.0, 40.0, 210.0],
    "f": [1.0, 2.0, 4.0, 6.0],
    "m": [35.0, 180.0, 260.0, 610.0],
}


def test_golden_worked_example() -> None:
    scorer = RFMScorer().fit(GOLDEN)
    assert scorer.edges_ == GOLDEN_EDGES
    assert scorer.n_fit_ == 8
    out = scorer.transform(GOLDEN)
    want = pl.DataFrame(GOLDEN_SCORES, schema=SCORE_SCHEMA)
    assert_frame_equal(out.select(SCORE_COLUMNS), want)


# ----------------------------------------------------------------------------- quantile


@settings(max_examples=60, deadline=None)
@given(rows=ROWS, k=st.integers(2, 10))
def test_transform_equals_reference(rows: list[tuple], k: int) -> None:
    frame = features(rows)
    out = RFMScorer(bins=k).fit_transform(frame)
    assert_frame_equal(out.select(SCORE_COLUMNS), rfm_transform_ref(frame, k))
    assert out.schema["r_score"] == pl.UInt8


@settings(max_examples=40, deadline=None)
@given(rows=ROWS, k=st.integers(2, 10), seed=st.integers(0, 2**32 - 1))
def test_row_order_invariance(rows: list[tuple], k: int, seed: int) -> None:
    frame = features(rows)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    a = RFMScorer(bins=k).fit(frame)
    b = RFMScorer(bins=k).fit(shuffled)
    assert a.edges_ == b.edges_
    assert_frame_equal(
        a.transform(frame).sort("customer_id"), b.transform(shuffled).sort("customer_id")
    )


@settings(max_examples=40, deadline=None)
@given(a_rows=ROWS, b_rows=ROWS, k=st.integers(2, 10))
def test_fit_on_a_transform_b(a_rows: list[tuple], b_rows: list[tuple], k: int) -> None:
    """Scores of B against population A: min(k, 1 + floor(k * #{a in A : a < b} / n_A))."""
    a, b = features(a_rows), features(b_rows)
    out = RFMScorer(bins=k).fit(a).transform(b)
    pop = a.filter(pl.col("frequency") >= 1)
    n = pop.height

    def want(col: str, x: float, sign: int) -> int:
        less = sum(1 for v in pop.get_column(col).to_list() if sign * v < sign * x)
        return min(k, 1 + (k * less) // n)

    for row in out.iter_rows(named=True):
        if not row["frequency"]:
            assert row["r_score"] is None
            assert row["rfm_group"] == "prospects"
            continue
        assert row["r_score"] == want("recency_days", row["recency_days"], -1)
        assert row["f_score"] == want("frequency", row["frequency"], 1)
        assert row["m_score"] == want("monetary", row["monetary"], 1)
        assert row["rfm_group"] == rfm_group_ref(row["r_score"], row["f_score"], k)


def test_monotone_in_each_dimension() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    frame = features(
        list(
            zip(
                rng.integers(0, 400, n).tolist(),
                rng.poisson(2, n).tolist(),
                np.round(rng.lognormal(4, 1, n), 2).tolist(),
                strict=True,
            )
        )
    )
    out = RFMScorer(bins=7).fit_transform(frame).filter(pl.col("frequency") >= 1)
    for col, score, descending in (
        ("recency_days", "r_score", True),
        ("frequency", "f_score", False),
        ("monetary", "m_score", False),
    ):
        s = out.sort(col, descending=descending).get_column(score).cast(pl.Int64)
        assert (s.diff().drop_nulls() >= 0).all()
        assert out.group_by(col).agg(pl.col(score).n_unique()).get_column(score).max() == 1


def test_one_customer_and_all_equal() -> None:
    one = features([(5, 2, 10.0), (None, 0, 0.0)])
    out = RFMScorer().fit_transform(one)
    assert out.get_column("rfm_cell").to_list() == ["111", None]
    assert out.get_column("rfm_group").to_list() == ["hibernating", "prospects"]
    same = features([(5, 2, 10.0)] * 6)
    assert RFMScorer(bins=10).fit_transform(same).get_column("rfm_cell").unique().to_list() == [
        "1-1-1"
    ]


def test_r_edges_are_days_ascending() -> None:
    frame = features([(d, 1, 1.0) for d in (0, 5, 10, 20, 40, 80, 160, 320, 640, 1280)])
    scorer = RFMScorer().fit(frame)
    # 10 customers, k = 5: the 2nd, 4th, 6th and 8th smallest of -recency, back in days
    assert scorer.edges_["r"] == [10.0, 40.0, 160.0, 640.0]
    out = scorer.transform(frame)
    assert out.get_column("r_score").to_list() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]


def test_columns_order_dtypes_and_rescoring() -> None:
    frame = pl.DataFrame(
        {
            "tenure_days": [10, 20, 30],
            "customer_id": ["a", "b", "c"],
            "last_order_date": [dt.date(2024, 1, 1)] * 3,
            "first_order_date": [dt.date(2023, 1, 1)] * 3,
            "aov": [1.0, None, 2.0],
            "monetary": [1, 0, 5],  # integers are accepted
            "frequency": pl.Series([1, 0, 3], dtype=pl.Int32),
            "recency_days": pl.Series([3, None, 1], dtype=pl.Int32),
            "country": ["FR", "DE", "FR"],
        }
    )
    out = RFMScorer().fit_transform(frame)
    assert out.columns == [
        "customer_id",
        "recency_days",
        "frequency",
        "monetary",
        "aov",
        "first_order_date",
        "last_order_date",
        *SCORE_COLUMNS,
        "tenure_days",
        "country",
    ]
    for name, dtype in SCORE_SCHEMA.items():
        assert out.schema[name] == dtype
    again = RFMScorer(bins=3).fit_transform(out)  # score columns are replaced, not duplicated
    assert again.columns == out.columns
    assert again.get_column("rfm_cell").to_list() == ["111", None, "222"]


def test_prospects_null_and_zero_frequency() -> None:
    frame = features([(1, 1, 5.0), (None, 0, 0.0), (None, None, None), (None, 0, -30.0)])
    out = RFMScorer().fit_transform(frame)
    assert out.get_column("rfm_group").to_list() == ["hibernating", *["prospects"] * 3]
    for col in ("r_score", "f_score", "m_score", "rfm_cell", "rfm_score"):
        assert out.get_column(col).null_count() == 3


# ----------------------------------------------------------------------------- groups


def test_group_grid_covers_every_cell_once() -> None:
    seen: dict[tuple[int, int], str] = {}
    for name, ((r0, r1), (f0, f1)) in GROUP_GRID.items():
        for r in range(r0, r1 + 1):
            for f in range(f0, f1 + 1):
                assert (r, f) not in seen, f"R{r} F{f} in {seen.get((r, f))} and {name}"
                seen[(r, f)] = name
    assert sorted(seen) == [(r, f) for r in range(1, 6) for f in range(1, 6)]
    assert {g: {c for c, n in seen.items() if n == g} for g in GROUP_GRID} == RFM_GROUP_CELLS_REF
    table = group_table()
    for (r, f), name in seen.items():
        assert GROUPS[table[r - 1, f - 1]] == name
    assert GROUPS[-1] == "prospects"
    assert len(set(GROUPS)) == 11


@pytest.mark.parametrize("k", range(2, 11))
def test_group_mapping_for_other_k(k: int) -> None:
    scale = scale_to_five(k)
    assert scale[1:].tolist() == [math.ceil(5 * s / k) for s in range(1, k + 1)]
    assert scale[k] == 5
    cells = [(r, f) for r in range(1, k + 1) for f in range(1, k + 1)]
    # one customer per (R, F) cell: craft edges directly so every cell is reached
    scorer = RFMScorer.from_dict(
        {
            "format": "fastseg.rfm_scorer",
            "version": 1,
            "bins": k,
            "method": "thresholds",
            "edges": {
                "r": [float(10 * s) for s in range(1, k)],
                "f": [float(s + 1) for s in range(1, k)],
                "m": [float(s) for s in range(1, k)],
            },
            "n_fit": 0,
        }
    )
    # R thresholds 10, 20, ..: recency 10 (k - r) + 5 has exactly r - 1 thresholds >= it
    frame = features([(10 * (k - r) + 5, f, 1.0) for r, f in cells])
    out = scorer.transform(frame)
    assert out.get_column("r_score").to_list() == [r for r, _ in cells]
    assert out.get_column("f_score").to_list() == [f for _, f in cells]
    assert out.get_column("rfm_group").to_list() == [rfm_group_ref(r, f, k) for r, f in cells]


# ----------------------------------------------------------------------------- thresholds

THRESHOLDS = {"r": [30, 90, 180, 365], "f": [2, 3, 5, 10], "m": [50, 100, 250, 1000]}


def test_threshold_boundaries() -> None:
    recency = [0, 30, 31, 90, 91, 180, 181, 365, 366, 5000]
    frequency = [1, 2, 3, 4, 5, 9, 10, 11, 1, 1]
    monetary = [-5.0, 49.99, 50.0, 99.99, 100.0, 249.99, 250.0, 999.99, 1000.0, 1e9]
    frame = features(list(zip(recency, frequency, monetary, strict=True)))
    scorer = RFMScorer(method="thresholds", thresholds=THRESHOLDS).fit(frame)
    out = scorer.transform(frame)
    assert out.get_column("r_score").to_list() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert out.get_column("f_score").to_list() == [1, 2, 3, 3, 4, 4, 5, 5, 1, 1]
    assert out.get_column("m_score").to_list() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    for col, cuts, lower in (
        ("recency_days", THRESHOLDS["r"], True),
        ("frequency", THRESHOLDS["f"], False),
        ("monetary", THRESHOLDS["m"], False),
    ):
        score = {"recency_days": "r_score", "frequency": "f_score", "monetary": "m_score"}[col]
        want = [threshold_score_ref(x, cuts, lower_is_better=lower) for x in out[col]]
        assert out.get_column(score).to_list() == want
    assert scorer.edges_ == {d: [float(v) for v in THRESHOLDS[d]] for d in "rfm"}
    assert scorer.n_fit_ == 10


@settings(max_examples=40, deadline=None)
@given(rows=ROWS)
def test_thresholds_equal_reference(rows: list[tuple]) -> None:
    frame = features(rows)
    out = RFMScorer(method="thresholds", thresholds=THRESHOLDS).fit_transform(frame)
    for row in out.iter_rows(named=True):
        if not row["frequency"]:
            assert row["rfm_group"] == "prospects"
            continue
        assert row["r_score"] == threshold_score_ref(
            row["recency_days"], THRESHOLDS["r"], lower_is_better=True
        )
        assert row["f_score"] == threshold_score_ref(
            row["frequency"], THRESHOLDS["f"], lower_is_better=False
        )
        assert row["m_score"] == threshold_score_ref(
            row["monetary"], THRESHOLDS["m"], lower_is_better=False
        )


def test_parse_thresholds() -> None:
    got = parse_thresholds(["r=30,90,180,365", " F = 2, 3,5,10", "m=49.5,100,250,1e3"])
    assert got == {
        "r": [30.0, 90.0, 180.0, 365.0],
        "f": [2.0, 3.0, 5.0, 10.0],
        "m": [49.5, 100.0, 250.0, 1000.0],
    }
    scorer = RFMScorer(method="thresholds", thresholds=got)
    assert scorer.thresholds == got
    bad = {
        "x=1,2,3,4": "unknown dimension 'x'",
        "r30,90": "must look like",
        "r=": "must look like",
        "r=30,abc,90": "'abc' .* is not a number",
        "r=30,,90": "'' .* is not a number",
        "r=30,inf": "must be finite",
        "r=30,30,90": "repeats 30",
        "r=90,30": "not sorted",
    }
    for spec, pattern in bad.items():
        with pytest.raises(ParameterError, match=pattern):
            parse_thresholds([spec])
    with pytest.raises(ParameterError, match="'r' is given twice"):
        parse_thresholds(["r=1,2", "R=3,4"])


def test_threshold_parameter_errors() -> None:
    with pytest.raises(
        ParameterError, match=r"'r' must be 4 strictly increasing .* got \[30, 90\]"
    ):
        RFMScorer(method="thresholds", thresholds={**THRESHOLDS, "r": [30, 90]})
    with pytest.raises(ParameterError, match="'f' must be 4 strictly increasing"):
        RFMScorer(method="thresholds", thresholds={**THRESHOLDS, "f": [2, 2, 5, 10]})
    with pytest.raises(ParameterError, match="'m' must be 4 strictly increasing .*nan"):
        RFMScorer(method="thresholds", thresholds={**THRESHOLDS, "m": [1, 2, 3, math.nan]})
    with pytest.raises(
        ParameterError,
        match=r"'r' must be 2 strictly .* \(bins - 1, bins=3\), got \[30, 90, 180, 365\]",
    ):
        RFMScorer(bins=3, method="thresholds", thresholds=THRESHOLDS)
    with pytest.raises(ParameterError, match="missing \\['m'\\]"):
        RFMScorer(method="thresholds", thresholds={"r": THRESHOLDS["r"], "f": THRESHOLDS["f"]})
    with pytest.raises(ParameterError, match="unknown \\['x'\\]"):
        RFMScorer(method="thresholds", thresholds={**THRESHOLDS, "x": [1, 2, 3, 4]})
    with pytest.raises(ParameterError, match="needs thresholds="):
        RFMScorer(method="thresholds")
    with pytest.raises(ParameterError, match="only used with method='thresholds'"):
        RFMScorer(thresholds=THRESHOLDS)
    with pytest.raises(ParameterError, match="'r' must be a list"):
        RFMScorer(method="thresholds", thresholds={**THRESHOLDS, "r": "30,90,180,365"})


# ----------------------------------------------------------------------------- persistence


def test_json_round_trip(tmp_path: Path) -> None:
    scorer = RFMScorer().fit(GOLDEN)
    path = tmp_path / "scorer.json"
    scorer.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["scorer.json"]  # no temporary file left
    data = json.loads(path.read_text())
    assert data == {
        "format": "fastseg.rfm_scorer",
        "version": 1,
        "bins": 5,
        "method": "quantile",
        "edges": GOLDEN_EDGES,
        "n_fit": 8,
    }
    loaded = RFMScorer.load(path)
    assert loaded.edges_ == scorer.edges_
    assert loaded.n_fit_ == 8
    assert_frame_equal(loaded.transform(GOLDEN), scorer.transform(GOLDEN))
    assert RFMScorer.from_dict(scorer.to_dict()).to_dict() == scorer.to_dict()
    th = RFMScorer(method="thresholds", thresholds=THRESHOLDS).fit(GOLDEN)
    th.save(path)  # overwrite in place
    again = RFMScorer.load(path)
    assert again.method == "thresholds"
    assert again.to_dict() == th.to_dict()
    assert_frame_equal(again.transform(GOLDEN), th.transform(GOLDEN))


@settings(max_examples=25, deadline=None)
@given(rows=ROWS, k=st.integers(2, 10))
def test_dict_round_trip_property(rows: list[tuple], k: int) -> None:
    frame = features(rows)
    scorer = RFMScorer(bins=k).fit(frame)
    data = json.loads(json.dumps(scorer.to_dict()))
    assert_frame_equal(RFMScorer.from_dict(data).transform(frame), scorer.transform(frame))


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        RFMScorer.load(tmp_path / "nope.json")
    garbled = tmp_path / "garbled.json"
    garbled.write_text('{"format": "fastseg.rfm_scorer", "version": ')
    with pytest.raises(InputError, match="not valid JSON"):
        RFMScorer.load(garbled)
    good = RFMScorer().fit(GOLDEN).to_dict()
    cases = {
        "version": ({**good, "version": 2}, "version 2 is not supported"),
        "format": ({**good, "format": "other"}, "not a fastseg RFM scorer"),
        "bins": ({**good, "bins": 11}, "bins must be from 2 to 10, got 11"),
        "method": ({**good, "method": "x"}, "method must be one of"),
        "edges": ({**good, "edges": {"r": [1.0]}}, "edges must be an object with keys"),
        "count": ({**good, "edges": {**good["edges"], "f": [1.0]}}, "'f' must be 4"),
        "order": ({**good, "edges": {**good["edges"], "m": [4, 3, 2, 1]}}, "'m' must be 4"),
        "n_fit": ({**good, "n_fit": 0}, "n_fit must be an integer >= 1"),
        "list": ([1, 2], "must be a JSON object"),
    }
    for name, (data, pattern) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(InputError, match=pattern):
            RFMScorer.load(path)
    with pytest.raises(InputError, match="cannot write"):
        RFMScorer().fit(GOLDEN).save(tmp_path / "missing_dir" / "s.json")


# ----------------------------------------------------------------------------- errors


def test_parameter_errors() -> None:
    for bins in (1, 11, 0):
        with pytest.raises(ParameterError, match=f"bins must be from 2 to 10, got {bins}"):
            RFMScorer(bins=bins)
    for bins in ("5", 5.0, True):
        with pytest.raises(ParameterError, match="bins must be an integer from 2 to 10"):
            RFMScorer(bins=bins)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="method must be one of quantile, thresholds, got 'x'"):
        RFMScorer(method="x")
    scorer = RFMScorer()
    scorer.bins = 12  # invalid parameters set after construction are caught at fit
    with pytest.raises(ParameterError, match="bins"):
        scorer.fit(GOLDEN)


def test_not_fitted() -> None:
    for call in (
        lambda s: s.transform(GOLDEN),
        lambda s: s.to_dict(),
        lambda s: s.save("x.json"),
    ):
        with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
            call(RFMScorer())
    assert issubclass(NotFittedError, FastsegError)


def test_data_errors() -> None:
    with pytest.raises(DataError, match=r"1 customers .*NaN.* \(first: customer_id 2\)"):
        RFMScorer().fit(features([(1, 1, 1.0), (2, 3, math.nan)]))
    with pytest.raises(DataError, match="null, NaN or infinite monetary"):
        RFMScorer().fit(features([(1, 1, 1.0), (2, 3, None)]))
    with pytest.raises(DataError, match="infinite monetary"):
        RFMScorer().fit(features([(1, 1, math.inf)]))
    with pytest.raises(DataError, match="null recency_days"):
        RFMScorer().fit(features([(None, 1, 1.0)]))
    with pytest.raises(DataError, match="negative frequency"):
        RFMScorer().fit(features([(1, -1, 1.0), (1, 1, 1.0)]))
    with pytest.raises(DataError, match="no customer with frequency >= 1"):
        RFMScorer().fit(features([(None, 0, 0.0)]))
    fitted = RFMScorer().fit(GOLDEN)
    with pytest.raises(DataError, match="NaN"):
        fitted.transform(features([(1, 1, math.nan)]))
    # NaN / null monetary of prospects is not used, so it is fine
    out = fitted.transform(features([(1, 1, 5.0), (None, 0, math.nan), (None, None, None)]))
    assert out.get_column("rfm_group").to_list() == ["new_customers", "prospects", "prospects"]
    # thresholds need no data: n_fit_ may be 0
    assert (
        RFMScorer(method="thresholds", thresholds=THRESHOLDS).fit(features([(None, 0, 0.0)])).n_fit_
        == 0
    )


def test_schema_errors() -> None:
    with pytest.raises(SchemaError, match=r"missing column 'monetary' \(found: customer_id"):
        RFMScorer().fit(GOLDEN.drop("monetary"))
    with pytest.raises(SchemaError, match="missing column 'recency_days'; missing column 'freq"):
        RFMScorer().fit(GOLDEN.drop("recency_days", "frequency"))
    with pytest.raises(SchemaError, match="'frequency' must be integer, got Float64"):
        RFMScorer().fit(GOLDEN.with_columns(pl.col("frequency").cast(pl.Float64)))
    with pytest.raises(SchemaError, match="'monetary' must be numeric, got String"):
        RFMScorer().fit(GOLDEN.with_columns(pl.col("monetary").cast(pl.String)))
    with pytest.raises(ParameterError, match="polars DataFrame"):
        RFMScorer().fit({"a": [1]})  # type: ignore[arg-type]
