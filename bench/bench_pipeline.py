"""Stage-by-stage benchmarks of the main job, each against what users write instead.

Run with ``pytest bench -m benchmark`` (``FASTSEG_BENCH_LARGE=1`` adds 1e7 orders). Each group
holds fastseg and its baselines — pandas, plain Polars and DuckDB — on the same input, at 1e5 and
1e6 orders (and 1e7). Inputs are prepared outside the timings; peak memory of one call is in
``extra_info`` (see ``bench/conftest.py``).

Groups (``<stage>-<orders>``):

- ``aggregation``: per-customer features from the orders in memory (a Polars frame of the whole
  file). :func:`fastseg.pipeline.order_features` checks every row (left-out reasons, exact
  duplicates, order lines) and computes every feature (R/F/M, first/last dates, three trailing
  windows, refunds, categories, discounts) in one streamed pass (``fastseg-parquet``: the same
  from the Parquet file, read as it goes); the baselines compute only recency, frequency and
  monetary.
- ``scoring``: R/F/M quintile scores from the features: :class:`fastseg.scoring.RFMScorer`
  (fit + transform, with cell and group) vs ``qcut`` on ranks, ``rank("min")``, ``NTILE``.
- ``segments``: membership of twelve RFM segments (:data:`SEGMENTS`) for every customer:
  :func:`fastseg.segmenting.evaluate` (bitsets) vs boolean columns in each engine.
- ``overlap-12-segments``: the segment × segment overlap counts from the memberships.
- ``end-to-end``: from the Parquet file to R/F/M scores — :func:`fastseg.score` vs the recipes
  of :mod:`fastseg.bench.baselines`; plus the whole main job (:func:`fastseg.api.run_job`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
from conftest import SIZE_PARAMS

from fastseg import api
from fastseg.bench import baselines
from fastseg.pipeline import order_features
from fastseg.rules.catalog import Catalog, SegmentDef
from fastseg.rules.compile import compile_catalog
from fastseg.scoring import RFMScorer
from fastseg.segmenting import evaluate

pytestmark = pytest.mark.benchmark

pd = pytest.importorskip("pandas")
duckdb = pytest.importorskip("duckdb")

#: (name, fastseg rule, SQL condition, pandas mask); Polars uses the compiled rule's expression.
SEGMENTS: tuple[tuple[str, str, str, Any], ...] = (
    ("top", "r_score >= 4 AND f_score >= 4", "r_score >= 4 AND f_score >= 4",
     lambda d: (d.r_score >= 4) & (d.f_score >= 4)),
    ("loyal", "frequency >= 3", "frequency >= 3", lambda d: d.frequency >= 3),
    ("one_timers", "frequency = 1", "frequency = 1", lambda d: d.frequency == 1),
    ("active", "recency_days <= 90", "recency_days <= 90", lambda d: d.recency_days <= 90),
    ("at_risk", "recency_days BETWEEN 91 AND 180", "recency_days BETWEEN 91 AND 180",
     lambda d: d.recency_days.between(91, 180)),
    ("lapsed", "recency_days > 365", "recency_days > 365", lambda d: d.recency_days > 365),
    ("high_spenders", "m_score = 5", "m_score = 5", lambda d: d.m_score == 5),
    ("big_ticket", "aov >= 150", "aov >= 150", lambda d: d.aov >= 150),
    ("growing", "orders_90d >= 2", "orders_90d >= 2", lambda d: d.orders_90d >= 2),
    ("declining", "orders_365d >= 3 AND orders_90d = 0", "orders_365d >= 3 AND orders_90d = 0",
     lambda d: (d.orders_365d >= 3) & (d.orders_90d == 0)),
    ("win_back", "m_score >= 4 AND frequency >= 2 AND recency_days > 180",
     "m_score >= 4 AND frequency >= 2 AND recency_days > 180",
     lambda d: (d.m_score >= 4) & (d.frequency >= 2) & (d.recency_days > 180)),
    ("hibernating", "rfm_group = 'hibernating'", "rfm_group = 'hibernating'",
     lambda d: d.rfm_group == "hibernating"),
)  # fmt: skip
SEG_COLUMNS = ["customer_id", "recency_days", "frequency", "monetary", "aov", "orders_90d",
               "orders_365d", "r_score", "f_score", "m_score", "rfm_group"]  # fmt: skip

_STATE: dict[int, dict[str, Any]] = {}


def _state(bench_data: Any, n: int) -> dict[str, Any]:
    """Inputs for every group at size ``n`` (one size kept in memory at a time)."""
    if n in _STATE:
        return _STATE[n]
    _STATE.clear()
    ds = bench_data(n)
    orders = pl.read_parquet(ds.orders)  # every column: the features use them
    of = order_features(orders)  # also compiles (or loads) the kernels outside the timings
    feats = of.frame
    scores = RFMScorer().fit_transform(feats)
    raw = orders.select("customer_id", "order_ts", "amount")
    rfm = baselines.rfm_polars(ds.orders)
    catalog = Catalog(tuple(SegmentDef(name, name, rule) for name, rule, _, _ in SEGMENTS))
    compiled = compile_catalog(catalog, scores.schema, of.as_of)
    seg_frame = scores.select(SEG_COLUMNS)
    evaluate(scores.head(1000), compiled)  # JIT / cache load outside the timings
    con = duckdb.connect()
    st = {
        "path": ds.orders,
        "orders": orders,
        "features": feats,
        "scores": scores,
        "compiled": compiled,
        "raw_pl": raw,
        "raw_pd": raw.to_pandas(),
        "rfm_pl": rfm.select("customer_id", "recency_days", "frequency", "monetary"),
        "rfm_pd": rfm.select("customer_id", "recency_days", "frequency", "monetary").to_pandas(),
        "seg_pl": seg_frame,
        "seg_pd": seg_frame.to_pandas(),
        "con": con,
        "n_customers": scores.height,
    }
    con.register("raw", raw.to_arrow())
    con.register("rfm", st["rfm_pl"].to_arrow())
    con.register("seg", seg_frame.to_arrow())
    _STATE[n] = st
    return st


def _info(st: dict[str, Any], n: int, **extra: Any) -> dict[str, Any]:
    return {"orders": n, "customers": st["n_customers"], **extra}


# ------------------------------------------------------------------------------ aggregation


def _agg_pandas(df: Any) -> Any:
    d = df.assign(order_day=df["order_ts"].dt.normalize(), is_order=df["amount"] >= 0)
    d["order_day"] = d["order_day"].where(d["is_order"])
    return d.groupby("customer_id").agg(
        last=("order_day", "max"), frequency=("is_order", "sum"), monetary=("amount", "sum")
    )


def _agg_polars(df: pl.DataFrame) -> pl.DataFrame:
    is_order = pl.col("amount") >= 0
    return df.group_by("customer_id").agg(
        pl.col("order_ts").dt.date().filter(is_order).max().alias("last"),
        is_order.sum().alias("frequency"),
        pl.col("amount").sum().alias("monetary"),
    )


_AGG_SQL = """
    SELECT customer_id, max(CAST(order_ts AS DATE)) FILTER (WHERE amount >= 0) AS last,
           count(*) FILTER (WHERE amount >= 0) AS frequency, sum(amount) AS monetary
    FROM raw GROUP BY customer_id
