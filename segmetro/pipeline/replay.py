"""``segmetro replay``: the selection sent to Metronome, with its state (ledger, checkpoints)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from segmetro.dedup import RunDeduper, expected_ids
from segmetro.delivery import DeliveryStats, Outbound, SenderConfig, deliver
from segmetro.errors import ConfigError, SegmetroError, StateError
from segmetro.mapping import MappingSet
from segmetro.models import Counts, Mapped, Reason, Record, Reject
from segmetro.pipeline.ledger import (
    LEDGER_CHUNK,
    against_ledger,
    changed_reject,
    concurrent_conflict,
)
from segmetro.pipeline.rejects import RejectSink
from segmetro.pipeline.resume import CheckpointKey, Resume, plan_resume, read_resumed
from segmetro.pipeline.select import select
from segmetro.sources import InputSet
from segmetro.state import (
    Checkpoint,
    CheckpointTracker,
    LedgerEntry,
    SqlState,
    StateStore,
    new_run_id,
    open_state,
)
from segmetro.summary import Summary, delivery_extra, error_kind, selection_counts
from segmetro.window import Window


@dataclass
class ReplayReport:
    """What `segmetro replay` did; `fatal` holds the message of an error that stopped the run."""

    counts: Counts
    delivery: DeliveryStats
    rejects: list[Reject] = field(default_factory=list)
    rejects_path: Path | None = None
    fatal: str | None = None
    fatal_code: int = 0
    fatal_kind: str = "error"
    warnings: list[str] = field(default_factory=list)
    inputs_total: int = 0
    inputs_skipped: int = 0
    run_id: str | None = None
    #: ``K/N`` of a sharded run
    shard: str | None = None

    def delivery_counts(self) -> dict[str, int | float]:
        """Where the emitted events went, and how the sending went (``segmetro.summary``)."""
        d = self.delivery
        out: dict[str, int | float] = dict(
            delivery_extra(self.counts, sent=d.sent, dead_lettered=d.failed)
        )
        out.update(
            batches=d.batches,
            requests=d.requests,
            retries=d.retries,
            rate_limited=d.rate_limited,
            pace_cuts=d.pace_cuts,
            elapsed_s=round(d.elapsed, 3),
            events_per_s=round(d.sent / d.elapsed, 1) if d.elapsed > 0 else 0.0,
            inputs_total=self.inputs_total,
            inputs_skipped=self.inputs_skipped,
        )
        return out

    @property
    def unsent(self) -> int:
        """Emitted events the run neither delivered, dead-lettered nor found sent before."""
        return int(self.delivery_counts()["unsent"])

    @property
    def exit_code(self) -> int:
        if self.fatal is not None:
            return self.fatal_code
        return 1 if self.counts.rejected_total or self.unsent else 0

    def fill(self, summary: Summary, names: Sequence[str]) -> None:
        """The run's summary: the selection, where the emitted events went, the error."""
        summary.selection(self.counts, names)
        summary.extra.update(self.delivery_counts())
        summary.run_id = self.run_id
        summary.shard = self.shard
        summary.rejects = None if self.rejects_path is None else str(self.rejects_path)
        summary.warnings.extend(self.warnings)
        if self.fatal is not None:
            summary.error = {
                "kind": self.fatal_kind,
                "message": self.fatal,
                "exit_code": self.fatal_code,
            }

    def to_json(self) -> dict[str, Any]:
        """The counts recorded with the run in the state file (``status`` shows them)."""
        out: dict[str, Any] = selection_counts(self.counts)
        out.update(self.delivery_counts())
        out.update(
            rejected_by_reason=dict(sorted(self.counts.rejected.items())),
            shard=self.shard,
            run_id=self.run_id,
            rejects=None if self.rejects_path is None else str(self.rejects_path),
            exit_code=self.exit_code,
            error=self.fatal,
        )
        return out


