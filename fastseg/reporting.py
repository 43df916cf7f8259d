"""The run report: one self-contained HTML page per run, for the people who read the results.

:func:`collect` reduces a run to small aggregates (never one row per customer): the headline
figures, the segment summary, the R x F grid, histograms of recency, frequency and monetary
value, the overlap of the largest segments, the RFM group table and, with a previous run, the
joined/left counts and the RFM transitions. :func:`render` turns them into one HTML page whose
charts are Vega-Lite specifications built with Vega-Altair and drawn in the browser by Vega; the
Vega, Vega-Lite and vega-embed code comes from ``vl-convert`` and is embedded in the page, so
opening it makes no network request. The page for 10M customers is the size of the one for 10:
the JavaScript (about 0.9 MB) plus a few kilobytes of aggregates.

Every piece of user text (segment names and descriptions, paths, the command line) is escaped
for HTML, and the chart data travels as JSON inside a ``<script type="application/json">``
element with ``<`` escaped, so nothing a user wrote can close the element or run as code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import html
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fastseg.config import SKEW_RATIO

__all__ = [
    "REPORT_FILE",
    "Distribution",
    "ReportData",
    "build_html",
    "chart_specs",
    "collect",
    "collect_folder",
    "render",
]

REPORT_FILE = "report.html"
#: the overlap heatmap shows this many of the largest segments
TOP_OVERLAP = 15
#: bars per histogram (at most)
HIST_BINS = 40
#: the share of values at each end folded into the first and last bar of a histogram
TAIL = 0.001
#: the columns of ``scores`` the report reads
SCORE_COLUMNS = ("r_score", "f_score", "rfm_group", "recency_days", "frequency", "monetary")
SEGMENT_BAR_PX = 18


@dataclass
class Distribution:
    """A histogram: ``bins`` has ``lo``, ``hi`` (bin edges, ``hi`` exclusive except for the last
    bin) and ``customers``; ``log`` when the axis is logarithmic; ``outside`` customers with no
    value or (on a log axis) a value not above zero, described by ``outside_label``."""

    column: str
    title: str
    unit: str
    bins: pl.DataFrame
    log: bool
    outside: int = 0
    outside_label: str = ""
    median: float | None = None


@dataclass
class ReportData:
    """Everything the page shows, as small frames (see :func:`collect`)."""

    meta: dict[str, Any]
    totals: dict[str, float]
    summary: pl.DataFrame
    grid: pl.DataFrame
    groups: pl.DataFrame
    distributions: list[Distribution]
    overlap: pl.DataFrame
    overlap_order: list[str]
    changes: pl.DataFrame | None = None
    transitions: pl.DataFrame | None = None
    changes_doc: dict[str, Any] | None = None
    seconds: float = 0.0
    built: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    )


# ------------------------------------------------------------------------------- aggregates


def collect(
    scores: pl.DataFrame,
    summary: pl.DataFrame,
    overlaps: pl.DataFrame | None,
    meta: dict[str, Any],
    *,
    changes: pl.DataFrame | None = None,
    transitions: pl.DataFrame | None = None,
    changes_doc: dict[str, Any] | None = None,
) -> ReportData:
    """The report's aggregates from a run's frames.

    ``scores`` needs the columns of :data:`SCORE_COLUMNS` that it has (others are left out of
    the page); ``summary`` is the run's ``summary.csv`` frame; ``overlaps`` its segment x segment
    counts (``overlaps.csv``); ``meta`` its ``run.json``; ``changes`` and ``transitions`` the
    per-segment summary and the RFM transitions of a diff (:class:`fastseg.changes.Changes`).
    """
    t0 = time.perf_counter()
    have = [c for c in SCORE_COLUMNS if c in scores.columns]
    frame = scores.select(have)
    n = frame.height
    customers = meta.get("customers")
    totals: dict[str, float] = {
        "customers": float(customers if isinstance(customers, int | float) else n)
    }
    scored = meta.get("scored")
    if not isinstance(scored, int | float) and "r_score" in frame.columns:
        scored = frame["r_score"].is_not_null().sum()
    totals["scored"] = float(scored or 0)
    if "frequency" in frame.columns:
        totals["orders"] = float(frame["frequency"].fill_null(0).sum())
    if "monetary" in frame.columns:
        totals["revenue"] = float(frame["monetary"].fill_null(0.0).sum())
    data = ReportData(
        meta=meta,
        totals=totals,
        summary=_summary(summary),
        grid=_grid(frame),
        groups=_groups(frame, totals),
        distributions=_distributions(frame),
        overlap=pl.DataFrame(),
        overlap_order=[],
        changes=changes,
        transitions=transitions,
        changes_doc=changes_doc,
    )
    data.overlap, data.overlap_order = _overlap(overlaps, data.summary)
    data.seconds = time.perf_counter() - t0
    return data


def collect_folder(run: Any, previous: Any = None) -> ReportData:
    """The aggregates of a run folder (:class:`fastseg.runs.RunFolder`), with the changes since
    ``previous`` (another run folder) or, without it, the changes the run folder holds (written
    by ``fastseg run --previous``)."""
    from fastseg.errors import InputError

    if not (run.path / "summary.csv").is_file():
        msg = (
            f"{run.path}: no summary.csv in this run folder; the report needs a folder written by "
            "`fastseg run --out` (run it again to make one)"
        )
        raise InputError(msg)
    table = run.need("scores", "; the report needs a folder written by `fastseg run --out`")
    try:
        names = set(run.columns("scores"))
        scores = run.scan("scores", [c for c in SCORE_COLUMNS if c in names])
    except (pl.exceptions.PolarsError, ValueError, OSError) as exc:
        raise _damaged(table, exc) from None
    counts = ("customers",)
    summary = _read_csv(
        run.path / "summary.csv",
        {"segment": pl.String, "description": pl.String, "customers": pl.Int64},
        need=("segment", *counts),
    )
    overlaps = None
    if (run.path / "overlaps.csv").is_file():
        overlaps = _read_csv(run.path / "overlaps.csv", {"segment": pl.String}, need=("segment",))
    changes = transitions = doc = None
    if previous is not None:
        from fastseg.changes import diff_results

        ch = diff_results(previous, run)
        changes, transitions, doc = ch.summary, ch.transitions, ch.to_dict()
    elif (run.path / "changes.csv").is_file() and (run.path / "transitions.csv").is_file():
        figures = ("before", "after", "joined", "left", "stayed")
        changes = _read_csv(
            run.path / "changes.csv",
            {"segment": pl.String, "status": pl.String} | dict.fromkeys(figures, pl.Int64),
            need=("segment", "status", *figures),
        )
        transitions = _read_csv(
            run.path / "transitions.csv",
            {"before": pl.String, "after": pl.String, "customers": pl.Int64},
            need=("before", "after", "customers"),
        )
        doc = run.meta.get("previous")
    try:
        return collect(
            scores,
            summary,
            overlaps,
            run.meta,
            changes=changes,
            transitions=transitions,
            changes_doc=doc if isinstance(doc, dict) else None,
        )
    except (pl.exceptions.PolarsError, KeyError, TypeError, ValueError) as exc:
        raise _damaged(run.path, exc) from None


def files_read(run: Any) -> list[str]:
    """The files of a run folder that :func:`collect_folder` reads."""
    scores = run.table("scores")
    names = ["run.json", "summary.csv", "overlaps.csv", "changes.csv", "transitions.csv"]
    if scores is not None:
        names.append(scores.name)
    return [n for n in names if (run.path / n).exists()]


def _read_csv(path: Path, text: dict[str, Any], need: tuple[str, ...] = ()) -> pl.DataFrame:
    """A run folder's CSV file, typed; anything unreadable is one :class:`InputError` naming the
    file (and the column and value, when Polars names them)."""
    try:
        header = pl.read_csv(path, n_rows=0).columns
        missing = [c for c in need if c not in header]
        if missing:
            msg = f"no column {', '.join(map(repr, missing))} (found: {', '.join(header)})"
            raise ValueError(msg)
        return pl.read_csv(path, schema_overrides={k: v for k, v in text.items() if k in header})
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise _damaged(path, exc) from None


def _damaged(path: Path, exc: BaseException) -> Exception:
    from fastseg.errors import InputError

    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    msg = (
        f"{path}: cannot be read as the file fastseg wrote ({first}); run the command that "
        "wrote this run folder again"
    )
    return InputError(msg)


def _summary(summary: pl.DataFrame) -> pl.DataFrame:
    from fastseg.segmenting import SUMMARY_SCHEMA as cols

    return summary.select(
        (pl.col(c).cast(t) if c in summary.columns else pl.lit(None, t)).alias(c)
        for c, t in cols.items()
    )


def _grid(frame: pl.DataFrame) -> pl.DataFrame:
    """Customers and revenue per (r_score, f_score) cell, with the cell's RFM group."""
    need = {"r_score", "f_score"}
    if not need <= set(frame.columns):
        return pl.DataFrame()
    money = pl.col("monetary").fill_null(0.0) if "monetary" in frame.columns else pl.lit(0.0)
    group = pl.col("rfm_group").first() if "rfm_group" in frame.columns else pl.lit(None, pl.String)
    grid = (
        frame.filter(pl.col("r_score").is_not_null() & pl.col("f_score").is_not_null())
        .group_by("r_score", "f_score")
        .agg(pl.len().alias("customers"), money.sum().alias("revenue"), group.alias("rfm_group"))
        .with_columns(
            pl.col("customers").cast(pl.Int64), pl.col("r_score", "f_score").cast(pl.Int64)
        )
    )
    n = grid["customers"].sum()
    rev = grid["revenue"].sum()
    return grid.with_columns(
        ((pl.col("customers") / n) if n else pl.lit(None, pl.Float64)).alias("share_customers"),
        ((pl.col("revenue") / rev) if rev else pl.lit(None, pl.Float64)).alias("share_revenue"),
    ).sort("r_score", "f_score", descending=[True, False])


