"""Exact quantile edges over chunks (fastseg.edges) against quantile_edges / RFMScorer.fit."""

from __future__ import annotations

import pickle

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastseg.edges import EdgeSearch, RFMEdgeSearch, fit_chunks
from fastseg.errors import DataError, ParameterError, SchemaError
from fastseg.kernels.quantile import quantile_edges
from fastseg.kernels.radix import interval_histograms, key_summary, order_bits
from fastseg.scoring import RFMScorer

KS = st.integers(min_value=2, max_value=10)
BITS = st.sampled_from([1, 3, 8, 16])
SPECIAL_FLOATS = [0.0, -0.0, 1.0, -1.0, 1.5, -2.25, 5e-324, -5e-324, 2.2e-308, 1e308, -1e308]
FLOATS = st.lists(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=True),
        st.sampled_from([*SPECIAL_FLOATS, np.inf, -np.inf]),
    ),
    min_size=1,
    max_size=80,
)
INTS = st.one_of(
    st.lists(st.integers(-5, 5), min_size=1, max_size=80),  # heavy ties
    st.lists(st.integers(-(2**53), 2**53), min_size=1, max_size=80),
    st.lists(
        st.sampled_from([-(2**53), -(2**53) + 1, 2**53 - 1, 2**53, 0, 1]), min_size=1, max_size=40
    ),
    st.lists(st.integers(0, 3) | st.integers(-(2**40), 2**40), min_size=1, max_size=80),
)


