"""Compiled mappings: apply them to records and enforce Metronome's output rules.

Every per-event problem becomes a :class:`~segmetro.models.Reject` that names the mapping, the
field and the reason; nothing raised by an expression escapes :meth:`MappingSet.apply`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from segmetro.jsvalue import js_number
from segmetro.mapping.kit import KitThrow, is_plain_json, output_value
from segmetro.mapping.timestamps import normalize_timestamp, quick_text
from segmetro.mapping.values import (
    MISSING,
    Codegen,
    Expr,
    ExpressionFailure,
    ObjectExpr,
    constant_value,
    describe,
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

    def expression(self, names: dict[str, Any], prefix: str) -> str:
        """`matches` as a Python expression on the event ``e``, for generated code."""
        ...


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
    #: the value can hold NaN or an infinity (``@json`` decoding): the output check walks it
    nonfinite: bool = False


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


class _Rejected(Exception):
    """Internal: one output rule failed (never leaves this module)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True, eq=False)
class Mapping:
    """One compiled mapping: when its trigger matches, it turns a message into a usage event.

    The whole mapping compiles to one generated function (``build``): each field's expression,
    written in from its code form (``Codegen``: one statement of each directive, which its
    closure is compiled from too), then its output rule. A rule is the method that states it
    (``_identifier``, ``_timestamp``, ``_properties``); the generated code only skips the call
    when the value already is what the rule would return (``_RULES``), so there is one path for
    every event, valid or not.
    """

    name: str
    trigger: TriggerLike | None
    trigger_text: str | None
    string_properties: bool
    fields: tuple[FieldSpec, ...]
    line: int | None = None
    #: the payload of one event, or raises ``_Rejected`` naming the field and the reason
    build: Callable[[JsonObject], JsonObject] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "build", _compile(self))

    def matches(self, event: JsonObject) -> bool:
        """Whether this mapping fires for the event (no trigger = every event)."""
        return self.trigger is None or self.trigger.matches(event)

    def map(self, record: Record, stats: FieldStats | None = None) -> Mapped | Reject:
        """Build the payload for one record this mapping's trigger matched."""
        if stats is not None:
            self._count(record.event, stats)
        try:
            payload = self.build(record.event)
        except _Rejected as exc:
            return self.rejected(record, exc)
        return Mapped(mapping=self.name, payload=payload, record=record)

    def trigger_failed(self, record: Record, exc: Exception) -> Reject:
        """The reject for a record the trigger's evaluation raised on: one odd event must not
        stop the run."""
        return Reject(
            reason=Reason.EXPRESSION_ERROR,
            detail=f"trigger {self.trigger_text!r} failed: {type(exc).__name__}: {exc}",
            source=record.coords,
            mapping=self.name,
            event=record.event,
        )

    def rejected(self, record: Record, exc: _Rejected) -> Reject:
        """The reject for a record whose payload broke an output rule."""
        return Reject(
            reason=exc.reason,
            detail=exc.detail,
            source=record.coords,
            mapping=self.name,
            event=record.event,
        )

    def _count(self, event: JsonObject, stats: FieldStats) -> None:
        """Which fields (and keys of an object ``properties``) came out empty, for
        ``validate --sample``; a value whose expression failed counts as empty."""
        seen: list[tuple[str, Any]] = []
        for spec in self.fields:
            if isinstance(spec.expr, ObjectExpr):
                named = [(f"{spec.name}.{key}", item) for key, item in spec.expr.items]
            else:
                named = [(spec.name, spec.expr)]
            for name, expr in named:
                try:
                    value = expr(event)
                except Exception:  # noqa: BLE001 - the payload's own evaluation reports it
                    value = MISSING
                seen.append((name, value))
        stats.record(self.name, seen)

    # -- the output rules ----------------------------------------------------------------

    def _failed(self, spec: FieldSpec, exc: Exception) -> _Rejected:
        """An expression that raised: ``invalid_field`` for a conversion, else an error."""
        if isinstance(exc, ExpressionFailure):
            name = ".".join([spec.name, *exc.keys])
            if isinstance(exc, KitThrow):
                return _Rejected(
                    Reason.MAPPING_ERROR, f"{name}: Segment's mapping-kit throws: {exc}"
                )
            return _Rejected(Reason.INVALID_FIELD, f"{name}: {exc}")
        return _Rejected(
            Reason.EXPRESSION_ERROR,
            f"{spec.name}: expression {spec.source} failed: {type(exc).__name__}: {exc}",
        )

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
        value = output_value(value, walk=spec.nonfinite)
        assert isinstance(value, dict)
        if not self.string_properties:
            return value
        return _stringify_properties(value)


class _Rule(NamedTuple):
    """How the generated code applies one output rule: ``keep`` is a condition (on ``{v}``)
    under which the rule's method would return the value unchanged, so the call is skipped;
    `quick` names a function of a string value that returns what the method would (or None:
    the method decides), the shortcut the method itself takes first. A rule has one or both."""

    method: str
    keep: str | None
    quick: str | None = None