class _Delivery:
    """Delivery outcomes become counts, rejects-file entries, ledger rows and checkpoints.

    Every acknowledgement is written to the state file at once (one small transaction per
    batch), so a crash re-sends at most the batches that were in flight.
    """

    def __init__(
        self,
        counts: Counts,
        sink: RejectSink,
        *,
        state: StateStore | None,
        run_id: str | None,
        identities: dict[str, str],
        resend_changed: bool = False,
    ) -> None:
        self.counts = counts
        self.sink = sink
        self.state = state
        self.run_id = run_id
        self.identities = identities
        self.resend_changed = resend_changed
        self.tracker = CheckpointTracker()
        self._finished: set[str] = set()
        self._undeliverable: list[tuple[str, str | None]] = []

    def register_record(self, record: Record) -> None:
        if self.state is not None:
            self.tracker.register(record.source, record.line)

    def register_event(self, mapped: Mapped) -> None:
        if self.state is not None:
            self.tracker.register(mapped.record.source, mapped.record.line, 1)

    def resolve(self, mapped: Mapped) -> None:
        if self.state is not None:
            self.tracker.resolve(mapped.record.source, mapped.record.line)

    def finish(self, source: str) -> None:
        if self.state is not None:
            self.tracker.finish(source)
            self._finished.add(source)

    def delivered(self, items: Sequence[Outbound]) -> None:
        entries = []
        sent: dict[str, Mapped] = {}
        for item in items:
            mapped: Mapped = item.ref
            self.resolve(mapped)
            entries.append(
                LedgerEntry.from_payload(mapped.payload, mapping=mapped.mapping, run_id=self.run_id)
            )
            sent[entries[-1].transaction_id] = mapped
        self.save(entries, sent)

    def failed(self, item: Outbound, reason: str, detail: str) -> None:
        mapped: Mapped = item.ref
        self.counts.rejected[reason] += 1
        self.sink.add(
            Reject(
                reason=reason,
                detail=detail,
                source=mapped.record.coords,
                mapping=mapped.mapping,
                event=mapped.record.event,
                payload=mapped.payload,
            )
        )
        if reason != Reason.UNDELIVERABLE:
            # Dead letters are final; undeliverable events are retried by the next run, so
            # the checkpoint must stay behind them.
            self.resolve(mapped)
        else:
            self._undeliverable.append((str(mapped.payload["transaction_id"]), self.run_id))
        self.save(())

    def save(self, entries: Sequence[LedgerEntry], sent: dict[str, Mapped] | None = None) -> None:
        """Write acknowledged events and the checkpoints they allow, in one transaction.

        An id another run (a shard) recorded meanwhile with another payload is a ``conflict``:
        both versions reached Metronome, which keeps whichever came first.
        """
        if self.state is None:
            return
        try:
            self.sink.flush()
        except ConfigError:
            # Metronome has these events: the ledger must say so; no checkpoint moves.
            self.state.flush(delivered=entries)
            raise
        tracker = self.tracker
        lines = tracker.advanced()
        done = {s for s in self._finished if tracker.is_done(s)}
        for source in done:
            safe = tracker.safe_line(source)
            lines[source] = safe if safe is not None else 0
        checkpoints = [
            Checkpoint(
                source=source,
                identity=self.identities[source],
                line=line,
                done=source in done,
                run_id=self.run_id,
            )
            for source, line in lines.items()
            if source in self.identities
        ]
        undeliverable, self._undeliverable = self._undeliverable, []
        conflicts = self.state.flush(
            delivered=entries, checkpoints=checkpoints, undeliverable=undeliverable
        )
        for _ours, theirs in () if self.resend_changed else conflicts:
            mapped = (sent or {})[theirs.transaction_id]
            self.counts.rejected[Reason.CONFLICT] += 1
            self.sink.add(concurrent_conflict(mapped, theirs))
        for source in done:
            self._finished.discard(source)
            tracker.forget(source)


