"""Local inputs: files, directories, globs and stdin."""

from __future__ import annotations

import glob
import os
import stat
import sys
from collections.abc import Callable, Iterator

from segmetro.errors import SourceError
from segmetro.models import Reason, Reject
from segmetro.sources._reader import Item, StreamBreak, allows_array, decompress, parse_stream
from segmetro.sources._types import InputObject

#: bytes read from a file per call
READ_CHUNK = 1 << 20
STDIN_NAME = "<stdin>"
_GLOB_CHARS = frozenset("*?[")


def stdin_object() -> InputObject:
    return InputObject(name=STDIN_NAME, size=None, identity="stdin", kind="stdin")


def expand_local(spec: str) -> list[InputObject]:
    """The objects one local spec (a path, a directory or a glob) stands for, sorted by path."""
    if not os.path.lexists(spec) and _GLOB_CHARS.intersection(spec):
        matches = sorted(glob.glob(spec, recursive=True))
        if not matches:
            raise SourceError(f"input {spec!r}: no file matches this pattern")
        out: list[InputObject] = []
        for match in matches:
            out.extend(_expand_path(match, spec, top=False))
        return out
    return _expand_path(spec, spec, top=True)


def _expand_path(path: str, spec: str, *, top: bool) -> list[InputObject]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if top or not os.path.islink(path):
            raise SourceError(f"input {spec!r}: no such file or directory") from None
        return [_unreadable(path, "dangling symbolic link")]
    except OSError as exc:
        if top:
            raise SourceError(f"input {spec!r}: {exc.strerror or exc}") from None
        return [_unreadable(path, exc.strerror or str(exc))]
    if stat.S_ISDIR(st.st_mode):
        objects = _walk(path, spec)
        if not objects and top:
            raise SourceError(f"input {spec!r}: the directory holds no files")
        return objects
    if stat.S_ISREG(st.st_mode):
        return [_file_object(path, st)]
    if top:
        # a pipe or device named on purpose (``<(zcat …)`` gives /dev/fd/N): a one-shot stream
        # like stdin (kind "stdin": no size, nothing to resume from)
        return [InputObject(name=path, size=None, identity="stream", kind="stdin", _path=path)]
    return [_unreadable(path, "not a regular file")]


def _file_object(path: str, st: os.stat_result) -> InputObject:
    return InputObject(
        name=path,
        size=st.st_size,
        identity=f"{st.st_size}:{st.st_mtime_ns}",
        kind="file",
        _path=path,
    )


def _unreadable(path: str, why: str) -> InputObject:
    return InputObject(
        name=path, size=0, identity="unreadable", kind="file", _path=path, _error=why
    )


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
            found.append(_unreadable(str(exc.filename), exc.strerror or str(exc)))

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
                found.append(_unreadable(path, why or str(exc)))
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(_file_object(path, st))
            else:
                found.append(_unreadable(path, "not a regular file"))
    if root_error:
        err = root_error[0]
        raise SourceError(f"input {spec!r}: cannot list directory: {err.strerror or err}")
    found.sort(key=lambda o: o.name)
    return found


def read_local(
    obj: InputObject,
    *,
    start_line: int,
    on_bytes: Callable[[int], None] | None,
    max_line_bytes: int,
    lazy: bool = False,
) -> Iterator[Item]:
    """Stream a local file (or stdin). An object that cannot be opened is one reject at line 0.

    ``lazy``: see ``parse_stream``."""
    if obj.kind == "stdin" and obj._path is None:
        yield from parse_stream(
            obj.name,
            decompress(_read_all(sys.stdin.buffer.read, on_bytes)),
            start_line=start_line,
            max_line_bytes=max_line_bytes,
            lazy=lazy,
        )
        return
    assert obj._path is not None
    if obj._error is not None:
        yield Reject(reason=Reason.UNREADABLE, detail=obj._error, source=f"{obj.name}:0")
        return
    try:
        f = open(obj._path, "rb")  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        yield Reject(
            reason=Reason.UNREADABLE, detail=exc.strerror or str(exc), source=f"{obj.name}:0"
        )
        return
    try:
        yield from parse_stream(
            obj.name,
            decompress(_read_all(f.read, on_bytes)),
            start_line=start_line,
            max_line_bytes=max_line_bytes,
            allow_array=allows_array(obj.name),
            lazy=lazy,
        )
    finally:
        f.close()


def _read_all(
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
