"""``fastseg bench --whole-process``: each contender as a fresh process, timed from spawn to exit.

What a user times is a whole process — ``fastseg score orders.parquet --out scores.parquet`` or
``python rfm.py`` — imports, kernel loading, reading, aggregating, scoring and writing included.
This runner times exactly that, for ``fastseg score`` and for the ten-line recipes users write
instead (:data:`fastseg.bench.baselines.SCRIPTS`: plain Polars, DuckDB SQL, pandas), on the customer-id
shapes real stores have (:data:`SHAPES`):

=========== ========================================================================================
shape       the order file
=========== ========================================================================================
tiny        1,000 orders, compact integer ids: the fixed cost of a process (imports, start-up)
dense       the synthetic store as generated: compact integer ids, rows in time order
sparse      ids through a random injective map into [0, 2^63): wide, non-dense; rows shuffled
store13     13-digit ids increasing with signup (1,000,000,000,000 + random gaps); rows in time
            order, as a shop-system export
uuid        text UUID ids (version 4, drawn from the seed); rows in time order
csv         the ``sparse`` rows as CSV: the same data as ``sparse``, so the ratio to ``sparse``
            is the cost of the format; integer ids parse as integers in every contender
=========== ========================================================================================

How it measures
---------------
* **Data.** Every shape is derived from one file of :func:`fastseg.synthetic.generate` (fixed
  seed, orders only) by streaming row group by row group — shuffling in two passes through
  temporary bucket files — so 1e8 rows need no more than a few hundred MB. Files are cached in
  ``data_dir`` under a name holding the size, customers, seed and :data:`DATA_VERSION`, written
  atomically, and reused when present.
* **Processes.** Each run is a fresh interpreter: ``python -m fastseg score FILE --out OUT`` or
  ``python recipe.py FILE OUT``, started by a tiny launcher (``python -I -S``, ≈ 10 MB) that
  times ``posix_spawn`` to ``wait4`` and takes the child's peak resident set (``ru_maxrss``) from
  ``wait4``. The launcher matters: a child inherits its parent's peak across ``vfork``/``exec``,
  so measured from this (large) process every child would look at least as big as it.
* **Warm-up.** Before the timed runs of a shape, each contender runs once untimed (reported as
  ``warmup_s``): fastseg's kernels are compiled or loaded from Numba's cache, and the file is in
  the page cache for every contender alike.
* **Repeats.** ``repeat`` rounds; within a round every contender runs once, in an order rotated
  each round, so machine noise is shared. Times and peaks are medians over the rounds.
* **Ratios.** ``speedup`` = contender median / fastseg median (above 1: fastseg is faster);
  ``memory_ratio`` = fastseg peak / contender peak (below 1: fastseg is leaner). Per shape, the
  ratios to the faster of Polars and DuckDB are given apart (``vs_best``).
* **Check.** After the last round, every contender's output is read back: the same customers as
  fastseg's scored ones, the same recency, frequency and monetary, scores from 1 to k that never
  decrease with the value; the Polars recipe uses fastseg's tie rule, so its scores must equal
  fastseg's (pandas ``qcut`` on ``rank("first")`` and DuckDB ``NTILE`` split ties), up to float
  ties in monetary (:func:`_score_differences`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastseg.errors import FastsegError, ParameterError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = [
    "CONTENDERS",
    "DATA_VERSION",
    "DEFAULT_SHAPES",
    "SHAPES",
    "TINY_ORDERS",
    "WholeProcessReport",
    "measure_process",
    "parse_names",
    "prepare_shape",
    "run_whole_process",
    "verify_outputs",
]

FORMAT = "fastseg.bench.whole_process"
FORMAT_VERSION = 1
#: Bumped whenever a shape's transform changes, so cached files of an older recipe are not reused.
DATA_VERSION = 1
TINY_ORDERS = 1_000
STORE13_BASE = 1_000_000_000_000
STORE13_SPAN = 500_000_000_000  # ids of store13 spread over [1e12, 1.5e12)
_ROW_GROUP = 1 << 20

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Shape:
    """One shape of order file: how it is made from the generated store."""

    name: str
    description: str
    suffix: str  # file suffix: ".parquet" or ".csv"
    derived_from: str | None  # the shape it is transformed from (None: generated)


#: The shapes, in the order they are run and reported.
SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape(
            "tiny", f"{TINY_ORDERS:,} orders, compact integer ids (fixed cost)", ".parquet", None
        ),
        Shape("dense", "compact integer ids, rows in time order", ".parquet", None),
        Shape("sparse", "random 63-bit integer ids, rows shuffled", ".parquet", "dense"),
        Shape("store13", "13-digit integer ids, rows in time order", ".parquet", "dense"),
        Shape("uuid", "text UUID ids, rows in time order", ".parquet", "dense"),
        Shape("csv", "the sparse rows as CSV", ".csv", "sparse"),
    )
}
DEFAULT_SHAPES: tuple[str, ...] = tuple(SHAPES)
#: Contenders, in the order of the first round.
CONTENDERS: tuple[str, ...] = ("fastseg", "polars", "duckdb", "pandas")
_FAST_RECIPES = ("polars", "duckdb")  # fastseg's ratio "vs_best" is to the faster of these


def parse_names(
    text: str | Sequence[str], allowed: Sequence[str], what: str, example: str
) -> list[str]:
    """Names from ``"a,b"`` (or a list), each one of ``allowed``, in ``allowed``'s order.

    Examples
    --------
    >>> parse_names("uuid, dense", SHAPES, "shapes", "dense,uuid")
    ['dense', 'uuid']
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(i).strip().lower() for i in items if str(i).strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        got = ", ".join(repr(b) for b in bad) if bad else "nothing"
        msg = f"{what}: expected some of {','.join(allowed)} (e.g. {example}), got {got}"
        raise ParameterError(msg)
    return [a for a in allowed if a in names]


