"""``segmetro map`` and ``validate --sample``: the selection written out, or only counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from segmetro.dedup import RunDeduper, expected_ids
from segmetro.errors import Interrupted
from segmetro.mapping import FieldStats, MappingSet
from segmetro.models import Counts, Mapped, Record, Reject
from segmetro.pipeline.rejects import WRITE_BATCH, RejectSink
from segmetro.pipeline.select import deduplicate, select, selected
from segmetro.sources import InputSet, iter_records
from segmetro.summary import MOSTLY_EMPTY_SHARE, Summary, high_reject_warnings
from segmetro.window import Window

if TYPE_CHECKING:
    from segmetro.billing import BillingPreview


@dataclass
class MapReport:
    """What `segmetro map` did."""

    counts: Counts
    rejects: list[Reject] = field(default_factory=list)
    rejects_path: Path | None = None
    inputs: int = 0
    billing: BillingPreview | None = None
    #: events counted as emitted that an interruption kept from the output (at most this many)
    unwritten: int = 0

    def fill(self, summary: Summary, names: Sequence[str]) -> None:
        summary.selection(self.counts, names)
        if self.unwritten:
            summary.warnings.append(
                f"interrupted: up to {self.unwritten} of the {self.counts.emitted} events counted "
                "as emitted were not written to the output"
            )


def run_map(
    mappings: MappingSet,
    inputs: InputSet,
    *,
    window: Window,
    out: IO[bytes],
    rejects_path: Path | None = None,
    on_bytes: Callable[[int], None] | None = None,
    workers: int = 1,
    counts: Counts | None = None,
    billing: BillingPreview | None = None,
) -> MapReport:
    """Write the exact Metronome events for `inputs` as JSON lines to `out`.

    With ``workers > 1`` and several re-readable inputs, inputs are read and mapped in that many
    worker processes (``segmetro.workers``); the duplicate check and the writing stay here, in
    input order, so output and rejects are the same as with one process. `counts` (new by
    default) is kept current as the run goes, for progress displays; `billing` previews each
    event written.
    """
    from segmetro.pipeline import workers as parallel

    counts = counts if counts is not None else Counts()
    with (
        RejectSink(rejects_path) as sink,
        RunDeduper(expected=expected_ids(inputs.total_bytes)) as deduper,
    ):
        stream: Iterator[Mapped | Reject] | Iterator[Record | Reject]
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
            stream = iter_records(inputs, on_bytes=on_bytes)
            items = select(
                stream, mappings, window=window, counts=counts, deduper=deduper, encode=True
            )
        report = MapReport(
            counts=counts,
            rejects=sink.shown,
            rejects_path=rejects_path,
            inputs=len(inputs.objects),
            billing=billing,
        )
        pending: list[bytes] = []
        in_flight = 0  # events of a write under way

        def write_pending() -> None:
            # taken out first: a write cut short by Ctrl-C is never sent again
            nonlocal in_flight
            in_flight = len(pending)
            block = b"".join(pending)
            pending.clear()
            out.write(block)
            in_flight = 0

        try:
            for item in items:
                if isinstance(item, Reject):
                    sink.add(item)
                    continue
                assert item.line is not None
                if billing is not None:
                    billing.add(item.payload, item.record.coords)
                pending.append(item.line)
                if len(pending) >= WRITE_BATCH:
                    write_pending()
            write_pending()
        except KeyboardInterrupt:
            # not written now: a reader that stopped reading would make the write wait forever
            report.unwritten = in_flight + len(pending)
            raise Interrupted(report) from None
        finally:
            _close(items)
            _close(stream)
        return report


def _close(stream: Iterator[object]) -> None:
    """Stop a stream now (worker processes with it), not whenever it is collected."""
    close = getattr(stream, "close", None)
    if close is not None:
        close()


@dataclass
class SampleReport:
    """What `segmetro validate --sample` found."""

    counts: Counts
    stats: FieldStats
    rejects: list[Reject]
    #: (mapping, mapping) -> messages on which both made an event with the same transaction_id
    collisions: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: one message where each pair collided, as ``path:line``
    collision_examples: dict[tuple[str, str], str] = field(default_factory=dict)

    def fill(self, summary: Summary, names: Sequence[str]) -> None:
        """The sample's summary, with a warning for each thing that will likely cost money:
        a mapping that matches nothing or rejects much, a field empty in most events, two
        mappings whose events of one message share a transaction_id."""
        summary.selection(self.counts, names)
        summary.warnings.extend(high_reject_warnings(self.counts, names))
        fields = []
        for row in self.stats.rows():
            if not row.matched:
                continue
            fields.append(
                {"mapping": row.mapping, "field": row.field, "empty": row.missing,
                 "matched": row.matched}
            )  # fmt: skip
            if row.missing / row.matched > MOSTLY_EMPTY_SHARE:
                summary.warnings.append(
                    f"mapping {row.mapping!r}: {row.field} is empty in "
                    f"{100 * row.missing / row.matched:.0f}% of its events "
                    f"({row.missing} of {row.matched})"
                )
        for (first, second), n in self.collisions.items():
            summary.warnings.append(
                f"mappings {first!r} and {second!r} both fire on {n} message(s) and give their "
                f"events the same transaction_id (e.g. {self.collision_examples[first, second]}): "
                "Metronome keeps only the first; make the transaction_ids differ"
            )
        summary.details["fields"] = fields


def run_sample(mappings: MappingSet, inputs: InputSet, *, window: Window) -> SampleReport:
    """Run a mapping over a sample without writing anything, collecting per-field statistics
    and the pairs of mappings that give one message's events the same transaction_id."""
    counts = Counts()
    stats = FieldStats()
    report = SampleReport(counts=counts, stats=stats, rejects=[])
    with (
        RejectSink(None) as sink,
        RunDeduper(expected=expected_ids(inputs.total_bytes)) as deduper,
    ):
        stream = selected(iter_records(inputs), mappings, window=window, counts=counts, stats=stats)
        try:
            for item in deduplicate(_collisions(stream, report), deduper, counts):
                if isinstance(item, Reject):
                    sink.add(item)
        except KeyboardInterrupt:
            report.rejects = sink.shown
            raise Interrupted(report) from None
    report.rejects = sink.shown
    return report


def _collisions(
    stream: Iterable[Mapped | Reject], report: SampleReport
) -> Iterator[Mapped | Reject]:
    """Note two mappings that made events of one message with one transaction_id (Metronome
    would keep only the first); the events of one message come one after another."""
    seen: dict[str, str] = {}
    current: Record | None = None
    for item in stream:
        if isinstance(item, Mapped):
            if item.record is not current:
                current, seen = item.record, {}
            tid = str(item.payload["transaction_id"])
            first = seen.setdefault(tid, item.mapping)
            if first != item.mapping:
                pair = (first, item.mapping)
                report.collisions[pair] += 1
                report.collision_examples.setdefault(pair, item.record.coords)
        yield item
