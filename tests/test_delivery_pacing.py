"""Rate limits are back-pressure: pacing, hints, per-customer lanes, max-stall, fail-fast.

These run the sender on a simulated clock against servers written as MockTransport handlers
that keep their own token buckets on that clock, so every figure is deterministic.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import orjson
import pytest

from segmetro.delivery import DeliveryStats, Outbound, SenderConfig, UndeliverableError, deliver
from segmetro.delivery._pacing import Pacer
from segmetro.errors import ConfigError
from segmetro.models import Reason

URL = "https://metronome.test"

Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


class Clock:
    """Virtual time: a sleeper wakes only when nothing else can run, so time moves as it would
    if every request took no time at all (and only waiting takes time)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), self._seq, future))
        await future

    async def drive(self) -> None:
        """Advance to the next timer whenever the loop has had many turns to run other work."""
        while True:
            for _ in range(64):
                await asyncio.sleep(0)
            while self._timers and self._timers[0][2].done():
                heapq.heappop(self._timers)
            if self._timers:
                when, _, future = heapq.heappop(self._timers)
                self.now = max(self.now, when)
                future.set_result(None)


class Recorder:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.acked: dict[str, float] = {}
        self.dead: dict[str, tuple[str, str]] = {}

    def delivered(self, items: Any) -> None:
        for item in items:
            tid = item.payload["transaction_id"]
            assert tid not in self.acked
            assert tid not in self.dead
            self.acked[tid] = self.clock.now

    def failed(self, item: Outbound, reason: str, detail: str) -> None:
        tid = item.payload["transaction_id"]
        assert tid not in self.acked
        assert tid not in self.dead
        self.dead[tid] = (reason, detail)


def ev(i: int, customer: str = "c1") -> Outbound:
    return Outbound(
        {
            "transaction_id": f"t{i}",
            "customer_id": customer,
            "event_type": "api_call",
            "timestamp": "2024-01-01T00:00:00.000Z",
            "properties": {},
        }
    )


def run(
    items: list[Outbound], handler: Handler, clock: Clock, **cfg: Any
) -> tuple[Recorder, DeliveryStats]:
    rec = Recorder(clock)
    stats = DeliveryStats()
    cfg.setdefault("api_url", URL)
    cfg.setdefault("token", "tok")

    async def main() -> None:
        driver = asyncio.create_task(clock.drive())
        try:
            async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
                await deliver(
                    items,
                    config=SenderConfig(**cfg),
                    client=client,
                    hooks=rec,
                    stats=stats,
                    clock=clock,
                    sleep=clock.sleep,
                    rng=random.Random(3),
                )
        finally:
            driver.cancel()

    asyncio.run(main())
    return rec, stats


class Bucket:
    """The server's token bucket, on the simulated clock."""

    def __init__(self, clock: Clock, rate: float, burst: float) -> None:
        self.clock, self.rate, self.burst = clock, rate, burst
        self.tokens, self.last = burst, clock.now

    def take(self, n: int) -> bool:
        now = self.clock.now
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= min(n, self.burst):  # like the fake: a big batch fits a full bucket
            self.tokens -= n
            return True
        return False


def limited_server(
    clock: Clock,
    rate: float,
    *,
    burst: float | None = None,
    hint: str | None = None,
    per_customer: dict[str, float] | None = None,
    log: list[tuple[float, list[str], int]] | None = None,
) -> Handler:
    account = Bucket(clock, rate, burst if burst is not None else rate)
    customers = {c: Bucket(clock, r, r) for c, r in (per_customer or {}).items()}

    async def handler(request: httpx.Request) -> httpx.Response:
        events = orjson.loads(request.content)
        who = sorted({e["customer_id"] for e in events})
        for c in who:
            bucket = customers.get(c)
            if bucket is not None:
                n = sum(1 for e in events if e["customer_id"] == c)
                if not bucket.take(n):
                    if log is not None:
                        log.append((clock.now, who, 429))
                    headers = {"X-Metronome-Rate-Limit-Type": "customer"}
                    return httpx.Response(429, json={"message": "customer"}, headers=headers)
        if not account.take(len(events)):
            headers = {"X-Metronome-Rate-Limit-Type": "client"}
            if hint is not None:
                headers["Retry-After"] = hint
            if log is not None:
                log.append((clock.now, who, 429))
            return httpx.Response(429, json={"message": "Rate limit exceeded"}, headers=headers)
        if log is not None:
            log.append((clock.now, who, 200))
        return httpx.Response(200, json={})

    return handler


# --------------------------------------------------------------------- 429 is never a failure


