"""Daily refresh: the per-customer state of an order history, saved in a folder, so that the
next run reads only the new orders (``--state DIR``; docs/refresh.md).

What the folder holds (``state.json`` names every file; the other files are never changed once
written, and a file no manifest names is removed by the next run):

``state.json``
    the manifest: format, the scoring date the state was made for, the latest order date, the
    days of recent rows kept, the customer id type, the order columns, the rule aggregates
    carried (each with its definition), the fixed edges (``--edges-in`` given once), the inputs
    applied (each file's size and SHA-256), the rows read, used and left out (by reason) and the
    exact duplicates over all of them, and the names of the files below.
``customers-*.npy``, ``ids-*``
    per customer, in code order: the id and the all-time accumulator fields
    (:data:`fastseg.kernels.aggregate.STATE_FIELDS`); ``extra-*.npz``: categories, ``top_category`` and
    purchase-day state, the carried rule aggregates.
``recent-*.arrow``
    the usable rows of the last ``keep_days`` days (customer code, day, amount, order flag,
    order key, the columns the rules filter on), in the order they were applied: the trailing
    windows (30/90/365 days, and the rule windows) of each new scoring date are added up from
    them again, so that rows age out exactly.
``orders-*.npy``, ``nulls-*.npy``, ``rows-*.npy``
    the orders counted so far (exact (customer code, order key) pairs: a line of an old order in
    a new file is a line, not a new order) and the hashes of every row read (exact duplicates
    across files, when the orders have no order id): :mod:`fastseg.kernels.seen`.

A run with the state is exact: its outputs equal those of one run over every input applied so
far, in the order applied (money sums too: each is added in the same order). The state is
saved with the run's outputs, through the same :class:`fastseg.outputs.OutputSet`: the manifest
is renamed into place last, so a failed or killed run leaves the previous state whole (and the
input not applied: the next run can apply it again).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fastseg.errors import DataError, InputError, ParameterError

__all__ = ["MANIFEST", "StateInfo", "state_info"]

MANIFEST = "state.json"
FORMAT = 1
_LOCK = ".lock"
#: recent rows kept by default beyond the longest window, in days: none (the windows decide)
#: a recent-rows file is rewritten once this share of its rows has aged out (otherwise the
#: aged rows are skipped as it is read)
_REWRITE_SHARE = 0.25
#: the data files' name prefixes (the key sets' are :mod:`fastseg.kernels.seen`'s)
_KINDS = ("customers", "ids", "extra", "recent", "keys", "pairs")


@contextlib.contextmanager
def _reading(folder: Path) -> Iterator[None]:
    """A data file of the state that is missing or cannot be read: one line saying to rebuild."""
    try:
        yield
    except (OSError, ValueError, ParameterError, KeyError) as exc:
        name = getattr(exc, "filename", None)
        what = f"its file {Path(name).name}" if name else "a file it names"
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        reason = getattr(exc, "strerror", None) or first
        raise _rebuild(folder, f"{what} cannot be read ({reason})") from None


def _rebuild(folder: Path, why: str) -> DataError:
    msg = (
        f"--state '{folder}': {why}; rebuild the state from the whole history into a new folder "
        f"(fastseg run ALL_ORDERS --state NEW_FOLDER ...) and use that one from then on"
    )
    return DataError(msg)


# ------------------------------------------------------------------------------ fingerprints


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def fingerprints(source: Any, files: Sequence[Path]) -> list[dict[str, Any]]:
    """What identifies each input file (its path, size and SHA-256); a frame, by the SHA-256 of
    its Arrow IPC stream."""
    if files:
        out = []
        for p in files:
            st = os.stat(p)
            out.append({"path": str(Path(p).resolve()), "bytes": st.st_size, "sha256": _sha256(p)})
        return out
    import io

    frame = source.collect() if isinstance(source, pl.LazyFrame) else source
    if not isinstance(frame, pl.DataFrame):
        frame = pl.DataFrame(frame) if not hasattr(frame, "schema") else pl.from_arrow(frame)
    buf = io.BytesIO()
    assert isinstance(frame, pl.DataFrame)
    frame.write_ipc_stream(buf, compression="uncompressed")
    return [
        {
            "path": "(frame)",
            "bytes": buf.tell(),
            "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
        }
    ]


# ----------------------------------------------------------------------------- the folder


class StateDir:
    """A state folder, locked for one run: its manifest (None when new) and its files."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(os.path.expanduser(os.fspath(folder)))
        self.manifest: dict[str, Any] | None = None
        self._lock: Any = None

    @classmethod
    @contextlib.contextmanager
    def opened(cls, folder: str | os.PathLike[str]) -> Iterator[StateDir]:
        sd = cls(folder)
        try:
            sd._open()
            yield sd
        finally:
            sd.close()

    def _open(self) -> None:
        import fcntl

        f = self.folder
        if f.exists() and not f.is_dir():
            msg = f"--state '{f}' is a file; the state is a folder: give a folder path"
            raise InputError(msg)
        try:
            f.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"--state '{f}': cannot create the folder: {exc.strerror or exc}"
            raise InputError(msg) from None
        path = f / MANIFEST
        if not path.exists():
            foreign = [n for n in os.listdir(f) if not _ours(n)]
            if foreign:
                msg = (
                    f"--state '{f}' holds '{foreign[0]}' but no {MANIFEST}: it is not a fastseg "
                    "state; give a new or empty folder"
                )
                raise InputError(msg)
        try:
            self._lock = open(f / _LOCK, "a")  # noqa: SIM115
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            msg = f"--state '{f}': another fastseg run is using this state; wait for it to end"
            raise InputError(msg) from None
        except OSError as exc:
            msg = f"--state '{f}': cannot lock the folder: {exc.strerror or exc}"
            raise InputError(msg) from None
        if path.exists():
            self.manifest = read_manifest(f)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def path(self, name: str) -> Path:
        return self.folder / name

    def new_name(self, kind: str, suffix: str) -> str:
        return f"{kind}-{uuid.uuid4().hex[:16]}{suffix}"

    def listed(self, manifest: dict[str, Any] | None) -> set[str]:
        """The data files ``manifest`` names (and the state before it, kept for a re-run)."""
        if manifest is None:
            return set()
        before = manifest.get("previous")
        names = self.listed(before) if isinstance(before, dict) else set()
        files = manifest["files"]
        names |= {files["customers"], files["ids"], files["extra"]}
        names |= {r["name"] for r in files["recent"]}
        for k in ("orders", "nulls", "rows"):
            names |= set(files[k])
        return names

    def remove_unlisted(self, manifest: dict[str, Any]) -> None:
        """Delete the data files the committed ``manifest`` does not name (earlier states,
        failed runs); the caller holds the lock."""
        keep = self.listed(manifest)
        for name in os.listdir(self.folder):
            if _ours(name) and name not in keep and name not in (MANIFEST, _LOCK):
                with contextlib.suppress(OSError):
                    os.remove(self.folder / name)


