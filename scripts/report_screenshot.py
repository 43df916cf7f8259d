"""Screenshot a fastseg report page in headless Chromium (for docs/images/report.png).

    python scripts/report_screenshot.py RUN_DIR/report.html docs/images/report.png [--width 1280]

Needs Playwright (the test extra) and a Chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    args = ap.parse_args()
    exe = next(
        (
            shutil.which(n)
            for n in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(n)
        ),
        None,
    )
    if exe is None:
        raise SystemExit("no Chromium found (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=exe, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        page.goto(args.page.resolve().as_uri())
        page.wait_for_selector("body[data-charts-ready]", timeout=60_000)
        page.screenshot(path=str(args.png), full_page=True)
        browser.close()
    print(f"{args.png}: {args.png.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
