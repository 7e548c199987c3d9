"""Compiled mappings: apply them to records and enforce Metronome's output rules.

Every per-event problem becomes a :class:`~segmetro.models.Reject` that names the mapping, the
field and the reason; nothing raised by an expression escapes :meth:`MappingSet.apply`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from segmetro.mapping import fastpaths
from segmetro.mapping.timestamps import normalize_timestamp
from segmetro.mapping.values import (
    MISSING,
    Expr,
    ExpressionFailure,
    ObjectExpr,
    constant_value,
    describe,
    js_number,
    path_keys,
    to_text,
)
from segmetro.models import JsonObject, Mapped, Reason, Record, Reject

#: The output fields, in payload order.
OUTPUT_FIELDS = ("transaction_id", "customer_id", "event_type", "timestamp", "properties")
REQUIRED_FIELDS = ("transaction_id", "customer_id", "event_type", "timestamp")
#: Metronome's limit on ``transaction_id`` (OpenAPI ``maxLength``).
MAX_TRANSACTION_ID = 128


class TriggerLike(Protocol):
    """What a mapping needs of a parsed trigger (``segmetro.triggers.Trigger``)."""

    def matches(self, event: JsonObject) -> bool: ...


@dataclass(frozen=True, slots=True)
class MappingWarning:
    """Something that loads but probably does not do what the author meant (a trigger quirk)."""

    path: str
    line: int | None
    mapping: str
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: mapping {self.mapping!r}: {self.message}"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One compiled output field; `source` is the expression as written, for reject details."""

    name: str
    expr: Expr
    source: str


class FieldStatsRow(NamedTuple):
    """How often `field` of `mapping` was empty (missing, null or "") among `matched` events."""

    mapping: str
    field: str
    missing: int
    matched: int


class FieldStats:
    """Per mapping and output field (and per key of an object ``properties``), how often the
    expression found nothing: ``validate --sample`` turns it into "customer_id empty in 12%"."""

    def __init__(self) -> None:
        self._matched: Counter[str] = Counter()
        self._missing: dict[str, Counter[str]] = {}

    def _fields(self, mapping: str) -> Counter[str]:
        fields = self._missing.get(mapping)
        if fields is None:
            fields = self._missing[mapping] = Counter()
        return fields

    def record(self, mapping: str, values: Sequence[tuple[str, Any]]) -> None:
        """Count one matched event of `mapping` and which of its field values were empty."""
        self._matched[mapping] += 1
        fields = self._fields(mapping)
        for name, value in values:
            fields[name] += 1 if value is MISSING or value is None or value == "" else 0

    def merge(self, other: FieldStats) -> None:
        """Add another collector's counts (e.g. from a worker process)."""
        self._matched.update(other._matched)
        for mapping, fields in other._missing.items():
            mine = self._fields(mapping)
            for name, count in fields.items():
                mine[name] += count

    def rows(self) -> list[FieldStatsRow]:
        """``(mapping, field, missing, matched)`` rows in mapping and field order."""
        return [
            FieldStatsRow(mapping, name, missing, self._matched[mapping])
            for mapping, fields in self._missing.items()
            for name, missing in fields.items()
        ]


_ID, _TID, _TS, _PROPS = range(4)


