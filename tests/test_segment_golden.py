"""segmetro's mapping expressions against Segment's own answers (issue 12, point 4).

``tests/segment_oracle/golden/mapping.jsonl[.gz]`` holds (expression, event) cases with what
``@segment/actions-core``'s ``transform()`` and mapping-kit's ``validate()`` answered (see that
folder's README; ``npm run generate`` there rebuilds it). Each case goes through segmetro's
public path: the expression becomes the value of one key of ``properties`` in a generated
mapping file (``load_mapping_text``), the event is read as the JSONL source reads a line, and the
mapping is applied (``MappingSet.apply``). Three answers must agree:

* Segment's ``validate`` refuses the mapping ⇔ segmetro refuses the file at load;
* ``transform`` throws for the event ⇔ segmetro rejects the event;
* otherwise the value is the same JSON value, numbers compared as JavaScript doubles
  (Segment's runtime parsed the export with ``JSON.parse``).

One test per directive class (the outermost directive of the expression), each asserting 100%
agreement outside ``DIFFERENCES``, the deliberate differences (README, "Differences from
Segment"). ``python tests/segment_oracle/agreement.py`` prints the rates.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from segmetro.errors import SegmetroError
from segmetro.mapping import MappingSet, load_mapping_text
from segmetro.models import Mapped, Record, Reject
from segmetro.sources.jsonl import records

GOLDEN = Path(__file__).parent / "segment_oracle" / "golden"
DIRECTIVES = (
    "@path",
    "@template",
    "@literal",
    "@if",
    "@case",
    "@replace",
    "@merge",
    "@arrayPath",
    "@flatten",
    "@json",
    "@transform",
    "@excludeWhenNull",
    "@liquid",
)
#: The classes reported on: each directive as the outermost one, and objects/arrays around them.
CLASSES = (*DIRECTIVES, "plain")
#: The key the generated mapping's ``properties`` holds the expression under (Segment's ``v``).
KEY = "v"
_MAX_SAFE = 2**53


class Difference(NamedTuple):
    """A deliberate difference from Segment: the cases it covers (`applies`) and why segmetro
    differs there. Each entry mirrors a row of README's "Differences from Segment" table."""

    reason: str
    applies: Callable[[Case], bool]


def ids(*names: str) -> Callable[[Case], bool]:
    """Cases by id: ``m12`` is every event of expression 12, ``m12-e7`` one case."""
    return lambda case: any(case.id == n or case.id.startswith(n + "-") for n in names)


def mapping_contains(*texts: str) -> Callable[[Case], bool]:
    """Cases whose mapping JSON text contains one of `texts` (``'| date:'``)."""
    return lambda case: any(text in case.mapping for text in texts)


#: Each entry must still cover a disagreeing case (a stale one fails); nothing else may disagree.
DIFFERENCES: list[Difference] = []


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    directive: str
    mapping: str
    event: str
    valid: bool
    validate_error: str | None
    ok: bool
    result: str | None
    error: str | None


class Outcome(NamedTuple):
    """One side's answer: ``refused`` (at load / by validate), ``throws`` (the event is
    rejected), or ``value`` with the JSON value of ``{"v": ...}``; `detail` is the message."""

    kind: str
    value: Any = None
    detail: str = ""


# --------------------------------------------------------------------------- the goldens


