"""fastseg predict and run --predict: the BTYD summary in the row pass against a Polars reference,
the predictions' documented relations, saved parameters, the holdout check, rules over
predicted fields, and every documented error path."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

pytest.importorskip("scipy")

import fastseg  # noqa: E402
from fastseg.cli import app  # noqa: E402
from fastseg.errors import DataError, ParameterError, RuleError  # noqa: E402
from fastseg.pipeline import order_features  # noqa: E402
from fastseg.predicting import predicted_columns  # noqa: E402

runner = CliRunner()
AS_OF = dt.date(2026, 6, 1)


def btyd_ref(orders: pl.DataFrame, as_of: dt.date) -> pl.DataFrame:
    """The BTYD summary from its definition: purchase days are the distinct days of rows with
    an amount >= 0; the revenue of a day is the sum of its amounts >= 0."""
    p = orders.filter(pl.col("amount") >= 0).with_columns(day=pl.col("order_ts").dt.date())
    per_day = p.group_by("customer_id", "day").agg(g=pl.col("amount").sum())
    cust = per_day.group_by("customer_id").agg(
        first=pl.col("day").min(), last=pl.col("day").max(), n=pl.len(), gross=pl.col("g").sum()
    )
    first_gross = per_day.join(cust, on="customer_id").filter(pl.col("day") == pl.col("first"))
    return (
        cust.join(first_gross.select("customer_id", fg="g"), on="customer_id")
        .select(
            "customer_id",
            btyd_frequency=pl.col("n") - 1,
            btyd_recency=(pl.col("last") - pl.col("first")).dt.total_days(),
            btyd_T=(pl.lit(as_of) - pl.col("first")).dt.total_days(),
            btyd_monetary=pl.when(pl.col("n") > 1)
            .then((pl.col("gross") - pl.col("fg")) / (pl.col("n") - 1))
            .otherwise(0.0),
        )
        .sort("customer_id")
    )


def shop(seed: int, n_customers: int, *, text: bool = False) -> pl.DataFrame:
    """Orders of customers who buy at their own rate and drop out after a purchase with their
    own probability (a BG/NBD-like store), with same-day repeats, refunds and shuffled rows."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, 700, n_customers)  # first purchase, days before AS_OF
    rate = rng.gamma(0.8, 1 / 40.0, n_customers)  # purchases a day
    drop = rng.beta(1.0, 4.0, n_customers)
    cust, days = [], []
    for c in range(n_customers):
        t = float(start[c])
        cust.append(c)
        days.append(t)
        while True:
            t -= rng.exponential(1 / rate[c])
            if t < 0:
                break
            cust.append(c)
            days.append(t)
            if rng.random() < drop[c]:
                break
    ids = np.array(cust)
    n = ids.size
    level = rng.gamma(3.0, 1 / 0.08, n_customers)  # each customer's typical spend
    amount = np.round(rng.gamma(2.0, level[ids] / 2.0), 2)
    amount[rng.random(n) < 0.04] *= -1  # refunds
    order = rng.permutation(n)
    ids, day, amount = ids[order], np.array(days)[order], amount[order]
    return pl.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in ids] if text else (ids * 7919 + 10**12).tolist(),
            "order_ts": [dt.datetime(2026, 6, 1, 12) - dt.timedelta(days=float(d)) for d in day],
            "amount": amount,
        }
    )


def _summary(frame: pl.DataFrame) -> pl.DataFrame:
    cols = ["customer_id", "btyd_frequency", "btyd_recency", "btyd_T", "btyd_monetary"]
    return frame.select(cols).drop_nulls("btyd_frequency").sort("customer_id")


def _same(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.select(pl.exclude("btyd_monetary")).equals(want.select(pl.exclude("btyd_monetary")))
    assert np.allclose(got["btyd_monetary"].to_numpy(), want["btyd_monetary"].to_numpy(), rtol=1e-9)


# ------------------------------------------------------------------------------- the summary


@settings(max_examples=25)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 6),  # customer
            st.integers(0, 40),  # day offset
            st.integers(0, 23),  # hour
            st.sampled_from([0.0, 5.0, 12.5, 12.5, 99.99, -3.0, -12.5]),
        ),
        min_size=1,
        max_size=80,
    ),
    st.integers(1, 7),
    st.booleans(),
)
def test_summary_equals_the_definition(rows: list, batch: int, text: bool) -> None:
    """Ties on a day, refunds, duplicated rows, any row order, any batch split, text ids."""
    o = pl.DataFrame(
        {
            "customer_id": [f"c{c}" if text else 100 + c * 13 for c, *_ in rows],
            "order_ts": [
                dt.datetime(2026, 5, 1) + dt.timedelta(days=d, hours=h) for _, d, h, _ in rows
            ],
            "amount": [a for *_, a in rows],
        }
    )
    as_of = dt.date(2026, 6, 15)
    got = order_features(o, as_of=as_of, btyd=True, batch_rows=batch).frame
    want = btyd_ref(o, as_of)
    _same(_summary(got), want)
    only_refunds = set(got["customer_id"]) - set(want["customer_id"])
    nulls = got.filter(pl.col("customer_id").is_in(list(only_refunds)))
    assert nulls["btyd_frequency"].is_null().all() and nulls["btyd_monetary"].is_null().all()


