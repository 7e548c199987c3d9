"""The sender: batching, retries, 400 bisection, auth stop, back-pressure, AIMD, rate cap."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmetro.delivery import (
    RETRY_AFTER_CAP,
    USER_AGENT,
    DeliveryStats,
    Outbound,
    SenderConfig,
    UndeliverableError,
    backoff_delay,
    deliver,
    parse_retry_after,
    search_events,
)
from segmetro.errors import AuthenticationError, ConfigError, DeliveryError
from segmetro.fake_metronome import FakeConfig, FakeMetronome
from segmetro.models import Reason
from tests.support import PATIENCE

SECRET = "sk_live_do-not-leak-0123456789"
URL = "https://metronome.test"

Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


# --------------------------------------------------------------------------- helpers


def ev(i: int, *, bad: bool = False) -> Outbound:
    payload: dict[str, Any] = {
        "transaction_id": f"t{i}",
        "customer_id": "c1",
        "event_type": "api_call",
        "timestamp": "2024-01-01T00:00:00.000Z",
        "properties": {"n": str(i)},
    }
    if bad:
        payload["bad"] = True
    return Outbound(payload, ref=i)


def ids(request: httpx.Request) -> list[int]:
    return [int(e["transaction_id"][1:]) for e in orjson.loads(request.content)]


class Recorder:
    """Hooks that insist on the exactly-once contract."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.dead: dict[int, tuple[str, str]] = {}
        self.calls = 0

    def _seen(self, ref: int) -> None:
        assert ref not in self.dead, f"item {ref} reported twice"
        assert ref not in self.acked, f"item {ref} reported twice"

    def delivered(self, items: Sequence[Outbound]) -> None:
        self.calls += 1
        for item in items:
            self._seen(item.ref)
            self.acked.append(item.ref)

    def failed(self, item: Outbound, reason: str, detail: str) -> None:
        self.calls += 1
        self._seen(item.ref)
        self.dead[item.ref] = (reason, detail)


class FakeTime:
    """Injectable clock and sleep: sleeping advances the clock (never backwards)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        target = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, target)


def config(**kw: Any) -> SenderConfig:
    kw.setdefault("api_url", URL)
    kw.setdefault("token", SECRET)
    return SenderConfig(**kw)


def run(
    items: Any,
    handler: Handler,
    *,
    hooks: Recorder | None = None,
    fake_time: FakeTime | None = None,
    stats: DeliveryStats | None = None,
    seed: int = 1,
    **cfg: Any,
) -> tuple[Recorder, DeliveryStats]:
    """Run ``deliver`` against a MockTransport; exceptions propagate (hooks are kept)."""
    rec = hooks if hooks is not None else Recorder()
    ft = fake_time if fake_time is not None else FakeTime()
    st_ = stats if stats is not None else DeliveryStats()

    async def main() -> DeliveryStats:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await deliver(
                items,
                config=config(**cfg),
                client=client,
                hooks=rec,
                stats=st_,
                clock=ft.clock,
                sleep=ft.sleep,
                rng=random.Random(seed),
            )

    asyncio.run(main())
    return rec, st_


def ok() -> httpx.Response:
    return httpx.Response(200, json={})


def scripted(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """Answer requests in order with the given responses, then 200 for ever."""
    seen: list[httpx.Request] = []
    queue = list(responses)

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if not queue:
            return ok()
        nxt = queue.pop(0)
        if isinstance(nxt, Exception):
            raise nxt
        return nxt

    return handler, seen


def bad_aware(seen: list[httpx.Request] | None = None, status: int = 400) -> Handler:
    """Like Metronome: the whole batch is refused when any event in it is bad."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        events = orjson.loads(request.content)
        for index, e in enumerate(events):
            if e.get("bad"):
                msg = f"invalid event at index {index}: {e['transaction_id']} is bad"
                return httpx.Response(status, json={"message": msg})
        return ok()

    return handler


# --------------------------------------------------------------------------- config


def test_config_validation_and_repr_hides_token() -> None:
    cfg = config()
    assert SECRET not in repr(cfg)
    for bad in (
        {"batch_size": 0},
        {"batch_size": 101},
        {"concurrency": 0},
        {"rate": 0.0},
        {"timeout": 0.0},
        {"max_retries": -1},
        {"api_url": "ftp://x"},
        {"backoff_base": 2.0, "backoff_cap": 1.0},
    ):
        with pytest.raises(ConfigError):
            config(**bad)