def _groups(frame: pl.DataFrame, totals: dict[str, float]) -> pl.DataFrame:
    """One row per RFM group: customers, shares, revenue and the mean features."""
    if "rfm_group" not in frame.columns:
        return pl.DataFrame()
    means = [
        pl.col(c).cast(pl.Float64).mean().alias(f"mean_{c}")
        for c in ("recency_days", "frequency", "monetary")
        if c in frame.columns
    ]
    money = pl.col("monetary").fill_null(0.0) if "monetary" in frame.columns else pl.lit(0.0)
    out = frame.group_by("rfm_group").agg(
        pl.len().cast(pl.Int64).alias("customers"), money.sum().alias("revenue"), *means
    )
    n = out["customers"].sum()
    rev = totals.get("revenue") or 0.0
    return out.with_columns(
        ((pl.col("customers") / n) if n else pl.lit(None, pl.Float64)).alias("share_customers"),
        ((pl.col("revenue") / rev) if rev else pl.lit(None, pl.Float64)).alias("share_revenue"),
    ).sort("customers", "rfm_group", descending=[True, False])


def _distributions(frame: pl.DataFrame) -> list[Distribution]:
    out = []
    specs = (
        ("recency_days", "Recency", "days since the last order", True),
        ("frequency", "Frequency", "orders", True),
        ("monetary", "Monetary", "net revenue", False),
    )
    has_orders = frame["frequency"].fill_null(0) > 0 if "frequency" in frame.columns else None
    for column, title, unit, integer in specs:
        if column not in frame.columns:
            continue
        s = frame[column]
        if has_orders is not None:
            s = s.filter(has_orders)  # prospects have no recency, frequency or spend to plot
        no_orders = frame.height - s.len()
        out.append(_histogram(s, column, title, unit, integer=integer, no_orders=no_orders))
    return out


