"""Every value form of design §2, evaluated through a loaded mapping."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from segmetro.mapping import MISSING, load_mapping_text
from segmetro.models import Mapped, Reason, Record, Reject

TEMPLATE = """\
version: 1
mappings:
  - name: m
    fields:
      transaction_id: t1
      customer_id: c1
      event_type: e1
      timestamp: "2021-01-01"
      properties:
        v: {expr}
"""

EVENT: dict[str, Any] = {
    "messageId": "ajs-1",
    "event": "Order Completed",
    "type": "track",
    "userId": "u/1&2",
    "context": {"groupId": "acme"},
    "properties": {
        "plan": "Enterprise",
        "amount": 12.5,
        "count": 3,
        "whole": 1.0,
        "flag": True,
        "nothing": None,
        "empty": "",
        "zero": 0,
        "tags": ["a", "b"],
        "nested": {"x": 1},
        "weird key": "w",
        "items": [{"id": "i1", "n": 1}, {"id": "i2", "n": 2}, {"id": "i3", "n": 3}],
        "mixed": [1, "a"],
    },
}


def run(expr: str, event: dict[str, Any] | None = None) -> Mapped | Reject:
    mappings = load_mapping_text(TEMPLATE.format(expr=expr), name="t.yaml")
    results = mappings.apply(Record(EVENT if event is None else event, "in.jsonl", 7))
    assert len(results) == 1
    return results[0]


def value(expr: str, event: dict[str, Any] | None = None) -> Any:
    result = run(expr, event)
    assert isinstance(result, Mapped), result
    return result.payload["properties"].get("v", MISSING)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("$.context.groupId", "acme"),
        ("$.context.nope", MISSING),
        ("$.nope.deeper", MISSING),
        ("$.properties.nothing", None),
        ("$.properties.tags[0]", "a"),
        ("$.properties.tags[-1]", "b"),
        ("$.properties.tags[5]", MISSING),
        ("$['properties']['weird key']", "w"),
        ("$.properties.items[1].id", "i2"),
        ("$.properties.nested", {"x": 1}),
        ("$.event.length", MISSING),
        ("$.properties.plan[0]", MISSING),  # strings are not lists
        # wildcards, filters and slices yield the list of matches
        ("$.properties.items[*].id", ["i1", "i2", "i3"]),
        ("'$.properties.items[?(@.n > 1)].id'", ["i2", "i3"]),
        ("'$.properties.items[?(@.n > 5)].id'", []),
        ("$.properties.tags[0:1]", ["a"]),
        ("$..groupId", ["acme"]),
    ],
)
def test_jsonpath(expr: str, expected: Any) -> None:
    assert value(expr) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('{"@path": "$.context.groupId"}', "acme"),
        ('{"@path": "context.groupId"}', "acme"),
        ('{"@path": "properties.tags[1]"}', "b"),
        ('{"@path": "$.nope"}', MISSING),
    ],
)
def test_path_directive(expr: str, expected: Any) -> None:
    assert value(expr) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{messageId}}-cpu", "ajs-1-cpu"),
        ("{{ context.groupId }}", "acme"),
        ("x{{properties.nope}}y", "xy"),
        ("{{properties.nothing}}", ""),
        ("{{properties.flag}}", "true"),
        ("{{properties.whole}}", "1"),  # JavaScript prints 1.0 as 1
        ("{{properties.amount}}", "12.5"),
        ("{{properties.zero}}", "0"),
        ("{{properties.nested}}", "[object Object]"),
        ("{{properties.tags}}", "a,b"),
        ("{{properties.tags[1]}}", "b"),
        ("{{properties.items.0.id}}", "i1"),
        # no HTML escaping, in either form (Segment's placeholders.ts, not mustache)
        ("{{userId}}", "u/1&2"),
        ("{{{userId}}}", "u/1&2"),
        ("{{properties['weird key']}}", "w"),
        ("{{properties.plan.length}}", "10"),
        ("{{properties.plan[0]}}", "E"),
        ("{{messageId}}}", "ajs-1}"),
        ("no placeholders", "no placeholders"),
        ("", ""),
    ],
)
def test_template(template: str, expected: str) -> None:
    assert value(orjson.dumps({"@template": template}).decode()) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('{"@literal": "$.not.a.path"}', "$.not.a.path"),
        # directives inside @literal are resolved (Segment resolves its value); strings are text
        (
            '{"@literal": {"a": {"@path": "$.context.groupId"}, "n": "$.x"}}',
            {"a": "acme", "n": "$.x"},
        ),
        ("plain text", "plain text"),
        ("42", 42),
        ("1.5", 1.5),
        ("true", True),
        ("null", None),
        ("on", "on"),  # YAML 1.1 booleans stay strings
        ("2021-01-01", "2021-01-01"),  # and so do dates
        ("{a: $.context.groupId, b: $.nope, c: 1}", {"a": "acme", "c": 1}),
        ("[$.context.groupId, $.nope, 2]", ["acme", None, 2]),
        ("{}", {}),
    ],
)
def test_literals_and_containers(expr: str, expected: Any) -> None:
    assert value(expr) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('{"@if": {"exists": "$.context.groupId", "then": "yes", "else": "no"}}', "yes"),
        ('{"@if": {"exists": "$.nope", "then": "yes", "else": "no"}}', "no"),
        ('{"@if": {"exists": "$.properties.nothing", "then": "yes", "else": "no"}}', "no"),
        ('{"@if": {"exists": "$.properties.empty", "then": "yes", "else": "no"}}', "yes"),
        ('{"@if": {"exists": "$.nope", "then": "yes"}}', MISSING),
        ('{"@if": {"exists": "$.event", "else": "no"}}', MISSING),
        ('{"@if": {"exists": "$.event", "then": "$.context.groupId"}}', "acme"),
        ('{"@if": {"blank": "$.properties.empty", "then": "yes", "else": "no"}}', "no"),
        # Segment's loose `!= ''`: 0 and false count as blank
        ('{"@if": {"blank": "$.properties.zero", "then": "yes", "else": "no"}}', "no"),
        ('{"@if": {"blank": "$.properties.plan", "then": "yes", "else": "no"}}', "yes"),
        # Segment ignores a falsy else literal
        ('{"@if": {"exists": "$.nope", "then": "yes", "else": ""}}', MISSING),
    ],
)
def test_if(expr: str, expected: Any) -> None:
    assert value(expr) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('{"@case": {"operator": "lower", "value": "$.properties.plan"}}', "enterprise"),
        ('{"@case": {"operator": "upper", "value": "$.event"}}', "ORDER COMPLETED"),
        ('{"@case": {"operator": "upper", "value": "$.properties.count"}}', 3),
        ('{"@case": {"operator": "upper", "value": "$.nope"}}', MISSING),
    ],
)
def test_case(expr: str, expected: Any) -> None:
    assert value(expr) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"value": "$.event", "pattern": " ", "replacement": "_"}, "Order_Completed"),
        ({"value": "$.event", "pattern": "o"}, "Order Cmpleted"),
        ({"value": "x.y.z", "pattern": ".", "replacement": "-"}, "x-y-z"),  # literal, not regex
        ({"value": "a.a.a", "pattern": ".", "global": False}, "aa.a"),
        (
            {"value": "$.event", "pattern": "ORDER", "replacement": "Buy", "ignorecase": True},
            "Buy Completed",
        ),
        ({"value": "$.event", "pattern": "ORDER", "replacement": "Buy"}, "Order Completed"),
        (
            {
                "value": "$.event",
                "pattern": "Order",
                "replacement": "A",
                "pattern2": " ",
                "replacement2": "+",
            },
            "A+Completed",
        ),
        ({"value": "$.event", "pattern": " ", "pattern2": "C"}, "Orderompleted"),
        ({"value": "$.properties.amount", "pattern": ".", "replacement": ","}, "12,5"),
        ({"value": "$.properties.flag", "pattern": "t", "replacement": "T"}, "True"),
        ({"value": "$.nope", "pattern": "x"}, ""),  # Segment returns "" for a missing value
        ({"value": "$.properties.nested", "pattern": "x"}, ""),
        ({"value": "$.event", "pattern": "Order", "replacement": "[$&]"}, "[Order] Completed"),
        ({"value": "$.event", "pattern": "Order", "replacement": "$$1"}, "$1 Completed"),
        ({"value": "ab", "pattern": "a", "replacement": "$'"}, "bb"),
        ({"value": "ab", "pattern": "b", "replacement": "$`"}, "aa"),
        ({"value": "a\\b", "pattern": "a", "replacement": "\\"}, "\\\\b"),
    ],
)
def test_replace(args: dict[str, Any], expected: Any) -> None:
    assert value(orjson.dumps({"@replace": args}).decode()) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            '{"@merge": {"objects": ["$.properties.nested", {"x": 2, "y": 3}], '
            '"direction": "right"}}',
            {"x": 2, "y": 3},
        ),
        (
            '{"@merge": {"objects": ["$.properties.nested", {"x": 2, "y": 3}], '
            '"direction": "left"}}',
            {"x": 1, "y": 3},
        ),
        # Object.assign: a string spreads its characters, a missing object adds nothing
        (
            '{"@merge": {"objects": ["$.nope", "$.properties.plan", {"a": 1}], '
            '"direction": "right"}}',
            {**{str(i): c for i, c in enumerate("Enterprise")}, "a": 1},
        ),
        # a later undefined value removes the key
        (
            '{"@merge": {"objects": [{"x": 1}, {"x": "$.nope"}], "direction": "right"}}',
            {},
        ),
    ],
)
def test_merge(expr: str, expected: Any) -> None:
    assert value(expr) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('{"@coalesce": ["$.nope", "$.properties.nothing", "$.context.groupId", "x"]}', "acme"),
        ('{"@coalesce": ["$.nope", "$.properties.empty"]}', ""),
        ('{"@coalesce": ["$.nope", "$.properties.nothing"]}', MISSING),
    ],
)
def test_coalesce(expr: str, expected: Any) -> None:
    assert value(expr) == expected


def test_hash_is_sha256_of_canonical_json() -> None:
    got = value('{"@hash": ["$.userId", "$.properties.nested", "$.nope", 5]}')
    canonical = orjson.dumps(["u/1&2", {"x": 1}, None, 5], option=orjson.OPT_SORT_KEYS)
    assert got == hashlib.sha256(canonical).hexdigest()
    # object key order in the event does not matter; a single expression is a one-item list
    reordered = {**EVENT, "properties": {"nested": {"b": 2, "a": 1}}}
    same = {**EVENT, "properties": {"nested": {"a": 1, "b": 2}}}
    assert value('{"@hash": "$.properties.nested"}', reordered) == value(
        '{"@hash": ["$.properties.nested"]}', same
    )


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('{"@string": "$.properties.count"}', "3"),
        ('{"@string": "$.properties.amount"}', "12.5"),
        ('{"@string": "$.properties.whole"}', "1.0"),
        ('{"@string": 1e-7}', "0.0000001"),
        ('{"@string": 1e21}', "1000000000000000000000"),
        ('{"@string": "$.properties.flag"}', "true"),
        ('{"@string": "$.properties.nested"}', '{"x":1}'),
        ('{"@string": "$.event"}', "Order Completed"),
        ('{"@string": "$.nope"}', MISSING),
        ('{"@string": "$.properties.nothing"}', None),
        ('{"@number": "12.5"}', 12.5),
        ('{"@number": " 10 "}', 10),
        ('{"@number": "-1e3"}', -1000.0),
        ('{"@number": "$.properties.count"}', 3),
        ('{"@number": "$.nope"}', MISSING),
        ('{"@number": "$.properties.nothing"}', None),
    ],
)
def test_conversions(expr: str, expected: Any) -> None:
    got = value(expr)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("expr", "shown"),
    [
        ('{"@number": "$.properties.plan"}', '"Enterprise"'),
        ('{"@number": "$.properties.flag"}', "true"),
        ('{"@number": "$.properties.empty"}', '""'),
        ('{"@number": "1e999"}', '"1e999"'),
        ('{"@number": "$.properties.tags"}', '["a","b"]'),
    ],
)
def test_number_failure_rejects_the_event(expr: str, shown: str) -> None:
    result = run(expr)
    assert isinstance(result, Reject)
    assert result.reason == Reason.INVALID_FIELD
    assert result.detail == f"properties.v: @number: {shown} is not a number"
    assert result.mapping == "m"
    assert result.source == "in.jsonl:7"


def test_an_expression_that_raises_is_an_expression_error() -> None:
    result = run("$.properties.mixed.`sorted`")
    assert isinstance(result, Reject)
    assert result.reason == Reason.EXPRESSION_ERROR
    assert result.detail.startswith('properties: expression {"v":"$.properties.mixed.`sorted`"}')
    assert "TypeError" in result.detail


def test_nested_directives_compose() -> None:
    expr = (
        '{"@if": {"exists": "$.properties.plan", "then": {"@case": {"operator": "lower", '
        '"value": {"@replace": {"value": "$.properties.plan", "pattern": "prise"}}}}}}'
    )
    assert value(expr) == "enter"


def test_literal_containers_are_fresh_for_every_event() -> None:
    mappings = load_mapping_text(TEMPLATE.format(expr='{"@literal": {"a": [1]}}'), name="t")
    first = mappings.apply(Record(EVENT, "s", 1))[0]
    assert isinstance(first, Mapped)
    first.payload["properties"]["v"]["a"].append(2)
    second = mappings.apply(Record(EVENT, "s", 2))[0]
    assert isinstance(second, Mapped)
    assert second.payload["properties"]["v"] == {"a": [1]}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # Segment's get: a null or falsy value on the way is the result, and the key stays
        ('{"@path": "$.properties.nothing.deeper"}', None),
        ('{"@path": "$.properties.zero.deeper"}', 0),
        ('{"@path": "$.properties.empty.deeper"}', ""),
        ('{"@path": "$.properties.tags.length"}', 2),
        ('{"@path": "$.properties.plan.length"}', 10),
        ('{"@path": "$.properties.items.1.id"}', "i2"),
        ('{"@path": "$.properties.plan.0"}', "E"),
        ('{"@path": "$.properties.weird key"}', "w"),
        ('{"@path": "$.properties[\'weird key\']"}', "w"),
        ('{"@path": "$.properties.nested.x.y"}', MISSING),
    ],
)
def test_path_is_segments_get(expr: str, expected: Any) -> None:
    assert value(expr) == expected


def test_quoted_keys_and_non_ascii_keys_are_reachable() -> None:
    event = {**EVENT, "properties": {"a.b": 1, "größe": "XL", "plan name": "P"}}
    assert value("$.properties['a.b']", event) == 1
    assert value("$.properties['größe']", event) == "XL"
    assert value("$.properties['plan name']", event) == "P"
    assert value('{"@path": "$.properties.größe"}', event) == "XL"


def test_big_integers_are_javascript_numbers() -> None:
    """Segment's runtime parsed the export with JSON.parse: digits past 2**53 are lost."""
    event = {**EVENT, "properties": {"big": 12345678901234567891}}
    assert value("$.properties.big", event) == 12345678901234567168.0
    assert value('{"@template": "{{properties.big}}"}', event) == "12345678901234567000"
    whole = run("$.properties", event)
    assert isinstance(whole, Mapped)
    assert whole.payload["properties"]["v"] == {"big": 12345678901234567168.0}


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ('{"@if": {"then": 1}}', '@if requires an "exists" key or a "blank" key'),
        (
            '{"@case": {"operator": "title", "value": "$.event"}}',
            'operator key should have a value of "lower" or "upper"',
        ),
        ('{"@path": {"@literal": 5}}', "@path: expected string, got number"),
        ('[{"@nope": 1}]', "@nope is not a valid directive, got undefined"),
        ('{"@liquid": "{% for x in y %}{% endfor %}"}', 'tag "for" is disabled'),
        ('{"@liquid": "{{ event | reverse }}"}', 'filter "reverse" is disabled'),
        ('{"@liquid": "{% ifchanged %}x{% endifchanged %}"}', 'tag "ifchanged" not found'),
        (
            '{"@replace": {"value": "$.event", "pattern": "O", "pattern2": "much-too-long"}}',
            '@replace requires a "pattern" less than 10 characters',
        ),
    ],
)
def test_where_segment_throws_the_event_is_a_mapping_error(expr: str, message: str) -> None:
    result = run(expr)
    assert isinstance(result, Reject)
    assert result.reason == Reason.MAPPING_ERROR
    assert result.detail == f"properties.v: Segment's mapping-kit throws: {message}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # JavaScript's case-insensitive matching: no long-s/s, Kelvin/k or sharp-s/SS folding
        ({"value": "ſtop", "pattern": "s", "replacement": "x", "ignorecase": True}, "ſtop"),
        ({"value": "\u212a", "pattern": "k", "replacement": "x", "ignorecase": True}, "\u212a"),
        ({"value": "Straße", "pattern": "SS", "replacement": "x", "ignorecase": True}, "Straße"),
        ({"value": "ÉCOLE", "pattern": "é", "replacement": "e", "ignorecase": True}, "eCOLE"),
    ],
)
def test_replace_folds_case_as_javascript(args: dict[str, Any], expected: str) -> None:
    assert value(orjson.dumps({"@replace": args}).decode()) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            '{"@arrayPath": ["$.properties.items", {"n": {"@path": "$.n"}}]}',
            [{"n": i} for i in (1, 2, 3)],
        ),
        ('{"@flatten": {"value": {"@path": "$.properties.nested"}, "separator": "."}}', {"x": 1}),
        (
            '{"@flatten": {"value": {"a": {"b": [1, 2]}}, "separator": "_"}}',
            {"a_b_0": 1, "a_b_1": 2},
        ),
        ('{"@json": {"mode": "encode", "value": {"@path": "$.properties.tags"}}}', '["a","b"]'),
        ('{"@json": {"mode": "decode", "value": "{\\"a\\": [1]}"}}', {"a": [1]}),
        ('{"@json": {"mode": "decode", "value": "not json"}}', "not json"),
        (
            '{"@transform": {"apply": {"p": {"@path": "$.properties.plan"}}, '
            '"mapping": {"@path": "$.p"}}}',
            "Enterprise",
        ),
        ('{"@excludeWhenNull": {"a": null, "b": 1}}', {"b": 1}),
        ('{"@excludeWhenNull": "$.properties.nothing"}', MISSING),
        (
            '{"@liquid": "{{ properties.amount | plus: 1 }} {{ properties.plan | downcase }}"}',
            "13.5 enterprise",
        ),
        ('{"@liquid": "{{ properties.count | divided_by: 2 }}"}', "1.5"),  # JavaScript division
        ('{"@liquid": "{{ properties.mixed | join }}|{{ properties.plan | size }}"}', "1 a|10"),
        ('{"@liquid": "{{ properties.plan | remove_last: \\"e\\" }}"}', "Enterpris"),
        ('{"@liquid": "{% echo properties.whole %}{{ properties.tags | first }}"}', "1a"),
    ],
)
def test_segment_directives(expr: str, expected: Any) -> None:
    assert value(expr) == expected