# --------------------------------------------------------------------------- batching


def test_batches_body_and_headers() -> None:
    handler, seen = scripted()
    items = [ev(i) for i in range(250)]
    rec, stats = run(items, handler, concurrency=1)
    assert [len(ids(r)) for r in seen] == [100, 100, 50]
    assert sorted(rec.acked) == list(range(250))
    assert not rec.dead
    first = seen[0]
    assert first.method == "POST"
    assert str(first.url) == URL + "/v1/ingest"
    assert first.headers["authorization"] == f"Bearer {SECRET}"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["user-agent"] == USER_AGENT
    assert orjson.loads(first.content) == [e.payload for e in items[:100]]
    assert (stats.sent, stats.failed, stats.batches, stats.requests, stats.retries) == (
        250,
        0,
        3,
        3,
        0,
    )
    assert stats.pulled == 250
    assert stats.in_flight == 0
    assert stats.retrying == 0


def test_batch_size_and_async_source() -> None:
    async def source() -> AsyncIterator[Outbound]:
        for i in range(23):
            await asyncio.sleep(0)
            yield ev(i)

    handler, seen = scripted()
    rec, _stats = run(source(), handler, batch_size=10)
    assert sorted(len(ids(r)) for r in seen) == [3, 10, 10]
    assert sorted(rec.acked) == list(range(23))


def test_empty_input_sends_nothing() -> None:
    handler, seen = scripted()
    _rec, stats = run([], handler)
    assert seen == []
    assert stats.requests == 0


# --------------------------------------------------------------------------- retries


def test_429_without_retry_after_uses_jittered_backoff() -> None:
    handler, seen = scripted(httpx.Response(429, json={"message": "Too many requests"}))
    ft = FakeTime()
    rec, stats = run([ev(0)], handler, fake_time=ft)
    assert len(seen) == 2
    assert len(ft.sleeps) == 1
    assert 0.375 <= ft.sleeps[0] <= 0.5
    assert (stats.rate_limited, stats.retries, stats.sent) == (1, 0, 1)  # a 429 is no fault
    assert rec.acked == [0]


def test_429_retry_after_seconds_honoured() -> None:
    handler, _ = scripted(httpx.Response(429, headers={"Retry-After": "3"}))
    ft = FakeTime()
    run([ev(0)], handler, fake_time=ft)
    assert ft.sleeps == [3.0]


def test_retry_after_ms_wins_over_retry_after() -> None:
    handler, _ = scripted(
        httpx.Response(429, headers={"retry-after-ms": "250", "Retry-After": "7"}),
        httpx.Response(503, headers={"retry-after-ms": "40"}),
    )
    ft = FakeTime()
    rec, _stats = run([ev(0)], handler, fake_time=ft)
    assert ft.sleeps == [0.25, 0.04]
    assert rec.acked == [0]


def test_parse_retry_after_forms() -> None:
    now = 1_700_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 12, UTC), usegmt=True)
    assert parse_retry_after(httpx.Headers({"Retry-After": date}), now=now) == pytest.approx(12)
    assert parse_retry_after(httpx.Headers({"Retry-After": "1.5"})) == 1.5
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "20"})) == pytest.approx(0.02)
    assert parse_retry_after(httpx.Headers({"Retry-After": "3600"})) == RETRY_AFTER_CAP
    past = format_datetime(datetime.fromtimestamp(now - 5, UTC), usegmt=True)
    assert parse_retry_after(httpx.Headers({"Retry-After": past}), now=now) is None
    for junk in ("0", "-1", "soon", "nan", ""):
        assert parse_retry_after(httpx.Headers({"Retry-After": junk})) is None
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "x", "Retry-After": "2"})) == 2.0
    assert parse_retry_after(httpx.Headers()) is None


def test_backoff_is_exponential_jittered_and_capped() -> None:
    rng = random.Random(7)
    for n, (lo, hi) in enumerate([(0.375, 0.5), (0.75, 1.0), (1.5, 2.0), (1.5, 2.0)]):
        for _ in range(50):
            assert lo <= backoff_delay(n, 0.5, 2.0, rng) <= hi
    assert backoff_delay(10_000, 0.5, 2.0, rng) <= 2.0


