"""Request handling: routing, auth, ingest, search and the state they share.

``FakeApp.handle`` turns one request (method, target, ``Authorization`` header and the body,
already de-chunked and gunzipped) into a ``Reply``; it knows nothing of sockets, which
``server`` adds. Accepted events are kept exactly as received and deduplicated by
``transaction_id`` (the first accepted wins); search answers from them in the shape of the
published response schema.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import orjson

from segmetro.fake_metronome.account import CUSTOMERS_PATH, METRICS_PATH, FakeAccount
from segmetro.fake_metronome.config import FakeConfig
from segmetro.fake_metronome.faults import STATUS_TEXT, Faults, Refusal
from segmetro.fake_metronome.schema import (
    INGEST_PATH,
    PAST_WINDOW,
    SEARCH_PATH,
    ingest_problem,
    parse_rfc3339,
    search_problem,
)

__all__ = ["ROUTES", "FakeApp", "FakeState", "Reply", "message"]

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]

#: The methods each route answers; any other method gets 405 with an ``Allow`` header.
ROUTES: dict[str, tuple[str, ...]] = {
    INGEST_PATH: ("POST",),
    SEARCH_PATH: ("POST",),
    METRICS_PATH: ("GET",),
    CUSTOMERS_PATH: ("GET",),
    "/_fake/reset": ("POST",),
    "/_fake/state": ("GET",),
}

#: ``POST /v1/customers/{customer_id}/previewEvents``
_PREVIEW_RE = re.compile(r"/v1/customers/([^/]+)/previewEvents")
_NAMESPACE = uuid.UUID("5b0d3e0c-9a43-4d0e-9a57-6d1f0d3c2a11")
#: Sentinel for a request body that is not JSON.
_INVALID: Any = object()


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
class Reply:
    """One answer: status and JSON body, or ``drop`` the connection; sent after ``delay`` s."""

    status: int
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay: float = 0.0


def message(text: str) -> bytes:
    """A Metronome-style error body."""
    return orjson.dumps({"message": text})


@dataclass(slots=True)
class _Stored:
    payload: JsonObject
    record_id: str
    processed_at: str
    when: datetime


class FakeApp:
    """Metronome's ingest and search behaviour over in-memory state; thread-safe.

    ``clock`` (monotonic seconds) drives the rate buckets; tests pass a hand-moved one so rate
    limits are checked without racing the wall clock.
    """

    def __init__(
        self, config: FakeConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config if config is not None else FakeConfig()
        self._lock = threading.Lock()
        self._faults = Faults(self._config, clock)
        self._reset_locked()

    # configuration and state -------------------------------------------------

    @property
    def config(self) -> FakeConfig:
        return self._config

    def configure(self, **changes: Any) -> FakeConfig:
        """Change settings while running (e.g. stop failing); rate buckets are refilled."""
        with self._lock:
            self._config = replace(self._config, **changes)
            self._faults.reconfigure(self._config)
            return self._config

    def reset(self) -> None:
        """Forget all events and counts; reseed the fault generator; refill the buckets."""
        with self._lock:
            self._reset_locked()

    def snapshot(self, *, include_events: bool = True) -> FakeState:
        """A copy of the state; events are the payloads exactly as received."""
        with self._lock:
            events = list(self._events) if include_events else []
            c, faults = self._counts, self._faults
            return FakeState(
                events=orjson.loads(orjson.dumps(events)),
                requests=c["requests"],
                events_received=c["events_received"],
                events_accepted=len(self._events),
                duplicates_ignored=c["duplicates_ignored"],
                batches_rejected_400=c["batches_rejected_400"],
                faults={k: faults.injected[k] for k in sorted(faults.injected)},
                rate_limited=faults.limited["client"],
                customer_rate_limited=faults.limited["customer"],
                auth_failures=c["auth_failures"],
                search_requests=c["search_requests"],
                search_rate_limited=faults.limited["search"],
            )

    def _reset_locked(self) -> None:
        self._events: list[JsonObject] = []
        self._by_id: dict[str, _Stored] = {}
        self._counts: Counter[str] = Counter()
        self._faults.reset()

    def _now(self) -> datetime:
        return self._config.now or datetime.now(UTC)

    # routing -----------------------------------------------------------------

    def handle(self, method: str, target: str, auth: str | None, data: bytes) -> Reply:
        """The answer to one request; a bug in one answer is a JSON 500, never a dead fake."""
        parts = urlsplit(target)
        path = parts.path.rstrip("/")
        preview = _PREVIEW_RE.fullmatch(path)
        allowed = ("POST",) if preview else ROUTES.get(path)
        if allowed is None:
            return Reply(404, message(f"no route for {method} {parts.path}"))
        if method not in allowed:
            text = f"{method} is not allowed on {path}; use {', '.join(allowed)}"
            return Reply(405, message(text), {"Allow": ", ".join(allowed)})
        try:
            return self._dispatch(path, parts.query, auth, data)
        except Exception:
            logger.debug("%s %s failed", method, path, exc_info=True)
            return Reply(500, message(f"the fake failed to answer {method} {path}"))

    def _dispatch(self, path: str, query: str, auth: str | None, data: bytes) -> Reply:
        if path in (METRICS_PATH, CUSTOMERS_PATH) or _PREVIEW_RE.fullmatch(path):
            return self._account_call(path, query, auth, data)
        if path == INGEST_PATH:
            return self._ingest(auth, _parse(data))
        if path == SEARCH_PATH:
            return self._search(auth, _parse(data))
        if path == "/_fake/reset":
            self.reset()
            return Reply(200)
        flag = parse_qs(query).get("events", ["1"])[-1].lower()
        state = self.snapshot(include_events=flag not in ("0", "false", "no"))
        return Reply(200, orjson.dumps(state.to_json()))

    # request handling (called by the handler threads) ------------------------

    def _auth(self, header: str | None) -> Reply | None:
        """None when the bearer token is right; otherwise the 401/403 reply."""
        scheme, _, credentials = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            self._counts["auth_failures"] += 1
            return Reply(401, message("Missing or malformed Authorization bearer token"))
        if not hmac.compare_digest(
            credentials.strip().encode("utf-8", "surrogateescape"),
            self._config.token.encode("utf-8", "surrogateescape"),
        ):
            self._counts["auth_failures"] += 1
            return Reply(403, message("Invalid access token"))
        return None

    def _ingest(self, auth: str | None, body: Any) -> Reply:
        with self._lock:
            self._counts["requests"] += 1
            denied = self._auth(auth)
            if denied is not None:
                return denied
            if isinstance(body, list):
                self._counts["events_received"] += len(body)
            delay = self._faults.latency()
            drawn = self._faults.draw(random_faults=True)
            if drawn.refusal is not None:
                return _refused(drawn.refusal, delay)
            now = self._now()
            problem = (
                "request body is not valid JSON" if body is _INVALID else ingest_problem(body, now)
            )
            if problem is not None:
                self._counts["batches_rejected_400"] += 1
                return Reply(400, message(problem), delay=delay)
            events = cast(list[JsonObject], body)
            refusal = self._faults.admit(events)
            if refusal is not None:
                return _refused(refusal, delay)
            if drawn.partial:
                self._accept([events[i] for i in self._faults.partial(len(events))], now)
                return Reply(500, message(STATUS_TEXT[500]), delay=delay)
            self._accept(events, now)
            return Reply(200, b"{}", delay=delay)

    def _accept(self, events: list[JsonObject], now: datetime) -> None:
        processed_at = _utc_millis(now)
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

    def _search(self, auth: str | None, body: Any) -> Reply:
        with self._lock:
            self._counts["search_requests"] += 1
            denied = self._auth(auth)
            if denied is not None:
                return denied
            delay = self._faults.latency()
            drawn = self._faults.draw(random_faults=self._config.search_faults)
            refusal = drawn.refusal
            if refusal is None and drawn.partial:  # nothing to ingest: a plain 500
                refusal = self._faults.partial_refusal()
            if refusal is None:
                refusal = self._faults.admit_search()
            if refusal is not None:
                return _refused(refusal, delay)
            problem = "request body is not valid JSON" if body is _INVALID else search_problem(body)
            if problem is not None:
                return Reply(400, message(problem), delay=delay)
            ids = cast(list[str], body["transactionIds"])
            cutoff = self._now() - PAST_WINDOW
            items = [
                self._search_item(stored)
                for stored in (self._by_id.get(tid) for tid in dict.fromkeys(ids))
                if stored is not None and stored.when >= cutoff
            ]
            return Reply(200, orjson.dumps(items), delay=delay)

    def _account_call(self, path: str, query: str, auth: str | None, data: bytes) -> Reply:
        """The account's lists and invoice previews; 404 when the fake was given no account."""
        with self._lock:
            denied = self._auth(auth)
            if denied is not None:
                return denied
            account = self._config.account
            delay = self._faults.latency()
        if account is None:
            return Reply(404, message("this fake has no account: start it with --account FILE"))
        if path == METRICS_PATH:
            status, body = account.list_metrics(query)
        elif path == CUSTOMERS_PATH:
            status, body = account.list_customers(query)
        else:
            match = _PREVIEW_RE.fullmatch(path)
            assert match is not None
            parsed = _parse(data)
            if parsed is _INVALID:
                return Reply(400, message("request body is not valid JSON"), delay=delay)
            status, body = account.preview(match.group(1), parsed)
        return Reply(status, orjson.dumps(body), delay=delay)

    def _search_item(self, stored: _Stored) -> JsonObject:
        cfg = self._config
        payload = stored.payload
        if cfg.account is not None:
            return self._account_item(stored, cfg.account)
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

    def _account_item(self, stored: _Stored, account: FakeAccount) -> JsonObject:
        payload = stored.payload
        customer, metrics = account.matched(payload)
        item: JsonObject = {
            "id": stored.record_id,
            "transaction_id": payload["transaction_id"],
            "customer_id": payload["customer_id"],
            "event_type": payload["event_type"],
            "timestamp": payload["timestamp"],
            "properties": payload.get("properties", {}),
            "is_duplicate": False,
            "processed_at": stored.processed_at,
            "matched_billable_metrics": metrics,
        }
        if customer is not None:
            item["matched_customer"] = customer
        return item


def _parse(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _INVALID


def _refused(refusal: Refusal, delay: float) -> Reply:
    if refusal.status == 0:
        return Reply(0, drop=True, delay=delay)
    return Reply(refusal.status, message(refusal.text), dict(refusal.headers), delay=delay)


def _utc_millis(moment: datetime) -> str:
    """``2025-03-01T12:00:00.000Z``: how Metronome writes ``processed_at``."""
    m = moment.astimezone(UTC)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T"
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond // 1000:03d}Z"
    )
