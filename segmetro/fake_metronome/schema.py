"""What Metronome accepts: request bodies checked against its published OpenAPI schema.

The shape of a body (types, required fields, lengths, batch size) is checked by a JSON Schema
library, ``fastjsonschema``, against the packaged spec itself (``openapi-usage.json``), ``$ref``s
resolved by the library; nothing here copies a limit out of the spec. What a JSON Schema cannot
say is a small explicit function: the RFC 3339 parse, the 34-day/24-hour window around the
server clock and the nesting limit. None of it is shared with segmetro's own mapping or window
code, so the fake checks segmetro instead of agreeing with it.

``fastjsonschema`` compiles each schema to Python once, which keeps ingest well above the
5,000 events/s a real account takes (``jsonschema`` interprets the schema on every call and
costs about ten times as much); it is imported when a fake starts, so ``segmetro --help``
never loads it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import cache, lru_cache
from importlib import resources
from typing import Any, cast

import orjson

__all__ = [
    "FUTURE_WINDOW",
    "INGEST_PATH",
    "MAX_EVENT_DEPTH",
    "PAST_WINDOW",
    "SEARCH_PATH",
    "ingest_problem",
    "openapi_schema",
    "parse_rfc3339",
    "request_validator",
    "response_validator",
    "search_problem",
]

JsonObject = dict[str, Any]

INGEST_PATH = "/v1/ingest"
SEARCH_PATH = "/v1/events/search"

#: Metronome accepts events up to 34 days old and at most 24 hours ahead of its clock.
PAST_WINDOW = timedelta(days=34)
FUTURE_WINDOW = timedelta(hours=24)
#: orjson writes at most 254 nested levels and the state JSON holds events two levels down, so
#: deeper events are refused with 400 rather than breaking ``/_fake/state`` for good.
MAX_EVENT_DEPTH = 252

_DRAFT4 = "http://json-schema.org/draft-04/schema#"
#: One step of a fastjsonschema place name: ``[3]`` or ``.customer_id``.
_STEP_RE = re.compile(r"\[(\d+)\]|\.([^.\[]+)")
_TS_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


# --------------------------------------------------------------------------- the spec


def openapi_schema() -> JsonObject:
    """Metronome's published schema for the usage endpoints, as shipped in the package."""
    return cast(JsonObject, orjson.loads(_schema_bytes()))


@lru_cache(maxsize=1)
def _schema_bytes() -> bytes:
    return resources.files("segmetro").joinpath("openapi-usage.json").read_bytes()


def _pointer(*parts: str) -> str:
    """A JSON pointer (RFC 6901) to ``parts``, e.g. ``/paths/~1v1~1ingest``."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


@dataclass(frozen=True, slots=True)
class SchemaError:
    """The first place a body breaks the schema: where, which rule, the rule's value, the value."""

    path: tuple[str | int, ...]  # e.g. (3, "customer_id"); () is the body itself
    rule: str  # the JSON Schema keyword, e.g. "minLength"
    expected: Any  # the keyword's value in the schema, e.g. 1
    value: Any  # the offending value


#: Checks a parsed body; the first schema error, or None when it conforms.
BodyCheck = Callable[[Any], SchemaError | None]


def request_validator(path: str) -> BodyCheck:
    """The compiled check of the JSON body of a ``POST`` to ``path``."""
    return _validator(
        _pointer("paths", path, "post", "requestBody", "content", "application/json", "schema")
    )


def response_validator(path: str, status: str = "200") -> BodyCheck:
    """The compiled check of the JSON body Metronome answers a ``POST`` to ``path`` with."""
    return _validator(
        _pointer(
            "paths", path, "post", "responses", status, "content", "application/json", "schema"
        )
    )


@cache
def _validator(pointer: str) -> BodyCheck:
    """The check of the schema at ``pointer`` in the spec, compiled to Python once per pointer.

    OpenAPI 3.0 schema objects are JSON Schema draft 4 (Wright-00) plus keywords a draft 4
    validator ignores (``nullable``, ``example``, ``x-...``), so draft 4 it is. The spec itself
    is the root schema, with a ``$ref`` to ``pointer``: draft 4 ignores a ``$ref``'s siblings,
    and the spec's own ``#/components/...`` references resolve in it.
    """
    import fastjsonschema

    root = {**openapi_schema(), "$schema": _DRAFT4, "$ref": f"#{pointer}"}
    validate = fastjsonschema.compile(root, use_default=False, use_formats=False)

    def check(body: Any) -> SchemaError | None:
        try:
            validate(body)
        except fastjsonschema.JsonSchemaValueException as exc:
            return SchemaError(
                _path(exc.name or "data"), exc.rule or "", exc.rule_definition, exc.value
            )
        return None

    return check


def _path(name: str) -> tuple[str | int, ...]:
    """``data[3].customer_id`` (fastjsonschema's name for a place) -> ``(3, "customer_id")``."""
    return tuple(
        int(index) if index else key for index, key in _STEP_RE.findall(name.removeprefix("data"))
    )


def compile_validators() -> None:
    """Build the validators now (when a fake starts) rather than on the first request."""
    request_validator(INGEST_PATH)
    request_validator(SEARCH_PATH)


# --------------------------------------------------------------------------- request bodies


