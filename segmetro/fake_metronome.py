"""A local stand-in for Metronome's ingest and search endpoints, with fault injection.

It validates requests against the packaged OpenAPI schema (``openapi-usage.json``), deduplicates
by ``transaction_id`` and can inject 429s, 5xx, partial ingests, dropped connections, latency and
a token-bucket rate limit. Tests drive it over real HTTP; users rehearse a backfill against it.

Fault draws come from one seeded generator, so a sequential client sees the same faults on every
run with the same ``seed`` (concurrent requests draw in arrival order).
"""

from __future__ import annotations

import contextlib
import gzip
import hmac
import logging
import math
import random
import re
import socket
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from socketserver import TCPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import orjson

from segmetro.errors import ConfigError
from segmetro.models import JsonObject, format_timestamp

__all__ = [
    "FUTURE_WINDOW",
    "PAST_WINDOW",
    "FakeConfig",
    "FakeConfigError",
    "FakeMetronome",
    "FakeState",
    "IngestRules",
    "ingest_rules",
    "openapi_schema",
    "parse_rfc3339",
    "serve",
]

logger = logging.getLogger(__name__)

#: Metronome accepts events up to 34 days old and at most 24 hours ahead of its clock.
PAST_WINDOW = timedelta(days=34)
FUTURE_WINDOW = timedelta(hours=24)
#: Request bodies above this size are refused with 413.
MAX_BODY_BYTES = 32 * 1024 * 1024

_NAMESPACE = uuid.UUID("5b0d3e0c-9a43-4d0e-9a57-6d1f0d3c2a11")
_FAULT_KINDS = ("drop", "429", "500", "502", "503", "partial_500")
_TS_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


# --------------------------------------------------------------------------- schema


def openapi_schema() -> JsonObject:
    """Metronome's published schema for the usage endpoints, as shipped in the package."""
    return cast(JsonObject, orjson.loads(_schema_bytes()))


@lru_cache(maxsize=1)
def _schema_bytes() -> bytes:
    return resources.files("segmetro").joinpath("openapi-usage.json").read_bytes()


@dataclass(frozen=True, slots=True)
class FieldRule:
    """Type and length constraints of one event field, from the schema."""

    name: str
    type: str | None
    min_length: int | None
    max_length: int | None


@dataclass(frozen=True, slots=True)
class IngestRules:
    """The constraints the fake enforces, read from the packaged OpenAPI schema."""

    min_items: int
    max_items: int
    required: tuple[str, ...]
    fields: tuple[FieldRule, ...]
    search_required: tuple[str, ...]
    search_item_required: tuple[str, ...]
    metric_required: tuple[str, ...]


def _resolve(schema: JsonObject, node: JsonObject) -> JsonObject:
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return _resolve(schema, cast(JsonObject, target))


def _required_of(schema: JsonObject, node: JsonObject) -> tuple[str, ...]:
    node = _resolve(schema, node)
    names: list[str] = list(node.get("required", []))
    for part in node.get("allOf", []):
        names.extend(n for n in _required_of(schema, part) if n not in names)
    return tuple(names)


def _json_body_schema(operation: JsonObject) -> JsonObject:
    return cast(JsonObject, operation["requestBody"]["content"]["application/json"]["schema"])


@lru_cache(maxsize=1)
def ingest_rules() -> IngestRules:
    """Read batch limits, required fields and lengths from the packaged schema."""
    schema = openapi_schema()
    ingest = _json_body_schema(schema["paths"]["/v1/ingest"]["post"])
    event = _resolve(schema, ingest["items"])
    fields = tuple(
        FieldRule(
            name=name,
            type=prop.get("type"),
            min_length=prop.get("minLength"),
            max_length=prop.get("maxLength"),
        )
        for name, prop in ((n, _resolve(schema, p)) for n, p in event["properties"].items())
    )
    search_op = schema["paths"]["/v1/events/search"]["post"]
    search_item = search_op["responses"]["200"]["content"]["application/json"]["schema"]["items"]
    metrics = _resolve(schema, search_item)["properties"]["matched_billable_metrics"]["items"]
    return IngestRules(
        min_items=int(ingest["minItems"]),
        max_items=int(ingest["maxItems"]),
        required=tuple(event["required"]),
        fields=fields,
        search_required=_required_of(schema, _json_body_schema(search_op)),
        search_item_required=_required_of(schema, search_item),
        metric_required=_required_of(schema, metrics),
    )


