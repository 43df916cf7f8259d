"""Whole-process benchmark of fastseg's BTYD models against lifetimes and pymc-marketing.

For each ``--customers`` size one customer summary is made under ``--data-dir`` (once, then
reused): a synthetic store from :func:`fastseg.synthetic.generate` (10 orders per customer),
summarised by ``order_features(..., btyd=True)`` at the last order date, the first N customers
with a purchase day (by id), in weeks: ``frequency`` = ``btyd_frequency`` (repeat purchase days),
``recency`` = ``btyd_recency / 7``, ``T`` = ``btyd_T / 7``, ``monetary_value`` =
``btyd_monetary``. Every contender reads that same Parquet file and, in one fresh process, fits
BG/NBD on all customers and Gamma-Gamma on the repeat buyers, predicts P(alive), the expected
purchases over the next 52 weeks and a 52-week CLV (expected purchases x expected order value,
undiscounted) for every customer, and writes them to Parquet (:data:`SCRIPTS`, each as the
library's documentation shows it):

* ``fastseg``: :class:`fastseg.btyd.BGNBD` / :class:`fastseg.btyd.GammaGamma` (system python);
* ``lifetimes``: ``BetaGeoFitter(penalizer_coef=0.0)`` / ``GammaGammaFitter(penalizer_coef=0.0)``;
* ``pymc``: pymc-marketing ``clv.BetaGeoModel`` / ``clv.GammaGammaModel`` with
  ``fit(method="map")`` (the maximum a posteriori point under the default priors: the
  like-for-like comparison with maximum likelihood); ``--mcmc`` also tries the default NUTS
  sampler once at the smallest size, under ``--mcmc-limit`` seconds.

lifetimes and pymc-marketing run with ``--venv-python`` (a separate virtualenv; a contender that
does not import there is reported as unavailable, with the reason). Wall time from spawn to exit
and peak RSS come from :func:`fastseg.bench.whole.measure_process`; each contender runs once as a
warm-up (Numba's and pytensor's caches, the page cache), then ``--repeat`` rounds in rotated
order (one timed run only for a contender whose warm-up took more than ``--slow`` seconds);
medians. Agreement with fastseg: the largest relative difference of the fitted parameters, and
of P(alive), the expected purchases and CLV over the customers.

The contenders' virtualenv (pip resolved numpy 2.4, pandas 3.1, lifetimes 0.11.3, pymc-marketing
0.19.2 without pins)::

    python -m venv /work/data/bench-predict-venv
    /work/data/bench-predict-venv/bin/pip install lifetimes pymc-marketing pyarrow
    python bench/bench_predict.py --customers 1e5,1e6 --mcmc --json predict-bench.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

CONTENDERS = ("fastseg", "lifetimes", "pymc")
HORIZON_WEEKS = 52
DATA_VERSION = 1

_WRITE = """
pd.DataFrame({"customer_id": df["customer_id"].to_numpy(), "p_alive": np.asarray(alive),
              "expected_purchases": np.asarray(purchases), "expected_value": np.asarray(value),
              "clv": np.asarray(purchases) * np.asarray(value)}).to_parquet(out)
"""

SCRIPTS: dict[str, str] = {
    "fastseg": """
import json, sys
import polars as pl
from fastseg.btyd import BGNBD, GammaGamma
src, out, params_out = sys.argv[1:4]
df = pl.read_parquet(src)
x, t_x, T, m = (df[c].to_numpy() for c in ("frequency", "recency", "T", "monetary_value"))
bg = BGNBD(unit="weeks").fit(x, t_x, T)
gg = GammaGamma().fit(x, m)
alive = bg.p_alive(x, t_x, T)
purchases = bg.expected_purchases(52, x, t_x, T)
value = gg.expected_value(x, m)
pl.DataFrame({"customer_id": df["customer_id"], "p_alive": alive,
              "expected_purchases": purchases, "expected_value": value,
              "clv": purchases * value}).write_parquet(out)
with open(params_out, "w") as fh:
    json.dump({"bgnbd": bg.params_, "gamma_gamma": gg.params_}, fh)
""",
    "lifetimes": """
import json, sys
import numpy as np, pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import ConvergenceError
src, out, params_out = sys.argv[1:4]
df = pd.read_parquet(src)
retried = []
def fit(model, *columns):  # lifetimes takes scipy's "precision loss" stop at the optimum for
    try:                   # a failure: then fit once more with its tol argument at 1e-6
        return model.fit(*columns)
    except ConvergenceError:
        retried.append(type(model).__name__)
        return model.fit(*columns, tol=1e-6)
