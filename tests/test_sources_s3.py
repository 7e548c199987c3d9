"""S3 inputs against a real moto server over HTTP: Segment's layout, pruning, failures, resume."""

from __future__ import annotations

import gzip
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import s3server
from botocore.exceptions import ReadTimeoutError, ResponseStreamingError

from segmetro.errors import NoInputs, SourceError
from segmetro.models import Reason, Record, Reject
from segmetro.sources import InputSet, _s3, iter_records, open_inputs, read_object

S3Server = s3server.S3Server
s3 = s3server.s3
s3_server = s3server.s3_server

DAY0 = datetime(2024, 3, 1, tzinfo=UTC)
DAYS = [DAY0 + timedelta(days=k) for k in range(5)]
SOURCES = ["srcA", "srcB"]
FILES_PER_DAY = 2
EVENTS_PER_FILE = 3


def day_ms(day: datetime) -> int:
    return int(day.timestamp() * 1000)


def event(source: str, d: int, f: int, n: int) -> dict[str, Any]:
    return {"type": "track", "event": "e", "messageId": f"{source}-{d}-{f}-{n}"}


def segment_key(prefix: str, source: str, d: int, f: int) -> str:
    return f"{prefix}segment-logs/{source}/{day_ms(DAYS[d])}/{1700000000000 + f}.{source}.gz"


def put_segment_export(server: S3Server, bucket: str, prefix: str = "") -> dict[str, int]:
    """Five days of two sources, two files a day, three events a file; returns key -> size."""
    sizes = {}
    for source in SOURCES:
        for d in range(len(DAYS)):
            for f in range(FILES_PER_DAY):
                key = segment_key(prefix, source, d, f)
                lines = [orjson.dumps(event(source, d, f, n)) for n in range(EVENTS_PER_FILE)]
                body = gzip.compress(b"\n".join(lines) + b"\n")
                server.put(bucket, key, body)
                sizes[key] = len(body)
    return sizes


def ids(items: list[Record | Reject]) -> list[str]:
    return [i.event["messageId"] for i in items if isinstance(i, Record)]


def rejects(items: list[Record | Reject]) -> list[tuple[str, str]]:
    return [(i.reason, i.source) for i in items if isinstance(i, Reject)]


def all_ids(days: range = range(5), sources: list[str] = SOURCES) -> list[str]:
    return [
        event(s, d, f, n)["messageId"]
        for s in sources
        for d in days
        for f in range(FILES_PER_DAY)
        for n in range(EVENTS_PER_FILE)
    ]


def test_reads_a_segment_export(s3: S3Server) -> None:
    sizes = put_segment_export(s3, "logs")
    inputs = open_inputs(["s3://logs"], endpoint_url=s3.endpoint_url)
    assert [o.name for o in inputs.objects] == [f"s3://logs/{k}" for k in sorted(sizes)]
    assert all(o.kind == "s3" for o in inputs.objects)
    assert inputs.total_bytes == sum(sizes.values())
    assert (inputs.skipped_objects, inputs.skipped_bytes) == (0, 0)
    head = s3.client.head_object(Bucket="logs", Key=sorted(sizes)[0])
    assert inputs.objects[0].identity == head["ETag"].strip('"')
    assert inputs.objects[0].size == sizes[sorted(sizes)[0]]
    seen: list[int] = []
    items = list(iter_records(inputs, on_bytes=seen.append))
    assert rejects(items) == []
    assert ids(items) == all_ids()
    assert sum(seen) == inputs.total_bytes
    first = items[0]
    assert isinstance(first, Record)
    assert (first.source, first.line) == (inputs.objects[0].name, 1)


