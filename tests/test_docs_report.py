"""docs/report.md runs as written: its ``bash`` blocks in order in one empty folder, then its
Python block; the files the page names are where it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docblocks import DOCS, blocks, run_bash_blocks, run_python_block

DOC = DOCS / "report.md"


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report-doc")
    run_bash_blocks(DOC, folder)
    for body in blocks(DOC, "python"):
        run_python_block(DOC, body, folder)
    return folder


def test_the_pages_are_where_the_doc_says(ran: Path) -> None:
    for page in ("runs/june/report.html", "runs/may/report.html", "june-vs-may.html", "june.html"):
        text = (ran / page).read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>"), page
    assert "Changes since the previous run" in (ran / "june-vs-may.html").read_text()
    assert "Changes since the previous run" in (ran / "runs/june/report.html").read_text()
    assert "Changes since the previous run" not in (ran / "runs/may/report.html").read_text()


def test_the_screenshot_is_there() -> None:
    image = DOC.parent / "images" / "report.png"
    assert "images/report.png" in DOC.read_text()
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
