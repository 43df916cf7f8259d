"""Bad inputs, end to end: the corpus every error path of the CLI (and a few of the API) must meet.

For every bad input, through the CLI:

- exit status 1 (data, input and rule errors) or 2 (command-line usage errors);
- stderr holds exactly one non-empty line, and it starts with ``error:``;
- no ``Traceback`` anywhere, no uncaught exception;
- the line names what it must name (file, column, value, option, CSV line number) — checked with
  substrings of the whitespace-normalised line, never the full wording;
- inputs are never modified, and an output that existed before is byte-for-byte unchanged (the
  folder the case works in is snapshotted — names, kinds, modes and contents — before the command
  and compared after: a refused command writes nothing).

Most cases run in-process with ``CliRunner``; a handful run ``python -m fastseg`` as a real process
(one line and the right exit status from the real thing, umask, file-size limits, permissions,
FIFOs, a narrow terminal). Tiny data: the whole file runs in well under a minute.

A few cases also pin results that are wrong without an error (a row with no customer id moving the
scoring date, a literal ``orders[1].csv`` read as a glob, one file read twice, untrimmed text ids,
``;``-separated CSV, output file modes).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import hashlib
import json
import os
import re
import resource
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from fastseg.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
N_ORDERS = 40
HIDDEN_TMP = re.compile(r"/\.[^/\s']+\.tmp\b")  # a temporary name such as .scores.parquet.x1y2.tmp

Fragment = str | tuple[str, ...]  # a tuple: any one of these


# ------------------------------------------------------------------------------------ helpers


def _norm(text: str) -> str:
    return " ".join(ANSI.sub("", text).split())


def _lines(text: str) -> list[str]:
    """The non-empty lines, without the progress lines of the stages done before the error
    (``fastseg: orders  40 rows  0.01 s``: a log's record, not part of the error)."""
    return [
        ln
        for ln in ANSI.sub("", text).splitlines()
        if ln.strip() and not ln.startswith("fastseg: ")
    ]


def _check_line(
    code: int,
    stdout: str,
    stderr: str,
    fragments: Sequence[Fragment],
    *,
    want: int | tuple[int, ...],
    absent: Sequence[str] = (),
    max_len: int | None = None,
) -> str:
    """The shared contract; returns the whitespace-normalised error line."""
    head = " ⏎ ".join(ln[:160] for ln in stderr.splitlines()[:3])
    where = f"[exit {code} | stderr: {head}]"
    wanted = want if isinstance(want, tuple) else (want,)
    assert "Traceback" not in stdout + stderr, f"{where} :: a traceback"
    assert code in wanted, f"{where} :: exit {code}, want {wanted}"
    lines = _lines(stderr)
    assert len(lines) == 1, f"{where} :: {len(lines)} non-empty stderr lines, want 1"
    line = _norm(lines[0])
    assert line.startswith("error:"), f"{where} :: the line does not start with 'error:'"
    for frag in fragments:
        options = frag if isinstance(frag, tuple) else (frag,)
        assert any(_norm(o) in line for o in options), f"{where} :: {frag!r} not named"
    for frag in absent:
        assert frag.lower() not in line.lower(), f"{where} :: {frag!r} must not appear"
    if max_len is not None:
        assert len(line) < max_len, f"{where} :: {len(line)} characters, want < {max_len}"
    return line


def invoke(*args: Any, env: dict[str, str] | None = None):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args], env=env)


def assert_error(
    result: Any,
    *fragments: Fragment,
    code: int | tuple[int, ...] = 1,
    absent: Sequence[str] = (),
    max_len: int | None = None,
) -> str:
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (
        f"[exit {result.exit_code} | uncaught {type(exc).__name__}: {str(exc)[:160]}]"
    )
    return _check_line(
        result.exit_code,
        result.stdout,
        result.stderr,
        fragments,
        want=code,
        absent=absent,
        max_len=max_len,
    )


def assert_proc_error(
    proc: subprocess.CompletedProcess[str],
    *fragments: Fragment,
    code: int | tuple[int, ...] = 1,
    absent: Sequence[str] = (),
    max_len: int | None = None,
) -> str:
    return _check_line(
        proc.returncode,
        proc.stdout,
        proc.stderr,
        fragments,
        want=code,
        absent=absent,
        max_len=max_len,
    )


