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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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


#: The scalar constants, for the compiled mapping to check its rule once, at compile time.
_CONSTANTS: weakref.WeakKeyDictionary[Expr, Any] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------- code forms

#: Writes the statements of one expression: they leave its value in the variable named
#: `target`, reading the event from ``event``.
Emit = Callable[["Codegen", str], None]
#: The code form of each generated expression (see `Codegen`).
_CODE: weakref.WeakKeyDictionary[Expr, Emit] = weakref.WeakKeyDictionary()


#: how deep in blocks `Codegen.value` still inlines a code form (see there)
MAX_INLINE_DEPTH: Final = 8


class Codegen:
    """Python source for expressions, composed.

    A directive states its semantics once, as an emitter (`Emit`): the statements that compute
    its value. Its closure is those statements compiled alone, each sub-expression a call
    (`generated`); ``Mapping.build`` is the statements of every field composed into one
    function, the sub-expressions' statements inlined (`value`). So the fast form and the
    closure cannot drift apart (one home per rule), and a mapping costs no call per directive.
    """

    def __init__(self, names: dict[str, Any], *, inline: bool = True) -> None:
        #: the namespace the code runs in (module globals of the compiled source)
        self.names = names
        #: whether sub-expressions with a code form are inlined (else called)
        self.inline = inline
        self.lines: list[str] = []
        self._depth = 0
        self._bound: dict[int, str] = {}
        self._count = 0
        for value, name in ((MISSING, "MISSING"), (ExpressionFailure, "ExpressionFailure")):
            names[name] = value
            self._bound[id(value)] = name

    def var(self, hint: str = "t") -> str:
        """A fresh local variable."""
        self._count += 1
        return f"{hint}_{self._count}"

    def bind(self, value: Any, hint: str = "k") -> str:
        """The global name `value` has in the compiled source (one name per object)."""
        name = self._bound.get(id(value))
        if name is None:
            self._count += 1
            name = self._bound[id(value)] = f"_{hint}{self._count}"
            self.names[name] = value
        return name

    def literal(self, value: Any) -> str:
        """`value` as source: a literal for exact strings, integers, booleans and None."""
        if value is None or type(value) in (str, int, bool):
            return repr(value)
        return self.bind(value)

    def line(self, *texts: str) -> None:
        """Statements at the current indentation."""
        self.lines += ["    " * self._depth + text for text in texts]

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        """A compound statement: `header`, then what is written in the ``with`` (``pass`` if
        nothing is: an object with no keys)."""
        self.line(header)
        self._depth += 1
        written = len(self.lines)
        try:
            yield
        finally:
            if len(self.lines) == written:
                self.line("pass")
            self._depth -= 1

    def value(self, expr: Expr, target: str) -> None:
        """Statements leaving ``expr(event)`` in `target`: its code form, or a call.

        Below `MAX_INLINE_DEPTH` blocks a sub-expression is called, not inlined: Python refuses
        more than 20 nested ``try`` blocks and 100 indentation levels, and a deeply nested
        mapping must still compile (to the same calls its closures make)."""
        emit = code_of(expr) if self.inline and self._depth < MAX_INLINE_DEPTH else None
        if emit is None:
            self.line(f"{target} = {self.bind(expr, 'e')}(event)")
        else:
            emit(self, target)

    def compile(self, name: str, filename: str) -> Any:
        """Run the source written so far; the global it defines as `name`."""
        exec(compile("\n".join(self.lines), filename, "exec"), self.names)
        return self.names[name]


def code_of(expr: Expr) -> Emit | None:
    """The code form of `expr`, or None (it can only be called)."""
    if isinstance(expr, ObjectExpr):
        return expr.emit
    try:
        return _CODE.get(expr)
    except TypeError:  # not weakly referenceable: no code form
        return None


