"""The starter mapping (Segment's defaults) and the conversion of Segment action settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from segmetro.errors import ConfigError
from segmetro.mapping import load_mapping_text, mapping_from_segment, starter_mapping_text
from segmetro.models import Mapped, Record, Reject

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

#: Shaped like Segment's createTestEvent with a groupId, as in the destination's own unit test.
TRACK: dict[str, Any] = {
    "type": "track",
    "event": "Test Event",
    "userId": "user1234",
    "anonymousId": "anonId1234",
    "messageId": "4c6b7bb5-6a38-44d3-9d8b-5b9a1e6f7c21",
    "timestamp": "2021-07-10T07:37:11.5+02:00",
    "sentAt": "2021-07-10T05:37:12.000Z",
    "receivedAt": "2021-07-10T05:37:12.100Z",
    "context": {"groupId": "mock-group-id", "library": {"name": "analytics-node"}},
    "properties": {"plan": "pro", "seats": 3},
}


def payloads(text: str, event: dict[str, Any]) -> list[dict[str, Any]]:
    results = load_mapping_text(text, name="m.yaml").apply(Record(event, "in", 1))
    assert all(isinstance(r, Mapped) for r in results), results
    return [r.payload for r in results if isinstance(r, Mapped)]


def test_starter_sends_what_segments_destination_sends() -> None:
    text = starter_mapping_text()
    mappings = load_mapping_text(text, name="mapping.yaml")
    assert mappings.warnings == []
    (mapping,) = mappings.mappings
    assert mapping.trigger_text == 'type = "track"'
    (payload,) = payloads(text, TRACK)
    # Segment: the five keys; timestamp through dayjs.utc(x).toISOString()
    assert payload == {
        "transaction_id": "4c6b7bb5-6a38-44d3-9d8b-5b9a1e6f7c21",
        "customer_id": "mock-group-id",
        "event_type": "Test Event",
        "timestamp": "2021-07-10T05:37:11.500Z",
        "properties": {"plan": "pro", "seats": 3},
    }
    # Segment's "non-RFC3339 timestamp" unit test
    (payload,) = payloads(text, {**TRACK, "timestamp": "2021-01-01"})
    assert payload["timestamp"] == "2021-01-01T00:00:00.000Z"
    # the default trigger only sends track calls
    identify = {**TRACK, "type": "identify"}
    assert mappings.apply(Record(identify, "in", 2)) == []


def test_starter_explains_every_form() -> None:
    text = starter_mapping_text()
    for form in ("@literal", "@path", "@template", "@coalesce", "@if", "@case", "@replace"):
        assert form in text
    for form in ("@merge", "@hash", "@string", "@number", "string_properties", "defaults"):
        assert form in text
    assert text.count("\n#") + text.count("  #") > 20  # it is a commented file


def test_the_sample_action_round_trips() -> None:
    action = json.loads((SAMPLES / "segment-action.json").read_text(encoding="utf-8"))
    text = mapping_from_segment(action, source_name="segment-action.json")
    assert "segment-action.json" in text.splitlines()[0]
    event = {**TRACK, "event": "API Call", "properties": {"method": "GET"}}
    (payload,) = payloads(text, event)
    assert payload == {
        "transaction_id": TRACK["messageId"],
        "customer_id": "mock-group-id",
        "event_type": "api_GET",
        "timestamp": "2021-07-10T05:37:11.500Z",
        "properties": {"method": "GET"},
    }
    assert payloads(text, TRACK) == []  # event = "API Call" only
    mappings = load_mapping_text(text, name="m")
    assert mappings.names() == ["Send API calls to Metronome"]


def action(mapping: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"subscribe": 'type = "track"', "mapping": mapping, **extra}


def test_every_convertible_directive_means_the_same() -> None:
    mapping = {
        "transaction_id": {"@template": "{{messageId}}-x"},
        "customer_id": {
            "@if": {
                "exists": {"@path": "$.context.groupId"},
                "then": {"@path": "$.context.groupId"},
                "else": {"@path": "$.userId"},
            }
        },
        "event_type": {
            "@case": {
                "operator": "lower",
                "value": {"@replace": {"value": {"@path": "$.event"}, "pattern": " "}},
            }
        },
        "timestamp": {"@path": "timestamp"},
        "properties": {
            "@merge": {
                "objects": [{"@path": "$.properties"}, {"source": "$raw", "n": 1}],
                "direction": "right",
            }
        },
    }
    text = mapping_from_segment(action(mapping, name="all"), source_name="a.json")
    (payload,) = payloads(text, TRACK)
    assert payload == {
        "transaction_id": TRACK["messageId"] + "-x",
        "customer_id": "mock-group-id",
        "event_type": "testevent",
        "timestamp": "2021-07-10T05:37:11.500Z",
        # a raw "$..." string is a literal in Segment, so it stays one
        "properties": {"plan": "pro", "seats": 3, "source": "$raw", "n": 1},
    }
    no_group = {k: v for k, v in TRACK.items() if k != "context"}
    (payload,) = payloads(text, no_group)
    assert payload["customer_id"] == "user1234"


def test_literal_and_odd_paths() -> None:
    mapping = {
        "event_type": {"@literal": "$not-a-path"},
        "customer_id": {"@path": "$.properties.my key"},
        "properties": {"first": {"@path": "$.properties.list[0]"}, "flag": {"@literal": True}},
    }
    text = mapping_from_segment(action(mapping), source_name="a.json")
    event = {**TRACK, "properties": {"my key": "k-1", "list": ["x", "y"]}}
    (payload,) = payloads(text, event)
    assert payload["event_type"] == "$not-a-path"
    assert payload["customer_id"] == "k-1"
    assert payload["properties"] == {"first": "x", "flag": True}


def test_fields_left_out_get_segments_defaults() -> None:
    text = mapping_from_segment(action({"event_type": "usage"}), source_name="a.json")
    assert "Segment's default" in text
    (payload,) = payloads(text, TRACK)
    assert payload["event_type"] == "usage"
    assert payload["customer_id"] == "mock-group-id"
    assert payload["transaction_id"] == TRACK["messageId"]


@pytest.mark.parametrize(
    "wrap",
    [
        lambda actions: actions,
        lambda actions: {"subscriptions": actions},
        lambda actions: {"actions": actions},
    ],
)
def test_several_actions_and_wrappers(wrap: Any) -> None:
    actions = [
        action({"event_type": "one"}, name="dup"),
        action({"event_type": "two"}, name="dup"),
        {"trigger": 'event = "Test Event"', "settings": {"event_type": "three"}},
    ]
    text = mapping_from_segment(wrap(actions), source_name="a.json")
    mappings = load_mapping_text(text, name="m")
    assert mappings.names() == ["dup", "dup (2)", "action_3"]
    assert [p["event_type"] for p in payloads(text, TRACK)] == ["one", "two", "three"]


def test_an_action_without_subscription_matches_everything() -> None:
    text = mapping_from_segment({"mapping": {"event_type": "x"}}, source_name="a.json")
    assert len(payloads(text, {**TRACK, "type": "identify"})) == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"@arrayPath": ["$.properties.items", {"id": {"@path": "$.sku"}}]}, [{"id": "a"}]),
        ({"@liquid": "{{ properties.items.size }} {{ event | upcase }}"}, "1 TEST EVENT"),
        ({"@json": {"mode": "encode", "value": {"@path": "$.properties.items"}}}, '[{"sku":"a"}]'),
        (
            {"@flatten": {"value": {"@path": "$.properties"}, "separator": "_"}},
            {"items_0_sku": "a"},
        ),
        (
            {"@transform": {"apply": {"s": {"@path": "$.event"}}, "mapping": {"@path": "$.s"}}},
            "Test Event",
        ),
        ({"@excludeWhenNull": {"a": None, "b": 1}}, {"b": 1}),
        ({"@literal": "$5"}, "$5"),
        ({"@if": {"exists": "$.properties", "then": "$not-a-path"}}, "$not-a-path"),
    ],
)
def test_every_directive_converts_with_segments_meaning(value: Any, expected: Any) -> None:
    mapping = {"properties": {"v": value}}
    event = {**TRACK, "properties": {"items": [{"sku": "a"}]}}
    text = mapping_from_segment(action(mapping, name="x"), source_name="a.json")
    assert "'@" not in text  # JSON flow values, nothing like a Python repr
    assert "{'" not in text
    (payload,) = payloads(text, event)
    assert payload["properties"] == {"v": expected}


def test_trigger_warnings_are_written_into_the_converted_file() -> None:
    settings = {"subscribe": 'type = "track" AND event = "x"', "mapping": {}}
    text = mapping_from_segment(settings, source_name="a.json")
    assert text.splitlines()[2].startswith("# segmetro validate warns")
    assert load_mapping_text(text, name="m").warnings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("nope", "expected a Segment action's settings"),
        ([], "expected a Segment action's settings"),
        (action({"colour": "red"}), "unknown field 'colour'"),
        ({"subscribe": 'type = "track"'}, "'mapping' must be an object"),
        (action({"event_type": {"@what": 1}}), "has an invalid directive: @what"),
        (
            action({"event_type": {"@path": "$.a", "x": 1}}),
            "should only have one @-prefixed key but it has 2 keys",
        ),
        ({"subscribe": "type = ((", "mapping": {}}, "the converted mapping does not load"),
    ],
)
def test_bad_settings(settings: Any, message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        mapping_from_segment(settings, source_name="a.json")
    assert message in str(excinfo.value)


def test_segment_internal_keys_are_ignored() -> None:
    text = mapping_from_segment(
        action({"event_type": "x", "__segment_internal_sync_mode": "add"}), source_name="a"
    )
    assert "__segment" not in text


def test_conversion_rejects_like_segment_would() -> None:
    """A converted mapping still applies the output rules (a missing groupId rejects)."""
    text = mapping_from_segment(action({}), source_name="a.json")
    no_group = {k: v for k, v in TRACK.items() if k != "context"}
    (result,) = load_mapping_text(text, name="m").apply(Record(no_group, "in", 1))
    assert isinstance(result, Reject)
    assert result.detail == "customer_id: expression $.context.groupId matched nothing"
