"""There is one path through a mapping, and it applies each output rule exactly as stated.

A mapping compiles to one generated function (``Mapping.build``) that inlines simple paths and
skips a rule's call when the value already passes it. Random Segment-like events and random
mappings check that this function gives what the rules give when applied one by one, in field
order: the same payload, or the same reject. The timestamp parser's shortcut through
``datetime.fromisoformat`` is held to the regular parse the same way.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from segmetro.mapping import load_mapping_text, normalize_timestamp
from segmetro.mapping import timestamps as timestamps_module
from segmetro.mapping.core import Mapping, _Rejected
from segmetro.mapping.timestamps import is_normal_form
from segmetro.mapping.values import MISSING, ObjectExpr, code_of
from segmetro.models import Mapped, Record, Reject

# ---------------------------------------------------------------------------------- events

normal_ts = st.builds(
    lambda d, h, m, s, ms: f"2026-11-{d:02d}T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z",
    st.integers(1, 30),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
)
odd_ts = st.sampled_from(
    [
        "2026-W47-1T17:16:57.455Z",  # ISO week date: fromisoformat takes it, the normal form not
        "2026-11-23T17:16:5\u0663.455Z",  # an Arabic-Indic digit
        "2026-11-23T17:16:57.\u066455Z",
        "2026-02-30T10:00:00.000Z",
        "2026-11-31T10:00:00.000Z",
        "2026-11-23T24:00:00.000Z",
        "2026-11-23T17:16:60.000Z",
        "0000-11-23T17:16:57.455Z",
        "2026-11-23T17:16:57.455+01:00",
        "2026-11-23T17:16:57.455+0\u0663:00",  # a non-ASCII digit in the offset
        "2026-11-23T17:16:57.455-23:59",
        "0001-01-01T00:30:00.000+01:00",  # before the year 1 in UTC
        "9999-12-31T23:30:00.000-01:00",  # after 9999 in UTC
        "2026-11-23 17:16:57.455Z",
        "2026-11-23T17:16:57.45Z",
        "2026-11-23T17:16:57.4555Z",
        "2026-11-23t17:16:57.455z",
        "2026-11-23",
        "2026-11-25T01:02:03Z",
        "1700000000",
        "",
        "  2026-11-23T17:16:57.455Z",
        "2025-01-01T00:00:00.000Z",  # too old
        "2026-12-25T00:00:00.000Z",  # too new
    ]
)
#: ``YYYY-MM-DDTHH:MM:SS.mmm±HH:MM``, in and out of range (the offset form's own shortcut)
offset_ts = st.builds(
    "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:03d}{}{:02d}:{:02d}".format,
    st.sampled_from([1, 2026, 9999]),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 24),
    st.integers(0, 60),
    st.integers(0, 60),
    st.integers(0, 999),
    st.sampled_from("+-"),
    st.integers(0, 25),
    st.integers(0, 60),
)
timestamps = st.one_of(
    normal_ts,
    odd_ts,
    offset_ts,
    normal_ts,
    st.integers(1_790_000_000, 1_800_000_000),
    st.floats(1.79e12, 1.8e12, allow_nan=False),
    st.none(),
    st.booleans(),
    st.text(alphabet="0123456789-T:.Z W+\u0663", min_size=20, max_size=26),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "abc", "API Call", "Job Completed", "x" * 130, "0", "1.5"]),
)
#: what string_properties and the output treat specially: big integers, odd floats
numbers = st.one_of(
    st.sampled_from([2**53 - 1, 2**53, 2**53 + 1, -(2**53) - 1, 2**64, 10**30, 0, -1]),
    st.sampled_from([1.0, 1.5, 1e-07, 1e21, -0.0, 123456789.125]),
    st.integers(),
)
values = st.recursive(
    st.one_of(scalars, numbers),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c", "id"]), children, max_size=3),
    ),
    max_leaves=8,
)
ids = st.one_of(
    st.sampled_from(["m1", "m2", "m3", "m4", "m5", "m6"]),
    st.sampled_from(["m1", "m2", "m3", "m4", "m5", "m6"]),
    st.sampled_from(["", "x" * 129]),
    st.integers(1, 5),
    st.none(),
)


PROPERTY_KEYS = ["a", "b", "n", "big", "f", "flag", "nul", "o", "l", "plan"]

# Built once, not per drawn event: a strategy made inside `events` is validated anew each time,
# which was most of the time of the property test below. The draws are the same.
_types = st.sampled_from(["track", "track", "identify", 7])
_event_names = st.sampled_from(["API Call", "Job Completed", "Seat Added", 3, None])
_contexts = st.one_of(
    st.just({"groupId": "g1"}),
    st.fixed_dictionaries({"groupId": st.one_of(st.sampled_from(["g1", "g2", ""]), scalars)}),
    values,
)
_properties = st.one_of(
    st.dictionaries(st.sampled_from(PROPERTY_KEYS), values, max_size=5),
    st.dictionaries(st.sampled_from(["a", "b", "n"]), values, max_size=3),
    values,
)
_user_ids = st.one_of(st.sampled_from(["u1", "u2"]), scalars)
_EVENT_KEYS = sorted(["type", "event", "messageId", "timestamp", "context", "properties", "userId"])
_dropped_keys = st.sets(st.sampled_from(_EVENT_KEYS), max_size=2)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": draw(_types),
        "event": draw(_event_names),
        "messageId": draw(ids),
        "timestamp": draw(timestamps),
        "context": draw(_contexts),
        "properties": draw(_properties),
        "userId": draw(_user_ids),
    }
    assert sorted(event) == _EVENT_KEYS
    for key in draw(_dropped_keys):
        del event[key]
    return event


# -------------------------------------------------------------------------------- mappings

TEMPLATES = [
    {"@template": "{{messageId}}-x"},
    {"@template": "{{properties.a}}/{{ properties.n.id }}:{{context.groupId}}"},
    {"@template": "{{userId}}"},
    {"@template": "{{properties.constructor}}|{{properties.a.length}}|{{context.0}}"},
    {"@template": "{{properties.o}}{{properties.l}}{{.}}"},
    {"@template": "no placeholders"},
    {"@template": "{{{messageId}}}-triple"},
]
FIELD_CHOICES: dict[str, list[Any]] = {
    "transaction_id": [
        "$.messageId",
        "$['messageId']",
        "$.context.groupId",
        *TEMPLATES,
        {"@coalesce": ["$.properties.a", {"@path": "$.userId"}, "fallback"]},
        {"@if": {"exists": "$.properties.a", "then": {"@template": "{{properties.a}}-y"}}},
        "$..messageId",
        "fixed",
    ],
    "customer_id": [
        "$.context.groupId",
        "$.userId",
        "$.properties.a",
        "acme",
        "$.context[0]",
        {"@coalesce": [{"@path": "$.context.groupId"}, {"@path": "$.userId"}]},
        {"@coalesce": [{"@path": "$.properties.n"}]},
        {"@if": {"blank": "$.properties.a", "then": "$.userId", "else": "blank"}},
        {"@if": {"blank": {"@path": "$.properties.l"}, "then": {"@path": "$.properties.l"}}},
        {"@if": {"exists": {"@path": "$.properties.b"}, "else": "$.userId"}},
        {"@if": {"exists": {"@path": "$.properties.plan"}, "then": "$.properties.plan",
                 "else": "standard"}},
        {"@path": "$.properties.a.b"},
        {"@path": "$.properties.constructor"},
        {"@number": "$.properties.a"},
    ],
    "event_type": [
        "$.event",
        "api_call",
        {"@case": {"operator": "lower", "value": "$.event"}},
        {"@template": "{{event}}"},
        {"@coalesce": ["$.properties.b", "$.event"]},
    ],
    "timestamp": [
        "$.timestamp",
        "$.properties.a",
        {"@string": "$.timestamp"},
        {"@coalesce": ["$.properties.a", "$.timestamp"]},
        "2026-11-25T01:02:03Z",
        "2026-11-23T19:16:57.455+02:00",
        "2026-11-23T19:16:57.455",
    ],
    "properties": [
        "$.properties",
        "$.context",
        {"a": "$.properties.a", "n": "$.properties.n", "k": 5},
        {
            "a": {"@number": "$.properties.a"},
            "nested": {
                "b": {"@number": "$.properties.b"},
                "t": {"@template": "{{properties.n}}"},
                "m": "$.properties.missing",
            },
            "i": {"@if": {"exists": "$.properties.n", "then": "$.properties.n"}},
            "c": {"@coalesce": ["$.properties.b", 1.5]},
        },
        {
            "big": "$.properties.big",
            "f": "$.properties.f",
            "flag": "$.properties.flag",
            "nul": "$.properties.nul",
            "o": "$.properties.o",
            "l": "$.properties.l",
            "fn": {"@path": "$.properties.constructor"},
            "t": True,
            "z": None,
            "lit": {"@literal": {"a": [1, 2**60]}},
        },
        {"tier": {"@if": {"exists": {"@path": "$.properties.plan"},
                          "then": {"@path": "$.properties.plan"}, "else": "standard"}},
         "s": "$.properties.n", "fixed": 2**53 + 1},
        "$.properties.a",
        None,
    ],
}  # fmt: skip
TRIGGERS = [None, 'type = "track"', 'event = "API Call" or event = "Job Completed"', "bad ="]


@st.composite
def mappings(draw: st.DrawFn) -> str:
    items = []
    for n in range(draw(st.integers(1, 2))):
        fields = {}
        for name, choices in FIELD_CHOICES.items():
            # the common mapping (first choice) half of the time: the fast path's home ground
            choice = draw(st.sampled_from([choices[0]] * len(choices) + choices))
            if choice is not None:
                fields[name] = choice
        if n == 1 and draw(st.booleans()):
            fields["transaction_id"] = {"@template": "{{messageId}}-second"}
        item: dict[str, Any] = {"name": f"m{n}", "fields": fields}
        trigger = draw(st.sampled_from(TRIGGERS[:-1]))
        if trigger is not None:
            item["trigger"] = trigger
        if draw(st.booleans()):
            item["string_properties"] = True
        items.append(item)
    return json.dumps({"version": 1, "mappings": items})


# ------------------------------------------------------------------------------ the oracle


def by_the_rules(mapping: Mapping, event: dict[str, Any]) -> dict[str, Any] | tuple[str, str]:
    """Each field's expression, then its rule, one field after the other (no generated code)."""
    payload: dict[str, Any] = {}
    rules = {"transaction_id": mapping._identifier, "timestamp": mapping._timestamp,
             "properties": mapping._properties}  # fmt: skip
    for spec in mapping.fields:
        try:
            value = spec.expr(event)
        except Exception as exc:  # noqa: BLE001 - the oracle states what becomes of any failure
            failure = mapping._failed(spec, exc)
            return failure.reason, failure.detail
        try:
            value = rules.get(spec.name, mapping._identifier)(spec, value)
        except _Rejected as exc:
            return exc.reason, exc.detail
        if value is not None and value is not MISSING:
            payload[spec.name] = value
    return payload


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=mappings(), batch=st.lists(events(), min_size=1, max_size=10))
def test_the_compiled_mapping_is_its_rules_applied_in_order(
    text: str, batch: list[dict[str, Any]]
) -> None:
    for mapping in load_mapping_text(text, name="m.yaml").mappings:
        for event in batch:
            expected = by_the_rules(mapping, event)
            got = mapping.map(Record(event, "e.jsonl", 1))
            if isinstance(expected, dict):
                assert isinstance(got, Mapped), got
                assert got.payload == expected
                assert list(got.payload) == list(expected)  # the same key order: same bytes
            else:
                assert isinstance(got, Reject)
                assert (got.reason, got.detail) == expected


