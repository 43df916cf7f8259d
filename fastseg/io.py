"""Sources and sinks: scan any supported input lazily, write outputs atomically.

Supported sources
-----------------
* Parquet: a file (``.parquet``/``.pq``), a folder of Parquet files (read recursively), or a glob
  (``data/2026-*.parquet``);
* CSV (``.csv``, ``.tsv``, optionally ``.gz``): read with every column as text first, typed by
  :mod:`fastseg.schema`, so a bad value is reported by column and value, not by the CSV reader;
* Arrow IPC / Feather (``.arrow``, ``.ipc``, ``.feather``);
* in-memory ``polars.DataFrame``/``LazyFrame``, ``pandas.DataFrame`` and ``pyarrow.Table``.
"""

from __future__ import annotations

import glob as _glob
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from fastseg.errors import InputError, ParameterError

__all__ = ["OUTPUT_FORMATS", "Source", "read_text", "scan_source", "write_atomic", "write_frame"]

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")
IPC_SUFFIXES = (".arrow", ".ipc", ".feather")
OUTPUT_FORMATS = ("parquet", "csv")


@dataclass(frozen=True)
class Source:
    """A scanned input: the lazy frame and a label naming it in messages (path or frame kind)."""

    frame: pl.LazyFrame
    label: str
    kind: str  # "parquet", "csv", "ipc" or "memory"
    files: tuple[Path, ...] = ()


def _kind_of(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(IPC_SUFFIXES):
        return "ipc"
    return None


def _scan_files(
    files: list[Path], kind: str, label: str, infer_types: bool = False
) -> pl.LazyFrame:
    if kind == "parquet":
        return pl.scan_parquet(files if len(files) > 1 else files[0])
    if kind == "ipc":
        return pl.scan_ipc(files if len(files) > 1 else files[0])
    sep = "\t" if any(f.name.lower().endswith((".tsv", ".tsv.gz")) for f in files) else ","
    if infer_types:  # a file fastseg wrote (scores): let the reader type numbers and dates
        frames = [
            pl.scan_csv(f, separator=sep, try_parse_dates=True, raise_if_empty=False) for f in files
        ]
    else:  # inputs: everything as text, typed by fastseg.schema with errors naming the value
        frames = [
            pl.scan_csv(f, separator=sep, infer_schema=False, raise_if_empty=False) for f in files
        ]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal")


def _from_memory(obj: Any, what: str) -> Source | None:
    if isinstance(obj, pl.LazyFrame):
        return Source(obj, f"{what} (Polars LazyFrame)", "memory")
    if isinstance(obj, pl.DataFrame):
        return Source(obj.lazy(), f"{what} (Polars DataFrame)", "memory")
    module = type(obj).__module__.split(".")[0]
    if module == "pyarrow":
        import pyarrow as pa

        if isinstance(obj, pa.RecordBatch):
            obj = pa.Table.from_batches([obj])
        if isinstance(obj, pa.Table):
            return Source(pl.from_arrow(obj).lazy(), f"{what} (Arrow table)", "memory")  # type: ignore[union-attr]
    if module == "pandas":
        import pandas as pd

        if isinstance(obj, pd.DataFrame):
            return Source(pl.from_pandas(obj).lazy(), f"{what} (pandas DataFrame)", "memory")
    return None


def _files_of(text: str, what: str) -> list[Path]:
    """The data files one path names: itself, a folder's files (recursively) or a glob's."""
    path = Path(text).expanduser()
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in _glob.glob(os.path.expanduser(text), recursive=True))
        files = [f for f in files if f.is_file()]
        if not files:
            msg = f"{what}: no file matches '{text}'"
            raise InputError(msg)
        return files
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and _kind_of(f) is not None)
        if not files:
            msg = f"{what}: folder '{text}' holds no Parquet, CSV or Arrow file"
            raise InputError(msg)
        return files
    if path.is_file():
        return [path]
    msg = f"{what}: file not found: '{text}'"
    raise InputError(msg)


