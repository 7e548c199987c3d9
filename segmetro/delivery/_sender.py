"""Send Metronome usage events: batching, pacing, retries and 400 bisection (design §4).

``deliver`` pulls items lazily from an (async) iterable, sends them to ``POST /v1/ingest`` in
batches of up to ``batch_size`` and reports every item exactly once through ``DeliveryHooks``:
``delivered`` (Metronome answered 200) or ``failed`` (dead-lettered). Nothing here prints or
exits; per-request detail goes to ``logging`` at DEBUG.

Decisions:

* A 429 is back-pressure: the batch is retried until it goes through, and the pace adapts
  (``_pacing``). What ends a run that makes no headway is ``max_stall`` seconds without any
  batch resolved, not a retry count.
* A ``customer`` 429 slows only that customer: a mixed batch is split by customer and re-sent;
  a customer whose own batch got one becomes *hot*: its events are batched apart, at its own
  pace, so one hot customer does not stall everyone else.
* 408, 409, 5xx, timeouts and dropped connections are faults: retried with exponential backoff
  and jitter (honouring a server hint) up to ``max_retries`` per batch. A retry sends the very
  same bytes; ``transaction_id`` makes it safe.
* No connection at all (refused, DNS, TLS) before any answer came back fails fast: the URL or
  the network is wrong, and waiting cannot help.
* Event-level refusals (400, 413, 422) split the batch in halves recursively; good halves are
  delivered, and each single event still refused is dead-lettered as ``bad_request``.
* 401/403 stop the run at once (in-flight work is cancelled; its items are neither delivered
  nor failed) and raise ``AuthenticationError``.
* Any other answer (404, 405, other 4xx, 3xx) means the run itself is misconfigured (a wrong
  ``--api-url``): never retried nor split; the batch is dead-lettered as ``undeliverable``.
* When a batch is given up, no new batch is pulled, in-flight batches finish, then
  ``UndeliverableError`` (a ``DeliveryError``) is raised.
* Back-pressure: a bounded number of batches is pulled and unresolved at any time, so memory
  stays flat and a checkpoint never runs far behind the reader.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import httpx
import orjson

from segmetro.delivery._http import (
    INGEST_PATH,
    Answer,
    Verdict,
    check_base_url,
    classify_error,
    classify_response,
    headers,
)
from segmetro.delivery._pacing import Clock, Limiter, Pacer, Sleep
from segmetro.delivery._retry import GiveUp, Retries
from segmetro.errors import AuthenticationError, ConfigError, DeliveryError
from segmetro.models import Reason

__all__ = [
    "DeliveryHooks",
    "DeliveryStats",
    "Outbound",
    "SenderConfig",
    "UndeliverableError",
    "deliver",
]

log = logging.getLogger("segmetro.delivery")

#: Without any answer from the server yet, connection failures end the run after this long.
CONNECT_GRACE = 10.0
#: ...or after this many attempts, whichever comes first.
CONNECT_ATTEMPTS = 3
#: Batches of one hot customer pulled and unresolved at most.
LANE_DEPTH = 4


@dataclass(frozen=True)
class SenderConfig:
    """How to reach Metronome and how hard to push. The token never appears in the repr."""

    api_url: str = "https://api.metronome.com"
    token: str = field(repr=False, default="")
    batch_size: int = 100
    concurrency: int = 8
    rate: float | None = None
    timeout: float = 30.0
    max_retries: int = 8
    max_stall: float = 900.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    def __post_init__(self) -> None:
        check_base_url(self.api_url)
        if not 1 <= self.batch_size <= 100:
            raise ConfigError(f"batch size must be between 1 and 100, got {self.batch_size}")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.rate is not None and not self.rate > 0:
            raise ConfigError(f"rate must be a positive number of events/s, got {self.rate}")
        if not self.timeout > 0:
            raise ConfigError(f"timeout must be positive, got {self.timeout}")
        if self.max_retries < 0:
            raise ConfigError(f"max retries must not be negative, got {self.max_retries}")
        if not self.max_stall > 0:
            raise ConfigError(f"max stall must be positive, got {self.max_stall}")
        if self.backoff_base < 0 or self.backoff_cap < self.backoff_base:
            raise ConfigError("backoff must satisfy 0 <= base <= cap")


@dataclass(frozen=True)
class Outbound:
    """One Metronome event to send; ``ref`` is the caller's context, opaque to the sender."""

    payload: dict[str, Any]
    ref: Any = None


