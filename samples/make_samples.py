"""Regenerate the sample Segment export in samples/events/ (deterministic; never edit it by hand).

Run: python samples/make_samples.py
"""

from __future__ import annotations

import gzip
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import orjson

HERE = Path(__file__).parent
CUSTOMERS = ["acme-corp", "globex", "initech", "umbrella", "hooli"]
EVENTS = {
    "API Call": lambda r: {
        "endpoint": r.choice(["/v1/jobs", "/v1/users", "/v1/search"]),
        "method": r.choice(["GET", "POST"]),
        "latency_ms": r.randint(5, 900),
    },
    "Job Completed": lambda r: {
        "job_id": f"job_{r.randint(1000, 9999)}",
        "cpu_seconds": round(r.uniform(0.5, 600), 3),
        "plan": r.choice(["free", "pro", "enterprise"]),
    },
    "Seat Added": lambda r: {"seats": r.randint(1, 5), "plan": r.choice(["pro", "enterprise"])},
}


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message(r: random.Random, when: datetime, kind: str) -> dict[str, object]:
    user = f"user_{r.randint(1, 40)}"
    group = r.choice(CUSTOMERS)
    sent = when + timedelta(milliseconds=r.randint(10, 900))
    base: dict[str, object] = {
        "anonymousId": str(uuid.UUID(int=r.getrandbits(128))),
        "userId": user,
        "messageId": f"ajs-{uuid.UUID(int=r.getrandbits(128)).hex}",
        "type": kind,
        "context": {
            "groupId": group,
            "ip": f"203.0.113.{r.randint(1, 254)}",
            "library": {"name": "analytics-node", "version": "6.2.0"},
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
            "traits": {"email": f"{user}@{group}.example"},
        },
        "integrations": {},
        "originalTimestamp": iso(when),
        "sentAt": iso(sent),
        "receivedAt": iso(sent + timedelta(milliseconds=40)),
        "timestamp": iso(when),
        "version": 2,
    }
    if kind == "track":
        name = r.choice(list(EVENTS))
        base["event"] = name
        base["properties"] = EVENTS[name](r)
    elif kind == "identify":
        base["traits"] = {"email": f"{user}@{group}.example", "plan": "pro"}
    else:
        base["name"] = "Pricing"
        base["properties"] = {"path": "/pricing", "title": "Pricing"}
    return base


def day_lines(r: random.Random, day: datetime, count: int) -> list[bytes]:
    lines = []
    for _ in range(count):
        when = day + timedelta(seconds=r.randint(0, 86399), milliseconds=r.randint(0, 999))
        kind = r.choices(["track", "identify", "page"], weights=[8, 1, 1])[0]
        lines.append(orjson.dumps(message(r, when, kind)))
    return lines


ACCOUNT_NS = uuid.UUID("0b7f3a52-6a1e-4d55-9a43-2f6d9e0c1b77")


def _id(kind: str, name: str) -> str:
    return str(uuid.uuid5(ACCOUNT_NS, f"{kind}:{name}"))


