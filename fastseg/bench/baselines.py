"""The RFM recipes people write instead of fastseg: pandas, plain Polars and DuckDB SQL.

``fastseg bench --baselines`` and the ``bench/`` suites time them against fastseg on the same
Parquet file. Each recipe goes end to end, from the file to one row per customer with
``customer_id``, ``recency_days``, ``frequency``, ``monetary`` and the quintile scores
``r_score``, ``f_score``, ``m_score`` (1..k), using fastseg's definitions so that the work is the
same: the scoring date is the latest order date; an order is a row with amount >= 0 (the
recipes count rows, which equals fastseg's count of distinct ``order_id`` when, as in the
synthetic data, every row has its own order id); monetary is the net sum including refunds; only
customers with at least one order are scored. Rows with a missing customer id, timestamp or
amount are dropped, as a careful user would.

They differ from fastseg in how they cut quintiles, as their usual recipes do:

* **pandas**: ``pd.qcut(x.rank(method="first"), k)`` — exact 20% bins, ties split by row order;
* **Polars**: ``1 + k * (rank("min") - 1) // n`` — the same tie-safe rule as fastseg (the
  recipe's scores equal fastseg's);
* **DuckDB**: ``NTILE(k) OVER (ORDER BY x)`` — ties split arbitrarily.

pandas and DuckDB are optional: ``pip install 'fastseg[bench]'``.

:data:`SCRIPTS` holds the same recipes as the standalone scripts a user would write and run as
``python rfm.py orders.parquet scores.parquet`` (CSV too, by the file's suffix): imports, reading,
scoring and writing the result as Parquet. ``fastseg bench --whole-process`` times them as fresh
processes (:mod:`fastseg.bench.whole`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastseg.errors import FastsegError

__all__ = [
    "RECIPES",
    "SCRIPTS",
    "require",
    "rfm_duckdb",
    "rfm_pandas",
    "rfm_polars",
    "run_recipe",
    "write_scripts",
]

#: Recipe names, in the order they are run and reported.
RECIPES: tuple[str, ...] = ("pandas", "polars", "duckdb")
_MODULES = {"pandas": ("pandas", "pyarrow"), "polars": ("polars",), "duckdb": ("duckdb",)}
COLUMNS = ("customer_id", "recency_days", "frequency", "monetary", "r_score", "f_score", "m_score")


def require(recipe: str) -> None:
    """Import what ``recipe`` needs, or raise FastsegError saying how to install it."""
    if recipe not in _MODULES:
        msg = f"unknown baseline recipe {recipe!r}; choose one of {', '.join(RECIPES)}"
        raise FastsegError(msg)
    for mod in _MODULES[recipe]:
        try:
            importlib.import_module(mod)
        except ImportError:
            msg = (
                f"the {recipe} baseline needs the '{mod}' package, which is not installed; "
                "install the benchmark extras: pip install 'fastseg[bench]'"
            )
            raise FastsegError(msg) from None


def rfm_pandas(path: str | os.PathLike[str], bins: int = 5) -> Any:
    """RFM with pandas: ``read_parquet``, one ``groupby().agg``, ``qcut`` on ``rank("first")``.

    Returns a pandas DataFrame with the columns of :data:`COLUMNS`.
    """
    require("pandas")
    import pandas as pd

    df = pd.read_parquet(path, columns=["customer_id", "order_ts", "amount"])
    df = df.dropna(subset=["customer_id", "order_ts", "amount"])
    df["order_day"] = df["order_ts"].dt.normalize()
    as_of = df["order_day"].max()
    df["is_order"] = df["amount"] >= 0
    df["order_day"] = df["order_day"].where(df["is_order"])
    rfm = df.groupby("customer_id").agg(
        last=("order_day", "max"), frequency=("is_order", "sum"), monetary=("amount", "sum")
    )
    rfm = rfm[rfm["frequency"] > 0]
    rfm["recency_days"] = (as_of - rfm["last"]).dt.days
    labels = list(range(1, bins + 1))
    rfm["r_score"] = pd.qcut(
        rfm["recency_days"].rank(method="first", ascending=False), bins, labels=labels
    )
    rfm["f_score"] = pd.qcut(rfm["frequency"].rank(method="first"), bins, labels=labels)
    rfm["m_score"] = pd.qcut(rfm["monetary"].rank(method="first"), bins, labels=labels)
    return rfm.reset_index()[list(COLUMNS)]


def rfm_polars(path: str | os.PathLike[str], bins: int = 5) -> Any:
    """RFM with plain Polars: ``read_parquet``, ``group_by().agg``, scores from ``rank("min")``.

    Returns a Polars DataFrame with the columns of :data:`COLUMNS`.
    """
    import polars as pl

    df = (
        pl.read_parquet(path, columns=["customer_id", "order_ts", "amount"])
        .drop_nulls()
        .with_columns(pl.col("order_ts").dt.date().alias("order_date"))
    )
    as_of = df["order_date"].max()
    is_order = pl.col("amount") >= 0

    def score(x: pl.Expr) -> pl.Expr:
        return (1 + (bins * (x.rank("min") - 1)) // pl.len()).cast(pl.UInt8)

    return (
        df.group_by("customer_id")
        .agg(
            pl.col("order_date").filter(is_order).max().alias("last"),
            is_order.sum().cast(pl.Int64).alias("frequency"),
            pl.col("amount").sum().alias("monetary"),
        )
        .filter(pl.col("frequency") > 0)
        .with_columns((pl.lit(as_of) - pl.col("last")).dt.total_days().alias("recency_days"))
        .with_columns(
            score(-pl.col("recency_days")).alias("r_score"),
            score(pl.col("frequency")).alias("f_score"),
            score(pl.col("monetary")).alias("m_score"),
        )
        .select(COLUMNS)
    )


def rfm_duckdb(path: str | os.PathLike[str], bins: int = 5) -> Any:
    """RFM with DuckDB SQL: ``read_parquet``, ``GROUP BY``, ``NTILE`` windows.

    Returns a pyarrow Table with the columns of :data:`COLUMNS`.
    """
    require("duckdb")
    import duckdb

    k = int(bins)
    source = str(path).replace("'", "''")
    sql = f"""
        WITH o AS (
            SELECT customer_id, CAST(order_ts AS DATE) AS d, amount
            FROM read_parquet('{source}')
            WHERE customer_id IS NOT NULL AND order_ts IS NOT NULL AND amount IS NOT NULL
        ),
        a AS (SELECT max(d) AS as_of FROM o),
        c AS (
            SELECT customer_id,
                   max(d) FILTER (WHERE amount >= 0) AS last,
                   count(*) FILTER (WHERE amount >= 0) AS frequency,
                   sum(amount) AS monetary
            FROM o GROUP BY customer_id
            HAVING count(*) FILTER (WHERE amount >= 0) > 0
        ),
        r AS (SELECT c.*, date_diff('day', last, a.as_of) AS recency_days FROM c, a)
        SELECT customer_id, recency_days, frequency, monetary,
               NTILE({k}) OVER (ORDER BY recency_days DESC) AS r_score,
               NTILE({k}) OVER (ORDER BY frequency) AS f_score,
               NTILE({k}) OVER (ORDER BY monetary) AS m_score
        FROM r
    """
    con = duckdb.connect()
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


_RUNNERS: dict[str, Callable[..., Any]] = {
    "pandas": rfm_pandas,
    "polars": rfm_polars,
    "duckdb": rfm_duckdb,
}


def run_recipe(name: str, path: str | os.PathLike[str], bins: int = 5) -> Any:
    """Run the recipe ``name`` (one of :data:`RECIPES`) on the Parquet file ``path``."""
    require(name)
    return _RUNNERS[name](path, bins)


# --------------------------------------------------------------------------------------------
# the same recipes as standalone scripts: python SCRIPT INPUT OUTPUT
# --------------------------------------------------------------------------------------------

#: Standalone scripts, one per recipe: ``python script.py ORDERS OUT.parquet``, where ORDERS is a
#: Parquet or (by its suffix) CSV file. Each is what a user writes: read the three columns, one
#: row per customer with recency (days from the latest order date), frequency (rows with
#: amount >= 0) and monetary (net sum), quintile scores, the result written as Parquet.
SCRIPTS: dict[str, str] = {
    "polars": """\
