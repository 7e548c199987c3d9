"""``segmetro map`` and ``validate --sample``: the selection written out, or only counted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from segmetro.billing import BillingPreview
from segmetro.dedup import RunDeduper
from segmetro.mapping import FieldStats, MappingSet
from segmetro.models import Counts, Reject
from segmetro.pipeline.rejects import WRITE_BATCH, RejectSink
from segmetro.pipeline.select import deduplicate, select
from segmetro.sources import InputSet, iter_records
from segmetro.window import Window


@dataclass
class MapReport:
    """What `segmetro map` did."""

    counts: Counts
    rejects: list[Reject] = field(default_factory=list)
    rejects_path: Path | None = None
    inputs: int = 0
    billing: BillingPreview | None = None


def run_map(
    mappings: MappingSet,
    inputs: InputSet,
    *,
    window: Window,
    out: IO[bytes],
    rejects_path: Path | None = None,
    on_bytes: Callable[[int], None] | None = None,
    workers: int = 1,
    billing: BillingPreview | None = None,
) -> MapReport:
    """Write the exact Metronome events for `inputs` as JSON lines to `out`.

    With ``workers > 1`` and several re-readable inputs, inputs are read and mapped in that many
    worker processes (``segmetro.workers``); the duplicate check and the writing stay here, in
    input order, so output and rejects are the same as with one process. `billing` previews
    each event written.
    """
    from segmetro.pipeline import workers as parallel

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
            if billing is not None:
                billing.add(item.payload, item.record.coords)
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
            billing=billing,
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
