"""Applying mappings: output rules, reject reasons and details, triggers, field statistics."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from segmetro.errors import MappingFileError
from segmetro.mapping import MISSING, FieldStats, MappingSet, load_mapping_text
from segmetro.models import Mapped, Reason, Record, Reject

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Job Completed",
    "messageId": "m-1",
    "timestamp": "2021-07-10T07:37:11+02:00",
    "context": {"groupId": "acme"},
    "properties": {"n": 2, "price": 1.5, "whole": 3.0, "ok": True, "none": None, "obj": {"a": 1}},
}


def mapping(**fields: str) -> MappingSet:
    defaults = {
        "transaction_id": "$.messageId",
        "customer_id": "$.context.groupId",
        "event_type": "$.event",
        "timestamp": "$.timestamp",
    }
    defaults.update(fields)
    body = "".join(f"      {name}: {expr}\n" for name, expr in defaults.items())
    return load_mapping_text(
        f"version: 1\nmappings:\n  - name: m\n    fields:\n{body}", name="m.yaml"
    )


def apply_one(mappings: MappingSet, event: dict[str, Any] | None = None) -> Mapped | Reject:
    results = mappings.apply(Record(EVENT if event is None else event, "in.jsonl", 3))
    assert len(results) == 1
    return results[0]


def reject(mappings: MappingSet, event: dict[str, Any] | None = None) -> Reject:
    result = apply_one(mappings, event)
    assert isinstance(result, Reject), result
    assert result.mapping == "m"
    assert result.source == "in.jsonl:3"
    assert result.event == (EVENT if event is None else event)
    assert result.payload is None
    return result


def test_payload_has_metronome_key_order_and_normalised_timestamp() -> None:
    result = apply_one(mapping(properties="$.properties"))
    assert isinstance(result, Mapped)
    assert list(result.payload) == [
        "transaction_id",
        "customer_id",
        "event_type",
        "timestamp",
        "properties",
    ]
    assert result.payload["timestamp"] == "2021-07-10T05:37:11.000Z"
    assert result.mapping == "m"
    assert result.record == Record(EVENT, "in.jsonl", 3)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("$.properties.n", "2"),
        ("$.properties.price", "1.5"),
        ("$.properties.whole", "3"),  # as Segment's JavaScript coercion writes 3.0
        ("-7", "-7"),
        ("' spaced '", " spaced "),
    ],
)
def test_identifiers_accept_strings_and_numbers(expr: str, expected: str) -> None:
    for field in ("transaction_id", "customer_id", "event_type"):
        result = apply_one(mapping(**{field: expr}))
        assert isinstance(result, Mapped)
        assert result.payload[field] == expected


@pytest.mark.parametrize(
    ("expr", "reason", "detail"),
    [
        ("$.context.nope", Reason.MISSING_FIELD, "expression $.context.nope matched nothing"),
        ("$.properties.none", Reason.MISSING_FIELD, "expression $.properties.none is null"),
        ("''", Reason.MISSING_FIELD, "expression  is empty"),
        (
            "$.properties.ok",
            Reason.INVALID_FIELD,
            "expected a string or a number, got a boolean true",
        ),
        (
            "$.properties.obj",
            Reason.INVALID_FIELD,
            'expected a string or a number, got an object {"a":1}',
        ),
        (
            "[a, b]",
            Reason.INVALID_FIELD,
            'expected a string or a number, got a list ["a","b"]',
        ),
    ],
)
def test_identifier_rejects(expr: str, reason: str, detail: str) -> None:
    for field in ("transaction_id", "customer_id", "event_type"):
        result = reject(mapping(**{field: expr}))
        assert result.reason == reason
        assert result.detail == f"{field}: {detail}"


def test_the_default_customer_id_missing_reads_well() -> None:
    event = {k: v for k, v in EVENT.items() if k != "context"}
    result = reject(mapping(), event)
    assert result.reason == Reason.MISSING_FIELD
    assert result.detail == "customer_id: expression $.context.groupId matched nothing"


def test_transaction_id_length_limit() -> None:
    ok = apply_one(mapping(transaction_id="x" * 128))
    assert isinstance(ok, Mapped)
    result = reject(mapping(transaction_id="x" * 129))
    assert result.reason == Reason.INVALID_FIELD
    assert result.detail.startswith(
        "transaction_id: 129 characters, more than Metronome's 128: \"xxx"
    )


def test_directive_sources_are_shown_as_json() -> None:
    result = reject(mapping(customer_id='{"@coalesce": [$.a, $.b]}'))
    assert result.detail == ('customer_id: expression {"@coalesce":["$.a","$.b"]} matched nothing')


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        ("not a date", Reason.INVALID_TIMESTAMP, 'timestamp "not a date" is not RFC 3339'),
        (True, Reason.INVALID_TIMESTAMP, "timestamp true is a boolean, not a time"),
        ("", Reason.INVALID_TIMESTAMP, "timestamp is an empty string"),
        (None, Reason.MISSING_FIELD, "expression $.timestamp is null"),
        (MISSING, Reason.MISSING_FIELD, "expression $.timestamp matched nothing"),
    ],
)
def test_timestamp_rejects(value: Any, reason: str, detail: str) -> None:
    event = dict(EVENT)
    if value is MISSING:
        del event["timestamp"]
    else:
        event["timestamp"] = value
    result = reject(mapping(), event)
    assert result.reason == reason
    assert result.detail.startswith(f"timestamp: {detail}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1625895431, "2021-07-10T05:37:11.000Z"),
        ("1625895431000", "2021-07-10T05:37:11.000Z"),
        ("2021-01-01", "2021-01-01T00:00:00.000Z"),
    ],
)
def test_timestamps_are_normalised(value: Any, expected: str) -> None:
    result = apply_one(mapping(), {**EVENT, "timestamp": value})
    assert isinstance(result, Mapped)
    assert result.payload["timestamp"] == expected


def test_properties_must_be_an_object() -> None:
    result = reject(mapping(properties="$.properties.n"))
    assert result.reason == Reason.INVALID_FIELD
    assert result.detail == "properties: expected an object, got 2 (expression $.properties.n)"
    for absent in ("$.nope", "$.properties.none"):
        mapped = apply_one(mapping(properties=absent))
        assert isinstance(mapped, Mapped)
        assert "properties" not in mapped.payload


def test_string_properties() -> None:
    text = """\
