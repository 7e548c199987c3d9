"""Compose the stages: sources → triggers/mapping → window and duplicate checks → an output.

Every function here returns a report and never prints; ``cli.py`` renders the reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

from segmetro.dedup import RunDeduper, payload_digest
from segmetro.delivery import DeliveryStats, Outbound, SenderConfig, deliver
from segmetro.errors import ConfigError, SegmetroError
from segmetro.mapping import FieldStats, MappingSet
from segmetro.models import Counts, Mapped, Reason, Record, Reject
from segmetro.selection import deduplicate, select
from segmetro.sources import InputObject, InputSet, iter_records, read_object
from segmetro.state import (
    UNRECORDED_PAYLOAD,
    Checkpoint,
    CheckpointTracker,
    Destination,
    DestinationState,
    LedgerEntry,
    StateDB,
    normalize_api_url,
)
from segmetro.window import Window

#: How many rejects a report keeps in memory to show the user; the rejects file keeps all.
SHOWN_REJECTS = 20
#: Output lines joined into one write by ``map``.
WRITE_BATCH = 1024


class RejectSink:
    """Counts every reject, keeps the first few for display, and writes all of them to a file.

    A write that fails (disk full, a bad path) is a `ConfigError`: the run stops rather than
    lose a reject, and nothing is checkpointed past what was written. A ``lazy`` sink (a run's
    own rejects file) creates the file and its directory at the first reject, so a run without
    rejects leaves no empty file behind.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        append: bool = False,
        run_id: str | None = None,
        lazy: bool = False,
    ) -> None:
        self.path = path
        self.append = append
        self.run_id = run_id
        self.shown: list[Reject] = []
        self.written = 0
        self.failed = False
        self._fh: IO[bytes] | None = None
        self._pending_open = path is not None and lazy
        if path is not None and not lazy:
            self._fh = self._open(path)

    def _open(self, path: Path) -> IO[bytes]:
        try:
            if self._pending_open:
                path.parent.mkdir(parents=True, exist_ok=True)
            return path.open("ab" if self.append else "wb")
        except OSError as exc:
            raise self._error(exc) from None

    @property
    def opened(self) -> bool:
        """Whether a file was (or is being) written: the path a summary may name."""
        return self.path is not None and not self._pending_open

    def _error(self, exc: OSError) -> ConfigError:
        self.failed = True
        return ConfigError(f"cannot write rejects file {self.path}: {exc.strerror}.")

    def add(self, reject: Reject) -> None:
        if len(self.shown) < SHOWN_REJECTS:
            self.shown.append(reject)
        if self._pending_open and self.path is not None:
            self._fh = self._open(self.path)
            self._pending_open = False
        if self._fh is not None:
            entry = reject.to_json()
            if self.run_id is not None:
                entry["run_id"] = self.run_id
            try:
                self._fh.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
            except OSError as exc:
                raise self._error(exc) from None
            self.written += 1

    def flush(self) -> None:
        if self._fh is not None:
            try:
                self._fh.flush()
            except OSError as exc:
                raise self._error(exc) from None

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError as exc:
                if not self.failed:  # the first failure was already reported
                    raise self._error(exc) from None

    def __enter__(self) -> RejectSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_rejects_path(state_path: Path, run_id: str) -> Path:
    """Where a replay run without ``--rejects`` writes its rejects: a file of its own."""
    return state_path.parent / "rejects" / f"{run_id}.jsonl"


def check_rejects_path(rejects: Path | None, inputs: InputSet, *, overwrite: bool) -> None:
    """Refuse a rejects file that is one of the inputs, or (for `overwrite`) holds rejects."""
    if rejects is None or not rejects.exists():
        return
    for obj in inputs.objects:
        path = obj._path
        if obj.kind == "file" and path is not None and os.path.samefile(path, rejects):
            raise ConfigError(
                f"--rejects {rejects} is also an input: write the rejects of this run to "
                "another file."
            )
    if overwrite and rejects.stat().st_size > 0:
        raise ConfigError(
            f"--rejects {rejects} already holds rejects (the record of events that were not "
            "billed); this command would overwrite it: choose another file."
        )