"""


@pytest.mark.parametrize("n", SIZE_PARAMS)
@pytest.mark.parametrize("impl", ["fastseg", "fastseg-parquet", "pandas", "polars", "duckdb"])
def test_aggregation(
    benchmark: Any, bench_data: Any, record_memory: Any, n: int, impl: str
) -> None:
    st = _state(bench_data, n)
    benchmark.group = f"aggregation-{n:.0e}"
    fn = {
        "fastseg": lambda: order_features(st["orders"]).frame,
        "fastseg-parquet": lambda: order_features(st["path"]).frame,
        "pandas": lambda: _agg_pandas(st["raw_pd"]),
        "polars": lambda: _agg_polars(st["raw_pl"]),
        "duckdb": lambda: st["con"].sql(_AGG_SQL).to_arrow_table(),
    }[impl]
    out = benchmark(fn)
    assert len(out) == st["n_customers"]
    record_memory(fn, **_info(st, n, impl=impl))


# ------------------------------------------------------------------------------ scoring


def _score_pandas(rfm: Any, k: int = 5) -> Any:
    out = rfm.copy()
    labels = list(range(1, k + 1))
    out["r_score"] = pd.qcut(
        out["recency_days"].rank(method="first", ascending=False), k, labels=labels
    )
    out["f_score"] = pd.qcut(out["frequency"].rank(method="first"), k, labels=labels)
    out["m_score"] = pd.qcut(out["monetary"].rank(method="first"), k, labels=labels)
    return out


def _score_polars(rfm: pl.DataFrame, k: int = 5) -> pl.DataFrame:
    def score(x: pl.Expr) -> pl.Expr:
        return (1 + (k * (x.rank("min") - 1)) // pl.len()).cast(pl.UInt8)

    return rfm.with_columns(
        score(-pl.col("recency_days")).alias("r_score"),
        score(pl.col("frequency")).alias("f_score"),
        score(pl.col("monetary")).alias("m_score"),
    )


_SCORE_SQL = """
    SELECT *, NTILE(5) OVER (ORDER BY recency_days DESC) AS r_score,
              NTILE(5) OVER (ORDER BY frequency) AS f_score,
              NTILE(5) OVER (ORDER BY monetary) AS m_score
    FROM rfm
