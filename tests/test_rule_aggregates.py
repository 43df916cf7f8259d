"""The row pass's rule aggregates, top_category and event aggregates against their definitions:
``AggSpec.expr`` in a plain Polars ``group_by`` over the canonical rows, and plain Python."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastseg
from fastseg.pipeline import order_features
from fastseg.rules.compile import aggregate_spec
from fastseg.rules.parse import parse_rule

AS_OF = dt.date(2026, 6, 30)
RULES = (
    "orders(since: -90d, channel: 'app') >= 2",
    "revenue(since: -180d, until: -91d) > 0",
    "revenue(channel: ['app', 'web']) > 0",
    "units(category: 'shoes', since: -1y) > 0",
    "distinct(category, since: -1y) >= 3",
    "orders(sku: 'A-1', since: -90d) >= 1",
    "orders(since: -60d) >= 1",
)
SPECS = [aggregate_spec(parse_rule(r).operand) for r in RULES]
EXTRA = ["channel", "category", "sku", "quantity", "order_id"]

_row = st.fixed_dictionaries(
    {
        "customer_id": st.sampled_from([1, 2, 3, 4, 5, 17]),
        "back": st.integers(-3, 400),  # days before AS_OF; negative: after it (left out)
        "amount": st.sampled_from([-5.0, 0.0, 2.5, 4.0, 10.0, None]),
        "order_id": st.sampled_from([1, 2, 3, 4, 9, None]),
        "channel": st.sampled_from(["app", "web", "store", None]),
        "category": st.sampled_from(["shoes", "hats", "bags", "socks", None]),
        "sku": st.sampled_from(["A-1", "B-2", None]),
        "quantity": st.sampled_from([1.0, 2.0, 3.0, None]),
    }
)


def _table(rows: list[dict], text_ids: bool, with_oid: bool) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema_overrides={"order_id": pl.Int64, "quantity": pl.Float64})
    df = df.with_columns(
        order_ts=pl.lit(AS_OF) - pl.duration(days=pl.col("back")),
        amount=pl.col("amount").cast(pl.Float64),
    ).drop("back")
    if text_ids:
        df = df.with_columns(pl.format("c-{}", pl.col("customer_id")).alias("customer_id"))
    if not with_oid:
        df = df.drop("order_id")
    return df


def _canonical(df: pl.DataFrame) -> pl.DataFrame:
    """The usable rows as AggSpec.expr reads them (``_order_key``: the order id, or the row's
    number for a line without one; ``_order``: every line with amount >= 0 is an order when
    there is no order id)."""
    rows = df.rename({"order_ts": "order_date"}).with_row_index("_row")
    rows = rows.filter(
        pl.col("customer_id").is_not_null()
        & pl.col("amount").is_not_null()
        & (pl.col("order_date") <= AS_OF)
    )
    key = -1 - pl.col("_row").cast(pl.Int64)
    if "order_id" in rows.columns:
        key = pl.col("order_id").fill_null(key)
    return rows.with_columns(_order_key=key, _order=(pl.col("amount") >= 0).cast(pl.UInt8))


def _reference(df: pl.DataFrame, specs: list) -> pl.DataFrame:
    rows = _canonical(df)
    return rows.group_by("customer_id").agg([s.expr(AS_OF) for s in specs])


def _write(df: pl.DataFrame, kind: str, tmp: Path) -> object:
    if kind == "frame":
        return df
    if kind == "parquet":
        path = tmp / "orders.parquet"
        df.write_parquet(path, row_group_size=4)
        return path
    path = tmp / "orders.csv"
    df.write_csv(path)
    return path


def _check(df: pl.DataFrame, kind: str, tmp: Path, batch_rows: int) -> None:
    with_oid = "order_id" in df.columns
    # unfiltered orders() counts first lines: checked where each line is its own order
    specs = [s for s in SPECS if with_oid is False or s.name != "orders_60d"]
    of = order_features(
        _write(df, kind, tmp),
        as_of=AS_OF,
        aggregates=specs,
        extra_columns=EXTRA,
        batch_rows=batch_rows,
    )
    ref = _reference(df, specs)
    assert of.aggregates is not None
    got, fills = of.aggregates
    assert set(fills) == {s.name for s in specs}
    names = [s.name for s in specs]
    got = got.with_columns(pl.col("customer_id").cast(pl.String))
    ref = ref.with_columns(pl.col("customer_id").cast(pl.String))
    joined = got.join(ref, on="customer_id", how="left", suffix="_ref")
    for n in names:
        joined = joined.with_columns(pl.col(f"{n}_ref").fill_null(fills[n]))
        assert joined[n].to_list() == joined[f"{n}_ref"].to_list(), n
    assert set(ref["customer_id"]) <= set(got["customer_id"])


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    rows=st.lists(_row, min_size=1, max_size=30),
    dup=st.lists(st.integers(0, 29), max_size=6),
    text_ids=st.booleans(),
    with_oid=st.booleans(),
    kind=st.sampled_from(["frame", "parquet", "csv"]),
    batch_rows=st.sampled_from([3, 7, 1 << 20]),
    order=st.randoms(use_true_random=False),
)
def test_rule_aggregates_equal_their_definition(
    tmp_path_factory, rows, dup, text_ids, with_oid, kind, batch_rows, order
):
    rows = rows + [rows[i % len(rows)] for i in dup]  # duplicated rows
    order.shuffle(rows)  # unsorted, lines of one order apart
    if not any(r["customer_id"] is not None and r["amount"] is not None for r in rows):
        rows.append({**rows[0], "amount": 1.0, "back": 0})
    if all(r["back"] < 0 or r["amount"] is None for r in rows):
        rows.append({**rows[0], "amount": 1.0, "back": 0})
    df = _table(rows, text_ids, with_oid)
    _check(df, kind, tmp_path_factory.mktemp("agg"), batch_rows)


def test_line_level_orders_by_plain_python():
    """orders(sku: 'A-1') counts an order once, by any matching line, whatever batch it is in."""
    rows = [
        (1, 5, 10.0, 7, "B-2"),
        (1, 5, 3.0, 7, "A-1"),  # second line of order 7 matches
        (1, 6, 4.0, 8, "A-1"),
        (1, 6, 4.0, 8, "A-1"),  # two matching lines of one order
        (2, 5, -3.0, 9, "A-1"),  # a refund line: not counted
        (2, 400, 3.0, 10, "A-1"),  # outside the window
        (3, 1, 2.0, None, "A-1"),  # no order id: its own order
        (3, 1, 2.0, None, "A-1"),
    ]
    df = pl.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "order_ts": [AS_OF - dt.timedelta(days=r[1]) for r in rows],
            "amount": [r[2] for r in rows],
            "order_id": [r[3] for r in rows],
            "sku": [r[4] for r in rows],
        }
    )
    spec = aggregate_spec(parse_rule("orders(sku: 'A-1', since: -90d) >= 1").operand)
    want: dict[int, set] = defaultdict(set)
    for i, (c, back, amount, oid, sku) in enumerate(rows):
        if sku == "A-1" and amount >= 0 and back <= 90:
            want[c].add(oid if oid is not None else ("row", i))
    for batch_rows in (1, 2, 100):
        of = order_features(
            df, as_of=AS_OF, aggregates=[spec], extra_columns=["sku"], batch_rows=batch_rows
        )
        got = dict(of.aggregates[0].select("customer_id", spec.name).iter_rows())
        assert got == {c: len(want.get(c, ())) for c in (1, 2, 3)}


def test_missing_column_is_not_computed():
    df = pl.DataFrame({"customer_id": [1], "order_ts": [AS_OF], "amount": [1.0]})
    spec = aggregate_spec(parse_rule("units(category: 'shoes') > 0").operand)
    of = order_features(df, as_of=AS_OF, aggregates=[spec], extra_columns=["category", "quantity"])
    assert of.aggregates is None or spec.name not in of.aggregates[0].columns


def _top_reference(df: pl.DataFrame) -> dict:
    gross: dict = defaultdict(lambda: defaultdict(float))
    for c, amount, cat in df.select("customer_id", "amount", "category").iter_rows():
        if cat is not None and amount >= 0:
            gross[c][cat] += amount
    return {c: min(g, key=lambda k: (-g[k], k)) for c, g in gross.items()}


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from([1, 2, 3, 4]),
            st.sampled_from([-4.0, 0.0, 1.0, 2.0, 3.0]),
            st.sampled_from(["b", "a", "c", None]),
        ),
        min_size=1,
        max_size=25,
    ),
    batch_rows=st.sampled_from([2, 5, 1 << 20]),
    kind=st.sampled_from(["frame", "parquet"]),
)
def test_top_category(tmp_path_factory, rows, batch_rows, kind):
    df = pl.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "order_ts": [AS_OF] * len(rows),
            "amount": [r[1] for r in rows],
            "category": pl.Series([r[2] for r in rows], dtype=pl.String),
        }
    )
    src = _write(df, kind, tmp_path_factory.mktemp("top"))
    of = order_features(src, as_of=AS_OF, batch_rows=batch_rows, top_category=True)
    got = dict(of.frame.select("customer_id", "top_category").iter_rows())
    want = _top_reference(df)
    assert got == {c: want.get(c) for c in got}


def test_top_category_ties_and_scores_schema():
    df = pl.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2, 3],
            "order_ts": [AS_OF] * 6,
            "amount": [5.0, 5.0, 9.0, -9.0, 1.0, -1.0],
            "category": ["zeta", "alpha", None, "a", "b", "a"],
        }
    )
    scores = fastseg.score(df, as_of=AS_OF, top_category=True).sort("customer_id")
    assert scores["top_category"].to_list() == ["alpha", "b", None]
    # computed only when asked for (a rule that uses it asks): it costs a third of the pass
    assert "top_category" not in fastseg.score(df, as_of=AS_OF).columns
    res = fastseg.run(
        df,
        as_of=AS_OF,
        rules='[[segment]]\nname = "shoe_fans"\nrule = "top_category = \'alpha\'"\n',
        builtin=False,
    )
    assert res.scores.sort("customer_id")["top_category"].to_list() == ["alpha", "b", None]
    assert res.segments.members("shoe_fans").to_list() == [1]
    from fastseg.rules.compile import scores_schema

    assert scores_schema(category=True)["top_category"] == pl.String


_EV_TOML = """
[[segment]]
name = "opened_x"
rule = "events('email_open', since: -30d, campaign: 'x') >= 1"
"""


@pytest.mark.parametrize("as_parquet", [False, True])
def test_event_aggregate_with_filter_end_to_end(tmp_path, as_parquet):
    orders = pl.DataFrame(
        {"customer_id": [1, 2, 3, 4], "order_ts": [AS_OF] * 4, "amount": [1.0, 2.0, 3.0, 4.0]}
    )
    day = dt.datetime.combine(AS_OF, dt.time(12))
    ev = pl.DataFrame(
        {
            "customer_id": [1, 1, 2, 3, 3, 4, None],
            "event_ts": [
                day - dt.timedelta(days=d) for d in (3, 40, 5, 2, 1, -2, 1)
            ],  # 4: after as_of
            "event": [
                "email_open",
                "email_open",
                "email_open",
                "email_open",
                "click",
                "email_open",
                "email_open",
            ],  # fmt: skip
            "campaign": ["x", "x", "y", None, "x", "x", "x"],
        }
    )
    src: object = ev
    if as_parquet:
        src = tmp_path / "ev.parquet"
        ev.write_parquet(src, row_group_size=2)
    res = fastseg.run(orders, rules=_EV_TOML, builtin=False, events=src, as_of=AS_OF)
    col = res.scores.select("customer_id", "email_open_30d__campaign_x").sort("customer_id")
    assert col.rows() == [(1, 1), (2, 0), (3, 0), (4, 0)]
    members = res.segments.members("opened_x")
    assert sorted(pl.Series(members).to_list()) == [1]


@settings(max_examples=20, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 300), st.sampled_from([0.0, 1.0, 2.5, -1.0])),
        max_size=200,
    ),
    split=st.integers(0, 200),
)
def test_category_revenue_slots_and_table_equal_python(rows, split):
    """More categories than the slots (and codes past 254) spill to the pair table exactly."""
    import numpy as np

    from fastseg.kernels.rules import CategoryRevenue

    cr = CategoryRevenue(2)
    for part in (rows[:split], rows[split:]):
        if part:
            arr = np.array(part, dtype=np.float64)
            cr.grow(6)
            cr.add(arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2])
    want: dict = defaultdict(float)
    for c, k, a in rows:
        if a >= 0:
            want[(c, k)] += a
    code, cat, total = cr.entries()
    assert (
        dict(zip(zip(code.tolist(), cat.tolist(), strict=True), total.tolist(), strict=True))
        == want
    )
    rank = np.arange(301)[::-1].copy()  # ties: the largest code wins
    best = cr.top(6, rank)
    for c in range(6):
        mine = {k: v for (cc, k), v in want.items() if cc == c}
        assert best[c] == (max(mine, key=lambda k: (mine[k], k)) if mine else -1)


def test_distinct_beyond_64_values_and_numbers():
    n = 300
    df = pl.DataFrame(
        {
            "customer_id": [i % 3 for i in range(n)],
            "order_ts": [AS_OF - dt.timedelta(days=i % 50) for i in range(n)],
            "amount": [(-1.0 if i % 7 == 0 else 1.0) for i in range(n)],
            "sku": [None if i % 11 == 0 else f"S{i % 97}" for i in range(n)],
            "quantity": [float(i % 13) for i in range(n)],
        }
    )
    specs = [
        aggregate_spec(parse_rule(r).operand)
        for r in ("distinct(sku, since: -30d) > 0", "distinct(quantity) > 0")
    ]
    ref = _reference(df, specs).sort("customer_id")
    for batch_rows in (17, 1 << 20):
        of = order_features(
            df, as_of=AS_OF, aggregates=specs, extra_columns=["sku", "quantity"],
            batch_rows=batch_rows,
        )  # fmt: skip
        got = of.aggregates[0].sort("customer_id").select(ref.columns)
        assert got.rows() == ref.rows()
