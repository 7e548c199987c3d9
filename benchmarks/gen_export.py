"""Generate a realistic, deterministic Segment export for the benchmarks.

Messages look like Segment's S3 export of an analytics-node source (the shape of
``samples/events``): ~80 % track (API Call / Job Completed / Seat Added), identify and page for the
rest, full ``context``, ``timestamp`` in Segment's own normal form, and a few re-delivered
duplicates (same messageId, same content). The same ``--seed`` gives the same bytes.

    python benchmarks/gen_export.py --events 1000000 --files 4 --gzip --out /tmp/export
    python benchmarks/gen_export.py --events 10000 --files 1 --out /tmp/small   # plain JSONL
    segmetro map -m /tmp/export/mapping.yaml /tmp/export/events --now 2026-11-26T00:00:00Z

Timestamps fall in the ``--days`` days before ``--now`` (default 2026-11-26), so a map run with
``--now 2026-11-26T00:00:00Z`` keeps every billable event inside Metronome's 34-day window.
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

DEFAULT_NOW = "2026-11-26T00:00:00Z"
CUSTOMERS = [f"cust-{i:04d}" for i in range(500)]
ENDPOINTS = ["/v1/jobs", "/v1/users", "/v1/search", "/v1/invoices", "/v2/ingest"]
PLANS = ["free", "pro", "enterprise"]

#: mapping used by map_bench.py: Segment's destination defaults, the common case
MAPPING_YAML = """\
version: 1
mappings:
  - name: usage
    trigger: type = "track" and (event = "API Call" or event = "Job Completed")
    fields:
      transaction_id: $.messageId
      customer_id: $.context.groupId
      timestamp: $.timestamp
      event_type: $.event
      properties: $.properties
"""


#: the varied export's mapping: three mappings with triggers and the common directives
VARIED_MAPPING_YAML = """\
version: 1
defaults:
  timestamp: $.timestamp
mappings:
  - name: api
    trigger: type = "track" and event = "API Call"
    string_properties: true
    fields:
      transaction_id: {"@template": "{{messageId}}-api"}
      customer_id: {"@coalesce": [{"@path": "$.context.groupId"}, {"@path": "$.userId"}]}
      event_type: api_call
      properties:
        endpoint: $.properties.endpoint
        status: $.properties.status
        bytes: $.properties.bytes
        tier:
          "@if": {"exists": {"@path": "$.properties.plan"}, "then": {"@path": "$.properties.plan"},
                  "else": "standard"}
  - name: jobs
    trigger: type = "track" and event = "Job Completed" and properties.cpu_seconds > 0
    fields:
      transaction_id: {"@template": "{{messageId}}-job"}
      customer_id: $.context.groupId
      event_type: cpu_seconds
      properties:
        cpu_seconds: $.properties.cpu_seconds
        job_id: $.properties.job_id
        region: {"@coalesce": [{"@path": "$.properties.region"}, "unknown"]}
  - name: seats
    trigger: type = "track" and contains(event, "Seat")
    fields:
      transaction_id: $.messageId
      customer_id: $.context.groupId
      event_type: seats
      properties: $.properties