#: The output rule of each field: its method on `Mapping`, and when the value already passes.
_RULES: dict[str, _Rule] = {
    "transaction_id": _Rule("_identifier", "type({v}) is str and {v} and len({v}) <= _MAX_TID"),
    "timestamp": _Rule("_timestamp", None, quick="_quick_time"),
    "properties": _Rule("_properties", "type({v}) is dict and _as_is and _plain({v})"),
}
_ID_RULE = _Rule("_identifier", "type({v}) is str and {v}")


def _compile(mapping: Mapping, *, inline: bool = True) -> Callable[[JsonObject], JsonObject]:
    """Generate the one function that builds the payload of `mapping` (see `Mapping`).

    Each field's expression is written in as its code form (:class:`~segmetro.mapping.values.
    Codegen`: paths, constants, objects and the directives that have one are inlined, any
    other expression is called), inside one ``try`` that turns a failure into the field's
    reject; then its rule. An object ``properties`` under ``string_properties`` gets the rule
    per key (`_emit_string_properties`). Fields are evaluated and checked in order; the first
    failure is the event's reject. `inline` false calls every expression (tests compare).
    """
    names: dict[str, Any] = {
        "_MAX_TID": MAX_TRANSACTION_ID,
        "_quick_time": quick_text,
        # plain JSON properties go out as they are, unless turned into strings or NaN is possible
        "_as_is": not mapping.string_properties
        and not any(spec.nonfinite for spec in mapping.fields if spec.name == "properties"),
        "_plain": is_plain_json,
    }
    gen = Codegen(names, inline=inline)
    optional: list[tuple[str, str]] = []
    required: list[tuple[str, str]] = []
    with gen.block("def build(event):"):
        for i, spec in enumerate(mapping.fields):
            v, s = f"v{i}", gen.bind(spec, "s")
            rule = _RULES.get(spec.name, _ID_RULE)
            method = gen.bind(getattr(mapping, rule.method), "rule")
            is_constant, value = constant_value(spec.expr)
            if is_constant:
                # the rule is applied to a constant here, once; one it rejects is left to
                # reject each event
                try:
                    value, kept = getattr(mapping, rule.method)(spec, value), True
                except _Rejected:
                    kept = False
                gen.line(f"{v} = {gen.literal(value)}")
                if kept:
                    (optional if spec.name == "properties" else required).append((spec.name, v))
                    continue
            elif inline and mapping.string_properties and _per_key(spec):
                _emit_string_properties(gen, mapping, spec, v)
                optional.append((spec.name, v))
                continue
            else:
                with gen.block("try:"):
                    gen.value(spec.expr, v)
                with gen.block("except Exception as exc:"):
                    gen.line(f"raise {gen.bind(mapping._failed, 'fail')}({s}, exc) from None")
            check = "" if rule.keep is None else f"if not ({rule.keep.format(v=v)}):"
            if rule.quick is not None:
                q = gen.var("q")
                with gen.block(f"if type({v}) is str and ({q} := {rule.quick}({v})) is not None:"):
                    gen.line(f"{v} = {q}")
                check = "el" + check if check else "else:"
            with gen.block(check):
                gen.line(f"{v} = {method}({s}, {v})")
            (optional if spec.name == "properties" else required).append((spec.name, v))
        literal = ", ".join(f"{name!r}: {v}" for name, v in required)
        gen.line(f"payload = {{{literal}}}")
        for name, v in optional:
            with gen.block(f"if {v} is not None:"):
                gen.line(f"payload[{name!r}] = {v}")
        gen.line("return payload")
    #: the source, for tests and for reading what a mapping compiles to
    names["__source__"] = "\n".join(gen.lines)
    build: Callable[[JsonObject], JsonObject] = gen.compile("build", f"<mapping {mapping.name}>")
    return build


def _per_key(spec: FieldSpec) -> bool:
    """Whether `_emit_string_properties` applies: an object of string keys at the field's
    root, whose values cannot be NaN (so plain JSON is what the output keeps as it is)."""
    expr = spec.expr
    return (
        spec.name == "properties"
        and isinstance(expr, ObjectExpr)
        and expr.drop
        and not spec.nonfinite
        and all(type(key) is str for key, _ in expr.items)
    )


