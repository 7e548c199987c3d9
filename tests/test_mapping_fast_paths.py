"""The compiled mapping's shortcuts agree with the expressions they stand for, over the golden
corpus's events (issue 12: "the fast and general forms checked against the same corpus").

``Mapping.build`` inlines simple paths (``event["a"]["b"]``, falling back to the expression) and
skips the output walk when ``properties`` is plain JSON. Here every golden ``@path`` expression
and a set of bare JSONPaths are compiled twice, once as usual and once with both shortcuts
turned off, and applied to every golden event: the payloads and rejects must be identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import segmetro.mapping.core as core
import segmetro.mapping.kit as kit
from segmetro.mapping import MappingSet, load_mapping_text
from segmetro.models import Mapped
from tests.test_segment_golden import load_cases, read_event

TEMPLATE = """version: 1
mappings:
  - name: fast
    fields:
      transaction_id: "t"
      customer_id: {expr}
      event_type: "e"
      timestamp: "2026-01-01T00:00:00Z"
      properties: {{"v": {expr}, "w": {expr}}}
  - name: whole
    fields:
      transaction_id: "t"
      customer_id: "c"
      event_type: "e"
      timestamp: "2026-01-01T00:00:00Z"
      properties: {expr}
"""

BARE_PATHS = (
    "$.properties",
    "$.properties.amount",
    "$.properties.a.b",
    "$.properties['plan name']",
    "$.properties['größe']",
    "$['a.b']",
    "$.properties.items[0].sku",
    "$.traits",
    "$.userId",
    "$.properties.big",
    "$.context.app.version",
)


@contextmanager
def general_form() -> Iterator[None]:
    """Compile without the shortcuts: no inlined lookups, every properties value walked."""
    saved = core.path_keys, core.is_plain_json, kit.is_plain_json
    core.path_keys = lambda _expr: None
    core.is_plain_json = kit.is_plain_json = lambda _value: False
    try:
        yield
    finally:
        core.path_keys, core.is_plain_json, kit.is_plain_json = saved


def outcomes(mappings: MappingSet, event: str) -> list[Any]:
    out: list[Any] = []
    for result in mappings.apply(read_event(event)):
        if isinstance(result, Mapped):
            out.append(("mapped", json.dumps(result.payload, sort_keys=True, default=repr)))
        else:
            out.append(("reject", result.reason, result.detail))
    return out


def expressions() -> list[str]:
    found = {
        json.dumps(json.loads(case.mapping)["v"], ensure_ascii=False)
        for case in load_cases()
        if case.directive == "@path" and case.valid
    }
    return sorted(found) + [json.dumps(path) for path in BARE_PATHS]


def events() -> list[str]:
    return sorted({case.event for case in load_cases()})


def test_the_corpus_exercises_both_shortcuts() -> None:
    inlined = 0
    for expr in expressions():
        mappings = load_mapping_text(TEMPLATE.format(expr=expr), name="fast.yaml")
        inlined += any(core.path_keys(spec.expr) for spec in mappings.mappings[0].fields)
    assert inlined > 20


@pytest.mark.parametrize("expr", expressions())
def test_fast_and_general_forms_agree(expr: str) -> None:
    text = TEMPLATE.format(expr=expr)
    fast = load_mapping_text(text, name="fast.yaml")
    seen = [outcomes(fast, event) for event in events()]
    with general_form():
        general = load_mapping_text(text, name="fast.yaml")
        assert [outcomes(general, event) for event in events()] == seen