@dataclass
class MapReport:
    """What `segmetro map` did."""

    counts: Counts
    rejects: list[Reject] = field(default_factory=list)
    rejects_path: Path | None = None
    inputs: int = 0


def run_map(
    mappings: MappingSet,
    inputs: InputSet,
    *,
    window: Window,
    out: IO[bytes],
    rejects_path: Path | None = None,
    on_bytes: Callable[[int], None] | None = None,
    workers: int = 1,
) -> MapReport:
    """Write the exact Metronome events for `inputs` as JSON lines to `out`.

    With ``workers > 1`` and several re-readable inputs, inputs are read and mapped in that many
    worker processes (``segmetro.workers``); the duplicate check and the writing stay here, in
    input order, so output and rejects are the same as with one process.
    """
    from segmetro import workers as parallel

    counts = Counts()
    with RejectSink(rejects_path) as sink, RunDeduper() as deduper:
        if workers > 1 and parallel.can_run_parallel(mappings, inputs.objects):
            stream = parallel.run_parallel(
                mappings,
                inputs.objects,
                window=window,
                workers=workers,
                counts=counts,
                on_bytes=on_bytes,
            )
            items = deduplicate(stream, deduper, counts)
        else:
            records = iter_records(inputs, on_bytes=on_bytes)
            items = select(
                records, mappings, window=window, counts=counts, deduper=deduper, encode=True
            )
        pending: list[bytes] = []
        for item in items:
            if isinstance(item, Reject):
                sink.add(item)
                continue
            assert item.line is not None
            counts.emitted += 1
            pending.append(item.line)
            if len(pending) >= WRITE_BATCH:
                out.write(b"".join(pending))
                pending.clear()
        out.write(b"".join(pending))
        return MapReport(
            counts=counts,
            rejects=sink.shown,
            rejects_path=rejects_path,
            inputs=len(inputs.objects),
        )


@dataclass
class SampleReport:
    """What `segmetro validate --sample` found."""

    counts: Counts
    stats: FieldStats
    rejects: list[Reject]


def run_sample(mappings: MappingSet, inputs: InputSet, *, window: Window) -> SampleReport:
    """Run a mapping over a sample without writing anything, collecting per-field statistics."""
    counts = Counts()
    stats = FieldStats()
    with RejectSink(None) as sink, RunDeduper() as deduper:
        stream = iter_records(inputs)
        for item in select(
            stream, mappings, window=window, counts=counts, deduper=deduper, stats=stats
        ):
            if isinstance(item, Reject):
                sink.add(item)
            else:
                counts.emitted += 1
    return SampleReport(counts=counts, stats=stats, rejects=sink.shown)


@dataclass
class ReplayReport:
    """What `segmetro replay` did; `fatal` holds the message of an error that stopped the run."""

    counts: Counts
    delivery: DeliveryStats
    rejects: list[Reject] = field(default_factory=list)
    rejects_path: Path | None = None
    fatal: str | None = None
    fatal_code: int = 0
    warnings: list[str] = field(default_factory=list)
    inputs_total: int = 0
    inputs_skipped: int = 0
    run_id: str | None = None
    #: events mapped but never handed to the sender because the run stopped first
    not_handed: int = 0

    @property
    def unsent(self) -> int:
        """Events handed to the sender but neither delivered nor dead-lettered."""
        d = self.delivery
        return self.counts.emitted - d.sent - d.failed

    @property
    def exit_code(self) -> int:
        if self.fatal is not None:
            return self.fatal_code
        return 1 if self.counts.rejected_total or self.unsent or self.not_handed else 0

    def to_json(self) -> dict[str, Any]:
        d = self.delivery
        out = self.counts.to_json()
        out.update(
            sent=d.sent,
            dead_lettered=d.failed,
            unsent=self.unsent,
            not_handed=self.not_handed,
            retries=d.retries,
            rate_limited=d.rate_limited,
            batches=d.batches,
            requests=d.requests,
            elapsed_s=round(d.elapsed, 3),
            events_per_s=round(d.sent / d.elapsed, 1) if d.elapsed > 0 else 0.0,
            inputs=self.inputs_total,
            inputs_skipped=self.inputs_skipped,
            run_id=self.run_id,
            rejects_path=None if self.rejects_path is None else str(self.rejects_path),
            warnings=self.warnings,
            exit_code=self.exit_code,
            error=self.fatal,
        )
        return out


