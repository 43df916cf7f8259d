"""docs/acting.md runs as written: every ``bash`` block in order, in one empty folder, then the
Python blocks (the Airflow DAG is parsed: Airflow is not a dependency)."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import polars as pl
import pytest

from tests.docblocks import DOCS, blocks, run_bash_blocks, run_python_block

DOC = DOCS / "acting.md"


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("acting")
    run_bash_blocks(DOC, folder)
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
    for body in blocks(DOC, "python"):
        if "airflow" in body:
            ast.parse(body)  # the DAG: Airflow is not installed here
            continue
        run_python_block(DOC, body, ran)
