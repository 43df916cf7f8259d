"""Reading orders: every source format, column mapping, line items, data problems, fatal errors."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl
import pytest

from fastseg.errors import DataError, InputError, ParameterError, SchemaError
from fastseg.orders import load_customers, load_events
from fastseg.pipeline import order_features
from tests.reference import order_features_ref, same_as_ref, same_order_features

D = dt.date(2026, 3, 1)


def _orders() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": [1, 1, 2, 3],
            "order_ts": [
                dt.datetime(2026, 3, 1, 10),
                dt.datetime(2026, 2, 1),
                dt.datetime(2026, 1, 1),
                dt.datetime(2026, 2, 15),
            ],
            "amount": [10.0, 20.0, 5.0, -3.0],
            "category": ["a", "b", "a", "c"],
        }
    )


def _same(a, b) -> None:  # noqa: ANN001
    """Two results agree: report, features and the features' types (ids typed alike)."""
    same_order_features(a, b)
    assert a.frame.schema == b.frame.schema


# ------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tsv", "ipc", "feather", "folder", "glob"])
def test_file_formats_read_the_same(tmp_path: Path, fmt: str) -> None:
    df = _orders()
    if fmt == "parquet":
        path = tmp_path / "o.parquet"
        df.write_parquet(path)
    elif fmt == "csv":
        path = tmp_path / "o.csv"
        df.write_csv(path)
    elif fmt == "tsv":
        path = tmp_path / "o.tsv"
        df.write_csv(path, separator="\t")
    elif fmt in ("ipc", "feather"):
        path = tmp_path / f"o.{'arrow' if fmt == 'ipc' else 'feather'}"
        df.write_ipc(path)
    else:
        (tmp_path / "parts").mkdir()
        df.head(2).write_parquet(tmp_path / "parts" / "a.parquet")
        df.tail(2).write_parquet(tmp_path / "parts" / "b.parquet")
        path = tmp_path / "parts" if fmt == "folder" else tmp_path / "parts" / "*.parquet"
    o = order_features(str(path))
    _same(o, order_features(df))
    same_as_ref(o, order_features_ref(df))
    assert o.report.rows_read == 4 and o.report.rows_used == 4
    assert o.frame["customer_id"].dtype == pl.Int64  # CSV ids that are all integers: Int64


def test_in_memory_frames_pandas_arrow_lazy() -> None:
    pd = pytest.importorskip("pandas")
    df = _orders()
    want = order_features(df)
    same_as_ref(want, order_features_ref(df))
    _same(order_features(df.lazy()), want)
    _same(order_features(df.to_arrow()), want)
    _same(order_features(df.to_pandas()), want)
    # pandas with float ids (ints with gaps become floats) and NaN ids
    p = pd.DataFrame(
        {
            "customer_id": [1.0, float("nan")],
            "order_ts": ["2026-01-01", "2026-01-02"],
            "amount": [1.0, 2.0],
        }
    )
    o = order_features(p)
    assert o.frame["customer_id"].to_list() == [1] and o.report.left_out["missing_customer_id"] == 1
    assert o.frame["customer_id"].dtype == pl.Int64  # whole-number floats are integer ids
    assert o.frame["first_order_date"].to_list() == [dt.date(2026, 1, 1)]
    assert o.as_of == dt.date(2026, 1, 1)  # the latest usable row (a left-out row does not move it)


