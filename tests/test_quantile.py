"""Exact quantile edges and binning kernels (fastseg.kernels.quantile) against tests/reference.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastseg.errors import ParameterError
from fastseg.kernels.quantile import apply_edges, combine_scores, edge_ranks, quantile_edges
from tests.reference import (
    quantile_edges_ref,
    quantile_scores_count_ref,
    quantile_scores_ref,
)

KS = st.integers(min_value=2, max_value=10)
# integers: a narrow range (many ties, exact-count path) or a wide one (radix + gather path)
SMALL_INTS = st.lists(st.integers(-5, 5), min_size=1, max_size=60)
WIDE_INTS = st.lists(st.integers(-(2**53), 2**53), min_size=1, max_size=60)
MIXED_INTS = st.lists(
    st.one_of(st.integers(0, 3), st.integers(-(2**40), 2**40)), min_size=1, max_size=60
)
FLOATS = st.lists(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=True),
        st.sampled_from([0.0, -0.0, 1.0, 1.5, -2.25, 5e-324, 1e308]),
    ),
    min_size=1,
    max_size=60,
)


def _ints(xs: list[int]) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def _floats(xs: list[float]) -> np.ndarray:
    return np.array(xs, dtype=np.float64)


def _count_less_scores(pop: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """``min(k, 1 + floor(k * #{p in pop : p < x} / n))`` for each x, by sorting the population.

    On the population itself ``#{p < x} <= n - 1`` so the ``min`` never acts; a value of another
    batch above the whole population gets ``k``.
    """
    less = np.searchsorted(np.sort(pop), x, side="left")
    return np.minimum(k, 1 + (k * less) // pop.shape[0]).astype(np.uint8)


# ----------------------------------------------------------------------------- edges


@settings(max_examples=150, deadline=None)
@given(xs=st.one_of(SMALL_INTS, WIDE_INTS, MIXED_INTS), k=KS)
def test_edges_equal_reference_ints(xs: list[int], k: int) -> None:
    assert quantile_edges(_ints(xs), k).tolist() == quantile_edges_ref(xs, k)


@settings(max_examples=150, deadline=None)
@given(xs=FLOATS, k=KS)
def test_edges_equal_reference_floats(xs: list[float], k: int) -> None:
    got = quantile_edges(_floats(xs), k)
    assert got.tolist() == quantile_edges_ref(xs, k)
    assert not np.signbit(got[got == 0]).any()  # -0.0 is normalised to 0.0


@settings(max_examples=150, deadline=None)
@given(xs=st.one_of(SMALL_INTS, MIXED_INTS), k=KS)
def test_fit_apply_equals_formula_ints(xs: list[int], k: int) -> None:
    v = _ints(xs)
    got = apply_edges(v, quantile_edges(v, k))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, quantile_scores_ref(xs, k))
    np.testing.assert_array_equal(got, quantile_scores_count_ref(xs, k))


@settings(max_examples=150, deadline=None)
@given(xs=FLOATS, k=KS)
def test_fit_apply_equals_formula_floats(xs: list[float], k: int) -> None:
    v = _floats(xs)
    got = apply_edges(v, quantile_edges(v, k))
    np.testing.assert_array_equal(got, quantile_scores_count_ref(xs, k))


@settings(max_examples=100, deadline=None)
@given(xs=st.one_of(SMALL_INTS, MIXED_INTS), k=KS, seed=st.integers(0, 2**32 - 1))
def test_row_order_ties_and_monotone(xs: list[int], k: int, seed: int) -> None:
    v = _ints(xs)
    scores = apply_edges(v, quantile_edges(v, k))
    perm = np.random.default_rng(seed).permutation(v.shape[0])
    assert quantile_edges(v[perm], k).tolist() == quantile_edges(v, k).tolist()
    np.testing.assert_array_equal(apply_edges(v[perm], quantile_edges(v[perm], k)), scores[perm])
    order = np.argsort(v, kind="stable")
    assert (np.diff(scores[order].astype(np.int64)) >= 0).all()  # monotone
    for value in np.unique(v):  # ties share a score
        assert np.unique(scores[v == value]).shape[0] == 1
    assert scores.min() >= 1
    assert scores.max() <= k


@settings(max_examples=100, deadline=None)
@given(pop=st.one_of(SMALL_INTS, MIXED_INTS), other=st.lists(st.integers(-10, 10)), k=KS)
def test_fit_on_a_apply_on_b(pop: list[int], other: list[int], k: int) -> None:
    a, b = _ints(pop), _ints(other)
    got = apply_edges(b, quantile_edges(a, k))
    np.testing.assert_array_equal(got, _count_less_scores(a, b, k))


@settings(max_examples=60, deadline=None)
@given(pop=FLOATS, other=FLOATS, k=KS)
def test_fit_on_a_apply_on_b_floats(pop: list[float], other: list[float], k: int) -> None:
    a, b = _floats(pop), _floats(other)
    got = apply_edges(b, quantile_edges(a, k))
    np.testing.assert_array_equal(got, _count_less_scores(a, b, k))


def test_worked_example() -> None:
    v = _ints([1, 1, 1, 2, 2, 3, 5, 8])
    assert edge_ranks(8, 5) == [1, 3, 4, 6]
    assert quantile_edges(v, 5).tolist() == [1.0, 2.0, 2.0, 5.0]
    assert apply_edges(v, quantile_edges(v, 5)).tolist() == [1, 1, 1, 2, 2, 4, 4, 5]


def test_all_equal_one_value_and_fewer_values_than_k() -> None:
    for k in range(2, 11):
        assert quantile_edges(_ints([7] * 5), k).tolist() == [7.0] * (k - 1)
        assert quantile_edges(_floats([2.5]), k).tolist() == [2.5] * (k - 1)
        assert apply_edges(_floats([2.5]), quantile_edges(_floats([2.5]), k)).tolist() == [1]
    v = _ints([30, 10, 20])  # n = 3 < k = 10: scores skip values, 1 + floor(10 * c / 3)
    assert apply_edges(v, quantile_edges(v, 10)).tolist() == [7, 1, 4]
    assert quantile_edges(v, 1).shape == (0,)
    assert apply_edges(v, np.empty(0)).tolist() == [1, 1, 1]


@pytest.mark.parametrize("seed", [0, 1])
def test_large_inputs_all_paths(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200_003
    cases = [
        rng.lognormal(4, 1.5, n),  # float radix path
        rng.poisson(3, n).astype(np.int64),  # exact counting path
        np.append(rng.poisson(3, n), 10**9).astype(np.int64),  # one outlier: huge candidate set
        rng.integers(-(2**50), 2**50, n),  # wide ints
        np.round(rng.normal(0, 1, n), 1),  # floats with many ties, both signs
    ]
    for v in cases:
        for k in (2, 5, 7, 10):
            e = quantile_edges(v, k)
            assert e.tolist() == [float(x) for x in np.sort(v)[edge_ranks(v.shape[0], k)]]
            np.testing.assert_array_equal(apply_edges(v, e), _count_less_scores(v, v, k))


def test_float_extremes_and_signed_zero() -> None:
    v = _floats([-math.inf, -1e308, -5e-324, -0.0, 0.0, 5e-324, 1e308, math.inf])
    assert quantile_edges(v, 8).tolist() == [-math.inf, -1e308, -5e-324, 0.0, 0.0, 5e-324, 1e308]
    scores = apply_edges(v, quantile_edges(v, 8))
    assert scores.tolist() == [1, 2, 3, 4, 4, 6, 7, 8]  # -0.0 and 0.0 tie


# ----------------------------------------------------------------------------- apply_edges


@settings(max_examples=100, deadline=None)
@given(
    xs=st.lists(st.integers(-50, 50), max_size=40),
    edges=st.lists(st.floats(-60, 60, allow_nan=False) | st.integers(-60, 60), max_size=9),
    inclusive=st.booleans(),
)
def test_apply_edges_definition(xs: list[int], edges: list[float], inclusive: bool) -> None:
    e = np.array(edges, dtype=np.float64)
    for v in (_ints(xs), _floats(xs)):
        got = apply_edges(v, e, inclusive=inclusive)
        if inclusive:
            want = [1 + sum(t <= x for t in e.tolist()) for x in xs]
        else:
            want = [1 + sum(t < x for t in e.tolist()) for x in xs]
        assert got.tolist() == want


def test_apply_edges_integers_are_exact_beyond_float_precision() -> None:
    big = 2**62
    v = _ints([big, big + 1, -(2**63), 2**63 - 1])
    # float64(2**62) == 2**62 exactly; big + 1 is above it although float64(big + 1) == 2**62
    assert apply_edges(v, [float(big)]).tolist() == [1, 2, 1, 2]
    assert apply_edges(v, [float(big)], inclusive=True).tolist() == [2, 2, 1, 2]
    assert apply_edges(v, [-math.inf, 2.0**63, math.inf]).tolist() == [2, 2, 2, 2]
    assert apply_edges(v, [-(2.0**63)]).tolist() == [2, 2, 1, 2]
    assert apply_edges(v, [-(2.0**63)], inclusive=True).tolist() == [2, 2, 2, 2]
    assert apply_edges(_ints([2, 3]), [2.5]).tolist() == [1, 2]
    assert apply_edges(_ints([2, 3]), [2.5], inclusive=True).tolist() == [1, 2]


def test_apply_edges_many_blocks() -> None:
    v = np.arange(5000, dtype=np.float64)
    np.testing.assert_array_equal(apply_edges(v, [999.0, 1999.0, 2999.0, 3999.0]), 1 + v // 1000)


# ----------------------------------------------------------------------------- combine


@settings(max_examples=50, deadline=None)
@given(
    k=st.integers(2, 10),
    data=st.data(),
)
def test_combine_scores(k: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 30))
    score = st.lists(st.integers(1, k), min_size=n, max_size=n)
    r, f, m = (np.array(data.draw(score), dtype=np.uint8) for _ in range(3))
    scored = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    lut = np.arange(k * k, dtype=np.uint8)[::-1].copy()
    cell, total, group = combine_scores(r, f, m, scored, lut, 255)
    for i in range(n):
        ri, fi, mi = int(r[i]), int(f[i]), int(m[i])
        assert cell[i] == ((ri - 1) * k + fi - 1) * k + mi - 1
        assert total[i] == ri + fi + mi
        assert group[i] == (lut[(ri - 1) * k + fi - 1] if scored[i] else 255)


def test_combine_scores_errors() -> None:
    one = np.ones(3, dtype=np.uint8)
    yes = np.ones(3, dtype=bool)
    with pytest.raises(ParameterError, match="k \\* k entries"):
        combine_scores(one, one, one, yes, np.zeros(24, dtype=np.uint8), 10)
    with pytest.raises(ParameterError, match="m must be a 1-D uint8 array of length 3"):
        combine_scores(one, one, one[:2], yes, np.zeros(25, dtype=np.uint8), 10)
    with pytest.raises(ParameterError, match="scored must be a 1-D bool array"):
        combine_scores(one, one, one, one, np.zeros(25, dtype=np.uint8), 10)


# ----------------------------------------------------------------------------- errors


def test_errors() -> None:
    with pytest.raises(ParameterError, match="NaN"):
        quantile_edges(_floats([1.0, math.nan, 2.0]), 5)
    with pytest.raises(ParameterError, match="NaN"):
        quantile_edges(_floats([-math.nan]), 5)
    with pytest.raises(ParameterError, match="empty"):
        quantile_edges(_floats([]), 5)
    with pytest.raises(ParameterError, match="k must be"):
        quantile_edges(_floats([1.0]), 0)
    with pytest.raises(ParameterError, match="k must be"):
        quantile_edges(_floats([1.0]), 256)
    with pytest.raises(ParameterError, match="k must be"):
        quantile_edges(_floats([1.0]), True)
    with pytest.raises(ParameterError, match="dtype float64 or int64, got int32"):
        quantile_edges(np.array([1, 2], dtype=np.int32), 5)
    with pytest.raises(ParameterError, match="one-dimensional"):
        quantile_edges(np.zeros((2, 2)), 5)
    with pytest.raises(ParameterError, match="numpy array"):
        quantile_edges([1.0, 2.0], 5)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"2\*\*53"):
        quantile_edges(_ints([0, 2**53 + 1]), 5)
    with pytest.raises(ParameterError, match="NaN"):
        apply_edges(_floats([1.0, math.nan]), [1.0])
    with pytest.raises(ParameterError, match="edges must not contain NaN"):
        apply_edges(_floats([1.0]), [math.nan])
    with pytest.raises(ParameterError, match="at most 254"):
        apply_edges(_floats([1.0]), np.zeros(255))
    with pytest.raises(ParameterError, match="edges must be numbers"):
        apply_edges(_floats([1.0]), ["a"])  # type: ignore[list-item]
