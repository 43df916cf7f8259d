"""Per-customer state merges exactly: the records of two parts of the rows, merged, equal the
records of all the rows (the base of daily refresh, buckets on disk and Spark partitions)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastseg.errors import ParameterError
from fastseg.features import OrderAggregator
from fastseg.kernels.aggregate import grow_accumulators, new_accumulators
from tests.reference import features_ref

AS_OF = dt.date(2026, 6, 30)
_DAY0 = (AS_OF - dt.date(1970, 1, 1)).days


def _rows(n: int, seed: int, n_cats: int, text: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, max(1, n // 3), n) * 11 + 5
    return {
        "ids": ids,
        "names": np.array([f"K{i}" for i in ids]) if text else ids,
        "day": (_DAY0 - rng.integers(0, 500, n)).astype(np.int32),
        "amount": np.round(rng.normal(20, 30, n), 2),
        "disc": rng.random(n) < 0.3,
        "cat": rng.integers(-1, n_cats, n),
    }


def _aggregate(rows: dict[str, np.ndarray], idx: np.ndarray, mode: str) -> OrderAggregator:
    id_range = (5, 5 + 11 * 200) if mode == "offset" else None
    agg = OrderAggregator(AS_OF, id_range=id_range)
    cats = agg.categories  # each part codes its categories in its own first-seen order
    amount = rows["amount"][idx]
    flags = ((amount >= 0).astype(np.uint8)) | (rows["disc"][idx].astype(np.uint8) << 1)
    hashes = rows["cat"][idx].astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1)
    local = cats.encode(hashes, (rows["cat"][idx] >= 0) & (amount >= 0))
    if mode == "text":
        names = pl.Series(rows["names"][idx].tolist(), dtype=pl.String)
        codes = agg.text_codes(names)
        ids, coded = codes, True
    elif mode == "offset":
        ids, coded = rows["ids"][idx] - agg.offset, True
    else:
        ids, coded = rows["ids"][idx], False
    agg.add_arrays(
        np.ascontiguousarray(ids),
        rows["day"][idx],
        amount,
        flags,
        local.astype(np.int32),
        has_discount=True,
        coded=coded,
    )
    return agg


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 300),
    seed=st.integers(0, 10**6),
    n_cats=st.sampled_from([1, 5, 70, 130]),
    mode=st.sampled_from(["hash", "offset", "text"]),
    parts=st.integers(2, 4),
)
def test_merged_parts_equal_one_pass(n, seed, n_cats, mode, parts) -> None:  # noqa: ANN001
    rows = _rows(n, seed, n_cats, mode == "text")
    rng = np.random.default_rng(seed + 1)
    part = rng.integers(0, parts, n)  # rows of one customer may fall in any part
    aggs = [_aggregate(rows, np.flatnonzero(part == p), mode) for p in range(parts)]
    whole = _aggregate(rows, np.arange(n), mode).finish()
    merged = aggs[0]
    for other in aggs[1:]:
        merged.merge(other)
    got = merged.finish()
    assert got.columns == whole.columns
    assert got["customer_id"].to_list() == whole["customer_id"].to_list()
    floats = [c for c, t in got.schema.items() if t == pl.Float64]
    assert got.drop(floats).equals(whole.drop(floats))
    for c in floats:
        np.testing.assert_allclose(
            got[c].fill_null(-1).to_numpy(), whole[c].fill_null(-1).to_numpy(), rtol=1e-9, atol=1e-9
        )
    # and both equal the plain reference
    ref_rows = [
        {
            "customer_id": rows["names"][i].item() if mode == "text" else int(rows["ids"][i]),
            "order_date": dt.date(1970, 1, 1) + dt.timedelta(days=int(rows["day"][i])),
            "amount": float(rows["amount"][i]),
            "category": None if rows["cat"][i] < 0 else int(rows["cat"][i]),
            "discount": 1.0 if rows["disc"][i] else 0.0,
        }
        for i in range(n)
    ]
    ref = features_ref(ref_rows, AS_OF)
    assert got["distinct_categories"].to_list() == [
        ref[c]["distinct_categories"] for c in got["customer_id"].to_list()
    ]
    assert got["frequency"].to_list() == [ref[c]["frequency"] for c in got["customer_id"]]


def test_merge_refuses_other_windows_and_id_kinds() -> None:
    a = OrderAggregator(AS_OF)
    with pytest.raises(ParameterError, match="same as_of and windows"):
        a.merge(OrderAggregator(AS_OF, windows=(7,)))
    b = OrderAggregator(AS_OF)
    b.text_codes(pl.Series(["x"]))
    a.add_arrays(
        np.array([1]),
        np.array([_DAY0], np.int32),
        np.array([1.0]),
        np.array([1], np.uint8),
        None,
        has_discount=False,
    )
    with pytest.raises(ParameterError, match="text customer ids"):
        a.merge(b)


@pytest.mark.parametrize("mode", ["hash", "text"])
def test_state_grows_with_the_customers(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Accumulators start small and grow (in place when they can) as customers arrive; the
    result equals one pass with room for every customer from the start."""
    import fastseg.features as F

    rows = _rows(3000, 7, 70, mode == "text")
    want = _aggregate(rows, np.arange(3000), mode).finish()
    monkeypatch.setattr(F, "_START_CUSTOMERS", 1)
    agg = _aggregate(rows, np.arange(0), mode)
    for lo in range(0, 3000, 97):  # many batches, each bringing new customers
        part = _aggregate(rows, np.arange(lo, min(3000, lo + 97)), mode)
        agg.merge(part)
    assert agg.acc.shape[0] < 3000
    got = agg.finish()
    assert got.drop(pl.selectors.float()).equals(want.drop(pl.selectors.float()))


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.text(max_size=12), min_size=0, max_size=30), min_size=1, max_size=4
    )
)
def test_text_ids_code_like_first_seen_factorize(batches) -> None:  # noqa: ANN001
    """Text ids (any unicode, empty, long) get first-seen codes across batches; names too."""
    import pyarrow as pa

    from fastseg.kernels.encode import TextIds

    ids = TextIds()
    seen: dict[str, int] = {}
    for batch in batches:
        codes, bad = ids.encode(pa.array(batch, pa.string()))
        assert bad == -1
        want = [seen.setdefault(t, len(seen)) for t in batch]
        assert codes.tolist() == want
    assert ids.names().to_pylist() == list(seen)