@given(value=st.one_of(timestamps, st.text(max_size=30)))
@settings(max_examples=800, deadline=None)
def test_the_timestamp_shortcut_reads_as_the_parser_does(value: Any) -> None:
    """normalize_timestamp with its shortcuts (the normal form, whole seconds, offsets, the
    fromisoformat reading) = the general pattern alone (result or message)."""

    def outcome(parse: Any) -> str:
        try:
            return "ok " + parse(value)
        except ValueError as exc:
            return f"error {exc}"

    quick = outcome(normalize_timestamp)
    if isinstance(value, str):
        with mock.patch.object(timestamps_module, "_quick", return_value=None):
            regular = outcome(lambda text: timestamps_module._from_text(text, text))
        assert quick == regular
    if isinstance(value, str) and is_normal_form(value):
        assert quick == f"ok {value}"


@given(value=offset_ts)
@example("2026-11-19T23:30:00.000-00:30")  # on the next midnight
@example("2026-11-19T23:29:59.999-00:30")
@example("2026-11-19T01:00:00.000+01:00")  # on this midnight
@example("2026-11-19T00:59:59.999+01:00")
@example("2026-12-31T23:00:00.000-01:00")  # into the next year
@example("2026-11-19T12:00:00.000+24:00")
@example("2026-11-19T12:00:00.000+2a:00")
@settings(max_examples=1500, deadline=None)
def test_an_offset_is_moved_on_the_clock_as_the_parser_converts_it(value: str) -> None:
    """The offset form's shortcut (the clock moved within the day, else ``astimezone``) gives
    what the general pattern gives, and decides every stamp ``fromisoformat`` reads."""
    with mock.patch.object(timestamps_module, "_quick", return_value=None):
        try:
            regular: str | None = timestamps_module._from_text(value, value)
        except ValueError:
            regular = None
    shifted = timestamps_module._shifted(value)
    if shifted is not None:
        assert shifted == regular
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return
    if regular is not None:
        assert shifted == regular


