"""Tests of the seeded synthetic retail data generator (fastseg.synthetic)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from fastseg.errors import ParameterError
from fastseg.synthetic import (
    _LOCATIONS,
    CATEGORIES,
    CHANNELS,
    DEFAULT_END,
    EVENT_TYPES,
    TAGS,
    SyntheticDataset,
    generate,
    generate_frames,
)

N_ORDERS = 20_000
SEED = 11


@pytest.fixture(scope="module")
def frames() -> dict[str, pl.DataFrame]:
    return generate_frames(orders=N_ORDERS, seed=SEED)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    return generate(tmp_path_factory.mktemp("gen"), orders=N_ORDERS, seed=SEED, chunk_rows=3_001)


def _read(ds: SyntheticDataset) -> dict[str, pl.DataFrame]:
    out = {"orders": pl.read_parquet(ds.orders)}
    if ds.customers is not None:
        out["customers"] = pl.read_parquet(ds.customers)
    if ds.events is not None:
        out["events"] = pl.read_parquet(ds.events)
    return out


def _assert_frames_equal(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for kind in a:
        assert_frame_equal(a[kind], b[kind], check_exact=True)


# ---------------------------------------------------------------------------------------------
# determinism, chunking, files == frames
# ---------------------------------------------------------------------------------------------


def test_same_seed_same_data_and_other_seed_differs(frames: dict[str, pl.DataFrame]) -> None:
    _assert_frames_equal(frames, generate_frames(orders=N_ORDERS, seed=SEED))
    other = generate_frames(orders=N_ORDERS, seed=SEED + 1)
    for kind in ("orders", "customers", "events"):
        assert not frames[kind].equals(other[kind]), kind


def test_files_equal_frames(written: SyntheticDataset, frames: dict[str, pl.DataFrame]) -> None:
    _assert_frames_equal(_read(written), frames)


def test_chunk_size_does_not_change_data(tmp_path: Path, written: SyntheticDataset) -> None:
    other = generate(tmp_path, orders=N_ORDERS, seed=SEED, chunk_rows=7_919)
    _assert_frames_equal(_read(written), _read(other))


def test_one_row_group_per_chunk(written: SyntheticDataset) -> None:
    for path, rows in (
        (written.orders, written.n_orders),
        (written.customers, written.n_customers),
        (written.events, written.n_events),
    ):
        assert path is not None
        meta = pq.ParquetFile(path).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert sum(sizes) == rows
        assert meta.num_row_groups == math.ceil(rows / 3_001)
        assert all(s == 3_001 for s in sizes[:-1])


def test_result_record(written: SyntheticDataset) -> None:
    assert written.n_orders == N_ORDERS
    assert written.n_customers == N_ORDERS // 10
    assert written.n_events == N_ORDERS
    assert written.seed == SEED
    assert written.seconds > 0
    assert written.orders == written.folder / "orders.parquet"
    assert written.customers == written.folder / "customers.parquet"
    assert written.events == written.folder / "events.parquet"


def test_orders_do_not_depend_on_customers_or_events(frames: dict[str, pl.DataFrame]) -> None:
    only = generate_frames(orders=N_ORDERS, seed=SEED, with_customers=False, with_events=False)
    assert list(only) == ["orders"]
    assert_frame_equal(only["orders"], frames["orders"], check_exact=True)


# ---------------------------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------------------------

ORDERS_SCHEMA = {
    "order_id": pl.Int64,
    "customer_id": pl.Int64,
    "order_ts": pl.Datetime("us"),
    "amount": pl.Float64,
    "quantity": pl.Int64,
    "category": pl.String,
    "channel": pl.String,
    "discount": pl.Float64,
}
CUSTOMERS_SCHEMA = {
    "customer_id": pl.Int64,
    "first_name": pl.String,
    "email": pl.String,
    "phone": pl.String,
    "signup_ts": pl.Datetime("us"),
    "birth_date": pl.Date,
    "gender": pl.String,
    "country": pl.String,
    "region": pl.String,
    "city": pl.String,
    "email_opt_in": pl.Boolean,
    "sms_opt_in": pl.Boolean,
    "tags": pl.List(pl.String),
}
EVENTS_SCHEMA = {"customer_id": pl.Int64, "event_ts": pl.Datetime("us"), "event": pl.String}


@pytest.mark.parametrize("string_ids", [False, True])
def test_schemas_are_exact(tmp_path: Path, string_ids: bool) -> None:
    ds = generate(tmp_path, orders=2_000, seed=1, string_ids=string_ids, years=1.0)
    cid = pl.String if string_ids else pl.Int64
    for path, schema in (
        (ds.orders, ORDERS_SCHEMA),
        (ds.customers, CUSTOMERS_SCHEMA),
        (ds.events, EVENTS_SCHEMA),
    ):
        assert path is not None
        expected = {**schema, "customer_id": cid}
        got = pl.scan_parquet(path).collect_schema()
        assert list(got.items()) == list(expected.items())


def test_no_nulls_except_profile_gaps(frames: dict[str, pl.DataFrame]) -> None:
    assert frames["orders"].null_count().sum_horizontal().item() == 0
    assert frames["events"].null_count().sum_horizontal().item() == 0
    nulls = frames["customers"].null_count().row(0, named=True)
    assert {k for k, v in nulls.items() if v} <= {
        "birth_date",
        "gender",
        "first_name",
        "email",
        "phone",
    }


# ---------------------------------------------------------------------------------------------
# shape of the data
# ---------------------------------------------------------------------------------------------


def _purchases(orders: pl.DataFrame) -> pl.DataFrame:
    return orders.filter(pl.col("amount") >= 0)


def test_row_counts(frames: dict[str, pl.DataFrame]) -> None:
    assert frames["orders"].height == N_ORDERS
    assert frames["customers"].height == N_ORDERS // 10
    assert frames["events"].height == N_ORDERS


def test_order_ids_increase_and_rows_are_in_time_order(frames: dict[str, pl.DataFrame]) -> None:
    o = frames["orders"]
    ids = o["order_id"].to_numpy()
    assert (np.diff(ids) > 0).all()
    assert o["order_ts"].is_sorted()
    assert frames["events"]["event_ts"].is_sorted()


def test_refund_share_and_refund_rows(frames: dict[str, pl.DataFrame]) -> None:
    o = frames["orders"]
    refunds = o.filter(pl.col("amount") < 0)
    assert 0.03 <= refunds.height / o.height <= 0.08
    assert (refunds["quantity"] <= -1).all()
    assert (refunds["discount"] == 0).all()
    # each refund follows an earlier purchase of the same customer, of at least its amount,
    # in the same category and channel
    purchases = _purchases(o).select(
        "customer_id",
        "category",
        "channel",
        pl.col("order_ts").alias("bought_ts"),
        pl.col("amount").alias("bought"),
    )
    matched = (
        refunds.with_row_index("r")
        .join(purchases, on=["customer_id", "category", "channel"])
        .filter(
            (pl.col("bought_ts") < pl.col("order_ts"))
            & (pl.col("bought") >= -pl.col("amount"))
            & (pl.col("order_ts") - pl.col("bought_ts") <= dt.timedelta(days=61))
        )
    )
    assert matched["r"].n_unique() == refunds.height


def test_purchase_values(frames: dict[str, pl.DataFrame]) -> None:
    p = _purchases(frames["orders"])
    assert (p["amount"] > 0).all()
    assert (p["quantity"] >= 1).all()
    assert (frames["orders"]["discount"] >= 0).all()
    assert 0.5 < (p["discount"] == 0).mean() < 0.97  # most orders have no discount
    assert (p["amount"] == p["amount"].round(2)).all()
    # basket values differ by customer: customer mean log-amount varies well beyond noise
    per = p.group_by("customer_id").agg(pl.col("amount").log().mean().alias("m"), pl.len())
    assert per.filter(pl.col("len") >= 5)["m"].std() > 0.3


def test_heavy_tailed_orders_per_customer(frames: dict[str, pl.DataFrame]) -> None:
    counts = _purchases(frames["orders"]).group_by("customer_id").len()["len"]
    assert (counts == 1).mean() > 0.5  # most buy once
    assert counts.max() >= 50 * counts.median()  # a few buy very often


def test_prospects_and_ids(frames: dict[str, pl.DataFrame]) -> None:
    c, o, e = frames["customers"], frames["orders"], frames["events"]
    ids = c["customer_id"]
    assert ids.n_unique() == c.height
    assert ids.min() >= 100_000
    assert 1.15 < (ids.max() - ids.min() + 1) / c.height < 1.45  # random gaps
    prospects = c.join(o, on="customer_id", how="anti")
    assert 0.07 <= prospects.height / c.height <= 0.13
    assert o.join(c, on="customer_id", how="anti").is_empty()
    assert e.join(c, on="customer_id", how="anti").is_empty()


def test_timestamps_within_history(frames: dict[str, pl.DataFrame]) -> None:
    first = DEFAULT_END - dt.timedelta(days=round(3.0 * 365.25) - 1)
    lo = dt.datetime.combine(first, dt.time())
    hi = dt.datetime.combine(DEFAULT_END + dt.timedelta(days=1), dt.time())
    assert first >= DEFAULT_END - dt.timedelta(days=round(3.0 * 365.25))
    for frame, col in ((frames["orders"], "order_ts"), (frames["events"], "event_ts")):
        assert frame[col].min() >= lo
        assert frame[col].max() < hi
    # the history is used from start to end
    assert frames["orders"]["order_ts"].min() < lo + dt.timedelta(days=30)
    assert frames["orders"]["order_ts"].max() > hi - dt.timedelta(days=3)


def test_categories_channels_events(frames: dict[str, pl.DataFrame]) -> None:
    o = frames["orders"]
    assert len(CATEGORIES) == 20
    assert set(o["category"].unique()) == set(CATEGORIES)
    assert set(o["channel"].unique()) == set(CHANNELS) == {"web", "app", "store"}
    assert set(frames["events"]["event"].unique()) == set(EVENT_TYPES)
    store_hours = o.filter(pl.col("channel") == "store")["order_ts"].dt.hour()
    assert store_hours.min() >= 9
    assert store_hours.max() < 20


def test_seasonality(frames: dict[str, pl.DataFrame]) -> None:
    daily = _purchases(frames["orders"]).group_by(pl.col("order_ts").dt.date().alias("d")).len()
    median = daily["len"].median()
    assert median is not None
    black_fridays = [dt.date(2023, 11, 24), dt.date(2024, 11, 29), dt.date(2025, 11, 28)]
    bf = daily.filter(pl.col("d").is_in(black_fridays))["len"]
    assert bf.len() == 3
    assert bf.min() > 1.8 * median
    month = daily.group_by(pl.col("d").dt.month().alias("m")).agg(pl.col("len").mean())
    by_month = dict(month.iter_rows())
    assert by_month[12] > 1.2 * by_month[2]
    weekday = daily.group_by(pl.col("d").dt.weekday().alias("w")).agg(pl.col("len").mean())
    by_weekday = dict(weekday.iter_rows())
    assert by_weekday[6] > by_weekday[2]  # Saturday busier than Tuesday


def test_some_customers_churn(frames: dict[str, pl.DataFrame]) -> None:
    per = (
        _purchases(frames["orders"])
        .group_by("customer_id")
        .agg(pl.len(), pl.col("order_ts").max().alias("last"))
        .filter(pl.col("len") >= 5)
    )
    cutoff = dt.datetime.combine(DEFAULT_END - dt.timedelta(days=180), dt.time())
    lapsed = (per["last"] < cutoff).mean()
    assert 0.1 < lapsed < 0.9


def test_customer_profiles(frames: dict[str, pl.DataFrame]) -> None:
    c, o = frames["customers"], frames["orders"]
    # locations: every (country, region, city) is a known, consistent triple
    known = {(a, b, d) for a, b, d, _ in _LOCATIONS}
    seen = set(c.select("country", "region", "city").unique().iter_rows())
    assert seen <= known
    assert 3 <= c["country"].n_unique() <= 6
    assert c.group_by("city").agg(pl.col("country").n_unique())["country"].max() == 1
    # signup before the first order; birth well before signup
    first = _purchases(o).group_by("customer_id").agg(pl.col("order_ts").min().alias("first"))
    j = c.join(first, on="customer_id")
    assert (j["signup_ts"] <= j["first"]).all()
    adult = c.drop_nulls("birth_date").filter(
        pl.col("signup_ts").dt.date() - pl.col("birth_date") < dt.timedelta(days=365 * 15)
    )
    assert adult.is_empty()
    # tags: lists of known tags, most empty, some of each
    tags = c["tags"]
    assert (tags.list.len() == 0).mean() > 0.3
    assert set(tags.explode().drop_nulls().unique()) == set(TAGS)
    assert 0.4 < c["email_opt_in"].mean() < 0.8
    assert 0.05 < c["sms_opt_in"].mean() < 0.5
    assert set(c["gender"].drop_nulls().unique()) <= {"female", "male", "other"}


def test_contact_details_look_real_and_some_are_messy(frames: dict[str, pl.DataFrame]) -> None:
    """first_name, email and phone: mostly clean, some missing, padded or in another case, a few
    invalid; phones in national and international formats of the customer's country."""
    import phonenumbers

    c = frames["customers"]
    n = c.height
    for col, low, high in (("first_name", 0.01, 0.06), ("email", 0.02, 0.07), ("phone", 0.03, 0.1)):
        assert low < c[col].null_count() / n < high, col
    email = c["email"].drop_nulls()
    clean = email.str.strip_chars().str.to_lowercase()
    valid = clean.str.contains(r"^[a-z0-9_.+-]+@[a-z0-9-]+\.[a-z0-9-.]+$")
    assert 0.9 < valid.mean() < 0.995  # a few are not addresses at all
    assert 0.02 < (email != email.str.strip_chars()).mean() < 0.08  # padded
    assert (
        0.02 < (email.str.strip_chars() != email.str.strip_chars().str.to_lowercase()).mean() < 0.1
    )
    assert email.str.contains(r"\+shop@").any()  # plus-addressing
    assert email.n_unique() > 0.8 * email.len()
    assert c["first_name"].drop_nulls().str.contains("[éëèïüöäß]").any()  # unicode names
    # phones: national and international; valid for the customer's country when well written
    phone = c.select("country", pl.col("phone").str.strip_chars()).drop_nulls()
    intl = phone["phone"].str.contains(r"^(\+|00)")
    assert 0.2 < intl.mean() < 0.7
    ok = bad = 0
    for country, text in phone.iter_rows():
        try:
            number = phonenumbers.parse(text, country)
        except phonenumbers.NumberParseException:
            bad += 1
            continue
        if phonenumbers.is_valid_number(number) or text.startswith("00"):
            ok += 1
        else:
            bad += 1
    assert 0.002 < bad / (ok + bad) < 0.05
    for country in ("US", "GB", "DE", "FR", "CA"):
        assert phone.filter(pl.col("country") == country).height > 0