bgf = fit(BetaGeoFitter(penalizer_coef=0.0), df["frequency"], df["recency"], df["T"])
rep = df[df["frequency"] > 0]
ggf = fit(GammaGammaFitter(penalizer_coef=0.0), rep["frequency"], rep["monetary_value"])
alive = bgf.conditional_probability_alive(df["frequency"], df["recency"], df["T"])
purchases = bgf.conditional_expected_number_of_purchases_up_to_time(
    52, df["frequency"], df["recency"], df["T"])
value = ggf.conditional_expected_average_profit(df["frequency"], df["monetary_value"])
"""
    + _WRITE
    + """
with open(params_out, "w") as fh:
    json.dump({"bgnbd": {k: float(v) for k, v in bgf.params_.items()},
               "gamma_gamma": {k: float(v) for k, v in ggf.params_.items()},
               "retried_with_tol_1e-6": retried}, fh)
""",
    "pymc": """
import json, sys
import numpy as np, pandas as pd
from pymc_marketing import clv
src, out, params_out = sys.argv[1:4]
method = sys.argv[4] if len(sys.argv) > 4 else "map"
df = pd.read_parquet(src)
bg = clv.BetaGeoModel(data=df[["customer_id", "frequency", "recency", "T"]])
bg.fit(method=method, progressbar=False)
rep = df[df["frequency"] > 0][["customer_id", "frequency", "monetary_value"]]
gg = clv.GammaGammaModel(data=rep)
gg.fit(method=method, progressbar=False)
def point(da):  # the posterior mean (the MAP point itself for method="map"), in df's order
    return da.mean(("chain", "draw")).to_series().reindex(df["customer_id"]).to_numpy()
alive = point(bg.expected_probability_alive(df))
purchases = point(bg.expected_purchases(df, future_t=52))
value = point(gg.expected_customer_spend(df))
"""
    + _WRITE
    + """
post = lambda m, names: {n: float(m.idata.posterior[n].mean()) for n in names}
with open(params_out, "w") as fh:
    json.dump({"bgnbd": post(bg, ["r", "alpha", "a", "b"]),
               "gamma_gamma": post(gg, ["p", "q", "v"])}, fh)
""",
}

#: what each contender's interpreter must import, and the packages whose versions are reported
_NEEDS = {
    "fastseg": ("fastseg", ["fastseg", "numpy", "polars", "scipy", "numba"]),
    "lifetimes": ("lifetimes", ["lifetimes", "numpy", "pandas", "scipy", "autograd"]),
    "pymc": ("pymc_marketing", ["pymc-marketing", "pymc", "pytensor", "numpy", "pandas"]),
}


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def make_summary(data_dir: Path, n: int, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """The BTYD summary of ``n`` customers (see the module docstring): made once, reused."""
    import polars as pl

    from fastseg import synthetic
    from fastseg.pipeline import order_features

    key = data_dir / f"summary-customers{n}-seed{seed}-v{DATA_VERSION}"
    path, meta_path = key / "summary.parquet", key / "summary.json"
    if path.exists() and meta_path.exists():
        return path, json.loads(meta_path.read_text())
    key.mkdir(parents=True, exist_ok=True)
    generated = math.ceil(n / 0.85) + 10  # about 10% of generated customers are prospects
    store = synthetic.generate(
        key / "store",
        orders=10 * generated,
        customers=generated,
        seed=seed,
        with_customers=False,
        with_events=False,
    )
    feats = order_features(store.orders, btyd=True)
    frame = (
        feats.frame.filter(pl.col("btyd_frequency").is_not_null())
        .sort("customer_id")
        .head(n)
        .select(
            pl.col("customer_id"),
            pl.col("btyd_frequency").cast(pl.Float64).alias("frequency"),
            (pl.col("btyd_recency").cast(pl.Float64) / 7.0).alias("recency"),
            (pl.col("btyd_T").cast(pl.Float64) / 7.0).alias("T"),
            pl.col("btyd_monetary").cast(pl.Float64).alias("monetary_value"),
        )
    )
    if frame.height < n:
        msg = f"only {frame.height} customers with a purchase day, wanted {n}"
        raise SystemExit(msg)
    tmp = path.with_suffix(".tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)
    meta = {
        "customers": frame.height,
        "repeat_buyers": int((frame["frequency"] > 0).sum()),
        "generated_customers": generated,
        "generated_orders": 10 * generated,
        "as_of": str(feats.as_of),
        "seed": seed,
        "mean_frequency": float(frame["frequency"].mean()),  # type: ignore[arg-type]
        "mean_T_weeks": float(frame["T"].mean()),  # type: ignore[arg-type]
        "distinct_histories": frame.select("frequency", "recency", "T").unique().height,
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    for f in (key / "store").iterdir():  # the orders are not needed again
        f.unlink()
    (key / "store").rmdir()
    return path, meta


# --------------------------------------------------------------------------------------------
# contenders
# --------------------------------------------------------------------------------------------


def probe(name: str, python: str) -> dict[str, Any]:
    """Whether ``python`` imports the contender's library, and the packages' versions."""
    module, dists = _NEEDS[name]
    code = textwrap.dedent(
        f"""
        import json, importlib.metadata as md
        import {module}
        v = {{}}
        for d in {dists!r}:
            try:
                v[d] = md.version(d)
            except md.PackageNotFoundError:
                v[d] = None
        print(json.dumps(v))
        """
    )
    if not Path(python).exists():
        return {"available": False, "python": python, "reason": f"{python} does not exist"}
    done = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=False, env=_env(name)
    )
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        return {"available": False, "python": python, "reason": lines[-1] if lines else "failed"}
    return {"available": True, "python": python, "versions": json.loads(done.stdout)}


def _env(name: str) -> dict[str, str]:
    env = dict(os.environ)
    if name == "fastseg":
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def measure(argv: list[str], log_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """:func:`fastseg.bench.whole.measure_process` with the contender's environment."""
    from fastseg.bench.whole import measure_process

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        m = measure_process(argv, log_dir)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return m.as_dict()


