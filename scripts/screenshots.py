"""Screenshots of the report's site in headless Chromium: the landing page, one fine-tuning
(03) page and the results (05) page, as a reader's first screen shows them.

    python scripts/screenshots.py [--site reports/html] [--out docs/screenshots] [--experiment base_model]

The site is served on localhost (mtlib.study.site_check.serve) and opened by Debian's
chromium through Playwright, as the browser test does.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from mtlib.study.site_check import CHROMIUM_FLAGS, chromium, serve

PAGES = {"landing.png": "index.html", "03_finetune.png": "03_finetune/{experiment}.html",
         "05_results.png": "05_results.html"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="reports/html")
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--experiment", default="base_model", help="whose 03 page to take")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    site, out = Path(args.site), Path(args.out)
    missing = [p for p in PAGES.values() if not (site / p.format(experiment=args.experiment)).is_file()]
    if missing:
        print(f"error: {site}: no {', '.join(missing)} (build the site: dvc repro report)", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    with serve(site) as base, tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium(), headless=True, args=list(CHROMIUM_FLAGS[1:]),
            viewport={"width": args.width, "height": args.height})
        page = browser.new_page()
        for name, path in PAGES.items():
            page.goto(base + path.format(experiment=args.experiment), wait_until="load")
            page.screenshot(path=str(out / name))
            print(out / name)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