def generated(emit: Emit, name: str, *, register: bool = True) -> Expr:
    """The closure of a code form: its statements compiled alone, sub-expressions called."""
    gen = Codegen({}, inline=False)
    with gen.block(f"def {name}(event):"):
        emit(gen, "value")
        gen.line("return value")
    expr: Expr = gen.compile(name, f"<{name}>")
    if register:
        _CODE[expr] = emit
    return expr


def constant_value(expr: Expr) -> tuple[bool, Any]:
    """``(True, value)`` when `expr` is a scalar constant (``MISSING`` included), else
    ``(False, None)``."""
    try:
        if expr in _CONSTANTS:
            return True, _CONSTANTS[expr]
    except TypeError:  # not weakly referenceable: not a constant
        pass
    return False, None


def constant(value: Any) -> Expr:
    """A literal; containers are copied per event so no consumer can alter the mapping."""
    if isinstance(value, dict | list):
        return lambda _event: _copy(value)
    expr: Expr = lambda _event: value  # noqa: E731 - registered below
    _CONSTANTS[expr] = value
    _CODE[expr] = lambda gen, target: gen.line(f"{target} = {gen.literal(value)}")
    return expr


class ObjectExpr:
    """An object whose values are expressions.

    A missing value stays in the object as JavaScript's ``undefined`` (``Object.assign`` in
    ``@merge`` copies it), and is removed where Segment removes it: at the output. The object a
    field holds directly (`drop`) leaves those keys out at once. A failure (``@number``) inside
    names the key it passed through (``properties.v``).
    """

    __slots__ = ("_evaluate", "drop", "items")

    def __init__(self, items: Sequence[tuple[str, Expr]], *, drop: bool = False) -> None:
        self.items = tuple(items)
        self.drop = drop
        self._evaluate = generated(self.emit, "object_expr", register=False)

    def __call__(self, event: Any) -> JsonObject:
        result: JsonObject = self._evaluate(event)
        return result

    def emit(self, gen: Codegen, target: str) -> None:
        """The code form (`Codegen`): `emit_values`, then `emit_object`."""
        self.emit_object(gen, target, self.emit_values(gen))

    def emit_values(self, gen: Codegen) -> list[tuple[str, str]]:
        """Statements computing each value, in order: ``(key, variable)`` pairs."""
        pairs: list[tuple[str, str]] = []
        for key, expr in self.items:
            var = gen.var()
            with gen.block("try:"):
                gen.value(expr, var)
            with gen.block("except ExpressionFailure as exc:"):
                gen.line(f"exc.keys.insert(0, {gen.literal(key)})", "raise")
            pairs.append((key, var))
        return pairs

    def emit_object(self, gen: Codegen, target: str, pairs: Sequence[tuple[str, str]]) -> None:
        """The object of the values `emit_values` left in its variables."""
        if not self.drop:
            entries = ", ".join(f"{gen.literal(key)}: {var}" for key, var in pairs)
            gen.line(f"{target} = {{{entries}}}")
            return
        gen.line(f"{target} = {{}}")
        for key, var in pairs:
            with gen.block(f"if {var} is not MISSING:"):
                gen.line(f"{target}[{gen.literal(key)}] = {var}")


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
        return _names_getter(names)

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

    def emit(gen: Codegen, target: str) -> None:
        with gen.block("try:"):
            gen.line(f"{target} = event" + "".join(f"[{gen.literal(key)}]" for key in keys))
        with gen.block("except (KeyError, TypeError):"):
            gen.line(f"{target} = MISSING")

    return generated(emit, "get_names")


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

    def emit(gen: Codegen, target: str) -> None:
        # flat, not nested: each item is tried only while every earlier one was missing or
        # null, and a coalesce of 100 items still compiles
        gen.line(f"{target} = MISSING")
        for expr in exprs:
            with gen.block(f"if {target} is MISSING or {target} is None:"):
                gen.value(expr, target)
        with gen.block(f"if {target} is None:"):
            gen.line(f"{target} = MISSING")

    return generated(emit, "coalesce")


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