@pytest.mark.parametrize("text", [False, True])
def test_summary_from_parquet_and_csv_equals_the_definition(tmp_path: Path, text: bool) -> None:
    o = shop(1, 3000, text=text)
    o.write_parquet(tmp_path / "o.parquet", row_group_size=5000)
    o.write_csv(tmp_path / "o.csv")
    want = btyd_ref(o, AS_OF)
    for src in ("o.parquet", "o.csv"):
        got = fastseg.predict(tmp_path / src, as_of=AS_OF).frame
        _same(_summary(got), want)


def test_order_lines_share_their_orders_day(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    orders = shop(3, 500)
    lines = orders.with_row_index("order_id").with_columns(pl.col("order_id").cast(pl.Int64))
    many = pl.concat([lines, lines.with_columns(pl.col("amount") * 0.5)]).sample(
        fraction=1.0, shuffle=True, seed=int(rng.integers(1 << 30))
    )
    got = order_features(many, as_of=AS_OF, btyd=True, batch_rows=700).frame
    _same(_summary(got), btyd_ref(many.drop("order_id"), AS_OF))


# ------------------------------------------------------------------------------- predictions


@pytest.fixture(scope="module")
def shop_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("predict") / "orders.parquet"
    shop(7, 4000).write_parquet(path)
    return path


def test_predictions_keep_their_documented_relations(shop_file: Path, tmp_path: Path) -> None:
    pred = fastseg.predict(shop_file, horizon=180, out=tmp_path / "p.parquet")
    f = pred.frame
    assert f.columns[5:] == list(predicted_columns(180))
    assert pl.read_parquet(tmp_path / "p.parquet").equals(f)
    known = f.filter(pl.col("btyd_frequency").is_not_null())
    assert known["p_alive"].is_between(0, 1).all()
    assert (known.filter(pl.col("btyd_frequency") == 0)["p_alive"] == 1).all()
    e30, e90, e180, e365 = (known[f"expected_orders_{d}d"].to_numpy() for d in (30, 90, 180, 365))
    assert (e30 <= e90).all() and (e90 <= e180).all() and (e180 <= e365).all()
    assert np.allclose(known["clv"], known["expected_order_value"] * known["expected_orders_180d"])
    bands = known.select(
        pl.when(pl.col("p_alive") < 0.3)
        .then(pl.lit("high"))
        .when(pl.col("p_alive") < 0.7)
        .then(pl.lit("medium"))
        .otherwise(pl.lit("low"))
    ).to_series()
    assert (known["churn_risk"].cast(pl.String) == bands).all()
    # clv_score: exact quintiles, ties share a score: 1 + floor(5 #{v < x} / n)
    clv = np.sort(known["clv"].to_numpy())
    ref = 1 + np.floor(5 * np.searchsorted(clv, known["clv"].to_numpy(), side="left") / clv.size)
    assert (known["clv_score"].to_numpy() == ref).all()


def test_discounting_lowers_clv_and_zero_is_none(shop_file: Path) -> None:
    plain = fastseg.predict(shop_file).frame["clv"].to_numpy()
    zero = fastseg.predict(shop_file, discount_rate=0.0).frame["clv"].to_numpy()
    ten = fastseg.predict(shop_file, discount_rate=0.1).frame["clv"].to_numpy()
    ok = ~np.isnan(plain)
    assert np.allclose(zero[ok], plain[ok])
    assert (ten[ok] <= plain[ok] + 1e-9).all() and (ten[ok] < plain[ok]).any()


def test_saved_parameters_give_the_same_predictions(shop_file: Path, tmp_path: Path) -> None:
    fit = fastseg.predict(shop_file, params_out=tmp_path / "params.json")
    doc = json.loads((tmp_path / "params.json").read_text())
    assert doc["format"] == "fastseg-btyd-1" and doc["unit"] == "weeks"
    assert set(doc["bgnbd"]) >= {"r", "alpha", "a", "b", "loglik", "n"}
    assert set(doc["gamma_gamma"]) >= {"p", "q", "v", "n"}
    again = fastseg.predict(shop_file, params_in=tmp_path / "params.json")
    assert not again.fitted
    assert again.frame.equals(fit.frame)


def test_the_unit_does_not_change_the_predictions(shop_file: Path) -> None:
    weeks = fastseg.predict(shop_file, unit="weeks")
    days = fastseg.predict(shop_file, unit="days")
    assert days.bgnbd.params_["alpha"] == pytest.approx(7 * weeks.bgnbd.params_["alpha"], rel=1e-3)
    for c in ("p_alive", "expected_orders_90d", "clv"):
        a, b = weeks.frame[c].to_numpy(), days.frame[c].to_numpy()
        ok = ~np.isnan(a)
        assert np.allclose(a[ok], b[ok], rtol=1e-3, atol=1e-6), c


def test_holdout_compares_with_the_actual_repeat_days(shop_file: Path) -> None:
    cut = dt.date(2026, 3, 1)
    pred = fastseg.predict(shop_file, holdout_from=cut)
    ho = pred.holdout
    assert ho["from"] == "2026-03-01" and ho["to"] == "2026-06-01"
    table, totals = ho["table"], ho["totals"]
    assert table["customers"].sum() == totals["customers"]
    o = pl.read_parquet(shop_file)
    before = o.filter(pl.col("order_ts") < dt.datetime(2026, 3, 1))
    calib = btyd_ref(before, cut - dt.timedelta(days=1))
    after = (
        o.filter((pl.col("order_ts") >= dt.datetime(2026, 3, 1)) & (pl.col("amount") >= 0))
        .with_columns(day=pl.col("order_ts").dt.date())
        .group_by("customer_id")
        .agg(actual=pl.col("day").n_unique())
    )
    actual = calib.join(after, on="customer_id", how="left")["actual"].fill_null(0).sum()
    assert totals["actual"] == actual
    assert totals["customers"] == calib.height
    assert json.dumps(pred.params["holdout"])  # with the parameters


# ------------------------------------------------------------------------------- rules


RULES = """
[[segment]]
name = "valuable_churners"
description = "Likely gone but worth winning back."
rule = "p_alive < 0.3 AND monetary > 200"
"""


def test_run_predict_makes_the_fields_usable_in_rules(shop_file: Path, tmp_path: Path) -> None:
    res = fastseg.run(shop_file, rules=RULES, predict=True)
    s = res.scores
    want = s.filter((pl.col("p_alive") < 0.3) & (pl.col("monetary") > 200))["customer_id"]
    seg = res.segments
    members = seg.to_long().filter(pl.col("segment") == "valuable_churners")["customer_id"]
    assert sorted(members.to_list()) == sorted(want.to_list())
    names = set(seg.names)
    assert {"likely_churners", "high_predicted_value", "expected_soon"} <= names
    assert res.prediction is not None


def test_without_predict_the_builtins_are_skipped_with_a_hint(shop_file: Path) -> None:
    res = fastseg.run(shop_file)
    skipped = dict(res.segments.skipped)
    assert "fastseg run --predict" in skipped["likely_churners"]
    with pytest.raises(RuleError, match="predicted fields need fastseg run --predict"):
        fastseg.run(shop_file, rules=RULES)


# ------------------------------------------------------------------------------- errors


def test_cli_predict(shop_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    res = runner.invoke(
        app, ["predict", str(shop_file), "--out", str(out), "--holdout-from", "2026-03-01"]
    )
    assert res.exit_code == 0, res.output
    assert "BG/NBD (fitted, weeks)" in res.output and "holdout total" in res.output
    assert pl.read_csv(out).height == pl.read_parquet(shop_file)["customer_id"].n_unique()


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--params-in", "{t}/nope.json"], "--params-in {t}/nope.json: no such file", 1),
        (["--params-in", "{t}/bad.json"], "not a fastseg parameters file", 1),
        (["--params-in", "{t}/p.json", "--params-out", "{t}/q.json"], "not both", 1),
        (["--unit", "months"], "months", 2),
        (["--horizon", "0"], "horizon: expected whole days from 1", 1),
        (["--discount-rate", "-1"], "discount_rate: expected an annual rate", 1),
        (["--holdout-from", "2030-01-01"], "is after the scoring date", 1),
    ],
)
def test_cli_predict_errors_are_one_line(
    shop_file: Path, tmp_path: Path, args: list[str], message: str, code: int
) -> None:
    (tmp_path / "bad.json").write_text("{}")
    (tmp_path / "p.json").write_text("{}")
    res = runner.invoke(
        app,
        [
            "predict",
            str(shop_file),
            "--out",
            str(tmp_path / "x.parquet"),
            *[a.format(t=tmp_path) for a in args],
        ],
    )
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.output.strip().splitlines() if not ln.startswith("fastseg: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert message.format(t=tmp_path) in lines[0]
    assert not (tmp_path / "x.parquet").exists()


def test_no_repeat_buyers_is_one_clear_error(tmp_path: Path) -> None:
    o = pl.DataFrame(
        {
            "customer_id": [1, 2, 3],
            "order_ts": [dt.datetime(2026, 1, d) for d in (1, 2, 3)],
            "amount": [10.0, 20.0, 30.0],
        }
    )
    with pytest.raises(DataError, match="no customer has a repeat purchase day"):
        fastseg.predict(o)
    o.write_parquet(tmp_path / "o.parquet")
    res = runner.invoke(
        app, ["predict", str(tmp_path / "o.parquet"), "--out", str(tmp_path / "p.parquet")]
    )
    assert res.exit_code == 1 and "no customer has a repeat purchase day" in res.output
    assert not (tmp_path / "p.parquet").exists()


def test_missing_scipy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_scipy(name: str, *args: object, **kwargs: object) -> object:
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    with pytest.raises(ParameterError, match=r"pip install 'fastseg\[ml\]'"):
        fastseg.predict(shop(1, 10))


def test_params_in_needs_predict_on_run(shop_file: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["run", str(shop_file), "--params-in", "x.json", "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 2 and "needs --predict" in res.output


def test_churn_risk_and_clv_score_in_rules(shop_file: Path) -> None:
    rules = """
[[segment]]
name = "risky_valuable"
rule = "churn_risk = 'high' AND clv_score >= 4"
[[segment]]
name = "not_low"
rule = "churn_risk IN ('high', 'medium')"
"""
    res = fastseg.run(shop_file, rules=rules, predict=True)
    s, sizes = res.scores, dict(zip(res.segments.names, res.segments.sizes, strict=True))
    assert (
        sizes["risky_valuable"]
        == s.filter((pl.col("churn_risk") == "high") & (pl.col("clv_score") >= 4)).height
    )
    assert sizes["not_low"] == s.filter(pl.col("churn_risk").is_in(["high", "medium"])).height


def test_lines_of_one_order_on_other_days_are_purchase_days_too() -> None:
    o = pl.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2],
            "order_id": [10, 10, 11, 20, 20],
            "order_ts": [
                dt.datetime(2024, 1, 5),
                dt.datetime(2024, 1, 1),
                dt.datetime(2024, 1, 10),
                dt.datetime(2024, 1, 3),
                dt.datetime(2024, 1, 1),
            ],
            "amount": [20.0, 10.0, 30.0, 7.0, 5.0],
        }
    )
    as_of = dt.date(2024, 1, 31)
    for rows in (o, o.reverse()):
        got = order_features(rows, as_of=as_of, btyd=True).frame
        _same(_summary(got), btyd_ref(rows.drop("order_id"), as_of))


