"""How fast to send: AIMD concurrency and an adaptive events/s rate learned from 429s.

A 429 is back-pressure, not failure. Metronome limits events per second per account (5,000 by
default) and, with numbers it does not publish, per customer; it documents no ``Retry-After``.
So the sender learns the rate from the 429s themselves:

* Until the first 429 a scope is unpaced (only the concurrency limit holds it back).
* On a 429 for a request sent after the last cut (and its hold), the rate is cut to ``CUT``
  times the rate the server actually accepted over the last ``WINDOW`` seconds (never above the
  rate in force): under saturation that measure sits at the server's limit.
* After a cut the rate climbs back to the measured rate within ``RECOVER`` seconds, then keeps
  growing by ``GROWTH`` of it per second, so the limit is probed again (a server bucket absorbs
  the small saw-tooth) and a raised limit is found.
* A server hint (``Retry-After`` / ``retry-after-ms``) pauses every request of the scope, not
  just the one that got it.

The account (``client``) scope paces every request; a ``customer`` scope, one per customer that
got a ``customer`` 429, paces only the batches formed for that customer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["Clock", "Limiter", "Pacer", "Sleep"]

log = logging.getLogger("segmetro.delivery")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Seconds of accepted events the rate estimate is taken over.
WINDOW = 5.0
#: A cut goes to this share of the measured accepted rate.
CUT = 0.92
#: Seconds to climb from a cut back to the measured rate.
RECOVER = 1.0
#: Growth beyond the measured rate, as a share of it per second.
GROWTH = 0.03
#: 429s of requests sent this soon after a cut are old news: the cut has not acted yet.
HOLD = 0.5
#: No scope is paced below this (events/s).
FLOOR = 1.0


class Limiter:
    """AIMD limit on requests in flight, between 1 and ``maximum``."""

    def __init__(self, maximum: int, on_change: Callable[[int], None]) -> None:
        self.maximum = maximum
        self.limit = min(2, maximum)
        self.in_use = 0
        self.epoch = 0  # bumped on every decrease
        self._successes = 0
        self._on_change = on_change
        self._waiters: list[asyncio.Future[None]] = []
        on_change(self.limit)

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
            self._on_change(self.limit)
            self._wake()

    def congestion(self, epoch: int) -> None:
        """A 429 or a timeout for a request started in ``epoch``: halve once per round trip."""
        if epoch < self.epoch:
            return  # this request was already in flight when we last backed off
        self.epoch += 1
        self._successes = 0
        self.limit = max(1, self.limit // 2)
        self._on_change(self.limit)
        log.debug("concurrency down to %d", self.limit)


class Pacer:
    """An events/s pace for one scope (the account, or one customer); see the module doc."""

    def __init__(self, name: str, clock: Clock, sleep: Sleep, *, cap: float | None = None) -> None:
        self.name = name
        self._clock = clock
        self._sleep = sleep
        self.cap = cap  # the user's --rate: never exceeded
        self._base: float | None = None  # learned rate at the last cut
        self._ceiling = 0.0  # the accepted rate measured at the last cut
        self._cut_at = float("-inf")
        self._next: float | None = None  # when the next reservation may start
        self.paused_until = float("-inf")
        self._paused_at = float("-inf")
        self._accepted: deque[tuple[float, int]] = deque()
        self._accepted_sum = 0
        self._first = clock()
        self.cuts = 0

    def rate(self, now: float | None = None) -> float | None:
        """The pace in force (events/s), or ``None`` when nothing holds this scope back."""
        learned = None
        if self._base is not None:
            dt = max(0.0, (self._clock() if now is None else now) - self._cut_at)
            climb = (self._ceiling - self._base) * min(1.0, dt / RECOVER)
            learned = self._base + climb + self._ceiling * GROWTH * max(0.0, dt - RECOVER)
        if self.cap is None:
            return learned
        return self.cap if learned is None else min(learned, self.cap)

    async def acquire(self, n: int) -> None:
        """Wait until ``n`` events may go out; the burst is one batch (no banking)."""
        while True:
            now = self._clock()
            if self.paused_until > now:
                await self._sleep(self.paused_until - now)
                continue
            rate = self.rate(now)
            if rate is None:
                return
            start = now if self._next is None else max(self._next, now)
            self._next = start + n / rate
            if start > now:
                await self._sleep(start - now)
            if self.paused_until <= self._clock():
                return

    def pause(self, seconds: float, sent_at: float) -> None:
        """A server hint: nothing of this scope goes out for ``seconds``.

        A hint on a request sent before the current pause began says nothing new: honouring it
        would chain the pauses of every request that was in flight.
        """
        if sent_at < self._paused_at:
            return
        now = self._clock()
        if now + seconds > self.paused_until:
            self.paused_until = now + seconds
            self._paused_at = now
            log.debug("%s: paused for %.3fs (server hint)", self.name, seconds)

    def accepted(self, n: int) -> None:
        now = self._clock()
        self._accepted.append((now, n))
        self._accepted_sum += n
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._accepted and self._accepted[0][0] < now - WINDOW:
            self._accepted_sum -= self._accepted.popleft()[1]

    @property
    def learned(self) -> bool:
        return self._base is not None

    def limited(self, sent_at: float, batch: int) -> None:
        """A 429 for a request sent at ``sent_at``: cut the rate, once per round trip."""
        if sent_at < self._cut_at + HOLD:
            return  # sent before the last cut could act: old news
        now = self._clock()
        self._trim(now)
        span = min(WINDOW, now - self._first)
        if self._accepted_sum < batch or span <= 0:
            return  # nothing measured yet: the retry's backoff is all we can do
        measured = self._accepted_sum / span
        current = self.rate(now)
        target = CUT * measured
        if current is not None:
            target = min(target, CUT * current)
        self._base = max(FLOOR, target)
        self._ceiling = max(self._base, min(measured, current if current is not None else measured))
        self._cut_at = now
        self.cuts += 1
        log.debug("%s: pace cut to %.0f events/s (accepted %.0f/s)", self.name, self._base,
                  measured)  # fmt: skip
