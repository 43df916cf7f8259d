"""Buy-till-you-die models: BG/NBD (will the customer buy again, how often) and Gamma-Gamma (how
much per order), fitted by maximum likelihood, and what they predict per customer.

Conventions (docs/predict.md): the *BTYD summary* of a customer counts purchase **days**, not
orders: ``btyd_frequency`` = distinct days with an order minus one (the repeat purchase days),
``btyd_recency`` = time from the first to the last purchase day, ``btyd_T`` = time from the first
purchase day to the scoring date, ``btyd_monetary`` = mean revenue of the repeat purchase days
(the gross amounts of their orders; refunds are not purchases). Times are in ``unit`` (days or
weeks). These are the conventions of lifetimes and pymc-marketing, and differ from RFM's
``recency_days`` (time since the last order) and ``frequency`` (orders).

Fitting works over the distinct ``(x, t_x, T)`` triples with their counts as weights (far fewer
than customers), maximizing the log-likelihood of :mod:`fastseg.kernels.btyd` (value and gradient
in one Numba pass) with scipy's L-BFGS-B on the logarithms of the parameters.

scipy is needed (``pip install 'fastseg[ml]'``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fastseg.errors import DataError, ParameterError

__all__ = [
    "BGNBD",
    "GammaGamma",
    "distinct_rows",
    "need_scipy",
]

#: the unit of t_x, T and alpha, and its length in days
UNITS = {"days": 1.0, "weeks": 7.0}


def need_scipy() -> Any:
    """``scipy`` (its optimize and special modules), or one line naming the extra."""
    try:
        import scipy.optimize
        import scipy.special  # noqa: F401
    except ImportError:
        msg = "fastseg predict needs scipy: pip install 'fastseg[ml]'"
        raise ParameterError(msg) from None
    import scipy

    return scipy


def distinct_rows(*columns: NDArray[np.float64]) -> tuple[list[NDArray[np.float64]], NDArray]:
    """The distinct rows of the columns and how many times each occurs: ``(uniques, counts)``
    (one Polars group-by: 10M rows in well under a second)."""
    import polars as pl

    names = [f"c{i}" for i in range(len(columns))]
    frame = pl.DataFrame(
        {n: np.asarray(c, dtype=np.float64) for n, c in zip(names, columns, strict=True)}
    )
    grouped = frame.group_by(names).len().sort(names)
    return [np.ascontiguousarray(grouped[n].to_numpy(), dtype=np.float64) for n in names], grouped[
        "len"
    ].to_numpy().astype(np.float64)


def _check_summary(x: Any, t_x: Any, T: Any) -> tuple[NDArray, NDArray, NDArray]:
    xs = np.asarray(x, dtype=np.float64)
    txs = np.asarray(t_x, dtype=np.float64)
    Ts = np.asarray(T, dtype=np.float64)
    if not (xs.shape == txs.shape == Ts.shape):
        msg = "x, t_x and T must have the same length"
        raise ParameterError(msg)
    bad = ~(np.isfinite(xs) & np.isfinite(txs) & np.isfinite(Ts))
    bad |= (xs < 0) | (xs != np.floor(xs)) | (txs < 0) | (txs > Ts) | ((xs == 0) & (txs != 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        msg = (
            f"BTYD summary row {i}: x={xs[i]}, t_x={txs[i]}, T={Ts[i]} is not a valid history "
            "(need whole x >= 0, 0 <= t_x <= T, t_x = 0 when x = 0)"
        )
        raise DataError(msg)
    return xs, txs, Ts


def _fit(
    loglik: Any, start: NDArray[np.float64], names: tuple[str, ...], what: str
) -> tuple[NDArray[np.float64], float, int]:
    """Maximize ``loglik(params) -> (ll, grad)`` over positive parameters (in log space)."""
    sp = need_scipy()
    calls = {"n": 0}

    def objective(theta: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        params = np.exp(theta)
        calls["n"] += 1
        ll, grad = loglik(params)
        if not math.isfinite(ll):
            return 1e300, np.zeros_like(theta)
        return -ll, -grad * params  # d/dlog(p) = p d/dp

    res = sp.optimize.minimize(
        objective,
        np.log(start),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-30.0, 30.0)] * len(start),
        options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9},
    )
    params = np.exp(res.x)
    # L-BFGS-B may stop on a line search at a flat optimum: accepted when the gradient there is
    # negligible against the log-likelihood (relative 1e-7)
    flat = np.isfinite(res.fun) and float(np.max(np.abs(res.jac))) <= 1e-7 * max(1.0, abs(res.fun))
    if not (res.success or flat) or not np.all(np.isfinite(params)):
        msg = (
            f"{what} fit did not converge ({res.message}; "
            + ", ".join(f"{n}={v:.4g}" for n, v in zip(names, params, strict=True))
            + "): the data may not follow the model (too few repeat buyers, or a scoring date "
            "long after the last orders); try --unit weeks, or more history"
        )
        raise DataError(msg)
    if np.any(np.abs(res.x) >= 29.9):
        msg = (
            f"{what} fit ran to a bound ("
            + ", ".join(f"{n}={v:.4g}" for n, v in zip(names, params, strict=True))
            + "): the data do not identify the model's parameters; check the orders' dates "
            "and the scoring date"
        )
        raise DataError(msg)
    return params, -float(res.fun), calls["n"]


def _positive(doc: Any, names: tuple[str, ...], what: str) -> dict[str, float]:
    """Saved parameters ``names`` of ``doc``: positive finite numbers, or one line saying not."""
    ok = isinstance(doc, dict) and all(
        isinstance(doc.get(n), int | float) and not isinstance(doc.get(n), bool) for n in names
    )
    if not ok:
        msg = f"{what} parameters: expected numbers {', '.join(names)}, got {doc!r}"
        raise ParameterError(msg)
    params = {n: float(doc[n]) for n in names}
    if min(params.values()) <= 0 or not all(map(math.isfinite, params.values())):
        msg = f"{what} parameters must be positive and finite, got {params}"
        raise ParameterError(msg)
    return params


@dataclass
class BGNBD:
    """The BG/NBD model: purchases at a Poisson rate ``lambda ~ Gamma(r, alpha)`` while alive;
    after each purchase the customer drops out with probability ``p ~ Beta(a, b)``.

    Fitted state: ``params_`` (``r, alpha, a, b``; ``alpha`` in ``unit``), ``loglik_``, ``n_``
    (customers), ``n_distinct_`` (distinct histories the fit ran over).
    """

    unit: str = "weeks"
    params_: dict[str, float] = field(default_factory=dict)
    loglik_: float | None = None
    n_: int = 0
    n_distinct_: int = 0

    NAMES = ("r", "alpha", "a", "b")

    def fit(self, x: Any, t_x: Any, T: Any) -> BGNBD:
        """Fit to ``x`` repeat purchases, last at ``t_x``, observed ``T`` (in ``unit``)."""
        from fastseg.kernels.btyd import bgnbd_loglik

        xs, txs, Ts = _check_summary(x, t_x, T)
        if xs.size == 0:
            msg = "BG/NBD: no customers to fit"
            raise DataError(msg)
        if not (xs > 0).any():
            msg = (
                "BG/NBD: no customer has a repeat purchase day (every btyd_frequency is 0), so "
                "the model cannot be fitted; more history, or an earlier --holdout-from"
            )
            raise DataError(msg)
        (ux, utx, uT), w = distinct_rows(xs, txs, Ts)
        start = np.array([1.0, max(float(np.mean(Ts)), 1e-3), 1.0, 1.0])
        params, ll, _ = _fit(
            lambda p: bgnbd_loglik(tuple(p), ux, utx, uT, w), start, self.NAMES, "BG/NBD"
        )
        self.params_ = dict(zip(self.NAMES, (float(v) for v in params), strict=True))
        self.loglik_, self.n_, self.n_distinct_ = ll, int(xs.size), int(ux.size)
        return self

    def _p(self) -> tuple[float, float, float, float]:
        if not self.params_:
            msg = "the BG/NBD model is not fitted: fit it, or load parameters (--params-in)"
            raise ParameterError(msg)
        return tuple(self.params_[n] for n in self.NAMES)  # type: ignore[return-value]

    def p_alive(self, x: Any, t_x: Any, T: Any) -> NDArray[np.float64]:
        """P(alive at T | x, t_x, T) = 1 / (1 + [x > 0] a / (b + x - 1) ((alpha + T) /
        (alpha + t_x))^(r + x)) (Fader, Hardie & Lee 2005, eq. 11)."""
        r, alpha, a, b = self._p()
        xs, txs, Ts = _check_summary(x, t_x, T)
        return 1.0 / (1.0 + self._odds(xs, txs, Ts, r, alpha, a, b))

    @staticmethod
    def _odds(
        xs: NDArray, txs: NDArray, Ts: NDArray, r: float, alpha: float, a: float, b: float
    ) -> NDArray:
        out = np.zeros_like(xs)
        pos = xs > 0
        if pos.any():
            xp = xs[pos]
            log_ratio = (r + xp) * (np.log(alpha + Ts[pos]) - np.log(alpha + txs[pos]))
            out[pos] = np.exp(np.log(a) - np.log(b + xp - 1.0) + log_ratio)
        return out

    def expected_purchases(self, t: float, x: Any, t_x: Any, T: Any) -> NDArray[np.float64]:
        """E[purchases in (T, T + t] | x, t_x, T] (eq. 10)::

            (a + b + x - 1) / (a - 1) * [1 - ((alpha + T) / (alpha + T + t))^(r + x)
              * 2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t))] / (1 + [x > 0] odds)

        ``t`` in ``unit``. Valid for every ``a > 0`` (for ``a < 1`` both factors change sign);
        at ``a == 1`` exactly, where the form is 0/0, ``a`` is taken 1e-9 above 1 (the function
        is continuous there).
        """
        sp = need_scipy()
        r, alpha, a, b = self._p()
        if a == 1.0:
            a = 1.0 + 1e-9
        xs, txs, Ts = _check_summary(x, t_x, T)
        if t < 0:
            msg = f"horizon: expected a time >= 0, got {t}"
            raise ParameterError(msg)
        if t == 0:
            return np.zeros_like(xs)
        z = t / (alpha + Ts + t)
        hyp = sp.special.hyp2f1(r + xs, b + xs, a + b + xs - 1.0, z)
        ratio = np.exp((r + xs) * (np.log(alpha + Ts) - np.log(alpha + Ts + t)))
        num = (a + b + xs - 1.0) / (a - 1.0) * (1.0 - ratio * hyp)
        return num / (1.0 + self._odds(xs, txs, Ts, r, alpha, a, b))

    def to_dict(self) -> dict[str, Any]:
        return {**self.params_, "loglik": self.loglik_, "n": self.n_}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], unit: str) -> BGNBD:
        model = cls(unit=unit)
        model.params_ = _positive(doc, cls.NAMES, "bgnbd")
        model.loglik_ = doc.get("loglik")
        model.n_ = int(doc.get("n") or 0)
        return model


@dataclass
class GammaGamma:
    """The Gamma-Gamma spend model: a customer's order values are Gamma(p, nu) with ``nu ~
    Gamma(q, v)``, independent of the purchase process. Fitted on the customers with a repeat
    purchase day (``x > 0``) and their mean repeat-day value ``m > 0``.

    Fitted state: ``params_`` (``p, q, v``), ``loglik_``, ``n_``.
    """

    params_: dict[str, float] = field(default_factory=dict)
    loglik_: float | None = None
    n_: int = 0

    NAMES = ("p", "q", "v")

    def fit(self, x: Any, m: Any) -> GammaGamma:
        from fastseg.kernels.btyd import gamma_gamma_loglik

        xs = np.asarray(x, dtype=np.float64)
        ms = np.asarray(m, dtype=np.float64)
        keep = (xs > 0) & np.isfinite(ms) & (ms > 0)
        xs, ms = xs[keep], ms[keep]
        if xs.size < 2:
            msg = (
                "Gamma-Gamma: fewer than 2 customers with a repeat purchase day of positive "
                "value; the spend model cannot be fitted"
            )
            raise DataError(msg)
        (ux, um), w = distinct_rows(xs, ms)
        start = np.array([1.0, 1.0, max(float(np.mean(ms)), 1e-3)])
        params, ll, _ = _fit(
            lambda p: gamma_gamma_loglik(tuple(p), ux, um, w), start, self.NAMES, "Gamma-Gamma"
        )
        self.params_ = dict(zip(self.NAMES, (float(v) for v in params), strict=True))
        self.loglik_, self.n_ = ll, int(xs.size)
        return self

    def expected_value(self, x: Any, m: Any) -> NDArray[np.float64]:
        """E[order value | x, m] = p (v + x m) / (p x + q - 1) (the population mean ``p v /
        (q - 1)`` for ``x == 0``); needs ``q > 1``."""
        if not self.params_:
            msg = "the Gamma-Gamma model is not fitted: fit it, or load parameters (--params-in)"
            raise ParameterError(msg)
        p, q, v = (self.params_[n] for n in self.NAMES)
        if q <= 1:
            msg = f"Gamma-Gamma: q = {q:.4g} <= 1, so the expected order value is infinite"
            raise DataError(msg)
        xs = np.asarray(x, dtype=np.float64)
        ms = np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0)
        ms = np.where(xs > 0, ms, 0.0)
        return p * (v + xs * ms) / (p * xs + q - 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {**self.params_, "n": self.n_}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> GammaGamma:
        model = cls()
        model.params_ = _positive(doc, cls.NAMES, "gamma_gamma")
        model.n_ = int(doc.get("n") or 0)
        return model
