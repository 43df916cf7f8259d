"""fastseg.outputs: targets checked before work, staged, committed as one set; leftovers cleaned."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from fastseg import outputs as O
from fastseg.errors import OutputError
from fastseg.outputs import OutputSet


def _hidden(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def _run_folder(path: Path, files: dict[str, str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    (path / "run.json").write_text(json.dumps({"as_of": "2026-01-01", "tag": files.get("tag")}))


def test_file_committed_only_on_commit(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with OutputSet() as outs:
        t = outs.add_file(target, "--out")
        outs.write_text(t, "new")
        assert target.read_text() == "old"  # staged, not yet in place
    assert target.read_text() == "old" and _hidden(tmp_path) == []  # no commit: aborted
    with OutputSet() as outs:
        outs.write_text(outs.add_file(target), "new")
        outs.commit()
    assert target.read_text() == "new" and _hidden(tmp_path) == []


def test_an_exception_leaves_the_old_set(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run_folder(out, {"scores.parquet": "A", "groups.parquet": "A"})
    side = tmp_path / "edges.json"
    side.write_text("A")
    with pytest.raises(RuntimeError), OutputSet() as outs:
        folder = outs.add_folder(out)
        edges = outs.add_file(side, "--edges-out")
        outs.write_text(folder / "scores.parquet", "B")
        outs.write_text(edges, "B")
        raise RuntimeError("boom")
    assert (out / "scores.parquet").read_text() == "A" and side.read_text() == "A"
    assert _hidden(tmp_path) == [] and _hidden(out) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_folder_swapped_whole_no_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr(O, "_exchange", lambda a, b: False)
    out = tmp_path / "run"
    _run_folder(out, {"scores.parquet": "A", "groups.parquet": "A"})
    with OutputSet() as outs:
        folder = outs.add_folder(out)
        outs.write_text(folder / "scores.parquet", "B")
        outs.write_text(folder / "run.json", json.dumps({"as_of": "2026-02-01"}))
        outs.commit()
    assert sorted(os.listdir(out)) == ["run.json", "scores.parquet"]  # no stale groups.parquet
    assert (out / "scores.parquet").read_text() == "B" and _hidden(tmp_path) == []


def test_half_done_swap_is_undone_by_the_next_run(tmp_path: Path) -> None:
    """Killed between the two renames of the fallback: the folder is missing, the complete old
    set sits in a hidden ``.previous`` folder of a dead process; the next run puts it back."""
    out = tmp_path / "run"
    dead = 2**22 + 12345  # above pid_max's default: no such process
    host = O._host()
    previous = tmp_path / f".run.fastseg-{host}-{dead}-abc123.previous"
    _run_folder(previous, {"scores.parquet": "A"})
    staging = tmp_path / f".run.fastseg-{host}-{dead}-abc123.staging"
    _run_folder(staging, {"scores.parquet": "half"})
    with OutputSet() as outs:
        outs.add_folder(out)
        assert (out / "scores.parquet").read_text() == "A"  # restored before anything else
        assert not staging.exists()
    assert (out / "scores.parquet").read_text() == "A" and _hidden(tmp_path) == []


def test_leftovers_of_dead_processes_are_removed_live_ones_and_users_kept(tmp_path: Path) -> None:
    target = tmp_path / "scores.parquet"
    dead, host = 2**22 + 54321, O._host()
    stale = tmp_path / f".scores.parquet.fastseg-{host}-{dead}-0a1b.tmp"
    other_target = tmp_path / f".res-2026-01-09.fastseg-{host}-{dead}-0a1b.staging"
    other_host = tmp_path / f".scores.parquet.fastseg-0badc0de-{dead}-0a1b.tmp"
    live = tmp_path / f".scores.parquet.fastseg-{host}-{os.getppid()}-0a1b.tmp"
    users = [tmp_path / ".scores.parquet.k3j_x9a2.tmp", tmp_path / ".scores.parquet.1.tmp"]
    user_dir = tmp_path / ".scores.parquet.20240101.tmp"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("mine")
    other_target.mkdir()
    for p in (stale, other_host, live, *users):
        p.write_text("x")
    with OutputSet() as outs:
        outs.add_file(target)
    assert not stale.exists() and not other_target.exists()  # dead, on this machine
    assert live.exists() and other_host.exists()  # alive, or another machine's
    assert all(p.exists() for p in users) and (user_dir / "notes.txt").exists()  # not ours


def test_inputs_never_overwritten(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    orders = data / "orders.parquet"
    orders.write_text("orders")
    link = tmp_path / "link.parquet"
    link.symlink_to(orders)
    hard = tmp_path / "hard.parquet"
    os.link(orders, hard)
    cases = [
        (orders, "is also an input"),
        (link, "is also an input"),
        (hard, "is also an input"),
        (Path(os.path.relpath(orders)), "is also an input"),
        (data / "scores.parquet", "inside the input folder"),
    ]
    for target, fragment in cases:
        with pytest.raises(OutputError, match=fragment), OutputSet([data, orders]) as outs:
            outs.add_file(target, "--out")
    with pytest.raises(OutputError, match="holds the input"), OutputSet([orders]) as outs:
        outs.add_folder(tmp_path, "--out")
    assert orders.read_text() == "orders"


def test_two_targets_one_path(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="--rejects and --out both name"), OutputSet() as outs:
        outs.add_file(tmp_path / "x.parquet", "--out")
        outs.add_file(tmp_path / "." / "x.parquet", "--rejects")


def test_special_files_and_foreign_folders_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="FIFO"), OutputSet() as outs:
        outs.add_file(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(OutputError, match="a device"), OutputSet() as outs:
        outs.add_file("/dev/null")
    with pytest.raises(OutputError, match="is a folder"), OutputSet() as outs:
        outs.add_file(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match="not part of a fastseg run"), OutputSet() as outs:
        outs.add_folder(mine)
    assert (mine / "notes.txt").read_text() == "keep" and _hidden(tmp_path) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    with OutputSet() as outs:
        outs.write_text(outs.add_folder(empty) / "run.json", "{}")
        outs.commit()
    assert os.listdir(empty) == ["run.json"]


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]
)
def test_modes_follow_the_umask(tmp_path: Path, umask: int, file_mode: int, dir_mode: int) -> None:
    old = os.umask(umask)
    try:
        old_file = tmp_path / "f.txt"
        old_file.write_text("x")
        old_file.chmod(0o600)  # replaced: the umask decides, not the old file
        with OutputSet() as outs:
            outs.write_text(outs.add_file(old_file), "y")
            folder = outs.add_folder(tmp_path / "run")
            outs.write_text(folder / "sub" / "a.txt", "z")
            outs.commit()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(old_file).st_mode) == file_mode
    assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == dir_mode
    assert stat.S_IMODE(os.stat(tmp_path / "run" / "sub").st_mode) == dir_mode
    assert stat.S_IMODE(os.stat(tmp_path / "run" / "sub" / "a.txt").st_mode) == file_mode


def test_write_failure_names_the_target_not_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "scores.parquet"

    def fail(path: Path) -> None:
        raise OSError(27, "File too large", str(path))

    with pytest.raises(OutputError) as info, OutputSet() as outs:
        outs.write_with(outs.add_file(target, "--out"), fail)
    message = str(info.value)
    assert str(target) in message and "File too large" in message and ".tmp" not in message
    assert _hidden(tmp_path) == [] and not target.exists()


def test_is_fastseg_folder(tmp_path: Path) -> None:
    assert O.is_fastseg_folder(tmp_path)
    (tmp_path / "run.json").write_text("not json")
    assert not O.is_fastseg_folder(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"as_of": "2026-01-01"}))
    assert O.is_fastseg_folder(tmp_path)


def test_run_folder_may_not_hold_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    for target in (here, tmp_path, Path(".")):
        with pytest.raises(OutputError, match="holds the current folder"), OutputSet() as outs:
            outs.add_folder(target)
    assert os.listdir(here) == []


def test_a_run_folder_with_other_files_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with OutputSet() as outs:
        folder = outs.add_folder(out, reserved=("scores.parquet", "run.json"))
        outs.write_text(folder / "scores.parquet", "A")
        outs.write_text(
            folder / "run.json", json.dumps({"as_of": "2026-01-01", "files": {"scores.parquet": 1}})
        )
        outs.commit()
    assert O.is_fastseg_folder(out)
    (out / "NOTES.md").write_text("mine")
    with pytest.raises(OutputError, match="holds 'NOTES.md'"), OutputSet() as outs:
        outs.add_folder(out)
    assert (out / "NOTES.md").read_text() == "mine"


def test_declared_files_may_not_take_the_run_files_names(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="run folder's own scores.parquet"), OutputSet() as outs:
        folder = outs.add_folder(tmp_path / "run", reserved=("scores.parquet", "run.json"))
        outs.add_file(folder / "scores.parquet", "--rejects")


def test_outputs_matching_an_input_glob_are_refused(tmp_path: Path) -> None:
    pattern = str(tmp_path / "data" / "*.csv")
    with (
        pytest.raises(OutputError, match="matches the input pattern"),
        OutputSet([], [pattern]) as outs,
    ):
        outs.add_file(tmp_path / "data" / "scores.csv")
    with OutputSet([], [pattern]) as outs:
        outs.add_file(tmp_path / "data" / "scores.parquet")


def test_an_existing_run_folder_keeps_its_mode_and_group(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o2770)
    with OutputSet() as outs:
        outs.write_text(outs.add_folder(out) / "run.json", json.dumps({"as_of": "2026-01-01"}))
        outs.commit()
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o2770


def test_fallback_swap_interrupted_puts_the_old_set_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    _run_folder(out, {"scores.parquet": "A"})
    monkeypatch.setattr(O, "_exchange", lambda a, b: False)
    real_rename = os.rename
    calls = []

    def rename(a, b):  # noqa: ANN001, ANN202
        calls.append((a, b))
        if len(calls) == 2:  # the staging copy onto the folder: interrupted
            raise KeyboardInterrupt
        return real_rename(a, b)

    with pytest.raises(KeyboardInterrupt), OutputSet() as outs:
        folder = outs.add_folder(out)
        outs.write_text(folder / "run.json", json.dumps({"as_of": "2026-02-01"}))
        monkeypatch.setattr(os, "rename", rename)
        outs.commit()
    monkeypatch.setattr(os, "rename", real_rename)
    assert (out / "scores.parquet").read_text() == "A" and _hidden(tmp_path) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_an_interrupt_after_the_swap_still_reports_the_new_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    """Ctrl-C while the previous set is being removed: the new set is already in place, so the
    commit completes (the hidden leftover goes with the next run), never "nothing written"."""
    if not exchange:
        monkeypatch.setattr(O, "_exchange", lambda a, b: False)
    out = tmp_path / "run"
    _run_folder(out, {"scores.parquet": "A"})
    real = O._remove

    def interrupted(path: Path) -> None:
        raise KeyboardInterrupt

    with OutputSet() as outs:
        folder = outs.add_folder(out)
        outs.write_text(folder / "scores.parquet", "B")
        outs.write_text(folder / "run.json", json.dumps({"as_of": "2026-02-01"}))
        monkeypatch.setattr(O, "_remove", interrupted)
        outs.commit()  # no KeyboardInterrupt escapes
    monkeypatch.setattr(O, "_remove", real)
    assert (out / "scores.parquet").read_text() == "B"
    # the previous set stays hidden beside it; the next command removes it once this process
    # has exited (leftovers of dead processes: test_faults)
    assert len(_hidden(tmp_path)) == 1
