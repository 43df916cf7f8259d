"""BG/NBD and Gamma-Gamma: the kernels against plain references written from the papers'
formulas (scipy.special), parameter recovery on data simulated from known parameters, and the
closed forms (P(alive), expected purchases, expected order value) against scalar references."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("scipy")
from scipy.special import betaln, digamma, gammaln, hyp2f1  # noqa: E402

from fastseg.btyd import BGNBD, GammaGamma, distinct_rows  # noqa: E402
from fastseg.errors import DataError, ParameterError  # noqa: E402
from fastseg.kernels import btyd as K  # noqa: E402

# CDNOW's published estimates (weeks): Fader, Hardie & Lee (2005)
CDNOW = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


# ------------------------------------------------------------------------------- references


def bgnbd_ref(params: tuple[float, ...], x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> float:
    """Eq. (6) of Fader, Hardie & Lee (2005), in its product form:
    L = B(a, b+x)/B(a, b) Γ(r+x) α^r / (Γ(r) (α+T)^(r+x))
        + [x>0] B(a+1, b+x-1)/B(a, b) Γ(r+x) α^r / (Γ(r) (α+t_x)^(r+x))."""
    r, alpha, a, b = params
    total = 0.0
    for xi, ti, Ti in zip(x, tx, T, strict=True):
        g = math.exp(gammaln(r + xi) - gammaln(r) + r * math.log(alpha))
        first = math.exp(betaln(a, b + xi) - betaln(a, b)) * g / (alpha + Ti) ** (r + xi)
        second = 0.0
        if xi > 0:
            second = (
                math.exp(betaln(a + 1, b + xi - 1) - betaln(a, b)) * g / (alpha + ti) ** (r + xi)
            )
        total += math.log(first + second)
    return total


def gg_ref(params: tuple[float, ...], x: np.ndarray, m: np.ndarray) -> float:
    """Fader & Hardie (2013): the density of the mean m of x Gamma(p, ν) values, ν ~ Gamma(q, γ):
    Γ(px+q) / (Γ(px) Γ(q)) γ^q m^(px-1) x^(px) / (γ + m x)^(px+q)."""
    p, q, v = params
    return float(
        np.sum(
            gammaln(p * x + q)
            - gammaln(p * x)
            - gammaln(q)
            + q * np.log(v)
            + (p * x - 1) * np.log(m)
            + p * x * np.log(x)
            - (p * x + q) * np.log(v + m * x)
        )
    )


def p_alive_ref(params: dict, x: float, tx: float, T: float) -> float:
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    if x == 0:
        return 1.0
    return 1.0 / (1.0 + a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x))


def expected_ref(params: dict, t: float, x: float, tx: float, T: float) -> float:
    """Eq. (10) of Fader, Hardie & Lee (2005), one customer."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    head = (a + b + x - 1) / (a - 1)
    tail = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(
        r + x, b + x, a + b + x - 1, t / (alpha + T + t)
    )
    return head * tail * p_alive_ref(params, x, tx, T)


