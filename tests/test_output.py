"""What the user sees: progress lines under cron, summaries."""

from __future__ import annotations

import pytest
from rich.console import Console

from segmetro import output
from segmetro.models import Counts
from segmetro.summary import SELECTION, Summary


def _colour_terminal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What cron often inherits: a TERM that claims colours, and no NO_COLOR."""
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


def test_plain_progress_line_when_not_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off a terminal (cron), progress is a plain periodic line with bytes, percent and status,
    and no escape sequence even when TERM claims colours: only the terminal check keeps them out.
    """
    _colour_terminal_env(monkeypatch)
    with output.Progress(total_bytes=200, quiet=False, interval=0.0, label="replay") as progress:
        progress.advance(50)
        progress.update("sent 10 (5/s), failed 0")
    err = capsys.readouterr().err
    assert "replay 50/200 bytes (25%) sent 10 (5/s), failed 0" in err
    assert "\x1b" not in err  # ESC itself: no colour, cursor or bar sequence of any kind


def test_progress_on_a_terminal_draws_escape_sequences(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: the same progress on a terminal does write ESC, so the
    absence asserted there is the terminal check's doing, not the capture's."""
    _colour_terminal_env(monkeypatch)
    monkeypatch.setattr(
        output, "console", lambda: Console(stderr=True, force_terminal=True, highlight=False)
    )
    with output.Progress(total_bytes=200, quiet=False, interval=0.0, label="replay") as progress:
        progress.advance(50)
        progress.update("sent 10 (5/s), failed 0")
    assert "\x1b[" in capsys.readouterr().err


def test_quiet_progress_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """-q silences progress entirely."""
    with output.Progress(total_bytes=None, quiet=True, interval=0.0) as progress:
        progress.advance(5)
        progress.update("sent 1")
    assert capsys.readouterr().err == ""


def test_summary_lines_use_the_json_names() -> None:
    """The human summary and the JSON object come from one Summary: each count is shown under
    the key it has in the JSON, with the same value; rejects by reason and per mapping too."""
    counts = Counts(read=12, unparseable=2, matched=7, filtered=3, duplicates=1, outside_window=1)
    counts.rejected.update({"too_old": 1, "invalid_json": 2})
    counts.mapping_matched.update({"usage": 7, "other": 1})
    counts.mapping_rejected.update({"usage": 1})
    counts.emitted = 6
    counts.mapping_emitted.update({"usage": 5, "other": 1})
    summary = Summary(command="map", output="out.jsonl")
    summary.selection(counts, ["usage", "other", "never"])
    lines = output.summary_lines(summary)
    assert lines == [
        "read 12, unparseable 2, filtered 3, matched 7, mapped 8, rejected 3, outside_window 1, "
        "duplicates 1, emitted 6",
        "rejected_by_reason: invalid_json 2, too_old 1",
        "by_mapping usage: matched 7, rejected 1, emitted 5",
        "by_mapping other: matched 1, rejected 0, emitted 1",
        "by_mapping never: matched 0, rejected 0, emitted 0",
        "output out.jsonl",
    ]
    obj = summary.to_json()
    assert all(f"{name} {obj[name]}" in lines[0] for name in SELECTION)
    assert obj["by_mapping"]["usage"] == {"matched": 7, "rejected": 1, "emitted": 5}
    assert obj["warnings"] == [
        "mapping 'never' matched none of the 10 messages read: check its trigger"
    ]
