"""What the user sees: progress lines under cron, summaries."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
from rich.console import Console

from segmetro import output
from segmetro.models import Counts, Reject
from segmetro.pipeline.rejects import RejectSink
from segmetro.summary import SELECTION, Summary


def _colour_terminal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What cron often inherits: a TERM that claims colours, and no NO_COLOR."""
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


def test_plain_progress_line_when_not_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off a terminal (cron), progress is a plain periodic line with the UTC time, the run id,
    the events, bytes read and status, and no escape sequence even when TERM claims colours:
    only the terminal check keeps them out."""
    _colour_terminal_env(monkeypatch)
    with output.Progress(
        total_bytes=200, quiet=False, interval=0.0, label="replay", run_id="20261126T101500Z-3f9a"
    ) as progress:
        progress.advance(50)
        progress.update("sent 10 (5/s), failed 0")
    err = capsys.readouterr().err
    line = err.splitlines()[-1]
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z run 20261126T101500Z-3f9a replay "
        r"0 events 25% ETA \d+:\d\d:\d\d, read 50 B/200 B, sent 10 \(5/s\), failed 0",
        line,
    ), line
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


class _Clock:
    """A clock the test moves: ETAs are figures of elapsed time, not measurements."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _replay_progress(
    clock: _Clock, *, total: int, read: int, emitted: int, sent: int
) -> output.Progress:
    progress = output.Progress(
        total_bytes=total, quiet=True, label="replay", run_id="r-1", clock=clock
    )
    progress.advance(read)
    counts = Counts(emitted=emitted)
    stats = SimpleNamespace(
        sent=sent, failed=0, elapsed=10.0, pace=None, rate_limited=0, hot_customers=0,
        last_error="", last_error_at=0.0, retrying=0, in_flight=16,
    )  # fmt: skip
    progress.delivery(counts, stats)
    clock.now += 10.0
    return progress


def _render(progress: output.Progress, width: int) -> str:
    out = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)
    out.print(progress)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert all(len(line) <= width for line in text.splitlines())
    return text


def test_the_bar_follows_events_delivered_not_bytes_read() -> None:
    """Everything read, 12,000 of 20,000 events still to send at 800/s: not 100% and ETA 0,
    but 40% and 15 s, at 180 columns as at 80 (the issue's case)."""
    progress = _replay_progress(_Clock(), total=5_232_491, read=5_232_491, emitted=20_000,
                                sent=8_000)  # fmt: skip
    assert progress.eta() == 15.0
    for width in (180, 80):
        text = _render(progress, width)
        assert "8000/20000 events 40% ETA 0:00:15" in text, text
        assert "100%" not in text
    assert "read 5.2 MB/5.2 MB" in _render(progress, 180)


def test_eta_is_the_slower_of_reading_and_sending() -> None:
    """A tenth read in 10 s: reading needs 90 s more; sending keeps up: the ETA is reading's.
    The same read with sending far behind: the ETA is sending's (events the unread bytes will
    likely hold included)."""
    fast = _replay_progress(_Clock(), total=1000, read=100, emitted=1000, sent=1000)
    assert fast.eta() == 90.0
    slow = _replay_progress(_Clock(), total=1000, read=100, emitted=1000, sent=10)
    assert slow.eta() == (10_000 - 10) / 1.0


def test_80_columns_keep_the_essentials_and_drop_the_extras_first() -> None:
    """At 80 columns: label, bar, events, percentage and ETA; the status (long, last) goes
    first, then bytes read. Wide: everything."""
    progress = _replay_progress(_Clock(), total=9_000_000_000, read=3_000_000_000,
                                emitted=1_234_567, sent=1_000_000)  # fmt: skip
    progress.update("sent 1000000 (12000/s), paced 5000/s, 429s 12, failed 0, retrying 1")
    narrow = _render(progress, 80)
    assert narrow.startswith("replay ━")
    assert "1000000/1234567 events 81% ETA " in narrow
    assert "paced" not in narrow
    wide = _render(progress, 200)
    assert "read 3.0 GB/9.0 GB" in wide
    assert "paced 5000/s" in wide
    tiny = _render(progress, 50)
    assert "1000000/1234567 events 81% ETA" in tiny  # no room for a bar: the figures stay


def test_map_progress_is_bytes_read_with_the_events_written() -> None:
    """map writes what it reads: its bar is the bytes read, beside the events written so far."""
    clock = _Clock()
    counts = Counts(emitted=300)
    progress = output.Progress(
        total_bytes=1000, quiet=True, label="map", counts=counts, clock=clock
    )
    progress.advance(250)
    clock.now += 5.0
    text = _render(progress, 80)
    assert "map ━" in text
    assert "300 events 25% ETA 0:00:15" in text


@pytest.mark.parametrize(
    ("part", "whole", "shown"),
    [(0, 205, "0%"), (1, 205, "<1%"), (3, 205, "1%"), (102, 205, "50%"), (204, 205, ">99%"),
     (205, 205, "100%"), (0, 0, "0%")],
)  # fmt: skip
def test_a_share_is_never_rounded_to_none_or_all(part: int, whole: int, shown: str) -> None:
    """1 empty field in 205 events is not "0% empty"."""
    assert output.percent(part, whole) == shown


def _reject(line: int, detail: str = "not JSON") -> Reject:
    return Reject(reason="invalid_json", detail=detail, source=f"in.jsonl:{line}")


def test_the_first_rejects_and_the_last_are_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond the first ones, the latest reject is kept and shown: how a broken input ended
    (e.g. "the rest of the object cannot be read") is often the line that matters."""
    sink = RejectSink(None)
    for line in range(1, 30):
        sink.add(_reject(line))
    sink.add(_reject(30, "the rest of the object cannot be read"))
    assert [r.source for r in sink.shown] == [f"in.jsonl:{n}" for n in [*range(1, 21), 30]]
    text = io.StringIO()
    monkeypatch.setattr(output, "console", lambda: Console(file=text, width=200, color_system=None))
    output.rejects(sink.shown, total=30, path=None, hint="--rejects FILE")
    lines = text.getvalue().splitlines()
    assert lines[0] == "  in.jsonl:1 invalid_json: not JSON"
    assert lines[19] == "  in.jsonl:20 invalid_json: not JSON"
    assert lines[20:] == [
        "  ... 9 more, then the last:",
        "  in.jsonl:30 invalid_json: the rest of the object cannot be read",
        "  30 rejects in all; use --rejects FILE to keep them all",
    ]


def test_twenty_one_rejects_show_every_one(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = RejectSink(None)
    for line in range(1, 22):
        sink.add(_reject(line))
    text = io.StringIO()
    monkeypatch.setattr(output, "console", lambda: Console(file=text, width=200, color_system=None))
    output.rejects(sink.shown, total=21, path=None)
    lines = text.getvalue().splitlines()
    assert lines == [f"  in.jsonl:{n} invalid_json: not JSON" for n in range(1, 22)]