def _histogram(
    s: pl.Series, column: str, title: str, unit: str, *, integer: bool, no_orders: int
) -> Distribution:
    """Bars over the 0.1st to 99.9th percentile of the values (the customers beyond are counted
    in the first and last bar, so every plotted customer is in a bar); a log axis when the values
    are skewed, and then values not above zero are counted apart."""
    values = s.drop_nulls().cast(pl.Float64).to_numpy()
    values = values[np.isfinite(values)]
    outside = no_orders + (s.len() - values.size)
    label = "customers without an order" if no_orders else ""
    empty = pl.DataFrame(
        {"lo": [], "hi": [], "customers": []},
        {"lo": pl.Float64, "hi": pl.Float64, "customers": pl.Int64},
    )
    if values.size == 0:
        return Distribution(column, title, unit, empty, False, outside, label)
    # one partition per array for all its quantiles (10M values: a tenth of a second each)
    q_lo, median, q_hi = (float(v) for v in np.quantile(values, [TAIL, 0.5, 1 - TAIL]))
    positive = values[values > 0]
    log = False
    if positive.size:
        p_lo, base, p99, p_hi = (
            float(v) for v in np.quantile(positive, [TAIL, 0.5, 0.99, 1 - TAIL])
        )
        log = base > 0 and p99 / base >= SKEW_RATIO
    if log:
        below = int(values.size - positive.size)
        if below:
            what = "a value of 0" if integer else "a value of 0 or less (refunds)"
            label = f"{label} and {what}" if label else f"customers with {what}"
            label = label.replace("and customers with", "and")
            outside += below
        values = positive
        q_lo, q_hi = p_lo, p_hi
    lo, hi = q_lo, q_hi
    if integer:
        lo, hi = float(np.floor(lo)), float(np.ceil(hi))
    folded = (bool((values < lo).any()), bool((values > hi).any()))
    top = hi  # the largest value in the last bar
    values = np.clip(values, lo, hi)
    if hi <= lo:  # one distinct value: one bar around it
        hi = lo + max(1.0, abs(lo) * 1e-9)
    if log and integer:
        edges = np.unique(np.floor(np.geomspace(max(lo, 1.0), hi + 1, HIST_BINS + 1)))
    elif log:
        edges = np.geomspace(lo, hi, HIST_BINS + 1)
    elif integer:
        width = max(1.0, float(np.ceil((hi - lo + 1) / HIST_BINS)))
        edges = lo + width * np.arange(min(HIST_BINS, float(np.ceil((hi - lo + 1) / width))) + 1.0)
    else:
        edges = np.linspace(lo, hi, HIST_BINS + 1)
    # the (clipped) values all lie in [lo, hi]; np.histogram's last bin includes its right edge
    edges[0], edges[-1] = min(edges[0], lo), max(edges[-1], hi)
    edges = np.unique(edges)
    if edges.size < 2:
        edges = np.array([lo, hi])
    counts = _bin_counts(values, edges, integer=integer)
    bins = pl.DataFrame(
        {
            "lo": edges[:-1],
            "hi": edges[1:],
            "customers": counts.astype(np.int64),
            "range": _bar_labels(edges, top, integer=integer, folded=folded),
        },
        {"lo": pl.Float64, "hi": pl.Float64, "customers": pl.Int64, "range": pl.String},
    )
    return Distribution(column, title, unit, bins, bool(log), outside, label, median)


def _bar_labels(
    edges: np.ndarray, top: float, *, integer: bool, folded: tuple[bool, bool]
) -> list[str]:
    """What each bar holds, for its tooltip: ``3–5``, ``12.50 to under 20.00``; the first bar
    ``up to …`` and the last ``… and more`` when the tails are folded into them."""
    num = (lambda v: f"{v:,.0f}") if integer else (lambda v: f"{v:,.2f}")  # noqa: E731
    n = edges.size - 1
    out = []
    for i in range(n):
        a, b = float(edges[i]), float(edges[i + 1])
        last = i == n - 1
        if integer:
            hi = min(top, b) if last else b - 1
            span = num(a) if hi <= a else f"{num(a)}–{num(hi)}"
            first_part, last_part = f"up to {num(hi)}", f"{num(a)} and more"
        else:
            span = f"{num(a)} to {num(min(top, b))}" if last else f"{num(a)} to under {num(b)}"
            first_part = f"up to {num(min(top, b))}" if last else f"under {num(b)}"
            last_part = f"{num(a)} and more"
        if i == 0 and folded[0] and last and folded[1]:
            span = "every value"
        elif i == 0 and folded[0]:
            span = first_part
        elif last and folded[1]:
            span = last_part
        out.append(span)
    return out


def _bin_counts(values: np.ndarray, edges: np.ndarray, *, integer: bool) -> np.ndarray:
    """Values per bin ``[edges[i], edges[i + 1])``, the last bin including its right edge (as
    ``np.histogram``'s), for values within ``[edges[0], edges[-1]]``; no sort of the values.

    Whole numbers over a modest range are counted per value (one ``bincount``) and summed per bin;
    others are placed by binary search over the edges.
    """
    lo, hi = edges[0], edges[-1]
    span = hi - lo
    if integer and span <= 10_000_000 and np.all(edges == np.floor(edges)):
        per_value = np.bincount((values - lo).astype(np.int64), minlength=int(span) + 1)
        cum = np.concatenate([[0], np.cumsum(per_value)])
        at = (edges - lo).astype(np.int64)
        at[-1] = int(span) + 1  # the right edge itself belongs to the last bin
        return cum[at[1:]] - cum[at[:-1]]
    index = np.searchsorted(edges, values, side="right") - 1
    np.minimum(index, edges.size - 2, out=index)
    return np.bincount(index, minlength=edges.size - 1)


def _overlap(
    overlaps: pl.DataFrame | None, summary: pl.DataFrame
) -> tuple[pl.DataFrame, list[str]]:
    """The largest segments' pairwise overlaps, long: ``a``, ``b``, ``customers`` (in both),
    ``share`` (of ``a``'s customers also in ``b``)."""
    empty = pl.DataFrame(
        {"a": [], "b": [], "customers": [], "share": []},
        {"a": pl.String, "b": pl.String, "customers": pl.Int64, "share": pl.Float64},
    )
    if overlaps is None or overlaps.is_empty() or summary.is_empty():
        return empty, []
    sizes = summary.filter(pl.col("customers") > 0).sort(
        "customers", "segment", descending=[True, False]
    )
    names = [n for n in sizes["segment"].to_list() if n in overlaps.columns][:TOP_OVERLAP]
    if not names:
        return empty, []
    rows = overlaps.filter(pl.col("segment").is_in(names))
    index = {name: i for i, name in enumerate(rows["segment"].to_list())}
    if set(index) != set(names):
        missing = ", ".join(sorted(set(names) - set(index)))
        msg = f"overlaps.csv has no row for segment {missing}"
        raise ValueError(msg)
    matrix = rows.select(names).to_numpy().astype(np.int64)
    a, b, count, share = [], [], [], []
    for name in names:
        row = matrix[index[name]]
        size = row[names.index(name)]
        for j, other in enumerate(names):
            a.append(name)
            b.append(other)
            count.append(int(row[j]))
            share.append(float(row[j]) / size if size else None)
    frame = pl.DataFrame(
        {"a": a, "b": b, "customers": count, "share": share},
        {"a": pl.String, "b": pl.String, "customers": pl.Int64, "share": pl.Float64},
    )
    return frame, names


