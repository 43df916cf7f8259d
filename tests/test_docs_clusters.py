"""docs/clusters.md runs as written: its ``bash`` blocks in order in one empty folder, then its
Python block; the files the page names are where it says, and the rules over clusters select
the customers the clusters file says."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.docblocks import DOCS, blocks, run_bash_blocks, run_python_block

DOC = DOCS / "clusters.md"


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clusters-doc")
    run_bash_blocks(DOC, folder)
    for body in blocks(DOC, "python"):
        run_python_block(DOC, body, folder)
    return folder


def test_the_files_are_where_the_doc_says(ran: Path) -> None:
    model = json.loads((ran / "clusters-model.json").read_text(encoding="utf-8"))
    assert model["format"] == "fastseg.cluster_model"
    assert sorted(model["silhouette"]) == [str(k) for k in range(2, 9)]
    may = pl.read_parquet(ran / "may-clusters.parquet")
    june = pl.read_parquet(ran / "june-clusters.parquet")
    assert may.columns == june.columns == ["customer_id", "cluster", "cluster_label"]
    assert set(june["cluster_label"].drop_nulls()) <= {
        *model["labels"],
        "prospects",
        "missing features",
    }


def test_the_rules_over_clusters_select_what_the_clusters_say(ran: Path) -> None:
    seg = pl.read_parquet(ran / "june-segments.parquet")
    c = pl.read_parquet(ran / "june-clusters.parquet").join(
        pl.read_parquet(ran / "june.parquet", columns=["customer_id", "recency_days"]),
        on="customer_id",
    )

    def members(name: str) -> list:
        return sorted(seg.filter(pl.col("segment") == name)["customer_id"])

    top = c.filter((pl.col("cluster") == 0) & (pl.col("recency_days") > 60))
    assert members("top_cluster_lapsing") == sorted(top["customer_id"]) != []
    prospects = c.filter(pl.col("cluster_label") == "prospects")["customer_id"]
    assert members("prospects_cluster") == sorted(prospects) != []


def test_the_measured_figures_are_filled_in() -> None:
    assert "BENCH_" not in DOC.read_text(encoding="utf-8")
