"""The HTML report in a real browser: Debian's Chromium, driven headless by Playwright.

The page must draw every chart, log no console error, request nothing but itself (it works
offline), and show a tooltip on hover. A full-page screenshot is saved under the test's temporary
folder (the path is printed; ``pytest -s`` shows it).

CI installs Chromium (``.ci/run``: ``apt-get install chromium``) and sets
``FASTSEG_REQUIRE_BROWSER=1``, so there a missing browser fails the test instead of skipping it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import fastseg

REQUIRED = os.environ.get("FASTSEG_REQUIRE_BROWSER") == "1"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    exe = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        exe = None
    if exe is None:
        if REQUIRED:
            pytest.fail("FASTSEG_REQUIRE_BROWSER=1 but no Chromium (apt-get install chromium)")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root; --disable-dev-shm-usage: a container's small /dev/shm
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic store (profiles, events) scored twice, the report of the second run with the
    changes since the first."""
    base = tmp_path_factory.mktemp("store")
    ds = fastseg.generate(base / "data", orders=60_000, seed=4)
    common = {"customers": ds.customers, "events": ds.events}
    end = dt.date.fromisoformat(str(fastseg.run(ds.orders, **common).as_of))
    first = end - dt.timedelta(days=30)
    fastseg.run(ds.orders, as_of=first, out=base / "before", **common)
    fastseg.run(ds.orders, out=base / "now", previous=base / "before", report=True, **common)
    return base / "now" / "report.html"


def _data_marks(spec: dict, data: dict | None = None) -> int:
    """Rows of data drawn by a Vega-Lite spec: each unit's data (or its parent's), summed over
    layers and panels."""
    data = spec.get("data", data)
    if "mark" in spec:
        return len(data["values"]) if data else 0
    return sum(
        _data_marks(sub, data)
        for key in ("layer", "hconcat", "vconcat")
        for sub in spec.get(key, [])
    )


def _open(browser: object, page_path: Path) -> tuple[object, list[str], list[str]]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    problems: list[str] = []
    requests: list[str] = []
    page.on(
        "console",
        lambda m: (
            problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_path.as_uri())
    page.wait_for_selector("body[data-charts-ready]", timeout=60_000)
    return page, problems, requests


def test_every_chart_renders_offline_without_errors(
    browser: object, report: Path, tmp_path: Path
) -> None:
    page, problems, requests = _open(browser, report)
    specs = json.loads(page.locator("#fastseg-specs").text_content())  # type: ignore[attr-defined]
    charts = page.locator("div.chart")  # type: ignore[attr-defined]
    n = charts.count()
    assert n >= 8  # segments, grid, 3 distributions, overlap, changes, transitions
    assert page.get_attribute("body", "data-charts-ready") == str(n)  # type: ignore[attr-defined]
    assert page.locator("div.chart .chart-error").count() == 0  # type: ignore[attr-defined]
    assert page.locator("div.chart-error").count() == 0  # type: ignore[attr-defined]
    for i in range(n):
        chart = charts.nth(i)
        svg = chart.locator("svg.marks")
        assert svg.count() == 1, chart.get_attribute("id")
        box = svg.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 50, chart.get_attribute(
            "id"
        )
        # one drawn mark (a bar, cell or label: a path or text of a mark group, never an axis
        # or legend part) per row of the chart's data, in every layer and panel
        cid = chart.get_attribute("id")
        drawn = chart.locator("g.role-mark > path, g.role-mark > text").count()
        assert drawn == _data_marks(specs[cid]) > 0, cid
    assert problems == []
    assert requests == [report.as_uri()]  # nothing fetched: the chart library is in the page
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)  # type: ignore[attr-defined]
    assert shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
    page.close()  # type: ignore[attr-defined]


def test_tooltips_show_formatted_figures(browser: object, report: Path) -> None:
    page, problems, _ = _open(browser, report)
    # the count printed on a grid cell (it lies over the cell and carries the same tooltip)
    page.locator("#chart-grid g.mark-text text").first.hover()  # type: ignore[attr-defined]
    tip = page.locator("#vg-tooltip-element")  # type: ignore[attr-defined]
    tip.wait_for(state="visible", timeout=10_000)
    text = tip.inner_text()
    assert "customers" in text and "RFM group" in text
    assert problems == []
    page.close()  # type: ignore[attr-defined]


def test_hostile_text_is_shown_not_run(browser: object, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        "[[segment]]\n"
        'name = "x"\n'
        "description = '''</script><script>alert(1)</script><img src=x onerror=alert(2)>'''\n"
        'rule = "frequency >= 1"\n'
    )
    ds = fastseg.generate(tmp_path / "data", orders=5_000, seed=1, with_events=False)
    fastseg.run(ds.orders, rules=rules, out=tmp_path / "r", report=True)
    page, problems, requests = _open(browser, tmp_path / "r" / "report.html")
    assert problems == []  # no dialog opened, no error
    assert requests == [(tmp_path / "r" / "report.html").as_uri()]  # the <img> was not created
    assert "<img src=x onerror=alert(2)>" in page.locator("main").text_content()  # type: ignore[attr-defined]
    # its tooltip shows the description as text too
    page.locator('#chart-segments g.role-mark > path[aria-label*="segment: x;"]').first.hover()  # type: ignore[attr-defined]
    tip = page.locator("#vg-tooltip-element")  # type: ignore[attr-defined]
    tip.wait_for(state="visible", timeout=10_000)
    assert "<img src=x onerror=alert(2)>" in tip.inner_text()
    assert tip.evaluate("e => e.querySelectorAll('script, img').length") == 0
    assert problems == [] and len(requests) == 1
    page.close()  # type: ignore[attr-defined]
