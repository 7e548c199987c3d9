"""The one evaluation path: every operator and form is generated inline, and gives Segment's answer.

The Segment-verified cases in ``test_triggers.py`` run through this same path; these tests pin
what the generated code must get right beyond them: JavaScript doubles at the edge of exact
integers, paths too long to inline, and triggers with thousands of conditions.
"""

from __future__ import annotations

from typing import Any

import pytest

from segmetro.jsvalue import UNDEFINED
from segmetro.triggers import parse_trigger
from segmetro.triggers.evaluate import compile_node, generate
from segmetro.triggers.parser import IR_OPERATORS, Condition, Group

EXACT = 2**53


@pytest.mark.parametrize("op", sorted(IR_OPERATORS))
def test_every_operator_is_generated_inline(op: str) -> None:
    """No operator Segment's evaluator knows falls back to something else, or to 'never'."""
    value: Any = UNDEFINED if op in ("exists", "not_exists", "is_true", "is_false") else "1"
    cond = Condition("properties", "x", op, value, "properties.x", 0, 1)
    source, _ = generate(Group("and", (cond,), 0, 1))
    assert "'x'" in source
    assert source.strip().splitlines()[-1] != "return False"


def test_an_unknown_operator_never_matches() -> None:
    """Segment's validateValue answers false for an operator it does not know."""
    cond = Condition("properties", "x", "foo", "1", "properties.x", 0, 1)
    match = compile_node(Group("and", (cond,), 0, 1))
    assert match({"properties": {"x": "1"}}) is False


@pytest.mark.parametrize(
    ("trigger", "value", "expected"),
    [
        # 2**53 + 1 is the double 2**53 in JavaScript
        ("properties.n > 9007199254740992", EXACT + 1, False),
        ("properties.n = 9007199254740992", EXACT + 1, True),
        ("properties.n != 9007199254740992", EXACT + 1, False),
        ("properties.n < -9007199254740992", -EXACT - 1, False),
        ("properties.n >= 9007199254740992", EXACT, True),
        ("properties.n > 9007199254740991", EXACT, True),
        ("properties.n < 0", -(10**400), True),
        ("properties.n > 1", 10**400, True),
        ("properties.n = 3", 3, True),
        ("properties.n = 3", 3.0, True),
        ("properties.n > 2.5", 3, True),
        ("properties.n > 2.5", True, False),
        ('properties.n > "Infinity"', 10**400, False),
        ('properties.n >= "Infinity"', 10**400, True),
        ('properties.n != "x"', float("nan"), True),  # Number("x") is NaN
        ('properties.n = "x"', float("nan"), False),
    ],
)
def test_numbers_compare_as_javascript_doubles(trigger: str, value: Any, expected: bool) -> None:
    """Integers beyond 2**53 round to the nearest double before comparing, as in JavaScript."""
    assert parse_trigger(trigger).matches({"properties": {"n": value}}) is expected


def nest(depth: int, leaf: Any) -> dict[str, Any]:
    value: Any = leaf
    for _ in range(depth):
        value = {"a": value}
    return value  # type: ignore[no-any-return]


@pytest.mark.parametrize("depth", [1, 2, 4, 5, 12, 3000])
def test_paths_of_any_length(depth: int) -> None:
    """Short paths are inlined, long ones walked; both follow Segment's ``get``."""
    trigger = parse_trigger("properties." + ".".join(["a"] * depth) + ' = "x"')
    assert trigger.matches({"properties": nest(depth, "x")})
    assert not trigger.matches({"properties": nest(depth, "y")})
    assert not trigger.matches({"properties": nest(depth - 1, "x")})
    length = parse_trigger("properties." + ".".join(["a"] * depth) + ".length = 1")
    assert length.matches({"properties": nest(depth, "x")})
    assert length.matches({"properties": nest(depth, ["x"])})
    assert not length.matches({"properties": nest(depth, {"b": 1})})


@pytest.mark.parametrize("connective", ["and", "or"])
def test_thousands_of_conditions(connective: str) -> None:
    """A trigger near Segment's 100,000-character limit still compiles to one function."""
    conditions = [f'properties.k{i} = "v{i}"' for i in range(3000)]
    trigger = parse_trigger(f" {connective} ".join(conditions))
    everything = {"properties": {f"k{i}": f"v{i}" for i in range(3000)}}
    one = {"properties": {"k2999": "v2999"}}
    assert trigger.matches(everything)
    assert trigger.matches(one) is (connective == "or")


def test_an_or_of_equalities_on_one_field() -> None:
    """The set lookup for ``event = "a" or event = "b"`` keeps strict equality."""
    trigger = parse_trigger(" or ".join(f'event = "e{i}"' for i in range(500)))
    assert trigger.matches({"event": "e499"})
    assert not trigger.matches({"event": "e500"})
    assert not trigger.matches({"event": None})
    assert not trigger.matches({})
    assert not parse_trigger('event = "1" or event = "2"').matches({"event": 1})


@pytest.mark.parametrize(
    ("trigger", "event", "expected"),
    [
        # ends_with on half an astral character compares UTF-16 units, as JavaScript does
        ('match(event, "\U0001f600x")', {"event": "a\U0001f600x"}, True),
        ('match(event, "\U0001f600x")', {"event": "ax"}, False),
        ('!match(event, "\U0001f600x")', {"event": "ax"}, True),
        ('match(event, "*\U0001f600")', {"event": "a\U0001f600"}, True),
        ("properties.s.length = 2", {"properties": {"s": "\U0001f600"}}, True),
        ('properties.s.\\1 = "b"', {"properties": {"s": "ab"}}, True),
        ("properties.a.toString != null", {"properties": {"a": 1}}, True),
        ("properties.a.toFixed != null", {"properties": {"a": "1"}}, False),
        ("properties.tags.push != null", {"properties": {"tags": []}}, True),
        ("properties.a.b != null", {"properties": {"a": 0}}, True),  # `0 && 0.b` is 0
        ("properties.a.b = null", {"properties": {"a": False}}, False),
    ],
)
def test_javascript_member_access(trigger: str, event: dict[str, Any], expected: bool) -> None:
    """Segment's ``get`` sees string indices, lengths and prototype members."""
    assert parse_trigger(trigger).matches(event) is expected


def test_expressions_of_several_triggers_share_one_namespace() -> None:
    """``Trigger.expression`` (what ``MappingSet.apply`` writes in): each trigger's constants
    under its own prefix, the shared helpers once; a prefix used twice is refused."""
    first = parse_trigger('event = "a" or event = "b"')
    second = parse_trigger('event = "c" or event = "d"')
    names: dict[str, Any] = {}
    source = (
        "def both(e):\n"
        f"    return ({first.expression(names, '_p0_')}), ({second.expression(names, '_p1_')})\n"
    )
    exec(compile(source, "<test>", "exec"), names)
    both = names["both"]
    for event in ({"event": "a"}, {"event": "d"}, {"event": "x"}, {"event": 1}, {}):
        assert both(event) == (first.matches(event), second.matches(event))
    with pytest.raises(ValueError, match="_p0_0"):
        second.expression(names, "_p0_")