def test_timestamps_dates_naive_aware_and_iso_text() -> None:
    aware = pl.DataFrame(
        {"customer_id": [1], "order_ts": [dt.datetime(2026, 1, 1, 23, 30)], "amount": [1.0]}
    ).with_columns(pl.col("order_ts").dt.replace_time_zone("America/New_York"))
    o = order_features(aware)  # 23:30 in New York is already Jan 2 in UTC: its own zone's date
    assert o.as_of == dt.date(2026, 1, 1)
    assert o.frame["first_order_date"].to_list() == [dt.date(2026, 1, 1)]
    assert o.frame["last_order_date"].to_list() == [dt.date(2026, 1, 1)]
    assert o.frame["recency_days"].to_list() == [0]
    text = pl.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "order_ts": [
                "2026-01-01",
                "2026-01-02T10:00:00",
                "2026-01-03 23:59:59.123+05:00",
                "2026-01-04T01:00Z",
                "2026-01-05T23:30:00-05:00",  # Jan 6 in UTC: the date as written
            ],
            "amount": ["1", "2.5", " 3 ", "4e1", "0"],
        }
    )
    o = order_features(text)  # one row per customer: each row's date and amount is observable
    f = o.frame
    assert f["customer_id"].to_list() == ["a", "b", "c", "d", "e"]
    assert f["first_order_date"].to_list() == [dt.date(2026, 1, d) for d in (1, 2, 3, 4, 5)]
    assert f["last_order_date"].to_list() == f["first_order_date"].to_list()
    assert o.as_of == dt.date(2026, 1, 5) and o.report.left_out["after_as_of"] == 0
    assert f["monetary"].to_list() == [1.0, 2.5, 3.0, 40.0, 0.0]
    assert f["customer_id"].dtype == pl.String


# ------------------------------------------------------------------------------------ mapping


def test_column_mapping_dict_and_cli_form() -> None:
    df = _orders().rename({"customer_id": "CustId", "order_ts": "OrderDate", "amount": "Total"})
    a = order_features(
        df, columns={"customer_id": "CustId", "order_ts": "OrderDate", "amount": "Total"}
    )
    b = order_features(df, columns=["customer_id=CustId", "order_ts=OrderDate", "amount=Total"])
    want = order_features(_orders())
    _same(a, want)
    _same(b, want)


def test_line_items_amount_from_quantity_and_unit_price(tmp_path: Path) -> None:
    df = pl.DataFrame(
        {
            "cust": [1, 1, 1, 2, 2],
            "ts": [D, D, D, D, D],
            "oid": ["A", "A", "B", "C", "C"],
            "qty": [2, 1, 1, 3, -1],
            "price": [5.0, 10.0, 7.5, 2.0, 2.0],
        }
    )
    cols = {
        "customer_id": "cust",
        "order_ts": "ts",
        "order_id": "oid",
        "quantity": "qty",
        "unit_price": "price",
    }
    feats = order_features(df, columns=cols).frame
    assert feats["customer_id"].to_list() == [1, 2]
    # orders A and B; order C (its refund line is not an order)
    assert feats["frequency"].to_list() == [2, 1]
    assert feats["monetary"].to_list() == [27.5, 4.0]
    assert feats["aov"].to_list() == [13.75, 6.0]
    assert feats["refund_count"].to_list() == [0, 1]
    assert feats["refund_amount"].to_list() == [0.0, 2.0]
    # each line's amount, as the rejects file shows it when the lines are left out (beside one
    # earlier usable order: a run that fails writes nothing, rejects included)
    early = pl.DataFrame(
        {"cust": [3], "ts": [D - dt.timedelta(days=5)], "oid": ["Z"], "qty": [1], "price": [1.0]}
    )
    both = pl.concat([df, early])
    rejects = tmp_path / "lines.csv"
    order_features(both, columns=cols, as_of=D - dt.timedelta(days=1), rejects=rejects)
    rej = pl.read_csv(rejects)
    assert rej["amount"].to_list() == [10.0, 10.0, 7.5, 6.0, -2.0]
    assert set(rej["reason"]) == {"after_as_of"}
    with pytest.raises(DataError, match="no usable order"):
        order_features(df, columns=cols, as_of=D - dt.timedelta(days=1), rejects=tmp_path / "n.csv")
    assert not (tmp_path / "n.csv").exists()


def test_unknown_canonical_column_in_mapping() -> None:
    with pytest.raises(
        ParameterError, match=r"unknown canonical column 'order_date'.*did you mean 'order_ts'"
    ):
        order_features(_orders(), columns=["order_date=OrderDate"])
    with pytest.raises(ParameterError, match="CANONICAL=THEIRS"):
        order_features(_orders(), columns=["order_ts"])


def test_mapped_column_absent() -> None:
    with pytest.raises(
        SchemaError, match=r"--col amount=Totl: no column 'Totl'.*found: customer_id"
    ):
        order_features(_orders(), columns={"amount": "Totl"})


