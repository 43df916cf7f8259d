"""Larger than memory on one machine: order rows spilled to customer buckets on disk.

When the per-customer state of a run would not fit its memory limit (``--memory-limit``), the
order rows are read once more and written, as the reader made them (canonical columns, the row
hashes the duplicate count needs), to Arrow IPC files under ``--tmp-dir``: each row to the bucket
its customer id's hash picks, rows of a bucket in their input order. Each bucket holds every row
of its customers, so it is aggregated alone by the same row pass, and the buckets' features are
exactly the in-memory run's, customer by customer. Then:

* the scoring date is the latest row's (or the latest usable row's: all buckets are read again
  with it, as one machine would), checked over all buckets;
* the quantile edges are exact (:mod:`fastseg.edges`: a few rounds of small histograms over
  the buckets' feature files, never all values at once);
* each bucket is scored and its segments evaluated alone; outputs are written bucket after
  bucket (one Parquet file of many row groups), the summary and overlaps added up.

Profiles and events are read and typed whole (as in memory: the typing of a text column is
decided by all its values), then split into the same buckets. The folder of spill files is
removed when the run ends, also after a failure.

Budget: the estimate of what a pass holds is ``customers x BYTES_PER_CUSTOMER`` plus, without
order ids, 8 bytes a row for the duplicate count, plus ``FIXED_BYTES`` for the process and the
batches in flight; buckets are grouped into units that fit the limit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fastseg.errors import FastsegError, OutputError, ParameterError
from fastseg.sources import OrderReader

__all__ = [
    "BYTES_PER_CUSTOMER",
    "FIXED_BYTES",
    "Budget",
    "StateTooLarge",
    "default_memory_limit",
    "format_size",
    "parse_size",
]

#: what one customer costs while a bucket is scored and segmented (the accumulators, the id
#: table, the features frame and the scores frame beside it, the segment bitsets), measured on
#: this project's machine (docs/performance.md, "Larger than memory")
BYTES_PER_CUSTOMER = 600
#: the process with its libraries loaded, plus the batches of rows in flight
FIXED_BYTES = 450 << 20
#: rows per batch while spilling and in each bucket's pass (a quarter of the in-memory pass's:
#: the batches in flight are a large share of a small limit, and a bucket's customers are few)
BATCH_ROWS = 1 << 18
#: the in-memory pass also stops when the process holds this share of the limit (measured)
RSS_SHARE = 0.85
#: the least a limit must leave for the customers' state
MIN_STATE = 64 << 20
#: the default limit: this share of the memory available when the run starts
DEFAULT_SHARE = 0.75
#: spill buckets are at least this many (grouped into units that fit), at most MAX_BUCKETS
MIN_BUCKETS = 16
MAX_BUCKETS = 512

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def parse_size(text: str | int, option: str = "--memory-limit") -> int:
    """Bytes of a size such as ``1500MB``, ``4GB``, ``4GiB``, ``512mib`` or a plain number.

    >>> parse_size("1500MB"), parse_size("4GiB"), parse_size("2.5GB")
    (1500000000, 4294967296, 2500000000)
    """
    if isinstance(text, bool):
        msg = f"{option}: expected a size such as 1500MB, 4GB or 4GiB, got {text!r}"
        raise ParameterError(msg)
    if isinstance(text, int):
        value, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if m is None or m.group(2).lower() not in _UNITS:
            msg = f"{option}: expected a size such as 1500MB, 4GB or 4GiB, got {text!r}"
            raise ParameterError(msg)
        value, unit = float(m.group(1)), m.group(2).lower()
    scaled = value * _UNITS[unit]
    if not math.isfinite(scaled) or scaled >= 2**62:
        msg = f"{option}: {text!r} is larger than any machine's memory; give a size such as 4GB"
        raise ParameterError(msg)
    size = int(scaled)
    if size <= 0:
        msg = f"{option}: {text!r} is 0 bytes; give a size such as 1500MB, 4GB or 4GiB"
        raise ParameterError(msg)
    return size


def format_size(n: float) -> str:
    """``1.50 GB``-style (decimal units, as ``--memory-limit`` reads them)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable``; the cgroup limit when lower)."""
    avail = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            raw = Path(path).read_text().strip()
            if raw.isdigit() and int(raw) < (1 << 60):
                avail = int(raw) if avail is None else min(avail, int(raw))
    if avail is None:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return avail


def default_memory_limit() -> int:
    """:data:`DEFAULT_SHARE` of the memory available now (4 GB when it cannot be read)."""
    avail = available_memory()
    return int(DEFAULT_SHARE * avail) if avail else 4 * 1000**3


def rss_now() -> int:
    """The process's resident memory now, in bytes (0 when it cannot be read)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_memory() -> None:
    """Give freed memory back to the system between the phases of a bucketed run (Arrow's
    pool, glibc's heap): what the previous phase held must not count in the next one's peak."""
    import ctypes

    with contextlib.suppress(Exception):
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class StateTooLarge(FastsegError):
    """Raised by the in-memory row pass when its state would pass the budget (internal: the
    caller goes on with buckets)."""

    def __init__(self, customers: int, rows_read: int, state: int) -> None:
        super().__init__(f"{customers} customers after {rows_read} rows: {state} bytes")
        self.customers, self.rows_read, self.state = customers, rows_read, state


