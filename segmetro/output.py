"""What the user sees on stderr: summaries, rejects, warnings, progress. rich lives here."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape

from segmetro.models import Counts, Reject
from segmetro.summary import SELECTION, Summary


def console() -> Console:
    """A stderr console built at call time, so redirected streams (tests, cron) are honoured."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def error(message: str) -> None:
    console().print(f"[bold red]error:[/bold red] {escape(message)}")


def warning(message: str) -> None:
    console().print(f"[yellow]warning:[/yellow] {escape(message)}")


def info(message: str) -> None:
    console().print(escape(message))


def _pairs(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())


def percent(part: int, whole: int) -> str:
    """`part` of `whole` as a whole percentage that is never 0 % or 100 % unless exactly so."""
    if part == 0 or part == whole:
        return f"{100 * part // whole if whole else 0}%"
    share = 100 * part / whole
    if share < 1:
        return "<1%"
    if share > 99:
        return ">99%"
    return f"{share:.0f}%"


def summary_lines(summary: Summary) -> list[str]:
    """The human summary: the counts of the JSON object, under the same names, as lines."""
    lines = []
    if summary.counts:
        lines.append(_pairs(summary.counts))
    if summary.extra:
        lines.append(_pairs(summary.extra))
    if summary.rejected_by_reason:
        lines.append(f"rejected_by_reason: {_pairs(summary.rejected_by_reason)}")
    for name, row in (summary.by_mapping or {}).items():
        lines.append(f"by_mapping {name}: {_pairs(row)}")
    for row in summary.details.get("fields", ()):
        if row["empty"]:
            lines.append(
                f"fields {row['mapping']}.{row['field']}: empty {row['empty']}, matched "
                f"{row['matched']} ({percent(row['empty'], row['matched'])} empty)"
            )
    where = {
        key: getattr(summary, key)
        for key in ("run_id", "state", "rejects", "output", "api_url")
        if getattr(summary, key) is not None
    }
    if where:
        lines.append(_pairs(where))
    return lines


def show_summary(summary: Summary, *, as_json: bool) -> None:
    """The end of every command: the warnings not shown yet on stderr, then the JSON object on
    stdout or the summary lines on stderr."""
    for text in summary.warnings[summary.warnings_shown :]:
        warning(text)
    summary.warnings_shown = len(summary.warnings)
    if as_json:
        write_json(summary.to_json())
        return
    out = console()
    for line in summary_lines(summary):
        out.print(escape(line))


def skipped_inputs(inputs: Any) -> None:
    """Say what the window or --source-id pruned from an S3 listing, so nothing looks lost,
    and which input specs stood for nothing."""
    for empty in inputs.empty_specs:
        console().print(escape(f"input {empty}"))
    if inputs.skipped_objects:
        console().print(
            escape(
                f"skipped {inputs.skipped_objects} objects ({inputs.skipped_bytes} bytes) whose "
                "Segment day folder or source cannot hold selected events"
            )
        )


def rejects(
    shown: Iterable[Reject],
    *,
    total: int,
    path: str | None,
    appended: bool = False,
    hint: str | None = None,
) -> None:
    """Show the first rejects with their coordinates, the last one if more came, and where
    the rest are."""
    out = console()
    items = list(shown)
    listed = len(items)
    # fewer shown than there are: the sink kept the first ones and, last, the latest
    first = items if total <= listed else items[:-1]
    for reject in first:
        out.print(escape(_reject_line(reject)))
    if total > listed:
        out.print(escape(f"  ... {total - listed} more, then the last:"))
        out.print(escape(_reject_line(items[-1])))
    if path is not None and appended:
        out.print(escape(f"{total} rejects of this run appended to {path}"))
    elif path is not None:
        out.print(escape(f"all {total} rejects written to {path}"))
    elif total > listed:
        keep = f"; use {hint} to keep them all" if hint else ""
        out.print(escape(f"  {total} rejects in all{keep}"))


def _reject_line(reject: Reject) -> str:
    where = f" [{reject.mapping}]" if reject.mapping else ""
    return f"  {reject.source}{where} {reject.reason}: {reject.detail}"


