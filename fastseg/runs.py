"""Reading a run folder back: the files ``fastseg run --out DIR`` wrote, for ``diff`` and
``export``.

A run folder holds ``run.json`` (what was run: version, run id, scoring date, edges, inputs,
the list of files) and the tables: ``scores``, ``segments`` (long: ``customer_id``,
``segment``), ``groups`` as Parquet (or CSV with ``--format csv``), ``summary.csv``,
``overlaps.csv``, and ``membership.npz``: the segment bitsets, bit ``i`` of every row being the
customer on row ``i`` of ``scores`` (format ``fastseg-membership-1``, below). Folders written by
an earlier version (no ``membership.npz``) are read from ``segments`` instead, more slowly.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from fastseg.errors import InputError

__all__ = [
    "MEMBERSHIP_FILE",
    "MEMBERSHIP_FORMAT",
    "RunFolder",
    "open_run",
    "schema_record",
    "write_membership",
]

MEMBERSHIP_FILE = "membership.npz"
MEMBERSHIP_FORMAT = "fastseg-membership-1"
#: the tables of a run folder and the formats they may be in
TABLES = ("scores", "segments", "groups", "changes")


def write_membership(path: Path, names: tuple[str, ...], words: NDArray[np.uint64], n: int) -> None:
    """Write the segment bitsets (no customer ids: they are the rows of ``scores``) as an
    uncompressed ``.npz``: ``format`` (``"fastseg-membership-1"``), ``names`` (unicode array),
    ``words`` (``<u8[n_segments, ceil(n / 64)]``, tail bits zero), ``n_customers`` (int64)."""
    with open(path, "wb") as fh:
        np.savez(
            fh,
            format=np.array(MEMBERSHIP_FORMAT),
            names=np.array(names, dtype=np.str_),
            words=words.astype("<u8", copy=False),
            n_customers=np.array(n, dtype=np.int64),
        )


@dataclass
class RunFolder:
    """A run folder opened for reading (see the module docstring for its files)."""

    path: Path
    meta: dict[str, Any]
    _ids: pl.Series | None = field(default=None, repr=False)

    @property
    def run_id(self) -> str | None:
        value = self.meta.get("run_id")
        return str(value) if value else None

    @property
    def as_of(self) -> str:
        return str(self.meta["as_of"])

    @property
    def edges(self) -> Any:
        return self.meta.get("edges")

    def table(self, name: str) -> Path | None:
        """The file of table ``name`` (``scores``, ``segments``, ``groups``, ``changes``), or
        None when the run has none."""
        for suffix in (".parquet", ".csv"):
            p = self.path / f"{name}{suffix}"
            if p.is_file() and not (name == "changes" and suffix == ".csv"):
                return p
        return None

    def need(self, name: str, hint: str = "") -> Path:
        p = self.table(name)
        if p is None:
            msg = f"{self.path}: no {name} table in this run folder{hint}"
            raise InputError(msg)
        return p

    def scan(self, name: str, columns: list[str] | None = None) -> pl.DataFrame:
        """Read table ``name`` (all columns, or ``columns``) with the types it was written with:
        a CSV table is read as text and typed from the schema run.json recorded (never guessed:
        a phone ``0044...`` or a zip ``02134`` stays text)."""
        p = self.need(name)
        try:
            if p.suffix == ".parquet":
                lf = pl.scan_parquet(p, glob=False)
            else:
                lf = pl.scan_csv(p, infer_schema=False, glob=False)
            if columns is not None:
                have = lf.collect_schema().names()
                missing = [c for c in columns if c not in have]
                if missing:
                    msg = f"{p}: no column {missing[0]!r} (found: {', '.join(have)})"
                    raise InputError(msg)
                lf = lf.select(columns)
            if p.suffix != ".parquet":
                lf = lf.with_columns(self._csv_types(name, lf.collect_schema().names()))
            return lf.collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            msg = f"cannot read {p}: {str(exc).splitlines()[0]}"
            raise InputError(msg) from exc

    def _csv_types(self, name: str, names: list[str]) -> list[pl.Expr]:
        """Casts from text back to the recorded types (``run.json`` ``schemas``); without a
        record (a folder of an earlier version), only the customer ids are typed."""
        recorded = (self.meta.get("schemas") or {}).get(name) or {}
        if not recorded and self.id_dtype() is not None:
            recorded = {"customer_id": str(self.id_dtype())}
        return [_from_text(c, recorded[c]) for c in names if c in recorded]

    def columns(self, name: str) -> list[str]:
        """The column names of table ``name``, read from its footer or header (no row)."""
        p = self.need(name)
        try:
            lf = (
                pl.scan_parquet(p, glob=False)
                if p.suffix == ".parquet"
                else pl.scan_csv(p, infer_schema=False, glob=False)
            )
            return lf.collect_schema().names()
        except (pl.exceptions.PolarsError, OSError) as exc:
            msg = f"cannot read {p}: {str(exc).splitlines()[0]}"
            raise InputError(msg) from exc

    def id_dtype(self) -> pl.DataType | None:
        kind = self.meta.get("customer_id_dtype")
        return {"Int64": pl.Int64(), "String": pl.String()}.get(str(kind)) if kind else None

    def customer_ids(self) -> pl.Series:
        """Customer ids in the row order of ``scores`` (bit ``i`` of the membership), checked:
        no null, no id twice."""
        if self._ids is None:
            self.set_customer_ids(self.scan("scores", ["customer_id"]).to_series())
        assert self._ids is not None
        return self._ids

    def set_customer_ids(self, ids: pl.Series) -> None:
        """The ids, when read with other columns of ``scores`` already (saves a second read)."""
        where = self.need("scores")
        if ids.null_count():
            row = int(ids.is_null().arg_max() or 0)
            msg = f"{where}: customer_id is empty on row {row + 2:,}; the folder was changed by hand: run fastseg run again"
            raise InputError(msg)
        # fastseg writes them sorted: a repeated id is then next to itself
        twice = (
            ids.filter(ids == ids.shift(1)) if ids.is_sorted() else ids.filter(ids.is_duplicated())
        )
        if len(twice):
            msg = (
                f"{where}: customer_id {twice[0]!r} is on more than one row; the folder was "
                "changed by hand: run fastseg run again"
            )
            raise InputError(msg)
        self._ids = ids

    def check(self, columns: tuple[str, ...] = ("customer_id", "rfm_group", "monetary")) -> None:
        """What can be checked without reading a row: the scores table and its ``columns``,
        and the membership archive's header (format, names, customers)."""
        have = self.columns("scores")
        missing = [c for c in columns if c not in have]
        if missing:
            msg = f"{self.need('scores')}: no column {missing[0]!r} (found: {', '.join(have)})"
            raise InputError(msg)
        if (self.path / MEMBERSHIP_FILE).is_file():
            self._read_membership(words=False)
        else:
            self.need("segments")

    def _read_membership(
        self, *, words: bool
    ) -> tuple[int, tuple[str, ...], NDArray[np.uint64] | None]:
        """``(n_customers, names, words)`` of the archive (``words`` None unless asked for), or
        one clear line when it is not a membership archive."""
        p = self.path / MEMBERSHIP_FILE
        try:
            with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                if "format" not in z or str(z["format"]) != MEMBERSHIP_FORMAT:
                    raise ValueError
                n = int(z["n_customers"])
                names = tuple(str(x) for x in z["names"])
                w = np.ascontiguousarray(z["words"], dtype=np.uint64) if words else None
        except OSError as exc:
            msg = f"cannot read {p}: {exc.strerror or exc}"
            raise InputError(msg) from exc
        except (ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # not numpy's
            msg = f"{p} is not a {MEMBERSHIP_FORMAT} file: run fastseg run again to rewrite the folder"
            raise InputError(msg) from exc
        return n, names, w

    def membership(self) -> tuple[tuple[str, ...], NDArray[np.uint64]]:
        """Segment names and their bitsets over :meth:`customer_ids`."""
        p = self.path / MEMBERSHIP_FILE
        ids = self.customer_ids()
        if p.is_file():
            n, names, words = self._read_membership(words=True)
            assert words is not None
            if n != len(ids):
                msg = (
                    f"{p} has {n:,} customers but {self.need('scores').name} has {len(ids):,}:"
                    " the folder was changed by hand; run fastseg run again"
                )
                raise InputError(msg)
            if words.shape != (len(names), (n + 63) // 64):
                msg = (
                    f"{p}: words of shape {words.shape} do not hold {len(names)} segments of "
                    f"{n:,} customers; run fastseg run again to rewrite the folder"
                )
                raise InputError(msg)
            if n % 64 and words.size and (words[:, -1] >> np.uint64(n % 64)).any():
                msg = (
                    f"{p}: bits set past the last of the {n:,} customers (the tail of every row "
                    "must be zero); run fastseg run again to rewrite the folder"
                )
                raise InputError(msg)
            return names, words
        return self._membership_from_long(ids)

    def _membership_from_long(self, ids: pl.Series) -> tuple[tuple[str, ...], NDArray[np.uint64]]:
        """An earlier run folder: rebuild the bitsets from the long ``segments`` table."""
        from fastseg.kernels import bitset as bs

        long = self.scan("segments", ["customer_id", "segment"])
        seg = long["segment"]
        summary = self.path / "summary.csv"
        if summary.is_file():  # every segment, the empty ones too, in catalog order
            try:
                listed = pl.read_csv(summary, columns=["segment"], infer_schema=False)
            except (pl.exceptions.PolarsError, OSError) as exc:
                msg = f"cannot read {summary}: {str(exc).splitlines()[0]}"
                raise InputError(msg) from exc
            names = tuple(listed["segment"].drop_nulls().to_list())
        elif isinstance(seg.dtype, pl.Enum):
            names = tuple(seg.dtype.categories.to_list())
        else:
            names = tuple(seg.unique(maintain_order=True).drop_nulls().to_list())
        present = seg.cast(pl.String).drop_nulls().unique()
        unknown = present.filter(~present.is_in(list(names)))
        if len(unknown):
            msg = (
                f"{self.path}: segment {unknown[0]!r} of segments is not in summary.csv; the "
                "folder was changed by hand: run fastseg run again"
            )
            raise InputError(msg)
        n = len(ids)
        index = pl.DataFrame({"customer_id": ids, "_i": np.arange(n, dtype=np.int64)})
        codes = long.with_columns(
            pl.col("segment").cast(pl.String).replace_strict(names, range(len(names))).alias("_s")
        ).join(index, on="customer_id", how="inner", nulls_equal=True)
        dense = np.zeros((len(names), n), dtype=np.bool_)
        dense[codes["_s"].to_numpy(), codes["_i"].to_numpy()] = True
        return names, bs.pack_bool(dense) if names else np.zeros((0, bs.n_words_for(n)), np.uint64)


def _from_text(column: str, dtype: str) -> pl.Expr:
    """The cast of one CSV column (text) back to the type recorded for it."""
    c = pl.col(column)
    base = dtype.split("(", 1)[0]
    if base in ("Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"):
        return c.cast(getattr(pl, base))
    if base in ("Float32", "Float64"):
        return c.cast(pl.Float64)
    if base == "Boolean":
        return c.replace_strict(
            {"true": True, "false": False}, default=None, return_dtype=pl.Boolean
        )
    if base == "Date":
        return c.str.to_date("%Y-%m-%d")
    if base == "Datetime":
        return c.str.to_datetime()
    if base == "List":  # written joined with | (an empty list as an empty cell)
        empty = pl.lit([], dtype=pl.List(pl.String))
        return pl.when(c == "").then(empty).otherwise(c.str.split("|")).alias(column)
    return c  # String, Enum, Categorical and anything else: the text as written


def schema_record(df: pl.DataFrame) -> dict[str, str]:
    """The column types of a table, as run.json records them (read back by :meth:`RunFolder.scan`)."""
    return {name: str(dtype) for name, dtype in df.schema.items()}


def open_run(path: str | Path, option: str = "run folder") -> RunFolder:
    """Open the run folder ``path`` (written by ``fastseg run --out``); one clear line when it is
    not one."""
    folder = Path(path)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        msg = f"{option} {folder}: {what}; give a folder written by fastseg run --out"
        raise InputError(msg)
    meta_path = folder / "run.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"{option} {folder}: no run.json, not a fastseg run folder; give a folder written by fastseg run --out"
        raise InputError(msg) from None
    except (OSError, ValueError) as exc:
        msg = f"{option} {folder}: cannot read run.json ({exc}); run fastseg run again"
        raise InputError(msg) from exc
    if not isinstance(meta, dict) or "as_of" not in meta:
        msg = f"{option} {folder}: run.json is not a fastseg run record (no as_of)"
        raise InputError(msg)
    return RunFolder(folder, meta)
