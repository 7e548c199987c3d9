"""Triggers and mappings share one JavaScript value model (``segmetro.jsvalue``), and the
triggers package depends on nothing above it."""

from __future__ import annotations

import ast
import math
import pickle
from pathlib import Path
from typing import Any

import pytest

import segmetro.mapping.values as values
from segmetro import jsvalue
from segmetro.jsvalue import (
    OPAQUE,
    UNDEFINED,
    js_string,
    js_truthy,
    member,
    number_value,
    to_number,
)

PACKAGE = Path(__file__).resolve().parent.parent / "segmetro"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", "a"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (UNDEFINED, "undefined"),
        (1.0, "1"),
        (10**22, "1e+22"),  # the double JSON.parse made of it, as Segment's runtime held it
        (1e21, "1e+21"),
        ([1, None, "a", [2, 3]], "1,,a,2,3"),
        ({"a": 1}, "[object Object]"),
    ],
)
def test_js_string(value: Any, expected: str) -> None:
    """``String(value)``, as both triggers and ``@template`` write values."""
    assert js_string(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (UNDEFINED, False),
        (False, False),
        (0, False),
        (-0.0, False),
        (math.nan, False),
        ("", False),
        (True, True),
        (1, True),
        ("0", True),
        ([], True),
        ({}, True),
        (OPAQUE, True),
    ],
)
def test_js_truthy(value: Any, expected: bool) -> None:
    """JavaScript truthiness: empty containers are truthy, NaN is not."""
    assert js_truthy(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (" 0x10 ", 16.0),
        ("0b101", 5.0),
        ("", 0.0),
        ("-Infinity", -math.inf),
        (None, 0.0),
        (True, 1.0),
        (10**400, math.inf),
    ],
)
def test_to_number(value: Any, expected: float) -> None:
    """``Number(value)``."""
    assert to_number(value) == expected


def test_to_number_of_text_is_nan() -> None:
    """``Number("1e")`` and ``Number("abc")`` are NaN."""
    assert math.isnan(to_number("1e"))
    assert math.isnan(to_number("abc"))


def test_number_value_is_typeof_number() -> None:
    """Booleans and numeric strings are not numbers to ``typeof``."""
    assert number_value(2**53 + 1) == 2.0**53
    assert number_value(True) is None
    assert number_value("1") is None


def test_member_access() -> None:
    """``obj[key]`` for strings (UTF-16), arrays and prototype members."""
    assert member("\U0001f600", "length") == 2
    assert member("ab", "1") == "b"
    assert member("ab", "01") is UNDEFINED
    assert member([1, 2], "length") == 2
    assert member({}, "constructor") is OPAQUE
    assert member(OPAQUE, "call") is OPAQUE
    assert member(1, "toFixed") is OPAQUE


def test_undefined_is_the_mappings_missing_and_survives_pickling() -> None:
    """One ``undefined``: the mapping language's MISSING is the same object, across processes."""
    assert values.MISSING is UNDEFINED
    assert pickle.loads(pickle.dumps(UNDEFINED)) is UNDEFINED
    assert not UNDEFINED


def test_no_copy_of_the_value_model_in_mapping() -> None:
    """mapping/values.py uses jsvalue's functions instead of defining its own."""
    assert values.js_string is jsvalue.js_string
    assert values.js_truthy is jsvalue.js_truthy
    assert values.js_number is jsvalue.js_number
    defined = {
        node.name
        for node in ast.parse((PACKAGE / "mapping" / "values.py").read_text()).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }
    assert not defined & {"js_string", "js_truthy", "js_number", "_Missing"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "segmetro"}


def test_triggers_depend_only_on_errors_and_jsvalue() -> None:
    """No import of the mapping package (lazy or not), so there is no import cycle."""
    for path in sorted((PACKAGE / "triggers").glob("*.py")):
        outside = {m for m in imports(path) if not m.startswith("segmetro.triggers")}
        assert outside <= {"segmetro.errors", "segmetro.jsvalue"}, path.name
    assert imports(PACKAGE / "jsvalue.py") == set()