class _Rejected(Exception):
    """Internal: one output rule failed (never leaves this module)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True, eq=False)
class Mapping:
    """One compiled mapping: when its trigger matches, it turns a message into a usage event."""

    name: str
    trigger: TriggerLike | None
    trigger_text: str | None
    string_properties: bool
    fields: tuple[FieldSpec, ...]
    line: int | None = None
    _plan: tuple[tuple[FieldSpec, Expr, int], ...] = field(init=False, repr=False, compare=False)
    #: the whole mapping as one function for the common event (see `_compile_fast`), or None
    fast: FastPayload | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kinds = {"transaction_id": _TID, "timestamp": _TS, "properties": _PROPS}
        plan = tuple((spec, spec.expr, kinds.get(spec.name, _ID)) for spec in self.fields)
        object.__setattr__(self, "_plan", plan)
        fast = _compile_fast(self, plan) if fastpaths.enabled() else None
        object.__setattr__(self, "fast", fast)

    def matches(self, event: JsonObject) -> bool:
        """Whether this mapping fires for the event (no trigger = every event)."""
        return self.trigger is None or self.trigger.matches(event)

    def map(self, record: Record, stats: FieldStats | None = None) -> Mapped | Reject:
        """Build the payload for one record this mapping's trigger matched."""
        try:
            payload = self._payload(record.event, stats)
        except _Rejected as exc:
            return Reject(
                reason=exc.reason,
                detail=exc.detail,
                source=record.coords,
                mapping=self.name,
                event=record.event,
            )
        return Mapped(mapping=self.name, payload=payload, record=record)

    def _evaluate(self, spec: FieldSpec, event: JsonObject) -> Any:
        try:
            return spec.expr(event)
        except ExpressionFailure as exc:
            name = ".".join([spec.name, *exc.keys])
            raise _Rejected(Reason.INVALID_FIELD, f"{name}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - one odd event must not stop the run
            raise _Rejected(
                Reason.EXPRESSION_ERROR,
                f"{spec.name}: expression {spec.source} failed: {type(exc).__name__}: {exc}",
            ) from None

    def _payload(self, event: JsonObject, stats: FieldStats | None) -> JsonObject:
        if stats is not None:
            return self._payload_counted(event, stats)
        payload: JsonObject = {}
        try:
            # The hot path: evaluate and check in one pass, slow paths only for odd values.
            for spec, expr, kind in self._plan:
                value = expr(event)
                if kind == _ID:
                    if type(value) is str and value:
                        payload[spec.name] = value
                    else:
                        payload[spec.name] = self._identifier(spec, value)
                elif kind == _TS:
                    payload["timestamp"] = self._timestamp(spec, value)
                elif kind == _TID:
                    if type(value) is str and value and len(value) <= MAX_TRANSACTION_ID:
                        payload["transaction_id"] = value
                    else:
                        payload["transaction_id"] = self._identifier(spec, value)
                elif type(value) is dict and not self.string_properties:
                    payload["properties"] = value
                else:
                    props = self._properties(spec, value)
                    if props is not None:
                        payload["properties"] = props
        except _Rejected:
            raise
        except Exception:  # noqa: BLE001 - redo field by field to say which one failed
            return self._check([self._evaluate(spec, event) for spec in self.fields])
        return payload

    def _payload_counted(self, event: JsonObject, stats: FieldStats) -> JsonObject:
        """As `_payload`, counting every field (and properties key) even when one fails."""
        values: list[Any] = []
        seen: list[tuple[str, Any]] = []
        failure: _Rejected | None = None
        for spec in self.fields:
            expr = spec.expr
            if isinstance(expr, ObjectExpr):
                value: Any = {}
                for key, item in expr.items:
                    name = f"{spec.name}.{key}"
                    try:
                        sub = self._evaluate(FieldSpec(name, item, spec.source), event)
                    except _Rejected as exc:
                        failure = failure or exc
                        sub = MISSING  # a failed conversion counts as empty
                    seen.append((name, sub))
                    if sub is not MISSING:
                        value[key] = sub
            else:
                try:
                    value = self._evaluate(spec, event)
                except _Rejected as exc:
                    failure = failure or exc
                    value = MISSING
                seen.append((spec.name, value))
            values.append(value)
        stats.record(self.name, seen)
        if failure is not None:
            raise failure
        return self._check(values)

    def _check(self, values: list[Any]) -> JsonObject:
        """Apply the output rules; `values` are in `self.fields` (payload) order."""
        payload: JsonObject = {}
        for spec, value in zip(self.fields, values, strict=True):
            name = spec.name
            if name == "timestamp":
                payload[name] = self._timestamp(spec, value)
            elif name == "properties":
                props = self._properties(spec, value)
                if props is not None:
                    payload[name] = props
            else:
                payload[name] = self._identifier(spec, value)
        return payload

    @staticmethod
    def _missing(spec: FieldSpec, value: Any) -> _Rejected:
        what = "matched nothing" if value is MISSING else "is null"
        return _Rejected(Reason.MISSING_FIELD, f"{spec.name}: expression {spec.source} {what}")

    def _identifier(self, spec: FieldSpec, value: Any) -> str:
        kind = type(value)
        if kind is str:
            if not value:
                raise _Rejected(
                    Reason.MISSING_FIELD, f"{spec.name}: expression {spec.source} is empty"
                )
            text: str = value
        elif kind is int or kind is float:
            text = js_number(value)
        elif value is MISSING or value is None:
            raise self._missing(spec, value)
        else:
            kind_name = {bool: "a boolean", dict: "an object", list: "a list"}.get(
                kind, kind.__name__
            )
            raise _Rejected(
                Reason.INVALID_FIELD,
                f"{spec.name}: expected a string or a number, got {kind_name} {describe(value)}",
            )
        if spec.name == "transaction_id" and len(text) > MAX_TRANSACTION_ID:
            raise _Rejected(
                Reason.INVALID_FIELD,
                f"transaction_id: {len(text)} characters, more than Metronome's "
                f"{MAX_TRANSACTION_ID}: {describe(text)}",
            )
        return text

    def _timestamp(self, spec: FieldSpec, value: Any) -> str:
        if value is MISSING or value is None:
            raise self._missing(spec, value)
        try:
            return normalize_timestamp(value)
        except ValueError as exc:
            raise _Rejected(Reason.INVALID_TIMESTAMP, f"timestamp: {exc}") from None

    def _properties(self, spec: FieldSpec, value: Any) -> JsonObject | None:
        """Missing or null properties are left out; `string_properties` turns top-level numbers
        and booleans into text (``10`` → ``"10"``, ``1.5`` → ``"1.5"``, ``true`` → ``"true"``),
        keeps null as null and leaves nested objects and lists as they are."""
        if value is MISSING or value is None:
            return None
        if not isinstance(value, dict):
            raise _Rejected(
                Reason.INVALID_FIELD,
                f"properties: expected an object, got {describe(value)} (expression {spec.source})",
            )
        if not self.string_properties:
            return value
        return _stringify_properties(value)


#: A compiled mapping for the common event: the payload, or None when anything is unusual
#: (a missing or odd value, an expression that raised), and the general path must decide.
FastPayload = Callable[[JsonObject], "JsonObject | None"]


def _compile_fast(mapping: Mapping, plan: tuple[tuple[FieldSpec, Expr, int], ...]) -> FastPayload:
    """Generate one Python function that builds the payload of `mapping` for the common event.

    Simple paths (``$.a.b``) become inline ``event["a"]["b"]`` lookups, scalar constants become
    literals, other expressions are called; then the output rules are checked for the common
    values only (a non-empty string id, a transaction_id of at most 128 characters, a timestamp
    already in normal form, an object ``properties``). Anything else (a missing value, a number
    id, an odd timestamp, an expression that raised) returns None and the caller takes the
    general path (`Mapping.map`), which gives the same payload or the precise reject. The
    result is therefore byte-identical to the general path (``tests/test_perf_paths.py``).
    """
    names: dict[str, Any] = {"_valid_iso": datetime.fromisoformat, "_MAX_TID": MAX_TRANSACTION_ID}
    body: list[str] = []
    for i, (_spec, expr, kind) in enumerate(plan):
        v = f"v{i}"
        keys = path_keys(expr)
        is_constant, value = constant_value(expr)
        if keys is not None:
            body.append(f"{v} = event" + "".join(f"[{key!r}]" for key in keys))
        elif is_constant and (type(value) is str or value is None or value is MISSING):
            names[f"c{i}"] = value
            body.append(f"{v} = c{i}")
        else:
            names[f"e{i}"] = expr
            body.append(f"{v} = e{i}(event)")
        if kind == _TID:
            body.append(f"if type({v}) is not str or not {v} or len({v}) > _MAX_TID:")
        elif kind == _TS:
            # timestamps.is_normal_form, inline (the separators at 4, 7, 10, 13, 16 and 19 in
            # one slice); fromisoformat raises ValueError otherwise
            body.append(
                f"if (type({v}) is not str or len({v}) != 24 or {v}[23] != 'Z'"
                f" or {v}[4:20:3] != '--T::.' or not {v}.isascii()):"
            )
        elif kind == _PROPS:
            body.append(f"if type({v}) is not dict:")
        else:
            body.append(f"if type({v}) is not str or not {v}:")
        body.append("    return None")
        if kind == _TS:
            body.append(f"_valid_iso({v})")
        if kind == _PROPS and mapping.string_properties:
            names[f"p{i}"] = _stringify_properties
            body.append(f"{v} = p{i}({v})")
    payload = ", ".join(f"{spec.name!r}: v{i}" for i, (spec, _, _) in enumerate(plan))
    lines = [
        "def fast(event):",
        "    try:",
        *(f"        {line}" for line in body),
        "    except Exception:",
        "        return None",
        f"    return {{{payload}}}",
    ]
    exec(compile("\n".join(lines), f"<mapping {mapping.name}>", "exec"), names)
    fast: FastPayload = names["fast"]
    return fast


def _stringify_properties(value: JsonObject) -> JsonObject:
    """``string_properties`` for an object (as `Mapping._properties`)."""
    return {
        key: item if item is None or isinstance(item, dict | list | str) else to_text(item)
        for key, item in value.items()
    }


@dataclass(slots=True)
class MappingSet:
    """The mappings of one file, in file order, and the warnings found while loading it."""

    mappings: list[Mapping]
    path: str = "<mapping>"
    warnings: list[MappingWarning] = field(default_factory=list)
    #: the YAML it was compiled from (set by the loader): worker processes compile it again
    source_text: str | None = field(default=None, repr=False, compare=False)

    def apply(self, record: Record, stats: FieldStats | None = None) -> list[Mapped | Reject]:
        """One Mapped or Reject per mapping whose trigger matches; an empty list = filtered."""
        event = record.event
        out: list[Mapped | Reject] = []
        for mapping in self.mappings:
            trigger = mapping.trigger
            if trigger is not None:
                try:
                    if not trigger.matches(event):
                        continue
                except Exception as exc:  # noqa: BLE001 - one odd event must not stop the run
                    out.append(
                        Reject(
                            reason=Reason.EXPRESSION_ERROR,
                            detail=f"trigger {mapping.trigger_text!r} failed: "
                            f"{type(exc).__name__}: {exc}",
                            source=record.coords,
                            mapping=mapping.name,
                            event=event,
                        )
                    )
                    continue
            out.append(mapping.map(record, stats))
        return out

    def names(self) -> list[str]:
        """The mapping names, in file order."""
        return [mapping.name for mapping in self.mappings]
