"""Starting points for a mapping file: Segment's defaults, or a converted Segment action.

``segmetro init`` writes one of these; both load with :func:`load_mapping_text` and send what
Segment's Metronome (Actions) destination would have sent for the same messages.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from segmetro.errors import ConfigError, MappingFileError
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
      #   {"@path": "$.properties.plan"}                   Segment's spelling of a path
      #   {"@template": "{{{messageId}}}-cpu"}             text with {{path}} / {{{path}}}
      #   {"@coalesce": [$.context.groupId, $.userId]}     first value that is present
      #   {"@if": {"exists": $.properties.seats, "then": "seats", "else": "other"}}
      #   {"@case": {"operator": "lower", "value": $.event}}
      #   {"@replace": {"value": $.event, "pattern": " ", "replacement": "_"}}
      #   {"@merge": {"objects": [$.properties, {"source": "replay"}], "direction": "right"}}
      #   {"@hash": [$.userId, $.timestamp]}               hex SHA-256 id for sources without one
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

_UNSUPPORTED = ("@arrayPath", "@liquid", "@json", "@flatten", "@transform", "@excludeWhenNull")
_CONVERTED = ("@path", "@template", "@if", "@case", "@replace", "@merge", "@literal")
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GET_TOKENS = re.compile(r"[^\[.\]]+")


def starter_mapping_text() -> str:
    """A commented mapping equal to the defaults of Segment's Metronome (Actions) destination."""
    return _STARTER


def _path_to_jsonpath(path: str) -> str:
    """Segment's ``get`` path (dots and brackets, leading ``$.`` optional) as a JSONPath."""
    body = path.replace("$.", "", 1)
    parts = ["$"]
    for token in _GET_TOKENS.findall(body):
        if token.isdigit():
            parts.append(f"[{token}]")
        elif _PLAIN_NAME.fullmatch(token):
            parts.append(f".{token}")
        elif "'" not in token:
            parts.append(f"['{token}']")
        elif '"' not in token:
            parts.append(f'["{token}"]')
        else:
            raise ValueError(f"path {path!r} has a key with both kinds of quotes")
    return "".join(parts)


class _Converter:
    def __init__(self, action: str, field: str) -> None:
        self.action = action
        self.field = field

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"action {self.action!r}, field {self.field!r}: {message}")

    def value(self, value: Any) -> Any:
        """A Segment mapping value as a segmetro expression with the same result."""
        if isinstance(value, str):
            # A raw string is a literal in Segment; in segmetro a $-string is a path.
            return {"@literal": value} if value.startswith("$") else value
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if not isinstance(value, dict):
            return value
        directives = [key for key in value if isinstance(key, str) and key.startswith("@")]
        if not directives:
            return {key: self.value(item) for key, item in value.items()}
        if len(value) != 1:
            raise self.fail(f"a directive object must have exactly one key, got {sorted(value)}")
        name = directives[0]
        arg = value[name]
        if name in _UNSUPPORTED:
            raise self.fail(f"Segment directive {name} is not supported by segmetro")
        if name not in _CONVERTED:
            raise self.fail(f"unknown Segment directive {name}")
        if name == "@path":
            if not isinstance(arg, str):
                raise self.fail("@path needs a string")
            try:
                return _path_to_jsonpath(arg)
            except ValueError as exc:
                raise self.fail(str(exc)) from None
        if name == "@literal":
            converted = self.value(arg)
            return {"@literal": arg} if converted == arg else converted
        if name == "@template":
            return {"@template": arg}
        if not isinstance(arg, dict):
            raise self.fail(f"{name} needs an object")
        nested = {
            "@if": ("exists", "blank", "then", "else"),
            "@case": ("value",),
            "@replace": ("value",),
            "@merge": (),
        }[name]
        out = {key: self.value(item) if key in nested else item for key, item in arg.items()}
        if name == "@merge" and isinstance(arg.get("objects"), list):
            out["objects"] = [self.value(item) for item in arg["objects"]]
        return {name: out}


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
    """A value as one line of YAML (flow style keeps each field readable on its line)."""
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
    out gets Segment's default mapping (and a comment saying so). Directives segmetro does not
    implement raise ``ConfigError`` naming the action, the field and the directive.
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
                converted = _Converter(name, field).value(mapping[field])
                lines.append(f"      {field}: {_dump(converted)}")
            else:
                lines.append(
                    f"      {field}: {SEGMENT_DEFAULTS[field]}"
                    "   # not set in the action: Segment's default"
                )
    text = "\n".join(lines) + "\n"
    from segmetro.mapping.loader import load_mapping_text

    try:
        load_mapping_text(text, name=source_name)
    except MappingFileError as exc:
        raise ConfigError(f"{source_name}: the converted mapping does not load: {exc}") from None
    return text
