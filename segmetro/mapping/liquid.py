"""``@liquid``: python-liquid configured as Segment configures LiquidJS.

Segment (``liquid-directive.ts``) disables the tags ``case``, ``for``, ``include``, ``layout``,
``render`` and ``tablerow`` and a list of filters, limits a template to 1000 characters, and
returns the rendered text. Values print as JavaScript's ``String()`` would print them (LiquidJS
runs on JavaScript values), and the arithmetic filters compute with JavaScript numbers; the
differences that remain are listed in the README.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Any, Final, NoReturn, TextIO
from urllib.parse import quote

from liquid import Environment
from liquid.builtin.output import Output, OutputNode
from liquid.builtin.tags.echo_tag import EchoNode, EchoTag
from liquid.context import RenderContext
from liquid.exceptions import LiquidError, LiquidSyntaxError
from liquid.stream import TokenStream
from liquid.tag import Tag
from liquid.undefined import Undefined

from segmetro.jsvalue import (
    MAX_SAFE,
    UNDEFINED,
    js_number,
    js_number_string,
    js_string,
    member,
    to_number,
)
from segmetro.mapping.kit import (
    Expr,
    KitThrow,
    js_length,
    js_parse_number,
    js_stringify,
    thrower,
)
from segmetro.mapping.values import constant

#: Segment's ``disabledTags`` and ``disabledFilters``.
DISABLED_TAGS: Final = ("case", "for", "include", "layout", "render", "tablerow")
DISABLED_FILTERS: Final = (
    "array_to_sentence_string",
    "concat",
    "find",
    "find_exp",
    "find_index",
    "find_index_exp",
    "group_by",
    "group_by_exp",
    "has",
    "has_exp",
    "map",
    "newline_to_br",
    "reject",
    "reject_exp",
    "reverse",
    "sort",
    "sort_natural",
    "uniq",
    "where_exp",
    "type",
)
MAX_TEMPLATE: Final = 1000


def js_output(value: Any) -> str:
    """LiquidJS's ``stringify``: arrays joined without a separator, numbers as ``String(n)``."""
    if isinstance(value, str):
        return value
    if value is None or value is UNDEFINED or isinstance(value, Undefined):
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return js_number(value)
    if isinstance(value, list | tuple):
        return "".join(js_output(item) for item in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


class _JsOutputNode(OutputNode):
    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        return buffer.write(js_output(self.expression.evaluate(context)))


class _JsOutput(Output):
    node_class = _JsOutputNode


class _JsEchoNode(EchoNode):
    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        return buffer.write(js_output(self.expression.evaluate(context)))


class _JsEcho(EchoTag):
    node_class = _JsEchoNode


class _UnknownTag(Tag):
    """A tag python-liquid has and LiquidJS does not."""

    block = False

    def parse(self, stream: TokenStream) -> NoReturn:
        raise LiquidSyntaxError(f'tag "{self.name}" not found', token=stream.current)


#: python-liquid's tags that LiquidJS does not know.
_NOT_IN_LIQUIDJS: Final = ("ifchanged", "doc")


class _DisabledTag(Tag):
    """A tag Segment disables: using it fails the template."""

    block = False

    def parse(self, stream: TokenStream) -> NoReturn:
        raise LiquidSyntaxError(f'tag "{self.name}" is disabled', token=stream.current)


def _disabled_filter(name: str) -> Callable[..., NoReturn]:
    def refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise LiquidError(f'filter "{name}" is disabled', token=None)

    return refuse


def _number(value: Any) -> float:
    """LiquidJS's ``toNumber``: ``+value || 0`` (NaN is 0)."""
    if isinstance(value, Undefined):
        return 0.0
    if isinstance(value, list):
        value = js_string(value)
    elif isinstance(value, dict):
        return 0.0
    number = to_number(value)
    return 0.0 if number != number else number


def _numeric(function: Callable[..., float]) -> Callable[..., float]:
    """``argumentsToNumber``: every argument through ``toNumber`` first."""

    def apply(*args: Any) -> float:
        return function(*(_number(arg) for arg in args))

    return apply


def _shift(number: float, exponent: float) -> float:
    """LiquidJS's ``shiftDecimal``: move the decimal point in ``String(n)``'s digits."""
    mantissa, _, power = js_number_string(number).partition("e")
    return float(f"{mantissa}e{int(power or 0) + int(exponent)}")


def _round(value: Any, places: Any = 0) -> float:
    number, digits = _number(value), _number(places)
    scaled = _shift(abs(number), digits)
    if not scaled <= MAX_SAFE - 1:
        return number
    rounded = _shift(float(math.floor(scaled + 0.5)), -digits)
    return -rounded if number < 0 else rounded


def _divide(a: float, b: float, integer: float = 0.0) -> float:
    if b == 0:
        quotient = (
            math.nan if a == 0 or a != a else math.copysign(math.inf, a) * math.copysign(1, b)
        )
    else:
        quotient = a / b
    return float(math.floor(quotient)) if integer and math.isfinite(quotient) else quotient


def _modulo(a: float, b: float) -> float:
    if b == 0 or not math.isfinite(a) or b != b:
        return math.nan
    inner = math.fmod(a, b) + b if math.isfinite(b) else a
    return math.fmod(inner, b) if math.isfinite(b) else a


def _rounding(function: Callable[[float], float]) -> Callable[[float], float]:
    return lambda a: float(function(a)) if math.isfinite(a) else a


_MATH: Final[dict[str, Callable[..., Any]]] = {
    "plus": _numeric(lambda a, b: a + b),
    "minus": _numeric(lambda a, b: a - b),
    "times": _numeric(lambda a, b: a * b),
    "divided_by": _numeric(_divide),
    "modulo": _numeric(_modulo),
    "abs": _numeric(abs),
    "ceil": _numeric(_rounding(math.ceil)),
    "floor": _numeric(_rounding(math.floor)),
    "round": _round,
    "at_least": _numeric(max),
    "at_most": _numeric(min),
}


def _first(value: Any) -> Any:
    """LiquidJS's ``first``: the first element of an array or a string (array-like), else ''."""
    if isinstance(value, list):
        return value[0] if value else UNDEFINED
    if isinstance(value, str):
        return member(value, "0")
    return ""


def _last(value: Any) -> Any:
    if isinstance(value, list):
        return value[-1] if value else UNDEFINED
    if isinstance(value, str):
        return member(value, str(js_length(value) - 1))
    return ""


def _truncate(value: Any, length: Any = 50, ellipsis: Any = "...") -> Any:
    """LiquidJS's ``truncate``: the value itself when it fits (counted in code points)."""
    text, tail = js_output(value), js_output(ellipsis)
    size = _number(length)
    if len(text) <= size:
        return value
    return text[: max(int(size) - len(tail), 0)] + tail


def _join(value: Any, separator: Any = None) -> str:
    """LiquidJS's ``join``: ``Array.prototype.join`` (null items are empty), ' ' by default."""
    items = value if isinstance(value, list) else [] if value is None else [value]
    glue = " " if separator is None or isinstance(separator, Undefined) else js_output(separator)
    return glue.join(
        "" if item is None or isinstance(item, Undefined) else js_string(item) for item in items
    )


def _size(value: Any) -> int:
    """LiquidJS's ``size``: the length of a string (UTF-16 units) or an array, else 0."""
    if isinstance(value, str):
        return js_length(value)
    return len(value) if isinstance(value, list) else 0


def _sum(value: Any, prop: Any = None) -> float:
    items = value if isinstance(value, list) else [] if value is None else [value]
    if prop is not None and not isinstance(prop, Undefined):
        items = [item.get(js_output(prop)) if isinstance(item, dict) else None for item in items]
    return float(sum(_number(item) for item in items))


def _remove_last(value: Any, pattern: Any) -> str:
    return _replace_last(value, pattern, "")


def _replace_last(value: Any, pattern: Any, replacement: Any) -> str:
    """LiquidJS's ``replace_last``: the last occurrence of the text replaced."""
    text, old = js_output(value), js_output(pattern)
    index = text.rfind(old)
    if index < 0:
        return text
    return text[:index] + js_output(replacement) + text[index + len(old) :]


def _json(value: Any, space: Any = 0) -> Any:
    """LiquidJS's ``json``: ``JSON.stringify`` (undefined prints nothing)."""
    if isinstance(value, Undefined):
        return UNDEFINED
    return js_stringify(value)


_DIGITS: Final = re.compile(r"[0-9]+")


def _parse_date(value: Any) -> dt.datetime | None:
    """LiquidJS's ``parseDate`` (in UTC): numbers and digit strings are epoch seconds, other
    strings ISO 8601 (a form without an offset is UTC); None when it is not a date."""
    if isinstance(value, bool) or value is None or isinstance(value, Undefined):
        return None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, int | float):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _date(value: Any, fmt: Any = None) -> Any:
    """LiquidJS's ``date``: the value itself when it is not a date; ``%s`` is epoch seconds."""
    moment = _parse_date(value)
    if moment is None:
        return value
    text = (
        js_output(fmt)
        if fmt is not None and not isinstance(fmt, Undefined)
        else "%A, %B %-e, %Y at %-l:%M %P %z"
    )
    epoch = str(int(moment.timestamp()))
    return moment.strftime(text.replace("%s", epoch))


