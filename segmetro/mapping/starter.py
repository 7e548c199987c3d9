"""Starting points for a mapping file: Segment's defaults, or a converted Segment action.

``segmetro init`` writes one of these; both load with :func:`load_mapping_text` and send what
Segment's Metronome (Actions) destination would have sent for the same messages.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from segmetro.errors import ConfigError, MappingFileError
from segmetro.mapping import kit
from segmetro.mapping.core import OUTPUT_FIELDS

_STARTER = """\
# segmetro mapping: the defaults of Segment's Metronome (Actions) destination.
# Every Segment message is tested against every mapping below, in order; each mapping whose
# trigger matches sends one Metronome usage event.
version: 1

# Fields every mapping inherits unless it sets them itself (optional).
# defaults:
#   transaction_id: $.messageId

mappings:
  - name: track_events            # required and unique: it appears in reports and rejects
    # Segment's trigger syntax, evaluated exactly as Segment does. Omit it to map every message.
    trigger: type = "track"
    # Metronome recommends string property values; true turns numbers and booleans into strings.
    string_properties: false
    fields:
      # A string starting with $ is a JSONPath into the Segment message.
      transaction_id: $.messageId   # Metronome keeps the first event per transaction_id
      customer_id: $.context.groupId
      # Normalised to UTC with milliseconds; RFC 3339, dates and epoch numbers are accepted.
      timestamp: $.timestamp
      event_type: $.event
      properties: $.properties
      # Other value forms (see the docs):
      #   "literal text"                                   any value that is not a $-string
      #   {"@literal": "$not-a-path"}                      a string that starts with $
      #   {"@path": "properties.plan name"}                Segment's get: dots, [0], .length
      #   {"@template": "{{{messageId}}}-cpu"}             text with {{path}} / {{{path}}}
      #   {"@coalesce": [$.context.groupId, $.userId]}     first value that is present
      #   {"@if": {"exists": $.properties.seats, "then": "seats", "else": "other"}}
      #   {"@case": {"operator": "lower", "value": $.event}}
      #   {"@replace": {"value": $.event, "pattern": " ", "replacement": "_"}}
      #   {"@merge": {"objects": [$.properties, {"source": "replay"}], "direction": "right"}}
      #   {"@hash": [$.userId, $.timestamp]}               hex SHA-256 id for sources without one
      # Every Segment mapping-kit directive means what it means in Segment (@arrayPath, @flatten,
      # @json, @transform, @excludeWhenNull and @liquid too); README, "Mapping files".
      #   {"@string": $.properties.amount}, {"@number": $.properties.amount}
      # properties may also be an object of expressions:
      #   properties:
      #     plan: $.properties.plan
      #     seats: {"@number": $.properties.seats}
"""

#: The Metronome action's fields and Segment's default mapping for each.
SEGMENT_DEFAULTS: dict[str, str] = {
    "transaction_id": "$.messageId",
    "customer_id": "$.context.groupId",
    "timestamp": "$.timestamp",
    "event_type": "$.event",
    "properties": "$.properties",
}


def starter_mapping_text() -> str:
    """A commented mapping equal to the defaults of Segment's Metronome (Actions) destination."""
    return _STARTER


def segment_value(value: Any) -> Any:
    """A Segment mapping value as segmetro mapping data with the same meaning.

    Segment's syntax is segmetro's with one exception: a bare string starting with ``$`` in a
    value position is text to Segment and a JSONPath to segmetro, so each such string becomes
    ``{"@literal": ...}``. The positions are the ones the compiler reads as JSONPath
    (``kit.Compiler.paths``), so this follows the evaluation's own rules; every directive
    converts as it is.
    """
    compiler = kit.Compiler(lambda _text: lambda _payload: None)
    compiler.expr(value)
    for where in compiler.paths:
        value = _wrap_literal(value, where)
    return value


def _wrap_literal(value: Any, where: kit.Path) -> Any:
    if not where:
        return {"@literal": value}
    head, rest = where[0], where[1:]
    if isinstance(value, dict) and isinstance(head, str):
        return {**value, head: _wrap_literal(value[head], rest)}
    if isinstance(value, list) and isinstance(head, int):
        return [_wrap_literal(item, rest) if i == head else item for i, item in enumerate(value)]
    return value