def run_signature(mapping_path: Path) -> str:
    """What a checkpoint is valid for, besides the window: the mapping's bytes."""
    return hashlib.sha256(mapping_path.read_bytes()).hexdigest()[:16]


def checkpoint_identity(identity: str, signature: str, window: Window) -> str:
    """An input's identity, the mapping and the window its checkpoint was made with."""
    since, until, _, _ = window.bounds()
    return f"{identity}|{signature}|{since or ''}|{until or ''}"


def _covers(old_since: str, old_until: str, window: Window) -> bool:
    """Whether a checkpoint made with the old window covers every event the new one selects."""
    since, until, _, _ = window.bounds()
    if old_since and (since is None or since < old_since):
        return False
    return not old_until or (until is not None and until <= old_until)


@dataclass
class Resume:
    """Where to start each input, from the checkpoints of earlier runs."""

    start: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def plan_resume(
    inputs: InputSet, state: DestinationState, signature: str, window: Window
) -> Resume:
    """Skip finished inputs and resume partly read ones, when their checkpoint still applies.

    A checkpoint applies when the input is unchanged (size/mtime or ETag), the mapping is the
    same, and its window covered the current one (so `--since 3d` in a daily cron job resumes).
    """
    resume = Resume()
    for obj in inputs.objects:
        if obj.kind == "stdin":
            continue
        checkpoint = state.checkpoint(obj.name)
        if checkpoint is None:
            continue
        identity, old_signature, old_since, old_until = (checkpoint.identity.split("|") + [""] * 3)[
            :4
        ]
        if identity != obj.identity:
            resume.warnings.append(
                f"{obj.name} changed since its checkpoint (was {identity}, now {obj.identity}); "
                "reading it again from the start (events already sent are skipped by the ledger)"
            )
        elif old_signature != signature:
            resume.warnings.append(
                f"{obj.name}: the mapping changed since its checkpoint; reading it again from "
                "the start (events already sent are skipped by the ledger)"
            )
        elif not _covers(old_since, old_until, window):
            resume.warnings.append(
                f"{obj.name}: --since/--until reach beyond the window of its checkpoint; reading "
                "it again from the start (events already sent are skipped by the ledger)"
            )
        elif checkpoint.done:
            resume.skipped.append(obj.name)
        elif checkpoint.line > 0:
            resume.start[obj.name] = checkpoint.line
    return resume


@dataclass
class PlanTarget:
    """Which destination a dry run plans against, and why: stated with the plan."""

    state: DestinationState | None
    note: str
    warning: str | None = None

    @property
    def destination(self) -> Destination | None:
        return None if self.state is None else self.state.destination

    def to_json(self) -> dict[str, Any]:
        dest = self.destination
        return {"destination": None if dest is None else dest.to_json(), "note": self.note}