import sys

import polars as pl

src, out = sys.argv[1], sys.argv[2]
lf = pl.scan_csv(src, try_parse_dates=True) if src.endswith(".csv") else pl.scan_parquet(src)
o = lf.select("customer_id", pl.col("order_ts").dt.date().alias("day"), "amount").drop_nulls()
is_order = pl.col("amount") >= 0
score = lambda x: (1 + 5 * (x.rank("min") - 1) // pl.len()).cast(pl.UInt8)  # noqa: E731
rfm = (
    o.group_by("customer_id")
    .agg(
        last=pl.col("day").filter(is_order).max(),
        latest=pl.col("day").max(),
        frequency=is_order.sum(),
        monetary=pl.col("amount").sum(),
    )
    .with_columns(recency_days=(pl.col("latest").max() - pl.col("last")).dt.total_days())
    .filter(pl.col("frequency") > 0)
    .with_columns(
        r_score=score(-pl.col("recency_days")),
        f_score=score(pl.col("frequency")),
        m_score=score(pl.col("monetary")),
    )
    .select("customer_id", "recency_days", "frequency", "monetary", "r_score", "f_score", "m_score")
)
rfm.sink_parquet(out)
""",
    "duckdb": """\
import sys

import duckdb

src, out = sys.argv[1], sys.argv[2]
duckdb.sql(f\"\"\"
COPY (
  WITH o AS (
    SELECT customer_id, CAST(order_ts AS DATE) AS d, amount FROM '{src}'
    WHERE customer_id IS NOT NULL AND order_ts IS NOT NULL AND amount IS NOT NULL),
  c AS (
    SELECT customer_id, max(d) FILTER (WHERE amount >= 0) AS last,
           count(*) FILTER (WHERE amount >= 0) AS frequency, sum(amount) AS monetary
    FROM o GROUP BY customer_id),
  r AS (
    SELECT *, date_diff('day', last, (SELECT max(d) FROM o)) AS recency_days
    FROM c WHERE frequency > 0)
  SELECT customer_id, recency_days, frequency, monetary,
         ntile(5) OVER (ORDER BY recency_days DESC) AS r_score,
         ntile(5) OVER (ORDER BY frequency) AS f_score,
         ntile(5) OVER (ORDER BY monetary) AS m_score
  FROM r
) TO '{out}' (FORMAT parquet)
\"\"\")
""",
    "pandas": """\
import sys

import pandas as pd

src, out = sys.argv[1], sys.argv[2]
cols = ["customer_id", "order_ts", "amount"]
if src.endswith(".csv"):
    df = pd.read_csv(src, usecols=cols, parse_dates=["order_ts"])
else:
    df = pd.read_parquet(src, columns=cols)
df = df.dropna()
df["day"] = df["order_ts"].dt.normalize()
orders = df[df["amount"] >= 0]
rfm = orders.groupby("customer_id").agg(last=("day", "max"), frequency=("day", "size"))
rfm["monetary"] = df.groupby("customer_id")["amount"].sum()
rfm["recency_days"] = (df["day"].max() - rfm["last"]).dt.days
for score, col, up in [("r_score", "recency_days", False), ("f_score", "frequency", True),
                       ("m_score", "monetary", True)]:
    rfm[score] = pd.qcut(rfm[col].rank(method="first", ascending=up), 5, labels=False) + 1
cols = ["recency_days", "frequency", "monetary", "r_score", "f_score", "m_score"]
rfm[cols].reset_index().to_parquet(out, index=False)
""",
}


def write_scripts(
    folder: str | os.PathLike[str], names: Sequence[str] = RECIPES
) -> dict[str, Path]:
    """Write the scripts of :data:`SCRIPTS` named ``names`` to ``folder`` as ``rfm_<name>.py``."""
    where = Path(folder)
    where.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        if name not in SCRIPTS:
            msg = f"unknown baseline recipe {name!r}; choose one of {', '.join(SCRIPTS)}"
            raise FastsegError(msg)
        paths[name] = where / f"rfm_{name}.py"
        paths[name].write_text(SCRIPTS[name])
    return paths
