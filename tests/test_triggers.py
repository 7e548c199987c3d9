"""Triggers behave exactly like Segment's ``parseFql`` + ``validate`` (destination-subscriptions).

Every expected value below was checked against the npm package
``@segment/destination-subscriptions`` 3.37.0 on Node 20; where Segment yields an error
subscription (which matches nothing) we raise instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from segmetro.errors import ConfigError, TriggerError
from segmetro.triggers import Trigger, TriggerWarning, lexer, lint_trigger, parse_trigger


def segment_result(trigger: str, event: dict[str, Any]) -> bool:
    """What Segment answers: an unparsable trigger matches nothing."""
    try:
        compiled = parse_trigger(trigger)
    except TriggerError:
        return False
    return compiled.matches(event)


# segment.md §2, "Representative triples": all 29 cases (sub-cases as letters).
SEGMENT_VERIFIED: list[tuple[str, str, dict[str, Any], bool]] = [
    ("1", 'type = "track"', {"type": "track"}, True),
    ("2", 'type = "Track"', {"type": "track"}, False),
    ("3", "type = 'track'", {"type": "track"}, False),
    ("4", 'event = "Order Completed"', {"event": "order completed"}, False),
    ("5", 'userId != "abc"', {}, True),
    ("6a", "userId != null", {}, False),
    ("6b", "userId = null", {"userId": None}, True),
    ("7a", '!contains(userId, "test")', {}, False),
    ("7b", '!contains(userId, "test")', {"userId": "u1"}, True),
    ("8a", "properties.amount > 10", {"properties": {"amount": 11}}, True),
    ("8b", "properties.amount > 10", {"properties": {"amount": "11"}}, False),
    ("9a", "properties.amount = 10", {"properties": {"amount": 10}}, True),
    ("9b", "properties.amount = 10", {"properties": {"amount": "10"}}, False),
    ("10", 'properties.amount = "10"', {"properties": {"amount": 10}}, False),
    ("11a", "properties.amount != 10", {"properties": {}}, False),
    ("11b", 'properties.amount != "10"', {"properties": {}}, True),
    ("12a", "properties.amount = 10.0", {"properties": {"amount": 10}}, True),
    ("12b", "properties.amount > -5", {"properties": {"amount": 0}}, True),
    ("13", 'properties.x < "10"', {"properties": {"x": 5}}, True),
    ("14a", 'properties.a.b = "x"', {"properties": {"a": {"b": "x"}}}, True),
    ("14b", 'properties.a\\ b = "x"', {"properties": {"a b": "x"}}, True),
    ("15", 'properties.a\\.b = "x"', {"properties": {"a.b": "x"}}, False),
    ("16a", "properties.flag = true", {"properties": {"flag": "true"}}, False),
    ("16b", 'properties.flag = "true"', {"properties": {"flag": True}}, False),
    ("17a", "properties.name = null", {"properties": {"name": None}}, True),
    ("17b", "properties.name != null", {"properties": {}}, False),
    ("18a", 'match(event, "Order*")', {"event": "Order Completed"}, True),
    ("18b", 'match(event, "*Completed")', {"event": "Order Completed"}, True),
    ("19", 'match(event, "Or*ed")', {"event": "Order Completed"}, False),
    (
        "20",
        'event = "a" or event = "b" and type = "track"',
        {"event": "a", "type": "identify"},
        False,
    ),
    (
        "21",
        'type = "track" and event = "x" or event = "y"',
        {"type": "identify", "event": "y"},
        True,
    ),
    (
        "22",
        'type = "track" and (event = "a" or event = "b")',
        {"type": "track", "event": "b"},
        True,
    ),
    (
        "23",
        'type = "track" and (event = "a" or (event = "b" and userId = "u"))',
        {"type": "track", "event": "b", "userId": "u"},
        False,
    ),
    ("24", 'event = "a" OR type = "track"', {"event": "a", "type": "identify"}, False),
    ("25a", 'contains(properties.tags, "a")', {"properties": {"tags": ["a", "b"]}}, False),
    ("25b", 'contains(context.page.url,"a")', {"context": {"page": {"url": "xay"}}}, True),
    ("26", "traits.email != null", {"context": {"traits": {"email": "a"}}}, False),
    ("27a", "properties.price>=100", {"properties": {"price": 500}}, False),
    ("27b", 'event = "a"\r\n', {"event": "a"}, False),
    ("28", 'anonymousId = "x"', {"anonymousId": "x"}, False),
    ("29", "properties.x >= 1e3", {"properties": {"x": 5000}}, True),
]


@pytest.mark.parametrize(
    ("trigger", "event", "expected"),
    [pytest.param(t, e, x, id=f"case-{n}") for n, t, e, x in SEGMENT_VERIFIED],
)
def test_segment_verified_cases(trigger: str, event: dict[str, Any], expected: bool) -> None:
    assert segment_result(trigger, event) is expected


def test_all_29_verified_cases_are_in_the_table() -> None:
    numbers = {n.rstrip("ab") for n, *_ in SEGMENT_VERIFIED}
    assert numbers == {str(i) for i in range(1, 30)}


P = "properties"

EDGE_CASES: list[tuple[str, dict[str, Any], bool]] = [
    # '=' with a string: strict, present / missing / null / wrong type
    ('properties.p = "a"', {P: {"p": "a"}}, True),
    ('properties.p = "a"', {P: {}}, False),
    ('properties.p = "a"', {P: {"p": None}}, False),
    ('properties.p = "1"', {P: {"p": 1}}, False),
    ('properties.p = "a"', {}, False),
    # '!=' with a string: true for missing, null and other types
    ('properties.p != "a"', {P: {"p": "b"}}, True),
    ('properties.p != "a"', {P: {"p": "a"}}, False),
    ('properties.p != "a"', {P: {"p": None}}, True),
    ('properties.p != "1"', {P: {"p": 1}}, True),
    ('traits.plan != "pro"', {}, True),
    # numbers: only real numbers (never booleans or numeric strings)
    ("properties.n = 5", {P: {"n": 5.0}}, True),
    ("properties.n = 5", {P: {"n": True}}, False),
    ("properties.n = 5", {P: {"n": None}}, False),
    ("properties.n = +3", {P: {"n": 3}}, True),
    ("properties.n = -0", {P: {"n": 0}}, True),
    ("properties.n != 5", {P: {"n": 6}}, True),
    ("properties.n != 5", {P: {"n": 5}}, False),
    ("properties.n != 5", {P: {"n": "6"}}, False),
    ("properties.n < 5", {P: {"n": 4}}, True),
    ("properties.n < 5", {P: {"n": 5}}, False),
    ("properties.n < 5", {P: {"n": "4"}}, False),
    ("properties.n < 5", {P: {"n": None}}, False),
    ("properties.n < 5", {P: {"n": False}}, False),
    ("properties.n <= 5", {P: {"n": 5}}, True),
    ("properties.n >= 5.5", {P: {"n": 5}}, False),
    ("properties.n > -5", {P: {"n": -4}}, True),
    ("context.n >= 2", {"context": {"n": 2}}, True),
    ("traits.n > 2", {"traits": {"n": 2.5}}, True),
    ('properties.n > "0x10"', {P: {"n": 17}}, True),
    ("properties.n < true", {P: {"n": 0}}, True),
    ("properties.n = -.5", {P: {"n": -0.5}}, True),
    ('event="a""b"', {"event": "a"}, True),
    # contains / !contains: strings only, never arrays, numbers or missing fields
    ('contains(properties.s, "b")', {P: {"s": "abc"}}, True),
    ('contains(properties.s, "z")', {P: {"s": "abc"}}, False),
    ('contains(properties.s, "1")', {P: {"s": 1}}, False),
    ('contains(traits.s, "b")', {}, False),
    ("contains(properties.s, 10.0)", {P: {"s": "a10b"}}, True),
    ('!contains(properties.s, "z")', {P: {"s": "abc"}}, True),
    ('!contains(properties.s, "b")', {P: {"s": "abc"}}, False),
    ('!contains(properties.tags, "z")', {P: {"tags": ["a"]}}, False),
    ('!contains(properties.s, "z")', {P: {"s": None}}, False),
    ('contains(event, "Order")', {"event": "Order Completed"}, True),
    # match: a leading or trailing '*'; anything else drops its first character
    ('match(userId, "abc*")', {"userId": "abcdef"}, True),
    ('match(userId, "abc*")', {}, False),
    ('match(name, "*page")', {"name": "home page"}, True),
    ('!match(event, "Order*")', {"event": "Shipped"}, True),
    ('!match(event, "Order*")', {"event": "Order Completed"}, False),
    ('!match(event, "Order*")', {}, False),
    ('match(event, "x")', {"event": "anything"}, True),
    ('match(event, "*")', {"event": "anything"}, True),
    ("match(event, 'Or*')", {"event": "Order"}, False),
    ("match(event, 'Or*')", {"event": "XOr*'"}, True),
    # exists / not_exists: missing and null are the same; falsy values exist
    ("properties.x != null", {P: {"x": 0}}, True),
    ("properties.x != null", {P: {"x": False}}, True),
    ("properties.x != null", {P: {"x": ""}}, True),
    ("properties.x != null", {P: {"x": None}}, False),
    ("properties.x = null", {P: {}}, True),
    ("properties.x = null", {}, True),
    ("properties.x = null", {P: {"x": 0}}, False),
    ("name != null", {}, False),
    ("name = null", {"name": None}, True),
    # booleans
    ("properties.flag = true", {P: {"flag": True}}, True),
    ("properties.flag = true", {P: {"flag": 1}}, False),
    ("properties.flag = false", {P: {"flag": False}}, True),
    ("properties.flag = false", {P: {"flag": 0}}, False),
    ("properties.flag = false", {}, False),
    ("userId = true", {"userId": True}, True),
    ("name = true", {"name": "true"}, True),
    # type / event / userId stringify the operand
    ("type = null", {"type": "null"}, True),
    ("type = null", {}, False),
    ("event = true", {"event": "true"}, True),
    ("event = true", {"event": True}, False),
    ("event != null", {}, True),
    ("event = 10.0", {"event": "10"}, True),
    ("event = 1.50", {"event": "1.5"}, True),
    ("event = 100000000000000000000000", {"event": "1e+23"}, True),
    ("event = 0.0000001", {"event": "1e-7"}, True),
    ("userId = 123", {"userId": "123"}, True),
    ("userId = 123", {"userId": 123}, False),
    ('event == "x"', {"event": "="}, True),
    ('event == "x"', {"event": "x"}, False),
    ('event.foo = "x"', {"event": "x"}, True),
    # escapes and paths
    ('properties.caf\\é = "x"', {P: {"café": "x"}}, True),
    ('properties.\\1x = "y"', {P: {"1x": "y"}}, True),
    ('properties.items\\[0\\] = "a"', {P: {"items": ["a"]}}, True),
    ("properties.tags.length > 1", {P: {"tags": ["a", "b"]}}, True),
    ("properties.s.length = 3", {P: {"s": "abc"}}, True),
    ("properties.length = 3", {P: "abc"}, True),
    ("properties.a.b = 0", {P: {"a": 0}}, True),
    ("properties.a.b != null", {P: {"a": ""}}, True),
    ("properties.a.b != null", {P: {"a": {}}}, False),
    ("properties.constructor != null", {P: {}}, True),
    ("properties.constructor != null", {}, False),
    ('traits.plan = "pro"', {"traits": {"plan": "pro"}}, True),
    ('traits.plan = "pro"', {"context": {"traits": {"plan": "pro"}}}, False),
    # groups: one level of parentheses, flat last-connective rule, trailing connective
    ('(event = "a" or event = "b") and type = "track"', {"event": "b", "type": "track"}, True),
    ('(event = "a" or event = "b") and type = "track"', {"event": "c", "type": "track"}, False),
    ('type = "x" or (event = "a" and userId = "u")', {"event": "a", "userId": "u"}, True),
    ('type = "track" and event = "x" or', {"type": "track", "event": "y"}, True),
    ('event = "a" or', {"event": "a"}, True),
    ('event = "a" and event = "b" or event = "c"', {"event": "c"}, True),
    # tokens Segment skips silently
    ('event = "a" AND event = "b"', {"event": "a"}, False),
    ('not event = "a"', {"event": "a"}, True),
    ('!(event = "a")', {"event": "a"}, True),
    ('event = "a" and anonymousId = "x"', {"event": "a"}, True),
    ('constructor = "x" and type = "track"', {"type": "track"}, True),
    ('properties.x contains "a"', {P: {"x": "bab"}}, True),
    ('type "track"', {"type": "track"}, False),
    ("properties.x <=5", {P: {"x": 1}}, False),
    ('contains(type, "tr") and event = "x"', {"event": "x", "type": "identify"}, True),
]


@pytest.mark.parametrize(("trigger", "event", "expected"), EDGE_CASES)
def test_edge_cases(trigger: str, event: dict[str, Any], expected: bool) -> None:
    assert parse_trigger(trigger).matches(event) is expected


PARSE_ERRORS: list[tuple[str, int, str]] = [
    (
        "",
        0,
        "the trigger is empty: Segment cannot parse an empty trigger and would match no events",
    ),
    (" \t\n", 0, "the trigger is empty: Segment cannot parse an empty trigger"),
    (
        "properties.price>=100",
        16,
        "'>' cannot follow the name 'price' (a name must be followed by a space, ',', ')', "
        "'.', '(', '=' or '!'): Segment cannot parse this trigger and would match no events",
    ),
    (
        'event = "a"\r\n',
        11,
        "'\\r' (carriage return) right after a closing quote: Segment needs a space, ',' or ')' "
        "after a string, so it reads that quote as the start of a new string that never ends",
    ),
    ('type = "track" \r\n', 15, "carriage return ('\\r') is not allowed (Windows line ending?)"),
    (
        'anonymousId = "x"',
        0,
        "'anonymousId' is not a field Segment triggers can test (type, event, name, userId, "
        "properties.*, traits.*, context.*): Segment cannot parse this trigger and would match "
        "no events",
    ),
    (
        'type = "track" and (event = "a" or (event = "b" and userId = "u"))',
        35,
        "nested parentheses (Segment supports only one level): Segment cannot parse this trigger",
    ),
    ('((type = "track"))', 1, "nested parentheses (Segment supports only one level)"),
    ('(type = "track"', 0, "unclosed '('"),
    ("type", 0, "'type' has no operator and value"),
    ('type = "track" and properties.x', 19, "'properties.x' has no operator and value"),
    ("contains(", 0, "contains() is missing its second argument"),
    ('event = "a" and match', 16, "match() is missing its first argument"),
    (
        'type = "track" and ()',
        19,
        "the parenthesised group has no condition Segment understands: Segment's evaluator "
        "fails on this trigger instead of matching events",
    ),
    ('traits.x = "a" or (foo)', 18, "the parenthesised group has no condition"),
    ('properties.\\[ = "x"', 0, "the field 'properties.[' has no name after 'properties'"),
    ('event = "a" && type = "b"', 12, "invalid character '&' (the connectives are lower-case"),
    ("type = `track`", 7, "invalid character '`'"),
    ('event = "abc', 8, "unterminated string"),
    ("properties.x = 5.", 16, "a number cannot end with '.'"),
    ("properties.x = 1.2.3", 18, "a number cannot have two '.'"),
    ('properties.x !="a"', 13, "'!=' must be followed by a space, ',' or ')'"),
    ('properties.x ! = "a"', 13, "'!' must be followed by '=', by contains(...)/match(...)"),
    ('type = "x" \\', 11, "'\\' at the end of the trigger escapes nothing"),
    ('contains(type, "x")', 0, "contains() cannot test 'type': Segment cannot parse"),
    ("AND", 0, "no condition Segment understands: Segment cannot parse this trigger"),
    ('not anonymousId = "x"', 0, "no condition Segment understands"),
    ('event = "a"and', 11, "'a' right after a closing quote"),
]


@pytest.mark.parametrize(("trigger", "position", "message"), PARSE_ERRORS)
def test_parse_errors(trigger: str, position: int, message: str) -> None:
    with pytest.raises(TriggerError) as caught:
        parse_trigger(trigger)
    error = caught.value
    assert error.position == position
    assert error.message.startswith(message)
    assert error.trigger == trigger
    assert isinstance(error, ConfigError)
    assert error.message.endswith(("would match no events", "instead of matching events"))


def test_trigger_error_text_names_position_and_trigger() -> None:
    with pytest.raises(TriggerError, match=r"at position 17 of trigger 'properties.price>=100'"):
        parse_trigger("properties.price>=100")


def test_lint_raises_like_parse_for_an_unparsable_trigger() -> None:
    with pytest.raises(TriggerError):
        lint_trigger('anonymousId = "x"')


LINTS: list[tuple[str, list[tuple[int, str]]]] = [
    (
        'type = "track" and',
        [
            (
                15,
                "trailing 'and' has no condition after it: Segment does not ignore it but joins "
                "the whole group with 'and'",
            )
        ],
    ),
    (
        'type = "track" and event = "x" or event = "y"',
        [
            (
                31,
                "mixed 'and'/'or' without parentheses: Segment applies the last connective ('or') "
                'to the whole group: type = "track" OR event = "x" OR event = "y"',
            )
        ],
    ),
    (
        'event = "a" or event = "b" and type = "track"',
        [
            (
                27,
                "mixed 'and'/'or' without parentheses: Segment applies the last connective "
                '(\'and\') to the whole group: event = "a" AND event = "b" AND type = "track"',
            )
        ],
    ),
    (
        'type = "track" and event = "a" or',
        [
            (
                31,
                "mixed 'and'/'or' without parentheses: Segment applies the last connective ('or') "
                'to the whole group: type = "track" OR event = "a"',
            )
        ],
    ),
    (
        'event = "a" OR type = "track"',
        [
            (
                12,
                "'OR' is not a connective: Segment only knows lower-case 'and'/'or', skips 'OR' "
                "and joins these conditions with 'and'",
            )
        ],
    ),
    (
        'not event = "a"',
        [
            (
                0,
                "'not' is not an operator in Segment triggers: Segment skips it, so the "
                "condition after it is not negated",
            )
        ],
    ),
    (
        '!(event = "a")',
        [
            (
                0,
                "'!' only negates contains(...) or match(...): Segment ignores it here, so what "
                "follows is not negated",
            )
        ],
    ),
    (
        'anonymousId = "x" and type = "track"',
        [
            (
                0,
                "'anonymousId' is not a field Segment triggers can test (type, event, name, "
                "userId, properties.*, traits.*, context.*): Segment skips 'anonymousId = \"x\"'",
            )
        ],
    ),
    (
        'type = "track" ]',
        [(15, "Segment skips ']': it is not part of a condition")],
    ),
    (
        "type = 'track'",
        [
            (
                7,
                "single-quoted value 'track': Segment keeps the quotes, so it compares with the "
                "text 'track' including the quote marks; use double quotes",
            )
        ],
    ),
    (
        'userId != "abc"',
        [
            (
                0,
                "'userId != \"abc\"' is also true when userId is missing or null (or not a "
                "string): Segment compares strictly",
            )
        ],
    ),
    (
        "properties.amount != 10",
        [
            (
                0,
                "'properties.amount != 10' is false when properties.amount is missing or not a "
                "number: Segment only compares numbers",
            )
        ],
    ),
    (
        '!contains(userId, "@acme.com")',
        [
            (
                0,
                "'!contains(userId, \"@acme.com\")' is false when userId is missing, null or not "
                "a string: Segment only tests strings",
            )
        ],
    ),
    (
        '!match(event, "Order*")',
        [
            (
                0,
                "'!match(event, \"Order*\")' is false when event is missing, null or not a "
                "string: Segment only tests strings",
            )
        ],
    ),
    (
        "properties.name = null",
        [
            (
                0,
                "'properties.name = null' is also true when properties.name is missing: Segment "
                "treats missing and null the same",
            )
        ],
    ),
    (
        "event != null",
        [
            (
                0,
                "'event != null' compares event with the text \"null\", it is not an existence "
                'test: Segment matches every event whose event is not the string "null", even '
                "without one",
            )
        ],
    ),
    (
        'match(event, "Or*ed")',
        [
            (
                13,
                "match pattern \"Or*ed\" does not start or end with '*': Segment drops its first "
                'character and tests whether event ends with "r*ed"',
            )
        ],
    ),
    (
        'match(event, "*a*")',
        [
            (
                13,
                "match pattern \"*a*\": Segment supports only one leading or trailing '*'; it "
                "tests whether event starts with \"*a\", '*' taken literally",
            )
        ],
    ),
    (
        "properties.x >= 1e3",
        [
            (
                16,
                "Segment reads '1e3' as the number 1 followed by 'e3', which it skips: the "
                "comparison uses 1",
            )
        ],
    ),
    (
        'event == "x"',
        [
            (
                6,
                "'==' is read as '=' followed by the value \"=\": Segment compares event with the "
                'text "="',
            ),
            (9, "Segment skips '\"x\"': it is not part of a condition"),
        ],
    ),
    (
        'event.foo = "x"',
        [(0, "Segment ignores '.foo' after 'event' and tests event itself")],
    ),
    (
        'contains(type, "tr") and event = "x"',
        [(0, "contains() cannot test 'type': Segment drops 'contains(type, \"tr\")'")],
    ),
    (
        'type "track"',
        [
            (
                5,
                "'\"track\"' is not a comparison operator: Segment accepts 'type \"track\"' but it "
                "never matches any event",
            )
        ],
    ),
    (
        "match(event, 'Or*')",
        [
            (
                13,
                "single-quoted value 'Or*': Segment keeps the quotes, so it compares with the "
                "text 'Or*' including the quote marks; use double quotes",
            ),
            (
                13,
                "match pattern 'Or*' does not start or end with '*': Segment drops its first "
                'character and tests whether event ends with "Or*\'"',
            ),
        ],
    ),
    (
        'type = "track" and (event = "a" AND event = "b" or userId = "u")',
        [
            (
                32,
                "'AND' is not a connective: Segment only knows lower-case 'and'/'or', skips "
                "'AND' and joins these conditions with 'or'",
            )
        ],
    ),
    (
        "properties.x exists 1",
        [
            (
                13,
                "'exists' is not a trigger operator, but Segment's evaluator accepts it as its "
                "internal operator 'exists' in 'properties.x exists 1'",
            )
        ],
    ),
    (
        'contains(event "x")',
        [
            (
                0,
                "'contains(event \"x\")' is malformed: Segment reads the tokens after 'contains' "
                "by position ('(', field, ',', value, ')') without checking them",
            )
        ],
    ),
    (
        "properties.x <=5",
        [
            (
                13,
                "'<=' is read as '<' followed by the value \"=\": the condition never matches; "
                "put a space after the operator",
            ),
            (15, "Segment skips '5': it is not part of a condition"),
        ],
    ),
    (
        "event = foo",
        [(8, "'event = foo' has no quoted value: Segment compares event with the text 'foo'")],
    ),
]


@pytest.mark.parametrize(("trigger", "expected"), LINTS)
def test_lint_warnings(trigger: str, expected: list[tuple[int, str]]) -> None:
    assert lint_trigger(trigger) == [TriggerWarning(p, m) for p, m in expected]


@pytest.mark.parametrize(
    "trigger",
    [
        'type = "track"',
        'type = "track" and event = "billing_event"',
        'type = "track" and (event = "a" or event = "b")',
        'contains(event, "Order") or match(event, "Order*") or match(event, "*Completed")',
        "properties.amount > 10 and properties.amount <= 100.5",
        "properties.plan != null and properties.flag = true",
        "userId != null",
        'type != "identify"',
    ],
)
def test_lint_is_quiet_for_unsurprising_triggers(trigger: str) -> None:
    assert lint_trigger(trigger) == []


def test_trigger_is_immutable_and_keeps_its_source() -> None:
    trigger = parse_trigger('type = "track"')
    assert trigger.source == 'type = "track"'
    assert isinstance(trigger, Trigger)
    with pytest.raises(dataclasses.FrozenInstanceError):
        trigger.source = "x"  # type: ignore[misc]
    assert trigger == parse_trigger('type = "track"')


def test_matching_does_not_parse_again(monkeypatch: pytest.MonkeyPatch) -> None:
    trigger = parse_trigger('type = "track" and properties.a.b > 1')

    def boom(*_: object) -> None:
        raise AssertionError("lexer called while matching")

    monkeypatch.setattr(lexer.Lexer, "lex", boom)
    assert trigger.matches({"type": "track", "properties": {"a": {"b": 2}}})
    assert not trigger.matches({"type": "track", "properties": {"a": {"b": 1}}})


def test_big_integers_compare_as_javascript_doubles() -> None:
    trigger = parse_trigger("properties.n = 9007199254740993")
    assert trigger.matches({"properties": {"n": 9007199254740992}})
    assert parse_trigger("properties.n > 1").matches({"properties": {"n": 10**400}})
