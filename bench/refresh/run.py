"""Daily refresh from a saved state against a full recompute, whole process (spawn to exit).

The issue's benchmark: one day of 1e5 new orders onto a state of 1e7 customers (``--orders
1e8``: the 1e8-order history of ~9M customers), ``fastseg score DAY --state S`` against
``fastseg score HISTORY+DAY`` (and the same for ``fastseg run``).

Steps
-----
1. Data. The history is the ``sparse`` shape of ``fastseg bench --whole-process``
   (``DATA_DIR/orders{N}-customers{N/10}-seed0-v1/sparse.parquet``). Beside it, in ``refresh/``,
   this script makes (once, deterministically from ``--seed``):

   * ``day-2026-07-01.parquet``: 1e5 rows dated the day after the history's last, with the
     history's columns and dtypes. Each purchase copies a random purchase row of the history
     (its customer, category, channel, amount, quantity, discount and time of day: customers
     are drawn in proportion to their activity), dated 2026-07-01; ~5% of the purchases go to
     new customer ids (random 63-bit ids not in the history; some of them order twice). 0.5%
     of the rows are refunds of recent purchases of the history (same customer, category and
     channel, a negative amount of at most the purchase's, a negative quantity, an order id of
     their own, as the generator makes them). Order ids run above the history's largest, in
     time order; rows are shuffled.
   * ``full-2026-07-01/``: symlinks ``0-history.parquet`` and ``1-day-2026-07-01.parquet``
     (fastseg reads a folder's files sorted by path: history first, then the day, the order in
     which the state applies them).

2. The state is built once: ``fastseg score HISTORY --state S --out ...`` (timed: a one-off
   cost); the ``run`` refreshes start from it too (with ``--run-state own``, from a state built
   by ``fastseg run HISTORY --state S_run``). The built state is kept pristine; before every
   refresh a working copy is restored from it (``cp -a``, outside the timing), since the same
   day applied twice is refused (or, for the last input, re-applied from the state before).
3. Refresh: ``fastseg score DAY --state COPY --out X`` and ``fastseg run DAY --state COPY --out
   D``: one untimed warm-up, then ``--repeat`` timed runs; median wall time and peak RSS.
4. Full recompute: ``fastseg score FOLDER --out Y`` and ``fastseg run FOLDER --out D``,
   ``--full-repeat`` runs (default 1 at 1e8, 3 below).
5. ``--check``: the refresh's scores equal the full recompute's (Polars ``equals`` after both
   are sorted by ``customer_id``); for ``run``, every Parquet table of the run folder likewise.

Each process is started by a small launcher (``python -I -S``) that times ``posix_spawn`` to
``wait4`` and takes the peak resident set (``ru_maxrss``) of the process tree from ``wait4``
(the largest of the child and its waited-for descendants).

Usage::

    python bench/refresh/run.py --orders 1e7 --check
    python bench/refresh/run.py --orders 1e8 --check --json /work/data/final/refresh-1e8.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DAY = dt.date(2026, 7, 1)
DAY_ROWS = 100_000
NEW_SHARE = 0.05  # share of the day's purchases by new customers
REFUND_SHARE = 0.005  # share of the day's rows that are refunds of recent purchases
REFUND_DAYS = 60  # refunds are of purchases of the last REFUND_DAYS days of the history
SIZES = {"1e7": (10_000_000, 1_000_000), "1e8": (100_000_000, 10_000_000)}
DEFAULT_DATA = Path("/work/data/bench-shapes")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def size(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def median(values: list[float]) -> float:
    s = sorted(values)
    m = len(s)
    return float(s[m // 2] if m % 2 else (s[m // 2 - 1] + s[m // 2]) / 2)


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def du_bytes(path: Path) -> int | None:
    try:
        out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def git_state() -> dict[str, Any]:
    """The fastseg the children import (run from a neutral folder) and its commit."""
    r = subprocess.run(
        [sys.executable, "-c", "import fastseg; print(fastseg.__file__)"],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    from fastseg.bench.whole import _git_state

    return _git_state(Path(r.stdout.strip()).resolve().parent)


# ----------------------------------------------------------------------------------- processes


def measure(argv: list[str], logs: Path) -> dict[str, Any]:
    """Run ``argv`` as a fresh process (:func:`fastseg.bench.whole.measure_process`: wall time
    spawn to exit, peak RSS, CPU, exit), with its standard error."""
    from fastseg.bench.whole import measure_process

    logs.mkdir(parents=True, exist_ok=True)
    # dirty pages (a restored state copy: GBs at 1e8; earlier outputs) written back during the
    # timed run would slow it: flush them first, untimed
    os.sync()
    # the children run in the logs folder: `python -m fastseg` must not import a fastseg/ of
    # the current folder (a worktree of the repository) instead of the installed one
    m = measure_process(argv, logs, cwd=logs)
    raw: dict[str, Any] = m.as_dict()
    raw["command"] = " ".join(argv)
    raw["stderr"] = (logs / "stderr.txt").read_text(errors="replace")[-20000:]
    return raw


def fastseg(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "fastseg", *map(str, args)]


def restore(pristine: Path, work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(["cp", "-a", str(pristine), str(work)], check=True)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "runs": [{k: v for k, v in r.items() if k != "stderr"} for r in runs],
        "runs_s": [r["wall_s"] for r in runs],
        "command": runs[0]["command"] if runs else None,
    }
    bad = [r for r in runs if r.get("error")]
    if bad or not runs:
        out["error"] = bad[0]["error"] if bad else "not run"
        out["stderr_tail"] = bad[0]["stderr"][-4000:] if bad else ""
        return out
    out["median_s"] = median([r["wall_s"] for r in runs])
    out["peak_rss_bytes"] = int(median([r["peak_rss_bytes"] for r in runs]))
    out["max_peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in runs)
    out["cpu_s"] = median([r["cpu_s"] for r in runs])
    out["stderr_first_timed"] = runs[0]["stderr"]
    return out


# ----------------------------------------------------------------------------------- data


def make_day(history: Path, day_path: Path, seed: int) -> dict[str, Any]:
    """The day file (see the module docstring), written atomically."""
    import numpy as np
    import polars as pl
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 0xDA7, DAY.toordinal()])
    pf = pq.ParquetFile(history)
    schema = pl.read_parquet_schema(history)
    meta = pf.metadata
    # max order id: from the footer statistics
    k = pf.schema_arrow.get_field_index("order_id")
    stats = [meta.row_group(i).column(k).statistics for i in range(meta.num_row_groups)]
    if all(s is not None and s.has_min_max for s in stats):
        max_order = max(int(s.max) for s in stats)
    else:
        max_order = int(pl.scan_parquet(history).select(pl.col("order_id").max()).collect().item())
    # template rows: the history's rows are shuffled, so a few random row groups are a uniform
    # sample of it
    n_refunds = round(DAY_ROWS * REFUND_SHARE)
    n_buy = DAY_ROWS - n_refunds
    groups = sorted(
        rng.choice(meta.num_row_groups, size=min(3, meta.num_row_groups), replace=False)
    )
    sample = pl.from_arrow(pf.read_row_groups([int(g) for g in groups]))
    assert isinstance(sample, pl.DataFrame)
    buys = sample.filter(pl.col("amount") > 0)
    last = sample["order_ts"].max()
    recent = buys.filter(pl.col("order_ts") >= last - dt.timedelta(days=REFUND_DAYS))
    pick = rng.choice(buys.height, size=n_buy, replace=buys.height < n_buy)
    day_buys = buys[pick]
    # ~5% of the purchases to new customers (a pool a bit smaller than their rows: some order
    # twice); ids: random 63-bit, none in the history
    n_new_rows = round(n_buy * NEW_SHARE)
    pool_size = max(1, round(n_new_rows * 0.85))
    pool = np.unique(rng.integers(0, 2**63 - 1, size=pool_size * 2, dtype=np.int64))
    pool = rng.permutation(pool)[:pool_size]
    taken = (
        pl.scan_parquet(history)
        .select("customer_id")
        .filter(pl.col("customer_id").is_in(pl.Series(pool).implode()))
        .unique()
        .collect()["customer_id"]
        .to_numpy()
    )
    pool = pool[~np.isin(pool, taken)]
    who = rng.choice(n_buy, size=n_new_rows, replace=False)
    cust = day_buys["customer_id"].to_numpy().copy()
    cust[who] = pool[rng.integers(0, pool.size, size=n_new_rows)]
    day_buys = day_buys.with_columns(pl.Series("customer_id", cust, dtype=pl.Int64))
    # refunds of recent purchases
    rp = recent[rng.choice(recent.height, size=n_refunds, replace=False)]
    share = rng.uniform(0.2, 1.0, size=n_refunds)
    refunds = rp.with_columns(
        amount=-(pl.Series(np.round(rp["amount"].to_numpy() * share, 2)).clip(lower_bound=0.01)),
        quantity=-pl.col("quantity").abs().clip(lower_bound=1),
        discount=pl.lit(0.0),
    )
    rows = pl.concat([day_buys, refunds], how="vertical")
    # dated DAY, with the template's time of day (plus a random offset within the day)
    tod = rows["order_ts"] - rows["order_ts"].dt.truncate("1d")
    jitter = pl.Series(rng.integers(-1800, 1800, size=rows.height) * 1_000_000).cast(
        pl.Duration("us")
    )
    midnight = dt.datetime(DAY.year, DAY.month, DAY.day)
    ts = (pl.lit(midnight).cast(pl.Datetime("us")) + tod + jitter).clip(
        midnight, midnight + dt.timedelta(seconds=86_399)
    )
    rows = rows.with_columns(order_ts=ts)
    rows = rows.sort("order_ts", maintain_order=True).with_columns(
        order_id=pl.int_range(max_order + 1, max_order + 1 + rows.height, dtype=pl.Int64)
    )
    rows = rows[rng.permutation(rows.height)].select(list(schema)).cast(dict(schema))
    assert rows.schema == schema, (rows.schema, schema)
    day_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = day_path.with_suffix(".tmp.parquet")
    rows.write_parquet(tmp, compression="zstd")
    os.replace(tmp, day_path)
    hist_ids = pl.scan_parquet(history).select("customer_id").unique()
    existing = (
        pl.LazyFrame({"customer_id": rows["customer_id"].unique()})
        .join(hist_ids, on="customer_id", how="semi")
        .select(pl.len())
        .collect()
        .item()
    )
    info = {
        "path": str(day_path),
        "seed": seed,
        "date": DAY.isoformat(),
        "rows": rows.height,
        "purchases": n_buy,
        "refunds": n_refunds,
        "customers": rows["customer_id"].n_unique(),
        "customers_existing": int(existing),
        "customers_new": rows["customer_id"].n_unique() - int(existing),
        "rows_new_customers": n_new_rows,
        "order_id_min": int(rows["order_id"].min()),
        "history_max_order_id": max_order,
        "template_row_groups": [int(g) for g in groups],
        "bytes": day_path.stat().st_size,
        "seconds": time.perf_counter() - t0,
    }
    day_path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    return info


def full_folder(history: Path, day_path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    links = {
        "0-history.parquet": os.path.relpath(history, folder),
        f"1-{day_path.name}": os.path.relpath(day_path, folder),
    }
    for name, target in links.items():
        p = folder / name
        if p.is_symlink() and os.readlink(p) == target:
            continue
        p.unlink(missing_ok=True)
        p.symlink_to(target)
    for p in folder.iterdir():
        if p.name not in links:
            raise SystemExit(f"{folder}: unexpected file {p.name} (the full recompute reads all)")
    return folder


# ----------------------------------------------------------------------------------- checks


def _sorted(path: Path) -> Any:
    import polars as pl

    df = pl.read_parquet(path)
    keys = [c for c in ("customer_id", "segment", "group") if c in df.columns]
    return df.sort(keys or df.columns, maintain_order=True) if keys else df


def compare(a: Path, b: Path) -> dict[str, Any]:
    df_a, df_b = _sorted(a), _sorted(b)
    out: dict[str, Any] = {
        "file": a.name,
        "rows": df_a.height,
        "rows_other": df_b.height,
        "equal": bool(df_a.equals(df_b)),
    }
    if "customer_id" in df_a.columns:
        out["customers"] = df_a["customer_id"].n_unique()
    if not out["equal"]:
        out["columns_a"] = df_a.columns
        out["columns_b"] = df_b.columns
        if df_a.columns == df_b.columns and df_a.height == df_b.height:
            out["differing_columns"] = {
                c: int((df_a[c].ne_missing(df_b[c])).sum())
                for c in df_a.columns
                if not df_a[c].equals(df_b[c])
            }
    return out


def compare_runs(a: Path, b: Path) -> list[dict[str, Any]]:
    res = []
    for p in sorted(a.glob("*.parquet")):
        q = b / p.name
        if not q.exists():
            res.append({"file": p.name, "equal": False, "missing_in_full": True})
            continue
        res.append(compare(p, q))
    for q in sorted(b.glob("*.parquet")):
        if not (a / q.name).exists():
            res.append({"file": q.name, "equal": False, "missing_in_refresh": True})
    return res


# ----------------------------------------------------------------------------------- main


def state_info(folder: Path, logs: Path) -> dict[str, Any] | str:
    logs.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        fastseg("state", "info", folder, "--json"), capture_output=True, text=True, cwd=logs
    )
    (logs / "state-info.txt").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        return f"failed ({r.returncode}): {r.stderr.strip()[-2000:]}"
    try:
        return json.loads(r.stdout)
    except ValueError:
        return r.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--orders", choices=sorted(SIZES), default="1e7")
    ap.add_argument("--repeat", type=int, default=3, help="timed refresh runs (median)")
    ap.add_argument("--full-repeat", type=int, default=None, help="full recompute runs (1 at 1e8)")
    ap.add_argument("--check", action="store_true", help="refresh outputs == full recompute's")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="states and outputs (default: temp)")
    ap.add_argument("--keep", action="store_true", help="keep the workdir")
    ap.add_argument("--no-run", action="store_true", help="only `fastseg score`, not `fastseg run`")
    ap.add_argument(
        "--run-state",
        choices=["score", "own"],
        default="score",
        help="state the `run` refreshes start from: the one `score` built (default) or one "
        "built by `fastseg run HISTORY --state` (one more build)",
    )
    args = ap.parse_args()
    n_orders, n_cust = SIZES[args.orders]
    full_repeat = args.full_repeat or (1 if n_orders >= 10**8 else 3)
    shape_dir = args.data_dir / f"orders{n_orders}-customers{n_cust}-seed0-v1"
    history = shape_dir / "sparse.parquet"
    if not history.exists():
        raise SystemExit(f"{history} missing: make it with `fastseg bench --whole-process`")
    refresh_dir = shape_dir / "refresh"
    day_path = refresh_dir / f"day-{DAY.isoformat()}.parquet"
    t_start = time.perf_counter()
    load_before = loadavg()

    if day_path.exists() and day_path.with_suffix(".json").exists():
        day_info = json.loads(day_path.with_suffix(".json").read_text()) | {"cached": True}
        if day_info.get("seed") != args.seed:
            raise SystemExit(f"{day_path} was made with seed {day_info.get('seed')}; remove it")
        log(f"day file: {day_path} (cached)")
    else:
        log(f"making the day file {day_path}")
        day_info = make_day(history, day_path, args.seed) | {"cached": False}
        log(f"day file made in {day_info['seconds']:.1f} s: {day_info['rows']:,} rows")
    folder = full_folder(history, day_path, refresh_dir / f"full-{DAY.isoformat()}")

    base = args.workdir
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"refresh-{args.orders}-", dir=base))
    logs = work / "logs"
    log(f"work folder {work}")
    result: dict[str, Any] = {
        "format": "fastseg.bench.refresh",
        "format_version": 1,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "mem_total_bytes": mem_total(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "source": git_state(),
        "parameters": {
            "orders": n_orders,
            "customers_generated": n_cust,
            "repeat": args.repeat,
            "full_repeat": full_repeat,
            "check": args.check,
            "seed": args.seed,
        },
        "history": {"path": str(history), "bytes": history.stat().st_size},
        "day": day_info,
        "full_folder": {"path": str(folder), "files": sorted(p.name for p in folder.iterdir())},
        "method": (
            "each command a fresh process (python -m fastseg ...) started by a small launcher "
            "(python -I -S): wall time posix_spawn to wait4, peak RSS = ru_maxrss from wait4 "
            "(largest of the process tree); refresh: one untimed warm-up, then --repeat timed "
            "runs, the state restored with cp -a from a pristine copy before each (untimed); "
            "os.sync() before every measured process (untimed); "
            "full recompute: --full-repeat runs, no warm-up (the state build warmed the page "
            "cache and the kernel cache); medians"
        ),
    }
    try:
        import polars as pl

        result["machine"]["polars"] = pl.__version__
    except ImportError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    with contextlib.suppress(PackageNotFoundError):
        result["machine"]["fastseg"] = version("fastseg")

    def write_json() -> None:
        result["load_average"] = {"before": load_before, "after": loadavg()}
        result["source_after"] = git_state()  # others may commit to fastseg/ meanwhile
        result["total_seconds"] = time.perf_counter() - t_start
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=2, default=str))
            os.replace(tmp, args.json)

    commands: dict[str, Any] = {}
    result["commands"] = commands
    failures: list[str] = []

    def note(name: str, summary: dict[str, Any]) -> dict[str, Any]:
        commands[name] = summary
        if "error" in summary:
            failures.append(f"{name}: `{summary['command']}` -> {summary['error']}")
            log(f"FAILED {name}: {summary['command']}\n{summary.get('stderr_tail', '')}")
        else:
            log(f"{name}: {summary['median_s']:.2f} s, {size(summary['peak_rss_bytes'])}")
        write_json()
        return summary

    kinds = ["score"] if args.no_run else ["score", "run"]
    states: dict[str, Path] = {}
    # ---- (2) build the state (once, with `score`; `run` refreshes a copy of it too, unless
    # --run-state own: a state built by `fastseg run`)
    builds = ["score", "run"] if args.run_state == "own" and "run" in kinds else ["score"]
    result["parameters"]["run_state"] = args.run_state
    for kind in builds:
        pristine = work / f"state-{kind}"
        out = work / f"build-{kind}" / ("scores.parquet" if kind == "score" else "")
        if kind == "score":
            out.parent.mkdir(parents=True, exist_ok=True)
        argv = fastseg(kind, history, "--state", pristine, "--out", out)
        log(f"building the {kind} state: {' '.join(argv[1:])}")
        m = measure(argv, logs / f"build-{kind}")
        s = note(f"build_state_{kind}", summarize([m]))
        if "error" in s:
            continue
        s["stderr"] = m["stderr"]
        s["state_bytes"] = du_bytes(pristine)
        s["state_info"] = state_info(pristine, logs / f"build-{kind}")
        s["state_files"] = sorted(
            (p.name, p.stat().st_size) for p in pristine.iterdir() if p.is_file()
        )
        states[kind] = pristine
        write_json()

    if "run" in kinds and "run" not in states and "score" in states and args.run_state == "score":
        states["run"] = states["score"]
    # ---- (3) refresh
    refresh_out: dict[str, Path] = {}
    for kind in kinds:
        if kind not in states:
            continue
        copy = work / f"state-{kind}-work"
        out_dir = work / f"refresh-{kind}"
        out = out_dir / "scores.parquet" if kind == "score" else out_dir
        runs = []
        for i in range(args.repeat + 1):  # the first: an untimed warm-up
            restore(states[kind], copy)
            if kind == "score":
                out_dir.mkdir(parents=True, exist_ok=True)
                out.unlink(missing_ok=True)
            else:
                shutil.rmtree(out_dir, ignore_errors=True)
            argv = fastseg(kind, day_path, "--state", copy, "--out", out)
            m = measure(argv, logs / f"refresh-{kind}-{i}")
            if i == 0:
                commands[f"refresh_{kind}_warmup"] = {k: v for k, v in m.items()}
                log(f"refresh {kind} warm-up: {m['wall_s']:.2f} s, {size(m['peak_rss_bytes'])}")
                if m.get("error"):
                    runs = [m]
                    break
                continue
            runs.append(m)
            if m.get("error"):
                break
        s = note(f"refresh_{kind}", summarize(runs))
        if "error" not in s:
            refresh_out[kind] = out
            s["state_bytes_after"] = du_bytes(copy)
            s["state_info_after"] = state_info(copy, logs / f"refresh-{kind}")
            log(f"refresh {kind}: stderr of the first timed run:\n{s['stderr_first_timed']}")
        write_json()

    # ---- (4) full recompute
    full_out: dict[str, Path] = {}
    for kind in kinds:
        out_dir = work / f"full-{kind}"
        out = out_dir / "scores.parquet" if kind == "score" else out_dir
        runs = []
        for i in range(full_repeat):
            if kind == "score":
                out_dir.mkdir(parents=True, exist_ok=True)
                out.unlink(missing_ok=True)
            else:
                shutil.rmtree(out_dir, ignore_errors=True)
            argv = fastseg(kind, folder, "--out", out)
            log(f"full recompute {kind} {i + 1}/{full_repeat}: {' '.join(argv[1:])}")
            m = measure(argv, logs / f"full-{kind}-{i}")
            runs.append(m)
            if m.get("error"):
                break
        s = note(f"full_{kind}", summarize(runs))
        if "error" not in s:
            full_out[kind] = out

    # ---- ratios
    ratios = {}
    for kind in kinds:
        r, f = commands.get(f"refresh_{kind}", {}), commands.get(f"full_{kind}", {})
        if "median_s" in r and "median_s" in f:
            ratios[kind] = {
                "full_over_refresh_time": f["median_s"] / r["median_s"],
                "refresh_over_full_peak_rss": r["peak_rss_bytes"] / f["peak_rss_bytes"],
            }
    result["ratios"] = ratios

    # ---- (5) check
    if args.check:
        checks: dict[str, Any] = {}
        for kind in kinds:
            if kind in refresh_out and kind in full_out:
                if kind == "score":
                    checks[kind] = [compare(refresh_out[kind], full_out[kind])]
                else:
                    checks[kind] = compare_runs(refresh_out[kind], full_out[kind])
                for c in checks[kind]:
                    tag = "equal" if c["equal"] else "DIFFERENT"
                    log(f"check {kind} {c['file']}: {tag}, {c['rows']:,} rows")
                    if not c["equal"]:
                        failures.append(f"check {kind} {c['file']}: differs ({c})")
            else:
                checks[kind] = "not compared (a command failed)"
        result["check"] = checks
    result["failures"] = failures
    write_json()

    # ---- (6) table
    print()
    print(f"fastseg refresh benchmark: history {n_orders:,} orders, day {day_info['rows']:,} rows")
    print(
        f"machine: {result['machine']['nproc']} cores, {size(result['machine']['mem_total_bytes'])};"
        f" load average before {load_before}, after {loadavg()}"
    )
    print(f"{'command':<22} {'runs':>4} {'median s':>10} {'peak RSS':>10}  command line")
    for name, c in commands.items():
        if name.endswith("_warmup"):
            continue
        if "error" in c:
            print(f"{name:<22} FAILED: {c['error'][:80]}")
            continue
        print(
            f"{name:<22} {len(c['runs']):>4} {c['median_s']:>10.2f} "
            f"{size(c['peak_rss_bytes']):>10}  {c['command'].split(' -m ', 1)[-1][:110]}"
        )
    for kind in builds:
        b = commands.get(f"build_state_{kind}", {})
        if "state_bytes" in b:
            print(f"state ({kind}) on disk: {size(b['state_bytes'])} ({b['state_bytes']:,} bytes)")
    for kind, r in ratios.items():
        print(
            f"{kind}: full recompute / refresh = {r['full_over_refresh_time']:.1f}x time; "
            f"refresh peak / full peak = {r['refresh_over_full_peak_rss']:.2f}"
        )
    if args.check:
        for kind, cs in result["check"].items():
            if isinstance(cs, str):
                print(f"check {kind}: {cs}")
                continue
            for c in cs:
                who = f", {c['customers']:,} customers" if "customers" in c else ""
                print(
                    f"check {kind} {c['file']}: {'equal' if c['equal'] else 'DIFFERENT'}"
                    f" ({c['rows']:,} rows{who})"
                )
    if args.json:
        print(f"JSON: {args.json}")
    for f in failures:
        print(f"FAILURE: {f}")
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work folder kept: {work}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