def fastseg_proc(
    *args: Any,
    cwd: Path,
    preexec_fn: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python -m fastseg ARGS`` as a real process, running this checkout's code."""
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")}
    base["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    base["NO_COLOR"] = "1"
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "fastseg", *map(str, args)],
        cwd=cwd,
        env=base,
        capture_output=True,
        text=True,
        preexec_fn=preexec_fn,  # noqa: PLW1509
        timeout=timeout,
        check=False,
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(*roots: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry below ``roots``: kind, mode and content (files) or target (links)."""
    out: dict[str, tuple[Any, ...]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = os.lstat(p)
                mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISLNK(st.st_mode):
                    out[str(p)] = ("link", os.readlink(p))
                elif stat.S_ISDIR(st.st_mode):
                    out[str(p)] = ("dir", mode)
                elif stat.S_ISREG(st.st_mode):
                    data = p.read_bytes() if mode & 0o444 else b"<unreadable>"
                    out[str(p)] = ("file", mode, st.st_ino, hashlib.sha256(data).hexdigest())
                else:
                    out[str(p)] = ("special", stat.S_IFMT(st.st_mode), mode)
    return out


def assert_tree_unchanged(before: dict[str, tuple[Any, ...]], *roots: Path) -> None:
    after = tree(*roots)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), f"added {added}, removed {removed}, changed {changed}"


def fails_cleanly(
    roots: Sequence[Path],
    args: Sequence[Any],
    *fragments: Fragment,
    code: int | tuple[int, ...] = 1,
    absent: Sequence[str] = (),
    max_len: int | None = None,
) -> str:
    """Run the CLI in-process; one-line error, and nothing below ``roots`` created or changed."""
    before = tree(*roots)
    line = assert_error(invoke(*args), *fragments, code=code, absent=absent, max_len=max_len)
    assert_tree_unchanged(before, *roots)
    return line


def write(folder: Path, name: str, content: str | bytes) -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


def csv(folder: Path, name: str, *rows: str, header: str = "customer_id,order_ts,amount") -> Path:
    return write(folder, name, "\n".join([header, *rows]) + "\n")


def cp(src: Path, folder: Path, name: str | None = None) -> Path:
    dst = folder / (name or src.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def catalog(*tables: str) -> str:
    return "\n".join(tables) + "\n"


def seg_toml(name: str, rule: str, description: str = "d") -> str:
    return f"[[segment]]\nname = {json.dumps(name)}\ndescription = {json.dumps(description)}\nrule = {json.dumps(rule)}\n"


# ------------------------------------------------------------------------------------ data


def _orders_frame(n: int = N_ORDERS) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "order_id": list(range(n)),
            "customer_id": [100 + i % 12 for i in range(n)],
            "order_ts": [
                dt.datetime(2026, 6, 30, 12) - dt.timedelta(days=(i * 37) % 400) for i in range(n)
            ],
            "amount": [10.0 + i for i in range(n)],
        }
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small valid inputs shared by the module (never written to by any case)."""
    d = tmp_path_factory.mktemp("bad-inputs-data")
    orders = _orders_frame()
    orders.write_parquet(d / "orders.parquet")
    orders.write_csv(d / "orders.csv")
    pl.DataFrame(
        {"customer_id": list(range(100, 115)), "country": ["US", "DE", "FR"] * 5}
    ).write_parquet(d / "customers.parquet")
    pl.DataFrame(
        {
            "customer_id": [100 + i % 12 for i in range(30)],
            "event_ts": [dt.date(2026, 6, 30) - dt.timedelta(days=i) for i in range(30)],
            "event": ["email_open", "site_visit", "add_to_cart"] * 10,
        }
    ).write_parquet(d / "events.parquet")
    r = runner.invoke(
        app,
        [
            "score",
            str(d / "orders.parquet"),
            "--out",
            str(d / "scores.parquet"),
            "--edges-out",
            str(d / "edges5.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "score",
            str(d / "orders.parquet"),
            "--bins",
            "3",
            "--out",
            str(d / "scores3.parquet"),
            "--edges-out",
            str(d / "edges3.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    for f in d.iterdir():  # shared inputs: read-only, so that a stray write shows
        f.chmod(0o444)
    return d


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every case runs in its own folder, so a default output path never lands in the repo."""
    monkeypatch.chdir(tmp_path)


# ============================================================================ 1. output = input


def _score_out_is_orders(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    o = cp(d / "orders.parquet", t)
    return ["score", o, "--out", o], ["orders.parquet"]


def _score_rejects_is_orders(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    o = csv(t, "orders.csv", "1,2026-01-01,5", ",2026-01-02,3")
    return ["score", o, "--rejects", o, "--out", t / "s.parquet"], ["orders.csv"]


def _score_edges_out_is_orders(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    o = cp(d / "orders.parquet", t)
    return ["score", o, "--edges-out", o, "--out", t / "s.parquet"], ["orders.parquet"]


def _score_rejects_is_out(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    o = csv(t, "orders.csv", "1,2026-01-01,5", ",2026-01-02,3")
    s = write(t, "s.parquet", b"an earlier output")
    return ["score", o, "--rejects", s, "--out", s], ["s.parquet"]


def _score_edges_out_is_edges_in(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    e = cp(d / "edges5.json", t, "edges.json")
    return [
        "score",
        d / "orders.parquet",
        "--edges-in",
        e,
        "--edges-out",
        e,
        "--out",
        t / "s.parquet",
    ], ["edges.json"]


def _score_edges_out_is_out(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    s = t / "s.parquet"
    return ["score", d / "orders.parquet", "--edges-out", s, "--out", s], ["s.parquet"]


def _score_rejects_is_edges_out(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    o = csv(t, "orders.csv", "1,2026-01-01,5", ",2026-01-02,3")
    e = t / "both.json"
    return ["score", o, "--rejects", e, "--edges-out", e, "--out", t / "s.parquet"], ["both.json"]


def _score_out_is_customers(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    c = cp(d / "customers.parquet", t)
    return ["score", d / "orders.parquet", "--customers", c, "--out", c], ["customers.parquet"]


def _score_out_is_events(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    e = cp(d / "events.parquet", t)
    return ["score", d / "orders.parquet", "--events", e, "--out", e], ["events.parquet"]


def _run_out_dir_holds_orders(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    o = cp(d / "orders.parquet", t / "resdir")
    return ["run", o, "--out", t / "resdir"], ["resdir"]


def _run_out_dir_holds_customers(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    c = cp(d / "customers.parquet", t / "resdir")
    return ["run", d / "orders.parquet", "--customers", c, "--out", t / "resdir"], ["resdir"]


def _run_rejects_is_orders(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    o = csv(t, "orders.csv", "1,2026-01-01,5", ",2026-01-02,3")
    return ["run", o, "--rejects", o, "--out", t / "res"], ["orders.csv"]


def _segment_out_is_scores(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    s = cp(d / "scores.parquet", t)
    return ["segment", s, "--out", s], ["scores.parquet"]


def _segment_out_is_rules(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    r = write(t, "rules.toml", seg_toml("big", "monetary > 10"))
    return ["segment", d / "scores.parquet", "--rules", r, "--out", r], ["rules.toml"]


def _relative_input_absolute_out(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    o = cp(d / "orders.parquet", t)  # the case runs in t: "orders.parquet" is o
    return ["score", "orders.parquet", "--out", o.resolve()], ["orders.parquet"]


def _dotdot_spelling(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    o = cp(d / "orders.parquet", t)
    (t / "sub").mkdir()
    return ["score", o, "--out", "sub/../orders.parquet"], ["orders.parquet"]


def _input_via_symlink(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    o = cp(d / "orders.parquet", t)
    (t / "link.parquet").symlink_to(o.name)
    return ["score", t / "link.parquet", "--out", o], [("orders.parquet", "link.parquet")]


def _out_via_symlink(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    o = cp(d / "orders.parquet", t)
    (t / "link.parquet").symlink_to(o.name)
    return ["score", o, "--out", t / "link.parquet"], [("orders.parquet", "link.parquet")]


def _input_via_hard_link(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    o = cp(d / "orders.parquet", t)
    os.link(o, t / "hard.parquet")
    return ["score", t / "hard.parquet", "--out", o], [("orders.parquet", "hard.parquet")]


def _glob_input_matches_out(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    cp(d / "orders.parquet", t, "o1.parquet")
    cp(d / "orders.parquet", t, "o2.parquet")
    return ["score", str(t / "o*.parquet"), "--out", t / "o2.parquet"], ["o2.parquet"]


def _folder_input_holds_out(d: Path, t: Path) -> tuple[list[Any], list[Fragment]]:
    cp(d / "orders.parquet", t / "exports", "a.parquet")
    cp(d / "orders.parquet", t / "exports", "b.parquet")
    return ["score", t / "exports", "--out", t / "exports" / "b.parquet"], ["b.parquet"]


OUT_IS_INPUT = [
    pytest.param(_score_out_is_orders, id="score-out-is-orders"),
    pytest.param(_score_rejects_is_orders, id="score-rejects-is-orders"),
    pytest.param(_score_edges_out_is_orders, id="score-edges-out-is-orders"),
    pytest.param(_score_rejects_is_out, id="score-rejects-is-out"),
    pytest.param(_score_edges_out_is_edges_in, id="score-edges-out-is-edges-in"),
    pytest.param(_score_edges_out_is_out, id="score-edges-out-is-out"),
    pytest.param(_score_rejects_is_edges_out, id="score-rejects-is-edges-out"),
    pytest.param(_score_out_is_customers, id="score-out-is-customers"),
    pytest.param(_score_out_is_events, id="score-out-is-events"),
    pytest.param(_run_out_dir_holds_orders, id="run-out-dir-holds-the-orders"),
    pytest.param(_run_out_dir_holds_customers, id="run-out-dir-holds-the-customers"),
    pytest.param(_run_rejects_is_orders, id="run-rejects-is-orders"),
    pytest.param(_segment_out_is_scores, id="segment-out-is-scores"),
    pytest.param(_segment_out_is_rules, id="segment-out-is-rules"),
    pytest.param(_relative_input_absolute_out, id="same-file-relative-vs-absolute"),
    pytest.param(_dotdot_spelling, id="same-file-via-dotdot"),
    pytest.param(_input_via_symlink, id="input-via-symlink-out-is-target"),
    pytest.param(_out_via_symlink, id="out-via-symlink-to-input"),
    pytest.param(_input_via_hard_link, id="same-file-via-hard-link"),
    pytest.param(_glob_input_matches_out, id="glob-input-matches-out"),
    pytest.param(_folder_input_holds_out, id="folder-input-holds-out"),
]


@pytest.mark.parametrize("build", OUT_IS_INPUT)
def test_output_that_is_an_input_is_refused(
    build: Callable[[Path, Path], tuple[list[Any], list[Fragment]]], data: Path, tmp_path: Path
) -> None:
    args, names = build(data, tmp_path)
    fails_cleanly([tmp_path, data], args, *names)


# ============================================================================ 2. special files


def test_out_onto_a_fifo_is_refused(data: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "scores.parquet"
    os.mkfifo(fifo)
    before = tree(tmp_path)
    # a real process with a timeout: an implementation that opens the FIFO would block forever
    proc = fastseg_proc("score", data / "orders.parquet", "--out", fifo, cwd=tmp_path, timeout=30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced"
    assert_proc_error(proc, "scores.parquet")
    assert_tree_unchanged(before, tmp_path)


@pytest.fixture
def dev_null_guard() -> Any:
    """Restore /dev/null if a failing case replaced it with a regular file (it did, as root)."""
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    yield
    st = os.lstat("/dev/null")
    if not stat.S_ISCHR(st.st_mode):
        os.remove("/dev/null")
        os.mknod("/dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod("/dev/null", 0o666)
        pytest.fail("--out /dev/null replaced /dev/null with a regular file (restored)")


def test_out_onto_dev_null_is_refused(data: Path, tmp_path: Path, dev_null_guard: None) -> None:
    before = tree(tmp_path)
    proc = fastseg_proc("score", data / "orders.parquet", "--out", "/dev/null", cwd=tmp_path)
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode), "/dev/null was replaced"
    assert_proc_error(proc, "/dev/null")
    assert_tree_unchanged(before, tmp_path)


def test_out_onto_a_character_device_is_refused(data: Path, tmp_path: Path) -> None:
    dev = tmp_path / "null.parquet"
    try:
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError as exc:
        pytest.skip(f"cannot create a device node here: {exc}")
    fails_cleanly([tmp_path], ["score", data / "orders.parquet", "--out", dev], "null.parquet")
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


# ============================================================================ 3. run into a folder


@pytest.mark.parametrize(
    "foreign",
    [
        pytest.param("notes.txt", id="dir-holds-notes-txt"),
        pytest.param("backup/orders_2025.parquet", id="dir-holds-a-foreign-parquet"),
    ],
)
def test_run_into_a_folder_holding_foreign_files_is_refused(
    foreign: str, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    write(out, foreign, "mine, not fastseg's\n")
    fails_cleanly([tmp_path], ["run", data / "orders.parquet", "--out", out], "results")


@pytest.mark.parametrize("earlier", ["empty-folder", "earlier-fastseg-run"])
def test_run_into_an_empty_or_earlier_results_folder_is_fine(
    earlier: str, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    out.mkdir()
    if earlier == "earlier-fastseg-run":
        r = invoke("run", data / "orders.parquet", "--out", out)
        assert r.exit_code == 0, r.output
    r = invoke("run", data / "orders.parquet", "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "scores.parquet").exists() and (out / "run.json").exists()


# ============================================================================ 4. failures keep outputs


def _strict_orders(t: Path) -> Path:
    rows = [f"{1 + i % 5},2026-01-{1 + i % 28:02d},{5 + i}" for i in range(20)]
    rows[11] = ",2026-01-12,3"  # one row lacks a customer id
    return csv(t, "strict.csv", *rows)


def test_strict_failure_keeps_earlier_score_outputs(tmp_path: Path) -> None:
    orders = _strict_orders(tmp_path)
    write(tmp_path, "edges.json", '{"earlier": true}\n')
    write(tmp_path, "rejects.csv", "earlier rejects\n")
    write(tmp_path, "scores.parquet", b"earlier scores")
    fails_cleanly(
        [tmp_path],
        [
            "score",
            orders,
            "--strict",
            "--edges-out",
            tmp_path / "edges.json",
            "--rejects",
            tmp_path / "rejects.csv",
            "--out",
            tmp_path / "scores.parquet",
        ],
        "strict.csv",
    )


def test_strict_failure_keeps_earlier_run_outputs(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    r = invoke("run", data / "orders.parquet", "--out", out)
    assert r.exit_code == 0, r.output
    orders = _strict_orders(tmp_path)
    write(tmp_path, "edges.json", '{"earlier": true}\n')
    write(tmp_path, "rejects.parquet", b"earlier rejects")
    fails_cleanly(
        [tmp_path],
        [
            "run",
            orders,
            "--strict",
            "--edges-out",
            tmp_path / "edges.json",
            "--rejects",
            tmp_path / "rejects.parquet",
            "--out",
            out,
        ],
        "strict.csv",
    )


def test_bad_value_late_in_the_file_keeps_earlier_outputs(tmp_path: Path) -> None:
    rows = [f"{1 + i % 5},2026-01-{1 + i % 28:02d},{5 + i}" for i in range(30)]
    rows[27] = "3,2026-01-28,five"
    orders = csv(tmp_path, "late.csv", *rows)
    write(tmp_path, "scores.csv", "earlier scores\n")
    write(tmp_path, "edges.json", '{"earlier": true}\n')
    fails_cleanly(
        [tmp_path],
        ["score", orders, "--edges-out", tmp_path / "edges.json", "--out", tmp_path / "scores.csv"],
        "late.csv",
        "amount",
        "five",
    )


def test_segment_failure_keeps_earlier_membership(data: Path, tmp_path: Path) -> None:
    write(tmp_path, "segments.parquet", b"earlier membership")
    rules = write(tmp_path, "rules.toml", seg_toml("broken", "frequency >= AND 3"))
    fails_cleanly(
        [tmp_path],
        ["segment", data / "scores.parquet", "--rules", rules, "--out", "segments.parquet"],
        "broken",
    )


# ============================================================================ 5. wrong results


@pytest.mark.parametrize(
    "unusable",
    [
        pytest.param(",2031-01-02,3", id="no-customer-id"),
        pytest.param("   ,2031-01-02,3", id="customer-id-of-spaces"),
        pytest.param("3,2031-01-02,", id="no-amount"),
        pytest.param("3,2031-01-02,NaN", id="nan-amount"),
    ],
)
def test_unusable_future_row_does_not_move_the_scoring_date(unusable: str, tmp_path: Path) -> None:
    orders = csv(tmp_path, "orders.csv", "1,2026-03-01,5", unusable, "2,2026-03-10,4")
    r = invoke("run", orders, "--out", tmp_path / "res")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "res" / "run.json").read_text())
    assert report["as_of"] == "2026-03-10"
    assert report["orders"]["rows_left_out"] == 1
    scores = pl.read_parquet(tmp_path / "res" / "scores.parquet").sort("customer_id")
    assert scores["recency_days"].to_list() == [9, 0]


def test_unusable_future_row_does_not_move_recency_in_score(tmp_path: Path) -> None:
    orders = csv(tmp_path, "orders.csv", "1,2026-03-01,5", ",2031-01-02,3", "2,2026-03-10,4")
    r = invoke("score", orders, "--out", tmp_path / "s.csv")
    assert r.exit_code == 0, r.output
    scores = pl.read_csv(tmp_path / "s.csv").sort("customer_id")
    assert scores["recency_days"].to_list() == [9, 0]
    assert scores["last_order_date"].cast(pl.String).to_list() == ["2026-03-01", "2026-03-10"]


@pytest.mark.parametrize("neighbour", [False, True], ids=["alone", "beside-orders1-csv"])
def test_literal_bracket_filename_is_that_file(neighbour: bool, tmp_path: Path) -> None:
    csv(tmp_path, "orders[1].csv", "1,2026-01-01,5", "2,2026-01-03,4")
    if neighbour:  # what the glob orders[1].csv would match instead
        csv(tmp_path, "orders1.csv", "9,2026-02-01,5")
    r = invoke("score", "orders[1].csv", "--out", tmp_path / "s.csv")
    assert r.exit_code == 0, (r.exit_code, r.stderr)
    assert sorted(pl.read_csv(tmp_path / "s.csv")["customer_id"].to_list()) == [1, 2]


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param(lambda p: [p.name, p.resolve()], id="relative-and-absolute"),
        pytest.param(lambda p: [p.name, f"./{p.name}"], id="name-and-dot-slash"),
        pytest.param(lambda p: [p.parent, p], id="folder-and-a-file-in-it"),
    ],
)
def test_same_file_given_twice_is_read_once(
    spelling: Callable[[Path], list[Any]], data: Path, tmp_path: Path
) -> None:
    o = cp(data / "orders.parquet", tmp_path / "in")
    os.chdir(tmp_path / "in")
    r = invoke("run", *spelling(o), "--out", tmp_path / "res")
    assert r.exit_code == 0, (r.exit_code, r.stderr)
    report = json.loads((tmp_path / "res" / "run.json").read_text())
    assert report["orders"]["rows_read"] == N_ORDERS


def test_csv_ids_are_trimmed_and_blank_ids_missing(tmp_path: Path) -> None:
    orders = csv(
        tmp_path, "ids.csv", " 123,2026-01-01,5", "123,2026-01-02,3", "123 ,2026-01-03,4",
        "   ,2026-01-03,4",
    )  # fmt: skip
    r = invoke("run", orders, "--out", tmp_path / "res")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "res" / "run.json").read_text())
    assert report["orders"]["left_out"]["missing_customer_id"] == 1
    scores = pl.read_parquet(tmp_path / "res" / "scores.parquet")
    assert scores.height == 1 and scores["frequency"].to_list() == [3]


def test_parquet_text_ids_are_trimmed_and_blank_ids_missing(tmp_path: Path) -> None:
    pl.DataFrame(
        {
            "customer_id": [" C1", "C1", "C1 ", "  ", "", "C2"],
            "order_ts": [dt.date(2026, 1, i + 1) for i in range(6)],
            "amount": [1.0, 2, 3, 4, 5, 6],
        }
    ).write_parquet(tmp_path / "text_ids.parquet")
    r = invoke("run", tmp_path / "text_ids.parquet", "--out", tmp_path / "res")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "res" / "run.json").read_text())
    assert report["orders"]["left_out"]["missing_customer_id"] == 2
    scores = pl.read_parquet(tmp_path / "res" / "scores.parquet").sort("customer_id")
    assert scores["customer_id"].to_list() == ["C1", "C2"]
    assert scores["frequency"].to_list() == [3, 1]


def test_semicolon_separated_csv_is_read(tmp_path: Path) -> None:
    orders = csv(
        tmp_path, "semi.csv", "1;2026-01-01;5.5", "2;2026-01-02;3", "1;2026-01-03;4",
        header="customer_id;order_ts;amount",
    )  # fmt: skip
    r = invoke("score", orders, "--out", tmp_path / "s.csv")
    assert r.exit_code == 0, (r.exit_code, r.stderr)
    s = pl.read_csv(tmp_path / "s.csv").sort("customer_id")
    assert s["customer_id"].to_list() == [1, 2]
    assert s["monetary"].to_list() == [9.5, 3.0]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)], ids=["022", "027"])
def test_output_files_follow_the_umask(umask: int, mode: int, tmp_path: Path) -> None:
    orders = csv(tmp_path, "orders.csv", "1,2026-01-01,5", ",2026-01-02,3", "2,2026-01-03,4")
    proc = fastseg_proc(
        "run",
        orders,
        "--out",
        tmp_path / "res",
        "--edges-out",
        tmp_path / "edges.json",
        "--rejects",
        tmp_path / "rejects.csv",
        cwd=tmp_path,
        preexec_fn=lambda: os.umask(umask) and None,
    )
    assert proc.returncode == 0, proc.stderr
    files = [
        *sorted((tmp_path / "res").iterdir()),
        tmp_path / "edges.json",
        tmp_path / "rejects.csv",
    ]
    got = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files}
    assert got == {f.name: oct(mode) for f in files}


# ============================================================================ 6-7. header, edges


def test_duplicate_csv_column_names(tmp_path: Path) -> None:
    orders = csv(
        tmp_path, "dup.csv", "1,2026-01-01,5,6", header="customer_id,order_ts,amount,amount"
    )
    fails_cleanly([tmp_path], ["score", orders, "--out", "s.parquet"], "dup.csv", "amount")


def test_edges_in_fitted_with_other_bins(data: Path, tmp_path: Path) -> None:
    line = fails_cleanly(
        [tmp_path, data],
        ["score", data / "orders.parquet", "--bins", "7", "--edges-in", data / "edges3.json",
         "--out", "s.parquet"],
        "edges3.json",
    )  # fmt: skip
    assert re.search(r"\b3\b", line) and re.search(r"\b7\b", line), line


def test_edges_in_with_method_thresholds(data: Path, tmp_path: Path) -> None:
    fails_cleanly(
        [tmp_path, data],
        ["score", data / "orders.parquet", "--method", "thresholds",
         "--thresholds", "r=30,90,180,365", "--thresholds", "f=2,3,5,10",
         "--thresholds", "m=50,100,250,1000", "--edges-in", data / "edges5.json",
         "--out", "s.parquet"],
        "edges",
        "thresholds",
        code=(1, 2),
    )  # fmt: skip


# ============================================================================ 8. rich markup


def test_markup_in_a_missing_file_name(tmp_path: Path) -> None:
    fails_cleanly([tmp_path], ["score", "[red]oops.csv", "--out", "s.parquet"], "[red]oops")


def test_markup_in_a_timestamp_value(tmp_path: Path) -> None:
    orders = csv(tmp_path, "mk.csv", "1,[/x],5", "2,[/x],4")
    fails_cleanly(
        [tmp_path], ["score", orders, "--out", "s.parquet"], "[/x]", "order_ts", absent=["lack"]
    )


def test_markup_in_a_col_value(data: Path, tmp_path: Path) -> None:
    fails_cleanly(
        [tmp_path],
        ["score", data / "orders.parquet", "--col", "order_ts=[bold]x", "--out", "s.parquet"],
        "[bold]x",
    )


def test_markup_in_as_of(data: Path, tmp_path: Path) -> None:
    fails_cleanly(
        [tmp_path],
        ["score", data / "orders.parquet", "--as-of", "[/]", "--out", "s.parquet"],
        "[/]",
        ("--as-of", "as_of", "as-of"),
    )


@pytest.mark.parametrize("command", ["segments-check", "run"])
def test_markup_in_a_description_with_a_syntax_error(
    command: str, data: Path, tmp_path: Path
) -> None:
    rules = write(
        tmp_path, "rules.toml", seg_toml("markup_desc", "frequency >= AND 3", description="[/x]")
    )
    if command == "run":
        args = ["run", data / "orders.parquet", "--rules", rules, "--out", tmp_path / "res"]
    else:
        args = ["segments", "check", rules]
    fails_cleanly([tmp_path], args, "markup_desc")


def test_markup_in_a_segment_name(tmp_path: Path) -> None:
    rules = write(tmp_path, "rules.toml", seg_toml("[b]x", "frequency >= 3"))
    fails_cleanly([tmp_path], ["segments", "check", rules], "[b]x")


def test_markup_in_a_rule_string_with_an_error(tmp_path: Path) -> None:
    rules = write(tmp_path, "rules.toml", seg_toml("tagged", "channel = '[red]' AND"))
    fails_cleanly([tmp_path], ["segments", "check", rules], "tagged", "[red]")


def test_markup_in_segments_show_name() -> None:
    assert_error(invoke("segments", "show", "[b]nosuch"), "[b]nosuch")


def test_markup_in_a_column_header(tmp_path: Path) -> None:
    orders = csv(tmp_path, "hdr.csv", "1,2026-01-01,5", header="customer_id,order_ts,[bold]Total")
    fails_cleanly([tmp_path], ["score", orders, "--out", "s.parquet"], "[bold]Total", "amount")


# ============================================================================ 9. names of output columns


CLASHES = {
    "segment": seg_toml("customer_id", "frequency >= 3"),
    "group": seg_toml("big", "frequency >= 3")
    + '[[group]]\nname = "customer_id"\nsegments = ["big"]\n',
}


@pytest.mark.parametrize("kind", ["segment", "group"])
def test_catalog_name_clashing_with_an_output_column_check(kind: str, tmp_path: Path) -> None:
    rules = write(tmp_path, "rules.toml", CLASHES[kind])
    fails_cleanly([tmp_path], ["segments", "check", rules], "customer_id")


@pytest.mark.parametrize("kind", ["segment", "group"])
def test_catalog_name_clashing_with_an_output_column_run(
    kind: str, data: Path, tmp_path: Path
) -> None:
    rules = write(tmp_path, "rules.toml", CLASHES[kind])
    out = tmp_path / "res"
    fails_cleanly([tmp_path], ["run", data / "orders.parquet", "--rules", rules, "--out", out],
                  "customer_id")  # fmt: skip
    assert not out.exists()


# ============================================================================ 10. write failures


@pytest.fixture(scope="module")
def big_orders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 customers: a scores file of about 40 KB, over a 20,000-byte file-size limit."""
    d = tmp_path_factory.mktemp("big")
    n = 3000
    pl.DataFrame(
        {
            "customer_id": list(range(1, n + 1)),
            "order_ts": [dt.date(2026, 1, 1) + dt.timedelta(days=i % 300) for i in range(n)],
            "amount": [1.0 + i * 0.37 for i in range(n)],
        }
    ).write_parquet(d / "big.parquet")
    # warm the kernels in this process (compiled once, cached) so the limited child loads them
    r = runner.invoke(app, ["run", str(d / "big.parquet"), "--out", str(d / "warm")])
    assert r.exit_code == 0, r.output
    return d / "big.parquet"


def _fsize_limit() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))


def test_file_size_limit_names_the_output_score(big_orders: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "scores.parquet"
    write(tmp_path, "out/scores.parquet", b"an earlier, small scores file")
    before = tree(tmp_path)
    proc = fastseg_proc("score", big_orders, "--out", out, cwd=tmp_path, preexec_fn=_fsize_limit)
    line = assert_proc_error(proc, str(out))
    assert not HIDDEN_TMP.search(line), line
    assert_tree_unchanged(before, tmp_path)


def test_file_size_limit_names_the_output_run(big_orders: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    r = invoke("run", tmp_path_orders(tmp_path), "--out", out)  # an earlier, small run
    assert r.exit_code == 0, r.output
    before = tree(tmp_path)
    proc = fastseg_proc("run", big_orders, "--out", out, cwd=tmp_path, preexec_fn=_fsize_limit)
    line = assert_proc_error(proc, str(out))
    assert not HIDDEN_TMP.search(line), line
    assert_tree_unchanged(before, tmp_path)


def tmp_path_orders(t: Path) -> Path:
    return csv(t, "small.csv", "1,2026-01-01,5", "2,2026-01-02,4", "1,2026-01-03,3")


def _drop_dac_capabilities() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone after exec
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@pytest.fixture(scope="module")
def obey_permissions(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], None] | None:
    """A preexec_fn making a root child obey file permissions (None when not root)."""
    if os.geteuid() != 0:
        return None
    probe = tmp_path_factory.mktemp("perm-probe")
    locked = probe / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", f"open({str(locked / 'x')!r}, 'w')"],
            preexec_fn=_drop_dac_capabilities,  # noqa: PLW1509
            capture_output=True,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot drop capabilities here: {exc}")
    finally:
        locked.chmod(0o755)
    if proc.returncode == 0:
        pytest.skip("root still ignores file permissions after dropping capabilities")
    return _drop_dac_capabilities


def test_permission_denied_names_the_output_score(
    data: Path, tmp_path: Path, obey_permissions: Callable[[], None] | None
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    out = locked / "scores.parquet"
    locked.chmod(0o555)
    try:
        before = tree(tmp_path)
        proc = fastseg_proc(
            "score", data / "orders.parquet", "--out", out, cwd=tmp_path,
            preexec_fn=obey_permissions,
        )  # fmt: skip
        line = assert_proc_error(proc, str(out))
        assert not HIDDEN_TMP.search(line), line
        assert_tree_unchanged(before, tmp_path)
    finally:
        locked.chmod(0o755)


def test_permission_denied_names_the_output_run(
    data: Path, tmp_path: Path, obey_permissions: Callable[[], None] | None
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    out = locked / "results"
    locked.chmod(0o555)
    try:
        before = tree(tmp_path)
        proc = fastseg_proc(
            "run", data / "orders.parquet", "--out", out, cwd=tmp_path,
            preexec_fn=obey_permissions,
        )  # fmt: skip
        line = assert_proc_error(proc, str(out))
        assert not HIDDEN_TMP.search(line), line
        assert_tree_unchanged(before, tmp_path)
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("which", ["orders", "rules"])
def test_unreadable_input_is_named(
    which: str, data: Path, tmp_path: Path, obey_permissions: Callable[[], None] | None
) -> None:
    orders = cp(data / "orders.csv", tmp_path)
    rules = write(tmp_path, "rules.toml", seg_toml("big", "monetary > 10"))
    target = orders if which == "orders" else rules
    target.chmod(0o000)
    try:
        before = tree(tmp_path)
        proc = fastseg_proc(
            "run", orders, "--rules", rules, "--out", tmp_path / "res", cwd=tmp_path,
            preexec_fn=obey_permissions,
        )  # fmt: skip
        # orders: a data error (1); rules: the option's path check, a usage error (2)
        assert_proc_error(proc, target.name, code=(1, 2))
        assert_tree_unchanged(before, tmp_path)
    finally:
        target.chmod(0o644)


# ============================================================================ 11. --windows


@pytest.mark.parametrize("value", ["99999999999", "0", "-5", "abc"])
def test_bad_windows_is_a_usage_error(value: str, data: Path, tmp_path: Path) -> None:
    fails_cleanly(
        [tmp_path],
        ["score", data / "orders.parquet", f"--windows={value}", "--out", "s.parquet"],
        "--windows",
        code=2,
    )


# ============================================================================ 12. API


@pytest.mark.parametrize("call", ["score", "run"])
def test_api_mixed_int_and_text_ids_in_pandas(call: str) -> None:
    pd = pytest.importorskip("pandas")
    import fastseg
    from fastseg.errors import FastsegError

    frame = pd.DataFrame(
        {
            "customer_id": pd.Series([1, "a", 2, "b"], dtype=object),
            "order_ts": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]),
            "amount": [1.0, 2.0, 3.0, 4.0],
        }
    )
    with pytest.raises(FastsegError) as info:
        getattr(fastseg, call)(frame)
    assert "customer_id" in str(info.value)
    assert len(str(info.value).strip().splitlines()) == 1


# ============================================================================ 13. unreadable timestamps


def test_every_timestamp_a_us_date(tmp_path: Path) -> None:
    orders = csv(tmp_path, "us.csv", "1,12/31/2025,5", "2,11/30/2025,3", "3,01/15/2026,4")
    fails_cleanly(
        [tmp_path],
        ["score", orders, "--out", "s.parquet"],
        "us.csv",
        "order_ts",
        ("12/31/2025", "11/30/2025", "01/15/2026"),
        ("2026-01-31", "ISO", "YYYY-MM-DD"),
        absent=["lack"],
    )


def test_every_timestamp_a_us_date_parquet_text(tmp_path: Path) -> None:
    pl.DataFrame(
        {"customer_id": [1, 2], "order_ts": ["12/31/2025", "11/30/2025"], "amount": [5.0, 3.0]}
    ).write_parquet(tmp_path / "us.parquet")
    fails_cleanly(
        [tmp_path],
        ["score", tmp_path / "us.parquet", "--out", "s.parquet"],
        "us.parquet",
        "order_ts",
        ("12/31/2025", "11/30/2025"),
        ("2026-01-31", "ISO", "YYYY-MM-DD"),
        absent=["lack"],
    )


@pytest.mark.parametrize(
    ("source", "column"),
    [
        pytest.param("orders.csv", "customer_id", id="csv-integer-ids-as-dates"),
        pytest.param("orders.parquet", "customer_id", id="parquet-integer-ids-as-dates"),
        pytest.param("orders.csv", "amount", id="csv-amounts-as-dates"),
    ],
)
def test_col_order_ts_mapped_to_a_non_date_column(
    source: str, column: str, data: Path, tmp_path: Path
) -> None:
    fails_cleanly(
        [tmp_path, data],
        ["score", data / source, "--col", f"order_ts={column}", "--out", "s.parquet"],
        column,
        "order_ts",
        "date",
        absent=["lack"],
    )


# ============================================================================ 14. --col suggestions


@pytest.mark.parametrize(
    "cols",
    [
        pytest.param([], id="nothing-mapped"),
        pytest.param(["customer_id=cust"], id="customer-mapped"),
        pytest.param(["customer_id=cust", "order_ts=ts"], id="customer-and-ts-mapped"),
    ],
)
def test_col_suggestions_never_of_the_wrong_meaning(cols: list[str], tmp_path: Path) -> None:
    orders = csv(
        tmp_path, "sug.csv", "1,10,2026-01-01,0.5", "2,11,2026-01-02,0",
        header="cust,order_id,ts,discount",
    )  # fmt: skip
    args: list[Any] = ["score", orders, "--out", "s.parquet"]
    for c in cols:
        args += ["--col", c]
    fails_cleanly(
        [tmp_path],
        args,
        "sug.csv",
        "amount",
        absent=["--col amount=discount", "--col order_ts=order_id", "--col customer_id=order_id"],
    )


def test_col_suggestion_not_a_column_with_another_canonical_name(tmp_path: Path) -> None:
    orders = csv(tmp_path, "blank.csv", "1,2026-01-01,5", header="customer_id,,amount")
    fails_cleanly(
        [tmp_path],
        ["score", orders, "--out", "s.parquet"],
        "blank.csv",
        "order_ts",
        absent=["--col order_ts=customer_id", "--col order_ts=amount"],
    )


# ============================================================================ 15. CSV line numbers


def test_ragged_csv_row_names_the_line(tmp_path: Path) -> None:
    orders = csv(
        tmp_path, "ragged.csv", "1,2026-01-01,5", "2,2026-01-02,3", "3,2026-01-03,4",
        "4,2026-01-04,4,99", "5,2026-01-05,1",
    )  # fmt: skip
    fails_cleanly([tmp_path], ["score", orders, "--out", "s.parquet"], "ragged.csv", "line 5")


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    orders = write(
        tmp_path,
        "latin.csv",
        b"customer_id,order_ts,amount\n1,2026-01-01,5\n\xff\xfe2,2026-01-02,3\n3,2026-01-03,4\n",
    )
    fails_cleanly([tmp_path], ["score", orders, "--out", "s.parquet"], "latin.csv", "line 3")


def test_unterminated_quote_names_the_line(tmp_path: Path) -> None:
    orders = csv(tmp_path, "quote.csv", "1,2026-01-01,5", '"2,2026-01-02,3', "3,2026-01-03,4")
    fails_cleanly([tmp_path], ["score", orders, "--out", "s.parquet"], "quote.csv", "line 3")


# ============================================================================ 16. overflow


def test_overflowing_sum(tmp_path: Path) -> None:
    orders = csv(
        tmp_path, "overflow.csv", "1,2026-01-01,1e308", "1,2026-01-02,1e308", "2,2026-01-02,3"
    )
    fails_cleanly([tmp_path], ["score", orders, "--out", "s.parquet"], "overflow.csv", "amount")


# ============================================================================ 17. long rules


@pytest.fixture
def long_rule(tmp_path: Path) -> Path:
    parts = [f"frequency >= {i}" for i in range(1000)]
    parts[500] = "frequency >>= 500"
    rule = " or ".join(parts)
    assert 19_000 < len(rule) < 21_000
    return write(tmp_path, "long.toml", seg_toml("longrule", rule))


def _long_rule_line_ok(line: str) -> None:
    assert len(line) < 400, (len(line), line[:200])
    assert "frequency >" in line and ">= 500" in line, line  # the neighbourhood of the error
    assert "frequency >= 0 or frequency >= 1 " not in line  # not the rule from its start


@pytest.mark.parametrize("command", ["segments-check", "run"])
def test_error_in_a_20kb_rule_is_one_short_line(
    command: str, long_rule: Path, data: Path, tmp_path: Path
) -> None:
    if command == "run":
        args = ["run", data / "orders.parquet", "--rules", long_rule, "--out", tmp_path / "res"]
    else:
        args = ["segments", "check", long_rule]
    _long_rule_line_ok(fails_cleanly([tmp_path], args, "longrule"))


def test_error_in_a_20kb_rule_on_a_narrow_terminal(long_rule: Path, tmp_path: Path) -> None:
    before = tree(tmp_path)
    proc = fastseg_proc("segments", "check", long_rule, cwd=tmp_path, env={"COLUMNS": "60"})
    _long_rule_line_ok(assert_proc_error(proc, "longrule"))
    assert_tree_unchanged(before, tmp_path)


def test_long_message_on_a_narrow_terminal(tmp_path: Path) -> None:
    header = ",".join(f"column_number_{i}" for i in range(40))
    orders = csv(tmp_path, "wide.csv", ",".join("1" * 40), header=header)
    proc = fastseg_proc("score", orders, "--out", "s.parquet", cwd=tmp_path, env={"COLUMNS": "60"})
    assert_proc_error(proc, "wide.csv", "customer_id")


# ============================================================================ real processes


@pytest.mark.parametrize(
    ("args", "fragments", "code"),
    [
        pytest.param(["score", "nope.parquet", "--out", "s.parquet"], ["nope.parquet"], 1,
                     id="missing-file-exit-1"),
        pytest.param(["score", "ORDERS", "--windows", "abc", "--out", "s.parquet"], ["--windows"], 2,
                     id="bad-option-value-exit-2"),
        pytest.param(["score", "ORDERS", "--as-of", "[/]", "--out", "s.parquet"], ["[/]"], 1,
                     id="markup-in-as-of-exit-1"),
        pytest.param(["segment", "ORDERS", "--layout", "diagonal", "--out", "s.parquet"],
                     ["--layout", "diagonal"], 2, id="bad-choice-exit-2"),
    ],
)  # fmt: skip
def test_real_process_one_line(
    args: list[str], fragments: list[str], code: int, data: Path, tmp_path: Path
) -> None:
    argv = [data / "orders.parquet" if a == "ORDERS" else a for a in args]
    before = tree(tmp_path)
    assert_proc_error(fastseg_proc(*argv, cwd=tmp_path), *fragments, code=code)
    assert_tree_unchanged(before, tmp_path)


# ============================================================================ more hostile inputs


def _garbage() -> bytes:
    import random

    rnd = random.Random(7)
    return bytes(rnd.randrange(256) for _ in range(3000))


def _truncated(src: Path, keep: float) -> bytes:
    raw = src.read_bytes()
    return raw[: int(len(raw) * keep)]


def _gz(text: str) -> bytes:
    import gzip

    return gzip.compress(text.encode())


Case = tuple[list[Any], list[Fragment], int | tuple[int, ...], list[str], int | None]


def _c(
    args: list[Any],
    *fragments: Fragment,
    code: int | tuple[int, ...] = 1,
    absent: Sequence[str] = (),
    max_len: int | None = None,
) -> Case:
    return args, list(fragments), code, list(absent), max_len


def _scores_without_id(d: Path, t: Path) -> Case:
    pl.read_parquet(d / "scores.parquet").drop("customer_id").write_parquet(t / "noid.parquet")
    return _c(["segment", t / "noid.parquet", "--out", "m.parquet"], "noid.parquet", "customer_id")


def _dangling_symlink(d: Path, t: Path) -> Case:
    (t / "dangling.parquet").symlink_to(t / "nowhere.parquet")
    return _c(["score", t / "dangling.parquet", "--out", "s.parquet"], "dangling.parquet")


THRESH = [
    "--method",
    "thresholds",
    "--thresholds",
    "f=2,3,5,10",
    "--thresholds",
    "m=50,100,250,1000",
]


# Hostile inputs found by trying the CLI by hand. Each builder writes its files into the case's
# folder and returns (args, fragments the line must name, exit status, fragments it must not hold,
# maximum length of the line).
HOSTILE: list[Any] = [
    pytest.param(
        lambda d, t: _c(["score", write(t, "empty.csv", ""), "--out", "s.parquet"], "empty.csv"),
        id="csv-zero-bytes",
    ),
    pytest.param(
        lambda d, t: _c(["score", csv(t, "header_only.csv"), "--out", "s.parquet"],
                        "header_only.csv", "no rows"),
        id="csv-header-only",
    ),
    pytest.param(
        lambda d, t: _c(["score", write(t, "empty.parquet", b""), "--out", "s.parquet"],
                        "empty.parquet"),
        id="parquet-zero-bytes",
    ),
    pytest.param(
        lambda d, t: _c(["score", write(t, "cut.parquet", _truncated(d / "orders.parquet", 0.6)),
                         "--out", "s.parquet"], "cut.parquet"),
        id="parquet-truncated",
    ),
    pytest.param(
        lambda d, t: _c(["score", write(t, "garbage.csv", _garbage()), "--out", "s.parquet"],
                        "garbage.csv", absent=["\ufffd"], max_len=500),
        id="binary-garbage-named-csv",
    ),
    pytest.param(
        lambda d, t: _c(["score", write(t, "nodata/readme.md", "# hi\n").parent, "--out",
                         "s.parquet"], "nodata"),
        id="folder-without-data-files",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--customers", t / "no_customers.parquet",
                         "--out", "s.parquet"], "no_customers.parquet"),
        id="missing-customers-file",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--events", t / "no_events.parquet",
                         "--out", "s.parquet"], "no_events.parquet"),
        id="missing-events-file",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--as-of", "2026-13-01", "--out",
                         "s.parquet"], "2026-13-01"),
        id="as-of-month-13",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", *THRESH, "--thresholds", "r30,90",
                         "--out", "s.parquet"], "r30,90"),
        id="thresholds-without-equals",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", *THRESH, "--thresholds",
                         "r=30,abc,180,365", "--out", "s.parquet"], "abc"),
        id="thresholds-not-a-number",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", *THRESH, "--thresholds",
                         "r=365,180,90,30", "--out", "s.parquet"], "365,180,90,30"),
        id="thresholds-decreasing",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", *THRESH, "--thresholds", "r=30,90",
                         "--out", "s.parquet"], "r", "4"),
        id="thresholds-too-few-for-bins",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--col", "total=amount", "--out",
                         "s.parquet"], "total"),
        id="col-unknown-canonical",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--col", "amount=Total", "--out",
                         "s.parquet"], "Total", "orders.parquet"),
        id="col-mapped-to-a-missing-column",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--col", "customer_id=", "--out",
                         "s.parquet"], "customer_id="),
        id="col-with-empty-theirs",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--col", "amount=order_id", "--col",
                         "amount=amount", "--out", "s.parquet"], "amount"),
        id="col-same-canonical-twice",
    ),
    pytest.param(
        lambda d, t: _c(["run", d / "orders.parquet", "--rules",
                         write(t, "bad.toml", "this is [not toml\n"), "--out", t / "res"],
                        "bad.toml"),
        id="rules-not-toml-run",
    ),
    pytest.param(
        lambda d, t: _c(["segments", "check", write(t, "bad.toml", "this is [not toml\n")],
                        "bad.toml"),
        id="rules-not-toml-check",
    ),
    pytest.param(
        lambda d, t: _c(["run", d / "orders.parquet", "--rules", t / "missing.toml", "--out",
                         t / "res"], "missing.toml"),
        id="rules-file-missing",
    ),
    pytest.param(
        lambda d, t: _c(["segments", "check",
                         write(t, "ref.toml", seg_toml("alpha", "segment(nosuch)"))],
                        "alpha", "nosuch"),
        id="rules-unknown-segment-reference-check",
    ),
    pytest.param(
        lambda d, t: _c(["run", d / "orders.parquet", "--rules",
                         write(t, "ref.toml", seg_toml("alpha", "segment(nosuch)")),
                         "--out", t / "res"], "alpha", "nosuch"),
        id="rules-unknown-segment-reference-run",
    ),
    pytest.param(
        lambda d, t: _c(["segments", "check", write(t, "cyc.toml", seg_toml("alpha", "segment(beta)")
                         + seg_toml("beta", "segment(alpha)"))], "alpha", "beta"),
        id="rules-cycle-check",
    ),
    pytest.param(
        lambda d, t: _c(["run", d / "orders.parquet", "--rules",
                         write(t, "cyc.toml", seg_toml("alpha", "segment(beta)")
                               + seg_toml("beta", "segment(alpha)")),
                         "--out", t / "res"], "alpha", "beta"),
        id="rules-cycle-run",
    ),
    pytest.param(
        lambda d, t: _c(["segments", "check", write(t, "key.toml", '[[segment]]\nname = "alpha"\n'
                         'rulez = "frequency > 1"\n')], "alpha", "rulez"),
        id="rules-unknown-key",
    ),
    pytest.param(
        lambda d, t: _c(["segments", "check", write(t, "latin.toml", b'[[segment]]\nname = "a"\n'
                         b'description = "\xe9t\xe9"\nrule = "frequency > 1"\n')], "latin.toml"),
        id="rules-invalid-utf8",
    ),
    pytest.param(
        lambda d, t: _c(["segments", "check", write(t, "two.toml", seg_toml("alpha", "frequncy > 1")
                         + seg_toml("beta", "monetary >"))], "2 problems", "alpha", "beta"),
        # every problem is listed on stdout; stderr says how many and where
        id="rules-two-problems-one-line",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--customers",
                         csv(t, "profiles.csv", "100,US", header="cid,country"), "--out",
                         "s.parquet"], "profiles.csv", "customer_id",
                        absent=["--col customer_id=cid"]),
        id="profiles-without-customer-id",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--events",
                         csv(t, "events.csv", "100,yesterday,email_open", "101,2026-01-01,email_open",
                             header="customer_id,event_ts,event"), "--out", "s.parquet"],
                        "events.csv", "event_ts", "yesterday"),
        id="events-bad-timestamp",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--events",
                         csv(t, "events.csv", "100,2026-01-01", header="customer_id,event_ts"),
                         "--out", "s.parquet"], "events.csv", "event",
                        absent=["--col event=event_ts"]),
        id="events-without-event-column",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--events",
                         csv(t, "events.csv", "C1,2026-01-01,email_open",
                             header="customer_id,event_ts,event"), "--out", "s.parquet"],
                        "events.csv", ("customer_id", "customer id")),
        id="events-text-ids-for-integer-orders",
    ),
    pytest.param(_scores_without_id, id="segment-scores-without-customer-id"),
    pytest.param(
        lambda d, t: _c(["segment", write(t, "junk.parquet", b"not parquet at all"), "--out",
                         "m.parquet"], "junk.parquet"),
        id="segment-scores-not-parquet",
    ),
    pytest.param(
        lambda d, t: _c(["segment", t / "no_scores.parquet", "--out", "m.parquet"],
                        "no_scores.parquet"),
        id="segment-scores-missing",
    ),
    pytest.param(
        lambda d, t: _c(["segment", d / "scores.parquet", "--as-of", "2026-99-01", "--out",
                         "m.parquet"], "2026-99-01"),
        id="segment-as-of-invalid",
    ),
    pytest.param(
        lambda d, t: _c(["score", write(t, "cut.csv.gz", _gz((d / "orders.csv").read_text())[:300]),
                         "--out", "s.parquet"], "cut.csv.gz"),
        id="gzip-csv-truncated",
    ),
    pytest.param(
        lambda d, t: _c(["score", "missing\nfile.csv", "--out", "s.parquet"], "missing",
                        "file.csv"),
        id="missing-path-with-a-newline",
    ),
    pytest.param(
        lambda d, t: _c(["score", "commandes été 2026.csv", "--out", "s.parquet"],
                        "commandes été 2026.csv"),
        id="missing-path-with-spaces-and-unicode",
    ),
    pytest.param(
        lambda d, t: _c(["score", csv(t, "nan_inf.csv", "1,2026-01-01,NaN", "2,2026-01-02,3",
                                      "3,2026-01-02,inf"), "--strict", "--out", "s.parquet"],
                        "nan_inf.csv", "missing_amount"),
        id="nan-and-inf-amounts-strict",
    ),
    pytest.param(
        lambda d, t: _c(["score", csv(t, "refunds.csv", "1,2026-01-01,-5", "2,2026-01-02,-3"),
                         "--out", "s.parquet"], "refunds.csv"),
        id="only-refunds",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--edges-in", t / "no_edges.json",
                         "--out", "s.parquet"], "no_edges.json"),
        id="edges-in-missing",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--edges-in",
                         write(t, "bad_edges.json", "{not json"), "--out", "s.parquet"],
                        "bad_edges.json"),
        id="edges-in-not-json",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--edges-in",
                         write(t, "other.json", '{"a": 1}'), "--out", "s.parquet"], "other.json"),
        id="edges-in-not-a-scorer",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--format", "xml", "--out", "s.parquet"],
                        "--format", "xml", code=2),
        id="format-unknown",
    ),
    pytest.param(
        lambda d, t: _c(["segment", d / "scores.parquet", "--layout", "foo", "--out",
                         "m.parquet"], "--layout", "foo", code=2),
        id="layout-unknown",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--bins", "abc", "--out", "s.parquet"],
                        "--bins", "abc", code=2),
        id="bins-not-a-number",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--bins", "11", "--out", "s.parquet"],
                        "--bins", "11", code=2),
        id="bins-out-of-range",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--method", "median", "--out",
                         "s.parquet"], "--method", "median", code=2),
        id="method-unknown",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--method", "thresholds", "--out",
                         "s.parquet"], "--thresholds", code=2),
        id="method-thresholds-without-thresholds",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--unknown-option", "--out",
                         "s.parquet"], "--unknown-option", code=2),
        id="unknown-option",
    ),
    pytest.param(
        lambda d, t: _c(["score", "--out", "s.parquet"], "ORDERS", code=2),
        id="orders-argument-missing",
    ),
    pytest.param(
        lambda d, t: _c(["run", d / "orders.parquet", "--out", write(t, "afile.txt", "keep\n")],
                        "afile.txt"),
        id="run-out-is-an-existing-file",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", "--out",
                         write(t, "adir/keep.txt", "keep\n").parent], "adir"),
        id="score-out-is-an-existing-folder",
    ),
    pytest.param(
        lambda d, t: _c(["score", d / "orders.parquet", d / "orders.csv", "--out", "s.parquet"],
                        "orders.csv"),
        id="mixed-formats",
    ),
    pytest.param(
        lambda d, t: _c(["score", write(t, "orders.xlsx", "customer_id,order_ts,amount\n"),
                         "--out", "s.parquet"], "orders.xlsx"),
        id="unknown-format",
    ),
    pytest.param(
        lambda d, t: _c(["score", str(t / "nomatch*.parquet"), "--out", "s.parquet"],
                        "nomatch*.parquet"),
        id="glob-matches-nothing",
    ),
    pytest.param(_dangling_symlink, id="dangling-symlink"),
    pytest.param(
        lambda d, t: _c(["score", csv(t, "feb30.csv", "1,2026-01-01,5", "2,2026-02-30,3"),
                         "--out", "s.parquet"], "feb30.csv", "order_ts", "2026-02-30"),
        id="impossible-date",
    ),
    pytest.param(
        lambda d, t: _c(["score", csv(t, "comma.csv", '1,2026-01-01,"1,5"'), "--out",
                         "s.parquet"], "comma.csv", "amount", "1,5"),
        id="decimal-comma-amount",
    ),
    pytest.param(
        lambda d, t: _c(["score", write(t, "nul.csv", b"customer_id,order_ts,amount\n"
                                        b"1,2026-01-01,5\n2,2026-01\x00-02,3\n"),
                         "--out", "s.parquet"], "nul.csv", "order_ts"),
        id="nul-byte-in-a-value",
    ),
]  # fmt: skip


@pytest.mark.parametrize("build", HOSTILE)
def test_hostile_input(build: Callable[[Path, Path], Case], data: Path, tmp_path: Path) -> None:
    args, fragments, code, absent, max_len = build(data, tmp_path)
    fails_cleanly([tmp_path, data], args, *fragments, code=code, absent=absent, max_len=max_len)


def test_a_repeated_profile_is_counted_not_silently_dropped(data: Path, tmp_path: Path) -> None:
    """Documented: a customer id on two profile rows keeps the first, the other is counted as
    ``duplicate_customer_id`` and shown in the summary."""
    profiles = csv(tmp_path, "profiles.csv", "100,US", "100,DE", header="customer_id,country")
    result = invoke("score", data / "orders.parquet", "--customers", profiles,
                    "--out", tmp_path / "s.parquet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "duplicate_customer_id: 1" in result.stdout
