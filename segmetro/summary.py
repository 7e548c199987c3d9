"""The one summary of every command: the names of its counts, its warnings, its JSON object.

``segmetro.output`` renders a `Summary` twice, as the human lines on stderr and as the one
``--json`` object on stdout, from the same fields, so a count has one name everywhere. The
object's shape is ``docs/summary.schema.json``; the invariants the counts obey are stated in
the README ("Summaries") and checked by the tests on every ``--json`` output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from segmetro.errors import (
    ConfigError,
    DeliveryError,
    Interrupted,
    LockedError,
    SegmetroError,
    SourceError,
    StateError,
)
from segmetro.models import Counts, Reason, format_timestamp

#: The selection counts, in the order every summary shows them.
SELECTION = (
    "read",
    "unparseable",
    "filtered",
    "matched",
    "mapped",
    "rejected",
    "outside_window",
    "duplicates",
    "emitted",
)

#: A mapping whose matched events are rejected this often or more is flagged by validate.
HIGH_REJECT_SHARE = 0.5
#: A field empty in more than this share of a mapping's events is flagged by validate.
MOSTLY_EMPTY_SHARE = 0.5


def utc_now() -> str:
    return format_timestamp(datetime.now(UTC))


def selection_counts(counts: Counts) -> dict[str, int]:
    """The counts every command that reads input shows, by their one name."""
    return {
        "read": counts.read,
        "unparseable": counts.unparseable,
        "filtered": counts.filtered,
        "matched": counts.matched,
        "mapped": counts.mapped,
        "rejected": counts.rejected_total,
        "outside_window": counts.outside_window,
        "duplicates": counts.duplicates,
        "emitted": counts.emitted,
    }


def by_mapping(counts: Counts, names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per mapping (every one, in file order): events made, rejected at selection, emitted."""
    return {
        name: {
            "matched": counts.mapping_matched[name],
            "rejected": counts.mapping_rejected[name],
            "emitted": counts.mapping_emitted[name],
        }
        for name in names
    }


def unmatched_warnings(counts: Counts, names: Sequence[str]) -> list[str]:
    """A warning for each mapping whose trigger fired on none of the messages read."""
    messages = counts.read - counts.unparseable
    if messages <= 0:
        return []
    return [
        f"mapping {name!r} matched none of the {messages} messages read: check its trigger"
        for name in names
        if not counts.mapping_matched[name]
    ]


def high_reject_warnings(counts: Counts, names: Sequence[str]) -> list[str]:
    """A warning for each mapping that rejects at least `HIGH_REJECT_SHARE` of its events."""
    out = []
    for name in names:
        matched, rejected = counts.mapping_matched[name], counts.mapping_rejected[name]
        if matched and rejected / matched >= HIGH_REJECT_SHARE:
            out.append(
                f"mapping {name!r} rejects {100 * rejected / matched:.0f}% of the events it "
                f"matched ({rejected} of {matched}): see the rejects for why"
            )
    return out


def error_kind(exc: BaseException) -> str:
    """The stable ``error.kind`` of an exception a command ended with."""
    for cls, kind in (
        (Interrupted, "interrupted"),
        (LockedError, "locked"),
        (StateError, "state"),
        (ConfigError, "config"),
        (SourceError, "input"),
        (DeliveryError, "delivery"),
        (KeyboardInterrupt, "interrupted"),
    ):
        if isinstance(exc, cls):
            return kind
    return "error" if isinstance(exc, SegmetroError) else "internal"


