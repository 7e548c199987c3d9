"""Where rejects go: counted, a few kept for display, every one written to the rejects file."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import orjson

from segmetro.errors import ConfigError
from segmetro.files import open_private
from segmetro.models import Reject

#: How many of the first rejects a report keeps in memory to show the user, beside the latest
#: one; the rejects file keeps all.
SHOWN_REJECTS = 20
#: Output lines joined into one write by ``map``.
WRITE_BATCH = 1024


class RejectSink:
    """Counts every reject, keeps the first few and the latest for display (`shown`), and
    writes all of them to a file.

    A write that fails (disk full, a bad path) is a `ConfigError`: the run stops rather than
    lose a reject, and nothing is checkpointed past what was written. The first reject is
    flushed at once, so a file that takes nothing stops the run there. A ``lazy`` sink (a run's
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
            return open_private(path, append=self.append)
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
        shown = self.shown
        if len(shown) < SHOWN_REJECTS + 1:
            shown.append(reject)
        else:
            # beyond the first ones, the latest: how a broken input ended is often the news
            shown[-1] = reject
        if self._pending_open and self.path is not None:
            self._fh = self._open(self.path)
            self._pending_open = False
        if self._fh is not None:
            entry = reject.to_json()
            if self.run_id is not None:
                entry["run_id"] = self.run_id
            try:
                self._fh.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
                if not self.written:
                    # a file that takes no byte (a full disk) is found at the first reject,
                    # not after the whole input was read into the write buffer
                    self._fh.flush()
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