def plan_target(db: StateDB | None, api_url: str, token: str) -> PlanTarget:
    """The destination a replay with this URL (and token, if set) would use; nothing is written.

    Without a token the account is unknown: the URL's only destination is used, and when it has
    several the plan treats every event as new rather than guess (with a warning).
    """
    if db is None:
        return PlanTarget(None, "no state file yet: every event is new")
    url = normalize_api_url(api_url)
    if token:
        dest = db.find_destination(url, token)
        if dest is None:
            return PlanTarget(
                None, f"nothing was sent to {url} with this token yet: every event is new"
            )
        how = (
            "unclaimed: a run with this token claims it"
            if dest.account is None
            else "the account of METRONOME_BEARER_TOKEN"
        )
        return PlanTarget(db.for_destination(dest), f"planned against {dest.describe()}, {how}")
    candidates = db.destinations(url)
    if not candidates:
        return PlanTarget(None, f"nothing was sent to {url} yet: every event is new")
    if len(candidates) == 1:
        (dest,) = candidates
        return PlanTarget(
            db.for_destination(dest),
            f"planned against {dest.describe()}, the only destination with this URL "
            "(set METRONOME_BEARER_TOKEN to plan for a given account)",
        )
    accounts = ", ".join(d.fingerprint for d in candidates)
    return PlanTarget(
        None,
        f"every event planned as new: {len(candidates)} destinations use {url}",
        warning=(
            f"{len(candidates)} destinations in {db.path} use {url} (accounts {accounts}); "
            "without METRONOME_BEARER_TOKEN the plan cannot tell which one a run would send "
            "to, so it plans as if nothing was sent. Set the token to plan for its account."
        ),
    )


def read_resumed(
    objects: Sequence[InputObject],
    resume: Resume,
    *,
    on_bytes: Callable[[int], None] | None,
    on_finish: Callable[[str], None] | None = None,
) -> Iterator[Record | Reject]:
    """Read each object from its resume line; `on_finish` only for objects read to the end.

    An object whose reading broke off (`unreadable`: a read error, an object gone) is not
    finished, so its checkpoint stays at the last good line and the next run retries it.
    """
    for obj in objects:
        complete = True
        for item in read_object(obj, start_line=resume.start.get(obj.name, 0), on_bytes=on_bytes):
            if type(item) is Reject and item.reason == Reason.UNREADABLE:
                complete = False
            yield item
        if complete and on_finish is not None:
            on_finish(obj.name)


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
        state: DestinationState | None,
        run_id: str | None,
        identities: dict[str, str],
    ) -> None:
        self.counts = counts
        self.sink = sink
        self.state = state
        self.run_id = run_id
        self.identities = identities
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
        for item in items:
            mapped: Mapped = item.ref
            self.resolve(mapped)
            entries.append(
                LedgerEntry.from_payload(mapped.payload, mapping=mapped.mapping, run_id=self.run_id)
            )
        self.save(entries)

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

    def save(self, entries: Sequence[LedgerEntry]) -> None:
        """Write acknowledged events and the checkpoints they allow, in one transaction."""
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
        self.state.flush(delivered=entries, checkpoints=checkpoints, undeliverable=undeliverable)
        for source in done:
            self._finished.discard(source)
            tracker.forget(source)


def changed_reject(mapped: Mapped, previous: LedgerEntry) -> Reject:
    before = previous.payload
    lines = [UNRECORDED_PAYLOAD] if before is None else field_diff(before, mapped.payload)
    changes = "; ".join(line.strip() for line in lines)
    return Reject(
        reason=Reason.CHANGED,
        detail=(
            f"transaction_id {mapped.payload['transaction_id']!r} was sent by run "
            f"{previous.run_id} with a different payload ({changes}); Metronome ignores a "
            "second event with the same transaction_id, so this one was not sent. To bill "
            "the new version, give it a new transaction_id (e.g. a suffix in the mapping)."
        ),
        source=mapped.record.coords,
        mapping=mapped.mapping,
        event=mapped.record.event,
        payload=mapped.payload,
    )