@dataclass(frozen=True)
class Budget:
    """A memory limit and what it leaves for the per-customer state of one pass."""

    limit: int
    per_customer: int = BYTES_PER_CUSTOMER

    @property
    def state(self) -> int:
        return self.limit - FIXED_BYTES

    def check(self, option: str = "--memory-limit") -> None:
        floor = FIXED_BYTES + MIN_STATE
        if self.limit < floor:
            msg = (
                f"{option} {format_size(self.limit)} is below what one pass over the rows "
                f"needs (about {format_size(floor)}: the process and a batch of rows); give "
                f"at least {math.ceil(floor / 1e8) / 10:.1f}GB"
            )
            raise ParameterError(msg)

    def pass_bytes(self, customers: int, rows: int, per_row: int) -> int:
        return customers * self.per_customer + rows * per_row


def budget(memory_limit: str | int | None, option: str = "--memory-limit") -> Budget:
    """The :class:`Budget` of a ``memory_limit`` (None: the default share; a Budget as is)."""
    if isinstance(memory_limit, Budget):
        return memory_limit
    if memory_limit is None:
        return Budget(default_memory_limit())
    b = Budget(parse_size(memory_limit, option))
    b.check(option)
    return b


# --------------------------------------------------------------------------------- hashing


def text_hashes(values: Any) -> np.ndarray:
    """64-bit hashes of an Arrow string array (nulls hash to 0): trimmed as ids are."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from fastseg.sources import WHITE_SPACE

    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.large_string())
    values = pc.utf8_trim(values, characters=WHITE_SPACE)
    s = pl.Series("h", values)
    return s.hash(seed=0x5EED5).fill_null(0).to_numpy()


def id_hashes(arr: Any, as_text: bool) -> np.ndarray:
    """The bucket hash of every id of an Arrow array (one chunk): integers mixed
    (:func:`fastseg.kernels.partition.mix_int_ids`), whole floats as integers, text trimmed
    and hashed; ``as_text``: integers hashed as the text Int64 writes (CSV ids, which become
    text when any id of the file is not a plain integer)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from fastseg.kernels.partition import mix_int_ids

    t = arr.type
    if pa.types.is_dictionary(t):
        dict_h = text_hashes(arr.dictionary) if _is_text(t.value_type) else None
        if dict_h is None:
            return id_hashes(arr.cast(t.value_type), as_text)
        idx = arr.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        out = dict_h[idx] if dict_h.shape[0] else np.zeros(len(arr), np.uint64)
        return out
    if _is_text(t):
        return text_hashes(arr)
    if pa.types.is_floating(t):
        v = arr.to_numpy(zero_copy_only=False)
        whole = np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) < 2.0**62)
        arr = pa.array(np.where(whole, v, 0).astype(np.int64))
        t = arr.type
    if as_text:
        return text_hashes(arr.cast(pa.large_string()))
    ints = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    return mix_int_ids(ints)


