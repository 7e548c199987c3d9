"""Send Metronome usage events: batching, adaptive concurrency, retries and 400 bisection.

``deliver`` pulls items lazily from an (async) iterable, sends them to ``POST /v1/ingest`` in
batches of up to ``batch_size`` and reports every item exactly once through ``DeliveryHooks``:
either ``delivered`` (Metronome answered 200) or ``failed`` (dead-lettered). Nothing here prints
or exits; per-request detail goes to ``logging`` at DEBUG.

Decisions (design §4):

* Retried: 408, 409, 429, every 5xx, timeouts and connection errors (refused, reset, dropped,
  ``RemoteProtocolError``). A retry sends the very same bytes; ``transaction_id`` makes it safe.
  Backoff is ``min(base·2^n, cap)·U(0.75, 1)``; a server hint (``retry-after-ms``, then
  ``Retry-After`` in seconds or as an HTTP date) wins when it is positive, capped at 60 s.
* Event-level refusals — 400, 413 (payload too large) and 422 — split the batch in halves
  recursively; good halves are delivered, and each single event still refused is dead-lettered
  as ``bad_request`` with Metronome's ``message``. When the first half of a refused batch goes
  through, the second half is known to be bad and is split at once without being re-sent whole.
* 401/403 stop the run at once (in-flight work is cancelled; its items are neither delivered nor
  failed) and raise ``AuthenticationError``.
* Any other answer (404, 405, other 4xx, 3xx) means the run itself is misconfigured (wrong
  ``--api-url``): it is never retried nor split; the batch is dead-lettered as ``undeliverable``
  and the run stops like one whose retries are exhausted.
* Retries exhausted: the batch is dead-lettered as ``undeliverable``, no new batch is pulled,
  in-flight batches finish, then ``UndeliverableError`` (a ``DeliveryError``) is raised.
* Concurrency is AIMD: it starts at ``min(2, concurrency)``, grows by one after a window of
  successes (as many as the current limit) up to ``concurrency``, and halves (at least 1) on a
  429 or a timeout — at most once per round trip, as TCP does, so one burst of 429s from a
  single congestion event does not collapse it to 1.
* ``rate`` caps events/s with a token bucket whose burst is one batch: each attempt waits for its
  tokens before it is sent.
* Back-pressure: at most ``2 * concurrency`` (at least 4) batches are pulled and unresolved at any
  time, so memory stays flat and a checkpoint never runs far behind the reader.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import httpx
import orjson

from segmetro import __version__
from segmetro.errors import AuthenticationError, ConfigError, DeliveryError
from segmetro.models import Reason

__all__ = [
    "INGEST_PATH",
    "RETRY_AFTER_CAP",
    "SEARCH_PATH",
    "USER_AGENT",
    "DeliveryHooks",
    "DeliveryStats",
    "Outbound",
    "SenderConfig",
    "UndeliverableError",
    "backoff_delay",
    "deliver",
    "parse_retry_after",
    "search_events",
]

log = logging.getLogger(__name__)

INGEST_PATH = "/v1/ingest"
SEARCH_PATH = "/v1/events/search"
USER_AGENT = f"segmetro/{__version__}"
#: Longest server-requested wait we honour (the official SDK ignores longer hints).
RETRY_AFTER_CAP = 60.0
#: Statuses worth another try of the same bytes.
RETRY_STATUSES = frozenset({408, 409, 429})
#: Statuses that blame the events of the batch: split to isolate them.
SPLIT_STATUSES = frozenset({400, 413, 422})
AUTH_STATUSES = frozenset({401, 403})
#: Longest piece of a non-JSON error body kept in a detail.
_DETAIL_LIMIT = 500

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


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
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    def __post_init__(self) -> None:
        if not self.api_url.startswith(("http://", "https://")):
            raise ConfigError(f"API URL must start with http:// or https://, got {self.api_url!r}")
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
    retries: int = 0
    rate_limited: int = 0  # 429 answers
    retrying: int = 0  # batches currently waiting to retry
    in_flight: int = 0  # requests currently in flight
    concurrency: int = 0  # current adaptive limit on requests in flight
    elapsed: float = 0.0  # seconds since deliver started


class UndeliverableError(DeliveryError):
    """Some events could not be delivered at all (retries exhausted, API unreachable, 404…)."""

    def __init__(self, message: str, *, stats: DeliveryStats) -> None:
        super().__init__(message)
        self.stats = stats


def backoff_delay(retry: int, config: SenderConfig, rng: random.Random) -> float:
    """Delay before retry number ``retry`` (0-based): ``min(base·2^n, cap)·U(0.75, 1)``."""
    return min(config.backoff_base * 2.0 ** min(retry, 60), config.backoff_cap) * rng.uniform(
        0.75, 1.0
    )


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """The server's requested wait in seconds (``retry-after-ms``, then ``Retry-After``).

    Returns ``None`` when there is no usable positive hint; caps the hint at ``RETRY_AFTER_CAP``.
    ``now`` is the wall clock (epoch seconds) used for an HTTP-date value.
    """
    value: float | None = None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = None
    if value is None:
        ra = headers.get("retry-after")
        if ra is not None:
            try:
                value = float(ra)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(ra)
                except (TypeError, ValueError, IndexError):
                    when = None
                if when is not None and when.tzinfo is not None:
                    value = when.timestamp() - (time.time() if now is None else now)
    if value is None or value != value or value <= 0:  # absent, NaN, zero or in the past
        return None
    return min(value, RETRY_AFTER_CAP)


def _error_message(response: httpx.Response) -> str:
    """Metronome's ``{"message": ...}``, or the start of whatever the body was."""
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    text = response.text.strip()
    if not text:
        return response.reason_phrase or "(empty body)"
    return text[:_DETAIL_LIMIT]


