"""What the fake does to a request besides answering it: latency, injected faults, rate limits.

Fault draws come from one seeded generator, so a sequential client sees the same faults on every
run with the same ``seed`` (concurrent requests draw in arrival order); latency jitter has its
own generator, so changing the latency leaves the fault sequence alone.

Rate limits are token buckets on an injectable monotonic clock: the account's (Metronome's
documented 5,000 events/s by default), an optional one per ``customer_id`` and one for search
requests. A refused batch is answered 429 with ``X-Metronome-Rate-Limit-Type`` and, as Metronome
documents, no retry hint unless one is configured.

Nothing here is thread-safe: the app calls it under its lock.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from segmetro.fake_metronome.config import FakeConfig

__all__ = ["CUSTOMER_BUCKETS_KEPT", "STATUS_TEXT", "Draw", "Faults", "Refusal", "TokenBucket"]

#: Random fault kinds in the order the draw walks them.
FAULT_KINDS = ("drop", "429", "500", "502", "503", "partial_500")
STATUS_TEXT = {500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable"}
#: Idle customer buckets are forgotten once this many exist (a full bucket equals a new one).
CUSTOMER_BUCKETS_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer given instead of handling the request: an injected fault or a 429."""

    status: int  # 0: close the connection without answering
    text: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Draw:
    """The fault drawn for one request."""

    refusal: Refusal | None = None  # answer this instead (already counted)
    partial: bool = False  # ingest part of a valid, admitted batch, then 500 (``partial``)


class TokenBucket:
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


