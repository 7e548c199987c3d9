"""The fake's idea of a valid request: the packaged OpenAPI, checked by a JSON Schema library."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from segmetro.fake_metronome import schema
from segmetro.fake_metronome.schema import (
    INGEST_PATH,
    SEARCH_PATH,
    SchemaError,
    ingest_problem,
    openapi_schema,
    response_validator,
    search_problem,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


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


def without(name: str) -> dict[str, Any]:
    return {k: v for k, v in event().items() if k != name}


@pytest.fixture
def doctored_spec(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A copy of the packaged spec the test edits; the validators are compiled from it."""
    spec = openapi_schema()
    monkeypatch.setattr(schema, "_schema_bytes", lambda: orjson.dumps(spec))
    schema._validator.cache_clear()
    yield spec
    schema._validator.cache_clear()


def test_the_limits_are_the_packaged_specs(doctored_spec: dict[str, Any]) -> None:
    """Batch size, lengths and required fields follow the spec, ``$ref``s resolved for us."""
    body = doctored_spec["paths"][INGEST_PATH]["post"]["requestBody"]["content"]
    body["application/json"]["schema"]["maxItems"] = 3
    event_schema = doctored_spec["components"]["schemas"]["Event"]
    event_schema["properties"]["transaction_id"]["maxLength"] = 5
    event_schema["required"].append("properties")
    assert ingest_problem([event("a"), event("b"), event("c")], NOW) is None
    assert ingest_problem([event(str(i)) for i in range(4)], NOW) == (
        "request body must contain at most 3 events, got 4"
    )
    assert ingest_problem([event("123456")], NOW) == (
        "invalid event at index 0: 'transaction_id' must be at most 5 characters long (got 6)"
    )
    assert ingest_problem([without("properties")], NOW) == (
        "invalid event at index 0: missing required field 'properties'"
    )


INGEST_MESSAGES: list[tuple[Any, str]] = [
    ({"events": []}, "request body must be a JSON array of events, got object"),
    ("events", "request body must be a JSON array of events, got string"),
    ([], "request body must contain at least 1 event(s), got 0"),
    ([event(str(i)) for i in range(101)], "request body must contain at most 100 events, got 101"),
    ([event(), 7], "invalid event at index 1: must be an object, got number"),
    ([without("customer_id")], "invalid event at index 0: missing required field 'customer_id'"),
    (
        [event(transaction_id="")],
        "invalid event at index 0: 'transaction_id' must be at least 1 character(s) long",
    ),
    (
        [event("x" * 129)],
        "invalid event at index 0: 'transaction_id' must be at most 128 characters long (got 129)",
    ),
    (
        [event(customer_id=None)],
        "invalid event at index 0: 'customer_id' must be a string, got null",
    ),
    (
        [event(event_type=True)],
        "invalid event at index 0: 'event_type' must be a string, got boolean",
    ),
    (
        [event(properties=["a"])],
        "invalid event at index 0: 'properties' must be an object, got array",
    ),
    (
        [event(timestamp="2025-03-01 11:00:00Z")],
        "invalid event at index 0: 'timestamp' '2025-03-01 11:00:00Z' is not an RFC 3339 "
        "date-time with a 4-digit year and a Z or offset",
    ),
    (
        [event(timestamp="2025-01-01T00:00:00Z")],
        "invalid event at index 0: 'timestamp' '2025-01-01T00:00:00Z' is more than 34 days in "
        "the past",
    ),
    (
        [event(timestamp="2025-03-02T12:00:00.001Z")],
        "invalid event at index 0: 'timestamp' '2025-03-02T12:00:00.001Z' is more than 24 hours "
        "in the future",
    ),
]


@pytest.mark.parametrize(("body", "expected"), INGEST_MESSAGES)
def test_ingest_messages(body: Any, expected: str) -> None:
    """Each kind of problem has one Metronome-style message naming the index and the field."""
    assert ingest_problem(body, NOW) == expected


@pytest.mark.parametrize(
    ("body", "index"),
    [
        ([event("a", timestamp="2020-01-01T00:00:00Z"), without("customer_id")], 0),
        ([without("customer_id"), event("a", timestamp="2020-01-01T00:00:00Z")], 0),
        ([event("a"), event("b", timestamp="bad"), event("c", customer_id=1)], 1),
    ],
)
def test_the_first_problem_in_event_order_wins(body: list[Any], index: int) -> None:
    """A schema error and a timestamp error: the earlier event is the one reported."""
    problem = ingest_problem(body, NOW)
    assert problem is not None
    assert problem.startswith(f"invalid event at index {index}: ")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (["a"], "request body must be a JSON object, got array"),
        ({}, "missing required field 'transactionIds'"),
        ({"transactionIds": "a"}, "'transactionIds' must be an array, got string"),
        (
            {"transactionIds": ["a", 1]},
            "'transactionIds' item at index 1 must be a string, got number",
        ),
        ({"transactionIds": []}, None),
    ],
)
def test_search_messages(body: Any, expected: str | None) -> None:
    """The search body is checked against the spec's request schema too."""
    assert search_problem(body) == expected


def test_the_response_schema_catches_a_bad_answer() -> None:
    """``check_shape`` in the HTTP tests cannot pass vacuously: a wrong answer is caught."""
    item = {
        "id": "i",
        "transaction_id": "t",
        "customer_id": "c",
        "event_type": "e",
        "timestamp": "2025-03-01T11:00:00Z",
        "matched_billable_metrics": [{"id": "m", "name": "n", "aggregation_type": "BOGUS"}],
    }
    check = response_validator(SEARCH_PATH)
    error = check([item])
    assert error == SchemaError(
        (0, "matched_billable_metrics", 0, "aggregation_type"),
        "enum",
        openapi_schema()["components"]["schemas"]["AggregationTypeForEventsSearch"]["enum"],
        "BOGUS",
    )
    del item["id"]
    missing = check([item])
    assert missing is not None
    assert (missing.path, missing.rule) == ((0,), "required")
    item["id"] = "i"
    item["matched_billable_metrics"] = []
    assert check([item]) is None


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout


def test_the_fake_imports_nothing_of_what_it_tests() -> None:
    """A running fake loads no segmetro module but its own and the error tree."""
    loaded = run_python(
        "import sys\n"
        "from segmetro.fake_metronome import FakeMetronome\n"
        "with FakeMetronome():\n"
        "    pass\n"
        "print(' '.join(m for m in sys.modules if m.startswith('segmetro')))\n"
    ).split()
    others = [m for m in loaded if not m.startswith("segmetro.fake_metronome")]
    assert sorted(others) == ["segmetro", "segmetro.errors"]


def test_the_schema_library_loads_only_when_a_fake_starts() -> None:
    """``segmetro --help`` and importing the fake stay free of the JSON Schema library."""
    out = run_python(
        "import sys\n"
        "import segmetro.cli\n"
        "import segmetro.fake_metronome\n"
        "print('fastjsonschema' in sys.modules)\n"
        "from segmetro.fake_metronome import FakeMetronome\n"
        "with FakeMetronome():\n"
        "    print('fastjsonschema' in sys.modules)\n"
    )
    assert out.split() == ["False", "True"]
