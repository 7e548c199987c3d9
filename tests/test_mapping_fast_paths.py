"""The compiled mapping's shortcuts agree with the expressions they stand for, over the golden
corpus's events (issue 12: "the fast and general forms checked against the same corpus").

``Mapping.build`` inlines the code form of paths (``event["a"]["b"]``, falling back to Segment's
``get``), templates, ``@if``, ``@coalesce`` and objects, applies ``string_properties`` per key,
and skips the output walk when ``properties`` is plain JSON. Here every golden ``@path``,
``@template``, ``@if`` and plain-object expression and a set of bare JSONPaths are compiled
twice, once as usual and once with every expression called and no output shortcut, and
applied to every golden event: the payloads and rejects must be identical.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import segmetro.mapping.core as core
import segmetro.mapping.kit as kit
from segmetro.mapping import MappingSet, load_mapping_text
from segmetro.mapping.values import code_of
from segmetro.models import Mapped
from tests.test_segment_golden import load_cases, read_event

TEMPLATE = """version: 1
mappings:
  - name: fast
    string_properties: {strings}
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

#: The golden classes whose outermost form has a code form.
INLINED = ("@path", "@template", "@if", "plain")
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
    """Compile without the shortcuts: every expression called, every properties value walked."""
    saved = core._compile, core.is_plain_json, kit.is_plain_json
    core._compile = functools.partial(saved[0], inline=False)
    core.is_plain_json = kit.is_plain_json = lambda _value: False
    try:
        yield
    finally:
        core._compile, core.is_plain_json, kit.is_plain_json = saved


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
        if case.directive in INLINED and case.valid
    }
    return sorted(found) + [json.dumps(path) for path in BARE_PATHS]


def events() -> list[str]:
    return sorted({case.event for case in load_cases()})


def test_the_corpus_exercises_the_code_forms() -> None:
    inlined = 0
    for expr in expressions():
        mappings = load_mapping_text(TEMPLATE.format(expr=expr, strings="false"), name="f.yaml")
        inlined += code_of(mappings.mappings[0].fields[1].expr) is not None
    assert inlined > 100


@pytest.mark.parametrize("strings", ["false", "true"])
@pytest.mark.parametrize("expr", expressions())
def test_fast_and_general_forms_agree(expr: str, strings: str) -> None:
    text = TEMPLATE.format(expr=expr, strings=strings)
    fast = load_mapping_text(text, name="fast.yaml")
    seen = [outcomes(fast, event) for event in events()]
    with general_form():
        general = load_mapping_text(text, name="fast.yaml")
        assert [outcomes(general, event) for event in events()] == seen
