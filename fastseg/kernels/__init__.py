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
``FASTSEG_NUMBA_BLAS=1``
    Let Numba look for scipy's BLAS when it sets up (see :func:`_init_numba`): needed only by
    your own ``@njit`` code calling ``np.dot``, ``@`` or ``np.linalg`` in the same process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

CACHE: bool = os.environ.get("FASTSEG_NUMBA_CACHE", "1").strip().lower() not in {"0", "false", "no"}


def _init_numba() -> None:
    """Set up Numba's CPU target without importing scipy.

    On its first compile or cache load, Numba imports ``scipy.linalg`` (when scipy is
    installed) to find a BLAS for ``np.dot`` and ``np.linalg`` — about 0.2 s of a process's
    start-up, and fastseg's kernels use neither. The set-up runs here once, with
    ``scipy.linalg`` marked unimportable (a ``None`` entry in ``sys.modules``, the import
    system's way to make an import fail) and the entry removed right after: scipy imports as
    usual later, and Numba treats this process as one without a BLAS.
    """
    import sys

    if os.environ.get("FASTSEG_NUMBA_BLAS", "").strip() == "1" or "scipy.linalg" in sys.modules:
        return
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target

    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]
    try:
        with global_compiler_lock:
            cpu_target.target_context.refresh()
    finally:
        del sys.modules["scipy.linalg"]


_init_numba()


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
