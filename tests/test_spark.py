"""fastseg.spark against a real local Spark session: the same scores, segments and summary as
fastseg.score / fastseg.run on the same rows, customer by customer.

Skipped when PySpark is not importable, unless FASTSEG_REQUIRE_SPARK=1 (CI), then it fails.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import fastseg
from fastseg.errors import DataError, SchemaError

if os.environ.get("FASTSEG_REQUIRE_SPARK") == "1":
    import pyspark  # noqa: F401  (CI: a missing PySpark is a failure, not a skip)
else:
    pytest.importorskip("pyspark", reason="PySpark not installed: pip install 'fastseg[spark]'")

from pyspark.sql import SparkSession  # noqa: E402

import fastseg.spark as fs  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

DAY0 = dt.date(2025, 1, 1)

RULES = """
[[segment]]
name = "app_recent"
rule = "orders(since: -90d, channel: 'app') >= 1"

[[segment]]
name = "openers"
rule = "events('email_open', since: -30d) >= 1 AND vip"

[[segment]]
name = "mostly_a"
rule = "top_category = 'a' AND distinct_categories >= 2"

[[segment]]
name = "big_year"
rule = "revenue(since: -1y) > 200 AND NOT segment(app_recent)"
"""


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    with warnings.catch_warnings():  # Spark's own pandas version check as the session starts
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
        session = (
            SparkSession.builder.master("local[2]")
            .appName("fastseg-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "3")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.driver.memory", "1g")
            .getOrCreate()
        )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def to_spark(spark: SparkSession, frame: pl.DataFrame) -> Any:
    with warnings.catch_warnings():  # createDataFrame's pandas version check (not fastseg's)
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
        return spark.createDataFrame(frame.to_arrow())


def to_polars(df: Any) -> pl.DataFrame:
    return pl.from_arrow(df.toArrow())  # type: ignore[return-value]


def make_data(n: int = 4000, customers: int = 600, *, text_ids: bool = False, seed: int = 0):
    """Orders (with refunds, rows without an id or amount, channels, order ids), profiles (with
    prospects, a duplicate id, text dates, a flag, a text column that is dates but one value)
    and events (also of customers without orders)."""
    rng = np.random.default_rng(seed)
    cid = rng.integers(0, customers, n)
    days = rng.integers(0, 500, n)
    amount = np.round(rng.gamma(2.0, 40.0, n), 2)
    amount[rng.random(n) < 0.04] *= -1
    am = pl.Series(amount)
    am = am.scatter(np.flatnonzero(rng.random(n) < 0.02), None)
    ids = pl.Series(cid).scatter(np.flatnonzero(rng.random(n) < 0.01), None)
    orders = pl.DataFrame(
        {
            "customer_id": ids,
            "order_ts": [
                dt.datetime.combine(DAY0, dt.time()) + dt.timedelta(days=int(d), hours=int(h))
                for d, h in zip(days, rng.integers(0, 24, n), strict=True)
            ],
            "amount": am,
            "order_id": np.arange(n),
            "channel": rng.choice(["app", "web", "store"], n),
            "category": rng.choice(["a", "b", "c", "d"], n),
        }
    )
    pc = np.arange(customers + 80)  # 80 prospects
    prof = pl.DataFrame(
        {
            "customer_id": pc,
            "signup": [(DAY0 - dt.timedelta(days=int(d))).isoformat() for d in pc % 300],
            "vip": rng.choice(["Y", "N"], pc.size),
            "joined": [(DAY0 + dt.timedelta(days=int(d))).isoformat() for d in pc % 50],
            "country": rng.choice(["DE", "FR", "US"], pc.size),
        }
    ).with_columns(
        pl.when(pl.col("customer_id") == 7)
        .then(pl.lit("unknown"))
        .otherwise("joined")
        .alias("joined")
    )
    dup = prof.filter(pl.col("customer_id").is_in([3, 11])).with_columns(country=pl.lit("XX"))
    prof = pl.concat([prof, dup])
    ne = 1500
    ev = pl.DataFrame(
        {
            "customer_id": rng.integers(0, customers + 120, ne),
            "event_ts": [DAY0 + dt.timedelta(days=int(d)) for d in rng.integers(300, 500, ne)],
            "event": rng.choice(["email_open", "visit"], ne),
        }
    )
    if text_ids:
        orders, prof, ev = (
            f.with_columns(pl.format("c{}", pl.col("customer_id")).alias("customer_id"))
            for f in (orders, prof, ev)
        )
    return orders, prof, ev


def same(got: pl.DataFrame, want: pl.DataFrame, key: tuple[str, ...] = ("customer_id",)) -> None:
    """Equal customer by customer, every column (Spark's wider types cast back)."""
    assert got.columns == want.columns
    assert_frame_equal(got.cast(want.schema).sort(key), want.sort(key))


@pytest.fixture(scope="module")
def int_data(spark: SparkSession):
    o, c, e = make_data()
    return (o, c, e), (to_spark(spark, o), to_spark(spark, c), to_spark(spark, e))


def test_score_int_ids_profiles_events_defaulted_as_of(int_data) -> None:
    (o, c, e), (so, sc, se) = int_data
    res = fs.score_job(so, customers=sc, events=se, partitions=3)
    want = fastseg.score(o, customers=c, events=e)
    got = to_polars(res.scores)
    same(got, want)
    assert res.as_of == want["last_order_date"].max()
    assert res.edge_rounds >= 2
    assert got.schema["r_score"] == pl.Int16 and got.schema["joined"] == pl.String
    assert res.customers.left_out["duplicate_customer_id"] == 2
    res.unpersist()


def test_score_text_ids_seven_partitions_as_of_given(spark: SparkSession) -> None:
    o, c, e = make_data(3000, 500, text_ids=True, seed=1)
    o = o.with_columns(pl.col("order_ts").dt.date())  # DateType: the scoring date by Spark's max
    so, sc, se = (to_spark(spark, f) for f in (o, c, e))
    as_of = dt.date(2026, 3, 1)
    got = to_polars(fs.score(so, customers=sc, events=se, as_of=as_of, partitions=7, bins=4))
    same(got, fastseg.score(o, customers=c, events=e, as_of=as_of, bins=4))


def test_partitions_of_one_customer_and_empty_partitions(spark: SparkSession) -> None:
    o, _, _ = make_data(200, 3, seed=2)
    got = to_polars(fs.score(to_spark(spark, o), partitions=7))
    same(got, fastseg.score(o))


@pytest.mark.parametrize("text_ids", [False, True])
def test_partitions_with_profiles_or_events_only(spark: SparkSession, text_ids: bool) -> None:
    """Most partitions hold no order row: their customers are prospects."""
    o, c, e = make_data(300, 2, text_ids=text_ids, seed=6)
    c, e = c.head(40), e.head(60)
    so, sc, se = (to_spark(spark, f) for f in (o, c, e))
    res = fs.run(so, customers=sc, events=se, rules=RULES, partitions=7)
    want = fastseg.run(o, customers=c, events=e, rules=RULES)
    same(to_polars(res.scores), want.scores)
    long = want.segments.to_long().with_columns(pl.col("segment").cast(pl.String))
    same(to_polars(res.segments), long, key=("segment", "customer_id"))


def test_latest_rows_unusable(spark: SparkSession) -> None:
    o, _, _ = make_data(2000, 300, seed=3)
    late = dt.datetime(2026, 12, 31)
    bad = pl.DataFrame(
        {
            "customer_id": [None, 5],
            "order_ts": [late, late],
            "amount": [10.0, None],
            "order_id": [10**6, 10**6 + 1],
            "channel": ["web", "web"],
            "category": ["a", "a"],
        },
        schema=o.schema,
    )
    o = pl.concat([o, bad])
    so = to_spark(spark, o)
    assert so.schema["order_ts"].dataType.typeName() == "timestamp"  # zone-aware: read by tasks
    res = fs.score_job(so, partitions=3)
    want = fastseg.score(o)
    same(to_polars(res.scores), want)
    assert res.as_of < late.date()
    assert res.orders.rows_read == o.height


def test_run_rules_with_windowed_aggregates(int_data) -> None:
    (o, c, e), (so, sc, se) = int_data
    res = fs.run(so, customers=sc, events=se, rules=RULES, partitions=7)
    want = fastseg.run(o, customers=c, events=e, rules=RULES)
    same(to_polars(res.scores), want.scores)
    long = want.segments.to_long().with_columns(pl.col("segment").cast(pl.String))
    same(to_polars(res.segments), long, key=("segment", "customer_id"))
    got_sum = to_polars(res.summary)
    want_sum = want.segments.summary()
    assert got_sum.columns == want_sum.columns
    # sums over partitions are added in another order: equal up to the last bits
    assert_frame_equal(got_sum, want_sum, check_exact=False, rel_tol=1e-12)
    assert {"app_recent", "openers", "big_year"} <= set(got_sum["segment"])
    assert got_sum.filter(pl.col("segment") == "app_recent")["customers"].item() > 0
    res.unpersist()


def test_bad_column_is_one_fastseg_error_line(int_data) -> None:
    _, (so, _, _) = int_data
    with pytest.raises(SchemaError) as info:
        fs.score(so, columns={"amount": "revenue_eur"})
    assert "\n" not in str(info.value) and "revenue_eur" in str(info.value)


def test_error_in_a_task_is_the_fastseg_error(spark: SparkSession) -> None:
    o, _, _ = make_data(500, 50, seed=4)
    o = o.with_columns(pl.col("amount").cast(pl.String))
    o = o.with_columns(
        pl.when(pl.col("order_id") == 17)
        .then(pl.lit("12,5 EUR"))
        .otherwise("amount")
        .alias("amount")
    )
    with pytest.raises(SchemaError) as info:
        fs.score(to_spark(spark, o), partitions=3)
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.startswith("orders (Spark DataFrame): column 'amount' has value '12,5 EUR'")
    with pytest.raises(SchemaError, match="12,5 EUR"):
        fastseg.score(o)


def test_strict_is_checked_over_all_partitions(spark: SparkSession) -> None:
    o, _, _ = make_data(800, 80, seed=5)
    with pytest.raises(DataError) as want:
        fastseg.score(o, strict=True)
    with pytest.raises(DataError) as got:
        fs.score(to_spark(spark, o), strict=True, partitions=3)
    assert str(got.value) == str(want.value).replace("(Polars DataFrame)", "(Spark DataFrame)")


def test_not_a_spark_frame() -> None:
    with pytest.raises(fastseg.errors.ParameterError, match="PySpark DataFrame"):
        fs.score(pl.DataFrame({"customer_id": [1]}))


def test_docs_example_runs(spark: SparkSession, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/spark.md's Python block, as written (its getOrCreate() finds this session)."""
    from tests.docblocks import DOCS, blocks

    (body,) = blocks(DOCS / "spark.md", "python")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*existing Spark ?[Ss]ession.*")
        exec(compile(body, "docs/spark.md", "exec"), {"__name__": "docs_spark"})
    out = capsys.readouterr().out
    assert "rfm_cell" in out and "prospects" in out
    assert (
        "|          4|prospects|" in out
        or "|4          |prospects|" in out
        or "4|prospects" in out.replace(" ", "")
    )


def test_ids_with_unicode_spaces_are_one_customer(spark: SparkSession) -> None:
    """Text ids are trimmed as fastseg trims them (no-break and ideographic spaces too) before
    they pick a partition: one customer, one row."""
    o, _, _ = make_data(600, 40, text_ids=True, seed=5)
    pad = ["\u00a0", "\u3000", " ", "\u2003", ""]
    o = o.with_columns(
        pl.col("customer_id") + pl.Series([pad[i % len(pad)] for i in range(o.height)])
    )
    got = to_polars(fs.score(to_spark(spark, o), partitions=7))
    want = fastseg.score(o)
    from fastseg.sources import WHITE_SPACE

    assert (
        got.height
        == want.height
        == o["customer_id"].str.strip_chars(WHITE_SPACE).drop_nulls().n_unique()
    )
    same(got, want)
