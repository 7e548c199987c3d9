"""Inputs: expand specs into objects, and stream each object as records and rejects.

``sources`` owns everything between an INPUT argument and a ``Record``: finding the objects,
reading their bytes, and turning every line into a record or a ``Reject`` with coordinates.
``open_inputs`` turns the command line's INPUT arguments into an ``InputSet``; ``read_object``
streams one object; ``iter_records`` streams them all in order. Bad content never raises: every
unreadable object, corrupt gzip stream and unparseable line becomes a ``Reject`` whose
``source`` holds its coordinates (``path:line`` or ``s3://bucket/key:line``; line 0 = the
object itself).

An object's bytes go through three stages, each a generator over the one before:

1. ``gunzip``: stored bytes → content. Gzip is detected by its header (magic bytes, deflate,
   known flags), member after member, and each member is verified (CRC32 and length) before any
   of its bytes is used. A member that fails its check yields no records: every line touching
   its data is a ``corrupt_gzip`` reject (with the line's object as ``event`` when it parses),
   and reading stops where the stream can no longer be followed. A *truncated* stream (cut off,
   e.g. an upload in progress) keeps every line before the cut and adds one ``corrupt_gzip``
   reject at the line where it stops. A stream that starts with the gzip magic bytes but does
   not go on as a gzip header (another compression method, reserved flags, a header that never
   ends) is *not gzip*: it is read as plain text, and its first line (which holds the magic
   bytes, so it is never JSON) is one ``corrupt_gzip`` reject saying why; every other line is
   read as usual, so none is lost.
2. ``formats``: content → records, in the ``Format`` its first bytes show (``FORMATS``). A
   stream whose first non-blank byte is ``[`` is one JSON array (``jsonarray``: streamed element
   by element, each at the line it starts on), unless its name ends in ``.jsonl`` / ``.ndjson``
   (optionally ``.gz``). Several elements can share a line; a checkpoint at line L therefore
   means "all of line L". Anything else is JSONL (``jsonl``).
3. ``lines`` (for JSONL): content → numbered lines. Lines are split on ``\\n`` (``\\r\\n``
   works); blank lines are skipped; a UTF-8 BOM is ignored; lines are the physical lines of the
   decompressed object, counted from 1; a line over the limit is one ``line_too_long`` reject.

In either JSON format a rejects-file line (``REJECT_MARKER``) is unwrapped into its original
event. ``stream`` names what flows between the stages.

The objects (``inputs``: the ``InputObject`` protocol) are files, stdin or pipes (``local``) and
S3 objects (``_s3``, re-read and resumed at the line where a read failed). Directories are
walked recursively, sorted by path; hidden names (``.x``) are skipped. An entry that cannot be
read is an object whose reading yields one ``unreadable`` reject. The same object named twice
(e.g. by a directory and a glob) is read once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime

from segmetro.errors import ConfigError, NoInputs, SourceError
from segmetro.models import Record, Reject
from segmetro.sources.formats import FORMATS, Format
from segmetro.sources.inputs import InputKind, InputObject, InputSet
from segmetro.sources.lines import DEFAULT_MAX_LINE_BYTES
from segmetro.sources.local import (
    STDIN_NAME,
    FileInput,
    StreamInput,
    UnreadableInput,
    empty_reason,
    expand_local,
)
from segmetro.sources.shard import SHARD_INDEX_VARIABLES, Shard, parse_shard

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "FORMATS",
    "SHARD_INDEX_VARIABLES",
    "STDIN_NAME",
    "FileInput",
    "Format",
    "InputKind",
    "InputObject",
    "InputSet",
    "Shard",
    "StreamInput",
    "UnreadableInput",
    "iter_records",
    "open_inputs",
    "parse_shard",
    "read_object",
]


def open_inputs(
    specs: Sequence[str],
    *,
    endpoint_url: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    source_ids: Sequence[str] = (),
    shard: Shard | None = None,
) -> InputSet:
    """Expand INPUT specs: files, directories, globs, ``-`` (stdin) and ``s3://bucket/prefix``.

    ``since``/``until`` (naive = UTC) and ``source_ids`` only prune S3 objects laid out as
    Segment's ``…/segment-logs/<source-id>/<received-day-ms>/…``; pruned objects are counted
    in ``skipped_objects`` / ``skipped_bytes``. A glob, directory or S3 prefix may stand for no
    object (``empty_specs``); when every spec does, ``NoInputs`` says which. With ``shard`` only
    that shard's objects are kept, counted after de-duplication so every shard splits the same
    list. Raises ``SourceError`` naming a spec that does not exist or cannot be listed.
    """
    if not specs:
        raise SourceError("no input given")
    objects: list[InputObject] = []
    seen: set[str] = set()
    skipped = skipped_bytes = 0
    empty: list[str] = []
    for spec in specs:
        found: list[InputObject]
        if spec == "-":
            found = [StreamInput()]
        elif spec.startswith("s3://"):
            from segmetro.sources import _s3

            found, n, nbytes = _s3.list_objects(
                spec, endpoint_url=endpoint_url, since=since, until=until, source_ids=source_ids
            )
            skipped += n
            skipped_bytes += nbytes
            if not found and not n:
                empty.append(f"{spec!r} holds no objects")
        else:
            found = expand_local(spec)
            if not found:
                empty.append(f"{spec!r} {empty_reason(spec)}")
        for obj in found:
            if obj.name not in seen:
                seen.add(obj.name)
                objects.append(obj)
    if not objects and len(empty) == len(specs):
        raise NoInputs("no inputs: " + "; ".join(empty))
    other_shards = 0
    if shard is not None:
        if shard.count > 1 and any(obj.kind == "stdin" for obj in objects):
            raise ConfigError(
                f"--shard {shard.label}: stdin and pipes cannot be split between shards; "
                "give files or s3:// prefixes"
            )
        mine = [obj for obj in objects if shard.owns(obj.name)]
        other_shards = len(objects) - len(mine)
        objects = mine
    sizes = [obj.size for obj in objects]
    total = None if None in sizes else sum(s for s in sizes if s is not None)
    return InputSet(
        objects=objects,
        total_bytes=total,
        skipped_objects=skipped,
        skipped_bytes=skipped_bytes,
        shard=shard,
        other_shards=other_shards,
        empty_specs=empty,
    )


def read_object(
    obj: InputObject,
    *,
    start_line: int = 0,
    on_bytes: Callable[[int], None] | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[Record | Reject]:
    """Stream one object's records and rejects; lines ``<= start_line`` are skipped (resume).

    ``on_bytes(n)`` is called as stored (compressed) bytes are consumed; over a whole read the
    calls add up to the object's size.
    """
    return obj.read(start_line=start_line, on_bytes=on_bytes, max_line_bytes=max_line_bytes)


def iter_records(
    inputs: InputSet,
    *,
    on_bytes: Callable[[int], None] | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    start_lines: Mapping[str, int] | None = None,
) -> Iterator[Record | Reject]:
    """Every object of ``inputs`` in order; ``start_lines`` maps object names to resume lines."""
    for obj in inputs.objects:
        start = start_lines.get(obj.name, 0) if start_lines else 0
        yield from read_object(
            obj, start_line=start, on_bytes=on_bytes, max_line_bytes=max_line_bytes
        )
