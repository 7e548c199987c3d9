"""The fake's settings, checked once when they are made, and the errors of an impossible one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from segmetro.errors import ConfigError

if TYPE_CHECKING:
    from segmetro.fake_metronome.account import FakeAccount

__all__ = ["DEFAULT_RATE_LIMIT", "FakeConfig", "FakeConfigError", "FakeListenError"]

#: Metronome's documented default ingest limit per account, in events per second.
DEFAULT_RATE_LIMIT = 5000.0


class FakeConfigError(ConfigError, ValueError):
    """An impossible fake configuration (exit 2 in the CLI)."""


def _option(field: str) -> str:
    """The command-line option of a field (each is one of ``segmetro fake-metronome``)."""
    return "--" + field.replace("_", "-")


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
    #: customers and billable metrics (``--account``): listed, matched in search, previewed;
    #: it replaces known_customers / billable_event_types
    account: FakeAccount | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.now is not None and self.now.tzinfo is None:
            object.__setattr__(self, "now", self.now.replace(tzinfo=UTC))
        probs = (self.p_429, self.p_500, self.p_502, self.p_503, self.p_partial, self.p_drop)
        if any(not 0.0 <= p <= 1.0 for p in probs):
            raise FakeConfigError("fault probabilities must be between 0 and 1")
        if sum(probs) > 1.0 + 1e-9:
            raise FakeConfigError("fault probabilities must add up to at most 1")
        if self.rate_limit_type not in ("client", "customer"):
            raise FakeConfigError("--rate-limit-type must be 'client' or 'customer'")
        for name in ("rate_limit", "customer_rate_limit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise FakeConfigError(f"{_option(name)} must not be negative (0 turns it off)")
        for name in ("rate_burst", "customer_rate_burst", "search_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise FakeConfigError(f"{_option(name)} must be positive")
        for name in ("retry_after", "retry_after_ms", "latency_ms", "latency_jitter_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise FakeConfigError(f"{_option(name)} must not be negative")
        if self.fail_status is not None and not 400 <= self.fail_status <= 599:
            raise FakeConfigError("--fail-status must be an HTTP error status (400-599)")
        if self.fail_count is not None and self.fail_count < 0:
            raise FakeConfigError("--fail-count must not be negative")
        if not self.token:
            raise FakeConfigError("--token must not be empty")