# --------------------------------------------------------------------------------------------
# data: one generated store, transformed into each shape, cached
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeFile:
    """A prepared order file and what is known about it."""

    shape: str
    path: Path
    orders: int
    customers_generated: int
    seconds: float  # time to make it (0 when taken from the cache)
    cached: bool

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size


def _key(orders: int, customers: int, seed: int) -> str:
    return f"orders{orders}-customers{customers}-seed{seed}-v{DATA_VERSION}"


def _rng(seed: int, stream: int) -> np.random.Generator:
    import numpy as np

    return np.random.default_rng([seed, 0x5EA9E, stream])


def _writer(path: Path, schema: pa.Schema) -> Any:
    import pyarrow.parquet as pq

    return pq.ParquetWriter(path, schema, compression="zstd", compression_level=1)


def _max_id(src: Path) -> int:
    """The largest customer id of an integer-id Parquet file (footer statistics, else a scan)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(src)
    col = pf.schema_arrow.get_field_index("customer_id")
    best = -1
    for i in range(pf.metadata.num_row_groups):
        stats = pf.metadata.row_group(i).column(col).statistics
        if stats is None or not stats.has_min_max:
            table = pq.read_table(src, columns=["customer_id"])
            return int(pc.max(table["customer_id"]).as_py())
        best = max(best, int(stats.max))
    return best


def _map_ids(src: Path, dst: Path, lookup: Any) -> None:
    """Rewrite ``src`` to ``dst`` with each customer id ``i`` replaced by ``lookup[i]``.

    ``lookup`` is a numpy array or an Arrow array indexed by the (non-negative) integer id.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(src)
    k = pf.schema_arrow.get_field_index("customer_id")
    arrow_lookup = isinstance(lookup, pa.Array)
    field = pa.field("customer_id", lookup.type if arrow_lookup else pa.int64())
    schema = pf.schema_arrow.set(k, field)
    writer = _writer(dst, schema)
    try:
        for i in range(pf.metadata.num_row_groups):
            table = pf.read_row_group(i)
            ids = table.column(k).to_numpy()
            new = lookup.take(pa.array(ids)) if arrow_lookup else pa.array(lookup[ids], pa.int64())
            table = table.set_column(k, field, new)
            writer.write_table(table, row_group_size=table.num_rows)
            del table, ids, new
    finally:
        writer.close()


def _unique_int64(rng: np.random.Generator, n: int, high: int) -> np.ndarray:
    """``n`` distinct random int64 values in ``[0, high)`` (duplicates redrawn, deterministic)."""
    import numpy as np

    values = rng.integers(0, high, size=n, dtype=np.int64)
    while True:
        order = np.argsort(values, kind="stable")
        s = values[order]
        dup = order[1:][s[1:] == s[:-1]]
        if not dup.size:
            return values
        values[dup] = rng.integers(0, high, size=dup.size, dtype=np.int64)


def _uuid_strings(rng: np.random.Generator, n: int) -> pa.Array:
    """``n`` version-4 UUIDs as text (``8-4-4-4-12`` lowercase hex), built without a Python loop."""
    import numpy as np
    import pyarrow as pa

    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    hexed = np.empty((n, 32), np.uint8)
    hexed[:, 0::2] = digits[raw >> 4]
    hexed[:, 1::2] = digits[raw & 0x0F]
    text = np.full((n, 36), ord("-"), np.uint8)
    at = [i for i in range(36) if i not in (8, 13, 18, 23)]
    text[:, at] = hexed
    large = 36 * n >= 2**31
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int64 if large else np.int32)
    kind = pa.large_string() if large else pa.string()
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])