def test_missing_required_columns_all_listed_with_fix() -> None:
    df = pl.DataFrame({"CustomerID": [1], "OrderDate": [D], "x": [1.0]})
    with pytest.raises(SchemaError) as exc:
        order_features(df)
    msg = str(exc.value)
    assert "missing required columns 'customer_id', 'order_ts', 'amount'" in msg
    assert "found: CustomerID, OrderDate, x" in msg
    assert "--col customer_id=CustomerID" in msg and "--col order_ts=OrderDate" in msg
    assert "quantity" in msg  # says amount may come from quantity x unit_price
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("order_ts", "yesterday", "an ISO date"),
        ("order_ts", "2026-02-30", "an ISO date"),
        ("amount", "12,50", "a number"),
    ],
)
def test_value_that_cannot_be_read_as_its_type(column: str, value: str, expected: str) -> None:
    df = pl.DataFrame(
        {"customer_id": ["1", "2"], "order_ts": ["2026-01-01", "2026-01-02"], "amount": ["1", "2"]}
    )
    df = df.with_columns(
        pl.when(pl.int_range(pl.len()) == 1)
        .then(pl.lit(value))
        .otherwise(pl.col(column))
        .alias(column)
    )
    with pytest.raises(
        SchemaError, match=rf"column '{column}'.*{value!r}.*cannot be read as {expected}"
    ):
        order_features(df)


def test_wrong_column_types() -> None:
    df = pl.DataFrame({"customer_id": [1], "order_ts": [1.5], "amount": [1.0]})
    with pytest.raises(SchemaError, match="order_ts.*expected a date"):
        order_features(df)
    df = pl.DataFrame({"customer_id": [[1]], "order_ts": [D], "amount": [1.0]})
    with pytest.raises(SchemaError, match="customer_id.*expected integer or text ids"):
        order_features(df)
    df = pl.DataFrame({"customer_id": [1.5], "order_ts": [D], "amount": [1.0]})
    with pytest.raises(SchemaError, match="whole-number id"):
        order_features(df)


# ------------------------------------------------------------------------------------ file errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        order_features(tmp_path / "nope.parquet")
    with pytest.raises(InputError, match="no file matches"):
        order_features(str(tmp_path / "*.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no Parquet"):
        order_features(tmp_path / "empty")
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(InputError, match="cannot tell the format"):
        order_features(tmp_path / "x.xlsx")


def test_corrupt_parquet(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    _orders().write_parquet(good)
    data = good.read_bytes()
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cannot read .*bad\.parquet"):
        order_features(bad)
    trash = tmp_path / "trash.parquet"
    trash.write_bytes(b"PAR1" + os.urandom(200) + b"PAR1")
    with pytest.raises(InputError, match="trash.parquet"):
        order_features(trash)


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    p = tmp_path / "o.parquet"
    _orders().write_parquet(p)
    p.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        order_features(p)


def test_not_a_source() -> None:
    with pytest.raises(ParameterError, match="cannot read a int"):
        order_features(42)


# ------------------------------------------------------------------------------------ data problems


def _problems() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": [1, None, 2, 3, 4, 5, 6, 6],
            "order_ts": [D, D, None, D, D, dt.date(2026, 3, 5), D, D],
            "amount": [1.0, 2.0, 3.0, None, float("nan"), 5.0, 6.0, 6.0],
        }
    )


def test_data_problems_counted_by_reason(tmp_path: Path) -> None:
    o = order_features(_problems(), as_of=D, rejects=tmp_path / "rej.csv")
    assert o.report.left_out == {
        "missing_customer_id": 1,
        "missing_timestamp": 1,
        "missing_amount": 2,
        "after_as_of": 1,
    }
    assert o.report.rows_read == 8 and o.report.rows_used == 3
    assert o.report.duplicates == 1  # the two identical rows of customer 6 (both kept)
    assert o.frame["customer_id"].to_list() == [1, 6]  # only used rows reach the features
    assert o.frame["frequency"].to_list() == [1, 2] and o.frame["monetary"].to_list() == [1.0, 12.0]
    assert o.report.rejects_path == tmp_path / "rej.csv"
    rej = pl.read_csv(tmp_path / "rej.csv")
    assert rej.columns[0] == "reason"
    assert sorted(rej["reason"].to_list()) == sorted(
        [
            "missing_customer_id",
            "missing_timestamp",
            "missing_amount",
            "missing_amount",
            "after_as_of",
        ]
    )


