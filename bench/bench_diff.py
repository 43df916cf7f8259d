"""Whole-process benchmark of ``fastseg diff`` against a ten-line Polars anti-join recipe.

Two run folders of ``--customers`` customers (5% gone and 5% new between them, sorted by id
as fastseg writes them or ``--order shuffled``, integer or UUID ids) with ``--segments`` segments (sizes from 0.2% to 30% of
the customers, 2% of the members changing) are made once under ``--data-dir``; then, in fresh
processes, alternately, ``fastseg diff PREV CUR --out D`` and ``python recipe.py PREV CUR D``
(anti-joins of the two ``segments.parquet`` long tables both ways, the same ``changes.parquet``
and per-segment counts). Wall time from spawn to exit and peak RSS (``wait4``), medians of
``--repeat``; the outputs are checked to be the same rows.

    python bench/bench_diff.py --customers 1e7 --segments 50 --repeat 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import numpy as np
import polars as pl

RECIPE = textwrap.dedent(
    """
    import sys, polars as pl
    prev, cur, out = sys.argv[1:4]
    p = pl.scan_parquet(f"{prev}/segments.parquet").with_columns(pl.col("segment").cast(pl.String))
    c = pl.scan_parquet(f"{cur}/segments.parquet").with_columns(pl.col("segment").cast(pl.String))
    common = p.select("segment").unique().join(c.select("segment").unique(), on="segment")
    p, c = p.join(common, on="segment"), c.join(common, on="segment")
    joined = c.join(p, on=["customer_id", "segment"], how="anti").with_columns(change=pl.lit("joined"))
    left = p.join(c, on=["customer_id", "segment"], how="anti").with_columns(change=pl.lit("left"))
    changes = pl.concat([joined, left]).collect()
    changes.write_parquet(f"{out}/changes.parquet")
    changes.group_by("segment", "change").len().write_csv(f"{out}/counts.csv")
    """
)


def _ids(rng: np.random.Generator, n: int, kind: str) -> pl.Series:
    if kind == "uuid":
        raw = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
        return pl.Series("customer_id", [str(uuid.UUID(int=int(a) << 64 | int(b))) for a, b in raw])
    base = rng.choice(np.int64(40) * n, size=n, replace=False).astype(np.int64)
    return pl.Series("customer_id", base * 977 + 3_000_000_000_000)


def make_runs(
    root: Path, n: int, n_seg: int, kind: str, order: str = "sorted", seed: int = 0
) -> tuple[Path, Path]:
    """Two run folders (see the module docstring); made once, reused."""
    from fastseg.kernels import bitset as bs
    from fastseg.runs import write_membership

    key = root / f"diff-{n}-{n_seg}-{kind}-{order}-s{seed}"
    prev_dir, cur_dir = key / "prev", key / "cur"
    if (cur_dir / "run.json").exists():
        return prev_dir, cur_dir
    rng = np.random.default_rng(seed)
    n_new = n // 20
    universe = _ids(rng, n + n_new, kind)
    prev_rows = rng.permutation(n)  # the first n are the previous run's customers
    cur_rows = rng.permutation(np.arange(n_new, n + n_new))  # 5% gone, 5% new, another order
    if order == "sorted":  # as fastseg writes a run: customers sorted by id
        prev_rows = prev_rows[universe.gather(prev_rows).arg_sort().to_numpy()]
        cur_rows = cur_rows[universe.gather(cur_rows).arg_sort().to_numpy()]
    names = [f"segment_{k:02d}" for k in range(n_seg)]
    dens = np.geomspace(0.002, 0.30, n_seg)
    groups = np.array(["champions", "loyal", "at_risk", "hibernating", "new", "lost"])
    for folder in (prev_dir, cur_dir):
        folder.mkdir(parents=True, exist_ok=True)
    words = {prev_dir: [], cur_dir: []}
    for k in range(n_seg):
        base = rng.random(n + n_new) < dens[k]
        flip = rng.random(n + n_new) < 0.02 * dens[k] * 2
        words[prev_dir].append(bs.pack_bool(base[prev_rows][None, :])[0])
        words[cur_dir].append(bs.pack_bool((base ^ flip)[cur_rows][None, :])[0])
    for i, (folder, rows) in enumerate(((prev_dir, prev_rows), (cur_dir, cur_rows))):
        ids = universe.gather(rows)
        w = np.stack(words[folder])
        pl.DataFrame(
            {
                "customer_id": ids,
                "rfm_group": groups[rng.integers(0, len(groups), len(rows))],
                "monetary": np.round(rng.gamma(2.0, 50.0, len(rows)), 2),
            }
        ).write_parquet(folder / "scores.parquet")
        write_membership(folder / "membership.npz", tuple(names), w, len(rows))
        r, s = bs.members_all(w, index_dtype=np.uint32)
        pl.DataFrame(
            {
                "customer_id": ids.gather(pl.Series(r)),
                "segment": pl.Series(names, dtype=pl.Enum(names)).gather(pl.Series(s)),
            }
        ).write_parquet(folder / "segments.parquet")
        files = {f: (folder / f).stat().st_size for f in os.listdir(folder)}
        doc = {
            "as_of": f"2026-06-{29 + i}",
            "run_id": uuid.uuid4().hex,
            "customer_id_dtype": "Int64" if kind != "uuid" else "String",
            "edges": {"method": "quantile", "bins": 5, "edges": {"r": [1, 2, 3, 4]}},
            "files": files,
        }
        (folder / "run.json").write_text(json.dumps(doc))
    return prev_dir, cur_dir


def main() -> None:
    from fastseg.bench.whole import measure_process

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=float, default=1e7)
    ap.add_argument("--segments", type=int, default=50)
    ap.add_argument("--ids", choices=["int", "uuid"], default="int")
    ap.add_argument(
        "--order",
        choices=["sorted", "shuffled"],
        default="sorted",
        help="customer order of the run folders: sorted by id (as fastseg writes them) or not",
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data-dir", default="/tmp/fastseg-bench-diff")
    ap.add_argument("--json")
    a = ap.parse_args()
    n = int(a.customers)
    root = Path(a.data_dir)
    prev, cur = make_runs(root, n, a.segments, a.ids, a.order)
    work = Path(tempfile.mkdtemp(prefix="bench-diff-"))
    recipe = work / "recipe.py"
    recipe.write_text(RECIPE)
    argv = {
        "fastseg": lambda out: [
            sys.executable,
            "-m",
            "fastseg",
            "diff",
            str(prev),
            str(cur),
            "--out",
            str(out),
        ],
        "polars": lambda out: [sys.executable, str(recipe), str(prev), str(cur), str(out)],
    }
    runs: dict[str, list] = {k: [] for k in argv}
    measure_process(argv["fastseg"](work / "warm"), work / "logs-warm")  # kernels compiled
    for r in range(a.repeat):
        for name, make in argv.items():
            out = work / f"{name}-{r}"
            if name == "polars":
                out.mkdir()
            m = measure_process(make(out), work / f"logs-{name}-{r}")
            if m.error:
                raise SystemExit(f"{name}: {m.error}")
            runs[name].append(m)
    got = pl.read_parquet(work / "fastseg-0" / "changes.parquet")
    ref = pl.read_parquet(work / "polars-0" / "changes.parquet")
    key = ["segment", "change", "customer_id"]
    same = (
        got.select(
            "customer_id", pl.col("segment").cast(pl.String), pl.col("change").cast(pl.String)
        )
        .sort(key)
        .equals(ref.select(got.columns).sort(key))
    )
    report = {
        "machine": f"{platform.node()} {os.cpu_count()} CPUs {platform.processor() or platform.machine()}",
        "customers": n,
        "segments": a.segments,
        "ids": a.ids,
        "order": a.order,
        "membership_rows": pl.scan_parquet(cur / "segments.parquet")
        .select(pl.len())
        .collect()
        .item(),
        "change_rows": got.height,
        "same_rows": same,
        "contenders": {
            name: {
                "wall_s_median": statistics.median(m.wall_s for m in ms),
                "wall_s": [round(m.wall_s, 3) for m in ms],
                "peak_rss_mib_median": statistics.median(m.peak_rss_bytes for m in ms) / 2**20,
            }
            for name, ms in runs.items()
        },
    }
    c = report["contenders"]
    report["ratio_polars_over_fastseg"] = (
        c["polars"]["wall_s_median"] / c["fastseg"]["wall_s_median"]
    )
    print(json.dumps(report, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
