"""What the user sees on stderr: summaries, rejects, warnings, progress. rich lives here."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape

from segmetro.models import Counts, Reject


def console() -> Console:
    """A stderr console built at call time, so redirected streams (tests, cron) are honoured."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def error(message: str) -> None:
    console().print(f"[bold red]error:[/bold red] {escape(message)}")


def warning(message: str) -> None:
    console().print(f"[yellow]warning:[/yellow] {escape(message)}")


def info(message: str) -> None:
    console().print(escape(message))


def counts_lines(counts: Counts, *, extra: Sequence[tuple[str, Any]] = ()) -> list[str]:
    """The summary as plain lines; the wording is part of the contract (tests pin it)."""
    head = (
        f"read {counts.read}, matched {counts.matched}, filtered {counts.filtered}, "
        f"outside window {counts.outside_window}, emitted {counts.emitted}, "
        f"duplicates {counts.duplicates}, rejected {counts.rejected_total}"
    )
    if counts.unchanged:
        head += f", unchanged (sent before) {counts.unchanged}"
    lines = [head]
    if extra:
        lines.append(", ".join(f"{name} {value}" for name, value in extra))
    if counts.rejected:
        by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.rejected.items()))
        lines.append(f"rejected by reason: {by_reason}")
    return lines


def summary(counts: Counts, *, extra: Sequence[tuple[str, Any]] = ()) -> None:
    out = console()
    for line in counts_lines(counts, extra=extra):
        out.print(escape(line))


def skipped_inputs(inputs: Any) -> None:
    """Say what the window or --source-id pruned from an S3 listing, so nothing looks lost."""
    if inputs.skipped_objects:
        console().print(
            escape(
                f"skipped {inputs.skipped_objects} objects ({inputs.skipped_bytes} bytes) whose "
                "Segment day folder or source cannot hold selected events"
            )
        )


def rejects(
    shown: Iterable[Reject], *, total: int, path: str | None, appended: bool = False
) -> None:
    """Show the first rejects with their coordinates, and where the rest are."""
    out = console()
    listed = 0
    for reject in shown:
        where = f" [{reject.mapping}]" if reject.mapping else ""
        out.print(escape(f"  {reject.source}{where} {reject.reason}: {reject.detail}"))
        listed += 1
    if path is not None and appended:
        out.print(escape(f"{total} rejects of this run appended to {path}"))
    elif path is not None:
        out.print(escape(f"all {total} rejects written to {path}"))
    elif total > listed:
        out.print(escape(f"  ... and {total - listed} more (use --rejects FILE to keep them all)"))


class Progress:
    """A rich progress bar on a terminal; a plain status line every few seconds otherwise."""

    def __init__(
        self, *, total_bytes: int | None, quiet: bool, interval: float = 5.0, label: str = "read"
    ) -> None:
        self.total_bytes = total_bytes
        self.quiet = quiet
        self.interval = interval
        self.label = label
        self.done_bytes = 0
        self.status = ""
        self._started = time.monotonic()
        self._last_line = self._started
        self._console = console()
        self._live = not quiet and self._console.is_terminal
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self._live:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=self._console,
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total_bytes, status="")
        return self

    def advance(self, nbytes: int) -> None:
        self.done_bytes += nbytes
        if self._bar is not None:
            self._bar.update(self._task, advance=nbytes)

    def update(self, status: str) -> None:
        """Set the status text; off a terminal, print it at most every `interval` seconds."""
        self.status = status
        if self._bar is not None:
            self._bar.update(self._task, status=escape(status))
            return
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._console.print(escape(self.plain_line(now)))

    def plain_line(self, now: float | None = None) -> str:
        elapsed = (now if now is not None else time.monotonic()) - self._started
        if self.total_bytes:
            pct = 100.0 * self.done_bytes / self.total_bytes
            where = f"{self.done_bytes}/{self.total_bytes} bytes ({pct:.0f}%)"
        else:
            where = f"{self.done_bytes} bytes"
        return f"[{elapsed:6.1f}s] {self.label} {where} {self.status}".rstrip()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
            self._bar = None


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


def delivery_extra(report: Any) -> list[tuple[str, Any]]:
    """The replay line of the summary: where every emitted event went."""
    stats = report.delivery
    rate = stats.sent / stats.elapsed if stats.elapsed > 0 else 0.0
    return [
        ("sent", stats.sent),
        ("dead-lettered", stats.failed),
        ("unsent", report.unsent + report.not_handed),
        ("batches", stats.batches),
        ("retries", stats.retries),
        ("429s", stats.rate_limited),
        ("elapsed", f"{stats.elapsed:.1f}s"),
        ("events/s", f"{rate:.0f}"),
    ]


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
    """The dry-run plan, terraform style: the summary first, then breakdowns and diffs."""
    out = console()
    c = result.counts
    cats = result.categories
    rejected = c.rejected_total
    out.print(
        escape(
            f"Plan: {cats['new']} new, {cats['unchanged']} unchanged, {cats['changed']} changed, "
            f"{c.filtered} filtered, {rejected} rejected"
        )
    )
    if result.target is not None:
        out.print(escape(f"  ({result.target.note})"))
    for warn in result.warnings:
        warning(warn)
    if result.inputs_skipped:
        out.print(
            escape(
                f"  {result.inputs_skipped} of {result.inputs_total} inputs already done "
                "(a replay skips them)"
            )
        )
    if c.rejected:
        out.print(escape(f"  rejected by reason: {_counter_line(c.rejected)}"))
    if c.duplicates or c.outside_window:
        out.print(
            escape(
                f"  also: {c.duplicates} duplicates in the input, "
                f"{c.outside_window} outside --since/--until"
            )
        )
    for title, table in (
        ("by mapping", result.by_mapping),
        ("by event_type", result.by_event_type),
        ("by day", result.by_day),
    ):
        if table:
            out.print(escape(f"{title}:"))
            for key, counter in sorted(table.items()):
                out.print(escape(f"  {key}: {_counter_line(counter)}"))
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
    rejects(result.rejects, total=rejected, path=None)
    if result.billing is not None:
        billing(result.billing)