@dataclass
class Summary:
    """What a command did, under the names both renderings use.

    ``counts`` are the selection counts (`SELECTION`) of commands that read input; ``extra``
    the command's own (replay's delivery, a plan's ledger categories, verify's findings);
    ``details`` the command's lists and breakdowns. In JSON all three are flat keys.
    """

    command: str
    started_at: str = field(default_factory=utc_now)
    ended_at: str | None = None
    exit_code: int = 0
    error: dict[str, Any] | None = None
    run_id: str | None = None
    #: ``K/N`` of a sharded run
    shard: str | None = None
    mapping: str | list[str] | None = None
    inputs: list[str] | None = None
    state: str | None = None
    rejects: str | None = None
    output: str | None = None
    api_url: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, int | float] = field(default_factory=dict)
    rejected_by_reason: dict[str, int] | None = None
    by_mapping: dict[str, dict[str, int]] | None = None
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    #: how many of `warnings` were already shown (at start): the human summary shows the rest
    warnings_shown: int = 0

    def selection(self, counts: Counts, names: Sequence[str] | None = None) -> None:
        """Take the selection counts, rejects by reason and per-mapping counts of a run."""
        self.counts = selection_counts(counts)
        self.rejected_by_reason = dict(sorted(counts.rejected.items()))
        if names is not None:
            self.by_mapping = by_mapping(counts, names)
            self.warnings.extend(unmatched_warnings(counts, names))

    def fail(self, exc: BaseException, exit_code: int, message: str | None = None) -> None:
        self.error = {
            "kind": error_kind(exc),
            "message": message if message is not None else str(exc),
            "exit_code": exit_code,
        }
        self.exit_code = exit_code

    def finish(self, exit_code: int) -> Summary:
        self.exit_code = exit_code
        if self.error is not None:
            self.error["exit_code"] = exit_code
        self.ended_at = utc_now()
        return self

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "command": self.command,
            "started_at": self.started_at,
            "ended_at": self.ended_at or utc_now(),
            "exit_code": self.exit_code,
            "error": self.error,
        }
        for key in (
            "run_id",
            "shard",
            "mapping",
            "inputs",
            "state",
            "rejects",
            "output",
            "api_url",
        ):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out.update(self.counts)
        out.update(self.extra)
        if self.rejected_by_reason is not None:
            out["rejected_by_reason"] = self.rejected_by_reason
        if self.by_mapping is not None:
            out["by_mapping"] = self.by_mapping
        out["warnings"] = list(self.warnings)
        out.update(self.details)
        return out


def delivery_extra(counts: Counts, *, sent: int, dead_lettered: int) -> dict[str, int]:
    """Where replay's emitted events went: ``emitted = unchanged + changed + sent +
    dead_lettered + unsent``; ``unsent`` is whatever the run did not settle."""
    changed = counts.rejected[Reason.CHANGED]
    return {
        "unchanged": counts.unchanged,
        "changed": changed,
        "resent_changed": counts.resent_changed,
        "sent": sent,
        "dead_lettered": dead_lettered,
        "unsent": counts.emitted - counts.unchanged - changed - sent - dead_lettered,
    }


def _checkpoint_json(c: Any) -> dict[str, Any]:
    return {
        "source": c.source,
        "line": c.line,
        "done": c.done,
        "updated_at": c.updated_at,
        "destination": c.destination,
    }


def _shard_json(shard: Any) -> dict[str, Any]:
    run = shard.last_run
    return {
        "shard": shard.shard,
        "lock": None if shard.lock is None else shard.lock.describe(),
        "last_run": None
        if run is None
        else {
            "id": run.id,
            "started_at": run.started_at,
            "ended_at": run.ended_at,
            "exit_code": run.exit_code,
            "sent": (run.counts or {}).get("sent"),
        },
    }


def status_details(
    summary: Summary,
    runs: Sequence[Any],
    checkpoints: Sequence[Any],
    *,
    ledger: int,
    lock: Any,
    destinations: Sequence[Any],
    shards: Sequence[Any] = (),
) -> None:
    """``status``: the ledger size, and the runs, lock, shards, checkpoints and destinations."""
    summary.extra["ledger"] = ledger
    summary.details.update(
        lock=None if lock is None else lock.describe(),
        shards=[_shard_json(s) for s in shards],
        runs=[
            {
                "id": r.id,
                "command": r.command,
                "started_at": r.started_at,
                "ended_at": r.ended_at,
                "exit_code": r.exit_code,
                "destination": r.destination,
                "counts": r.counts,
            }
            for r in runs
        ],
        checkpoints=[_checkpoint_json(c) for c in checkpoints],
        destinations=[
            {
                **d.destination.to_json(),
                "ledger": d.ledger,
                "checkpoints": [_checkpoint_json(c) for c in d.checkpoints],
                "undeliverable": [
                    {
                        "run_id": u.run_id,
                        "events": u.events,
                        "delivered_since": u.delivered_since,
                        "open": u.still_open,
                    }
                    for u in d.undeliverable
                ],
            }
            for d in destinations
        ],
    )
