"""Regenerate docs/report.png: the --report page of the README's broken-mapping walkthrough.

Run from the repository root: python docs/make_report_screenshot.py (needs /usr/bin/chromium).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
COMMAND = [
    "segmetro", "replay", "--dry-run", "--billing",
    "--billable-metrics", "samples/billing/billable-metrics.json",
    "--customers", "samples/billing/customers.json",
    "-m", "samples/mapping-broken.yaml",
    "samples/events/2026-11-24.jsonl.gz", "samples/events/2026-11-25.ndjson.gz",
    "--now", "2026-11-26", "-q",
]  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "report.html"
        state = Path(tmp) / "none.db"
        subprocess.run(
            [*COMMAND, "--state", str(state), "--report", str(page_file)],
            check=False,
            capture_output=True,
        )
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.goto(page_file.as_uri())
            page.screenshot(path="docs/report.png", full_page=True)
            browser.close()


if __name__ == "__main__":
    main()
