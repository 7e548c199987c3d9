"""S3 inputs: listing (with Segment's day-folder layout) and resumable streaming reads.

Imported only when an ``s3://`` input is used, so that boto3 costs nothing otherwise.

An object is read as it was listed (``IfMatch`` its ETag); a read that fails mid-stream is read
again and resumed at the line where it stopped.

Listing is one flat ``list_objects_v2`` pass (1 request per 1,000 keys) over the prefix, in key
order. Keys laid out as ``…/segment-logs/<source-id>/<received-day-epoch-ms>/<file>`` are
filtered by source id and by the window; the filtered-out objects are *listed* but not read, so
``InputSet.skipped_objects`` / ``skipped_bytes`` are exact object and byte counts.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
)

from segmetro.errors import SourceError
from segmetro.models import Reason, Record, Reject
from segmetro.sources.inputs import InputKind, InputObject, read_stored
from segmetro.sources.stream import RetryableReadError

#: bytes asked of the response body per read
READ_CHUNK = 1 << 20
#: ``PageSize`` of the listing; ``None`` = S3's default (1,000)
LIST_PAGE_SIZE: int | None = None
#: pauses before the re-GETs that follow a failed read (so at most len + 1 attempts)
RETRY_DELAYS: tuple[float, ...] = (0.5, 2.0, 5.0)
SEGMENT_LOGS = "segment-logs"
DAY_MS = 86_400_000

#: failures of the connection or of the response stream, worth a re-GET
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    HTTPClientError,  # ReadTimeoutError, ResponseStreamingError, ConnectionClosedError
    IncompleteReadError,
    ConnectionError,  # botocore's: EndpointConnectionError, ConnectTimeoutError
    urllib3.exceptions.HTTPError,
    OSError,
)

_sleep: Callable[[float], None] = time.sleep
_clients: dict[str | None, Any] = {}
_clients_lock = threading.Lock()


def resolve_endpoint(endpoint_url: str | None) -> str | None:
    return endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None


def client(endpoint_url: str | None) -> Any:
    """One S3 client per endpoint and process (boto3 clients are thread-safe)."""
    with _clients_lock:
        found = _clients.get(endpoint_url)
        if found is None:
            found = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                config=Config(
                    retries={"mode": "standard", "max_attempts": 5},
                    connect_timeout=10,
                    read_timeout=60,
                ),
            )
            _clients[endpoint_url] = found
        return found


def close_clients() -> None:
    """Close the cached clients (their connection pools)."""
    with _clients_lock:
        for c in _clients.values():
            c.close()
        _clients.clear()


def parse_url(spec: str) -> tuple[str, str]:
    rest = spec[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise SourceError(f"input {spec!r}: no bucket name (expected s3://bucket/prefix)")
    return bucket, prefix


def _epoch_ms(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "?")
        message = err.get("Message") or ""
        return f"{code}: {message}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def list_objects(
    spec: str,
    *,
    endpoint_url: str | None,
    since: datetime | None,
    until: datetime | None,
    source_ids: Sequence[str],
) -> tuple[list[InputObject], int, int]:
    """The objects under ``spec`` to read, and the number and bytes of those filtered out."""
    bucket, prefix = parse_url(spec)
    endpoint = resolve_endpoint(endpoint_url)
    # keep day D iff [D, D+1d) meets [since-1d, until+1d): received day is not event day
    low = None if since is None else _epoch_ms(since) - DAY_MS
    high = None if until is None else _epoch_ms(until) + DAY_MS
    sources = frozenset(source_ids)
    objects: list[InputObject] = []
    listed = skipped = skipped_bytes = 0
    pagination: dict[str, int] = {}
    if LIST_PAGE_SIZE is not None:
        pagination["PageSize"] = LIST_PAGE_SIZE
    try:
        paginator = client(endpoint).get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig=pagination):
            for entry in page.get("Contents", ()):
                key: str = entry["Key"]
                size: int = entry["Size"]
                if key.endswith("/") and size == 0:
                    continue  # a console "folder" marker
                listed += 1
                if not _wanted(key, low, high, sources):
                    skipped += 1
                    skipped_bytes += size
                    continue
                etag: str = entry.get("ETag", "")
                objects.append(
                    S3Input(
                        bucket=bucket,
                        key=key,
                        size=size,
                        etag=etag or None,
                        endpoint_url=endpoint,
                    )
                )
    except (ClientError, BotoCoreError) as exc:
        raise SourceError(f"input {spec!r}: cannot list objects: {_error_text(exc)}") from None
    return objects, skipped, skipped_bytes


def _wanted(key: str, low: int | None, high: int | None, sources: frozenset[str]) -> bool:
    """Whether a key passes the source-id and day-folder filters (non-Segment keys always do)."""
    if SEGMENT_LOGS not in key:
        return True
    parts = key.split("/")
    for i in range(len(parts) - 3):
        if parts[i] == SEGMENT_LOGS:
            break
    else:
        return True
    if sources and parts[i + 1] not in sources:
        return False
    day = parts[i + 2]
    if (low is not None or high is not None) and day.isascii() and day.isdigit():
        start = int(day)
        if low is not None and start + DAY_MS <= low:
            return False
        if high is not None and start >= high:
            return False
    return True


@dataclass(frozen=True)
class S3Input:
    """An S3 object as listed: ``etag`` exactly as listed (with its quotes), ``endpoint_url``
    ``None`` for the default endpoint."""

    bucket: str
    key: str
    size: int
    etag: str | None
    endpoint_url: str | None

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def identity(self) -> str:
        return (self.etag or "").strip('"')

    @property
    def kind(self) -> InputKind:
        return "s3"

    def is_local_file(self, path: str | os.PathLike[str]) -> bool:
        return False

    def read(
        self,
        *,
        start_line: int,
        on_bytes: Callable[[int], None] | None,
        max_line_bytes: int,
    ) -> Iterator[Record | Reject]:
        """Stream the object; a read that fails mid-stream is re-read and resumed where it
        stopped.

        The re-GET uses ``IfMatch`` so the bytes are the same; decompression restarts from the
        beginning and every record or reject already yielded is skipped. ``on_bytes`` reports
        each stored byte once, however often it is re-read.
        """
        return _read(self, start_line, on_bytes, max_line_bytes)


def _get_body(obj: S3Input, attempt: int) -> Any:
    """GET the object as it was listed (``IfMatch`` its ETag); returns the streaming body.

    ``attempt`` counts from 0; tests replace this function to inject failures.
    """
    args: dict[str, str] = {"Bucket": obj.bucket, "Key": obj.key}
    if obj.etag:
        args["IfMatch"] = obj.etag
    return client(obj.endpoint_url).get_object(**args)["Body"]


def _get_failure(obj: S3Input, exc: ClientError, line: int) -> Reject:
    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("NoSuchKey", "404") or status == 404:
        detail = "object no longer exists (deleted after it was listed)"
    elif code == "PreconditionFailed" or status == 412:
        detail = f"object changed after it was listed (ETag is no longer {obj.etag})"
    else:
        detail = f"cannot read object: {_error_text(exc)}"
    return Reject(reason=Reason.UNREADABLE, detail=detail, source=f"{obj.name}:{line}")


def _line_of(item: Record | Reject) -> int:
    if type(item) is Record:
        return item.line
    assert isinstance(item, Reject)
    return int(item.source.rsplit(":", 1)[1])


def _read(
    obj: S3Input,
    start_line: int,
    on_bytes: Callable[[int], None] | None,
    max_line_bytes: int,
) -> Iterator[Record | Reject]:
    reported = 0
    last_line = 0  # line of the last item yielded
    on_last = 0  # items yielded on that line (a JSON array line can hold several)
    stop_line = 0
    error: BaseException | None = None
    attempts = len(RETRY_DELAYS) + 1
    for attempt in range(attempts):
        if attempt:
            _sleep(RETRY_DELAYS[attempt - 1])
        try:
            body = _get_body(obj, attempt)
        except ClientError as exc:
            yield _get_failure(obj, exc, stop_line)
            return
        except TRANSIENT_ERRORS as exc:
            error = exc
            continue
        consumed = 0

        def chunks(body: Any = body) -> Iterator[bytes]:
            nonlocal consumed, reported
            while True:
                try:
                    chunk: bytes = body.read(READ_CHUNK)
                except TRANSIENT_ERRORS as exc:
                    raise RetryableReadError(exc) from exc
                if not chunk:
                    return
                consumed += len(chunk)
                if consumed > reported:
                    if on_bytes is not None:
                        on_bytes(consumed - reported)
                    reported = consumed
                yield chunk

        skip = on_last
        resume_from = max(start_line, last_line - 1)
        try:
            for item in read_stored(
                obj.name, chunks(), start_line=resume_from, max_line_bytes=max_line_bytes
            ):
                if skip:
                    skip -= 1
                    continue
                line = _line_of(item)
                if line == last_line:
                    on_last += 1
                else:
                    last_line = line
                    on_last = 1
                yield item
            return
        except RetryableReadError as exc:
            error = exc.error
            stop_line = exc.line
        finally:
            body.close()
    yield Reject(
        reason=Reason.UNREADABLE,
        detail=f"reading failed {attempts} times; last error: {_error_text(error or OSError())}",
        source=f"{obj.name}:{stop_line}",
    )
