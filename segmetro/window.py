"""Time options (`--since`, `--until`, `--now`) and Metronome's ingest window.

Timestamps are compared as strings: every mapped timestamp is already normalised to
``YYYY-MM-DDTHH:MM:SS.mmmZ``, which sorts lexicographically in time order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from segmetro.errors import ConfigError
from segmetro.models import Reason, format_timestamp

#: Metronome accepts events back-dated up to 34 days and at most 24 hours ahead of its clock.
MAX_AGE = timedelta(days=34)
MAX_AHEAD = timedelta(hours=24)

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, *, now: datetime, option: str) -> datetime:
    """Parse an RFC 3339 time, a date, or a relative age such as ``36h`` / ``7d`` (before `now`)."""
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not a time: use RFC 3339 (2026-11-01T00:00:00Z), "
            "a date (2026-11-01) or an age such as 36h or 7d."
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Window:
    """The selection window ``[since, until)`` and Metronome's ingest window around `now`."""

    now: datetime
    since: datetime | None = None
    until: datetime | None = None
    _since: str | None = field(init=False, repr=False)
    _until: str | None = field(init=False, repr=False)
    _oldest: str = field(init=False, repr=False)
    _newest: str = field(init=False, repr=False)

    @classmethod
    def from_options(cls, *, since: str | None, until: str | None, now: str | None) -> Window:
        real_now = datetime.now(UTC)
        clock = parse_when(now, now=real_now, option="--now") if now is not None else real_now
        lower = parse_when(since, now=clock, option="--since") if since is not None else None
        upper = parse_when(until, now=clock, option="--until") if until is not None else None
        if lower is not None and upper is not None and lower >= upper:
            raise ConfigError(
                f"--since {format_timestamp(lower)} is not before "
                f"--until {format_timestamp(upper)}: the window [since, until) would be empty."
            )
        return cls(now=clock, since=lower, until=upper)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_since", format_timestamp(self.since) if self.since else None)
        object.__setattr__(self, "_until", format_timestamp(self.until) if self.until else None)
        object.__setattr__(self, "_oldest", format_timestamp(self.now - MAX_AGE))
        object.__setattr__(self, "_newest", format_timestamp(self.now + MAX_AHEAD))

    def bounds(self) -> tuple[str | None, str | None, str, str]:
        """``(since, until, oldest, newest)`` as normalised strings, for loops that inline them."""
        return self._since, self._until, self._oldest, self._newest

    def clear(self) -> tuple[str, str]:
        """``(lowest, upper)``: a normalised timestamp ``t`` with ``lowest <= t < upper`` is
        selected and ingestable; anything else is for `selects` and `ingest_problem` to decide.
        One chained comparison, for loops that check millions of timestamps (``t <= newest``
        is ``t < newest + "\\0"`` for any string)."""
        lowest = self._oldest if self._since is None else max(self._since, self._oldest)
        upper = self._newest + "\0"
        return lowest, upper if self._until is None else min(upper, self._until)

    def selects(self, timestamp: str) -> bool:
        """Whether a normalised timestamp lies in ``[since, until)``."""
        since, until = self._since, self._until
        return (since is None or timestamp >= since) and (until is None or timestamp < until)

    def ingest_problem(self, timestamp: str) -> tuple[str, str] | None:
        """``(reason, detail)`` when Metronome would refuse this timestamp, else None."""
        if timestamp < self._oldest:
            return (
                Reason.TOO_OLD,
                f"timestamp {timestamp} is more than 34 days before {format_timestamp(self.now)}; "
                "Metronome only accepts events back-dated up to 34 days",
            )
        if timestamp > self._newest:
            return (
                Reason.TOO_NEW,
                f"timestamp {timestamp} is more than 24 hours after {format_timestamp(self.now)}; "
                "Metronome rejects events that far in the future",
            )
        return None