def billing(preview: Any) -> None:
    """The billing preview's lines (totals first, top lines of each list)."""
    out = console()
    for line in preview.text_lines():
        out.print(escape(line))


def show_diff(result: Any, *, old: str, new: str) -> None:
    out = console()
    out.print(
        escape(
            f"{old} -> {new}: {result.added} added, {result.removed} removed, "
            f"{result.changed} changed, {result.same} unchanged"
        )
    )
    symbol = {"added": "+", "removed": "-", "changed": "~"}
    for kind, d in result.samples:
        out.print(escape(f"  {symbol[kind]} {d.transaction_id} ({d.source}, mapping {d.mapping})"))
        for line in d.lines:
            out.print(escape(f"      {line}"))


def show_verify(report: Any) -> None:
    out = console()
    if report.nothing_checked is not None:
        out.print(escape(f"verified nothing: {report.nothing_checked}"))
        return
    out.print(
        escape(
            f"verified {report.sampled} delivered events: {report.found} found, "
            f"{len(report.missing)} missing, {len(report.duplicates)} duplicated, "
            f"{len(report.no_customer)} matched no customer, "
            f"{len(report.no_billable_metric)} matched no billable metric, "
            f"{len(report.different)} differ from what was sent"
        )
    )
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
        ("no customer", report.no_customer),
        ("no billable metric", report.no_billable_metric),
        ("different", report.different),
    ):
        if ids:
            shown = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
            out.print(escape(f"  {title}: {shown}"))


def _checkpoint_json(c: Any) -> dict[str, Any]:
    return {
        "source": c.source,
        "line": c.line,
        "done": c.done,
        "updated_at": c.updated_at,
        "destination": c.destination,
    }


def show_status(
    runs: Any,
    checkpoints: Any,
    *,
    ledger: int,
    lock: Any,
    path: str,
    destinations: Sequence[Any] = (),
    as_json: bool,
) -> None:
    if as_json:
        write_json(
            {
                "state": path,
                "ledger": ledger,
                "lock": None if lock is None else lock.describe(),
                "runs": [
                    {
                        "id": r.id,
                        "command": r.command,
                        "started_at": r.started_at,
                        "ended_at": r.ended_at,
                        "exit_code": r.exit_code,
                        "destination": r.destination,
                        "counts": r.counts,
                    }
                    for r in runs
                ],
                "checkpoints": [_checkpoint_json(c) for c in checkpoints],
                "destinations": [
                    {
                        **d.destination.to_json(),
                        "ledger": d.ledger,
                        "checkpoints": len(d.checkpoints),
                        "undeliverable": [
                            {
                                "run_id": u.run_id,
                                "events": u.events,
                                "delivered_since": u.delivered_since,
                                "open": u.still_open,
                            }
                            for u in d.undeliverable
                        ],
                    }
                    for d in destinations
                ],
            }
        )
        return
    out = console()
    out.print(escape(f"state {path}: {ledger} delivered events in the ledger"))
    out.print(escape("lock: " + ("free" if lock is None else f"held by {lock.describe()}")))
    out.print(escape(f"runs ({len(runs)} latest):"))
    for r in runs:
        counts = r.counts or {}
        outcome = "unfinished" if r.exit_code is None else f"exit={r.exit_code}"
        to = "" if r.destination is None else f" destination=#{r.destination}"
        out.print(
            escape(
                f"  {r.started_at} {r.id} {r.command} {outcome} "
                f"read={counts.get('read', '-')} sent={counts.get('sent', '-')} "
                f"rejected={counts.get('rejected_total', '-')}{to}"
            )
        )
    out.print(escape(f"destinations ({len(destinations)}):"))
    for d in destinations:
        dest = d.destination
        out.print(
            escape(
                f"  #{dest.id} {dest.api_url} account {dest.fingerprint}: {d.ledger} delivered "
                f"events, {_plural(len(d.checkpoints), 'checkpoint')}"
            )
        )
        for c in d.checkpoints:
            state = "done" if c.done else f"line {c.line}"
            out.print(escape(f"    {c.source}: {state} ({c.updated_at})"))
        for u in d.undeliverable:
            if u.delivered_since:
                out.print(
                    escape(
                        f"    {u.delivered_since} undeliverable events from run {u.run_id} "
                        "were delivered since (superseded)"
                    )
                )
            if u.still_open:
                out.print(
                    escape(
                        f"    {u.still_open} undeliverable events from run {u.run_id} are still "
                        "not delivered: re-run the same command to send them"
                    )
                )


def write_json(obj: Any) -> None:
    """The one machine-readable object of `--json`, on stdout."""
    import orjson

    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