# ------------------------------------------------------------------------------- formatting


def _number(value: Any) -> float | None | str:
    """A finite number as float, None for a missing or non-finite one, and anything else (a
    value of an unexpected type in a hand-edited run.json) as escaped text to show as it is."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return html.escape(str(value), quote=True)
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: Any, show: Any) -> str:
    """``show(number)`` for a finite number, a dash for a missing one, other values as text."""
    v = _number(value)
    return "–" if v is None else v if isinstance(v, str) else show(v)


def fmt_int(value: Any) -> str:
    """``1,234,567``; a dash for a missing value."""
    return _fmt(value, lambda v: f"{round(v):,}")


def fmt_money(value: Any) -> str:
    """Money to cents with thousands separators: ``1,234.50``."""
    return _fmt(value, lambda v: f"{v:,.2f}")


def fmt_share(value: Any) -> str:
    """A share as a percentage: ``12.3%`` (``<0.1%`` for a small non-zero share)."""
    return _fmt(value, lambda v: "<0.1%" if 0 < v < 0.001 else f"{v:.1%}")


def fmt_num(value: Any, digits: int = 1) -> str:
    return _fmt(value, lambda v: f"{v:,.{digits}f}")


def fmt_seconds(value: Any) -> str:
    return _fmt(value, lambda v: f"{v:.2f} s" if v < 100 else f"{v:,.0f} s")


def fmt_bytes(value: Any) -> str:
    def show(size: float) -> str:
        for unit in ("B", "KB", "MB"):
            if size < 1000:
                return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
            size /= 1000
        return f"{size:,.1f} GB"

    return _fmt(value, show)


# ------------------------------------------------------------------------------- charts


def chart_specs(data: ReportData) -> dict[str, dict[str, Any]]:
    """The page's charts as Vega-Lite specifications (``{element id: spec}``), built with
    Vega-Altair from the aggregates."""
    import altair as alt

    specs: dict[str, Any] = {}
    money = ",.2f"
    if not data.summary.is_empty():
        rows = data.summary.sort("customers", "segment", descending=[True, False]).to_dicts()
        order = [r["segment"] for r in rows]
        tips = [
            alt.Tooltip("segment:N", title="segment"),
            alt.Tooltip("description:N", title="description"),
            *_size_tips("share of customers"),
            alt.Tooltip("aov:Q", title="revenue per order", format=money),
        ]
        base = alt.Chart(alt.Data(values=rows)).properties(
            height=max(SEGMENT_BAR_PX * len(rows), 40), width=300
        )
        y = alt.Y("segment:N", sort=order, title=None, axis=alt.Axis(labelLimit=220))
        sizes = base.mark_bar(color="#4c78a8").encode(
            x=alt.X(
                "customers:Q", title="customers", axis=alt.Axis(labelExpr=_TICKS, tickMinStep=1)
            ),
            y=y,
            tooltip=tips,
        )
        share = base.mark_bar(color="#f58518").encode(
            x=alt.X("share_revenue:Q", title="share of net revenue", axis=alt.Axis(format=".0%")),
            y=alt.Y("segment:N", sort=order, title=None, axis=alt.Axis(labels=False, ticks=False)),
            tooltip=tips,
        )
        specs["chart-segments"] = alt.hconcat(sizes, share, spacing=12)
    if not data.grid.is_empty():
        rows = data.grid.with_columns(
            pl.col("customers").map_elements(fmt_int, return_dtype=pl.String).alias("label"),
            pl.col("rfm_group").fill_null("").str.replace_all("_", " ").alias("group"),
        ).to_dicts()
        k = _levels(data)
        scores = list(range(1, k + 1))
        base = alt.Chart(alt.Data(values=rows)).properties(width=84 * k, height=62 * k)
        enc = {
            "x": alt.X(
                "f_score:O",
                title="F score (frequency)",
                sort=scores,
                scale=alt.Scale(domain=scores),
                axis=alt.Axis(labelAngle=0),
            ),
            "y": alt.Y(
                "r_score:O",
                title="R score (recency)",
                sort=scores[::-1],
                scale=alt.Scale(domain=scores[::-1]),
            ),
        }
        tips = [
            alt.Tooltip("r_score:O", title="R"),
            alt.Tooltip("f_score:O", title="F"),
            alt.Tooltip("rfm_group:N", title="RFM group"),
            *_size_tips("share of scored"),
        ]
        cells = base.mark_rect(stroke="white").encode(
            **enc,
            color=alt.Color("customers:Q", title="customers", scale=alt.Scale(scheme="blues")),
            tooltip=tips,
        )
        dark = f"datum.share_customers > 0.6 * {_max_share(data.grid)}"  # white on dark cells

        def label(field: str, ink: str, **mark: Any) -> Any:
            return base.mark_text(**mark).encode(
                **enc,
                text=f"{field}:N",
                color=alt.condition(dark, alt.value("white"), alt.value(ink)),
                tooltip=tips,
            )

        count = label("label", "#222", dy=-7, fontSize=12, fontWeight="bold")
        group = label("group", "#444", dy=9, fontSize=10)
        specs["chart-grid"] = alt.layer(cells, count, group)
    for d in data.distributions:
        if d.bins.is_empty():
            continue
        rows = d.bins.to_dicts()
        lo, hi = float(d.bins["lo"].min()), float(d.bins["hi"].max())
        if d.log:
            scale = alt.Scale(type="log", domain=[lo, hi], nice=False)
            ticks = [
                10.0**p
                for p in range(
                    max(math.floor(math.log10(lo)), -300), min(math.ceil(math.log10(hi)), 308) + 1
                )
            ]
            axis = alt.Axis(labelExpr=_TICKS, values=[t for t in ticks if lo <= t <= hi] or None)
        else:
            scale = alt.Scale(zero=False, domain=[lo, hi], nice=False)
            axis = alt.Axis(labelExpr=_TICKS, labelOverlap=True)
        title = f"{d.unit}{' (log scale)' if d.log else ''}"
        bars = (
            alt.Chart(alt.Data(values=rows))
            .mark_rect(color="#54a24b", stroke="white", strokeWidth=0.5)
            .encode(
                x=alt.X("lo:Q", title=title, scale=scale, axis=axis),
                x2="hi:Q",
                y=alt.Y(
                    "customers:Q", title="customers", axis=alt.Axis(labelExpr=_TICKS, tickMinStep=1)
                ),
                tooltip=[
                    alt.Tooltip("range:N", title=d.unit),
                    alt.Tooltip("customers:Q", title="customers", format=",d"),
                ],
            )
            .properties(width=300, height=180, title=d.title)
        )
        specs[f"chart-dist-{d.column}"] = bars
    if data.overlap_order:
        names = data.overlap_order
        rows = data.overlap.to_dicts()
        px = max(20, min(34, 520 // len(names)))
        specs["chart-overlap"] = (
            alt.Chart(alt.Data(values=rows))
            .mark_rect(stroke="white")
            .encode(
                x=alt.X(
                    "b:N",
                    sort=names,
                    title="also in",
                    axis=alt.Axis(labelAngle=-45, labelLimit=160),
                ),
                y=alt.Y("a:N", sort=names, title="customers of", axis=alt.Axis(labelLimit=180)),
                color=alt.Color(
                    "share:Q",
                    title="share of row",
                    scale=alt.Scale(scheme="purples", domain=[0, 1]),
                    legend=alt.Legend(format=".0%"),
                ),
                tooltip=[
                    alt.Tooltip("a:N", title="customers of"),
                    alt.Tooltip("b:N", title="also in"),
                    alt.Tooltip("customers:Q", title="customers in both", format=",d"),
                    alt.Tooltip("share:Q", title="share of row segment", format=".1%"),
                ],
            )
            .properties(width=px * len(names), height=px * len(names))
        )
    if data.changes is not None and not data.changes.is_empty():
        ch = data.changes.with_columns(
            pl.col("joined", "left").fill_null(0).cast(pl.Int64),
        ).filter((pl.col("joined") > 0) | (pl.col("left") > 0))
        if not ch.is_empty():
            ch = ch.with_columns((pl.col("joined") + pl.col("left")).alias("moved")).sort(
                "moved", "segment", descending=[True, False]
            )
            order = ch["segment"].to_list()
            keep = ("segment", "before", "after", "joined", "left")
            long = pl.concat(
                [
                    ch.select(*keep, change=pl.lit("joined"), customers=pl.col("joined")),
                    ch.select(*keep, change=pl.lit("left"), customers=-pl.col("left")),
                ]
            ).to_dicts()
            specs["chart-changes"] = (
                alt.Chart(alt.Data(values=long))
                .mark_bar()
                .encode(
                    x=alt.X(
                        "customers:Q",
                        title="customers (left ← → joined)",
                        axis=alt.Axis(labelExpr=_TICKS, tickMinStep=1),
                    ),
                    y=alt.Y("segment:N", sort=order, title=None, axis=alt.Axis(labelLimit=220)),
                    color=alt.Color(
                        "change:N",
                        scale=alt.Scale(domain=["joined", "left"], range=["#54a24b", "#e45756"]),
                        title=None,
                    ),
                    tooltip=[
                        alt.Tooltip("segment:N"),
                        alt.Tooltip("before:Q", title="before", format=",d"),
                        alt.Tooltip("after:Q", title="after", format=",d"),
                        alt.Tooltip("joined:Q", title="joined", format=",d"),
                        alt.Tooltip("left:Q", title="left", format=",d"),
                    ],
                )
                .properties(width=520, height=max(SEGMENT_BAR_PX * len(order), 40))
            )
    if data.transitions is not None and not data.transitions.is_empty():
        t = data.transitions.filter(pl.col("customers") > 0)
        rows = t.with_columns(
            pl.col("customers").map_elements(fmt_int, return_dtype=pl.String).alias("label")
        ).to_dicts()
        before = _group_order(t["before"].unique().to_list())
        after = _group_order(t["after"].unique().to_list())
        enc = {
            "x": alt.X("after:N", sort=after, title="RFM group now", axis=alt.Axis(labelAngle=-40)),
            "y": alt.Y("before:N", sort=before, title="RFM group before"),
        }
        tips = [
            alt.Tooltip("before:N", title="before"),
            alt.Tooltip("after:N", title="now"),
            alt.Tooltip("customers:Q", title="customers", format=",d"),
        ]
        for extra in ("revenue_before", "revenue_after"):
            if extra in t.columns:
                tips.append(alt.Tooltip(f"{extra}:Q", title=extra.replace("_", " "), format=money))
        base = alt.Chart(alt.Data(values=rows)).properties(
            width=52 * len(after), height=30 * len(before)
        )
        specs["chart-transitions"] = alt.layer(
            base.mark_rect(stroke="white").encode(
                **enc,
                color=alt.Color(
                    "customers:Q", title="customers", scale=alt.Scale(type="log", scheme="oranges")
                ),
                tooltip=tips,
            ),
            base.mark_text(fontSize=10).encode(**enc, text="label:N", tooltip=tips),
        )
    return {key: chart.to_dict() for key, chart in specs.items()}


#: axis labels for people: 250, 0.5, 12k, 3.4M (not d3's 0.25k or 500m)
_TICKS = "abs(datum.value) >= 10000 ? format(datum.value, '.3~s') : format(datum.value, ',~g')"


def _size_tips(share_title: str) -> list[Any]:
    """Tooltips of customers, their share, net revenue and its share."""
    import altair as alt

    return [
        alt.Tooltip("customers:Q", title="customers", format=",d"),
        alt.Tooltip("share_customers:Q", title=share_title, format=".1%"),
        alt.Tooltip("revenue:Q", title="net revenue", format=",.2f"),
        alt.Tooltip("share_revenue:Q", title="share of revenue", format=".1%"),
    ]


def _max_share(grid: pl.DataFrame) -> float:
    value = grid["share_customers"].max() if "share_customers" in grid.columns else None
    return float(value) if value is not None else 1.0


def _group_order(names: list[str]) -> list[str]:
    from fastseg.schema import RFM_GROUPS

    rank = {g: i for i, g in enumerate(RFM_GROUPS)}
    special = {"(new)": -1, "(none)": len(rank), "(gone)": len(rank) + 1}
    return sorted(names, key=lambda g: (special.get(g, rank.get(g, len(rank) - 0.5)), g))


# ------------------------------------------------------------------------------- the page


def _dict(value: Any) -> dict[str, Any]:
    """A mapping of run.json, or an empty one when it is absent or of another type (a folder
    written by another version, or edited by hand)."""
    return value if isinstance(value, dict) else {}


def _list(value: Any, kind: type) -> list[Any]:
    return [v for v in value if isinstance(v, kind)] if isinstance(value, list) else []


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _table(
    headers: list[str],
    rows: list[list[str]],
    *,
    left: int = 1,
    cls: str = "",
    text: tuple[int, ...] = (),
) -> str:
    """A table: the first ``left`` columns and those in ``text`` left-aligned, figures right."""

    def side(i: int) -> str:
        return "l" if i < left or i in text else "r"

    head = "".join(f'<th class="{side(i)}">{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{side(i)}">{cell}</td>' for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _headline(data: ReportData) -> str:
    t = data.totals
    cards = [
        ("customers", fmt_int(t["customers"]), "in the scores"),
        (
            "scored",
            fmt_int(t["scored"]),
            f"with an order · {fmt_share(t['scored'] / t['customers']) if t['customers'] else '–'}",
        ),
    ]
    if "orders" in t:
        cards.append(("orders", fmt_int(t["orders"]), "counted once each"))
    if "revenue" in t:
        cards.append(("net revenue", fmt_money(t["revenue"]), "after refunds"))
    o = _dict(data.meta.get("orders"))
    if o:
        cards.append(
            (
                "order rows used",
                fmt_int(o.get("rows_used")),
                f"of {fmt_int(o.get('rows_read'))} read",
            )
        )
        cards.append(
            (
                "rows left out",
                fmt_int(o.get("rows_left_out")),
                "see below" if o.get("rows_left_out") else "none",
            )
        )
    cards.append(
        (
            "segments",
            fmt_int(data.meta.get("segments", data.summary.height)),
            f"scoring date {_e(data.meta.get('as_of'))}",
        )
    )
    return "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{v}</div><div class="n">{n}</div></div>'
        for k, v, n in cards
    )


def _rows_table(meta: dict[str, Any]) -> str:
    rows = []
    for key, label in (
        ("orders", "orders"),
        ("customers_file", "profiles"),
        ("events_file", "events"),
    ):
        rep = _dict(meta.get(key))
        if not rep:
            continue
        reasons = {r: c for r, c in _dict(rep.get("left_out")).items() if c}
        dups = rep.get("exact_duplicate_rows") or 0
        text = ", ".join(f"{_e(r.replace('_', ' '))}: {fmt_int(c)}" for r, c in reasons.items())
        if dups:
            text = f"{text}; " if text else ""
            text += f"exact duplicate rows (counted once): {fmt_int(dups)}"
        rows.append(
            [
                _e(label),
                f"<code>{_e(rep.get('source'))}</code>",
                fmt_int(rep.get("rows_read")),
                fmt_int(rep.get("rows_used")),
                fmt_int(rep.get("rows_left_out")),
                text or "none",
            ]
        )
    if not rows:
        return ""
    return _table(
        ["input", "source", "rows read", "rows used", "left out", "left out by reason"],
        rows,
        left=2,
        text=(5,),
    )


def _size_cells(r: dict[str, Any]) -> list[str]:
    """customers, share of customers, net revenue, share of revenue: one row's table cells."""
    return [
        fmt_int(r["customers"]),
        fmt_share(r["share_customers"]),
        fmt_money(r["revenue"]),
        fmt_share(r["share_revenue"]),
    ]


