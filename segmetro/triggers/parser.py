"""The trigger parser: ``parseFql``'s algorithm, from tokens to a small tree of conditions.

Segment's parser skips what it does not understand, applies a group's last connective to the
whole group and reads ``contains(...)``/``match(...)`` arguments by position; this one does the
same. Where Segment would produce a subscription that matches nothing (or one whose evaluation
crashes) it raises :class:`~segmetro.errors.TriggerError` with the position instead. Along the
way it records what it skipped, dropped and joined (:data:`Finding`), in order, so that
:mod:`segmetro.triggers.lint` can explain them without parsing again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from segmetro.errors import TriggerError
from segmetro.jsvalue import OBJECT_MEMBERS, UNDEFINED, js_string, to_number
from segmetro.triggers.lexer import FAIL, Lexer, Token, normalize

#: The fields a trigger can test; the last three are objects, tested at a path.
ROOTS: Final = frozenset({"type", "event", "name", "userId", "properties", "traits", "context"})
OBJECT_ROOTS: Final = ("properties", "traits", "context")
#: The comparison operators of Segment's trigger syntax.
FQL_OPERATORS: Final = frozenset({"=", "!=", "<", "<=", ">", ">="})
#: The operators Segment's evaluator knows (``validateValue``), which a trigger may spell out.
IR_OPERATORS: Final = frozenset(
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
NUMERIC: Final = frozenset({"<", "<=", ">", ">=", "number_equals", "number_not_equals"})
FIELD_LIST: Final = "type, event, name, userId, properties.*, traits.*, context.*"
_PATH_RE: Final = re.compile(r"[^\[.\]]+")


@dataclass(frozen=True, slots=True)
class Condition:
    """One test of one field, as Segment's evaluator receives it."""

    root: str
    path: str  # for properties/traits/context, as Segment passes it to ``get``
    op: str
    value: Any  # str | float | bool; UNDEFINED for exists-style operators
    field_text: str
    start: int
    end: int

    @property
    def keys(self) -> tuple[str, ...]:
        """The path split as Segment's ``get`` splits it (``a.b[0]`` → ``a``, ``b``, ``0``)."""
        return tuple(_PATH_RE.findall(self.path))


@dataclass(frozen=True, slots=True)
class Group:
    """Conditions joined by one connective (Segment applies a group's last one to all)."""

    connective: str
    children: tuple[Condition | Group, ...]
    start: int
    end: int


Node = Condition | Group


@dataclass(frozen=True, slots=True)
class Compared:
    """A ``field op value`` condition and the tokens it was read from."""

    condition: Condition
    field: Token
    operator: Token
    value: Token


@dataclass(frozen=True, slots=True)
class Called:
    """A ``[!]contains(...)``/``[!]match(...)``; `condition` is None when Segment drops it."""

    function: str
    token: Token
    bang: Token | None
    value: Token
    well_formed: bool
    start: int
    end: int
    condition: Condition | None
    reason: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """Tokens Segment skips, in a group joined by `connective`."""

    tokens: tuple[Token, ...]
    connective: str


@dataclass(frozen=True, slots=True)
class Joined:
    """The connectives of one group and the spans of the conditions they join."""

    spans: tuple[tuple[int, int], ...]
    connectives: tuple[Token, ...]
    connective: str


#: What the parser records for the linter, in the order it met them.
Finding = Compared | Called | Skipped | Joined


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed trigger: the tree to evaluate, and the tokens and findings to lint."""

    text: str
    tokens: tuple[Token, ...]
    node: Node
    findings: tuple[Finding, ...]


def parse(text: str) -> Parsed:
    """Parse a trigger as Segment's ``parseFql``; raise :class:`TriggerError` where it fails."""
    return _Parser(text).parse()


def token_value(tok: Token) -> str | float | bool:
    """parseFql's ``getTokenValue``: only double quotes are stripped."""
    if tok.kind == "string":
        value = tok.value[1:] if tok.value.startswith('"') else tok.value
        return value[:-1] if value.endswith('"') else value
    if tok.kind == "number":
        return to_number(tok.value)
    if tok.kind == "ident" and tok.value in ("true", "false"):
        return tok.value == "true"
    return tok.value


def _strip_root(value: str, root: str) -> str:
    prefix = root + "."
    return value[len(prefix) :] if value.startswith(prefix) else value


