"""Which line of each source object is safe to checkpoint while its events resolve in any order."""

from __future__ import annotations

from collections import deque


class _SourceProgress:
    __slots__ = ("counts", "finished", "last", "order", "reported")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}  # line -> unresolved events, only lines with some
        self.order: deque[int] = deque()  # lines with unresolved events, ascending
        self.last: int | None = None  # highest line registered
        self.finished = False
        self.reported: int | None = None


class CheckpointTracker:
    """Which line of each source is safe to checkpoint, while events resolve in any order.

    The reader registers lines in increasing order with the number of outbound events each
    produced (0 for filtered or rejected lines); each event is later resolved — acknowledged by
    Metronome or written to the rejects file — in any order. Memory is proportional to the
    events in flight, not to the lines read.
    """

    def __init__(self) -> None:
        self._sources: dict[str, _SourceProgress] = {}
        self._pending = 0

    def _progress(self, source: str) -> _SourceProgress:
        progress = self._sources.get(source)
        if progress is None:
            progress = self._sources[source] = _SourceProgress()
        return progress

    def register(self, source: str, line: int, events: int = 0) -> None:
        """Line ``line`` of ``source`` produced ``events`` outbound events still to resolve.

        Registering the current last line again adds events to it.
        """
        if events < 0:
            raise ValueError("events must be >= 0")
        progress = self._progress(source)
        if progress.finished:
            raise ValueError(f"{source} is already finished")
        if progress.last is not None and line < progress.last:
            raise ValueError(f"{source}: line {line} registered after line {progress.last}")
        progress.last = line
        if events:
            if line in progress.counts:
                progress.counts[line] += events
            else:
                progress.counts[line] = events
                progress.order.append(line)
            self._pending += events

    def resolve(self, source: str, line: int, events: int = 1) -> None:
        """``events`` outbound events of that line were acknowledged or rejected."""
        progress = self._sources.get(source)
        remaining = None if progress is None else progress.counts.get(line)
        if progress is None or remaining is None or remaining < events or events < 1:
            raise ValueError(f"{source}:{line} has no {events} unresolved event(s)")
        if remaining == events:
            del progress.counts[line]
            order = progress.order
            while order and order[0] not in progress.counts:
                order.popleft()
        else:
            progress.counts[line] = remaining - events
        self._pending -= events

    def finish(self, source: str) -> None:
        """The reader has handed out every line of ``source``."""
        self._progress(source).finished = True

    def safe_line(self, source: str) -> int | None:
        """Highest line L such that every line ≤ L is fully resolved; None before any line."""
        progress = self._sources.get(source)
        if progress is None or progress.last is None:
            return None
        if progress.order:
            return progress.order[0] - 1
        return progress.last

    def is_done(self, source: str) -> bool:
        """Finished reading and nothing left in flight."""
        progress = self._sources.get(source)
        return progress is not None and progress.finished and not progress.order

    def pending(self, source: str | None = None) -> int:
        """Unresolved events, for one source or all."""
        if source is None:
            return self._pending
        progress = self._sources.get(source)
        return 0 if progress is None else sum(progress.counts.values())

    def advanced(self) -> dict[str, int]:
        """Sources whose safe line moved since the last call, with the new safe line."""
        out: dict[str, int] = {}
        for source, progress in self._sources.items():
            line = self.safe_line(source)
            if line is not None and line != progress.reported:
                progress.reported = line
                out[source] = line
        return out

    def forget(self, source: str) -> None:
        """Drop a finished source once its final checkpoint is saved."""
        progress = self._sources.pop(source, None)
        if progress is not None:
            self._pending -= sum(progress.counts.values())
