"""Progress of long stages: the reporter, its renderers, and what the CLI prints with it."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from fastseg import progress as P
from fastseg.cli import app

runner = CliRunner()
N_ORDERS = 300


# ------------------------------------------------------------------------------------ the reporter


@pytest.mark.parametrize(
    ("per_s", "text"),
    [
        (3_140_000.0, "3.1M rows/s"),
        (850_000.0, "850k rows/s"),
        (42_300.0, "42.3k rows/s"),
        (120.4, "120 rows/s"),
        (2.5e9, "2.5G rows/s"),
        (None, ""),
        (float("inf"), ""),
        (float("nan"), ""),
    ],
)
def test_format_rate(per_s: float | None, text: str) -> None:
    assert P.format_rate(per_s) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4213, "0.42 s"), (26.4, "26 s"), (245, "4:05"), (3723, "1:02:03"), (None, "")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert P.format_duration(seconds) == text


def test_rate_and_eta_need_rows_and_a_total() -> None:
    st = P.Stage("orders", P.Reporter())
    assert st.rate() is None and st.eta() is None  # nothing counted
    st.advance(1000)
    assert st.rate(2.0) == 500.0
    assert st.eta() is None  # no total: rows and rate, no ETA
    st.update(1000, 4000)
    st.t0 -= 2.0  # as if two seconds had passed
    eta = st.eta()
    assert eta is not None and 5.0 < eta < 6.1  # 3,000 rows left at ~500 rows/s
    st.restart()
    assert st.rows == 0 and st.total == 4000


def _lines_of(renderer: type[P.TextLines] | type[P.JsonLines]) -> tuple[list[str], P.Stopwatch]:
    out: list[str] = []
    watch = P.Stopwatch(renderer(out.append, heartbeat=3600))
    with watch.stage("kernels", note="compiling kernels (first run only; cached afterwards)"):
        pass
    with watch.stage("orders") as st:
        st.update(0, 2_000)
        st.advance(1_500)
        st.advance(500)
    with watch.stage("scoring", unit="customers") as st:
        st.advance(70)
    with watch.stage("rules", show=False):
        pass
    with pytest.raises(ValueError), watch.stage("write"):
        raise ValueError
    watch.progress.done(command="test")
    return out, watch


def test_text_lines() -> None:
    out, watch = _lines_of(P.TextLines)
    assert out[0] == "fastseg: compiling kernels (first run only; cached afterwards)..."
    assert re.fullmatch(r"fastseg: kernels  \d\.\d\d s", out[1])
    assert re.fullmatch(r"fastseg: orders  2,000 rows  \d\.\d\d s(  \(.* rows/s\))?", out[2])
    assert re.fullmatch(r"fastseg: scoring  70 customers  \d\.\d\d s", out[3])  # no rate
    assert re.fullmatch(r"fastseg: done  .* s", out[4])
    assert len(out) == 5  # no line for a hidden stage or a failed one
    assert set(watch.seconds) == {"kernels", "orders", "scoring", "rules", "write"}


def test_json_lines() -> None:
    out, watch = _lines_of(P.JsonLines)
    docs = [json.loads(line) for line in out]
    assert [d["event"] for d in docs] == ["start", "stage", "stage", "stage", "done"]
    assert docs[0] == {
        "event": "start",
        "stage": "kernels",
        "message": "compiling kernels (first run only; cached afterwards)",
    }
    orders = docs[2]
    assert orders["stage"] == "orders" and orders["rows"] == 2000 and orders["total_rows"] == 2000
    assert orders["unit"] == "rows" and isinstance(orders["seconds"], float)
    assert docs[1]["rows"] is None and docs[1]["unit"] is None  # the kernels count nothing
    assert docs[3]["rows"] == 70 and docs[3]["unit"] == "customers"
    assert docs[4]["command"] == "test"
    for d in docs[1:4]:  # the stopwatch and the log agree
        assert d["seconds"] == round(watch.seconds[d["stage"]], 4)


def test_heartbeat_lines_in_a_long_stage() -> None:
    out: list[str] = []
    rep = P.TextLines(out.append, heartbeat=0.0)  # every batch
    with P.Stopwatch(rep).stage("orders", total=1_000) as st:
        st.advance(250)
    assert out[0].startswith("fastseg: orders  250 of 1,000 rows (25%)")
    assert out[-1].startswith("fastseg: orders  250 rows")


def test_reporter_choice() -> None:
    class Console:
        is_terminal = True

    assert type(P.reporter("text", quiet=True)) is P.Reporter
    assert isinstance(P.reporter("json", console=Console()), P.JsonLines)
    assert isinstance(P.reporter("text", console=Console()), P.Live)
    assert isinstance(P.reporter("text"), P.TextLines)


def test_live_display_runs_and_stops() -> None:
    from rich.console import Console

    console = Console(file=open("/dev/null", "w"), force_terminal=True)  # noqa: SIM115
    with P.Live(console) as rep:
        watch = P.Stopwatch(rep)
        with watch.stage("orders", total=10) as st:
            st.advance(10)
        with watch.stage("scoring"):
            pass
    assert rep._progress is None
    console.file.close()


def test_warm_up_compiles_the_listed_kernels() -> None:
    import importlib

    from fastseg import warmup

    warmup.warm_up()
    assert warmup.needed() is False
    for name in warmup.KERNELS:
        module, function = name.split(".")
        disp = getattr(importlib.import_module(f"fastseg.kernels.{module}"), function)
        assert disp.signatures, f"{name} is listed but the warm-up does not call it"


def test_warm_up_of_a_refresh_compiles_the_listed_kernels() -> None:
    import importlib

    from fastseg import warmup

    warmup.warm_up(state=True)
    assert warmup.needed(state=True) is False
    for name in warmup.STATE_KERNELS:
        module, function = name.split(".")
        disp = getattr(importlib.import_module(f"fastseg.kernels.{module}"), function)
        assert disp.signatures, f"{name} is listed but the warm-up does not call it"


# ------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def orders_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("progress")
    n = N_ORDERS
    pl.DataFrame(
        {
            "customer_id": [i % 40 for i in range(n)],
            "order_ts": [dt.date(2026, 1, 1) + dt.timedelta(days=(i * 7) % 300) for i in range(n)],
            "amount": [10.0 + i % 50 for i in range(n)],
        }
    ).write_parquet(folder / "orders.parquet")
    return folder / "orders.parquet"


def invoke(*args: object):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_plain_lines_per_stage(orders_file: Path, tmp_path: Path) -> None:
    r = invoke("run", orders_file, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    stages = [ln.split()[1] for ln in lines if ln.startswith("fastseg: ")]
    assert stages[-1] == "done"
    for stage in ("orders", "features", "scoring", "segments", "write"):
        assert stages.count(stage) == 1, (stage, r.stderr)
    orders = next(ln for ln in lines if ln.startswith("fastseg: orders "))
    assert f"{N_ORDERS:,} rows" in orders and " s" in orders
    assert "RFM groups" in r.stdout  # the summary is still printed


def test_json_lines_parse(orders_file: Path, tmp_path: Path) -> None:
    r = invoke("score", orders_file, "-o", tmp_path / "s.parquet", "--log-format", "json")
    assert r.exit_code == 0, r.output
    docs = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    stages = {d["stage"]: d for d in docs if d["event"] == "stage"}
    assert {"orders", "features", "scoring", "write"} <= set(stages)
    assert stages["orders"]["rows"] == N_ORDERS and stages["orders"]["total_rows"] == N_ORDERS
    assert stages["scoring"]["rows"] == 40 and stages["scoring"]["unit"] == "customers"
    done = docs[-1]
    assert done["event"] == "done" and done["command"] == "score"
    assert done["orders"] == N_ORDERS and done["customers"] == 40
    assert done["outputs"] == [str(tmp_path / "s.parquet")]


@pytest.mark.parametrize("command", ["run", "score"])
def test_quiet_prints_nothing(orders_file: Path, tmp_path: Path, command: str) -> None:
    out = tmp_path / ("out" if command == "run" else "s.parquet")
    r = invoke(command, orders_file, "-o", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert r.stdout == "" and r.stderr == ""
    assert out.exists()


def test_quiet_still_prints_errors(tmp_path: Path) -> None:
    r = invoke("score", tmp_path / "missing.parquet", "-q")
    assert r.exit_code == 1
    assert r.stderr.startswith("error:") and r.stdout == ""


def test_gen_logs_a_line_when_not_a_terminal(tmp_path: Path) -> None:
    r = invoke("gen", tmp_path / "d", "--orders", "2000")
    assert r.exit_code == 0, r.output
    assert re.search(r"^fastseg: generate  [\d,]+ rows  ", r.stderr, re.M), r.stderr


def _commands(group: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import typer

    cmd = typer.main.get_command(group) if isinstance(group, typer.Typer) else group
    out = [path]
    for name, sub in getattr(cmd, "commands", {}).items():
        out += _commands(sub, (*path, name))
    return out


@pytest.mark.parametrize("path", _commands(app), ids=lambda p: " ".join(p) or "fastseg")
def test_help_follows_conventions(path: tuple[str, ...]) -> None:
    r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    text = r.output
    usage = next(ln for ln in text.splitlines() if "Usage:" in ln)
    assert "{" not in usage and "}" not in usage, usage
    for generic in ("<bool>", "<str>", "<path>", "<list[str]>"):
        assert generic not in text, (generic, text)


def test_baselines_help_names_the_extra() -> None:
    r = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "300"})
    assert "pip install 'fastseg[bench]'" in " ".join(r.output.split())


def test_demo_default_matches_the_docs() -> None:
    import inspect

    from fastseg import cli

    default = inspect.signature(cli.demo).parameters["out"].default
    root = Path(__file__).parents[1]
    for doc in ("README.md", "docs/quickstart.md", "docs/cli.md"):
        text = (root / doc).read_text()
        assert f"./{default}/" in text, f"{doc} does not name the demo folder ./{default}/"
