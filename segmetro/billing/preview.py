"""What a run would bill: fed every event the run would send, it reports losses and usage.

An event *bills nothing* when its ``customer_id`` resolves to no active customer
(``unknown_customer``), when no previewable metric takes it (``no_metric``, with the nearest
metric and the check that failed), or when every metric that takes it needs a number in
``aggregation_key`` and finds none (``aggregation_key``). A metric that takes an event but
cannot use its value while another metric bills it is a ``skipped`` entry of that metric.
Either makes ``exit_code`` 1. Memory is per group and bucket, never per event (UNIQUE keeps
its distinct values, as it must).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from segmetro.billing.account import Account, Metric
from segmetro.billing.rules import aggregation_value, match_metric, value_text
from segmetro.billing.usage import Aggregate

__all__ = ["CAUSES", "BillingPreview", "Loss", "MetricUsage"]

CAUSES = ("unknown_customer", "no_metric", "aggregation_key")
#: Lines of each list the text plan shows; ``--json`` has all of them.
TOP = 5
_NONE = "(none)"
_PREVIEW_FIELDS = ("transaction_id", "event_type", "timestamp", "properties")


@dataclass
class Loss:
    """Events that bill nothing for one reason, with the first one as an example."""

    cause: str
    event_type: str
    detail: str
    metric: str | None
    events: int = 0
    example: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        first = self.example
        where = f"e.g. {first['transaction_id']} ({first['source']})"
        if first.get("value") is not None:
            where += f", value {first['value']}"
        return f"{self.events} × {self.event_type}: {self.detail}; {where}"

    def to_json(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "event_type": self.event_type,
            "detail": self.detail,
            "metric": self.metric,
            "events": self.events,
            "example": self.example,
        }


@dataclass
class MetricUsage:
    """One metric's usage from this run: the total, by customer, by day and by group."""

    metric: Metric
    total: Aggregate
    by_customer: dict[str, Aggregate] = field(default_factory=dict)
    by_day: dict[str, Aggregate] = field(default_factory=dict)
    by_customer_day: dict[tuple[str, str], Aggregate] = field(default_factory=dict)
    by_group: dict[str, dict[str, Aggregate]] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(
        self, value: Any, customer: str, day: str, timestamp: str, groups: list[tuple[str, str]]
    ) -> None:
        kind = self.metric.aggregation_type
        self.total.add(value, timestamp)
        for bucket in (
            self.by_customer.setdefault(customer, Aggregate(kind)),
            self.by_day.setdefault(day, Aggregate(kind)),
            self.by_customer_day.setdefault((customer, day), Aggregate(kind)),
        ):
            bucket.add(value, timestamp)
        for keys, values in groups:
            self.by_group.setdefault(keys, {}).setdefault(values, Aggregate(kind)).add(
                value, timestamp
            )

    def to_json(self, names: dict[str, str]) -> dict[str, Any]:
        m = self.metric
        return {
            "metric": m.name,
            "id": m.id,
            "aggregation_type": m.aggregation_type,
            "aggregation_key": m.aggregation_key,
            "events": self.total.events,
            "total": self.total.usage,
            "by_customer": {
                names[c]: a.usage for c, a in sorted(self.by_customer.items(), key=_by_name(names))
            },
            "by_day": {d: a.usage for d, a in sorted(self.by_day.items())},
            "by_customer_day": [
                {"customer": names[c], "day": d, "usage": a.usage, "events": a.events}
                for (c, d), a in sorted(self.by_customer_day.items())
            ],
            "by_group": {
                keys: {v: a.usage for v, a in sorted(table.items())}
                for keys, table in sorted(self.by_group.items())
            },
            "skipped": dict(sorted(self.skipped.items())),
        }


def _by_name(names: dict[str, str]) -> Any:
    return lambda item: names[item[0]]


