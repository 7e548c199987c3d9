"""JavaScript number stringification, shared by triggers and the mapping language."""

from __future__ import annotations

import pytest

from segmetro.jsvalue import js_number_string
from segmetro.mapping.values import js_number


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (6.290973238629629e16, "62909732386296290"),  # shortest digits, then zeros
        (1e21, "1e+21"),
        (123e-20, "1.23e-18"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (-0.0, "0"),
        (1.5, "1.5"),
        (9007199254740994.0, "9007199254740994"),
        (float("inf"), "Infinity"),
        (float("nan"), "NaN"),
    ],
)
def test_js_number_string(value: float, expected: str) -> None:
    """What String(n) gives in JavaScript for the same double."""
    assert js_number_string(value) == expected


def test_integers_and_floats_print_as_javascript_prints_their_double() -> None:
    """Segment's runtime parsed every number into a double: integers past 2**53 lose digits
    exactly as they did there; smaller ones and floats print as ``String(n)``."""
    assert js_number(10**22) == "1e+22"
    assert js_number(12345678901234567891) == "12345678901234567000"
    assert js_number(2**53) == "9007199254740992"
    assert js_number(-(2**53) - 1) == "-9007199254740992"
    assert js_number(6.290973238629629e16) == "62909732386296290"
    assert js_number(3.0) == "3"
