"""Per-customer features: the Numba aggregation equals the plain-Python reference."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastseg import features as feat
from fastseg.kernels import aggregate as agg
from fastseg.pipeline import order_features
from tests.reference import features_ref, same_order_features

AS_OF = dt.date(2026, 6, 30)
WINDOWS = (30, 90, 365)


def _compare(frame: pl.DataFrame, ref: dict) -> None:
    assert frame["customer_id"].to_list() == sorted(ref)
    assert frame["customer_id"].is_sorted()
    for row in frame.iter_rows(named=True):
        want = ref[row["customer_id"]]
        for key, value in want.items():
            if key == "top_category" and key not in row:  # only when asked for
                continue
            got = row[key]
            if value is None or got is None:
                assert got is None and value is None, (key, got, value, row)
            elif isinstance(value, float):
                assert math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-6), (key, got, value)
            else:
                assert got == value, (key, got, value, row)


def _rows(df: pl.DataFrame) -> list[dict]:
    return df.rename({"order_ts": "order_date"}).to_dicts()


id_pools = st.sampled_from(["small", "sparse", "negative", "text"])


@st.composite
def orders_frames(draw):  # noqa: ANN201
    pool = draw(id_pools)
    n_cust = draw(st.integers(1, 12))
    if pool == "small":
        ids = list(range(1, n_cust + 1))
    elif pool == "sparse":  # forces the hash path of encode_int_ids
        ids = draw(
            st.lists(st.integers(-(2**62), 2**62), min_size=n_cust, max_size=n_cust, unique=True)
        )
    elif pool == "negative":
        ids = list(range(-n_cust, 0))
    else:
        ids = [
            f"C{i:05d}"
            for i in draw(
                st.lists(st.integers(0, 99999), min_size=n_cust, max_size=n_cust, unique=True)
            )
        ]
    n = draw(st.integers(1, 60))
    with_lines = draw(st.booleans())
    rows = []
    for _ in range(n):
        cid = draw(st.sampled_from(ids))
        day = AS_OF - dt.timedelta(days=draw(st.integers(0, 800)))
        amount = draw(
            st.one_of(st.floats(-200, 500, allow_nan=False), st.sampled_from([0.0, 10.0, -10.0]))
        )
        row = {
            "customer_id": cid,
            "order_ts": day,
            "amount": amount,
            "category": draw(st.sampled_from([None, "shoes", "bags", "hats"])),
            "discount": draw(st.sampled_from([0.0, 0.0, 5.0, None])),
        }
        if with_lines:
            row["order_id"] = draw(st.integers(0, 8))
        rows.append(row)
    if with_lines:  # lines of one order share the customer's first date for that order id
        first: dict = {}
        for r in rows:
            r["order_ts"] = first.setdefault((r["customer_id"], r["order_id"]), r["order_ts"])
    return pl.DataFrame(rows)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(df=orders_frames(), partitioned=st.booleans(), batch_rows=st.sampled_from([1 << 20, 5]))
def test_features_equal_reference(df: pl.DataFrame, partitioned: bool, batch_rows: int) -> None:
    with pytest.MonkeyPatch.context() as mp:  # undone after each example
        mp.setattr(agg, "_PART_BYTES", 256 if partitioned else 1 << 20)
        mp.setattr(agg, "_CHUNK_ROWS", 7 if partitioned else 1 << 22)  # several chunks
        mp.setattr(agg, "_ROWS_PER_RECORD", 0 if partitioned else 4)  # whatever the rows
        got = order_features(df, as_of=AS_OF, windows=WINDOWS, batch_rows=batch_rows)
    assert got.report.rows_used == df.height  # every generated row is usable
    _compare(got.frame, features_ref(_rows(df), AS_OF, WINDOWS))


def test_row_order_does_not_matter() -> None:
    rng = np.random.default_rng(1)
    n = 5000
    df = pl.DataFrame(
        {
            "customer_id": rng.integers(0, 300, n),
            "order_ts": [AS_OF - dt.timedelta(days=int(d)) for d in rng.integers(0, 700, n)],
            "amount": np.round(rng.normal(50, 60, n), 2),
        }
    )
    a = order_features(df, as_of=AS_OF)
    b = order_features(df.sample(fraction=1.0, shuffle=True, seed=3), as_of=AS_OF)
    # report and counts and dates exactly equal; sums up to the order of floating-point additions
    same_order_features(a, b)


def test_partitioned_path_on_many_customers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large enough for the partitioned kernel with its default block size (taken here with
    fewer rows per customer than it needs to pay)."""
    monkeypatch.setattr(agg, "_ROWS_PER_RECORD", 1)
    rng = np.random.default_rng(7)
    n, c = 200_000, 40_000
    df = pl.DataFrame(
        {
            "customer_id": rng.integers(10**9, 10**9 + 3 * c, n),
            "order_ts": pl.Series(rng.integers(19800, 20634, n)).cast(pl.Date),
            "amount": np.round(rng.normal(40, 50, n), 2),
            "category": rng.choice(["a", "b", "c", "d"], n),
        }
    )
    got = order_features(df, as_of=AS_OF).frame
    ids, counts = np.unique(df["customer_id"].to_numpy(), return_counts=True)
    assert got.height == ids.shape[0]
    ref = (
        df.group_by("customer_id")
        .agg(
            (pl.col("amount") >= 0).sum().alias("frequency"),
            pl.col("amount").sum().alias("monetary"),
            pl.col("order_ts").filter(pl.col("amount") >= 0).max().alias("last_order_date"),
            pl.col("category")
            .filter(pl.col("amount") >= 0)
            .n_unique()
            .alias("distinct_categories"),
        )
        .sort("customer_id")
    )
    assert got["frequency"].to_list() == ref["frequency"].cast(pl.Int64).to_list()
    assert got["last_order_date"].to_list() == ref["last_order_date"].to_list()
    np.testing.assert_allclose(got["monetary"].to_numpy(), ref["monetary"].to_numpy(), rtol=1e-9)
    assert (
        got["distinct_categories"].to_list() == ref["distinct_categories"].cast(pl.Int64).to_list()
    )


