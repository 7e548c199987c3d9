"""The one selection every command runs: records in, events to send and rejects out.

``selected`` maps each record with every mapping whose trigger fires and applies the
``--since/--until`` window and Metronome's ingest window; ``deduplicate`` is the in-run
duplicate check; ``select`` is the two in a row. ``map``, ``replay``, ``--dry-run``, ``diff``,
``validate --sample`` and the worker processes of ``map --workers`` all run these, so a rule
about which events go out lives here once. Every record ends counted or yielded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import orjson

from segmetro.dedup import NEW, RunDeduper, conflict_reject
from segmetro.mapping import FieldStats, MappingSet
from segmetro.models import Counts, Mapped, Reason, Record, Reject
from segmetro.window import Window

__all__ = ["deduplicate", "select", "selected"]


def select(
    stream: Iterable[Record | Reject],
    mappings: MappingSet,
    *,
    window: Window,
    counts: Counts,
    deduper: RunDeduper | None,
    stats: FieldStats | None = None,
    on_record: Callable[[Record], None] | None = None,
    encode: bool = False,
) -> Iterator[Mapped | Reject]:
    """The one selection every command runs: map, window, then the in-run duplicate check.

    Yields each event to send and each reject; filtered messages, events outside
    ``[since, until)`` and identical duplicates are counted and dropped. ``encode`` serialises
    each event once as its output line (``Mapped.line``), which the duplicate check then uses.
    Worker processes run `selected` and leave `deduplicate` to the parent.
    """
    selected_ = selected(
        stream, mappings, window=window, counts=counts, stats=stats, on_record=on_record,
        encode=encode,
    )  # fmt: skip
    if deduper is None:
        return _emitted(selected_, counts)
    return deduplicate(selected_, deduper, counts)


def selected(
    stream: Iterable[Record | Reject],
    mappings: MappingSet,
    *,
    window: Window,
    counts: Counts,
    stats: FieldStats | None = None,
    on_record: Callable[[Record], None] | None = None,
    encode: bool = False,
) -> Iterator[Mapped | Reject]:
    """Map every record and apply the window; every outcome is counted or yielded."""
    apply = mappings.apply
    selects = window.selects
    ingest_problem = window.ingest_problem
    lowest, upper = window.clear()
    reject = counts.reject
    fired = counts.mapping_matched
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    for item in stream:
        if type(item) is not Record:
            assert isinstance(item, Reject)
            counts.unreadable(item.reason)
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
            fired[result.mapping] += 1  # type: ignore[index]
            if type(result) is not Mapped:
                assert isinstance(result, Reject)
                reject(result.reason, result.mapping)
                yield result
                continue
            timestamp = result.payload["timestamp"]
            if not lowest <= timestamp < upper:
                if not selects(timestamp):
                    counts.outside_window += 1
                    continue
                problem = ingest_problem(timestamp)
                if problem is not None:
                    reject(problem[0], result.mapping)
                    yield Reject(
                        reason=problem[0],
                        detail=problem[1],
                        source=item.coords,
                        mapping=result.mapping,
                        event=item.event,
                        payload=result.payload,
                    )
                    continue
            if encode:
                result.line = dumps(result.payload, option=newline)
            yield result


def deduplicate(
    stream: Iterable[Mapped | Reject], deduper: RunDeduper, counts: Counts
) -> Iterator[Mapped | Reject]:
    """The in-run duplicate check: identical repeats are counted, different ones rejected, and
    the rest counted as emitted."""
    check = deduper.check
    check_encoded = deduper.check_encoded
    emitted = counts.mapping_emitted
    for item in stream:
        if isinstance(item, Reject):
            yield item
            continue
        tid = item.payload["transaction_id"]
        line = item.line
        verdict = check(tid, item.payload) if line is None else check_encoded(tid, line)
        if verdict is NEW:
            counts.emitted += 1
            emitted[item.mapping] += 1
            yield item
        elif verdict.status == "duplicate":
            counts.duplicates += 1
        else:
            counts.reject(Reason.CONFLICT, item.mapping)
            yield conflict_reject(item, verdict.first_payload)


def _emitted(stream: Iterable[Mapped | Reject], counts: Counts) -> Iterator[Mapped | Reject]:
    """Count the events of a selection without a duplicate check as emitted."""
    emitted = counts.mapping_emitted
    for item in stream:
        if isinstance(item, Mapped):
            counts.emitted += 1
            emitted[item.mapping] += 1
        yield item