def test_events_follow_activity(frames: dict[str, pl.DataFrame]) -> None:
    c, o, e = frames["customers"], frames["orders"], frames["events"]
    emails = e.filter(pl.col("event").is_in(["email_open", "email_click"]))
    opted = emails.join(c.select("customer_id", "email_opt_in"), on="customer_id")
    assert opted["email_opt_in"].all()  # only opted-in customers open or click emails
    # some prospects visit the site without buying
    prospects = c.join(o, on="customer_id", how="anti").select("customer_id")
    assert not e.join(prospects, on="customer_id").is_empty()
    # buyers are more engaged than prospects
    per = e.group_by("customer_id").len()
    buyers = o.select("customer_id").unique()
    buyer_rate = per.join(buyers, on="customer_id")["len"].sum() / buyers.height
    prospect_rate = per.join(prospects, on="customer_id")["len"].sum() / prospects.height
    assert buyer_rate > 2 * prospect_rate
    # checkouts: some lead to an order that day, some are abandoned
    checkouts = (
        e.filter(pl.col("event") == "checkout_started")
        .select("customer_id", pl.col("event_ts").dt.date().alias("day"))
        .unique()
    )
    bought = o.select("customer_id", pl.col("order_ts").dt.date().alias("day")).unique()
    converted = checkouts.join(bought, on=["customer_id", "day"]).height / checkouts.height
    assert 0.2 < converted < 0.95


