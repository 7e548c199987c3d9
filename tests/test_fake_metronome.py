"""The fake Metronome, exercised over real HTTP on 127.0.0.1 with httpx."""

from __future__ import annotations

import gzip
import logging
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from segmetro.errors import ConfigError
from segmetro.fake_metronome import (
    FakeConfig,
    FakeMetronome,
    FakeState,
    parse_rfc3339,
    serve,
)
from segmetro.fake_metronome.schema import SEARCH_PATH, response_validator

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "test-token"


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(tid: str = "t-1", **overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "transaction_id": tid,
        "customer_id": "cust-1",
        "event_type": "api_call",
        "timestamp": "2025-03-01T11:00:00.000Z",
        "properties": {"n": "1"},
    }
    out.update(overrides)
    return out


def batch(n: int, prefix: str = "t") -> list[dict[str, Any]]:
    return [event(f"{prefix}-{i}") for i in range(n)]


def client_for(fake: FakeMetronome, token: str | None = TOKEN, **kw: Any) -> httpx.Client:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=fake.url, headers=headers, **kw)


@pytest.fixture
def fake() -> Iterator[FakeMetronome]:
    with FakeMetronome(FakeConfig(now=NOW)) as server:
        yield server


@pytest.fixture
def client(fake: FakeMetronome) -> Iterator[httpx.Client]:
    with client_for(fake) as c:
        yield c