async def run_replay(
    mappings: MappingSet,
    inputs: InputSet,
    *,
    window: Window,
    sender: SenderConfig,
    rejects_path: Path | None = None,
    rejects_lazy: bool = False,
    state: StateStore | None = None,
    run_id: str | None = None,
    signature: str = "",
    resend_changed: bool = False,
    client: httpx.AsyncClient | None = None,
    on_bytes: Callable[[int], None] | None = None,
    on_tick: Callable[[Counts, DeliveryStats], None] | None = None,
    tick_seconds: float = 0.25,
) -> ReplayReport:
    """Send every selected event to Metronome; rejects and dead letters go to `rejects_path`.

    With `state` (one destination's), finished inputs are skipped, a partly read one resumes at
    its checkpoint, events the ledger says were already delivered are not sent again, and every
    acknowledgement advances the ledger and the checkpoints. With `rejects_lazy` the rejects
    file is only created for a first reject; the report names it only if it was.
    """
    counts = Counts()
    stats = DeliveryStats()
    report = ReplayReport(
        counts=counts,
        delivery=stats,
        rejects_path=rejects_path,
        inputs_total=len(inputs.objects),
        run_id=run_id,
        shard=None if inputs.shard is None else inputs.shard.label,
    )
    resume = Resume()
    if state is not None and resend_changed:
        # Changed events of finished inputs were rejected by an earlier run: find them again.
        report.warnings.append(
            "--resend-changed: reading every input from the start, checkpoints ignored "
            "(events already sent with the same payload are skipped by the ledger)"
        )
    elif state is not None:
        resume = plan_resume(inputs, state, signature, window)
        report.warnings.extend(resume.warnings)
        report.inputs_skipped = len(resume.skipped)
    skipped = set(resume.skipped)
    todo = [obj for obj in inputs.objects if obj.name not in skipped]
    identities = {
        obj.name: CheckpointKey.of(obj.identity, signature, window).encode()
        for obj in todo
        if obj.kind != "stdin"
    }
    stopper = _Stopper(asyncio.current_task())
    with (
        RejectSink(
            rejects_path, append=state is not None, run_id=run_id, lazy=rejects_lazy
        ) as sink,
        RunDeduper(expected=expected_ids(inputs.total_bytes)) as deduper,
        stopper.installed(),
    ):
        outcome = _Delivery(
            counts,
            sink,
            state=state,
            run_id=run_id,
            identities=identities,
            resend_changed=resend_changed,
        )

        def classified(pending: deque[Mapped]) -> Iterator[Outbound]:
            for mapped, category, previous in against_ledger(pending, state):
                if category == "new" or (category == "changed" and resend_changed):
                    if category == "changed":
                        counts.resent_changed += 1
                    yield Outbound(payload=mapped.payload, ref=mapped)
                    continue
                if category == "unchanged":
                    counts.unchanged += 1
                else:
                    assert previous is not None
                    counts.rejected[Reason.CHANGED] += 1
                    sink.add(changed_reject(mapped, previous))
                outcome.resolve(mapped)

        pending: deque[Mapped] = deque()

        def outbound() -> Iterator[Outbound]:
            stream = read_resumed(todo, resume, on_bytes=on_bytes, on_finish=outcome.finish)
            for item in select(
                stopper.until_cancelled(stream),
                mappings,
                window=window,
                counts=counts,
                deduper=deduper,
                on_record=outcome.register_record,
            ):
                if isinstance(item, Reject):
                    sink.add(item)
                elif state is None:
                    yield Outbound(payload=item.payload, ref=item)
                else:
                    outcome.register_event(item)
                    pending.append(item)
                    if len(pending) >= LEDGER_CHUNK:
                        yield from classified(pending)
            if pending:
                yield from classified(pending)
            outcome.save(())

        ticker = None
        if on_tick is not None:
            ticker = asyncio.create_task(_tick(on_tick, counts, stats, tick_seconds))
        try:
            await deliver(outbound(), config=sender, client=client, hooks=outcome, stats=stats)
        except SegmetroError as exc:
            report.fatal = str(exc)
            report.fatal_code = exc.exit_code
            report.fatal_kind = error_kind(exc)
        except asyncio.CancelledError:
            report.fatal = "interrupted; state is saved: re-run the same command to resume"
            report.fatal_code = 130
            report.fatal_kind = "interrupted"
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
                assert on_tick is not None
                on_tick(counts, stats)  # the last figures, not those of the last tick
            try:
                sink.flush()
                outcome.save(())
            except SegmetroError as exc:
                if report.fatal is None:
                    report.fatal, report.fatal_code = str(exc), exc.exit_code
                    report.fatal_kind = error_kind(exc)
            if sink.failed or not sink.opened:
                report.rejects_path = None
        report.rejects = sink.shown
        return report


