"""What each customer will do next: the BG/NBD and Gamma-Gamma models over the BTYD summary of a
scores frame (:data:`fastseg.features.BTYD_COLUMNS`), and the checks of a fit on held-out orders.

:func:`predict_frame` adds, per customer with a purchase day (others get nulls):

``p_alive``
    P(the customer is still active at the scoring date).
``expected_orders_30d``, ``expected_orders_90d``, ``expected_orders_365d`` (and ``_<H>d`` for
another ``horizon``)
    Expected purchase days in the next 30, 90, 365 (H) days.
``expected_order_value``
    Gamma-Gamma's expected value of a purchase day (the customer's mean shrunk towards the
    population's; the population's for customers without a repeat purchase day).
``clv``
    Expected revenue over the horizon: ``expected_order_value`` times the expected purchase days,
    discounted when a rate is given (annual rate ``R``, in 30-day steps: the purchases expected
    in step ``i`` are worth ``(1 + R) ** -(t_i / 365)``).
``clv_score``
    1 to 5: the exact quintile of ``clv`` among the customers predicted (as RFM's scores: equal
    values share a score).
``churn_risk``
    ``high`` (p_alive < 0.3), ``medium`` (0.3 to 0.7), ``low`` (0.7 and more).

Predictions depend on a customer's ``(x, t_x, T)`` only, so they are computed once per distinct
history and gathered back.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from fastseg.btyd import BGNBD, UNITS, GammaGamma
from fastseg.errors import DataError, ParameterError
from fastseg.features import BTYD_COLUMNS

__all__ = [
    "HORIZONS",
    "PARAMS_FORMAT",
    "Prediction",
    "churn_band",
    "fit",
    "holdout_table",
    "load_params",
    "params_doc",
    "predict_frame",
    "predicted_columns",
]

#: the horizons (days) of the expected_orders_<N>d columns, always computed
HORIZONS = (30, 90, 365)
PARAMS_FORMAT = "fastseg-btyd-1"
#: p_alive below the first bound: high churn risk; below the second: medium
CHURN_BOUNDS = (0.3, 0.7)
CHURN_BANDS = ("high", "medium", "low")
CLV_STEP_DAYS = 30
#: clv_score: 1..5, exact quintiles of clv (as RFM's scores: ties share a score)
CLV_BINS = 5


def predicted_columns(horizon: int = 365) -> tuple[str, ...]:
    """The columns :func:`predict_frame` adds, in order."""
    days = sorted({*HORIZONS, int(horizon)})
    return (
        "p_alive",
        *(f"expected_orders_{d}d" for d in days),
        "expected_order_value",
        "clv",
        "clv_score",
        "churn_risk",
    )


def prediction_schema(horizon: int = 365) -> dict[str, pl.DataType]:
    """The types of the columns ``run --predict`` adds (the BTYD summary and the predictions)."""
    from fastseg.schema import PREDICTED_TYPES

    types = dict(PREDICTED_TYPES)
    types[f"expected_orders_{int(horizon)}d"] = pl.Float64()
    return types


@dataclass
class Prediction:
    """The predictions (``frame``: ``customer_id``, the BTYD summary and the predicted columns),
    the models and the parameters document (``params``, as ``--params-out`` writes it)."""

    frame: pl.DataFrame
    bgnbd: BGNBD
    gamma_gamma: GammaGamma
    unit: str
    horizon: int
    discount_rate: float | None
    fitted: bool
    params: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    #: with a holdout: ``from``, ``to``, ``table`` (per calibration frequency), ``totals``
    holdout: dict[str, Any] | None = None
    #: the scoring run the predictions were made from (:class:`fastseg.api.ScoreResult`)
    score: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _check_options(unit: str, horizon: int, discount_rate: float | None) -> None:
    if unit not in UNITS:
        msg = f"unit: expected one of {', '.join(UNITS)}, got {unit!r}"
        raise ParameterError(msg)
    if isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= 36_500:
        msg = f"horizon: expected whole days from 1 to 36,500, got {horizon!r}"
        raise ParameterError(msg)
    if discount_rate is not None and not (0 <= discount_rate < 10 and math.isfinite(discount_rate)):
        msg = f"discount_rate: expected an annual rate from 0 to 10 (0.1 = 10%), got {discount_rate!r}"
        raise ParameterError(msg)


def _histories(scores: pl.DataFrame, unit: str) -> pl.DataFrame:
    missing = [c for c in BTYD_COLUMNS if c not in scores.columns]
    if missing:
        msg = (
            f"predictions need the BTYD summary columns ({', '.join(missing)} missing): score "
            "the orders with predictions asked for (fastseg predict, or fastseg run --predict)"
        )
        raise ParameterError(msg)
    u = UNITS[unit]
    return scores.select(
        x=pl.col("btyd_frequency").cast(pl.Float64),
        t_x=pl.col("btyd_recency").cast(pl.Float64) / u,
        T=pl.col("btyd_T").cast(pl.Float64) / u,
        m=pl.col("btyd_monetary").cast(pl.Float64),
    )


def churn_band(p_alive: pl.Expr) -> pl.Expr:
    """``high`` / ``medium`` / ``low`` from ``p_alive`` (null stays null)."""
    lo, hi = CHURN_BOUNDS
    return (
        pl.when(p_alive < lo)
        .then(pl.lit("high"))
        .when(p_alive < hi)
        .then(pl.lit("medium"))
        .when(p_alive.is_not_null())
        .then(pl.lit("low"))
        .cast(pl.Enum(list(CHURN_BANDS)))
    )


def predict_frame(
    scores: pl.DataFrame,
    *,
    unit: str = "weeks",
    horizon: int = 365,
    discount_rate: float | None = None,
    params: dict[str, Any] | None = None,
    as_of: dt.date | None = None,
) -> Prediction:
    """Fit (or, with ``params``, load) the models and predict every customer of ``scores``."""
    import time

    _check_options(unit, horizon, discount_rate)
    t0 = time.perf_counter()
    if params is not None:  # the saved unit: alpha is in it
        bg, gg, unit = _models(params, unit)
    h = _histories(scores, unit)
    has = h["x"].is_not_null().to_numpy()
    known = h.filter(pl.Series(has))
    x, tx, T, m = (known[c].to_numpy() for c in ("x", "t_x", "T", "m"))
    fitted = params is None
    if fitted:
        bg, gg = _fit_models(x, tx, T, m, unit)
    t_fit = time.perf_counter()
    # once per distinct history, gathered back
    hist = pl.DataFrame({"x": x, "t_x": tx, "T": T})
    uniq = hist.unique(maintain_order=False).with_row_index("_u")
    inverse = hist.join(uniq, on=["x", "t_x", "T"], how="left", maintain_order="left")["_u"]
    inverse = inverse.to_numpy()
    ux, utx, uT = (uniq[c].to_numpy() for c in ("x", "t_x", "T"))
    u = UNITS[unit]
    cols: dict[str, np.ndarray] = {"p_alive": bg.p_alive(ux, utx, uT)[inverse]}
    steps = sorted({*HORIZONS, horizon})
    expected = {d: bg.expected_purchases(d / u, ux, utx, uT) for d in steps}
    for d in steps:
        cols[f"expected_orders_{d}d"] = expected[d][inverse]
    value = gg.expected_value(x, m)
    cols["expected_order_value"] = value
    if discount_rate:
        edges = [
            min(CLV_STEP_DAYS * i, horizon)
            for i in range(1, math.ceil(horizon / CLV_STEP_DAYS) + 1)
        ]
        worth = np.zeros(ux.size)
        before = np.zeros(ux.size)
        for t_i in edges:
            e = expected[t_i] if t_i in expected else bg.expected_purchases(t_i / u, ux, utx, uT)
            worth += (e - before) * (1.0 + discount_rate) ** (-(t_i / 365.0))
            before = e
        cols["clv"] = value * worth[inverse]
    else:
        cols["clv"] = value * cols[f"expected_orders_{horizon}d"]
    bad = {name: int((~np.isfinite(v)).sum()) for name, v in cols.items()}
    bad = {k: v for k, v in bad.items() if v}
    if bad:
        r, alpha, a, b = (bg.params_[k] for k in BGNBD.NAMES)
        name, count = next(iter(bad.items()))
        msg = (
            f"the fitted model gives no finite {name} for {count:,} customers (BG/NBD r={r:.4g}, "
            f"alpha={alpha:.4g}, a={a:.4g}, b={b:.4g}): "
            + (
                "a near 0 and r, alpha very large mean the history shows no dropout and the "
                "same rate for everyone, where the model degenerates; "
                if a < 1e-3 or r > 1e4
                else ""
            )
            + "check the orders' dates, or fit on more varied history"
        )
        raise DataError(msg)
    out = scores.select("customer_id", *BTYD_COLUMNS)
    rows = np.flatnonzero(has)
    for name, values in cols.items():
        full = np.full(scores.height, np.nan)
        full[rows] = values
        out = out.with_columns(pl.Series(name, full).fill_nan(None))
    score = np.zeros(scores.height, np.uint8)
    if rows.size:  # exact quintiles of clv among the customers predicted (ties share a score)
        from fastseg.kernels.quantile import apply_edges, quantile_edges

        score[rows] = apply_edges(cols["clv"], quantile_edges(cols["clv"], CLV_BINS))
    out = out.with_columns(
        pl.Series("clv_score", score).replace(0, None).cast(pl.UInt8),
        churn_band(pl.col("p_alive")).alias("churn_risk"),
    )
    doc = params_doc(bg, gg, unit, as_of)
    return Prediction(
        frame=out,
        bgnbd=bg,
        gamma_gamma=gg,
        unit=unit,
        horizon=horizon,
        discount_rate=discount_rate,
        fitted=fitted,
        params=doc,
        seconds={"fit": t_fit - t0, "predict": time.perf_counter() - t_fit},
    )


def _fit_models(x: Any, tx: Any, T: Any, m: Any, unit: str) -> tuple[BGNBD, GammaGamma]:
    return BGNBD(unit=unit).fit(x, tx, T), GammaGamma().fit(x, m)


def fit(scores: pl.DataFrame, *, unit: str = "weeks") -> tuple[BGNBD, GammaGamma]:
    """The two models fitted to the customers of ``scores`` with a purchase day (no
    predictions: the holdout check needs only the fit)."""
    h = _histories(scores, unit).drop_nulls("x")
    return _fit_models(*(h[c].to_numpy() for c in ("x", "t_x", "T", "m")), unit)


def params_doc(
    bg: BGNBD, gg: GammaGamma, unit: str, as_of: dt.date | None = None
) -> dict[str, Any]:
    """The parameters document ``--params-out`` writes (format ``fastseg-btyd-1``)."""
    return {
        "format": PARAMS_FORMAT,
        "unit": unit,
        **({"as_of": str(as_of)} if as_of else {}),
        "bgnbd": bg.to_dict(),
        "gamma_gamma": gg.to_dict(),
    }


def _models(doc: dict[str, Any], unit: str) -> tuple[BGNBD, GammaGamma, str]:
    if not isinstance(doc, dict) or not isinstance(doc.get("bgnbd"), dict):
        msg = "parameters: expected a JSON object with 'unit', 'bgnbd' and 'gamma_gamma'"
        raise ParameterError(msg)
    saved = doc.get("unit", "weeks")
    if saved not in UNITS:
        msg = f"parameters: unit {saved!r} is not one of {', '.join(UNITS)}"
        raise ParameterError(msg)
    gg = doc.get("gamma_gamma")
    if not isinstance(gg, dict):
        msg = "parameters: 'gamma_gamma' is missing"
        raise ParameterError(msg)
    return BGNBD.from_dict(doc["bgnbd"], saved), GammaGamma.from_dict(gg), saved


def load_params(path: Any) -> dict[str, Any]:
    """The parameters document written by ``--params-out`` (one line naming the problem)."""
    from pathlib import Path

    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"--params-in {p}: no such file (write one with --params-out)"
        raise ParameterError(msg) from None
    except (OSError, ValueError) as exc:
        msg = f"--params-in {p}: not a fastseg parameters file ({exc})"
        raise ParameterError(msg) from None
    if not isinstance(doc, dict) or doc.get("format") != PARAMS_FORMAT:
        msg = f"--params-in {p}: not a fastseg parameters file (format {PARAMS_FORMAT!r} expected)"
        raise ParameterError(msg)
    try:
        _models(doc, str(doc.get("unit")))
        if "as_of" in doc:
            dt.date.fromisoformat(doc["as_of"])
    except (ParameterError, TypeError, ValueError) as exc:
        msg = f"--params-in {p}: {exc}"
        raise ParameterError(msg) from None
    return doc


def holdout_table(
    calibration: pl.DataFrame, bgnbd: BGNBD, actual_days: pl.DataFrame, days: int
) -> tuple[pl.DataFrame, dict[str, float]]:
    """Predicted against actual repeat purchase days in a holdout period of ``days`` days.

    ``calibration``: the scores (with the BTYD summary) of the calibration period, ``bgnbd``
    fitted to them; ``actual_days``: ``customer_id``, ``actual`` (purchase days in the holdout
    period) for the calibration's customers. Rows per ``btyd_frequency`` in the calibration
    period (0 .. 6 and 7+): customers, mean predicted, mean actual; and the totals.
    """
    u = UNITS[bgnbd.unit]
    f = calibration.filter(pl.col("btyd_frequency").is_not_null())
    h = _histories(f, bgnbd.unit)
    pred = bgnbd.expected_purchases(
        days / u, h["x"].to_numpy(), h["t_x"].to_numpy(), h["T"].to_numpy()
    )
    joined = (
        f.select("customer_id", "btyd_frequency")
        .with_columns(pl.Series("predicted", pred))
        .join(actual_days, on="customer_id", how="left")
        .with_columns(pl.col("actual").fill_null(0).cast(pl.Float64))
        .with_columns(
            pl.when(pl.col("btyd_frequency") >= 7)
            .then(pl.lit("7+"))
            .otherwise(pl.col("btyd_frequency").cast(pl.String))
            .alias("frequency")
        )
    )
    if joined.is_empty():
        msg = "holdout: no customer has a purchase day before --holdout-from"
        raise DataError(msg)
    table = (
        joined.group_by("frequency")
        .agg(
            pl.len().alias("customers"),
            pl.col("predicted").mean().alias("predicted_mean"),
            pl.col("actual").mean().alias("actual_mean"),
        )
        .with_columns(pl.col("frequency").replace("7+", "7").cast(pl.Int64).alias("_k"))
        .sort("_k")
        .drop("_k")
    )
    totals = {
        "customers": float(joined.height),
        "predicted": float(joined["predicted"].sum()),
        "actual": float(joined["actual"].sum()),
    }
    return table, totals
