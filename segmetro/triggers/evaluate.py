"""Trigger evaluation: a parsed trigger becomes one generated Python function, built once.

The function answers what Segment's ``validate`` answers for an event. Every condition is
written out inline: the field lookup (Segment's ``get``, ``keys.reduce((o, k) => o && o[k])``,
as nested dict lookups with a JavaScript member access for anything that is not a plain
object), then the operator's test (``validateValue``) with the expected value converted at
compile time. ``and``/``or`` keep their order and short-circuit; an ``or`` of equalities on one
top-level field is a set lookup. There is no other evaluation path: the Segment-verified cases
in the tests run through this one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from segmetro.jsvalue import (
    OBJECT_MEMBERS,
    UNDEFINED,
    js_string,
    number_value,
    step,
    to_number,
    utf16,
)
from segmetro.triggers.parser import NUMERIC, OBJECT_ROOTS, Condition, Node, parse

Predicate = Callable[[Mapping[str, Any]], bool]

#: Paths with more keys than this are walked in a loop rather than inlined (Python limits how
#: deeply an expression may nest).
_INLINE_KEYS: Final = 4
_STRING_TESTS: Final = {
    "contains": "{s} in v",
    "not_contains": "{s} not in v",
    "starts_with": "v.startswith({s})",
    "not_starts_with": "not v.startswith({s})",
    "ends_with": "v.endswith({s})",
    "not_ends_with": "not v.endswith({s})",
}
_COMPARISONS: Final = {
    "number_equals": "==",
    "number_not_equals": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}


@dataclass(frozen=True, slots=True)
class Trigger:
    """A compiled trigger: ``matches`` is what Segment's ``validate`` answers for an event.

    `expression` gives the same test as source, for a generated function that tests several
    triggers in a row without a call each (``MappingSet.apply``); both come from one generator.
    """

    source: str
    _match: Predicate = field(repr=False, compare=False)
    _node: Node = field(repr=False, compare=False)

    def matches(self, event: Mapping[str, Any]) -> bool:
        return self._match(event)

    def expression(self, names: dict[str, Any], prefix: str) -> str:
        """The test as one Python expression on the event ``e``, the body of `matches`.

        The names it refers to are added to `names`: the shared helpers as they are, its own
        constants under `prefix`. It assigns the locals ``v``, ``t``, ``x`` and ``o``.
        """
        generator = _Generator(prefix)
        expr = generator.expr(self._node)
        for name, value in generator.names.items():
            if names.setdefault(name, value) is not value:
                raise ValueError(f"name {name!r} is already bound to another value")
        return expr


def parse_trigger(text: str) -> Trigger:
    """Compile a trigger; raise :class:`TriggerError` where Segment would match nothing."""
    node = parse(text).node
    return Trigger(text, compile_node(node), node)


def compile_node(node: Node) -> Predicate:
    """The node as one function ``(event) -> bool``."""
    source, names = generate(node)
    exec(compile(source, "<trigger>", "exec"), names)
    match: Predicate = names["match"]
    return match


def walk(obj: Any, keys: tuple[str, ...]) -> Any:
    """Segment's ``get`` over a whole path (for paths too long to inline)."""
    for key in keys:
        obj = step(obj, key)
    return obj


def _eq_any(value: Any, texts: tuple[str, ...]) -> bool:
    """``value == t`` for some t: the ``or`` of equalities, for a value that is not a ``str``."""
    return any(value == text for text in texts)


def generate(node: Node) -> tuple[str, dict[str, Any]]:
    """The source of ``match(e)`` for the node, and the names it refers to."""
    return _Generator().function(node)


#: the names every generated trigger may refer to (its own constants are added beside them)
_HELPERS: Final[dict[str, Any]] = {
    "M": UNDEFINED,
    "isinstance": isinstance,
    "_step": step,
    "_walk": walk,
    "_num": number_value,
    "_utf16": utf16,
    "_eq_any": _eq_any,
    # integers within ±2**53 are exact doubles, so Python compares them as JavaScript
    "_EXACT": 2**53,
}