def test_simple_paths_are_inlined_and_every_value_takes_the_one_path() -> None:
    text = json.dumps(
        {
            "version": 1,
            "mappings": [
                {
                    "name": "usage",
                    "fields": {
                        "transaction_id": "$.messageId",
                        "customer_id": "$.context.groupId",
                        "timestamp": "$.timestamp",
                        "event_type": "$.event",
                        "properties": "$.properties",
                    },
                }
            ],
        }
    )
    event = {
        "messageId": "m",
        "context": {"groupId": "g"},
        "timestamp": "2026-11-23T17:16:57.455Z",
        "event": "API Call",
        "properties": {"n": 1},
    }
    mapping = load_mapping_text(text).mappings[0]
    assert mapping.build(event) == {
        "transaction_id": "m",
        "customer_id": "g",
        "event_type": "API Call",
        "timestamp": "2026-11-23T17:16:57.455Z",
        "properties": {"n": 1},
    }
    # an offset, a number id, no properties: the same function, the rules do the rest
    odd = dict(event, timestamp="2026-11-23T19:16:57+02:00", messageId=5)
    del odd["properties"]
    assert mapping.build(odd) == {
        "transaction_id": "5",
        "customer_id": "g",
        "event_type": "API Call",
        "timestamp": "2026-11-23T17:16:57.000Z",
    }
    with pytest.raises(_Rejected, match="timestamp"):
        mapping.build(dict(event, timestamp="2026-W47-1T17:16:57.455Z"))