def _split(values: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    """Split at sorted cut positions (repeated cuts give empty chunks), plus empty ends."""
    pos = sorted(min(c, values.shape[0]) for c in cuts)
    return [values[:0], *np.split(values, pos), values[:0]]


def _run(search: EdgeSearch, chunks: list[np.ndarray], *, pickled: bool = False) -> np.ndarray:
    """Drive the rounds; with ``pickled``, digests are made by unpickled copies (workers)."""
    while not search.done:
        if pickled:
            blob = pickle.dumps(search)
            digests = [pickle.loads(pickle.dumps(pickle.loads(blob).digest(c))) for c in chunks]
        else:
            digests = [search.digest(c) for c in chunks]
        search.advance(EdgeSearch.merge(digests))
        if pickled:
            search = pickle.loads(pickle.dumps(search))
    return search.edges()


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float64 and np.array_equal(a.view(np.int64), b.view(np.int64))


# ----------------------------------------------------------------------------- EdgeSearch


@settings(max_examples=200)
@given(xs=FLOATS, k=KS, cuts=st.lists(st.integers(0, 80), max_size=6), bits=BITS)
def test_float_chunks_equal_quantile_edges(xs: list[float], k: int, cuts: list[int], bits: int):
    values = np.array(xs, dtype=np.float64)
    got = _run(EdgeSearch(k, "float", bits=bits), _split(values, cuts))
    assert _same_bits(got, quantile_edges(values, k))


@settings(max_examples=200)
@given(xs=INTS, k=KS, cuts=st.lists(st.integers(0, 80), max_size=6), bits=BITS)
def test_int_chunks_equal_quantile_edges(xs: list[int], k: int, cuts: list[int], bits: int):
    values = np.array(xs, dtype=np.int64)
    got = _run(EdgeSearch(k, "int", bits=bits), _split(values, cuts))
    assert _same_bits(got, quantile_edges(values, k))


@settings(max_examples=60)
@given(
    xs=st.one_of(FLOATS, st.lists(st.sampled_from([-0.0, 0.0, 1.0, np.inf]), min_size=1)),
    k=st.sampled_from([1, 2, 7, 64, 255]),
    cuts=st.lists(st.integers(0, 80), max_size=4),
)
def test_pickled_workers_and_many_edges(xs: list[float], k: int, cuts: list[int]) -> None:
    values = np.array(xs, dtype=np.float64)
    got = _run(EdgeSearch(k, "float"), _split(values, cuts), pickled=True)
    assert _same_bits(got, quantile_edges(values, k))


@pytest.mark.parametrize("k", [2, 5, 10, 255])
def test_large_arrays_random_chunks(k: int) -> None:
    rng = np.random.default_rng(k)
    x = rng.lognormal(3, 2, 50_000) * np.where(rng.random(50_000) < 0.2, -1.0, 1.0)
    x[:500] = 0.0
    x[500:700] = -0.0
    chunks = np.array_split(rng.permutation(x), 13)
    search = EdgeSearch(k, "float")
    assert _same_bits(_run(search, chunks), quantile_edges(x, k))
    assert search.histogram_rounds <= (4 if k <= 10 else 5)
    ints = rng.poisson(3, 50_000).astype(np.int64) * 1_000_003 - 7
    assert _same_bits(_run(EdgeSearch(k, "int"), np.array_split(ints, 5)), quantile_edges(ints, k))


def test_signed_zeros_and_ties() -> None:
    for values in ([-0.0, -0.0, 0.0], [-0.0] * 5, [0.0, -0.0], [-np.inf, np.inf, -0.0]):
        arr = np.array(values)
        for k in (2, 3, 4):
            chunks = [arr[:1], arr[1:]]
            assert _same_bits(_run(EdgeSearch(k, "float"), chunks), quantile_edges(arr, k))


def test_all_ties_and_one_value_need_no_histogram() -> None:
    for values in (np.array([7, 7, 7]), np.array([42])):
        search = EdgeSearch(5, "int")
        assert _same_bits(_run(search, [values, values[:0]]), quantile_edges(values, 5))
        assert search.rounds == 1 and search.histogram_rounds == 0


@pytest.mark.parametrize("span", [1, 2, 365, 4000, 2**16 - 1])
def test_int_span_below_bin_count_takes_one_histogram_round(span: int) -> None:
    rng = np.random.default_rng(span)
    x = rng.integers(0, span + 1, 5000)
    x[0], x[1] = 0, span
    x = -x  # like -recency_days
    search = EdgeSearch(5, "int")
    chunks = np.array_split(x, 4)
    assert _same_bits(_run(search, chunks), quantile_edges(x, 5))
    assert search.histogram_rounds == 1
    # one histogram of span + 1 bins, plus the round header
    fresh = EdgeSearch(5, "int")
    fresh.advance(EdgeSearch.merge(fresh.digest(c) for c in chunks))
    assert fresh.digest_size == span + 2


def test_float_rounds_bounded() -> None:
    x = np.array([-np.inf, np.inf, 5e-324, -5e-324, 1.0, 2.0, 3.0] * 10)
    search = EdgeSearch(10, "float")
    _run(search, [x[:30], x[30:]])
    assert search.histogram_rounds <= 4


def test_digest_of_empty_chunk() -> None:
    search = EdgeSearch(3, "float")
    empty = np.empty(0, dtype=np.float64)
    d0 = search.digest(empty)
    assert d0.tolist() == [0, 0, 0, 2**63 - 1, -(2**63)]
    search.advance(EdgeSearch.merge([d0, search.digest(np.array([1.0, 2.0, 3.0]))]))
    assert search.n == 3
    assert int(search.digest(empty)[1:].sum()) == 0


# ----------------------------------------------------------------------------- errors


def _error(fn) -> str:
    with pytest.raises(ParameterError) as info:
        fn()
    return str(info.value)


@settings(max_examples=60)
@given(
    xs=st.lists(st.floats(allow_nan=True), min_size=1, max_size=40).filter(
        lambda v: any(x != x for x in v)
    ),
    cuts=st.lists(st.integers(0, 40), max_size=4),
    k=KS,
)
def test_nan_error_equal(xs: list[float], cuts: list[int], k: int) -> None:
    values = np.array(xs, dtype=np.float64)
    values[0] = -np.nan if values.shape[0] % 2 else values[0]  # negative NaN bits too
    expected = _error(lambda: quantile_edges(values, k))
    assert _error(lambda: _run(EdgeSearch(k, "float"), _split(values, cuts))) == expected


def test_nan_with_one_score_is_accepted_as_in_quantile_edges() -> None:
    values = np.array([np.nan, 1.0])
    assert _run(EdgeSearch(1, "float"), [values]).shape == (0,)
    assert quantile_edges(values, 1).shape == (0,)


@pytest.mark.parametrize("bad", [2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63)])
def test_int_range_error_equal(bad: int) -> None:
    values = np.array([0, 5, bad, 3], dtype=np.int64)
    expected = _error(lambda: quantile_edges(values, 4))
    assert _error(lambda: _run(EdgeSearch(4, "int"), [values[:2], values[2:]])) == expected


def test_empty_error_equal() -> None:
    empty = np.empty(0, dtype=np.int64)
    expected = _error(lambda: quantile_edges(empty, 4))
    assert _error(lambda: _run(EdgeSearch(4, "int"), [empty, empty])) == expected