def ingest_problem(body: Any, now: datetime) -> str | None:
    """Why Metronome would refuse this ``/v1/ingest`` body with 400, or None to accept it.

    The first problem in event order wins, whether the schema or an explicit check finds it.
    """
    error = request_validator(INGEST_PATH)(body)
    if error is not None and not error.path:
        return _describe(error, item="event")  # the body itself: not an array, or its size
    events = cast(list[Any], body)
    failing = len(events) if error is None else cast(int, error.path[0])
    for index in range(failing):  # these passed the schema: objects with string timestamps
        problem = _timestamp_problem(events[index]["timestamp"], now)
        if problem is not None:
            return f"invalid event at index {index}: {problem}"
    if error is not None:
        return _describe(error, item="event")
    return _depth_problem(events)


def search_problem(body: Any) -> str | None:
    """Why Metronome would refuse this ``/v1/events/search`` body with 400, or None."""
    error = request_validator(SEARCH_PATH)(body)
    return None if error is None else _describe(error, item=None)


# --------------------------------------------------------------------------- what no schema says


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time (4-digit year, ``Z`` or offset); raise ``ValueError``."""
    m = _TS_RE.fullmatch(text)
    if m is None:
        raise ValueError("is not an RFC 3339 date-time with a 4-digit year and a Z or offset")
    frac = m.group(7)
    micros = int((frac + "000000")[:6]) if frac else 0
    tz: timezone = UTC
    if m.group(8):
        hours, minutes = int(m.group(9)), int(m.group(10))
        if hours > 23 or minutes > 59:
            raise ValueError("has an invalid UTC offset")
        sign = -1 if m.group(8) == "-" else 1
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    try:
        return datetime(y, mo, d, h, mi, s, micros, tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"is not a valid date-time ({exc})") from None


def _timestamp_problem(stamp: str, now: datetime) -> str | None:
    """An RFC 3339 date-time within 34 days before and 24 hours after the server clock."""
    try:
        when = parse_rfc3339(stamp)
    except ValueError as exc:
        return f"'timestamp' {stamp!r} {exc}"
    try:
        too_old = when < now - PAST_WINDOW
        too_new = when > now + FUTURE_WINDOW
    except OverflowError:  # the window reaches past year 1 or 9999
        too_old, too_new = when.year < now.year, when.year > now.year
    if too_old:
        return f"'timestamp' {stamp!r} is more than 34 days in the past"
    if too_new:
        return f"'timestamp' {stamp!r} is more than 24 hours in the future"
    return None


def _depth_problem(events: list[Any]) -> str | None:
    """Events the state JSON (``{"events": [event]}``) could not be written with."""
    if _serialisable([events]):
        return None
    index = next(i for i, event in enumerate(events) if not _serialisable([[event]]))
    return (
        f"invalid event at index {index}: nested too deeply (at most {MAX_EVENT_DEPTH} "
        "levels of objects and arrays, the event included)"
    )


def _serialisable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError, e.g. "Recursion limit reached"
        return False
    return True


# --------------------------------------------------------------------------- messages


def _describe(error: SchemaError, *, item: str | None) -> str:
    """A schema error as a Metronome-style message naming the index and field.

    ``item`` names the elements of a body that is an array (``invalid event at index 3: ...``).
    """
    path = list(error.path)
    prefix = ""
    if item is not None and path:
        prefix = f"invalid {item} at index {path[0]}: "
        path = path[1:]
    keyword, expected, value = error.rule, error.expected, error.value
    where = _subject(path)
    subject = where or "the value"
    body = not error.path
    if keyword == "type":
        wanted = expected if isinstance(expected, str) else " or ".join(expected)
        if body:
            of = f" of {item}s" if item is not None and wanted == "array" else ""
            return f"request body must be a JSON {wanted}{of}, got {_json_type(value)}"
        must = "must" if where is None else f"{where} must"
        return f"{prefix}{must} be {_article(wanted)}, got {_json_type(value)}"
    if keyword == "required":
        missing = next((n for n in expected if n not in value), expected[0])
        return f"{prefix}missing required field '{missing}'"
    if keyword == "minLength":
        return f"{prefix}{subject} must be at least {expected} character(s) long"
    if keyword == "maxLength":
        return f"{prefix}{subject} must be at most {expected} characters long (got {len(value)})"
    if keyword in ("minItems", "maxItems"):
        noun = item if body and item is not None else "item"
        bound, plural = (
            ("at least", f"{noun}(s)") if keyword == "minItems" else ("at most", f"{noun}s")
        )
        owner = "request body" if body else subject
        return f"{prefix}{owner} must contain {bound} {expected} {plural}, got {len(value)}"
    if keyword == "enum":
        return f"{prefix}{subject} must be one of {', '.join(map(repr, expected))}"
    return f"{prefix}{subject} does not satisfy the schema's {keyword!r} rule"


def _subject(path: Sequence[str | int]) -> str | None:
    """``['transactionIds', 3]`` -> ``'transactionIds' item at index 3``; ``[]`` -> None."""
    if not path:
        return None
    *head, last = path
    if isinstance(last, int):
        return f"{_quoted(head)} item at index {last}"
    return _quoted(path)


def _quoted(path: Sequence[str | int]) -> str:
    """``['a', 0, 'b']`` -> ``'a[0].b'``."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    return f"'{text.removeprefix('.')}'" if text else "the value"


def _article(type_name: str) -> str:
    if type_name == "null":
        return type_name
    return f"an {type_name}" if type_name[0] in "aeiou" else f"a {type_name}"


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type; integers and floats are both ``number``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