def _actions(settings: Any) -> list[dict[str, Any]]:
    if isinstance(settings, dict):
        for wrapper in ("subscriptions", "actions"):
            if wrapper in settings and "mapping" not in settings and "settings" not in settings:
                return _actions(settings[wrapper])
        return [settings]
    if isinstance(settings, list) and settings and all(isinstance(a, dict) for a in settings):
        return list(settings)
    raise ConfigError(
        "expected a Segment action's settings: an object with 'subscribe' and 'mapping', "
        "a list of them, or {'subscriptions': [...]} / {'actions': [...]}"
    )


def _dump(value: Any) -> str:
    """A value as one line of YAML: a string as a YAML scalar, anything else as JSON (which is
    YAML's flow syntax, and reads as Segment's own mapping JSON)."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    text = yaml.safe_dump(
        value, default_flow_style=True, sort_keys=False, allow_unicode=True, width=10_000
    ).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    return text


def mapping_from_segment(action: Any, *, source_name: str) -> str:
    """Convert Segment Metronome action settings (``subscribe`` + ``mapping``) to mapping YAML.

    Accepts one action, a list, or ``{"subscriptions": [...]}`` / ``{"actions": [...]}``; the
    Public API's ``trigger`` / ``settings`` spellings are accepted too. A field the action leaves
    out gets Segment's default mapping (and a comment saying so). Every mapping-kit directive
    converts; a mapping Segment's ``validate`` refuses raises ``ConfigError`` with its reason.
    Warnings ``segmetro validate`` would give about a trigger are written as comments on top.
    """
    lines = [
        f"# segmetro mapping converted from the Segment action settings in {source_name}.",
        "# Each mapping fires for the messages its Segment subscription would have sent.",
        "version: 1",
        "mappings:",
    ]
    used: set[str] = set()
    for index, item in enumerate(_actions(action)):
        base = item.get("name") or item.get("actionName") or f"action_{index + 1}"
        if not isinstance(base, str):
            raise ConfigError(f"action {index + 1}: name must be a string")
        name, suffix = base, 2
        while name in used:
            name, suffix = f"{base} ({suffix})", suffix + 1
        used.add(name)
        subscribe = item.get("subscribe", item.get("trigger"))
        mapping = item.get("mapping", item.get("settings"))
        if not isinstance(mapping, dict):
            raise ConfigError(f"action {name!r}: 'mapping' must be an object of fields")
        if subscribe is not None and not isinstance(subscribe, str):
            raise ConfigError(f"action {name!r}: 'subscribe' must be a string")
        lines.append(f"  - name: {_dump(name)}")
        if subscribe:
            lines.append(f"    trigger: {_dump(subscribe)}")
        else:
            lines.append("    # no subscription in the settings: every message matches")
        lines.append("    fields:")
        for key in mapping:
            if key not in OUTPUT_FIELDS and not str(key).startswith("__segment"):
                raise ConfigError(
                    f"action {name!r}: unknown field {key!r} "
                    f"(the Metronome action has {', '.join(OUTPUT_FIELDS)})"
                )
        for field in OUTPUT_FIELDS:
            if field in mapping:
                lines.append(f"      {field}: {_dump(segment_value(mapping[field]))}")
            else:
                lines.append(
                    f"      {field}: {SEGMENT_DEFAULTS[field]}"
                    "   # not set in the action: Segment's default"
                )
    text = "\n".join(lines) + "\n"
    from segmetro.mapping.loader import load_mapping_text

    try:
        loaded = load_mapping_text(text, name=source_name)
    except MappingFileError as exc:
        raise ConfigError(f"{source_name}: the converted mapping does not load: {exc}") from None
    if loaded.warnings:
        shift = 1 + len(loaded.warnings)  # the lines of these notes
        notes = ["# segmetro validate warns about what Segment does with these triggers:"]
        notes += [
            f"#   line {(w.line or 0) + shift}: mapping {w.mapping!r}: {w.message}"
            for w in loaded.warnings
        ]
        text = text.replace("version: 1\n", "\n".join(notes) + "\nversion: 1\n", 1)
    return text
