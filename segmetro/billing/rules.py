"""Metronome's matching rules: does a billable metric take an event, and what value does it use.

A metric takes an event when its ``event_type_filter`` lets the event type through
(``in_values``: only these; ``not_in_values``: all but these; no filter: every type) and every
property filter passes: ``exists: true`` needs the property, ``false`` needs it absent,
``in_values`` needs its value in the list, ``not_in_values`` needs it out of the list.

Metronome's filter lists hold strings, and its docs ask for string property values; how it
compares anything else is not documented. Where the docs are silent the preview takes the
reading that cannot over-promise (it may warn of a loss that would not happen, never the other
way round):

* ``null`` is an absent property (it has no value to compare or aggregate);
* a number, boolean, object or array is never ``in`` a list of strings, and is ``not_in`` one
  only when its JSON text (``200``, ``true``) is not in the list either;
* SUM and MAX take a JSON number or a string holding a decimal number (``"12.5"``);
  booleans and other strings are not numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from segmetro.billing.account import Metric, PropertyFilter

__all__ = ["NUMERIC", "Miss", "aggregation_value", "filter_text", "match_metric", "value_text"]

#: Aggregations that need a number in ``aggregation_key``.
NUMERIC = frozenset({"SUM", "MAX"})
_ABSENT: Any = object()


@dataclass(frozen=True, slots=True)
class Miss:
    """Why a metric does not take an event: the first failing check, in the metric's order.

    ``why`` holds no event value, so misses group by cause; ``value`` is the value seen.
    """

    metric: Metric
    failures: int  # how many checks fail; the nearest metric fails fewest
    what: str  # "event_type" or the property name
    why: str  # e.g. "missing (cpu_seconds exists)"
    value: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric.name, "field": self.what, "failed": self.why}


def value_text(value: Any) -> str:
    """How a value is written in reports and in a non-string comparison: its JSON text."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def filter_text(f: PropertyFilter) -> str:
    """One property filter as a short phrase, e.g. ``plan exists, in [free, pro]``."""
    parts = []
    if f.exists is not None:
        parts.append("exists" if f.exists else "absent")
    if f.in_values is not None:
        parts.append(f"in [{', '.join(f.in_values)}]")
    if f.not_in_values is not None:
        parts.append(f"not in [{', '.join(f.not_in_values)}]")
    return f"{f.name} {', '.join(parts) or 'any'}"


def _property_failure(
    f: PropertyFilter, properties: dict[str, Any]
) -> tuple[str, str | None] | None:
    value = properties.get(f.name, _ABSENT)
    if value is None:
        value = _ABSENT
    if value is _ABSENT:
        if f.exists is True or f.in_values is not None:
            return "missing", None
        return None
    text = value_text(value)
    if f.exists is False:
        return "present", text
    if f.in_values is not None and not (isinstance(value, str) and value in f.in_values):
        if isinstance(value, str):
            return "value not in in_values", text
        return f"a {_kind(value)}, not a string (filters compare strings)", text
    if f.not_in_values is not None and text in f.not_in_values:
        return "value in not_in_values", text
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "object" if isinstance(value, dict) else "array"


def match_metric(metric: Metric, event_type: str, properties: dict[str, Any]) -> Miss | None:
    """None when `metric` takes the event; otherwise the first reason it does not."""
    first: tuple[str, str, str | None] | None = None
    failures = 0
    if (metric.event_in is not None and event_type not in metric.event_in) or (
        event_type in metric.event_not_in
    ):
        failures += 1
        allowed = (
            f"in [{', '.join(sorted(metric.event_in))}]"
            if metric.event_in is not None
            else f"not in [{', '.join(sorted(metric.event_not_in))}]"
        )
        first = ("event_type", f"event_type_filter needs {allowed}", event_type)
    for f in metric.property_filters:
        failed = _property_failure(f, properties)
        if failed is not None:
            failures += 1
            if first is None:
                first = (f.name, f"{failed[0]} (filter: {filter_text(f)})", failed[1])
    if first is None:
        return None
    return Miss(metric=metric, failures=failures, what=first[0], why=first[1], value=first[2])


def aggregation_value(metric: Metric, properties: dict[str, Any]) -> tuple[Any, str | None]:
    """The value `metric` aggregates from an event and None, or (None, why it has none).

    COUNT needs no value. SUM and MAX get a ``Decimal``; UNIQUE and LATEST the JSON text.
    """
    kind = metric.aggregation_type
    if kind == "COUNT":
        return 1, None
    key = metric.aggregation_key
    if key is None:
        return None, f"{kind} metric without aggregation_key"
    value = properties.get(key)
    if value is None:
        return None, f"{key} missing"
    if kind not in NUMERIC:
        return value_text(value), None
    number = _decimal(value)
    if number is None:
        return None, f"{key} not a number"
    return number, None


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() and value.strip() == value else None
    return None
