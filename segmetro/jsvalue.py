"""JavaScript's ``String(number)``, which Segment applies before comparing or templating.

Shared by the trigger evaluator and the mapping language so both stringify numbers alike.
"""

from __future__ import annotations

import math
from decimal import Decimal


def js_number_string(value: float) -> str:
    """``String(n)`` for a JavaScript number: shortest round-trip digits, ``1e+21`` style."""
    if value != value:
        return "NaN"
    if value == 0:
        return "0"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    sign = "-" if value < 0 else ""
    parts = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in parts.digits)
    k = len(digits)
    n = int(parts.exponent) + k
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        exponent = f"e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
        text = digits + exponent if k == 1 else digits[0] + "." + digits[1:] + exponent
    return sign + text
