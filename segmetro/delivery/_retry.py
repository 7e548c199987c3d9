"""The retry budget of one request body, for ingest and search alike.

Faults (408, 409, 5xx, timeouts, dropped connections) spend ``max_retries``, with exponential
backoff and jitter unless the server hints a wait. A 429 spends no retry: it is back-pressure,
and what bounds it is ``max_stall`` seconds without progress (the caller says what progress
is: any batch resolved, for ingest; the start of the chunk, for search).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from segmetro.delivery._http import Answer, backoff_delay

__all__ = ["GiveUp", "Retries", "RetrySettings"]

#: The longest backoff exponent between 429s that came without a hint (0.5 s · 2^n).
LIMITED_BACKOFF_STEPS = 3


class GiveUp(Exception):
    """Retrying this body cannot help any more; ``detail`` says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RetrySettings(Protocol):
    """The options that bound retrying (``SenderConfig`` has them)."""

    @property
    def max_retries(self) -> int: ...

    @property
    def max_stall(self) -> float: ...

    @property
    def backoff_base(self) -> float: ...

    @property
    def backoff_cap(self) -> float: ...


class Retries:
    """Counts one body's attempts and says how long to wait before the next one."""

    def __init__(
        self,
        settings: RetrySettings,
        *,
        rng: random.Random,
        clock: Callable[[], float],
        last_progress: Callable[[], float],
    ) -> None:
        self._max_retries = settings.max_retries
        self._max_stall = settings.max_stall
        self._base = settings.backoff_base
        self._cap = settings.backoff_cap
        self._rng = rng
        self._clock = clock
        self._last_progress = last_progress
        self.faults = 0
        self.limited = 0  # 429s in a row

    def fault(self, answer: Answer) -> float:
        """The wait before re-sending after a fault; raises `GiveUp` when the budget is spent."""
        self.limited = 0
        if self.faults >= self._max_retries:
            raise GiveUp(f"{answer.detail} after {self.faults} retries")
        delay = answer.hint
        if delay is None:
            delay = backoff_delay(self.faults, self._base, self._cap, self._rng)
        self.faults += 1
        return delay

    def rate_limited(self, answer: Answer, *, paced: bool) -> float:
        """The wait before re-sending after a 429: none when a pace or a pause spaces it."""
        step = min(self.limited, LIMITED_BACKOFF_STEPS)
        self.limited += 1
        if paced:
            return 0.0
        if answer.hint is not None:
            return answer.hint
        return backoff_delay(step, self._base, self._cap, self._rng)

    def check_stall(self, answer: Answer) -> None:
        """Raise `GiveUp` once nothing made progress for ``max_stall`` seconds."""
        if self._clock() - self._last_progress() >= self._max_stall:
            raise GiveUp(
                f"no event was delivered for {self._max_stall:g} s (--max-stall); "
                f"last error: {answer.detail}"
            )