"""


@pytest.mark.parametrize("n", SIZE_PARAMS)
@pytest.mark.parametrize("impl", ["fastseg", "pandas", "polars", "duckdb"])
def test_scoring(benchmark: Any, bench_data: Any, record_memory: Any, n: int, impl: str) -> None:
    st = _state(bench_data, n)
    benchmark.group = f"scoring-{n:.0e}"
    fn = {
        "fastseg": lambda: RFMScorer().fit(st["features"]).transform(st["features"]),
        "pandas": lambda: _score_pandas(st["rfm_pd"]),
        "polars": lambda: _score_polars(st["rfm_pl"]),
        "duckdb": lambda: st["con"].sql(_SCORE_SQL).to_arrow_table(),
    }[impl]
    out = benchmark(fn)
    assert len(out) == st["n_customers"]
    record_memory(fn, **_info(st, n, impl=impl))


# ------------------------------------------------------------------------------ segments


def _members_pandas(d: Any) -> Any:
    return pd.DataFrame({name: mask(d) for name, _, _, mask in SEGMENTS})


def _members_polars(scores: pl.DataFrame, compiled: Any) -> pl.DataFrame:
    from fastseg.segmenting import _program_exprs

    exprs = _program_exprs(compiled)
    return scores.select(
        "customer_id",
        *[e.fill_null(False).alias(s.name) for e, s in zip(exprs, compiled.segments, strict=True)],
    )


_MEMBERS_SQL = "SELECT customer_id, " + ", ".join(
    f"coalesce({cond}, false) AS {name}" for name, _, cond, _ in SEGMENTS
) + " FROM seg"  # fmt: skip


@pytest.mark.parametrize("n", SIZE_PARAMS)
@pytest.mark.parametrize("impl", ["fastseg", "pandas", "polars", "duckdb"])
def test_segments(benchmark: Any, bench_data: Any, record_memory: Any, n: int, impl: str) -> None:
    st = _state(bench_data, n)
    benchmark.group = f"segments-{n:.0e}"
    fn = {
        "fastseg": lambda: evaluate(st["scores"], st["compiled"]),
        "pandas": lambda: _members_pandas(st["seg_pd"]),
        "polars": lambda: _members_polars(st["seg_pl"], st["compiled"]),
        "duckdb": lambda: st["con"].sql(_MEMBERS_SQL).to_arrow_table(),
    }[impl]
    benchmark(fn)
    res = evaluate(st["scores"], st["compiled"])
    sizes = {
        "pandas": lambda: _members_pandas(st["seg_pd"]).sum().tolist(),
        "polars": lambda: (
            _members_polars(st["seg_pl"], st["compiled"]).drop("customer_id").sum().row(0)
        ),
        "duckdb": lambda: [
            int(np.sum(c)) for c in st["con"].sql(_MEMBERS_SQL).fetchnumpy().values()
        ][1:],
    }
    if impl in sizes:
        assert [int(s) for s in sizes[impl]()] == res.sizes.tolist()
    record_memory(fn, **_info(st, n, impl=impl, segments=len(SEGMENTS)))


# ------------------------------------------------------------------------------ overlap

_OVERLAP_SQL = "SELECT " + ", ".join(
    f"count(*) FILTER (WHERE m.{a} AND m.{b}) AS o_{i}_{j}"
    for i, (a, *_) in enumerate(SEGMENTS)
    for j, (b, *_) in enumerate(SEGMENTS)
    if j >= i
) + " FROM members m"  # fmt: skip


@pytest.mark.parametrize("n", SIZE_PARAMS)
@pytest.mark.parametrize("impl", ["fastseg", "pandas", "polars", "duckdb"])
def test_overlap(benchmark: Any, bench_data: Any, record_memory: Any, n: int, impl: str) -> None:
    st = _state(bench_data, n)
    benchmark.group = f"overlap-12-segments-{n:.0e}"  # bench_segments.py has overlap-{n}
    res = evaluate(st["scores"], st["compiled"])
    names = [s[0] for s in SEGMENTS]
    if impl == "fastseg":

        def fn() -> Any:
            res._cache.clear()  # overlaps() caches its result
            return res.overlaps()

    elif impl == "pandas":
        m = _members_pandas(st["seg_pd"]).to_numpy(dtype=np.int64)

        def fn() -> Any:
            return m.T @ m

    elif impl == "polars":
        wide = _members_polars(st["seg_pl"], st["compiled"])

        def fn() -> Any:
            return wide.select(
                [
                    (pl.col(a) & pl.col(b)).sum().alias(f"{a}|{b}")
                    for i, a in enumerate(names)
                    for b in names[i:]
                ]
            )

    else:
        st["con"].register("members", _members_polars(st["seg_pl"], st["compiled"]).to_arrow())

        def fn() -> Any:
            return st["con"].sql(_OVERLAP_SQL).fetchall()

    benchmark(fn)
    record_memory(fn, **_info(st, n, impl=impl, segments=len(SEGMENTS)))


# ------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("n", SIZE_PARAMS)
@pytest.mark.parametrize("impl", ["fastseg", "fastseg-main-job", "pandas", "polars", "duckdb"])
def test_end_to_end(benchmark: Any, bench_data: Any, record_memory: Any, n: int, impl: str) -> None:
    st = _state(bench_data, n)
    path = st["path"]
    benchmark.group = f"end-to-end-{n:.0e}"
    if impl == "fastseg":

        def fn() -> Any:
            return api.score(path)

    elif impl == "fastseg-main-job":

        def fn() -> Any:
            return api.run_job(path).segments

    else:

        def fn() -> Any:
            return baselines.run_recipe(impl, path)

    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    record_memory(fn, **_info(st, n, impl=impl))