def test_one_customer_one_row() -> None:
    df = pl.DataFrame({"customer_id": [7], "order_ts": [AS_OF], "amount": [12.5]})
    got = order_features(df).frame.row(0, named=True)
    assert got["recency_days"] == 0 and got["frequency"] == 1 and got["aov"] == 12.5
    assert got["avg_days_between_orders"] is None and got["tenure_days"] == 0


def test_refund_only_customer_has_no_order() -> None:
    df = pl.DataFrame({"customer_id": [1, 2], "order_ts": [AS_OF, AS_OF], "amount": [10.0, -4.0]})
    got = order_features(df).frame.filter(pl.col("customer_id") == 2).row(0, named=True)
    assert got["frequency"] == 0 and got["recency_days"] is None and got["monetary"] == -4.0
    assert got["refund_count"] == 1 and got["refund_amount"] == 4.0 and got["aov"] is None


def test_more_than_64_categories_uses_polars_path() -> None:
    cats = [f"cat{i}" for i in range(80)]
    df = pl.DataFrame(
        {
            "customer_id": [1] * 80 + [2] * 3,
            "order_ts": [AS_OF] * 83,
            "amount": [1.0] * 82 + [-1.0],
            "category": cats + ["cat0", "cat0", "cat5"],
        }
    )
    got = order_features(df).frame
    assert got["distinct_categories"].to_list() == [80, 1]


def test_encode_int_ids_paths() -> None:
    for ids in (np.array([5, 3, 5, 9]), np.array([2**60, -(2**60), 2**60, 0])):
        codes, uniques = agg.encode_int_ids(ids)
        assert uniques.tolist() == sorted(set(ids.tolist()))
        assert (uniques[codes] == ids).all()
    codes, uniques = agg.encode_int_ids(np.array([], np.int64))
    assert codes.shape == (0,) and uniques.shape == (0,)