class _Generator:
    def __init__(self, prefix: str = "c") -> None:
        self.prefix = prefix
        self.names: dict[str, Any] = dict(_HELPERS)
        self.counter = itertools.count()

    def function(self, node: Node) -> tuple[str, dict[str, Any]]:
        return f"def match(e):\n    return {self.expr(node)}\n", self.names

    def name(self, value: Any) -> str:
        """A name in the generated function's globals for a value with no literal."""
        name = f"{self.prefix}{next(self.counter)}"
        self.names[name] = value
        return name

    def literal(self, number: float) -> str:
        return repr(number) if math.isfinite(number) else self.name(number)

    def expr(self, node: Node) -> str:
        if isinstance(node, Condition):
            return self.condition(node)
        if len(node.children) == 1:
            return self.expr(node.children[0])
        if node.connective == "or":
            equalities = [_plain_equality(child) for child in node.children]
            roots = {pair[0] for pair in equalities if pair is not None}
            if None not in equalities and len(roots) == 1:
                texts = tuple(pair[1] for pair in equalities if pair is not None)
                some, each = self.name(frozenset(texts)), self.name(texts)
                return (
                    f"(v in {some} if type(v := e.get({roots.pop()!r}, M)) is str "
                    f"else _eq_any(v, {each}))"
                )
        joiner = " and " if node.connective == "and" else " or "
        return joiner.join(f"({self.expr(child)})" for child in node.children)

    def lookup(self, cond: Condition) -> str:
        """An expression for the value the condition tests."""
        if cond.root not in OBJECT_ROOTS:
            return f"e.get({cond.root!r}, M)"
        if not cond.path:
            return "M"
        keys = cond.keys
        value = f"e.get({cond.root!r}, M)"
        if len(keys) > _INLINE_KEYS:
            return f"_walk({value}, {self.name(keys)})"
        for key in keys:
            if key in OBJECT_MEMBERS:
                value = f"_step({value}, {key!r})"
            else:
                value = f"(o.get({key!r}, M) if type(o := {value}) is dict else _step(o, {key!r}))"
        return value

    def condition(self, cond: Condition) -> str:
        """``validateValue`` for one condition, the expected value converted once."""
        op = cond.op
        value = self.lookup(cond)
        if op == "=":
            return f"{value} == {js_string(cond.value)!r}"
        if op == "!=":
            return f"{value} != {js_string(cond.value)!r}"
        if op in NUMERIC:
            number = self.literal(to_number(cond.value))
            compare = _COMPARISONS[op]
            return (
                f"(v {compare} {number} if (t := type(v := {value})) is float or t is int and "
                f"-_EXACT <= v <= _EXACT else (x := _num(v)) is not None and x {compare} {number})"
            )
        if op in _STRING_TESTS:
            text = js_string(cond.value)
            if op.endswith("ends_with") and text and 0xDC00 <= ord(text[0]) <= 0xDFFF:
                # the pattern starts with half a character: compare UTF-16 units, as JavaScript
                test = _STRING_TESTS[op].replace("v.", "_utf16(v).").format(s=repr(utf16(text)))
            else:
                test = _STRING_TESTS[op].format(s=repr(text))
            return f"(type(v := {value}) is str or isinstance(v, str)) and {test}"
        if op == "exists":
            return f"(v := {value}) is not M and v is not None"
        if op == "not_exists":
            return f"(v := {value}) is M or v is None"
        if op == "is_true":
            return f"{value} is True"
        if op == "is_false":
            return f"{value} is False"
        return "False"  # an operator Segment's evaluator does not know never matches


def _plain_equality(node: Node) -> tuple[str, str] | None:
    """``(root, text)`` for ``root = "text"`` on a top-level field (``type``, ``event``, …)."""
    if isinstance(node, Condition) and node.op == "=" and node.root not in OBJECT_ROOTS:
        return node.root, js_string(node.value)
    return None