def rel_diff(a: Any, b: Any) -> float:
    """max |a - b| / max(|b|, 1e-12) over the elements (b the reference, fastseg's)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    d = np.abs(a - b) / np.maximum(np.abs(b), 1e-12)
    return float(np.nanmax(np.where(np.isnan(a) != np.isnan(b), np.inf, d)))


def agreement(work: Path, name: str, ref: str = "fastseg") -> dict[str, Any]:
    """How far ``name``'s parameters and predictions are from ``ref``'s."""
    import numpy as np
    import polars as pl

    p, q = (json.loads((work / f"{c}.params.json").read_text()) for c in (name, ref))
    out: dict[str, Any] = {}
    for model in ("bgnbd", "gamma_gamma"):
        names = list(q[model])
        out[f"{model}_params_max_rel"] = rel_diff(
            [p[model][k] for k in names], list(q[model].values())
        )
    a = pl.read_parquet(work / f"{name}.parquet")
    b = pl.read_parquet(work / f"{ref}.parquet")
    joined = b.join(a, on="customer_id", how="left", suffix="_c")
    out["same_customers"] = a.height == b.height and joined["p_alive_c"].null_count() == 0
    for col in ("p_alive", "expected_purchases", "clv"):
        x, y = joined[f"{col}_c"].to_numpy(), joined[col].to_numpy()
        out[f"{col}_max_rel"] = rel_diff(x, y)
        out[f"{col}_max_abs"] = float(np.nanmax(np.abs(x - y)))
    return out


def run_size(
    n: int,
    args: argparse.Namespace,
    contenders: list[str],
    pythons: dict[str, str],
) -> dict[str, Any]:
    summary, meta = make_summary(Path(args.data_dir), n, args.seed)
    work = Path(args.data_dir) / f"runs-{n}"
    work.mkdir(parents=True, exist_ok=True)
    scripts = {}
    for name in contenders:
        scripts[name] = work / f"predict_{name}.py"
        scripts[name].write_text(SCRIPTS[name].lstrip())

    def argv(name: str, tag: str, *extra: str) -> list[str]:
        return [
            pythons[name],
            str(scripts[name]),
            str(summary),
            str(work / f"{name}{tag}.parquet"),
            str(work / f"{name}{tag}.params.json"),
            *extra,
        ]

    result: dict[str, Any] = {"customers": n, "summary": meta, "load_before": os.getloadavg()}
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    warm: dict[str, dict[str, Any]] = {}
    for name in contenders:
        warm[name] = measure(argv(name, ""), work / f"logs-{name}-warm", _env(name))
        print(f"  {n:>9,} {name:<10} warm-up {warm[name]['wall_s']:8.1f} s", file=sys.stderr)
        if warm[name].get("error"):
            print(f"    error: {warm[name]['error']}", file=sys.stderr)
    live = [c for c in contenders if not warm[c].get("error")]
    for r in range(args.repeat):
        order = live[r % len(live) :] + live[: r % len(live)] if live else []
        for name in order:
            if r > 0 and warm[name]["wall_s"] > args.slow:
                continue  # one timed run for anything slower than --slow seconds
            m = measure(argv(name, ""), work / f"logs-{name}-{r}", _env(name))
            runs[name].append(m)
            print(f"  {n:>9,} {name:<10} run {r}   {m['wall_s']:8.1f} s", file=sys.stderr)
    result["contenders"] = {}
    for name in contenders:
        good = [m for m in runs[name] if not m.get("error")]
        entry: dict[str, Any] = {"warmup": warm[name], "runs": runs[name]}
        if warm[name].get("error") or not good:
            entry["error"] = warm[name].get("error") or next(
                (m["error"] for m in runs[name] if m.get("error")), "no run"
            )
        else:
            entry["wall_s"] = statistics.median(m["wall_s"] for m in good)
            entry["peak_rss_bytes"] = int(statistics.median(m["peak_rss_bytes"] for m in good))
            entry["params"] = json.loads((work / f"{name}.params.json").read_text())
        result["contenders"][name] = entry
    if "fastseg" in live:
        for name in live:
            if name != "fastseg" and "params" in result["contenders"][name]:
                result["contenders"][name]["agreement"] = agreement(work, name)
    if args.mcmc and "pymc" in live and n == min(args.sizes):
        limit = str(int(args.mcmc_limit))
        m = measure(
            ["/usr/bin/timeout", limit, *argv("pymc", "-mcmc", "mcmc")],
            work / "logs-pymc-mcmc",
            _env("pymc"),
        )
        entry = {"limit_s": args.mcmc_limit, **m}
        if m["exit"] == 124:
            entry["error"] = f"did not finish within {limit} s (stopped)"
        elif not m.get("error"):
            entry["params"] = json.loads((work / "pymc-mcmc.params.json").read_text())
            entry["agreement"] = agreement(work, "pymc-mcmc")
        result["pymc_mcmc"] = entry
        print(f"  {n:>9,} pymc mcmc  {m['wall_s']:8.1f} s exit {m['exit']}", file=sys.stderr)
    result["load_after"] = os.getloadavg()
    return result


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"{'customers':>10} {'contender':<10} {'wall s':>8} {'peak MB':>8} {'x fastseg':>9}"
        f" {'params':>9} {'p_alive':>9} {'E[purch]':>9} {'CLV':>9}",
    ]
    for size in report["sizes"]:
        base = size["contenders"].get("fastseg", {}).get("wall_s")
        for name, c in size["contenders"].items():
            if "error" in c:
                lines.append(f"{size['customers']:>10,} {name:<10} error: {c['error']}")
                continue
            ag = c.get("agreement", {})
            par = max(ag.get("bgnbd_params_max_rel", 0), ag.get("gamma_gamma_params_max_rel", 0))
            cells = [
                f"{v:9.1e}" if ag else f"{'-':>9}"
                for v in (
                    par,
                    ag.get("p_alive_max_rel", 0),
                    ag.get("expected_purchases_max_rel", 0),
                    ag.get("clv_max_rel", 0),
                )
            ]
            ratio = f"{c['wall_s'] / base:9.1f}" if base else f"{'-':>9}"
            lines.append(
                f"{size['customers']:>10,} {name:<10} {c['wall_s']:8.2f} "
                f"{c['peak_rss_bytes'] / 1e6:8.0f} {ratio} " + " ".join(cells)
            )
        if "pymc_mcmc" in size:
            m = size["pymc_mcmc"]
            lines.append(
                f"{size['customers']:>10,} {'pymc mcmc':<10} {m['wall_s']:8.1f} "
                f"{m['peak_rss_bytes'] / 1e6:8.0f} {m.get('error', '')}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", default="1e5,1e6", help="sizes, comma-separated (1e5,1e6)")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--venv-python", default="/work/data/bench-predict-venv/bin/python")
    ap.add_argument("--data-dir", default="/work/data/bench-predict")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--slow", type=float, default=300.0, help="one timed run above this (s)")
    ap.add_argument("--mcmc", action="store_true", help="also try pymc's NUTS at the least size")
    ap.add_argument("--mcmc-limit", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    args.sizes = [int(float(s)) for s in args.customers.split(",") if s.strip()]
    wanted = [c.strip() for c in args.contenders.split(",") if c.strip()]
    bad = [c for c in wanted if c not in CONTENDERS]
    if bad or "fastseg" not in wanted:
        ap.error(f"--contenders: some of {','.join(CONTENDERS)}, fastseg included; got {bad}")
    pythons = {c: (sys.executable if c == "fastseg" else args.venv_python) for c in wanted}
    installs = {c: probe(c, pythons[c]) for c in wanted}
    contenders = [c for c in wanted if installs[c]["available"]]
    for c in wanted:
        if not installs[c]["available"]:
            print(f"{c}: unavailable ({installs[c]['reason']})", file=sys.stderr)
    report: dict[str, Any] = {
        "format": "fastseg.bench.predict",
        "version": 1,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "node": platform.node(),
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "load_start": os.getloadavg(),
        },
        "horizon_weeks": HORIZON_WEEKS,
        "clv": "expected purchases over the horizon x expected order value (Gamma-Gamma), undiscounted",
        "repeat": args.repeat,
        "installs": installs,
        "scripts": {c: SCRIPTS[c].strip() for c in wanted},
        "sizes": [],
    }
    for n in args.sizes:
        report["sizes"].append(run_size(n, args, contenders, pythons))
        if args.json:  # written after each size, so a long run leaves what it measured
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=1))
    report["machine"]["load_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
