"""The five rule forms of forms.toml as one lazy Polars group_by: what a user would write."""

import datetime as dt
import sys

import polars as pl

o = pl.scan_parquet(sys.argv[1]).with_columns(day=pl.col("order_ts").dt.date())
as_of = o.select(pl.col("day").max()).collect().item()


def d(n: int) -> dt.date:
    return as_of - dt.timedelta(days=n)


year = dt.date(as_of.year - 1, as_of.month, as_of.day)
buy = pl.col("amount") >= 0
agg = (
    o.group_by("customer_id")
    .agg(
        app=pl.col("order_id")
        .filter((pl.col("day") >= d(90)) & (pl.col("channel") == "app") & buy)
        .n_unique(),
        r90=pl.col("amount").filter(pl.col("day") >= d(90)).sum(),
        r180=pl.col("amount").filter((pl.col("day") >= d(180)) & (pl.col("day") <= d(91))).sum(),
        units=pl.col("quantity")
        .filter((pl.col("day") >= year) & (pl.col("category") == "Shoes") & buy)
        .sum(),
        cats=pl.col("category").filter((pl.col("day") >= year) & buy).n_unique(),
        first=pl.col("day").filter(buy).min(),
        last=pl.col("day").filter(buy).max(),
        n=pl.col("order_id").filter(buy).n_unique(),
    )
    .with_columns(
        rec=(pl.lit(as_of) - pl.col("last")).dt.total_days(),
        avg=(pl.col("last") - pl.col("first")).dt.total_days() / (pl.col("n") - 1),
    )
)
out = agg.select(
    "customer_id",
    app_recent=pl.col("app") >= 1,
    declining=pl.col("r90") < 0.5 * pl.col("r180"),
    shoe_units=pl.col("units") >= 2,
    explorer=pl.col("cats") >= 3,
    overdue=(pl.col("rec") > 2 * pl.col("avg")).fill_null(False),
).collect()
out.write_parquet("polars_out.parquet")  # in the current folder
print(out.select(pl.exclude("customer_id").sum()))