@pytest.mark.parametrize("value", ["2026-W47-1T17:16:57.455Z", "2026-11-23T17:16:5\u0663.455Z"])
def test_not_normal_form(value: str) -> None:
    assert not is_normal_form(value)


def test_the_varied_benchmark_mapping_calls_no_expression() -> None:
    """The varied benchmark's directives (@template, @coalesce, @if, @path, objects) are written
    into the generated build, not called: an expression left as a call is bound as ``_e<n>``,
    and no expression with a code form may be referenced at all."""
    from benchmarks.gen_export import VARIED_MAPPING_YAML

    for mapping in load_mapping_text(VARIED_MAPPING_YAML).mappings:
        scope = mapping.build.__globals__
        source = scope["__source__"]
        assert re.search(r"\b_e\d+\(", source) is None, source
        referenced = [scope[name] for name in mapping.build.__code__.co_names if name in scope]
        assert not [value for value in referenced if callable(value) and code_of(value)]
        assert not [value for value in referenced if isinstance(value, ObjectExpr)]
        if mapping.name == "api":
            assert "+ '-api'" in source  # the template
            assert "usual" in source  # string_properties per key


# ------------------------------------------------------- mappings the generated code once broke

_BASE = 'transaction_id: $.id, timestamp: "2026-11-20T00:00:00Z", customer_id: c, event_type: e'


def _nested(levels: int) -> str:
    text = '"$.x"'
    for _ in range(levels):
        text = f"{{a: {text}}}"
    return text


def _nested_value(levels: int) -> Any:
    value: Any = 5
    for _ in range(levels):
        value = {"a": value}
    return value


_ARRAY_PATH_OWN_UNDEFINED = """
      properties:
        x:
          "@arrayPath":
            - "@merge": {objects: [{constructor: "$.nope", toString: "$.nope"}], direction: right}
            - c: {"@if": {exists: {"@path": "constructor"}, then: "yes", else: "no"}}
              t: {"@coalesce": [{"@path": "toString"}, "fallback"]}
"""


@pytest.mark.parametrize(
    ("fields", "string_properties", "properties"),
    [
        # an empty object under string_properties: its block once held no statement
        (f"{{{_BASE}, properties: {{}}}}", True, {}),
        # 30 nested objects: more than Python's 20 nested try blocks if all were inlined
        (f"{{{_BASE}, properties: {{p: {_nested(30)}}}}}", False, {"p": _nested_value(30)}),
        # 150 @coalesce items: once one indentation level each (Python allows 100)
        (
            f"{{{_BASE}, properties: {{x: {{'@coalesce': ["
            + ", ".join(f'"$.no{i}"' for i in range(150))
            + ', "last"]}}}',
            False,
            {"x": "last"},
        ),
        # an own property holding undefined hides the prototype's member (Object.assign)
        (
            "\n      transaction_id: $.id\n      timestamp: '2026-11-20T00:00:00Z'\n"
            "      customer_id: c\n      event_type: e" + _ARRAY_PATH_OWN_UNDEFINED,
            False,
            {"x": [{"c": "no", "t": "fallback"}]},
        ),
    ],
)
def test_mappings_the_generated_code_once_broke(
    fields: str, string_properties: bool, properties: Any
) -> None:
    flag = str(string_properties).lower()
    head = "version: 1\nmappings:\n  - name: m\n"
    text = f"{head}    string_properties: {flag}\n    fields: {fields}\n"
    mapping = load_mapping_text(text).mappings[0]
    event = {"id": "1", "x": 5}
    expected = {"transaction_id": "1", "customer_id": "c", "event_type": "e",
                "timestamp": "2026-11-20T00:00:00.000Z", "properties": properties}  # fmt: skip
    assert mapping.build(event) == expected
    assert by_the_rules(mapping, event) == expected
