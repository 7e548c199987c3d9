"""segmetro's triggers against Segment's own answers (issue 12, point 4).

``tests/segment_oracle/golden/triggers.jsonl`` holds (trigger, event) cases with what
``@segment/destination-subscriptions`` answered: ``parseFql``'s error, and
``validate(parseFql(trigger), event)`` (true, false, or the message it threw). segmetro parses
each trigger with :func:`parse_trigger` and answers with ``Trigger.matches`` on the event as the
JSONL source reads it, and again through ``MappingSet.apply``, the path every command runs,
where each trigger is written into one generated function beside the others of its set.

The deliberate difference (README, "Differences from Segment"): segmetro refuses at parse the
triggers Segment would silently turn into "matches nothing" (a parse error) and those on which
Segment's evaluator throws; such a refusal agrees. Any other refusal, and any other answer than
Segment's, disagrees.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import pytest

from segmetro.errors import TriggerError
from segmetro.mapping import MappingSet, load_mapping_text
from segmetro.models import Mapped, Reason, Record, Reject
from segmetro.triggers import Trigger, parse_trigger
from tests.test_segment_golden import golden_lines, read_event


@dataclass(frozen=True, slots=True)
class TriggerCase:
    id: str
    trigger: str
    event: str
    parse_error: str | None
    throws_on_some_event: bool
    ast_has_hole: bool
    ok: bool
    matches: bool | None
    error: str | None


@functools.cache
def load_trigger_cases() -> tuple[TriggerCase, ...]:
    out = []
    for line in golden_lines("triggers.jsonl"):
        row = json.loads(line)
        out.append(
            TriggerCase(
                id=row["id"],
                trigger=row["trigger"],
                event=row["event"],
                parse_error=row["parse_error"],
                throws_on_some_event=row["throws_on_some_event"],
                ast_has_hole=row["ast_has_hole"],
                ok=row["ok"],
                matches=row.get("matches"),
                error=row.get("error"),
            )
        )
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def compile_trigger(text: str) -> Trigger | str:
    try:
        return parse_trigger(text)
    except TriggerError as exc:
        return f"refused: {exc}"


@functools.lru_cache(maxsize=256)
def event_record(text: str) -> Record:
    return read_event(text)


class TriggerVerdict(NamedTuple):
    case: TriggerCase
    #: ``True``/``False`` (matches), or the message of a refusal or a failure
    segmetro: bool | str

    @property
    def refusable(self) -> bool:
        """Segment matches nothing (parse error), or its evaluator throws on this trigger: on an
        event of the corpus, or wherever evaluation reaches a hole in its tree."""
        return (
            self.case.parse_error is not None
            or self.case.throws_on_some_event
            or self.case.ast_has_hole
        )

    @property
    def agrees(self) -> bool:
        answer = self.segmetro
        if isinstance(answer, str):
            if answer.startswith("refused"):
                return self.refusable
            return not self.case.ok  # a failure where Segment throws (rejects the event)
        if self.case.parse_error is not None or not self.case.ok:
            return False
        return answer is self.case.matches

    @property
    def kind(self) -> str:
        if isinstance(self.segmetro, str) and self.segmetro.startswith("refused"):
            return "validation"
        if self.case.parse_error is not None:
            return "validation"
        if not self.case.ok or isinstance(self.segmetro, str):
            return "throw"
        return "value"

    def describe(self) -> str:
        if self.case.parse_error is not None:
            segment = f"parse error: {self.case.parse_error}"
        elif not self.case.ok:
            segment = f"throws: {self.case.error}"
        else:
            segment = f"matches={self.case.matches}"
        return (
            f"{self.case.id} [{self.kind}] trigger {self.case.trigger!r}\n"
            f"    event    {self.case.event[:200]}\n"
            f"    Segment  {segment}"
            f"{' (throws on some event)' if self.case.throws_on_some_event else ''}\n"
            f"    segmetro {self.segmetro}"
        )


def segmetro_answer(case: TriggerCase) -> bool | str:
    trigger = compile_trigger(case.trigger)
    if isinstance(trigger, str):
        return trigger
    try:
        return trigger.matches(event_record(case.event).event)
    except Exception as exc:  # noqa: BLE001 - the pipeline rejects the event; a disagreement here
        return f"failed: {type(exc).__name__}: {exc}"


#: triggers per generated ``MappingSet.apply``: many, so that their constants must not collide
SET_SIZE = 64


@functools.cache
def trigger_sets() -> tuple[dict[str, str], tuple[MappingSet, ...]]:
    """Every trigger the corpus compiles, as mappings of a few large sets: trigger -> name."""
    (base,) = load_mapping_text(
        "version: 1\nmappings:\n  - name: base\n    fields:\n"
        "      transaction_id: x\n      customer_id: c\n      event_type: e\n"
        "      timestamp: '2026-01-01T00:00:00.000Z'\n",
        name="triggers.yaml",
    ).mappings
    texts = sorted({case.trigger for case in load_trigger_cases()})
    compiled = [(text, compile_trigger(text)) for text in texts]
    usable = [(text, trigger) for text, trigger in compiled if not isinstance(trigger, str)]
    names = {text: f"t{i}" for i, (text, _) in enumerate(usable)}
    mappings = [
        dataclasses.replace(base, name=names[text], trigger=trigger, trigger_text=text)
        for text, trigger in usable
    ]
    sets = tuple(MappingSet(mappings[i : i + SET_SIZE]) for i in range(0, len(mappings), SET_SIZE))
    return names, sets


@functools.lru_cache(maxsize=256)
def applied(event: str) -> dict[str, bool | str]:
    """What every compiled trigger answers on `event` through ``MappingSet.apply``: the
    mappings that fired, and a failure's message where the trigger's evaluation raised."""
    record = event_record(event)
    out: dict[str, bool | str] = {}
    for mappings in trigger_sets()[1]:
        for result in mappings.apply(record):
            if isinstance(result, Mapped):
                out[result.mapping] = True
            else:
                assert isinstance(result, Reject)
                assert result.mapping is not None
                assert result.reason == Reason.EXPRESSION_ERROR, result
                out[result.mapping] = f"failed: {result.detail}"
    return out


def applied_answer(case: TriggerCase) -> bool | str:
    trigger = compile_trigger(case.trigger)
    if isinstance(trigger, str):
        return trigger
    return applied(case.event).get(trigger_sets()[0][case.trigger], False)


ANSWERS: dict[str, Callable[[TriggerCase], bool | str]] = {
    "Trigger.matches": segmetro_answer,
    "MappingSet.apply": applied_answer,
}


def trigger_verdicts(
    answer: Callable[[TriggerCase], bool | str] = segmetro_answer,
) -> list[TriggerVerdict]:
    return [TriggerVerdict(case, answer(case)) for case in load_trigger_cases()]


def test_the_trigger_corpus_is_large_and_varied() -> None:
    cases = load_trigger_cases()
    assert len(cases) >= 3000
    assert {case.matches for case in cases if case.ok and case.parse_error is None} == {
        True,
        False,
    }
    assert any(case.parse_error for case in cases)
    assert any(not case.ok for case in cases)


@pytest.mark.parametrize("path", list(ANSWERS))
def test_segmetro_triggers_agree_with_segment(path: str) -> None:
    results = trigger_verdicts(ANSWERS[path])
    wrong = [v for v in results if not v.agrees]
    if wrong:
        by_kind = {k: sum(v.kind == k for v in wrong) for k in ("validation", "throw", "value")}
        shown = "\n".join(v.describe() for v in wrong[:8])
        pytest.fail(
            f"{len(results) - len(wrong)}/{len(results)} trigger cases agree with Segment "
            f"({len(wrong)} disagree: {by_kind}); first ones:\n{shown}",
            pytrace=False,
        )
