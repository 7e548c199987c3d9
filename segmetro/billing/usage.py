"""The five aggregations of a billable metric over the events of one bucket.

COUNT counts events, SUM adds and MAX keeps the largest value of ``aggregation_key`` (exact
decimals, as Metronome takes arbitrary-precision numbers in strings), UNIQUE counts distinct
values and LATEST keeps the value of the event with the latest timestamp (the first one seen
on a tie).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = ["Aggregate", "number_json"]


def number_json(value: Decimal | int) -> int | float:
    """A usage figure as a JSON number: an integer when it is whole."""
    if isinstance(value, int):
        return value
    return int(value) if value == value.to_integral_value() else float(value)


@dataclass(slots=True)
class Aggregate:
    """One metric's usage in one bucket (a customer, a day, a group, or the whole run)."""

    kind: str
    events: int = 0
    total: Decimal = Decimal(0)
    peak: Decimal | None = None
    values: set[str] = field(default_factory=set)
    latest: tuple[str, str] | None = None  # (timestamp, value)

    def add(self, value: Any, timestamp: str) -> None:
        """Add one event's value (from ``rules.aggregation_value``)."""
        self.events += 1
        kind = self.kind
        if kind == "SUM":
            self.total += value
        elif kind == "MAX":
            self.peak = value if self.peak is None or value > self.peak else self.peak
        elif kind == "UNIQUE":
            self.values.add(value)
        elif kind == "LATEST" and (self.latest is None or timestamp > self.latest[0]):
            self.latest = (timestamp, value)

    @property
    def usage(self) -> int | float | str | None:
        """The figure Metronome would show for this bucket from these events."""
        kind = self.kind
        if kind == "COUNT":
            return self.events
        if kind == "SUM":
            return number_json(self.total)
        if kind == "MAX":
            return None if self.peak is None else number_json(self.peak)
        if kind == "UNIQUE":
            return len(self.values)
        return None if self.latest is None else self.latest[1]
