"""Shared fixtures for the pytest-benchmark suites in ``bench/``.

Run every suite with::

    pytest bench -m benchmark                       # sizes 1e5 and 1e6 orders
    FASTSEG_BENCH_LARGE=1 pytest bench -m benchmark # adds 1e7 orders

Data are generated once per session with :func:`fastseg.synthetic.generate` (seed 0, orders only,
customers = orders / 10) into a temporary folder. Peak memory of one call of each benchmarked
function is recorded in ``benchmark.extra_info`` (``peak_rss_mb``: the process's peak resident
set during the call; ``peak_extra_mb``: above what was resident before it) — read it with
``--benchmark-json`` or ``--benchmark-columns``.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastseg import synthetic

#: Order counts benchmarked; 1e7 only with FASTSEG_BENCH_LARGE=1 (it needs a few GB and minutes).
SIZES: list[int] = [100_000, 1_000_000]
if os.environ.get("FASTSEG_BENCH_LARGE", "").strip() not in ("", "0"):
    SIZES.append(10_000_000)
SIZE_PARAMS = [pytest.param(n, id=f"{n:.0e}".replace("+0", "")) for n in SIZES]


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Module | None:
    """Collect ``bench_*.py`` here even though the project's ``python_files`` is ``test_*.py``."""
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if "bench_*.py" in parent.config.getini("python_files") or parent.session.isinitpath(file_path):
        return None  # pytest collects it itself (a pattern matches, or the file was named)
    return pytest.Module.from_parent(parent, path=file_path)


@pytest.fixture(scope="session")
def bench_data(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[int], synthetic.SyntheticDataset]:
    """``bench_data(n)``: the orders file with ``n`` orders (generated on first use, then reused)."""
    root = tmp_path_factory.mktemp("fastseg-bench-data")
    made: dict[int, synthetic.SyntheticDataset] = {}

    def get(n: int) -> synthetic.SyntheticDataset:
        if n not in made:
            made[n] = synthetic.generate(
                root / f"orders_{n}", orders=n, seed=0, with_customers=False, with_events=False
            )
        return made[n]

    return get


def _vm_hwm() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_memory(fn: Callable[[], Any]) -> dict[str, float]:
    """Run ``fn`` once and return its peak memory in MB (``peak_rss_mb``, ``peak_extra_mb``).

    On Linux the kernel's peak counter is reset first (``/proc/self/clear_refs``), so the peak is
    exact; elsewhere RSS is sampled every millisecond in a thread (short spikes can be missed).
    """
    gc.collect()
    before = _rss()
    reset = False
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        reset = _vm_hwm() is not None
    except OSError:
        reset = False
    if reset:
        out = fn()
        peak = _vm_hwm() or before
    else:
        import threading
        import time

        top = [before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                top[0] = max(top[0], _rss())
                time.sleep(0.001)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            out = fn()
        finally:
            stop.set()
            thread.join()
        peak = top[0]
    del out
    gc.collect()
    return {
        "peak_rss_mb": round(peak / 1e6, 1),
        "peak_extra_mb": round(max(0, peak - before) / 1e6, 1),
    }


@pytest.fixture
def record_memory(benchmark: Any) -> Callable[..., None]:
    """``record_memory(fn, **info)``: put ``fn``'s peak memory and ``info`` in ``extra_info``."""

    def record(fn: Callable[[], Any], **info: Any) -> None:
        benchmark.extra_info.update(info)
        benchmark.extra_info.update(peak_memory(fn))

    return record