# ---------------------------------------------------------------------------------------------
# string ids, parameters, edge sizes
# ---------------------------------------------------------------------------------------------


def test_string_ids_are_the_int_ids_formatted(frames: dict[str, pl.DataFrame]) -> None:
    s = generate_frames(orders=N_ORDERS, seed=SEED, string_ids=True)
    for kind in ("orders", "customers", "events"):
        ids = s[kind]["customer_id"]
        assert ids.str.contains(r"^C\d{7}$").all()
        as_int = s[kind].with_columns(pl.col("customer_id").str.slice(1).cast(pl.Int64))
        assert_frame_equal(as_int, frames[kind], check_exact=True)
    assert s["customers"]["customer_id"].min() == "C0100000"


def test_counts_and_history_parameters() -> None:
    f = generate_frames(
        orders=3_000, customers=800, events=1_234, seed=5, end=dt.date(2020, 1, 31), years=2.0
    )
    assert f["orders"].height == 3_000
    assert f["customers"].height == 800
    assert f["events"].height == 1_234
    days = round(2.0 * 365.25)
    lo = dt.datetime(2020, 1, 31) - dt.timedelta(days=days - 1)
    assert f["orders"]["order_ts"].min() >= lo
    assert f["orders"]["order_ts"].max() < dt.datetime(2020, 2, 1)


