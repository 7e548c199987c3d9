"""The JSONPath fast path (plain dict/list lookups) must return exactly what jsonpath-ng returns."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from segmetro.mapping.values import (
    MISSING,
    _parse_jsonpath,
    jsonpath_expr,
    reference_jsonpath,
    simple_steps,
)

KEYS = ["a", "b", "c_1", "len", "id", "0", "1", "x y", "it's", "-"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "abc", "0", "a"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    ),
    max_leaves=25,
)
events = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)
steps = st.lists(st.one_of(st.sampled_from(KEYS), st.integers(-4, 4)), min_size=0, max_size=5)


def render(path_steps: list[str | int], *, dotted: bool) -> str:
    """A JSONPath for the steps: `.name` where possible (or always `['name']`), `[i]` indices."""
    out = "$"
    for step in path_steps:
        if isinstance(step, int):
            out += f"[{step}]"
        elif dotted and step.replace("_", "").isalpha():
            out += f".{step}"
        elif "'" in step:
            out += f'["{step}"]'
        else:
            out += f"['{step}']"
    return out


@settings(max_examples=400, deadline=None)
@given(event=events, path_steps=steps, dotted=st.booleans())
def test_fast_path_matches_jsonpath_ng(
    event: dict[str, Any], path_steps: list[str | int], dotted: bool
) -> None:
    path = render(path_steps, dotted=dotted)
    assert simple_steps(_parse_jsonpath(path)) == path_steps  # the fast path is taken
    got = jsonpath_expr(path)(event)
    expected = reference_jsonpath(path)(event)
    assert got is expected or (got is MISSING and expected is MISSING)


@settings(max_examples=100, deadline=None)
@given(event=events, path_steps=st.lists(st.sampled_from(KEYS), min_size=1, max_size=5))
def test_fast_path_finds_planted_values(event: dict[str, Any], path_steps: list[str]) -> None:
    """Not only MISSING agrees: plant a value at the path and both find the same object."""
    planted: dict[str, Any] = {"planted": True}
    node: Any = planted
    for key in reversed(path_steps):
        node = {key: node}
    merged = {**event, **node}
    path = render(list(path_steps), dotted=True)
    got = jsonpath_expr(path)(merged)
    assert got is reference_jsonpath(path)(merged)
    assert got is planted


def test_paths_that_are_not_simple_use_jsonpath_ng() -> None:
    for path in ("$.a[*]", "$..a", "$.a[0:2]", "$['a','b']", "$.a[?(@.b > 1)]", "$.*"):
        assert simple_steps(_parse_jsonpath(path)) is None
    event = {"a": [{"b": 1}, {"b": 2}], "x": {"a": 3}}
    assert jsonpath_expr("$..a")(event) == [[{"b": 1}, {"b": 2}], 3]
    assert jsonpath_expr("$.a[?(@.b > 1)]")(event) == [{"b": 2}]
    assert jsonpath_expr("$.x.`len`")(event) == 1  # single-valued: the value itself
    assert jsonpath_expr("$.nope.`len`")(event) is MISSING
