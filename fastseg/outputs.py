"""Writing outputs: every file atomic, a command's outputs committed as one set, inputs never touched.

One mechanism serves every command that writes (``score``, ``run``, ``segment``, ``gen``, the
API's ``out=``): an :class:`OutputSet`.

1. **Declare** every target before any row is read (:meth:`OutputSet.add_file`,
   :meth:`OutputSet.add_folder`). Each is checked at once: it is not an input (same resolved
   path or the same file by device and inode, so symlinks and hard links count), not inside an
   input folder, not another target of the same command, not a FIFO, device, socket or (for a
   file) a folder; a run folder that exists must be empty or one fastseg wrote (it holds a
   ``run.json``). Leftovers of earlier killed runs beside the target are removed (a folder swap
   interrupted half-way is undone first). The staging area is created here, so an unwritable
   place fails before the work, naming the target.
2. **Stage**: writers write to :meth:`OutputSet.path` (a hidden temporary beside the target,
   ``.NAME.fastseg-PID-TOKEN.tmp``, or the same name inside a hidden staging copy of the run
   folder). Any failure while writing (disk full, file-size limit, permission) is one
   :class:`~fastseg.errors.OutputError` naming the target, never the temporary.
3. **Commit** (:meth:`OutputSet.commit`): single files are renamed onto their targets, then the
   run folder is swapped in with one ``renameat2(RENAME_EXCHANGE)`` (Linux), so the folder holds
   the complete previous set or the complete new set at every instant; where the exchange is not
   available, two renames, and a kill between them is repaired by the next run. Anything not
   committed (an exception, Ctrl-C) is removed by :meth:`OutputSet.abort`; a SIGKILL leaves the
   hidden temporaries, which the next command writing the same target removes.

New files and folders follow the process umask (``0o666``/``0o777`` masked), as a plain
``open()``/``mkdir`` would; a replaced file gets the umask's mode too, not the old file's.
Files are not ``fsync``-ed: a kill at any moment is safe (the page cache survives the process);
durability against a power cut is left to the file system.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import stat
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastseg.errors import FastsegError, OutputError

__all__ = [
    "OUTPUT_FORMATS",
    "OutputSet",
    "frame_writer",
    "is_fastseg_folder",
    "write_atomic",
    "write_frame",
]

RUN_MARKER = "run.json"
#: what a command leaves beside its targets while it runs: ``.NAME.fastseg-HOST-PID-TOKEN.KIND``
_LEFTOVER = re.compile(
    r"^\.(?P<name>.+)\.fastseg-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]+\."
    r"(?P<kind>tmp|staging|previous)$"
)
#: the record a fastseg output folder holds (a run's, a ``fastseg diff --out`` folder's or a
#: ``fastseg export --out`` folder's), listing the folder's other files
RUN_MARKERS = (RUN_MARKER, "diff.json", "manifest.json")
#: the files a run folder of an earlier fastseg version (a run.json without ``files``) holds
_OLD_RUN_FILES = (
    "scores.parquet",
    "segments.parquet",
    "summary.csv",
    "overlaps.csv",
    "groups.parquet",
    RUN_MARKER,
)


def _host() -> str:
    """Eight hex digits naming this machine (or container): a process id only means something
    where it was written."""
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False when unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    res = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if res == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # the file system cannot exchange: use two renames
    raise OSError(code, os.strerror(code), str(b))


def _kind_of_special(mode: int) -> str | None:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


#: what each marker says the folder holds (for the message when a folder of another kind is
#: named: a run folder is never replaced by an export, nor an export by a diff)
_MARKER_KINDS = {
    RUN_MARKER: "a fastseg run",
    "diff.json": "a fastseg diff",
    "manifest.json": "a fastseg export",
}


def is_fastseg_folder(folder: Path, marker: str = RUN_MARKER) -> bool:
    """True when ``folder`` is empty or is a folder of the kind ``marker`` names (a run's
    ``run.json``, a diff's ``diff.json``, an export's ``manifest.json``) that fastseg wrote and
    nothing else was added to: the marker is an object with an ``as_of`` and the folder holds
    only the files it lists (or, for a run.json of an earlier version without that list, only
    run files)."""
    return _foreign_entry(folder, marker) is None


def _foreign_entry(folder: Path, marker: str = RUN_MARKER) -> str | None:
    """The first entry of ``folder`` fastseg did not write as part of a set of the kind
    ``marker`` names, or None."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        return f"(cannot list it: {exc.strerror or exc})"
    if not entries:
        return None
    if marker not in entries:
        other = next((m for m in RUN_MARKERS if m in entries), None)
        if other is not None:
            return f"{other}: it holds {_MARKER_KINDS[other]}"
        return entries[0]
    try:
        doc = json.loads((folder / marker).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or "as_of" not in doc:
        return entries[0]
    listed = doc.get("files")
    if isinstance(listed, dict):
        allowed = {str(Path(n).parts[0]) for n in listed} | {marker}
    else:
        allowed = set(_OLD_RUN_FILES)
    for name in entries:
        if name not in allowed and not _LEFTOVER.match(name):
            return name
    return None


def _reason(exc: BaseException, tmp: Path | None, target: Path) -> str:
    """One line saying why a write failed, naming the target instead of the temporary."""
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
    else:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if tmp is not None:
        text = text.replace(str(tmp), str(target))
    return text


@dataclass
class _Target:
    target: Path  # where the user asked for it (resolved)
    option: str  # how the user named it: "--out", "--rejects"...
    staged: Path  # where the writer writes
    kind: str  # "file", "folder" or "member" (a file inside a folder target)


class OutputSet:
    """The outputs of one command: declared first, staged, committed together or not at all.

    Parameters
    ----------
    inputs
        Every path the command reads (files, folders); no target may be one of them, contain one,
        or lie inside one.
    patterns
        The glob patterns the command expands; no target may match one (the next run would read
        it as input).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> where = pathlib.Path(tempfile.mkdtemp())
    >>> with OutputSet() as outs:
    ...     target = outs.add_file(where / "hello.txt", "--out")
    ...     _ = outs.write_text(target, "hi")
    ...     outs.commit()
    >>> (where / "hello.txt").read_text()
    'hi'
    """

    def __init__(
        self, inputs: Iterable[str | os.PathLike[str]] = (), patterns: Iterable[str] = ()
    ) -> None:
        self._patterns = [os.path.abspath(os.path.expanduser(p)) for p in patterns]
        self._inputs: list[tuple[Path, os.stat_result | None]] = []
        for p in inputs:
            real = Path(os.path.realpath(os.path.expanduser(os.fspath(p))))
            try:
                st: os.stat_result | None = os.stat(real)
            except OSError:
                st = None
            self._inputs.append((real, st))
        self._targets: dict[Path, _Target] = {}
        self._folders: list[_Target] = []
        self._reserved: dict[Path, tuple[str, ...]] = {}
        self._token = f"fastseg-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:10]}"
        self._done = False

    # ---------------------------------------------------------------------------- declaring

    def _resolve(self, path: str | os.PathLike[str], option: str) -> Path:
        text = os.fspath(path)
        if not text or text.strip() == "":
            msg = f"{option}: an empty path; give a file or folder name"
            raise OutputError(msg)
        return Path(os.path.realpath(os.path.expanduser(text)))

    def _check_not_input(self, target: Path, option: str, *, folder: bool) -> None:
        try:
            st: os.stat_result | None = os.stat(target)
        except OSError:
            st = None
        for real, ist in self._inputs:
            same = real == target or (
                st is not None
                and ist is not None
                and (st.st_dev, st.st_ino) == (ist.st_dev, ist.st_ino)
            )
            if same:
                msg = (
                    f"{option} '{target}' is also an input; fastseg never overwrites an input: "
                    "write the output to another path"
                )
                raise OutputError(msg)
        for real, ist in self._inputs:
            if folder and real.is_relative_to(target):
                msg = (
                    f"{option} '{target}' holds the input '{real}'; the run folder is replaced as "
                    "a whole: choose a folder that holds no input"
                )
                raise OutputError(msg)
            if ist is not None and stat.S_ISDIR(ist.st_mode) and target.is_relative_to(real):
                msg = (
                    f"{option} '{target}' lies inside the input folder '{real}', so the next run "
                    "would read it as input; write it outside that folder"
                )
                raise OutputError(msg)

    def _check_patterns(self, target: Path, option: str) -> None:
        import fnmatch

        for pattern in self._patterns:
            if fnmatch.fnmatch(str(target), pattern) or fnmatch.fnmatch(
                str(target),
                os.path.realpath(os.path.dirname(pattern)) + os.sep + os.path.basename(pattern),
            ):
                msg = (
                    f"{option} '{target}' matches the input pattern '{pattern}', so the next run "
                    "would read it as input; write it where the pattern does not reach"
                )
                raise OutputError(msg)

    def _check_other_targets(self, target: Path, option: str) -> None:
        for other in self._targets.values():
            if other.target == target:
                msg = f"{option} and {other.option} both name '{target}'; give each its own path"
                raise OutputError(msg)

    def _folder_of(self, target: Path) -> _Target | None:
        for f in self._folders:
            if target.is_relative_to(f.target):
                return f
        return None

    def add_file(self, path: str | os.PathLike[str], option: str = "--out") -> Path:
        """Declare a file target; returns its resolved path (the key for :meth:`path`)."""
        target = self._resolve(path, option)
        self._check_other_targets(target, option)
        self._check_not_input(target, option, folder=False)
        self._check_patterns(target, option)
        try:
            st = os.stat(target)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            msg = f"{option} '{target}': {exc.strerror or exc}"
            raise OutputError(msg) from None
        if st is not None:
            special = _kind_of_special(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                msg = f"{option} '{target}' is a folder; give a file path for this output"
                raise OutputError(msg)
            if special:
                msg = (
                    f"{option} '{target}' is {special}; fastseg writes outputs as regular files "
                    "only (atomically, by renaming): give a file path"
                )
                raise OutputError(msg)
        folder = self._folder_of(target)
        if folder is not None:
            inside = target.relative_to(folder.target)
            if str(inside) in self._reserved.get(folder.target, ()):
                msg = (
                    f"{option} '{target}' is the run folder's own {inside}; give another name or "
                    "a path outside the folder"
                )
                raise OutputError(msg)
            staged = folder.staged / inside
            self._mkdirs(staged.parent, target, option)
            self._targets[target] = _Target(target, option, staged, "member")
            return target
        self._mkdirs(target.parent, target, option)
        self._clean_leftovers(target)
        staged = target.parent / f".{target.name}.{self._token}.tmp"
        self._create(staged, target, option)
        self._targets[target] = _Target(target, option, staged, "file")
        return target

    def add_folder(
        self,
        path: str | os.PathLike[str],
        option: str = "--out",
        reserved: Iterable[str] = (),
        marker: str = RUN_MARKER,
    ) -> Path:
        """Declare a run folder: written whole into a hidden staging copy, swapped in at commit.

        ``reserved``: the names of the files the run writes itself; no other declared file may
        take one. ``marker``: the record file of this kind of folder (``run.json``, ``diff.json``,
        ``manifest.json``): an existing folder is replaced only when it is empty or holds that
        record and only the files it lists. An existing folder keeps its mode, owner and group.
        """
        target = self._resolve(path, option)
        self._check_other_targets(target, option)
        self._check_not_input(target, option, folder=True)
        self._check_patterns(target, option)
        for t in self._targets.values():
            if t.target.is_relative_to(target):
                msg = f"declare the folder {option} before the files inside it"
                raise RuntimeError(msg)
        with contextlib.suppress(OSError):
            if Path(os.getcwd()).resolve().is_relative_to(target):
                msg = (
                    f"{option} '{target}' holds the current folder; the run folder is replaced as a "
                    "whole: give a folder below it, such as fastseg-out"
                )
                raise OutputError(msg)
        self._mkdirs(target.parent, target, option)
        self._clean_leftovers(target)
        if target.exists() or target.is_symlink():
            if not target.is_dir():
                msg = f"{option} '{target}' is a file; the run outputs go into a folder: give a folder path"
                raise OutputError(msg)
            if os.path.ismount(target):
                msg = (
                    f"{option} '{target}' is a mount point; the run folder is replaced as a whole, "
                    "which a mount point cannot be: give a folder inside it, e.g. "
                    f"'{target / 'fastseg-out'}'"
                )
                raise OutputError(msg)
            foreign = _foreign_entry(target, marker)
            if foreign is not None and ": it holds a fastseg" in foreign:
                msg = (
                    f"{option} '{target}' holds {foreign.split(': it holds ', 1)[1]} "
                    f"({foreign.split(':', 1)[0]}), which this command would replace as a whole: "
                    "give a new or empty folder, or one this command wrote before"
                )
                raise OutputError(msg)
            if foreign is not None:
                msg = (
                    f"{option} '{target}' holds '{foreign}', which is not part of a fastseg run; "
                    "the run folder is replaced as a whole: move it away, or give a new or empty "
                    "folder"
                )
                raise OutputError(msg)
            if not os.access(target, os.W_OK):
                msg = f"{option} '{target}': permission denied (the folder is not writable)"
                raise OutputError(msg)
        staged = target.parent / f".{target.name}.{self._token}.staging"
        try:
            os.mkdir(staged, 0o777)
        except OSError as exc:
            msg = f"cannot write {option} '{target}': {exc.strerror or exc}"
            raise OutputError(msg) from None
        _keep_access(target, staged)
        entry = _Target(target, option, staged, "folder")
        self._targets[target] = entry
        self._folders.append(entry)
        self._reserved[target] = tuple(reserved)
        return target

    def _mkdirs(self, parent: Path, target: Path, option: str) -> None:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            msg = f"cannot write {option} '{target}': '{parent}' is not a folder"
            raise OutputError(msg) from None
        except OSError as exc:
            msg = f"cannot write {option} '{target}': cannot create folder '{parent}': {exc.strerror or exc}"
            raise OutputError(msg) from None

    def _create(self, staged: Path, target: Path, option: str) -> None:
        try:
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode: the umask's
        except OSError as exc:
            msg = f"cannot write {option} '{target}': {exc.strerror or exc}"
            raise OutputError(msg) from None
        os.close(fd)

    def _clean_leftovers(self, target: Path) -> None:
        """Remove what killed runs on this machine left beside ``target`` (for any target of
        that folder: a dated run folder gets a new name every day); undo a half-done swap."""
        parent = target.parent
        try:
            names = os.listdir(parent)
        except OSError:
            return
        host = _host()
        for name in names:  # leftovers of any target in this folder, of dead processes here
            m = _LEFTOVER.match(name)
            if m is None or m["host"] != host or _pid_alive(int(m["pid"])):
                continue
            path = parent / name
            own = parent / m["name"]
            if m["kind"] == "previous" and not own.exists():
                with contextlib.suppress(OSError):
                    os.rename(path, own)  # the swap stopped half-way: the old set is back
                    continue
            _remove(path)

    # ---------------------------------------------------------------------------- writing

    def path(self, target: Path) -> Path:
        """Where the writer of ``target`` (a declared file, or a file inside a declared folder)
        writes."""
        entry = self._targets.get(target)
        if entry is not None and entry.kind != "folder":
            return entry.staged
        folder = self._folder_of(target)
        if folder is None:
            msg = f"{target} was not declared"
            raise KeyError(msg)
        staged = folder.staged / target.relative_to(folder.target)
        staged.parent.mkdir(parents=True, exist_ok=True)
        return staged

    def _option(self, target: Path) -> str:
        entry = self._targets.get(target)
        if entry is not None:
            return entry.option
        folder = self._folder_of(target)
        return folder.option if folder is not None else "output"

    def write_with(self, target: Path, write: Callable[[Path], Any]) -> Path:
        """Call ``write(staged_path)``; any failure becomes one OutputError naming ``target``."""
        staged = self.path(target)
        try:
            write(staged)
        except FastsegError:
            raise
        except Exception as exc:  # polars, pyarrow, numpy and OS errors alike
            msg = f"cannot write {self._option(target)} '{target}': {_reason(exc, staged, target)}"
            raise OutputError(msg) from None
        return target

    def write_frame(self, df: Any, target: Path, fmt: str | None = None) -> Path:
        """Write a Polars frame as Parquet or CSV (format from ``fmt`` or the suffix)."""
        return self.write_with(target, frame_writer(df, target, fmt))

    def write_text(self, target: Path, text: str) -> Path:
        return self.write_with(target, lambda p: p.write_text(text, encoding="utf-8"))

    def files(self) -> list[Path]:
        """The files staged so far (inside folders too), as their final paths."""
        out = [t.target for t in self._targets.values() if t.kind != "folder"]
        for f in self._folders:
            for root, _dirs, names in os.walk(f.staged):
                for n in names:
                    out.append(f.target / Path(root, n).relative_to(f.staged))
        return out

    # ---------------------------------------------------------------------------- committing

    def commit(self) -> None:
        """Move every staged output into place: each run folder first (the step that can fail:
        nothing is in place before it succeeds), then the single files, renames beside their
        targets. A SIGKILL between the two steps leaves a complete new folder beside the previous
        single files, each file complete."""
        if self._done:
            return
        replaced: list[Path] = []  # the previous sets, removed once everything is in place
        for f in self._folders:
            replaced += self._swap_in(f)
        for t in self._targets.values():
            if t.kind == "file":
                try:
                    os.replace(t.staged, t.target)
                except OSError as exc:
                    msg = f"cannot write {t.option} '{t.target}': {exc.strerror or exc}"
                    raise OutputError(msg) from None
        self._done = True
        # The new set is in place: an interrupt from here on stops only the removal of the
        # previous sets (hidden leftovers of this process, which the next run removes).
        try:
            for old in replaced:
                with contextlib.suppress(OSError):
                    _remove(old)
        except KeyboardInterrupt:
            pass

    def _swap_in(self, f: _Target) -> list[Path]:
        """Put the staged folder in place; returns what is left of the previous set to remove."""
        try:
            if not f.target.exists():
                os.rename(f.staged, f.target)
                return []
            if _exchange(f.staged, f.target):
                return [f.staged]  # now the previous set
            previous = f.target.parent / f".{f.target.name}.{self._token}.previous"
            os.rename(f.target, previous)
            try:
                os.rename(f.staged, f.target)
            except BaseException:  # the old set goes back at once (Ctrl-C, an error)
                os.rename(previous, f.target)
                raise
            return [previous]
        except OSError as exc:
            msg = f"cannot write {f.option} '{f.target}': {exc.strerror or exc}"
            raise OutputError(msg) from None

    def abort(self) -> None:
        """Remove everything staged; the targets stay as they were."""
        if self._done:
            return
        for t in self._targets.values():
            if t.kind in ("file", "folder"):
                _remove(t.staged)
        self._done = True

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # a no-op after commit


def _keep_access(existing: Path, staged: Path) -> None:
    """Give the staging copy of a run folder the existing folder's mode, owner and group (a
    ``2770`` folder of a data team's group stays one); best effort where not permitted."""
    try:
        st = os.stat(existing)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.chown(staged, st.st_uid, st.st_gid)
    with contextlib.suppress(OSError):
        os.chmod(staged, stat.S_IMODE(st.st_mode))


OUTPUT_FORMATS = ("parquet", "csv")


def _csv_safe(df: Any) -> Any:
    """CSV cannot hold nested values: lists become ``a|b|c`` strings (a frame or LazyFrame)."""
    import polars as pl

    lists = [n for n, t in df.collect_schema().items() if isinstance(t, pl.List | pl.Array)]
    if not lists:
        return df
    return df.with_columns(pl.col(n).cast(pl.List(pl.String)).list.join("|") for n in lists)


def frame_writer(
    df: Any, path: str | os.PathLike[str], fmt: str | None = None
) -> Callable[[Path], None]:
    """The function writing Polars frame ``df`` as Parquet or CSV (format from ``fmt`` or
    ``path``'s suffix: ``.csv``/``.tsv`` are CSV, anything else Parquet)."""
    from fastseg.errors import ParameterError

    name = os.fspath(path).lower()
    if fmt is None:
        fmt = "csv" if name.endswith((".csv", ".tsv")) else "parquet"
    if fmt not in OUTPUT_FORMATS:
        msg = f"format: expected one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}"
        raise ParameterError(msg)
    if fmt == "csv":
        sep = "\t" if name.endswith(".tsv") else ","
        return lambda tmp: _csv_safe(df).write_csv(tmp, separator=sep)
    return lambda tmp: df.write_parquet(tmp)


def write_atomic(
    path: str | os.PathLike[str], write: Callable[[Path], Any], option: str = "output"
) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    A one-file :class:`OutputSet`: a crash (or an exception in ``write``) never leaves a
    half-written ``path``, a failure is one :class:`~fastseg.errors.OutputError` naming ``path``,
    and ``path`` may not be a FIFO, device or folder.
    """
    with OutputSet() as outs:
        target = outs.add_file(path, option)
        outs.write_with(target, write)
        outs.commit()
    return target


def write_frame(
    df: Any, path: str | os.PathLike[str], fmt: str | None = None, option: str = "output"
) -> Path:
    """Write Polars frame ``df`` atomically as Parquet or CSV (format from ``fmt`` or the suffix)."""
    return write_atomic(path, frame_writer(df, path, fmt), option)