class Progress:
    """Progress that tells the truth: events settled against events known so far.

    The main figure of a replay is the events delivered (sent, dead-lettered, or found in the
    ledger) out of the events selected so far, with the compressed bytes read as the second
    figure; a run that has read everything but still sends shows it. The ETA is the later of
    reading's and sending's (sending's counts the events the unread bytes will likely hold).
    ``map`` and plans write what they read, so their bar is the bytes read, with the events
    written beside it. On a terminal it is one live line whose essentials (label, events,
    percentage, ETA) fit 80 columns; elsewhere (cron) a plain line every `interval` seconds
    with the UTC time and the run id.
    """

    def __init__(
        self,
        *,
        total_bytes: int | None,
        quiet: bool,
        interval: float = 5.0,
        label: str = "read",
        counts: Counts | None = None,
        run_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total_bytes = total_bytes
        self.quiet = quiet
        self.interval = interval
        self.label = label
        self.counts = counts
        self.run_id = run_id
        self.done_bytes = 0
        self.status = ""
        #: replay's events settled and known; None until the sender ticks (map, plans)
        self.delivered: int | None = None
        self.known = 0
        self._clock = clock
        self._started = clock()
        self._last_line = self._started
        self._console = console()
        self._live = not quiet and self._console.is_terminal
        self._display: Any = None

    def __enter__(self) -> Progress:
        if self._live:
            from rich.live import Live

            self._display = Live(self, console=self._console, refresh_per_second=4)
            self._display.__enter__()
        return self

    def advance(self, nbytes: int) -> None:
        self.done_bytes += nbytes
        self._tick()

    def update(self, status: str) -> None:
        """Set the status text (shown last, cut first)."""
        self.status = status
        self._tick()

    def delivery(self, counts: Counts, stats: Any) -> None:
        """The sender's tick: events settled (sent, dead-lettered, already in the ledger)
        against the events selected so far, and the sender's live counters as the status."""
        self.counts = counts
        self.delivered = stats.sent + stats.failed + counts.unchanged + counts.rejected["changed"]
        self.known = counts.emitted
        self.update(delivery_status(stats))

    def _tick(self) -> None:
        if self._display is not None or self.quiet:
            return
        now = self._clock()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._console.print(escape(self.plain_line(now)))

    # -- the figures -----------------------------------------------------------------------

    def _fraction(self) -> float | None:
        if self.delivered is not None:
            return self.delivered / self.known if self.known else None
        if self.total_bytes:
            return min(1.0, self.done_bytes / self.total_bytes)
        return None

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left: the later of reading's and sending's estimate (None: unknown)."""
        elapsed = (now if now is not None else self._clock()) - self._started
        if elapsed <= 0:
            return None
        read_left: float | None = None
        share_read: float | None = None
        if self.total_bytes:
            share_read = min(1.0, self.done_bytes / self.total_bytes)
            if share_read > 0:
                read_left = elapsed * (1 - share_read) / share_read
        if self.delivered is None:
            return read_left
        if not self.delivered:
            return None
        expected = self.known / share_read if share_read else self.known
        send_left = max(0.0, expected - self.delivered) / (self.delivered / elapsed)
        return max(send_left, read_left or 0.0)

    def _events(self) -> str:
        if self.delivered is not None:
            return f"{self.delivered}/{self.known} events"
        written = self.counts.emitted if self.counts is not None else 0
        return f"{written} events"

    def _bytes(self) -> str:
        if self.total_bytes:
            return f"read {_size(self.done_bytes)}/{_size(self.total_bytes)}"
        return f"read {_size(self.done_bytes)}"

    @staticmethod
    def _clock_text(seconds: float | None) -> str:
        if seconds is None:
            return "-:--:--"
        whole = int(seconds + 0.5)
        return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"

    def _parts(self, now: float | None = None) -> tuple[str, str, str]:
        """(the essentials, bytes read, the status)."""
        fraction = self._fraction()
        pct = "" if fraction is None else f" {100 * fraction:.0f}%"
        essentials = f"{self._events()}{pct} ETA {self._clock_text(self.eta(now))}"
        return essentials, self._bytes(), self.status

    def plain_line(self, now: float | None = None) -> str:
        """The line cron logs get: UTC time, run id, then the figures."""
        from datetime import UTC, datetime

        from segmetro.models import format_timestamp

        stamp = format_timestamp(datetime.now(UTC))
        run = f" run {self.run_id}" if self.run_id else ""
        essentials, read, status = self._parts(now)
        line = f"{stamp}{run} {self.label} {essentials}, {read}"
        return f"{line}, {status}" if status else line

    def render(self, width: int) -> Any:
        """The live line at `width` columns: the bar takes what the essentials leave, bytes
        read and the status come after and go first when the line is too narrow."""
        from rich.text import Text

        essentials, read, status = self._parts()
        head = f"{self.label} "
        line = Text(head, style="bold", no_wrap=True, overflow="ellipsis")
        room = width - len(head) - len(essentials)
        bar = min(40, room - 1 - len(read) - 2) if room - len(read) - 3 >= 10 else room - 1
        if bar >= 10:
            fraction = self._fraction() or 0.0
            filled = int(bar * fraction)
            line.append("━" * filled, style="bar.complete")
            line.append("━" * (bar - filled), style="bar.back")
            line.append(" ")
        line.append(essentials)
        for extra in (read, status):
            if extra and line.cell_len + 2 + len(extra) <= width:
                line.append(f"  {extra}", style="dim")
        return line

    def __rich_console__(self, console: Console, options: Any) -> Any:
        yield self.render(options.max_width)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._display is not None:
            self._display.__exit__(exc_type, exc, tb)
            self._display = None


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


#: A retry error stays on the progress line this long after it was seen (seconds).
RECENT_ERROR = 10.0


def delivery_status(stats: Any) -> str:
    """One status line of the sender's live counters, what matters most first (a narrow
    terminal cuts the end)."""
    rate = stats.sent / stats.elapsed if stats.elapsed > 0 else 0.0
    parts = [f"sent {stats.sent} ({rate:.0f}/s)"]
    if stats.pace is not None:
        parts.append(f"paced {stats.pace:.0f}/s")
    if stats.rate_limited:
        parts.append(f"429s {stats.rate_limited}")
    if stats.hot_customers:
        parts.append(f"{stats.hot_customers} customer(s) limited")
    recent = stats.last_error and stats.elapsed - stats.last_error_at <= RECENT_ERROR
    if recent:
        parts.append(f"last error: {stats.last_error}")
    parts.append(f"failed {stats.failed}, retrying {stats.retrying}, in flight {stats.in_flight}")
    return ", ".join(parts)


def log_to_stderr(level: int) -> None:
    """Route library logging (per-batch detail) to stderr through rich."""
    import logging

    from rich.logging import RichHandler

    handler = RichHandler(console=console(), show_path=False, rich_tracebacks=False)
    root = logging.getLogger("segmetro")
    root.addHandler(handler)
    root.setLevel(level)


def _counter_line(counter: Any) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))


def show_plan(result: Any) -> None:
    """The dry-run plan's detail, terraform style: breakdowns and field diffs (the counts
    follow in the summary)."""
    out = console()
    c = result.counts
    if result.target is not None:
        out.print(escape(f"plan against: {result.target.note}"))
    for title, table in (("by_event_type", result.by_event_type), ("by_day", result.by_day)):
        for key, counter in sorted(table.items()):
            out.print(escape(f"{title} {key}: {_counter_line(counter)}"))
    if result.changed:
        out.print(
            escape(
                "changed events (Metronome keeps the first payload of a transaction_id and "
                "ignores these; give them a new transaction_id to bill the new version):"
            )
        )
        for d in result.changed:
            out.print(escape(f"  ~ {d.transaction_id} ({d.source}, mapping {d.mapping})"))
            for line in d.lines:
                out.print(escape(f"      {line}"))
    rejects(result.rejects, total=c.rejected_total, path=None, hint="--rejects FILE")
    if result.billing is not None:
        billing(result.billing)


def billing(preview: Any) -> None:
    """The billing preview's lines (totals first, top lines of each list)."""
    out = console()
    for line in preview.text_lines():
        out.print(escape(line))