def account() -> dict[str, object]:
    """The sample Metronome account: its customers (by ingest alias) and billable metrics."""
    customers: list[dict[str, object]] = []
    for name in [*CUSTOMERS, "oldco"]:
        customers.append(
            {
                "id": _id("customer", name),
                "external_id": name,
                "ingest_aliases": [name, f"billing@{name}.example"],
                "name": name.replace("-", " ").title(),
                "created_at": "2026-01-05T00:00:00.000Z",
                "updated_at": "2026-01-05T00:00:00.000Z",
                "customer_config": {"salesforce_account_id": None},
                "custom_fields": {},
                **({"archived_at": "2026-06-30T00:00:00.000Z"} if name == "oldco" else {}),
            }
        )
    api = {"in_values": ["API Call"]}
    metrics: list[dict[str, object]] = [
        {
            "id": _id("metric", "api-calls"),
            "name": "API calls",
            "aggregation_type": "COUNT",
            "event_type_filter": api,
            "property_filters": [{"name": "endpoint", "exists": True}],
            "group_keys": [["endpoint"]],
        },
        {
            "id": _id("metric", "peak-latency"),
            "name": "Peak latency (ms)",
            "aggregation_type": "MAX",
            "aggregation_key": "latency_ms",
            "event_type_filter": api,
            "property_filters": [{"name": "latency_ms", "exists": True}],
        },
        {
            "id": _id("metric", "endpoints"),
            "name": "Endpoints used",
            "aggregation_type": "UNIQUE",
            "aggregation_key": "endpoint",
            "event_type_filter": api,
            "property_filters": [{"name": "endpoint", "exists": True}],
        },
        {
            "id": _id("metric", "last-method"),
            "name": "Last method",
            "aggregation_type": "LATEST",
            "aggregation_key": "method",
            "event_type_filter": api,
            "property_filters": [{"name": "method", "exists": True, "in_values": ["GET", "POST"]}],
        },
        {
            "id": _id("metric", "cpu-seconds"),
            "name": "CPU seconds",
            "aggregation_type": "SUM",
            "aggregation_key": "cpu_seconds",
            "event_type_filter": {"in_values": ["Job Completed"]},
            "property_filters": [
                {"name": "cpu_seconds", "exists": True},
                {"name": "plan", "exists": True, "in_values": ["free", "pro", "enterprise"]},
            ],
            "group_keys": [["plan"]],
        },
        {
            "id": _id("metric", "seats"),
            "name": "Seats (SQL)",
            "sql": "SELECT SUM(CAST(properties.seats AS DECIMAL)) FROM events "
            "WHERE event_type = 'Seat Added'",
        },
        {
            "id": _id("metric", "legacy"),
            "name": "Legacy API calls",
            "aggregation_type": "COUNT",
            "event_type_filter": {"in_values": ["api_call"]},
            "property_filters": [],
            "archived_at": "2026-06-30T00:00:00Z",
        },
    ]
    # Cents per unit, for the fake's previewEvents drafts (the fake's own extension).
    prices = {"API calls": 2, "CPU seconds": 0.5}
    return {"customers": customers, "billable_metrics": metrics, "prices": prices}


def write_account() -> None:
    """samples/account.json for the fake, and the API's answers for the offline preview."""
    data = account()
    option = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
    (HERE / "account.json").write_bytes(orjson.dumps(data, option=option))
    billing = HERE / "billing"
    billing.mkdir(exist_ok=True)
    # What GET /v1/billable-metrics answers: archived metrics are left out by default.
    metrics = cast(list[dict[str, object]], data["billable_metrics"])
    customers = cast(list[dict[str, object]], data["customers"])
    active = [m for m in metrics if "archived_at" not in m]
    page = {"data": active, "next_page": None}
    (billing / "billable-metrics.json").write_bytes(orjson.dumps(page, option=option))
    active_customers = [c for c in customers if "archived_at" not in c]
    page = {"data": active_customers, "next_page": None}
    (billing / "customers.json").write_bytes(orjson.dumps(page, option=option))


def main() -> None:
    write_account()
    r = random.Random(20261126)
    out = HERE / "events"
    out.mkdir(exist_ok=True)
    first = day_lines(r, datetime(2026, 11, 23, tzinfo=UTC), 60)
    # Segment re-delivers a few messages: the same messageId with the same content.
    first += [first[3], first[10]]
    # One message without a group, one far outside Metronome's 34-day window.
    billable = [
        m for m in map(orjson.loads, first) if m.get("event") in ("API Call", "Job Completed")
    ]
    orphan = dict(billable[0], messageId="ajs-orphan-0001")
    orphan["context"] = {k: v for k, v in orphan["context"].items() if k != "groupId"}
    stale = dict(billable[1], messageId="ajs-stale-0001", timestamp="2026-09-01T12:00:00.000Z")
    first += [orjson.dumps(orphan), orjson.dumps(stale)]
    bad = [
        b'{"type": "track", "event": "API Call", "messageId": "ajs-trunc',
        b"[1, 2, 3]",
        b"not json",
    ]
    plain = [*first[:30], bad[0], *first[30:50], bad[1], *first[50:], bad[2]]
    (out / "2026-11-23.jsonl").write_bytes(b"\n".join(plain) + b"\n")
    second = day_lines(r, datetime(2026, 11, 24, tzinfo=UTC), 80)
    second.append(first[20])
    with gzip.GzipFile(out / "2026-11-24.jsonl.gz", "wb", mtime=0) as fh:
        fh.write(b"\n".join(second) + b"\n")
    third = day_lines(r, datetime(2026, 11, 25, tzinfo=UTC), 60)
    with gzip.GzipFile(out / "2026-11-25.ndjson.gz", "wb", mtime=0) as fh:
        fh.write(b"\n".join(third) + b"\n")


if __name__ == "__main__":
    main()
