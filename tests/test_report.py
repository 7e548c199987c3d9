"""The report page as text: escaped, aggregates only, a clear error when it cannot be written."""

from __future__ import annotations

from pathlib import Path

import pytest

from segmetro.errors import ConfigError
from segmetro.models import Counts
from segmetro.plan import Plan
from segmetro.report import render_report, write_report
from segmetro.summary import Summary


def plan_json(events: int) -> dict[str, object]:
    counts = Counts(read=events, matched=events, emitted=events)
    plan = Plan(counts=counts)
    for i in range(events):
        plan.note(
            "new",
            "m",
            "<script>alert(1)</script>" if i == 0 else "API Call",
            f"2026-11-{1 + i % 30:02d}",
        )
    summary = Summary(command="replay-dry-run")
    plan.fill(summary, ["m"])
    return summary.to_json()


def test_values_from_events_are_escaped_and_nothing_is_loaded() -> None:
    page = render_report("plan", plan_json(3), command="segmetro replay --dry-run x")
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    for fetching in ("src=", "href=", "@import", "url(", "<link", "<script"):
        assert fetching not in page


def test_the_page_does_not_grow_with_the_events() -> None:
    small = render_report("plan", plan_json(300), command="c")
    large = render_report("plan", plan_json(30_000), command="c")
    assert len(large) < 1.05 * len(small), "100 times the events, 30 days either way"


def test_an_unwritable_report_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--report .*: cannot write"):
        write_report(tmp_path, "plan", plan_json(1), command="c")