def test_429s_never_exhaust_the_retry_budget() -> None:
    clock = Clock()
    answers = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal answers
        answers += 1
        if answers <= 40:
            return httpx.Response(429, json={"message": "slow down"})
        return httpx.Response(200, json={})

    rec, stats = run([ev(i) for i in range(5)], handler, clock, max_retries=0)
    assert set(rec.acked) == {f"t{i}" for i in range(5)}
    assert not rec.dead
    assert stats.rate_limited == 40


def test_max_retries_counts_faults_not_429s() -> None:
    clock = Clock()
    script = [429, 429, 429, 503, 429, 200]

    async def handler(request: httpx.Request) -> httpx.Response:
        status = script.pop(0) if script else 200
        return httpx.Response(status, json={"message": f"status {status}"})

    rec, _ = run([ev(0)], handler, clock, max_retries=1)
    assert list(rec.acked) == ["t0"]

    script[:] = [503, 429, 503]
    with pytest.raises(UndeliverableError):
        rec, _ = run([ev(1)], handler, Clock(), max_retries=1)


def test_a_stall_longer_than_max_stall_ends_the_run_with_its_cause() -> None:
    clock = Clock()

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"message": "Rate limit exceeded"})

    rec = None
    with pytest.raises(UndeliverableError) as info:
        rec, _ = run([ev(i) for i in range(300)], handler, clock, max_stall=120.0)
    message = str(info.value)
    assert "no event was delivered for 120 s (--max-stall)" in message
    assert "last error: HTTP 429 Rate limit exceeded" in message
    assert 120.0 <= clock.now < 200.0  # it waited the stall out, and not much longer
    assert rec is None


def test_progress_resets_the_stall_timer() -> None:
    """A slow but moving run is never a stall, however long it takes."""
    clock = Clock()
    handler = limited_server(clock, 2.0, burst=10)  # 2 events/s: 50 events take ~20 s
    rec, _stats = run([ev(i) for i in range(50)], handler, clock, max_stall=10.0, batch_size=5)
    assert len(rec.acked) == 50
    assert clock.now > 10.0


# --------------------------------------------------------------------- the adaptive pace


@pytest.mark.parametrize("limit", [300.0, 1000.0, 5000.0])
def test_the_pace_finds_the_server_limit_without_any_hint(limit: float) -> None:
    clock = Clock()
    n = int(limit * 30)
    rec, stats = run([ev(i) for i in range(n)], limited_server(clock, limit), clock)
    assert len(rec.acked) == n
    assert not rec.dead
    allowed = limit + limit * clock.now  # the bucket's burst, then the limit
    assert n / allowed >= 0.9
    assert stats.pace is not None
    assert 0.8 * limit <= stats.pace <= 1.3 * limit


def test_a_hint_pauses_every_slot() -> None:
    clock = Clock()
    log: list[tuple[float, list[str], int]] = []
    handler = limited_server(clock, 500.0, hint="1", log=log)
    rec, _ = run([ev(i) for i in range(3000)], handler, clock, concurrency=8)
    assert len(rec.acked) == 3000
    for when, _who, status in log:
        if status == 429:
            # nothing at all went out during the second after a 429 (not just that batch)
            pauses = [t for t, _w, _s in log if when < t < when + 1.0 - 1e-9]
            assert not pauses, f"requests at {pauses} during the pause after {when}"
            break
    else:
        raise AssertionError("the server never limited the run")
    assert len(rec.acked) / (500.0 + 500.0 * clock.now) >= 0.85


def test_a_user_rate_cap_is_never_exceeded_by_the_learned_pace() -> None:
    pacer = Pacer("account", Clock(), Clock().sleep, cap=100.0)
    assert pacer.rate() == 100.0
    for _ in range(50):
        pacer.accepted(100)
    pacer.limited(sent_at=10.0, batch=100)
    assert pacer.rate() is not None
    assert pacer.rate() <= 100.0


# --------------------------------------------------------------------- customer limits


def test_a_hot_customer_does_not_stall_the_others() -> None:
    clock = Clock()
    log: list[tuple[float, list[str], int]] = []
    handler = limited_server(clock, 100_000.0, per_customer={"hot": 50.0}, log=log)
    items = [ev(i, "hot" if i % 2 else f"cool-{i % 7}") for i in range(2000)]
    rec, stats = run(items, handler, clock)
    assert len(rec.acked) == 2000
    assert not rec.dead
    hot_done = max(t for tid, t in rec.acked.items() if int(tid[1:]) % 2)
    cool_done = max(t for tid, t in rec.acked.items() if not int(tid[1:]) % 2)
    assert hot_done >= 1000 / 50.0 * 0.9  # the hot customer went at its own limit...
    assert cool_done < hot_done / 4  # ...while everyone else finished long before
    assert stats.hot_customers == 1
    first_limited = next(t for t, who, s in log if s == 429)
    later = [who for t, who, s in log if t > first_limited + 1.0 and "hot" in who]
    assert later
    assert all(who == ["hot"] for who in later)