def show_diff(summary: Summary) -> None:
    """The diff's detail: each version's selection, then a few events of each kind."""
    out = console()
    for key, path in zip(("old", "new"), summary.mapping or (), strict=False):
        part = summary.details[key]
        counts = {name: part[name] for name in SELECTION}
        out.print(escape(f"{key} {path}: {_pairs(counts)}"))
        for name, row in part["by_mapping"].items():
            out.print(escape(f"  by_mapping {name}: {_pairs(row)}"))
    symbol = {"added": "+", "removed": "-", "changed": "~"}
    for d in summary.details["sample"]:
        mark = symbol[d["kind"]]
        where = f"({d['source']}, mapping {d['mapping']})"
        out.print(escape(f"  {mark} {d['transaction_id']} {where}"))
        for line in d["changes"]:
            out.print(escape(f"      {line}"))


def show_verify(report: Any) -> None:
    """The transaction_ids behind verify's counts (the counts follow in the summary)."""
    out = console()
    bill = report.billing_json()
    if bill["events"]:
        causes = bill["bill_nothing_by_cause"]
        out.print(
            escape(
                f"Billing: {bill['billed']} of {bill['events']} found events bill, "
                f"{bill['bill_nothing']} bill nothing ({causes['unknown_customer']} "
                f"unknown_customer, {causes['no_metric']} no_metric)"
            )
        )
        for title, table in (
            ("by metric", bill["events_by_metric"]),
            ("by customer", bill["events_by_customer"]),
        ):
            if table:
                out.print(escape(f"  {title}: {_counter_line(table)}"))
    for title, ids in (
        ("missing", report.missing),
        ("duplicated", report.duplicates),
        ("no_customer", report.no_customer),
        ("no_billable_metric", report.no_billable_metric),
        ("different", report.different),
    ):
        if ids:
            shown = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
            out.print(escape(f"  {title}: {shown}"))