class Clock:
    """A monotonic clock the test moves by hand, so rate limits are checked without races."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def running(clock: Clock | None = None, **cfg: Any) -> FakeMetronome:
    cfg.setdefault("now", NOW)
    if clock is None:
        return FakeMetronome(FakeConfig(**cfg))
    return FakeMetronome(FakeConfig(**cfg), clock=clock)


def conn_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "fake-metronome-conn" and t.is_alive()}


# --------------------------------------------------------------------------- schema and parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01T12:00:00Z", NOW),
        ("2025-03-01t12:00:00z", NOW),
        ("2025-03-01T13:30:00+01:30", NOW),
        ("2025-03-01T07:00:00-05:00", NOW),
        ("2025-03-01T12:00:00.5Z", NOW + timedelta(milliseconds=500)),
        ("2025-03-01T12:00:00.123456789Z", NOW + timedelta(microseconds=123456)),
    ],
)
def test_parse_rfc3339_accepts(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2025-03-01",
        "2025-03-01T12:00:00",
        "2025-03-01 12:00:00Z",
        "25-03-01T12:00:00Z",
        "12025-03-01T12:00:00Z",
        "2025-02-30T12:00:00Z",
        "2025-03-01T24:00:00Z",
        "2025-03-01T12:00:00+24:00",
        "2025-03-01T12:00:00.Z",
        "1740830400",
        "２０２５-03-01T12:00:00Z",
    ],
)
def test_parse_rfc3339_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|valid|offset"):
        parse_rfc3339(text)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="add up"):
        FakeConfig(p_429=0.6, p_500=0.6)
    with pytest.raises(ValueError, match="between 0 and 1"):
        FakeConfig(p_drop=1.5)
    with pytest.raises(ValueError, match="--rate-limit-type"):
        FakeConfig(rate_limit_type="global")
    with pytest.raises(ValueError, match="--rate-limit must not be negative"):
        FakeConfig(rate_limit=-1)
    with pytest.raises(ValueError, match="--customer-rate-limit must not be negative"):
        FakeConfig(customer_rate_limit=-5)
    with pytest.raises(ValueError, match="--customer-rate-burst must be positive"):
        FakeConfig(customer_rate_burst=0)
    with pytest.raises(ValueError, match="--fail-status"):
        FakeConfig(fail_status=200)
    with pytest.raises(ConfigError):  # the CLI maps it to exit 2
        FakeConfig(latency_ms=-1)
    assert FakeConfig(now=datetime(2025, 1, 1)).now == datetime(2025, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- ingest validation


def test_valid_batch_is_stored_exactly_as_received(
    fake: FakeMetronome, client: httpx.Client
) -> None:
    payloads = [event("a", extra=[1, {"x": None}]), event("b", properties={"n": 2.5})]
    del payloads[1]["properties"]
    response = client.post("/v1/ingest", json=payloads)
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"
    state = fake.snapshot()
    assert state.events == payloads
    assert (state.requests, state.events_received, state.events_accepted) == (1, 2, 2)


BAD_EVENTS: list[tuple[Any, str]] = [
    ("not an object", "must be an object"),
    ({k: v for k, v in event().items() if k != "customer_id"}, "missing required field"),
    ({k: v for k, v in event().items() if k != "timestamp"}, "'timestamp'"),
    (event(transaction_id=""), "'transaction_id'"),
    (event(customer_id=""), "'customer_id'"),
    (event(event_type=""), "'event_type'"),
    (event(customer_id=42), "must be a string"),
    (event(event_type=None), "must be a string"),
    (event(timestamp=1740830400), "must be a string"),
    (event(properties=["a"]), "'properties' must be an object"),
    (event(properties=None), "'properties' must be an object"),
    (event(timestamp="2025-03-01 11:00:00"), "RFC 3339"),
    (event(timestamp="2025-02-30T11:00:00Z"), "valid date-time"),
]


@pytest.mark.parametrize(("bad", "needle"), BAD_EVENTS)
def test_one_bad_event_fails_the_whole_batch(
    fake: FakeMetronome, client: httpx.Client, bad: Any, needle: str
) -> None:
    payload: list[Any] = [event("ok-0"), event("ok-1"), bad, event("ok-3")]
    response = client.post("/v1/ingest", json=payload)
    assert response.status_code == 400
    message = response.json()["message"]
    assert "index 2" in message
    assert needle in message
    state = fake.snapshot()
    assert state.events == []
    assert state.batches_rejected_400 == 1


@pytest.mark.parametrize(("size", "status"), [(0, 400), (1, 200), (100, 200), (101, 400)])
def test_batch_size_limits(client: httpx.Client, size: int, status: int) -> None:
    response = client.post("/v1/ingest", json=batch(size))
    assert response.status_code == status
    if status == 400:
        assert "event" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [(b"{not json", "not valid JSON"), (b'{"events": []}', "JSON array"), (b"", "not valid")],
)
def test_body_must_be_a_json_array(client: httpx.Client, body: bytes, needle: str) -> None:
    response = client.post("/v1/ingest", content=body)
    assert response.status_code == 400
    assert needle in response.json()["message"]


def test_transaction_id_length_limit(fake: FakeMetronome, client: httpx.Client) -> None:
    assert client.post("/v1/ingest", json=[event("x" * 128)]).status_code == 200
    response = client.post("/v1/ingest", json=[event("y" * 129)])
    assert response.status_code == 400
    assert "index 0" in response.json()["message"]
    assert "128" in response.json()["message"]
    assert [e["transaction_id"] for e in fake.snapshot().events] == ["x" * 128]


@pytest.mark.parametrize(
    ("when", "ok"),
    [
        (NOW - timedelta(days=34), True),
        (NOW - timedelta(days=34, milliseconds=1), False),
        (NOW + timedelta(hours=24), True),
        (NOW + timedelta(hours=24, milliseconds=1), False),
        (NOW, True),
    ],
)
def test_ingest_window_edges(client: httpx.Client, when: datetime, ok: bool) -> None:
    response = client.post("/v1/ingest", json=[event("a"), event("b", timestamp=iso(when))])
    if ok:
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        message = response.json()["message"]
        assert "index 1" in message
        assert ("34 days" if when < NOW else "24 hours") in message


def test_window_edge_with_an_offset(client: httpx.Client) -> None:
    edge = "2025-01-26T14:00:00+02:00"  # exactly 34 days before NOW
    assert client.post("/v1/ingest", json=[event("a", timestamp=edge)]).status_code == 200
    late = "2025-01-26T12:59:59+01:00"  # one second too old
    assert client.post("/v1/ingest", json=[event("b", timestamp=late)]).status_code == 400


def test_real_clock_is_used_without_now() -> None:
    with FakeMetronome() as fake, client_for(fake) as c:
        fresh = iso(datetime.now(UTC) - timedelta(hours=1))
        assert c.post("/v1/ingest", json=[event("a", timestamp=fresh)]).status_code == 200
        old = "2020-01-01T00:00:00Z"
        assert c.post("/v1/ingest", json=[event("b", timestamp=old)]).status_code == 400


def test_gzip_and_chunked_bodies(fake: FakeMetronome, client: httpx.Client) -> None:
    raw = orjson.dumps([event("g")])
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    assert client.post("/v1/ingest", content=gzip.compress(raw), headers=headers).is_success
    whole = orjson.dumps([event("c1"), event("c2")])
    chunks = iter([whole[:10], whole[10:]])
    assert client.post("/v1/ingest", content=chunks).status_code == 200
    assert [e["transaction_id"] for e in fake.snapshot().events] == ["g", "c1", "c2"]


# --------------------------------------------------------------------------- auth and dedup


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic dGVzdA=="}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Bearer wrong-token"}, 403),
        ({"Authorization": f"bearer {TOKEN}"}, 200),
    ],
)
@pytest.mark.parametrize("path", ["/v1/ingest", "/v1/events/search"])
def test_authentication(
    fake: FakeMetronome, headers: dict[str, str], status: int, path: str
) -> None:
    body: Any = [event()] if path == "/v1/ingest" else {"transactionIds": ["t-1"]}
    with httpx.Client(base_url=fake.url, headers=headers) as c:
        response = c.post(path, json=body)
    assert response.status_code == status
    if status != 200:
        assert isinstance(response.json()["message"], str)
        assert fake.snapshot().events == []
        assert fake.snapshot().auth_failures == 1


def test_faults_apply_only_after_auth() -> None:
    with running(fail_status=503, p_drop=1.0) as fake, client_for(fake, "nope") as c:
        assert c.post("/v1/ingest", json=[event()]).status_code == 403
        assert fake.snapshot().faults == {}


def test_dedup_first_accepted_wins(fake: FakeMetronome, client: httpx.Client) -> None:
    first = event("dup", properties={"v": "first"})
    second = event("dup", properties={"v": "second"})
    assert client.post("/v1/ingest", json=[first, event("x")]).status_code == 200
    assert client.post("/v1/ingest", json=[second, event("y"), event("y")]).status_code == 200
    state = fake.snapshot()
    assert state.events == [first, event("x"), event("y")]
    assert state.duplicates_ignored == 2
    assert (state.events_received, state.events_accepted) == (5, 3)


# --------------------------------------------------------------------------- search


def check_shape(items: list[dict[str, Any]]) -> None:
    """The answer matches the published response schema, timestamps included."""
    assert response_validator(SEARCH_PATH)(items) is None
    for item in items:
        parse_rfc3339(item["timestamp"])
        parse_rfc3339(item["processed_at"])
        assert item["is_duplicate"] is False
        assert isinstance(item["properties"], dict)


def test_search_response_shape() -> None:
    cfg = {"known_customers": frozenset({"c1"}), "billable_event_types": frozenset({"api"})}
    with running(**cfg) as fake, client_for(fake) as c:
        sent = [
            event("t1", customer_id="c1", event_type="api", properties={"k": "v"}),
            event("t2", customer_id="c2", event_type="other"),
        ]
        assert c.post("/v1/ingest", json=sent).status_code == 200
        response = c.post("/v1/events/search", json={"transactionIds": ["t2", "nope", "t1", "t2"]})
        assert response.status_code == 200
        items = response.json()
        assert [i["transaction_id"] for i in items] == ["t2", "t1"]
        check_shape(items)
        t2, t1 = items
        assert t1["customer_id"] == "c1"
        assert t1["properties"] == {"k": "v"}
        assert t1["timestamp"] == sent[0]["timestamp"]
        assert t1["matched_customer"]["name"] == "c1"
        assert [m["name"] for m in t1["matched_billable_metrics"]] == ["api"]
        assert "matched_customer" not in t2
        assert t2["matched_billable_metrics"] == []
        assert t1["id"] != t2["id"]
        assert fake.snapshot().search_requests == 1


def test_search_defaults_match_everything(fake: FakeMetronome, client: httpx.Client) -> None:
    client.post("/v1/ingest", json=[event("a")])
    [item] = items = client.post("/v1/events/search", json={"transactionIds": ["a"]}).json()
    check_shape(items)
    assert "matched_customer" in item
    assert len(item["matched_billable_metrics"]) == 1


@pytest.mark.parametrize(
    "body",
    [{}, {"transaction_ids": ["a"]}, {"transactionIds": "a"}, {"transactionIds": [1]}, ["a"]],
)
def test_search_validates_its_body(client: httpx.Client, body: Any) -> None:
    response = client.post("/v1/events/search", json=body)
    assert response.status_code == 400
    assert response.json()["message"]


def test_search_covers_only_the_last_34_days(fake: FakeMetronome, client: httpx.Client) -> None:
    old = iso(NOW - timedelta(days=30))
    new = iso(NOW + timedelta(hours=1))
    assert client.post(
        "/v1/ingest", json=[event("old", timestamp=old), event("new", timestamp=new)]
    )
    fake.configure(now=NOW + timedelta(days=5))
    found = client.post("/v1/events/search", json={"transactionIds": ["old", "new"]}).json()
    assert [i["transaction_id"] for i in found] == ["new"]


def test_search_rate_limit() -> None:
    clock = Clock()
    with running(clock, search_rate=2) as fake, client_for(fake) as c:
        statuses = [c.post("/v1/events/search", json={"transactionIds": []}) for _ in range(3)]
        assert [r.status_code for r in statuses] == [200, 200, 429]
        assert statuses[2].headers["x-metronome-rate-limit-type"] == "client"
        assert "retry-after" not in statuses[2].headers
        assert "retry-after-ms" not in statuses[2].headers
        assert fake.snapshot().search_rate_limited == 1
        # ingest is not limited by the search limit
        assert c.post("/v1/ingest", json=batch(100)).status_code == 200
        fake.configure(rate_limit_hint=True)
        c.post("/v1/events/search", json={"transactionIds": []})
        c.post("/v1/events/search", json={"transactionIds": []})
        hinted = c.post("/v1/events/search", json={"transactionIds": []})
        assert hinted.status_code == 429
        assert (hinted.headers["retry-after"], hinted.headers["retry-after-ms"]) == ("1", "500")
        clock.advance(0.5)
        assert c.post("/v1/events/search", json={"transactionIds": []}).status_code == 200


def test_search_faults_are_opt_in() -> None:
    with running(p_500=1.0) as fake, client_for(fake) as c:
        assert c.post("/v1/events/search", json={"transactionIds": []}).status_code == 200
        fake.configure(search_faults=True)
        assert c.post("/v1/events/search", json={"transactionIds": []}).status_code == 500


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("cfg", "headers"),
    [
        ({}, {"x-metronome-rate-limit-type": "client"}),
        ({"retry_after": 2}, {"retry-after": "2"}),
        ({"retry_after": 0.25}, {"retry-after": "0.25"}),
        ({"retry_after_ms": 150}, {"retry-after-ms": "150"}),
        ({"rate_limit_type": "customer"}, {"x-metronome-rate-limit-type": "customer"}),
    ],
)
def test_injected_429(cfg: dict[str, Any], headers: dict[str, str]) -> None:
    with running(p_429=1.0, **cfg) as fake, client_for(fake) as c:
        response = c.post("/v1/ingest", json=[event()])
        assert response.status_code == 429
        for name, value in headers.items():
            assert response.headers[name] == value
        if "retry_after" not in cfg:
            assert "retry-after" not in response.headers
        if "retry_after_ms" not in cfg:
            assert "retry-after-ms" not in response.headers
        state = fake.snapshot()
        assert state.events == []
        assert state.faults == {"429": 1}


@pytest.mark.parametrize("status", [500, 502, 503])
def test_injected_5xx(status: int) -> None:
    with running(**{f"p_{status}": 1.0}) as fake, client_for(fake) as c:
        response = c.post("/v1/ingest", json=batch(3))
        assert response.status_code == status
        assert response.json()["message"]
        assert fake.snapshot().events == []
        assert fake.snapshot().faults == {str(status): 1}


def test_partial_ingest_leaves_a_strict_subset() -> None:
    with running(p_partial=1.0, seed=3) as fake, client_for(fake) as c:
        sizes = []
        for k in range(8):
            sent = batch(10, prefix=f"b{k}")
            response = c.post("/v1/ingest", json=sent)
            assert response.status_code == 500
            got = [e for e in fake.snapshot().events if e["transaction_id"].startswith(f"b{k}-")]
            assert len(got) < len(sent)
            assert got == [e for e in sent if e in got]  # a subsequence, in order
            sizes.append(len(got))
        assert len(set(sizes)) > 1
        assert fake.snapshot().faults == {"partial_500": 8}
        fake.configure(p_partial=0.0)
        assert c.post("/v1/ingest", json=batch(10, prefix="b0")).status_code == 200
        state = fake.snapshot()
        assert len([e for e in state.events if e["transaction_id"].startswith("b0-")]) == 10
        assert state.duplicates_ignored == sizes[0]


def test_partial_ingest_never_hides_a_400() -> None:
    with running(p_partial=1.0) as fake, client_for(fake) as c:
        response = c.post("/v1/ingest", json=[event("a"), event("b", customer_id="")])
        assert response.status_code == 400
        assert fake.snapshot().events == []


def test_dropped_connection_is_a_transport_error() -> None:
    with running(p_drop=1.0) as fake, client_for(fake) as c:
        with pytest.raises(httpx.TransportError):
            c.post("/v1/ingest", json=[event()])
        state = fake.snapshot()
        assert state.events == []
        assert state.faults == {"drop": 1}
        fake.configure(p_drop=0.0)
        assert c.post("/v1/ingest", json=[event()]).status_code == 200


def test_latency_and_client_timeout() -> None:
    others = conn_threads()
    with running(latency_ms=150) as fake, client_for(fake) as c:
        start = time.perf_counter()
        assert c.post("/v1/ingest", json=[event("a")]).status_code == 200
        assert time.perf_counter() - start >= 0.15
        fake.configure(latency_ms=600_000)
        with pytest.raises(httpx.ReadTimeout):
            c.post("/v1/ingest", json=[event("b")], timeout=0.2)
        waiting = conn_threads() - others
        assert waiting  # a handler is waiting out ten minutes of latency
    # stop() woke it instead of waiting (a handler still asleep would outlive stop's join)
    assert not any(t.is_alive() for t in waiting)


def test_latency_jitter_follows_the_seeded_draws() -> None:
    draws = random.Random(1 + 1)  # the fake seeds its jitter generator with seed + 1
    with running(latency_ms=20, latency_jitter_ms=60, seed=1) as fake, client_for(fake) as c:
        for i in range(5):
            expected = (20 + draws.uniform(0.0, 60.0)) / 1000.0
            start = time.perf_counter()
            c.post("/v1/ingest", json=[event(f"j{i}")])
            assert time.perf_counter() - start >= expected
        assert fake.snapshot().events_accepted == 5


def test_fail_every_request_with_a_status() -> None:
    with running(fail_status=503) as fake, client_for(fake) as c:
        statuses = [c.post("/v1/ingest", json=[event()]).status_code for _ in range(4)]
        assert statuses == [503] * 4
        assert c.post("/v1/events/search", json={"transactionIds": []}).status_code == 503
        assert fake.snapshot().faults == {"fail_status": 5}
        assert fake.snapshot().events == []


def test_fail_the_first_n_requests() -> None:
    with running(fail_status=429, fail_count=2, retry_after=1) as fake, client_for(fake) as c:
        responses = [c.post("/v1/ingest", json=[event()]) for _ in range(3)]
        assert [r.status_code for r in responses] == [429, 429, 200]
        assert responses[0].headers["retry-after"] == "1"
        assert fake.snapshot().events_accepted == 1


# --------------------------------------------------------------------------- rate limit


def test_rate_limit_answers_429_and_holds_the_rate() -> None:
    clock = Clock()  # steps of 1/256 s and a rate of 1024/s keep every float exact
    with running(clock, rate_limit=1024, rate_burst=128) as fake, client_for(fake) as c:
        statuses = [c.post("/v1/ingest", json=batch(32, f"a{k}")).status_code for k in range(5)]
        assert statuses == [200, 200, 200, 200, 429]  # the burst of 128, then nothing left
        accepted = 0
        for k in range(256):  # one simulated second, sending as fast as allowed
            clock.advance(1 / 256)
            if c.post("/v1/ingest", json=batch(32, f"r{k}")).status_code == 200:
                accepted += 32
        state = fake.snapshot(include_events=False)
    assert accepted == 1024  # exactly the rate
    assert state.events_accepted == 128 + 1024
    assert state.rate_limited == 1 + 256 - 1024 // 32


def test_rate_limit_hint_follows_the_deficit() -> None:
    clock = Clock()
    with running(clock, rate_limit=50, rate_limit_hint=True) as fake, client_for(fake) as c:
        assert c.post("/v1/ingest", json=batch(100, "a")).status_code == 200  # full bucket
        response = c.post("/v1/ingest", json=batch(100, "b"))
        assert response.status_code == 429
        assert response.headers["retry-after"] == "2"
        assert response.headers["retry-after-ms"] == "2000"
        assert response.headers["x-metronome-rate-limit-type"] == "client"
        clock.advance(1.5)
        response = c.post("/v1/ingest", json=batch(100, "b"))
        assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("1", "500")
        clock.advance(0.5)
        assert c.post("/v1/ingest", json=batch(100, "b")).status_code == 200
        assert fake.snapshot().events_accepted == 200


# --------------------------------------------------------------------------- determinism


def run_sequence(seed: int) -> tuple[list[int], FakeState]:
    cfg = {"seed": seed, "p_500": 0.25, "p_429": 0.2, "p_partial": 0.2, "p_drop": 0.1}
    with running(**cfg) as fake, client_for(fake) as c:
        statuses = []
        for i in range(40):
            try:
                statuses.append(c.post("/v1/ingest", json=batch(5, f"s{i}")).status_code)
            except httpx.TransportError:
                statuses.append(0)
        return statuses, fake.snapshot()


def test_faults_are_deterministic_with_a_seed() -> None:
    first, state1 = run_sequence(11)
    second, state2 = run_sequence(11)
    other, _ = run_sequence(12)
    assert first == second
    assert state1 == state2
    assert first != other
    assert {0, 200, 429, 500} <= set(first)


def test_reset_reseeds_and_forgets() -> None:
    with running(seed=5, p_503=0.5) as fake, client_for(fake) as c:
        before = [c.post("/v1/ingest", json=[event(f"x{i}")]).status_code for i in range(12)]
        fake.reset()
        assert fake.snapshot() == FakeState([], 0, 0, 0, 0, 0, {}, 0, 0, 0, 0, 0)
        after = [c.post("/v1/ingest", json=[event(f"x{i}")]).status_code for i in range(12)]
        assert before == after
        assert fake.snapshot().duplicates_ignored == 0


# --------------------------------------------------------------------------- state endpoints


def test_state_and_reset_over_http(fake: FakeMetronome, client: httpx.Client) -> None:
    client.post("/v1/ingest", json=[event("a"), event("a")])
    client.post("/v1/ingest", json=[])
    with httpx.Client(base_url=fake.url) as anonymous:
        state = anonymous.get("/_fake/state").json()
        assert state == fake.snapshot().to_json()
        assert state["events"] == [event("a")]
        assert state["requests"] == 2
        assert state["duplicates_ignored"] == 1
        assert state["batches_rejected_400"] == 1
        assert anonymous.get("/_fake/state?events=0").json()["events"] == []
        assert anonymous.post("/_fake/reset").status_code == 200
        cleared = anonymous.get("/_fake/state").json()
    assert cleared["events"] == []
    assert cleared["requests"] == 0
    assert fake.snapshot().events_accepted == 0


def test_unknown_route(client: httpx.Client) -> None:
    response = client.post("/v1/nothing", json=[])
    assert response.status_code == 404
    assert response.json() == {"message": "no route for POST /v1/nothing"}
    response = client.put("/v1/nothing", json=[])
    assert response.status_code == 404
    assert "PUT /v1/nothing" in response.json()["message"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "GET"])
def test_other_methods_get_a_json_405(
    fake: FakeMetronome, client: httpx.Client, method: str
) -> None:
    response = client.request(method, "/v1/ingest", json=[event("m")])
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["content-type"] == "application/json"
    assert "/v1/ingest" in response.json()["message"]
    assert client.request(method, "/v1/events/search").status_code == 405
    if method != "GET":
        state = client.request(method, "/_fake/state")
        assert (state.status_code, state.headers["allow"]) == (405, "GET")
    assert fake.snapshot().requests == 0  # a refused method never reaches the handler
    assert client.post("/v1/ingest", json=[event("m")]).status_code == 200  # still answering


def test_an_unknown_method_is_answered_in_json(fake: FakeMetronome) -> None:
    with httpx.Client(base_url=fake.url) as c:
        response = c.request("BREW", "/v1/ingest")
        assert response.status_code == 501
        assert response.headers["content-type"] == "application/json"
        assert "BREW" in response.json()["message"]
        assert c.get("/_fake/state").status_code == 200


def test_token_never_appears_in_logs_or_responses(caplog: pytest.LogCaptureFixture) -> None:
    secret, guess = "s3cr3t-TOKEN-value", "wrong-GUESS-value"
    caplog.set_level(logging.DEBUG, logger="segmetro.fake_metronome")
    texts: list[str] = []
    config = FakeConfig(token=secret, now=NOW, p_429=0.3, p_500=0.3, seed=2)
    assert secret not in repr(config)
    with FakeMetronome(config) as fake:
        for token in (secret, guess, None):
            with client_for(fake, token) as c:
                for i in range(4):
                    r = c.post("/v1/ingest", json=[event(f"k{i}"), {"bad": True}][: 1 + i % 2])
                    texts.append(r.text + str(r.headers))
                    r = c.post("/v1/events/search", json={"transactionIds": ["k0"]})
                    texts.append(r.text + str(r.headers))
                texts.append(c.get("/_fake/state").text)
    assert caplog.records  # requests were logged
    for needle in (secret, guess):
        assert needle not in caplog.text
        assert all(needle not in t for t in texts)


# --------------------------------------------------------------------------- server plumbing


def test_keep_alive_reuses_one_connection(client: httpx.Client) -> None:
    peers = set()
    for i in range(5):
        response = client.post("/v1/ingest", json=[event(f"k{i}")])
        assert response.status_code == 200
        stream = response.extensions["network_stream"]
        peers.add(stream.get_extra_info("client_addr"))
    assert len(peers) == 1


def test_concurrent_clients(fake: FakeMetronome) -> None:
    with client_for(fake) as c, ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(
                lambda k: c.post("/v1/ingest", json=batch(100, f"p{k}")).status_code, range(40)
            )
        )
    assert results == [200] * 40
    state = fake.snapshot()
    assert state.events_accepted == 4000
    assert len({e["transaction_id"] for e in state.events}) == 4000


def test_stop_closes_idle_keep_alive_connections() -> None:
    fake = running()
    fake.start()
    with client_for(fake) as c:
        assert c.post("/v1/ingest", json=[event()]).status_code == 200
        idle = conn_threads()
        assert idle  # the keep-alive connection is open and waiting
        fake.stop()
        assert not any(t.is_alive() for t in idle)
        with pytest.raises(httpx.TransportError):
            c.post("/v1/ingest", json=[event()])
    fake.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = fake.url


def test_serve_blocks_until_stopped() -> None:
    urls: list[str] = []
    ready = threading.Event()
    stop = threading.Event()
    result: list[FakeState] = []

    def ready_cb(url: str) -> None:
        urls.append(url)
        ready.set()

    def target() -> None:
        result.append(
            serve(FakeConfig(now=NOW), host="127.0.0.1", port=0, ready=ready_cb, stop=stop)
        )

    thread = threading.Thread(target=target)
    thread.start()
    try:
        assert ready.wait(5)
        assert urls[0].startswith("http://127.0.0.1:")
        with httpx.Client(base_url=urls[0], headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            assert c.post("/v1/ingest", json=batch(3)).status_code == 200
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    assert result[0].events_accepted == 3
    assert result[0].events == []