class _Kind(Enum):
    OK = "ok"
    SPLIT = "split"  # the events are to blame: bisect
    GIVE_UP = "give_up"  # retries exhausted, or a non-retryable answer about the run
    AUTH = "auth"
    ABANDON = "abandon"  # the run stopped before this batch was first sent: not acknowledged


@dataclass(frozen=True)
class _Outcome:
    kind: _Kind
    detail: str = ""
    status: int | None = None


class _Limiter:
    """AIMD limit on requests in flight, between 1 and ``maximum``."""

    def __init__(self, maximum: int, stats: DeliveryStats) -> None:
        self.maximum = maximum
        self.limit = min(2, maximum)
        self.in_use = 0
        self.epoch = 0  # bumped on every decrease
        self._successes = 0
        self._stats = stats
        self._stats.concurrency = self.limit
        self._waiters: list[asyncio.Future[None]] = []

    async def acquire(self) -> int:
        """Wait for a free slot; returns the epoch the request starts in."""
        while self.in_use >= self.limit:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.in_use += 1
        return self.epoch

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        # Wake every waiter: they re-check the limit; a cancelled one cannot swallow a wake-up.
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def success(self) -> None:
        self._successes += 1
        if self._successes >= self.limit and self.limit < self.maximum:
            self._successes = 0
            self.limit += 1
            self._stats.concurrency = self.limit
            log.debug("concurrency up to %d", self.limit)
            self._wake()

    def congestion(self, epoch: int) -> None:
        """A 429 or a timeout for a request started in ``epoch``: halve once per round trip."""
        if epoch < self.epoch:
            return  # this request was already in flight when we last backed off
        self.epoch += 1
        self._successes = 0
        self.limit = max(1, self.limit // 2)
        self._stats.concurrency = self.limit
        log.debug("concurrency down to %d", self.limit)


class _TokenBucket:
    """Client-side events/s cap. Burst of one batch: each reservation starts after the last."""

    def __init__(self, rate: float, clock: Clock, sleep: Sleep) -> None:
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    async def acquire(self, n: int) -> None:
        now = self._clock()
        start = now if self._next is None else max(self._next, now)
        self._next = start + n / self._rate
        if start > now:
            await self._sleep(start - now)


class _Source:
    """Pulls items from a sync or async iterable, a batch at a time."""

    def __init__(self, items: Iterable[Outbound] | AsyncIterable[Outbound]) -> None:
        self._sync: Iterable[Outbound] | None = None
        self._async: AsyncIterator[Outbound] | None = None
        if isinstance(items, AsyncIterable):
            self._async = aiter(items)
        else:
            self._sync = items
        self._it = iter(self._sync) if self._sync is not None else None
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
        self._headers = _headers(config)
        self.limiter = _Limiter(config.concurrency, stats)
        self.bucket = _TokenBucket(config.rate, clock, sleep) if config.rate is not None else None
        self.max_pending = max(4, 2 * config.concurrency)
        self.started = clock()
        self.stopping = False  # pull no new batch; batches not yet sent are abandoned
        self.halted = False  # 401/403: send nothing more at all
        self.fatal: BaseException | None = None
        self.give_up: list[str] = []  # details of batches that were given up
        self.undelivered = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()

    def __repr__(self) -> str:
        return f"<_Sender {self.url}>"

    # ----------------------------------------------------------------- the run

    async def run(self, items: Iterable[Outbound] | AsyncIterable[Outbound]) -> None:
        source = _Source(items)
        try:
            await self._feed(source)
            while self.tasks:
                self.wake.clear()
                await self.wake.wait()
        finally:
            await self._cancel_all()
            self._tick()
        if self.fatal is not None:
            raise self.fatal
        if self.give_up:
            raise UndeliverableError(self._give_up_message(), stats=self.stats) from None

    async def _feed(self, source: _Source) -> None:
        size = self.config.batch_size
        while not self.stopping and not source.exhausted:
            while len(self.tasks) >= self.max_pending and not self.stopping:
                self.wake.clear()
                await self.wake.wait()
            if self.stopping:
                return
            if source.is_async:
                batch = await self._take_async(source, size)
                if batch is None:
                    return
            else:
                batch = await source.take(size)
                await asyncio.sleep(0)  # let responses in while a sync source is busy
            if not batch:
                return
            self.stats.batches += 1
            self.stats.pulled += len(batch)
            task = asyncio.create_task(self._batch(batch))
            self.tasks.add(task)
            task.add_done_callback(self._done)

    async def _take_async(self, source: _Source, size: int) -> list[Outbound] | None:
        """Take a batch from an async source, abandoning it if the run is stopped meanwhile."""
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

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
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

    def _give_up_message(self) -> str:
        first = self.give_up[0]
        return (
            f"Delivery to Metronome ({self.url}) stopped: {self.undelivered} event(s) could not "
            f"be delivered ({first}; retries were exhausted or the API refused the request). "
            f"{self.stats.sent} event(s) were delivered; the undelivered ones were written to "
            "the rejects file, and a re-run resumes."
        )

    # ----------------------------------------------------------- one batch

    async def _batch(self, items: list[Outbound]) -> None:
        outcome = await self._send(items, fresh=True)
        if outcome.kind is _Kind.ABANDON:
            log.debug("run stopping: %d event(s) left unsent", len(items))
        await self._settle(items, outcome)

    async def _settle(self, items: list[Outbound], outcome: _Outcome) -> None:
        if outcome.kind is _Kind.ABANDON:
            return
        if outcome.kind is _Kind.OK:
            self.stats.sent += len(items)
            self.hooks.delivered(items)
        elif outcome.kind is _Kind.AUTH:
            raise AuthenticationError(
                f"Metronome refused the API token (HTTP {outcome.status}). "
                "Check METRONOME_BEARER_TOKEN."
            )
        elif outcome.kind is _Kind.GIVE_UP:
            self.give_up.append(outcome.detail)
            self.undelivered += len(items)
            self.stopping = True
            self.wake.set()
            log.debug("giving up on %d event(s): %s", len(items), outcome.detail)
            for item in items:
                self.stats.failed += 1
                self.hooks.failed(item, Reason.UNDELIVERABLE, outcome.detail)
        elif len(items) == 1:
            self.stats.failed += 1
            self.hooks.failed(items[0], Reason.BAD_REQUEST, outcome.detail)
        else:
            await self._bisect(items)

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
            await self._settle(right, await self._send(right))

    async def _send(self, items: list[Outbound], *, fresh: bool = False) -> _Outcome:
        """One request body, retried as the same bytes until a final answer.

        A ``fresh`` batch (never sent yet) is abandoned if the run is stopping.
        """
        body = orjson.dumps([item.payload for item in items])
        retries = 0
        refused = True  # connection refused on every attempt so far
        while True:
            if self.bucket is not None:
                await self.bucket.acquire(len(items))
            epoch = await self.limiter.acquire()
            if self.halted or (fresh and retries == 0 and self.stopping):
                self.limiter.release()
                return _Outcome(_Kind.ABANDON)
            self.stats.in_flight += 1
            self.stats.requests += 1
            response: httpx.Response | None = None
            error: str
            try:
                response = await self.client.post(
                    self.url, content=body, headers=self._headers, timeout=self.config.timeout
                )
                if response.status_code in AUTH_STATUSES:
                    self.halted = True  # before the slot is released: nothing else goes out
            except httpx.TimeoutException as exc:
                self.limiter.congestion(epoch)
                error = f"timeout ({type(exc).__name__})"
                refused = False
            except httpx.ConnectError as exc:
                error = f"API unreachable ({type(exc).__name__}: {exc})"
            except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                error = f"connection error ({type(exc).__name__}: {exc})"
                refused = False
            except httpx.TransportError as exc:  # unsupported protocol, proxy, local protocol
                return _Outcome(_Kind.GIVE_UP, f"cannot send ({type(exc).__name__}: {exc})")
            finally:
                self.stats.in_flight -= 1
                self.limiter.release()
                self._tick()

            hint: float | None = None
            if response is not None:
                status = response.status_code
                log.debug(
                    "POST %s: %d events -> HTTP %d (attempt %d)",
                    INGEST_PATH,
                    len(items),
                    status,
                    retries + 1,
                )
                if 200 <= status < 300:
                    self.limiter.success()
                    return _Outcome(_Kind.OK, status=status)
                if status in AUTH_STATUSES:
                    return _Outcome(_Kind.AUTH, status=status)
                message = _error_message(response)
                if status in SPLIT_STATUSES:
                    detail = message if status == 400 else f"HTTP {status}: {message}"
                    return _Outcome(_Kind.SPLIT, detail, status)
                if status not in RETRY_STATUSES and status < 500:
                    detail = f"HTTP {status} {message} (not retried)"
                    return _Outcome(_Kind.GIVE_UP, detail, status)
                if status == 429:
                    self.stats.rate_limited += 1
                    self.limiter.congestion(epoch)
                refused = False
                error = f"HTTP {status} {message}"
                hint = parse_retry_after(response.headers)
            else:
                log.debug("POST %s: %d events -> %s", INGEST_PATH, len(items), error)

            if retries >= self.config.max_retries:
                what = error if not refused else f"{error} on every attempt"
                return _Outcome(_Kind.GIVE_UP, f"{what} after {retries} retries")
            delay = hint if hint is not None else backoff_delay(retries, self.config, self.rng)
            retries += 1
            self.stats.retries += 1
            self.stats.retrying += 1
            try:
                await self.sleep(delay)
            finally:
                self.stats.retrying -= 1


def _headers(config: SenderConfig) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {config.token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }


def _own_client(config: SenderConfig) -> httpx.AsyncClient:
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
    http = _own_client(config) if client is None else client
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


async def search_events(
    transaction_ids: Sequence[str],
    *,
    config: SenderConfig,
    client: httpx.AsyncClient | None = None,
    chunk: int = 25,
    pause: float = 0.2,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> list[dict[str, Any]]:
    """Look events up with ``POST /v1/events/search``, gently: small sequential chunks.

    Waits ``pause`` seconds between chunks, backs off on 408/409/429/5xx and connection errors
    (``max_retries`` per chunk), raises ``AuthenticationError`` on 401/403 and ``DeliveryError``
    on any other refusal or when retries run out. Returns the rows of every chunk, in order.
    """
    if chunk < 1:
        raise ConfigError(f"search chunk must be at least 1, got {chunk}")
    url = config.api_url.rstrip("/") + SEARCH_PATH
    rand = rng if rng is not None else random.Random()
    own = client is None
    http = _own_client(config) if client is None else client
    rows: list[dict[str, Any]] = []
    try:
        for start in range(0, len(transaction_ids), chunk):
            if start:
                await sleep(pause)
            ids = list(transaction_ids[start : start + chunk])
            body = orjson.dumps({"transactionIds": ids})
            rows.extend(await _search_chunk(http, url, body, config, sleep, rand))
    finally:
        if own:
            await http.aclose()
    return rows


async def _search_chunk(
    http: httpx.AsyncClient,
    url: str,
    body: bytes,
    config: SenderConfig,
    sleep: Sleep,
    rng: random.Random,
) -> list[dict[str, Any]]:
    retries = 0
    while True:
        hint: float | None = None
        try:
            response = await http.post(
                url, content=body, headers=_headers(config), timeout=config.timeout
            )
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        except httpx.TransportError as exc:
            raise DeliveryError(f"cannot search events at {url}: {type(exc).__name__}") from None
        else:
            status = response.status_code
            if 200 <= status < 300:
                try:
                    data = orjson.loads(response.content)
                except orjson.JSONDecodeError:
                    raise DeliveryError(f"event search at {url} returned invalid JSON") from None
                if isinstance(data, dict) and isinstance(data.get("data"), list):
                    data = data["data"]
                if not isinstance(data, list):
                    raise DeliveryError(f"event search at {url} returned {type(data).__name__}")
                return [row for row in data if isinstance(row, dict)]
            if status in AUTH_STATUSES:
                raise AuthenticationError(
                    f"Metronome refused the API token (HTTP {status}). "
                    "Check METRONOME_BEARER_TOKEN."
                )
            message = _error_message(response)
            if status not in RETRY_STATUSES and status < 500:
                raise DeliveryError(f"event search refused (HTTP {status}): {message}")
            error = f"HTTP {status} {message}"
            hint = parse_retry_after(response.headers)
        if retries >= config.max_retries:
            raise DeliveryError(
                f"event search at {url} failed: {error} after {retries} retries; "
                "try again later or with a smaller --sample"
            )
        delay = hint if hint is not None else backoff_delay(retries, config, rng)
        retries += 1
        log.debug("search: %s, retrying in %.2fs", error, delay)
        await sleep(delay)