class BillingPreview:
    """The billing side of one dry run (or ``map``): feed it with ``add``, then report."""

    def __init__(self, account: Account, *, keep_events: int = 0) -> None:
        self.account = account
        #: with ``--invoice-preview``: the first `keep_events` billed events of each customer,
        #: as ``previewEvents`` takes them (it takes at most 100 per request)
        self.keep_events = keep_events
        self.kept: dict[str, list[dict[str, Any]]] = {}
        #: the draft invoices, once ``invoice.draft_invoices`` asked for them
        self.invoices: list[dict[str, Any]] | None = None
        self._metrics = account.active_metrics
        self.events = 0
        self.billed = 0
        self.nothing: Counter[str] = Counter()
        self._losses: dict[tuple[str, ...], Loss] = {}
        self.usage: dict[Metric, MetricUsage] = {
            m: MetricUsage(metric=m, total=Aggregate(m.aggregation_type)) for m in self._metrics
        }
        self._names = {c.id: c.name for c in account.customers}
        self.customers: Counter[str] = Counter()  # events that bill, by customer id

    def add(self, payload: dict[str, Any], source: str) -> None:
        """Decide one event the run would send."""
        self.events += 1
        event_type = payload["event_type"]
        properties = payload.get("properties") or {}
        customer = self.account.resolve(payload["customer_id"])
        if customer is None:
            self._lose(
                "unknown_customer",
                event_type,
                payload,
                source,
                None,
                f"customer_id {payload['customer_id']!r} is no customer id or ingest alias",
                payload["customer_id"],
            )
            return
        matched: list[Metric] = []
        nearest = None
        for metric in self._metrics:
            miss = match_metric(metric, event_type, properties)
            if miss is None:
                matched.append(metric)
            elif nearest is None or miss.failures < nearest.failures:
                nearest = miss
        if not matched:
            if nearest is None:
                self._lose(
                    "no_metric",
                    event_type,
                    payload,
                    source,
                    None,
                    "no metric matches (the account has no previewable metric)",
                    None,
                )
            else:
                near = nearest.metric.name
                detail = f'no metric matches; nearest "{near}": {nearest.what} {nearest.why}'
                self._lose(
                    "no_metric",
                    event_type,
                    payload,
                    source,
                    nearest.metric.name,
                    detail,
                    nearest.value,
                )
            return
        timestamp = payload["timestamp"]
        day = timestamp[:10]
        takes: list[tuple[Metric, Any]] = []
        problems: list[tuple[Metric, str]] = []
        for metric in matched:
            value, why = aggregation_value(metric, properties)
            if why is None:
                takes.append((metric, value))
            else:
                problems.append((metric, why))
        if not takes:
            metric, why = problems[0]
            key = metric.aggregation_key
            seen = (
                None if key is None or properties.get(key) is None else value_text(properties[key])
            )
            self._lose(
                "aggregation_key",
                event_type,
                payload,
                source,
                metric.name,
                f'"{metric.name}" ({metric.aggregation_type}) takes it but {why}',
                seen,
            )
            return
        for metric, why in problems:
            self.usage[metric].skipped[why] += 1
        self.billed += 1
        self.customers[customer.id] += 1
        if self.keep_events:
            kept = self.kept.setdefault(customer.id, [])
            if len(kept) < self.keep_events:
                kept.append({k: payload[k] for k in _PREVIEW_FIELDS if k in payload})
        for metric, value in takes:
            groups = [
                (",".join(keys), ",".join(_group_value(properties.get(k)) for k in keys))
                for keys in metric.group_keys
            ]
            self.usage[metric].add(value, customer.id, day, timestamp, groups)

    def _lose(
        self,
        cause: str,
        event_type: str,
        payload: dict[str, Any],
        source: str,
        metric: str | None,
        detail: str,
        value: str | None,
    ) -> None:
        self.nothing[cause] += 1
        key = (cause, event_type, detail)
        loss = self._losses.get(key)
        if loss is None:
            loss = self._losses[key] = Loss(
                cause,
                event_type,
                detail,
                metric,
                example={
                    "transaction_id": payload["transaction_id"],
                    "customer_id": payload["customer_id"],
                    "source": source,
                    "value": value,
                },
            )
        loss.events += 1

    # ------------------------------------------------------------------- the report

    @property
    def bill_nothing(self) -> int:
        return sum(self.nothing.values())

    @property
    def skipped(self) -> int:
        return sum(sum(u.skipped.values()) for u in self.usage.values())

    @property
    def exit_code(self) -> int:
        """1 when anything would bill nothing: a scripted sign-off stops here."""
        return 1 if self.bill_nothing or self.skipped else 0

    def losses(self) -> list[Loss]:
        """Every loss group, the largest first."""
        return sorted(self._losses.values(), key=lambda x: (-x.events, x.cause, x.event_type))

    def metric_usage(self) -> list[MetricUsage]:
        """Metrics by events billed, the largest first; metrics nothing reached last."""
        return sorted(self.usage.values(), key=lambda u: (-u.total.events, u.metric.name))

    def to_json(self) -> dict[str, Any]:
        names = self._names
        account = self.account
        return {
            "sources": account.sources,
            "events": self.events,
            "billed": self.billed,
            "bill_nothing": self.bill_nothing,
            "bill_nothing_by_cause": {c: self.nothing[c] for c in CAUSES},
            "skipped_by_metric": self.skipped,
            "losses": [loss.to_json() for loss in self.losses()],
            "usage": [u.to_json(names) for u in self.metric_usage()],
            "events_by_customer": {
                names[c]: n for c, n in sorted(self.customers.items(), key=_by_name(names))
            },
            "metrics": len(self._metrics),
            "customers": len([c for c in account.customers if not c.archived]),
            "not_previewed_sql": [m.name for m in account.sql_metrics],
            "archived_left_out": [m.name for m in account.archived_metrics],
            "invoice_preview": self.invoices,
            "exit_code": self.exit_code,
        }

    def text_lines(self, top: int = TOP) -> list[str]:
        """The plan's billing section: totals first, then the top lines of each list."""
        lines = [
            f"Billing: {self.events} events previewed against {len(self._metrics)} metrics and "
            f"{len(self.account.customers)} customers: {self.billed} bill, "
            f"{self.bill_nothing} bill nothing"
        ]
        if self.bill_nothing:
            causes = ", ".join(f"{self.nothing[c]} {c}" for c in CAUSES if self.nothing[c])
            lines.append(f"  would bill nothing: {causes}")
            lines.extend(_top([f"    {loss.line()}" for loss in self.losses()], top, "    "))
        for usage in self.metric_usage():
            m = usage.metric
            what = m.aggregation_type + (f"({m.aggregation_key})" if m.aggregation_key else "")
            reached = "" if usage.total.events else " (no event reaches it)"
            lines.append(
                f"  {m.name} [{what}]: {_fmt(usage.total.usage)} from {usage.total.events} "
                f"events{reached}"
            )
            ranked = sorted(usage.by_customer.items(), key=lambda i: -i[1].events)
            lines.extend(
                _top([f"    {self._names[c]}: {_fmt(a.usage)}" for c, a in ranked], top, "    ")
            )
            for why, n in sorted(usage.skipped.items()):
                lines.append(f"    skipped {n} events it takes: {why}")
        sql = self.account.sql_metrics
        if sql:
            lines.append(f"  not previewed (SQL metrics): {', '.join(m.name for m in sql)}")
        archived = self.account.archived_metrics
        if archived:
            lines.append(f"  archived, left out: {', '.join(m.name for m in archived)}")
        for draft in self.invoices or ():
            totals = ", ".join(
                f"{inv['total']} {inv['credit_type']} ({inv['type']})" for inv in draft["invoices"]
            )
            lines.append(
                f"  draft invoice of {draft['customer']} from the first {draft['events_sent']} "
                f"of {draft['events']} events: {totals or 'no invoice'}"
            )
        return lines

    def largest_customers(self, n: int) -> list[tuple[str, str, int]]:
        """(id, name, billed events) of the `n` customers with the most billed events."""
        ranked = sorted(self.customers.items(), key=lambda i: (-i[1], self._names[i[0]]))
        return [(cid, self._names[cid], count) for cid, count in ranked[:n]]


def _group_value(value: Any) -> str:
    return _NONE if value is None else value_text(value)


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def _top(lines: list[str], top: int, indent: str) -> list[str]:
    if len(lines) <= top:
        return lines
    return [*lines[:top], f"{indent}… and {len(lines) - top} more"]