class DeliveryHooks(Protocol):
    """Outcome callbacks, called on the event-loop thread, exactly once per item in total."""

    def delivered(self, items: Sequence[Outbound]) -> None: ...

    def failed(self, item: Outbound, reason: str, detail: str) -> None: ...


@dataclass
class DeliveryStats:
    """Live counters (read by progress displays while ``deliver`` runs)."""

    sent: int = 0  # events Metronome accepted (200)
    failed: int = 0  # events dead-lettered (bad_request or undeliverable)
    pulled: int = 0  # events taken from the input so far
    batches: int = 0  # batches formed from the input (bisection pieces not counted)
    requests: int = 0  # HTTP requests made, retries and bisection included
    retries: int = 0  # re-sends after a fault (a 429's re-send is counted in rate_limited)
    rate_limited: int = 0  # 429 answers
    customer_limited: int = 0  # of which of type ``customer``
    retrying: int = 0  # batches currently waiting to retry
    in_flight: int = 0  # requests currently in flight
    concurrency: int = 0  # current adaptive limit on requests in flight
    pace: float | None = None  # current account pace in events/s (None: not limited)
    pace_cuts: int = 0  # times the account pace was cut after a 429 (whoever caused it)
    hot_customers: int = 0  # customers batched apart after a customer 429
    last_error: str = ""  # the latest failed attempt, for progress lines
    last_error_at: float = 0.0  # when it came, in seconds since deliver started
    elapsed: float = 0.0  # seconds since deliver started


class UndeliverableError(DeliveryError):
    """Some events could not be delivered at all (API unreachable, stalled, retries out, 404)."""

    def __init__(self, message: str, *, stats: DeliveryStats) -> None:
        super().__init__(message)
        self.stats = stats


class _Kind(Enum):
    OK = "ok"
    SPLIT = "split"  # the events are to blame: bisect
    BY_CUSTOMER = "by_customer"  # a customer 429 on a mixed batch: re-send per customer
    TO_LANE = "to_lane"  # a customer 429 outside that customer's lane: move the events there
    GIVE_UP = "give_up"  # stalled, unreachable, retries out, or refused
    AUTH = "auth"
    ABANDON = "abandon"  # the run stopped before this batch was first sent: not acknowledged


@dataclass(frozen=True)
class _Outcome:
    kind: _Kind
    detail: str = ""
    status: int | None = None


def _customer(item: Outbound) -> str:
    return str(item.payload.get("customer_id", ""))


class _Source:
    """Pulls items from a sync or async iterable, a chunk at a time."""

    def __init__(self, items: Iterable[Outbound] | AsyncIterable[Outbound]) -> None:
        self._it: Iterable[Outbound] | None = None
        self._async: AsyncIterator[Outbound] | None = None
        if isinstance(items, AsyncIterable):
            self._async = aiter(items)
        else:
            self._it = iter(items)
        self.exhausted = False

    @property
    def is_async(self) -> bool:
        return self._async is not None

    async def take(self, n: int) -> list[Outbound]:
        out: list[Outbound] = []
        if self._it is not None:
            for item in self._it:
                out.append(item)
                if len(out) >= n:
                    break
        else:
            assert self._async is not None
            while len(out) < n:
                try:
                    out.append(await anext(self._async))
                except StopAsyncIteration:
                    break
        if len(out) < n:
            self.exhausted = True
        return out


