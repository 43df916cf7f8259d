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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastseg.errors import FastsegError, OutputError

__all__ = ["OutputSet", "is_fastseg_folder", "write_outputs_once"]

RUN_MARKER = "run.json"
_LEFTOVER = re.compile(
    r"^\.(?P<name>.+)\.fastseg-(?P<pid>\d+)-[0-9a-f]+\.(?P<kind>tmp|staging|previous)$"
)
#: temporaries of earlier fastseg versions (``.NAME.XXXXXXXX.tmp`` and ``.NAME.PID.tmp``)
_LEGACY = re.compile(r"^\.(?P<name>.+)\.(?:[a-z0-9_]{8}|\d+)\.tmp$")


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


def is_fastseg_folder(folder: Path) -> bool:
    """True when ``folder`` is empty or is a run folder fastseg wrote (it holds a ``run.json``
    whose object has an ``as_of``)."""
    try:
        entries = [e for e in os.listdir(folder)]
    except OSError:
        return False
    if not entries:
        return True
    marker = folder / RUN_MARKER
    try:
        doc = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "as_of" in doc


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

    def __init__(self, inputs: Iterable[str | os.PathLike[str]] = ()) -> None:
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
        self._token = f"fastseg-{os.getpid()}-{uuid.uuid4().hex[:10]}"
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
            staged = folder.staged / target.relative_to(folder.target)
            self._mkdirs(staged.parent, target, option)
            self._targets[target] = _Target(target, option, staged, "member")
            return target
        self._mkdirs(target.parent, target, option)
        self._clean_leftovers(target)
        staged = target.parent / f".{target.name}.{self._token}.tmp"
        self._create(staged, target, option)
        self._targets[target] = _Target(target, option, staged, "file")
        return target

    def add_folder(self, path: str | os.PathLike[str], option: str = "--out") -> Path:
        """Declare a run folder: written whole into a hidden staging copy, swapped in at commit."""
        target = self._resolve(path, option)
        self._check_other_targets(target, option)
        self._check_not_input(target, option, folder=True)
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
            if not is_fastseg_folder(target):
                shown = ", ".join(sorted(os.listdir(target))[:3])
                msg = (
                    f"{option} '{target}' already holds files fastseg did not write ({shown}); the "
                    "run folder is replaced as a whole: give a new or empty folder"
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
        entry = _Target(target, option, staged, "folder")
        self._targets[target] = entry
        self._folders.append(entry)
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
        """Remove what killed runs left beside ``target``; undo a half-done folder swap."""
        parent = target.parent
        try:
            names = os.listdir(parent)
        except OSError:
            return
        for name in names:
            m = _LEFTOVER.match(name)
            if m is not None and m["name"] == target.name:
                if _pid_alive(int(m["pid"])):
                    continue
                path = parent / name
                if m["kind"] == "previous" and not target.exists():
                    with contextlib.suppress(OSError):
                        os.rename(path, target)  # the swap stopped half-way: the old set is back
                        continue
                _remove(path)
            elif (lm := _LEGACY.match(name)) is not None and lm["name"] == target.name:
                _remove(parent / name)

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
        from fastseg.io import frame_writer

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
        """Move every staged output into place: single files first, then each run folder."""
        if self._done:
            return
        for t in self._targets.values():
            if t.kind == "file":
                try:
                    os.replace(t.staged, t.target)
                except OSError as exc:
                    msg = f"cannot write {t.option} '{t.target}': {exc.strerror or exc}"
                    raise OutputError(msg) from None
        for f in self._folders:
            self._swap_in(f)
        self._done = True

    def _swap_in(self, f: _Target) -> None:
        try:
            if not f.target.exists():
                os.rename(f.staged, f.target)
                return
            if _exchange(f.staged, f.target):
                _remove(f.staged)  # now the previous set
                return
            previous = f.target.parent / f".{f.target.name}.{self._token}.previous"
            os.rename(f.target, previous)
            os.rename(f.staged, f.target)
            _remove(previous)
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


@contextlib.contextmanager
def write_outputs_once(
    targets: Iterable[tuple[str | os.PathLike[str], str]],
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Iterator[tuple[OutputSet, list[Path]]]:
    """Declare ``(path, option)`` file targets, yield the set, commit when the block succeeds."""
    with OutputSet(inputs) as outs:
        paths = [outs.add_file(p, opt) for p, opt in targets]
        yield outs, paths
        outs.commit()
