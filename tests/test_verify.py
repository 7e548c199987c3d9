"""`segmetro verify` against the fake Metronome's /v1/events/search."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from typer.testing import CliRunner

from segmetro.cli import app
from segmetro.fake_metronome import FakeMetronome
from tests.exports import messages, write_jsonl
from tests.support import SAMPLES, SAMPLES_NOW, SAMPLES_NOW_DT, TOKEN, summary_json

MAPPING = str(SAMPLES / "mapping.yaml")


def export(tmp_path: Path, n: int = 60) -> Path:
    return write_jsonl(
        tmp_path / "e.jsonl",
        list(messages(n, start=SAMPLES_NOW_DT - timedelta(days=4), seed=21)),
    )


def mapped(runner: CliRunner, src: Path) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["map", "-m", MAPPING, "--now", SAMPLES_NOW, str(src)])
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def replay(runner: CliRunner, server: FakeMetronome, src: Path, state: Path) -> None:
    result = runner.invoke(
        app,
        [
            "replay", "-m", MAPPING, "--now", SAMPLES_NOW, "--api-url", server.url, "-q",
            "--state", str(state), str(src),
        ],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def verify(runner: CliRunner, server: FakeMetronome, state: Path, *args: str) -> Any:
    return runner.invoke(
        app,
        ["verify", "--state", str(state), "--api-url", server.url, "--now", SAMPLES_NOW, *args],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )


def test_verify_finds_every_delivered_event_then_reports_missing_ones(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    src = export(tmp_path)
    expected = mapped(runner, src)
    server = fake_metronome()
    state = tmp_path / "state.db"
    replay(runner, server, src, state)

    ok = verify(runner, server, state, "--sample", "1000", "--json")
    assert ok.exit_code == 0, ok.output
    report = summary_json(ok.stdout)
    assert report["sampled"] == report["found"] == len(expected)
    for key in ("missing", "duplicated", "no_customer", "no_billable_metric", "different"):
        assert (report[key], report["transaction_ids"][key]) == (0, []), key
    assert server.snapshot(include_events=False).search_requests == -(-len(expected) // 25)

    text = verify(runner, server, state, "--sample", "10")
    assert text.exit_code == 0
    lines = text.stderr.splitlines()
    assert lines[0] == (
        "Billing: 10 of 10 found events bill, 0 bill nothing (0 unknown_customer, 0 no_metric)"
    )
    assert (
        "sampled 10, found 10, missing 0, duplicated 0, no_customer 0, no_billable_metric 0, "
        "different 0"
    ) in lines

    # Metronome lost everything (here: the fake forgot it): every sampled event is missing.
    server.reset()
    lost = verify(runner, server, state, "--sample", "1000", "--json")
    assert lost.exit_code == 1
    report = summary_json(lost.stdout)
    assert report["found"] == 0
    assert sorted(report["transaction_ids"]["missing"]) == sorted(
        e["transaction_id"] for e in expected
    )
    assert report["missing"] == len(expected)
    text = verify(runner, server, state, "--sample", "5")
    assert text.exit_code == 1
    assert "found 5" not in text.stderr
    assert "sampled 5, found 0, missing 5," in text.stderr
    assert text.stderr.splitlines()[0].startswith("  missing: ")


def test_verify_reports_unknown_customers_non_billable_and_different_events(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    src = export(tmp_path)
    expected = mapped(runner, src)
    known = {"cust_1", "cust_2", "cust_3"}
    server = fake_metronome(
        known_customers=frozenset(known), billable_event_types=frozenset({"API Call"})
    )
    # Another tool already sent one transaction_id with other properties: Metronome keeps
    # that one and ignores ours, which the ledger nevertheless records as delivered.
    first = dict(expected[0], properties={"n": -1})
    reply = httpx.post(
        server.url + "/v1/ingest",
        json=[first],
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert reply.status_code == 200
    state = tmp_path / "state.db"
    replay(runner, server, src, state)

    result = verify(runner, server, state, "--sample", "1000", "--json")
    assert result.exit_code == 1, result.output  # nothing missing, but some would bill nothing
    report = summary_json(result.stdout)
    ids = report["transaction_ids"]
    assert sorted(ids["no_customer"]) == sorted(
        e["transaction_id"] for e in expected if e["customer_id"] not in known
    )
    assert sorted(ids["no_billable_metric"]) == sorted(
        e["transaction_id"] for e in expected if e["event_type"] != "API Call"
    )
    assert ids["different"] == [expected[0]["transaction_id"]]
    assert (ids["missing"], report["missing"]) == ([], 0)
    assert 0 < report["no_customer"] == len(ids["no_customer"]) < len(expected)
    assert 0 < report["no_billable_metric"] == len(ids["no_billable_metric"]) < len(expected)


def test_verify_only_samples_the_last_34_days(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """Search cannot see older events, so they are not sampled (nor reported missing)."""
    src = export(tmp_path, 20)
    server = fake_metronome()
    state = tmp_path / "state.db"
    replay(runner, server, src, state)
    later = (SAMPLES_NOW_DT + timedelta(days=40)).isoformat().replace("+00:00", "Z")
    result = runner.invoke(
        app,
        ["verify", "--state", str(state), "--api-url", server.url, "--now", later, "--json"],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )
    assert result.exit_code == 1, result.output  # nothing checked is no comfort
    report = summary_json(result.stdout)
    assert report["sampled"] == 0
    assert "nothing could be checked" in report["nothing_checked"]
    assert "last 34 days" in report["nothing_checked"]
    assert server.snapshot(include_events=False).search_requests == 0
    text = runner.invoke(
        app,
        ["verify", "--state", str(state), "--api-url", server.url, "--now", later],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )
    assert text.exit_code == 1
    assert "warning: verified nothing: the ledger of this destination holds no" in text.stderr
    assert "sampled 0, found 0," in text.stderr


def test_verify_needs_a_token_and_an_existing_state(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    server = fake_metronome()
    missing = runner.invoke(
        app,
        ["verify", "--state", str(tmp_path / "nope.db"), "--api-url", server.url],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )
    assert missing.exit_code == 2
    assert "does not exist" in missing.stderr
    assert not (tmp_path / "nope.db").exists()
    # the state is checked first: without a state there is nothing a token could help with
    no_token = runner.invoke(app, ["verify", "--state", str(tmp_path / "nope.db")])
    assert no_token.exit_code == 2
    assert "does not exist" in no_token.stderr
    state = tmp_path / "state.db"
    replay(runner, server, export(tmp_path, 5), state)
    no_token = runner.invoke(app, ["verify", "--state", str(state)])
    assert no_token.exit_code == 2
    assert "METRONOME_BEARER_TOKEN is not set" in no_token.stderr