@pytest.mark.parametrize(
    ("orders", "customers", "events", "years"),
    [(1, None, None, 0.5), (1, 1, 0, 0.5), (10, 100, 5, 0.5), (500, 3, 50, 0.01), (50, 40, 0, 1.0)],
)
def test_tiny_and_odd_sizes(orders: int, customers: int | None, events: int, years: float) -> None:
    f = generate_frames(orders=orders, customers=customers, events=events, seed=2, years=years)
    assert f["orders"]["order_ts"].min() >= dt.datetime.combine(
        DEFAULT_END - dt.timedelta(days=max(1, round(years * 365.25)) - 1), dt.time()
    )
    n_customers = customers if customers is not None else max(1, orders // 10)
    assert f["orders"].height == orders
    assert f["customers"].height == n_customers
    assert f["events"].height == (orders if events is None else events)
    assert f["orders"].join(f["customers"], on="customer_id", how="anti").is_empty()
    buyers = f["orders"]["customer_id"].n_unique()
    assert buyers == min(orders, max(1, round(0.9 * n_customers)))


def test_zero_events_writes_an_empty_file(tmp_path: Path) -> None:
    ds = generate(tmp_path, orders=200, events=0, seed=1, years=0.5)
    assert ds.events is not None
    e = pl.read_parquet(ds.events)
    assert e.height == 0
    assert dict(e.schema) == EVENTS_SCHEMA


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"orders": 0}, ["orders", "[1,", "0"]),
        ({"orders": -5}, ["orders", "-5"]),
        ({"orders": 1.5}, ["orders", "integer", "1.5"]),
        ({"orders": True}, ["orders", "True"]),
        ({"customers": 0}, ["customers", "[1,", "0"]),
        ({"events": -1}, ["events", "[0,", "-1"]),
        ({"seed": -1}, ["seed", "-1"]),
        ({"years": 0}, ["years", "(0, 100]", "0"]),
        ({"years": -2.0}, ["years", "-2.0"]),
        ({"years": float("nan")}, ["years", "nan"]),
        ({"years": 101}, ["years", "101"]),
        ({"years": "3"}, ["years", "'3'"]),
        ({"end": "2026-06-30"}, ["end", "datetime.date", "'2026-06-30'"]),
        ({"end": dt.date(1901, 1, 1), "years": 5}, ["end", "1900"]),
        ({"string_ids": "yes"}, ["string_ids", "'yes'"]),
        ({"with_events": 1}, ["with_events", "1"]),
    ],
)
def test_parameter_errors(kwargs: dict[str, object], words: list[str]) -> None:
    for call in (generate_frames, lambda **kw: generate("/nonexistent/never-created", **kw)):
        with pytest.raises(ParameterError) as info:
            call(**{"orders": 100, **kwargs})
        message = str(info.value)
        assert "\n" not in message
        for word in words:
            assert word in message
    assert not Path("/nonexistent/never-created").exists()