"""


def _varied_time(r: random.Random, moment: datetime) -> str:
    """RFC 3339 as real sources write it: ms + Z, an offset, or whole seconds."""
    form = r.random()
    if form < 0.4:
        return _iso(moment)
    if form < 0.7:
        local = moment.astimezone(timezone(timedelta(hours=2)))
        return local.isoformat(timespec="milliseconds")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _properties(r: random.Random, name: str) -> dict[str, Any]:
    if name == "API Call":
        return {
            "endpoint": r.choice(ENDPOINTS),
            "method": r.choice(["GET", "POST", "PUT"]),
            "latency_ms": r.randint(5, 900),
            "status": r.choice([200, 200, 200, 201, 404, 500]),
            "bytes": r.randint(100, 100_000),
        }
    if name == "Job Completed":
        return {
            "job_id": f"job_{r.randint(100000, 999999)}",
            "cpu_seconds": round(r.uniform(0.5, 600), 3),
            "plan": r.choice(PLANS),
            "region": r.choice(["eu-west-1", "us-east-1", "ap-south-1"]),
        }
    return {"seats": r.randint(1, 5), "plan": r.choice(PLANS)}


def message(r: random.Random, when: datetime, *, varied: bool = False) -> dict[str, Any]:
    """One Segment message at `when` (`varied`: its timestamp in one of several forms)."""
    user = f"user_{r.randint(1, 20000)}"
    group = r.choice(CUSTOMERS)
    sent = when + timedelta(milliseconds=r.randint(10, 900))
    kind = r.choices(["track", "identify", "page"], weights=[8, 1, 1])[0]
    base: dict[str, Any] = {
        "anonymousId": str(uuid.UUID(int=r.getrandbits(128))),
        "userId": user,
        "messageId": f"ajs-{uuid.UUID(int=r.getrandbits(128)).hex}",
        "type": kind,
        "context": {
            "groupId": group,
            "ip": f"203.0.{r.randint(0, 255)}.{r.randint(1, 254)}",
            "library": {"name": "analytics-node", "version": "6.2.0"},
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
            "traits": {"email": f"{user}@{group}.example"},
        },
        "integrations": {},
        "originalTimestamp": _iso(when),
        "sentAt": _iso(sent),
        "receivedAt": _iso(sent + timedelta(milliseconds=40)),
        "timestamp": _varied_time(r, when) if varied else _iso(when),
        "version": 2,
    }
    if kind == "track":
        name = r.choices(["API Call", "Job Completed", "Seat Added"], weights=[6, 3, 1])[0]
        base["event"] = name
        base["properties"] = _properties(r, name)
    elif kind == "identify":
        base["traits"] = {"email": f"{user}@{group}.example", "plan": r.choice(PLANS)}
    else:
        base["name"] = "Pricing"
        base["properties"] = {"path": "/pricing", "title": "Pricing"}
    return base


def lines(
    n: int, *, seed: int, now: datetime, days: float, dup_rate: float, varied: bool = False
) -> Iterator[bytes]:
    """`n` lines (without newline); about `dup_rate` of them re-deliver an earlier message."""
    r = random.Random(seed)
    span_ms = int(days * 86_400_000)
    start = now - timedelta(milliseconds=span_ms)
    recent: list[bytes] = []
    for _ in range(n):
        if recent and r.random() < dup_rate:
            yield r.choice(recent)
            continue
        when = start + timedelta(milliseconds=r.randrange(span_ms))
        line = orjson.dumps(message(r, when, varied=varied))
        if len(recent) < 256:
            recent.append(line)
        else:
            recent[r.randrange(256)] = line
        yield line


def generate(
    out: Path,
    *,
    events: int,
    files: int,
    gzip_files: bool,
    seed: int = 6,
    now: str = DEFAULT_NOW,
    days: float = 20.0,
    dup_rate: float = 0.002,
    varied: bool = False,
) -> list[Path]:
    """Write `events` lines split evenly over `files` files in `out/events/`, and
    `out/mapping.yaml`; returns the paths of the event files."""
    events_dir = out / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    clock = datetime.fromisoformat(now.replace("Z", "+00:00")).astimezone(UTC)
    stream = lines(events, seed=seed, now=clock, days=days, dup_rate=dup_rate, varied=varied)
    paths: list[Path] = []
    per_file, extra = divmod(events, files)
    for i in range(files):
        count = per_file + (1 if i < extra else 0)
        suffix = ".jsonl.gz" if gzip_files else ".jsonl"
        path = events_dir / f"part-{i:03d}{suffix}"
        buf: list[bytes] = []
        if gzip_files:
            # mtime=0: identical bytes on every run; level 6 = what Segment's export uses
            fh: Any = gzip.GzipFile(path, "wb", compresslevel=6, mtime=0)
        else:
            fh = path.open("wb")
        with fh:
            for _ in range(count):
                buf.append(next(stream))
                if len(buf) >= 4096:
                    fh.write(b"\n".join(buf) + b"\n")
                    buf = []
            if buf:
                fh.write(b"\n".join(buf) + b"\n")
        paths.append(path)
    mapping = VARIED_MAPPING_YAML if varied else MAPPING_YAML
    (out / "mapping.yaml").write_text(mapping, encoding="utf-8")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="lines in total")
    parser.add_argument("--files", type=int, default=4, help="split over this many files")
    parser.add_argument("--gzip", action="store_true", help="gzip each file (.jsonl.gz)")
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--now", default=DEFAULT_NOW, help="events fall before this time")
    parser.add_argument("--days", type=float, default=20.0, help="time span of the events")
    parser.add_argument("--dup-rate", type=float, help="re-delivered share (0.002; varied 0.01)")
    parser.add_argument(
        "--varied",
        action="store_true",
        help="mixed timestamp forms, three mappings with @template/@coalesce/@if, 1%% duplicates",
    )
    args = parser.parse_args(argv)
    paths = generate(
        args.out,
        events=args.events,
        files=args.files,
        gzip_files=args.gzip,
        seed=args.seed,
        now=args.now,
        days=args.days,
        dup_rate=args.dup_rate if args.dup_rate is not None else (0.01 if args.varied else 0.002),
        varied=args.varied,
    )
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {args.events} events, {len(paths)} files, {total / 1e6:.1f} MB")
    print(f"mapping: {args.out / 'mapping.yaml'}  (map with --now {args.now})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