version: 1
mappings:
  - name: m
    string_properties: true
    fields:
      transaction_id: $.messageId
      customer_id: $.context.groupId
      event_type: $.event
      timestamp: $.timestamp
      properties:
        n: $.properties.n
        price: $.properties.price
        whole: $.properties.whole
        ok: $.properties.ok
        no: false
        none: $.properties.none
        obj: $.properties.obj
        list: [1, 2]
        text: hello
        tiny: 1e-7
"""
    result = apply_one(load_mapping_text(text, name="m"))
    assert isinstance(result, Mapped)
    assert result.payload["properties"] == {
        "n": "2",
        "price": "1.5",
        "whole": "3.0",
        "ok": "true",
        "no": "false",
        "none": None,
        "obj": {"a": 1},
        "list": [1, 2],
        "text": "hello",
        "tiny": "0.0000001",
    }


def test_every_matching_mapping_fires_in_file_order() -> None:
    text = """\
version: 1
defaults:
  transaction_id: $.messageId
  customer_id: $.context.groupId
  timestamp: $.timestamp
mappings:
  - name: first
    fields: {event_type: one}
  - name: broken
    fields: {event_type: $.nope}
  - name: third
    fields: {event_type: three, transaction_id: {"@template": "{{messageId}}-3"}}
"""
    results = load_mapping_text(text, name="m").apply(Record(EVENT, "s", 1))
    assert [type(r).__name__ for r in results] == ["Mapped", "Reject", "Mapped"]
    first, broken, third = results
    assert isinstance(first, Mapped)
    assert isinstance(broken, Reject)
    assert isinstance(third, Mapped)
    assert (first.mapping, broken.mapping, third.mapping) == ("first", "broken", "third")
    assert third.payload["transaction_id"] == "m-1-3"
    assert broken.detail == "event_type: expression $.nope matched nothing"


def test_triggers_select_events_and_empty_means_filtered() -> None:
    text = """\
version: 1
defaults:
  transaction_id: $.messageId
  customer_id: $.context.groupId
  timestamp: $.timestamp
  event_type: $.event
mappings:
  - name: tracks
    trigger: type = "track"
  - name: big
    trigger: properties.n > 1
"""
    mappings = load_mapping_text(text, name="m")
    assert mappings.names() == ["tracks", "big"]
    assert mappings.mappings[0].trigger_text == 'type = "track"'
    assert [r.mapping for r in mappings.apply(Record(EVENT, "s", 1))] == ["tracks", "big"]
    small = {**EVENT, "properties": {"n": 1}}
    assert [r.mapping for r in mappings.apply(Record(small, "s", 1))] == ["tracks"]
    page = {**EVENT, "type": "page", "properties": {}}
    assert mappings.apply(Record(page, "s", 1)) == []
    assert mappings.mappings[0].matches(EVENT)
    assert not mappings.mappings[1].matches(page)


class _Exploding(dict[str, Any]):
    """An event whose field lookups raise, as no JSON value does: a trigger that fails."""

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError(f"no {key}")


def test_a_trigger_that_raises_rejects_the_event_for_its_mapping_and_the_next_still_run() -> None:
    text = """\
version: 1
mappings:
  - name: tracks
    trigger: type = "track"
    fields: {transaction_id: x, customer_id: c, event_type: e, timestamp: $.timestamp}
  - name: always
    fields: {transaction_id: y, customer_id: c, event_type: e, timestamp: $.timestamp}
