"""Loading mapping files: schema, defaults, and every load error with its exact line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from segmetro.errors import ConfigError, MappingFileError
from segmetro.mapping import load_mapping, load_mapping_text
from segmetro.models import Mapped, Record

EVENT = {
    "type": "track",
    "event": "Job Completed",
    "messageId": "m-1",
    "timestamp": "2021-07-10T05:37:11.000Z",
    "context": {"groupId": "acme"},
    "properties": {"cid": "c-9", "n": 2},
}


def load_error(text: str) -> MappingFileError:
    with pytest.raises(MappingFileError) as excinfo:
        load_mapping_text(text, name="m.yaml")
    return excinfo.value


def full(fields: str = "", extra: str = "", defaults: str = "") -> str:
    """A valid file whose mapping has `fields` after the four required ones."""
    return (
        "version: 1\n"
        + defaults
        + "mappings:\n"
        + "  - name: a\n"
        + extra
        + "    fields:\n"
        + "      transaction_id: $.messageId\n"
        + "      customer_id: $.context.groupId\n"
        + "      event_type: $.event\n"
        + "      timestamp: $.timestamp\n"
        + fields
    )


def test_a_valid_file_loads() -> None:
    mappings = load_mapping_text(full("      properties: $.properties\n"), name="m.yaml")
    assert [m.name for m in mappings.mappings] == ["a"]
    assert mappings.warnings == []
    mapping = mappings.mappings[0]
    assert mapping.trigger is None
    assert mapping.string_properties is False
    assert mapping.line == 3
    (result,) = mappings.apply(Record(EVENT, "f", 1))
    assert isinstance(result, Mapped)
    assert result.payload == {
        "transaction_id": "m-1",
        "customer_id": "acme",
        "event_type": "Job Completed",
        "timestamp": "2021-07-10T05:37:11.000Z",
        "properties": {"cid": "c-9", "n": 2},
    }


def test_error_message_names_file_line_and_key() -> None:
    err = load_error(full("      colour: red\n"))
    assert (err.path, err.line, err.key) == ("m.yaml", 9, "mappings[0].fields.colour")
    assert str(err) == (
        "m.yaml:9: mappings[0].fields.colour: unknown output field 'colour' (the fields are "
        "transaction_id, customer_id, event_type, timestamp, properties)"
    )


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        ("version: 1\nmappings: [\n", 3, None, "invalid YAML"),
        ("", 1, None, "the file is empty"),
        ("- a\n- b\n", 1, None, "a mapping file must be a mapping"),
        ("version: 1\nmapings: []\n", 2, "mapings", "unknown key 'mapings'"),
        ("mappings: []\n", 1, "version", "version: 1 is missing"),
        ("version: 2\nmappings: []\n", 1, "version", "unsupported version"),
        ("version: true\nmappings: []\n", 1, "version", "unsupported version"),
        ("version: 1\n", 1, "mappings", "mappings: is missing"),
        ("version: 1\nmappings: []\n", 2, "mappings", "mappings must be a non-empty list"),
        ("version: 1\nversion: 1\n", 2, "version", "duplicate key 'version' (first on line 1)"),
        ("version: 1\nmappings:\n  - just a string\n", 3, "mappings[0]", "must be a mapping"),
    ],
)
def test_file_level_errors(text: str, line: int, key: str | None, message: str) -> None:
    err = load_error(text)
    assert (err.line, err.key) == (line, key)
    assert message in err.message


@pytest.mark.parametrize(
    ("extra", "line", "key", "message"),
    [
        ("    filter: x\n", 4, "mappings[0].filter", "unknown key 'filter'"),
        ("    string_properties: yes\n", 4, "mappings[0].string_properties", "true or false"),
        ("    trigger: 12\n", 4, "mappings[0].trigger", "trigger must be a string"),
    ],
)
def test_mapping_key_errors(extra: str, line: int, key: str, message: str) -> None:
    err = load_error(full(extra=extra))
    assert (err.path, err.line, err.key) == ("m.yaml", line, key)
    assert message in err.message


@pytest.mark.parametrize(
    ("fields", "line", "key", "message"),
    [
        ("      properties: $.a[\n", 9, "mappings[0].fields.properties", "invalid JSONPath '$.a['"),
        (
            "      properties:\n        plan: $.properties.plan name\n",
            10,
            "mappings[0].fields.properties.plan",
            "is quoted: $.properties['plan name']",
        ),
        (
            "      properties:\n        size: $.properties.größe\n",
            10,
            "mappings[0].fields.properties.size",
            "is quoted: $.properties['größe']",
        ),
        # Segment's validate refuses these (its reason, then its own path), at the refused place
        (
            "      properties:\n        x:\n          '@json': {mode: zip, value: $.a}\n",
            11,
            "mappings[0].fields.properties.x.@json.mode",
            'should be one of encode, decode but it is "zip"',
        ),
        (
            "      properties: {'@magic': 1}\n",
            9,
            "mappings[0].fields.properties",
            "has an invalid directive: @magic",
        ),
        (
            "      properties: {'@path': $.a, other: 1}\n",
            9,
            "mappings[0].fields.properties",
            "should only have one @-prefixed key but it has 2 keys",
        ),
        (
            "      properties:\n        '@if':\n          exists: $.a\n          then: 1\n"
            "          else: {'@nope': 2}\n",
            13,
            "mappings[0].fields.properties.@if.else",
            "has an invalid directive: @nope (Segment's mapping-kit refuses this: "
            "/properties/@if/else has an invalid directive: @nope.)",
        ),
        (
            "      properties: {'@case': {operator: 5, value: $.a}}\n",
            9,
            "mappings[0].fields.properties.@case.operator",
            "should be a string but it is a number",
        ),
        (
            "      properties: {'@case': {operator: lower, value: 5}}\n",
            9,
            "mappings[0].fields.properties.@case.value",
            "should be a string or a mapping directive but it is a number",
        ),
        (
            "      properties: {'@replace': {value: $.a}}\n",
            9,
            "mappings[0].fields.properties.@replace",
            'should have field "pattern" but it doesn\'t',
        ),
        (
            "      properties: {'@replace': {value: $.a, pattern: much-too-long}}\n",
            9,
            "mappings[0].fields.properties.@replace.pattern",
            "should be a string of length 10 or less",
        ),
        (
            "      properties: {'@replace': {value: $.a, pattern: x, global: 1}}\n",
            9,
            "mappings[0].fields.properties.@replace.global",
            "should be a boolean but it is a number",
        ),
        (
            "      properties: {'@merge': {objects: [$.a], direction: up}}\n",
            9,
            "mappings[0].fields.properties.@merge.direction",
            'should be one of left, right but it is "up"',
        ),
        (
            "      properties: {'@merge': {objects: [x], direction: left}}\n",
            9,
            "mappings[0].fields.properties.@merge.objects[0]",
            "should be a object or a mapping directive but it is a string",
        ),
        (
            "      properties: {'@merge': {objects: $.a, direction: left}}\n",
            9,
            "mappings[0].fields.properties.@merge.objects",
            "should be an array but it is a string",
        ),
        (
            "      properties: {'@coalesce': $.a}\n",
            9,
            "mappings[0].fields.properties.@coalesce",
            "should be an array but it is a string",
        ),
        (
            "      properties: {'@hash': []}\n",
            9,
            "mappings[0].fields.properties.@hash",
            "should have at least one expression",
        ),
        (
            "      properties: {'@template': 3}\n",
            9,
            "mappings[0].fields.properties.@template",
            "should be a string or a mapping directive but it is a number",
        ),
        (
            "      properties: {x: .inf}\n",
            9,
            "mappings[0].fields.properties.x",
            "infinite and NaN numbers are not JSON values",
        ),
        (
            "      properties:\n        x: 1\n        x: 2\n",
            11,
            "mappings[0].fields.properties.x",
            "duplicate key 'x' (first on line 10)",
        ),
        (
            "      properties:\n        ? [a, b]\n        : 1\n",
            10,
            "mappings[0].fields.properties",
            "keys must be plain strings",
        ),
    ],
)
def test_expression_errors(fields: str, line: int, key: str, message: str) -> None:
    err = load_error(full(fields))
    assert (err.path, err.line, err.key) == ("m.yaml", line, key)
    assert message in err.message


def test_missing_name_and_duplicate_names() -> None:
    err = load_error("version: 1\nmappings:\n  - fields: {}\n")
    assert (err.line, err.key, err.message) == (
        3,
        "mappings[0].name",
        "every mapping needs a name",
    )
    text = full() + "  - name: a\n"
    err = load_error(text)
    assert (err.line, err.key) == (9, "mappings[1].name")
    assert err.message == "duplicate mapping name 'a' (first on line 3)"


def test_missing_required_field_is_an_error_at_load() -> None:
    text = "version: 1\nmappings:\n  - name: a\n    fields:\n      transaction_id: $.messageId\n"
    err = load_error(text)
    assert (err.line, err.key) == (3, "mappings[0].fields.customer_id")
    assert err.message == "required output field customer_id is not set (in fields or defaults)"


def test_required_field_cannot_be_null() -> None:
    err = load_error(full().replace("customer_id: $.context.groupId", "customer_id: null"))
    assert (err.line, err.key) == (6, "mappings[0].fields.customer_id")
    assert err.message == "customer_id is required and cannot be null"


def test_defaults_are_inherited_and_overridable() -> None:
    text = """\