def _is_text(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def series_hashes(ids: pl.Series, as_text: bool) -> np.ndarray:
    """:func:`id_hashes` of a typed id column of profiles or events (Int64 or String)."""
    arr = ids.to_arrow(compat_level=pl.CompatLevel.oldest())
    if hasattr(arr, "combine_chunks"):
        arr = arr.combine_chunks()
    return id_hashes(arr, as_text)


class Distinct:
    """An estimate of the distinct hashes seen (k smallest values; ~1.5% error)."""

    def __init__(self, k: int = 4096) -> None:
        self.k = k
        self.kept = np.empty(0, np.uint64)

    def add(self, hashes: np.ndarray) -> None:
        if self.kept.shape[0] >= self.k:
            hashes = hashes[hashes <= self.kept[-1]]
        if hashes.shape[0] == 0:
            return
        both = np.unique(np.concatenate([self.kept, hashes]))
        self.kept = both[: self.k]

    @property
    def estimate(self) -> int:
        n = self.kept.shape[0]
        if n < self.k:
            return n
        return int((self.k - 1) / (float(self.kept[-1]) / 2.0**64))


# ----------------------------------------------------------------------------------- spill


@dataclass
class Spill:
    """Order rows spilled to bucket files (see the module docstring)."""

    folder: Path
    files: list[Path]
    rows: list[int]
    as_text: bool  # ids hashed (and replayed) as text
    text_seen: bool  # CSV: some batch's ids were text (every id is then text)
    csv_ids: bool
    row_hashes: bool
    customers: int  # estimated distinct customers
    n_buckets: int = 0
    #: per bucket, the (source row group, rows) of each batch written, in order
    runs: list[list[tuple[int, int]]] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(self.rows)


_ROW_HASH = "__fastseg_row_hash"
_GROUP = "__fastseg_group"


def _plain_dictionaries(table: Any, schema: Any) -> Any:
    """Text ids (and any dictionary column whose first table had more than 4,096 values) as
    plain text: a bucket's share of a batch would carry the batch's whole dictionary, written
    again with every slice and coded again in every bucket pass (UUID ids: 10x slower)."""
    import pyarrow as pa

    out = table
    for i, fld in enumerate(table.schema):
        if not pa.types.is_dictionary(fld.type):
            continue
        if schema is not None:
            decode = not pa.types.is_dictionary(schema.field(fld.name).type)
        else:
            col = table.column(i)
            size = max((len(c.dictionary) for c in col.chunks), default=0)
            decode = fld.name == "customer_id" or size > 4096
        if decode:
            out = out.set_column(i, fld.name, table.column(i).cast(fld.type.value_type))
    return out


@contextlib.contextmanager
def spill_errors(folder: Path) -> Iterator[None]:
    """A failed write of a spill file (the disk full): one line naming ``--tmp-dir``."""
    try:
        yield
    except (OSError, pl.exceptions.ComputeError) as exc:
        text = str(exc).strip()
        reason = getattr(exc, "strerror", None) or (
            text.splitlines()[0] if text else type(exc).__name__
        )
        msg = (
            f"--tmp-dir '{folder.parent}': cannot write the spill files ({reason}); free space "
            "there (about 50 bytes per order row) or give another --tmp-dir"
        )
        raise OutputError(msg) from None


def spill_orders(
    rd: Any,
    need: Sequence[str],
    hashes: bool,
    n_buckets: int,
    folder: Path,
    as_text: bool,
    progress: Any = None,
) -> Spill:
    """Read every table of reader ``rd`` (the columns ``need``, with the reader's row hashes
    when ``hashes``) and append each row to its bucket's IPC stream file."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    from fastseg.kernels.partition import bucket_order, buckets_of_hashes
    from fastseg.sources import one_chunk

    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"orders-{b:05d}.arrows" for b in range(n_buckets)]
    writers: list[Any] = [None] * n_buckets
    rows = [0] * n_buckets
    runs: list[list[tuple[int, int]]] = [[] for _ in range(n_buckets)]
    distinct = Distinct()
    text_seen = False
    schema = None
    options = ipc.IpcWriteOptions(compression=None)
    try:
        with rd.tables(need, hashes=hashes) as tables:
            for group, _whole, table, row_hashes in tables:
                n = table.num_rows
                if n == 0:
                    continue
                cid = one_chunk(table.column("customer_id"))
                if rd.csv_ids:  # one schema for every file: CSV ids as text, typed on replay
                    text_seen = text_seen or _is_text(cid.type)
                    cid = cid.cast(pa.large_string())
                    table = table.set_column(
                        table.column_names.index("customer_id"), "customer_id", cid
                    )
                h = id_hashes(cid, as_text)
                distinct.add(h)
                table = _plain_dictionaries(table, schema)
                if row_hashes is not None:
                    table = table.append_column(_ROW_HASH, pa.array(row_hashes, pa.uint64()))
                # the source's row group (Parquet): order ids of one group never meet another's
                # when the footers say so, and the bucket pass counts lines group by group too
                table = table.append_column(_GROUP, pa.array(np.full(n, group, np.int32)))
                table = table.combine_chunks()
                if schema is None:
                    schema = table.schema
                elif table.schema != schema:
                    table = table.cast(schema)
                order, starts = bucket_order(buckets_of_hashes(h, n_buckets), n_buckets)
                sorted_table = table.take(pa.array(order))
                for b in np.flatnonzero(np.diff(starts)).tolist():
                    lo, hi = int(starts[b]), int(starts[b + 1])
                    with spill_errors(folder):
                        if writers[b] is None:
                            writers[b] = ipc.new_stream(str(files[b]), schema, options=options)
                        writers[b].write_batch(sorted_table.slice(lo, hi - lo).to_batches()[0])
                    rows[b] += hi - lo
                    runs[b].append((int(group), hi - lo))
                del sorted_table, table
                if progress is not None:
                    progress.advance(n)
    finally:
        for w in writers:
            if w is not None:
                w.close()
    for b in range(n_buckets):
        if writers[b] is None and schema is not None:  # an empty bucket: its schema only
            with spill_errors(folder), ipc.new_stream(str(files[b]), schema, options=options):
                pass
    return Spill(
        folder=folder,
        files=files if schema is not None else [],
        rows=rows,
        as_text=as_text,
        text_seen=text_seen,
        csv_ids=bool(rd.csv_ids),
        row_hashes=hashes,
        customers=distinct.estimate,
        n_buckets=n_buckets,
        runs=runs,
    )


def table_plan(
    spill: Spill, buckets: Sequence[int], groups: Sequence[tuple[int, int]] | None, target: int
) -> tuple[list[tuple[int, int]], tuple[tuple[int, int], ...] | None]:
    """How a unit's spilled batches are replayed: consecutive batches of one bucket joined into
    tables of about ``target`` rows, cut only where the source row group changes, so that every
    table holds all the lines of its orders (orders never span buckets or, when the footers
    say so, row groups). Returns ``[(bucket, rows)]`` per table and, with ``groups`` (the
    source's order-id range per row group), each table's order-id range."""
    plan: list[tuple[int, int]] = []
    ranges: list[tuple[int, int]] = []
    for b in buckets:
        rows = 0
        lo = hi = None
        last = None
        for group, n in spill.runs[b]:
            if rows and rows >= target and (groups is None or group != last):
                plan.append((b, rows))
                ranges.append((lo, hi))  # type: ignore[arg-type]
                rows, lo, hi = 0, None, None
            rows += n
            last = group
            if groups is not None and group >= 0:
                g_lo, g_hi = groups[group]
                lo = g_lo if lo is None else min(lo, g_lo)
                hi = g_hi if hi is None else max(hi, g_hi)
        if rows:
            plan.append((b, rows))
            ranges.append((lo, hi))  # type: ignore[arg-type]
    if groups is None or any(r[0] is None for r in ranges):
        return plan, None
    return plan, tuple(ranges)


@dataclass(frozen=True)
class SpilledReader(OrderReader):
    """Replays spilled tables of some buckets as the original reader made them (an
    :class:`fastseg.sources.OrderReader` of the original ``kind``), joined per
    :func:`table_plan` (``group`` of a table: its index in the plan)."""

    files: tuple[Path, ...] = ()
    text_ids: bool = False  # CSV ids: replayed as text (else as Int64)
    tables_plan: tuple[tuple[int, int], ...] = ()

    @contextlib.contextmanager
    def tables(self, need: Sequence[str], *, hashes: bool) -> Iterator[Iterator[Any]]:
        yield self._tables(hashes)

    def _tables(self, hashes: bool) -> Iterator[tuple[int, bool, Any, np.ndarray | None]]:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        readers: dict[int, Any] = {}
        files: dict[int, Any] = {}
        try:
            for index, (b, rows) in enumerate(self.tables_plan):
                if b not in readers:
                    for f in files.values():
                        f.close()
                    readers.clear()
                    files.clear()
                    files[b] = pa.OSFile(str(self.files[b]))  # read, not mapped: no RSS kept
                    readers[b] = ipc.open_stream(files[b])
                batches = []
                got = 0
                while got < rows:
                    batch = readers[b].read_next_batch()
                    batches.append(batch)
                    got += batch.num_rows
                table = pa.Table.from_batches(batches).combine_chunks()
                del batches
                replayed, row_h = self._replayed(table, hashes)
                yield index, False, replayed, row_h
        finally:
            for f in files.values():
                f.close()

    def _replayed(self, table: Any, hashes: bool) -> Any:
        import pyarrow as pa

        row_h = None
        if _GROUP in table.column_names:
            table = table.drop_columns([_GROUP])
        if _ROW_HASH in table.column_names:
            if hashes:
                row_h = table.column(_ROW_HASH).to_numpy()
            table = table.drop_columns([_ROW_HASH])
        if self.csv_ids and not self.text_ids:
            i = table.column_names.index("customer_id")
            table = table.set_column(i, "customer_id", table.column(i).cast(pa.int64()))
        return table, row_h


# ---------------------------------------------------------------------------- the buckets


def plan_units(spill: Spill, bud: Budget, per_row: int) -> list[list[int]]:
    """Group consecutive buckets into units whose estimated state fits the budget."""
    total = max(spill.total_rows, 1)
    units: list[list[int]] = []
    cur: list[int] = []
    cur_rows = 0
    for b, r in enumerate(spill.rows):
        customers = math.ceil(spill.customers * (cur_rows + r) / total)
        if cur and bud.pass_bytes(customers, cur_rows + r, per_row) > bud.state:
            units.append(cur)
            cur, cur_rows = [], 0
        cur.append(b)
        cur_rows += r
    if cur:
        units.append(cur)
    return units


def n_buckets_for(customers_est: int, rows: int, bud: Budget, per_row: int) -> int:
    """Spill buckets: enough for units of about half the budget, at least MIN_BUCKETS."""
    need = bud.pass_bytes(customers_est, rows, per_row) / max(bud.state * 0.5, 1)
    n = 1 << max(0, math.ceil(math.log2(max(need, 1.0))))
    return int(min(MAX_BUCKETS, max(MIN_BUCKETS, n)))


class SpillDir:
    """The folder of a run's spill files, made under ``root`` only when first used (a run that
    fits in memory writes nothing there)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._path: Path | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            try:
                self._path = Path(tempfile.mkdtemp(prefix="fastseg-spill-", dir=self.root))
            except OSError as exc:
                msg = (
                    f"--tmp-dir '{self.root}': cannot create the spill folder "
                    f"({exc.strerror or exc}); give a writable folder"
                )
                raise OutputError(msg) from None
        return self._path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def remove(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


@contextlib.contextmanager
def spill_folder(tmp_dir: str | os.PathLike[str] | None) -> Iterator[SpillDir]:
    """A :class:`SpillDir` under ``tmp_dir`` (default: the system's temporary folder), removed
    at the end, also after a failure; ``tmp_dir`` is checked now, before any row is read."""
    root = Path(tmp_dir) if tmp_dir is not None else Path(tempfile.gettempdir())
    if not root.is_dir():
        msg = f"--tmp-dir '{root}' is not a folder; create it or give another"
        raise ParameterError(msg)
    folder = SpillDir(root)
    try:
        yield folder
    finally:
        folder.remove()


def split_frame(
    frame: pl.DataFrame, n_buckets: int, as_text: bool, folder: Path, name: str
) -> list[Path]:
    """Write the rows of a typed frame (profiles, events) to one IPC file per bucket of its
    ``customer_id`` (empty buckets: an empty file with the schema)."""
    from fastseg.kernels.partition import bucket_order, buckets_of_hashes

    h = series_hashes(frame.get_column("customer_id"), as_text)
    order, starts = bucket_order(buckets_of_hashes(h, n_buckets), n_buckets)
    ordered = frame[order] if frame.height else frame
    paths = []
    for b in range(n_buckets):
        p = folder / f"{name}-{b:05d}.arrow"
        with spill_errors(folder):
            ordered.slice(int(starts[b]), int(starts[b + 1] - starts[b])).write_ipc(p)
        paths.append(p)
    return paths


def read_parts(paths: Sequence[Path]) -> pl.DataFrame:
    frames = [pl.read_ipc(p) for p in paths]
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


def merge_reports(reports: Sequence[Any]) -> Any:
    """One :class:`fastseg.orders.RowReport` of the buckets' reports."""
    first = reports[0]
    left: dict[str, int] = {}
    for r in reports:
        for k, v in r.left_out.items():
            left[k] = left.get(k, 0) + v
    return dataclasses.replace(
        first,
        rows_read=sum(r.rows_read for r in reports),
        rows_used=sum(r.rows_used for r in reports),
        left_out=left,
        duplicates=sum(r.duplicates for r in reports),
    )


def reader_factory(
    spill: Spill, plan_tables: Sequence[tuple[int, int]], kind: str
) -> Callable[..., Any]:
    """The ``open_reader`` of :func:`fastseg.pipeline.order_features` for a unit's tables."""

    def open_reader(plan: Any, stats: Any, batch_rows: int) -> SpilledReader:
        return SpilledReader(
            kind=kind,
            plan=plan,
            columns=dict(plan.columns),
            batch_rows=batch_rows,
            csv_ids=spill.csv_ids,
            files=tuple(spill.files),
            text_ids=spill.text_seen,
            tables_plan=tuple(plan_tables),
        )

    return open_reader