def test_rejects_keep_original_timestamp(tmp_path: Path) -> None:
    df = pl.DataFrame(
        {
            "customer_id": [None, 1],
            "order_ts": ["2026-01-01T10:11:12", "2026-01-01"],
            "amount": [1.0, 1.0],
        }
    )
    order_features(df, rejects=tmp_path / "r.parquet")
    rej = pl.read_parquet(tmp_path / "r.parquet")
    assert rej.row(0, named=True)["order_ts"] == "2026-01-01T10:11:12"


def test_default_as_of_is_latest_row() -> None:
    o = order_features(_problems())
    assert o.as_of == dt.date(2026, 3, 5) and o.report.left_out["after_as_of"] == 0
    assert o.frame.filter(pl.col("customer_id") == 5)["recency_days"].to_list() == [0]


def test_strict_turns_problems_into_an_error() -> None:
    with pytest.raises(DataError, match=r"5 of 8 rows .*missing_customer_id: 1.*--strict"):
        order_features(_problems(), as_of=D, strict=True)
    order_features(_orders(), strict=True)  # clean input passes


def test_no_usable_order() -> None:
    with pytest.raises(
        DataError, match=r"no usable order.*after_as_of: 4 \(dated after 2020-01-01\)"
    ):
        order_features(_orders(), as_of=dt.date(2020, 1, 1))
    with pytest.raises(DataError, match="has no rows"):
        order_features(_orders().head(0))


def test_bad_as_of() -> None:
    from fastseg import api

    # order_features takes a date; the public API reads the text users give
    with pytest.raises(ParameterError, match="as_of: expected a date like 2026-01-31, got 'soon'"):
        api.score(_orders(), as_of="soon")
    assert api.score_job(_orders(), as_of="2026-02-01").as_of == dt.date(2026, 2, 1)


def test_infinite_amount_is_missing() -> None:
    df = pl.DataFrame({"customer_id": [1, 2], "order_ts": [D, D], "amount": [float("inf"), 1.0]})
    o = order_features(df)
    assert o.report.left_out["missing_amount"] == 1
    assert o.frame["customer_id"].to_list() == [2] and o.frame["monetary"].to_list() == [1.0]


def test_duplicate_order_lines_counted_once() -> None:
    df = pl.DataFrame(
        {
            "customer_id": [1, 1, 1],
            "order_ts": [D, D, D],
            "amount": [1.0, 2.0, 3.0],
            "order_id": [9, 9, 10],
        }
    )
    o = order_features(df)
    f = o.frame.row(0, named=True)
    assert f["frequency"] == 2 and f["orders_30d"] == 2  # order 9 once (its two lines), order 10
    assert f["monetary"] == 6.0 and f["aov"] == 3.0  # every line's amount counts
    assert o.report.rows_used == 3 and o.report.duplicates == 0


# ------------------------------------------------------------------------------------ profiles, events


def test_customers_and_events_loaders() -> None:
    prof = pl.DataFrame({"id": [1, 2, 2, None], "country": ["DE", "FR", "IT", "ES"]})
    df, rep = load_customers(prof, columns={"customer_id": "id"})
    assert df["customer_id"].to_list() == [1, 2] and df["country"].to_list() == ["DE", "FR"]
    assert rep.left_out == {"missing_customer_id": 1, "duplicate_customer_id": 1}
    ev = pl.DataFrame(
        {
            "customer_id": [1, 1, None, 2],
            "event_ts": ["2026-01-01", "2026-05-01", "2026-01-01", None],
            "event": ["email_open", "site_visit", "x", "y"],
        }
    )
    df, rep = load_events(ev, as_of=D)
    assert df.height == 1 and rep.left_out == {
        "missing_customer_id": 1,
        "missing_timestamp": 1,
        "missing_event": 0,
        "after_as_of": 1,
    }
    with pytest.raises(SchemaError, match=r"events .*missing required column 'event'"):
        load_events(ev.drop("event"), as_of=D)
