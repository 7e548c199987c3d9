"""`segmetro verify`: ask Metronome about a sample of the events the ledger says were delivered."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from segmetro.delivery import SenderConfig, search_events
from segmetro.models import format_timestamp
from segmetro.state import LedgerEntry, StateStore
from segmetro.summary import Summary
from segmetro.window import MAX_AGE


@dataclass
class VerifyReport:
    """What the sample showed; each list holds transaction_ids."""

    sampled: int = 0
    found: int = 0
    missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    no_customer: list[str] = field(default_factory=list)
    no_billable_metric: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    #: why nothing could be checked (no delivered event inside the search's 34 days)
    nothing_checked: str | None = None
    #: events found that Metronome bills, by matched customer name and by metric name
    by_customer: Counter[str] = field(default_factory=Counter)
    by_metric: Counter[str] = field(default_factory=Counter)
    billed: int = 0

    def billing_json(self) -> dict[str, Any]:
        """The found events in the billing preview's words (``--billing`` of a dry run).

        As there, an event of no customer counts under ``unknown_customer`` only.
        """
        return {
            "events": self.found,
            "billed": self.billed,
            "bill_nothing": self.found - self.billed,
            "bill_nothing_by_cause": {
                "unknown_customer": len(self.no_customer),
                "no_metric": len(set(self.no_billable_metric) - set(self.no_customer)),
            },
            "events_by_customer": dict(sorted(self.by_customer.items())),
            "events_by_metric": dict(sorted(self.by_metric.items())),
        }

    @property
    def exit_code(self) -> int:
        """1 when the sample shows a problem or proves nothing: no false comfort."""
        problems = self.missing or self.no_customer or self.no_billable_metric
        return 1 if problems or self.nothing_checked is not None else 0

    def fill(self, summary: Summary) -> None:
        """Counts under the names of the lists they count; the transaction_ids as details."""
        lists = {
            "missing": self.missing,
            "duplicated": self.duplicates,
            "no_customer": self.no_customer,
            "no_billable_metric": self.no_billable_metric,
            "different": self.different,
        }
        summary.extra.update(sampled=self.sampled, found=self.found)
        summary.extra.update({name: len(ids) for name, ids in lists.items()})
        summary.details.update(
            transaction_ids=lists, nothing_checked=self.nothing_checked, billing=self.billing_json()
        )
        if self.nothing_checked is not None:
            summary.warnings.append(f"verified nothing: {self.nothing_checked}")


_COMPARED = ("customer_id", "event_type", "properties")


def _differs(entry: LedgerEntry, row: dict[str, Any]) -> bool:
    sent = entry.payload
    if sent is None:
        return False
    return any(sent.get(key) != row.get(key) for key in _COMPARED if key in sent)


async def verify_sample(
    state: StateStore,
    *,
    sample: int,
    now: datetime,
    config: SenderConfig,
    client: httpx.AsyncClient | None = None,
) -> VerifyReport:
    """Check up to `sample` delivered events from the last 34 days (search sees no further)."""
    entries = state.ledger_sample(sample, since=now - MAX_AGE)
    report = VerifyReport(sampled=len(entries))
    if not entries:
        report.nothing_checked = (
            f"the ledger of this destination holds no event with a timestamp after "
            f"{format_timestamp(now - MAX_AGE)} (Metronome's search sees only the last 34 "
            "days), so nothing could be checked"
        )
        return report
    rows = await search_events([e.transaction_id for e in entries], config=config, client=client)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_id.setdefault(str(row.get("transaction_id")), []).append(row)
    for entry in entries:
        tid = entry.transaction_id
        found = by_id.get(tid)
        if not found:
            report.missing.append(tid)
            continue
        report.found += 1
        if len(found) > 1 or any(r.get("is_duplicate") for r in found):
            report.duplicates.append(tid)
        original = next((r for r in found if not r.get("is_duplicate")), found[0])
        customer = original.get("matched_customer")
        metrics = original.get("matched_billable_metrics") or []
        if not customer:
            report.no_customer.append(tid)
        if not metrics:
            report.no_billable_metric.append(tid)
        if customer and metrics:
            report.billed += 1
            report.by_customer[str(customer.get("name") or customer.get("id"))] += 1
            for metric in metrics:
                report.by_metric[str(metric.get("name") or metric.get("id"))] += 1
        if _differs(entry, original):
            report.different.append(tid)
    return report
