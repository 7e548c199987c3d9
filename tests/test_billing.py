"""The billing preview's rules: filters, customer resolution, aggregations, loading the account."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from segmetro.billing import (
    Account,
    BillingDataError,
    BillingPreview,
    aggregation_value,
    fetch_account,
    load_customers,
    load_metrics,
    match_metric,
    parse_customers,
    parse_metrics,
)

SAMPLES = Path(__file__).parent.parent / "samples"


def metric(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "9570e4f3-d1da-4b95-ba81-bd40ee002727", "name": "m"}
    return {**base, **fields}


def customer(cid: str, name: str, aliases: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "id": cid,
        "external_id": name,
        "ingest_aliases": aliases,
        "name": name,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "customer_config": {"salesforce_account_id": None},
        "custom_fields": {},
        **extra,
    }


def one(**fields: Any) -> Any:
    return parse_metrics([{"data": [metric(**fields)], "next_page": None}], origin="t")[0]


def takes(m: Any, properties: dict[str, Any], event_type: str = "api") -> bool:
    return match_metric(m, event_type, properties) is None


# ----------------------------------------------------------------------- event_type_filter


def test_event_type_in_values_and_not_in_values() -> None:
    only = one(event_type_filter={"in_values": ["api", "job"]})
    assert takes(only, {}, "api")
    assert not takes(only, {}, "seat")
    but = one(event_type_filter={"not_in_values": ["seat"]})
    assert takes(but, {}, "api")
    assert not takes(but, {}, "seat")
    miss = match_metric(only, "seat", {})
    assert miss is not None
    assert miss.what == "event_type"
    assert miss.value == "seat"


def test_no_event_type_filter_takes_every_type() -> None:
    assert takes(one(), {}, "anything")


# ----------------------------------------------------------------------- property filters


def test_exists_true_false_and_omitted() -> None:
    must = one(property_filters=[{"name": "region", "exists": True}])
    assert takes(must, {"region": "EU"})
    assert not takes(must, {})
    never = one(property_filters=[{"name": "region", "exists": False}])
    assert takes(never, {})
    assert not takes(never, {"region": "EU"})
    either = one(property_filters=[{"name": "region"}])
    assert takes(either, {})
    assert takes(either, {"region": "EU"})


def test_in_values_and_not_in_values() -> None:
    inside = one(property_filters=[{"name": "region", "in_values": ["EU", "NA"]}])
    assert takes(inside, {"region": "EU"})
    assert not takes(inside, {"region": "APAC"})
    assert not takes(inside, {}), "in_values needs a value to be in the list"
    outside = one(property_filters=[{"name": "region", "not_in_values": ["APAC"]}])
    assert takes(outside, {"region": "EU"})
    assert not takes(outside, {"region": "APAC"})
    assert takes(outside, {}), "an absent property is in no list"


def test_null_is_an_absent_property() -> None:
    must = one(property_filters=[{"name": "region", "exists": True}])
    assert not takes(must, {"region": None})
    never = one(property_filters=[{"name": "region", "exists": False}])
    assert takes(never, {"region": None})
    miss = match_metric(must, "api", {"region": None})
    assert miss is not None
    assert miss.why.startswith("missing")


def test_non_string_values_never_promise_a_match() -> None:
    inside = one(property_filters=[{"name": "status", "in_values": ["200", "true"]}])
    assert takes(inside, {"status": "200"})
    for value in (200, True, 200.0, ["200"], {"v": "200"}):
        assert not takes(inside, {"status": value}), value
    miss = match_metric(inside, "api", {"status": 200})
    assert miss is not None
    assert "a number, not a string" in miss.why
    outside = one(property_filters=[{"name": "status", "not_in_values": ["500", "false"]}])
    assert takes(outside, {"status": 200})
    assert not takes(outside, {"status": 500}), "its JSON text is in the list"
    assert not takes(outside, {"status": False})
    # exists looks at presence only, whatever the type
    assert takes(one(property_filters=[{"name": "n", "exists": True}]), {"n": 0})


def test_all_filters_must_pass_and_the_first_failure_is_named() -> None:
    m = one(
        event_type_filter={"in_values": ["job"]},
        property_filters=[
            {"name": "cpu", "exists": True},
            {"name": "plan", "exists": True, "in_values": ["pro"]},
        ],
    )
    assert takes(m, {"cpu": "1", "plan": "pro"}, "job")
    miss = match_metric(m, "job", {"plan": "free"})
    assert miss is not None
    assert (miss.what, miss.failures) == ("cpu", 2)
    assert "cpu exists" in miss.why


# ----------------------------------------------------------------------- account


def test_archived_metrics_and_sql_metrics_are_not_previewed() -> None:
    page = {
        "data": [
            metric(id="11111111-1111-4111-8111-111111111111", name="live"),
            metric(
                id="22222222-2222-4222-8222-222222222222",
                name="old",
                archived_at="2024-10-01T11:23:44Z",
            ),
            metric(id="33333333-3333-4333-8333-333333333333", name="sql", sql="SELECT 1"),
        ],
        "next_page": None,
    }
    account = Account(metrics=parse_metrics([page], origin="t"))
    assert [m.name for m in account.active_metrics] == ["live"]
    assert [m.name for m in account.sql_metrics] == ["sql"]
    assert [m.name for m in account.archived_metrics] == ["old"]
    preview = BillingPreview(account)
    preview.add(event("c", "api"), "f:1")
    report = preview.to_json()
    assert report["not_previewed_sql"] == ["sql"]
    assert report["archived_left_out"] == ["old"]
    assert [u["metric"] for u in report["usage"]] == ["live"]


def test_customers_resolve_by_id_or_alias_and_archived_ones_do_not() -> None:
    customers = parse_customers(
        [
            {
                "data": [
                    customer("d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc", "Acme", ["acme", "a@x"]),
                    customer(
                        "e7abd0cd-4ae9-4db7-8676-e986a4ebd8dc",
                        "Gone",
                        ["gone"],
                        archived_at="2026-02-01T00:00:00Z",
                    ),
                ],
                "next_page": None,
            }
        ],
        origin="t",
    )
    account = Account(customers=customers)
    acme = account.resolve("acme")
    assert acme is not None
    assert acme.name == "Acme"
    assert account.resolve("a@x") is acme
    assert account.resolve("d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc") is acme
    assert account.resolve("Acme") is None, "the name is not an ingest alias"
    assert account.resolve("gone") is None
    assert account.resolve("ACME") is None, "aliases are exact"


def test_files_in_the_api_shape(tmp_path: Path) -> None:
    page1 = {"data": [metric(name="a")], "next_page": "c1"}
    page2 = {
        "data": [metric(id="11111111-1111-4111-8111-111111111111", name="b")],
        "next_page": None,
    }
    single = tmp_path / "one.json"
    single.write_bytes(orjson.dumps(page1))
    assert [m.name for m in load_metrics(single)] == ["a"]
    array = tmp_path / "pages.json"
    array.write_bytes(orjson.dumps([page1, page2]))
    assert [m.name for m in load_metrics(array)] == ["a", "b"]
    lines = tmp_path / "pages.jsonl"
    lines.write_bytes(orjson.dumps(page1) + b"\n" + orjson.dumps(page2) + b"\n")
    assert [m.name for m in load_metrics(lines)] == ["a", "b"]
    assert len(load_customers(SAMPLES / "billing" / "customers.json")) == 5


def test_a_file_not_in_the_api_shape_is_one_clear_error(tmp_path: Path) -> None:
    bare = tmp_path / "bare.json"
    bare.write_bytes(orjson.dumps([metric()]))
    with pytest.raises(BillingDataError, match=r"bare.json: not a response of GET /v1/billable"):
        load_metrics(bare)
    typo = tmp_path / "typo.json"
    typo.write_bytes(orjson.dumps({"data": [{"id": "x"}], "next_page": None}))
    with pytest.raises(BillingDataError, match="name"):
        load_metrics(typo)
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'{"data": []}\n{"data": [\n')
    with pytest.raises(BillingDataError, match=r"broken.json:2: not JSON"):
        load_metrics(broken)
    with pytest.raises(BillingDataError, match="cannot read"):
        load_customers(tmp_path / "absent.json")


def test_fetch_follows_cursor_pages_and_never_shows_the_token() -> None:
    seen: list[httpx.Request] = []
    pages = {
        None: {"data": [metric(name="a")], "next_page": "p2"},
        "p2": {"data": [metric(name="b")], "next_page": None},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        assert request.headers["authorization"] == "Bearer s3cret"
        if request.url.path == "/v1/customers":
            return httpx.Response(403, json={"message": "no"})
        return httpx.Response(200, json=pages[request.url.params.get("next_page")])

    client = httpx.Client(transport=httpx.MockTransport(answer))
    customers_file = SAMPLES / "billing" / "customers.json"
    account = fetch_account(
        "https://api.example/", "s3cret", customers_file=customers_file, client=client
    )
    assert [m.name for m in account.metrics] == ["a", "b"]
    assert [r.url.params["limit"] for r in seen] == ["100", "100"]
    assert account.sources["customers"] == str(customers_file)
    with pytest.raises(BillingDataError) as failed:
        fetch_account("https://api.example", "s3cret", client=client)
    assert "GET https://api.example/v1/customers answered 403" in str(failed.value)
    assert "s3cret" not in str(failed.value)
    with pytest.raises(BillingDataError, match="METRONOME_BEARER_TOKEN is not set"):
        fetch_account("https://api.example", "", client=client)


# ----------------------------------------------------------------------- aggregations


def test_aggregation_values() -> None:
    total = one(aggregation_type="sum", aggregation_key="n")
    assert aggregation_value(total, {"n": "12.5"}) == (Decimal("12.5"), None)
    assert aggregation_value(total, {"n": 3}) == (Decimal(3), None)
    assert aggregation_value(total, {"n": 0.1}) == (Decimal("0.1"), None)
    assert aggregation_value(total, {})[1] == "n missing"
    assert aggregation_value(total, {"n": None})[1] == "n missing"
    for bad in ("12 GB", True, "NaN", " 1", [1]):
        assert aggregation_value(total, {"n": bad})[1] == "n not a number", bad
    assert aggregation_value(one(), {}) == (1, None)
    assert aggregation_value(one(aggregation_type="Unique", aggregation_key="u"), {"u": 7}) == (
        "7",
        None,
    )


def event(
    customer_id: str, event_type: str, ts: str = "2026-11-24T10:00:00Z", **properties: Any
) -> dict[str, Any]:
    return {
        "transaction_id": f"t-{customer_id}-{ts}-{sorted(properties.items())}",
        "customer_id": customer_id,
        "event_type": event_type,
        "timestamp": ts,
        "properties": properties,
    }


ACME = customer("d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc", "Acme", ["acme"])
GLOBEX = customer("e7abd0cd-4ae9-4db7-8676-e986a4ebd8dc", "Globex", ["globex"])


def preview_of(metrics: list[dict[str, Any]], events: list[dict[str, Any]]) -> dict[str, Any]:
    for i, m in enumerate(metrics):
        m.setdefault("id", f"{i:08d}-1111-4111-8111-111111111111")
    account = Account(
        metrics=parse_metrics([{"data": metrics, "next_page": None}], origin="t"),
        customers=parse_customers([{"data": [ACME, GLOBEX], "next_page": None}], origin="t"),
    )
    preview = BillingPreview(account)
    for i, e in enumerate(events):
        preview.add(e, f"in.jsonl:{i + 1}")
    return preview.to_json()


def usage(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(u for u in report["usage"] if u["metric"] == name)


DAYS = [
    event("acme", "job", "2026-11-24T10:00:00Z", cpu="1.5", plan="pro"),
    event("acme", "job", "2026-11-24T11:00:00Z", cpu=2, plan="free"),
    event("globex", "job", "2026-11-25T09:00:00Z", cpu="4.25", plan="pro"),
    event("acme", "job", "2026-11-25T08:00:00Z", cpu="0.5", plan="pro"),
]


@pytest.mark.parametrize(
    ("kind", "total", "acme", "day_24", "day_25"),
    [
        ("COUNT", 4, 3, 2, 2),
        ("SUM", 8.25, 4, 3.5, 4.75),
        ("MAX", 4.25, 2, 2, 4.25),
        ("UNIQUE", 4, 3, 2, 2),
        ("LATEST", "4.25", "0.5", "2", "4.25"),
    ],
)
def test_each_aggregation_by_customer_and_day(
    kind: str, total: Any, acme: Any, day_24: Any, day_25: Any
) -> None:
    m = metric(name="cpu", aggregation_type=kind, group_keys=[["plan"]])
    if kind != "COUNT":
        m["aggregation_key"] = "cpu"
    report = preview_of([m], DAYS)
    u = usage(report, "cpu")
    assert u["total"] == total
    assert u["by_customer"]["Acme"] == acme
    assert u["by_day"] == {"2026-11-24": day_24, "2026-11-25": day_25}
    assert report["exit_code"] == 0
    assert sum(row["events"] for row in u["by_customer_day"]) == 4


def test_group_keys_split_usage() -> None:
    m = metric(name="cpu", aggregation_type="SUM", aggregation_key="cpu", group_keys=[["plan"]])
    assert usage(preview_of([m], DAYS), "cpu")["by_group"] == {"plan": {"free": 2, "pro": 6.25}}


def test_unique_counts_distinct_values_once() -> None:
    m = metric(name="u", aggregation_type="UNIQUE", aggregation_key="plan")
    assert usage(preview_of([m], DAYS), "u")["total"] == 2


# ----------------------------------------------------------------------- what bills nothing


def test_causes_of_billing_nothing() -> None:
    cpu = metric(
        name="CPU",
        aggregation_type="SUM",
        aggregation_key="cpu",
        event_type_filter={"in_values": ["job"]},
        property_filters=[{"name": "plan", "exists": True}],
    )
    calls = metric(
        name="Calls",
        event_type_filter={"in_values": ["api"]},
        property_filters=[{"name": "endpoint", "exists": True}],
    )
    report = preview_of(
        [cpu, calls],
        [
            event("nobody", "api", endpoint="/x"),
            event("acme", "job", plan="pro"),  # cpu missing: SUM cannot use it
            event("acme", "job", plan="pro", cpu="lots"),
            event("acme", "job", cpu="1"),  # plan missing: nearest CPU
            event("acme", "seat"),
            event("globex", "api", endpoint="/y"),
        ],
    )
    assert report["bill_nothing_by_cause"] == {
        "unknown_customer": 1,
        "no_metric": 2,
        "aggregation_key": 2,
    }
    assert report["billed"] == 1
    assert report["exit_code"] == 1
    losses = {(x["cause"], x["event_type"], x["detail"]): x for x in report["losses"]}
    near = next(x for x in report["losses"] if x["cause"] == "no_metric" and x["metric"] == "CPU")
    assert "plan missing" in near["detail"]
    assert near["example"]["source"] == "in.jsonl:4"
    assert any("cpu not a number" in d for (_, _, d) in losses)
    assert any("cpu missing" in d for (_, _, d) in losses)


def test_a_metric_that_skips_an_event_another_bills_still_fails_the_preview() -> None:
    count = metric(name="Jobs", event_type_filter={"in_values": ["job"]})
    total = metric(
        name="CPU",
        aggregation_type="SUM",
        aggregation_key="cpu",
        event_type_filter={"in_values": ["job"]},
    )
    report = preview_of([count, total], [event("acme", "job", cpu="x"), event("acme", "job")])
    assert report["bill_nothing"] == 0
    assert usage(report, "CPU")["skipped"] == {"cpu missing": 1, "cpu not a number": 1}
    assert usage(report, "Jobs")["total"] == 2
    assert report["exit_code"] == 1


def test_text_lines_show_the_top_and_how_many_more() -> None:
    calls = metric(name="Calls")
    many = [event(f"who{i}", "api") for i in range(8)]
    account = Account(
        metrics=parse_metrics([{"data": [calls], "next_page": None}], origin="t"),
        customers=parse_customers([{"data": [ACME], "next_page": None}], origin="t"),
    )
    preview = BillingPreview(account)
    for i, e in enumerate(many):
        preview.add(e, f"f:{i}")
    lines = preview.text_lines(top=3)
    assert lines[0].endswith("0 bill, 8 bill nothing")
    assert "… and 5 more" in "\n".join(lines)
    assert len(preview.to_json()["losses"]) == 8


def test_invoice_preview_waits_out_429_and_reports_other_failures() -> None:
    from segmetro.billing import draft_invoices

    answers = [
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.Response(
            200,
            json={
                "data": [
                    {
                        "type": "USAGE",
                        "status": "DRAFT",
                        "total": 7,
                        "credit_type": {"name": "USD"},
                        "line_items": [],
                    }
                ]
            },
        ),
        httpx.Response(500),
    ]
    posted: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append(orjson.loads(request.content))
        return answers.pop(0)

    account = Account(
        metrics=parse_metrics([{"data": [metric(name="Calls")], "next_page": None}], origin="t"),
        customers=parse_customers([{"data": [ACME, GLOBEX], "next_page": None}], origin="t"),
    )
    preview = BillingPreview(account, keep_events=100)
    for i in range(3):
        preview.add(event("acme", "api", f"2026-11-24T10:00:0{i}Z"), "f")
    preview.add(event("globex", "api"), "f")
    waits: list[float] = []
    client = httpx.Client(transport=httpx.MockTransport(answer))
    drafts = draft_invoices(
        preview, 1, api_url="https://x", token="t", client=client, sleep=waits.append
    )
    assert waits == [2.0]
    assert [d["customer"] for d in drafts] == ["Acme"]
    assert drafts[0]["invoices"][0]["total"] == 7
    assert len(posted[-1]["events"]) == 3
    assert set(posted[-1]["events"][0]) == {
        "transaction_id",
        "event_type",
        "timestamp",
        "properties",
    }
    with pytest.raises(BillingDataError, match="answered 500"):
        draft_invoices(preview, 1, api_url="https://x", token="t", client=client)
