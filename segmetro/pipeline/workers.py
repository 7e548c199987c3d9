"""``segmetro map --workers N``: the selection of several input objects in worker processes.

Each worker runs the same ``select.selected`` as one process does, one object per task, and
the parent runs ``select.deduplicate`` on what comes back, in input order. Each worker
compiles the mapping itself from its YAML text (a ``MappingSet`` holds generated functions and
cannot be pickled) and appends its results, in chunks, to a spill file of its own; the parent
takes the files in input order, as they grow, and does the duplicate check and the writing.
Output and rejects are therefore exactly those of one process, in the same order, and memory
stays flat: results wait on disk, not in memory, when the parent lags behind.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue as queue_module
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import orjson

from segmetro.mapping import MappingSet
from segmetro.models import Counts, Mapped, Record, Reject
from segmetro.window import Window

#: events per chunk a worker hands to the parent; also how many messages it reads, at most,
#: before it tells the parent how far it got (progress inside a file, even a filtered one)
CHUNK_RECORDS = 2000
#: a worker also tells the parent how far it got at least this often (seconds)
PROGRESS_SECONDS = 0.5


def default_workers() -> int:
    """The number of CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: gzip bytes below which worker processes cost more than they save (start-up, and ~1.7x the
#: CPU per event: every mapped event crosses to the parent); measured with
#: benchmarks/workers_crossover.py, see BENCHMARKS.md
PARALLEL_MIN_BYTES = 64 << 20
#: a plain (not gzip) object holds about this many times the bytes of its gzip for the same events
PLAIN_PER_GZIP_BYTE = 6


def choose_workers(objects: Sequence[Any]) -> int:
    """The default ``--workers`` for these input objects: 1 unless extra processes pay off.

    Workers are used only when each gets at least two objects (so that the pool stays balanced
    and the parent, which does the duplicate check and the writing, always has the next object
    ready: with one object per worker, two workers on two CPUs were slower than one process),
    the objects hold at least ``PARALLEL_MIN_BYTES`` of gzip (a plain object counts
    1/``PLAIN_PER_GZIP_BYTE`` of its size) and no object holds more than half of it; stdin and
    pipes cannot be handed to a worker. Then: one worker per CPU, at most half the objects.
    """
    if any(obj.kind == "stdin" for obj in objects):
        return 1
    workers = min(default_workers(), len(objects) // 2)
    if workers < 2:
        return 1
    weights = [
        (obj.size or 0)
        if obj.name.lower().endswith((".gz", ".gzip"))
        else (obj.size or 0) // PLAIN_PER_GZIP_BYTE
        for obj in objects
    ]
    total = sum(weights)
    if total < PARALLEL_MIN_BYTES or 2 * max(weights) > total:
        return 1
    return workers


@dataclass
class _WorkerSetup:
    """What every worker needs, sent once when it starts."""

    mapping_text: str
    mapping_name: str
    now: datetime
    since: datetime | None
    until: datetime | None
    spill_dir: str


_worker_state: dict[str, Any] = {}


def _worker_init(setup: _WorkerSetup, messages: Any, stop: Any) -> None:
    from segmetro.mapping import load_mapping_text

    # Ctrl-C reaches the whole process group and SIGTERM may too: the parent alone decides,
    # and stops the workers through ``stop``, so no worker dies mid-chunk or prints a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The parent has read every message before it ends a pool normally; on a stop it reads no
    # more, and a worker must not wait at exit to flush messages nobody will read.
    messages.cancel_join_thread()

    _worker_state["mappings"] = load_mapping_text(setup.mapping_text, name=setup.mapping_name)
    _worker_state["window"] = Window(now=setup.now, since=setup.since, until=setup.until)
    _worker_state["spill_dir"] = setup.spill_dir
    _worker_state["messages"] = messages
    _worker_state["stop"] = stop


def _worker_task(number: int, obj: Any) -> None:
    """Map one input object, appending pickled chunks to its spill file; announce each chunk
    on the message queue with the compressed bytes and the messages read since the last
    (every `CHUNK_RECORDS` messages or `PROGRESS_SECONDS` at least), and the end with the
    counts (whose ``read`` then holds only the unparseable lines: the rest went as progress)."""
    from segmetro.pipeline.select import selected
    from segmetro.sources import read_object

    messages = _worker_state["messages"]
    stop = _worker_state["stop"]
    if stop.is_set():
        return
    try:
        mappings: MappingSet = _worker_state["mappings"]
        window: Window = _worker_state["window"]
        path = os.path.join(_worker_state["spill_dir"], f"{number:06d}.chunks")
        counts = Counts()
        consumed = [0]
        records = [0]
        last = [time.monotonic()]

        def on_bytes(n: int) -> None:
            consumed[0] += n

        chunk: list[tuple[Any, ...]] = []
        dumps = orjson.dumps
        with open(path, "wb") as spill:

            def hand_over() -> None:
                pickle.dump(chunk, spill, protocol=pickle.HIGHEST_PROTOCOL)
                spill.flush()
                chunk.clear()
                messages.put((number, spill.tell(), consumed[0], records[0], None))
                consumed[0] = records[0] = 0
                last[0] = time.monotonic()

            def on_record(_record: Record) -> None:
                records[0] += 1
                n = records[0]
                if n >= CHUNK_RECORDS or (
                    n % 256 == 0 and time.monotonic() - last[0] >= PROGRESS_SECONDS
                ):
                    hand_over()

            stream = read_object(obj, on_bytes=on_bytes)
            for item in selected(
                stream, mappings, window=window, counts=counts, encode=True, on_record=on_record
            ):
                if isinstance(item, Reject):
                    chunk.append((item,))
                else:
                    record = item.record
                    chunk.append((item.line, item.mapping, record.line, dumps(record.event)))
                if len(chunk) >= CHUNK_RECORDS:
                    hand_over()
                    if stop.is_set():
                        return
            if chunk:
                hand_over()
            counts.read = counts.unparseable
            messages.put((number, spill.tell(), consumed[0], records[0], counts))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            pickle.dumps(exc)
            failure: BaseException = exc
        except Exception:  # noqa: BLE001 - an exception that cannot be pickled
            failure = RuntimeError(f"{type(exc).__name__}: {exc}")
        messages.put((number, -1, 0, 0, failure))


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
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[Mapped | Reject]:
    """Select the events of `objects` in `workers` processes; yield them in input order.

    ``counts.read`` grows as the workers report how far they got (so does ``on_bytes``, called
    with each report); the rest of each object's counts is added once the object is finished.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    assert mappings.source_text is not None
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    stop = context.Event()
    spill_dir = tempfile.mkdtemp(prefix="segmetro-map-")
    setup = _WorkerSetup(
        mapping_text=mappings.source_text,
        mapping_name=mappings.path,
        now=window.now,
        since=window.since,
        until=window.until,
        spill_dir=spill_dir,
    )
    announced = [0] * len(objects)
    finished: list[Counts | None] = [None] * len(objects)
    try:
        with ProcessPoolExecutor(
            max_workers=min(workers, len(objects)),
            mp_context=context,
            initializer=_worker_init,
            initargs=(setup, messages, stop),
        ) as pool:
            futures = [pool.submit(_worker_task, n, obj) for n, obj in enumerate(objects)]
            try:

                def wait_message() -> None:
                    while True:
                        try:
                            number, size, consumed, read, extra = messages.get(timeout=1.0)
                        except queue_module.Empty:
                            for future in futures:
                                failure = future.exception() if future.done() else None
                                if failure is not None:
                                    raise failure from None
                            continue
                        break
                    if size < 0:
                        raise extra
                    counts.read += read
                    if on_bytes is not None:
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
                                    yield from _unpack(pickle.load(spill), obj.name)
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
                    part = finished[number]
                    if part is not None:
                        counts.add(part)
            except BaseException:
                # Ctrl-C, SIGTERM, an error, or the reader stopped early: end the workers now
                # (each stops after its current chunk) instead of letting them finish the job.
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        messages.close()
        shutil.rmtree(spill_dir, ignore_errors=True)


def _unpack(chunk: list[tuple[Any, ...]], source: str) -> Iterator[Mapped | Reject]:
    loads = orjson.loads
    for entry in chunk:
        if len(entry) == 1:
            yield entry[0]
            continue
        line, mapping, lineno, event_bytes = entry
        yield Mapped(mapping, loads(line), Record(loads(event_bytes), source, lineno), line)
