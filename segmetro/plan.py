"""The dry-run plan and the mapping diff: what a run would do, without sending anything.

`plan` classifies every mapped event against the ledger of earlier runs (design §6): `new`,
`unchanged`, `changed`, `filtered`, `rejected:<reason>`. `diff` runs two versions of a mapping
over the same input and reports which events appear, disappear or change.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from segmetro.billing import BillingPreview
from segmetro.dedup import RunDeduper
from segmetro.mapping import MappingSet
from segmetro.models import Counts, Mapped, Record, Reject
from segmetro.pipeline import (
    LEDGER_CHUNK,
    PlanTarget,
    RejectSink,
    Resume,
    against_ledger,
    field_diff,
    read_resumed,
    select,
)
from segmetro.sources import InputSet, iter_records
from segmetro.state import UNRECORDED_PAYLOAD, StateStore
from segmetro.window import Window

#: How many field diffs a plan or a diff shows; the counts cover everything.
SHOWN_DIFFS = 10


@dataclass
class EventDiff:
    """One event whose payload differs, with its terraform-style field lines."""

    transaction_id: str
    source: str
    mapping: str
    lines: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "transaction_id": self.transaction_id,
            "source": self.source,
            "mapping": self.mapping,
            "changes": self.lines,
        }


@dataclass
class Plan:
    """What `replay` would do with these inputs, given what the ledger says was sent."""

    counts: Counts
    categories: Counter[str] = field(default_factory=Counter)
    by_mapping: dict[str, Counter[str]] = field(default_factory=dict)
    by_event_type: dict[str, Counter[str]] = field(default_factory=dict)
    by_day: dict[str, Counter[str]] = field(default_factory=dict)
    #: new events (what a replay sends and Metronome takes), by day and event_type
    sent_by_day: dict[str, Counter[str]] = field(default_factory=dict)
    changed: list[EventDiff] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    inputs_total: int = 0
    inputs_skipped: int = 0
    warnings: list[str] = field(default_factory=list)
    #: Which destination's ledger and checkpoints the plan used, and why.
    target: PlanTarget | None = None
    #: With ``--billing``: what the events the run would send would bill.
    billing: BillingPreview | None = None

    @property
    def exit_code(self) -> int:
        problems = self.counts.rejected_total or self.categories["changed"]
        billing = self.billing is not None and self.billing.exit_code
        return 1 if problems or billing else 0

    def note(self, category: str, mapping: str, event_type: str, day: str) -> None:
        self.categories[category] += 1
        self.by_mapping.setdefault(mapping, Counter())[category] += 1
        self.by_event_type.setdefault(event_type, Counter())[category] += 1
        self.by_day.setdefault(day, Counter())[category] += 1
        if category == "new":
            self.sent_by_day.setdefault(day, Counter())[event_type] += 1

    def to_json(self) -> dict[str, Any]:
        categories = {"new": 0, "unchanged": 0, "changed": 0}
        categories.update(self.categories)
        categories["filtered"] = self.counts.filtered
        for reason, n in self.counts.rejected.items():
            categories[f"rejected:{reason}"] = n
        out = {
            "plan": dict(sorted(categories.items())),
            "counts": self.counts.to_json(),
            "by_mapping": {k: dict(v) for k, v in sorted(self.by_mapping.items())},
            "by_event_type": {k: dict(v) for k, v in sorted(self.by_event_type.items())},
            "by_day": {k: dict(v) for k, v in sorted(self.by_day.items())},
            "sent_by_day": {
                k: dict(sorted(v.items())) for k, v in sorted(self.sent_by_day.items())
            },
            "changed_sample": [d.to_json() for d in self.changed],
            "rejects_sample": [r.to_json() for r in self.rejects],
            "inputs": self.inputs_total,
            "inputs_skipped": self.inputs_skipped,
            "warnings": self.warnings,
            "destination": None if self.target is None else self.target.to_json(),
            "exit_code": self.exit_code,
        }
        if self.billing is not None:
            out["billing"] = self.billing.to_json()
        return out


def plan(
    mappings: MappingSet,
    inputs: InputSet,
    *,
    window: Window,
    state: StateStore | None,
    resume: Resume | None = None,
    on_bytes: Callable[[int], None] | None = None,
    rejects: RejectSink | None = None,
    target: PlanTarget | None = None,
    billing: BillingPreview | None = None,
) -> Plan:
    """Classify every event as a replay would, sending nothing and writing no state.

    With `resume` (from the same checkpoints a replay would use), finished inputs are skipped
    and partly read ones start where a replay would, so the plan is what the run will do.
    `target` (from `plan_target`) says which destination `state` is; its warning is kept.
    `billing` previews every new event: Metronome ignores a transaction_id it already has, so
    unchanged and changed ones (even resent) add no usage.
    """
    counts = Counts()
    resume = resume or Resume()
    skipped = set(resume.skipped)
    todo = [obj for obj in inputs.objects if obj.name not in skipped]
    result = Plan(
        counts=counts,
        inputs_total=len(inputs.objects),
        inputs_skipped=len(skipped),
        warnings=[target.warning] if target is not None and target.warning else [],
        target=target,
        billing=billing,
    )
    result.warnings.extend(resume.warnings)
    sink = rejects or RejectSink(None)

    def classify(pending: deque[Mapped]) -> None:
        for mapped, category, previous in against_ledger(pending, state):
            payload = mapped.payload
            if billing is not None and category == "new":
                billing.add(payload, mapped.record.coords)
            if category == "new":
                counts.emitted += 1
            elif category == "unchanged":
                counts.unchanged += 1
            elif len(result.changed) < SHOWN_DIFFS:
                assert previous is not None
                before = previous.payload
                result.changed.append(
                    EventDiff(
                        transaction_id=payload["transaction_id"],
                        source=mapped.record.coords,
                        mapping=mapped.mapping,
                        lines=[UNRECORDED_PAYLOAD]
                        if before is None
                        else field_diff(before, payload),
                    )
                )
            result.note(category, mapped.mapping, payload["event_type"], payload["timestamp"][:10])

    with RunDeduper() as deduper:
        pending: deque[Mapped] = deque()
        stream = read_resumed(todo, resume, on_bytes=on_bytes)
        for item in select(stream, mappings, window=window, counts=counts, deduper=deduper):
            if isinstance(item, Reject):
                sink.add(item)
                continue
            pending.append(item)
            if len(pending) >= LEDGER_CHUNK:
                classify(pending)
        if pending:
            classify(pending)
    result.rejects = sink.shown
    return result


@dataclass
class MappingDiff:
    """How the events of one input differ between two mapping versions."""

    old: Counts
    new: Counts
    added: int = 0
    removed: int = 0
    changed: int = 0
    same: int = 0
    samples: list[tuple[str, EventDiff]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.added or self.removed or self.changed else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "same": self.same,
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "sample": [dict(d.to_json(), kind=kind) for kind, d in self.samples],
            "exit_code": self.exit_code,
        }


def _outputs(
    record: Record, mappings: MappingSet, counts: Counts, window: Window, deduper: RunDeduper
) -> dict[str, Mapped]:
    """The events one mapping version makes of one message, keyed by transaction_id.

    Events already made from an earlier message (duplicates in the input) are counted once,
    as a replay would send them once.
    """
    out: dict[str, Mapped] = {}
    for item in select([record], mappings, window=window, counts=counts, deduper=deduper):
        if isinstance(item, Mapped):
            counts.emitted += 1
            out.setdefault(item.payload["transaction_id"], item)
    return out


def diff(old: MappingSet, new: MappingSet, inputs: InputSet, *, window: Window) -> MappingDiff:
    """Run both mapping versions over each message and compare what they would send.

    The sample holds up to ``SHOWN_DIFFS`` events of each kind (added, removed, changed).

    Events are matched by transaction_id within each message, so memory stays flat.
    """
    result = MappingDiff(old=Counts(), new=Counts())

    shown: Counter[str] = Counter()

    def sample(kind: str, mapped: Mapped, lines: list[str]) -> None:
        # A few of each kind: the first hundred added events must not hide every removal.
        shown[kind] += 1
        if shown[kind] <= SHOWN_DIFFS:
            result.samples.append(
                (
                    kind,
                    EventDiff(
                        transaction_id=mapped.payload["transaction_id"],
                        source=mapped.record.coords,
                        mapping=mapped.mapping,
                        lines=lines,
                    ),
                )
            )

    with RunDeduper() as old_seen, RunDeduper() as new_seen:
        for item in _records(iter_records(inputs), result):
            before = _outputs(item, old, result.old, window, old_seen)
            after = _outputs(item, new, result.new, window, new_seen)
            _compare(before, after, result, sample)
    return result


def _compare(
    before: dict[str, Mapped],
    after: dict[str, Mapped],
    result: MappingDiff,
    sample: Callable[[str, Mapped, list[str]], None],
) -> None:
    """Count (and sample) the events of one message that appear, disappear or change."""
    for tid, mapped in after.items():
        if tid not in before:
            result.added += 1
            sample("added", mapped, field_diff({}, mapped.payload))
        elif before[tid].payload == mapped.payload:
            result.same += 1
        else:
            result.changed += 1
            sample("changed", mapped, field_diff(before[tid].payload, mapped.payload))
    for tid, mapped in before.items():
        if tid not in after:
            result.removed += 1
            sample("removed", mapped, field_diff(mapped.payload, {}))


def _records(stream: Iterator[Record | Reject], result: MappingDiff) -> Iterator[Record]:
    for item in stream:
        if isinstance(item, Reject):
            result.old.rejected[item.reason] += 1
            result.new.rejected[item.reason] += 1
        else:
            yield item
