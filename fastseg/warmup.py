"""Compile (or load) the Numba kernels of the main job up front, so the wait can be announced.

The first call of a kernel compiles it (about 20-30 s for the main job's kernels, once: they are
cached on disk afterwards). :func:`needed` tells cheaply, before any is called, whether the
kernels of the main job are compiled and cached — it reads Numba's cache index of each one, a few
small files — and :func:`warm_up` runs the main job on a tiny store written to a temporary
folder, which compiles them (and caches them) in one go. The CLI does this as its own stage,
``kernels``, only when :func:`needed` says so; the test suite at the start of a session.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from pathlib import Path

__all__ = ["KERNELS", "MESSAGE", "STATE_KERNELS", "needed", "warm_up"]

#: what a first run says while it compiles
MESSAGE = "compiling kernels (first run only; cached afterwards)"

#: the kernels the warm-up job calls (``module.function`` in :mod:`fastseg.kernels`);
#: tests/test_progress.py checks this list against what the warm-up compiles
KERNELS = (
    "aggregate._aggregate_direct_kernel",
    "aggregate._category_local_kernel",
    "aggregate._compact_rows_kernel",
    "aggregate._events_kernel",
    "aggregate._features_kernel",
    "bitset._groups_kernel",
    "bitset._masked_sums_kernel",
    "bitset._members_all_kernel",
    "bitset._overlap_kernel",
    "bitset._popcount_and_kernel",
    "bitset._run_kernel",
    "encode._direct_kernel",
    "ingest._events_ingest_kernel",
    "ingest._ingest_kernel",
    "quantile._bin_kernel",
    "quantile._combine_kernel",
    "quantile._gather_kernel",
    "quantile._histogram4_kernel",
    "quantile._histogram_kernel",
    "quantile._key_range_kernel",
)


#: the kernels a daily refresh (``--state``, :mod:`fastseg.state`) calls besides; compiled by
#: ``warm_up(state=True)``, before the first run with a state
STATE_KERNELS = (
    "aggregate._windows_kernel",
    "seen._contains_keys_kernel",
    "seen._contains_pairs_kernel",
    "seen._first_new_kernel",
    "seen._high_scatter_kernel",
    "seen._hist_kernel",
    "seen._low_sort_kernel",
    "seen._merge_keys_kernel",
    "seen._merge_pairs_kernel",
)


def needed(state: bool = False) -> bool | None:
    """Whether a kernel of the main job (and with ``state``, of a refresh) still has to be
    compiled in this process: one is not compiled yet here and Numba's cache holds no version
    of it for its current source. None: cannot tell (a Numba whose cache internals differ)."""
    from fastseg.kernels import CACHE

    try:
        for name in KERNELS + (STATE_KERNELS if state else ()):
            module, function = name.split(".")
            disp = getattr(importlib.import_module(f"fastseg.kernels.{module}"), function, None)
            if disp is None or disp.signatures:  # renamed, or already compiled in this process
                continue
            if not CACHE:
                return True
            index = disp._cache._cache_file._load_index()  # {} when absent or stale
            if not index:
                return True
    except (AttributeError, TypeError):
        return None
    return False


def warm_up(state: bool = False) -> float:
    """Run the main job on a tiny store (profiles, events, order lines, a run folder) so its
    kernels are compiled or loaded; with ``state``, also a refresh (a state built from half of
    the orders, the other half added; with order ids and without); returns the seconds it
    took."""
    import datetime as dt

    import numpy as np
    import polars as pl

    from fastseg import api

    t0 = time.perf_counter()
    n, customers = 256, 32
    rng = np.random.default_rng(0)
    day0 = dt.datetime(2026, 1, 1)
    ids = rng.integers(0, customers, n)
    orders = pl.DataFrame(
        {
            "order_id": np.arange(n),
            "customer_id": ids,
            "order_ts": [day0 + dt.timedelta(days=int(d)) for d in rng.integers(0, 400, n)],
            "amount": rng.uniform(5, 200, n).round(2),
            "category": rng.choice(["shoes", "bags", "hats"], n),
            "channel": rng.choice(["web", "app"], n),
            "discount": rng.uniform(0, 1, n).round(2),
        }
    )
    profiles = pl.DataFrame(
        {"customer_id": np.arange(customers + 8), "country": ["US", "DE"] * ((customers + 8) // 2)}
    )
    events = pl.DataFrame(
        {
            "customer_id": rng.integers(0, customers, n),
            "event_ts": [day0 + dt.timedelta(days=int(d)) for d in rng.integers(0, 400, n)],
            "event": rng.choice(["email_open", "site_visit"], n),
        }
    )
    with tempfile.TemporaryDirectory(prefix="fastseg-warmup-") as tmp:
        folder = Path(tmp)
        for name, frame in (("orders", orders), ("customers", profiles), ("events", events)):
            frame.write_parquet(folder / f"{name}.parquet")
        api.run_job(
            folder / "orders.parquet",
            customers=folder / "customers.parquet",
            events=folder / "events.parquet",
            out=folder / "out",
        )
        if state:
            for lines in (True, False):
                frame = orders if lines else orders.drop("order_id")
                where = folder / f"state-{lines}"
                api.score_job(frame.head(n // 2), state=where)
                api.score_job(frame.tail(n - n // 2), state=where)
    return time.perf_counter() - t0