def _segments_table(data: ReportData) -> str:
    s = data.summary.sort("customers", "segment", descending=[True, False])
    rows = [
        [
            f"<b>{_e(r['segment'])}</b>",
            _e(r["description"]),
            *_size_cells(r),
            fmt_money(r["aov"]),
            fmt_num(r["mean_recency_days"], 0),
            fmt_num(r["mean_frequency"], 1),
        ]
        for r in s.to_dicts()
    ]
    return _table(
        [
            "segment",
            "rule",
            "customers",
            "share",
            "net revenue",
            "revenue share",
            "per order",
            "mean recency (days)",
            "mean orders",
        ],
        rows,
        left=2,
        cls="wide",
    )


def _groups_table(data: ReportData) -> str:
    g = data.groups
    if g.is_empty():
        return ""
    rows = [
        [
            f"<b>{_e(str(r['rfm_group']).replace('_', ' '))}</b>",
            *_size_cells(r),
            fmt_num(r.get("mean_recency_days"), 0),
            fmt_num(r.get("mean_frequency"), 1),
            fmt_money(r.get("mean_monetary")),
        ]
        for r in g.to_dicts()
    ]
    return _table(
        [
            "RFM group",
            "customers",
            "share",
            "net revenue",
            "revenue share",
            "mean recency (days)",
            "mean orders",
            "mean net revenue",
        ],
        rows,
    )