version: 1
defaults:
  transaction_id: $.messageId
  customer_id: $.context.groupId
  timestamp: $.timestamp
  properties: {n: $.properties.n}
mappings:
  - name: inherits
    fields:
      event_type: $.event
  - name: overrides
    fields:
      event_type: jobs
      customer_id: $.properties.cid
      transaction_id: {"@template": "{{messageId}}-jobs"}
  - name: drops_properties
    fields:
      event_type: x
      properties: null
"""
    mappings = load_mapping_text(text, name="m.yaml")
    payloads = [r.payload for r in mappings.apply(Record(EVENT, "f", 1)) if isinstance(r, Mapped)]
    assert payloads == [
        {
            "transaction_id": "m-1",
            "customer_id": "acme",
            "event_type": "Job Completed",
            "timestamp": "2021-07-10T05:37:11.000Z",
            "properties": {"n": 2},
        },
        {
            "transaction_id": "m-1-jobs",
            "customer_id": "c-9",
            "event_type": "jobs",
            "timestamp": "2021-07-10T05:37:11.000Z",
            "properties": {"n": 2},
        },
        {
            "transaction_id": "m-1",
            "customer_id": "acme",
            "event_type": "x",
            "timestamp": "2021-07-10T05:37:11.000Z",
        },
    ]


def test_defaults_errors_name_the_defaults_key() -> None:
    err = load_error(full(defaults="defaults:\n  colour: $.x\n"))
    assert (err.line, err.key) == (3, "defaults.colour")
    err = load_error(full(defaults="defaults:\n  customer_id: {'@nope': 1}\n"))
    assert (err.line, err.key) == (3, "defaults.customer_id")


def test_yaml_merge_keys_and_anchors_work() -> None:
    text = """\