def test_pagination(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    put_segment_export(s3, "logs")
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(_s3, "LIST_PAGE_SIZE", 3)
    _s3.client(s3.endpoint_url).meta.events.register(
        "before-call.s3.ListObjectsV2", lambda params, **_: calls.append(params)
    )
    inputs = open_inputs(["s3://logs/segment-logs/"], endpoint_url=s3.endpoint_url)
    assert len(inputs.objects) == 20
    assert len(calls) == 7  # 20 keys, 3 a page
    assert ids(list(iter_records(inputs))) == all_ids()


def test_more_than_a_thousand_keys(s3: S3Server) -> None:
    body = gzip.compress(b'{"messageId": "x"}\n')
    s3.put_many("many", [f"p/{k:05d}.gz" for k in range(1005)], body)
    inputs = open_inputs(["s3://many/p/"], endpoint_url=s3.endpoint_url)
    assert [o.name for o in inputs.objects] == [f"s3://many/p/{k:05d}.gz" for k in range(1005)]


@pytest.mark.parametrize("prefix", ["", "custom/path/"], ids=["bucket root", "custom prefix"])
def test_day_folders_outside_the_window_are_not_read(s3: S3Server, prefix: str) -> None:
    sizes = put_segment_export(s3, "logs", prefix)
    since = DAYS[2] + timedelta(hours=5)
    until = DAYS[2] + timedelta(hours=10)
    spec = "s3://logs" if not prefix else f"s3://logs/{prefix}"
    inputs = open_inputs([spec], endpoint_url=s3.endpoint_url, since=since, until=until)
    # received day within [since - 1d, until + 1d): days 1, 2 and 3
    kept = [segment_key(prefix, s, d, f) for s in SOURCES for d in (1, 2, 3) for f in (0, 1)]
    assert [o.name for o in inputs.objects] == [f"s3://logs/{k}" for k in kept]
    skipped = [k for k in sizes if k not in kept]
    assert inputs.skipped_objects == len(skipped) == 8
    assert inputs.skipped_bytes == sum(sizes[k] for k in skipped)
    assert inputs.total_bytes == sum(sizes[k] for k in kept)
    assert ids(list(iter_records(inputs))) == all_ids(range(1, 4))


@pytest.mark.parametrize(
    ("since", "until", "days"),
    [
        (DAYS[3], None, range(2, 5)),
        (None, DAYS[1], range(0, 2)),
        (DAYS[1], DAYS[2], range(0, 3)),  # an until at midnight keeps the day after only
        (DAYS[4] + timedelta(days=3), None, range(0)),
    ],
)
def test_window_edges(
    s3: S3Server, since: datetime | None, until: datetime | None, days: range
) -> None:
    put_segment_export(s3, "logs")
    inputs = open_inputs(["s3://logs/"], endpoint_url=s3.endpoint_url, since=since, until=until)
    assert ids(list(iter_records(inputs))) == all_ids(days)
    assert inputs.skipped_objects == (5 - len(days)) * 2 * FILES_PER_DAY


def test_naive_window_times_are_utc(s3: S3Server) -> None:
    put_segment_export(s3, "logs")
    naive = open_inputs(["s3://logs/"], endpoint_url=s3.endpoint_url, since=datetime(2024, 3, 4))
    aware = open_inputs(["s3://logs/"], endpoint_url=s3.endpoint_url, since=DAYS[3])
    assert naive.objects == aware.objects


def test_source_id_filter(s3: S3Server) -> None:
    sizes = put_segment_export(s3, "logs", "x/")
    s3.put("logs", "x/notes.txt", b'{"messageId": "loose"}\n')
    inputs = open_inputs(["s3://logs/x/"], endpoint_url=s3.endpoint_url, source_ids=["srcB"])
    assert ids(list(iter_records(inputs))) == ["loose", *all_ids(sources=["srcB"])]
    assert inputs.skipped_objects == 10
    assert inputs.skipped_bytes == sum(v for k, v in sizes.items() if "/srcA/" in k)


def test_plain_and_content_encoded_objects(s3: S3Server) -> None:
    s3.put("logs", "a-plain.jsonl", b'{"messageId": "p1"}\n{"messageId": "p2"}\n')
    s3.put(
        "logs",
        "b-encoded",
        gzip.compress(b'{"messageId": "e1"}\n'),
        ContentEncoding="gzip",
        ContentType="application/json",
    )
    s3.put("logs", "c-array.json", b'[{"messageId": "j1"},\n {"messageId": "j2"}]')
    s3.put("logs", "folder/", b"")  # a console folder marker is not an object
    items = list(iter_records(open_inputs(["s3://logs"], endpoint_url=s3.endpoint_url)))
    assert ids(items) == ["p1", "p2", "e1", "j1", "j2"]
    assert rejects(items) == []


def test_bad_content_in_s3_is_rejected_with_coordinates(s3: S3Server) -> None:
    good = gzip.compress(b'{"messageId": "m1"}\n{"messageId": "m2"}\n{"messageId": "m3"}\n')
    s3.put("logs", "segment-logs/s/1/a.gz", good[:-20])
    s3.put("logs", "segment-logs/s/1/b.gz", b'{"messageId": "m4"}\nnope\n')
    items = list(iter_records(open_inputs(["s3://logs"], endpoint_url=s3.endpoint_url)))
    assert rejects(items) == [
        (Reason.CORRUPT_GZIP, f"s3://logs/segment-logs/s/1/a.gz:{len(ids(items)) - 1 + 1}"),
        (Reason.INVALID_JSON, "s3://logs/segment-logs/s/1/b.gz:2"),
    ]
    assert ids(items)[-1] == "m4"


def test_object_deleted_between_list_and_get(s3: S3Server) -> None:
    put_segment_export(s3, "logs")
    inputs = open_inputs(["s3://logs"], endpoint_url=s3.endpoint_url, source_ids=["srcA"])
    gone = inputs.objects[3]
    s3.client.delete_object(Bucket="logs", Key=gone.name.removeprefix("s3://logs/"))
    items = list(iter_records(inputs))
    assert rejects(items) == [(Reason.UNREADABLE, f"{gone.name}:0")]
    assert "deleted" in next(i for i in items if isinstance(i, Reject)).detail
    expected = all_ids(sources=["srcA"])
    del expected[3 * EVENTS_PER_FILE : 4 * EVENTS_PER_FILE]
    assert ids(items) == expected


def test_object_changed_between_list_and_get(s3: S3Server) -> None:
    s3.put("logs", "a.gz", gzip.compress(b'{"messageId": "old"}\n'))
    inputs = open_inputs(["s3://logs"], endpoint_url=s3.endpoint_url)
    s3.put("logs", "a.gz", gzip.compress(b'{"messageId": "new"}\n'))
    items = list(iter_records(inputs))
    assert rejects(items) == [(Reason.UNREADABLE, "s3://logs/a.gz:0")]
    assert "changed" in next(i for i in items if isinstance(i, Reject)).detail


def test_start_line_resume(s3: S3Server) -> None:
    lines = [orjson.dumps({"messageId": f"m{n}"}) for n in range(1, 8)]
    s3.put_jsonl("logs", "a.gz", lines)
    (obj,) = open_inputs(["s3://logs"], endpoint_url=s3.endpoint_url).objects
    items = list(read_object(obj, start_line=4))
    assert [(i.line, i.event["messageId"]) for i in items if isinstance(i, Record)] == [
        (5, "m5"),
        (6, "m6"),
        (7, "m7"),
    ]
    progress: list[int] = []
    list(read_object(obj, start_line=4, on_bytes=progress.append))
    assert sum(progress) == obj.size


class FlakyBody:
    """Wraps a StreamingBody; the reads numbered in ``fail_on`` raise ``error``."""

    def __init__(self, body: Any, fail_on: set[int], error: Exception) -> None:
        self.body = body
        self.fail_on = fail_on
        self.error = error
        self.reads = 0

    def read(self, amt: int | None = None) -> bytes:
        self.reads += 1
        if self.reads in self.fail_on:
            raise self.error
        data: bytes = self.body.read(amt)
        return data

    def close(self) -> None:
        self.body.close()


def flaky_gets(
    monkeypatch: pytest.MonkeyPatch, failures: dict[int, set[int]], error: Exception
) -> list[dict[str, Any]]:
    """Make attempt N's body fail on the given reads; returns what each GET asked for."""
    real = _s3._get_body
    gets: list[dict[str, Any]] = []

    def get_body(obj: Any, attempt: int) -> Any:
        gets.append({"attempt": attempt, "etag": obj.etag})
        return FlakyBody(real(obj, attempt), failures.get(attempt, set()), error)

    monkeypatch.setattr(_s3, "_get_body", get_body)
    monkeypatch.setattr(_s3, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    monkeypatch.setattr(_s3, "READ_CHUNK", 64)
    return gets


def _many_lines_object(s3: S3Server, n: int = 60) -> InputSet:
    lines = [
        orjson.dumps({"messageId": f"m{k}", "pad": hashlib.sha256(b"%d" % k).hexdigest()})
        for k in range(1, n + 1)
    ]
    s3.put_jsonl("logs", "segment-logs/s/1/a.gz", lines)
    return open_inputs(["s3://logs"], endpoint_url=s3.endpoint_url)


@pytest.mark.parametrize(
    "error",
    [
        ReadTimeoutError(endpoint_url="http://x"),
        ResponseStreamingError(error="connection reset"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
    ids=["read timeout", "streaming error", "connection reset"],
)
def test_mid_stream_failure_is_retried_and_resumed(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    inputs = _many_lines_object(s3)
    gets = flaky_gets(monkeypatch, {0: {4}, 1: {20}}, error)
    progress: list[int] = []
    items = list(iter_records(inputs, on_bytes=progress.append))
    assert rejects(items) == []
    assert ids(items) == [f"m{k}" for k in range(1, 61)]
    assert [i.line for i in items if isinstance(i, Record)] == list(range(1, 61))
    assert [g["attempt"] for g in gets] == [0, 1, 2]
    assert all(g["etag"] == f'"{inputs.objects[0].identity}"' for g in gets)
    assert sum(progress) == inputs.total_bytes  # re-read bytes are not counted twice


def test_retry_resumes_inside_a_one_line_json_array(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    elements = [orjson.dumps({"messageId": f"m{k}"}) for k in range(40)]
    s3.put("logs", "a.json.gz", gzip.compress(b"[" + b",".join(elements) + b"]"))
    inputs = open_inputs(["s3://logs"], endpoint_url=s3.endpoint_url)
    flaky_gets(monkeypatch, {0: {3}}, ReadTimeoutError(endpoint_url="http://x"))
    items = list(iter_records(inputs))
    assert ids(items) == [f"m{k}" for k in range(40)]


@pytest.mark.parametrize("fail_on", [{1}, {2}, {3}, {6}, {1, 2}], ids=str)
def test_retry_in_an_object_with_the_gzip_magic_that_is_not_gzip(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch, fail_on: set[int]
) -> None:
    """Read as plain text on every attempt: line 1 is one corrupt_gzip reject, nothing is lost
    or repeated, whichever read fails (64-byte reads: the header sniff is read 1)."""
    lines = [orjson.dumps({"messageId": f"m{k}"}) for k in range(2, 30)]
    s3.put("logs", "a.jsonl", b"\x1f\x8b not gzip\n" + b"\n".join(lines) + b"\n")
    inputs = open_inputs(["s3://logs"], endpoint_url=s3.endpoint_url)
    gets = flaky_gets(
        monkeypatch, {0: fail_on, 1: fail_on - {1}}, ReadTimeoutError(endpoint_url="x")
    )
    items = list(iter_records(inputs))
    assert rejects(items) == [(Reason.CORRUPT_GZIP, "s3://logs/a.jsonl:1")]
    assert [(i.line, i.event["messageId"]) for i in items if isinstance(i, Record)] == [
        (k, f"m{k}") for k in range(2, 30)
    ]
    assert len(gets) > 1
    assert "is not gzip" in next(i for i in items if isinstance(i, Reject)).detail


def _member_lines(first: int, n: int) -> bytes:
    return b"".join(
        orjson.dumps({"messageId": f"m{k}", "pad": hashlib.sha256(b"%d" % k).hexdigest()}) + b"\n"
        for k in range(first, first + n)
    )


def _members_object(s3: S3Server, damaged: int | None = None) -> InputSet:
    """60 lines in six gzip members of ten; member ``damaged`` (from 0) has a bad CRC."""
    members = [gzip.compress(_member_lines(10 * m + 1, 10)) for m in range(6)]
    if damaged is not None:
        bad = bytearray(members[damaged])
        bad[-8] ^= 1
        members[damaged] = bytes(bad)
    s3.put("logs", "segment-logs/s/1/a.gz", b"".join(members))
    return open_inputs(["s3://logs"], endpoint_url=s3.endpoint_url)


def test_retries_exhausted_reject_at_the_line_it_stopped(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = _members_object(s3)
    gets = flaky_gets(
        monkeypatch, {k: {12} for k in range(4)}, ResponseStreamingError(error="reset")
    )
    items = list(iter_records(inputs))
    assert len(gets) == 4
    good = ids(items)
    assert good == [f"m{k}" for k in range(1, len(good) + 1)]
    # only whole members come out: the one being read when it failed could not be verified
    assert 0 < len(good) < 60
    assert len(good) % 10 == 0
    (reject,) = [i for i in items if isinstance(i, Reject)]
    assert reject.reason == Reason.UNREADABLE
    assert reject.source == f"{inputs.objects[0].name}:{len(good) + 1}"
    assert "4 times" in reject.detail


def test_endpoint_from_environment(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    s3.put("logs", "a.jsonl", b'{"messageId": "m1"}\n')
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
    inputs = open_inputs(["s3://logs/a"])
    assert ids(list(iter_records(inputs))) == ["m1"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("s3://no-such-bucket/x", "NoSuchBucket"),
        ("s3:///key", "no bucket name"),
    ],
)
def test_s3_specs_that_cannot_be_listed(s3: S3Server, spec: str, message: str) -> None:
    s3.put("logs", "a.jsonl", b"{}\n")
    with pytest.raises(SourceError, match=message) as info:
        open_inputs([spec], endpoint_url=s3.endpoint_url)
    assert spec in str(info.value)


def test_an_empty_prefix_is_no_inputs(s3: S3Server) -> None:
    s3.put("logs", "a.jsonl", b"{}\n")
    with pytest.raises(NoInputs, match="'s3://logs/nothing-here/' holds no objects"):
        open_inputs(["s3://logs/nothing-here/"], endpoint_url=s3.endpoint_url)


def test_unreachable_endpoint_is_a_source_error(s3: S3Server) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SourceError, match="s3://logs"):
        open_inputs(["s3://logs"], endpoint_url=f"http://127.0.0.1:{port}")


def test_window_only_prunes_segment_layout(s3: S3Server) -> None:
    s3.put("logs", "exports/2020/a.jsonl", b'{"messageId": "m1"}\n')
    s3.put("logs", "segment-logs/src/not-a-day/a.jsonl", b'{"messageId": "m2"}\n')
    inputs = open_inputs(["s3://logs"], endpoint_url=s3.endpoint_url, since=DAYS[0], until=DAYS[1])
    assert ids(list(iter_records(inputs))) == ["m1", "m2"]


def test_retry_across_members_with_a_damaged_one(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members verified one by one: a re-GET neither repeats nor loses a line, and the
    damaged member's lines are rejects exactly once."""
    inputs = _members_object(s3, damaged=2)
    gets = flaky_gets(
        monkeypatch, {0: {9}, 1: {17}}, ResponseStreamingError(error="connection reset")
    )
    progress: list[int] = []
    items = list(iter_records(inputs, on_bytes=progress.append))
    assert len(gets) == 3
    assert ids(items) == [f"m{k}" for k in [*range(1, 21), *range(31, 61)]]
    assert [i.line for i in items if isinstance(i, Record)] == [*range(1, 21), *range(31, 61)]
    name = inputs.objects[0].name
    assert rejects(items) == [(Reason.CORRUPT_GZIP, f"{name}:{n}") for n in range(21, 31)]
    assert [i.event["messageId"] for i in items if isinstance(i, Reject)] == [
        f"m{k}" for k in range(21, 31)
    ]
    assert sum(progress) == inputs.total_bytes
