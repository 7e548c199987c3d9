"""segmetro's triggers against Segment's own answers (issue 12, point 4).

``tests/segment_oracle/golden/triggers.jsonl`` holds (trigger, event) cases with what
``@segment/destination-subscriptions`` answered: ``parseFql``'s error, and
``validate(parseFql(trigger), event)`` (true, false, or the message it threw). segmetro parses
each trigger with :func:`parse_trigger` and answers with ``Trigger.matches`` on the event as the
JSONL source reads it.

The deliberate difference (README, "Differences from Segment"): segmetro refuses at parse the
triggers Segment would silently turn into "matches nothing" (a parse error) and those on which
Segment's evaluator throws; such a refusal agrees. Any other refusal, and any other answer than
Segment's, disagrees.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import NamedTuple

import pytest

from segmetro.errors import TriggerError
from segmetro.models import Record
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


def trigger_verdicts() -> list[TriggerVerdict]:
    return [TriggerVerdict(case, segmetro_answer(case)) for case in load_trigger_cases()]


def test_the_trigger_corpus_is_large_and_varied() -> None:
    cases = load_trigger_cases()
    assert len(cases) >= 3000
    assert {case.matches for case in cases if case.ok and case.parse_error is None} == {
        True,
        False,
    }
    assert any(case.parse_error for case in cases)
    assert any(not case.ok for case in cases)


def test_segmetro_triggers_agree_with_segment() -> None:
    results = trigger_verdicts()
    wrong = [v for v in results if not v.agrees]
    if wrong:
        by_kind = {k: sum(v.kind == k for v in wrong) for k in ("validation", "throw", "value")}
        shown = "\n".join(v.describe() for v in wrong[:8])
        pytest.fail(
            f"{len(results) - len(wrong)}/{len(results)} trigger cases agree with Segment "
            f"({len(wrong)} disagree: {by_kind}); first ones:\n{shown}",
            pytrace=False,
        )
