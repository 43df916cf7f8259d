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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from fastseg.errors import InputError, ParameterError, SchemaError

__all__ = [
    "Source",
    "csv_problem",
    "input_paths",
    "input_patterns",
    "read_text",
    "scan_source",
]

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")
IPC_SUFFIXES = (".arrow", ".ipc", ".feather")


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


def _open_text(path: Path) -> Any:
    import gzip

    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")  # noqa: SIM115


def _header(path: Path) -> bytes:
    """The first line of a CSV file, as bytes (empty for an empty file)."""
    try:
        with _open_text(path) as fh:
            return fh.readline(1 << 20)
    except (OSError, EOFError):
        return b""  # the reader reports the problem with the file, with its name


def csv_separator(path: Path, header: bytes | None = None) -> str:
    """The field separator of a CSV/TSV file: tab for ``.tsv``, else a comma, unless the header
    line (read here unless given) holds none of it but holds ``;``, a tab or ``|`` (the most
    frequent wins)."""
    default = "\t" if path.name.lower().endswith((".tsv", ".tsv.gz")) else ","
    line = (_header(path) if header is None else header).decode("utf-8", errors="replace")
    if default in line:
        return default
    counts = {sep: line.count(sep) for sep in (";", "\t", "|", ",")}
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] else default


def _check_header(path: Path, raw: bytes, sep: str, what: str) -> None:
    """A header line ``raw`` that is not text, or names a column twice, is an error naming it."""
    import csv

    try:
        line = raw.decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        msg = (
            f"{what}: '{path}' does not start with a CSV header: its first line is not UTF-8 text "
            f"(byte 0x{raw[exc.start]:02x} at position {exc.start + 1}); give a CSV file saved as "
            "UTF-8"
        )
        raise InputError(msg) from None
    if any(ord(c) < 32 and c not in "\t" for c in line):
        msg = (
            f"{what}: '{path}' does not start with a CSV header: its first line holds control "
            "characters (a binary file?); give a CSV file"
        )
        raise InputError(msg)
    if not line:
        return
    try:
        names = next(csv.reader([line], delimiter=sep), [])
    except csv.Error:
        return  # not a CSV header at all: the reader says so, with the file's name
    seen: dict[str, int] = {}
    for i, name in enumerate(names, 1):
        key = name.strip()
        if key in seen:
            msg = (
                f"{what}: '{path}' names column {key!r} twice in its header (columns {seen[key]} "
                f"and {i}); rename one so each column has its own name"
            )
            raise InputError(msg)
        seen[key] = i


def _capped(lines: Iterator[str], limit: int) -> Iterator[str]:
    seen = 0
    for line in lines:
        seen += len(line)
        if seen > limit:
            return
        yield line