_DATA = re.compile(
    r"(?:\._tmp-)?\.?(?:" + "|".join(_KINDS) + r")-[0-9a-f]{16}(?:[0-9a-f]{16})?"
    r"\.(?:npy|npz|arrow)(?:\.tmp)?"
)


def _ours(name: str) -> bool:
    """A file a state folder may hold: the manifest, the lock, data files
    (``recent-<16 hex>.arrow``, ``pairs-<32 hex>.npy``...) and their temporary files
    (``._tmp-recent-….arrow``, ``.pairs-….npy.tmp``, ``.state.json.….tmp``)."""
    if name in (MANIFEST, _LOCK) or (name.startswith(f".{MANIFEST}.") and name.endswith(".tmp")):
        return True
    return _DATA.fullmatch(name) is not None


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"--state '{folder}': {MANIFEST} cannot be read ({exc}); rebuild the state"
        raise InputError(msg) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else None
        msg = (
            f"--state '{folder}': {MANIFEST} is state format {got!r}, this fastseg reads format "
            f"{FORMAT}; rebuild the state with this version"
        )
        raise InputError(msg)
    for key, kind in _MANIFEST_KEYS.items():
        if not isinstance(data.get(key), kind):
            msg = (
                f"--state '{folder}': {MANIFEST} has no valid {key!r} (damaged, or edited by "
                "hand); rebuild the state"
            )
            raise InputError(msg)
    return data


#: what every manifest holds, and its type (checked as it is read)
_MANIFEST_KEYS = {
    "as_of": str,
    "latest_date": str,
    "keep_days": int,
    "windows": list,
    "lines": bool,
    "aggregator": dict,
    "rules": dict,
    "inputs": list,
    "report": dict,
    "files": dict,
    "recent_columns": list,
    "created_at": str,
    "updated_at": str,
    "fastseg": str,
    "bytes": int,
}


def _save_npy(sd: StateDir, kind: str, array: np.ndarray) -> str:
    name = sd.new_name(kind, ".npy")
    tmp = sd.path(f"._tmp-{name}")
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, sd.path(name))
    return name


def _save_npz(sd: StateDir, kind: str, arrays: dict[str, np.ndarray]) -> str:
    name = sd.new_name(kind, ".npz")
    tmp = sd.path(f"._tmp-{name}")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, sd.path(name))
    return name


def _save_arrow(sd: StateDir, kind: str, table: Any) -> str:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    name = sd.new_name(kind, ".arrow")
    tmp = sd.path(f"._tmp-{name}")
    with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 20)
    os.replace(tmp, sd.path(name))
    return name


