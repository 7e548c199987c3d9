"""``--invoice-preview N``: draft invoices of the N largest customers, from Metronome itself.

``POST /v1/customers/{id}/previewEvents`` rates the given events against the customer's current
contract and answers draft invoices; nothing is ingested. It takes at most 100 events per
request, and each request stands alone (``mode: replace``), so a customer's draft covers the
first 100 of its planned events; the report says how many of how many. Requests go one at a
time; a 429 is waited out (``Retry-After`` when sent, else a second) up to three times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from segmetro.billing.account import BillingDataError
from segmetro.billing.preview import BillingPreview

__all__ = ["PREVIEW_EVENTS_MAX", "draft_invoices"]

PREVIEW_EVENTS_MAX = 100
_RETRIES_429 = 3


def draft_invoices(
    preview: BillingPreview,
    n: int,
    *,
    api_url: str,
    token: str,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Ask for the draft invoices of the `n` largest customers; kept on ``preview.invoices``."""
    if not token:
        raise BillingDataError(
            "--invoice-preview posts to previewEvents: set METRONOME_BEARER_TOKEN"
        )
    base = api_url.rstrip("/")
    own = client is None
    http = client or httpx.Client(timeout=60.0)
    drafts = []
    try:
        for cid, name, count in preview.largest_customers(n):
            events = preview.kept.get(cid, [])[:PREVIEW_EVENTS_MAX]
            url = f"{base}/v1/customers/{cid}/previewEvents"
            body = _post(http, url, token, {"events": events, "mode": "replace"}, sleep)
            drafts.append(
                {
                    "customer": name,
                    "customer_id": cid,
                    "events": count,
                    "events_sent": len(events),
                    "invoices": [_invoice(inv) for inv in body.get("data", [])],
                }
            )
    finally:
        if own:
            http.close()
    preview.invoices = drafts
    return drafts


def _post(
    http: httpx.Client, url: str, token: str, body: Any, sleep: Callable[[float], None]
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    attempt = 0
    while True:
        try:
            response = http.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise BillingDataError(f"POST {url} failed: {type(exc).__name__}") from None
        if response.status_code == 429 and attempt < _RETRIES_429:
            attempt += 1
            sleep(_retry_after(response))
            continue
        if response.status_code != 200:
            raise BillingDataError(
                f"POST {url} answered {response.status_code} {response.reason_phrase}"
            )
        try:
            answer: dict[str, Any] = response.json()
        except ValueError:
            raise BillingDataError(f"POST {url} answered with a body that is not JSON") from None
        return answer


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, min(60.0, float(response.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0


def _invoice(invoice: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": invoice.get("type"),
        "status": invoice.get("status"),
        "total": invoice.get("total"),
        "credit_type": (invoice.get("credit_type") or {}).get("name"),
        "line_items": [
            {"name": li.get("name"), "quantity": li.get("quantity"), "total": li.get("total")}
            for li in invoice.get("line_items", [])
        ],
    }
