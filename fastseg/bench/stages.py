"""The runner behind ``fastseg bench``: measure the main job on this machine and size a bigger one.

For each size, :func:`run_bench` generates orders with the package's seeded generator into a
temporary Parquet folder (so reading is measured too) and runs the main job stage by stage in a
**fresh Python process** (``python -m fastseg.bench.stages job ...``), through the very functions
:func:`fastseg.api.run_job` calls; the stage names are run_job's own:

=============== ===================================================================================
stage           what runs
=============== ===================================================================================
rules           :func:`fastseg.api.load_rules`, ``required_aggregates`` and, after scoring,
                :func:`fastseg.rules.compile.compile_catalog`
orders          inside :func:`fastseg.api.score_job`: :func:`fastseg.pipeline.order_features`
                (the order rows stream from the file in batches into per-customer accumulators)
features        inside ``score_job``: joins of profiles, events and rule aggregates
scoring         inside ``score_job``: :meth:`RFMScorer.fit <fastseg.scoring.RFMScorer.fit>` +
                ``transform``
segments        :func:`fastseg.segmenting.evaluate`
summaries       ``SegmentResult.summary()``, ``overlaps()``, ``to_long()`` (timed apart; ``write``
                computes them again, as in ``run_job``, so they are not added to the total)
write           :func:`fastseg.api.write_outputs`
=============== ===================================================================================

A fresh process per size keeps peak memory (the process's maximum resident set) from carrying over
between sizes and makes the first call honest: it includes loading the compiled kernels from
Numba's cache (a tiny warm-up run first fills that cache; its time is reported as the compile
time). The first repetition is reported apart; "median" is the median of the other repetitions.

With ``baselines=True`` the recipes users write instead (:mod:`fastseg.bench.baselines`: pandas, plain
Polars, DuckDB SQL) run on the same file, each in its own fresh process, from the Parquet file to
R/F/M quintile scores; fastseg's "read→scores" time and peak memory are given as ratios to each.

Every run checks its own output (:func:`verify_scores`): features of a sample of customers against
a plain Polars ``group_by`` over the file, every customer's R/F/M score against
``1 + (k * (rank_min - 1)) // n`` computed with numpy over the scored population, and segment sizes
against plain Polars filters. A mismatch is an error.

Sizing: each stage's steady time and the growth of peak memory it causes are fitted by least
squares, non-negative, on ``a + b * driver``: the driver of time is orders for the stages that
read rows and customers for the others, the driver of memory is customers (orders stream through
in fixed-size batches); on ``a + b * orders + c * customers`` when the measured sizes vary the
customers-per-order ratio. With one size the model is proportional. :func:`run_bench`
predicts time and peak memory for ``target_orders`` / ``target_customers`` and says whether the job
fits in this machine's memory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastseg.errors import DataError, FastsegError, ParameterError

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "FORMAT",
    "STAGES",
    "BenchReport",
    "environment",
    "fit_cost",
    "parse_sizes",
    "peak_rss",
    "run_bench",
    "synthetic_rules",
    "verify_scores",
]

FORMAT = "fastseg.bench"
FORMAT_VERSION = 1
#: Stages of the main job as :func:`fastseg.api.run_job` names them, in the order they run
#: (``summaries`` is timed apart, see above). Stages the API adds or renames are reported too.
STAGES: tuple[str, ...] = (
    "rules",
    "orders",
    "features",
    "scoring",
    "segments",
    "summaries",
    "write",
)
#: Stages timed apart and not added to the job total (``write`` computes them again).
NOT_IN_TOTAL: tuple[str, ...] = ("summaries",)


def time_driver(stage: str) -> str:
    """What a stage's time grows with: orders for the stage that reads the order rows
    (``orders``; ``read`` in older versions), else customers."""
    return "orders" if "read" in stage or "order" in stage else "customers"


def memory_driver(stage: str) -> str:
    """What a stage's memory grows with: customers (orders stream through in fixed batches)."""
    return "customers"


HEADROOM = 1.25  # memory to ask for, relative to the predicted peak
OS_RESERVE = 1 << 30  # bytes left to the operating system and other processes
WARMUP_ORDERS = 20_000
MAX_ORDERS = 10**10

Progress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (0 if unknown).

    On Linux this is ``VmHWM`` from ``/proc/self/status``: unlike ``getrusage``'s ``ru_maxrss``,
    which a child process inherits from its parent across fork and exec, it starts afresh in a
    new process.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return int(getattr(psutil.Process().memory_info(), "peak_wset", 0))
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(ru if sys.platform == "darwin" else ru * 1024)


