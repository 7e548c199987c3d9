"""Runtime building blocks of value expressions: each compiles, once, into ``(event) -> value``.

The loader validates a mapping file and calls these constructors; nothing here parses YAML or
knows about line numbers. A result may be :data:`MISSING` (the expression found nothing), which
is different from ``null``: keys whose value is missing are dropped, ``null`` is kept.

Where Segment's mapping-kit defines a directive, the semantics follow its source
(``packages/core/src/mapping-kit/index.ts``, ``placeholders.ts``, ``get.ts``), JavaScript
stringification included, so a replay sends the values the live destination would have sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import weakref
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Final

import orjson

from segmetro.jsvalue import UNDEFINED

# Re-exported for modules that import them from here (the loader, tests/test_jsvalue.py).
from segmetro.jsvalue import js_number as js_number
from segmetro.jsvalue import js_string as js_string
from segmetro.jsvalue import js_truthy as js_truthy
from segmetro.models import JsonObject

#: What an expression yields when it found nothing (JavaScript's ``undefined`` in Segment).
MISSING: Final = UNDEFINED

#: A compiled value expression.
Expr = Callable[[JsonObject], Any]


class ExpressionFailure(Exception):
    """A conversion (``@number``) that failed for one event: that event is rejected.

    `keys` collects the object keys it passed through, to name the field (``properties.v``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.keys: list[str] = []


def describe(value: Any, limit: int = 80) -> str:
    """A short JSON rendering of a value for reject details and messages."""
    if value is MISSING:
        return "missing"
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- numbers as text


def decimal_text(value: int | float) -> str:
    """A number as a plain decimal string, never in exponent form (``1e-07`` → ``0.0000001``).

    Used by ``@string`` and ``string_properties``: Metronome recommends string property values so
    that it can read them as arbitrary-precision decimals. Floats keep Python's shortest round-trip
    digits (``1.5`` → ``"1.5"``, ``1.0`` → ``"1.0"``).
    """
    if isinstance(value, int):
        return str(value)
    text = repr(value)
    if "e" not in text and "E" not in text:
        return text
    return format(Decimal(text), "f")


# --------------------------------------------------------------------------- constants


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


#: What the compiled-mapping fast path may inline: simple paths (their keys) and scalar constants.
_PATH_KEYS: weakref.WeakKeyDictionary[Expr, tuple[str, ...]] = weakref.WeakKeyDictionary()
_CONSTANTS: weakref.WeakKeyDictionary[Expr, Any] = weakref.WeakKeyDictionary()


def path_keys(expr: Expr) -> tuple[str, ...] | None:
    """The object keys of a simple path made only of names (``$.a.b``), else None."""
    try:
        return _PATH_KEYS.get(expr)
    except TypeError:  # not weakly referenceable (an ObjectExpr): not a path
        return None


def register_path(expr: Expr, keys: tuple[str, ...]) -> Expr:
    """Declare that `expr` yields ``event[k1][k2]...`` whenever those lookups succeed, so the
    compiled mapping may inline them and call `expr` only when one fails."""
    _PATH_KEYS[expr] = keys
    return expr


def constant_value(expr: Expr) -> tuple[bool, Any]:
    """``(True, value)`` when `expr` is a scalar constant (``MISSING`` included), else
    ``(False, None)``."""
    try:
        if expr in _CONSTANTS:
            return True, _CONSTANTS[expr]
    except TypeError:  # not weakly referenceable (an ObjectExpr): not a constant
        pass
    return False, None


def constant(value: Any) -> Expr:
    """A literal; containers are copied per event so no consumer can alter the mapping."""
    if isinstance(value, dict | list):
        return lambda _event: _copy(value)
    expr: Expr = lambda _event: value  # noqa: E731 - registered below
    _CONSTANTS[expr] = value
    return expr


class ObjectExpr:
    """An object whose values are expressions.

    A missing value stays in the object as JavaScript's ``undefined`` (``Object.assign`` in
    ``@merge`` copies it), and is removed where Segment removes it: at the output. The object a
    field holds directly (`drop`) leaves those keys out at once.
    """

    __slots__ = ("drop", "items")

    def __init__(self, items: Sequence[tuple[str, Expr]], *, drop: bool = False) -> None:
        self.items = tuple(items)
        self.drop = drop

    def __call__(self, event: Any) -> JsonObject:
        out: JsonObject = {}
        drop = self.drop
        for key, expr in self.items:
            try:
                value = expr(event)
            except ExpressionFailure as exc:
                exc.keys.insert(0, key)
                raise
            if value is not MISSING or not drop:
                out[key] = value
        return out


def list_expr(items: Sequence[Expr]) -> Expr:
    """A list of expressions; a missing element stays ``undefined`` (``null`` at the output)."""
    exprs = tuple(items)
    return lambda event: [expr(event) for expr in exprs]


# --------------------------------------------------------------------------- JSONPath

_MULTI_NODES = frozenset(
    {"Wildcard", "Slice", "Descendants", "Filter", "Union", "Where", "WhereNot", "Intersect"}
)


def _parse_jsonpath(text: str) -> Any:
    from jsonpath_ng.ext.parser import parse

    try:
        return parse(text)
    except Exception as exc:  # noqa: BLE001 - jsonpath-ng raises assorted exception types
        message = str(exc) or type(exc).__name__
        raise ValueError(f"invalid JSONPath {text!r}: {message}") from None


def simple_steps(parsed: Any) -> list[str | int] | None:
    """The steps of a path made only of plain names and single indices, or None.

    ``$.a['b'][0]`` → ``["a", "b", 0]``: a string step looks a key up in an object, an integer
    step indexes a list (negative from the end), exactly as jsonpath-ng does.
    """
    from jsonpath_ng.jsonpath import Child, Fields, Index, Root

    steps: list[str | int] = []
    node = parsed
    while type(node) is Child:
        right = node.right
        if type(right) is Fields and len(right.fields) == 1 and right.fields[0] != "*":
            steps.append(str(right.fields[0]))
        elif type(right) is Index and len(getattr(right, "indices", ())) == 1:
            steps.append(int(right.indices[0]))
        else:
            return None
        node = node.left
    if type(node) is not Root:
        return None
    steps.reverse()
    return steps


def _is_multi(node: Any) -> bool:
    """Whether a parsed path can match several values (wildcards, filters, slices, ...)."""
    name = type(node).__name__
    if name in _MULTI_NODES:
        return True
    if name == "Fields":
        return len(node.fields) != 1 or node.fields[0] == "*"
    if name == "Index":
        return len(getattr(node, "indices", (0,))) != 1
    return any(_is_multi(getattr(node, side)) for side in ("left", "right") if hasattr(node, side))


def steps_getter(steps: Sequence[str | int]) -> Expr:
    """Plain dict/list lookups for a simple path; returns what jsonpath-ng would, or MISSING."""
    keys = tuple(steps)
    if not keys:
        return lambda event: event
    names = tuple(key for key in keys if type(key) is str)
    if len(names) == len(keys):
        getter = _names_getter(names)
        _PATH_KEYS[getter] = names
        return getter

    def get_mixed(event: Any) -> Any:
        value = event
        for key in keys:
            if type(key) is str:
                if not isinstance(value, dict) or key not in value:
                    return MISSING
            elif not isinstance(value, list) or not -len(value) <= key < len(value):  # type: ignore[operator]
                return MISSING
            value = value[key]
        return value

    return get_mixed


def _names_getter(keys: tuple[str, ...]) -> Expr:
    """Lookups of object keys only: any value but an object raises TypeError when indexed by a
    string, so one try covers every way of finding nothing."""
    if len(keys) == 1:
        (k1,) = keys

        def get1(event: Any) -> Any:
            try:
                return event[k1]
            except (KeyError, TypeError):
                return MISSING

        return get1
    if len(keys) == 2:
        k1, k2 = keys

        def get2(event: Any) -> Any:
            try:
                return event[k1][k2]
            except (KeyError, TypeError):
                return MISSING

        return get2
    if len(keys) == 3:
        k1, k2, k3 = keys

        def get3(event: Any) -> Any:
            try:
                return event[k1][k2][k3]
            except (KeyError, TypeError):
                return MISSING

        return get3

    def get_names(event: Any) -> Any:
        value = event
        try:
            for key in keys:
                value = value[key]
        except (KeyError, TypeError):
            return MISSING
        return value

    return get_names


def jsonpath_expr(text: str) -> Expr:
    """Compile a JSONPath (jsonpath-ng extended syntax); raises ``ValueError`` if it is invalid.

    A path without wildcards, filters or slices yields its value or MISSING; simple ones (names,
    ``['k']``, ``[0]``) become plain lookups. Any other path yields the list of its matches.
    """
    parsed = _parse_jsonpath(text)
    steps = simple_steps(parsed)
    if steps is not None:
        return steps_getter(steps)
    find = parsed.find
    if _is_multi(parsed):
        return lambda event: [match.value for match in find(event)]

    def first(event: JsonObject) -> Any:
        matches = find(event)
        return matches[0].value if matches else MISSING

    return first


def reference_jsonpath(text: str) -> Callable[[Any], Any]:
    """jsonpath-ng alone, without the fast path: what the fast path must agree with (tests)."""
    parsed = _parse_jsonpath(text)

    def evaluate(event: Any) -> Any:
        matches = parsed.find(event)
        return matches[0].value if matches else MISSING

    return evaluate


# --------------------------------------------------------------------------- segmetro's directives


def coalesce_expr(items: Sequence[Expr]) -> Expr:
    """``@coalesce``: the first value that is neither missing nor null, else MISSING."""
    exprs = tuple(items)

    def evaluate(event: JsonObject) -> Any:
        for expr in exprs:
            result = expr(event)
            if result is not MISSING and result is not None:
                return result
        return MISSING

    return evaluate


def hash_values(values: Sequence[Any]) -> str:
    """Hex SHA-256 of the values' canonical encoding: a compact JSON array, object keys sorted,
    a missing value written as ``null``."""
    items = [None if item is MISSING else item for item in values]
    try:
        encoded = orjson.dumps(items, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # e.g. integers beyond 64 bits
        encoded = json.dumps(
            items, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    return hashlib.sha256(encoded).hexdigest()


def hash_expr(items: Sequence[Expr]) -> Expr:
    """``@hash``: a deterministic id for sources without a stable one."""
    exprs = tuple(items)
    return lambda event: hash_values([expr(event) for expr in exprs])


def string_expr(value: Expr) -> Expr:
    """``@string``: numbers as plain decimals, booleans as ``true``/``false``, containers as JSON.

    Missing and null pass through, so an absent property stays absent.
    """

    def evaluate(event: JsonObject) -> Any:
        result = value(event)
        if result is MISSING or result is None or isinstance(result, str):
            return result
        return to_text(result)

    return evaluate


def to_text(value: Any) -> str:
    """A non-null value as text, for ``@string`` and ``string_properties``."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return decimal_text(value)
    return orjson.dumps(value).decode()


_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*")


def number_expr(value: Expr) -> Expr:
    """``@number``: numbers pass, numeric strings are parsed; anything else fails the event.

    Missing and null pass through. Booleans fail rather than become 0/1.
    """

    def evaluate(event: JsonObject) -> Any:
        result = value(event)
        if result is MISSING or result is None:
            return result
        if isinstance(result, int | float) and not isinstance(result, bool):
            return result
        if isinstance(result, str) and _NUMBER_TEXT.fullmatch(result):
            if _INTEGER_TEXT.fullmatch(result):
                return int(result)
            number = float(result)
            if number not in (float("inf"), float("-inf")):
                return number
        raise ExpressionFailure(f"@number: {describe(result)} is not a number")

    return evaluate