version: 1
mappings:
  - name: a
    fields: &base
      transaction_id: $.messageId
      customer_id: $.context.groupId
      event_type: $.event
      timestamp: $.timestamp
  - name: b
    fields:
      <<: *base
      event_type: other
"""
    results = load_mapping_text(text, name="m").apply(Record(EVENT, "f", 1))
    assert [r.payload["event_type"] for r in results if isinstance(r, Mapped)] == [
        "Job Completed",
        "other",
    ]


def test_load_mapping_reads_files(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(full(), encoding="utf-8")
    assert load_mapping(path).path == str(path)
    assert load_mapping(str(path)).mappings[0].name == "a"


def test_load_mapping_file_problems(tmp_path: Path) -> None:
    with pytest.raises(MappingFileError, match="no such file"):
        load_mapping(tmp_path / "absent.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"version: 1 # caf\xe9\n")
    with pytest.raises(MappingFileError, match="not UTF-8"):
        load_mapping(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text(full("      properties: {'@case': []}\n"), encoding="utf-8")
    with pytest.raises(MappingFileError) as excinfo:
        load_mapping(broken)
    assert str(excinfo.value).startswith(f"{broken}:9: mappings[0].fields.properties.@case: ")
    assert isinstance(excinfo.value, ConfigError)


def test_the_samples_load() -> None:
    root = Path(__file__).resolve().parent.parent / "samples"
    for name in ("mapping.yaml", "mapping-advanced.yaml"):
        assert load_mapping(root / name).mappings
