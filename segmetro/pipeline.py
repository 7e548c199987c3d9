"""Compose the stages: sources → triggers/mapping → window and duplicate checks → an output.

Every function here returns a report and never prints; ``cli.py`` renders the reports.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

from segmetro.dedup import RunDeduper
from segmetro.delivery import DeliveryStats, Outbound, SenderConfig, deliver
from segmetro.errors import DeliveryError
from segmetro.mapping import FieldStats, MappingSet
from segmetro.models import Counts, Mapped, Reason, Record, Reject
from segmetro.sources import InputSet, iter_records
from segmetro.window import Window

#: How many rejects a report keeps in memory to show the user; the rejects file keeps all.
SHOWN_REJECTS = 20


class RejectSink:
    """Counts every reject, keeps the first few for display, and writes all of them to a file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.shown: list[Reject] = []
        self.written = 0
        self._fh: IO[bytes] | None = path.open("wb") if path is not None else None

    def add(self, reject: Reject) -> None:
        if len(self.shown) < SHOWN_REJECTS:
            self.shown.append(reject)
        if self._fh is not None:
            self._fh.write(orjson.dumps(reject.to_json(), option=orjson.OPT_APPEND_NEWLINE))
            self.written += 1

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RejectSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def conflict_reject(mapped: Mapped, first: dict[str, Any] | None) -> Reject:
    """Metronome keeps the first event of a transaction_id; a different later one would be lost."""
    tid = mapped.payload["transaction_id"]
    detail = (
        f"transaction_id {tid!r} was already emitted in this run with a different payload; "
        "Metronome keeps only the first. first: "
        + orjson.dumps(first).decode()
        + " later: "
        + orjson.dumps(mapped.payload).decode()
    )
    return Reject(
        reason=Reason.CONFLICT,
        detail=detail,
        source=mapped.record.coords,
        mapping=mapped.mapping,
        event=mapped.record.event,
        payload=mapped.payload,
    )


def select(
    stream: Iterable[Record | Reject],
    mappings: MappingSet,
    *,
    window: Window,
    counts: Counts,
    deduper: RunDeduper | None,
    stats: FieldStats | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> Iterator[Mapped | Reject]:
    """Map every record; yield each event to send and each reject, counting everything else.

    Filtered messages, events outside ``[since, until)`` and identical duplicates are counted and
    dropped here; everything that will not reach Metronome for any other reason is yielded as a
    Reject so the caller can write it down.
    """
    apply = mappings.apply
    selects = window.selects
    ingest_problem = window.ingest_problem
    rejected = counts.rejected
    for item in stream:
        if isinstance(item, Reject):
            rejected[item.reason] += 1
            yield item
            continue
        counts.read += 1
        if on_record is not None:
            on_record(item)
        results = apply(item, stats)
        if not results:
            counts.filtered += 1
            continue
        counts.matched += 1
        for result in results:
            if isinstance(result, Reject):
                rejected[result.reason] += 1
                yield result
                continue
            timestamp = result.payload["timestamp"]
            if not selects(timestamp):
                counts.outside_window += 1
                continue
            problem = ingest_problem(timestamp)
            if problem is not None:
                rejected[problem[0]] += 1
                yield Reject(
                    reason=problem[0],
                    detail=problem[1],
                    source=item.coords,
                    mapping=result.mapping,
                    event=item.event,
                    payload=result.payload,
                )
                continue
            if deduper is not None:
                verdict = deduper.check(result.payload["transaction_id"], result.payload)
                if verdict.status == "duplicate":
                    counts.duplicates += 1
                    continue
                if verdict.status == "conflict":
                    rejected[Reason.CONFLICT] += 1
                    yield conflict_reject(result, verdict.first_payload)
                    continue
            counts.emitted += 1
            yield result


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
) -> MapReport:
    """Write the exact Metronome events for `inputs` as JSON lines to `out`."""
    counts = Counts()
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    with RejectSink(rejects_path) as sink, RunDeduper() as deduper:
        stream = iter_records(inputs, on_bytes=on_bytes)
        for item in select(stream, mappings, window=window, counts=counts, deduper=deduper):
            if isinstance(item, Reject):
                sink.add(item)
            else:
                out.write(dumps(item.payload, option=newline))
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

    @property
    def exit_code(self) -> int:
        if self.fatal is not None:
            return self.fatal_code
        return 1 if self.counts.rejected_total else 0

    def to_json(self) -> dict[str, Any]:
        d = self.delivery
        elapsed = d.elapsed
        out = self.counts.to_json()
        out.update(
            sent=d.sent,
            unsent=self.counts.emitted - d.sent,
            retries=d.retries,
            rate_limited=d.rate_limited,
            batches=d.batches,
            requests=d.requests,
            elapsed_s=round(elapsed, 3),
            events_per_s=round(d.sent / elapsed, 1) if elapsed > 0 else 0.0,
            exit_code=self.exit_code,
            error=self.fatal,
        )
        return out


class _Hooks:
    """Delivery outcomes become counts and rejects-file entries."""

    def __init__(self, counts: Counts, sink: RejectSink) -> None:
        self.counts = counts
        self.sink = sink

    def delivered(self, items: Sequence[Outbound]) -> None:
        del items

    def failed(self, item: Outbound, reason: str, detail: str) -> None:
        mapped: Mapped = item.ref
        self.counts.emitted -= 1
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


async def run_replay(
    mappings: MappingSet,
    inputs: InputSet,
    *,
    window: Window,
    sender: SenderConfig,
    rejects_path: Path | None = None,
    client: httpx.AsyncClient | None = None,
    on_bytes: Callable[[int], None] | None = None,
    on_tick: Callable[[Counts, DeliveryStats], None] | None = None,
    tick_seconds: float = 0.25,
) -> ReplayReport:
    """Send every selected event to Metronome; rejects and dead letters go to `rejects_path`."""
    counts = Counts()
    stats = DeliveryStats()
    with RejectSink(rejects_path) as sink, RunDeduper() as deduper:
        hooks = _Hooks(counts, sink)

        def outbound() -> Iterator[Outbound]:
            stream = iter_records(inputs, on_bytes=on_bytes)
            for item in select(stream, mappings, window=window, counts=counts, deduper=deduper):
                if isinstance(item, Reject):
                    sink.add(item)
                else:
                    yield Outbound(payload=item.payload, ref=item)

        ticker = None
        if on_tick is not None:
            ticker = asyncio.create_task(_tick(on_tick, counts, stats, tick_seconds))
        report = ReplayReport(counts=counts, delivery=stats, rejects_path=rejects_path)
        try:
            await deliver(outbound(), config=sender, client=client, hooks=hooks, stats=stats)
        except DeliveryError as exc:
            report.fatal = str(exc)
            report.fatal_code = exc.exit_code
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            sink.flush()
        report.rejects = sink.shown
        return report


async def _tick(
    on_tick: Callable[[Counts, DeliveryStats], None],
    counts: Counts,
    stats: DeliveryStats,
    seconds: float,
) -> None:
    while True:
        await asyncio.sleep(seconds)
        on_tick(counts, stats)