@given(st.lists(st.text(min_size=0, max_size=4), min_size=1, max_size=40))
def test_encode_text_ids(ids: list[str]) -> None:
    codes, uniques = feat.encode_customers(pl.Series(ids, dtype=pl.String))
    assert uniques.to_list() == sorted(set(ids))
    assert [uniques[int(c)] for c in codes] == ids


def test_event_features() -> None:
    ev = pl.DataFrame(
        {
            "customer_id": [1, 1, 1, 2],
            "event_date": [
                AS_OF,
                AS_OF - dt.timedelta(days=40),
                AS_OF - dt.timedelta(days=100),
                AS_OF,
            ],
            "event": ["email_open", "email_open", "site-visit", "email_open"],
        }
    )
    got = feat.event_features(ev, AS_OF).sort("customer_id")
    assert got["email_open_30d"].to_list() == [1, 1]
    assert got["email_open_90d"].to_list() == [2, 1]
    assert got["site_visit_90d"].to_list() == [0, 0]
    assert got["days_since_site_visit"].to_list() == [100, None]
    assert got["days_since_email_open"].to_list() == [0, 0]


def test_join_customers_adds_prospects() -> None:
    df = pl.DataFrame({"customer_id": [1, 2], "order_ts": [AS_OF, AS_OF], "amount": [5.0, 6.0]})
    f = order_features(df).frame
    prof = pl.DataFrame({"customer_id": [2, 3], "country": ["DE", "FR"]})
    ev = pl.DataFrame({"customer_id": [4], "email_open_30d": [2], "days_since_email_open": [3]})
    out = feat.join_customers(f, prof, ev)
    assert out["customer_id"].to_list() == [1, 2, 3, 4]
    assert out["frequency"].to_list() == [1, 1, 0, 0]
    assert out["monetary"].to_list() == [5.0, 6.0, 0.0, 0.0]
    assert out["orders_30d"].to_list() == [1, 1, 0, 0]
    assert out["recency_days"].to_list() == [0, 0, None, None]
    assert out["country"].to_list() == [None, "DE", "FR", None]
    assert out["email_open_30d"].to_list() == [0, 0, 0, 2]


@pytest.mark.parametrize("bad", [[0], [30, 30], [-5], ["x"]])
def test_bad_windows(bad: list) -> None:
    from fastseg.errors import ParameterError

    with pytest.raises(ParameterError, match="windows"):
        feat.check_windows(bad)


@settings(max_examples=40, deadline=None)
@given(
    a=st.sets(st.integers(-50, 50), max_size=30),
    b=st.sets(st.integers(-50, 50), max_size=30),
    c=st.sets(st.integers(-50, 50), max_size=30),
    text=st.booleans(),
)
def test_join_customers_by_position_equals_hash_joins(a, b, c, text) -> None:  # noqa: ANN001
    """The positional outer join (integer ids) equals Polars' full joins followed by a sort."""

    def frame(ids: set[int], name: str, sort: bool) -> pl.DataFrame:
        ids_l = sorted(ids) if sort else list(ids)
        cid = [f"c{i:+04d}" for i in ids_l] if text else ids_l
        return pl.DataFrame(
            {
                "customer_id": pl.Series(cid, dtype=pl.String if text else pl.Int64),
                name: [float(i) for i in ids_l],
            }
        )

    feats = frame(a, "frequency", True).with_columns(pl.col("frequency").cast(pl.Int64))
    prof = frame(b, "segment_hint", False)
    ev = frame(c, "email_open_30d", True).with_columns(pl.col("email_open_30d").cast(pl.Int64))
    got = feat.join_customers(feats, prof, ev)
    want = (
        feats.join(prof, on="customer_id", how="full", coalesce=True)
        .join(ev, on="customer_id", how="full", coalesce=True)
        .sort("customer_id")
        .with_columns(pl.col("frequency", "email_open_30d").fill_null(0))
    )
    assert got.equals(want)
