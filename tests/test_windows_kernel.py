"""``add_windows`` (the trailing windows a refresh adds up again from its recent rows) against a
plain numpy reference, and against ``aggregate_orders``' own window fields."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastseg.errors import ParameterError
from fastseg.kernels.aggregate import add_windows, aggregate_orders, new_accumulators


def _reference(codes, day, amount, flags, since, n):
    orders = np.zeros((n, since.shape[0]), np.int64)
    revenue = np.zeros((n, since.shape[0]), np.float64)
    for i in range(codes.shape[0]):  # row by row, in order: the sums' order too
        for w in range(since.shape[0]):
            if day[i] >= since[w]:
                orders[codes[i], w] += int(flags[i] & 1) if amount[i] >= 0 else 0
                revenue[codes[i], w] += amount[i]
    return orders, revenue


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 6),
    rows=st.lists(
        st.tuples(
            st.integers(0, 5),
            st.integers(-40, 0),
            st.floats(-100, 100, allow_nan=False).map(lambda x: round(x, 2)),
            st.integers(0, 7),
        ),
        max_size=60,
    ),
    windows=st.lists(st.integers(1, 45), min_size=1, max_size=3, unique=True),
)
def test_add_windows_matches_reference_and_aggregate(n, rows, windows) -> None:
    windows = sorted(windows)
    rows = [r for r in rows if r[0] < n]
    codes = np.array([r[0] for r in rows], np.int64)
    day = np.array([r[1] for r in rows], np.int32)
    amount = np.array([r[2] for r in rows], np.float64)
    flags = np.array([r[3] if r[2] >= 0 else r[3] & 6 for r in rows], np.uint8)
    since = np.array([-w for w in windows], np.int32)
    acc = new_accumulators(n, len(windows))
    add_windows(codes, day, amount, flags, since, acc)
    orders, revenue = _reference(codes, day, amount, flags, since, n)
    assert (acc["win_orders"] == orders).all()
    assert (acc["win_revenue"] == revenue).all()  # the same additions in the same order
    full = new_accumulators(n, len(windows))
    aggregate_orders(codes, day, amount, flags, since, full, parallel=False)
    assert (full["win_orders"] == acc["win_orders"]).all()
    assert (full["win_revenue"] == acc["win_revenue"]).all()
    assert (acc["orders"] == 0).all() and (acc["monetary"] == 0).all()  # windows only


def test_add_windows_checks_its_inputs() -> None:
    acc = new_accumulators(2, 2)
    one = np.zeros(1, np.int64)
    with pytest.raises(ParameterError, match="same length"):
        add_windows(
            one,
            np.zeros(2, np.int32),
            np.zeros(1),
            np.zeros(1, np.uint8),
            np.zeros(2, np.int32),
            acc,
        )
    with pytest.raises(ParameterError, match="windows"):
        add_windows(
            one,
            one.astype(np.int32),
            np.zeros(1),
            np.zeros(1, np.uint8),
            np.zeros(3, np.int32),
            acc,
        )
    with pytest.raises(ParameterError, match="codes"):
        add_windows(
            one + 2,
            one.astype(np.int32),
            np.zeros(1),
            np.zeros(1, np.uint8),
            np.zeros(2, np.int32),
            acc,
        )