def test_argument_errors() -> None:
    assert _error(lambda: EdgeSearch(0, "int")) == _error(lambda: quantile_edges(np.ones(1), 0))
    with pytest.raises(ParameterError, match="kind"):
        EdgeSearch(3, "bool")
    with pytest.raises(ParameterError, match="bits"):
        EdgeSearch(3, "int", bits=21)
    search = EdgeSearch(3, "int")
    with pytest.raises(ParameterError, match="int64"):
        search.digest(np.ones(3))
    with pytest.raises(ParameterError, match="float64"):
        EdgeSearch(3, "float").digest(np.ones(3, dtype=np.int64))
    with pytest.raises(ParameterError, match="not done"):
        search.edges()
    with pytest.raises(ParameterError, match="no digest"):
        EdgeSearch.merge([])
    x = np.arange(100)
    search.advance(EdgeSearch.merge([search.digest(x)]))
    with pytest.raises(ParameterError, match="round"):
        search.advance(np.array([0, 100, 0, 0, 99]))
    with pytest.raises(ParameterError, match="different rounds"):
        EdgeSearch.merge([search.digest(x), np.array([0, 1, 0, 1, 1])])
    with pytest.raises(ParameterError, match="same values"):
        search.advance(EdgeSearch.merge([search.digest(x[:50])]))


def test_kernel_wrappers() -> None:
    bits, is_float = order_bits(np.array([-1.0, -0.0, 0.0, 2.0]), "float")
    n, nan, lo, hi = key_summary(bits, is_float)
    assert (n, nan) == (4, 0) and lo < hi
    counts = interval_histograms(bits, is_float, np.array([lo]), np.array([hi]), np.array([62]))
    assert counts.sum() == 4
    with pytest.raises(ParameterError, match="disjoint"):
        interval_histograms(bits, is_float, np.array([0, 0]), np.array([5, 5]), np.array([0, 0]))
    with pytest.raises(ParameterError, match="invalid"):
        interval_histograms(bits, is_float, np.array([5]), np.array([0]), np.array([0]))


# ----------------------------------------------------------------------------- RFM


