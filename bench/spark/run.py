"""Spark ``local[2]`` ``fastseg.spark.score`` against one ``fastseg score`` process.

Each measured run is its own process tree, timed from launch to exit (Spark: the session and
the JVM start included) and sampled every 0.1 s for the RSS of the whole tree (driver python,
the JVM, Spark's python workers). The Spark job writes its scores to Parquet, so every row is
computed; with ``--check`` both outputs are read back and compared customer by customer.

Usage::

    python bench/spark/run.py                      # 1e6 and 1e7 orders (sliced from the 1e7 file)
    python bench/spark/run.py --rows 100000 --check --json /tmp/spark-bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SOURCE = Path("/work/data/bench-shapes/orders10000000-customers1000000-seed0-v1/sparse.parquet")


def tree_rss(proc: Any) -> int:
    """RSS in bytes of a process and all its descendants."""
    import psutil

    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``; its wall time, the peak RSS of its process tree, its last stdout line."""
    import psutil

    t0 = time.perf_counter()
    child = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    proc = psutil.Process(child.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc))
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = child.communicate()
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    if child.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({child.returncode}):\n{err[-3000:]}")
    last = [line for line in out.splitlines() if line.startswith("{")]
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak / 2**20),
        **(json.loads(last[-1]) if last else {}),
    }


def driver(path: str, partitions: int, out: str, memory: str) -> None:
    """The Spark side: a local[2] session, the orders read by Spark, scores written by Spark."""
    t0 = time.perf_counter()
    from pyspark.sql import SparkSession

    import fastseg.spark as fs

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", memory)
        .config("spark.sql.shuffle.partitions", str(partitions))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    t1 = time.perf_counter()
    res = fs.score_job(spark.read.parquet(path), partitions=partitions)
    t2 = time.perf_counter()
    res.scores.write.mode("overwrite").parquet(out)
    t3 = time.perf_counter()
    spark.stop()
    print(
        json.dumps(
            {
                "session_s": round(t1 - t0, 2),
                "features_and_edges_s": round(t2 - t1, 2),
                "scores_write_s": round(t3 - t2, 2),
                "edge_rounds": res.edge_rounds,
                "stages_s": {k: round(v, 2) for k, v in res.timings.items()},
                "partitions": partitions,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--rows-per-partition", type=int, default=1_000_000)
    ap.add_argument("--memory", default="6g", help="spark.driver.memory (local mode: all of it)")
    ap.add_argument("--check", action="store_true", help="compare the two outputs")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    ap.add_argument("--driver", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.driver:
        path, parts, out, memory = args.driver
        driver(path, int(parts), out, memory)
        return
    import polars as pl

    work = Path(tempfile.mkdtemp(prefix="fastseg-spark-bench-"))
    env = dict(os.environ)
    results = []
    for n in args.rows:
        path = args.source
        if n < pl.scan_parquet(args.source).select(pl.len()).collect().item():
            path = work / f"orders{n}.parquet"
            pl.scan_parquet(args.source).head(n).sink_parquet(path)
        parts = max(2, -(-n // args.rows_per_partition))
        one = measure(
            [
                sys.executable,
                "-m",
                "fastseg",
                "score",
                str(path),
                "--out",
                str(work / f"one{n}.parquet"),
            ],
            env,
        )
        spk = measure(
            [
                sys.executable,
                __file__,
                "--driver",
                str(path),
                str(parts),
                str(work / f"spark{n}"),
                args.memory,
            ],
            env,
        )
        row = {"orders": n, "one_process": one, "spark_local2": spk}
        if args.check:
            a = pl.read_parquet(work / f"one{n}.parquet").sort("customer_id")
            b = pl.read_parquet(work / f"spark{n}" / "*.parquet").sort("customer_id")
            from polars.testing import assert_frame_equal

            assert_frame_equal(b.cast(a.schema), a)
            row["equal"] = True
        print(json.dumps(row), flush=True)
        results.append(row)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
