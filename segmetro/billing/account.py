"""The account's billable metrics and customers, from the API or from files in its shape.

Both lists come in cursor pages, ``{"data": [...], "next_page": "..." | null}``, of at most
100 items. A file holds one such page, a JSON array of pages, or pages one per line (what
``curl >>`` leaves), and each page is checked against Metronome's published response schema
(``openapi-billing.json``, by ``fastjsonschema``), so a file says what the API would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

import httpx
import orjson

from segmetro.errors import ConfigError

__all__ = [
    "Account",
    "BillingDataError",
    "Customer",
    "Metric",
    "PropertyFilter",
    "fetch_account",
    "load_customers",
    "load_metrics",
    "parse_customers",
    "parse_metrics",
]

METRICS_PATH = "/v1/billable-metrics"
CUSTOMERS_PATH = "/v1/customers"
PAGE_LIMIT = 100
#: A cursor that never ends would loop for ever; no account has this many pages.
MAX_PAGES = 100_000

JsonObject = dict[str, Any]


class BillingDataError(ConfigError):
    """Billable metrics or customers that cannot be read or loaded (exit 2)."""


@dataclass(frozen=True, slots=True)
class PropertyFilter:
    """One rule on an event property; ``None`` means the filter leaves that aspect open."""

    name: str
    exists: bool | None = None
    in_values: tuple[str, ...] | None = None
    not_in_values: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Metric:
    """A billable metric as the preview needs it."""

    id: str
    name: str
    aggregation_type: str = "COUNT"  # upper case: COUNT, SUM, MAX, UNIQUE, LATEST
    aggregation_key: str | None = None
    event_in: frozenset[str] | None = None
    event_not_in: frozenset[str] = frozenset()
    property_filters: tuple[PropertyFilter, ...] = ()
    group_keys: tuple[tuple[str, ...], ...] = ()
    sql: str | None = None
    archived: bool = False

    @property
    def previewable(self) -> bool:
        """SQL metrics run a query over all events; the preview cannot evaluate them."""
        return self.sql is None and not self.archived


@dataclass(frozen=True, slots=True)
class Customer:
    """A customer and every id an event may name it by (its Metronome id, its ingest aliases)."""

    id: str
    name: str
    ingest_aliases: tuple[str, ...] = ()
    archived: bool = False


@dataclass
class Account:
    """Metrics and customers, with the lookups the preview runs per event."""

    metrics: list[Metric] = field(default_factory=list)
    customers: list[Customer] = field(default_factory=list)
    #: where each list came from, for the report ("GET https://.../v1/customers", a file)
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_key: dict[str, Customer] = {}
        for customer in self.customers:
            if customer.archived:
                continue
            for key in (customer.id, *customer.ingest_aliases):
                self._by_key.setdefault(key, customer)

    def resolve(self, customer_id: str) -> Customer | None:
        """The active customer an event's ``customer_id`` names (id or ingest alias), or None."""
        return self._by_key.get(customer_id)

    @property
    def active_metrics(self) -> list[Metric]:
        return [m for m in self.metrics if m.previewable]

    @property
    def sql_metrics(self) -> list[Metric]:
        return [m for m in self.metrics if m.sql is not None and not m.archived]

    @property
    def archived_metrics(self) -> list[Metric]:
        return [m for m in self.metrics if m.archived]


# --------------------------------------------------------------------------- parsing