@st.composite
def feature_frames(draw: st.DrawFn) -> list[pl.DataFrame]:
    n = draw(st.integers(0, 60))
    freq = draw(st.lists(st.one_of(st.none(), st.integers(0, 6)), min_size=n, max_size=n))
    scored = [f is not None and f >= 1 for f in freq]
    rec = [
        draw(st.integers(0, 3000)) if s else draw(st.one_of(st.none(), st.integers(0, 30)))
        for s in scored
    ]
    money = st.one_of(
        st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([0.0, -0.0, 5e-324, 9.99])
    )
    mon = [draw(money) if s else draw(st.one_of(st.none(), money)) for s in scored]
    frame = pl.DataFrame(
        {
            "customer_id": list(range(n)),
            "recency_days": pl.Series(rec, dtype=pl.Int64),
            "frequency": pl.Series(freq, dtype=pl.Int64),
            "monetary": pl.Series(mon, dtype=pl.Float64),
        }
    )
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=5)))
    bounds = [0, *cuts, n]
    return [frame[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _same_fit(a: RFMScorer, b: RFMScorer) -> None:
    assert a.n_fit_ == b.n_fit_
    for d in ("r", "f", "m"):
        assert _same_bits(np.array(a.edges_[d]), np.array(b.edges_[d])), d


@settings(max_examples=120)
@given(frames=feature_frames(), bins=st.integers(2, 10), bits=BITS)
def test_fit_chunks_equals_fit(frames: list[pl.DataFrame], bins: int, bits: int) -> None:
    whole = pl.concat(frames)
    if whole.select((pl.col("frequency").fill_null(0) >= 1).sum()).item() == 0:
        with pytest.raises(DataError) as expected:
            RFMScorer(bins=bins).fit(whole)
        with pytest.raises(DataError) as got:
            fit_chunks(RFMScorer(bins=bins), lambda: iter(frames), bits=bits)
        assert str(got.value) == str(expected.value)
        return
    expected = RFMScorer(bins=bins).fit(whole)
    scorer = RFMScorer(bins=bins)
    assert fit_chunks(scorer, lambda: iter(frames), bits=bits) is scorer
    _same_fit(scorer, expected)
    assert RFMScorer(bins=bins).fit_chunks(lambda: frames).edges_ == expected.edges_


@settings(max_examples=40)
@given(frames=feature_frames(), bins=st.integers(2, 10))
def test_rfm_search_pickled_workers(frames: list[pl.DataFrame], bins: int) -> None:
    whole = pl.concat(frames)
    if whole.select((pl.col("frequency").fill_null(0) >= 1).sum()).item() == 0:
        return
    search = RFMEdgeSearch(RFMScorer(bins=bins))
    while not search.done:
        blob = pickle.dumps(search)
        assert len(blob) < 20_000  # small state travels to workers
        digests = [pickle.loads(pickle.dumps(pickle.loads(blob).digest(f))) for f in frames]
        search.advance(RFMEdgeSearch.merge(digests))
        search = pickle.loads(pickle.dumps(search))
    _same_fit(search.fitted(), RFMScorer(bins=bins).fit(whole))


@settings(max_examples=30)
@given(frames=feature_frames(), bins=st.integers(2, 5))
def test_thresholds_need_only_round_zero(frames: list[pl.DataFrame], bins: int) -> None:
    th = {d: [float(10 * i) for i in range(1, bins)] for d in ("r", "f", "m")}
    search = RFMEdgeSearch(RFMScorer(bins=bins, method="thresholds", thresholds=th))
    search.advance(RFMEdgeSearch.merge(search.digest(f) for f in frames))
    assert search.done and search.rounds == 1
    expected = RFMScorer(bins=bins, method="thresholds", thresholds=th).fit(pl.concat(frames))
    _same_fit(search.fitted(), expected)


@pytest.mark.parametrize(
    "bad",
    [
        {"recency_days": [None], "frequency": [2], "monetary": [1.0]},
        {"recency_days": [3], "frequency": [2], "monetary": [float("nan")]},
        {"recency_days": [3], "frequency": [-1], "monetary": [1.0]},
    ],
)
def test_bad_chunk_raises_fit_data_error(bad: dict[str, list]) -> None:
    good = pl.DataFrame(
        {"customer_id": [1], "recency_days": [5], "frequency": [1], "monetary": [2.0]}
    )
    chunk = pl.DataFrame({"customer_id": [9], **bad}, schema=good.schema)
    with pytest.raises(DataError) as expected:
        RFMScorer().fit(chunk)
    with pytest.raises(DataError) as got:
        fit_chunks(RFMScorer(), lambda: [good, chunk])
    assert str(got.value) == str(expected.value)


def test_schema_error_and_driver_errors() -> None:
    with pytest.raises(SchemaError):
        fit_chunks(RFMScorer(), lambda: [pl.DataFrame({"frequency": [1]})])
    with pytest.raises(ParameterError, match="callable"):
        fit_chunks(RFMScorer(), [pl.DataFrame()])  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="RFMScorer"):
        RFMEdgeSearch(object())
    frame = pl.DataFrame({"recency_days": [1, 9], "frequency": [1, 3], "monetary": [1.0, 5.5]})
    search = RFMEdgeSearch(RFMScorer(bins=2))
    with pytest.raises(ParameterError, match="not done"):
        search.fitted()
    search.advance(RFMEdgeSearch.merge([search.digest(frame)]))
    with pytest.raises(ParameterError, match="same frames"):
        search.advance(RFMEdgeSearch.merge([search.digest(frame[:1])]))


@settings(max_examples=150)
@given(
    xs=st.lists(st.integers(-(2**62), 2**62) | st.integers(-50, 50), max_size=200),
    bounds=st.lists(st.integers(-(2**62), 2**62) | st.integers(-60, 60), min_size=2, max_size=16),
    nbits=st.integers(1, 8),
)
def test_interval_histograms_equal_counting(xs: list[int], bounds: list[int], nbits: int) -> None:
    """Disjoint intervals (adjacent ones share coarse buckets) against a plain count."""
    edges = sorted(set(bounds))
    pairs = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=False)]
    los = np.array([a for a, _ in pairs], dtype=np.int64)
    his = np.array([b for _, b in pairs], dtype=np.int64)
    shifts = np.array([max(0, (b - a).bit_length() - nbits) for a, b in pairs], dtype=np.int64)
    got = interval_histograms(np.array(xs, dtype=np.int64), False, los, his, shifts)
    want = [np.zeros(0, dtype=np.int64)]
    for (lo, hi), sh in zip(pairs, shifts.tolist(), strict=True):
        h = np.zeros(((hi - lo) >> sh) + 1, dtype=np.int64)
        for v in xs:
            if lo <= v <= hi:
                h[(v - lo) >> sh] += 1
        want.append(h)
    assert np.array_equal(got, np.concatenate(want))


def test_interval_histograms_refuse_huge() -> None:
    with pytest.raises(ParameterError, match="bins"):
        interval_histograms(
            np.zeros(1, dtype=np.int64), False, np.array([0]), np.array([2**40]), np.array([0])
        )