def _changes_section(data: ReportData, specs: dict[str, Any]) -> str:
    if data.changes is None:
        return ""
    doc = data.changes_doc or {}
    prev = _dict(doc.get("previous"))
    cur = _dict(doc.get("current"))
    cust = _dict(doc.get("customers"))
    parts = ["<section><h2>Changes since the previous run</h2>"]
    facts = []
    if prev.get("as_of"):
        facts.append(f"previous run: scoring date <b>{_e(prev.get('as_of'))}</b>")
    if cur.get("as_of"):
        facts.append(f"this run: <b>{_e(cur.get('as_of'))}</b>")
    for key, label in (
        ("before", "customers before"),
        ("after", "now"),
        ("new", "new"),
        ("gone", "gone"),
        ("staying", "in both"),
    ):
        if key in cust:
            facts.append(f"{label}: <b>{fmt_int(cust[key])}</b>")
    if facts:
        parts.append(f"<p>{' · '.join(facts)}</p>")
    for note in _list(doc.get("notes"), str):
        parts.append(f'<p class="note">{_e(note)}</p>')
    parts.append("<h3>Joined and left, per segment</h3>")
    if "chart-changes" in specs:
        parts.append('<div class="chart" id="chart-changes"></div>')
    else:
        parts.append("<p>No customer joined or left any segment.</p>")
    ch = data.changes
    rows = [
        [
            f"<b>{_e(r['segment'])}</b>",
            _e(r.get("status")),
            fmt_int(r.get("before")),
            fmt_int(r.get("after")),
            fmt_int(r.get("joined")),
            fmt_int(r.get("left")),
            fmt_int(r.get("stayed")),
        ]
        for r in ch.to_dicts()
    ]
    parts.append(
        "<details><summary>the table</summary>"
        + _table(["segment", "status", "before", "after", "joined", "left", "stayed"], rows)
        + "</details>"
    )
    if "chart-transitions" in specs:
        parts.append(
            "<h3>RFM transitions</h3><p>Customers by RFM group in the previous run (rows) and in"
            " this one (columns); <i>(new)</i>: not in the previous run, <i>(gone)</i>: not in"
            " this one.</p>"
            '<div class="chart" id="chart-transitions"></div>'
        )
    parts.append("</section>")
    return "".join(parts)