def _drop_first_unit(text: str) -> str:
    """JavaScript ``text.slice(1)``: drops one UTF-16 unit, so half of an astral character."""
    if text and ord(text[0]) > 0xFFFF:
        low = 0xDC00 + ((ord(text[0]) - 0x10000) & 0x3FF)
        return chr(low) + text[1:]
    return text[1:]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.findings: list[Finding] = []
        self.first_drop: tuple[int, str] | None = None

    def fail(self, message: str, position: int, *, crash: bool = False) -> TriggerError:
        suffix = (
            ": Segment's evaluator fails on this trigger instead of matching events"
            if crash
            else FAIL
        )
        return TriggerError(message + suffix, trigger=self.text, position=position)

    def parse(self) -> Parsed:
        if not self.text.strip(" \t\n"):
            raise TriggerError(
                "the trigger is empty: Segment cannot parse an empty trigger and would match "
                "no events",
                trigger=self.text,
                position=0,
            )
        raw = Lexer(self.text).lex()
        tokens = normalize(raw)
        node = self.group(tokens, None, None)
        if node is None:
            first = tokens[0]
            head = first.value.split(".")[0]
            reason = "no condition Segment understands"
            if first.kind == "ident" and head.lower() not in ("and", "or", "not"):
                reason = f"{head!r} is not a field Segment triggers can test ({FIELD_LIST})"
            position, reason = self.first_drop or (first.start, reason)
            raise self.fail(reason, position)
        return Parsed(self.text, tuple(raw), node, tuple(self.findings))

    def drop(self, position: int, reason: str) -> None:
        if self.first_drop is None:
            self.first_drop = (position, reason)

    def group(self, tokens: list[Token], opener: Token | None, closer: Token | None) -> Node | None:
        nodes: list[Node] = []
        connective = "and"
        connectives: list[Token] = []
        skipped: list[list[Token]] = []
        run: list[Token] = []
        index = 0

        def shift() -> Token | None:
            nonlocal index
            if index >= len(tokens):
                return None
            index += 1
            return tokens[index - 1]

        token = shift()
        while token is not None and token.kind != "eos":
            handled = False
            swallowed: list[Token] = [token]
            if token.kind == "ident":
                head = token.value.split(".")[0]
                if head in ROOTS or head in OBJECT_MEMBERS:
                    op = shift()
                    value = shift()
                    if op is None or value is None:
                        raise self.fail(f"{token.value!r} has no operator and value", token.start)
                    if head in ROOTS:
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
                    and after.value in ("contains", "match")
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
                inner: list[Token] = []
                part = shift()
                while part is not None and part.kind != "parenright":
                    inner.append(part)
                    part = shift()
                if part is None:
                    raise self.fail("unclosed '('", token.start)
                inner.append(Token("eos", "eos", part.start, part.start))
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

        self.findings.extend(Skipped(tuple(group_run), connective) for group_run in skipped)
        spans = tuple((n.start, n.end) for n in nodes)
        self.findings.append(Joined(spans, tuple(connectives), connective))
        if not nodes:
            return None
        if len(nodes) == 1 and opener is None:
            return Group("and", tuple(nodes), nodes[0].start, nodes[0].end)
        if len(nodes) == 1:
            return nodes[0]
        start = opener.start if opener is not None else nodes[0].start
        end = closer.end if closer is not None else nodes[-1].end
        return Group(connective, tuple(nodes), start, end)

    def condition(self, head: str, fld: Token, op: Token, val: Token) -> Condition:
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
        value: Any = UNDEFINED
        operator = opv
        if head in ("type", "event"):
            value = js_string(token_value(val))
        elif head == "name":
            if is_exists or is_not_exists:
                operator = "exists" if is_exists else "not_exists"
            else:
                value = js_string(token_value(val))
        elif head == "userId":
            if special is not None:
                operator = special
            else:
                value = js_string(token_value(val))
        else:
            path = _strip_root(fld.value, head)
            if special is not None:
                operator = special
            elif opv in ("=", "!=") and val.kind == "number":
                operator = "number_equals" if opv == "=" else "number_not_equals"
                value = token_value(val)
            else:
                value = token_value(val)
        field_text = fld.value if head in OBJECT_ROOTS else head
        cond = Condition(head, path, operator, value, field_text, fld.start, val.end)
        self.check_path(cond)
        self.findings.append(Compared(cond, fld, op, val))
        return cond

    def check_path(self, cond: Condition) -> None:
        if cond.root in OBJECT_ROOTS and cond.path and not _PATH_RE.search(cond.path):
            raise self.fail(
                f"the field {cond.field_text!r} has no name after {cond.root!r}",
                cond.start,
                crash=True,
            )

    def function(
        self,
        fn: str,
        fn_tok: Token,
        bang: Token | None,
        nodes: list[Node],
        shift: Callable[[], Token | None],
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
        well_formed = (
            open_tok is not None
            and open_tok.kind == "parenleft"
            and comma is not None
            and comma.kind == "comma"
            and close is not None
            and close.kind == "parenright"
        )
        negate = bang is not None
        v = name_tok.value
        if v in ("event", "name", "userId"):
            root, path = v, ""
        else:
            root = next((r for r in OBJECT_ROOTS if v.startswith(r)), "")
            path = _strip_root(v, root) if root else ""
        if not root:
            reason = f"{fn}() cannot test {v!r}"
            self.drop(fn_tok.start, reason)
            self.findings.append(
                Called(fn, fn_tok, bang, val, well_formed, start, end, None, reason)
            )
            return
        raw_value = js_string(token_value(val))
        if fn == "contains":
            op = "not_contains" if negate else "contains"
            value = raw_value
        elif val.value.endswith('*"'):
            op = "not_starts_with" if negate else "starts_with"
            value = raw_value[:-1]
        else:
            op = "not_ends_with" if negate else "ends_with"
            value = _drop_first_unit(raw_value)
        field_text = v if root in OBJECT_ROOTS else root
        cond = Condition(root, path, op, value, field_text, start, end)
        self.check_path(cond)
        nodes.append(cond)
        self.findings.append(Called(fn, fn_tok, bang, val, well_formed, start, end, cond, ""))