def _shard_line(shard: dict[str, Any]) -> str:
    run = shard["last_run"]
    if run is None:
        last = "no run recorded"
    else:
        outcome = "unfinished" if run["exit_code"] is None else f"exit_code {run['exit_code']}"
        sent = "-" if run["sent"] is None else run["sent"]
        last = f"last run {run['id']} {outcome}, sent {sent}"
    lock = "" if shard["lock"] is None else f"; lock held by {shard['lock']}"
    return f"shard {shard['shard']}: {last}{lock}"


def show_status(summary: Summary) -> None:
    """The lock, the runs and the destinations of a state file (from `status_details`); the
    summary lines (ledger, state) follow."""
    out = console()
    d = summary.details
    out.print(escape("lock: " + ("free" if d["lock"] is None else f"held by {d['lock']}")))
    if d["shards"]:
        out.print(escape(f"shards ({len(d['shards'])}):"))
        for shard in d["shards"]:
            out.print(escape(f"  {_shard_line(shard)}"))
    out.print(escape(f"runs ({len(d['runs'])} latest):"))
    for r in d["runs"]:
        counts = r["counts"] or {}
        outcome = "unfinished" if r["exit_code"] is None else f"exit_code {r['exit_code']}"
        to = "" if r["destination"] is None else f", destination #{r['destination']}"
        shown = {name: counts.get(name, "-") for name in ("read", "sent", "rejected")}
        out.print(
            escape(f"  {r['started_at']} {r['id']} {r['command']} {outcome}: {_pairs(shown)}{to}")
        )
    out.print(escape(f"destinations ({len(d['destinations'])}):"))
    for dest in d["destinations"]:
        out.print(
            escape(
                f"  #{dest['id']} {dest['api_url']} account {dest['account'] or 'unclaimed'}: "
                f"ledger "
                f"{dest['ledger']}, {_plural(len(dest['checkpoints']), 'checkpoint')}"
            )
        )
        for c in dest["checkpoints"]:
            where = "done" if c["done"] else f"line {c['line']}"
            out.print(escape(f"    {c['source']}: {where} ({c['updated_at']})"))
        for u in dest["undeliverable"]:
            if u["delivered_since"]:
                out.print(
                    escape(
                        f"    {u['delivered_since']} undeliverable events from run "
                        f"{u['run_id']} were delivered since (superseded)"
                    )
                )
            if u["open"]:
                out.print(
                    escape(
                        f"    {u['open']} undeliverable events from run {u['run_id']} are "
                        "still not delivered: re-run the same command to send them"
                    )
                )


def write_json(obj: Any) -> None:
    """The one machine-readable object of `--json`, on stdout."""
    import orjson

    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
