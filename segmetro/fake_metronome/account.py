"""The fake's account: customers with ingest aliases, billable metrics, and how events meet them.

``segmetro fake-metronome --account FILE`` loads ``{"customers": [...], "billable_metrics":
[...], "prices": {"<metric name>": <cents per unit>}}`` (customers and metrics in the published
``CustomerDetail`` / ``BillableMetricV1`` shapes, checked against ``openapi-billing.json``).
The fake then lists them like Metronome (cursor pages of up to 100; archived metrics and
customers only on request), reports ``matched_customer`` / ``matched_billable_metrics`` in
search, and drafts invoices for ``previewEvents``.

Its matching is written here from Metronome's documented rules, independently of segmetro's
billing preview, so the two check each other. Where the docs are silent it reads them the
same cautious way the README states: a ``null`` property is absent; ``in_values`` takes
strings only; ``not_in_values`` excludes a value whose JSON text is listed; SUM and MAX read
JSON numbers and decimal strings.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

import orjson

from segmetro.fake_metronome.config import FakeConfigError

__all__ = ["CUSTOMERS_PATH", "METRICS_PATH", "FakeAccount", "load_account", "metric_takes"]

JsonObject = dict[str, Any]
METRICS_PATH = "/v1/billable-metrics"
CUSTOMERS_PATH = "/v1/customers"
MAX_LIMIT = 100
_NS = uuid.UUID("6c9a1b0e-2f4d-4e1a-8b3c-5d7e9f0a1b2c")


@cache
def _spec() -> JsonObject:
    raw = orjson.loads(resources.files("segmetro").joinpath("openapi-billing.json").read_bytes())
    return cast(JsonObject, _with_nulls(raw))


def _with_nulls(node: Any) -> Any:
    """OpenAPI's ``nullable: true`` as the draft-4 type list a JSON Schema library knows."""
    if isinstance(node, list):
        return [_with_nulls(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _with_nulls(v) for k, v in node.items()}
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    return node


@cache
def schema_check(name: str) -> Any:
    """A compiled validator of ``components/schemas/<name>`` of the billing spec."""
    import fastjsonschema

    root = {
        **_spec(),
        "$schema": "http://json-schema.org/draft-04/schema#",
        "$ref": f"#/components/schemas/{name}",
    }
    return fastjsonschema.compile(root, use_default=False, use_formats=False)


def _problem(name: str, value: Any) -> str | None:
    import fastjsonschema

    try:
        schema_check(name)(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        return exc.message
    return None


# --------------------------------------------------------------------------- matching


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _passes(rule: JsonObject, props: JsonObject) -> bool:
    name = rule["name"]
    present = props.get(name) is not None
    exists = rule.get("exists")
    if exists is True and not present:
        return False
    if exists is False:
        return not present
    if not present:
        return "in_values" not in rule
    value = props[name]
    allowed = rule.get("in_values")
    if allowed is not None and not (isinstance(value, str) and value in allowed):
        return False
    banned = rule.get("not_in_values")
    return not (banned is not None and _text(value) in banned)


def metric_takes(metric: JsonObject, event: JsonObject) -> bool:
    """Whether a (non-SQL, active) billable metric takes an event, by the documented rules."""
    kind = event["event_type"]
    etf = metric.get("event_type_filter") or {}
    if "in_values" in etf and kind not in etf["in_values"]:
        return False
    if kind in etf.get("not_in_values", ()):
        return False
    props = event.get("properties") or {}
    return all(_passes(rule, props) for rule in metric.get("property_filters") or ())


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if isinstance(value, str) and value == value.strip():
        try:
            number = Decimal(value)
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


# --------------------------------------------------------------------------- the account


@dataclass
class FakeAccount:
    """The account the fake serves; built by ``load_account``."""

    customers: list[JsonObject]
    metrics: list[JsonObject]
    prices: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._aliases: dict[str, JsonObject] = {}
        for c in self.customers:
            if c.get("archived_at") is None:
                for key in [c["id"], *c.get("ingest_aliases", [])]:
                    self._aliases.setdefault(key, c)

    def customer_for(self, customer_id: str) -> JsonObject | None:
        return self._aliases.get(customer_id)

    def _live(self) -> list[JsonObject]:
        return [m for m in self.metrics if m.get("archived_at") is None and "sql" not in m]

    def matched(self, event: JsonObject) -> tuple[JsonObject | None, list[JsonObject]]:
        """``matched_customer`` and ``matched_billable_metrics`` of a stored event."""
        customer = self.customer_for(event["customer_id"])
        if customer is None:
            return None, []
        taken = [m for m in self._live() if metric_takes(m, event)]
        return {"id": customer["id"], "name": customer["name"]}, taken

    # ----------------------------------------------------------------- lists

    def list_metrics(self, query: str) -> tuple[int, JsonObject]:
        params = parse_qs(query)
        archived = _flag(params, "include_archived")
        items = [m for m in self.metrics if archived or m.get("archived_at") is None]
        return _page(items, params)

    def list_customers(self, query: str) -> tuple[int, JsonObject]:
        params = parse_qs(query)
        only_archived = _flag(params, "only_archived")
        items = [c for c in self.customers if (c.get("archived_at") is not None) == only_archived]
        alias = params.get("ingest_alias")
        if alias:
            items = [c for c in items if alias[-1] in c.get("ingest_aliases", [])]
        ids = [i for value in params.get("customer_ids", []) for i in value.split(",")]
        if ids:
            items = [c for c in items if c["id"] in ids]
        return _page(items, params)

    # ----------------------------------------------------------------- invoices

    def preview(self, customer_id: str, body: Any) -> tuple[int, JsonObject]:
        """A draft invoice of the given events for one customer; nothing is stored."""
        customer = next((c for c in self.customers if c["id"] == customer_id), None)
        if customer is None:
            return 404, {"message": f"customer {customer_id} not found"}
        problem = _problem("PreviewEventsPayload", body)
        if problem is not None:
            return 400, {"message": problem.removeprefix("data.")}
        events = [dict(e, customer_id=customer_id) for e in body["events"]]
        credit = {"id": str(uuid.uuid5(_NS, "credit:usd")), "name": "USD (cents)"}
        lines = []
        for metric in self._live():
            quantity = _aggregate(metric, [e for e in events if metric_takes(metric, e)])
            if quantity is None and body.get("skip_zero_qty_line_items"):
                continue
            qty = quantity or Decimal(0)
            price = Decimal(str(self.prices.get(metric["name"], 0)))
            lines.append(
                {
                    "name": metric["name"],
                    "quantity": float(qty),
                    "unit_price": float(price),
                    "total": float(qty * price),
                    "credit_type": credit,
                    "type": "usage",
                    "product_id": str(uuid.uuid5(_NS, "product:" + metric["id"])),
                }
            )
        invoice = {
            "id": str(uuid.uuid5(_NS, "invoice:" + customer_id)),
            "customer_id": customer_id,
            "credit_type": credit,
            "line_items": lines,
            "status": "DRAFT",
            "total": sum(line["total"] for line in lines),
            "type": "USAGE",
        }
        return 200, {"data": [invoice]}


def _aggregate(metric: JsonObject, events: list[JsonObject]) -> Decimal | None:
    if not events:
        return None
    kind = str(metric.get("aggregation_type", "COUNT")).upper()
    if kind == "COUNT":
        return Decimal(len(events))
    key = metric.get("aggregation_key", "")
    values = [(e.get("properties") or {}).get(key) for e in events]
    if kind == "UNIQUE":
        return Decimal(len({_text(v) for v in values if v is not None}))
    numbers = [n for n in map(_number, values) if n is not None]
    if not numbers:
        return None
    if kind == "SUM":
        return sum(numbers, Decimal(0))
    if kind == "MAX":
        return max(numbers)
    latest = max(events, key=lambda e: str(e.get("timestamp", "")))
    return _number((latest.get("properties") or {}).get(key))


def _flag(params: dict[str, list[str]], name: str) -> bool:
    return params.get(name, ["false"])[-1].lower() == "true"


def _page(items: list[JsonObject], params: dict[str, list[str]]) -> tuple[int, JsonObject]:
    try:
        limit = int(params.get("limit", [str(MAX_LIMIT)])[-1])
    except ValueError:
        return 400, {"message": "limit must be an integer"}
    if not 1 <= limit <= MAX_LIMIT:
        return 400, {"message": f"limit must be between 1 and {MAX_LIMIT}"}
    cursor = params.get("next_page", [""])[-1]
    start = 0
    if cursor:
        try:
            start = int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("o:"))
        except ValueError:
            return 400, {"message": "invalid next_page cursor"}
    chunk = items[start : start + limit]
    end = start + len(chunk)
    more = base64.urlsafe_b64encode(f"o:{end}".encode()).decode() if end < len(items) else None
    return 200, {"data": chunk, "next_page": more}


def load_account(path: Path) -> FakeAccount:
    """Read and check an account file; a bad one is a ``FakeConfigError`` naming the place."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise FakeConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except orjson.JSONDecodeError as exc:
        raise FakeConfigError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FakeConfigError(f"{path}: an account file is an object with customers and metrics")
    customers = data.get("customers", [])
    metrics = data.get("billable_metrics", [])
    for key, items, schema in (
        ("customers", customers, "CustomerDetail"),
        ("billable_metrics", metrics, "BillableMetricV1"),
    ):
        if not isinstance(items, list):
            raise FakeConfigError(f"{path}: {key} must be a list")
        for index, item in enumerate(items):
            problem = _problem(schema, item)
            if problem is not None:
                raise FakeConfigError(f"{path}: {key}[{index}]: {problem}")
    prices = data.get("prices", {})
    if not isinstance(prices, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in prices.values()
    ):
        raise FakeConfigError(f"{path}: prices maps metric names to numbers")
    return FakeAccount(customers=customers, metrics=metrics, prices=prices)
