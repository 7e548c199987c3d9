"""The trigger lexer: a port of ``@segment/fql-ts`` 1.10.1, step for step, with positions added.

fql-ts backtracks in odd ways (``accept`` does not back up at the end of the text, a closing
quote not followed by a terminator is left unread); those quirks decide what a trigger means, so
they are kept. Characters Segment would choke on raise :class:`~segmetro.errors.TriggerError`
with the position and, where it helps, the likely cause (a Windows line ending, ``&&``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from segmetro.errors import TriggerError

#: The end of every message for a trigger that Segment's parser rejects.
FAIL: Final = ": Segment cannot parse this trigger and would match no events"
_MAX_LENGTH: Final = 100_000


@dataclass(frozen=True, slots=True)
class Token:
    """One fql-ts token; `start`/`end` are offsets into the trigger text."""

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


class Lexer:
    """fql-ts's lexer, step for step: its backtracking quirks decide what a trigger means."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        #: closing quotes the lexer left unread (not followed by a terminator): quote → next char
        self.dangling: dict[int, int] = {}

    def fail(self, message: str, position: int) -> TriggerError:
        return TriggerError(message + FAIL, trigger=self.text, position=position)

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

    def lex(self) -> list[Token]:
        tokens: list[Token] = []
        while True:
            start = self.pos
            c = self.next()
            if c is None:
                tokens.append(Token("eos", "eos", start, start))
                return tokens
            if c in " \t\n":
                continue
            if c == "!":
                after = self.peek()
                if _is_alpha(after) or after == "(":
                    tokens.append(Token("operator", "!", start, self.pos))
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
            tokens.append(Token(kind, value, start, end))

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


def normalize(tokens: list[Token]) -> list[Token]:
    """parseFql's ``normalize``: ``ident . ident`` becomes one dotted identifier."""
    out: list[Token] = []
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
            out.append(Token("ident", merged, previous.start, after.end))
            i += 2
            continue
        out.append(current)
        i += 1
    return out
