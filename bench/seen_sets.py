"""Figures of :mod:`fastseg.kernels.seen` (its module docstring): a big first build, then a small
daily step from a freshly opened set, then a compaction.

Usage: ``python bench/seen_sets.py pairs|keys [N]`` (N defaults to 1e8; about 4 GB of memory
and 2 GB of disk at 1e8).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

from fastseg.kernels.seen import KeySet, PairSet

_PROC = psutil.Process()


def measured(what: str, fn: Callable[[], object]) -> None:
    """Run ``fn``; print wall and CPU seconds, peak extra RSS and the load average."""
    base = _PROC.memory_info().rss
    peak = [base]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _PROC.memory_info().rss)
            time.sleep(0.005)

    t = threading.Thread(target=watch)
    t.start()
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    done.set()
    t.join()
    print(
        f"{what}: {wall:.2f} s wall, {cpu:.2f} s cpu, peak extra {(peak[0] - base) / 1e9:.2f} GB,"
        f" load {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    which = sys.argv[1]
    n = int(float(sys.argv[2])) if len(sys.argv) > 2 else 10**8
    rng = np.random.default_rng(1)
    cls = PairSet if which == "pairs" else KeySet

    def draw(m: int) -> tuple[np.ndarray, ...]:
        if which == "pairs":
            return rng.integers(0, 10**7, m), rng.integers(-(2**63), 2**63 - 1, m, endpoint=True)
        return (rng.integers(0, 2**64 - 1, m, dtype=np.uint64, endpoint=True),)

    with tempfile.TemporaryDirectory() as warm:  # compile (or load) the kernels first
        w = cls.open(Path(warm))
        w.add(*draw(100))
        w.add(*draw(100))
        w.contains(*draw(3))
        w.compact(1)
    folder = Path(tempfile.mkdtemp())
    try:
        s = cls.open(folder)
        keys = [draw(n)]
        measured(f"{which} add {n:.0e}", lambda: s.add(*keys[0]))
        keys.clear()
        print(f"  file {s.nbytes / 1e9:.2f} GB, {len(s)} keys")
        q = draw(10**5)
        t0 = time.perf_counter()
        s2 = cls.open(folder, s.runs)
        t1 = time.perf_counter()
        found = s2.contains(*q)
        t2 = time.perf_counter()
        new = s2.add(*q)
        t3 = time.perf_counter()
        print(
            f"{which} open + contains + add 1e5: {t3 - t0:.3f} s (open {t1 - t0:.3f}, contains"
            f" {t2 - t1:.3f}, add {t3 - t2:.3f}; found {found.sum()}, new {new.sum()})"
        )
        measured(f"{which} compact", lambda: s2.compact(max_runs=1))
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