def _arrow(values: np.ndarray) -> Any:
    """A numpy array as an Arrow array, no copy (``pa.array`` would import pandas)."""
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    kind = {"i4": pa.int32(), "i8": pa.int64(), "u1": pa.uint8(), "f8": pa.float64()}
    return pa.Array.from_buffers(
        kind[values.dtype.str[1:]], values.shape[0], [None, pa.py_buffer(values)]
    )


def _np(table: Any, name: str) -> np.ndarray:
    """A column of an Arrow table as numpy, without pandas (``ChunkedArray.to_numpy`` needs it)."""
    col = table.column(name)
    arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    dtype = np.dtype(str(arr.type).replace("double", "float64"))
    if arr.null_count or not len(arr):
        return np.array(arr.to_pylist(), dtype)
    return np.frombuffer(arr.buffers()[1], dtype, len(arr), arr.offset * dtype.itemsize)


def _read_arrow(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.memory_map(str(path), "r") as src:
        return ipc.open_file(src).read_all()


# ------------------------------------------------------------------------------ one run


_SCHEMA_KINDS = {"int": pl.Int64, "text": pl.String, "float": pl.Float64, "date": pl.Date}


def _kind(dtype: pl.DataType) -> str:
    if dtype == pl.String or dtype == pl.Categorical or isinstance(dtype, pl.Enum):
        return "text"
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return "date"
    return "text"


@dataclass
class Refresh:
    """One run's use of a state folder: what it loads into the row pass
    (:class:`fastseg.pipeline._RowPass`), what the pass adds, and the files it writes."""

    sd: StateDir
    inputs: list[dict[str, Any]]
    keep_days: int | None = None  # asked for (None: the longest window the run needs)
    #: set by the row pass
    manifest_out: dict[str, Any] | None = None
    new_recent: list[Any] = field(default_factory=list)
    new_pairs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    new_nulls: list[np.ndarray] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    #: the edges every run of this state scores with (a scorer's dict; None: fitted each run)
    fixed_edges: dict[str, Any] | None = None
    #: names of the carried rule aggregates this run computes but does not output
    hidden: set[str] = field(default_factory=set)

    @property
    def old(self) -> dict[str, Any] | None:
        return self.sd.manifest

    # ---------------------------------------------------------------------- before reading

    def empty_orders(self) -> pl.DataFrame:
        """No new orders (a new scoring date only): an empty frame of the state's columns."""
        old = self.old
        if old is None:
            msg = (
                f"orders: --state '{self.sd.folder}' is new; the first run needs the order "
                "history to build it from"
            )
            raise ParameterError(msg)
        kinds = dict(old.get("order_schema") or {})
        kinds.setdefault("customer_id", "int" if old["aggregator"]["ids"] == "int" else "text")
        kinds["customer_id"] = "int" if old["aggregator"]["ids"] == "int" else "text"
        kinds.setdefault("order_ts", "date")
        kinds.setdefault("amount", "float")
        return pl.DataFrame(schema={c: _SCHEMA_KINDS[k] for c, k in kinds.items()})

    def finished_manifest(self) -> dict[str, Any]:
        """The new state's manifest, to commit (after :meth:`save`)."""
        assert self.manifest_out is not None
        self.manifest_out["edges"] = self.fixed_edges
        return self.manifest_out

    def summary(self) -> dict[str, Any]:
        """What the result tells of the new state (as ``fastseg state info``)."""
        out = StateInfo(self.sd.folder, self.finished_manifest()).to_dict()
        out["reapplied"] = self.info.get("reapplied")
        return out

    def check_inputs(self) -> None:
        """An input applied already is refused (its rows would count twice) — unless it is the
        last one applied: then the run starts from the state before it and applies it again
        (a retried or repeated day gives the same outputs, never counts twice)."""
        if self.old is None:
            return
        seen = {}
        for run in self.old["inputs"]:
            for f in run["files"]:
                seen[f["sha256"]] = (f, run)
        last = self.old["inputs"][-1] if self.old["inputs"] else None
        before = self.old.get("previous")  # the state before the last input ("empty": none)
        same_as_last = (
            last is not None
            and self.inputs
            and sorted(f["sha256"] for f in self.inputs)
            == sorted(f["sha256"] for f in last["files"])
            and (
                before == "empty"
                or (isinstance(before, dict) and before.get("inputs") == self.old["inputs"][:-1])
            )
        )
        if same_as_last:
            self.sd.manifest = before if isinstance(before, dict) else None
            self.info["reapplied"] = last["source"]
            return
        for f in self.inputs:
            hit = seen.get(f["sha256"])
            if hit is not None:
                prev, run = hit
                since = (
                    "a run with a later scoring date since" if run is last else "other inputs since"
                )
                msg = (
                    f"orders: {f['path']} was applied to --state '{self.sd.folder}' already "
                    f"(as {prev['path']}, on {run['applied_at']}; same content, SHA-256 "
                    f"{f['sha256'][:12]}…), and {since}: its rows would count twice; give "
                    "only the new orders"
                )
                raise DataError(msg)

    def scoring_date(self, as_of: dt.date | None, latest: dt.date | None) -> dt.date | None:
        """The scoring date: the one given, or the latest order's over the state and the new
        rows; never earlier than the state's."""
        old = self.old
        if old is None:
            return as_of if as_of is not None else latest
        made = dt.date.fromisoformat(old["as_of"])
        if as_of is None:  # the latest order's date, but never before the state's date
            state_latest = dt.date.fromisoformat(old["latest_date"])
            return max(made, state_latest, latest or state_latest)
        if as_of < made:
            raise _rebuild(
                self.sd.folder,
                f"it was made for scoring date {made}; a run for the earlier date {as_of} "
                "cannot take rows back out",
            )
        return as_of

    def latest_used(self, this_run: int | None) -> int | None:
        old = self.old
        prev = None if old is None else old.get("max_used_day")
        if prev is None:
            return this_run
        return prev if this_run is None else max(prev, this_run)

    # ------------------------------------------------------------------ loading into a pass

    def hidden_specs(self, specs: Sequence[Any]) -> list[Any]:
        """The order aggregates the state carries that ``specs`` (this run's) lack: computed
        by the pass all the same, so that the state stays whole on a run without the rules
        that need them, but not in its outputs (:attr:`hidden`)."""
        from fastseg.aggregates import spec_of_text

        old = self.old
        self.hidden: set[str] = set()
        if old is None:
            return []
        have = {f"{a.name}={a.aggregate!r}" for a in specs}
        out = []
        for r in old["rules"]["specs"]:
            if r["signature"] in have:
                continue
            try:
                spec = spec_of_text(r["text"])
            except Exception:  # a damaged manifest: the parser's errors are many
                raise _rebuild(
                    self.sd.folder, f"its rule aggregate {r['text']!r} does not parse"
                ) from None
            if f"{spec.name}={spec.aggregate!r}" != r["signature"]:
                raise _rebuild(
                    self.sd.folder, f"its rule aggregate {r['text']!r} reads differently"
                )
            out.append(spec)
            self.hidden.add(spec.name)
        return out

    def kept_columns(self) -> list[str]:
        """The columns the state's recent rows keep (for the rules' filters)."""
        return list(self.old.get("recent_columns", [])) if self.old is not None else []

    def reach(self, as_of: dt.date, windows: Sequence[int], rules: Any, most: bool = False) -> int:
        """Days back from ``as_of`` the recent rows must cover for these windows and the
        windowed rule aggregates; ``most``: at any scoring date (months as 31 days, years as
        366), what a new state keeps."""
        from fastseg.rules.ast import RelDate

        need = max(windows) if windows else 0
        if rules:
            for s in rules.specs:
                if s.carried:
                    continue
                since = s.spec.since_date(as_of)
                if since is None:  # an end relative to the scoring date, no start
                    raise _rebuild(
                        self.sd.folder,
                        f"the rule aggregate {s.spec.name} has a window ending relative to the "
                        "scoring date but no start, which no saved state can keep (it would need "
                        "every row); give it a start (since: -365d)",
                    )
                need = max(need, (as_of - since).days)
                rel = s.spec.aggregate.since
                if most and isinstance(rel, RelDate) and rel.amount < 0:
                    per = {"d": 1, "w": 7, "m": 31, "y": 366}[rel.unit]
                    need = max(need, -rel.amount * per)
        return need

    def load(self, rp: Any) -> None:
        """Load the saved state into a fresh row pass ``rp``: the aggregator, the rule
        aggregates, the trailing windows of the new scoring date."""
        old = self.old
        agg, rules = rp.agg, rp.rules
        need = self.reach(rp.as_of, agg.windows, rules)
        keep = max(self.reach(rp.as_of, agg.windows, rules, most=True), self.keep_days or 0)
        if old is not None:
            have = int(old["keep_days"])
            if need > have:
                raise _rebuild(
                    self.sd.folder,
                    f"this run needs the orders of the last {need} days (its windows and rule "
                    f"windows), the state keeps {have} (rebuild with --keep-days {need} or more)",
                )
            keep = max(have, self.keep_days or 0)
            if self.keep_days is not None and self.keep_days > have:
                raise _rebuild(
                    self.sd.folder,
                    f"--keep-days {self.keep_days}: the state keeps {have} days of orders",
                )
        self.info["keep_days"] = keep
        self.keep_since = rp.as_of_day - keep
        if old is None:
            return
        self._check_carried(rp, old)
        kind = old["aggregator"]["ids"]
        if old["aggregator"]["customers"] and not rp.stats.csv_ids:
            new = "text" if rp.stats.text_ids else "int"
            if new != kind:
                msg = (
                    f"orders: {rp.rd.label}: the customer ids are {new} but those of --state "
                    f"'{self.sd.folder}' are {kind}: give the same ids as the history (map the "
                    "id column with --col customer_id=COLUMN), or rebuild the state"
                )
                raise DataError(msg)
        files = old["files"]
        rec = old["aggregator"]
        with _reading(self.sd.folder):
            arrays: dict[str, Any] = dict(np.load(self.sd.path(files["extra"]), allow_pickle=False))
            if rec["ids"] == "text":
                arrays["ids"] = _read_arrow(self.sd.path(files["ids"])).column(0).combine_chunks()
            else:
                arrays["ids"] = np.load(self.sd.path(files["ids"]), mmap_mode="r")
            arrays["records"] = np.load(self.sd.path(files["customers"]), mmap_mode="r")
            if arrays["records"].shape[0] != rec["customers"]:
                raise ValueError(f"{files['customers']} holds {arrays['records'].shape[0]} records")
            self.old_arrays = arrays
        if agg.days is not None and not rec["btyd"]:
            raise _rebuild(
                self.sd.folder, "predictions need the purchase days, which it does not keep"
            )
        if agg.top_category and not rec["top_category"]:
            raise _rebuild(
                self.sd.folder,
                "a rule uses top_category, whose revenue per category it does not keep",
            )
        # what the state carries it keeps carrying, used by this run or not
        agg.keep_category_revenue = bool(rec["top_category"])
        if rec["btyd"] and agg.days is None:
            from fastseg.kernels.days import PurchaseDays

            agg.days = PurchaseDays(1)
        agg.load_state(arrays, rec)
        if rules:
            rules.load(arrays, old["rules"])
        self._load_recent(rp)

    def _check_carried(self, rp: Any, old: dict[str, Any]) -> None:
        carried = {r["signature"] for r in old["rules"]["specs"]}
        kept_cols = set(old.get("recent_columns", []))
        for s in rp.rules.specs if rp.rules else ():
            if s.carried and s.signature() not in carried:
                raise _rebuild(
                    self.sd.folder,
                    f"a rule needs {s.spec.name} (over every order since the first), which it "
                    "does not carry: it was made without that rule",
                )
            if not s.carried:
                missing = [c for c in s.spec.columns if c not in kept_cols and c not in _BUILT]
                if missing:
                    raise _rebuild(
                        self.sd.folder,
                        f"the rule aggregate {s.spec.name} filters on column {missing[0]!r}, "
                        "which its recent rows do not keep",
                    )
        if old["lines"] != ("order_id" in rp.rd.columns) and old["aggregator"]["customers"]:
            have = "with" if old["lines"] else "without"
            raise _rebuild(
                self.sd.folder,
                f"it was made from orders {have} an order_id column and these orders differ "
                "(lines of one order could count twice)",
            )

    def _load_recent(self, rp: Any) -> None:

        import pyarrow as pa

        from fastseg.kernels.aggregate import add_windows

        agg, rules = rp.agg, rp.rules
        n = agg.acc.shape[0]
        self.kept: list[tuple[dict[str, Any], Any, int]] = []
        for entry in self.old["files"]["recent"]:
            if entry["max_day"] < self.keep_since:
                continue  # aged out whole: not listed again
            with _reading(self.sd.folder):
                table = _read_arrow(self.sd.path(entry["name"]))
            day = _np(table, "day")
            n_live = int(np.count_nonzero(day >= self.keep_since))  # older rows: in no window
            for name in rp.filter_cols:  # a column the rows of that run did not have: null
                if name not in table.column_names:
                    table = table.append_column(name, pa.nulls(table.num_rows))
            self.kept.append((entry, table, n_live))
            if not table.num_rows:
                continue
            codes = _np(table, "code")
            day = _np(table, "day")
            amount = _np(table, "amount")
            flags = _np(table, "flags")
            add_windows(codes, day, amount, flags, agg.since, agg.acc)
            if rules:
                okey = _np(table, "okey") if "okey" in table.column_names else None
                rules.add(
                    codes.astype(np.int64),
                    n,
                    day,
                    amount,
                    flags,
                    table,
                    np.arange(table.num_rows),
                    okey,
                    only=lambda s: not s.carried,
                )

    # ------------------------------------------------------------------- during the pass

    def lines(self, inner: Any) -> Any:
        """The order-lines check of the pass: lines of an order counted before (this run or
        any earlier one) are lines, not orders."""
        return _StateLines(self, inner)

    def keep_rows(self, rp: Any, codes: np.ndarray, table: Any, usable: np.ndarray) -> None:
        """Keep the usable rows of a batch dated in the last ``keep_days`` days."""
        import pyarrow as pa

        b = rp._buffers
        used = codes.shape[0]
        day = b.day[:used]
        keep = np.flatnonzero(day >= self.keep_since)
        if not keep.shape[0]:
            return
        cols: dict[str, Any] = {
            "code": _arrow(codes[keep].astype(np.int32)),
            "day": _arrow(day[keep].astype(np.int32)),
            "amount": _arrow(b.amount[:used][keep].astype(np.float64)),
            "flags": _arrow(b.flags[:used][keep].astype(np.uint8)),
        }
        if rp.lines_mode != "none":
            cols["okey"] = _arrow(b.order_id[:used][keep].astype(np.int64))
        if rp.filter_cols:
            rows = table.select(rp.filter_cols).take(_arrow(usable[keep].astype(np.int64)))
            for name in rp.filter_cols:
                col = rows.column(name).combine_chunks()
                if pa.types.is_dictionary(col.type):
                    col = col.cast(col.type.value_type)
                if pa.types.is_string(col.type):
                    col = col.cast(pa.large_string())
                cols[name] = col
        self.new_recent.append(pa.table(cols))

    # -------------------------------------------------------------------------- the end

    def cumulative(self, report: Any, rp: Any) -> dict[str, Any]:
        """The row report over every input applied so far, this one included (exact
        duplicates against all earlier rows too)."""
        from fastseg.kernels.seen import KeySet

        old = self.old
        prev = old["report"] if old is not None else None
        dups = report.duplicates
        self.rows_runs: list[str] | None = None
        if rp.want_dups:
            with _reading(self.sd.folder):
                ks = KeySet.open(self.sd.folder, old["files"]["rows"] if old else [])
            hashes = np.concatenate(rp.hashes) if rp.hashes else np.empty(0, np.uint64)
            new = ks.add(hashes.view(np.uint64))
            dups = int(hashes.shape[0] - int(new.sum()))
            ks.compact()
            self.rows_runs = list(ks.runs)
        left = dict(report.left_out)
        out = {
            "rows_read": report.rows_read,
            "rows_used": report.rows_used,
            "left_out": left,
            "exact_duplicate_rows": dups,
        }
        if prev is not None:
            out["rows_read"] += prev["rows_read"]
            out["rows_used"] += prev["rows_used"]
            out["exact_duplicate_rows"] += prev["exact_duplicate_rows"]
            out["left_out"] = {k: left.get(k, 0) + prev["left_out"].get(k, 0) for k in left}
        out["rows_left_out"] = sum(out["left_out"].values())
        self.info["report"] = out
        return out

    def _renumber(self, rp: Any) -> None:
        """New codes in id order for the customers of a new state (:meth:`fastseg.features.
        OrderAggregator.renumber`), applied to everything else the pass keyed by code: the
        rule aggregates, the recent rows, the orders and customers counted."""
        rank = rp.agg.renumber()
        if rank is None:
            return
        n = rank.shape[0]
        order = np.empty(n, np.int64)
        order[rank] = np.arange(n)
        if rp.rules:
            rp.rules.renumber(rank, order)
        for i, table in enumerate(self.new_recent):
            codes = rank[_np(table, "code").astype(np.int64)].astype(np.int32)
            at = table.column_names.index("code")
            self.new_recent[i] = table.set_column(at, "code", _arrow(codes))
        self.new_pairs = [(rank[a.astype(np.int64)], b) for a, b in self.new_pairs]
        self.new_nulls = [rank[c.astype(np.int64)].astype(np.uint64) for c in self.new_nulls]

    def reset(self) -> None:
        """Forget what a pass collected (the rows are read again, for another scoring date)."""
        self.new_recent.clear()
        self.new_pairs.clear()
        self.new_nulls.clear()

    def save(
        self, rp: Any, as_of: dt.date, latest: dt.date | None, report: Any, schema: Any
    ) -> None:
        """Write the new state's files (named by no manifest yet) and make its manifest,
        :attr:`manifest_out`, for the caller to commit with the run's outputs. Call before
        ``rp.agg.finish()``."""
        import pyarrow as pa

        from fastseg.kernels.seen import KeySet, PairSet

        sd, old = self.sd, self.old
        cumulative = self.cumulative(report, rp)
        # a new state: its customers coded in id order, for good (not when the row hashes of
        # the duplicate count hashed text ids' codes: a later run's hashes would differ)
        if old is None and not (rp.want_dups and rp.agg.id_dtype == pl.String):
            self._renumber(rp)
        arrays, rec = rp.agg.export_state()
        files: dict[str, Any] = {}
        ids = arrays.pop("ids")
        if rec["ids"] == "text":
            files["ids"] = _save_arrow(sd, "ids", pa.table({"customer_id": ids}))
        else:
            files["ids"] = _save_npy(sd, "ids", np.asarray(ids, np.int64))
        files["customers"] = _save_npy(sd, "customers", arrays.pop("records"))
        rules_rec: dict[str, Any] = {"specs": [], "dicts": {}}
        if rp.rules:
            r_arrays, rules_rec = rp.rules.export()
            arrays.update(r_arrays)
        if old is not None:  # carried aggregates this run could not compute (their columns
            # are not in these orders: no row of them counts) are kept as they were
            done = {r["signature"] for r in rules_rec["specs"]}
            nxt = 1 + max((r["index"] for r in rules_rec["specs"]), default=-1)
            for r in old["rules"]["specs"]:
                if r["signature"] in done:
                    continue
                prefix = f"rule{r['index']}_"
                for key, value in self.old_arrays.items():
                    if key.startswith(prefix):
                        arrays[f"rule{nxt}_{key[len(prefix) :]}"] = value
                rules_rec["specs"].append({**r, "index": nxt})
                nxt += 1
            for column, values in old["rules"]["dicts"].items():
                rules_rec["dicts"].setdefault(column, values)
        files["extra"] = _save_npz(sd, "extra", arrays)
        # recent rows: the earlier files kept as they are, rewritten once a share aged out
        recent = []
        for entry, table, n_live in getattr(self, "kept", []):
            if n_live == 0:
                continue
            if n_live < (1 - _REWRITE_SHARE) * entry["rows"]:
                live = np.flatnonzero(_np(table, "day") >= self.keep_since)
                table = table.take(_arrow(live.astype(np.int64)))
                day = _np(table, "day")
                name = _save_arrow(sd, "recent", table)
                entry = {
                    "name": name,
                    "rows": n_live,
                    "min_day": int(day.min()),
                    "max_day": int(day.max()),
                }
            recent.append(entry)
        if self.new_recent:
            table = pa.concat_tables(self.new_recent, promote_options="permissive")
            # by customer, each customer's rows in the order applied (a stable sort): the next
            # run adds each customer's windows up in that order, reading the records in order
            by_code = np.argsort(_np(table, "code"), kind="stable")
            table = table.take(_arrow(by_code.astype(np.int64)))
            day = _np(table, "day")
            name = _save_arrow(sd, "recent", table)
            recent.append(
                {
                    "name": name,
                    "rows": table.num_rows,
                    "min_day": int(day.min()),
                    "max_day": int(day.max()),
                }
            )
        files["recent"] = recent
        # orders counted and row hashes
        with _reading(sd.folder):
            ps = PairSet.open(sd.folder, old["files"]["orders"] if old else [])
        if self.new_pairs:
            a = np.concatenate([p[0] for p in self.new_pairs]).astype(np.int64)
            b = np.concatenate([p[1] for p in self.new_pairs]).astype(np.int64)
            ps.add(a, b)
            ps.compact()
        files["orders"] = list(ps.runs)
        with _reading(sd.folder):
            ns = KeySet.open(sd.folder, old["files"]["nulls"] if old else [])
        if self.new_nulls:
            ns.add(np.concatenate(self.new_nulls).astype(np.uint64))
            ns.compact()
        files["nulls"] = list(ns.runs)
        files["rows"] = (
            self.rows_runs if self.rows_runs is not None else (old["files"]["rows"] if old else [])
        )
        prev_inputs = list(old["inputs"]) if old else []
        now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        if report.rows_read:  # an input with no row changes nothing: not recorded
            prev_inputs.append(
                {
                    "source": report.source,
                    "files": self.inputs,
                    "rows_read": report.rows_read,
                    "rows_used": report.rows_used,
                    "as_of": as_of.isoformat(),
                    "applied_at": now,
                }
            )
        latest_old = dt.date.fromisoformat(old["latest_date"]) if old else None
        dates = [d for d in (latest, latest_old) if d is not None]
        latest_all = max(dates) if dates else as_of  # of the orders (not the scoring date)
        kinds = {
            c: _kind(t)
            for c, t in schema.items()
            if not c.endswith("_raw") and not c.startswith("_")
        }
        if old is not None and not report.rows_read:
            kinds = old.get("order_schema", kinds)
        from fastseg import __version__

        sizes = {}
        for name in self.sd.listed({"files": files}):
            with contextlib.suppress(OSError):
                sizes[name] = os.stat(sd.path(name)).st_size
        self.manifest_out = {
            "format": FORMAT,
            "fastseg": __version__,
            "polars": pl.__version__,
            "created_at": old["created_at"] if old else now,
            "updated_at": now,
            "as_of": as_of.isoformat(),
            "latest_date": latest_all.isoformat(),
            "max_used_day": self.latest_used(rp.max_used_day),
            "keep_days": int(self.info["keep_days"]),
            "windows": list(rp.agg.windows),
            "lines": rp.lines_mode != "none",
            "order_schema": kinds,
            "recent_columns": sorted(set(rp.filter_cols) | set(self.kept_columns())),
            "aggregator": rec,
            "rules": rules_rec,
            "edges": old.get("edges") if old else None,
            "inputs": prev_inputs,
            "report": cumulative,
            "files": files,
            "bytes": int(sum(sizes.values())),
        }
        # the state before this input, for a re-run of it ("empty": it built the state); a run
        # without rows (a new scoring date) keeps none: its date must not be undone
        if report.rows_read:
            self.manifest_out["previous"] = (
                {k: v for k, v in old.items() if k != "previous"} if old is not None else "empty"
            )
        else:
            self.manifest_out["previous"] = None


_BUILT = frozenset({"customer_id", "order_date", "amount", "_order", "_order_key"})


class _StateLines:
    """:class:`fastseg.kernels.lines.OrderLines` over this run's rows, then the orders of the
    state: a line whose (customer, order id) was counted in an earlier run is not an order."""

    def __init__(self, refresh: Refresh, inner: Any) -> None:
        from fastseg.kernels.seen import KeySet, PairSet

        old = refresh.old
        self.refresh = refresh
        self.inner = inner
        with _reading(refresh.sd.folder):
            self.pairs = PairSet.open(refresh.sd.folder, old["files"]["orders"] if old else [])
            self.nulls = KeySet.open(refresh.sd.folder, old["files"]["nulls"] if old else [])

    def mark(self, codes: np.ndarray, oids: np.ndarray, flags: np.ndarray) -> None:
        self.inner.mark(codes, oids, flags)
        cand = np.flatnonzero(flags & 1)
        if not cand.shape[0]:
            return
        no_id = (flags[cand] & 4) != 0
        with_id, null_id = cand[~no_id], cand[no_id]
        c1, k1 = codes[with_id].astype(np.int64), oids[with_id].astype(np.int64)
        c2 = codes[null_id].astype(np.uint64)
        if len(self.pairs) and with_id.shape[0]:
            seen = self.pairs.contains(c1, k1)
            flags[with_id[seen]] &= np.uint8(0xFE)
            c1, k1 = c1[~seen], k1[~seen]
        if len(self.nulls) and null_id.shape[0]:
            seen2 = self.nulls.contains(c2)
            flags[null_id[seen2]] &= np.uint8(0xFE)
            c2 = c2[~seen2]
        if c1.shape[0]:
            self.refresh.new_pairs.append((c1, k1))
        if c2.shape[0]:
            self.refresh.new_nulls.append(c2)


# ------------------------------------------------------------------------------ state info


@dataclass
class StateInfo:
    """What ``fastseg state info DIR`` shows."""

    folder: Path
    manifest: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        carried = [r["signature"].split("=", 1)[0] for r in m["rules"]["specs"]]
        return {
            "folder": str(self.folder),
            "format": m["format"],
            "fastseg": m["fastseg"],
            "created_at": m["created_at"],
            "updated_at": m["updated_at"],
            "as_of": m["as_of"],
            "latest_date": m["latest_date"],
            "customers": m["aggregator"]["customers"],
            "customer_ids": m["aggregator"]["ids"],
            "inputs_applied": len(m["inputs"]),
            "last_input": m["inputs"][-1] if m["inputs"] else None,
            "rows": m["report"],
            "keep_days": m["keep_days"],
            "recent_rows": sum(r["rows"] for r in m["files"]["recent"]),
            "windows": m["windows"],
            "order_lines": m["lines"],
            "rule_aggregates_carried": carried,
            "recent_columns": m["recent_columns"],
            "top_category": m["aggregator"]["top_category"],
            "purchase_days": m["aggregator"]["btyd"],
            "edges": "fixed" if m.get("edges") else "fitted each run",
            "bytes": m["bytes"],
        }


def state_info(folder: str | os.PathLike[str]) -> StateInfo:
    """The manifest of a state folder, checked (``fastseg state info DIR``)."""
    f = Path(os.path.expanduser(os.fspath(folder)))
    if not (f / MANIFEST).is_file():
        what = "does not exist" if not f.exists() else f"holds no {MANIFEST}"
        msg = f"state '{f}' {what}: it is not a fastseg state (make one with run --state)"
        raise InputError(msg)
    return StateInfo(f, read_manifest(f))


def check_keep_days(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 36600:
        msg = f"keep_days: expected a whole number of days from 0 to 36,600, got {value!r}"
        raise ParameterError(msg)
    return value
