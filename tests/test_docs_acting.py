"""docs/acting.md runs as written: every ``bash`` block in order, in one empty folder, then the
Python blocks (the Airflow DAG is parsed: Airflow is not a dependency)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "acting.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def blocks(kind: str) -> list[str]:
    return [body for k, body in BLOCK.findall(DOC.read_text(encoding="utf-8")) if k == kind]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("acting")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for i, body in enumerate(blocks("bash")):
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", body],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, (
            f"bash block {i} of docs/acting.md failed:\n{body}\n{done.stderr}"
        )
    return folder


def test_bash_blocks_run_and_write_what_the_page_says(ran: Path) -> None:
    june = ran / "runs" / "june"
    assert {"changes.parquet", "changes.csv", "transitions.csv", "membership.npz"} <= set(
        os.listdir(june)
    )
    assert sorted(os.listdir(ran / "changes" / "june")) == [
        "changes.csv",
        "changes.parquet",
        "diff.json",
        "transitions.csv",
    ]
    doc = json.loads((ran / "changes" / "june" / "diff.json").read_text())
    assert doc["rfm_edges_changed"] is True  # May and June each fitted their own quantiles
    for name in ("vip.csv", "vip.added.csv", "vip.removed.csv", "manifest.json"):
        assert (ran / "audiences" / name).exists(), name
    # the daily job: two days, the second with changes, exports and fixed edges
    day2 = ran / "runs" / "2026-06-30"
    assert (day2 / "changes.parquet").exists() and (ran / "edges.json").exists()
    assert not json.loads((day2 / "run.json").read_text())["previous"]["rfm_edges_changed"]
    hashed = pl.read_csv(ran / "exports" / "2026-06-30" / "vip.csv", infer_schema_length=0)
    assert hashed["email"].drop_nulls().str.contains(r"^[0-9a-f]{64}$").all()
    assert (ran / "exports" / "2026-06-30" / "at_risk.added.csv").exists()


def test_python_blocks(ran: Path) -> None:
    for body in blocks("python"):
        if "airflow" in body:
            ast.parse(body)  # the DAG: Airflow is not installed here
            continue
        done = subprocess.run(
            [sys.executable, "-c", body], cwd=ran, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (
            f"python block of docs/acting.md failed:\n{body}\n{done.stderr}"
        )
