"""JavaScript's view of event values, which Segment applies before comparing or templating.

Segment evaluates triggers and mappings in JavaScript, so a replay must see a value as JavaScript
would: an absent field is ``undefined`` (:data:`UNDEFINED`; ``None`` stands for JSON ``null``),
``String(1.0)`` is ``"1"``, ``0``, ``""`` and ``NaN`` are falsy, ``Number(" 0x10 ")`` is 16, and
every value has prototype members (``"abc".length``, ``{}.constructor``). The trigger evaluator
and the mapping language both take these rules from here, so the two cannot drift apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

__all__ = [
    "MAX_SAFE",
    "OBJECT_MEMBERS",
    "OPAQUE",
    "UNDEFINED",
    "int_to_float",
    "js_number",
    "js_number_string",
    "js_string",
    "js_truthy",
    "member",
    "number_value",
    "step",
    "to_number",
    "utf16",
]


class Undefined:
    """The type of :data:`UNDEFINED`; falsy, a singleton even across pickling.

    Its repr is ``MISSING``, the mapping language's name for it (``segmetro.mapping.MISSING``).
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


class Opaque:
    """The type of :data:`OPAQUE`: a function reached through a prototype."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<js function>"


#: JavaScript ``undefined``: a field that is absent, or an expression that found nothing.
UNDEFINED: Final = Undefined()
#: A JavaScript function reached through a prototype (``properties.constructor``): it exists
#: (``!= null`` holds) but is neither a string, a number nor a boolean.
OPAQUE: Final = Opaque()


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Prototype members as of Node 20: Segment's plain-object lookups see them on every value.
#: Members every object has (``Object.prototype``), plain objects included.
OBJECT_MEMBERS: Final = _names(
    "__defineGetter__ __defineSetter__ __lookupGetter__ __lookupSetter__ __proto__ "
    "constructor hasOwnProperty isPrototypeOf propertyIsEnumerable toLocaleString "
    "toString valueOf"
)
_STRING_MEMBERS: Final = OBJECT_MEMBERS | _names(
    "anchor at big blink bold charAt charCodeAt codePointAt concat endsWith fixed "
    "fontcolor fontsize includes indexOf isWellFormed italics lastIndexOf link "
    "localeCompare match matchAll normalize padEnd padStart repeat replace replaceAll "
    "search slice small split startsWith strike sub substr substring sup "
    "toLocaleLowerCase toLocaleUpperCase toLowerCase toUpperCase toWellFormed trim "
    "trimEnd trimLeft trimRight trimStart"
)
_ARRAY_MEMBERS: Final = OBJECT_MEMBERS | _names(
    "at concat copyWithin entries every fill filter find findIndex findLast findLastIndex "
    "flat flatMap forEach includes indexOf join keys lastIndexOf map pop push reduce "
    "reduceRight reverse shift slice some sort splice toReversed toSorted toSpliced "
    "unshift values with"
)
_NUMBER_MEMBERS: Final = OBJECT_MEMBERS | _names("toExponential toFixed toPrecision")
_FUNCTION_MEMBERS: Final = OBJECT_MEMBERS | _names("apply bind call")

_JS_SPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_DECIMAL_RE: Final = re.compile(
    r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
)
_RADIX_RE: Final = re.compile(r"0(?:[xX]([0-9a-fA-F]+)|[oO]([0-7]+)|[bB]([01]+))")
_INDEX_RE: Final = re.compile(r"0|[1-9][0-9]*")


# --------------------------------------------------------------------------- String(value)


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


#: The largest integer a JavaScript number holds exactly.
MAX_SAFE: Final = 2**53


def js_number(value: int | float) -> str:
    """``String(n)`` as JavaScript writes it: ``1.0`` → ``"1"``, ``1e21`` → ``"1e+21"``.

    An integer read from JSON is the double ``JSON.parse`` makes of it, so one beyond 2**53
    loses digits exactly as it did in Segment's runtime (``12345678901234567891`` →
    ``"12345678901234567000"``).
    """
    if isinstance(value, int):
        if -MAX_SAFE <= value <= MAX_SAFE:
            return str(value)
        return js_number_string(int_to_float(value))
    return js_number_string(value)


def js_string(value: Any) -> str:
    """``String(value)`` in JavaScript, for the values a JSON event can hold."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return js_number(value)
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, list):
        return ",".join(
            "" if item is None or item is UNDEFINED else js_string(item) for item in value
        )
    return "[object Object]"


