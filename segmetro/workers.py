"""The hot loop of ``segmetro map``, run in this process or in worker processes.

``mapped_lines`` is the loop itself: records in, output lines out, each payload serialised once
(the same bytes go to the output and to the in-run duplicate check). It takes the compiled
mapping's fast path (``Mapping.fast``) for the common event and the general path
(``MappingSet.apply``) for anything else, so its output is byte-identical to ``select``'s.

``run_parallel`` reads, filters and maps several input objects in worker processes, one object
per task. Each worker compiles the mapping itself from its YAML text (a ``MappingSet`` holds
generated functions and cannot be pickled) and appends its results, in chunks, to a spill file of
its own; the parent takes the files in input order, as they grow, and does the duplicate check
and the writing. Output and rejects are therefore exactly those of one process, in the same
order, and memory stays flat: results wait on disk, not in memory, when the parent lags behind.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue as queue_module
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import orjson

from segmetro.dedup import NEW, RunDeduper, conflict_reject
from segmetro.mapping import MappingSet
from segmetro.models import Counts, JsonObject, Mapped, Reason, Record, Reject
from segmetro.sources import Item, RawRecord
from segmetro.window import Window

#: records per chunk a worker hands to the parent
CHUNK_RECORDS = 2000
#: output lines joined before one write
WRITE_BATCH = 1024


class _Slow(Exception):
    """Internal: this record needs the general path."""


def as_record(item: Record | RawRecord) -> Record:
    """The ``Record`` of an item read lazily (`segmetro.sources.read_items`)."""
    if type(item) is Record:
        return item
    event, source, line = item  # type: ignore[misc]
    return Record(event, source, line)


def mapped_lines(
    stream: Iterable[Item],
    mappings: MappingSet,
    *,
    window: Window,
    counts: Counts,
    on_reject: Callable[[Reject], None],
) -> Iterator[tuple[bytes, str, int, JsonObject, Record | RawRecord]]:
    """Map every record; yield ``(line, transaction_id, mapping index, payload, record)`` for
    each event inside the window, where ``line`` is the payload as one JSON line and ``record``
    is the record as read: a ``Record`` or a ``RawRecord`` tuple (`as_record` makes it one).

    As ``pipeline.select`` without the duplicate check (the caller does it with ``line``):
    filtered messages and events outside ``[since, until)`` are counted and dropped, every
    reject is counted and passed to ``on_reject``, in input order.
    """
    plan = [(_predicate(m.trigger), m.fast) for m in mappings.mappings]
    position = {m.name: i for i, m in enumerate(mappings.mappings)}
    single = len(plan) == 1
    matches0, fast0 = plan[0] if plan else (None, None)
    apply = mappings.apply
    since, until, oldest, newest = window.bounds()
    ingest_problem = window.ingest_problem
    rejected = counts.rejected
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    read = filtered = matched = outside = 0
    try:
        for item in stream:
            record: Record | RawRecord
            if type(item) is tuple:
                record = item
                event = item[0]
            elif type(item) is Record:
                record = item
                event = item.event
            else:
                assert isinstance(item, Reject)
                rejected[item.reason] += 1
                on_reject(item)
                continue
            read += 1
            # (mapping index, payload), or (-1, reject) from the general path
            results: list[tuple[int, Any]] | None = None
            if single and fast0 is not None:
                # the common case, inline: one mapping, its fast path, inside every window
                try:
                    hit = matches0 is None or matches0(event)
                    payload = fast0(event) if hit else None
                except Exception:  # noqa: BLE001 - the general path says what went wrong
                    hit, payload = True, None
                if not hit:
                    filtered += 1
                    continue
                if payload is not None:
                    timestamp = payload["timestamp"]
                    if (
                        oldest <= timestamp <= newest
                        and (since is None or timestamp >= since)
                        and (until is None or timestamp < until)
                    ):
                        matched += 1
                        yield (
                            dumps(payload, option=newline),
                            payload["transaction_id"],
                            0,
                            payload,
                            record,
                        )
                        continue
                    results = [(0, payload)]
            if results is None:
                try:
                    results = []
                    for i, (matches, fast) in enumerate(plan):
                        if matches is not None and not matches(event):
                            continue
                        payload = fast(event) if fast is not None else None
                        if payload is None:
                            raise _Slow
                        results.append((i, payload))
                except Exception:  # noqa: BLE001 - the general path says what went wrong
                    results = [
                        (-1, result)
                        if isinstance(result, Reject)
                        else (position[result.mapping], result.payload)
                        for result in apply(as_record(record))
                    ]
            if not results:
                filtered += 1
                continue
            matched += 1
            for i, payload in results:
                if i < 0:
                    rejected[payload.reason] += 1
                    on_reject(payload)
                    continue
                timestamp = payload["timestamp"]
                if (since is not None and timestamp < since) or (
                    until is not None and timestamp >= until
                ):
                    outside += 1
                    continue
                problem = ingest_problem(timestamp)
                if problem is not None:
                    rejected[problem[0]] += 1
                    on_reject(
                        Reject(
                            reason=problem[0],
                            detail=problem[1],
                            source=as_record(record).coords,
                            mapping=mappings.mappings[i].name,
                            event=event,
                            payload=payload,
                        )
                    )
                    continue
                yield dumps(payload, option=newline), payload["transaction_id"], i, payload, record
    finally:
        counts.read += read
        counts.filtered += filtered
        counts.matched += matched
        counts.outside_window += outside


def _predicate(trigger: Any) -> Callable[[JsonObject], bool] | None:
    """The trigger's compiled function (``Trigger.predicate``), without the method call."""
    if trigger is None:
        return None
    predicate: Callable[[JsonObject], bool] = getattr(trigger, "predicate", trigger.matches)
    return predicate


