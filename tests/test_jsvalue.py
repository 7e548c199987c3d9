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


def test_mapping_keeps_integers_exact_and_floats_as_javascript() -> None:
    """Integers keep every digit (the sender meant them); floats read as JavaScript writes them."""
    assert js_number(10**22) == "10000000000000000000000"
    assert js_number(6.290973238629629e16) == "62909732386296290"
    assert js_number(3.0) == "3"