def scan_source(source: Any, *, what: str = "orders", infer_types: bool = False) -> Source:
    """Scan ``source`` lazily.

    Parameters
    ----------
    source
        A path (``str``/``Path``: file, folder or glob), a list of such paths (one format), or an
        in-memory Polars, pandas or Arrow frame.
    what
        What the source holds (``"orders"``, ``"customers"``, ``"events"``), used in messages.
    infer_types
        Let the CSV reader infer column types (for files fastseg wrote, such as scores); by
        default CSV columns are read as text and typed by :mod:`fastseg.schema`.

    Returns
    -------
    Source
        The lazy frame (nothing read yet but, for Parquet, the footer when the schema is asked for).

    Raises
    ------
    InputError
        The path does not exist, matches no file, or has an unknown format.
    """
    mem = _from_memory(source, what)
    if mem is not None:
        return mem
    many = (
        isinstance(source, list | tuple)
        and source
        and all(isinstance(x, str | os.PathLike) for x in source)
    )
    if not many and not isinstance(source, str | os.PathLike):
        msg = (
            f"{what}: cannot read a {type(source).__name__}; pass a path (Parquet, CSV, Arrow IPC), "
            "a list of paths, or a Polars, pandas or Arrow frame"
        )
        raise ParameterError(msg)
    parts = [os.fspath(x) for x in source] if many else [os.fspath(source)]
    text = parts[0] if len(parts) == 1 else f"{parts[0]} (+{len(parts) - 1} more)"
    files: list[Path] = []
    for part in parts:
        files.extend(f for f in _files_of(part, what) if f not in files)
    kinds = {_kind_of(f) for f in files}
    if None in kinds:
        bad = next(f for f in files if _kind_of(f) is None)
        msg = (
            f"{what}: cannot tell the format of '{bad}'; use a .parquet, .csv/.tsv or "
            ".arrow/.ipc/.feather file"
        )
        raise InputError(msg)
    if len(kinds) > 1:
        msg = (
            f"{what}: '{text}' mixes formats ({', '.join(sorted(k for k in kinds if k))}); keep one"
        )
        raise InputError(msg)
    kind = kinds.pop()
    assert kind is not None
    for f in files:
        if not os.access(f, os.R_OK):
            msg = f"{what}: cannot read '{f}' (permission denied)"
            raise InputError(msg)
    return Source(_scan_files(files, kind, text, infer_types), text, kind, tuple(files))


def read_text(path: str | Path, what: str, *, missing_hint: str) -> str:
    """A small text file (catalog, saved edges) read as UTF-8, with one-line errors.

    Raises
    ------
    InputError
        The file is missing (``missing_hint`` says what to do) or cannot be read as text.
    """
    target = Path(path)
    try:
        return target.read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = f"{what} '{target}' not found; {missing_hint}"
        raise InputError(msg) from None
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read {what} '{target}': {exc}"
        raise InputError(msg) from None


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    A crash (or an exception in ``write``) never leaves a half-written ``path``: the temporary file
    is removed and any previous ``path`` stays as it was.
    """
    target = Path(path).expanduser()
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create folder '{parent}': {exc.strerror or exc}"
        raise InputError(msg) from exc
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        msg = f"cannot write '{target}': {exc.strerror or exc}"
        raise InputError(msg) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _csv_safe(df: pl.DataFrame) -> pl.DataFrame:
    """CSV cannot hold nested values: lists become ``a|b|c`` strings."""
    lists = [n for n, t in df.schema.items() if isinstance(t, pl.List | pl.Array)]
    if not lists:
        return df
    return df.with_columns(pl.col(n).cast(pl.List(pl.String)).list.join("|") for n in lists)


def write_frame(df: pl.DataFrame, path: str | Path, fmt: str | None = None) -> Path:
    """Write ``df`` atomically as Parquet or CSV (format from ``fmt`` or the file suffix)."""
    target = Path(path)
    if fmt is None:
        fmt = "csv" if target.name.lower().endswith(".csv") else "parquet"
    if fmt not in OUTPUT_FORMATS:
        msg = f"format: expected one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}"
        raise ParameterError(msg)
    if fmt == "csv":
        return write_atomic(target, lambda tmp: _csv_safe(df).write_csv(tmp))
    return write_atomic(target, lambda tmp: df.write_parquet(tmp))