def _url_encode(value: Any) -> str:
    """LiquidJS's ``url_encode``: ``encodeURIComponent``, spaces as ``+``."""
    return quote(js_output(value), safe="-_.!~*'()").replace("%20", "+")


def _environment() -> Environment:
    env = Environment(strict_filters=False)
    env.tags["output"] = _JsOutput(env)
    env.tags["echo"] = _JsEcho(env)
    for name in _NOT_IN_LIQUIDJS:
        unknown = _UnknownTag(env)
        unknown.name = name
        env.tags[name] = unknown
    for name in DISABLED_TAGS:
        tag = _DisabledTag(env)
        tag.name = name
        env.tags[name] = tag
    env.filters.update(_MATH)
    env.filters.update(
        {
            "first": _first,
            "last": _last,
            "truncate": _truncate,
            "json": _json,
            "remove_last": _remove_last,
            "replace_last": _replace_last,
            "join": _join,
            "size": _size,
            "sum": _sum,
            "append": lambda value, tail: js_output(value) + js_output(tail),
            "prepend": lambda value, head: js_output(head) + js_output(value),
            "date": _date,
            "url_encode": _url_encode,
        }
    )
    for name in DISABLED_FILTERS:
        env.filters[name] = _disabled_filter(name)
    return env


_ENV: Environment | None = None