def _rss_now() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def parse_sizes(text: str | Sequence[int | float | str]) -> list[int]:
    """Order counts from ``"1e6,1e7,3e7"`` (or a list); each a whole number from 1 to 1e10.

    Examples
    --------
    >>> parse_sizes("1e6, 2_000_000")
    [1000000, 2000000]
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[int] = []
    for item in items:
        raw = str(item).strip().replace("_", "")
        if not raw:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value != int(value) or not 1 <= value <= MAX_ORDERS:
            msg = f"orders: expected whole numbers from 1 to 1e10 like 1e6,1e7, got {item!r}"
            raise ParameterError(msg)
        out.append(int(value))
    if not out:
        msg = "orders: give at least one size, e.g. --orders 1e6,1e7"
        raise ParameterError(msg)
    return sorted(set(out))


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    return float(s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _seconds(s: float) -> str:
    if s < 120:
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def environment() -> dict[str, Any]:
    """The machine and software the measurements ran on."""
    import importlib.metadata as md

    import psutil

    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu in (
                "",
                platform.machine(),
                platform.processor(),
            ):
                cpu = value.strip()
            if key.strip() == "flags" and not flags:
                have = set(value.split())
                flags = [f for f in ("avx2", "avx512f", "neon") if f in have]
    versions = {}
    for pkg in ("polars", "numba", "numpy", "pyarrow", "fastseg"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    import numba
    import polars as pl

    mem = psutil.virtual_memory()
    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_bytes": int(mem.total),
        "memory_available_bytes": int(mem.available),
        "os": platform.platform(),
        "python": platform.python_version(),
        **{f"{k}_version": v for k, v in versions.items()},
        "numba_threads": int(numba.get_num_threads()),
        "polars_threads": int(pl.thread_pool_size()),
        "numba_cache": os.environ.get("FASTSEG_NUMBA_CACHE", "1"),
    }


# --------------------------------------------------------------------------------------------
# a catalog of N segments over the built-in fields
# --------------------------------------------------------------------------------------------

#: (field, low, high, integer) — fields every orders-only scores frame of synthetic data has.
_RULE_FIELDS: tuple[tuple[str, float, float, bool], ...] = (
    ("recency_days", 7, 720, True),
    ("frequency", 1, 12, True),
    ("monetary", 20, 3000, False),
    ("aov", 20, 300, False),
    ("tenure_days", 30, 1000, True),
    ("orders_90d", 0, 4, True),
    ("orders_365d", 0, 8, True),
    ("revenue_365d", 0, 1500, False),
    ("refund_count", 0, 3, True),
    ("r_score", 1, 5, True),
    ("f_score", 1, 5, True),
    ("m_score", 1, 5, True),
    ("rfm_score", 3, 15, True),
    ("distinct_categories", 1, 6, True),
    ("discount_share", 0.05, 0.9, False),
)
_GROUP_NAMES = (
    "champions",
    "loyal_customers",
    "at_risk",
    "hibernating",
    "need_attention",
    "promising",
)


def synthetic_rules(n_segments: int, seed: int = 0) -> Any:
    """A :class:`~fastseg.rules.catalog.Catalog` of ``n_segments`` random rules over score fields.

    Each rule ANDs/ORs 2 to 4 comparisons (``>=``, ``<=``, ``BETWEEN``, sometimes ``NOT``,
    sometimes ``rfm_group IN (...)``) of the fields in ``_RULE_FIELDS``; about one in five also
    requires an earlier segment. Rules are real rule text, so compiling them is measured too.

    Examples
    --------
    >>> cat = synthetic_rules(3)
    >>> len(cat), cat.segments[0].name
    (3, 'seg0000')
    """
    import numpy as np

    from fastseg.rules.catalog import Catalog, SegmentDef

    if (
        isinstance(n_segments, bool)
        or not isinstance(n_segments, int)
        or not 1 <= n_segments <= 100_000
    ):
        msg = f"segments: expected 'builtin' or a whole number from 1 to 100000, got {n_segments!r}"
        raise ParameterError(msg)
    rng = np.random.default_rng(seed)
    segs = []
    for s in range(n_segments):
        parts = []
        for _ in range(int(rng.integers(2, 5))):
            if rng.random() < 0.08:
                picks = rng.choice(len(_GROUP_NAMES), size=int(rng.integers(1, 4)), replace=False)
                names = ", ".join(f"'{_GROUP_NAMES[i]}'" for i in sorted(picks))
                parts.append(f"rfm_group IN ({names})")
                continue
            name, lo, hi, is_int = _RULE_FIELDS[int(rng.integers(len(_RULE_FIELDS)))]
            a, b = sorted(rng.uniform(lo, hi, 2))
            fmt = (lambda v: str(round(v))) if is_int else (lambda v: f"{v:.2f}")
            kind = rng.random()
            if kind < 0.4:
                text = f"{name} >= {fmt(a)}"
            elif kind < 0.8:
                text = f"{name} <= {fmt(b)}"
            else:
                text = f"{name} BETWEEN {fmt(a)} AND {fmt(b)}"
            parts.append(f"NOT {text}" if rng.random() < 0.15 else text)
        rule = parts[0]
        for p in parts[1:]:
            rule = f"({rule}) {'AND' if rng.random() < 0.7 else 'OR'} {p}"
        if s and rng.random() < 0.2:
            rule = f"({rule}) AND segment(seg{int(rng.integers(s)):04d})"
        segs.append(SegmentDef(f"seg{s:04d}", f"synthetic segment {s}", rule))
    return Catalog(tuple(segs))


def _catalog(segments: str | int) -> Any:
    from fastseg import api

    if segments == "builtin":
        return api.load_rules(None, builtin=True)
    return api.load_rules(synthetic_rules(int(segments)), builtin=False)


def _check_segments(segments: str | int) -> str | int:
    if segments == "builtin":
        return segments
    try:
        n = int(str(segments).replace("_", ""))
    except ValueError:
        n = 0
    if not 1 <= n <= 100_000:
        msg = f"segments: expected 'builtin' or a whole number from 1 to 100000, got {segments!r}"
        raise ParameterError(msg)
    return n


# --------------------------------------------------------------------------------------------
# verification against plain numpy / Polars
# --------------------------------------------------------------------------------------------


def _rank_scores(values: Any, bins: int) -> Any:
    """``1 + (k * (rank_min - 1)) // n`` with numpy: ``rank_min - 1`` = #{values < x}."""
    import numpy as np

    n = values.shape[0]
    below = np.searchsorted(np.sort(values, kind="stable"), values, side="left").astype(np.int64)
    return (1 + (bins * below) // max(n, 1)).astype(np.uint8)


def verify_scores(
    scores: pl.DataFrame,
    source: str | os.PathLike[str],
    *,
    bins: int = 5,
    sample: int = 1000,
    seed: int = 0,
    segments: Any = None,
    compiled: Any = None,
    max_segments: int = 50,
) -> dict[str, Any]:
    """Check a scores frame (and segments) against plain numpy / Polars, independently of fastseg.

    * ``customers``: the customers scored are exactly the distinct ids of the usable order rows;
    * ``features``: for ``sample`` random customers, ``recency_days``, ``frequency``,
      ``monetary``, ``first_order_date`` and ``last_order_date`` equal a plain Polars
      ``group_by`` over the source file (an order is a row with amount >= 0, counted once per
      ``order_id``; the scoring date is the latest order date);
    * ``scores``: every customer's R/F/M score equals ``1 + (k * (rank_min - 1)) // n`` over the
      ``n`` customers with ``frequency >= 1`` (R ranks ``-recency_days``), null for the others;
    * ``segments`` (when a :class:`~fastseg.segmenting.SegmentResult` and the compiled catalog
      it came from are given): the sizes of the first ``max_segments`` segments equal plain
      Polars filters over the scores frame (each rule's atoms folded into one expression).

    Returns a JSON-ready dict with one flag per check, ``ok`` (all passed) and up to five
    ``mismatches`` described in words.
    """
    import numpy as np
    import polars as pl

    mismatches: list[str] = []
    lf = pl.scan_parquet(source)
    names = lf.collect_schema().names()
    day = pl.col("order_ts").cast(pl.Date) if "order_ts" in names else pl.col("order_date")
    usable = (
        pl.col("customer_id").is_not_null()
        & day.is_not_null()
        & pl.col("amount").is_not_null()
        & pl.col("amount").is_finite()
    )
    lf = lf.filter(usable)
    stats = lf.select(
        day.max().alias("as_of"), pl.col("customer_id").n_unique().alias("n")
    ).collect()
    as_of, n_ref = stats["as_of"][0], int(stats["n"][0])
    ok_customers = n_ref == scores.height
    if not ok_customers:
        mismatches.append(
            f"{scores.height:,} customers scored but the file has {n_ref:,} distinct ids"
        )

    # features of a sample, from the file with a plain group_by
    rng = np.random.default_rng(seed)
    pick = rng.choice(scores.height, size=min(sample, scores.height), replace=False)
    got = scores[np.sort(pick)].select(
        "customer_id",
        "recency_days",
        "frequency",
        "monetary",
        "first_order_date",
        "last_order_date",
    )
    nonneg = pl.col("amount") >= 0
    freq = pl.col("order_id").filter(nonneg).n_unique() if "order_id" in names else nonneg.sum()
    ref = (
        lf.filter(pl.col("customer_id").is_in(got["customer_id"].implode()))
        .with_columns(day.alias("_day"))
        .group_by("customer_id")
        .agg(
            freq.cast(pl.Int64).alias("frequency_ref"),
            pl.col("amount").sum().alias("monetary_ref"),
            pl.col("_day").filter(nonneg).min().alias("first_ref"),
            pl.col("_day").filter(nonneg).max().alias("last_ref"),
        )
        .with_columns((pl.lit(as_of) - pl.col("last_ref")).dt.total_days().alias("recency_ref"))
        .collect()
    )
    both = got.join(ref, on="customer_id", how="full", coalesce=True)
    money_ok = (pl.col("monetary") - pl.col("monetary_ref")).abs() <= 1e-6 + 1e-9 * pl.col(
        "monetary_ref"
    ).abs()
    bad = both.filter(
        ~(
            pl.col("recency_days").eq_missing(pl.col("recency_ref"))
            & pl.col("frequency").eq_missing(pl.col("frequency_ref"))
            & pl.col("first_order_date").eq_missing(pl.col("first_ref"))
            & pl.col("last_order_date").eq_missing(pl.col("last_ref"))
            & money_ok.fill_null(False)
        )
    )
    ok_features = bad.height == 0
    for row in bad.head(3).iter_rows(named=True):
        mismatches.append(
            f"features of customer {row['customer_id']!r}: fastseg {row} differ from the plain group_by"
        )

    # every customer's scores, from the formula over the full scored population
    scored = (scores["frequency"].fill_null(0) >= 1).to_numpy()
    ok_scores = True
    for col, values in (
        ("r_score", -scores["recency_days"].fill_null(0).cast(pl.Int64).to_numpy()),
        ("f_score", scores["frequency"].fill_null(0).cast(pl.Int64).to_numpy()),
        ("m_score", scores["monetary"].fill_null(0.0).cast(pl.Float64).to_numpy()),
    ):
        expected = np.zeros(scores.height, np.uint8)
        expected[scored] = _rank_scores(values[scored], bins)
        have = scores[col].fill_null(0).cast(pl.UInt8).to_numpy()
        wrong = np.flatnonzero(have != expected)
        if wrong.size:
            ok_scores = False
            i = int(wrong[0])
            mismatches.append(
                f"{col}: {wrong.size:,} customers differ from 1 + (k*(rank_min-1))//n "
                f"(first: customer {scores['customer_id'][i]!r}, fastseg {int(have[i])}, reference {int(expected[i])})"
            )

    out: dict[str, Any] = {
        "sample": int(got.height),
        "customers": ok_customers,
        "features": ok_features,
        "scores": ok_scores,
        "scores_checked": int(scores.height),
    }
    if segments is not None and compiled is not None:
        from fastseg.segmenting import _program_exprs

        exprs = _program_exprs(compiled)[:max_segments]
        sizes = (
            scores.select(
                [e.fill_null(False).sum().alias(f"s{i}") for i, e in enumerate(exprs)]
            ).row(0)
            if exprs
            else ()
        )
        wrong_seg = [i for i, s in enumerate(sizes) if int(s) != int(segments.sizes[i])]
        out["segments_checked"] = len(exprs)
        out["segments"] = not wrong_seg
        for i in wrong_seg[:2]:
            mismatches.append(
                f"segment {segments.names[i]}: {int(segments.sizes[i]):,} members, "
                f"a plain Polars filter gives {int(sizes[i]):,}"
            )
    out["ok"] = all(
        v for k, v in out.items() if k in ("customers", "features", "scores", "segments")
    )
    out["mismatches"] = mismatches[:5]
    return out


# --------------------------------------------------------------------------------------------
# the worker: one size, in a fresh process
# --------------------------------------------------------------------------------------------


class _Meter:
    """Stage timer and peak-memory recorder for one repetition."""

    def __init__(self, rep: int, emit: Callable[[str], None]) -> None:
        self.rep = rep
        self.emit = emit
        self.seconds: dict[str, float] = {}
        self.peak_after: dict[str, int] = {}
        self.rss_after: dict[str, int] = {}
        self.sequence: list[tuple[str, int]] = []  # (stage, peak RSS after it), in running order
        self.score_stages: list[str] = []  # stages run inside api.score_job: read→scores

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        self.peak_after[name] = peak_rss()
        self.sequence.append((name, self.peak_after[name]))
        self.rss_after[name] = _rss_now()
        self.emit(f"@stage {self.rep} {name}")


def _watch(meter: _Meter) -> Any:
    """An :class:`fastseg.api.Stopwatch` whose stages are recorded by ``meter``."""
    from fastseg import api

    class Watch(api.Stopwatch):
        @contextlib.contextmanager
        def stage(self, name: str, **kwargs: Any) -> Iterator[Any]:
            if name not in meter.score_stages:
                meter.score_stages.append(name)
            with meter.stage(name), super().stage(name, **kwargs) as st:
                yield st
            self.seconds[name] = meter.seconds[name]

    return Watch()


def _job_once(path: str, segments: str | int, out_dir: Path, meter: _Meter) -> tuple[Any, Any, Any]:
    """One main job, stage by stage, with the functions :func:`fastseg.api.run_job` calls.

    Reading, features and scoring run inside :func:`fastseg.api.score_job` itself (its stopwatch
    is this meter), so the bench measures exactly the code a ``fastseg run`` executes.
    """
    from fastseg import api
    from fastseg.rules.compile import compile_catalog, required_aggregates
    from fastseg.segmenting import evaluate

    with meter.stage("rules"):
        catalog = _catalog(segments)
        specs = required_aggregates(catalog)
    res = api.score_job(path, aggregates=specs, stopwatch=_watch(meter))
    with meter.stage("rules"):
        compiled = compile_catalog(
            catalog, res.scores.schema, res.as_of, missing="error", sources=res.sources
        )
    with meter.stage("segments"):
        seg = evaluate(res.scores, compiled)
    with meter.stage("summaries"):
        seg.summary()
        seg.overlaps()
        seg.to_long()
    getattr(seg, "_cache", {}).clear()  # write_outputs computes what run_job would compute
    with meter.stage("write"):
        result = api.RunResult(
            **{f: getattr(res, f) for f in res.__dataclass_fields__}, segments=seg
        )
        result.timings = dict(meter.seconds)
        api.write_outputs(result, out_dir)
    return res.scores, compiled, seg


def _job_worker(args: Any) -> dict[str, Any]:
    emit = _emitter()
    rss_start = _rss_now()
    t0 = time.perf_counter()
    import numba
    import polars as pl

    import fastseg.api
    import fastseg.features
    import fastseg.segmenting  # noqa: F401  (imports are measured apart from the stages)

    imports_s = time.perf_counter() - t0
    rss_imports = _rss_now()
    peak_imports = peak_rss()
    segments = _check_segments(args.segments)
    out_dir = Path(args.out_dir)
    reps: list[dict[str, Any]] = []
    keep: tuple[Any, Any, Any] | None = None
    for rep in range(args.repeat):
        meter = _Meter(rep, emit)
        last = rep == args.repeat - 1
        res = _job_once(args.data, segments, out_dir, meter)
        reps.append(
            {
                "seconds": meter.seconds,
                "score_stages": meter.score_stages,
                "peak_after": meter.peak_after,
                "sequence": meter.sequence,
                "rss_after": meter.rss_after,
                "customers": res[0].height,
                "segments": len(res[2].names),
                "skipped": len(res[2].skipped),
            }
        )
        if last:
            keep = res
        del res
        gc.collect()
    assert keep is not None
    scores, compiled, seg = keep
    verification = verify_scores(
        scores, args.data, sample=args.sample, seed=args.seed, segments=seg, compiled=compiled
    )
    emit("@stage -1 verify")
    return {
        "imports_seconds": imports_s,
        "rss_start_bytes": rss_start,
        "rss_after_imports_bytes": rss_imports,
        "peak_after_imports_bytes": peak_imports,
        "peak_rss_bytes": peak_rss(),
        "repetitions": reps,
        "verification": verification,
        "numba_threads": int(numba.get_num_threads()),
        "polars_threads": int(pl.thread_pool_size()),
    }


def _baseline_worker(args: Any) -> dict[str, Any]:
    from fastseg.bench import baselines

    emit = _emitter()
    t0 = time.perf_counter()
    baselines.require(args.recipe)
    imports_s = time.perf_counter() - t0
    rss_imports = _rss_now()
    runs: list[float] = []
    customers = 0
    for rep in range(args.repeat):
        t = time.perf_counter()
        out = baselines.run_recipe(args.recipe, args.data)
        runs.append(time.perf_counter() - t)
        customers = len(out)
        del out
        gc.collect()
        emit(f"@baseline {rep} {args.recipe}")
    return {
        "recipe": args.recipe,
        "imports_seconds": imports_s,
        "rss_after_imports_bytes": rss_imports,
        "runs_s": runs,
        "customers": customers,
        "peak_rss_bytes": peak_rss(),
    }


def _emitter() -> Callable[[str], None]:
    def emit(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    return emit


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m fastseg.bench.stages job|baseline ...``: the worker processes of :func:`run_bench`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m fastseg.bench.stages", description="fastseg bench worker"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    job = sub.add_parser("job", help="time the main job on one Parquet file")
    job.add_argument("--data", required=True)
    job.add_argument("--out-dir", required=True)
    job.add_argument("--segments", default="builtin")
    job.add_argument("--repeat", type=int, default=3)
    job.add_argument("--sample", type=int, default=1000)
    job.add_argument("--seed", type=int, default=0)
    job.add_argument("--result", required=True)
    base = sub.add_parser("baseline", help="time one baseline recipe on one Parquet file")
    base.add_argument("--recipe", required=True)
    base.add_argument("--data", required=True)
    base.add_argument("--repeat", type=int, default=3)
    base.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    try:
        out = _job_worker(args) if args.cmd == "job" else _baseline_worker(args)
    except FastsegError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    Path(args.result).write_text(json.dumps(out, default=str))
    return 0


# --------------------------------------------------------------------------------------------
# the parent: generate, launch workers, collect
# --------------------------------------------------------------------------------------------


def _launch(cmd: list[str], on_line: Callable[[str], None], what: str) -> None:
    import threading

    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    err_lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "fastseg.bench.stages", *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        stderr = proc.stderr
        thread = threading.Thread(target=lambda: err_lines.extend(stderr), daemon=True)
        thread.start()
        try:
            for line in proc.stdout:
                if line.startswith("@"):
                    on_line(line.strip())
            code = proc.wait()
        except BaseException:
            proc.kill()
            raise
        finally:
            thread.join(timeout=5)
    if code != 0:
        tail = [ln.strip() for ln in err_lines if ln.strip()]
        if code in (-9, 137):
            msg = (
                f"{what}: the worker process was killed (out of memory?); measure smaller sizes "
                "and read the sizing prediction instead"
            )
        else:
            last = tail[-1] if tail else f"exit status {code}"
            msg = f"{what}: the worker process failed: {last}"
        raise FastsegError(msg)


def _stage_summary(reps: list[dict[str, Any]], name: str) -> dict[str, Any]:
    runs = [r["seconds"].get(name, 0.0) for r in reps]
    steady = runs[1:] or runs
    return {"first_s": runs[0], "median_s": _median(steady), "runs_s": runs}


def _stage_names(first: dict[str, Any]) -> list[str]:
    """Stages in the order they first ran."""
    return list(dict.fromkeys(name for name, _ in first["sequence"]))


def _summarize_job(raw: dict[str, Any], n_orders: int) -> dict[str, Any]:
    reps = raw["repetitions"]
    first = reps[0]
    n_cust = int(first["customers"])
    names = _stage_names(first)
    stages: dict[str, Any] = {}
    prev_peak = int(raw["peak_after_imports_bytes"])
    increases = dict.fromkeys(names, 0)
    for s, peak in first["sequence"]:  # the growth of the process's peak in each stage
        increases[s] += max(0, int(peak) - prev_peak)
        prev_peak = max(prev_peak, int(peak))
    for s in names:
        st = _stage_summary(reps, s)
        med = st["median_s"]
        st["orders_per_s"] = n_orders / med if med > 0 else None
        st["customers_per_s"] = n_cust / med if med > 0 else None
        st["peak_rss_bytes"] = int(first["peak_after"].get(s, 0))
        st["peak_increase_bytes"] = increases[s]
        st["time_driver"] = time_driver(s)
        st["memory_driver"] = memory_driver(s)
        st["in_total"] = s not in NOT_IN_TOTAL
        if s == "summaries":
            st["note"] = "computed again inside write (write_outputs), as in run_job"
        stages[s] = st

    def total(names: Sequence[str]) -> dict[str, Any]:
        runs = [sum(r["seconds"].get(s, 0.0) for s in names) for r in reps]
        med = _median(runs[1:] or runs)
        return {
            "first_s": runs[0],
            "median_s": med,
            "runs_s": runs,
            "orders_per_s": n_orders / med if med > 0 else None,
            "customers_per_s": n_cust / med if med > 0 else None,
        }

    score_stages = [s for s in names if s in first["score_stages"]]
    to_scores = total(score_stages)
    to_scores["stages"] = score_stages
    to_scores["peak_rss_bytes"] = max(int(first["peak_after"][s]) for s in score_stages)
    job = total([s for s in names if s not in NOT_IN_TOTAL])
    job["peak_rss_bytes"] = int(raw["peak_rss_bytes"])
    return {
        "orders": n_orders,
        "customers": n_cust,
        "segments": int(first["segments"]),
        "segments_skipped": int(first["skipped"]),
        "repeat": len(reps),
        "steady_from": "repetitions 2.." if len(reps) > 1 else "the first repetition (repeat 1)",
        "imports_s": raw["imports_seconds"],
        "rss_after_imports_bytes": int(raw["rss_after_imports_bytes"]),
        "peak_rss_bytes": int(raw["peak_rss_bytes"]),
        "stages": stages,
        "read_to_scores": to_scores,
        "job": job,
        "verification": raw["verification"],
        "numba_threads": raw["numba_threads"],
        "polars_threads": raw["polars_threads"],
    }


# --------------------------------------------------------------------------------------------
# sizing
# --------------------------------------------------------------------------------------------


def fit_cost(
    points: Sequence[tuple[float, float, float]], driver: str = "orders"
) -> dict[str, Any]:
    """Fit ``y = a + b * orders + c * customers`` with a, b, c >= 0 by least squares.

    ``points`` are ``(orders, customers, y)``. When the points do not vary the customers-per-order
    ratio (orders and customers cannot be told apart), only ``a + b * driver`` is fitted; with one
    point (or one size) the model is proportional, ``y = b * driver``. Among the non-negative
    least-squares solutions over the allowed terms, the one with the smallest squared error wins.

    Returns ``{"intercept", "per_order", "per_customer", "kind", "max_rel_error"}``.

    Examples
    --------
    >>> m = fit_cost([(1e6, 1e5, 1.5), (2e6, 2e5, 2.5)])
    >>> round(m["intercept"], 6), round(m["per_order"] * 1e6, 6), m["kind"]
    (0.5, 1.0, 'a + b*orders')
    """
    import numpy as np

    pts = [(float(o), float(c), float(y)) for o, c, y in points]
    if not pts:
        msg = "fit_cost needs at least one measured point"
        raise ParameterError(msg)
    o = np.array([p[0] for p in pts])
    c = np.array([p[1] for p in pts])
    y = np.array([p[2] for p in pts])
    columns = {"intercept": np.ones_like(o), "per_order": o, "per_customer": c}
    dkey = "per_order" if driver == "orders" else "per_customer"
    distinct = {(p[0], p[1]) for p in pts}
    ratios = {round(p[1] / p[0], 9) for p in pts if p[0] > 0}
    if len(distinct) == 1:
        allowed = [[dkey]]
        kind = f"proportional: b*{driver} (one size measured)"
    elif len(ratios) <= 1 or len(distinct) < 3:
        allowed = [["intercept", dkey], [dkey], ["intercept"]]
        kind = f"a + b*{driver}"
    else:
        names = ["intercept", "per_order", "per_customer"]
        allowed = [list(s) for r in (3, 2, 1) for s in itertools.combinations(names, r)]
        kind = "a + b*orders + c*customers"
    best: tuple[float, dict[str, float]] | None = None
    for terms in allowed:
        design = np.stack([columns[t] for t in terms], axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        if (coef < 0).any():
            continue
        sse = float(((design @ coef - y) ** 2).sum())
        if best is None or sse < best[0] * (1 - 1e-9) - 1e-30:
            best = (sse, dict(zip(terms, coef.tolist(), strict=True)))
    if best is None:  # every fit wanted a negative term: fall back to the mean
        best = (0.0, {"intercept": float(y.mean())})
    model = {"intercept": 0.0, "per_order": 0.0, "per_customer": 0.0, **best[1]}
    pred = model["intercept"] + model["per_order"] * o + model["per_customer"] * c
    scale = max(float(np.abs(y).max()), 1e-12)
    rel = np.abs(pred - y) / np.maximum(
        np.abs(y), 0.01 * scale
    )  # tiny values: vs 1% of the largest
    model["kind"] = (
        kind
        if len(best[1]) > 1 or len(distinct) == 1
        else f"{kind} (fitted as {'+'.join(best[1])})"
    )
    model["max_rel_error"] = float(rel.max()) if len(pts) > 1 else None
    return model


def _predict(model: dict[str, Any], orders: float, customers: float) -> float:
    return float(
        model["intercept"] + model["per_order"] * orders + model["per_customer"] * customers
    )


def _round_up_memory(n: float) -> int:
    """The next common machine memory size (GiB) that holds ``n`` bytes."""
    sizes = [
        4,
        8,
        16,
        24,
        32,
        48,
        64,
        96,
        128,
        192,
        256,
        384,
        512,
        768,
        1024,
        1536,
        2048,
        3072,
        4096,
    ]
    gib = n / 2**30
    for s in sizes:
        if s >= gib:
            return s
    return int(math.ceil(gib / 1024) * 1024)


def _sizing(
    runs: list[dict[str, Any]],
    env: dict[str, Any],
    target_orders: int | None,
    target_customers: int | None,
    ratio: float,
) -> dict[str, Any]:
    names = list(dict.fromkeys(s for r in runs for s in r["stages"]))

    def points(s: str, key: str) -> list[tuple[float, float, float]]:
        return [
            (r["orders"], r["customers"], r["stages"][s][key]) for r in runs if s in r["stages"]
        ]

    time_models = {s: fit_cost(points(s, "median_s"), time_driver(s)) for s in names}
    base = _median([r["rss_after_imports_bytes"] for r in runs])
    mem_models = {s: fit_cost(points(s, "peak_increase_bytes"), memory_driver(s)) for s in names}
    sizes = sorted({r["orders"] for r in runs})
    notes = []
    kinds = {m["kind"] for m in time_models.values()}
    if len(sizes) == 1:
        notes.append(
            "one size measured: the model is proportional (cost = measured cost x target / measured); "
            "measure two or more sizes (e.g. --orders 1e6,1e7) for a fixed cost plus growth"
        )
    elif not any("customers" in k and "orders" in k for k in kinds):
        notes.append(
            "customers grew in proportion to orders in every measurement, so each stage is fitted on "
            "what drives it: the time of the stages that read orders on orders, the other stages' "
            "time and every stage's memory on customers (the orders stream through in fixed-size "
            "batches)"
        )
    if any(r["repeat"] == 1 for r in runs):
        notes.append(
            "--repeat 1: the times include loading the compiled kernels (the first call); "
            "use --repeat 3 for steady times"
        )
    notes.append(
        "peak memory = memory after imports + the growth of the peak in each stage, each fitted "
        "the same way; time = the sum of the stages' steady (median) times"
    )
    out: dict[str, Any] = {
        "time_models": time_models,
        "memory_models": mem_models,
        "rss_after_imports_bytes": base,
        "notes": notes,
    }
    if target_orders is None and target_customers is None:
        return out
    t_orders = float(
        target_orders if target_orders is not None else round(target_customers / ratio)
    )  # type: ignore[operator]
    t_cust = float(target_customers if target_customers is not None else round(t_orders * ratio))
    if target_customers is None:
        notes.append(
            f"--target-customers not given: assumed {t_cust:,.0f} ({ratio:g} per order, as measured)"
        )
    stage_time = {s: max(0.0, _predict(m, t_orders, t_cust)) for s, m in time_models.items()}
    last = max(runs, key=lambda r: r["orders"])
    job_time = sum(stage_time[s] for s in names if s not in NOT_IN_TOTAL)
    to_scores = sum(stage_time[s] for s in last["read_to_scores"]["stages"])
    peak = base + sum(max(0.0, _predict(mem_models[s], t_orders, t_cust)) for s in names)
    need = peak * HEADROOM + OS_RESERVE
    total_mem = float(env["memory_bytes"])
    fits = need <= total_mem
    largest = max(r["orders"] for r in runs)
    extrapolation = t_orders / largest
    target: dict[str, Any] = {
        "orders": int(t_orders),
        "customers": int(t_cust),
        "stage_seconds": stage_time,
        "job_seconds": job_time,
        "read_to_scores_seconds": to_scores,
        "peak_rss_bytes": int(peak),
        "memory_needed_bytes": int(need),
        "machine_memory_gib": _round_up_memory(need),
        "fits_this_machine": fits,
        "this_machine_memory_bytes": int(total_mem),
        "extrapolation_factor": extrapolation,
    }
    lines = [
        f"predicted on this machine for {t_orders:,.0f} orders and {t_cust:,.0f} customers: "
        f"main job {_seconds(job_time)} (read→scores {_seconds(to_scores)}), peak memory {_gib(peak)}",
        f"memory to hold the job: {_gib(need)} (peak x {HEADROOM} + 1 GiB for the system) — "
        f"a machine with at least {_round_up_memory(need)} GiB",
    ]
    if extrapolation > 10:
        lines.append(
            f"the target is {extrapolation:,.0f}x the largest measured size: expect the error to grow "
            "with the distance (measure a larger size if you can)"
        )
    if fits:
        lines.append(f"it fits in this machine's {_gib(total_mem)} of memory")
    else:
        per_batch = max(1.0, peak - base)
        room = max(total_mem / HEADROOM - OS_RESERVE - base, total_mem * 0.1)
        batches = max(2, math.ceil(per_batch / room))
        lines.append(
            f"it does NOT fit in this machine's {_gib(total_mem)} of memory in one pass. fastseg "
            f"does it in customer buckets on disk (--memory-limit, default 75% of the available "
            f"memory: about {batches}+ buckets here, the same results, a few times the time; "
            f"free disk for about the rows' size under --tmp-dir); or a machine with "
            f">= {_round_up_memory(need)} GiB for one pass; or Spark (fastseg.spark, "
            "docs/spark.md) across machines"
        )
        target["batches"] = batches
    target["lines"] = lines
    out["target"] = target
    return out


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


@dataclass
class BenchReport:
    """What :func:`run_bench` measured; ``data`` is the JSON document (see ``docs/performance.md``)."""

    data: dict[str, Any]
    json_path: Path | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        """True when every size's output matched the reference."""
        return bool(self.data.get("verified"))

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def stage_rows(self) -> list[list[str]]:
        """Rows of the stage table: orders, stage, first, median, M orders/s, M customers/s, peak RSS."""
        rows = []
        for run in self.data["runs"]:
            label = f"{run['orders']:,}"
            for s, st in run["stages"].items():
                name = s + (" (in write)" if st.get("in_total") is False else "")
                rows.append(
                    [
                        label,
                        name,
                        f"{st['first_s']:.3f}",
                        f"{st['median_s']:.3f}",
                        _rate(st["orders_per_s"]),
                        _rate(st["customers_per_s"]),
                        _gib(st["peak_rss_bytes"]),
                    ]
                )
                label = ""
            for key, name in (("read_to_scores", "read→scores"), ("job", "main job total")):
                t = run[key]
                rows.append(
                    [
                        "",
                        name,
                        f"{t['first_s']:.3f}",
                        f"{t['median_s']:.3f}",
                        _rate(t["orders_per_s"]),
                        _rate(t["customers_per_s"]),
                        _gib(t["peak_rss_bytes"]),
                    ]
                )
        return rows

    STAGE_HEADERS = ("orders", "stage", "first s", "median s", "M orders/s", "M cust/s", "peak RSS")
    BASELINE_HEADERS = (
        "orders",
        "read→scores",
        "first s",
        "median s",
        "peak RSS",
        "fastseg speed",
        "fastseg memory",
    )

    def baseline_rows(self) -> list[list[str]]:
        """Rows of the baseline table (empty without baselines)."""
        rows = []
        for run in self.data["runs"]:
            if not run.get("baselines"):
                continue
            fs = run["read_to_scores"]
            rows.append(
                [
                    f"{run['orders']:,}",
                    "fastseg",
                    f"{fs['first_s']:.3f}",
                    f"{fs['median_s']:.3f}",
                    _gib(fs["peak_rss_bytes"]),
                    "",
                    "",
                ]
            )
            for name, b in run["baselines"].items():
                rows.append(
                    [
                        "",
                        name,
                        f"{b['first_s']:.3f}",
                        f"{b['median_s']:.3f}",
                        _gib(b["peak_rss_bytes"]),
                        f"{b['speedup']:.1f}x faster"
                        if b["speedup"] >= 1
                        else f"{1 / b['speedup']:.1f}x slower",
                        f"{b['memory_ratio']:.2f}x",
                    ]
                )
        return rows

    def summary_lines(self) -> list[str]:
        """Plain-text lines: environment, verification, sizing."""
        d = self.data
        env = d["environment"]
        lines = [
            f"machine: {env['cpu']}, {env['cores_logical']} logical cores, {_gib(env['memory_bytes'])}; "
            f"{env['os']}; Python {env['python']}, Polars {env['polars_version']}, Numba {env['numba_version']} "
            f"({env['numba_threads']} threads), fastseg {env['fastseg_version']}",
        ]
        if d.get("warmup"):
            lines.append(
                f"first run ever (kernel compile or cache load, {d['warmup']['orders']:,} orders): "
                f"{d['warmup']['first_call_s']:.1f} s; later processes load the cached kernels"
            )
        checks = []
        for run in d["runs"]:
            v = run["verification"]
            checks.append(
                f"{run['orders']:,} orders: {'ok' if v['ok'] else 'MISMATCH'} "
                f"({v['sample']} sampled customers' features, {v['scores_checked']:,} customers' scores"
                + (f", {v['segments_checked']} segment sizes" if "segments_checked" in v else "")
                + ")"
            )
        lines.append("verified against plain numpy/Polars: " + "; ".join(checks))
        sizing = d["sizing"]
        lines.extend(f"sizing: {n}" for n in sizing["notes"])
        if "target" in sizing:
            lines.extend(sizing["target"]["lines"])
        return lines


def _rate(per_s: float | None) -> str:
    """Millions per second; blank when the stage took under a millisecond (too short to rate)."""
    if per_s is None or per_s > 1e3 * 1e6:  # > 1e9/s: the stage is timer noise
        return ""
    return f"{per_s / 1e6:.2f}"


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------


def run_bench(
    orders: Sequence[int] | str = (1_000_000, 10_000_000, 30_000_000),
    *,
    customers_per_order: float = 0.1,
    segments: str | int = "builtin",
    repeat: int = 3,
    target_orders: int | None = None,
    target_customers: int | None = None,
    baselines: bool = False,
    json_path: str | os.PathLike[str] | None = None,
    seed: int = 0,
    sample: int = 1000,
    workdir: str | os.PathLike[str] | None = None,
    warmup: bool = True,
    progress: Progress | None = None,
) -> BenchReport:
    """Measure the main job on this machine, stage by stage, and size a machine for a target.

    Parameters
    ----------
    orders
        Order counts to measure (``"1e6,1e7"`` or a list), each in a fresh process.
    customers_per_order
        Customers generated per order (0 < x <= 1); prospects without orders are not in the
        orders file, so the scored customers are somewhat fewer.
    segments
        ``"builtin"`` (the built-in catalog; segments needing profiles or events are skipped
        because the data has only orders) or a number N of synthetic rules
        (:func:`synthetic_rules`).
    repeat
        Runs per size (>= 1). The first is reported apart (it loads the compiled kernels); the
        median is over the others.
    target_orders, target_customers
        Predict time and memory for this size (customers default to ``customers_per_order``).
    baselines
        Also time the pandas, Polars and DuckDB recipes (:mod:`fastseg.bench.baselines`).
    json_path
        Write the report as JSON here (atomically).
    seed, sample
        Seed of the generated data; customers sampled for the feature check.
    workdir
        Folder for the temporary data (default: the system's temporary folder).
    warmup
        Run a tiny job first so the kernels are compiled and cached before the measurements.
    progress
        Called as ``progress(done, total, label)``.

    Returns
    -------
    BenchReport

    Raises
    ------
    DataError
        The output did not match the reference (after the JSON is written).
    ParameterError
        A parameter is out of range.
    """
    from fastseg import synthetic

    sizes = parse_sizes(orders)
    if not isinstance(customers_per_order, int | float) or not 0 < customers_per_order <= 1:
        msg = f"customers_per_order must be in (0, 1], got {customers_per_order!r}"
        raise ParameterError(msg)
    seg_param = _check_segments(segments)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= 100:
        msg = f"repeat must be a whole number from 1 to 100, got {repeat!r}"
        raise ParameterError(msg)
    for name, value in (("target_orders", target_orders), ("target_customers", target_customers)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            msg = f"{name} must be a positive whole number, got {value!r}"
            raise ParameterError(msg)
    if sample < 1:
        msg = f"sample must be at least 1, got {sample}"
        raise ParameterError(msg)
    recipes: tuple[str, ...] = ()
    if baselines:
        from fastseg.bench import baselines as bl

        for r in bl.RECIPES:
            bl.require(r)  # fail now, before generating data, if pandas/duckdb are missing
        recipes = bl.RECIPES

    per_size = 1 + repeat * (len(STAGES) + 1) + 1 + len(recipes) * repeat  # rules runs twice
    total = (1 if warmup else 0) + per_size * len(sizes)
    done = 0

    def step(label: str, n: int = 1) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(min(done, total), total, label)

    env = environment()
    runs: list[dict[str, Any]] = []
    warm: dict[str, Any] | None = None
    base_dir = Path(workdir) if workdir is not None else None
    if base_dir is not None:
        base_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fastseg-bench-", dir=base_dir) as tmp:
        root = Path(tmp)
        if warmup:
            if progress is not None:
                progress(done, total, "warm-up: compiling or loading the kernels")
            ds = synthetic.generate(
                root / "warmup",
                orders=WARMUP_ORDERS,
                seed=seed,
                with_customers=False,
                with_events=False,
            )
            raw = _run_job_worker(
                ds.orders,
                root / "warmup" / "out",
                seg_param,
                1,
                sample,
                seed,
                lambda line: None,
                "warm-up",
            )
            warm = {
                "orders": WARMUP_ORDERS,
                "first_call_s": sum(raw["repetitions"][0]["seconds"].values()),
            }
            step("warm-up done")
        for n in sizes:
            folder = root / f"orders_{n}"
            n_cust = max(1, round(n * customers_per_order))
            if progress is not None:
                progress(done, total, f"{n:,} orders: generating data")
            ds = synthetic.generate(
                folder,
                orders=n,
                customers=n_cust,
                seed=seed,
                with_customers=False,
                with_events=False,
            )
            step(f"{n:,} orders: data generated")

            def on_line(line: str, n: int = n) -> None:
                parts = line.split()
                if parts[0] == "@stage" and parts[1] != "-1":
                    step(f"{n:,} orders: run {int(parts[1]) + 1}/{repeat}, {parts[2]}")
                elif parts[0] == "@stage":
                    step(f"{n:,} orders: verified")
                elif parts[0] == "@baseline":
                    step(f"{n:,} orders: {parts[2]} run {int(parts[1]) + 1}/{repeat}")

            raw = _run_job_worker(
                ds.orders, folder / "out", seg_param, repeat, sample, seed, on_line, f"{n:,} orders"
            )
            run = _summarize_job(raw, n)
            run["customers_generated"] = ds.n_customers
            run["generate_s"] = ds.seconds
            run["parquet_bytes"] = ds.orders.stat().st_size
            if recipes:
                run["baselines"] = {}
                for recipe in recipes:
                    b = _run_baseline_worker(
                        recipe, ds.orders, repeat, root, on_line, f"{n:,} orders, {recipe}"
                    )
                    runs_s = b["runs_s"]
                    med = _median(runs_s[1:] or runs_s)
                    fs = run["read_to_scores"]
                    run["baselines"][recipe] = {
                        "first_s": runs_s[0],
                        "median_s": med,
                        "runs_s": runs_s,
                        "customers": b["customers"],
                        "peak_rss_bytes": b["peak_rss_bytes"],
                        "rss_after_imports_bytes": b["rss_after_imports_bytes"],
                        "speedup": med / fs["median_s"] if fs["median_s"] > 0 else None,
                        "memory_ratio": fs["peak_rss_bytes"] / b["peak_rss_bytes"]
                        if b["peak_rss_bytes"]
                        else None,
                    }
            runs.append(run)
            with contextlib.suppress(OSError):
                ds.orders.unlink()

    verified = all(r["verification"]["ok"] for r in runs)
    data: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "environment": env,
        "parameters": {
            "orders": sizes,
            "customers_per_order": customers_per_order,
            "segments": seg_param,
            "repeat": repeat,
            "target_orders": target_orders,
            "target_customers": target_customers,
            "baselines": list(recipes),
            "seed": seed,
            "sample": sample,
        },
        "warmup": warm,
        "runs": runs,
        "verified": verified,
        "sizing": _sizing(runs, env, target_orders, target_customers, customers_per_order),
    }
    if recipes:
        data["comparison"] = _comparison(runs)
    report = BenchReport(data)
    if json_path is not None:
        from fastseg.outputs import write_atomic

        text = json.dumps(data, indent=2, default=str)
        report.json_path = write_atomic(json_path, lambda p: p.write_text(text))
    if not verified:
        bad = [
            f"{r['orders']:,} orders: "
            + "; ".join(r["verification"]["mismatches"] or ["check failed"])
            for r in runs
            if not r["verification"]["ok"]
        ]
        where = f" (details in {report.json_path})" if report.json_path else ""
        msg = "bench: fastseg's output does not match the reference — " + " | ".join(bad) + where
        raise DataError(msg)
    return report


def _comparison(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """At each size: the fastest and the leanest baseline and fastseg's ratios to them."""
    out = {}
    for run in runs:
        b = run.get("baselines") or {}
        if not b:
            continue
        fastest = min(b, key=lambda k: b[k]["median_s"])
        leanest = min(b, key=lambda k: b[k]["peak_rss_bytes"])
        out[str(run["orders"])] = {
            "fastest_baseline": fastest,
            "speedup_vs_fastest": b[fastest]["speedup"],
            "leanest_baseline": leanest,
            "memory_vs_leanest": b[leanest]["memory_ratio"],
        }
    return out


def _run_job_worker(
    data: Path,
    out_dir: Path,
    segments: str | int,
    repeat: int,
    sample: int,
    seed: int,
    on_line: Callable[[str], None],
    what: str,
) -> dict[str, Any]:
    result = out_dir.parent / f".job-{out_dir.name}.json"
    cmd = [
        "job", "--data", str(data), "--out-dir", str(out_dir), "--segments", str(segments),
        "--repeat", str(repeat), "--sample", str(sample), "--seed", str(seed), "--result", str(result),
    ]  # fmt: skip
    _launch(cmd, on_line, what)
    raw = json.loads(result.read_text())
    result.unlink()
    return raw


def _run_baseline_worker(
    recipe: str, data: Path, repeat: int, root: Path, on_line: Callable[[str], None], what: str
) -> dict[str, Any]:
    result = root / f".baseline-{recipe}.json"
    cmd = [
        "baseline",
        "--recipe",
        recipe,
        "--data",
        str(data),
        "--repeat",
        str(repeat),
        "--result",
        str(result),
    ]
    _launch(cmd, on_line, what)
    raw = json.loads(result.read_text())
    result.unlink()
    return raw


if __name__ == "__main__":  # pragma: no cover - the worker entry point
    sys.exit(_main())
