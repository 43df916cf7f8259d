"""Fault injection: SIGKILL at any moment, failures after the orders were read, a file-size limit,
permission denied — the outputs are always a complete old or a complete new set, never a mix.

What is asserted (the output contract):

- ``fastseg run --out DIR`` commits its folder as ONE set: after a failure or a SIGKILL at any
  moment DIR holds the complete previous set or the complete new set (same file names, each data
  file byte-identical; ``run.json`` compared without its timing and path fields), never a mix, a
  missing file or a stale file of an earlier run.
- Every single-file output (``score --out``, ``--rejects``, ``--edges-out``, the bitset ``.npz``)
  is replaced atomically: the complete old or the complete new file.
- Temporaries a killed run leaves (hidden entries beside or inside the target) are removed by the
  next run writing to the same target; a successful run leaves no hidden entry.
- A failed run changes nothing; a full disk / file-size limit and permission denied give exit
  status 1 and one ``error:`` line naming the output (not a temporary), no traceback.
- New files follow the umask.

Every command runs as a fresh ``python -m fastseg`` process running the code of the checkout this
file lives in (its root is put first on ``PYTHONPATH``); the rest of the environment, Numba's cache
settings included, is inherited.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ)
ENV["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *([ENV["PYTHONPATH"]] if ENV.get("PYTHONPATH") else [])]
)

D1, D2 = "2026-06-01", "2026-06-20"  # scoring dates of set A and set B (both leave rows out)
RUN_FILES = (
    "scores.parquet",
    "segments.parquet",
    "summary.csv",
    "overlaps.csv",
    "groups.parquet",
    "membership.npz",
    "run.json",
)
# run.json fields that differ between identical runs (timings) or name where a file went
# ``outputs_outside`` lists the --rejects/--edges-out files of the set: the kill variants pass them
# or not, the reference runs do not, and that is not a difference between the two sets
_VOLATILE_KEY = re.compile(
    r"timing|seconds|elapsed|duration|started|finished|_at$|path|outputs_outside|run_id|command"
    r"|^inputs$|^modified$",
    re.I,
)


# ------------------------------------------------------------------------------------ processes


def _cmd(args: Iterable[Any]) -> list[str]:
    return [sys.executable, "-m", "fastseg", *(str(a) for a in args)]


def _popen(
    argv: list[str], preexec_fn: Callable[[], None] | None = None, **kw: Any
) -> subprocess.Popen[Any]:
    """Popen; with a ``preexec_fn`` (each one here makes a single system call), without the
    warning Python 3.12+ gives for forking a process that has threads (Polars' pool)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return subprocess.Popen(argv, preexec_fn=preexec_fn, **kw)


def cli(
    *args: Any, cwd: Path, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one fastseg command to its end."""
    p = _popen(
        _cmd(args),
        preexec_fn,
        env=ENV,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, f"{' '.join(r.args)}\n{r.stdout[-600:]}\n{r.stderr[-4000:]}"
    return r


def cli_parallel(
    commands: Sequence[Sequence[Any]],
    cwd: Path,
    preexec_fns: Sequence[Callable[[], None] | None] | None = None,
) -> None:
    """Run independent commands side by side (two cores), each to a successful end."""
    procs = [
        _popen(
            _cmd(c),
            pre,
            env=ENV,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c, pre in zip(commands, preexec_fns or [None] * len(commands), strict=True)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{' '.join(p.args)}\n{out[-600:]}\n{err[-4000:]}"  # type: ignore[arg-type]


def _signature(dirs: Sequence[Path]) -> frozenset[tuple[Any, ...]]:
    """What the listed folders hold: new or rewritten entries show up as new elements (a folder
    is named by its inode only, so a deletion inside it is not a change)."""
    sig: set[tuple[Any, ...]] = set()
    for d in dirs:
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        sig.add((str(d), e.name, st.st_ino))
                    else:
                        sig.add((str(d), e.name, st.st_ino, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            sig.add((str(d), None))
    return frozenset(sig)


@dataclass
class Timing:
    """One command run alone: seconds from start to exit, and to the first and the last new or
    rewritten entry in the watched folders (the writing)."""

    total: float
    first: float
    last: float

    def window(self) -> tuple[float, float]:
        """The writing, as fractions of the total, widened by 5 % of it on each side."""
        return max(0.0, self.first / self.total - 0.05), self.last / self.total + 0.05


def timed(args: Sequence[Any], cwd: Path, watch: Sequence[Path]) -> Timing:
    """Run a command to a successful end, timing it and when it writes into ``watch``."""
    with tempfile.TemporaryFile() as errf:
        t0 = time.monotonic()
        p = subprocess.Popen(_cmd(args), env=ENV, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errf)
        base, first, last = _signature(watch), None, None
        while p.poll() is None:
            sig = _signature(watch)
            if sig - base:
                last = time.monotonic() - t0
                first = first or last
                base = sig
            time.sleep(0.001)
        total = time.monotonic() - t0
        errf.seek(0)
        assert p.returncode == 0, errf.read().decode(errors="replace")[-4000:]
    return Timing(total, first or total, last or total)


def kill_during(
    args: Sequence[Any],
    cwd: Path,
    *,
    delay: float | None = None,
    watch: Sequence[Path] = (),
    offset: float = 0.0,
) -> tuple[str, float]:
    """Start a command and SIGKILL it after ``delay`` seconds, or else ``offset`` seconds after
    the first new or rewritten entry appears in ``watch`` (the moment writing starts).

    Returns ("killed" | "finished", seconds from start to the kill or the end); a command that
    finished before the kill must have succeeded.
    """
    with tempfile.TemporaryFile() as errf:
        t0 = time.monotonic()
        p = subprocess.Popen(
            _cmd(args),
            env=ENV,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=errf,
            start_new_session=True,
        )
        try:
            if delay is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=delay)
            else:
                base = _signature(watch)
                while p.poll() is None and not (_signature(watch) - base):
                    time.sleep(0.001)
                if offset and p.poll() is None:
                    time.sleep(offset)
            at = time.monotonic() - t0
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        if p.returncode == -signal.SIGKILL:
            return "killed", at
        errf.seek(0)
        assert p.returncode == 0, errf.read().decode(errors="replace")[-4000:]
        return "finished", at


def kill_plan(seed: int, wide: int, late: int, write: Sequence[float]) -> list[tuple[str, float]]:
    """Kill moments, seeded and shuffled: ``wide`` random delays anywhere in the run, ``late``
    ones in its writing, and one kill per fraction in ``write`` that far into the writing
    counted from the moment it starts (see :func:`kill_at`)."""
    rng = random.Random(seed)
    plan = [("wide", rng.random()) for _ in range(wide)]
    plan += [("late", rng.random()) for _ in range(late)]
    plan += [("write", f) for f in write]
    rng.shuffle(plan)
    return plan


def kill_at(
    kind: str,
    u: float,
    args: Sequence[Any],
    cwd: Path,
    timing: Timing,
    total: float,
    watch: Sequence[Path],
) -> tuple[str, float]:
    """Run ``args`` and SIGKILL it: "wide" at u in [0.2, 1.05]·T (reading, scoring, segments,
    writing, exit); "late" at u within the writing as measured, as fractions of T (start-up
    takes the first ~60 % of T and the exit the last ~20 %: the writing is not at the very
    end); "write" u·(its measured length) after the first new entry shows in ``watch``.
    ``total`` is the current estimate of T (the shortest run seen)."""
    if kind == "write":
        return kill_during(args, cwd, watch=watch, offset=u * (timing.last - timing.first))
    if kind == "wide":
        return kill_during(args, cwd, delay=(0.2 + 0.85 * u) * total)
    lo, hi = timing.window()
    return kill_during(args, cwd, delay=(lo + (hi - lo) * u) * total)


# ------------------------------------------------------------------------------------ comparisons


def visible(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items() if not _VOLATILE_KEY.search(k)}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return "<path>"
    return value


def run_json(path: Path) -> Any:
    """run.json without the fields that differ between identical runs (timings, paths)."""
    return _normal(json.loads(path.read_text()))


def same_file(a: Path, b: Path) -> bool:
    if a.name == "run.json":
        try:
            return run_json(a) == run_json(b)
        except (OSError, ValueError):
            return False
    return a.read_bytes() == b.read_bytes()


def assert_set(folder: Path, refs: dict[str, Path]) -> str:
    """The role ("A" or "B") whose complete set ``folder`` holds, hidden entries aside; fails,
    saying file by file what matches, on a mix, a missing, extra or half-written file."""
    assert folder.is_dir(), f"{folder} is missing (or not a folder)"
    names = visible(folder)
    for role, ref in refs.items():
        if names == visible(ref) and all(same_file(folder / n, ref / n) for n in names):
            return role
    detail = []
    for n in sorted(names | set().union(*(visible(r) for r in refs.values()))):
        here = folder / n
        if not here.exists():
            detail.append(f"{n}: missing")
            continue
        like = [r for r, ref in refs.items() if (ref / n).exists() and same_file(here, ref / n)]
        detail.append(f"{n}: {here.stat().st_size} bytes, equals {like or 'neither set'}")
    pytest.fail(f"{folder} holds neither complete set: " + "; ".join(detail))


def file_role(path: Path, refs: dict[str, Path], allowed: Iterable[str]) -> str:
    """The role whose file ``path`` is byte for byte, which must be one of ``allowed``."""
    assert path.is_file(), f"{path} is missing"
    data = path.read_bytes()
    roles = [r for r, ref in refs.items() if ref.read_bytes() == data]
    allowed = set(allowed)
    assert roles and set(roles) & allowed, (
        f"{path.name} ({len(data)} bytes) is neither the complete old nor the complete new file "
        f"(allowed {sorted(allowed)}, matches {roles or 'none'})"
    )
    role = next(r for r in roles if r in allowed)
    if path.suffix == ".parquet":
        pl.read_parquet(path)
    elif path.suffix == ".json":
        json.loads(data)
    return role


def listing(*dirs: Path, hidden_too: bool = True) -> dict[str, Any]:
    """Names and contents (digests) of everything in ``dirs`` (recursively), hidden entries
    too unless told: to prove nothing changed."""
    out: dict[str, Any] = {}
    for d in dirs:
        for p in sorted(d.rglob("*")):
            if hidden_too or not any(part.startswith(".") for part in p.relative_to(d).parts):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def assert_unchanged(before: dict[str, Any], after: dict[str, Any], what: str) -> None:
    """Nothing changed between two :func:`listing` s: no output changed, nothing was left."""
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    left = [k for k in changed if k not in before and any(p.startswith(".") for p in Path(k).parts)]
    outputs = [k for k in changed if k not in left]
    assert not outputs, f"{what} changed outputs: {outputs}"
    assert not left, f"{what} left temporaries behind: {left}"


def assert_no_leftovers(*targets: Path) -> None:
    """No hidden entry inside a target folder, nor a hidden ``.<name>...`` beside any target."""
    for t in targets:
        if t.is_dir():
            assert not hidden(t), f"leftover temporaries in {t}: {hidden(t)}"
        beside = [n for n in hidden(t.parent) if n.startswith(f".{t.name}")]
        assert not beside, f"leftover temporaries beside {t}: {beside}"


def assert_no_hidden(*dirs: Path) -> None:
    for d in dirs:
        assert not hidden(d), f"leftover temporaries in {d}: {hidden(d)}"


def assert_one_error_line(
    r: subprocess.CompletedProcess[str], names: Sequence[Path], tmp: Path
) -> str:
    """Exit status 1, stderr one ``error:`` line naming one of ``names`` (not a hidden
    temporary), no traceback."""
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stdout[-600:]}\n{r.stderr[-1500:]}"
    traceback = "Traceback" in r.stderr + r.stdout
    assert not traceback, f"a traceback instead of one error line:\n...{r.stderr[-800:]}"
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("fastseg: ")]  # the stages done
    assert len(lines) == 1, f"stderr should be one line, got {len(lines)}:\n{r.stderr}"
    line = lines[0]
    assert line.startswith("error:"), line
    assert any(str(n) in line for n in names), f"{line!r} names none of {[str(n) for n in names]}"
    rest = line.replace(str(tmp), "<tmp>")
    assert not re.search(r"/\.[^\s/'\"]", rest), f"{line!r} names a hidden temporary"
    return line


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    # from memory: numpy leaves its file open when a half-written archive fails to open
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def same_npz(a: Path, b: Path) -> bool:
    try:
        x, y = npz_arrays(a), npz_arrays(b)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return False
    return x.keys() == y.keys() and all(
        x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]) for k in x
    )


# ------------------------------------------------------------------------------------ fixtures


@dataclass
class RunRef:
    folder: Path
    rejects: Path
    edges: Path


@dataclass
class ScoreRef:
    scores: Path
    rejects: Path
    edges: Path


@dataclass
class Store:
    base: Path
    orders: Path
    run: dict[str, RunRef]  # "A": --as-of D1, "B": --as-of D2, rejects and edges outside
    score: dict[str, ScoreRef]
    t_run: Timing  # one `run` process (B, with --rejects and --edges-out), alone
    t_score: Timing  # one `score` process (B), alone
    as_of: dict[str, str]

    @staticmethod
    def args_run(
        orders: Path, as_of: str, out: Path, rejects: Path | None, edges: Path | None
    ) -> list[Any]:
        args: list[Any] = ["run", orders, "--out", out, "--as-of", as_of]
        if rejects is not None:
            args += ["--rejects", rejects]
        if edges is not None:
            args += ["--edges-out", edges]
        return args

    @staticmethod
    def args_score(orders: Path, as_of: str, scores: Path, rejects: Path, edges: Path) -> list[Any]:
        return [
            "score",
            orders,
            "--out",
            scores,
            "--rejects",
            rejects,
            "--edges-out",
            edges,
            "--as-of",
            as_of,
        ]

    def run_args(self, role: str, out: Path, rejects: Path | None, edges: Path | None) -> list[Any]:
        """`fastseg run` writing set ``role`` ("A" or "B") to ``out`` (and the side files)."""
        return self.args_run(self.orders, self.as_of[role], out, rejects, edges)

    def score_args(self, role: str, scores: Path, rejects: Path, edges: Path) -> list[Any]:
        return self.args_score(self.orders, self.as_of[role], scores, rejects, edges)

    def live_run(self, role: str, parent: Path, side: Path) -> tuple[Path, Path, Path]:
        """A complete set ``role`` at ``parent/out`` (its rejects and edges in ``side``)."""
        parent.mkdir(parents=True, exist_ok=True)
        side.mkdir(parents=True, exist_ok=True)
        ref = self.run[role]
        out, rej, edg = parent / "out", side / "rejects.parquet", side / "edges.json"
        shutil.copytree(ref.folder, out)
        shutil.copy2(ref.rejects, rej)
        shutil.copy2(ref.edges, edg)
        return out, rej, edg

    def live_score(self, role: str, folder: Path) -> tuple[Path, Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        ref = self.score[role]
        paths = (folder / "scores.parquet", folder / "rejects.parquet", folder / "edges.json")
        for src, dst in zip((ref.scores, ref.rejects, ref.edges), paths, strict=True):
            shutil.copy2(src, dst)
        return paths


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """1e6 synthetic orders (a `run` takes ~2 s, most of it start-up) and reference sets A, B."""
    base = tmp_path_factory.mktemp("faults")
    ok(cli("gen", base / "data", "--orders", "1e6", "--events", "1000", "--seed", "7", cwd=base))
    orders = base / "data" / "orders.parquet"
    as_of = {"A": D1, "B": D2}
    run = {
        r: RunRef(base / f"run{r}", base / f"run{r}.rejects.parquet", base / f"run{r}.edges.json")
        for r in "AB"
    }
    score = {
        r: ScoreRef(
            base / f"scores{r}.parquet",
            base / f"score{r}.rejects.parquet",
            base / f"score{r}.edges.json",
        )
        for r in "AB"
    }
    ra, rb, sa, sb = run["A"], run["B"], score["A"], score["B"]
    # the warm-up (the first process compiles or loads the Numba kernels)
    ok(cli(*Store.args_run(orders, D1, ra.folder, ra.rejects, ra.edges), cwd=base))
    # the others alone, timed: the kill delays are fractions of their durations
    t_run = timed(
        Store.args_run(orders, D2, rb.folder, rb.rejects, rb.edges), base, (base, rb.folder)
    )
    ok(cli(*Store.args_score(orders, D1, sa.scores, sa.rejects, sa.edges), cwd=base))
    t_score = timed(Store.args_score(orders, D2, sb.scores, sb.rejects, sb.edges), base, (base,))
    s = Store(base, orders, run, score, t_run, t_score, as_of)
    assert set(RUN_FILES) == visible(ra.folder) == visible(rb.folder)
    for a, b in (
        *((ra.folder / n, rb.folder / n) for n in RUN_FILES),
        (ra.rejects, rb.rejects),
        (ra.edges, rb.edges),
        (sa.scores, sb.scores),
        (sa.rejects, sb.rejects),
        (sa.edges, sb.edges),
    ):
        assert not same_file(a, b), f"sets A and B must differ in every file: {a.name}"
    return s


# looked up here, not in the forked child; None where there is no prctl (not Linux)
_PRCTL = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def _drop_dac_caps() -> None:
    """Drop CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from the bounding set: root
    then meets permissions like anyone after exec (PR_CAPBSET_DROP = 24)."""
    for cap in (1, 2, 3):
        if _PRCTL is None or _PRCTL(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@pytest.fixture(scope="module")
def unprivileged(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], None]:
    """A preexec_fn under which a folder chmod 0o555 is not writable, even for root; skip if
    this machine cannot do that."""
    probe = tmp_path_factory.mktemp("probe")
    locked = probe / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        try:
            p = _popen(
                [sys.executable, "-c", f"open({str(locked / 'x')!r}, 'w')"],
                _drop_dac_caps,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            p.wait(timeout=60)
        except subprocess.SubprocessError as exc:
            pytest.skip(f"cannot drop capabilities here: {exc}")
        if p.returncode == 0:
            pytest.skip("a folder chmod 0o555 stays writable here")
    finally:
        locked.chmod(0o755)
    return _drop_dac_caps


def _fsize(limit: int) -> Callable[[], None]:
    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


# ------------------------------------------------------------------------------------ 1-3 SIGKILL


def test_sigkill_run_leaves_a_complete_set(store: Store, tmp_path: Path) -> None:
    """SIGKILL `run` at random moments (reading, scoring, segments, writing, exit) over a
    complete set, ten times: the folder is always the complete old or the complete new set
    (the roles swap when the new one is in). --rejects and --edges-out, outside the folder, are
    each the complete old or new file when passed (all timed kills, every other kill during
    the writing) and untouched when not. The next complete run removes every leftover."""
    refs = {r: store.run[r].folder for r in "AB"}
    side_refs = {
        "rejects": {r: store.run[r].rejects for r in "AB"},
        "edges": {r: store.run[r].edges for r in "AB"},
    }
    parent, side = tmp_path / "live", tmp_path / "side"
    out, rej, edg = store.live_run("A", parent, side)
    sides = {"rejects": rej, "edges": edg}
    state = {"out": "A", "rejects": "A", "edges": "A"}
    total, n_write = store.t_run.total, 0
    for i, (kind, u) in enumerate(kill_plan(20260630, wide=4, late=2, write=(0, 0.5, 1, 2))):
        target = "B" if state["out"] == "A" else "A"
        extras = kind != "write" or n_write % 2 == 1
        n_write += kind == "write"
        args = store.run_args(target, out, rej if extras else None, edg if extras else None)
        outcome, at = kill_at(kind, u, args, tmp_path, store.t_run, total, (parent, out))
        now = assert_set(out, refs)
        for key, path in sides.items():
            allowed = {state[key], target} if extras else {state[key]}
            state[key] = file_role(path, side_refs[key], allowed)
        print(f"{i}: {kind} {u:.2f} -> {outcome} at {at:.2f}s of {total:.2f}s: {now} {state}")
        if outcome == "finished":
            assert now == target
            if extras:
                total = min(total, at)
        state["out"] = now
    target = "B" if state["out"] == "A" else "A"
    ok(cli(*store.run_args(target, out, rej, edg), cwd=tmp_path))
    assert assert_set(out, refs) == target
    for key, path in sides.items():
        assert file_role(path, side_refs[key], {target}) == target
    assert_no_leftovers(out, rej, edg)
    assert_no_hidden(parent, side)


def test_sigkill_score_leaves_each_file_complete(store: Store, tmp_path: Path) -> None:
    """SIGKILL `score --out --rejects --edges-out` at random moments: each of the three files is
    the complete old or the complete new one, and reads; the next complete run leaves no
    leftover."""
    live = tmp_path / "live"
    paths = dict(zip(("scores", "rejects", "edges"), store.live_score("A", live), strict=True))
    refs = {key: {r: getattr(store.score[r], key) for r in "AB"} for key in paths}
    state = dict.fromkeys(paths, "A")
    total = store.t_score.total
    for i, (kind, u) in enumerate(kill_plan(7, wide=2, late=1, write=(0, 1, 2))):
        target = "B" if state["scores"] == "A" else "A"
        args = store.score_args(target, *paths.values())
        outcome, at = kill_at(kind, u, args, tmp_path, store.t_score, total, (live,))
        for key, path in paths.items():
            state[key] = file_role(path, refs[key], {state[key], target})
        print(f"{i}: {kind} {u:.2f} -> {outcome} at {at:.2f}s of {total:.2f}s: {state}")
        if outcome == "finished":
            assert set(state.values()) == {target}
            total = min(total, at)
    target = "B" if state["scores"] == "A" else "A"
    ok(cli(*store.score_args(target, *paths.values()), cwd=tmp_path))
    for key, path in paths.items():
        assert file_role(path, refs[key], {target}) == target
    assert_no_hidden(live)


def test_sigkill_segment_bitset_keeps_a_loadable_npz(store: Store, tmp_path: Path) -> None:
    """SIGKILL `segment --layout bitset --out m.npz` over an existing m.npz: it is the old file
    untouched or the complete new one, and loads with fastseg.segmenting.load_bitsets."""
    from fastseg.segmenting import load_bitsets

    live, refdir = tmp_path / "live", tmp_path / "ref"
    live.mkdir()
    refdir.mkdir()
    m = live / "m.npz"
    seg_args = {r: ["segment", store.score[r].scores, "--layout", "bitset"] for r in "AB"}
    timing = timed([*seg_args["A"], "--out", m], tmp_path, (live,))
    total = timing.total
    ok(cli(*seg_args["B"], "--out", refdir / "B.npz", cwd=tmp_path))
    shutil.copy2(m, refdir / "A.npz")
    refs = {r: refdir / f"{r}.npz" for r in "AB"}
    assert not same_npz(refs["A"], refs["B"])
    state = "A"
    for i, (kind, x) in enumerate(kill_plan(11, wide=2, late=0, write=(0, 1, 2))):
        target = "B" if state == "A" else "A"
        before = m.read_bytes()
        args = [*seg_args[target], "--out", m]
        outcome, at = kill_at(kind, x, args, tmp_path, timing, total, (live,))
        assert m.is_file(), f"{m} is missing after a kill"
        if m.read_bytes() == before:
            now = state
        else:
            assert same_npz(m, refs[target]), (
                f"{m} ({m.stat().st_size} bytes) is neither the old file nor the complete new one"
            )
            now = target
        load_bitsets(m)
        print(f"{i}: {kind} {x:.3f} -> {outcome} at {at:.2f}s of {total:.2f}s: {now}")
        if outcome == "finished":
            assert now == target
            total = min(total, at)
        state = now
    target = "B" if state == "A" else "A"
    ok(cli(*seg_args[target], "--out", m, cwd=tmp_path))
    assert same_npz(m, refs[target])
    load_bitsets(m)
    assert_no_hidden(live)


# ------------------------------------------------------------------------------------ 4 failures


@pytest.fixture(scope="module")
def bad_inputs(store: Store) -> dict[str, Path]:
    """Orders with one row lacking its customer id, customers with text ids, an events rule."""
    folder = store.base / "bad"
    folder.mkdir()
    orders = pl.read_parquet(store.orders).head(100_000)
    orders.with_columns(
        pl.when(pl.int_range(pl.len()) == 500)
        .then(None)
        .otherwise(pl.col("customer_id"))
        .alias("customer_id")
    ).write_parquet(folder / "orders_null_id.parquet")
    pl.DataFrame({"customer_id": ["C1", "C2"], "country": ["US", "DE"]}).write_parquet(
        folder / "customers_text_ids.parquet"
    )
    (folder / "events_rule.toml").write_text(
        '[[segment]]\nname = "openers"\ndescription = "opened an email this week"\n'
        "rule = \"events('email_open', since: -7d) >= 1\"\n"
    )
    return {
        "orders_null_id": folder / "orders_null_id.parquet",
        "customers_text_ids": folder / "customers_text_ids.parquet",
        "events_rule": folder / "events_rule.toml",
    }


@pytest.mark.parametrize(
    "case",
    [
        "run --strict, a row without customer id",
        "run, a rule needing events fails after scoring",
        "score --strict, a row without customer id",
        "score, customers with text ids fail after the orders",
    ],
)
def test_failed_run_changes_nothing(
    store: Store, bad_inputs: dict[str, Path], tmp_path: Path, case: str
) -> None:
    """A run that fails after the orders were read leaves every output as it was: the folder
    (or scores file), --rejects and --edges-out byte-identical, nothing added beside them."""
    parent, side = tmp_path / "live", tmp_path / "side"
    if case.startswith("run"):
        out, rej, edg = store.live_run("A", parent, side)
        if "strict" in case:
            args = ["run", bad_inputs["orders_null_id"], "--strict", "--out", out]
        else:
            args = store.run_args("B", out, None, None)
            args += ["--no-builtin", "--rules", bad_inputs["events_rule"]]
    else:
        side.mkdir()
        out, rej, edg = store.live_score("A", parent)
        if "strict" in case:
            args = ["score", bad_inputs["orders_null_id"], "--strict", "--out", out]
        else:
            args = store.score_args("B", out, rej, edg)[:4]
            args += ["--customers", bad_inputs["customers_text_ids"], "--as-of", D2]
    args += ["--rejects", rej, "--edges-out", edg]
    before = listing(parent, side)
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 1, f"{case}: exit {r.returncode}\n{r.stderr[-1500:]}"
    errors = [ln for ln in r.stderr.splitlines() if not ln.startswith("fastseg: ")]  # stages done
    clean = "Traceback" not in r.stderr and "\n".join(errors).strip().startswith("error:")
    assert clean, f"{case}: not one error line:\n{r.stderr[-1500:]}"
    assert_unchanged(before, listing(parent, side), f"the failed run ({case})")


# ------------------------------------------------------------------------------------ 5 disk full


def test_file_size_limit_on_run(store: Store, tmp_path: Path) -> None:
    """`run` under RLIMIT_FSIZE below scores.parquet: exit 1, one line naming the output, the old
    set and side files intact; the next run (no limit) commits and leaves no temporaries."""
    refs = {r: store.run[r].folder for r in "AB"}
    b = store.run["B"]
    small = max((b.folder / n).stat().st_size for n in ("summary.csv", "overlaps.csv", "run.json"))
    limit = max(4 * small, b.edges.stat().st_size * 4, 64 * 1024)
    assert limit < (b.folder / "scores.parquet").stat().st_size
    parent, side = tmp_path / "live", tmp_path / "side"
    out, rej, edg = store.live_run("A", parent, side)
    before = listing(side, hidden_too=False)
    r = cli(*store.run_args("B", out, rej, edg), cwd=tmp_path, preexec_fn=_fsize(limit))
    assert_one_error_line(r, [out, rej, edg], tmp_path)
    assert assert_set(out, refs) == "A"
    assert_unchanged(before, listing(side, hidden_too=False), "the failed run")
    ok(cli(*store.run_args("B", out, rej, edg), cwd=tmp_path))
    assert assert_set(out, refs) == "B"
    assert file_role(rej, {r: store.run[r].rejects for r in "AB"}, {"B"}) == "B"
    assert file_role(edg, {r: store.run[r].edges for r in "AB"}, {"B"}) == "B"
    assert_no_leftovers(out, rej, edg)
    assert_no_hidden(side)


def test_file_size_limit_on_score(store: Store, tmp_path: Path) -> None:
    """`score` under RLIMIT_FSIZE below the scores file: exit 1, one line naming the output, the
    three old files intact; the next run commits them and leaves no temporaries."""
    b = store.score["B"]
    limit = max(64 * 1024, 4 * b.edges.stat().st_size)
    assert limit < b.scores.stat().st_size
    live = tmp_path / "live"
    scores, rej, edg = store.live_score("A", live)
    before = listing(live, hidden_too=False)
    r = cli(*store.score_args("B", scores, rej, edg), cwd=tmp_path, preexec_fn=_fsize(limit))
    assert_one_error_line(r, [scores, rej, edg], tmp_path)
    assert_unchanged(before, listing(live, hidden_too=False), "the failed run")
    ok(cli(*store.score_args("B", scores, rej, edg), cwd=tmp_path))
    for path, ref in ((scores, b.scores), (rej, b.rejects), (edg, b.edges)):
        assert path.read_bytes() == ref.read_bytes(), path.name
    assert_no_hidden(live)


# ------------------------------------------------------------------------------------ 6 permissions


def test_permission_denied_on_run(
    store: Store, unprivileged: Callable[[], None], tmp_path: Path
) -> None:
    """The out folder's parent not writable: exit 1, one line naming the output folder, the
    folder and the side files (--rejects, --edges-out, writable) unchanged."""
    parent, side = tmp_path / "live", tmp_path / "side"
    out, rej, edg = store.live_run("A", parent, side)
    before = listing(parent, side)
    parent.chmod(0o555)
    try:
        r = cli(*store.run_args("B", out, rej, edg), cwd=tmp_path, preexec_fn=unprivileged)
    finally:
        parent.chmod(0o755)
    assert_one_error_line(r, [out], tmp_path)
    assert_unchanged(before, listing(parent, side), "the failed run")


def test_permission_denied_on_score(
    store: Store, unprivileged: Callable[[], None], tmp_path: Path
) -> None:
    """The scores file's folder not writable: exit 1, one line naming the scores file, and the
    --rejects and --edges-out files (in a writable folder) unchanged."""
    locked, side = tmp_path / "locked", tmp_path / "side"
    _, rej, edg = store.live_score("A", side)
    (side / "scores.parquet").unlink()
    locked.mkdir()
    scores = locked / "scores.parquet"
    shutil.copy2(store.score["A"].scores, scores)
    before = listing(locked, side)
    locked.chmod(0o555)
    try:
        r = cli(*store.score_args("B", scores, rej, edg), cwd=tmp_path, preexec_fn=unprivileged)
    finally:
        locked.chmod(0o755)
    assert_one_error_line(r, [scores], tmp_path)
    assert_unchanged(before, listing(locked, side), "the failed run")


# ------------------------------------------------------------------------------------ 7 stale files


def test_run_without_groups_leaves_no_stale_groups_file(store: Store, tmp_path: Path) -> None:
    """A run whose catalog has no groups (--no-builtin --rules with two segments), over a set
    with groups.parquet, leaves exactly its own five files: no stale groups.parquet."""
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[segment]]\nname = "repeaters"\ndescription = "two orders or more"\n'
        'rule = "frequency >= 2"\n'
        '[[segment]]\nname = "big_spenders"\ndescription = "over 500 in all"\n'
        'rule = "monetary > 500"\n'
    )
    out, _, _ = store.live_run("A", tmp_path / "live", tmp_path / "side")
    assert (out / "groups.parquet").exists()
    ok(cli(*store.run_args("B", out, None, None), "--no-builtin", "--rules", rules, cwd=tmp_path))
    assert visible(out) == set(RUN_FILES) - {"groups.parquet"}, sorted(visible(out))
    assert json.loads((out / "run.json").read_text())["segments"] == 2
    assert pl.read_csv(out / "summary.csv")["segment"].to_list() == ["repeaters", "big_spenders"]
    scores = pl.read_parquet(out / "scores.parquet")
    assert scores.equals(
        pl.read_parquet(store.run["B"].folder / "scores.parquet").select(scores.columns)
    )
    assert_no_leftovers(out)


# ------------------------------------------------------------------------------------ 8 umask


def _umask(mask: int) -> Callable[[], None]:
    def pre() -> None:
        os.umask(mask)

    return pre


def test_new_files_follow_the_umask(store: Store, tmp_path: Path) -> None:
    """New outputs get the umask's modes (0o644 / 0o755 under 022, 0o640 / 0o750 under 027):
    every file of the run folder, --rejects, --edges-out and the bitset .npz; the run folder."""
    cases = {0o022: (0o644, 0o755), 0o027: (0o640, 0o750)}
    paths = {}
    for mask in cases:
        side = tmp_path / f"side{mask:03o}"
        side.mkdir()
        paths[mask] = (
            tmp_path / f"out{mask:03o}",
            *(side / n for n in ("r.parquet", "e.json", "m.npz")),
        )
    pres = [_umask(mask) for mask in cases]
    cli_parallel(
        [store.run_args("A", out, rej, edg) for out, rej, edg, _ in paths.values()], tmp_path, pres
    )
    cli_parallel(
        [
            ["segment", store.score["A"].scores, "--layout", "bitset", "--out", m]
            for *_, m in paths.values()
        ],
        tmp_path,
        pres,
    )
    for mask, (file_mode, dir_mode) in cases.items():
        out, rej, edg, m = paths[mask]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (*out.iterdir(), rej, edg, m)}
        wrong = {n: oct(v) for n, v in modes.items() if v != file_mode}
        assert not wrong, f"files should be {oct(file_mode)} under umask {mask:03o}: {wrong}"
        got = stat.S_IMODE(out.stat().st_mode)
        assert got == dir_mode, (
            f"the run folder should be {oct(dir_mode)} under umask {mask:03o}: {oct(got)}"
        )
        assert_no_leftovers(out, rej, edg, m)
