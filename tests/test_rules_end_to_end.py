"""Every new rule form through `fastseg run` on an order history with line items, refunds and
shuffled rows, against memberships computed with plain Polars from the raw rows as
docs/rules.md defines them (not through the rule compiler's own expressions)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

import fastseg

RULES = {
    "lapsed_window": "orders(since: -180d, until: -90d) >= 1 AND orders(since: -89d) = 0",
    "holiday": "revenue(since: 2025-11-01, until: 2025-12-31) > 100",
    "bought_yesterday": "orders(since: yesterday) >= 1",
    "overdue": "recency_days > 2 * avg_days_between_orders",
    "declining": "revenue(since: -90d) < 0.5 * revenue(since: -180d, until: -91d)",
    "sku_buyer": "orders(sku: 'A-1', since: -90d) >= 1",
    "shoe_units": "units(category: 'shoes', since: -1y) >= 3",
    "explorer": "distinct(category, since: -1y) >= 3",
    "top_shoes": "top_category = 'shoes'",
    "bday": "anniversary(birth_date) BETWEEN today AND +30d",
    "app_twice": "orders(channel: 'app', since: -1y) >= 2",
}


def _toml() -> str:
    return "".join(f'[[segment]]\nname = "{n}"\nrule = "{r}"\n\n' for n, r in RULES.items())


def _data(seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    n_orders, n_cust = 1500, 120
    start = dt.date(2025, 1, 1)
    days = rng.integers(0, 455, n_orders)
    orders = pl.DataFrame(
        {
            "order_id": np.arange(n_orders) + 10_000,
            "customer_id": rng.integers(0, n_cust, n_orders) * 7 + 1000,
            "order_ts": [start + dt.timedelta(days=int(d)) for d in days],
            "channel": rng.choice(["app", "web", None], n_orders).tolist(),
        }
    )
    # 1-3 lines per order, each with its category, sku, quantity and amount
    lines = orders.with_columns(n=pl.Series(rng.integers(1, 4, n_orders))).select(
        pl.all().repeat_by("n").explode()
    )
    m = lines.height
    lines = lines.drop("n").with_columns(
        category=pl.Series(rng.choice(["shoes", "bags", "hats", "socks"], m)),
        sku=pl.Series(rng.choice(["A-1", "B-2", "C-3"], m)),
        quantity=pl.Series(rng.integers(1, 4, m)),
        amount=pl.Series(np.round(rng.uniform(1, 80, m), 2)),
    )
    # refunds: rows of their own (own order id), negative amounts
    refunds = lines.sample(60, seed=seed).with_columns(
        order_id=pl.int_range(90_000, 90_060), amount=-pl.col("amount")
    )
    rows = pl.concat([lines, refunds]).sample(fraction=1.0, shuffle=True, seed=seed)
    birth = [
        start.replace(year=1980) + dt.timedelta(days=int(x)) for x in rng.integers(0, 3650, n_cust)
    ]
    birth[0] = dt.date(1992, 2, 29)
    customers = pl.DataFrame({"customer_id": np.arange(n_cust) * 7 + 1000, "birth_date": birth})
    return rows, customers


def _expected(rows: pl.DataFrame, customers: pl.DataFrame, scores: pl.DataFrame) -> dict:
    as_of = rows["order_ts"].max()
    day = pl.col("order_ts")
    buy = pl.col("amount") >= 0

    def window(since: int | dt.date | None, until: int | dt.date | None = None) -> pl.Expr:
        cond = pl.lit(True)
        for bound, op in ((since, "ge"), (until, "le")):
            if bound is None:
                continue
            d = as_of + dt.timedelta(days=bound) if isinstance(bound, int) else bound
            cond = cond & (day >= d if op == "ge" else day <= d)
        return cond

    def per_customer(expr: pl.Expr) -> dict:
        got = rows.group_by("customer_id").agg(expr.alias("v"))
        return dict(got.iter_rows())

    def orders_in(cond: pl.Expr) -> dict:  # distinct orders with a purchase line matching
        return per_customer(pl.col("order_id").filter(cond & buy).n_unique())

    everyone = scores["customer_id"].to_list()
    o_180_90 = orders_in(window(-180, -90))
    o_89 = orders_in(window(-89))
    holiday = per_customer(
        pl.col("amount").filter(window(dt.date(2025, 11, 1), dt.date(2025, 12, 31))).sum()
    )
    yest = orders_in(window(-1))
    r90 = per_customer(pl.col("amount").filter(window(-90)).sum())
    r180 = per_customer(pl.col("amount").filter(window(-180, -91)).sum())
    sku = orders_in(window(-90) & (pl.col("sku") == "A-1"))
    year_ago = dt.date(as_of.year - 1, as_of.month, as_of.day)
    units = per_customer(
        pl.col("quantity").filter(window(year_ago) & buy & (pl.col("category") == "shoes")).sum()
    )
    distinct = per_customer(pl.col("category").filter(window(year_ago) & buy).n_unique())
    app = orders_in(window(year_ago) & (pl.col("channel") == "app"))
    gross = (
        rows.filter(buy)
        .group_by("customer_id", "category")
        .agg(pl.col("amount").sum())
        .sort(["customer_id", "amount", "category"], descending=[False, True, False])
        .group_by("customer_id", maintain_order=True)
        .first()
    )
    top = dict(gross.select("customer_id", "category").iter_rows())
    sc = {r["customer_id"]: r for r in scores.iter_rows(named=True)}
    births = dict(customers.iter_rows())

    def anniversary(b: dt.date) -> dt.date:
        for year in (as_of.year, as_of.year + 1):
            try:
                d = dt.date(year, b.month, b.day)
            except ValueError:
                d = dt.date(year, 2, 28)
            if d >= as_of:
                return d
        raise AssertionError

    def overdue(c: int) -> bool:
        rec, avg = sc[c]["recency_days"], sc[c]["avg_days_between_orders"]
        return rec is not None and avg is not None and rec > 2 * avg

    return {
        "lapsed_window": {c for c in everyone if o_180_90.get(c, 0) >= 1 and o_89.get(c, 0) == 0},
        "holiday": {c for c in everyone if holiday.get(c, 0) > 100},
        "bought_yesterday": {c for c in everyone if yest.get(c, 0) >= 1},
        "overdue": {c for c in everyone if overdue(c)},
        "declining": {c for c in everyone if r90.get(c, 0.0) < 0.5 * r180.get(c, 0.0)},
        "sku_buyer": {c for c in everyone if sku.get(c, 0) >= 1},
        "shoe_units": {c for c in everyone if units.get(c, 0) >= 3},
        "explorer": {c for c in everyone if distinct.get(c, 0) >= 3},
        "top_shoes": {c for c in everyone if top.get(c) == "shoes"},
        "bday": {
            c
            for c in everyone
            if births.get(c) is not None
            and as_of <= anniversary(births[c]) <= as_of + dt.timedelta(days=30)
        },
        "app_twice": {c for c in everyone if app.get(c, 0) >= 2},
    }


@pytest.mark.parametrize(("seed", "kind"), [(1, "parquet"), (2, "csv"), (3, "frame")])
def test_new_forms_through_run_equal_plain_polars(tmp_path, seed, kind):
    rows, customers = _data(seed)
    if kind == "parquet":
        source: object = tmp_path / "orders.parquet"
        rows.write_parquet(source, row_group_size=700)  # lines of one order in two groups
    elif kind == "csv":
        source = tmp_path / "orders.csv"
        rows.write_csv(source)
    else:
        source = rows
    rules = tmp_path / "rules.toml"
    rules.write_text(_toml())
    res = fastseg.run(source, customers=customers, rules=rules, builtin=False)
    want = _expected(rows, customers, res.scores)
    for name, members in want.items():
        got = set(res.segments.members(name).to_list())
        assert got == members, (name, sorted(got ^ members)[:10])
    assert sum(len(m) for m in want.values()) > 0
    for name in ("lapsed_window", "declining", "sku_buyer", "explorer", "app_twice", "shoe_units"):
        assert want[name], name  # the data exercises the form


def test_amount_from_quantity_and_unit_price(tmp_path):
    # an Online Retail-shaped file: no amount column (quantity x unit_price), text invoice ids
    # with 'C' cancellations (negative quantities), float customer ids, the product as sku
    rows = pl.DataFrame(
        {
            "Invoice": ["5001", "5001", "5002", "C5003", "5004"],
            "StockCode": ["85123A", "71053", "85123A", "85123A", "22423"],
            "Quantity": [6, 2, 4, -6, 1],
            "Price": [2.55, 3.39, 2.55, 2.55, 12.75],
            "InvoiceDate": ["2026-03-01 08:26:00"] * 2 + ["2026-03-20 09:00:00"] * 3,
            "Customer ID": [17850.0, 17850.0, 13047.0, 17850.0, 13047.0],
        }
    )
    source = tmp_path / "retail.csv"
    rows.write_csv(source)
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[segment]]\nname = "heart"\nrule = "orders(sku: \'85123A\', since: -30d) >= 1"\n'
        '[[segment]]\nname = "bulk"\nrule = "units(sku: \'85123A\') >= 5"\n'
        '[[segment]]\nname = "variety"\nrule = "distinct(sku) >= 2"\n'
    )
    cols = {
        "order_id": "Invoice",
        "customer_id": "Customer ID",
        "quantity": "Quantity",
        "unit_price": "Price",
        "order_ts": "InvoiceDate",
        "sku": "StockCode",
    }
    res = fastseg.run(source, columns=cols, rules=rules, builtin=False)
    members = {n: sorted(res.segments.members(n).to_list()) for n in ("heart", "bulk", "variety")}
    # the cancellation is a refund line: no order, no units (CSV ids are text, as written)
    a, b = "13047.0", "17850.0"
    assert members == {"heart": [a, b], "bulk": [b], "variety": [a, b]}