def test_merged_aggregators_equal_one_pass() -> None:
    from fastseg.features import OrderAggregator

    o = shop(4, 300)
    day = (o["order_ts"].dt.date().cast(pl.Int32)).to_numpy()  # days since 1970-01-01
    ids = o["customer_id"].to_numpy()
    amount = o["amount"].to_numpy()
    flags = np.ones(o.height, np.uint8)
    half = o.height // 2

    def agg(sl: slice) -> OrderAggregator:
        a = OrderAggregator(AS_OF, btyd=True)
        a.add_arrays(
            ids[sl], day[sl].astype(np.int32), amount[sl], flags[sl], None, has_discount=False
        )
        return a

    whole, first, second = agg(slice(None)), agg(slice(0, half)), agg(slice(half, None))
    first.merge(second)
    _same(_summary(first.finish()), _summary(whole.finish()))


@pytest.mark.parametrize("bad", [{"r": True}, {"r": "0.1"}, {"alpha": None}])
def test_saved_parameters_of_the_wrong_type_are_refused(
    shop_file: Path, tmp_path: Path, bad: dict
) -> None:
    fastseg.predict(shop_file, params_out=tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    doc["bgnbd"].update(bad)
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ParameterError, match="expected numbers"):
        fastseg.predict(shop_file, params_in=tmp_path / "bad.json")


def test_holdout_before_the_first_order_says_so(shop_file: Path) -> None:
    with pytest.raises(DataError, match="--holdout-from 2020-01-01: no usable order before"):
        fastseg.predict(shop_file, holdout_from="2020-01-01")