class LineWriter:
    """Output lines joined into larger writes: append to ``pending``, then call `write`."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.pending: list[bytes] = []

    def add(self, line: bytes) -> None:
        pending = self.pending
        pending.append(line)
        if len(pending) >= WRITE_BATCH:
            self.write()

    def write(self) -> None:
        if self.pending:
            self._out.write(b"".join(self.pending))
            self.pending.clear()

    def flush(self) -> None:
        self.write()


def dedup_and_write(
    lines: Iterable[tuple[bytes, str, int, JsonObject, Record | RawRecord]],
    mappings: MappingSet,
    *,
    counts: Counts,
    deduper: RunDeduper,
    writer: LineWriter,
    on_reject: Callable[[Reject], None],
) -> None:
    """The in-run duplicate check on the serialised lines, and the output."""

    check = deduper.check_encoded
    pending = writer.pending
    write = writer.write
    emitted = duplicates = 0
    try:
        for line, tid, i, payload, record in lines:
            verdict = check(tid, line)
            if verdict is NEW:
                emitted += 1
                pending.append(line)
                if len(pending) >= WRITE_BATCH:
                    write()
            elif verdict.status == "duplicate":
                duplicates += 1
            else:
                counts.rejected[Reason.CONFLICT] += 1
                mapped = Mapped(
                    mapping=mappings.mappings[i].name, payload=payload, record=as_record(record)
                )
                on_reject(conflict_reject(mapped, verdict.first_payload))
    finally:
        counts.emitted += emitted
        counts.duplicates += duplicates
    writer.flush()


# ---------------------------------------------------------------------------------------------
# worker processes


def default_workers() -> int:
    """The number of CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class _WorkerSetup:
    """What every worker needs, sent once when it starts."""

    mapping_text: str
    mapping_name: str
    now: datetime
    since: datetime | None
    until: datetime | None
    fast_paths: bool
    spill_dir: str


_worker_state: dict[str, Any] = {}


def _worker_init(setup: _WorkerSetup, messages: Any) -> None:
    from segmetro.mapping import fastpaths, load_mapping_text

    fastpaths.set_enabled(setup.fast_paths)
    _worker_state["mappings"] = load_mapping_text(setup.mapping_text, name=setup.mapping_name)
    _worker_state["window"] = Window(now=setup.now, since=setup.since, until=setup.until)
    _worker_state["spill_dir"] = setup.spill_dir
    _worker_state["messages"] = messages


def _worker_task(number: int, obj: Any) -> None:
    """Map one input object, appending pickled chunks to its spill file; announce each chunk
    (and the compressed bytes read) on the message queue, and the end with the counts."""
    from segmetro.sources import read_items

    messages = _worker_state["messages"]
    try:
        mappings: MappingSet = _worker_state["mappings"]
        window: Window = _worker_state["window"]
        path = os.path.join(_worker_state["spill_dir"], f"{number:06d}.chunks")
        counts = Counts()
        consumed = [0]

        def on_bytes(n: int) -> None:
            consumed[0] += n

        chunk: list[tuple[Any, ...]] = []

        def on_reject(reject: Reject) -> None:
            chunk.append((reject,))

        dumps = orjson.dumps
        with open(path, "wb") as spill:

            def hand_over() -> None:
                pickle.dump(chunk, spill, protocol=pickle.HIGHEST_PROTOCOL)
                spill.flush()
                chunk.clear()
                messages.put((number, spill.tell(), consumed[0], None))
                consumed[0] = 0

            stream = read_items(obj, on_bytes=on_bytes)
            for line, tid, i, _payload, item in mapped_lines(
                stream, mappings, window=window, counts=counts, on_reject=on_reject
            ):
                record = as_record(item)
                chunk.append((line, tid, i, record.line, dumps(record.event)))
                if len(chunk) >= CHUNK_RECORDS:
                    hand_over()
            if chunk:
                hand_over()
            messages.put((number, spill.tell(), consumed[0], counts))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            pickle.dumps(exc)
            failure: BaseException = exc
        except Exception:  # noqa: BLE001 - an exception that cannot be pickled
            failure = RuntimeError(f"{type(exc).__name__}: {exc}")
        messages.put((number, -1, 0, failure))


