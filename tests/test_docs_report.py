"""docs/report.md runs as written: its ``bash`` blocks in order in one empty folder, then its
Python block; the files the page names are where it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "report.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def blocks(kind: str) -> list[str]:
    return [body for k, body in BLOCK.findall(DOC.read_text(encoding="utf-8")) if k == kind]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report-doc")
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
            f"bash block {i} of docs/report.md failed:\n{body}\n{done.stderr}"
        )
    for body in blocks("python"):
        done = subprocess.run(
            [sys.executable, "-c", body], cwd=folder, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (
            f"python block of docs/report.md failed:\n{body}\n{done.stderr}"
        )
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
