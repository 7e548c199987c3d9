"""A local stand-in for Metronome's ingest and search endpoints, with fault injection.

It validates requests against the packaged OpenAPI schema (``openapi-usage.json``), deduplicates
by ``transaction_id`` and can inject 429s, 5xx, partial ingests, dropped connections and latency.
Tests drive it over real HTTP; users rehearse a backfill against it.

By default it limits ingest like a real account: Metronome's documented 5,000 events/s token
bucket (``rate_limit=0`` turns it off), answering 429 with ``X-Metronome-Rate-Limit-Type:
client`` and, as Metronome documents, no ``Retry-After``; hints are opt-in so a client is
rehearsed against the silence it will meet. An optional per-``customer_id`` bucket refuses a
whole batch with type ``customer``.

Fault draws come from one seeded generator, so a sequential client sees the same faults on every
run with the same ``seed`` (concurrent requests draw in arrival order).
"""

from __future__ import annotations

import contextlib
import errno
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
    "FakeListenError",
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
#: Metronome's documented default ingest limit per account, in events per second.
DEFAULT_RATE_LIMIT = 5000.0
#: orjson writes at most 254 nested levels and the state JSON holds events two levels down, so
#: deeper events are refused with 400 rather than breaking ``/_fake/state`` for good.
MAX_EVENT_DEPTH = 252

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
    if not _serialisable([body]):  # the nesting ``{"events": [event]}`` gives events in the state
        index = next(i for i, event in enumerate(body) if not _serialisable([[event]]))
        return (
            f"invalid event at index {index}: nested too deeply (at most {MAX_EVENT_DEPTH} "
            "levels of objects and arrays, the event included)"
        )
    return None


def _serialisable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError, e.g. "Recursion limit reached"
        return False
    return True


# --------------------------------------------------------------------------- config and state


class FakeConfigError(ConfigError, ValueError):
    """An impossible fake configuration (exit 2 in the CLI)."""


class FakeListenError(ConfigError):
    """The fake cannot listen on the address it was given (exit 2 in the CLI)."""