"""
    mappings = load_mapping_text(text, name="m")
    event = _Exploding(EVENT)
    failed, built = mappings.apply(Record(event, "in.jsonl", 7))
    assert isinstance(failed, Reject)
    assert failed.reason == Reason.EXPRESSION_ERROR
    assert failed.mapping == "tracks"
    assert failed.detail == "trigger 'type = \"track\"' failed: RuntimeError: no type"
    assert failed.source == "in.jsonl:7"
    assert failed.event is event
    assert isinstance(built, Mapped)
    assert built.mapping == "always"
    assert built.payload["transaction_id"] == "y"


def test_a_bad_trigger_is_a_load_error_with_line_and_position() -> None:
    text = """\
version: 1
mappings:
  - name: m
    trigger: type = "track" and ((event = "a"))
    fields: {transaction_id: a, customer_id: b, event_type: c, timestamp: $.timestamp}
"""
    with pytest.raises(MappingFileError) as excinfo:
        load_mapping_text(text, name="m.yaml")
    err = excinfo.value
    assert (err.line, err.key) == (4, "mappings[0].trigger")
    assert err.message.startswith("invalid trigger: nested parentheses")
    assert "at position 21 of " in err.message


def test_a_bad_trigger_in_a_block_scalar_names_its_line() -> None:
    text = (
        "version: 1\nmappings:\n  - name: m\n    trigger: |\n"
        '      type = "track" and\n      ((event = "a"))\n'
        "    fields: {transaction_id: a, customer_id: b, event_type: c, timestamp: $.timestamp}\n"
    )
    with pytest.raises(MappingFileError) as excinfo:
        load_mapping_text(text, name="m.yaml")
    assert excinfo.value.line == 6


def test_trigger_warnings_are_collected() -> None:
    text = """\
version: 1
defaults: {transaction_id: a, customer_id: b, event_type: c, timestamp: $.timestamp}
mappings:
  - name: clean
    trigger: type = "track"
  - name: shouting
    trigger: type = "track" AND event = "x"
"""
    mappings = load_mapping_text(text, name="m.yaml")
    (warning,) = mappings.warnings
    assert (warning.path, warning.line, warning.mapping) == ("m.yaml", 7, "shouting")
    assert warning.message.startswith("trigger: 'AND' is not a connective")
    assert warning.message.endswith("(at position 16)")
    assert str(warning).startswith("m.yaml:7: mapping 'shouting': trigger: 'AND'")


def test_field_stats_count_empty_fields_per_mapping() -> None:
    text = """\
version: 1
mappings:
  - name: m
    fields:
      transaction_id: $.messageId
      customer_id: $.context.groupId
      event_type: $.event
      timestamp: $.timestamp
      properties:
        n: $.properties.n
        blank: $.properties.blank
        conv: {"@number": $.properties.conv}
"""
    mappings = load_mapping_text(text, name="m")
    events = [
        EVENT,
        {**EVENT, "context": {}, "properties": {"blank": "", "conv": "1"}},
        {**EVENT, "context": {"groupId": None}, "properties": {"n": 1, "conv": "x"}},
        {**EVENT, "properties": {"n": 0, "blank": "b"}},
    ]
    stats = FieldStats()
    results = [mappings.apply(Record(event, "s", i), stats)[0] for i, event in enumerate(events)]
    assert [getattr(r, "reason", "ok") for r in results] == [
        "ok",
        Reason.MISSING_FIELD,
        Reason.MISSING_FIELD,  # customer_id fails before properties.conv: field order
        "ok",
    ]
    rows = {(row.field): (row.missing, row.matched) for row in stats.rows()}
    assert rows == {
        "transaction_id": (0, 4),
        "customer_id": (2, 4),
        "event_type": (0, 4),
        "timestamp": (0, 4),
        "properties.n": (1, 4),
        "properties.blank": (3, 4),
        "properties.conv": (3, 4),  # missing twice, failed once
    }
    assert stats.rows()[0] == ("m", "transaction_id", 0, 4)

    merged = FieldStats()
    merged.merge(stats)
    merged.merge(stats)
    assert merged.rows()[1] == ("m", "customer_id", 4, 8)
    # stats travel between processes
    assert pickle.loads(pickle.dumps(stats)).rows() == stats.rows()


def test_stats_do_not_change_results() -> None:
    mappings = mapping(properties="{n: $.properties.n, x: {'@number': $.properties.obj}}")
    plain = mappings.apply(Record(EVENT, "s", 1))
    counted = mappings.apply(Record(EVENT, "s", 1), FieldStats())
    assert plain == counted
    assert isinstance(plain[0], Reject)
    assert plain[0].detail == 'properties.x: @number: {"a":1} is not a number'


def test_missing_is_a_picklable_singleton() -> None:
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING
    assert not MISSING
    assert repr(MISSING) == "MISSING"
