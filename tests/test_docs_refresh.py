"""docs/refresh.md runs as written: every ``bash`` block in order, in one empty folder, then the
Python blocks (the Airflow DAG is parsed: Airflow is not a dependency)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import polars as pl
import pytest

from tests.docblocks import DOCS, blocks, run_bash_blocks, run_python_block

DOC = DOCS / "refresh.md"


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("refresh")
    run_bash_blocks(DOC, folder)
    return folder


def test_bash_blocks_refresh_exactly(ran: Path) -> None:
    # the page's own check passed (the refresh equals the full run); the state says what it holds
    state = json.loads((ran / "state" / "state.json").read_text())
    assert state["as_of"] == "2026-07-15"  # the no-new-orders run aged it
    assert len(state["inputs"]) == 3
    assert state["report"]["rows_read"] == pl.read_parquet(ran / "shop" / "orders.parquet").height
    aged = pl.read_parquet(ran / "scores-2026-07-15.parquet")
    full = pl.read_parquet(ran / "runs" / "full" / "scores.parquet")
    buyers = full.filter(pl.col("frequency") > 0)  # the full run has the profiles' prospects too
    assert aged["customer_id"].equals(buyers["customer_id"])
    assert (aged["recency_days"] - buyers["recency_days"]).unique().to_list() == [15]
    # the cron script: built once, two days applied, the retry applied the last day again
    daily = json.loads((ran / "daily-state" / "state.json").read_text())
    assert [Path(i["files"][0]["path"]).name for i in daily["inputs"]] == [
        "history.parquet",
        "orders-2026-06-29.parquet",
        "orders-2026-06-30.parquet",
    ]
    a = pl.read_parquet(ran / "runs" / "2026-06-30" / "scores.parquet")
    assert a.equals(full)


def test_python_blocks(ran: Path) -> None:
    for body in blocks(DOC, "python"):
        if "airflow" in body:
            ast.parse(body)  # the DAG: Airflow is not installed here
            continue
        run_python_block(DOC, body, ran)
