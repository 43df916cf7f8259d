"""Whole-process benchmark of ``fastseg report``: time, peak memory and page size, by customers.

Two run folders are made once from an order file (``fastseg run ORDERS --as-of D-30 --out
PREV`` and ``fastseg run ORDERS --out CUR``, under ``--data-dir``); then, in fresh processes,
``fastseg report CUR --previous PREV --out X.html`` (the changes computed from the two folders)
and ``fastseg report CUR --out Y.html`` are timed from spawn to exit with their peak RSS
(``wait4``), medians of ``--repeat``. In-process stage timings (reading the aggregates,
building the chart specifications, bundling the JavaScript) are reported apart, labelled as
such: they are for finding causes.

    python bench/bench_report.py ORDERS.parquet --data-dir DIR --repeat 3 --json out.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def make_runs(orders: Path, root: Path) -> tuple[Path, Path]:
    """The previous and the current run folder of ``orders`` (made once, reused)."""
    cur, prev = root / "cur", root / "prev"
    if not (cur / "run.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "fastseg", "run", str(orders), "--out", str(cur)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    if not (prev / "run.json").is_file():
        as_of = dt.date.fromisoformat(json.loads((cur / "run.json").read_text())["as_of"])
        before = (as_of - dt.timedelta(days=30)).isoformat()
        subprocess.run(
            [sys.executable, "-m", "fastseg", "run", str(orders), "--as-of", before]
            + ["--out", str(prev)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return prev, cur


def stages(cur: Path, prev: Path | None) -> dict[str, float]:
    """In-process stage timings of one report (for causes, not for comparing)."""
    t0 = time.perf_counter()
    from fastseg import reporting
    from fastseg.runs import open_run

    imported = time.perf_counter()
    data = reporting.collect_folder(open_run(cur), open_run(prev) if prev else None)
    collected = time.perf_counter()
    specs = reporting.chart_specs(data)
    charted = time.perf_counter()
    bundle = reporting._bundle()
    bundled = time.perf_counter()
    page = reporting.render(data, specs, bundle=bundle)
    rendered = time.perf_counter()
    return {
        "import_s": imported - t0,
        "collect_s": collected - imported,
        "chart_specs_s": charted - collected,
        "bundle_s": bundled - charted,
        "render_s": rendered - bundled,
        "page_bytes": len(page.encode()),
        "bundle_bytes": len(bundle.encode()),
    }


def main() -> None:
    from fastseg.bench.whole import measure_process

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("orders", type=Path)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    root = args.data_dir / f"report-{args.orders.stem}-{args.orders.stat().st_size}"
    root.mkdir(parents=True, exist_ok=True)
    prev, cur = make_runs(args.orders, root)
    meta = json.loads((cur / "run.json").read_text())
    cases = {
        "report --previous": ["--previous", str(prev)],
        "report": [],
    }
    results: dict[str, object] = {}
    for name, extra in cases.items():
        out = root / f"{name.replace(' ', '').replace('-', '')}.html"
        argv = [sys.executable, "-m", "fastseg", "report", str(cur), *extra, "--out", str(out)]
        measure_process(argv, root / "log")  # warm-up: page cache
        runs = [measure_process(argv, root / "log") for _ in range(args.repeat)]
        bad = [r.error for r in runs if r.error]
        if bad:
            raise SystemExit(f"{name}: {bad[0]}")
        results[name] = {
            "wall_s_median": statistics.median(r.wall_s for r in runs),
            "peak_rss_bytes_median": statistics.median(r.peak_rss_bytes for r in runs),
            "runs": [r.as_dict() for r in runs],
            "page_bytes": out.stat().st_size,
        }
        print(
            f"{name:>18}: {results[name]['wall_s_median']:.2f} s  "  # type: ignore[index]
            f"{results[name]['peak_rss_bytes_median'] / 2**20:,.0f} MiB  "  # type: ignore[index]
            f"{out.stat().st_size / 1e6:.2f} MB"
        )
    inproc = stages(cur, prev)
    print(
        "in-process stages (for causes): "
        + ", ".join(f"{k} {v:.2f}" for k, v in inproc.items() if k.endswith("_s"))
    )
    doc = {
        "what": "fastseg report, whole process (spawn to exit), medians",
        "customers": meta["customers"],
        "orders_file": str(args.orders),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
        "in_process_stages": inproc,
    }
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
