"""Load a mapping file: validate it against the schema and compile every expression once.

The YAML is composed into nodes (which carry marks), so every problem is a
:class:`~segmetro.errors.MappingFileError` naming the file, the 1-based line and the key path
(``mappings[0].fields.timestamp``). Indices in key paths are 0-based, as in JSONPath.

The YAML dialect is YAML 1.2-like on purpose: only ``true``/``false`` are booleans (``on``, ``yes``
and ``no`` stay strings) and dates stay strings, so every value is a JSON value.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from segmetro.errors import MappingFileError, TriggerError
from segmetro.mapping import kit
from segmetro.mapping.core import (
    OUTPUT_FIELDS,
    REQUIRED_FIELDS,
    FieldSpec,
    Mapping,
    MappingSet,
    MappingWarning,
    TriggerLike,
)
from segmetro.mapping.values import MISSING, Expr, describe, jsonpath_expr
from segmetro.triggers import lint_trigger, parse_trigger

#: Every directive: Segment's mapping-kit ones, then segmetro's own.
DIRECTIVES = (*kit.SEGMENT_DIRECTIVES, *kit.SEGMETRO_DIRECTIVES)

_TOP_KEYS = ("version", "defaults", "mappings")
_MAPPING_KEYS = ("name", "trigger", "fields", "string_properties")
_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_MERGE = "tag:yaml.org,2002:merge"
_REPLACED_TAGS = (_BOOL, _TIMESTAMP, _INT, _FLOAT)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 (JSON-like) scalars: ``on``/``no`` and dates stay strings,
    ``1e-7`` is a number, ``0123`` is decimal and ``12:30`` is not sexagesimal."""

    def construct_decimal_int(self, node: yaml.ScalarNode) -> int:
        return int(str(self.construct_scalar(node)), 10)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(_INT, re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Loader.add_constructor(_INT, _Loader.construct_decimal_int)

Node = yaml.Node


class _Compiler:
    """Walks the node tree of one file; `path` is the file name used in every error."""

    def __init__(self, loader: _Loader, path: str) -> None:
        self.loader = loader
        self.path = path

    # ------------------------------------------------------------------ helpers

    def error(self, message: str, node: Node | None, key: str | None) -> MappingFileError:
        line = None if node is None else node.start_mark.line + 1
        return MappingFileError(message, path=self.path, line=line, key=key)

    def value(self, node: Node, key: str) -> Any:
        """The plain Python (JSON) value of a node."""
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.error(f"cannot read this value: {exc}", node, key) from None
        self._check_json(value, node, key)
        return value

    def _check_json(self, value: Any, node: Node, key: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error("infinite and NaN numbers are not JSON values", node, key)
        if isinstance(value, dict):
            for item_key, item in value.items():
                if not isinstance(item_key, str):
                    raise self.error(f"object keys must be strings, got {item_key!r}", node, key)
                self._check_json(item, node, key)
        elif isinstance(value, list):
            for item in value:
                self._check_json(item, node, key)
        elif value is not None and not isinstance(value, str | int | float | bool):
            raise self.error(f"unsupported YAML value {value!r}", node, key)

    def items(self, node: Node, key: str | None, what: str) -> list[tuple[str, Node, Node]]:
        """The entries of a YAML mapping as ``(key text, key node, value node)``; no duplicates."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(f"{what} must be a mapping (key: value)", node, key)
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error("keys must be plain strings", key_node, key)
            if key_node.tag == _MERGE:
                continue
            name = str(key_node.value)
            if name in seen:
                raise self.error(
                    f"duplicate key {name!r} (first on line {seen[name]})",
                    key_node,
                    name if key is None else f"{key}.{name}",
                )
            seen[name] = key_node.start_mark.line + 1
        try:
            self.loader.flatten_mapping(node)  # YAML merge keys (<<: *anchor) go first
        except yaml.YAMLError as exc:
            raise self.error(f"bad merge key: {exc}", node, key) from None
        out: dict[str, tuple[str, Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error("keys must be plain strings", key_node, key)
            name = str(key_node.value)
            out[name] = (name, key_node, value_node)  # an explicit key overrides a merged one
        return list(out.values())

    def scalar(self, node: Node, key: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return MISSING
        return self.value(node, key)

    def string(self, node: Node, key: str, what: str, *, empty_ok: bool = False) -> str:
        value = self.scalar(node, key)
        if not isinstance(value, str) or (not value and not empty_ok):
            raise self.error(
                f"{what} must be a {'' if empty_ok else 'non-empty '}string", node, key
            )
        return value

    def boolean(self, node: Node, key: str) -> bool:
        value = self.scalar(node, key)
        if not isinstance(value, bool):
            raise self.error("must be true or false", node, key)
        return value

    # ------------------------------------------------------------------ expressions

    def tree(self, node: Node, key: str) -> Any:
        """The JSON value of an expression node; duplicate and non-string keys are refused
        where they are."""
        if isinstance(node, yaml.MappingNode):
            return {
                name: self.tree(value, f"{key}.{name}")
                for name, _, value in self.items(node, key, "an object")
            }
        if isinstance(node, yaml.SequenceNode):
            return [self.tree(item, f"{key}[{i}]") for i, item in enumerate(node.value)]
        return self.value(node, key)

    def expr(self, node: Node, key: str) -> tuple[Expr, bool]:
        """Compile a field's value expression: refused where Segment's ``validate`` refuses it,
        else one function with ``transform()``'s semantics; and whether its value can hold
        NaN or an infinity (the output check must then walk it)."""
        value = self.tree(node, key)
        field = key.rsplit(".", 1)[-1]
        try:
            kit.validate(value, (field,))  # Segment validates {field: value}
        except kit.KitProblem as exc:
            where = exc.where[1:]
            raise self.error(
                f"{exc.reason} (Segment's mapping-kit refuses this: {kit.problem_text(exc)})",
                _locate(node, where),
                _key_path(key, where),
            ) from None
        compiler = kit.Compiler(jsonpath_expr)
        try:
            compiled = compiler.expr(value, root=True)
        except kit.CompileError as exc:
            raise self.error(
                _jsonpath_hint(exc.message), _locate(node, exc.where), _key_path(key, exc.where)
            ) from None
        return compiled, compiler.nonfinite

    # ------------------------------------------------------------------ the file

    def source(self, node: Node, key: str) -> str:
        """The expression as written, short, for reject details."""
        value = self.value(node, key)
        if isinstance(value, str):
            return value
        return describe(value, limit=100)

    def fields(self, node: Node, key: str) -> dict[str, tuple[Node, FieldSpec | None]]:
        """Compile an output-field block (`defaults` or a mapping's `fields`)."""
        out: dict[str, tuple[Node, FieldSpec | None]] = {}
        for name, key_node, value in self.items(node, key, key):
            sub = f"{key}.{name}"
            if name not in OUTPUT_FIELDS:
                raise self.error(
                    f"unknown output field {name!r} (the fields are {', '.join(OUTPUT_FIELDS)})",
                    key_node,
                    sub,
                )
            if isinstance(value, yaml.ScalarNode) and self.value(value, sub) is None:
                if name in REQUIRED_FIELDS:
                    raise self.error(f"{name} is required and cannot be null", value, sub)
                out[name] = (key_node, None)  # properties: null removes an inherited default
                continue
            compiled, nonfinite = self.expr(value, sub)
            out[name] = (key_node, FieldSpec(name, compiled, self.source(value, sub), nonfinite))
        return out

    def trigger(
        self, node: Node, key: str, mapping: str, warnings: list[MappingWarning]
    ) -> tuple[TriggerLike | None, str | None]:
        text = self.scalar(node, key)
        if text is None:
            return None, None
        if not isinstance(text, str):
            raise self.error("trigger must be a string", node, key)
        try:
            trigger = parse_trigger(text)
        except TriggerError as exc:
            raise MappingFileError(
                f"invalid trigger: {exc.message} at position {exc.position + 1} of {text!r}",
                path=self.path,
                line=self._trigger_line(node, text, exc.position),
                key=key,
            ) from None
        for warning in lint_trigger(text):
            warnings.append(
                MappingWarning(
                    path=self.path,
                    line=self._trigger_line(node, text, warning.position),
                    mapping=mapping,
                    message=f"trigger: {warning.message} (at position {warning.position + 1})",
                )
            )
        return trigger, text

    @staticmethod
    def _trigger_line(node: Node, text: str, position: int) -> int:
        """The line of a position in the trigger (a literal block scalar starts a line below)."""
        line: int = node.start_mark.line + 1
        if getattr(node, "style", None) == "|":
            return line + 1 + text[: max(position, 0)].count("\n")
        return line

    def mapping_set(self, root: Node | None) -> MappingSet:
        if root is None:
            raise MappingFileError("the file is empty", path=self.path, line=1)
        entries = {
            name: (key_node, value)
            for name, key_node, value in self.items(root, None, "a mapping file")
        }
        for name, (key_node, _) in entries.items():
            if name not in _TOP_KEYS:
                raise self.error(
                    f"unknown key {name!r} (allowed: {', '.join(_TOP_KEYS)})", key_node, name
                )
        if "version" not in entries:
            raise self.error("version: 1 is missing", root, "version")
        version_node = entries["version"][1]
        if (
            self.scalar(version_node, "version") != 1
            or self.scalar(version_node, "version") is True
        ):
            raise self.error(
                "unsupported version (this segmetro reads version: 1)", version_node, "version"
            )
        defaults: dict[str, tuple[Node, FieldSpec | None]] = {}
        if "defaults" in entries:
            defaults = self.fields(entries["defaults"][1], "defaults")
        if "mappings" not in entries:
            raise self.error("mappings: is missing", root, "mappings")
        seq = entries["mappings"][1]
        if not isinstance(seq, yaml.SequenceNode) or not seq.value:
            raise self.error("mappings must be a non-empty list", seq, "mappings")
        warnings: list[MappingWarning] = []
        mappings: list[Mapping] = []
        names: dict[str, int] = {}
        for index, item in enumerate(seq.value):
            mappings.append(self.mapping(item, f"mappings[{index}]", defaults, names, warnings))
        return MappingSet(mappings=mappings, path=self.path, warnings=warnings)

    def mapping(
        self,
        node: Node,
        key: str,
        defaults: dict[str, tuple[Node, FieldSpec | None]],
        names: dict[str, int],
        warnings: list[MappingWarning],
    ) -> Mapping:
        entries: dict[str, tuple[Node, Node]] = {}
        for name, key_node, value in self.items(node, key, "each mapping"):
            if name not in _MAPPING_KEYS:
                raise self.error(
                    f"unknown key {name!r} (allowed: {', '.join(_MAPPING_KEYS)})",
                    key_node,
                    f"{key}.{name}",
                )
            entries[name] = (key_node, value)
        if "name" not in entries:
            raise self.error("every mapping needs a name", node, f"{key}.name")
        name_node = entries["name"][1]
        name = self.string(name_node, f"{key}.name", "name")
        if name in names:
            raise self.error(
                f"duplicate mapping name {name!r} (first on line {names[name]})",
                name_node,
                f"{key}.name",
            )
        names[name] = name_node.start_mark.line + 1
        string_properties = False
        if "string_properties" in entries:
            string_properties = self.boolean(
                entries["string_properties"][1], f"{key}.string_properties"
            )
        merged = dict(defaults)
        if "fields" in entries:
            merged.update(self.fields(entries["fields"][1], f"{key}.fields"))
        specs: list[FieldSpec] = []
        for field_name in OUTPUT_FIELDS:
            spec = merged.get(field_name, (node, None))[1]
            if spec is None:
                if field_name in REQUIRED_FIELDS:
                    raise self.error(
                        f"required output field {field_name} is not set (in fields or defaults)",
                        node,
                        f"{key}.fields.{field_name}",
                    )
                continue
            specs.append(spec)
        trigger, trigger_text = None, None
        if "trigger" in entries:
            trigger, trigger_text = self.trigger(
                entries["trigger"][1], f"{key}.trigger", name, warnings
            )
        return Mapping(
            name=name,
            trigger=trigger,
            trigger_text=trigger_text,
            string_properties=string_properties,
            fields=tuple(specs),
            line=node.start_mark.line + 1,
        )


def _locate(node: Node, where: kit.Path) -> Node:
    """The YAML node at `where` below `node` (as deep as the keys lead)."""
    for step in where:
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            found = [value for key, value in node.value if getattr(key, "value", None) == step]
            if not found:
                break
            node = found[-1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if step >= len(node.value):
                break
            node = node.value[step]
        else:
            break
    return node


def _key_path(key: str, where: kit.Path) -> str:
    return key + "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in where)


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*|\*|[0-9]+")


def _jsonpath_hint(message: str) -> str:
    """An invalid bare ``$`` path's message, with the quoting that reaches keys holding spaces,
    dots or non-ASCII letters (``$.properties['plan name']``)."""
    match = re.match(r"invalid JSONPath '(.*)': ", message)
    if match is None or "[" in match.group(1):
        return message
    text = match.group(1)
    parts = text[1:].split(".")[1:] if text.startswith("$.") else []
    if not parts or all(_PLAIN_KEY.fullmatch(part) for part in parts):
        return message
    quoted = "$" + "".join(
        f".{part}" if _PLAIN_KEY.fullmatch(part) else "[" + repr(part) + "]" for part in parts
    )
    return (
        f"{message} (a key with spaces, dots or other characters is quoted: {quoted}; or "
        'use Segment\'s {"@path": ...})'
    )


def load_mapping_text(text: str, *, name: str = "<mapping>") -> MappingSet:
    """Load a mapping from YAML text; `name` stands for the file in messages."""
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "invalid YAML"
            raise MappingFileError(
                f"invalid YAML: {problem}",
                path=name,
                line=None if mark is None else mark.line + 1,
            ) from None
        except yaml.YAMLError as exc:
            raise MappingFileError(f"invalid YAML: {exc}", path=name) from None
        mapping_set = _Compiler(loader, name).mapping_set(root)
        mapping_set.source_text = text
        return mapping_set
    finally:
        loader.dispose()


def load_mapping(path: str | Path) -> MappingSet:
    """Load and compile a mapping file; raises ``MappingFileError`` naming file, line and key."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingFileError("no such file", path=str(file)) from None
    except UnicodeDecodeError as exc:
        raise MappingFileError(f"not UTF-8 text ({exc.reason})", path=str(file)) from None
    except OSError as exc:
        raise MappingFileError(f"cannot read it: {exc.strerror}", path=str(file)) from None
    return load_mapping_text(text, name=str(file))
