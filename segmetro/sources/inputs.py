"""Input objects: what can be read (a file, stdin or a pipe, an S3 object) and how it is read.

An ``InputObject`` knows where its stored bytes come from; every kind reads them through the
same stages (``read_stored``: gunzip, then the format). ``local`` holds files and streams,
``_s3`` S3 objects (imported only when an ``s3://`` input is used, so that boto3 costs nothing
otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from segmetro.models import Record, Reject
from segmetro.sources.formats import read_content
from segmetro.sources.gunzip import decompress
from segmetro.sources.shard import Shard

InputKind = Literal["file", "stdin", "s3"]


class InputObject(Protocol):
    """One readable unit of input, in the order it will be read.

    ``name`` is what coordinates use: a path, ``<stdin>``, or ``s3://bucket/key``.
    ``identity`` changes when the content changes: ``size:mtime_ns`` for files, the ETag (without
    quotes) for S3 objects, ``stdin`` for stdin. ``size`` is the stored (compressed) size, or
    ``None`` when it is not known in advance (stdin, pipes).
    ``kind`` is ``"stdin"`` for every one-shot stream that cannot be re-read or resumed: stdin
    itself (``name`` ``<stdin>``) and a pipe or device named on the command line (its path).
    """

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int | None: ...

    @property
    def identity(self) -> str: ...

    @property
    def kind(self) -> InputKind: ...

    def is_local_file(self, path: str | os.PathLike[str]) -> bool:
        """Whether this object is read from the regular file at ``path``."""
        ...

    def read(
        self,
        *,
        start_line: int,
        on_bytes: Callable[[int], None] | None,
        max_line_bytes: int,
    ) -> Iterator[Record | Reject]:
        """Stream the object's records and rejects; lines ``<= start_line`` are skipped.

        Never raises for bad content or an unreadable object: an object that cannot be read
        at all is one ``unreadable`` reject at line 0. ``on_bytes(n)`` is called as stored bytes
        are consumed; over a whole read the calls add up to the object's size.
        """
        ...


@dataclass
class InputSet:
    """Every object the input specs expand to, and what the window/source filters skipped.

    With a ``shard``, ``objects`` are only that shard's; ``other_shards`` counts the rest.
    """

    objects: list[InputObject]
    total_bytes: int | None
    skipped_objects: int = 0
    skipped_bytes: int = 0
    shard: Shard | None = None
    other_shards: int = 0

    def shard_note(self) -> str | None:
        """What a sharded run says about its share, so the split is never a surprise."""
        if self.shard is None:
            return None
        total = len(self.objects) + self.other_shards
        return f"{self.shard.describe()}: {len(self.objects)} of {total} input objects"

    #: specs (glob, directory, S3 prefix) that stood for no object at all, and why
    empty_specs: list[str] = field(default_factory=list)


def read_stored(
    name: str, stored: Iterable[bytes], *, start_line: int, max_line_bytes: int
) -> Iterator[Record | Reject]:
    """The records and rejects of an object's stored bytes: gunzipped when they are gzip, then
    read in the format their first bytes show."""
    return read_content(
        name, decompress(stored), start_line=start_line, max_line_bytes=max_line_bytes
    )
