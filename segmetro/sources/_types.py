"""The records that describe inputs: one ``InputObject`` per file, stdin or S3 object."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

InputKind = Literal["file", "stdin", "s3"]


@dataclass(frozen=True)
class InputObject:
    """One readable unit of input, in the order it will be read.

    ``name`` is what coordinates use: a path, ``<stdin>``, or ``s3://bucket/key``.
    ``identity`` changes when the content changes: ``size:mtime_ns`` for files, the ETag (without
    quotes) for S3 objects, ``stdin`` for stdin. ``size`` is the stored (compressed) size, or
    ``None`` when it is not known in advance (stdin, pipes).
    ``kind`` is ``"stdin"`` for every one-shot stream that cannot be re-read or resumed: stdin
    itself (``name`` ``<stdin>``) and a pipe or device named on the command line (its path).
    """

    name: str
    size: int | None
    identity: str
    kind: InputKind
    #: local path to open (``file`` kind)
    _path: str | None = field(default=None, repr=False, compare=False)
    #: why the object cannot be read at all (found unreadable while expanding a directory)
    _error: str | None = field(default=None, repr=False, compare=False)
    #: S3 coordinates: bucket, key, ETag exactly as listed, endpoint URL (``None`` = default)
    _bucket: str | None = field(default=None, repr=False, compare=False)
    _key: str | None = field(default=None, repr=False, compare=False)
    _etag: str | None = field(default=None, repr=False, compare=False)
    _endpoint_url: str | None = field(default=None, repr=False, compare=False)

    def is_local_file(self, path: str | os.PathLike[str]) -> bool:
        """Whether this object is read from the regular file at ``path`` (an existing path)."""
        return self.kind == "file" and self._path is not None and os.path.samefile(self._path, path)


@dataclass
class InputSet:
    """Every object the input specs expand to, and what the window/source filters skipped."""

    objects: list[InputObject]
    total_bytes: int | None
    skipped_objects: int = 0
    skipped_bytes: int = 0