def test_generate_only_parameters(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"chunk_rows must be in \[1, .*\]; got 0"):
        generate(tmp_path, orders=100, chunk_rows=0)
    with pytest.raises(ParameterError, match="progress must be a callable"):
        generate(tmp_path, orders=100, progress=3)  # type: ignore[arg-type]
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ParameterError, match="is a file"):
        generate(a_file, orders=100)
    assert list(tmp_path.iterdir()) == [a_file]


def test_datetime_end_is_cut_to_its_date() -> None:
    a = generate_frames(orders=500, seed=3, end=dt.datetime(2025, 3, 1, 15, 30), years=0.5)
    b = generate_frames(orders=500, seed=3, end=dt.date(2025, 3, 1), years=0.5)
    _assert_frames_equal(a, b)


# ---------------------------------------------------------------------------------------------
# files: atomic writes, progress, optional outputs
# ---------------------------------------------------------------------------------------------


def test_writes_only_the_three_files(written: SyntheticDataset) -> None:
    names = sorted(p.name for p in written.folder.iterdir())
    assert names == ["customers.parquet", "events.parquet", "orders.parquet"]


def test_progress_reports_every_chunk(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate(
        tmp_path,
        orders=5_000,
        seed=1,
        years=1.0,
        chunk_rows=1_000,
        progress=lambda d, t: calls.append((d, t)),
    )
    total = 5_000 + 500 + 5_000
    assert all(t == total for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert done[-1] == total
    assert len(calls) == 5 + 1 + 5  # one call per row group


def test_failure_leaves_old_files_and_no_temporaries(tmp_path: Path) -> None:
    first = generate(tmp_path, orders=2_000, seed=1, chunk_rows=500, years=1.0)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def boom(done: int, total: int) -> None:
        if done > 2_500:
            msg = "interrupted"
            raise KeyboardInterrupt(msg)

    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, orders=3_000, seed=2, chunk_rows=500, years=1.0, progress=boom)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before
    assert first.n_orders == 2_000


def test_failure_in_empty_folder_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "new" / "nested"

    def boom(done: int, total: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        generate(out, orders=1_000, seed=1, chunk_rows=100, years=1.0, progress=boom)
    assert list(out.iterdir()) == []


def test_optional_outputs(tmp_path: Path, frames: dict[str, pl.DataFrame]) -> None:
    ds = generate(tmp_path, orders=N_ORDERS, seed=SEED, with_customers=False, with_events=False)
    assert ds.customers is None
    assert ds.events is None
    assert ds.n_events == 0
    assert ds.n_customers == N_ORDERS // 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.parquet"]
    assert_frame_equal(pl.read_parquet(ds.orders), frames["orders"], check_exact=True)