def test_text_id_hash_collisions_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two texts sharing a 64-bit hash are never merged: the aggregator says so and stops."""
    import fastseg.kernels.encode as E
    from fastseg.errors import DataError

    def same_hash(offsets, data, out) -> None:  # noqa: ANN001
        out[:] = 42

    monkeypatch.setattr(E, "_hash_text_kernel", same_hash)
    agg = OrderAggregator(AS_OF)
    agg.text_codes(pl.Series(["alice"]))
    with pytest.raises(DataError, match="'bob' shares a 64-bit hash"):
        agg.text_codes(pl.Series(["alice", "bob"]))
    fresh = OrderAggregator(AS_OF)
    with pytest.raises(DataError, match="shares a 64-bit hash"):  # within one batch too
        fresh.text_codes(pl.Series(["x", "y"]))


def test_grow_copies_unless_the_owner_says_in_place() -> None:
    """A view taken of the accumulators stays valid: the public call returns a grown copy."""
    acc = new_accumulators(1 << 10, 3)
    view = acc["orders"]
    view[:] = 7
    grown = grow_accumulators(acc, 1 << 16)
    assert grown is not acc and acc.shape[0] == 1 << 10 and (view == 7).all()
    assert (grown["orders"][: 1 << 10] == 7).all() and (grown["orders"][1 << 10 :] == 0).all()