def _make_sparse(src: Path, dst: Path, seed: int, work: Path) -> None:
    """Ids through a random injective map into [0, 2^63); rows in a uniformly random order.

    Two passes, memory bounded by one bucket: every row is sent to a random bucket (an Arrow IPC
    file of about one row group), then each bucket is permuted and written as one row group.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    rng = _rng(seed, 1)
    lookup = _unique_int64(rng, _max_id(src) + 1, 2**63 - 1)
    pf = pq.ParquetFile(src)
    k = pf.schema_arrow.get_field_index("customer_id")
    schema = pf.schema_arrow
    n_buckets = max(1, -(-pf.metadata.num_rows // _ROW_GROUP))
    folder = work / f".buckets-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    try:
        sinks = [pa.OSFile(str(folder / f"{b}.arrow"), "wb") for b in range(n_buckets)]
        writers = [ipc.new_file(s, schema) for s in sinks]
        for i in range(pf.metadata.num_row_groups):
            table = pf.read_row_group(i)
            ids = table.column(k).to_numpy()
            table = table.set_column(k, schema.field(k), pa.array(lookup[ids], pa.int64()))
            bucket = rng.integers(0, n_buckets, size=table.num_rows)
            order = np.argsort(bucket, kind="stable")
            bounds = np.searchsorted(bucket[order], np.arange(n_buckets + 1))
            table = table.take(pa.array(order))
            for b in range(n_buckets):
                if bounds[b + 1] > bounds[b]:
                    part = table.slice(int(bounds[b]), int(bounds[b + 1] - bounds[b]))
                    writers[b].write_table(part)
            del table, ids, bucket, order
        for w, s in zip(writers, sinks, strict=True):
            w.close()
            s.close()
        out = _writer(dst, schema)
        try:
            for b in range(n_buckets):
                with pa.memory_map(str(folder / f"{b}.arrow")) as mm:
                    part = ipc.open_file(mm).read_all()
                    if part.num_rows:
                        part = part.take(pa.array(rng.permutation(part.num_rows)))
                        out.write_table(part, row_group_size=part.num_rows)
                    del part
                (folder / f"{b}.arrow").unlink()
        finally:
            out.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _make_store13(src: Path, dst: Path, seed: int) -> None:
    """13-digit ids increasing with the original (signup-ordered) ids, random gaps between them."""
    import numpy as np

    n = _max_id(src) + 1
    mean_gap = max(1, STORE13_SPAN // n)
    gaps = _rng(seed, 2).integers(1, 2 * mean_gap, size=n, dtype=np.int64, endpoint=True)
    _map_ids(src, dst, STORE13_BASE + np.cumsum(gaps))


def _make_uuid(src: Path, dst: Path, seed: int) -> None:
    _map_ids(src, dst, _uuid_strings(_rng(seed, 3), _max_id(src) + 1))


def _make_csv(src: Path, dst: Path) -> None:
    """The rows of ``src`` as CSV: a header, quotes only where needed, timestamps to the second."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(src)
    k = pf.schema_arrow.get_field_index("order_ts")
    field = pa.field("order_ts", pa.timestamp("s"))
    schema = pf.schema_arrow.set(k, field)
    options = pcsv.WriteOptions(quoting_style="needed", batch_size=1 << 16)
    with pcsv.CSVWriter(str(dst), schema, write_options=options) as writer:
        for i in range(pf.metadata.num_row_groups):
            table = pf.read_row_group(i)
            ts = pc.cast(table.column(k), pa.timestamp("s"), safe=True)  # whole seconds
            writer.write_table(table.set_column(k, field, ts))