# --------------------------------------------------------------------------- truthiness, Number()


def js_truthy(value: Any) -> bool:
    """JavaScript truthiness: ``[]`` and ``{}`` are truthy; ``0``, ``NaN`` and ``""`` are not."""
    if value is None or value is UNDEFINED or value is False:
        return False
    if isinstance(value, str):
        return value != ""
    if isinstance(value, int | float) and value is not True:
        return value == value and value != 0
    return True


def int_to_float(value: int) -> float:
    """An integer as JavaScript's ``JSON.parse`` holds it: a double, possibly infinite."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def to_number(value: Any) -> float:
    """JavaScript ``Number(value)`` for a string, number, boolean or null."""
    if value is True:
        return 1.0
    if value is False or value is None:
        return 0.0
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return int_to_float(value)
    if not isinstance(value, str):
        return math.nan
    text = value.strip(_JS_SPACE)
    if not text:
        return 0.0
    if _DECIMAL_RE.fullmatch(text):
        if text.endswith("Infinity"):
            return -math.inf if text.startswith("-") else math.inf
        return float(text)
    radix = _RADIX_RE.fullmatch(text)
    if radix:
        hexa, octal, binary = radix.groups()
        digits, base = (hexa, 16) if hexa else (octal, 8) if octal else (binary, 2)
        return int_to_float(int(digits, base))
    return math.nan


def number_value(value: Any) -> float | None:
    """The value as a double when ``typeof value === 'number'`` (booleans are not), else None."""
    kind = type(value)
    if kind is float:
        return float(value)
    if kind is int:
        return int_to_float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int_to_float(value) if isinstance(value, int) else float(value)


# --------------------------------------------------------------------------- obj[key]


def utf16(text: str) -> bytes:
    """The text as JavaScript holds it: UTF-16 code units (little-endian, lone halves kept)."""
    return text.encode("utf-16-le", "surrogatepass")


def member(obj: Any, key: str) -> Any:
    """``obj[key]`` in JavaScript for a truthy `obj`: own keys, indices, ``length``, prototypes."""
    if isinstance(obj, Mapping):
        value = obj.get(key, UNDEFINED)
        if value is UNDEFINED and key in OBJECT_MEMBERS:
            return OPAQUE
        return value
    if isinstance(obj, str):
        units = utf16(obj)
        if key == "length":
            return len(units) // 2
        if _INDEX_RE.fullmatch(key) and int(key) < len(units) // 2:
            i = int(key) * 2
            return units[i : i + 2].decode("utf-16-le", "surrogatepass")
        return OPAQUE if key in _STRING_MEMBERS else UNDEFINED
    if isinstance(obj, list | tuple):
        if key == "length":
            return len(obj)
        if _INDEX_RE.fullmatch(key) and int(key) < len(obj):
            return obj[int(key)]
        return OPAQUE if key in _ARRAY_MEMBERS else UNDEFINED
    if obj is True:
        return OPAQUE if key in OBJECT_MEMBERS else UNDEFINED
    if isinstance(obj, int | float):
        return OPAQUE if key in _NUMBER_MEMBERS else UNDEFINED
    if obj is OPAQUE:
        return OPAQUE if key in _FUNCTION_MEMBERS else UNDEFINED
    return UNDEFINED


def step(obj: Any, key: str) -> Any:
    """One step of Segment's ``get``: ``obj && obj[key]`` (a falsy value is returned as is)."""
    if type(obj) is dict:
        value = obj.get(key, UNDEFINED)
        # an own property, even one holding undefined (`Object.assign` copies it), hides the
        # prototype's member
        if value is UNDEFINED and key in OBJECT_MEMBERS and key not in obj:
            return OPAQUE
        return value
    if not js_truthy(obj):
        return obj
    return member(obj, key)