def _meta_section(data: ReportData) -> str:
    m = data.meta
    rows = [
        ["fastseg", _e(m.get("fastseg"))],
        ["run id", f"<code>{_e(m.get('run_id'))}</code>"],
        ["scoring date", _e(m.get("as_of"))],
    ]
    if m.get("command"):
        cmd = m["command"]
        text = " ".join(cmd) if isinstance(cmd, list) else str(cmd)
        rows.append(["command", f"<code>{_e(text)}</code>"])
    rules = m.get("rules")
    if isinstance(rules, dict):
        rows.append(
            [
                "rules",
                f"<code>{_e(rules.get('path'))}</code> (sha256 {_e(str(rules.get('sha256', ''))[:12])}…)",
            ]
        )
    rows.append(["built-in segments", "yes" if m.get("builtin_rules", True) else "no"])
    edges = _dict(m.get("edges"))
    if edges:
        cuts = "; ".join(
            f"{_e(d)}: {', '.join(fmt_num(v, 2) for v in _list(vals, object))}"
            for d, vals in _dict(edges.get("edges")).items()
        )
        rows.append(
            [
                "RFM scoring",
                f"{_e(edges.get('method'))}, {_e(edges.get('bins'))} levels; cut points {cuts}",
            ]
        )
    for item in _list(m.get("inputs"), dict):
        rows.append(
            [
                f"input: {_e(item.get('role'))}",
                f"<code>{_e(item.get('path'))}</code> · {fmt_bytes(item.get('bytes'))} · modified {_e(item.get('modified'))}",
            ]
        )
    skipped = _list(m.get("skipped_segments"), dict)
    if skipped:
        rows.append(
            [
                "segments skipped",
                "; ".join(f"{_e(s.get('segment'))}: {_e(s.get('reason'))}" for s in skipped),
            ]
        )
    timings = _dict(m.get("timings_seconds"))
    if timings:
        total = sum(v for v in timings.values() if isinstance(v, int | float))
        text = ", ".join(f"{_e(k)} {fmt_seconds(v)}" for k, v in timings.items())
        rows.append(["timings", f"{fmt_seconds(total)} ({text})"])
    rows.append(["report built", f"{_e(data.built)}"])
    return _table(["", ""], rows, left=2, cls="meta")


def _levels(data: ReportData) -> int:
    """The score levels of the run (``--bins``, from its edges), else the highest score seen."""
    bins = _dict(data.meta.get("edges")).get("bins")
    seen = max(int(data.grid["r_score"].max() or 1), int(data.grid["f_score"].max() or 1))
    if isinstance(bins, int) and not isinstance(bins, bool) and 2 <= bins <= 10:
        return max(bins, seen)
    return seen


def _empty_scores_note(data: ReportData) -> str:
    """Why a row or column of the grid is empty: with quantiles, ties share a score
    (docs/rfm.md); with thresholds, no value fell in that range."""
    if data.grid.is_empty():
        return ""
    k = _levels(data)
    method = _dict(data.meta.get("edges")).get("method")
    notes = []
    for col, letter, what in (
        ("f_score", "F", "number of orders (often one)"),
        ("r_score", "R", "recency"),
    ):
        used = set(data.grid[col].to_list())
        empty = [str(v) for v in range(1, k + 1) if v not in used]
        if not empty:
            continue
        scores = " and ".join([", ".join(empty[:-1]), empty[-1]] if len(empty) > 1 else empty)
        levels = "that level stays" if len(empty) == 1 else "those levels stay"
        if method == "quantile" and data.totals["scored"] > 1:
            why = (
                f"so many customers have the same {what} that a quantile cut falls inside the"
                f" tie, and equal values always share a score (docs/rfm.md), so {levels} empty"
            )
        elif method == "thresholds":
            why = f"no customer's {what.split(' (')[0]} falls in that range of the thresholds"
        else:
            why = "too few scored customers to fill every level"
        notes.append(f"No customer has {letter} score {scores}: {why}.")
    return "".join(f'<p class="small">{_e(n)}</p>' for n in notes)


def _dist_notes(data: ReportData) -> str:
    notes = []
    for d in data.distributions:
        bits = []
        if d.median is not None:
            val = fmt_money(d.median) if d.column == "monetary" else fmt_num(d.median, 0)
            bits.append(f"median {val}")
        if d.log:
            bits.append("log axis: skewed")
        if d.outside and d.outside_label:
            bits.append(f"not shown: {fmt_int(d.outside)} {d.outside_label}")
        notes.append(f"<li><b>{_e(d.title)}</b>: {_e(', '.join(bits))}</li>")
    if notes:
        notes.append(
            f"<li>The first and last bar also count the lowest and highest {TAIL:.1%} of the"
            " values, so that a few extreme customers do not squeeze the rest.</li>"
        )
    return f'<ul class="small">{"".join(notes)}</ul>' if notes else ""


CSS = """
:root { --ink:#1f2430; --muted:#6b7280; --line:#e5e7eb; --bg:#f7f7f9; --accent:#4c78a8; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color:var(--ink); background:var(--bg); }
header { background:#1f2430; color:#fff; padding:18px 28px; }
header h1 { margin:0; font-size:20px; font-weight:600; }
header .sub { color:#c7cbd6; margin-top:4px; }
main { padding: 8px 28px 40px; max-width: 1280px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 20px; margin:16px 0; }
h2 { font-size:17px; margin:0 0 10px; }
h3 { font-size:14px; margin:16px 0 6px; color:#374151; }
.cards { display:flex; flex-wrap:wrap; gap:12px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:8px 12px; min-width:130px; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .v { font-size:20px; font-weight:600; font-variant-numeric: tabular-nums; }
.card .n { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; margin:8px 0; font-variant-numeric: tabular-nums; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-weight:600; color:#374151; background:#fafafa; }
td.r, th.r { text-align:right; white-space:nowrap; }
td.l, th.l { text-align:left; }
table.wide td.l + td.l { color:var(--muted); max-width:420px; }
table.meta td:first-child { color:var(--muted); white-space:nowrap; }
code { font-size:12px; word-break:break-all; }
.row { display:flex; flex-wrap:wrap; gap:24px; align-items:flex-start; }
.note { color:#92400e; background:#fffbeb; border:1px solid #fde68a; padding:6px 10px; border-radius:6px; }
.small { color:var(--muted); font-size:12px; }
details summary { cursor:pointer; color:var(--accent); margin:8px 0; }
.chart-error { color:#b91c1c; }
"""


