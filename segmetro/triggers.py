"""Segment destination-subscription triggers, evaluated exactly as Segment evaluates them.

Segment's actions runtime parses a trigger with ``parseFql``
(``@segment/destination-subscriptions``, lexer ``@segment/fql-ts``) and tests every event with
``validate``. Both are small and quirky: unknown tokens are skipped, mixed ``and``/``or`` use the
last connective, comparisons are strictly typed, single quotes stay part of the value. A replay
must send exactly what the live destination would have sent, so this module reproduces those
quirks on purpose instead of "fixing" them.

Differences, all deliberate:

* where Segment would silently produce a subscription that matches nothing (a parse error) or
  one whose evaluation crashes (an empty group, a path with no name), :func:`parse_trigger`
  raises :class:`~segmetro.errors.TriggerError` with the position, so nobody replays into a void;
* :func:`lint_trigger` names every place where Segment's reading differs from what the text
  seems to say.

A parsed :class:`Trigger` is a tree of closures built once; field paths are split at parse time.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from segmetro.errors import TriggerError
from segmetro.jsvalue import js_number_string

__all__ = ["Trigger", "TriggerWarning", "lint_trigger", "parse_trigger"]

Predicate = Callable[[Mapping[str, Any]], bool]
_Test = Callable[[Any], bool]


# --------------------------------------------------------------------------------------------
# JavaScript value model
# --------------------------------------------------------------------------------------------


class _Undefined:
    """JavaScript ``undefined``: a field that is absent (``None`` stands for JSON ``null``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "undefined"


class _Opaque:
    """A JavaScript function/object reached through a prototype (``properties.constructor``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<js function>"


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_MISSING: Final = _Undefined()
_OPAQUE: Final = _Opaque()

# Prototype members as of Node 20: Segment's plain-object lookups see them on every value.
_OBJECT_PROTO: Final = _names(
    "__defineGetter__ __defineSetter__ __lookupGetter__ __lookupSetter__ __proto__ "
    "constructor hasOwnProperty isPrototypeOf propertyIsEnumerable toLocaleString "
    "toString valueOf"
)
_STRING_PROTO: Final = _OBJECT_PROTO | _names(
    "anchor at big blink bold charAt charCodeAt codePointAt concat endsWith fixed "
    "fontcolor fontsize includes indexOf isWellFormed italics lastIndexOf link "
    "localeCompare match matchAll normalize padEnd padStart repeat replace replaceAll "
    "search slice small split startsWith strike sub substr substring sup "
    "toLocaleLowerCase toLocaleUpperCase toLowerCase toUpperCase toWellFormed trim "
    "trimEnd trimLeft trimRight trimStart"
)
_ARRAY_PROTO: Final = _OBJECT_PROTO | _names(
    "at concat copyWithin entries every fill filter find findIndex findLast findLastIndex "
    "flat flatMap forEach includes indexOf join keys lastIndexOf map pop push reduce "
    "reduceRight reverse shift slice some sort splice toReversed toSorted toSpliced "
    "unshift values with"
)
_NUMBER_PROTO: Final = _OBJECT_PROTO | _names("toExponential toFixed toPrecision")
_FUNCTION_PROTO: Final = _OBJECT_PROTO | _names("apply bind call")

_JS_SPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_DECIMAL_RE: Final = re.compile(
    r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
)
_RADIX_RE: Final = re.compile(r"0(?:[xX]([0-9a-fA-F]+)|[oO]([0-7]+)|[bB]([01]+))")
_INDEX_RE: Final = re.compile(r"0|[1-9][0-9]*")
_PATH_RE: Final = re.compile(r"[^\[.\]]+")


def _js_to_number(value: Any) -> float:
    """JavaScript ``Number(value)`` for the values a trigger can hold."""
    if value is True:
        return 1.0
    if value is False or value is None:
        return 0.0
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return _int_to_float(value)
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
        return _int_to_float(int(digits, base))
    return math.nan


def _int_to_float(value: int) -> float:
    """An integer as JavaScript's JSON.parse would hold it (a double, possibly infinite)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _js_string(value: Any) -> str:
    """JavaScript ``String(value)`` for trigger operands (strings, numbers, booleans)."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return js_number_string(float(value))
    return str(value)


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


def _js_falsy(value: Any) -> bool:
    if value is None or value is _MISSING or value is False:
        return True
    kind = type(value)
    if kind is str:
        return not value
    if kind is int or kind is float:
        return not value or value != value
    return False


def _js_member(obj: Any, key: str) -> Any:
    """``obj[key]`` in JavaScript, for a truthy ``obj`` (Segment's ``get`` walks this way)."""
    if isinstance(obj, Mapping):
        value = obj.get(key, _MISSING)
        if value is _MISSING and key in _OBJECT_PROTO:
            return _OPAQUE
        return value
    if isinstance(obj, str):
        units = _utf16(obj)
        if key == "length":
            return len(units) // 2
        if _INDEX_RE.fullmatch(key) and int(key) < len(units) // 2:
            i = int(key) * 2
            return units[i : i + 2].decode("utf-16-le", "surrogatepass")
        return _OPAQUE if key in _STRING_PROTO else _MISSING
    if isinstance(obj, list | tuple):
        if key == "length":
            return len(obj)
        if _INDEX_RE.fullmatch(key) and int(key) < len(obj):
            return obj[int(key)]
        return _OPAQUE if key in _ARRAY_PROTO else _MISSING
    if obj is True:
        return _OPAQUE if key in _OBJECT_PROTO else _MISSING
    if isinstance(obj, int | float):
        return _OPAQUE if key in _NUMBER_PROTO else _MISSING
    if obj is _OPAQUE:
        return _OPAQUE if key in _FUNCTION_PROTO else _MISSING
    return _MISSING


def _walk(obj: Any, keys: tuple[str, ...]) -> Any:
    """Segment's ``get``: ``keys.reduce((o, k) => o && o[k], obj)``, falsy values included."""
    for key in keys:
        if type(obj) is dict:
            value = obj.get(key, _MISSING)
            obj = _OPAQUE if value is _MISSING and key in _OBJECT_PROTO else value
        elif _js_falsy(obj):
            return obj
        else:
            obj = _js_member(obj, key)
    return obj


def _as_number(value: Any) -> float | None:
    """The event value as a JS number when ``typeof value === 'number'``, else None."""
    kind = type(value)
    if kind is float:
        return float(value)
    if kind is int:
        return _int_to_float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return _int_to_float(value) if isinstance(value, int) else float(value)


# --------------------------------------------------------------------------------------------
# Lexer (a port of @segment/fql-ts 1.10.1, positions added)
# --------------------------------------------------------------------------------------------

_MAX_LENGTH: Final = 100_000
_FAIL: Final = ": Segment cannot parse this trigger and would match no events"


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # ident dot operator conditional string number null brackleft brackright
    # parenleft parenright comma eos
    value: str
    start: int
    end: int


def _is_alpha(c: str | None) -> bool:
    return c is not None and ("a" <= c <= "z" or "A" <= c <= "Z")


def _is_digit(c: str | None) -> bool:
    return c is not None and "0" <= c <= "9"


def _is_ident(c: str | None) -> bool:
    return c is not None and (_is_alpha(c) or _is_digit(c) or c in "_-\\")


def _is_terminator(c: str | None) -> bool:
    return c is None or c in " \t\n,])"


_PUNCTUATION: Final = {
    ".": "dot",
    "[": "brackleft",
    "]": "brackright",
    ",": "comma",
    "(": "parenleft",
    ")": "parenright",
}


class _Lexer:
    """fql-ts's lexer, step for step: its backtracking quirks decide what a trigger means."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        #: closing quotes the lexer left unread (not followed by a terminator): quote → next char
        self.dangling: dict[int, int] = {}

    def fail(self, message: str, position: int) -> TriggerError:
        return TriggerError(message + _FAIL, trigger=self.text, position=position)

    def next(self) -> str | None:
        if self.pos >= len(self.text):
            return None
        c = self.text[self.pos]
        self.pos += 1
        return c

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def backup(self, count: int) -> None:
        self.pos = max(0, self.pos - count)

    def accept(self, expected: str) -> bool:
        """fql-ts ``accept``: note it does not back up when it runs into the end of the text."""
        chars = ""
        for _ in expected:
            c = self.next()
            if c is None:
                return False
            chars += c
            if _is_terminator(c):
                break
        if chars == expected and _is_terminator(self.peek()):
            return True
        self.backup(len(chars))
        return False

    def lex(self) -> list[_Tok]:
        tokens: list[_Tok] = []
        while True:
            start = self.pos
            c = self.next()
            if c is None:
                tokens.append(_Tok("eos", "eos", start, start))
                return tokens
            if c in " \t\n":
                continue
            if c == "!":
                after = self.peek()
                if _is_alpha(after) or after == "(":
                    tokens.append(_Tok("operator", "!", start, self.pos))
                    continue
            if _is_alpha(c) or c in "!=<>\\_":
                kind, value = self.operator_or_conditional(c, start)
            elif _is_digit(c) or c in "-+":
                kind, value = "number", self.number(c)
            elif c in "\"'":
                kind, value = "string", self.string(c, start)
            elif c in _PUNCTUATION:
                kind, value = _PUNCTUATION[c], c
            else:
                raise self.invalid_character(c, start)
            end = self.pos
            if kind == "string":
                end = start + len(value)  # the closing quote, even when left unread
            tokens.append(_Tok(kind, value, start, end))

    def invalid_character(self, c: str, position: int) -> TriggerError:
        if c == "\r":
            what = "carriage return ('\\r') is not allowed (Windows line ending?)"
        elif c in "&|":
            what = f"invalid character {c!r} (the connectives are lower-case 'and' and 'or')"
        else:
            what = f"invalid character {c!r}"
        return self.fail(what, position)

    def string(self, quote: str, start: int) -> str:
        units = 0
        while self.peek() != quote:
            c = self.next()
            if c is None:
                raise self.unterminated(start)
            units += 2 if ord(c) > 0xFFFF else 1
            if units >= _MAX_LENGTH:
                raise self.fail("string longer than 100000 characters", start)
        body = self.text[start + 1 : self.pos]
        closing = self.pos
        if not self.accept(quote):
            self.dangling[closing] = closing + 1
        return quote + body + quote

    def unterminated(self, start: int) -> TriggerError:
        after = self.dangling.get(start)
        if after is not None:
            c = self.text[after]
            shown = "'\\r' (carriage return)" if c == "\r" else repr(c)
            what = (
                f"{shown} right after a closing quote: Segment needs a space, ',' or ')' after a "
                "string, so it reads that quote as the start of a new string that never ends"
            )
            return self.fail(what, after)
        return self.fail("unterminated string", start)

    def number(self, first: str) -> str:
        start = self.pos
        decimal = False
        coming = self.peek()
        while _is_digit(coming) or coming == ".":
            self.next()
            if coming == ".":
                if _is_terminator(self.peek()):
                    raise self.fail("a number cannot end with '.'", self.pos - 1)
                if decimal:
                    raise self.fail("a number cannot have two '.'", self.pos - 1)
                decimal = True
            if self.pos - start >= _MAX_LENGTH:
                raise self.fail("number longer than 100000 characters", start - 1)
            coming = self.peek()
        return first + self.text[start : self.pos]

    def operator_or_conditional(self, first: str, start: int) -> tuple[str, str]:
        if first == "=":
            return "operator", "="
        if first == "!":
            if self.accept("="):
                return "operator", "!="
            after = self.peek()
            if after == "=":
                what = "'!=' must be followed by a space, ',' or ')'"
            else:
                what = "'!' must be followed by '=', by contains(...)/match(...) or by a name"
            raise self.fail(what, start)
        if first in "<>":
            return "operator", first + "=" if self.accept("=") else first
        keyword = {"a": ("conditional", "nd"), "o": ("conditional", "r"), "n": ("null", "ull")}
        if first in keyword:
            kind, rest = keyword[first]
            if self.accept(rest):
                return kind, first + rest
        return "ident", self.ident(first, start)

    def ident(self, first: str, start: int) -> str:
        out: list[str] = []
        units = 0
        c = first
        while True:
            if c == "\\":
                if self.peek() is None:
                    raise self.fail("'\\' at the end of the trigger escapes nothing", self.pos - 1)
                c = self.next() or ""
                if ord(c) > 0xFFFF:
                    # JavaScript escapes only the first UTF-16 half of this character.
                    raise self.fail(
                        f"{c!r} cannot be escaped in a name (it is two UTF-16 units)",
                        self.pos - 1,
                    )
            out.append(c)
            units += 2 if ord(c) > 0xFFFF else 1
            if units >= _MAX_LENGTH:
                raise self.fail("name longer than 100000 characters", start)
            if not _is_ident(self.peek()):
                break
            c = self.next() or ""
        coming = self.peek()
        if not (coming is None or _is_terminator(coming) or coming in ".(=!"):
            name = "".join(out)
            what = (
                f"{coming!r} cannot follow the name {name!r} (a name must be followed by a "
                "space, ',', ')', '.', '(', '=' or '!')"
            )
            if coming == "\r":
                what = f"carriage return ('\\r') after the name {name!r} is not allowed"
            raise self.fail(what, self.pos)
        return "".join(out)


def _normalize(tokens: list[_Tok]) -> list[_Tok]:
    """parseFql's ``normalize``: ``ident . ident`` becomes one dotted identifier."""
    out: list[_Tok] = []
    i = 0
    while i < len(tokens):
        current = tokens[i]
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if (
            out
            and out[-1].kind == "ident"
            and current.kind == "dot"
            and after is not None
            and after.kind == "ident"
        ):
            previous = out.pop()
            merged = previous.value + "." + after.value
            out.append(_Tok("ident", merged, previous.start, after.end))
            i += 2
            continue
        out.append(current)
        i += 1
    return out


# --------------------------------------------------------------------------------------------
# Parser (parseFql's algorithm) to a small IR, with lint notes
# --------------------------------------------------------------------------------------------

_ROOTS: Final = frozenset({"type", "event", "name", "userId", "properties", "traits", "context"})
_OBJECT_ROOTS: Final = ("properties", "traits", "context")
_FQL_OPERATORS: Final = frozenset({"=", "!=", "<", "<=", ">", ">="})
_IR_OPERATORS: Final = frozenset(
    {
        "=",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "number_equals",
        "number_not_equals",
        "contains",
        "not_contains",
        "starts_with",
        "not_starts_with",
        "ends_with",
        "not_ends_with",
        "exists",
        "not_exists",
        "is_true",
        "is_false",
    }
)
_NUMERIC: Final = frozenset({"<", "<=", ">", ">=", "number_equals", "number_not_equals"})
_FIELD_LIST: Final = "type, event, name, userId, properties.*, traits.*, context.*"


@dataclass(slots=True)
class _Cond:
    root: str
    path: str  # for properties/traits/context, as Segment passes it to ``get``
    op: str
    value: Any  # str | float | bool; _MISSING for exists-style operators
    field_text: str
    start: int
    end: int


@dataclass(slots=True)
class _Group:
    connective: str
    children: list[_Cond | _Group]
    start: int
    end: int


_Node = _Cond | _Group


def _token_value(tok: _Tok) -> str | float | bool:
    """parseFql's ``getTokenValue``: only double quotes are stripped."""
    if tok.kind == "string":
        value = tok.value[1:] if tok.value.startswith('"') else tok.value
        return value[:-1] if value.endswith('"') else value
    if tok.kind == "number":
        return _js_to_number(tok.value)
    if tok.kind == "ident" and tok.value in ("true", "false"):
        return tok.value == "true"
    return tok.value


def _strip_root(value: str, root: str) -> str:
    prefix = root + "."
    return value[len(prefix) :] if value.startswith(prefix) else value


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.notes: list[tuple[int, str]] = []
        self.first_drop: tuple[int, str] | None = None
        #: identifiers glued to a number ('e3' in '1e3'): already explained, not "unknown"
        self.number_tails: set[int] = set()

    def note(self, position: int, message: str) -> None:
        self.notes.append((position, message))

    def fail(self, message: str, position: int, *, crash: bool = False) -> TriggerError:
        suffix = (
            ": Segment's evaluator fails on this trigger instead of matching events"
            if crash
            else _FAIL
        )
        return TriggerError(message + suffix, trigger=self.text, position=position)

    def snippet(self, start: int, end: int) -> str:
        return " ".join(self.text[start:end].split())

    def parse(self) -> _Node:
        if not self.text.strip(" \t\n"):
            raise TriggerError(
                "the trigger is empty: Segment cannot parse an empty trigger and would match "
                "no events",
                trigger=self.text,
                position=0,
            )
        lexer = _Lexer(self.text)
        raw = lexer.lex()
        self.lint_tokens(raw)
        tokens = _normalize(raw)
        node = self.group(tokens, None, None)
        if node is None:
            first = tokens[0]
            head = first.value.split(".")[0]
            reason = "no condition Segment understands"
            if first.kind == "ident" and head.lower() not in ("and", "or", "not"):
                reason = f"{head!r} is not a field Segment triggers can test ({_FIELD_LIST})"
            position, reason = self.first_drop or (first.start, reason)
            raise self.fail(reason, position)
        return node

    def drop(self, position: int, reason: str) -> None:
        if self.first_drop is None:
            self.first_drop = (position, reason)

    def lint_tokens(self, tokens: list[_Tok]) -> None:
        for tok, after in itertools.pairwise(tokens):
            if tok.kind == "string" and tok.value.startswith("'"):
                self.note(
                    tok.start,
                    f"single-quoted value {tok.value}: Segment keeps the quotes, so it compares "
                    f"with the text {tok.value} including the quote marks; use double quotes",
                )
            if tok.kind == "number" and after.kind == "ident" and after.start == tok.end:
                self.number_tails.add(after.start)
                number = _js_string(_js_to_number(tok.value))
                self.note(
                    tok.start,
                    f"Segment reads '{tok.value}{after.value}' as the number {number} followed "
                    f"by '{after.value}', which it skips: the comparison uses {number}",
                )

    def group(self, tokens: list[_Tok], opener: _Tok | None, closer: _Tok | None) -> _Node | None:
        nodes: list[_Node] = []
        connective = "and"
        connectives: list[_Tok] = []
        skipped: list[list[_Tok]] = []
        run: list[_Tok] = []
        index = 0

        def shift() -> _Tok | None:
            nonlocal index
            if index >= len(tokens):
                return None
            index += 1
            return tokens[index - 1]

        token = shift()
        while token is not None and token.kind != "eos":
            handled = False
            swallowed: list[_Tok] = [token]
            if token.kind == "ident":
                head = token.value.split(".")[0]
                if head in _ROOTS or head in _OBJECT_PROTO:
                    op = shift()
                    value = shift()
                    if op is None or value is None:
                        raise self.fail(f"{token.value!r} has no operator and value", token.start)
                    if head in _ROOTS:
                        nodes.append(self.condition(head, token, op, value))
                        handled = True
                    else:
                        swallowed = [token, op, value]
                if token.value in ("contains", "match"):
                    self.function(token.value, token, None, nodes, shift)
                    handled = True
            elif token.kind == "operator" and token.value == "!":
                after = tokens[index] if index < len(tokens) else None
                if (
                    after is not None
                    and after.kind == "ident"
                    and after.value
                    in (
                        "contains",
                        "match",
                    )
                ):
                    shift()
                    self.function(after.value, after, token, nodes, shift)
                    handled = True
            elif token.kind == "parenleft":
                if opener is not None:
                    raise self.fail(
                        "nested parentheses (Segment supports only one level)",
                        token.start,
                    )
                inner: list[_Tok] = []
                part = shift()
                while part is not None and part.kind != "parenright":
                    inner.append(part)
                    part = shift()
                if part is None:
                    raise self.fail("unclosed '('", token.start)
                inner.append(_Tok("eos", "eos", part.start, part.start))
                child = self.group(inner, token, part)
                if child is None:
                    raise self.fail(
                        "the parenthesised group has no condition Segment understands",
                        token.start,
                        crash=True,
                    )
                nodes.append(child)
                handled = True
            elif token.kind == "conditional":
                connective = token.value
                connectives.append(token)
                handled = True
            if handled:
                if run:
                    skipped.append(run)
                    run = []
            else:
                run.extend(swallowed)
            token = shift()
        if run:
            skipped.append(run)

        for group_run in skipped:
            self.lint_skipped(group_run, connective)
        self.lint_connectives(nodes, connectives, connective)
        if not nodes:
            return None
        if len(nodes) == 1 and opener is None:
            return _Group("and", nodes, nodes[0].start, nodes[0].end)
        if len(nodes) == 1:
            return nodes[0]
        start = opener.start if opener is not None else nodes[0].start
        end = closer.end if closer is not None else nodes[-1].end
        return _Group(connective, nodes, start, end)

    def lint_skipped(self, run: list[_Tok], connective: str) -> None:
        first = run[0]
        if first.start in self.number_tails:
            if len(run) > 1:
                self.lint_skipped(run[1:], connective)
            return
        text = self.snippet(first.start, run[-1].end)
        if first.kind == "ident" and first.value.lower() in ("and", "or"):
            message = (
                f"{first.value!r} is not a connective: Segment only knows lower-case 'and'/'or', "
                f"skips {first.value!r} and joins these conditions with {connective!r}"
            )
        elif first.kind == "ident" and first.value.lower() == "not":
            message = (
                f"{first.value!r} is not an operator in Segment triggers: Segment skips it, so "
                "the condition after it is not negated"
            )
        elif first.kind == "operator" and first.value == "!":
            message = (
                "'!' only negates contains(...) or match(...): Segment ignores it here, so what "
                "follows is not negated"
            )
        elif first.kind == "ident":
            head = first.value.split(".")[0]
            message = (
                f"{head!r} is not a field Segment triggers can test ({_FIELD_LIST}): "
                f"Segment skips {text!r}"
            )
        else:
            message = f"Segment skips {text!r}: it is not part of a condition"
        self.note(first.start, message)
        if first.kind == "ident" and first.value.lower() in ("and", "or", "not"):
            rest = run[1:]
            if rest:
                self.lint_skipped(rest, connective)

    def lint_connectives(self, nodes: list[_Node], connectives: list[_Tok], last: str) -> None:
        mixed = len(nodes) >= 2 and len({c.value for c in connectives}) >= 2
        if not mixed and nodes and connectives and connectives[-1].start >= nodes[-1].end:
            dangling = connectives[-1]
            self.note(
                dangling.start,
                f"trailing {dangling.value!r} has no condition after it: Segment does not "
                f"ignore it but joins the whole group with {dangling.value!r}",
            )
        if not mixed:
            return
        winner = connectives[-1]
        joined = f" {last.upper()} ".join(self.snippet(n.start, n.end) for n in nodes)
        self.note(
            winner.start,
            f"mixed 'and'/'or' without parentheses: Segment applies the last connective "
            f"({last!r}) to the whole group: {joined}",
        )

    def condition(self, head: str, fld: _Tok, op: _Tok, val: _Tok) -> _Cond:
        opv, valv = op.value, val.value
        is_true = opv == "=" and valv == "true"
        is_false = opv == "=" and valv == "false"
        is_exists = opv == "!=" and valv == "null"
        is_not_exists = opv == "=" and valv == "null"
        special = (
            "exists"
            if is_exists
            else "not_exists"
            if is_not_exists
            else "is_true"
            if is_true
            else "is_false"
            if is_false
            else None
        )
        path = ""
        value: Any = _MISSING
        operator = opv
        if head in ("type", "event"):
            value = _js_string(_token_value(val))
        elif head == "name":
            if is_exists or is_not_exists:
                operator = "exists" if is_exists else "not_exists"
            else:
                value = _js_string(_token_value(val))
        elif head == "userId":
            if special is not None:
                operator = special
            else:
                value = _js_string(_token_value(val))
        else:
            path = _strip_root(fld.value, head)
            if special is not None:
                operator = special
            elif opv in ("=", "!=") and val.kind == "number":
                operator = "number_equals" if opv == "=" else "number_not_equals"
                value = _token_value(val)
            else:
                value = _token_value(val)
        field_text = fld.value if head in _OBJECT_ROOTS else head
        cond = _Cond(head, path, operator, value, field_text, fld.start, val.end)
        self.check_path(cond)
        self.lint_condition(cond, fld, op, val)
        return cond

    def check_path(self, cond: _Cond) -> None:
        if cond.root in _OBJECT_ROOTS and cond.path and not _PATH_RE.search(cond.path):
            raise self.fail(
                f"the field {cond.field_text!r} has no name after {cond.root!r}",
                cond.start,
                crash=True,
            )

    def lint_condition(self, cond: _Cond, fld: _Tok, op: _Tok, val: _Tok) -> None:
        text = self.snippet(cond.start, cond.end)
        name = cond.field_text
        if cond.root not in _OBJECT_ROOTS and fld.value != cond.root:
            extra = fld.value[len(cond.root) :]
            self.note(
                fld.start,
                f"Segment ignores {extra!r} after {cond.root!r} and tests {cond.root} itself",
            )
        if op.value not in _FQL_OPERATORS:
            if cond.op in _IR_OPERATORS:
                self.note(
                    op.start,
                    f"{op.value!r} is not a trigger operator, but Segment's evaluator accepts it "
                    f"as its internal operator {cond.op!r} in {text!r}",
                )
            else:
                self.note(
                    op.start,
                    f"{op.value!r} is not a comparison operator: Segment accepts {text!r} but it "
                    "never matches any event",
                )
            return
        if val.kind == "operator" and val.value == "=" and val.start == op.end:
            tail = (
                f'Segment compares {name} with the text "="'
                if cond.op in ("=", "!=")
                else "the condition never matches; put a space after the operator"
            )
            self.note(
                op.start,
                f"'{op.value}=' is read as {op.value!r} followed by the value \"=\": {tail}",
            )
        elif not (
            val.kind in ("string", "number", "null")
            or (val.kind == "ident" and val.value in ("true", "false"))
        ):
            self.note(
                val.start,
                f"{text!r} has no quoted value: Segment compares {name} with the text "
                f"{_js_string(cond.value)!r}",
            )
        if cond.root in ("type", "event") and val.kind == "null" and op.value in ("=", "!="):
            if op.value == "!=":
                what = f'every event whose {name} is not the string "null", even without one'
            else:
                what = f'only events whose {name} is the string "null", never a missing one'
            self.note(
                cond.start,
                f'{text!r} compares {name} with the text "null", it is not an existence test: '
                f"Segment matches {what}",
            )
        elif cond.op == "!=" and cond.root != "type":
            self.note(
                cond.start,
                f"{text!r} is also true when {name} is missing or null (or not a string): "
                "Segment compares strictly",
            )
        elif cond.op == "number_not_equals":
            self.note(
                cond.start,
                f"{text!r} is false when {name} is missing or not a number: Segment only "
                "compares numbers",
            )
        elif cond.op == "not_exists":
            self.note(
                cond.start,
                f"{text!r} is also true when {name} is missing: Segment treats missing and "
                "null the same",
            )

    def function(
        self,
        fn: str,
        fn_tok: _Tok,
        bang: _Tok | None,
        nodes: list[_Node],
        shift: Callable[[], _Tok | None],
    ) -> None:
        """parseFqlFunction: the punctuation tokens are skipped by position, unchecked."""
        start = (bang or fn_tok).start
        open_tok = shift()
        name_tok = shift()
        if name_tok is None:
            raise self.fail(f"{fn}() is missing its first argument", fn_tok.start)
        comma = shift()
        val = shift()
        if val is None:
            raise self.fail(f"{fn}() is missing its second argument", fn_tok.start)
        close = shift()
        end = close.end if close is not None else val.end
        text = self.snippet(start, end)
        if (open_tok is None or open_tok.kind != "parenleft") or (
            comma is None or comma.kind != "comma" or close is None or close.kind != "parenright"
        ):
            self.note(
                fn_tok.start,
                f"{text!r} is malformed: Segment reads the tokens after {fn!r} by position "
                "('(', field, ',', value, ')') without checking them",
            )
        negate = bang is not None
        v = name_tok.value
        if v in ("event", "name", "userId"):
            root, path = v, ""
        else:
            root = next((r for r in _OBJECT_ROOTS if v.startswith(r)), "")
            path = _strip_root(v, root) if root else ""
        if not root:
            reason = f"{fn}() cannot test {v!r}"
            self.drop(fn_tok.start, reason)
            self.note(start, f"{reason}: Segment drops {text!r}")
            return
        raw_value = _js_string(_token_value(val))
        if fn == "contains":
            op = "not_contains" if negate else "contains"
            value = raw_value
        elif val.value.endswith('*"'):
            op = "not_starts_with" if negate else "starts_with"
            value = raw_value[:-1]
        else:
            op = "not_ends_with" if negate else "ends_with"
            value = _drop_first_unit(raw_value)
        field_text = v if root in _OBJECT_ROOTS else root
        cond = _Cond(root, path, op, value, field_text, start, end)
        self.check_path(cond)
        nodes.append(cond)
        if fn == "match":
            self.lint_match(cond, val)
        if negate:
            self.note(
                start,
                f"{text!r} is false when {field_text} is missing, null or not a string: Segment "
                "only tests strings",
            )

    def lint_match(self, cond: _Cond, val: _Tok) -> None:
        raw = val.value
        body = str(_token_value(val))
        shown = f'"{cond.value}"'
        if cond.op.endswith("starts_with"):
            if "*" in cond.value:
                self.note(
                    val.start,
                    f"match pattern {raw}: Segment supports only one leading or trailing '*'; "
                    f"it tests whether {cond.field_text} starts with {shown}, '*' taken literally",
                )
        elif not body.startswith("*"):
            self.note(
                val.start,
                f"match pattern {raw} does not start or end with '*': Segment drops its first "
                f"character and tests whether {cond.field_text} ends with {shown}",
            )
        elif "*" in cond.value:
            self.note(
                val.start,
                f"match pattern {raw}: Segment supports only one leading or trailing '*'; "
                f"it tests whether {cond.field_text} ends with {shown}, '*' taken literally",
            )


def _drop_first_unit(text: str) -> str:
    """JavaScript ``text.slice(1)``: drops one UTF-16 unit, so half of an astral character."""
    if text and ord(text[0]) > 0xFFFF:
        low = 0xDC00 + ((ord(text[0]) - 0x10000) & 0x3FF)
        return chr(low) + text[1:]
    return text[1:]


# --------------------------------------------------------------------------------------------
# Compilation to closures
# --------------------------------------------------------------------------------------------


def _never(_: Any) -> bool:
    return False


def _test_for(op: str, expected: Any) -> _Test:
    """``validateValue`` for one operator, with the expected value converted once."""
    if op == "=":
        text = _js_string(expected)
        return lambda a: a == text
    if op == "!=":
        text = _js_string(expected)
        return lambda a: a != text
    if op in _NUMERIC:
        number = _js_to_number(expected)
        compare: Callable[[float], bool] = {
            "number_equals": lambda x: x == number,
            "number_not_equals": lambda x: x != number,
            "<": lambda x: x < number,
            "<=": lambda x: x <= number,
            ">": lambda x: x > number,
            ">=": lambda x: x >= number,
        }[op]

        def numeric(a: Any) -> bool:
            x = _as_number(a)
            return x is not None and compare(x)

        return numeric
    if op in ("contains", "not_contains", "starts_with", "not_starts_with"):
        sub = _js_string(expected)
        if op == "contains":
            return lambda a: isinstance(a, str) and sub in a
        if op == "not_contains":
            return lambda a: isinstance(a, str) and sub not in a
        if op == "starts_with":
            return lambda a: isinstance(a, str) and a.startswith(sub)
        return lambda a: isinstance(a, str) and not a.startswith(sub)
    if op in ("ends_with", "not_ends_with"):
        suffix = _js_string(expected)
        negate = op == "not_ends_with"
        if suffix and 0xDC00 <= ord(suffix[0]) <= 0xDFFF:
            units = _utf16(suffix)
            return lambda a: isinstance(a, str) and (_utf16(a).endswith(units) != negate)
        return lambda a: isinstance(a, str) and (a.endswith(suffix) != negate)
    if op == "exists":
        return lambda a: a is not _MISSING and a is not None
    if op == "not_exists":
        return lambda a: a is _MISSING or a is None
    if op == "is_true":
        return lambda a: a is True
    if op == "is_false":
        return lambda a: a is False
    return _never


def _compile_condition(cond: _Cond) -> Predicate:
    test = _test_for(cond.op, cond.value)
    if test is _never:
        return _never
    root = cond.root
    if root not in _OBJECT_ROOTS:
        if cond.op == "=":
            text = _js_string(cond.value)
            return lambda e: e.get(root, _MISSING) == text
        return lambda e: test(e.get(root, _MISSING))
    if not cond.path:
        missing = test(_MISSING)
        return lambda e: missing
    keys = tuple(_PATH_RE.findall(cond.path))
    if len(keys) == 1:
        key = keys[0]

        def single(e: Mapping[str, Any]) -> bool:
            obj = e.get(root, _MISSING)
            if type(obj) is dict:
                value = obj.get(key, _MISSING)
                if value is _MISSING and key in _OBJECT_PROTO:
                    value = _OPAQUE
                return test(value)
            return test(_walk(obj, keys))

        return single
    return lambda e: test(_walk(e.get(root, _MISSING), keys))


def _compile(node: _Node) -> Predicate:
    """The node as a tree of closures: the general form, which `_generate` must agree with."""
    if isinstance(node, _Cond):
        return _compile_condition(node)
    parts = tuple(_compile(child) for child in node.children)
    if len(parts) == 1:
        return parts[0]
    if node.connective == "and":
        if len(parts) == 2:
            a, b = parts
            return lambda e: a(e) and b(e)
        return lambda e: all(p(e) for p in parts)
    if len(parts) == 2:
        a, b = parts
        return lambda e: a(e) or b(e)
    return lambda e: any(p(e) for p in parts)


def _eq_any(value: Any, texts: tuple[str, ...]) -> bool:
    """``value == t`` for some t: the ``or`` of equalities, for a value that is not a ``str``."""
    return any(value == text for text in texts)


def _plain_equality(node: _Node) -> tuple[str, str] | None:
    """``(root, text)`` for ``root = "text"`` on a top-level field (``type``, ``event``, …)."""
    if isinstance(node, _Cond) and node.op == "=" and node.root not in _OBJECT_ROOTS:
        return node.root, _js_string(node.value)
    return None


def _generate(node: _Node) -> Predicate:
    """The node as one generated function (the fast path of `_compile`, same answers).

    Equalities on a top-level field become inline ``e.get(root) == "text"``; an ``or`` of
    equalities on one such field becomes a set lookup for a string value (any other value
    compares as `_compile` does, one equality after the other); every other condition calls
    its closure from `_compile_condition`. ``and``/``or`` keep their order and short-circuit,
    so even an exception is raised where the closures would raise it.
    """
    names: dict[str, Any] = {"M": _MISSING, "_eq_any": _eq_any}
    counter = itertools.count()

    def expr(node: _Node) -> str:
        if isinstance(node, _Cond):
            equality = _plain_equality(node)
            if equality is not None:
                root, text = equality
                return f"e.get({root!r}, M) == {text!r}"
            predicate = _compile_condition(node)
            if predicate is _never:
                return "False"
            name = f"p{next(counter)}"
            names[name] = predicate
            return f"{name}(e)"
        if len(node.children) == 1:
            return expr(node.children[0])
        if node.connective != "and":
            pairs = [_plain_equality(child) for child in node.children]
            roots = {pair[0] for pair in pairs if pair is not None}
            if None not in pairs and len(roots) == 1:
                texts = tuple(pair[1] for pair in pairs if pair is not None)
                n = next(counter)
                names[f"s{n}"] = frozenset(texts)
                names[f"t{n}"] = texts
                return (
                    f"(v in s{n} if type(v := e.get({roots.pop()!r}, M)) is str "
                    f"else _eq_any(v, t{n}))"
                )
        joiner = " and " if node.connective == "and" else " or "
        return joiner.join(f"({expr(child)})" for child in node.children)

    source = f"def match(e):\n    return {expr(node)}\n"
    exec(compile(source, "<trigger>", "exec"), names)
    match: Predicate = names["match"]
    return match


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TriggerWarning:
    """A place where Segment reads a trigger differently from what its text seems to say."""

    position: int
    message: str


@dataclass(frozen=True, slots=True)
class Trigger:
    """A compiled trigger: ``matches`` is what Segment's ``validate`` answers for an event."""

    source: str
    _match: Predicate = field(repr=False, compare=False)

    def matches(self, event: Mapping[str, Any]) -> bool:
        return self._match(event)

    @property
    def predicate(self) -> Predicate:
        """The function behind `matches`, to call without the method in a hot loop."""
        return self._match


def _analyse(text: str) -> tuple[_Node, list[TriggerWarning]]:
    parser = _Parser(text)
    node = parser.parse()
    seen: set[tuple[int, str]] = set()
    warnings: list[TriggerWarning] = []
    for position, message in sorted(parser.notes, key=lambda n: n[0]):
        if (position, message) not in seen:
            seen.add((position, message))
            warnings.append(TriggerWarning(position, message))
    return node, warnings


def parse_trigger(text: str) -> Trigger:
    """Compile a trigger; raise :class:`TriggerError` where Segment would match nothing."""
    from segmetro.mapping import fastpaths

    node, _ = _analyse(text)
    return Trigger(text, _generate(node) if fastpaths.enabled() else _compile(node))


def lint_trigger(text: str) -> list[TriggerWarning]:
    """Warnings for a trigger that parses (raises :class:`TriggerError` like parse_trigger)."""
    return _analyse(text)[1]
