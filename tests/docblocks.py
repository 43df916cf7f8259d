"""Running a doc page's code blocks as written (tests/test_docs_*.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def blocks(doc: Path, kind: str) -> list[str]:
    """The bodies of the fenced ``kind`` blocks of ``doc``, in order."""
    return [body for k, body in BLOCK.findall(doc.read_text(encoding="utf-8")) if k == kind]


def run_bash_blocks(doc: Path, folder: Path) -> None:
    """Run every ``bash`` block of ``doc`` in order in ``folder`` (``set -euo pipefail``), with
    this interpreter's ``fastseg`` first on the PATH; a failing block fails the test with its
    text and stderr."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for i, body in enumerate(blocks(doc, "bash")):
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", body],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"bash block {i} of {doc.name} failed:\n{body}\n{done.stderr}"


def run_python_block(doc: Path, body: str, folder: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", body], cwd=folder, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"python block of {doc.name} failed:\n{body}\n{done.stderr}"