def render(
    data: ReportData, specs: dict[str, dict[str, Any]] | None = None, *, bundle: str | None = None
) -> str:
    """The HTML page of ``data``: the charts of :func:`chart_specs` and the Vega bundle inline."""
    specs = chart_specs(data) if specs is None else specs
    bundle = _bundle() if bundle is None else bundle
    m = data.meta
    sub = f"scoring date {_e(m.get('as_of'))} · {fmt_int(data.totals['customers'])} customers · run {_e(str(m.get('run_id') or '')[:8])}"
    dists = "".join(
        f'<div class="chart" id="chart-dist-{_e(d.column)}"></div>'
        for d in data.distributions
        if not d.bins.is_empty()
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>fastseg report · {_e(m.get('as_of'))}</title>",
        f"<style>{CSS}</style>",
        "</head><body>",
        f'<header><h1>Customer segments</h1><div class="sub">{sub}</div></header><main>',
        f'<section><h2>At a glance</h2><div class="cards">{_headline(data)}</div>',
    ]
    rows = _rows_table(m)
    if rows:
        parts.append(f"<h3>Rows read and left out</h3>{rows}")
    parts.append("</section>")
    if "chart-segments" in specs:
        parts.append(
            '<section><h2>Segments</h2><p class="small">Customers per segment (left) and the'
            " segment's share of net revenue (right); a customer can be in several segments."
            '</p><div class="chart" id="chart-segments"></div>'
            f"<details><summary>the table</summary>{_segments_table(data)}</details></section>"
        )
    if "chart-grid" in specs:
        prospects = int(data.totals["customers"] - data.totals["scored"])
        parts.append(
            '<section><h2>R × F grid</h2><p class="small">Scored customers by recency score'
            f" ({_levels(data)}: most recent) and frequency score ({_levels(data)}: most orders),"
            " with the RFM group each"
            f" cell belongs to. Not on the grid: {fmt_int(prospects)} customers without an"
            f" order (prospects).</p>{_empty_scores_note(data)}"
            '<div class="row"><div class="chart" id="chart-grid"></div>'
            f"<div>{_groups_table(data)}</div></div></section>"
        )
    elif not data.groups.is_empty():
        parts.append(f"<section><h2>RFM groups</h2>{_groups_table(data)}</section>")
    if dists:
        parts.append(
            f'<section><h2>Distributions</h2><div class="row">{dists}</div>{_dist_notes(data)}</section>'
        )
    if "chart-overlap" in specs:
        parts.append(
            '<section><h2>Segment overlap</h2><p class="small">Of the customers of each row\'s'
            f" segment, the share also in the column's (the {len(data.overlap_order)} largest"
            ' segments).</p><div class="chart" id="chart-overlap"></div></section>'
        )
    parts.append(_changes_section(data, specs))
    parts.append(f"<section><h2>About this run</h2>{_meta_section(data)}</section>")
    payload = json.dumps(specs, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    parts.append(
        "</main>"
        f'<script type="application/json" id="fastseg-specs">{payload}</script>'
        f"<script>{bundle}</script>"
        f"<script>{_EMBED}</script>"
        "</body></html>"
    )
    return "\n".join(parts)


_EMBED = """
(function () {
  const specs = JSON.parse(document.getElementById("fastseg-specs").textContent);
  const pending = [];
  for (const [id, spec] of Object.entries(specs)) {
    const el = document.getElementById(id);
    if (!el) { continue; }
    pending.push(vegaEmbed(el, spec, {renderer: "svg", actions: false}).catch(function (err) {
      el.className += " chart-error";
      el.textContent = "this chart could not be drawn: " + err;
      console.error(err);
    }));
  }
  Promise.all(pending).then(function () { document.body.setAttribute("data-charts-ready", String(pending.length)); });
})();
"""


def _bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script (from vl-convert, for Altair's Vega-Lite).

    vl-convert starts a JavaScript runtime to bundle (about 2 s); the bundle depends only on the
    versions, so it is kept in the user's cache folder (``$XDG_CACHE_HOME/fastseg``, else
    ``~/.cache/fastseg``; ``FASTSEG_CACHE_DIR`` overrides), sealed with its SHA-256, and read back
    from there only when the seal matches. A cache that cannot be read or written is skipped.
    """
    from importlib.metadata import version as installed

    import altair as alt

    wanted = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    name = f"vega-bundle-vlc{installed('vl-convert-python')}-vl{wanted}.js"
    cached = _cache_dir() / name
    try:
        body, _, trailer = cached.read_bytes().rpartition(b"\n" + _SEAL)
        if body and trailer.strip().decode("ascii") == hashlib.sha256(body).hexdigest():
            return body.decode("utf-8")  # the bytes fastseg sealed, unchanged
    except (OSError, ValueError):  # absent, unreadable, damaged: made again below
        pass
    import vl_convert as vlc

    available = wanted in vlc.get_vegalite_versions()
    text = vlc.javascript_bundle(vl_version=wanted if available else None)
    body = text.encode("utf-8")
    tmp = cached.with_name(f".{name}.{os.getpid()}.tmp")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(body + b"\n" + _SEAL + hashlib.sha256(body).hexdigest().encode() + b"\n")
        os.replace(tmp, cached)  # complete or absent, whatever else runs at the same time
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return text


#: the last line of a cached bundle: the SHA-256 of the bytes before it
_SEAL = b"//fastseg-sha256:"


def _cache_dir() -> Path:
    if os.environ.get("FASTSEG_CACHE_DIR"):
        return Path(os.environ["FASTSEG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fastseg"


def build_html(data: ReportData) -> str:
    """:func:`render` with the charts built and the JavaScript bundled (timed into ``data``)."""
    t0 = time.perf_counter()
    page = render(data)
    data.seconds += time.perf_counter() - t0
    return page
