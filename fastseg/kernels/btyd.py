"""Log-likelihoods of the BG/NBD and Gamma-Gamma models, with their gradients, in one pass.

Both sum over weighted rows: the distinct ``(x, t_x, T)`` triples of the customers (BG/NBD) or the
distinct ``(x, m_x)`` pairs (Gamma-Gamma) with the number of customers sharing each as the
weight, so a fit over 10M customers costs what its distinct histories cost.

BG/NBD (Fader, Hardie & Lee 2005, eq. 6; the log form of lifetimes), per customer with ``x``
repeat purchases, the last at ``t_x``, observed for ``T``::

    A1 = lgamma(r + x) - lgamma(r) + r log(alpha)
    A2 = lgamma(a + b) + lgamma(b + x) - lgamma(b) - lgamma(a + b + x)
    A3 = -(r + x) log(alpha + T)
    A4 = log(a) - log(b + x - 1) - (r + x) log(alpha + t_x)          (x > 0 only)
    LL = A1 + A2 + log(exp(A3) + [x > 0] exp(A4))

Gamma-Gamma (Fader & Hardie 2013), per customer with ``x > 0`` repeat purchases of mean value
``m``::

    LL = lgamma(p x + q) - lgamma(p x) - lgamma(q) + q log(v) + (p x - 1) log(m)
         + p x log(x) - (p x + q) log(x m + v)

Gradients are with respect to the parameters themselves (the wrapper's optimizer works on their
logarithms and applies the chain rule). The digamma function is computed here (recurrence to
``x >= 6``, then the asymptotic series): Numba has no ``scipy.special``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray

from fastseg.kernels import CACHE

__all__ = ["bgnbd_loglik", "digamma", "gamma_gamma_loglik"]


@njit(cache=CACHE, inline="always")
def _digamma(x):  # pragma: no cover - jitted
    """psi(x) for x > 0, absolute error below 1e-13."""
    acc = 0.0
    while x < 6.0:
        acc -= 1.0 / x
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    # Bernoulli terms: 1/12, 1/120, 1/252, 1/240, 1/132, 691/32760, 1/12
    series = inv2 * (
        1.0 / 12
        - inv2
        * (
            1.0 / 120
            - inv2 * (1.0 / 252 - inv2 * (1.0 / 240 - inv2 * (1.0 / 132 - inv2 * (691.0 / 32760))))
        )
    )
    return acc + math.log(x) - 0.5 * inv - series


@njit(cache=CACHE)
def _digamma_kernel(x, out):  # pragma: no cover - jitted
    for i in range(x.shape[0]):
        out[i] = _digamma(x[i])


@njit(cache=CACHE)
def _bgnbd_kernel(r, alpha, a, b, x, tx, T, w, grad):  # pragma: no cover - jitted
    total = 0.0
    g_r = 0.0
    g_alpha = 0.0
    g_a = 0.0
    g_b = 0.0
    log_alpha = math.log(alpha)
    base2 = math.lgamma(a + b) - math.lgamma(b) - math.lgamma(r)
    psi_r = _digamma(r)
    psi_ab = _digamma(a + b)
    psi_b = _digamma(b)
    for i in range(x.shape[0]):
        xi = x[i]
        wi = w[i]
        rx = r + xi
        la_T = math.log(alpha + T[i])
        a1 = math.lgamma(rx) + r * log_alpha
        a2 = base2 + math.lgamma(b + xi) - math.lgamma(a + b + xi)
        a3 = -rx * la_T
        if xi > 0:
            la_t = math.log(alpha + tx[i])
            a4 = math.log(a) - math.log(b + xi - 1.0) - rx * la_t
            m = max(a3, a4)
            e3 = math.exp(a3 - m)
            e4 = math.exp(a4 - m)
            lse = m + math.log(e3 + e4)
            w3 = e3 / (e3 + e4)
            w4 = 1.0 - w3
        else:
            la_t = 0.0
            lse = a3
            w3 = 1.0
            w4 = 0.0
        total += wi * (a1 + a2 + lse)
        psi_rx = _digamma(rx)
        psi_abx = _digamma(a + b + xi)
        g_r += wi * (psi_rx - psi_r + log_alpha - w3 * la_T - w4 * la_t)
        d_alpha = r / alpha - w3 * rx / (alpha + T[i])
        if xi > 0:
            d_alpha -= w4 * rx / (alpha + tx[i])
        g_alpha += wi * d_alpha
        d_a = psi_ab - psi_abx
        d_b = psi_ab + _digamma(b + xi) - psi_b - psi_abx
        if xi > 0:
            d_a += w4 / a
            d_b -= w4 / (b + xi - 1.0)
        g_a += wi * d_a
        g_b += wi * d_b
    grad[0] = g_r
    grad[1] = g_alpha
    grad[2] = g_a
    grad[3] = g_b
    return total


@njit(cache=CACHE)
def _gamma_gamma_kernel(p, q, v, x, m, w, grad):  # pragma: no cover - jitted
    total = 0.0
    g_p = 0.0
    g_q = 0.0
    g_v = 0.0
    base = -math.lgamma(q) + q * math.log(v)
    psi_q = _digamma(q)
    log_v = math.log(v)
    for i in range(x.shape[0]):
        xi = x[i]
        mi = m[i]
        wi = w[i]
        px = p * xi
        lm = math.log(mi)
        lx = math.log(xi)
        lxm = math.log(xi * mi + v)
        total += wi * (
            math.lgamma(px + q)
            - math.lgamma(px)
            + base
            + (px - 1.0) * lm
            + px * lx
            - (px + q) * lxm
        )
        psi_pxq = _digamma(px + q)
        g_p += wi * xi * (psi_pxq - _digamma(px) + lm + lx - lxm)
        g_q += wi * (psi_pxq - psi_q + log_v - lxm)
        g_v += wi * (q / v - (px + q) / (xi * mi + v))
    grad[0] = g_p
    grad[1] = g_q
    grad[2] = g_v
    return total


def _f64(values: object, name: str) -> NDArray[np.float64]:
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != 1:
        msg = f"{name}: expected a 1-d array, got shape {arr.shape}"
        raise ValueError(msg)
    return arr


def digamma(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """The digamma function of positive ``x`` (the kernels' own; tests compare it to scipy's)."""
    xs = _f64(x, "x")
    if xs.size and not (xs > 0).all():
        msg = "digamma: x must be positive"
        raise ValueError(msg)
    out = np.empty_like(xs)
    _digamma_kernel(xs, out)
    return out


def bgnbd_loglik(
    params: tuple[float, float, float, float],
    x: NDArray[np.float64],
    t_x: NDArray[np.float64],
    T: NDArray[np.float64],
    weights: NDArray[np.float64] | None = None,
) -> tuple[float, NDArray[np.float64]]:
    """The BG/NBD log-likelihood of ``(r, alpha, a, b)`` summed over the rows (each counted
    ``weights`` times, default once) and its gradient ``d/d(r, alpha, a, b)``.

    ``x`` repeat purchases (whole numbers >= 0), ``t_x`` the time of the last one (0 when
    ``x == 0``), ``T`` the time observed, ``0 <= t_x <= T``; parameters positive.
    """
    r, alpha, a, b = (float(v) for v in params)
    xs, txs, Ts = _f64(x, "x"), _f64(t_x, "t_x"), _f64(T, "T")
    ws = np.ones_like(xs) if weights is None else _f64(weights, "weights")
    if not (xs.shape == txs.shape == Ts.shape == ws.shape):
        msg = "x, t_x, T and weights must have the same length"
        raise ValueError(msg)
    if min(r, alpha, a, b) <= 0:
        msg = f"BG/NBD parameters must be positive, got r={r}, alpha={alpha}, a={a}, b={b}"
        raise ValueError(msg)
    grad = np.zeros(4)
    ll = _bgnbd_kernel(r, alpha, a, b, xs, txs, Ts, ws, grad)
    return float(ll), grad


def gamma_gamma_loglik(
    params: tuple[float, float, float],
    x: NDArray[np.float64],
    m: NDArray[np.float64],
    weights: NDArray[np.float64] | None = None,
) -> tuple[float, NDArray[np.float64]]:
    """The Gamma-Gamma log-likelihood of ``(p, q, v)`` over customers with ``x > 0`` repeat
    purchases of mean value ``m > 0`` (each row counted ``weights`` times) and its gradient."""
    p, q, v = (float(t) for t in params)
    xs, ms = _f64(x, "x"), _f64(m, "m")
    ws = np.ones_like(xs) if weights is None else _f64(weights, "weights")
    if not (xs.shape == ms.shape == ws.shape):
        msg = "x, m and weights must have the same length"
        raise ValueError(msg)
    if min(p, q, v) <= 0:
        msg = f"Gamma-Gamma parameters must be positive, got p={p}, q={q}, v={v}"
        raise ValueError(msg)
    grad = np.zeros(3)
    ll = _gamma_gamma_kernel(p, q, v, xs, ms, ws, grad)
    return float(ll), grad
