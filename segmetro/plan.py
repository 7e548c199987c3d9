"""The dry-run plan and the mapping diff: what a run would do, without sending anything.

`plan` classifies every mapped event against the ledger of earlier runs (design §6): `new`,
`unchanged`, `changed`, `filtered`, `rejected:<reason>`. `diff` runs two versions of a mapping
over the same input and reports which events appear, disappear or change.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from segmetro.dedup import RunDeduper, expected_ids
from segmetro.errors import Interrupted
from segmetro.mapping import MappingSet
from segmetro.models import Counts, Mapped, Reason, Record, Reject
from segmetro.pipeline import (
    LEDGER_CHUNK,
    SHOWN_REJECTS,
    PlanTarget,
    RejectSink,
    Resume,
    against_ledger,
    changed_reject,
    field_diff,
    read_resumed,
    select,
)
from segmetro.sources import InputSet, iter_records
from segmetro.state import UNRECORDED_PAYLOAD, StateStore
from segmetro.summary import Summary, by_mapping, selection_counts, unmatched_warnings
from segmetro.window import Window

if TYPE_CHECKING:
    from segmetro.billing import BillingPreview

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

    def fill(self, summary: Summary, names: Sequence[str]) -> None:
        """The plan's summary: the selection, then what a replay would do with the emitted
        events (``emitted = new + unchanged + changed + resent_changed``)."""
        summary.selection(self.counts, names)
        summary.extra.update(
            new=self.categories["new"],
            unchanged=self.counts.unchanged,
            changed=self.counts.rejected[Reason.CHANGED],
            resent_changed=self.counts.resent_changed,
            inputs_total=self.inputs_total,
            inputs_skipped=self.inputs_skipped,
        )
        assert summary.by_mapping is not None
        for name, row in summary.by_mapping.items():
            plan = self.by_mapping.get(name, Counter())
            row.update({key: plan[key] for key in ("new", "unchanged", "changed")})
        summary.warnings[:0] = self.warnings
        summary.details.update(
            by_event_type={k: dict(v) for k, v in sorted(self.by_event_type.items())},
            by_day={k: dict(v) for k, v in sorted(self.by_day.items())},
            changed_sample=[d.to_json() for d in self.changed],
            # the first rejects only: the latest one kept for the console is not a sample
            rejects_sample=[r.to_json() for r in self.rejects[:SHOWN_REJECTS]],
            sent_by_day={k: dict(sorted(v.items())) for k, v in sorted(self.sent_by_day.items())},
            destination=None if self.target is None else self.target.to_json(),
        )
        if self.billing is not None:
            summary.details["billing"] = self.billing.to_json()


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
    resend_changed: bool = False,
    counts: Counts | None = None,
    billing: BillingPreview | None = None,
) -> Plan:
    """Classify every event as a replay would, sending nothing and writing no state.

    With `resume` (from the same checkpoints a replay would use), finished inputs are skipped
    and partly read ones start where a replay would, so the plan is what the run will do.
    `target` (from `plan_target`) says which destination `state` is; its warning is kept.
    `billing` previews every new event: Metronome ignores a transaction_id it already has, so
    unchanged and changed ones (even resent) add no usage.
    """
    counts = counts if counts is not None else Counts()
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
            if category == "unchanged":
                counts.unchanged += 1
            elif category == "changed" and resend_changed:
                counts.resent_changed += 1
            elif category == "changed":
                assert previous is not None
                counts.rejected[Reason.CHANGED] += 1
                sink.add(changed_reject(mapped, previous))
            if category == "changed" and len(result.changed) < SHOWN_DIFFS:
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

    result.rejects = sink.shown
    with RunDeduper(expected=expected_ids(inputs.total_bytes)) as deduper:
        pending: deque[Mapped] = deque()
        stream = read_resumed(todo, resume, on_bytes=on_bytes)
        try:
            for item in select(stream, mappings, window=window, counts=counts, deduper=deduper):
                if isinstance(item, Reject):
                    sink.add(item)
                    continue
                pending.append(item)
                if len(pending) >= LEDGER_CHUNK:
                    classify(pending)
            if pending:
                classify(pending)
        except KeyboardInterrupt:
            raise Interrupted(result) from None
    return result


@dataclass
class MappingDiff:
    """How the events of one input differ between two mapping versions."""

    old: Counts
    new: Counts
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    samples: list[tuple[str, EventDiff]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.added or self.removed or self.changed else 0

    def fill(self, summary: Summary, old: MappingSet, new: MappingSet) -> None:
        """The diff's summary: how the events differ, and each version's selection."""
        summary.extra.update(
            added=self.added, removed=self.removed, changed=self.changed, unchanged=self.unchanged
        )
        for key, counts, mappings in (("old", self.old, old), ("new", self.new, new)):
            names = mappings.names()
            summary.details[key] = dict(
                selection_counts(counts),
                rejected_by_reason=dict(sorted(counts.rejected.items())),
                by_mapping=by_mapping(counts, names),
            )
            summary.warnings.extend(
                f"{mappings.path}: {text}" for text in unmatched_warnings(counts, names)
            )
        summary.details["sample"] = [dict(d.to_json(), kind=kind) for kind, d in self.samples]


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

    expected = expected_ids(inputs.total_bytes)
    with RunDeduper(expected=expected) as old_seen, RunDeduper(expected=expected) as new_seen:
        try:
            for item in _records(iter_records(inputs), result):
                before = _outputs(item, old, result.old, window, old_seen)
                after = _outputs(item, new, result.new, window, new_seen)
                _compare(before, after, result, sample)
        except KeyboardInterrupt:
            raise Interrupted(result) from None
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
            result.unchanged += 1
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
            result.old.unreadable(item.reason)
            result.new.unreadable(item.reason)
        else:
            yield item