def _strings(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(cast(list[str], value))


def _metric(item: JsonObject) -> Metric:
    etf = item.get("event_type_filter") or {}
    filters = tuple(
        PropertyFilter(
            name=f["name"],
            exists=f.get("exists"),
            in_values=_strings(f.get("in_values")),
            not_in_values=_strings(f.get("not_in_values")),
        )
        for f in item.get("property_filters") or ()
    )
    in_values = etf.get("in_values")
    return Metric(
        id=item["id"],
        name=item["name"],
        aggregation_type=str(item.get("aggregation_type") or "COUNT").upper(),
        aggregation_key=item.get("aggregation_key"),
        event_in=None if in_values is None else frozenset(in_values),
        event_not_in=frozenset(etf.get("not_in_values") or ()),
        property_filters=filters,
        group_keys=tuple(tuple(keys) for keys in item.get("group_keys") or ()),
        sql=item.get("sql"),
        archived=item.get("archived_at") is not None,
    )


def _customer(item: JsonObject) -> Customer:
    return Customer(
        id=item["id"],
        name=item["name"],
        ingest_aliases=tuple(item.get("ingest_aliases") or ()),
        archived=item.get("archived_at") is not None,
    )


def parse_metrics(pages: list[Any], *, origin: str) -> list[Metric]:
    """Metrics from answers of ``GET /v1/billable-metrics``; `origin` names them in errors."""
    return [_metric(item) for item in _items(pages, METRICS_PATH, origin)]


def parse_customers(pages: list[Any], *, origin: str) -> list[Customer]:
    """Customers from response pages of ``GET /v1/customers``."""
    return [_customer(item) for item in _items(pages, CUSTOMERS_PATH, origin)]


def _items(pages: list[Any], path: str, origin: str) -> Iterator[JsonObject]:
    check = _page_check(path)
    for number, page in enumerate(pages, 1):
        problem = check(page)
        where = origin if len(pages) == 1 else f"{origin}: page {number}"
        if problem is not None:
            raise BillingDataError(
                f"{where}: not a response of GET {path} ({problem}); save the API's answer "
                f'as is, e.g. curl -H "Authorization: Bearer $TOKEN" <api>{path}'
            )
        yield from page["data"]


# --------------------------------------------------------------------------- files


def load_metrics(path: Path) -> list[Metric]:
    """Billable metrics from a file of ``GET /v1/billable-metrics`` answers."""
    return parse_metrics(_read_pages(path), origin=str(path))


def load_customers(path: Path) -> list[Customer]:
    """Customers from a file of ``GET /v1/customers`` answers."""
    return parse_customers(_read_pages(path), origin=str(path))


def _read_pages(path: Path) -> list[Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BillingDataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        whole = orjson.loads(data)
    except orjson.JSONDecodeError:
        pages = []
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                pages.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise BillingDataError(f"{path}:{number}: not JSON ({exc})") from None
        return pages
    if isinstance(whole, list) and all(isinstance(p, dict) and "data" in p for p in whole):
        return whole or [{"data": [], "next_page": None}]
    return [whole]


# --------------------------------------------------------------------------- the API


def fetch_account(
    api_url: str,
    token: str,
    *,
    metrics_file: Path | None = None,
    customers_file: Path | None = None,
    client: httpx.Client | None = None,
) -> Account:
    """Metrics and customers from the files given, the rest from the API (read-only GETs)."""
    base = api_url.rstrip("/")
    sources: dict[str, str] = {}
    own = client is None
    http = client or httpx.Client(timeout=30.0)
    try:
        if metrics_file is not None:
            metrics = load_metrics(metrics_file)
            sources["billable_metrics"] = str(metrics_file)
        else:
            metrics = parse_metrics(
                _pages(http, base + METRICS_PATH, token), origin=f"GET {base}{METRICS_PATH}"
            )
            sources["billable_metrics"] = f"GET {base}{METRICS_PATH}"
        if customers_file is not None:
            customers = load_customers(customers_file)
            sources["customers"] = str(customers_file)
        else:
            customers = parse_customers(
                _pages(http, base + CUSTOMERS_PATH, token), origin=f"GET {base}{CUSTOMERS_PATH}"
            )
            sources["customers"] = f"GET {base}{CUSTOMERS_PATH}"
    finally:
        if own:
            http.close()
    return Account(metrics=metrics, customers=customers, sources=sources)


def _pages(client: httpx.Client, url: str, token: str) -> list[Any]:
    """Every page of a cursor-paged list; errors name the URL and status, never the token."""
    if not token:
        raise BillingDataError(
            f"METRONOME_BEARER_TOKEN is not set: --billing reads GET {url} with a (read-only) "
            "token, or pass --billable-metrics FILE and --customers FILE"
        )
    pages: list[Any] = []
    cursor: str | None = None
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    for _ in range(MAX_PAGES):
        params: dict[str, str | int] = {"limit": PAGE_LIMIT}
        if cursor is not None:
            params["next_page"] = cursor
        try:
            response = client.get(url, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise BillingDataError(f"GET {url} failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise BillingDataError(
                f"GET {url} answered {response.status_code} {response.reason_phrase}"
            )
        try:
            page = response.json()
        except ValueError:
            raise BillingDataError(f"GET {url} answered with a body that is not JSON") from None
        pages.append(page)
        cursor = page.get("next_page") if isinstance(page, dict) else None
        if not cursor:
            return pages
    raise BillingDataError(f"GET {url}: more than {MAX_PAGES} pages; the cursor never ended")


# --------------------------------------------------------------------------- the schema


@cache
def _page_check(path: str) -> Callable[[Any], str | None]:
    """The compiled check of one ``GET path`` 200 answer, from the packaged published spec.

    OpenAPI 3.0 schemas are JSON Schema draft 4 plus ``nullable``, which draft 4 does not
    know: it becomes a ``"null"`` type here, so ``archived_at: null`` passes as in the spec.
    """
    import fastjsonschema

    spec = _nullable(
        orjson.loads(resources.files("segmetro").joinpath("openapi-billing.json").read_bytes())
    )
    pointer = (
        "/paths/" + path.replace("/", "~1") + "/get/responses/200/content/application~1json/schema"
    )
    root = {**spec, "$schema": "http://json-schema.org/draft-04/schema#", "$ref": f"#{pointer}"}
    validate = fastjsonschema.compile(root, use_default=False, use_formats=False)

    def check(page: Any) -> str | None:
        try:
            validate(page)
        except fastjsonschema.JsonSchemaValueException as exc:
            return exc.message.removeprefix("data.")
        return None

    return check


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _nullable(v) for k, v in node.items()}
        if out.get("nullable") is True and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node
