"""The fake's account-like defaults: rate limits, retry hints, and answers that never die.

Rate limits run on a hand-moved clock, so nothing here races the wall clock.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from segmetro.errors import ConfigError
from segmetro.fake_metronome import (
    MAX_EVENT_DEPTH,
    FakeConfig,
    FakeListenError,
    FakeMetronome,
    faults,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "test-token"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def event(tid: str, customer: str = "cust-1", **overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "transaction_id": tid,
        "customer_id": customer,
        "event_type": "api_call",
        "timestamp": "2025-03-01T11:00:00.000Z",
        "properties": {"n": "1"},
    }
    out.update(overrides)
    return out


def batch(n: int, prefix: str, customer: str = "cust-1") -> list[dict[str, Any]]:
    return [event(f"{prefix}-{i}", customer) for i in range(n)]


def start(clock: Clock, **cfg: Any) -> FakeMetronome:
    cfg.setdefault("now", NOW)
    return FakeMetronome(FakeConfig(**cfg), clock=clock)


def client_for(fake: FakeMetronome) -> httpx.Client:
    return httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture
def clock() -> Clock:
    return Clock()


def ingest(c: httpx.Client, events: list[dict[str, Any]]) -> httpx.Response:
    return c.post("/v1/ingest", json=events)


def accepted_ids(fake: FakeMetronome) -> set[str]:
    return {e["transaction_id"] for e in fake.snapshot().events}


# --------------------------------------------------------------------------- the account limit


def test_the_default_is_metronomes_5000_events_per_second(clock: Clock) -> None:
    assert FakeConfig().rate_limit == 5000.0
    with start(clock) as fake, client_for(fake) as c:
        statuses = [ingest(c, batch(100, f"b{k}")).status_code for k in range(50)]
        assert statuses == [200] * 50  # one second's worth fits the bucket
        refused = ingest(c, batch(100, "over"))
        assert refused.status_code == 429
        assert refused.headers["x-metronome-rate-limit-type"] == "client"
        assert "retry-after" not in refused.headers  # Metronome documents no hint
        assert "retry-after-ms" not in refused.headers
        assert refused.json() == {"message": "Rate limit exceeded"}
        state = fake.snapshot(include_events=False)
        assert (state.events_accepted, state.rate_limited) == (5000, 1)
        assert state.customer_rate_limited == 0
        clock.advance(100 / 5000)  # refilled by exactly one batch
        assert ingest(c, batch(100, "over")).status_code == 200
        assert fake.snapshot().events_accepted == 5100


@pytest.mark.parametrize("off", [0, 0.0, None])
def test_rate_limit_zero_or_none_turns_it_off(clock: Clock, off: float | None) -> None:
    with start(clock, rate_limit=off) as fake, client_for(fake) as c:
        statuses = [ingest(c, batch(100, f"b{k}")).status_code for k in range(80)]
        assert statuses == [200] * 80
        assert fake.snapshot(include_events=False).events_accepted == 8000
        assert fake.snapshot(include_events=False).rate_limited == 0


@pytest.mark.parametrize(
    ("cfg", "retry_after", "retry_after_ms"),
    [
        ({}, None, None),
        ({"retry_after": 3}, "3", None),
        ({"retry_after_ms": 250}, None, "250"),
        ({"retry_after": 0.5, "retry_after_ms": 500}, "0.5", "500"),
        ({"rate_limit_hint": True}, "1", "400"),  # 40 missing tokens at 100/s
        ({"rate_limit_hint": True, "retry_after": 9, "retry_after_ms": 9}, "1", "400"),
    ],
)
def test_retry_hints_only_when_configured(
    clock: Clock, cfg: dict[str, Any], retry_after: str | None, retry_after_ms: str | None
) -> None:
    with start(clock, rate_limit=100, **cfg) as fake, client_for(fake) as c:
        assert ingest(c, batch(60, "a")).status_code == 200
        refused = ingest(c, batch(80, "b"))
        assert refused.status_code == 429
        assert refused.headers["x-metronome-rate-limit-type"] == "client"
        assert refused.headers.get("retry-after") == retry_after
        assert refused.headers.get("retry-after-ms") == retry_after_ms
        assert fake.snapshot().events_accepted == 60


def test_a_refused_batch_is_not_ingested_and_costs_nothing(clock: Clock) -> None:
    with start(clock, rate_limit=100, rate_burst=100) as fake, client_for(fake) as c:
        assert ingest(c, batch(70, "a")).status_code == 200
        for _ in range(5):
            assert ingest(c, batch(31, "b")).status_code == 429
        assert ingest(c, batch(30, "c")).status_code == 200  # the 30 left were never charged
        assert accepted_ids(fake) == {f"a-{i}" for i in range(70)} | {f"c-{i}" for i in range(30)}
        assert fake.snapshot().rate_limited == 5


# --------------------------------------------------------------------------- per-customer limits


def test_a_hot_customer_is_refused_while_others_go_through(clock: Clock) -> None:
    cfg = {"customer_rate_limit": 10, "rate_limit": 1000}
    with start(clock, **cfg) as fake, client_for(fake) as c:
        assert ingest(c, batch(10, "hot", "hot")).status_code == 200  # its whole second
        refused = ingest(c, [event("hot-x", "hot"), *batch(5, "mixed", "cold")])
        assert refused.status_code == 429
        assert refused.headers["x-metronome-rate-limit-type"] == "customer"
        assert "retry-after" not in refused.headers
        assert "hot" in refused.json()["message"]
        assert ingest(c, batch(10, "cold", "cold")).status_code == 200  # cold's bucket is full
        ids = accepted_ids(fake)
        assert "hot-x" not in ids
        assert not any(i.startswith("mixed-") for i in ids)  # nothing of the batch is kept
        state = fake.snapshot(include_events=False)
        assert (state.customer_rate_limited, state.rate_limited) == (1, 0)
        assert state.events_accepted == 20
        with httpx.Client(base_url=fake.url) as anonymous:
            over_http = anonymous.get("/_fake/state?events=0").json()
        assert over_http["customer_rate_limited"] == 1
        assert state.to_json()["customer_rate_limited"] == 1
        clock.advance(0.1)  # one token for hot
        assert ingest(c, [event("hot-x", "hot")]).status_code == 200


def test_customer_refusal_takes_no_tokens_from_any_bucket(clock: Clock) -> None:
    cfg = {"customer_rate_limit": 10, "rate_limit": 20, "rate_burst": 20}
    with start(clock, **cfg) as fake, client_for(fake) as c:
        assert ingest(c, batch(10, "hot", "hot")).status_code == 200  # client bucket: 10 left
        for k in range(3):
            refused = ingest(c, [event(f"h{k}", "hot"), *batch(6, f"m{k}", "cold")])
            assert refused.headers["x-metronome-rate-limit-type"] == "customer"
        # had a refusal charged cold's or the client's bucket, this would not fit
        assert ingest(c, batch(10, "cold", "cold")).status_code == 200
        assert fake.snapshot(include_events=False).customer_rate_limited == 3


def test_customer_buckets_are_checked_before_the_client_bucket(clock: Clock) -> None:
    cfg = {"customer_rate_limit": 10, "rate_limit": 15, "rate_burst": 15}
    with start(clock, **cfg) as fake, client_for(fake) as c:
        assert ingest(c, batch(10, "hot", "hot")).status_code == 200
        both = ingest(c, [event("h", "hot"), *batch(9, "x", "cold")])  # over both limits
        assert both.headers["x-metronome-rate-limit-type"] == "customer"
        client = ingest(c, batch(9, "y", "cold"))  # cold has room, the account has 5
        assert client.status_code == 429
        assert client.headers["x-metronome-rate-limit-type"] == "client"
        assert ingest(c, batch(5, "z", "cold")).status_code == 200  # cold was not charged
        state = fake.snapshot(include_events=False)
        assert (state.customer_rate_limited, state.rate_limited) == (1, 1)


def test_customer_burst_defaults_to_one_seconds_worth(clock: Clock) -> None:
    with start(clock, customer_rate_limit=5) as fake, client_for(fake) as c:
        assert ingest(c, batch(5, "a")).status_code == 200
        assert ingest(c, batch(1, "b")).status_code == 429
        fake.configure(customer_rate_burst=20)  # buckets start full again
        assert ingest(c, batch(20, "c")).status_code == 200
        assert ingest(c, batch(1, "d")).status_code == 429


def test_customer_hint_is_the_wait_for_the_whole_batch(clock: Clock) -> None:
    cfg = {"customer_rate_limit": 10, "rate_limit": 10, "rate_limit_hint": True}
    with start(clock, **cfg) as fake, client_for(fake) as c:
        assert ingest(c, batch(10, "a", "hot")).status_code == 200
        refused = ingest(c, batch(5, "b", "hot") + batch(5, "c", "cold"))
        assert refused.headers["x-metronome-rate-limit-type"] == "customer"
        # hot needs 5 tokens (0.5 s), the account 10 (1 s): the batch fits after 1 s
        assert (refused.headers["retry-after"], refused.headers["retry-after-ms"]) == ("1", "1000")
        clock.advance(1.0)
        assert ingest(c, batch(5, "b", "hot") + batch(5, "c", "cold")).status_code == 200
        assert fake.snapshot().events_accepted == 20


def test_idle_customer_buckets_are_forgotten_but_hot_ones_kept(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faults, "CUSTOMER_BUCKETS_KEPT", 4)
    with start(clock, customer_rate_limit=1, rate_limit=0) as fake, client_for(fake) as c:
        assert ingest(c, batch(50, "hot", "hot")).status_code == 200  # 49 tokens in debt
        for k in range(10):
            assert ingest(c, [event(f"c{k}", f"cold-{k}")]).status_code == 200
            clock.advance(2.0)  # every cold bucket is full again
        assert len(fake._faults.customer_buckets) <= 8
        assert ingest(c, [event("hot-again", "hot")]).status_code == 429  # its debt is kept


# --------------------------------------------------------------------------- listening


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_taken_port_is_a_config_error(taken_port: int) -> None:
    fake = FakeMetronome(FakeConfig(), port=taken_port)
    with pytest.raises(FakeListenError, match=f"port {taken_port} on 127.0.0.1 is in use"):
        fake.start()
    assert isinstance(FakeListenError("x"), ConfigError)
    with pytest.raises(FakeListenError, match="between 0 and 65535"):
        FakeMetronome(port=70000)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "300", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, "-m", "segmetro", "fake-metronome", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_reports_a_taken_port_in_one_line(taken_port: int) -> None:
    result = run_cli("--port", str(taken_port))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert f"port {taken_port} on 127.0.0.1 is in use" in lines[0]


def test_cli_reports_a_bad_rate_limit_in_one_line() -> None:
    result = run_cli("--port", "0", "--rate-limit", "-1")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: --rate-limit must not be negative (0 turns it off)"
    ]


# --------------------------------------------------------------------------- answers never die


def nested_event(tid: str, depth: int) -> dict[str, Any]:
    """An event whose nesting depth (the event object counting 1) is ``depth``."""
    value: Any = "x"
    for _ in range(depth - 2):
        value = [value]
    return event(tid, properties={"deep": value})


def nested_body(depth: int) -> bytes:
    """``[ok, deep]`` as JSON text; no encoder writes a value this deep, so it is spliced in."""
    body = orjson.dumps([event("ok"), event("deep", properties={"deep": "HOLE"})])
    levels = depth - 2
    return body.replace(b'"HOLE"', b"[" * levels + b'"x"' + b"]" * levels)


@pytest.mark.parametrize("depth", [MAX_EVENT_DEPTH + 1, 300, 1000, 2000])
def test_deep_nesting_is_a_400_and_the_fake_keeps_answering(depth: int) -> None:
    with FakeMetronome(FakeConfig(now=NOW)) as fake, client_for(fake) as c:
        response = c.post("/v1/ingest", content=nested_body(depth))
        assert response.status_code == 400
        message = response.json()["message"]
        assert "index 1" in message or "not valid JSON" in message
        assert ingest(c, [event("after")]).status_code == 200
        state = c.get("/_fake/state")
        assert state.status_code == 200
        assert [e["transaction_id"] for e in state.json()["events"]] == ["after"]
        assert fake.snapshot().batches_rejected_400 == 1


def test_the_deepest_accepted_event_still_shows_in_state_and_search() -> None:
    deep = nested_event("deep", MAX_EVENT_DEPTH)
    with FakeMetronome(FakeConfig(now=NOW)) as fake, client_for(fake) as c:
        assert ingest(c, [deep]).status_code == 200
        assert c.get("/_fake/state").json()["events"] == [deep]
        [item] = c.post("/v1/events/search", json={"transactionIds": ["deep"]}).json()
        assert item["properties"] == deep["properties"]
        assert fake.snapshot().events == [deep]
        too_deep = ingest(c, [nested_event("deeper", MAX_EVENT_DEPTH + 1)])
        assert "nested too deeply" in too_deep.json()["message"]
        assert orjson.loads(orjson.dumps(fake.snapshot().to_json()))["events_accepted"] == 1


def test_a_failing_answer_is_a_json_500_and_the_fake_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeMetronome(FakeConfig(now=NOW)) as fake, client_for(fake) as c:

        def broken(*, include_events: bool = True) -> Any:
            raise RuntimeError("boom")

        monkeypatch.setattr(fake, "snapshot", broken)
        response = c.get("/_fake/state")
        assert response.status_code == 500
        assert "/_fake/state" in response.json()["message"]
        assert ingest(c, [event("after")]).status_code == 200