def _env() -> Environment:
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV


def _data(value: Any) -> Any:
    """The payload as LiquidJS sees it: JavaScript numbers, no undefined values."""
    if isinstance(value, dict):
        return {key: _data(item) for key, item in value.items() if item is not UNDEFINED}
    if isinstance(value, list):
        return [None if item is UNDEFINED else _data(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return js_parse_number(value)
    return value


#: ``x.empty`` / ``x.blank`` are member names to LiquidJS, keywords to python-liquid: written
#: as ``x["empty"]`` before parsing.
_KEYWORD_MEMBER: Final = re.compile(r"(?<=[A-Za-z0-9_\]])\.(empty|blank)(?![A-Za-z0-9_-])")


def _message(exc: Exception) -> str:
    """An engine error's own message, without python-liquid's source excerpt."""
    return str(exc.args[0]) if exc.args else type(exc).__name__


def liquid_expr(template: Any) -> Expr:
    """``evaluateLiquid``: the template compiled once; a failure rejects the event."""
    if not isinstance(template, str):
        return thrower("liquid template value must be a string")
    if not template:
        return constant("")
    if js_length(template) > MAX_TEMPLATE:
        return thrower("liquid template values are limited to 1000 characters")
    try:
        compiled = _env().from_string(_KEYWORD_MEMBER.sub(r'["\1"]', template))
    except LiquidError as exc:
        return thrower(_message(exc))

    def evaluate(payload: Any) -> str:
        data = _data(payload)
        try:
            return compiled.render(**data) if isinstance(data, dict) else compiled.render()
        except (LiquidError, ArithmeticError, TypeError, ValueError) as exc:
            raise KitThrow(_message(exc)) from None

    return evaluate
