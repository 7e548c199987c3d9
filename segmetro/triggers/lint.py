"""Trigger warnings: every place where Segment's reading differs from what the text seems to say.

``segmetro validate`` shows these next to the mapping file's line. They come from the parser's
findings (:data:`~segmetro.triggers.parser.Finding`) and the raw tokens, so the wording lives
here and the parsing rules live in :mod:`segmetro.triggers.parser`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from segmetro.jsvalue import js_string, to_number
from segmetro.triggers.lexer import Token
from segmetro.triggers.parser import (
    FIELD_LIST,
    FQL_OPERATORS,
    IR_OPERATORS,
    OBJECT_ROOTS,
    Called,
    Compared,
    Joined,
    Parsed,
    Skipped,
    parse,
    token_value,
)


@dataclass(frozen=True, slots=True)
class TriggerWarning:
    """A place where Segment reads a trigger differently from what its text seems to say."""

    position: int
    message: str


def lint_trigger(text: str) -> list[TriggerWarning]:
    """Warnings for a trigger that parses (raises :class:`TriggerError` like parse_trigger)."""
    return warnings(parse(text))


def warnings(parsed: Parsed) -> list[TriggerWarning]:
    """The warnings for a parsed trigger, by position, each once."""
    notes = _Notes(parsed.text)
    notes.tokens(parsed.tokens)
    for finding in parsed.findings:
        if isinstance(finding, Compared):
            notes.compared(finding)
        elif isinstance(finding, Called):
            notes.called(finding)
        elif isinstance(finding, Skipped):
            notes.skipped(list(finding.tokens), finding.connective)
        else:
            notes.joined(finding)
    seen: set[tuple[int, str]] = set()
    out: list[TriggerWarning] = []
    for position, message in sorted(notes.notes, key=lambda n: n[0]):
        if (position, message) not in seen:
            seen.add((position, message))
            out.append(TriggerWarning(position, message))
    return out


class _Notes:
    def __init__(self, text: str) -> None:
        self.text = text
        self.notes: list[tuple[int, str]] = []
        #: identifiers glued to a number ('e3' in '1e3'): already explained, not "unknown"
        self.number_tails: set[int] = set()

    def note(self, position: int, message: str) -> None:
        self.notes.append((position, message))

    def snippet(self, start: int, end: int) -> str:
        return " ".join(self.text[start:end].split())

    def tokens(self, tokens: tuple[Token, ...]) -> None:
        for tok, after in itertools.pairwise(tokens):
            if tok.kind == "string" and tok.value.startswith("'"):
                self.note(
                    tok.start,
                    f"single-quoted value {tok.value}: Segment keeps the quotes, so it compares "
                    f"with the text {tok.value} including the quote marks; use double quotes",
                )
            if tok.kind == "number" and after.kind == "ident" and after.start == tok.end:
                self.number_tails.add(after.start)
                number = js_string(to_number(tok.value))
                self.note(
                    tok.start,
                    f"Segment reads '{tok.value}{after.value}' as the number {number} followed "
                    f"by '{after.value}', which it skips: the comparison uses {number}",
                )

    def skipped(self, run: list[Token], connective: str) -> None:
        first = run[0]
        if first.start in self.number_tails:
            if len(run) > 1:
                self.skipped(run[1:], connective)
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
                f"{head!r} is not a field Segment triggers can test ({FIELD_LIST}): "
                f"Segment skips {text!r}"
            )
        else:
            message = f"Segment skips {text!r}: it is not part of a condition"
        self.note(first.start, message)
        if first.kind == "ident" and first.value.lower() in ("and", "or", "not"):
            rest = run[1:]
            if rest:
                self.skipped(rest, connective)

    def joined(self, joined: Joined) -> None:
        spans, connectives, last = joined.spans, joined.connectives, joined.connective
        mixed = len(spans) >= 2 and len({c.value for c in connectives}) >= 2
        if not mixed and spans and connectives and connectives[-1].start >= spans[-1][1]:
            dangling = connectives[-1]
            self.note(
                dangling.start,
                f"trailing {dangling.value!r} has no condition after it: Segment does not "
                f"ignore it but joins the whole group with {dangling.value!r}",
            )
        if not mixed:
            return
        winner = connectives[-1]
        joined_text = f" {last.upper()} ".join(self.snippet(start, end) for start, end in spans)
        self.note(
            winner.start,
            f"mixed 'and'/'or' without parentheses: Segment applies the last connective "
            f"({last!r}) to the whole group: {joined_text}",
        )

    def compared(self, compared: Compared) -> None:
        cond, fld, op, val = compared.condition, compared.field, compared.operator, compared.value
        text = self.snippet(cond.start, cond.end)
        name = cond.field_text
        if cond.root not in OBJECT_ROOTS and fld.value != cond.root:
            extra = fld.value[len(cond.root) :]
            self.note(
                fld.start,
                f"Segment ignores {extra!r} after {cond.root!r} and tests {cond.root} itself",
            )
        if op.value not in FQL_OPERATORS:
            if cond.op in IR_OPERATORS:
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
                f"{js_string(cond.value)!r}",
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

    def called(self, called: Called) -> None:
        fn = called.function
        text = self.snippet(called.start, called.end)
        if not called.well_formed:
            self.note(
                called.token.start,
                f"{text!r} is malformed: Segment reads the tokens after {fn!r} by position "
                "('(', field, ',', value, ')') without checking them",
            )
        cond = called.condition
        if cond is None:
            self.note(called.start, f"{called.reason}: Segment drops {text!r}")
            return
        if fn == "match":
            self.match(cond.op, cond.value, cond.field_text, called.value)
        if called.bang is not None:
            self.note(
                called.start,
                f"{text!r} is false when {cond.field_text} is missing, null or not a string: "
                "Segment only tests strings",
            )

    def match(self, op: str, pattern: str, field_text: str, val: Token) -> None:
        raw = val.value
        body = str(token_value(val))
        shown = f'"{pattern}"'
        if op.endswith("starts_with"):
            if "*" in pattern:
                self.note(
                    val.start,
                    f"match pattern {raw}: Segment supports only one leading or trailing '*'; "
                    f"it tests whether {field_text} starts with {shown}, '*' taken literally",
                )
        elif not body.startswith("*"):
            self.note(
                val.start,
                f"match pattern {raw} does not start or end with '*': Segment drops its first "
                f"character and tests whether {field_text} ends with {shown}",
            )
        elif "*" in pattern:
            self.note(
                val.start,
                f"match pattern {raw}: Segment supports only one leading or trailing '*'; "
                f"it tests whether {field_text} ends with {shown}, '*' taken literally",
            )