def simulate(n: int, r: float, alpha: float, a: float, b: float, seed: int) -> tuple:
    """Histories drawn from the BG/NBD process: λ ~ Gamma(r, α), p ~ Beta(a, b); purchases at
    rate λ from a first purchase at 0; after each repeat purchase the customer drops out with
    probability p; observed for T ~ U(30, 78) weeks."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1.0 / alpha, n)
    drop = rng.beta(a, b, n)
    T = rng.uniform(30, 78, n)
    t = np.zeros(n)
    x = np.zeros(n)
    tx = np.zeros(n)
    alive = np.ones(n, bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        t[idx] += rng.exponential(1.0 / np.maximum(lam[idx], 1e-300))
        over = t[idx] > T[idx]
        alive[idx[over]] = False
        buy = idx[~over]
        x[buy] += 1
        tx[buy] = t[buy]
        alive[buy[rng.random(buy.size) < drop[buy]]] = False
    return x, tx, T


def histories(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 15, n).astype(float)
    T = rng.uniform(0.5, 60, n)
    tx = np.where(x > 0, rng.uniform(0, 1, n) * T, 0.0)
    return x, tx, T


# ------------------------------------------------------------------------------- kernels


def test_digamma_equals_scipy() -> None:
    x = np.geomspace(1e-8, 1e8, 5000)
    ours, ref = K.digamma(x), digamma(x)
    assert np.allclose(ours, ref, rtol=1e-12, atol=1e-12)


@settings(max_examples=40)
@given(
    st.tuples(st.floats(0.01, 20), st.floats(0.01, 100), st.floats(0.01, 20), st.floats(0.01, 20)),
    st.integers(0, 10_000),
)
def test_bgnbd_loglik_and_gradient_equal_the_paper(params: tuple, seed: int) -> None:
    x, tx, T = histories(60, seed)
    ll, grad = K.bgnbd_loglik(params, x, tx, T)
    assert ll == pytest.approx(bgnbd_ref(params, x, tx, T), rel=1e-9, abs=1e-8)
    for i in range(4):  # central differences of the reference
        h = 1e-6 * params[i]
        up = list(params)
        dn = list(params)
        up[i] += h
        dn[i] -= h
        numeric = (bgnbd_ref(tuple(up), x, tx, T) - bgnbd_ref(tuple(dn), x, tx, T)) / (2 * h)
        assert grad[i] == pytest.approx(numeric, rel=1e-4, abs=1e-3)


@settings(max_examples=40)
@given(st.tuples(st.floats(0.1, 30), st.floats(0.1, 30), st.floats(0.1, 500)), st.integers(0, 999))
def test_gamma_gamma_loglik_and_gradient_equal_the_paper(params: tuple, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 20, 80).astype(float)
    m = rng.gamma(2.0, 30.0, 80) + 0.5
    ll, grad = K.gamma_gamma_loglik(params, x, m)
    assert ll == pytest.approx(gg_ref(params, x, m), rel=1e-10, abs=1e-8)
    for i in range(3):
        h = 1e-6 * params[i]
        up = list(params)
        dn = list(params)
        up[i] += h
        dn[i] -= h
        numeric = (gg_ref(tuple(up), x, m) - gg_ref(tuple(dn), x, m)) / (2 * h)
        assert grad[i] == pytest.approx(numeric, rel=1e-4, abs=1e-3)


def test_weights_equal_repeated_rows() -> None:
    x, tx, T = histories(200, 3)
    rep = np.random.default_rng(4).integers(1, 5, 200)
    full = K.bgnbd_loglik(
        tuple(CDNOW.values()), np.repeat(x, rep), np.repeat(tx, rep), np.repeat(T, rep)
    )
    weighted = K.bgnbd_loglik(tuple(CDNOW.values()), x, tx, T, rep.astype(float))
    assert weighted[0] == pytest.approx(full[0], rel=1e-12)
    assert np.allclose(weighted[1], full[1], rtol=1e-10)
    (ux, utx, uT), w = distinct_rows(np.repeat(x, rep), np.repeat(tx, rep), np.repeat(T, rep))
    assert w.sum() == rep.sum() and ux.size == np.unique(np.c_[x, tx, T], axis=0).shape[0]


# ------------------------------------------------------------------------------- fitting


def _standard_errors(model: BGNBD, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> np.ndarray:
    """From the observed information: the Hessian by central differences of the gradient."""
    p = np.array([model.params_[k] for k in BGNBD.NAMES])
    hess = np.empty((4, 4))
    for i in range(4):
        h = 1e-5 * p[i]
        up, dn = p.copy(), p.copy()
        up[i] += h
        dn[i] -= h
        hess[:, i] = (
            K.bgnbd_loglik(tuple(up), x, tx, T)[1] - K.bgnbd_loglik(tuple(dn), x, tx, T)[1]
        ) / (2 * h)
    return np.sqrt(np.diag(np.linalg.inv(-hess)))


def test_fit_recovers_known_parameters() -> None:
    x, tx, T = simulate(100_000, *CDNOW.values(), seed=11)
    model = BGNBD().fit(x, tx, T)
    se = _standard_errors(model, x, tx, T)
    for (name, true), s in zip(CDNOW.items(), se, strict=True):
        assert abs(model.params_[name] - true) < 4 * s, (name, model.params_[name], true, s)
    # the maximum: the gradient vanishes there
    _, grad = K.bgnbd_loglik(tuple(model.params_.values()), x, tx, T)
    assert np.abs(grad * np.array(list(model.params_.values()))).max() < 1e-2
    assert model.loglik_ == pytest.approx(
        K.bgnbd_loglik(tuple(model.params_.values()), x, tx, T)[0]
    )


def test_gamma_gamma_recovers_known_parameters() -> None:
    rng = np.random.default_rng(5)
    p, q, v = 6.25, 3.74, 15.44  # Fader & Hardie's CDNOW estimates
    n = 50_000
    x = rng.integers(1, 12, n).astype(float)
    nu = rng.gamma(q, 1.0 / v, n)
    m = np.array([rng.gamma(p, 1.0 / nu_i, int(k)).mean() for nu_i, k in zip(nu, x, strict=True)])
    model = GammaGamma().fit(x, m)
    for name, true in (("p", p), ("q", q), ("v", v)):
        assert model.params_[name] == pytest.approx(true, rel=0.1), (name, model.params_)
    # the conditional expectation: between the customer's mean and the population's
    ev = model.expected_value(x[:5], m[:5])
    pp, qq, vv = (model.params_[k] for k in ("p", "q", "v"))
    assert np.allclose(ev, pp * (vv + x[:5] * m[:5]) / (pp * x[:5] + qq - 1))
    assert model.expected_value([0], [np.nan])[0] == pytest.approx(pp * vv / (qq - 1))


def test_closed_forms_equal_the_scalar_references() -> None:
    model = BGNBD.from_dict(CDNOW, "weeks")
    x, tx, T = histories(300, 8)
    pa = model.p_alive(x, tx, T)
    ev = model.expected_purchases(39.0, x, tx, T)
    for i in range(300):
        assert pa[i] == pytest.approx(p_alive_ref(CDNOW, x[i], tx[i], T[i]), rel=1e-12)
        assert ev[i] == pytest.approx(expected_ref(CDNOW, 39.0, x[i], tx[i], T[i]), rel=1e-10)
    assert (pa[x == 0] == 1).all()
    assert (model.expected_purchases(0.0, x, tx, T) == 0).all()
    # more time, more purchases expected
    assert (model.expected_purchases(52.0, x, tx, T) >= ev).all()


def test_expected_purchases_match_a_simulation() -> None:
    """E[Y(t)] for a new customer (x = t_x = T = 0) is the unconditional expectation; check it
    against the mean of simulated purchase counts."""
    model = BGNBD.from_dict(CDNOW, "weeks")
    rng = np.random.default_rng(2)
    n, t = 200_000, 52.0
    lam = rng.gamma(CDNOW["r"], 1 / CDNOW["alpha"], n)
    drop = rng.beta(CDNOW["a"], CDNOW["b"], n)
    # the customer is alive at 0 (no purchase yet): purchases in (0, t]
    count = np.zeros(n)
    clock = np.zeros(n)
    alive = np.ones(n, bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        clock[idx] += rng.exponential(1 / np.maximum(lam[idx], 1e-300))
        over = clock[idx] > t
        alive[idx[over]] = False
        buy = idx[~over]
        count[buy] += 1
        alive[buy[rng.random(buy.size) < drop[buy]]] = False
    expected = model.expected_purchases(t, [0.0], [0.0], [0.0])[0]
    assert count.mean() == pytest.approx(expected, rel=0.03)


def test_fit_failures_are_one_clear_error() -> None:
    with pytest.raises(DataError, match="no customer has a repeat purchase day"):
        BGNBD().fit([0, 0, 0], [0, 0, 0], [5, 6, 7])
    with pytest.raises(DataError, match="not a valid history"):
        BGNBD().fit([1, 2], [3, 9], [5, 6])  # t_x > T
    with pytest.raises(DataError, match="no customers"):
        BGNBD().fit([], [], [])
    with pytest.raises(DataError, match="fewer than 2 customers"):
        GammaGamma().fit([0, 1], [0, 5.0])
    with pytest.raises(ParameterError, match="not fitted"):
        BGNBD().p_alive([1], [1], [2])
    with pytest.raises(ParameterError, match="positive"):
        BGNBD.from_dict({"r": -1, "alpha": 1, "a": 1, "b": 1}, "weeks")
    at_one = BGNBD.from_dict({"r": 1, "alpha": 1, "a": 1.0, "b": 2}, "weeks")
    near = BGNBD.from_dict({"r": 1, "alpha": 1, "a": 1.0 + 1e-6, "b": 2}, "weeks")
    args = (5.0, [2.0], [3.0], [4.0])
    assert at_one.expected_purchases(*args)[0] == pytest.approx(
        near.expected_purchases(*args)[0], rel=1e-5
    )


def test_bench_predict_smoke(tmp_path: Path) -> None:
    """bench/bench_predict.py runs end to end at a tiny size with the fastseg contender, writes
    its JSON with the fitted parameters, and reports a contender whose interpreter is missing as
    unavailable, with the reason, instead of failing (timings are never asserted)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "predict.json"
    done = subprocess.run(
        [
            sys.executable,
            str(root / "bench" / "bench_predict.py"),
            "--customers",
            "2000",
            "--contenders",
            "fastseg,lifetimes",
            "--venv-python",
            str(tmp_path / "no-venv" / "python"),
            "--repeat",
            "1",
            "--data-dir",
            str(tmp_path / "data"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["installs"]["lifetimes"]["available"] is False
    assert "does not exist" in report["installs"]["lifetimes"]["reason"]
    (size,) = report["sizes"]
    assert size["customers"] == 2000 and size["summary"]["customers"] == 2000
    fast = size["contenders"]["fastseg"]
    assert set(fast["params"]["bgnbd"]) == {"r", "alpha", "a", "b"}
    assert set(fast["params"]["gamma_gamma"]) == {"p", "q", "v"}
    assert fast["wall_s"] > 0 and fast["peak_rss_bytes"] > 0
    assert set(size["contenders"]) == {"fastseg"}