def golden_lines(name: str) -> Iterator[str]:
    """The lines of a golden file, gzip-compressed or not."""
    plain = GOLDEN / name
    if plain.exists():
        yield from plain.read_text(encoding="utf-8").splitlines()
        return
    with gzip.open(GOLDEN / f"{name}.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            yield line.rstrip("\n")


@functools.cache
def load_cases() -> tuple[Case, ...]:
    out = []
    for line in golden_lines("mapping.jsonl"):
        row = json.loads(line)
        out.append(
            Case(
                id=row["id"],
                directive=row["directive"],
                mapping=row["mapping"],
                event=row["event"],
                valid=row["valid"],
                validate_error=row.get("validate_error"),
                ok=row["ok"],
                result=row.get("result"),
                error=row.get("error"),
            )
        )
    return tuple(out)


def js_json(text: str) -> Any:
    """JSON text as JavaScript's ``JSON.parse`` reads it: integers past 2^53 are doubles."""

    def integer(digits: str) -> int | float:
        value = int(digits)
        return value if -_MAX_SAFE <= value <= _MAX_SAFE else float(digits)

    return json.loads(text, parse_int=integer)


def segment_outcome(case: Case) -> Outcome:
    if not case.valid:
        return Outcome("refused", detail=case.validate_error or "")
    if not case.ok:
        return Outcome("throws", detail=case.error or "")
    assert case.result is not None
    return Outcome("value", js_json(case.result))


# --------------------------------------------------------------------------- segmetro's side

_TEMPLATE = """version: 1
mappings:
  - name: golden
    fields:
      transaction_id: "t"
      customer_id: "c"
      event_type: "e"
      timestamp: "2026-01-01T00:00:00Z"
      properties: {mapping}
"""


@functools.lru_cache(maxsize=4096)
def load(mapping: str) -> MappingSet | str:
    """The generated mapping file compiled, or the message segmetro refuses it with.

    The mapping JSON goes into the YAML as it is (JSON is YAML flow syntax), so numbers keep
    their digits as Segment's mapping JSON has them.
    """
    try:
        return load_mapping_text(_TEMPLATE.format(mapping=mapping), name="golden.yaml")
    except SegmetroError as exc:
        return str(exc)


def read_event(text: str) -> Record:
    """The event as segmetro's JSONL source reads an input line."""
    (item,) = records("golden.jsonl", [text.encode() + b"\n"], start_line=0, max_line_bytes=1 << 24)
    assert isinstance(item, Record), item
    return item


def segmetro_outcome(case: Case) -> Outcome:
    try:
        compiled = load(case.mapping)
        if isinstance(compiled, str):
            return Outcome("refused", detail=compiled)
        (out,) = compiled.apply(read_event(case.event))
    except Exception as exc:  # noqa: BLE001 - a crash is a disagreement to report, not to raise
        return Outcome("crash", detail=f"{type(exc).__name__}: {exc}")
    if isinstance(out, Reject):
        return Outcome("throws", detail=f"{out.reason}: {out.detail}")
    assert isinstance(out, Mapped)
    return Outcome("value", out.payload.get("properties", {}))


# --------------------------------------------------------------------------- comparison


def same_value(expected: Any, actual: Any) -> bool:
    """Equal JSON values, numbers as JavaScript doubles (an exact ``int`` past 2^53 differs from
    the double Segment computed; ``1`` and ``1.0`` are the same number)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float):
        if not isinstance(actual, int | float):
            return False
        if isinstance(actual, float) and math.isnan(actual):
            return False
        return float(expected) == actual if isinstance(expected, float) else expected == actual
    if isinstance(expected, str) or expected is None:
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(same_value(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and set(actual) == set(expected)
            and all(same_value(expected[k], actual[k]) for k in expected)
        )
    return False


class Verdict(NamedTuple):
    case: Case
    segment: Outcome
    segmetro: Outcome

    @property
    def agrees(self) -> bool:
        if self.segment.kind != self.segmetro.kind:
            return False
        return self.segment.kind != "value" or same_value(self.segment.value, self.segmetro.value)

    @property
    def kind(self) -> str:
        """What disagrees: ``validation``, ``throw`` or ``value``."""
        if "refused" in (self.segment.kind, self.segmetro.kind):
            return "validation"
        if self.segment.kind != self.segmetro.kind:
            return "throw"
        return "value"

    def describe(self) -> str:
        def side(outcome: Outcome) -> str:
            if outcome.kind == "value":
                return json.dumps(outcome.value, ensure_ascii=False, default=repr)[:300]
            return f"{outcome.kind}: {outcome.detail[:300]}"

        return (
            f"{self.case.id} [{self.kind}] mapping {self.case.mapping[:300]}\n"
            f"    event    {self.case.event[:200]}\n"
            f"    Segment  {side(self.segment)}\n"
            f"    segmetro {side(self.segmetro)}"
        )


def segment_reasons(message: str) -> list[str]:
    """validate's reasons without their paths: ``/v/@case/value should be ... a number.`` →
    ``should be ... a number``."""
    return [re.sub(r"^/\S*\s+", "", line).rstrip(".") for line in message.splitlines() if line]


def quotes_segments_reason(verdict: Verdict) -> bool:
    """Whether segmetro's refusal gives one of Segment's reasons."""
    return any(r and r in verdict.segmetro.detail for r in segment_reasons(verdict.segment.detail))


def difference_for(case: Case) -> Difference | None:
    return next((d for d in DIFFERENCES if d.applies(case)), None)


def verdicts(directive: str | None = None) -> list[Verdict]:
    return [
        Verdict(case, segment_outcome(case), segmetro_outcome(case))
        for case in load_cases()
        if directive is None or case.directive == directive
    ]


# --------------------------------------------------------------------------- tests


def test_the_corpus_is_segments_current_release_and_large_enough() -> None:
    meta = json.loads((GOLDEN / "meta.json").read_text(encoding="utf-8"))
    package = json.loads((GOLDEN.parent / "package.json").read_text(encoding="utf-8"))
    assert meta["packages"] == package["dependencies"]
    generator = (GOLDEN.parent / "generate.js").read_bytes()
    assert meta["generator_sha256"] == hashlib.sha256(generator).hexdigest(), (
        "generate.js changed after the goldens: regenerate (tests/segment_oracle/README.md)"
    )
    cases = load_cases()
    assert len(cases) == meta["counts"]["mapping"] >= 3000
    assert {case.directive for case in cases} == set(CLASSES)
    counts = {name: sum(case.directive == name for case in cases) for name in CLASSES}
    assert min(counts.values()) >= 200, counts
    # every class has cases Segment maps, throws on and refuses
    for name in DIRECTIVES:
        kinds = {segment_outcome(case).kind for case in cases if case.directive == name}
        assert {"value", "refused"} <= kinds, (name, kinds)


@pytest.mark.parametrize("directive", CLASSES)
def test_segmetro_agrees_with_segment(directive: str) -> None:
    results = verdicts(directive)
    wrong = [v for v in results if not v.agrees and difference_for(v.case) is None]
    if wrong:
        by_kind = {k: sum(v.kind == k for v in wrong) for k in ("validation", "throw", "value")}
        shown = "\n".join(v.describe() for v in wrong[:8])
        pytest.fail(
            f"{directive}: {len(results) - len(wrong)}/{len(results)} cases agree with Segment "
            f"({len(wrong)} disagree: {by_kind}); first ones:\n{shown}",
            pytrace=False,
        )


def test_refusals_give_segments_reason() -> None:
    """Issue 12: a mapping Segment's validate refuses is refused with Segment's reason."""
    both = [v for v in verdicts() if v.segment.kind == v.segmetro.kind == "refused"]
    assert both, "no mapping that both refuse"
    silent = [v for v in both if not quotes_segments_reason(v)]
    if silent:
        shown = "\n".join(v.describe() for v in silent[:8])
        pytest.fail(
            f"{len(both) - len(silent)}/{len(both)} refusals give Segment's reason; first ones:\n"
            f"{shown}",
            pytrace=False,
        )


def test_every_listed_difference_still_differs() -> None:
    """An entry that covers no disagreeing case is stale: the README's table must shrink with it."""
    cases = load_cases()
    for difference in DIFFERENCES:
        assert difference.reason.strip(), difference
        covered = [case for case in cases if difference.applies(case)]
        assert covered, f"{difference.reason!r} covers no golden case"
        assert any(
            not Verdict(case, segment_outcome(case), segmetro_outcome(case)).agrees
            for case in covered
        ), f"every case of {difference.reason!r} agrees now: drop it from DIFFERENCES"


def test_the_comparison_treats_numbers_as_javascript_does() -> None:
    """The comparison itself: a double Segment computed from a big integer is not segmetro's
    exact integer, and JavaScript's one number type makes 1 and 1.0 equal."""
    big = js_json('{"v": 12345678901234567000}')["v"]
    assert isinstance(big, float)
    assert not same_value(big, 12345678901234567891)
    assert same_value(big, 12345678901234567168)
    assert same_value(1, 1.0)
    assert not same_value(1, True)
    assert not same_value({"a": None}, {})
    assert not same_value([1, 2], [1])
    assert not same_value("1", 1)