def test_a_customer_429_on_a_mixed_batch_resends_per_customer() -> None:
    clock = Clock()
    seen: list[list[str]] = []
    refused = False

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal refused
        who = sorted({e["customer_id"] for e in orjson.loads(request.content)})
        seen.append(who)
        if not refused:
            refused = True
            headers = {"X-Metronome-Rate-Limit-Type": "customer"}
            return httpx.Response(429, json={"message": "customer"}, headers=headers)
        return httpx.Response(200, json={})

    items = [ev(i, f"c{i % 3}") for i in range(30)]
    rec, stats = run(items, handler, clock, concurrency=1)
    assert len(rec.acked) == 30
    assert seen[0] == ["c0", "c1", "c2"]
    assert sorted(map(tuple, seen[1:])) == [("c0",), ("c1",), ("c2",)]
    assert stats.hot_customers == 0  # nobody was limited on their own


def test_the_one_customer_export_reaches_its_customer_limit() -> None:
    clock = Clock()
    handler = limited_server(clock, 5000.0, per_customer={"solo": 300.0})
    rec, stats = run([ev(i, "solo") for i in range(9000)], handler, clock)
    assert len(rec.acked) == 9000
    assert 9000 / (300.0 + 300.0 * clock.now) >= 0.9
    assert stats.hot_customers == 1


# --------------------------------------------------------------------- fail fast


def test_dns_failure_before_any_answer_fails_fast() -> None:
    clock = Clock()

    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -2] Name or service not known")

    with pytest.raises(UndeliverableError) as info:
        run([ev(i) for i in range(10)], handler, clock, max_retries=8)
    assert "Metronome API unreachable" in str(info.value)
    assert "Name or service not known" in str(info.value)
    assert sum(clock.sleeps) < 30.0


def test_connection_errors_after_answers_are_ordinary_faults() -> None:
    clock = Clock()
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if 2 <= calls <= 6:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return httpx.Response(200, json={})

    rec, _ = run([ev(i) for i in range(3)], handler, clock, batch_size=1, concurrency=1)
    assert len(rec.acked) == 3


def test_404_explains_the_base_url() -> None:
    clock = Clock()

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"message": "Not found"})

    with pytest.raises(UndeliverableError) as info:
        run([ev(0)], handler, clock, api_url="http://proxy.test/metronome")
    assert "HTTP 404" in str(info.value)
    assert "base URL without /v1" in str(info.value)


@pytest.mark.parametrize("url", ["http://host/v1", "http://host/v1/", "https://h/v1/ingest"])
def test_a_url_ending_in_v1_is_refused_before_sending(url: str) -> None:
    with pytest.raises(ConfigError, match="base URL without /v1"):
        SenderConfig(api_url=url, token="x")


def test_progress_sees_the_last_error_while_retrying() -> None:
    clock = Clock()
    snapshots: list[str] = []
    stats_ref: list[DeliveryStats] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if stats_ref:
            snapshots.append(stats_ref[0].last_error)
        if len(snapshots) < 3:
            return httpx.Response(503, json={"message": "Service unavailable"})
        return httpx.Response(200, json={})

    rec = Recorder(clock)
    stats = DeliveryStats()
    stats_ref.append(stats)

    async def main() -> None:
        driver = asyncio.create_task(clock.drive())
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            await deliver(
                [ev(0)],
                config=SenderConfig(api_url=URL, token="t"),
                client=client,
                hooks=rec,
                stats=stats,
                clock=clock,
                sleep=clock.sleep,
            )
        driver.cancel()

    asyncio.run(main())
    assert snapshots[1] == "HTTP 503 Service unavailable"
    assert rec.acked
    assert not rec.dead
    assert Reason.UNDELIVERABLE not in {r for r, _ in rec.dead.values()}


def test_the_progress_line_shows_pace_429s_and_a_recent_error_first() -> None:
    from segmetro.output import RECENT_ERROR, delivery_status

    stats = DeliveryStats(sent=900, elapsed=3.0, pace=480.0, rate_limited=7)
    stats.last_error, stats.last_error_at = "HTTP 429 Rate limit exceeded", 2.0
    line = delivery_status(stats)
    assert line.startswith("sent 900 (300/s), paced 480/s, 429s 7, last error: HTTP 429")
    stats.elapsed = 2.0 + RECENT_ERROR + 1
    assert "last error" not in delivery_status(stats)  # an old error is not news