class _Stopper:
    """Ctrl-C and SIGTERM end the run like a cancellation: state saved, lock released.

    Reading and mapping run synchronously inside the sender's pull, so the event loop does not
    get control while a read waits (a pipe whose writer is quiet): the handler then also ends
    that read, and the input stream ends there; elsewhere it only cancels the run's task.
    """

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.reading = False

    def handle(self, signum: int, frame: object) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.reading:
            raise _ReadStopped

    def until_cancelled(
        self, stream: Iterator[Record | Reject], every: int = 512
    ) -> Iterator[Record | Reject]:
        """Stop reading once the run is being cancelled."""
        task = self.task
        n = 0
        while True:
            if task is not None and n % every == 0 and task.cancelling():
                return
            self.reading = True
            try:
                item = next(stream)
            except (StopIteration, _ReadStopped):
                return
            finally:
                self.reading = False
            n += 1
            yield item

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if self.task is None or threading.current_thread() is not threading.main_thread():
            yield  # only the main thread may set signal handlers
            return
        previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _ReadStopped(Exception):
    """Raised by a signal into a read that waits, to end the input stream there."""


async def _tick(
    on_tick: Callable[[Counts, DeliveryStats], None],
    counts: Counts,
    stats: DeliveryStats,
    seconds: float,
) -> None:
    while True:
        await asyncio.sleep(seconds)
        on_tick(counts, stats)


def replay_with_state(
    mappings: MappingSet,
    inputs: InputSet,
    *,
    window: Window,
    sender: SenderConfig,
    state_path: str | Path,
    options: dict[str, Any],
    signature: str,
    rejects_dir: Path,
    rejects_path: Path | None = None,
    resend_changed: bool = False,
    on_warning: Callable[[str], None] = lambda _text: None,
    on_bytes: Callable[[int], None] | None = None,
    on_tick: Callable[[Counts, DeliveryStats], None] | None = None,
    run_id: str | None = None,
) -> ReplayReport:
    """A whole replay run with its state: the lock, the destination, the run record.

    The lock (the shard's, for a sharded run: ``inputs.shard``) is held for the run and
    released however it ends (a crashed run's lock is taken over, with a warning); the
    destination is the API URL plus the token's account (a migrated destination is claimed,
    and given back if the run fails before Metronome accepted anything); the run is recorded
    with its summary and exit code. Without ``rejects_path`` the run writes its rejects to a
    file of its own in ``rejects_dir``, created at the first. A state that goes away mid-run
    (a lost database connection) ends the run with its error; what was saved is kept.
    """
    shard = None if inputs.shard is None else inputs.shard.label
    if shard is not None:
        options = {**options, "shard": shard}
    with open_state(state_path) as db:
        run_id = run_id or new_run_id()
        stale = db.acquire_lock(run_id, shard)
        if stale is not None:
            on_warning(f"took over the lock left by {stale.describe()}, which is gone")
        exit_code: int | None = None
        report: ReplayReport | None = None
        begun = False
        try:
            destination = db.destination(sender.api_url, sender.token)
            if db.claimed is not None:
                on_warning(
                    f"{destination.describe()} held the checkpoints and ledger of an older "
                    "state file, whose account was not recorded; this token now claims them "
                    "(runs with another token to this URL start from zero)"
                )
            db.begin_run("replay", options, run_id=run_id, destination=destination)
            begun = True
            report = asyncio.run(
                run_replay(
                    mappings,
                    inputs,
                    window=window,
                    sender=sender,
                    rejects_path=rejects_path or rejects_dir / f"{run_id}.jsonl",
                    rejects_lazy=rejects_path is None,
                    state=db.for_destination(destination),
                    run_id=run_id,
                    signature=signature,
                    resend_changed=resend_changed,
                    on_bytes=on_bytes,
                    on_tick=on_tick,
                )
            )
            exit_code = report.exit_code
        except KeyboardInterrupt:
            exit_code = 130
            raise
        except SegmetroError as exc:
            exit_code = exc.exit_code
            raise
        finally:
            _record_end(db, report, run_id, begun, exit_code, on_warning)
    return report


def _record_end(
    db: SqlState,
    report: ReplayReport | None,
    run_id: str,
    begun: bool,
    exit_code: int | None,
    on_warning: Callable[[str], None],
) -> None:
    """Give back a failed claim, record the run's end, release the lock.

    When the state itself failed (the report already says so), failing again here must not
    hide the report: it becomes a warning.
    """
    summary = report.to_json() if report is not None else {}
    failed_first = report is None or (report.fatal is not None and not report.delivery.sent)
    try:
        if db.claimed is not None and failed_first:
            db.unclaim(db.claimed)
        if begun:
            db.end_run(run_id, summary, 1 if exit_code is None else exit_code)
        db.release_lock(run_id)
    except StateError as exc:
        if report is None or report.fatal is None:
            raise
        on_warning(f"could not record the end of run {run_id}: {exc}")
