"""The CLI end to end, including every documented error path: one line, exit 1, no traceback."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from fastseg.cli import app

runner = CliRunner()
D = dt.date(2026, 6, 30)


def invoke(*args: str):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_clean_error(result, *fragments: str, code: int = 1) -> None:  # noqa: ANN001
    text = result.output
    assert result.exit_code == code, text
    assert "Traceback" not in text
    for frag in fragments:
        assert frag in " ".join(text.split()), (frag, text)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("store")
    n = 400
    ids = [1000 + (i * 7919) % 90 for i in range(n)]
    orders = pl.DataFrame(
        {
            "order_id": list(range(n)),
            "customer_id": ids,
            "order_ts": [
                dt.datetime(2026, 6, 30, 12) - dt.timedelta(days=(i * 37) % 700) for i in range(n)
            ],
            "amount": [(-15.0 if i % 23 == 0 else 20.0 + (i * 13) % 180) for i in range(n)],
            "category": [["shoes", "bags", "hats"][i % 3] for i in range(n)],
            "channel": [["web", "app", "store"][i % 3] for i in range(n)],
        }
    )
    orders.write_parquet(folder / "orders.parquet")
    customers = pl.DataFrame(
        {
            "customer_id": list(range(1000, 1100)),
            "country": ["US", "DE"] * 50,
            "email_opt_in": [True, False, True, True] * 25,
        }
    )
    customers.write_parquet(folder / "customers.parquet")
    events = pl.DataFrame(
        {
            "customer_id": [1000 + i % 100 for i in range(300)],
            "event_ts": [D - dt.timedelta(days=i % 120) for i in range(300)],
            "event": [["email_open", "site_visit", "add_to_cart"][i % 3] for i in range(300)],
        }
    )
    events.write_parquet(folder / "events.parquet")
    return folder


# ------------------------------------------------------------------------------------ happy paths


def test_help_and_version() -> None:
    r = invoke("--help")
    assert r.exit_code == 0 and "score" in r.output and "run" in r.output
    r = invoke("--version")
    assert r.exit_code == 0 and "fastseg" in r.output


def test_score_writes_scores_and_prints_summary(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    r = invoke(
        "score", store / "orders.parquet", "--out", out, "--edges-out", tmp_path / "edges.json"
    )
    assert r.exit_code == 0, r.output
    assert "400 rows read" in r.output and "0 left out" in r.output and "RFM groups" in r.output
    scores = pl.read_parquet(out)
    assert scores.columns[:13] == [
        "customer_id",
        "recency_days",
        "frequency",
        "monetary",
        "aov",
        "first_order_date",
        "last_order_date",
        "r_score",
        "f_score",
        "m_score",
        "rfm_cell",
        "rfm_score",
        "rfm_group",
    ]
    assert scores.height == 90
    # score a later batch against the saved edges
    r2 = invoke(
        "score",
        store / "orders.parquet",
        "--edges-in",
        tmp_path / "edges.json",
        "--out",
        tmp_path / "s2.csv",
    )
    assert r2.exit_code == 0, r2.output
    again = pl.read_csv(tmp_path / "s2.csv")
    assert again["rfm_cell"].cast(pl.String).to_list() == scores["rfm_cell"].to_list()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_score_with_profiles_events_and_thresholds(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    r = invoke(
        "score",
        store / "orders.parquet",
        "--customers",
        store / "customers.parquet",
        "--events",
        store / "events.parquet",
        "--method",
        "thresholds",
        "--thresholds",
        "r=30,90,180,365",
        "--thresholds",
        "f=2,3,5,10",
        "--thresholds",
        "m=50,100,250,1000",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    s = pl.read_parquet(out)
    assert s.height == 100  # 90 buyers + 10 prospects from the profiles
    assert s.filter(pl.col("frequency") == 0)["rfm_group"].unique().to_list() == ["prospects"]
    assert {"country", "email_open_30d", "days_since_site_visit"} <= set(s.columns)


def test_run_writes_all_outputs(store: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[segment]]\nname = "app_buyers"\ndescription = "bought in the app lately"\n'
        "rule = \"orders(since: -1y, channel: 'app') >= 1\"\n"
        '[[segment]]\nname = "recent_openers"\ndescription = "opened an email this week"\n'
        "rule = \"events('email_open', since: -7d) >= 1\"\n"
    )
    out = tmp_path / "results"
    r = invoke(
        "run",
        store / "orders.parquet",
        "--customers",
        store / "customers.parquet",
        "--events",
        store / "events.parquet",
        "--rules",
        rules,
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    for name in ("scores.parquet", "segments.parquet", "summary.csv", "overlaps.csv", "run.json"):
        assert (out / name).exists(), name
    long = pl.read_parquet(out / "segments.parquet")
    assert long.columns == ["customer_id", "segment"]
    summary = pl.read_csv(out / "summary.csv")
    app_size = summary.filter(pl.col("segment") == "app_buyers")["customers"].item()
    orders = pl.read_parquet(store / "orders.parquet")
    want = orders.filter(
        (pl.col("channel") == "app")
        & (pl.col("amount") >= 0)
        & (pl.col("order_ts").dt.date() >= dt.date(2025, 6, 30))
    )["customer_id"].n_unique()
    assert app_size == want
    ev = pl.read_parquet(store / "events.parquet")
    openers = ev.filter(
        (pl.col("event") == "email_open") & (pl.col("event_ts") >= dt.date(2026, 6, 23))
    )
    got = summary.filter(pl.col("segment") == "recent_openers")["customers"].item()
    assert got == openers["customer_id"].n_unique() > 0
    report = json.loads((out / "run.json").read_text())
    assert report["orders"]["rows_used"] == 400 and report["as_of"] == "2026-06-30"


def test_segment_layouts(store: Path, tmp_path: Path) -> None:
    scores = tmp_path / "scores.parquet"
    assert invoke("score", store / "orders.parquet", "--out", scores).exit_code == 0
    for layout, name in (("long", "m.parquet"), ("wide", "w.parquet"), ("bitset", "b.npz")):
        r = invoke("segment", scores, "--layout", layout, "--out", tmp_path / name)
        assert r.exit_code == 0, r.output
        assert (tmp_path / name).exists()
    wide = pl.read_parquet(tmp_path / "w.parquet")
    long = pl.read_parquet(tmp_path / "m.parquet")
    assert wide.height == 90
    seg = "one_timers"
    assert long.filter(pl.col("segment") == seg).height == wide[seg].sum()


def test_segments_list_show_check(tmp_path: Path) -> None:
    r = invoke("segments", "list")
    assert r.exit_code == 0 and "one_timers" in r.output
    r = invoke("segments", "show", "one_timers")
    assert r.exit_code == 0 and "frequency" in r.output
    good = tmp_path / "good.toml"
    good.write_text(
        '[[segment]]\nname = "big"\ndescription = "d"\nrule = "monetary > 1000 AND segment(one_timers)"\n'
    )
    r = invoke("segments", "check", good)
    assert r.exit_code == 0 and "ok" in r.output


def test_gen_and_demo_small(tmp_path: Path) -> None:
    r = invoke("gen", tmp_path / "data", "--orders", "2e4", "--seed", "3")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "data" / "orders.parquet").exists()
    r = invoke("demo", "--out", tmp_path / "demo", "--orders", "20000")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "demo" / "results" / "segments.parquet").exists()
    assert "Segments" in r.output


# ------------------------------------------------------------------------------------ error paths


def test_error_missing_file(tmp_path: Path) -> None:
    assert_clean_error(
        invoke("score", tmp_path / "nope.parquet"), "error:", "file not found", "nope.parquet"
    )


def test_error_corrupt_parquet(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet PAR1")
    assert_clean_error(
        invoke("score", bad, "--out", tmp_path / "o.parquet"),
        "error:",
        "cannot read",
        "bad.parquet",
    )
    assert not (tmp_path / "o.parquet").exists()


def test_error_missing_columns_lists_all_and_how_to_map(tmp_path: Path) -> None:
    p = tmp_path / "o.csv"
    p.write_text("CustId,OrderDate,Total\n1,2026-01-01,5\n")
    r = invoke("score", p)
    assert_clean_error(
        r,
        "missing required columns 'customer_id', 'order_ts', 'amount'",
        "found: CustId, OrderDate, Total",
        "--col",
    )
    r = invoke(
        "score",
        p,
        "--col",
        "customer_id=CustId",
        "--col",
        "order_ts=OrderDate",
        "--col",
        "amount=Total",
        "--out",
        tmp_path / "s.parquet",
    )
    assert r.exit_code == 0, r.output


def test_error_value_of_wrong_type(tmp_path: Path) -> None:
    p = tmp_path / "o.csv"
    p.write_text("customer_id,order_ts,amount\n1,2026-01-01,5\n2,2026-01-02,five\n")
    assert_clean_error(
        invoke("score", p), "column 'amount'", "'five'", "cannot be read as a number"
    )


def test_error_no_usable_order(store: Path) -> None:
    r = invoke("score", store / "orders.parquet", "--as-of", "2020-01-01")
    assert_clean_error(r, "no usable order", "after_as_of: 400", "dated after 2020-01-01")


def test_error_empty_input(tmp_path: Path) -> None:
    p = tmp_path / "o.csv"
    p.write_text("customer_id,order_ts,amount\n")
    assert_clean_error(invoke("score", p), "has no rows")


@pytest.mark.parametrize(
    ("args", "fragments", "code"),
    [
        (["--bins", "11"], ["--bins", "from 2 to 10, got '11'"], 2),
        (["--method", "median"], ["--method", "median"], 2),
        (["--col", "order_date=x"], ["unknown canonical column 'order_date'", "order_ts"], 1),
        (["--col", "amount"], ["CANONICAL=THEIRS"], 1),
        (["--as-of", "someday"], ["as_of", "2026-01-31", "someday"], 1),
        (["--windows", "30,x"], ["--windows"], 2),
        (["--windows", "0"], ["--windows", "from 1 to 100,000"], 2),
        (["--windows", "99999999999"], ["--windows", "from 1 to 100,000"], 2),
        (["--method", "thresholds"], ["--thresholds"], 2),
        (["--method", "thresholds", "--thresholds", "r=1,2"], ["r"], 1),
        (["--thresholds", "q=1,2,3,4", "--method", "thresholds"], ["q"], 1),
    ],
)
def test_error_invalid_parameters(
    store: Path, args: list[str], fragments: list[str], code: int
) -> None:
    assert_clean_error(invoke("score", store / "orders.parquet", *args), *fragments, code=code)


def test_strict_and_rejects(tmp_path: Path) -> None:
    p = tmp_path / "o.csv"
    p.write_text(
        "customer_id,order_ts,amount\n1,2026-01-01,5\n,2026-01-02,3\n2,,4\n3,2026-01-02,\n"
    )
    assert_clean_error(
        invoke("score", p, "--strict"), "3 of 4 rows", "missing_customer_id: 1", "--strict"
    )
    rej = tmp_path / "rejects.csv"
    r = invoke("score", p, "--rejects", rej, "--out", tmp_path / "s.parquet")
    assert r.exit_code == 0, r.output
    assert "3 left out" in r.output and "missing_timestamp: 1" in r.output
    assert pl.read_csv(rej).height == 3


def test_error_rules(tmp_path: Path, store: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[segment]]\nname = "x"\ndescription = "d"\nrule = "frequency >= AND 3"\n')
    r = invoke("segments", "check", bad)
    assert r.exit_code == 1 and "Traceback" not in r.output and "line 1" in r.output
    r = invoke("run", store / "orders.parquet", "--rules", bad, "--out", tmp_path / "o")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()  # rules are checked before any data is read
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[[segment]]\nname = "x"\ndescription = "d"\nrule = "frequncy >= 3"\n')
    r = invoke(
        "run", store / "orders.parquet", "--rules", unknown, "--no-builtin", "--out", tmp_path / "o"
    )
    assert_clean_error(r, "frequncy", "frequency")
    r = invoke("segments", "show", "no_such_segment")
    assert_clean_error(r, "no_such_segment")


def test_several_order_files_as_arguments(store: Path, tmp_path: Path) -> None:
    """`fastseg score data/*.parquet` unquoted: the shell passes several paths."""
    orders = pl.read_parquet(store / "orders.parquet")
    orders.head(150).write_parquet(tmp_path / "a.parquet")
    orders.tail(250).write_parquet(tmp_path / "b.parquet")
    r = invoke(
        "score", tmp_path / "a.parquet", tmp_path / "b.parquet", "--out", tmp_path / "s.parquet"
    )
    assert r.exit_code == 0, r.output
    assert "400 rows read" in r.output
    both = pl.read_parquet(tmp_path / "s.parquet")
    assert (
        invoke("score", store / "orders.parquet", "--out", tmp_path / "one.parquet").exit_code == 0
    )
    assert both.equals(pl.read_parquet(tmp_path / "one.parquet"))
    r = invoke("score", tmp_path / "a.parquet", tmp_path / "missing.parquet")
    assert_clean_error(r, "file not found", "missing.parquet")


def test_segment_on_a_csv_scores_file(store: Path, tmp_path: Path) -> None:
    """Scores written as CSV keep their types when segmented (numbers, dates)."""
    pq, csv = tmp_path / "s.parquet", tmp_path / "s.csv"
    assert invoke("score", store / "orders.parquet", "--out", pq).exit_code == 0
    assert invoke("score", store / "orders.parquet", "--out", csv).exit_code == 0
    for src, out in ((pq, "a.parquet"), (csv, "b.parquet")):
        r = invoke("segment", src, "--out", tmp_path / out)
        assert r.exit_code == 0, r.output
    a = pl.read_parquet(tmp_path / "a.parquet").with_columns(pl.col("segment").cast(pl.String))
    b = pl.read_parquet(tmp_path / "b.parquet").with_columns(pl.col("segment").cast(pl.String))
    assert a.sort(a.columns).equals(b.sort(b.columns))
