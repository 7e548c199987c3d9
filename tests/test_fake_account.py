"""The fake knows an account: lists paged like Metronome, search matching, invoice previews.

The official ``metronome-sdk`` client talks to the fake over loopback: its cursor paging and its
response models parse every answer, so the shapes are Metronome's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from metronome import Metronome

from segmetro.errors import ConfigError
from segmetro.fake_metronome import FakeConfig, FakeMetronome, load_account

SAMPLES = Path(__file__).parent.parent / "samples"
TOKEN = "test-token"
NOW = datetime(2026, 11, 26, tzinfo=UTC)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMetronome]:
    config = FakeConfig(token=TOKEN, now=NOW, account=load_account(SAMPLES / "account.json"))
    with FakeMetronome(config) as server:
        yield server


@pytest.fixture
def sdk(fake: FakeMetronome) -> Iterator[Metronome]:
    client = Metronome(bearer_token=TOKEN, base_url=fake.url, max_retries=0)
    yield client
    client.close()


def saved(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = orjson.loads((SAMPLES / "billing" / name).read_bytes())["data"]
    return data


def test_the_sdk_pages_through_metrics_and_customers(sdk: Metronome) -> None:
    metrics = list(sdk.v1.billable_metrics.list(limit=2))
    assert [m.name for m in metrics] == [m["name"] for m in saved("billable-metrics.json")]
    assert "Legacy API calls" not in [m.name for m in metrics], "archived: only on request"
    archived = [m.name for m in sdk.v1.billable_metrics.list(include_archived=True)]
    assert "Legacy API calls" in archived
    customers = list(sdk.v1.customers.list(limit=2))
    assert [c.id for c in customers] == [c["id"] for c in saved("customers.json")]
    assert customers[0].ingest_aliases == ["acme-corp", "billing@acme-corp.example"]
    assert [c.name for c in sdk.v1.customers.list(only_archived=True)] == ["Oldco"]
    assert [c.name for c in sdk.v1.customers.list(ingest_alias="globex")] == ["Globex"]


def test_pages_hold_at_most_the_limit_and_a_cursor(fake: FakeMetronome) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    first = httpx.get(f"{fake.url}/v1/customers", params={"limit": 2}, headers=auth).json()
    assert len(first["data"]) == 2
    assert first["next_page"]
    again = httpx.get(
        f"{fake.url}/v1/customers",
        params={"limit": 100, "next_page": first["next_page"]},
        headers=auth,
    ).json()
    assert len(again["data"]) == 3
    assert again["next_page"] is None
    for bad in ({"limit": 0}, {"limit": 101}, {"next_page": "???"}):
        assert httpx.get(f"{fake.url}/v1/customers", params=bad, headers=auth).status_code == 400
    assert httpx.get(f"{fake.url}/v1/customers").status_code == 401


def test_search_reports_matches_by_the_rules(fake: FakeMetronome, sdk: Metronome) -> None:
    base = {"timestamp": "2026-11-25T10:00:00.000Z"}
    events = [
        {
            **base,
            "transaction_id": "fa-1",
            "customer_id": "billing@globex.example",
            "event_type": "API Call",
            "properties": {"endpoint": "/v1/jobs", "method": "GET", "latency_ms": 12},
        },
        {
            **base,
            "transaction_id": "fa-2",
            "customer_id": "hooli",
            "event_type": "Job Completed",
            "properties": {"cpu_secs": 3.5, "plan": "pro"},
        },
        {
            **base,
            "transaction_id": "fa-3",
            "customer_id": "oldco",
            "event_type": "API Call",
            "properties": {"endpoint": "/v1/jobs"},
        },
        {
            **base,
            "transaction_id": "fa-4",
            "customer_id": "hooli",
            "event_type": "API Call",
            "properties": {"endpoint": "/v1/x", "method": None},
        },
    ]
    sdk.v1.usage.ingest(usage=events)  # type: ignore[arg-type]
    found = {
        row.transaction_id: row
        for row in sdk.v1.usage.search(transaction_ids=[e["transaction_id"] for e in events])
    }
    globex = found["fa-1"]
    assert globex.matched_customer is not None
    assert globex.matched_customer.name == "Globex"
    assert sorted(m.name for m in globex.matched_billable_metrics or []) == [
        "API calls",
        "Endpoints used",
        "Last method",
        "Peak latency (ms)",
    ]
    renamed = found["fa-2"]
    assert renamed.matched_customer is not None
    assert renamed.matched_billable_metrics == [], "cpu_seconds is missing: CPU seconds fails"
    assert found["fa-3"].matched_customer is None, "an archived customer resolves nothing"
    assert found["fa-3"].matched_billable_metrics == []
    null = sorted(m.name for m in found["fa-4"].matched_billable_metrics or [])
    assert "Last method" not in null, "a null property is absent"
    assert "API calls" in null


def test_preview_events_drafts_an_invoice_and_stores_nothing(
    fake: FakeMetronome, sdk: Metronome
) -> None:
    before = fake.snapshot(include_events=False).events_accepted
    acme = saved("customers.json")[0]["id"]
    answer = sdk.v1.customers.preview_events(
        customer_id=acme,
        events=[
            {
                "event_type": "Job Completed",
                "timestamp": "2026-11-25T00:00:00Z",
                "properties": {"cpu_seconds": "2.5", "plan": "pro"},
            },
            {
                "event_type": "Job Completed",
                "timestamp": "2026-11-25T01:00:00Z",
                "properties": {"cpu_seconds": 1, "plan": "free"},
            },
        ],
    )
    invoice = answer.data[0]
    assert invoice.status == "DRAFT"
    lines = {line.name: line for line in invoice.line_items}
    assert lines["CPU seconds"].quantity == 3.5
    assert invoice.total == sum(line.total for line in invoice.line_items)
    assert fake.snapshot(include_events=False).events_accepted == before
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bad = httpx.post(
        f"{fake.url}/v1/customers/{acme}/previewEvents", json={"events": []}, headers=auth
    )
    assert bad.status_code == 400
    unknown = httpx.post(
        f"{fake.url}/v1/customers/00000000-0000-4000-8000-000000000000/previewEvents",
        json={"events": [{"event_type": "x"}]},
        headers=auth,
    )
    assert unknown.status_code == 404


def test_a_fake_without_an_account_says_so() -> None:
    with FakeMetronome(FakeConfig(token=TOKEN)) as server:
        answer = httpx.get(
            f"{server.url}/v1/billable-metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert answer.status_code == 404
    assert "--account" in answer.json()["message"]


def test_a_bad_account_file_names_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "account.json"
    bad.write_bytes(orjson.dumps({"customers": [], "billable_metrics": [{"name": "no id"}]}))
    with pytest.raises(ConfigError, match=r"account.json: billable_metrics\[0\]: .*id"):
        load_account(bad)