def prepare_shape(
    shape: str,
    orders: int,
    *,
    customers: int,
    seed: int,
    data_dir: str | os.PathLike[str],
    progress: Callable[[str], None] | None = None,
) -> ShapeFile:
    """The order file of ``shape`` (``orders`` rows), made once and cached in ``data_dir``.

    ``tiny`` ignores ``orders`` and ``customers`` (it is the ``dense`` shape at
    :data:`TINY_ORDERS` orders). A file is made from the shape it derives from (made first if
    needed) and moved into place only when complete, with a small ``.json`` beside it; both
    present means cached.
    """
    from fastseg import synthetic

    spec = SHAPES[shape]
    if shape == "tiny":
        dense = prepare_shape(
            "dense",
            TINY_ORDERS,
            customers=max(1, TINY_ORDERS // 10),
            seed=seed,
            data_dir=data_dir,
            progress=progress,
        )
        return dataclasses.replace(dense, shape="tiny")
    folder = Path(data_dir) / _key(orders, customers, seed)
    path = folder / f"{shape}{spec.suffix}"
    meta_path = folder / f"{shape}.json"
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return ShapeFile(shape, path, orders, int(meta["customers_generated"]), 0.0, True)
    folder.mkdir(parents=True, exist_ok=True)
    base = None
    if spec.derived_from is not None:
        base = prepare_shape(
            spec.derived_from,
            orders,
            customers=customers,
            seed=seed,
            data_dir=data_dir,
            progress=progress,
        )
    if progress is not None:
        progress(f"{orders:,} orders: making the {shape} file")
    t0 = time.perf_counter()
    tmp = folder / f".{shape}.{uuid.uuid4().hex[:8]}.tmp{spec.suffix}"
    try:
        if base is None:
            gen = folder / f".gen-{uuid.uuid4().hex[:8]}"
            try:
                ds = synthetic.generate(
                    gen,
                    orders=orders,
                    customers=customers,
                    seed=seed,
                    with_customers=False,
                    with_events=False,
                )
                os.replace(ds.orders, tmp)
                n_customers = ds.n_customers
            finally:
                shutil.rmtree(gen, ignore_errors=True)
        else:
            n_customers = base.customers_generated
            if shape == "sparse":
                _make_sparse(base.path, tmp, seed, folder)
            elif shape == "store13":
                _make_store13(base.path, tmp, seed)
            elif shape == "uuid":
                _make_uuid(base.path, tmp, seed)
            elif shape == "csv":
                _make_csv(base.path, tmp)
            else:  # pragma: no cover - SHAPES and this table are edited together
                msg = f"no transform for shape {shape!r}"
                raise AssertionError(msg)
        seconds = time.perf_counter() - t0
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {
        "shape": shape,
        "orders": orders,
        "customers_generated": n_customers,
        "seed": seed,
        "data_version": DATA_VERSION,
        "seconds": seconds,
        "derived_from": spec.derived_from,
        "bytes": path.stat().st_size,
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return ShapeFile(shape, path, orders, n_customers, seconds, False)


# --------------------------------------------------------------------------------------------
# one process, timed from spawn to exit
# --------------------------------------------------------------------------------------------

# Runs as ``python -I -S -c``: standard library only, so the launcher stays ≈ 10 MB and the child
# it spawns starts with a small inherited peak.
_LAUNCHER = """
import json, os, sys, time
spec = json.loads(sys.argv[1])
w = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
actions = [
    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
    (os.POSIX_SPAWN_OPEN, 1, spec["stdout"], w, 0o644),
    (os.POSIX_SPAWN_OPEN, 2, spec["stderr"], w, 0o644),
]
if spec.get("cwd"):
    os.chdir(spec["cwd"])
t0 = time.perf_counter()
pid = os.posix_spawn(spec["argv"][0], spec["argv"], dict(os.environ), file_actions=actions)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
scale = 1 if sys.platform == "darwin" else 1024
print(json.dumps({"wall_s": wall, "peak_rss_bytes": ru.ru_maxrss * scale,
                  "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
                  "exit": os.waitstatus_to_exitcode(status)}))
"""


@dataclass(frozen=True)
class Measurement:
    """One process: wall time from spawn to exit, its peak resident set, its CPU time."""

    wall_s: float
    peak_rss_bytes: int
    user_s: float
    sys_s: float
    exit: int
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall_s,
            "peak_rss_bytes": self.peak_rss_bytes,
            "cpu_s": self.user_s + self.sys_s,
            "exit": self.exit,
            **({"error": self.error} if self.error else {}),
        }


def measure_process(
    argv: Sequence[str], log_dir: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None
) -> Measurement:
    """Run ``argv`` (``argv[0]`` a full path) as a fresh process and measure it.

    The process is spawned by a small launcher interpreter, which times it from ``posix_spawn``
    to the return of ``wait4`` and reads its peak resident set from ``wait4``'s resource usage.
    Its output goes to files in ``log_dir``; a non-zero exit gives ``error``, the last line of
    its standard error.
    """
    if not hasattr(os, "posix_spawn") or not hasattr(os, "wait4"):
        msg = "--whole-process needs os.posix_spawn and os.wait4 (Linux or macOS)"
        raise ParameterError(msg)
    log = Path(log_dir)
    log.mkdir(parents=True, exist_ok=True)
    out, err = log / "stdout.txt", log / "stderr.txt"
    spec = {"argv": list(argv), "stdout": str(out), "stderr": str(err)}
    if cwd is not None:  # the process's working folder (None: this one's)
        spec["cwd"] = str(cwd)
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        msg = f"the process launcher failed: {done.stderr.strip().splitlines()[-1:]}"
        raise FastsegError(msg)
    raw = json.loads(done.stdout)
    error = None
    if raw["exit"] != 0:
        lines = [ln.strip() for ln in err.read_text(errors="replace").splitlines() if ln.strip()]
        killed = raw["exit"] in (-9, 137)
        error = (
            "killed (out of memory?)" if killed else (lines[-1] if lines else f"exit {raw['exit']}")
        )
    return Measurement(
        raw["wall_s"], int(raw["peak_rss_bytes"]), raw["user_s"], raw["sys_s"], raw["exit"], error
    )


def contender_argv(
    name: str, src: Path, out: Path, scripts: dict[str, Path], memory_limit: str | None = None
) -> list[str]:
    """The command line of one contender: ``fastseg score`` (with ``--memory-limit``) or
    ``python recipe.py IN OUT``."""
    if name == "fastseg":
        argv = [sys.executable, "-m", "fastseg", "score", str(src), "--out", str(out)]
        return argv + (["--memory-limit", memory_limit] if memory_limit else [])
    return [sys.executable, str(scripts[name]), str(src), str(out)]


# --------------------------------------------------------------------------------------------
# checking the outputs against each other
# --------------------------------------------------------------------------------------------

_VALUE_OF = {"r_score": "recency_days", "f_score": "frequency", "m_score": "monetary"}


def _read_output(path: Path) -> Any:
    import polars as pl

    cols = ["customer_id", "recency_days", "frequency", "monetary", *_VALUE_OF]
    df = pl.read_parquet(path, columns=cols)
    return df.with_columns(
        pl.col("recency_days").cast(pl.Int64),
        pl.col("frequency").cast(pl.Int64),
        pl.col("monetary").cast(pl.Float64),
        *(pl.col(s).cast(pl.Int64) for s in _VALUE_OF),
    )


def _score_counts(df: Any, bins: int) -> dict[str, list[int]]:
    import polars as pl

    out = {}
    for s in _VALUE_OF:
        counts = dict(df.group_by(s).len().iter_rows())
        out[s] = [int(counts.get(level, 0)) for level in range(1, bins + 1)]
        out[s] += [
            int(df.filter(pl.col(s).is_null() | (pl.col(s) < 1) | (pl.col(s) > bins)).height)
        ]
    return out


def _monotone(df: Any, score: str, bins: int) -> bool:
    """Scores never decrease as the value grows (R: as recency falls): level ranges don't cross."""
    import polars as pl

    value = pl.col(_VALUE_OF[score])
    if score == "r_score":
        value = -value
    ranges = df.group_by(score).agg(value.min().alias("lo"), value.max().alias("hi")).sort(score)
    lo, hi = ranges["lo"].to_list(), ranges["hi"].to_list()
    return all(hi[i] <= lo[i + 1] for i in range(len(lo) - 1))


def _score_differences(ref: Any, both: Any) -> tuple[int, int]:
    """Customers whose scores differ between fastseg (``ref``) and a contender using its tie rule
    (``both``: joined, the contender's columns suffixed ``_c``): ``(unexplained, float ties)``.

    R and F are integers and must agree exactly. Monetary is a float sum whose last bits depend
    on the order of the additions, so customers with the same total in exact arithmetic can tie
    in one program and not in the other; such a customer, one level apart and with a value
    within rounding (1e-6 + 1e-9 relative) of one of fastseg's level edges, counts as a float tie.
    """
    import polars as pl

    exact = both.filter(
        (pl.col("r_score") != pl.col("r_score_c")) | (pl.col("f_score") != pl.col("f_score_c"))
    )
    m = both.filter(
        (pl.col("r_score") == pl.col("r_score_c"))
        & (pl.col("f_score") == pl.col("f_score_c"))
        & (pl.col("m_score") != pl.col("m_score_c"))
    )
    if m.is_empty():
        return exact.height, 0
    edges = ref.group_by("m_score").agg(
        pl.col("monetary").min().alias("lo"), pl.col("monetary").max().alias("hi")
    )
    bounds = pl.concat([edges["lo"], edges["hi"]]).unique().sort().to_numpy()
    import numpy as np

    v = m["monetary"].to_numpy()
    pos = np.clip(np.searchsorted(bounds, v), 1, max(1, bounds.size - 1))
    near = np.minimum(
        np.abs(v - bounds[pos - 1]), np.abs(v - bounds[np.minimum(pos, bounds.size - 1)])
    )
    tie = (near <= 1e-6 + 1e-9 * np.abs(v)) & (
        (m["m_score"].cast(pl.Int64) - m["m_score_c"].cast(pl.Int64)).abs().to_numpy() == 1
    )
    return exact.height + int((~tie).sum()), int(tie.sum())


def verify_outputs(outputs: dict[str, Path], *, bins: int = 5) -> dict[str, Any]:
    """Check every contender's output against fastseg's (see the module docstring).

    Returns ``{"ok", "customers", "contenders": {name: {...checks, "score_counts"}},
    "mismatches"}``; ``score_counts[s]`` lists the customers at each level 1..k, then the count
    outside 1..k (null included).
    """
    import polars as pl

    ref = _read_output(outputs["fastseg"]).filter(pl.col("frequency") >= 1)
    n = ref.height
    mismatches: list[str] = []
    result: dict[str, Any] = {}
    for name, path in outputs.items():
        df = ref if name == "fastseg" else _read_output(path)
        checks: dict[str, Any] = {"customers": df.height}
        if name != "fastseg":
            df = df.with_columns(pl.col("customer_id").cast(ref.schema["customer_id"]))
            both = ref.join(df, on="customer_id", how="inner", suffix="_c")
            same = both.height == n == df.height
            money = (pl.col("monetary") - pl.col("monetary_c")).abs() <= 1e-6 + 1e-9 * pl.col(
                "monetary"
            ).abs()
            values = both.filter(
                (pl.col("recency_days") != pl.col("recency_days_c"))
                | (pl.col("frequency") != pl.col("frequency_c"))
                | ~money
            ).height
            checks["same_customers"] = same
            checks["same_values"] = values == 0
            if not same:
                mismatches.append(f"{name}: {df.height:,} customers, fastseg scored {n:,}")
            if values:
                mismatches.append(
                    f"{name}: {values:,} customers' recency/frequency/monetary differ"
                )
            if name == "polars":  # the same tie rule as fastseg: the same scores
                wrong, ties = _score_differences(ref, both)
                checks["same_scores"] = wrong == 0
                checks["scores_differing_by_float_ties"] = ties
                if wrong:
                    mismatches.append(f"polars: {wrong:,} customers' scores differ from fastseg's")
        counts = _score_counts(df, bins)
        checks["score_counts"] = counts
        in_range = all(c[-1] == 0 for c in counts.values())
        monotone = all(_monotone(df, s, bins) for s in _VALUE_OF)
        checks["scores_in_range"] = in_range
        checks["scores_monotone"] = monotone
        if not in_range:
            mismatches.append(f"{name}: scores outside 1..{bins}")
        if not monotone:
            mismatches.append(f"{name}: a score decreases as its value grows")
        checks["ok"] = all(v for k, v in checks.items() if isinstance(v, bool))
        result[name] = checks
    ok = all(c["ok"] for c in result.values())
    return {"ok": ok, "customers": n, "contenders": result, "mismatches": mismatches[:8]}


# --------------------------------------------------------------------------------------------
# the runner
# --------------------------------------------------------------------------------------------


def _load() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other work on the machine), when known."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    m = len(s)
    return float(s[m // 2] if m % 2 else (s[m // 2 - 1] + s[m // 2]) / 2)


def _summarize(runs: list[Measurement], warm: Measurement | None) -> dict[str, Any]:
    ok = [r for r in runs if r.error is None]
    out: dict[str, Any] = {
        "warmup_s": warm.wall_s if warm else None,
        "warmup_peak_rss_bytes": warm.peak_rss_bytes if warm else None,
        "runs": [r.as_dict() for r in runs],
        "runs_s": [r.wall_s for r in runs],
    }
    failed = next((r.error for r in [*([warm] if warm else []), *runs] if r.error), None)
    if failed or not ok:
        out["error"] = failed or "no run finished"
        return out
    out["median_s"] = _median([r.wall_s for r in ok])
    out["peak_rss_bytes"] = int(_median([r.peak_rss_bytes for r in ok]))
    out["cpu_s"] = _median([r.user_s + r.sys_s for r in ok])
    return out


def _ratios(contenders: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per contender fastseg's speed and memory ratios; ``vs_best``: to the faster of Polars/DuckDB."""
    fs = contenders.get("fastseg", {})
    if "median_s" not in fs:
        return {}
    per: dict[str, Any] = {}
    for name, c in contenders.items():
        if name == "fastseg" or "median_s" not in c:
            continue
        per[name] = {
            "speedup": c["median_s"] / fs["median_s"] if fs["median_s"] > 0 else None,
            "memory_ratio": fs["peak_rss_bytes"] / c["peak_rss_bytes"]
            if c["peak_rss_bytes"]
            else None,
        }
    fast = [n for n in _FAST_RECIPES if n in per]
    out: dict[str, Any] = {"per_contender": per}
    if fast:
        best = min(fast, key=lambda n: contenders[n]["median_s"])
        out["vs_best"] = {"contender": best, **per[best]}
    return out


def _git_state(where: Path | None = None) -> dict[str, Any]:
    """The commit of the fastseg source measured (``where``: its package folder; None: this
    process's), and its modified files (when in a checkout)."""
    import fastseg

    where = Path(fastseg.__file__).resolve().parent if where is None else where
    out: dict[str, Any] = {"fastseg_path": str(where)}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        out["git_commit"] = head.stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        out["git_modified"] = [ln[3:] for ln in status.stdout.splitlines() if ln.strip()]
    return out


@dataclass
class WholeProcessReport:
    """The result of :func:`run_whole_process`: the JSON-ready ``data`` and printable tables."""

    data: dict[str, Any]
    json_path: Path | None = None

    HEADERS = ("shape", "orders", "fastseg", "polars", "duckdb", "pandas", "fastseg vs best")

    def rows(self) -> list[list[str]]:
        """One row per shape: each contender's median time and peak, and fastseg's ratios to
        the faster of Polars and DuckDB."""
        rows = []
        for run in self.data["runs"]:
            cells = [run["shape"], f"{run['orders']:,}"]
            for name in CONTENDERS:
                c = run["contenders"].get(name)
                if c is None:
                    cells.append("")
                elif "error" in c:
                    cells.append(f"failed: {c['error'][:40]}")
                else:
                    cells.append(f"{c['median_s']:.2f} s · {_size(c['peak_rss_bytes'])}")
            best = run["ratios"].get("vs_best")
            if best and best["speedup"]:
                sp = best["speedup"]
                speed = f"{sp:.2f}x faster" if sp >= 1 else f"{1 / sp:.2f}x slower"
                cells.append(f"{speed}, {best['memory_ratio']:.2f}x memory ({best['contender']})")
            else:
                cells.append("")
            rows.append(cells)
        return rows

    def summary_lines(self) -> list[str]:
        d = self.data
        env, src = d["environment"], d["source"]
        commit = src.get("git_commit", "unknown")[:12]
        dirty = f", {len(src['git_modified'])} modified files" if src.get("git_modified") else ""
        lines = [
            f"machine: {env['cpu']}, {env['cores_logical']} logical cores, "
            f"{_size(env['memory_bytes'])}; Python {env['python']}, Polars {env['polars_version']}, "
            f"fastseg {env['fastseg_version']} at commit {commit}{dirty}",
            f"each cell: median of {d['parameters']['repeat']} fresh processes, spawn to exit "
            "· median peak RSS; one untimed warm-up run of each contender per shape first",
        ]
        loads = [
            x[0]
            for run in d["runs"]
            for x in (run["load_average"]["before"], run["load_average"]["after"])
            if x
        ]
        if loads:
            lines.append(
                f"load average (1 min) around the shapes: {min(loads):.1f} to {max(loads):.1f} "
                f"on {env['cores_logical']} cores (other work on the machine widens the spread)"
            )
        limit = d["parameters"].get("memory_limit")
        if limit:
            from fastseg.buckets import format_size, parse_size

            cap = parse_size(limit)
            for run in d["runs"]:
                fs = run["contenders"].get("fastseg", {})
                peak = fs.get("peak_rss_bytes")
                if peak:
                    verdict = "under" if peak <= cap else "OVER"
                    lines.append(
                        f"{run['shape']}: fastseg --memory-limit {limit}: peak RSS "
                        f"{format_size(peak)}, {verdict} the limit ({format_size(cap)})"
                    )
        for run in d["runs"]:
            v = run["verification"]
            if not v["ok"]:
                lines.append(f"{run['shape']}: MISMATCH — " + "; ".join(v["mismatches"]))
        if d["verified"]:
            lines.append(
                "outputs checked: same customers, recency, frequency and monetary as fastseg "
                "in every contender; scores in range and monotone; Polars' scores equal fastseg's"
            )
        return lines


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def run_whole_process(
    orders: Sequence[int] | str = (10_000_000,),
    *,
    shapes: Sequence[str] | str = DEFAULT_SHAPES,
    contenders: Sequence[str] | str = CONTENDERS,
    repeat: int = 3,
    customers_per_order: float = 0.1,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    warmup: bool = True,
    progress: Progress | None = None,
    memory_limit: str | None = None,
) -> WholeProcessReport:
    """Time ``fastseg score`` and the recipes as fresh processes on each shape of order file.

    Parameters
    ----------
    orders
        Order counts (``"1e7"`` or a list); every shape but ``tiny`` is measured at each.
    shapes
        Some of :data:`SHAPES` (``"dense,uuid"`` or a list).
    contenders
        Some of :data:`CONTENDERS`; ``fastseg`` is always included (the ratios are to it).
    repeat
        Timed rounds (1 to 100); medians over them.
    customers_per_order
        Customers generated per order (0 < x <= 1).
    seed
        Seed of the generated data and of the shape transforms.
    data_dir
        Where the order files are cached (default: ``fastseg-bench-data`` in the system's
        temporary folder); reused when present.
    workdir
        Folder for the contenders' outputs and logs (a temporary folder inside it, removed at
        the end).
    json_path
        Write the report as JSON here (atomically).
    warmup
        One untimed run of each contender per shape before the timed rounds.
    progress
        Called as ``progress(done, total, label)``.

    Raises
    ------
    DataError
        fastseg failed, or an output did not match (after the JSON is written).
    """
    from fastseg.bench import baselines
    from fastseg.bench.stages import environment, parse_sizes
    from fastseg.errors import DataError

    sizes = parse_sizes(orders)
    shape_names = parse_names(shapes, tuple(SHAPES), "shapes", "dense,sparse,uuid")
    names = parse_names(contenders, CONTENDERS, "contenders", "fastseg,polars,duckdb")
    if "fastseg" not in names:
        names.insert(0, "fastseg")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= 100:
        msg = f"repeat must be a whole number from 1 to 100, got {repeat!r}"
        raise ParameterError(msg)
    if not isinstance(customers_per_order, int | float) or not 0 < customers_per_order <= 1:
        msg = f"customers_per_order must be in (0, 1], got {customers_per_order!r}"
        raise ParameterError(msg)
    for r in names:
        if r != "fastseg":
            baselines.require(r)  # fail now, before generating data
    data_root = (
        Path(data_dir)
        if data_dir is not None
        else Path(tempfile.gettempdir()) / "fastseg-bench-data"
    )
    plan = [("tiny", TINY_ORDERS)] if "tiny" in shape_names else []
    plan += [(s, n) for n in sizes for s in shape_names if s != "tiny"]
    per_shape = len(names) * (repeat + (1 if warmup else 0))
    total = len(plan) * (1 + per_shape)
    done = 0

    def step(label: str, k: int = 1) -> None:
        nonlocal done
        done += k
        if progress is not None:
            progress(min(done, total), total, label)

    def note(label: str) -> None:
        if progress is not None:
            progress(done, total, label)

    env = environment()
    source = _git_state()
    runs: list[dict[str, Any]] = []
    base = Path(workdir) if workdir is not None else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fastseg-whole-", dir=base) as tmp:
        root = Path(tmp)
        scripts = baselines.write_scripts(root / "recipes", [n for n in names if n != "fastseg"])
        recipes = {n: p.read_text() for n, p in scripts.items()}
        for shape, n in plan:
            sf = prepare_shape(
                shape,
                n,
                customers=max(1, round(n * customers_per_order)),
                seed=seed,
                data_dir=data_root,
                progress=note,
            )
            step(f"{shape}: data ready")
            runs.append(
                _run_shape(sf, names, repeat, warmup, root / shape, scripts, step, memory_limit)
            )
    verified = all(r["verification"]["ok"] for r in runs)
    failed = [r["shape"] for r in runs if "error" in r["contenders"].get("fastseg", {})]
    data: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "environment": env,
        "source": source,
        "parameters": {
            "orders": sizes,
            "shapes": shape_names,
            "contenders": names,
            "repeat": repeat,
            "customers_per_order": customers_per_order,
            "seed": seed,
            "warmup": warmup,
            "data_dir": str(data_root),
            "data_version": DATA_VERSION,
            "memory_limit": memory_limit,
        },
        "method": (
            "each run a fresh process started by a small launcher (python -I -S); wall time "
            "from posix_spawn to wait4; peak RSS = ru_maxrss of the child from wait4; one "
            "untimed warm-up run per contender and shape; rounds interleave the contenders "
            "(order rotated each round); medians over the rounds"
        ),
        "recipes": recipes,
        "runs": runs,
        "verified": verified,
    }
    report = WholeProcessReport(data)
    if json_path is not None:
        from fastseg.outputs import write_atomic

        text = json.dumps(data, indent=2, default=str)

        def write(tmp: Path) -> None:
            tmp.write_text(text)

        report.json_path = write_atomic(Path(json_path), write)
    if failed or not verified:
        parts = [f"fastseg failed on {', '.join(failed)}"] if failed else []
        parts += [
            f"{r['shape']}: " + "; ".join(r["verification"]["mismatches"])
            for r in runs
            if not r["verification"]["ok"]
        ]
        where = f" (details in {report.json_path})" if report.json_path else ""
        msg = "bench --whole-process: " + " | ".join(parts) + where
        raise DataError(msg)
    return report


def _run_shape(
    sf: ShapeFile,
    names: list[str],
    repeat: int,
    warmup: bool,
    work: Path,
    scripts: dict[str, Path],
    step: Callable[[str], None],
    memory_limit: str | None = None,
) -> dict[str, Any]:
    """Warm-up, ``repeat`` interleaved rounds, then the check of the last round's outputs."""
    outputs = {n: work / f"{n}.parquet" for n in names}
    load_before = _load()

    def once(name: str) -> Measurement:
        outputs[name].unlink(missing_ok=True)
        argv = contender_argv(name, sf.path, outputs[name], scripts, memory_limit)
        return measure_process(argv, work / "logs" / name)

    warm: dict[str, Measurement] = {}
    if warmup:
        for name in names:
            warm[name] = once(name)
            step(f"{sf.shape}: {name} warm-up")
    timed: dict[str, list[Measurement]] = {n: [] for n in names}
    for r in range(repeat):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if name in warm and warm[name].error:
                pass  # failed in the warm-up: not run again (the error is reported)
            elif not timed[name] or timed[name][-1].error is None:
                timed[name].append(once(name))
            step(f"{sf.shape}: round {r + 1}/{repeat}, {name}")
    contenders = {n: _summarize(timed[n], warm.get(n)) for n in names}
    ok_outputs = {n: outputs[n] for n in names if "error" not in contenders[n]}
    if "fastseg" in ok_outputs:
        verification = verify_outputs(ok_outputs)
    else:
        verification = {"ok": False, "mismatches": ["fastseg produced no output"], "contenders": {}}
    return {
        "shape": sf.shape,
        "description": SHAPES[sf.shape].description,
        "orders": sf.orders,
        "customers_generated": sf.customers_generated,
        "customers_scored": verification.get("customers"),
        "file": str(sf.path),
        "file_bytes": sf.bytes,
        "data_seconds": sf.seconds,
        "data_cached": sf.cached,
        "load_average": {"before": load_before, "after": _load()},
        "contenders": contenders,
        "ratios": _ratios(contenders),
        "verification": verification,
    }