def field_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Terraform-style field changes: ``+ added``, ``- removed``, ``~ changed: old -> new``."""
    lines: list[str] = []
    for key in sorted(old.keys() | new.keys(), key=str):
        name = f"{prefix}{key}"
        if key not in old:
            lines.append(f"+ {name}: {orjson.dumps(new[key]).decode()}")
        elif key not in new:
            lines.append(f"- {name}: {orjson.dumps(old[key]).decode()}")
        elif old[key] != new[key] or type(old[key]) is not type(new[key]):
            if isinstance(old[key], dict) and isinstance(new[key], dict):
                lines.extend(field_diff(old[key], new[key], prefix=f"{name}."))
            else:
                before = orjson.dumps(old[key]).decode()
                after = orjson.dumps(new[key]).decode()
                lines.append(f"~ {name}: {before} -> {after}")
    return lines


LEDGER_CHUNK = 256


def against_ledger(
    pending: deque[Mapped], state: DestinationState | None
) -> Iterator[tuple[Mapped, str, LedgerEntry | None]]:
    """Pop each event off `pending` with its category: ``new``, ``unchanged`` or ``changed``.

    One ledger query per chunk. Events still in `pending` when the caller stops were never
    classified (a replay counts them as unsent).
    """
    found = (
        state.ledger_lookup([m.payload["transaction_id"] for m in pending])
        if state is not None
        else {}
    )
    while pending:
        mapped = pending.popleft()
        previous = found.get(mapped.payload["transaction_id"])
        if previous is None:
            yield mapped, "new", None
        elif previous.digest == payload_digest(mapped.payload):
            yield mapped, "unchanged", previous
        else:
            yield mapped, "changed", previous


async def run_replay(
    mappings: MappingSet,
    inputs: InputSet,
    *,
    window: Window,
    sender: SenderConfig,
    rejects_path: Path | None = None,
    rejects_lazy: bool = False,
    state: DestinationState | None = None,
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
        obj.name: checkpoint_identity(obj.identity, signature, window)
        for obj in todo
        if obj.kind != "stdin"
    }
    main_task = asyncio.current_task()
    with (
        RejectSink(
            rejects_path, append=state is not None, run_id=run_id, lazy=rejects_lazy
        ) as sink,
        RunDeduper() as deduper,
        _stop_on_sigterm(main_task),
    ):
        outcome = _Delivery(counts, sink, state=state, run_id=run_id, identities=identities)

        def classified(pending: deque[Mapped]) -> Iterator[Outbound]:
            for mapped, category, previous in against_ledger(pending, state):
                if category == "new" or (category == "changed" and resend_changed):
                    counts.emitted += 1
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
                _until_cancelled(stream, main_task),
                mappings,
                window=window,
                counts=counts,
                deduper=deduper,
                on_record=outcome.register_record,
            ):
                if isinstance(item, Reject):
                    sink.add(item)
                elif state is None:
                    counts.emitted += 1
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
        except asyncio.CancelledError:
            report.fatal = "interrupted; state is saved: re-run the same command to resume"
            report.fatal_code = 130
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            try:
                sink.flush()
                outcome.save(())
            except SegmetroError as exc:
                if report.fatal is None:
                    report.fatal, report.fatal_code = str(exc), exc.exit_code
            report.not_handed = len(pending)
            if sink.failed or not sink.opened:
                report.rejects_path = None
        report.rejects = sink.shown
        return report


def _until_cancelled(
    stream: Iterator[Record | Reject], task: asyncio.Task[Any] | None, every: int = 512
) -> Iterator[Record | Reject]:
    """Stop reading once the run is being cancelled (Ctrl-C, SIGTERM).

    Reading and mapping run synchronously inside the sender's pull, so a long stretch of input
    that sends nothing would otherwise hold off the cancellation until the input ends.
    """
    if task is None:
        yield from stream
        return
    for n, item in enumerate(stream):
        if n % every == 0 and task.cancelling():
            return
        yield item


@contextlib.contextmanager
def _stop_on_sigterm(task: asyncio.Task[Any] | None) -> Iterator[None]:
    """SIGTERM (a pod or service stop) ends the run like Ctrl-C: state saved, lock released."""
    loop = asyncio.get_running_loop()
    installed = False
    if task is not None:
        try:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):
            installed = False
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGTERM)


async def _tick(
    on_tick: Callable[[Counts, DeliveryStats], None],
    counts: Counts,
    stats: DeliveryStats,
    seconds: float,
) -> None:
    while True:
        await asyncio.sleep(seconds)
        on_tick(counts, stats)
