"""Numba kernels. This package is the only place in fastseg that imports numba.

Each module holds private ``@njit`` kernels (``_name_kernel``) behind public, typed wrappers that
validate and allocate; kernels never check their input and wrappers never loop over rows.

Environment switches
--------------------
``FASTSEG_NUMBA_CACHE=0``
    Do not cache compiled kernels on disk (by default they are, next to the package or in
    ``NUMBA_CACHE_DIR``), so the first call of a fresh process compiles them again.
``OMP_WAIT_POLICY``
    Set to ``passive`` before numba loads unless the user chose otherwise: with the default
    policy, each parallel region costs milliseconds whenever another process uses a core.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

CACHE: bool = os.environ.get("FASTSEG_NUMBA_CACHE", "1").strip().lower() not in {"0", "false", "no"}


@contextmanager
def numba_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` Numba threads (``None``: leave as is), restoring the count after."""
    if n is None:
        yield
        return
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)