def test_500_then_200_resends_the_same_bytes() -> None:
    handler, seen = scripted(
        httpx.Response(500, json={"message": "Internal server error"}),
        httpx.Response(502, text="bad gateway"),
    )
    ft = FakeTime()
    rec, stats = run([ev(i) for i in range(5)], handler, fake_time=ft)
    assert len(seen) == 3
    assert seen[0].content == seen[1].content == seen[2].content
    assert 0.375 <= ft.sleeps[0] <= 0.5
    assert 0.75 <= ft.sleeps[1] <= 1.0
    assert sorted(rec.acked) == list(range(5))
    assert (stats.retries, stats.requests, stats.rate_limited) == (2, 3, 0)


@pytest.mark.parametrize("status", [408, 409, 500, 503, 504, 599])
def test_retryable_statuses(status: int) -> None:
    handler, seen = scripted(httpx.Response(status, json={"message": "later"}))
    rec, _stats = run([ev(0)], handler)
    assert len(seen) == 2
    assert rec.acked == [0]


def test_timeouts_and_connection_errors_are_retried() -> None:
    handler, seen = scripted(
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ConnectError("connection refused"),
        httpx.ReadError("connection reset"),
    )
    rec, stats = run([ev(0)], handler)
    assert len(seen) == 5
    assert len({r.content for r in seen}) == 1
    assert rec.acked == [0]
    assert stats.retries == 4


@pytest.mark.parametrize("status", [404, 405, 410, 418])
def test_other_4xx_not_retried_and_stop_the_run(status: int) -> None:
    handler, seen = scripted(httpx.Response(status, json={"message": "no route for POST"}))
    rec = Recorder()
    with pytest.raises(UndeliverableError) as info:
        run([ev(i) for i in range(1000)], handler, hooks=rec, concurrency=1)
    assert len(seen) == 1  # neither retried nor split, and nothing more was sent
    assert sorted(rec.dead) == list(range(100))
    reason, detail = rec.dead[0]
    assert reason == Reason.UNDELIVERABLE
    assert f"HTTP {status}" in detail
    assert "no route for POST" in detail
    assert "not retried" in detail
    assert info.value.stats.failed == 100
    assert info.value.stats.pulled <= 100 * 5  # stopped pulling


def test_exhausted_retries_fail_the_batch_and_raise() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"message": "Service unavailable"})

    rec = Recorder()
    ft = FakeTime()
    with pytest.raises(DeliveryError) as info:
        run([ev(i) for i in range(10_000)], handler, hooks=rec, fake_time=ft, max_retries=3)
    err = info.value
    assert isinstance(err, UndeliverableError)
    assert err.exit_code == 3
    assert "HTTP 503 Service unavailable after 3 retries" in str(err)
    assert "a re-run of the same command resumes" in str(err)
    assert SECRET not in str(err)
    assert err.stats.failed == len(rec.dead) > 0
    assert err.stats.sent == 0
    assert not rec.acked
    for reason, detail in rec.dead.values():
        assert reason == Reason.UNDELIVERABLE
        assert detail == "HTTP 503 Service unavailable after 3 retries"
    assert len(rec.dead) % 100 == 0
    # no new batch once one was given up; the reader stayed within the pending window
    assert err.stats.pulled <= 100 * 17
    assert len(ft.sleeps) >= 3
    assert max(ft.sleeps) >= 1.5  # exponential: 0.5, 1, 2 (x U(0.75, 1))


