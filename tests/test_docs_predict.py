"""docs/predict.md runs as written: its bash blocks in order in one empty folder; the files and
the output it shows are there."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.docblocks import DOCS, blocks, run_bash_blocks

DOC = DOCS / "predict.md"
pytest.importorskip("scipy")


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("predict-doc")
    run_bash_blocks(DOC, folder)
    return folder


def test_the_files_the_page_names(ran: Path) -> None:
    pred = pl.read_parquet(ran / "predictions.parquet")
    for col in (
        "p_alive",
        "expected_orders_30d",
        "expected_order_value",
        "clv",
        "clv_score",
        "churn_risk",
    ):
        assert col in pred.columns, col
    doc = json.loads((ran / "params.json").read_text())
    shown = json.loads(blocks(DOC, "json")[0])
    assert set(doc) == set(shown) and set(doc["bgnbd"]) == set(shown["bgnbd"])
    assert pl.read_parquet(ran / "today.parquet").equals(pred)
    assert (ran / "checked.parquet").exists()


def test_the_rule_block_compiles(ran: Path) -> None:
    import fastseg

    rules = blocks(DOC, "toml")[0]
    res = fastseg.run(ran / "shop" / "orders.parquet", rules=rules, predict=True)
    assert "valuable_churners" in res.segments.names