# --------------------------------------------------------------------------- validation


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time (4-digit year, ``Z`` or offset); raise ``ValueError``."""
    m = _TS_RE.fullmatch(text)
    if m is None:
        raise ValueError("is not an RFC 3339 date-time with a 4-digit year and a Z or offset")
    frac = m.group(7)
    micros = int((frac + "000000")[:6]) if frac else 0
    tz: timezone = UTC
    if m.group(8):
        hours, minutes = int(m.group(9)), int(m.group(10))
        if hours > 23 or minutes > 59:
            raise ValueError("has an invalid UTC offset")
        sign = -1 if m.group(8) == "-" else 1
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    try:
        return datetime(y, mo, d, h, mi, s, micros, tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"is not a valid date-time ({exc})") from None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _event_problem(event: Any, rules: IngestRules, now: datetime) -> str | None:
    if not isinstance(event, dict):
        return f"must be an object, got {_type_name(event)}"
    for name in rules.required:
        if name not in event:
            return f"missing required field '{name}'"
    for rule in rules.fields:
        if rule.name not in event:
            continue
        value = event[rule.name]
        if rule.type == "string":
            if not isinstance(value, str):
                return f"'{rule.name}' must be a string, got {_type_name(value)}"
            if rule.min_length is not None and len(value) < rule.min_length:
                return f"'{rule.name}' must be at least {rule.min_length} character(s) long"
            if rule.max_length is not None and len(value) > rule.max_length:
                return (
                    f"'{rule.name}' must be at most {rule.max_length} characters long "
                    f"(got {len(value)})"
                )
        elif rule.type == "object" and not isinstance(value, dict):
            return f"'{rule.name}' must be an object, got {_type_name(value)}"
    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        try:
            when = parse_rfc3339(stamp)
        except ValueError as exc:
            return f"'timestamp' {stamp!r} {exc}"
        try:
            too_old = when < now - PAST_WINDOW
            too_new = when > now + FUTURE_WINDOW
        except OverflowError:
            too_old, too_new = when.year < now.year, when.year > now.year
        if too_old:
            return f"'timestamp' {stamp!r} is more than 34 days in the past"
        if too_new:
            return f"'timestamp' {stamp!r} is more than 24 hours in the future"
    return None


def _batch_problem(body: Any, rules: IngestRules, now: datetime) -> str | None:
    if not isinstance(body, list):
        return f"request body must be a JSON array of events, got {_type_name(body)}"
    if len(body) < rules.min_items:
        return f"request body must contain at least {rules.min_items} event(s), got {len(body)}"
    if len(body) > rules.max_items:
        return f"request body must contain at most {rules.max_items} events, got {len(body)}"
    for index, event in enumerate(body):
        problem = _event_problem(event, rules, now)
        if problem is not None:
            return f"invalid event at index {index}: {problem}"
    return None


# --------------------------------------------------------------------------- config and state


class FakeConfigError(ConfigError, ValueError):
    """An impossible fake configuration (exit 2 in the CLI)."""


@dataclass(frozen=True)
class FakeConfig:
    """Behaviour of the fake. Probabilities are per authenticated request and must sum to ≤ 1."""

    token: str = field(default="test-token", repr=False)
    now: datetime | None = None  # fixed server clock (naive = UTC); None = real time
    seed: int | None = None
    p_429: float = 0.0
    retry_after: float | None = None  # Retry-After seconds on injected 429s
    retry_after_ms: float | None = None  # retry-after-ms on injected 429s
    rate_limit_type: str = "client"  # X-Metronome-Rate-Limit-Type: client | customer
    p_500: float = 0.0
    p_502: float = 0.0
    p_503: float = 0.0
    p_partial: float = 0.0  # ingest a random strict subset of a valid batch, then 500
    p_drop: float = 0.0  # read the request, then close the connection without answering
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0  # uniform extra latency in [0, jitter)
    rate_limit: float | None = None  # ingest token bucket, events per second
    rate_burst: float | None = None  # bucket size in events; None = one second's worth
    fail_status: int | None = None  # answer every authenticated request with this status
    fail_count: int | None = None  # with fail_status: only the first N requests; None = all
    search_rate: float | None = None  # /v1/events/search requests per second
    search_faults: bool = False  # apply the random faults to search requests too
    known_customers: frozenset[str] | None = None  # None = every customer_id matches
    billable_event_types: frozenset[str] | None = None  # None = every event_type is billable

    def __post_init__(self) -> None:
        if self.now is not None and self.now.tzinfo is None:
            object.__setattr__(self, "now", self.now.replace(tzinfo=UTC))
        probs = (self.p_429, self.p_500, self.p_502, self.p_503, self.p_partial, self.p_drop)
        if any(not 0.0 <= p <= 1.0 for p in probs):
            raise FakeConfigError("fault probabilities must be between 0 and 1")
        if sum(probs) > 1.0 + 1e-9:
            raise FakeConfigError("fault probabilities must add up to at most 1")
        if self.rate_limit_type not in ("client", "customer"):
            raise FakeConfigError("rate_limit_type must be 'client' or 'customer'")
        for name in ("rate_limit", "rate_burst", "search_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise FakeConfigError(f"{name} must be positive")
        for name in ("retry_after", "retry_after_ms", "latency_ms", "latency_jitter_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise FakeConfigError(f"{name} must not be negative")
        if self.fail_status is not None and not 400 <= self.fail_status <= 599:
            raise FakeConfigError("fail_status must be an HTTP error status (400-599)")
        if self.fail_count is not None and self.fail_count < 0:
            raise FakeConfigError("fail_count must not be negative")
        if not self.token:
            raise FakeConfigError("token must not be empty")


@dataclass(frozen=True)
class FakeState:
    """What the fake has seen; ``events`` holds accepted payloads in acceptance order.

    ``requests`` counts every ingest request (auth failures included); ``events_received`` the
    events of every authenticated ingest body that was a JSON array; ``faults`` injected faults
    by kind (drop, 429, 500, 502, 503, partial_500, fail_status); ``rate_limited`` token-bucket
    429s on ingest; ``search_rate_limited`` the same for search.
    """

    events: list[JsonObject]
    requests: int
    events_received: int
    events_accepted: int
    duplicates_ignored: int
    batches_rejected_400: int
    faults: dict[str, int]
    rate_limited: int
    auth_failures: int
    search_requests: int
    search_rate_limited: int

    def to_json(self) -> JsonObject:
        return {
            "requests": self.requests,
            "events_received": self.events_received,
            "events_accepted": self.events_accepted,
            "duplicates_ignored": self.duplicates_ignored,
            "batches_rejected_400": self.batches_rejected_400,
            "faults": dict(self.faults),
            "rate_limited": self.rate_limited,
            "auth_failures": self.auth_failures,
            "search_requests": self.search_requests,
            "search_rate_limited": self.search_rate_limited,
            "events": self.events,
        }


@dataclass(slots=True)
class _Stored:
    payload: JsonObject
    record_id: str
    processed_at: str
    when: datetime


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay: float = 0.0


class _Bucket:
    """Token bucket; a request larger than the burst is admitted when the bucket is full."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = time.monotonic()

    def take(self, n: float) -> float:
        """Take ``n`` tokens and return 0, or return the seconds until they would fit."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        need = min(n, self.burst)
        if self.tokens + 1e-9 >= need:
            self.tokens -= n
            return 0.0
        return (need - self.tokens) / self.rate


def _message(text: str) -> bytes:
    return orjson.dumps({"message": text})


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


#: Sentinel for a request body that is not JSON.
_INVALID: Any = object()

_STATUS_TEXT = {500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable"}


# --------------------------------------------------------------------------- the fake


class FakeMetronome:
    """A Metronome ingest/search server on a background thread; use as a context manager."""

    def __init__(
        self, config: FakeConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._config = config if config is not None else FakeConfig()
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._reset_locked()

    # lifecycle -------------------------------------------------------------

    def __enter__(self) -> FakeMetronome:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Bind the socket and serve on a background thread."""
        if self._server is not None:
            raise RuntimeError("the fake Metronome is already running")
        self._stopping.clear()
        server = _Server((self._host, self._port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="fake-metronome",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close every connection and join every thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        if thread is not None:
            thread.join()
        self._stopping.set()
        server.close_connections()
        server.server_close()
        self._server = None
        self._thread = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("the fake Metronome is not running")
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    # configuration and state -------------------------------------------------

    @property
    def config(self) -> FakeConfig:
        return self._config

    def configure(self, **changes: Any) -> FakeConfig:
        """Change settings while running (e.g. stop failing); rate buckets are refilled."""
        with self._lock:
            self._config = replace(self._config, **changes)
            self._make_buckets()
            return self._config

    def reset(self) -> None:
        """Forget all events and counts; reseed the fault generator; refill the buckets."""
        with self._lock:
            self._reset_locked()

    def snapshot(self, *, include_events: bool = True) -> FakeState:
        """A copy of the state; events are the payloads exactly as received."""
        with self._lock:
            events = list(self._events) if include_events else []
            c = self._counts
            return FakeState(
                events=orjson.loads(orjson.dumps(events)),
                requests=c["requests"],
                events_received=c["events_received"],
                events_accepted=len(self._events),
                duplicates_ignored=c["duplicates_ignored"],
                batches_rejected_400=c["batches_rejected_400"],
                faults={k: self._faults[k] for k in sorted(self._faults)},
                rate_limited=c["rate_limited"],
                auth_failures=c["auth_failures"],
                search_requests=c["search_requests"],
                search_rate_limited=c["search_rate_limited"],
            )

    def _reset_locked(self) -> None:
        seed = self._config.seed
        self._rng = random.Random(seed)
        self._jitter_rng = random.Random(None if seed is None else seed + 1)
        self._events: list[JsonObject] = []
        self._by_id: dict[str, _Stored] = {}
        self._counts: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._forced = 0
        self._make_buckets()

    def _make_buckets(self) -> None:
        cfg = self._config
        self._bucket = (
            None
            if cfg.rate_limit is None
            else _Bucket(cfg.rate_limit, cfg.rate_burst or cfg.rate_limit)
        )
        self._search_bucket = (
            None if cfg.search_rate is None else _Bucket(cfg.search_rate, max(1.0, cfg.search_rate))
        )

    def _now(self) -> datetime:
        return self._config.now or datetime.now(UTC)

    # request handling (called by the handler threads) ------------------------

    def _auth(self, header: str | None) -> _Reply | None:
        """None when the bearer token is right; otherwise the 401/403 reply."""
        scheme, _, credentials = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            self._counts["auth_failures"] += 1
            return _Reply(401, _message("Missing or malformed Authorization bearer token"))
        if not hmac.compare_digest(
            credentials.strip().encode("utf-8", "surrogateescape"),
            self._config.token.encode("utf-8", "surrogateescape"),
        ):
            self._counts["auth_failures"] += 1
            return _Reply(403, _message("Invalid access token"))
        return None

    def _rate_headers(self, wait: float | None, wait_ms: float | None) -> dict[str, str]:
        headers = {"X-Metronome-Rate-Limit-Type": self._config.rate_limit_type}
        if wait is not None:
            headers["Retry-After"] = _format_seconds(wait)
        if wait_ms is not None:
            headers["retry-after-ms"] = _format_seconds(wait_ms)
        return headers

    def _common_faults(self, *, random_faults: bool) -> tuple[float, _Reply | None, str | None]:
        """Latency, forced status and a random fault draw; returns (delay, reply, partial?)."""
        cfg = self._config
        delay = cfg.latency_ms / 1000.0
        if cfg.latency_jitter_ms:
            delay += self._jitter_rng.uniform(0.0, cfg.latency_jitter_ms) / 1000.0
        forced_left = cfg.fail_count is None or self._forced < cfg.fail_count
        if cfg.fail_status is not None and forced_left:
            self._forced += 1
            self._faults["fail_status"] += 1
            headers = (
                self._rate_headers(cfg.retry_after, cfg.retry_after_ms)
                if cfg.fail_status == 429
                else {}
            )
            text = _STATUS_TEXT.get(cfg.fail_status, f"Injected failure ({cfg.fail_status})")
            return delay, _Reply(cfg.fail_status, _message(text), headers), None
        if not random_faults:
            return delay, None, None
        probs = (cfg.p_drop, cfg.p_429, cfg.p_500, cfg.p_502, cfg.p_503, cfg.p_partial)
        if not any(probs):
            return delay, None, None
        draw = self._rng.random()
        kind = None
        for name, p in zip(_FAULT_KINDS, probs, strict=True):
            if draw < p:
                kind = name
                break
            draw -= p
        if kind is None or kind == "partial_500":
            return delay, None, kind
        self._faults[kind] += 1
        if kind == "drop":
            return delay, _Reply(0, drop=True), None
        if kind == "429":
            reply = _Reply(
                429,
                _message("Too many requests"),
                self._rate_headers(cfg.retry_after, cfg.retry_after_ms),
            )
            return delay, reply, None
        status = int(kind)
        return delay, _Reply(status, _message(_STATUS_TEXT[status])), None

    def _handle_ingest(self, auth: str | None, body: Any) -> _Reply:
        rules = ingest_rules()
        with self._lock:
            self._counts["requests"] += 1
            denied = self._auth(auth)
            if denied is not None:
                return denied
            if isinstance(body, list):
                self._counts["events_received"] += len(body)
            delay, reply, special = self._common_faults(random_faults=True)
            if reply is not None:
                reply.delay = delay
                return reply
            now = self._now()
            problem = (
                "request body is not valid JSON"
                if body is _INVALID
                else _batch_problem(body, rules, now)
            )
            if problem is not None:
                self._counts["batches_rejected_400"] += 1
                return _Reply(400, _message(problem), delay=delay)
            events = cast(list[JsonObject], body)
            if self._bucket is not None:
                wait = self._bucket.take(len(events))
                if wait > 0:
                    self._counts["rate_limited"] += 1
                    headers = self._rate_headers(math.ceil(wait), math.ceil(wait * 1000))
                    return _Reply(429, _message("Rate limit exceeded"), headers, delay=delay)
            if special == "partial_500":
                self._faults["partial_500"] += 1
                keep = self._rng.randrange(len(events))
                chosen = sorted(self._rng.sample(range(len(events)), keep))
                self._accept([events[i] for i in chosen], now)
                return _Reply(500, _message(_STATUS_TEXT[500]), delay=delay)
            self._accept(events, now)
            return _Reply(200, b"{}", delay=delay)

    def _accept(self, events: list[JsonObject], now: datetime) -> None:
        processed_at = format_timestamp(now)
        for event in events:
            tid = event["transaction_id"]
            if tid in self._by_id:
                self._counts["duplicates_ignored"] += 1
                continue
            self._by_id[tid] = _Stored(
                payload=event,
                record_id=str(uuid.uuid5(_NAMESPACE, "event:" + tid)),
                processed_at=processed_at,
                when=parse_rfc3339(event["timestamp"]),
            )
            self._events.append(event)

    def _handle_search(self, auth: str | None, body: Any) -> _Reply:
        rules = ingest_rules()
        with self._lock:
            self._counts["search_requests"] += 1
            denied = self._auth(auth)
            if denied is not None:
                return denied
            delay, reply, special = self._common_faults(random_faults=self._config.search_faults)
            if special == "partial_500":  # nothing to ingest: a plain 500
                self._faults["partial_500"] += 1
                reply = _Reply(500, _message(_STATUS_TEXT[500]))
            if reply is not None:
                reply.delay = delay
                return reply
            if self._search_bucket is not None:
                wait = self._search_bucket.take(1)
                if wait > 0:
                    self._counts["search_rate_limited"] += 1
                    headers = self._rate_headers(math.ceil(wait), math.ceil(wait * 1000))
                    return _Reply(429, _message("Rate limit exceeded"), headers, delay=delay)
            problem = _search_problem(body, rules)
            if problem is not None:
                return _Reply(400, _message(problem), delay=delay)
            ids = cast(list[str], body["transactionIds"])
            cutoff = self._now() - PAST_WINDOW
            items = [
                self._search_item(stored)
                for stored in (self._by_id.get(tid) for tid in dict.fromkeys(ids))
                if stored is not None and stored.when >= cutoff
            ]
            return _Reply(200, orjson.dumps(items), delay=delay)

    def _search_item(self, stored: _Stored) -> JsonObject:
        cfg = self._config
        payload = stored.payload
        customer, event_type = payload["customer_id"], payload["event_type"]
        item: JsonObject = {
            "id": stored.record_id,
            "transaction_id": payload["transaction_id"],
            "customer_id": customer,
            "event_type": event_type,
            "timestamp": payload["timestamp"],
            "properties": payload.get("properties", {}),
            "is_duplicate": False,
            "processed_at": stored.processed_at,
        }
        if cfg.known_customers is None or customer in cfg.known_customers:
            item["matched_customer"] = {
                "id": str(uuid.uuid5(_NAMESPACE, "customer:" + customer)),
                "name": customer,
            }
        billable = cfg.billable_event_types is None or event_type in cfg.billable_event_types
        item["matched_billable_metrics"] = (
            [
                {
                    "id": str(uuid.uuid5(_NAMESPACE, "metric:" + event_type)),
                    "name": event_type,
                    "aggregation_type": "COUNT",
                    "event_type_filter": {"in_values": [event_type]},
                    "property_filters": [],
                    "group_keys": [],
                }
            ]
            if billable
            else []
        )
        return item


def _search_problem(body: Any, rules: IngestRules) -> str | None:
    if body is _INVALID:
        return "request body is not valid JSON"
    if not isinstance(body, dict):
        return f"request body must be a JSON object, got {_type_name(body)}"
    for name in rules.search_required:
        if name not in body:
            return f"missing required field '{name}'"
    ids = body["transactionIds"]
    if not isinstance(ids, list):
        return f"'transactionIds' must be an array, got {_type_name(ids)}"
    for index, tid in enumerate(ids):
        if not isinstance(tid, str):
            return f"'transactionIds' item at index {index} must be a string"
    return None


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its connections so ``stop`` can close and join them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeMetronome) -> None:
        self.fake = fake
        self._conn_lock = threading.Lock()
        self._conns: dict[threading.Thread, socket.socket] = {}
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # skip HTTPServer's reverse DNS lookup
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        thread = threading.Thread(
            target=self._run, args=(request, client_address), name="fake-metronome-conn"
        )
        thread.daemon = True
        with self._conn_lock:
            self._conns[thread] = cast(socket.socket, request)
        thread.start()

    def _run(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - one broken connection must not stop the server
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._conn_lock:
                self._conns.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s failed", client_address, exc_info=True)

    def close_connections(self, timeout: float = 5.0) -> None:
        """Shut down every open connection and join its thread."""
        with self._conn_lock:
            conns = list(self._conns.items())
        for _, sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread, _ in conns:
            thread.join(timeout)


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the owning ``FakeMetronome``; never logs headers."""

    protocol_version = "HTTP/1.1"
    server_version = "segmetro-fake-metronome"
    sys_version = ""
    disable_nagle_algorithm = True

    @property
    def fake(self) -> FakeMetronome:
        return cast(_Server, self.server).fake

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # plumbing ----------------------------------------------------------------

    def _send(self, reply: _Reply) -> None:
        if reply.delay > 0 and self.fake._stopping.wait(reply.delay):
            self.close_connection = True
            return
        if reply.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def _fail(self, status: int, text: str) -> None:
        self.close_connection = True
        self._send(_Reply(status, _message(text), {"Connection": "close"}))

    def _read_body(self) -> bytes | None:
        """The request body (de-chunked, gunzipped), or None after answering an error."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = self._read_chunked()
            if data is None:
                return None
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self._fail(400, "invalid Content-Length")
                return None
            if length < 0 or length > MAX_BODY_BYTES:
                self._fail(413, "request body too large")
                return None
            data = self.rfile.read(length)
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error):
                self._send(_Reply(400, _message("request body is not valid gzip")))
                return None
        elif encoding not in ("", "identity"):
            self._send(_Reply(415, _message(f"unsupported Content-Encoding {encoding!r}")))
            return None
        return data

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._fail(400, "invalid chunked body")
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                self._fail(413, "request body too large")
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    @staticmethod
    def _parse(data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return _INVALID

    # routes -------------------------------------------------------------------

    def do_POST(self) -> None:
        data = self._read_body()
        if data is None:
            return
        path = urlsplit(self.path).path.rstrip("/")
        auth = self.headers.get("Authorization")
        if path == "/v1/ingest":
            self._send(self.fake._handle_ingest(auth, self._parse(data)))
        elif path == "/v1/events/search":
            self._send(self.fake._handle_search(auth, self._parse(data)))
        elif path == "/_fake/reset":
            self.fake.reset()
            self._send(_Reply(200))
        else:
            self._send(_Reply(404, _message(f"no route for POST {path}")))

    def do_GET(self) -> None:
        if self._read_body() is None:
            return
        parts = urlsplit(self.path)
        if parts.path.rstrip("/") == "/_fake/state":
            flag = parse_qs(parts.query).get("events", ["1"])[-1].lower()
            state = self.fake.snapshot(include_events=flag not in ("0", "false", "no"))
            self._send(_Reply(200, orjson.dumps(state.to_json())))
        else:
            self._send(_Reply(404, _message(f"no route for GET {parts.path}")))


# --------------------------------------------------------------------------- CLI entry point


def serve(
    config: FakeConfig,
    *,
    host: str,
    port: int,
    ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> FakeState:
    """Serve until KeyboardInterrupt (or ``stop`` is set); return the final counts."""
    fake = FakeMetronome(config, host=host, port=port)
    fake.start()
    try:
        if ready is not None:
            ready(fake.url)
        waiter = stop if stop is not None else threading.Event()
        while not waiter.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return fake.snapshot(include_events=False)