def csv_problem(path: Path, sep: str, limit: int = 1 << 30) -> str | None:
    """Where a CSV file stops being readable: the first line that is not UTF-8 or has more fields
    than the header (``"line 5 has 4 fields; the header has 3"``), or None. Read with Python's
    csv module (about 100 MB/s), only after the fast reader failed, and only the first ``limit``
    characters (1 GiB): past them the reader's own message stands."""
    import csv

    class _Undecodable(Exception):
        def __init__(self, line: int, exc: UnicodeDecodeError) -> None:
            self.line, self.exc = line, exc

    def lines(fh: Any) -> Iterator[str]:
        for i, raw in enumerate(fh, 1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _Undecodable(i, exc) from None

    reader = None
    start = 1  # the line the current row starts on
    try:
        with _open_text(path) as fh:
            reader = csv.reader(_capped(lines(fh), limit), delimiter=sep, strict=True)
            header = next(reader, None)
            if header is None:
                return None
            start = reader.line_num + 1
            for row in reader:
                if len(row) > len(header):
                    return f"line {start} has {len(row)} fields; the header has {len(header)}"
                start = reader.line_num + 1
    except _Undecodable as bad:
        byte = bad.exc.object[bad.exc.start]
        return (
            f"line {bad.line} is not UTF-8 text (byte 0x{byte:02x} at position {bad.exc.start + 1}); "
            "save the file as UTF-8"
        )
    except csv.Error as exc:
        text = str(exc)
        if "unexpected end of data" in text:
            text = "a quoted field opened here is never closed (a missing '\"')"
        return f"line {start}: {text}"
    except (EOFError, OSError) as exc:
        return f"the file ends early or is damaged ({exc}); check that it was copied whole"
    return None


def _scan_files(
    files: list[Path], kind: str, label: str, infer_types: bool = False, what: str = "orders"
) -> pl.LazyFrame:
    if kind == "parquet":
        return pl.scan_parquet(files if len(files) > 1 else files[0], glob=False)
    if kind == "ipc":
        return pl.scan_ipc(files if len(files) > 1 else files[0], glob=False)
    frames = []
    for f in files:
        header = _header(f)
        sep = csv_separator(f, header)
        _check_header(f, header, sep, what)
        if infer_types:  # a file fastseg wrote (scores): let the reader type numbers and dates
            frames.append(
                pl.scan_csv(
                    f, separator=sep, try_parse_dates=True, raise_if_empty=False, glob=False
                )
            )
        else:  # inputs: everything as text, typed by fastseg.schema with errors naming the value
            frames.append(
                pl.scan_csv(f, separator=sep, infer_schema=False, raise_if_empty=False, glob=False)
            )
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
            label = f"{what} (pandas DataFrame)"
            return Source(_from_pandas(obj, label).lazy(), label, "memory")
    return None


def _from_pandas(df: Any, label: str) -> pl.DataFrame:
    """``pl.from_pandas`` whose failure (an object column mixing ints and text) names the column."""
    try:
        return pl.from_pandas(df)
    except Exception as exc:  # pyarrow's ArrowInvalid / ArrowTypeError, polars' errors
        for name in df.columns:
            try:
                pl.from_pandas(df[[name]])
            except Exception as col_exc:  # noqa: BLE001
                kinds = sorted({type(v).__name__ for v in df[name].head(10_000).tolist()})
                msg = (
                    f"{label}: column {str(name)!r} cannot be read ({_first(col_exc)}); it mixes "
                    f"{', '.join(kinds)} values: convert it to one type, e.g. "
                    f"df[{str(name)!r}] = df[{str(name)!r}].astype(str)"
                )
                raise SchemaError(msg) from None
        msg = f"{label}: cannot read the frame: {_first(exc)}"
        raise InputError(msg) from None


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _files_of(text: str, what: str) -> list[Path]:
    """The data files one path names: itself, a folder's files (recursively) or a glob's.

    A path that exists is taken literally even when it holds glob characters
    (``orders[1].csv``); only a path that does not exist is expanded as a glob.
    """
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and _kind_of(f) is not None)
        files = [f for f in files if not any(p.startswith(".") for p in f.relative_to(path).parts)]
        if not files:
            msg = f"{what}: folder '{text}' holds no Parquet, CSV or Arrow file"
            raise InputError(msg)
        return files
    if path.is_file():
        return [path]
    if path.exists():
        msg = f"{what}: '{text}' is not a regular file (a FIFO, device or socket); give a data file"
        raise InputError(msg)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in _glob.glob(os.path.expanduser(text), recursive=True))
        files = [f for f in files if f.is_file()]
        if not files:
            msg = f"{what}: no file matches '{text}'"
            raise InputError(msg)
        return files
    msg = f"{what}: file not found: '{text}'"
    raise InputError(msg)


def _identity(path: Path) -> tuple[int, int] | str:
    try:
        st = path.stat()
    except OSError:
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino)


def _path_parts(source: Any) -> list[str]:
    """The paths a source argument gives as text (none for in-memory frames)."""
    if isinstance(source, list | tuple):
        return [os.fspath(x) for x in source if isinstance(x, str | os.PathLike)]
    return [os.fspath(source)] if isinstance(source, str | os.PathLike) else []


def input_patterns(source: Any) -> list[str]:
    """The glob patterns a source argument expands (paths that do not exist as written): an
    output matching one would be read as input by the next run."""
    parts = _path_parts(source)
    return [
        os.path.abspath(os.path.expanduser(p))
        for p in parts
        if any(ch in p for ch in "*?[") and not Path(p).expanduser().exists()
    ]


def input_paths(source: Any) -> list[Path]:
    """The files and folders a source argument names on disk (none for in-memory frames): what
    an output may never overwrite or lie inside of."""
    parts = _path_parts(source)
    out: list[Path] = []
    for part in parts:
        path = Path(part).expanduser()
        if path.exists():
            out.append(path)
        elif any(ch in part for ch in "*?["):
            out.extend(Path(p) for p in _glob.glob(os.path.expanduser(part), recursive=True))
    return out


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
    seen: set[tuple[int, int] | str] = set()
    for part in parts:  # a file named twice (relative and absolute, a link) is read once
        for f in _files_of(part, what):
            key = _identity(f)
            if key not in seen:
                seen.add(key)
                files.append(f)
    kinds = {_kind_of(f) for f in files}
    if None in kinds:
        bad = next(f for f in files if _kind_of(f) is None)
        msg = (
            f"{what}: cannot tell the format of '{bad}'; use a .parquet, .csv/.tsv or "
            ".arrow/.ipc/.feather file"
        )
        raise InputError(msg)
    if len(kinds) > 1:
        first = {}
        for f in files:
            first.setdefault(_kind_of(f), f)
        shown = ", ".join(f"{k}: '{first[k]}'" for k in sorted(k for k in first if k))
        msg = f"{what}: '{text}' mixes formats ({shown}); give files of one format"
        raise InputError(msg)
    kind = kinds.pop()
    assert kind is not None
    for f in files:
        if not os.access(f, os.R_OK):
            msg = f"{what}: cannot read '{f}' (permission denied)"
            raise InputError(msg)
    return Source(_scan_files(files, kind, text, infer_types, what), text, kind, tuple(files))


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