def can_run_parallel(mappings: MappingSet, objects: Sequence[Any]) -> bool:
    """Worker processes need the mapping's text and more than one re-readable object."""
    return (
        mappings.source_text is not None
        and len(objects) > 1
        and all(obj.kind != "stdin" for obj in objects)
    )


def run_parallel(
    mappings: MappingSet,
    objects: Sequence[Any],
    *,
    window: Window,
    workers: int,
    counts: Counts,
    deduper: RunDeduper,
    writer: LineWriter,
    on_reject: Callable[[Reject], None],
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    """Map `objects` in `workers` processes; dedup and write here, in input order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from segmetro.mapping import fastpaths

    assert mappings.source_text is not None
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    spill_dir = tempfile.mkdtemp(prefix="segmetro-map-")
    setup = _WorkerSetup(
        mapping_text=mappings.source_text,
        mapping_name=mappings.path,
        now=window.now,
        since=window.since,
        until=window.until,
        fast_paths=fastpaths.enabled(),
        spill_dir=spill_dir,
    )
    announced = [0] * len(objects)
    finished: list[Counts | None] = [None] * len(objects)
    try:
        with ProcessPoolExecutor(
            max_workers=min(workers, len(objects)),
            mp_context=context,
            initializer=_worker_init,
            initargs=(setup, messages),
        ) as pool:
            futures = [pool.submit(_worker_task, n, obj) for n, obj in enumerate(objects)]

            def wait_message() -> None:
                while True:
                    try:
                        number, size, consumed, extra = messages.get(timeout=1.0)
                    except queue_module.Empty:
                        for future in futures:
                            failure = future.exception() if future.done() else None
                            if failure is not None:
                                raise failure from None
                        continue
                    break
                if size < 0:
                    raise extra
                if on_bytes is not None and consumed:
                    on_bytes(consumed)
                announced[number] = size
                if extra is not None:
                    finished[number] = extra

            for number, obj in enumerate(objects):
                path = os.path.join(spill_dir, f"{number:06d}.chunks")
                done = 0
                spill: IO[bytes] | None = None
                try:
                    while True:
                        if done < announced[number]:
                            if spill is None:
                                spill = open(path, "rb")  # noqa: SIM115 - closed below
                            while done < announced[number]:
                                _consume(
                                    pickle.load(spill),
                                    obj.name,
                                    mappings,
                                    counts=counts,
                                    deduper=deduper,
                                    writer=writer,
                                    on_reject=on_reject,
                                )
                                done = spill.tell()
                            continue
                        if finished[number] is not None:
                            break
                        wait_message()
                finally:
                    if spill is not None:
                        spill.close()
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                _add_counts(counts, finished[number])
            writer.flush()
    finally:
        messages.close()
        shutil.rmtree(spill_dir, ignore_errors=True)


def _consume(
    chunk: list[tuple[Any, ...]],
    source: str,
    mappings: MappingSet,
    *,
    counts: Counts,
    deduper: RunDeduper,
    writer: LineWriter,
    on_reject: Callable[[Reject], None],
) -> None:

    check = deduper.check_encoded
    add = writer.add
    for entry in chunk:
        if len(entry) == 1:
            on_reject(entry[0])
            continue
        line, tid, i, lineno, event_bytes = entry
        verdict = check(tid, line)
        if verdict is NEW:
            counts.emitted += 1
            add(line)
        elif verdict.status == "duplicate":
            counts.duplicates += 1
        else:
            counts.rejected[Reason.CONFLICT] += 1
            record = Record(orjson.loads(event_bytes), source, lineno)
            mapped = Mapped(
                mapping=mappings.mappings[i].name, payload=orjson.loads(line), record=record
            )
            on_reject(conflict_reject(mapped, verdict.first_payload))


def _add_counts(total: Counts, part: Counts | None) -> None:
    if part is None:
        return
    total.read += part.read
    total.matched += part.matched
    total.filtered += part.filtered
    total.outside_window += part.outside_window
    total.rejected.update(part.rejected)
