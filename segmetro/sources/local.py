"""Local inputs: files (found by path, directory or glob), stdin and pipes.

Directories are walked recursively, sorted by path; hidden names (``.x``) are skipped. An entry
that cannot be read is an ``UnreadableInput``, whose reading yields one ``unreadable`` reject.
"""

from __future__ import annotations

import glob
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from segmetro.errors import SourceError
from segmetro.models import Reason, Record, Reject
from segmetro.sources.inputs import InputKind, InputObject, read_stored
from segmetro.sources.stream import StreamBreak

#: bytes read from a file per call
READ_CHUNK = 1 << 20
STDIN_NAME = "<stdin>"
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class FileInput:
    """A regular file; ``name`` is its path and ``identity`` is ``size:mtime_ns``."""

    name: str
    size: int
    identity: str

    @property
    def kind(self) -> InputKind:
        return "file"

    def is_local_file(self, path: str | os.PathLike[str]) -> bool:
        try:
            return os.path.samefile(self.name, path)
        except OSError:  # gone since it was listed: reading it will say so
            return False

    def read(
        self,
        *,
        start_line: int,
        on_bytes: Callable[[int], None] | None,
        max_line_bytes: int,
    ) -> Iterator[Record | Reject]:
        return _read_path(self.name, start_line, on_bytes, max_line_bytes)


@dataclass(frozen=True)
class StreamInput:
    """A one-shot stream that cannot be re-read or resumed: stdin (``path`` None), or a pipe or
    device named on the command line (``<(zcat …)`` gives /dev/fd/N)."""

    path: str | None = None

    @property
    def name(self) -> str:
        return STDIN_NAME if self.path is None else self.path

    @property
    def size(self) -> None:
        return None

    @property
    def identity(self) -> str:
        return "stdin" if self.path is None else "stream"

    @property
    def kind(self) -> InputKind:
        return "stdin"

    def is_local_file(self, path: str | os.PathLike[str]) -> bool:
        return False

    def read(
        self,
        *,
        start_line: int,
        on_bytes: Callable[[int], None] | None,
        max_line_bytes: int,
    ) -> Iterator[Record | Reject]:
        if self.path is not None:
            return _read_path(self.path, start_line, on_bytes, max_line_bytes)
        # read1: what the pipe holds so far, as for a path opened unbuffered (read waits for a
        # whole chunk, so a slow writer's lines would wait unread)
        return read_stored(
            self.name,
            _chunks(getattr(sys.stdin.buffer, "read1", sys.stdin.buffer.read), on_bytes),
            start_line=start_line,
            max_line_bytes=max_line_bytes,
        )


@dataclass(frozen=True)
class UnreadableInput:
    """A directory entry that cannot be read (found so while the directory was walked)."""

    name: str
    why: str

    @property
    def size(self) -> int:
        return 0

    @property
    def identity(self) -> str:
        return "unreadable"

    @property
    def kind(self) -> InputKind:
        return "file"

    def is_local_file(self, path: str | os.PathLike[str]) -> bool:
        return False

    def read(
        self,
        *,
        start_line: int,
        on_bytes: Callable[[int], None] | None,
        max_line_bytes: int,
    ) -> Iterator[Record | Reject]:
        yield Reject(reason=Reason.UNREADABLE, detail=self.why, source=f"{self.name}:0")


def _read_path(
    path: str, start_line: int, on_bytes: Callable[[int], None] | None, max_line_bytes: int
) -> Iterator[Record | Reject]:
    """Stream a local file; one that cannot be opened is one reject at line 0."""
    try:
        # unbuffered: each read is one system call, which returns what a pipe holds so far
        f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        yield Reject(reason=Reason.UNREADABLE, detail=exc.strerror or str(exc), source=f"{path}:0")
        return
    try:
        yield from read_stored(
            path, _chunks(f.read, on_bytes), start_line=start_line, max_line_bytes=max_line_bytes
        )
    finally:
        f.close()


def _chunks(
    read: Callable[[int], bytes], on_bytes: Callable[[int], None] | None
) -> Iterator[bytes]:
    while True:
        try:
            chunk = read(READ_CHUNK)
        except OSError as exc:
            raise StreamBreak(Reason.UNREADABLE, f"read error: {exc.strerror or exc}") from None
        if not chunk:
            return
        if on_bytes is not None:
            on_bytes(len(chunk))
        yield chunk


def expand_local(spec: str) -> list[InputObject]:
    """The objects one local spec (a path, a directory or a glob) stands for, sorted by path.

    A glob that matches nothing and a directory without files stand for no object (a quiet
    day for a cron job); a named path that does not exist is a ``SourceError``.
    """
    if not os.path.lexists(spec) and _GLOB_CHARS.intersection(spec):
        matches = sorted(glob.glob(spec, recursive=True))
        out: list[InputObject] = []
        for match in matches:
            out.extend(_expand_path(match, spec, top=False))
        return out
    return _expand_path(spec, spec, top=True)


def empty_reason(spec: str) -> str:
    """Why a local spec that stands for no object is empty, for the "no inputs" message."""
    if os.path.isdir(spec):
        return "is a directory without files"
    return "matches no file"


def _expand_path(path: str, spec: str, *, top: bool) -> list[InputObject]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if top or not os.path.islink(path):
            raise SourceError(f"input {spec!r}: no such file or directory") from None
        return [UnreadableInput(path, "dangling symbolic link")]
    except OSError as exc:
        if top:
            raise SourceError(f"input {spec!r}: {exc.strerror or exc}") from None
        return [UnreadableInput(path, exc.strerror or str(exc))]
    if stat.S_ISDIR(st.st_mode):
        return _walk(path, spec)
    if stat.S_ISREG(st.st_mode):
        return [_file_input(path, st)]
    if top:
        # a pipe or device named on purpose: a one-shot stream like stdin
        return [StreamInput(path)]
    return [UnreadableInput(path, "not a regular file")]


def _file_input(path: str, st: os.stat_result) -> FileInput:
    return FileInput(name=path, size=st.st_size, identity=f"{st.st_size}:{st.st_mtime_ns}")


def _walk(root: str, spec: str) -> list[InputObject]:
    """Every file under ``root``, recursively, sorted by path.

    Hidden entries (names starting with ``.``) are skipped; symbolic links to directories are
    followed once (a loop is not walked twice); an entry that is not a regular file or cannot be
    examined becomes an unreadable object, which reads as one ``unreadable`` reject.
    """
    found: list[InputObject] = []
    seen_dirs: set[str] = set()
    root_error: list[OSError] = []

    def onerror(exc: OSError) -> None:
        if exc.filename is not None and os.path.normpath(exc.filename) == os.path.normpath(root):
            root_error.append(exc)
        else:
            found.append(UnreadableInput(str(exc.filename), exc.strerror or str(exc)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            if filename.startswith("."):
                continue
            path = os.path.join(dirpath, filename)
            try:
                st = os.stat(path)
            except OSError as exc:
                why = "dangling symbolic link" if os.path.islink(path) else exc.strerror
                found.append(UnreadableInput(path, why or str(exc)))
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(_file_input(path, st))
            else:
                found.append(UnreadableInput(path, "not a regular file"))
    if root_error:
        err = root_error[0]
        raise SourceError(f"input {spec!r}: cannot list directory: {err.strerror or err}")
    found.sort(key=lambda o: o.name)
    return found
