"""``tz`` / ``--tz ZONE``: zone-aware timestamps cut into days in the store's zone.

The reference is plain Polars: ``dt.convert_time_zone(tz).dt.date()`` for zone-aware values,
the date as written for naive ones; without a zone, the date in the value's own zone.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fastseg import api
from fastseg.cli import app
from fastseg.errors import ParameterError

BERLIN, NY = "Europe/Berlin", "America/New_York"
runner = CliRunner()


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def aware_orders(stamps: list[dt.datetime], ids: list[int] | None = None) -> pl.DataFrame:
    ids = ids if ids is not None else list(range(1, len(stamps) + 1))
    ts = pl.Series("order_ts", stamps, dtype=pl.Datetime("us", "UTC"))
    amount = [10.0 + i for i in range(len(stamps))]
    return pl.DataFrame({"customer_id": ids, "order_ts": ts, "amount": amount})


def days(res: api.ScoreResult) -> dict[int, int]:
    return dict(res.scores.select("customer_id", "recency_days").rows())


def reference(orders: pl.DataFrame, tz: str | None, as_of: dt.date | None = None) -> pl.DataFrame:
    """Recency, frequency (distinct orders = rows here), monetary and 30/90-day windows."""
    ts = pl.col("order_ts")
    day = ts.dt.convert_time_zone(tz).dt.date() if tz else ts.dt.date()
    df = orders.with_columns(day.alias("day"))
    as_of = as_of or df["day"].max()
    df = df.filter(pl.col("day") <= as_of)
    age = (pl.lit(as_of) - pl.col("day")).dt.total_days()
    return (
        df.group_by("customer_id")
        .agg(
            (pl.lit(as_of) - pl.col("day").max()).dt.total_days().alias("recency_days"),
            pl.len().cast(pl.Int64).alias("frequency"),
            pl.col("amount").sum().alias("monetary"),
            (age <= 30).sum().cast(pl.Int64).alias("orders_30d"),
            (age <= 90).sum().cast(pl.Int64).alias("orders_90d"),
        )
        .sort("customer_id")
    )


def ours(res: api.ScoreResult) -> pl.DataFrame:
    cols = ["customer_id", "recency_days", "frequency", "monetary", "orders_30d", "orders_90d"]
    return (
        res.scores.select(cols).sort("customer_id").with_columns(pl.col(cols[1:3]).cast(pl.Int64))
    )


# ------------------------------------------------------------------------------ the order day


def test_late_evening_utc_is_next_day_in_berlin() -> None:
    orders = aware_orders([utc(2026, 3, 1, 23, 30), utc(2026, 2, 20, 12)])
    plain = api.score_job(orders)
    local = api.score_job(orders, tz=BERLIN)
    assert plain.as_of == dt.date(2026, 3, 1)  # without tz: the date in the value's zone (UTC)
    assert local.as_of == dt.date(2026, 3, 2)  # the default scoring date: latest local day
    assert days(plain) == {1: 0, 2: 9}
    assert days(local) == {1: 0, 2: 10}


@pytest.mark.parametrize(
    ("tz", "stamp", "day"),
    [
        # Berlin: CET (UTC+1) until 2026-03-29 01:00 UTC, CEST (UTC+2) until 2026-10-25 01:00 UTC
        (BERLIN, utc(2026, 3, 28, 22, 59), dt.date(2026, 3, 28)),
        (BERLIN, utc(2026, 3, 28, 23, 0), dt.date(2026, 3, 29)),
        (BERLIN, utc(2026, 3, 29, 21, 59), dt.date(2026, 3, 29)),
        (BERLIN, utc(2026, 3, 29, 22, 0), dt.date(2026, 3, 30)),  # CEST: midnight is 22:00 UTC
        (BERLIN, utc(2026, 10, 24, 21, 59), dt.date(2026, 10, 24)),
        (BERLIN, utc(2026, 10, 24, 22, 0), dt.date(2026, 10, 25)),
        (BERLIN, utc(2026, 10, 25, 22, 59), dt.date(2026, 10, 25)),  # CET again: 23:00 UTC
        (BERLIN, utc(2026, 10, 25, 23, 0), dt.date(2026, 10, 26)),
        # New York: EST (UTC-5) until 2026-03-08 07:00 UTC, EDT (UTC-4) until 2026-11-01 06:00
        (NY, utc(2026, 3, 8, 4, 59), dt.date(2026, 3, 7)),
        (NY, utc(2026, 3, 8, 5, 0), dt.date(2026, 3, 8)),
        (NY, utc(2026, 3, 9, 3, 59), dt.date(2026, 3, 8)),
        (NY, utc(2026, 3, 9, 4, 0), dt.date(2026, 3, 9)),
        (NY, utc(2026, 11, 2, 4, 59), dt.date(2026, 11, 1)),
        (NY, utc(2026, 11, 2, 5, 0), dt.date(2026, 11, 2)),
    ],
)
def test_dst_edges(tz: str, stamp: dt.datetime, day: dt.date) -> None:
    orders = aware_orders([stamp])
    assert api.score_job(orders, tz=tz).as_of == day


def test_naive_timestamps_and_dates_unchanged() -> None:
    naive = pl.DataFrame(
        {
            "customer_id": [1, 2],
            "order_ts": [dt.datetime(2026, 3, 1, 23, 30), dt.datetime(2026, 2, 20, 0, 10)],
            "amount": [1.0, 2.0],
        }
    )
    dated = naive.with_columns(pl.col("order_ts").dt.date())
    for frame in (naive, dated):
        a, b = api.score_job(frame), api.score_job(frame, tz=NY)
        assert a.as_of == b.as_of == dt.date(2026, 3, 1)
        assert a.scores.equals(b.scores)


def test_parquet_with_zone_aware_column(tmp_path: Path) -> None:
    orders = aware_orders([utc(2026, 3, 1, 23, 30), utc(2026, 2, 20, 12)])
    path = tmp_path / "orders.parquet"
    orders.write_parquet(path)
    assert api.score_job(path).as_of == dt.date(2026, 3, 1)
    assert api.score_job(path, tz=BERLIN).as_of == dt.date(2026, 3, 2)
    # a column stored in another zone: without tz its own zone's date, with tz the store's
    ny = orders.with_columns(pl.col("order_ts").dt.convert_time_zone(NY))
    ny.write_parquet(path)
    assert api.score_job(path).as_of == dt.date(2026, 3, 1)
    assert api.score_job(path, tz=BERLIN).as_of == dt.date(2026, 3, 2)


def test_csv_with_offsets(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "customer_id,order_ts,amount\n"
        "1,2026-03-01T23:30:00+00:00,10\n"
        "2,2026-03-01T23:30:00Z,10\n"
        "3,2026-03-01 18:30:00.250-05:00,10\n"  # 23:30:00.25 UTC
        "4,2026-03-01T23:30:00,10\n"  # naive: local already
        "5,2026-02-20,10\n"
    )
    plain = api.score_job(path)
    local = api.score_job(path, tz=BERLIN)
    assert plain.as_of == dt.date(2026, 3, 1)  # without tz: the date as written
    assert days(plain) == {1: 0, 2: 0, 3: 0, 4: 0, 5: 9}
    assert local.as_of == dt.date(2026, 3, 2)
    assert days(local) == {1: 0, 2: 0, 3: 0, 4: 1, 5: 10}


def test_after_as_of_counts_local_days() -> None:
    orders = aware_orders([utc(2026, 3, 1, 23, 30), utc(2026, 2, 20, 12)])
    kept = api.score_job(orders, as_of="2026-03-01")
    left = api.score_job(orders, as_of="2026-03-01", tz=BERLIN)
    assert kept.orders.left_out.get("after_as_of", 0) == 0
    assert left.orders.left_out["after_as_of"] == 1


def test_features_equal_polars_reference() -> None:
    base = utc(2026, 1, 1)
    stamps = [base + dt.timedelta(hours=7 * i + (i % 5) * 3.3) for i in range(400)]
    ids = [1 + (i * 37) % 23 for i in range(400)]
    orders = aware_orders(stamps, ids)
    for tz in (None, BERLIN, NY, "Asia/Kolkata", "Pacific/Auckland"):
        res = api.score_job(orders, tz=tz, windows=(30, 90))
        assert ours(res).equals(reference(orders, tz)), tz


@settings(max_examples=40)
@given(
    st.lists(
        st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 12, 31)).map(
            lambda d: d.replace(tzinfo=dt.UTC)
        ),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from([BERLIN, NY, "Australia/Lord_Howe", "Asia/Kathmandu", "UTC"]),
)
def test_order_days_property(stamps: list[dt.datetime], tz: str) -> None:
    orders = aware_orders(stamps, [i % 4 for i in range(len(stamps))])
    res = api.score_job(orders, tz=tz, windows=(30, 90))
    assert ours(res).equals(reference(orders, tz))


@settings(max_examples=30)
@given(
    st.lists(
        st.tuples(
            st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 12, 31)),
            st.integers(-14 * 4, 14 * 4),  # offsets in quarter hours
        ),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from([BERLIN, NY, "Asia/Kathmandu"]),
)
def test_offset_text_property(items: list[tuple[dt.datetime, int]], tz: str) -> None:
    """ISO text with any offset gives the same days as the instant it names."""
    stamps = [d.replace(tzinfo=dt.UTC) for d, _ in items]
    texts = [
        s.astimezone(dt.timezone(dt.timedelta(minutes=15 * q))).isoformat()
        for s, (_, q) in zip(stamps, items, strict=True)
    ]
    ids = [i % 4 for i in range(len(stamps))]
    as_text = aware_orders(stamps, ids).with_columns(pl.Series("order_ts", texts))
    res = api.score_job(as_text, tz=tz, windows=(30, 90))
    assert ours(res).equals(reference(aware_orders(stamps, ids), tz))


# ----------------------------------------------------------------------- events and profiles


def test_events_local_days() -> None:
    orders = aware_orders([utc(2026, 3, 2, 12)])
    events = pl.DataFrame(
        {
            "customer_id": [1, 1],
            "event_ts": pl.Series(
                [utc(2026, 3, 1, 23, 30), utc(2026, 3, 2, 23, 30)], dtype=pl.Datetime("us", "UTC")
            ),
            "event": ["email_open", "email_open"],
        }
    )
    plain = api.score_job(orders, events=events)
    local = api.score_job(orders, events=events, tz=BERLIN)
    assert plain.scores["days_since_email_open"].to_list() == [0]
    assert plain.events.left_out["after_as_of"] == 0
    assert local.scores["days_since_email_open"].to_list() == [0]  # the first: 2026-03-02
    assert local.events.left_out["after_as_of"] == 1  # the second: 2026-03-03 in Berlin


def test_events_parquet_with_offsets_text(tmp_path: Path) -> None:
    orders = aware_orders([utc(2026, 3, 2, 12)])
    path = tmp_path / "events.csv"
    path.write_text("customer_id,event_ts,event\n1,2026-03-01T23:30:00Z,email_open\n")
    plain = api.score_job(orders, events=path)
    local = api.score_job(orders, events=path, tz=BERLIN)
    assert plain.scores["days_since_email_open"].to_list() == [1]
    assert local.scores["days_since_email_open"].to_list() == [0]


RULES = (
    '[[segment]]\nname = "new_signups"\ndescription = "signed up this week"\n'
    'rule = "signup_ts >= -1d"\n'
)


@pytest.mark.parametrize("as_text", [False, True])
def test_customers_signup_ts_local(tmp_path: Path, as_text: bool) -> None:
    orders = aware_orders([utc(2026, 3, 10, 12), utc(2026, 3, 10, 12)])
    signup = [utc(2026, 3, 8, 23, 30), utc(2026, 3, 8, 22, 30)]  # Berlin: 9th 00:30, 8th 23:30
    customers = pl.DataFrame(
        {"customer_id": [1, 2], "signup_ts": pl.Series(signup, dtype=pl.Datetime("us", "UTC"))}
    )
    if as_text:
        path = tmp_path / "customers.csv"
        path.write_text(
            "customer_id,signup_ts\n1,2026-03-08T23:30:00Z\n2,2026-03-08T22:30:00+00:00\n"
        )
        customers = path  # type: ignore[assignment]
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    local = api.run_job(orders, customers=customers, rules=rules, builtin=False, tz=BERLIN)
    assert local.segments.members("new_signups").to_list() == [1]
    plain = api.run_job(orders, customers=customers, rules=rules, builtin=False)
    assert plain.segments.members("new_signups").to_list() == []


# ------------------------------------------------------------------------ options and the CLI


def test_unknown_zone_is_a_parameter_error() -> None:
    orders = aware_orders([utc(2026, 3, 1)])
    with pytest.raises(
        ParameterError, match=r"tz: unknown time zone 'Europe/Berln'.*Europe/Berlin"
    ):
        api.score_job(orders, tz="Europe/Berln")
    with pytest.raises(ParameterError, match="did you mean 'Europe/Berlin'"):
        api.run_job(orders, tz="europe/berlin")


def test_run_json_records_tz(tmp_path: Path) -> None:
    orders = aware_orders([utc(2026, 3, 1, 23, 30)])
    api.run_job(orders, out=tmp_path / "a", tz=BERLIN)
    api.run_job(orders, out=tmp_path / "b")
    doc = json.loads((tmp_path / "a" / "run.json").read_text())
    assert doc["options"]["tz"] == BERLIN
    assert doc["as_of"] == "2026-03-02"
    assert "tz" not in json.loads((tmp_path / "b" / "run.json").read_text())["options"]


@pytest.fixture(scope="module")
def csv_orders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tz") / "orders.csv"
    path.write_text(
        "customer_id,order_ts,amount\n1,2026-03-01T23:30:00Z,10\n2,2026-02-20T10:00:00Z,5\n"
    )
    return path


def test_cli_run_with_tz(csv_orders: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["run", str(csv_orders), "--tz", BERLIN, "-o", str(out), "-q"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "run.json").read_text())
    assert doc["as_of"] == "2026-03-02"
    assert doc["options"]["tz"] == BERLIN


@pytest.mark.parametrize("command", ["score", "run", "predict"])
def test_cli_unknown_zone_one_line(csv_orders: Path, tmp_path: Path, command: str) -> None:
    args = [command, str(csv_orders), "--tz", "Europe/Berln", "-o", str(tmp_path / "x")]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 1
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert "--tz: unknown time zone 'Europe/Berln'" in text
    assert "did you mean 'Europe/Berlin'?" in text
    assert not (tmp_path / "x").exists()