def test_connection_refused_every_time_means_unreachable() -> None:
    """A real refused connection (a closed local port), with the sender's own client."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rec = Recorder()
    ft = FakeTime()

    async def main() -> None:
        await deliver(
            [ev(i) for i in range(3)],
            config=config(api_url=f"http://127.0.0.1:{port}", max_retries=2),
            hooks=rec,
            clock=ft.clock,
            sleep=ft.sleep,
        )

    with pytest.raises(UndeliverableError) as info:
        asyncio.run(main())
    assert "unreachable" in str(info.value)
    assert sorted(rec.dead) == [0, 1, 2]
    reason, detail = rec.dead[0]
    assert reason == Reason.UNDELIVERABLE
    assert "API unreachable" in detail
    assert "Connection refused" in detail
    assert "check --api-url / METRONOME_BASE_URL" in detail


# --------------------------------------------------------------------------- 400 bisection


def _bisect_run(n: int, bad: set[int], status: int = 400) -> tuple[Recorder, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    rec, _ = run([ev(i, bad=i in bad) for i in range(n)], bad_aware(seen, status))
    return rec, seen


def test_400_isolates_one_bad_event_in_100() -> None:
    rec, seen = _bisect_run(100, {37})
    assert sorted(rec.acked) == [i for i in range(100) if i != 37]
    assert rec.dead == {37: (Reason.BAD_REQUEST, "invalid event at index 0: t37 is bad")}
    assert len(seen) <= 2 * math.ceil(math.log2(100)) + 1
    for request in seen:  # every delivered event was sent in a 200'd request exactly once
        assert 1 <= len(ids(request)) <= 100


def test_400_isolates_three_bad_events_in_100() -> None:
    bad = {3, 50, 97}
    rec, seen = _bisect_run(100, bad)
    assert sorted(rec.acked) == sorted(set(range(100)) - bad)
    assert rec.dead == {
        i: (Reason.BAD_REQUEST, f"invalid event at index 0: t{i} is bad") for i in bad
    }
    k, log_n = len(bad), math.ceil(math.log2(100))
    assert len(seen) <= 2 * k * log_n + 1  # O(k log n), far below one request per event


def test_400_every_event_bad() -> None:
    rec, _seen = _bisect_run(8, set(range(8)))
    assert sorted(rec.dead) == list(range(8))
    assert not rec.acked


@pytest.mark.parametrize("status", [413, 422])
def test_413_and_422_split_too(status: int) -> None:
    rec, _seen = _bisect_run(20, {5}, status)
    assert sorted(rec.acked) == [i for i in range(20) if i != 5]
    reason, detail = rec.dead[5]
    assert reason == Reason.BAD_REQUEST
    assert detail == f"HTTP {status}: invalid event at index 0: t5 is bad"


def test_bisection_retries_transient_errors_in_halves() -> None:
    calls = 0
    inner = bad_aware()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls % 3 == 2:
            return httpx.Response(500, json={"message": "oops"})
        return await inner(request)

    rec, _ = run([ev(i, bad=i == 9) for i in range(16)], handler)
    assert sorted(rec.acked) == [i for i in range(16) if i != 9]
    assert list(rec.dead) == [9]


def test_400_with_non_json_body_keeps_text() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text="  plain text refusal  ")

    rec, _ = run([ev(0)], handler)
    assert rec.dead == {0: (Reason.BAD_REQUEST, "plain text refusal")}


# --------------------------------------------------------------------------- auth


def _auth_failure(status: int) -> tuple[AuthenticationError, Recorder, int, list[str]]:
    """Run with one unanswered in-flight request when the 401/403 arrives; return what happened.

    The first request is never answered: only its cancellation ends it (a sender that waited
    for it would hang until the safety net below, then fail on ``cancelled``).
    """
    rec = Recorder()
    cancelled: list[str] = []
    count = 0
    first_in_flight = asyncio.Event()
    never = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        if count == 1:
            first_in_flight.set()
            try:
                await asyncio.wait_for(never.wait(), PATIENCE)  # the timeout is a safety net
            except asyncio.CancelledError:
                cancelled.append("first")
                raise
            except TimeoutError:
                cancelled.append("never cancelled: the sender waited for it")
        if count == 2:
            await first_in_flight.wait()
            return httpx.Response(status, json={"message": "Invalid access token"})
        return ok()

    try:
        run([ev(i) for i in range(10_000)], handler, hooks=rec, concurrency=2, batch_size=10)
    except AuthenticationError as exc:
        return exc, rec, count, cancelled
    raise AssertionError("no AuthenticationError")


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_stops_at_once_without_leaking_token(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    exc, rec, count, cancelled = _auth_failure(status)
    assert str(exc) == (
        f"Metronome refused the API token (HTTP {status}). Check METRONOME_BEARER_TOKEN."
    )
    assert exc.exit_code == 3
    assert cancelled == ["first"]  # the unanswered request was cancelled, not waited for
    assert count == 2
    assert rec.calls == 0  # nothing acknowledged: in-flight items are simply not acked
    rendered = "".join(traceback.format_exception(exc))
    assert SECRET not in rendered
    with_locals = "".join(
        traceback.TracebackException.from_exception(exc, capture_locals=True).format()
    )
    assert "_settle" in with_locals  # the sender's own frames were rendered, locals included
    assert SECRET not in with_locals
    assert SECRET not in repr(exc)
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert all(SECRET not in str(r.args) for r in caplog.records)


# --------------------------------------------------------------------------- back-pressure


def test_back_pressure_bounds_how_far_the_reader_runs_ahead() -> None:
    pulled = 0
    acked = 0
    ahead: list[int] = []

    def source() -> Iterator[Outbound]:
        nonlocal pulled
        for i in range(20_000):
            pulled += 1
            ahead.append(pulled - acked)
            yield ev(i)

    class Hooks(Recorder):
        def delivered(self, items: Sequence[Outbound]) -> None:
            nonlocal acked
            acked += len(items)
            super().delivered(items)

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.001 * random.random())
        return ok()

    rec, _stats = run(source(), handler, hooks=Hooks(), concurrency=4)
    assert len(rec.acked) == 20_000
    window = max(4, 2 * 4)  # batches pulled and unresolved at most
    assert max(ahead) <= (window + 1) * 100
    assert max(ahead) > 100  # it does pipeline


def test_back_pressure_with_a_slow_server_and_async_source() -> None:
    """A server that never answers: the reader fills its window of batches, then stops."""
    window = max(4, 2 * 3)  # batches pulled and unresolved at most, at concurrency 3
    pulled = 0
    never = asyncio.Event()

    async def source() -> AsyncIterator[Outbound]:
        nonlocal pulled
        for i in range(100_000):
            pulled += 1
            yield ev(i)

    async def handler(request: httpx.Request) -> httpx.Response:
        await never.wait()  # never answers; cancelled at the end
        return ok()

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            task = asyncio.create_task(
                deliver(source(), config=config(concurrency=3), client=client, hooks=Recorder())
            )
            # Nothing here waits on a timer: the loop runs only the sender and the source, so
            # once the window is full every further turn of the loop is a chance to overrun.
            turns = 0
            while pulled < window * 100 and not task.done():
                turns += 1
                assert turns < 1_000_000, f"the reader stalled at {pulled} events"
                await asyncio.sleep(0)
            for _ in range(1_000):
                await asyncio.sleep(0)
            assert not task.done()
            assert window * 100 <= pulled <= (window + 1) * 100
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())


# --------------------------------------------------------------------------- exactly once


def _fault_handler(rng: random.Random, accepted: list[int]) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)
        batch = ids(request)
        draw = rng.random()
        if draw < 0.10:
            return httpx.Response(500, json={"message": "boom"})
        if draw < 0.15:
            return httpx.Response(429, headers={"retry-after-ms": "5"})
        if draw < 0.18:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        if draw < 0.20:
            raise httpx.ReadTimeout("timed out")
        if draw < 0.23:  # partial ingest then 500
            accepted.extend(x for x in batch[: len(batch) // 2] if x % 17 != 0)
            return httpx.Response(500, json={"message": "partial"})
        if any(x % 17 == 0 for x in batch):
            return httpx.Response(400, json={"message": "bad event"})
        accepted.extend(batch)
        return ok()

    return handler


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 700),
    batch_size=st.integers(1, 100),
    concurrency=st.integers(1, 8),
    max_retries=st.integers(0, 6),
)
def test_every_item_is_reported_exactly_once(
    seed: int, n: int, batch_size: int, concurrency: int, max_retries: int
) -> None:
    rng = random.Random(seed)
    accepted: list[int] = []
    rec = Recorder()
    items = [ev(i) for i in range(n)]
    raised: DeliveryError | None = None
    try:
        run(
            items,
            _fault_handler(rng, accepted),
            hooks=rec,
            seed=seed,
            batch_size=batch_size,
            concurrency=concurrency,
            max_retries=max_retries,
        )
    except UndeliverableError as exc:
        raised = exc
    delivered = set(rec.acked)
    assert len(delivered) == len(rec.acked)
    assert not delivered & set(rec.dead)
    assert delivered <= set(accepted)  # acknowledged only what the server took
    for i, (reason, detail) in rec.dead.items():
        if reason == Reason.BAD_REQUEST:
            assert i % 17 == 0
            assert detail == "bad event"
        else:
            assert reason == Reason.UNDELIVERABLE
            assert raised is not None
            assert detail.endswith(f"after {max_retries} retries")
    if raised is None:  # normal return: nothing pulled is left unreported
        assert delivered | set(rec.dead) == set(range(n))
        assert set(rec.dead) == {i for i in range(n) if i % 17 == 0}


def test_hook_exception_stops_the_run() -> None:
    class Boom(Recorder):
        def delivered(self, items: Sequence[Outbound]) -> None:
            raise RuntimeError("hook broke")

    handler, _ = scripted()
    with pytest.raises(RuntimeError, match="hook broke"):
        run([ev(i) for i in range(500)], handler, hooks=Boom())


def test_source_exception_propagates() -> None:
    def source() -> Iterator[Outbound]:
        yield ev(0)
        raise ValueError("bad input")

    handler, _ = scripted()
    with pytest.raises(ValueError, match="bad input"):
        run(source(), handler)


# --------------------------------------------------------------------------- AIMD


def test_aimd_halves_on_429_and_climbs_back() -> None:
    trace: list[int] = []
    stats = DeliveryStats()
    count = 0

    storm = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        mine = count
        trace.append(stats.concurrency)
        await asyncio.sleep(0)
        if mine in (80, 81, 82):  # one congestion event seen by three requests in flight
            if mine == 82:
                storm.set()
            await storm.wait()
            return httpx.Response(429, headers={"retry-after-ms": "1"})
        return ok()

    rec, _ = run([ev(i) for i in range(200 * 10)], handler, stats=stats, batch_size=10)
    assert trace[0] == 2  # starts low
    assert max(trace[:80]) == 8  # climbed to the maximum
    after = trace[82:]
    assert min(after) == 4  # halved once, not three times
    assert after[-1] == 8  # and climbed back
    assert stats.rate_limited == 3
    assert len(rec.acked) == 2000


def test_aimd_never_below_one_and_timeouts_count() -> None:
    trace: list[int] = []
    stats = DeliveryStats()
    count = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        trace.append(stats.concurrency)
        if count <= 12:
            raise httpx.ConnectTimeout("slow")
        return ok()

    rec, _ = run([ev(i) for i in range(3)], handler, stats=stats, batch_size=1, max_retries=20)
    assert min(trace) == 1
    assert stats.concurrency >= 1
    assert sorted(rec.acked) == [0, 1, 2]


# --------------------------------------------------------------------------- rate cap


def test_rate_cap_with_fake_clock() -> None:
    ft = FakeTime()
    sent: list[tuple[float, int]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append((ft.now, len(ids(request))))
        return ok()

    run([ev(i) for i in range(5_000)], handler, fake_time=ft, rate=1_000.0, concurrency=8)
    assert sum(n for _, n in sent) == 5_000
    # In any interval, events sent beyond the first batch fit within rate * interval.
    for i in range(len(sent)):
        for j in range(i, len(sent)):
            span = sent[j][0] - sent[i][0]
            events = sum(n for _, n in sent[i : j + 1])
            assert events - sent[i][1] <= 1_000.0 * span + 1e-6
    elapsed = sent[-1][0] - sent[0][0]
    assert 5_000 / (elapsed + 0.1) <= 1_000.0 * 1.02


def test_rate_cap_real_clock_short_run() -> None:
    handler, _ = scripted()

    async def main() -> float:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            started = time.monotonic()
            await deliver(
                [ev(i) for i in range(1_500)],
                config=config(rate=5_000.0, batch_size=50),
                client=client,
                hooks=Recorder(),
            )
            return time.monotonic() - started

    elapsed = asyncio.run(main())
    # 1,500 events at 5,000/s with a one-batch burst take at least (1500-50)/5000 s
    assert elapsed >= (1_500 - 50) / 5_000.0 * 0.98
    assert 1_500 / elapsed <= 5_000 * 1.05


# --------------------------------------------------------------------------- search


def test_search_events_in_gentle_chunks() -> None:
    seen: list[dict[str, Any]] = []
    ft = FakeTime()
    queue: list[httpx.Response] = [httpx.Response(429, headers={"Retry-After": "2"})]

    async def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        seen.append(body)
        assert str(request.url) == URL + "/v1/events/search"
        assert request.headers["authorization"] == f"Bearer {SECRET}"
        if queue:
            return queue.pop(0)
        return httpx.Response(200, json=[{"transaction_id": t} for t in body["transactionIds"]])

    async def main() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await search_events(
                [f"t{i}" for i in range(60)],
                config=config(),
                client=client,
                chunk=25,
                pause=0.5,
                sleep=ft.sleep,
            )

    rows = asyncio.run(main())
    assert [r["transaction_id"] for r in rows] == [f"t{i}" for i in range(60)]
    assert [len(b["transactionIds"]) for b in seen] == [25, 25, 25, 10]  # first one retried
    assert ft.sleeps == [2.0, 0.5, 0.5]


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [
        (403, AuthenticationError, "refused the API token (HTTP 403)"),
        (404, DeliveryError, "HTTP 404"),
        (503, DeliveryError, "after 2 retries"),
    ],
)
def test_search_events_errors(status: int, error: type[Exception], text: str) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"message": "nope"})

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            await search_events(
                ["a"], config=config(max_retries=2), client=client, sleep=FakeTime().sleep
            )

    with pytest.raises(error) as info:
        asyncio.run(main())
    assert text in str(info.value)
    assert SECRET not in str(info.value)


# --------------------------------------------------------------------------- end to end


def _events(n: int, bad: frozenset[int] = frozenset()) -> list[Outbound]:
    stamp = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    out = []
    for i in range(n):
        payload = {
            "transaction_id": f"e2e-{i:06d}",
            "customer_id": f"cust-{i % 7}",
            "event_type": "api_call",
            "timestamp": "not a timestamp" if i in bad else stamp,
            "properties": {"i": str(i)},
        }
        out.append(Outbound(payload, ref=i))
    return out


def _deliver_to(fake: FakeMetronome, items: list[Outbound], **kw: Any) -> Recorder:
    rec = Recorder()
    cfg = SenderConfig(api_url=fake.url, token="e2e-token", **kw)
    asyncio.run(deliver(items, config=cfg, hooks=rec))
    return rec


@pytest.mark.slow
def test_end_to_end_with_faults_every_event_exactly_once() -> None:
    n = 10_000
    fake_cfg = FakeConfig(
        token="e2e-token",
        seed=11,
        p_500=0.10,
        p_429=0.05,
        p_partial=0.02,
        p_drop=0.02,
        latency_ms=2,
    )
    with FakeMetronome(fake_cfg) as fake:
        rec = _deliver_to(
            fake,
            _events(n),
            batch_size=20,
            backoff_base=0.01,
            backoff_cap=0.05,
            max_retries=10,
            timeout=5,
        )
        state = fake.snapshot()
    expected = {f"e2e-{i:06d}" for i in range(n)}
    got = [e["transaction_id"] for e in state.events]
    assert len(got) == len(set(got)) == n
    assert set(got) == expected
    assert sorted(rec.acked) == list(range(n))
    assert not rec.dead
    assert state.faults.get("500", 0) > 0
    assert state.faults.get("drop", 0) > 0
    assert state.faults.get("partial_500", 0) > 0
    assert state.faults.get("429", 0) > 0


@pytest.mark.slow
def test_end_to_end_bisection_finds_the_hidden_bad_event() -> None:
    with FakeMetronome(FakeConfig(token="e2e-token")) as fake:
        rec = _deliver_to(fake, _events(100, bad=frozenset({62})))
        state = fake.snapshot()
    assert sorted(rec.acked) == [i for i in range(100) if i != 62]
    reason, detail = rec.dead[62]
    assert reason == Reason.BAD_REQUEST
    assert "timestamp" in detail
    assert "not a timestamp" in detail
    assert state.events_accepted == 99
    assert state.batches_rejected_400 <= 2 * math.ceil(math.log2(100))


@pytest.mark.slow
def test_end_to_end_wrong_token_is_refused() -> None:
    with FakeMetronome(FakeConfig(token="right-token")) as fake:
        rec = Recorder()
        cfg = SenderConfig(api_url=fake.url, token=SECRET)
        with pytest.raises(AuthenticationError) as info:
            asyncio.run(deliver(_events(500), config=cfg, hooks=rec))
        assert fake.snapshot().events_accepted == 0
    assert "HTTP 403" in str(info.value)
    assert SECRET not in "".join(traceback.format_exception(info.value))
    assert rec.calls == 0


@pytest.mark.slow
def test_end_to_end_rate_limited_server_no_loss() -> None:
    with FakeMetronome(
        FakeConfig(token="e2e-token", rate_limit=20_000, rate_burst=200, latency_ms=5)
    ) as fake:
        stats = DeliveryStats()
        rec = Recorder()
        cfg = SenderConfig(api_url=fake.url, token="e2e-token")
        asyncio.run(deliver(_events(4_000), config=cfg, hooks=rec, stats=stats))
        state = fake.snapshot(include_events=False)
    assert state.events_accepted == 4_000
    assert sorted(rec.acked) == list(range(4_000))
    assert stats.rate_limited == state.rate_limited
