"""The --report page in a real browser: Debian's headless chromium, driven by playwright.

The page must load with no console error and no request beyond its own file, show one bar
per day, and carry the ``--json`` numbers. A screenshot is left in the test's tmp directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from typer.testing import CliRunner

from segmetro.cli import app
from segmetro.fake_metronome import FakeMetronome, load_account
from tests.support import ROOT, SAMPLES, SAMPLES_NOW, TOKEN

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INPUTS = ["samples/events/2026-11-24.jsonl.gz", "samples/events/2026-11-25.ndjson.gz"]
OFFLINE = [
    "--billable-metrics",
    "samples/billing/billable-metrics.json",
    "--customers",
    "samples/billing/customers.json",
]


@pytest.fixture(autouse=True)
def _at_the_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium, headless. Started after the CLI runs: playwright's sync API holds an
    event loop on this thread, where ``replay`` and ``verify`` run their own."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Loaded:
    """A page opened from a file, with every request and console problem it caused."""

    def __init__(self, browser: Browser, path: Path) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1100, "height": 900})
        self.requests: list[str] = []
        self.problems: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on(
            "console", lambda m: m.type in ("error", "warning") and self.problems.append(m.text)
        )
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))
        self.page.goto(path.as_uri())
        self.page.wait_for_load_state("load")
        self.url = path.as_uri()

    def number(self, selector: str) -> str:
        return self.page.locator(selector).inner_text().strip()

    def check_offline(self) -> None:
        assert self.problems == []
        assert self.requests == [self.url], "the page loads nothing but itself"


def dry_run(runner: CliRunner, tmp_path: Path, mapping: str) -> tuple[dict[str, Any], Path]:
    page = tmp_path / "plan.html"
    result = runner.invoke(
        app,
        [
            "replay",
            "--dry-run",
            "--billing",
            *OFFLINE,
            "-m",
            mapping,
            *INPUTS,
            "--now",
            "2026-11-26",
            "--state",
            str(tmp_path / "none.db"),
            "--json",
            "--report",
            str(page),
        ],
    )
    assert result.exit_code in (0, 1), result.output
    return orjson.loads(result.stdout), page


def test_the_dry_run_page(runner: CliRunner, tmp_path: Path) -> None:
    data, path = dry_run(runner, tmp_path, "samples/mapping-broken.yaml")
    with chromium() as browser:
        check_plan_page(Loaded(browser, path), data, path, tmp_path)


def check_plan_page(loaded: Loaded, data: dict[str, Any], path: Path, tmp_path: Path) -> None:
    loaded.check_offline()
    page = loaded.page
    bars = page.locator("svg#days g.bar")
    assert bars.count() == len(data["sent_by_day"]) > 1
    for i in range(bars.count()):
        bar = bars.nth(i)
        day = bar.get_attribute("data-day")
        assert day is not None
        expected = data["sent_by_day"][day]
        assert int(bar.get_attribute("data-total") or -1) == sum(expected.values())
        parts = bar.locator("rect")
        shown = {
            parts.nth(j).get_attribute("data-type"): int(parts.nth(j).get_attribute("data-n") or -1)
            for j in range(parts.count())
        }
        assert shown == expected
    assert int(loaded.number('[data-key="new"]')) == data["new"]
    assert int(loaded.number('[data-key="read"]')) == data["read"]
    assert int(loaded.number('[data-key="rejected"]')) == data["rejected"]
    billing = data["billing"]
    assert int(loaded.number('[data-key="billing-nothing"]')) == billing["bill_nothing"] > 0
    for cause, n in billing["bill_nothing_by_cause"].items():
        assert int(loaded.number(f'[data-cause="{cause}"]')) == n
    for usage in billing["usage"]:
        cell = page.locator(f'tr[data-metric="{usage["metric"]}"] td[data-total]')
        assert cell.get_attribute("data-total") == str(usage["total"])
    assert "exit 1" in loaded.number("#verdict")
    assert path.stat().st_size < 64 * 1024, "aggregates only"
    page.screenshot(path=str(tmp_path / "plan.png"), full_page=True)
    assert (tmp_path / "plan.png").stat().st_size > 0
    page.close()


def test_the_diff_and_verify_pages(
    runner: CliRunner,
    fake_metronome: Callable[..., FakeMetronome],
    tmp_path: Path,
) -> None:
    page = tmp_path / "diff.html"
    result = runner.invoke(
        app,
        [
            "diff",
            "-m",
            "samples/mapping.yaml",
            "-m",
            "samples/mapping-broken.yaml",
            *INPUTS,
            "--now",
            "2026-11-26",
            "--json",
            "--report",
            str(page),
        ],
    )
    assert result.exit_code == 1, result.output
    diff_data = orjson.loads(result.stdout)
    diff_page = page

    server = fake_metronome(account=load_account(SAMPLES / "account.json"))
    state = tmp_path / "state.db"
    env = {"METRONOME_BEARER_TOKEN": TOKEN}
    sent = runner.invoke(
        app,
        [
            "replay",
            "-m",
            "samples/mapping-broken.yaml",
            *INPUTS,
            "--now",
            SAMPLES_NOW,
            "-q",
            "--api-url",
            server.url,
            "--state",
            str(state),
        ],
        env=env,
    )
    assert sent.exit_code == 0, sent.output
    page = tmp_path / "verify.html"
    result = runner.invoke(
        app,
        [
            "verify",
            "--state",
            str(state),
            "--api-url",
            server.url,
            "--now",
            SAMPLES_NOW,
            "--json",
            "--report",
            str(page),
        ],
        env=env,
    )
    assert result.exit_code == 1, result.output
    data = orjson.loads(result.stdout)
    with chromium() as browser:
        loaded = Loaded(browser, diff_page)
        loaded.check_offline()
        for key in ("added", "removed", "changed", "unchanged"):
            assert int(loaded.number(f'[data-key="{key}"]')) == diff_data[key]
        assert loaded.page.locator("pre").count() == len(diff_data["sample"]) > 0
        loaded.page.screenshot(path=str(tmp_path / "diff.png"), full_page=True)
        loaded.page.close()
        loaded = Loaded(browser, page)
        loaded.check_offline()
        assert int(loaded.number('[data-key="found"]')) == data["found"]
        no_metric = data["billing"]["bill_nothing_by_cause"]["no_metric"]
        assert int(loaded.number('[data-cause="no_metric"]')) == no_metric > 0
        assert TOKEN not in page.read_text()
        loaded.page.screenshot(path=str(tmp_path / "verify.png"), full_page=True)
        loaded.page.close()