class _Sender:
    """One ``deliver`` run. Its repr never shows the headers (they hold the token)."""

    def __init__(
        self,
        config: SenderConfig,
        client: httpx.AsyncClient,
        hooks: DeliveryHooks,
        stats: DeliveryStats,
        *,
        clock: Clock,
        sleep: Sleep,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.client = client
        self.hooks = hooks
        self.stats = stats
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        self.url = config.api_url.rstrip("/") + INGEST_PATH
        self._headers = headers(config.token)
        self.limiter = Limiter(config.concurrency, self._set_concurrency)
        self.pacer = Pacer("account", clock, sleep, cap=config.rate)
        self.hot: dict[str, Pacer] = {}
        self.max_pending = max(4, 2 * config.concurrency)
        self.started = clock()
        self.last_progress = self.started
        self.connected = False  # some answer came back from the server
        self.stopping = False  # pull no new batch; batches not yet sent are abandoned
        self.halted = False  # 401/403: send nothing more at all
        self.fatal: BaseException | None = None
        self.give_up: list[str] = []  # details of batches that were given up
        self.undelivered = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.lane_tasks: Counter[str] = Counter()
        self.lanes: defaultdict[str, list[Outbound]] = defaultdict(list)
        self.buffered = 0  # items waiting in lanes
        self.wake = asyncio.Event()

    def __repr__(self) -> str:
        return f"<_Sender {self.url}>"

    def _set_concurrency(self, limit: int) -> None:
        self.stats.concurrency = limit

    # ----------------------------------------------------------------- the run

    async def run(self, items: Iterable[Outbound] | AsyncIterable[Outbound]) -> None:
        source = _Source(items)
        try:
            await self._feed(source)
            while (self.tasks or self.buffered) and not self.stopping:
                self._dispatch_lanes(final=True)
                await self._wait()
            while self.tasks:
                await self._wait()
        finally:
            await self._cancel_all()
            self._tick()
        if self.fatal is not None:
            raise self.fatal
        if self.give_up:
            raise UndeliverableError(self._give_up_message(), stats=self.stats) from None

    async def _wait(self) -> None:
        self.wake.clear()
        await self.wake.wait()

    async def _feed(self, source: _Source) -> None:
        size = self.config.batch_size
        general: list[Outbound] = []
        while not self.stopping and not source.exhausted:
            while self._general_pending() >= self.max_pending and not self.stopping:
                await self._wait()
            if self.stopping:
                return
            if source.is_async:
                chunk = await self._take_async(source, size - len(general))
                if chunk is None:
                    return
            else:
                chunk = await source.take(size - len(general))
                await asyncio.sleep(0)  # let responses in while a sync source is busy
            for item in chunk:
                customer = _customer(item) if self.hot else ""
                if customer in self.hot:
                    self.stats.pulled += 1
                    self._to_lane(customer, [item])
                else:
                    general.append(item)
            if len(general) >= size:
                self._dispatch(general, None)
                general = []
            self._dispatch_lanes(final=False)
            while self.buffered > self.max_pending * size and not self.stopping:
                await self._wait()
                self._dispatch_lanes(final=False)
        if general and not self.stopping:
            self._dispatch(general, None)

    def _general_pending(self) -> int:
        return len(self.tasks) - sum(self.lane_tasks.values())

    def _to_lane(self, customer: str, items: list[Outbound]) -> None:
        self.lanes[customer].extend(items)
        self.buffered += len(items)

    def _dispatch_lanes(self, *, final: bool) -> None:
        """Start the batches of hot customers that may go (full ones, or all at the end)."""
        size = self.config.batch_size
        for customer, queue in self.lanes.items():
            while queue and (len(queue) >= size or final):
                if self.lane_tasks[customer] >= LANE_DEPTH or self.stopping:
                    break
                batch, queue[:] = queue[:size], queue[size:]
                self.buffered -= len(batch)
                self._dispatch(batch, customer, pulled=False)
        for customer in [c for c, q in self.lanes.items() if not q]:
            del self.lanes[customer]

    def _dispatch(self, batch: list[Outbound], lane: str | None, *, pulled: bool = True) -> None:
        self.stats.batches += 1
        if pulled:
            self.stats.pulled += len(batch)
        task = asyncio.create_task(self._batch(batch, lane))
        self.tasks.add(task)
        if lane is not None:
            self.lane_tasks[lane] += 1
        task.add_done_callback(lambda t: self._done(t, lane))

    async def _take_async(self, source: _Source, size: int) -> list[Outbound] | None:
        """Take a chunk from an async source, abandoning it if the run is stopped meanwhile."""
        taker = asyncio.ensure_future(source.take(size))
        try:
            while not taker.done():
                if self.stopping:
                    return None
                self.wake.clear()
                waiter = asyncio.ensure_future(self.wake.wait())
                try:
                    await asyncio.wait({taker, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    await asyncio.gather(waiter, return_exceptions=True)
            return taker.result()
        finally:
            if not taker.done():
                taker.cancel()
                await asyncio.gather(taker, return_exceptions=True)

    def _done(self, task: asyncio.Task[None], lane: str | None) -> None:
        self.tasks.discard(task)
        if lane is not None:
            self.lane_tasks[lane] -= 1
        self.wake.set()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self.fatal is None:
            self.fatal = exc
            self.stopping = True
            for other in self.tasks:
                other.cancel()

    async def _cancel_all(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def _tick(self) -> None:
        self.stats.elapsed = self.clock() - self.started
        self.stats.pace = self.pacer.rate()
        self.stats.pace_cuts = self.pacer.cuts

    def _give_up_message(self) -> str:
        return (
            f"Delivery to Metronome ({self.url}) stopped: {self.undelivered} event(s) could not "
            f"be delivered: {self.give_up[0]}. {self.stats.sent} event(s) were delivered; state "
            "is saved and a re-run of the same command resumes."
        )

    # ----------------------------------------------------------- one batch

    async def _batch(self, items: list[Outbound], lane: str | None) -> None:
        outcome = await self._send(items, fresh=lane is None, lane=lane)
        if outcome.kind is _Kind.ABANDON:
            log.debug("run stopping: %d event(s) left unsent", len(items))
        await self._settle(items, outcome)

    def _progress(self) -> None:
        self.last_progress = self.clock()

    async def _settle(self, items: list[Outbound], outcome: _Outcome) -> None:
        if outcome.kind is _Kind.ABANDON:
            return
        if outcome.kind is _Kind.OK:
            self.stats.sent += len(items)
            self._progress()
            self.hooks.delivered(items)
        elif outcome.kind is _Kind.AUTH:
            raise AuthenticationError(outcome.detail)
        elif outcome.kind is _Kind.GIVE_UP:
            self.give_up.append(outcome.detail)
            self.undelivered += len(items)
            self.stopping = True
            self.wake.set()
            log.debug("giving up on %d event(s): %s", len(items), outcome.detail)
            for item in items:
                self.stats.failed += 1
                self.hooks.failed(item, Reason.UNDELIVERABLE, outcome.detail)
        elif outcome.kind is _Kind.TO_LANE:
            # a customer limited on its own: its events wait in its lane, not in this task
            self._to_lane(_customer(items[0]), items)
            self.wake.set()
        elif outcome.kind is _Kind.BY_CUSTOMER:
            groups: defaultdict[str, list[Outbound]] = defaultdict(list)
            for item in items:
                groups[_customer(item)].append(item)
            await asyncio.gather(*(self._send_and_settle(group) for group in groups.values()))
        elif len(items) == 1:
            self.stats.failed += 1
            self._progress()
            self.hooks.failed(items[0], Reason.BAD_REQUEST, outcome.detail)
        else:
            await self._bisect(items)

    async def _send_and_settle(self, items: list[Outbound]) -> None:
        await self._settle(items, await self._send(items))

    async def _bisect(self, items: list[Outbound]) -> None:
        """The batch was refused: send each half; a good first half convicts the second."""
        mid = len(items) // 2
        left, right = items[:mid], items[mid:]
        left_outcome = await self._send(left)
        await self._settle(left, left_outcome)
        if left_outcome.kind is _Kind.ABANDON:
            return
        if left_outcome.kind is _Kind.OK and len(right) > 1:
            log.debug("first half of %d went through: splitting the second", len(items))
            await self._bisect(right)
        else:
            await self._send_and_settle(right)

    def _pacers(self, items: list[Outbound]) -> list[Pacer]:
        if not self.hot:
            return [self.pacer]
        customers = {_customer(item) for item in items}
        return [self.pacer, *(self.hot[c] for c in customers if c in self.hot)]

    def _hot_pacer(self, customer: str) -> Pacer:
        pacer = self.hot.get(customer)
        if pacer is None:
            pacer = Pacer(f"customer {customer}", self.clock, self.sleep)
            self.hot[customer] = pacer
            self.stats.hot_customers = len(self.hot)
            log.debug("customer %s is rate limited: batching it apart", customer)
        return pacer

    async def _send(
        self, items: list[Outbound], *, fresh: bool = False, lane: str | None = None
    ) -> _Outcome:
        """One request body, re-sent as the same bytes until a final answer.

        A ``fresh`` batch (never sent yet) is abandoned if the run is stopping.
        """
        body = orjson.dumps([item.payload for item in items])
        retries = Retries(
            self.config, rng=self.rng, clock=self.clock, last_progress=lambda: self.last_progress
        )
        unreachable = 0
        first = True
        while True:
            for pacer in self._pacers(items):
                await pacer.acquire(len(items))
            epoch = await self.limiter.acquire()
            if self.halted or (fresh and first and self.stopping):
                self.limiter.release()
                return _Outcome(_Kind.ABANDON)
            first = False
            self.stats.in_flight += 1
            self.stats.requests += 1
            sent_at = self.clock()
            try:
                response = await self.client.post(
                    self.url, content=body, headers=self._headers, timeout=self.config.timeout
                )
                answer = classify_response(response, self.url)
                if answer.verdict is Verdict.AUTH:
                    self.halted = True  # before the slot is released: nothing else goes out
            except httpx.TransportError as exc:
                answer = classify_error(exc, self.url)
            finally:
                self.stats.in_flight -= 1
                self.limiter.release()
                self._tick()
            log.debug("POST %s: %d events -> %s", INGEST_PATH, len(items),
                      answer.status or answer.detail)  # fmt: skip

            verdict = answer.verdict
            if answer.status is not None:
                self.connected = True
            if verdict is Verdict.OK:
                self.limiter.success()
                for pacer in self._pacers(items):
                    pacer.accepted(len(items))
                return _Outcome(_Kind.OK, status=answer.status)
            if verdict is Verdict.AUTH:
                return _Outcome(_Kind.AUTH, answer.detail, answer.status)
            if verdict is Verdict.SPLIT:
                return _Outcome(_Kind.SPLIT, answer.detail, answer.status)
            if verdict is Verdict.REFUSED:
                return _Outcome(_Kind.GIVE_UP, answer.detail, answer.status)
            self.stats.last_error = answer.detail
            self.stats.last_error_at = self.clock() - self.started

            try:
                if verdict is Verdict.RATE_LIMITED:
                    paced = self._rate_limited(items, answer, sent_at, epoch)
                    if paced is None:
                        return _Outcome(_Kind.BY_CUSTOMER, answer.detail, answer.status)
                    if answer.customer and lane is None and not self.stopping:
                        return _Outcome(_Kind.TO_LANE, answer.detail, answer.status)
                    delay = retries.rate_limited(answer, paced=paced)
                else:
                    if answer.timeout:
                        self.limiter.congestion(epoch)
                    if verdict is Verdict.UNREACHABLE and not self.connected:
                        unreachable += 1
                        waited = self.clock() - self.started
                        if unreachable >= CONNECT_ATTEMPTS or waited >= CONNECT_GRACE:
                            raise GiveUp(
                                f"Metronome API unreachable: {answer.detail}; check --api-url "
                                "/ METRONOME_BASE_URL and the network"
                            )
                    delay = retries.fault(answer)
                retries.check_stall(answer)
            except GiveUp as exc:
                return _Outcome(_Kind.GIVE_UP, exc.detail)
            if verdict is not Verdict.RATE_LIMITED:
                self.stats.retries += 1
            self.stats.retrying += 1
            try:
                if delay > 0:
                    await self.sleep(delay)
            finally:
                self.stats.retrying -= 1

    def _rate_limited(
        self, items: list[Outbound], answer: Answer, sent_at: float, epoch: int
    ) -> bool | None:
        """Learn from a 429: whether a pace or a pause now spaces the re-send, or None to
        re-send the batch per customer."""
        self.stats.rate_limited += 1
        if answer.customer:
            self.stats.customer_limited += 1
            customers = {_customer(item) for item in items}
            if len(customers) > 1:
                return None
            pacer = self._hot_pacer(customers.pop())
        else:
            pacer = self.pacer
            if not pacer.learned:
                self.limiter.congestion(epoch)  # no pace yet: fewer in flight is all we have
        pacer.limited(sent_at, len(items))
        if answer.hint is not None:
            pacer.pause(answer.hint, sent_at)
            return True
        return pacer.learned


def own_client(config: SenderConfig) -> httpx.AsyncClient:
    n = config.concurrency
    return httpx.AsyncClient(
        timeout=config.timeout,
        limits=httpx.Limits(max_connections=n + 2, max_keepalive_connections=n + 2),
    )


async def deliver(
    items: Iterable[Outbound] | AsyncIterable[Outbound],
    *,
    config: SenderConfig,
    client: httpx.AsyncClient | None = None,
    hooks: DeliveryHooks,
    stats: DeliveryStats | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> DeliveryStats:
    """Send ``items`` to Metronome; every item pulled ends in exactly one hook call.

    Raises ``AuthenticationError`` on 401/403 (at once) and ``UndeliverableError`` after the
    in-flight batches finish when some batch could not be delivered. ``client`` is not closed
    when given; ``clock``/``sleep``/``rng`` are injectable for tests.
    """
    stats = stats if stats is not None else DeliveryStats()
    own = client is None
    http = own_client(config) if client is None else client
    try:
        sender = _Sender(
            config,
            http,
            hooks,
            stats,
            clock=clock,
            sleep=sleep,
            rng=rng if rng is not None else random.Random(),
        )
        await sender.run(items)
    finally:
        if own:
            await http.aclose()
    return stats