def _emit_string_properties(gen: Codegen, mapping: Mapping, spec: FieldSpec, v: str) -> None:
    """``properties`` of an object under ``string_properties``, the rule applied per key.

    `Mapping._properties` keeps a plain JSON object as it is (`output_value`) and turns each
    value with `_PROPERTY_VALUE`: so a string or null stays, any other plain JSON value is
    `_PROPERTY_VALUE` of it. A value that is not plain JSON (a big integer, a function) makes
    the whole object go through the method, as without this shortcut.
    """
    assert isinstance(spec.expr, ObjectExpr)
    s = gen.bind(spec, "s")
    with gen.block("try:"):
        pairs = spec.expr.emit_values(gen)
    with gen.block("except Exception as exc:"):
        gen.line(f"raise {gen.bind(mapping._failed, 'fail')}({s}, exc) from None")
    plain = gen.bind(is_plain_json, "plain")
    gen.names.update(_PROPERTY_NAMES)
    usual = gen.var("usual")
    gen.line(f"{v} = {{}}", f"{usual} = True")
    for key, var in pairs:
        with gen.block(f"if {var} is MISSING:"):
            gen.line("pass")
        with gen.block(f"elif type({var}) is str or {var} is None:"):
            gen.line(f"{v}[{key!r}] = {var}")
        with gen.block(f"elif {plain}({var}):"):
            gen.line(f"{v}[{key!r}] = {_PROPERTY_VALUE.format(v=var)}")
        with gen.block("else:"):
            gen.line(f"{usual} = False")
    with gen.block(f"if not {usual}:"):
        whole = gen.var("whole")
        spec.expr.emit_object(gen, whole, pairs)
        gen.line(f"{v} = {gen.bind(mapping._properties, 'rule')}({s}, {whole})")


#: ``string_properties`` of one top-level value of a plain JSON object, as source on ``{v}``:
#: `_stringify_properties` is it compiled over an object's values, and the compiled mapping
#: writes it per key of an object ``properties`` (`_emit_string_properties`).
_PROPERTY_VALUE = "{v} if type({v}) in _KEPT or {v} is None else _to_text({v})"
#: Property values ``string_properties`` keeps as they are (and None): exact types, since a
#: subclass never comes out of a JSON parser.
_KEPT = frozenset({str, dict, list})
_PROPERTY_NAMES: dict[str, Any] = {"_KEPT": _KEPT, "_to_text": to_text}
exec(
    "def _stringify_properties(value):\n"
    f"    return {{key: {_PROPERTY_VALUE.format(v='item')} for key, item in value.items()}}",
    _PROPERTY_NAMES,
)
#: ``string_properties`` for an object (as `Mapping._properties`).
_stringify_properties: Callable[[JsonObject], JsonObject] = _PROPERTY_NAMES["_stringify_properties"]


class _Apply(Protocol):
    def __call__(
        self, record: Record, stats: FieldStats | None = None
    ) -> list[Mapped | Reject]: ...


@dataclass(slots=True)
class MappingSet:
    """The mappings of one file, in file order, and the warnings found while loading it."""

    mappings: list[Mapping]
    path: str = "<mapping>"
    warnings: list[MappingWarning] = field(default_factory=list)
    #: the YAML it was compiled from (set by the loader): worker processes compile it again
    source_text: str | None = field(default=None, repr=False, compare=False)
    #: one Mapped or Reject per mapping whose trigger matches the record, in file order; an
    #: empty list = filtered. With `stats`, the fields that came out empty are counted in it.
    apply: _Apply = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.apply = _compile_set(self.mappings)

    def names(self) -> list[str]:
        """The mapping names, in file order."""
        return [mapping.name for mapping in self.mappings]


def _compile_set(mappings: Sequence[Mapping]) -> _Apply:
    """Generate `MappingSet.apply`: each mapping's trigger written in as its expression
    (``Trigger.expression``), then its ``build`` called, so a record costs one call per
    mapping that fires, not two per mapping. A trigger that raises is that mapping's reject;
    nothing an expression raises escapes."""
    names: dict[str, Any] = {"_Mapped": Mapped, "_Rejected": _Rejected}
    gen = Codegen(names)
    with gen.block("def apply(record, stats=None):"):
        gen.line("e = record.event", "out = []")
        for i, mapping in enumerate(mappings):
            m, build = gen.bind(mapping, "m"), gen.bind(mapping.build, "b")
            if mapping.trigger is None:
                _emit_fired(gen, m, build, gen.literal(mapping.name))
                continue
            with gen.block("try:"):
                gen.line(f"hit = {mapping.trigger.expression(names, f'_t{i}_')}")
            with gen.block("except Exception as exc:"):
                gen.line(f"out.append({m}.trigger_failed(record, exc))")
            with gen.block("else:"), gen.block("if hit:"):
                _emit_fired(gen, m, build, gen.literal(mapping.name))
        gen.line("return out")
    names["__source__"] = "\n".join(gen.lines)
    apply: _Apply = gen.compile("apply", "<mapping set>")
    return apply


def _emit_fired(gen: Codegen, m: str, build: str, name: str) -> None:
    """A mapping that fired: its event or its reject (`Mapping.map` when counting fields)."""
    with gen.block("if stats is None:"):
        with gen.block("try:"):
            gen.line(f"out.append(_Mapped({name}, {build}(e), record))")
        with gen.block("except _Rejected as exc:"):
            gen.line(f"out.append({m}.rejected(record, exc))")
    with gen.block("else:"):
        gen.line(f"out.append({m}.map(record, stats))")