@dataclass(frozen=True)
class FakeConfig:
    """Behaviour of the fake. Probabilities are per authenticated request and must sum to ≤ 1.

    The defaults are a real account's: the documented 5,000 events/s ingest limit, 429s without
    retry hints. ``rate_limit_hint`` sends the exact wait on rate-limit 429s instead of the fixed
    ``retry_after``/``retry_after_ms`` (which are otherwise sent on every 429 when set).
    """

    token: str = field(default="test-token", repr=False)
    now: datetime | None = None  # fixed server clock (naive = UTC); None = real time
    seed: int | None = None
    p_429: float = 0.0
    retry_after: float | None = None  # Retry-After seconds on every 429; None = not sent
    retry_after_ms: float | None = None  # retry-after-ms on every 429; None = not sent
    rate_limit_type: str = "client"  # X-Metronome-Rate-Limit-Type of injected 429s
    p_500: float = 0.0
    p_502: float = 0.0
    p_503: float = 0.0
    p_partial: float = 0.0  # ingest a random strict subset of a valid batch, then 500
    p_drop: float = 0.0  # read the request, then close the connection without answering
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0  # uniform extra latency in [0, jitter)
    rate_limit: float | None = DEFAULT_RATE_LIMIT  # ingest events per second; 0 or None = off
    rate_burst: float | None = None  # bucket size in events; None = one second's worth
    rate_limit_hint: bool = False  # rate-limit 429s carry the exact wait as both headers
    customer_rate_limit: float | None = None  # events/s per customer_id; 0 or None = off
    customer_rate_burst: float | None = None  # per-customer bucket; None = one second's worth
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
        for name in ("rate_limit", "customer_rate_limit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise FakeConfigError(f"{name} must not be negative (0 turns it off)")
        for name in ("rate_burst", "customer_rate_burst", "search_rate"):
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
    by kind (drop, 429, 500, 502, 503, partial_500, fail_status); ``rate_limited`` ingest 429s
    of the account bucket; ``customer_rate_limited`` ingest 429s of a per-customer bucket;
    ``search_rate_limited`` the search bucket's 429s.
    """

    events: list[JsonObject]
    requests: int
    events_received: int
    events_accepted: int
    duplicates_ignored: int
    batches_rejected_400: int
    faults: dict[str, int]
    rate_limited: int
    customer_rate_limited: int
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
            "customer_rate_limited": self.customer_rate_limited,
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
    """Token bucket; a request larger than the burst is admitted when the bucket is full.

    ``wait`` and ``take`` are separate so a batch is checked against every bucket it touches
    before any of them is charged.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.last = clock()

    def wait(self, n: float) -> float:
        """Refill; 0 when ``n`` tokens can be taken now, else the seconds until they can."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        need = min(n, self.burst)
        if self.tokens + 1e-9 >= need:
            return 0.0
        return (need - self.tokens) / self.rate

    def take(self, n: float) -> None:
        """Charge ``n`` tokens (after ``wait`` said they fit); may go below zero."""
        self.tokens -= n

    def full(self) -> bool:
        """Refilled completely, i.e. indistinguishable from a new bucket."""
        self.wait(0)
        return self.tokens + 1e-9 >= self.burst


def _message(text: str) -> bytes:
    return orjson.dumps({"message": text})


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


#: Sentinel for a request body that is not JSON.
_INVALID: Any = object()

_STATUS_TEXT = {500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable"}

#: The methods each route answers; any other method gets 405 with an ``Allow`` header.
_ROUTES: dict[str, tuple[str, ...]] = {
    "/v1/ingest": ("POST",),
    "/v1/events/search": ("POST",),
    "/_fake/reset": ("POST",),
    "/_fake/state": ("GET",),
}
#: Idle customer buckets are forgotten once this many exist (a full bucket equals a new one).
_CUSTOMER_BUCKETS_KEPT = 10_000


# --------------------------------------------------------------------------- the fake


class FakeMetronome:
    """A Metronome ingest/search server on a background thread; use as a context manager.

    ``clock`` (monotonic seconds) drives the rate buckets; tests pass a hand-moved one so rate
    limits are checked without racing the wall clock.
    """

    def __init__(
        self,
        config: FakeConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= port <= 65535:
            raise FakeListenError(f"port {port} is not between 0 and 65535")
        self._config = config if config is not None else FakeConfig()
        self._host = host
        self._port = port
        self._clock = clock
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
        try:
            server = _Server((self._host, self._port), self)
        except OSError as exc:
            raise FakeListenError(_listen_problem(self._host, self._port, exc)) from exc
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
                customer_rate_limited=c["customer_rate_limited"],
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
            _Bucket(cfg.rate_limit, cfg.rate_burst or cfg.rate_limit, self._clock)
            if cfg.rate_limit
            else None
        )
        self._customer_buckets: dict[str, _Bucket] = {}
        self._customers_kept = _CUSTOMER_BUCKETS_KEPT
        self._search_bucket = (
            None
            if cfg.search_rate is None
            else _Bucket(cfg.search_rate, max(1.0, cfg.search_rate), self._clock)
        )

    def _customer_bucket(self, customer: str) -> _Bucket:
        bucket = self._customer_buckets.get(customer)
        if bucket is None:
            rate = cast(float, self._config.customer_rate_limit)
            bucket = _Bucket(rate, self._config.customer_rate_burst or rate, self._clock)
            self._customer_buckets[customer] = bucket
        return bucket

    def _forget_idle_customers(self) -> None:
        """Keep memory bounded over millions of customers; only full buckets are dropped."""
        if len(self._customer_buckets) < self._customers_kept:
            return
        self._customer_buckets = {k: b for k, b in self._customer_buckets.items() if not b.full()}
        self._customers_kept = max(_CUSTOMER_BUCKETS_KEPT, 2 * len(self._customer_buckets))

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

    def _rate_headers(self, kind: str, wait: float | None, wait_ms: float | None) -> dict[str, str]:
        headers = {"X-Metronome-Rate-Limit-Type": kind}
        if wait is not None:
            headers["Retry-After"] = _format_seconds(wait)
        if wait_ms is not None:
            headers["retry-after-ms"] = _format_seconds(wait_ms)
        return headers

    def _limited(self, kind: str, wait: float, text: str, delay: float) -> _Reply:
        """A rate-limit 429: retry hints only when configured, as Metronome documents none."""
        cfg = self._config
        if cfg.rate_limit_hint:
            headers = self._rate_headers(kind, math.ceil(wait), math.ceil(wait * 1000))
        else:
            headers = self._rate_headers(kind, cfg.retry_after, cfg.retry_after_ms)
        return _Reply(429, _message(text), headers, delay=delay)

    def _admit(self, events: list[JsonObject], delay: float) -> _Reply | None:
        """Charge the buckets for a whole batch, or refuse it (charging nothing) with a 429."""
        charges: list[tuple[_Bucket, int]] = []
        customer_wait = 0.0
        hot: str | None = None
        if self._config.customer_rate_limit:
            self._forget_idle_customers()  # before, never between, the look-ups of one batch
            per_customer = Counter(cast(str, e["customer_id"]) for e in events)
            for customer, n in per_customer.items():
                bucket = self._customer_bucket(customer)
                wait = bucket.wait(n)
                if wait > customer_wait:
                    customer_wait, hot = wait, customer
                charges.append((bucket, n))
        client_wait = 0.0
        if self._bucket is not None:
            client_wait = self._bucket.wait(len(events))
            charges.append((self._bucket, len(events)))
        if hot is not None:
            self._counts["customer_rate_limited"] += 1
            text = f"Rate limit exceeded for customer {hot!r}"
            return self._limited("customer", max(customer_wait, client_wait), text, delay)
        if client_wait > 0:
            self._counts["rate_limited"] += 1
            return self._limited("client", client_wait, "Rate limit exceeded", delay)
        for bucket, n in charges:
            bucket.take(n)
        return None

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
                self._rate_headers(cfg.rate_limit_type, cfg.retry_after, cfg.retry_after_ms)
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
                self._rate_headers(cfg.rate_limit_type, cfg.retry_after, cfg.retry_after_ms),
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
            refused = self._admit(events, delay)
            if refused is not None:
                return refused
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
                wait = self._search_bucket.wait(1)
                if wait > 0:
                    self._counts["search_rate_limited"] += 1
                    return self._limited("client", wait, "Rate limit exceeded", delay)
                self._search_bucket.take(1)
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


def _listen_problem(host: str, port: int, exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {host!r}: not an address or a known host name"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen: port {port} on {host} is in use; stop what holds it "
            "or choose another port (0 picks a free one)"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on port {port} of {host}: permission denied"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: not an address of this machine"
    return f"cannot listen on port {port} of {host}: {exc.strerror or exc}"


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

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unknown method) in JSON like the rest."""
        text = message or self.responses.get(code, ("Error",))[0]
        self.log_error("code %d, message %s", code, text)
        self.close_connection = True
        body = _message(text)
        self.send_response(code)
        self.send_header("Connection", "close")
        if code >= 200 and code not in (204, 304) and self.command != "HEAD":
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.end_headers()

    # routes -------------------------------------------------------------------

    def _route(self) -> None:
        data = self._read_body()
        if data is None:
            return
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        method = self.command
        allowed = _ROUTES.get(path)
        if allowed is None:
            self._send(_Reply(404, _message(f"no route for {method} {parts.path}")))
            return
        if method not in allowed:
            text = f"{method} is not allowed on {path}; use {', '.join(allowed)}"
            self._send(_Reply(405, _message(text), {"Allow": ", ".join(allowed)}))
            return
        try:
            reply = self._dispatch(path, parts.query, data)
        except Exception:  # a bug in one answer must not take the fake down
            logger.debug("%s %s failed", method, path, exc_info=True)
            reply = _Reply(500, _message(f"the fake failed to answer {method} {path}"))
        self._send(reply)

    def _dispatch(self, path: str, query: str, data: bytes) -> _Reply:
        auth = self.headers.get("Authorization")
        if path == "/v1/ingest":
            return self.fake._handle_ingest(auth, self._parse(data))
        if path == "/v1/events/search":
            return self.fake._handle_search(auth, self._parse(data))
        if path == "/_fake/reset":
            self.fake.reset()
            return _Reply(200)
        flag = parse_qs(query).get("events", ["1"])[-1].lower()
        state = self.fake.snapshot(include_events=flag not in ("0", "false", "no"))
        return _Reply(200, orjson.dumps(state.to_json()))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _route


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
