"""Segment's mapping-kit, ported: ``validate`` (what Segment refuses to save) and the runtime of
every ``@``-directive (what ``transform()`` of ``@segment/actions-core`` computes).

The source of truth is ``packages/core/src/mapping-kit`` (``index.ts``, ``validate.ts``,
``placeholders.ts``, ``flatten.ts``, ``liquid-directive.ts``) and ``packages/core/src/get.ts`` of
the release named in the README. A mapping value compiles once into ``(payload) -> value``; values
are JavaScript's as :mod:`segmetro.jsvalue` models them (``UNDEFINED``, ``OPAQUE``; an integer
beyond 2**53 is the double ``JSON.parse`` makes of it wherever it is observed). Where Segment's
``transform`` throws, the expression raises :class:`KitThrow` and the event is rejected.

segmetro adds to Segment's syntax only what the README lists: a bare string starting with ``$``
in a value position is a JSONPath (except under ``@literal``), and its own directives
``@coalesce``, ``@hash``, ``@string`` and ``@number``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

import orjson

from segmetro.jsvalue import (
    MAX_SAFE,
    OPAQUE,
    UNDEFINED,
    js_number_string,
    js_string,
    js_truthy,
    step,
    utf16,
)
from segmetro.mapping.values import (
    Codegen,
    ExpressionFailure,
    ObjectExpr,
    coalesce_expr,
    constant,
    generated,
    hash_expr,
    list_expr,
    number_expr,
    string_expr,
)
from segmetro.models import JsonObject

Expr = Callable[[Any], Any]
Path = tuple[str | int, ...]


class KitThrow(ExpressionFailure):
    """Segment's ``transform`` throws here: the event is rejected (``mapping_error``); the
    object keys it passed through name the field (``properties.n``)."""


class KitProblem(Exception):
    """A mapping Segment's ``validate`` refuses: `reason` is Segment's text, `where` the keys
    from the validated value down to the refused place."""

    def __init__(self, reason: str, where: Path) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where


class _Problems(Exception):
    """``AggregateError``: several refusals, flattened."""

    def __init__(self, problems: list[KitProblem]) -> None:
        super().__init__(problems[0].reason)
        self.problems = problems


# --------------------------------------------------------------------------- JavaScript helpers


def real_type(value: Any) -> str:
    """``realTypeOf``: ``Object.prototype.toString`` lower-cased."""
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if value is OPAQUE:
        return "function"
    return "object"


def _type_or_directive(value: Any) -> str:
    if isinstance(value, dict) and any(key.startswith("@") for key in value):
        return "directive"
    return real_type(value)


def is_directive(value: Any) -> bool:
    """Run-time ``isDirective``: an object of ``@`` keys (and ``_metadata``) only."""
    if not isinstance(value, dict) or not any(key.startswith("@") for key in value):
        return False
    return all(key.startswith("@") or key == "_metadata" for key in value)


def _article(name: str) -> str:
    return "an" if name[:1] in "aeiou" else "a"


def js_length(text: str) -> int:
    """``text.length``: UTF-16 code units."""
    if text.isascii():
        return len(text)
    return len(utf16(text)) // 2


_INDEX_KEY: Final = re.compile(r"0|[1-9][0-9]{0,9}")


def js_keys(obj: JsonObject) -> list[str]:
    """``Object.keys`` order: array-index keys ascending, then the others as inserted."""
    keys = list(obj)
    indices = [k for k in keys if _INDEX_KEY.fullmatch(k) and int(k) < 2**32 - 1]
    if not indices:
        return keys
    indices.sort(key=int)
    chosen = set(indices)
    return indices + [k for k in keys if k not in chosen]


def js_parse_number(value: int | float) -> int | float:
    """A number as ``JSON.parse`` holds it: an integer beyond 2**53 becomes its double."""
    if type(value) is int and not -MAX_SAFE <= value <= MAX_SAFE:
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


def json_of_mapping(value: Any) -> Any:
    """A mapping constant as Segment's runtime holds it (its JSON was parsed by JavaScript)."""
    if isinstance(value, dict):
        return {key: json_of_mapping(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_of_mapping(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return js_parse_number(value)
    return value


def js_stringify(value: Any) -> Any:
    """``JSON.stringify(value)``: the text, or UNDEFINED for undefined and functions."""
    if value is UNDEFINED or value is OPAQUE:
        return UNDEFINED
    return "".join(_stringify(value))


def _stringify(value: Any) -> list[str]:
    out: list[str] = []
    _write(value, out)
    return out


def _write(value: Any, out: list[str]) -> None:
    if value is None or value is True or value is False:
        out.append("null" if value is None else "true" if value else "false")
    elif isinstance(value, str):
        out.append(_json_string(value))
    elif isinstance(value, int | float):
        number = float(js_parse_number(value)) if isinstance(value, int) else value
        if isinstance(value, int) and -MAX_SAFE <= value <= MAX_SAFE:
            out.append(str(value))
        elif math.isfinite(number):
            out.append(js_number_string(number))
        else:
            out.append("null")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            if item is UNDEFINED or item is OPAQUE:
                out.append("null")
            else:
                _write(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for key in js_keys(value):
            item = value[key]
            if item is UNDEFINED or item is OPAQUE:
                continue
            if not first:
                out.append(",")
            first = False
            out.append(_json_string(key))
            out.append(":")
            _write(item, out)
        out.append("}")
    else:
        out.append("null")


_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _json_string(text: str) -> str:
    """A JSON string as ``JSON.stringify`` writes it (a lone surrogate as ``\\udXXX``)."""
    quoted = json.dumps(text, ensure_ascii=False)
    if text.isascii():
        return quoted
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", quoted)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(name)


def js_parse(text: str) -> Any:
    """``JSON.parse(text)``; raises ``ValueError`` where JavaScript throws."""
    return json.loads(text, parse_int=_parse_int, parse_constant=_reject_constant)


def _parse_int(digits: str) -> int | float:
    return js_parse_number(int(digits))


def to_output(value: Any) -> Any:
    """What a destination sends: ``removeUndefined`` then ``JSON.stringify``'s view (functions
    and undefined gone from objects, ``null`` in arrays; NaN and infinities ``null``; integers
    beyond 2**53 as doubles)."""
    kind = type(value)
    if kind is dict:
        out = {}
        for key, item in value.items():
            if item is UNDEFINED or item is OPAQUE:
                continue
            out[key] = to_output(item)
        return out
    if kind is list:
        return [None if item is UNDEFINED or item is OPAQUE else to_output(item) for item in value]
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        return js_parse_number(value)
    return value


# --------------------------------------------------------------------------- get.ts

_GET_SPLIT: Final = re.compile(r"\[(?=[\"'0-9])|\.|(?<=[\"'0-9])\]+")
_QUOTES: Final = re.compile(r"['\"]")


def get_keys(path: str) -> tuple[str, ...] | None:
    """The keys Segment's ``get`` walks for `path`; None for ``''`` / ``'.'`` (the whole value)."""
    if path in ("", "."):
        return None
    return tuple(_QUOTES.sub("", part) for part in _GET_SPLIT.split(path) if part)


def walk(value: Any, keys: Sequence[str] | None) -> Any:
    """``get(obj, path)`` over pre-split keys: ``prevObj && prevObj[key]`` for each."""
    if keys is None:
        return value
    for key in keys:
        value = step(value, key)
    return value


def segment_get(value: Any, path: str) -> Any:
    """``get(obj, path)`` of Segment's ``get.ts``."""
    return walk(value, get_keys(path))


def path_text(path: str) -> str:
    """What ``@path`` hands to ``get``: the first ``$.`` removed, wherever it is."""
    return path.replace("$.", "", 1)


# --------------------------------------------------------------------------- placeholders.ts

_TRIPLE: Final = re.compile(r"\{\{\{([^}]+)\}\}\}")
_DOUBLE: Final = re.compile(r"\{\{([^}]+)\}\}")
_JS_SPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def render(template: str, data: Any) -> str:
    """Segment's ``@template``: ``{{{path}}}`` replaced first, then ``{{path}}`` over the result
    (so a value holding ``{{x}}`` is rendered again); no HTML escaping; a null or missing value
    is ``""``, others ``String(value)``."""

    def replace(match: re.Match[str]) -> str:
        return placeholder_text(data, get_keys(match.group(1).strip(_JS_SPACE)))

    return _DOUBLE.sub(replace, _TRIPLE.sub(replace, template))


_CONSTRUCTORS: Final = {
    "object": "Object",
    "string": "String",
    "array": "Array",
    "number": "Number",
    "boolean": "Boolean",
    "function": "Function",
}


def placeholder_text(data: Any, keys: tuple[str, ...] | None) -> str:
    """What one ``{{path}}`` becomes: ``value ?? ''`` as a string (a prototype function prints
    as JavaScript prints it, ``function toString() { [native code] }``)."""
    parent, value = UNDEFINED, data
    for key in keys or ():
        parent, value = value, step(value, key)
    if type(value) is str:
        return value
    if value is None or value is UNDEFINED:
        return ""
    if value is OPAQUE:
        assert keys
        name = keys[-1]
        if name == "constructor":
            name = _CONSTRUCTORS.get(real_type(parent), "Object")
        return f"function {name}() {{ [native code] }}"
    return js_string(value)


# --------------------------------------------------------------------------- @replace


def _canonical(char: str) -> str:
    """Canonicalize of JavaScript's case-insensitive matching without the ``u`` flag: upper
    case of one code unit, unless that is several units or maps a non-ASCII unit to ASCII."""
    if ord(char) > 0xFFFF:
        return char
    upper = char.upper()
    if len(upper) != 1 or ord(upper) > 0xFFFF or (ord(char) >= 128 and ord(upper) < 128):
        return char
    return upper


def _fold(text: str) -> str:
    return "".join(_canonical(char) for char in text)


def _substitute(replacement: str, text: str, start: int, end: int) -> str:
    """``GetSubstitution`` for a pattern without capture groups (``$$ $& $` $'``)."""
    if "$" not in replacement:
        return replacement
    out: list[str] = []
    i = 0
    while i < len(replacement):
        char = replacement[i]
        nxt = replacement[i + 1 : i + 2]
        if char == "$" and nxt in ("$", "&", "`", "'"):
            out.append({"$": "$", "&": text[start:end], "`": text[:start], "'": text[end:]}[nxt])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


MAX_PATTERN_LENGTH: Final = 10
MAX_REPLACEMENT_LENGTH: Final = 10


def perform_replace(
    value: str, pattern: str, replacement: str, *, global_: bool, ignorecase: bool
) -> str:
    """``performReplace``: the escaped pattern matches literally (JavaScript's ``i`` folding)."""
    if js_length(pattern) > MAX_PATTERN_LENGTH:
        raise KitThrow(f'@replace requires a "pattern" less than {MAX_PATTERN_LENGTH} characters')
    if js_length(replacement) > MAX_REPLACEMENT_LENGTH:
        raise KitThrow(
            f'@replace requires a "replacement" less than {MAX_REPLACEMENT_LENGTH} characters'
        )
    haystack, needle = (_fold(value), _fold(pattern)) if ignorecase else (value, pattern)
    out: list[str] = []
    position = 0
    while True:
        found = haystack.find(needle, position)
        if found < 0:
            break
        out.append(value[position:found])
        out.append(_substitute(replacement, value, found, found + len(needle)))
        position = found + len(needle)
        if not global_:
            break
    out.append(value[position:])
    return "".join(out)


# --------------------------------------------------------------------------- flatten.ts


def flatten_object(value: Any, prefix: str, separator: str, ignore_arrays: bool) -> JsonObject:
    """``flattenObject``: nested keys joined by `separator`; a leaf keeps its value."""
    if isinstance(value, dict) or (not ignore_arrays and isinstance(value, list)):
        out: JsonObject = {}
        entries = (
            [(key, value[key]) for key in js_keys(value)]
            if isinstance(value, dict)
            else [(str(i), item) for i, item in enumerate(value)]
        )
        for key, item in entries:
            name = f"{prefix}{separator}{key}" if prefix else key
            out.update(flatten_object(item, name, separator, ignore_arrays))
        return out
    return {prefix: value}


def assign(objects: Sequence[Any]) -> JsonObject:
    """``Object.assign({}, ...objects)``: strings and arrays spread their indices, numbers,
    booleans and null add nothing, undefined values are copied (and dropped at the end)."""
    out: JsonObject = {}
    for item in objects:
        if isinstance(item, dict):
            out.update(item)
        elif isinstance(item, list):
            out.update((str(i), element) for i, element in enumerate(item))
        elif isinstance(item, str):
            if item.isascii():
                out.update((str(i), char) for i, char in enumerate(item))
            else:
                units = utf16(item)
                out.update(
                    (str(i), units[2 * i : 2 * i + 2].decode("utf-16-le", "surrogatepass"))
                    for i in range(len(units) // 2)
                )
    return out


def clean_nulls(value: Any) -> Any:
    """``cleanNulls`` of ``@excludeWhenNull``: null values of objects become undefined."""
    if not isinstance(value, dict):
        return value
    cleaned = dict(value)
    for key, item in value.items():
        if item is None:
            cleaned[key] = UNDEFINED
        elif isinstance(item, dict):
            cleaned[key] = clean_nulls(item)
    return cleaned


def remove_undefined(value: Any) -> Any:
    """``removeUndefined``: undefined object values deleted, recursively (arrays keep them)."""
    if isinstance(value, list):
        return [remove_undefined(item) for item in value]
    if isinstance(value, dict):
        return {key: remove_undefined(item) for key, item in value.items() if item is not UNDEFINED}
    return value


# --------------------------------------------------------------------------- validate.ts


def _fail(message: str, where: Path) -> NoReturn:
    raise KitProblem(message, where)


def _directive_or_raw(value: Any, where: Path) -> None:
    kind = _type_or_directive(value)
    if kind == "directive":
        _validate_directive(value, where)
    elif kind not in ("object", "array", "boolean", "string", "number", "null"):
        _fail(
            f"should be a mapping directive or a JSON value but it is {_article(kind)} {kind}",
            where,
        )


def _directive_or_string(value: Any, where: Path) -> None:
    kind = _type_or_directive(value)
    if kind == "directive":
        _validate_directive(value, where)
    elif kind != "string":
        _fail(f"should be a string or a mapping directive but it is {_article(kind)} {kind}", where)


def _directive_or_object(value: Any, where: Path) -> None:
    kind = _type_or_directive(value)
    if isinstance(value, str) and value.startswith("$"):
        return  # segmetro's JSONPath: a path, as {"@path": ...} would be
    if kind == "directive":
        _validate_directive(value, where)
    elif kind == "object":
        _validate_object(value, where)
    else:
        _fail(f"should be a object or a mapping directive but it is {_article(kind)} {kind}", where)


def _string(value: Any, where: Path) -> None:
    kind = _type_or_directive(value)
    if kind != "string":
        _fail(f"should be a string but it is {_article(kind)} {kind}", where)


def _length(low: int, high: int) -> Callable[[Any, Path], None]:
    def check(value: Any, where: Path) -> None:
        if isinstance(value, str) and js_length(value) < low:
            _fail(f"should be a string of length {low} or greater", where)
        if isinstance(value, str) and js_length(value) > high:
            _fail(f"should be a string of length {high} or less", where)

    return check


def _one_of(*allowed: str) -> Callable[[Any, Path], None]:
    def check(value: Any, where: Path) -> None:
        _string(value, where)
        if value.lower() not in allowed:
            shown = json.dumps(value, ensure_ascii=False)
            _fail(f"should be one of {', '.join(allowed)} but it is {shown}", where)

    return check


def _boolean(value: Any, where: Path) -> None:
    kind = _type_or_directive(value)
    if kind != "boolean":
        _fail(f"should be a boolean but it is {_article(kind)} {kind}", where)


def _array(value: Any, where: Path) -> None:
    kind = real_type(value)
    if kind != "array":
        _fail(f"should be an array but it is {_article(kind)} {kind}", where)


def _chain(*checks: Callable[[Any, Path], None]) -> Callable[[Any, Path], None]:
    def check(value: Any, where: Path) -> None:
        for one in checks:
            one(value, where)

    return check


def _collect(
    problems: list[KitProblem], check: Callable[[Any, Path], None], value: Any, where: Path
) -> None:
    try:
        check(value, where)
    except KitProblem as exc:
        problems.append(exc)
    except _Problems as exc:
        problems.extend(exc.problems)


def _validate_object(value: Any, where: Path) -> None:
    kind = _type_or_directive(value)
    if kind != "object":
        _fail(f"should be an object but it is {_article(kind)} {kind}", where)
    problems: list[KitProblem] = []
    for key in value:
        _collect(problems, validate, value[key], (*where, key))
    if problems:
        raise _Problems(problems)


Check = Callable[[Any, Path], None]


def _fields(
    value: Any, where: Path, required: dict[str, Check], optional: dict[str, Check]
) -> None:
    """``validateObjectWithFields``: an object (every value validated), then its fields."""
    _validate_object(value, where)
    problems: list[KitProblem] = []
    names = [*required, *optional]
    for name in names:
        if name in required:
            if name not in value:
                problems.append(
                    KitProblem(f"should have field {json.dumps(name)} but it doesn't", where)
                )
                continue
            _collect(problems, required[name], value[name], (*where, name))
        elif name in value:
            _collect(problems, optional[name], value[name], (*where, name))
    if problems:
        raise _Problems(problems)


def _v_if(v: Any, where: Path) -> None:
    check: dict[str, Check] = {
        "exists": _directive_or_raw,
        "then": _directive_or_raw,
        "else": _directive_or_raw,
    }
    _fields(v, where, {}, check)


def _v_case(v: Any, where: Path) -> None:
    _fields(v, where, {}, {"operator": _string, "value": _directive_or_string})


def _v_replace(v: Any, where: Path) -> None:
    _fields(
        v,
        where,
        {"pattern": _chain(_string, _length(1, MAX_PATTERN_LENGTH)), "value": _directive_or_string},
        {
            "replacement": _chain(_string, _length(0, MAX_REPLACEMENT_LENGTH)),
            "ignorecase": _boolean,
            "global": _boolean,
        },
    )


def _v_array_path(v: Any, where: Path) -> None:
    _array(v, where)
    _directive_or_string(v[0] if v else UNDEFINED, (*where, 0))
    validate(v[1] if len(v) > 1 else UNDEFINED, (*where, 1))


def _v_json(v: Any, where: Path) -> None:
    _fields(v, where, {"value": _directive_or_raw, "mode": _one_of("encode", "decode")}, {})


def _v_flatten(v: Any, where: Path) -> None:
    _fields(v, where, {"value": _directive_or_raw}, {"separator": _string})


def _v_merge(v: Any, where: Path) -> None:
    _fields(v, where, {"objects": _array}, {"direction": _one_of("left", "right")})
    for i, item in enumerate(v["objects"]):
        _directive_or_object(item, (*where, "objects", i))


def _v_transform(v: Any, where: Path) -> None:
    _fields(v, where, {"apply": _directive_or_object, "mapping": _directive_or_object}, {})


def _v_list(v: Any, where: Path) -> None:
    _array(v, where)
    if not v:
        _fail("should have at least one expression", where)
    for i, item in enumerate(v):
        validate(item, (*where, i))


def _v_list_or_one(v: Any, where: Path) -> None:
    if isinstance(v, list):
        _v_list(v, where)
    else:
        _directive_or_raw(v, where)


#: Segment's validators per directive, then segmetro's own directives.
_VALIDATORS: Final[dict[str, Check]] = {
    "@if": _v_if,
    "@case": _v_case,
    "@replace": _v_replace,
    "@arrayPath": _v_array_path,
    "@path": _directive_or_string,
    "@json": _v_json,
    "@flatten": _v_flatten,
    "@merge": _v_merge,
    "@template": _directive_or_string,
    "@literal": _directive_or_raw,
    "@transform": _v_transform,
    "@excludeWhenNull": _directive_or_raw,
    "@liquid": _string,
    "@coalesce": _v_list,
    "@hash": _v_list_or_one,
    "@string": _directive_or_raw,
    "@number": _directive_or_raw,
}
SEGMENT_DIRECTIVES: Final = tuple(list(_VALIDATORS)[:13])
SEGMETRO_DIRECTIVES: Final = tuple(list(_VALIDATORS)[13:])


def _validate_directive(value: Any, where: Path) -> None:
    if not isinstance(value, dict):
        kind = real_type(value)
        _fail(f"should be a directive object but it is {_article(kind)} {kind}", where)
    keys = list(value)
    names = [key for key in keys if key.startswith("@")]
    if len(names) > 1:
        _fail(f"should only have one @-prefixed key but it has {len(names)} keys", where)
    if any(not key.startswith("@") and key != "_metadata" for key in keys):
        _fail(f"should only have one @-prefixed key but it has {len(keys)} keys", where)
    name = names[0]
    check = _VALIDATORS.get(name)
    if check is None:
        _fail(f"has an invalid directive: {name}", where)
    check(value[name], (*where, name))


def validate(value: Any, where: Path = ()) -> None:
    """mapping-kit's ``validate``; raises :class:`KitProblem` for the first refusal found.

    Like Segment's it does not look inside arrays (a directive there is checked when it runs).
    """
    try:
        kind = _type_or_directive(value)
        if kind == "directive":
            _validate_directive(value, where)
        elif kind == "object":
            _validate_object(value, where)
    except _Problems as exc:
        raise exc.problems[0] from None


# --------------------------------------------------------------------------- transform


def thrower(message: str) -> Expr:
    """An expression on which Segment's ``transform`` always throws."""

    def evaluate(_payload: Any) -> NoReturn:
        raise KitThrow(message)

    return evaluate


def _loosely_empty(value: Any) -> bool:
    """JavaScript ``value == ''`` for a value that is neither null nor undefined."""
    if isinstance(value, str):
        return value == ""
    if value is True or value is False:
        return value is False
    if isinstance(value, int | float):
        return value == 0
    if isinstance(value, list):
        return js_string(value) == ""
    return False


def _typeof(value: Any) -> str:
    kind = real_type(value)
    return "object" if kind in ("array", "null") else kind


class CompileError(Exception):
    """A part of a mapping segmetro cannot compile (an invalid JSONPath), at `where`."""

    def __init__(self, message: str, where: Path) -> None:
        super().__init__(message)
        self.message = message
        self.where = where


def problem_text(problem: KitProblem) -> str:
    """``ValidationError``'s message: ``/path/of/keys reason.``"""
    return f"/{'/'.join(str(key) for key in problem.where)} {problem.reason}."


def get_expr(keys: tuple[str, ...] | None) -> Expr:
    """``get(payload, path)`` over keys split once; plain object lookups first."""

    def emit(gen: Codegen, target: str) -> None:
        _emit_get(gen, target, keys)

    return generated(emit, "get")


def _emit_get(gen: Codegen, target: str, keys: tuple[str, ...] | None) -> None:
    """Statements for ``get(payload, keys)``: subscripts, and `walk` when one fails (a key that
    is absent, a value that is not an object), so JavaScript's lookup rules decide there.

    The last key is looked up with ``dict.get``: when `step` says an object without that key
    yields ``undefined`` (asked of `step` itself, here), an absent last key is MISSING at once,
    without an exception and a second walk (``@if`` of an optional property)."""
    if not keys:
        gen.line(f"{target} = event")
        return
    fallback = f"{target} = {gen.bind(walk, 'walk')}(event, {gen.bind(keys)})"
    parents = "event" + "".join(f"[{gen.literal(key)}]" for key in keys[:-1])
    with gen.block("try:"):
        gen.line(f"{target} = {parents}.get({gen.literal(keys[-1])}, MISSING)")
    with gen.block("except (KeyError, TypeError, IndexError, AttributeError):"):
        gen.line(fallback)
    if step({}, keys[-1]) is not UNDEFINED:
        with gen.block(f"if {target} is MISSING:"):
            gen.line(fallback)


def _template_parts(template: str) -> list[str | tuple[str, ...] | None]:
    """A template without ``{{{``: its text and the keys of each ``{{path}}``, in order."""
    parts: list[str | tuple[str, ...] | None] = []
    position = 0
    for match in _DOUBLE.finditer(template):
        parts.append(template[position : match.start()])
        parts.append(get_keys(match.group(1).strip(_JS_SPACE)))
        position = match.end()
    parts.append(template[position:])
    return parts


def template_expr(template: str) -> Expr:
    """``@template`` of a constant template (see :func:`render`)."""
    if "{{" not in template:
        return constant(template)
    if "{{{" in template:
        return lambda payload: render(template, payload)
    parts = tuple(_template_parts(template))

    def emit(gen: Codegen, target: str) -> None:
        pieces: list[str] = []
        for i, part in enumerate(parts):
            if i % 2 == 0:
                if part:
                    pieces.append(gen.literal(part))
                continue
            keys: tuple[str, ...] | None = part  # type: ignore[assignment]
            var = gen.var("p")
            _emit_get(gen, var, keys)
            with gen.block(f"if type({var}) is not str:"):
                text = f"{gen.bind(placeholder_text, 'text')}(event, {gen.bind(keys)})"
                gen.line(f"{var} = '' if {var} is None or {var} is MISSING else {text}")
            pieces.append(var)
        gen.line(f"{target} = {' + '.join(pieces) or repr('')}")

    return generated(emit, "template")


Directive = Callable[["Compiler", Any, Path, bool], Expr]


class Compiler:
    """Compiles mapping values (JSON) into expressions with ``transform()``'s semantics.

    `jsonpath` compiles segmetro's bare ``$`` strings (raising ``ValueError`` when invalid);
    `nonfinite` becomes true once an expression can yield NaN or an infinity (``@json``), so the
    output check must walk the value.
    """

    def __init__(self, jsonpath: Callable[[str], Expr]) -> None:
        self._jsonpath = jsonpath
        self.nonfinite = False
        #: where bare ``$`` strings were read as JSONPath (``init --from-segment`` wraps them)
        self.paths: list[Path] = []

    def expr(
        self, value: Any, where: Path = (), literal: bool = False, *, root: bool = False
    ) -> Expr:
        """``resolve(mapping, payload)`` of one value; `literal` = under ``@literal``."""
        if isinstance(value, str):
            if not literal and value.startswith("$"):
                self.paths.append(where)
                try:
                    return self._jsonpath(value)
                except ValueError as exc:
                    raise CompileError(str(exc), where) from None
            return constant(value)
        if isinstance(value, list):
            return list_expr(
                [self.expr(item, (*where, i), literal) for i, item in enumerate(value)]
            )
        if isinstance(value, dict):
            if is_directive(value):
                name = next(key for key in value if key.startswith("@"))
                directive = _DIRECTIVES.get(name)
                if directive is None:
                    return thrower(f"{name} is not a valid directive, got undefined")
                return directive(self, value[name], (*where, name), literal)
            return ObjectExpr(
                [(key, self.expr(item, (*where, key), literal)) for key, item in value.items()],
                drop=root,
            )
        return constant(json_of_mapping(value))

    def _optional(self, opts: JsonObject, name: str, where: Path, literal: bool) -> Expr:
        if name not in opts:
            return constant(UNDEFINED)
        return self.expr(opts[name], (*where, name), literal)

    # ------------------------------------------------------------------ directives

    def _if(self, opts: Any, where: Path, literal: bool) -> Expr:
        if not isinstance(opts, dict):
            return thrower('@if requires an object with an "exists" key')
        if not js_truthy(opts.get("exists", UNDEFINED)) and not js_truthy(
            opts.get("blank", UNDEFINED)
        ):
            return thrower('@if requires an "exists" key or a "blank" key')
        blank = "exists" not in opts
        test = "blank" if blank else "exists"
        condition = self.expr(opts[test], (*where, test), literal)
        then = self.expr(opts["then"], (*where, "then"), literal) if "then" in opts else None
        otherwise = None
        if js_truthy(opts.get("else", UNDEFINED)):
            otherwise = self.expr(opts["else"], (*where, "else"), literal)

        def emit(gen: Codegen, target: str) -> None:
            value = gen.var("c")
            gen.value(condition, value)
            test = f"{value} is not MISSING and {value} is not None"
            if blank:
                test += f" and not {gen.bind(_loosely_empty, 'empty')}({value})"
            for header, branch in ((f"if {test}:", then), ("else:", otherwise)):
                with gen.block(header):
                    if branch is None:
                        gen.line(f"{target} = MISSING")
                    else:
                        gen.value(branch, target)

        return generated(emit, "if_")

    def _case(self, opts: Any, where: Path, literal: bool) -> Expr:
        if not isinstance(opts, dict):
            return thrower('@case requires an object with a "operator" key')
        if not js_truthy(opts.get("operator", UNDEFINED)):
            return thrower('@case requires a "operator" key')
        if not js_truthy(opts.get("value", UNDEFINED)):
            return constant(UNDEFINED)
        operator = opts["operator"]
        value = self.expr(opts["value"], (*where, "value"), literal)

        def evaluate(payload: Any) -> Any:
            result = value(payload)
            if isinstance(result, str):
                if operator == "lower" and isinstance(operator, str):
                    return result.lower()
                if operator == "upper" and isinstance(operator, str):
                    return result.upper()
                raise KitThrow('operator key should have a value of "lower" or "upper"')
            return result

        return evaluate

    def _replace(self, opts: Any, where: Path, literal: bool) -> Expr:
        if not isinstance(opts, dict):
            return thrower('@replace requires an object with a "pattern" key')
        if not js_truthy(opts.get("pattern", UNDEFINED)):
            return thrower('@replace requires a "pattern" key')
        pattern = opts["pattern"]
        replacement = opts.get("replacement")
        replacement = "" if replacement is None else replacement
        pattern2 = opts.get("pattern2", UNDEFINED)
        replacement2 = opts.get("replacement2")
        if js_truthy(pattern2) and replacement2 is None:
            replacement2 = ""
        ignorecase = opts.get("ignorecase")
        ignorecase = False if ignorecase is None else ignorecase
        global_ = opts.get("global")
        global_ = True if global_ is None else global_
        if not js_truthy(opts.get("value", UNDEFINED)):
            return constant(UNDEFINED)
        value = self.expr(opts["value"], (*where, "value"), literal)
        usable = (
            isinstance(pattern, str)
            and isinstance(replacement, str)
            and type(ignorecase) is bool
            and type(global_) is bool
        )
        second = js_truthy(pattern2) and isinstance(pattern2, str) and isinstance(replacement2, str)
        flags = {"global_": bool(global_), "ignorecase": bool(ignorecase)}

        def evaluate(payload: Any) -> str:
            result = value(payload)
            if (
                result is True
                or result is False
                or (isinstance(result, int | float) and not isinstance(result, bool))
            ):
                result = js_string(result)
            if not isinstance(result, str) or not usable:
                return ""
            result = perform_replace(result, pattern, replacement, **flags)
            if second:
                result = perform_replace(result, pattern2, str(replacement2), **flags)
            return result

        return evaluate

    def _array_path(self, data: Any, where: Path, literal: bool) -> Expr:
        if not isinstance(data, list):
            return thrower(f"@arrayPath expected array, got {real_type(data)}")
        path = data[0] if data else UNDEFINED
        shape = data[1] if len(data) > 1 else UNDEFINED
        if isinstance(path, str):
            root = get_expr(get_keys(path_text(path)))
        else:
            root = self.expr(path, (*where, 0), literal) if data else constant(UNDEFINED)
        if not (isinstance(shape, dict) and shape):
            return root
        item = self.expr(shape, (*where, 1), literal)

        def evaluate(payload: Any) -> Any:
            found = root(payload)
            if isinstance(found, list):
                return [item(element) for element in found]
            if isinstance(found, dict):
                return [item(found)]
            return found

        return evaluate

    def _string_argument(self, name: str, value: Any, where: Path, literal: bool) -> Expr:
        """``registerStringDirective``: the argument, resolved, must be a string."""
        argument = self.expr(value, where, literal)

        def evaluate(payload: Any) -> str:
            text = argument(payload)
            if not isinstance(text, str):
                raise KitThrow(f"{name}: expected string, got {real_type(text)}")
            return text

        return evaluate

    def _path(self, value: Any, where: Path, literal: bool) -> Expr:
        if isinstance(value, str):
            return get_expr(get_keys(path_text(value)))
        text = self._string_argument("@path", value, where, literal)
        return lambda payload: segment_get(payload, path_text(text(payload)))

    def _template(self, value: Any, where: Path, literal: bool) -> Expr:
        if isinstance(value, str):
            return template_expr(value)
        text = self._string_argument("@template", value, where, literal)
        return lambda payload: render(text(payload), payload)

    def _literal(self, value: Any, where: Path, literal: bool) -> Expr:
        return self.expr(value, where, True)

    def _flatten(self, opts: Any, where: Path, literal: bool) -> Expr:
        if not isinstance(opts, dict):
            return thrower('@flatten requires an object with a "separator" key')
        if not js_truthy(opts.get("separator", UNDEFINED)):
            return thrower('@flatten requires a "separator" key')
        separator = self.expr(opts["separator"], (*where, "separator"), literal)
        value = self._optional(opts, "value", where, literal)
        omit_arrays = js_truthy(opts.get("omitArrays", UNDEFINED))

        def evaluate(payload: Any) -> JsonObject:
            text = separator(payload)
            if not isinstance(text, str):
                raise KitThrow("@flatten requires a string separator")
            return flatten_object(value(payload), "", text, omit_arrays)

        return evaluate

    def _json(self, opts: Any, where: Path, literal: bool) -> Expr:
        if not isinstance(opts, dict):
            return thrower('@json requires an object with a "value" key')
        if not js_truthy(opts.get("mode", UNDEFINED)):
            return thrower('@json requires a "mode" key')
        if not js_truthy(opts.get("value", UNDEFINED)):
            return thrower('@json requires a "value" key')
        value = self.expr(opts["value"], (*where, "value"), literal)
        mode = opts["mode"]
        if mode == "encode" and isinstance(mode, str):
            return lambda payload: js_stringify(value(payload))
        if not (mode == "decode" and isinstance(mode, str)):

            def neither(payload: Any) -> Any:
                value(payload)
                return UNDEFINED

            return neither
        self.nonfinite = True

        def decode(payload: Any) -> Any:
            result = value(payload)
            if isinstance(result, str):
                try:
                    return js_parse(result)
                except (ValueError, RecursionError):
                    return result
            return result

        return decode

    def _merge(self, opts: Any, where: Path, literal: bool) -> Expr:
        if not isinstance(opts, dict):
            return thrower('@merge requires an object with an "objects" key and a "direction" key')
        if not js_truthy(opts.get("direction", UNDEFINED)):
            return thrower('@merge requires a "direction" key')
        direction = self.expr(opts["direction"], (*where, "direction"), literal)
        objects = opts.get("objects", UNDEFINED)
        if not js_truthy(objects) or not isinstance(objects, list):
            message = (
                '@merge requires a "objects" key'
                if not js_truthy(objects)
                else f"@merge: expected opts.array, got {_typeof(objects)}"
            )

            def refuse(payload: Any) -> NoReturn:
                direction(payload)
                raise KitThrow(message)

            return refuse
        items = tuple(
            self.expr(item, (*where, "objects", i), literal) for i, item in enumerate(objects)
        )

        def evaluate(payload: Any) -> JsonObject:
            side = direction(payload)
            values = [item(payload) for item in items]
            if side == "left" and isinstance(side, str):
                values.reverse()
            return assign(values)

        return evaluate

    def _transform(self, opts: Any, where: Path, literal: bool) -> Expr:
        if not isinstance(opts, dict):
            return thrower('@transform requires an object with an "apply" key and a "mapping" key')
        if not js_truthy(opts.get("mapping", UNDEFINED)):
            return thrower('@transform requires a "mapping" key')
        if not js_truthy(opts.get("apply", UNDEFINED)):
            return thrower('@transform requires a "apply" key')
        if not isinstance(opts["apply"], dict):
            return thrower('@transform "apply" key should be an object')
        refused = None
        try:
            validate(opts["apply"])
        except KitProblem as exc:
            refused = problem_text(exc)
        apply = self.expr(opts["apply"], (*where, "apply"), literal)
        mapping = self.expr(opts["mapping"], (*where, "mapping"), literal)

        def evaluate(payload: Any) -> Any:
            kind = real_type(payload)
            if kind != "object":
                raise KitThrow(f"data must be an object, got {kind}")
            if refused is not None:
                raise KitThrow(refused)
            return mapping(remove_undefined(apply(payload)))

        return evaluate

    def _exclude_when_null(self, value: Any, where: Path, literal: bool) -> Expr:
        inner = self.expr(value, where, literal)

        def evaluate(payload: Any) -> Any:
            result = inner(payload)
            return UNDEFINED if result is None else clean_nulls(result)

        return evaluate

    def _liquid(self, value: Any, where: Path, literal: bool) -> Expr:
        from segmetro.mapping.liquid import liquid_expr

        return liquid_expr(value)

    # ------------------------------------------------------------------ segmetro's own

    def _list(self, value: Any, where: Path, literal: bool) -> list[Expr]:
        if isinstance(value, list):
            return [self.expr(item, (*where, i), literal) for i, item in enumerate(value)]
        return [self.expr(value, where, literal)]

    def _coalesce(self, value: Any, where: Path, literal: bool) -> Expr:
        return coalesce_expr(self._list(value, where, literal))

    def _hash(self, value: Any, where: Path, literal: bool) -> Expr:
        return hash_expr(self._list(value, where, literal))

    def _string(self, value: Any, where: Path, literal: bool) -> Expr:
        return string_expr(self.expr(value, where, literal))

    def _number(self, value: Any, where: Path, literal: bool) -> Expr:
        return number_expr(self.expr(value, where, literal))


_DIRECTIVES: Final[dict[str, Directive]] = {
    "@if": Compiler._if,
    "@case": Compiler._case,
    "@replace": Compiler._replace,
    "@arrayPath": Compiler._array_path,
    "@path": Compiler._path,
    "@json": Compiler._json,
    "@flatten": Compiler._flatten,
    "@merge": Compiler._merge,
    "@template": Compiler._template,
    "@literal": Compiler._literal,
    "@transform": Compiler._transform,
    "@excludeWhenNull": Compiler._exclude_when_null,
    "@liquid": Compiler._liquid,
    "@coalesce": Compiler._coalesce,
    "@hash": Compiler._hash,
    "@string": Compiler._string,
    "@number": Compiler._number,
}


def is_plain_json(value: Any) -> bool:
    """Whether `value` is plain JSON whose integers JavaScript holds exactly, so that
    :func:`to_output` would return it unchanged (NaN and infinities aside): ``orjson`` checks
    it in C."""
    try:
        orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER)
    except TypeError:
        return False
    return True


def output_value(value: Any, *, walk: bool = False) -> Any:
    """:func:`to_output` of a field's value, skipped when it is plain JSON already (the common
    case); `walk` forces it (the value can hold NaN)."""
    if not walk and is_plain_json(value):
        return value
    return to_output(value)