class Faults:
    """The fault generators, the forced-failure count and the rate buckets of one fake.

    ``injected`` counts faults by kind (drop, 429, 500, 502, 503, partial_500, fail_status);
    ``limited`` counts rate-limit 429s by bucket (client, customer, search).
    """

    def __init__(self, config: FakeConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Reseed the generators, forget the counts and refill the buckets."""
        seed = self.config.seed
        self._rng = random.Random(seed)
        self._jitter_rng = random.Random(None if seed is None else seed + 1)
        self._forced = 0
        self.injected: Counter[str] = Counter()
        self.limited: Counter[str] = Counter()
        self._make_buckets()

    def reconfigure(self, config: FakeConfig) -> None:
        """New settings; the generators and counts go on, the buckets are refilled."""
        self.config = config
        self._make_buckets()

    def _make_buckets(self) -> None:
        cfg = self.config
        self._bucket = (
            TokenBucket(cfg.rate_limit, cfg.rate_burst or cfg.rate_limit, self._clock)
            if cfg.rate_limit
            else None
        )
        self.customer_buckets: dict[str, TokenBucket] = {}
        self._customers_kept = CUSTOMER_BUCKETS_KEPT
        self._search_bucket = (
            None
            if cfg.search_rate is None
            else TokenBucket(cfg.search_rate, max(1.0, cfg.search_rate), self._clock)
        )

    # faults ------------------------------------------------------------------

    def latency(self) -> float:
        """Seconds to wait before answering this request."""
        cfg = self.config
        delay = cfg.latency_ms / 1000.0
        if cfg.latency_jitter_ms:
            delay += self._jitter_rng.uniform(0.0, cfg.latency_jitter_ms) / 1000.0
        return delay

    def draw(self, *, random_faults: bool) -> Draw:
        """The forced status, else (with ``random_faults``) a random fault, for one request."""
        cfg = self.config
        forced_left = cfg.fail_count is None or self._forced < cfg.fail_count
        if cfg.fail_status is not None and forced_left:
            self._forced += 1
            self.injected["fail_status"] += 1
            headers = (
                self._rate_headers(cfg.rate_limit_type, cfg.retry_after, cfg.retry_after_ms)
                if cfg.fail_status == 429
                else {}
            )
            text = STATUS_TEXT.get(cfg.fail_status, f"Injected failure ({cfg.fail_status})")
            return Draw(Refusal(cfg.fail_status, text, headers))
        if not random_faults:
            return Draw()
        probs = (cfg.p_drop, cfg.p_429, cfg.p_500, cfg.p_502, cfg.p_503, cfg.p_partial)
        if not any(probs):
            return Draw()
        draw = self._rng.random()
        kind = None
        for name, p in zip(FAULT_KINDS, probs, strict=True):
            if draw < p:
                kind = name
                break
            draw -= p
        if kind is None:
            return Draw()
        if kind == "partial_500":
            return Draw(partial=True)  # counted when applied: a 400 or a 429 comes first
        self.injected[kind] += 1
        if kind == "drop":
            return Draw(Refusal(0, "dropped"))
        if kind == "429":
            headers = self._rate_headers(cfg.rate_limit_type, cfg.retry_after, cfg.retry_after_ms)
            return Draw(Refusal(429, "Too many requests", headers))
        status = int(kind)
        return Draw(Refusal(status, STATUS_TEXT[status]))

    def partial(self, n: int) -> list[int]:
        """Apply a drawn partial fault to ``n`` events: the indexes of a strict subset to keep."""
        self.injected["partial_500"] += 1
        keep = self._rng.randrange(n)
        return sorted(self._rng.sample(range(n), keep))

    def partial_refusal(self) -> Refusal:
        """Apply a drawn partial fault to a request with nothing to ingest: a plain 500."""
        self.injected["partial_500"] += 1
        return Refusal(500, STATUS_TEXT[500])

    # rate limits -------------------------------------------------------------

    def admit(self, events: list[dict[str, Any]]) -> Refusal | None:
        """Charge the buckets for a whole batch, or refuse it (charging nothing) with a 429.

        The per-customer buckets are checked first: a hot customer is named even when the
        account bucket is short too, and its wait covers both.
        """
        charges: list[tuple[TokenBucket, int]] = []
        customer_wait = 0.0
        hot: str | None = None
        if self.config.customer_rate_limit:
            self._forget_idle_customers()  # before, never between, the look-ups of one batch
            per_customer = Counter(str(e["customer_id"]) for e in events)
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
            self.limited["customer"] += 1
            text = f"Rate limit exceeded for customer {hot!r}"
            return self._limited("customer", max(customer_wait, client_wait), text)
        if client_wait > 0:
            self.limited["client"] += 1
            return self._limited("client", client_wait, "Rate limit exceeded")
        for bucket, n in charges:
            bucket.take(n)
        return None

    def admit_search(self) -> Refusal | None:
        """Charge the search bucket for one request, or refuse it with a 429."""
        if self._search_bucket is None:
            return None
        wait = self._search_bucket.wait(1)
        if wait > 0:
            self.limited["search"] += 1
            return self._limited("client", wait, "Rate limit exceeded")
        self._search_bucket.take(1)
        return None

    def _customer_bucket(self, customer: str) -> TokenBucket:
        bucket = self.customer_buckets.get(customer)
        if bucket is None:
            rate = float(self.config.customer_rate_limit or 0.0)
            bucket = TokenBucket(rate, self.config.customer_rate_burst or rate, self._clock)
            self.customer_buckets[customer] = bucket
        return bucket

    def _forget_idle_customers(self) -> None:
        """Keep memory bounded over millions of customers; only full buckets are dropped."""
        if len(self.customer_buckets) < self._customers_kept:
            return
        self.customer_buckets = {k: b for k, b in self.customer_buckets.items() if not b.full()}
        self._customers_kept = max(CUSTOMER_BUCKETS_KEPT, 2 * len(self.customer_buckets))

    def _limited(self, kind: str, wait: float, text: str) -> Refusal:
        """A rate-limit 429: retry hints only when configured, as Metronome documents none."""
        cfg = self.config
        if cfg.rate_limit_hint:
            headers = self._rate_headers(kind, math.ceil(wait), math.ceil(wait * 1000))
        else:
            headers = self._rate_headers(kind, cfg.retry_after, cfg.retry_after_ms)
        return Refusal(429, text, headers)

    @staticmethod
    def _rate_headers(kind: str, wait: float | None, wait_ms: float | None) -> dict[str, str]:
        headers = {"X-Metronome-Rate-Limit-Type": kind}
        if wait is not None:
            headers["Retry-After"] = _format_seconds(wait)
        if wait_ms is not None:
            headers["retry-after-ms"] = _format_seconds(wait_ms)
        return headers


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
