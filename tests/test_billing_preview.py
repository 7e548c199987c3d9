"""The README's billing-preview walkthrough, end to end through the CLI.

A broken mapping (``cpu_seconds`` renamed) is caught by ``--billing``, offline from the saved
API answers and online against ``fake-metronome --account``; the fixed mapping passes, and the
usage totals equal a hand computation over the sample export. ``verify`` then says the same
of what was really sent.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from segmetro.cli import app
from segmetro.fake_metronome import FakeMetronome, load_account
from tests.support import ROOT, SAMPLES, SAMPLES_NOW, TOKEN

INPUTS = ["samples/events/2026-11-24.jsonl.gz", "samples/events/2026-11-25.ndjson.gz"]
OFFLINE = [
    "--billable-metrics",
    "samples/billing/billable-metrics.json",
    "--customers",
    "samples/billing/customers.json",
]
BROKEN = "samples/mapping-broken.yaml"
FIXED = "samples/mapping.yaml"


@pytest.fixture(autouse=True)
def _at_the_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The walkthrough's paths are the README's, relative to the repository."""
    monkeypatch.chdir(ROOT)


def dry_run(mapping: str, *extra: str) -> list[str]:
    return [
        "replay",
        "--dry-run",
        "--billing",
        *OFFLINE,
        "-m",
        mapping,
        *INPUTS,
        "--now",
        "2026-11-26",
        *extra,
    ]


def run(runner: CliRunner, args: list[str], tmp_path: Path, **env: str) -> Any:
    return runner.invoke(app, [*args, "--state", str(tmp_path / "none.db")], env=env)


def hand_usage() -> dict[str, Any]:
    """The sample's billable events counted by hand: what the fixed mapping should bill."""
    seen: set[str] = set()
    calls: dict[str, int] = {}
    cpu: dict[str, Decimal] = {}
    latency = jobs = 0
    endpoints: set[str] = set()
    for name in INPUTS:
        for line in gzip.decompress((ROOT / name).read_bytes()).splitlines():
            msg = orjson.loads(line)
            group = msg.get("context", {}).get("groupId")
            if msg.get("type") != "track" or group is None or msg["messageId"] in seen:
                continue
            seen.add(msg["messageId"])
            props = msg["properties"]
            if msg["event"] == "API Call":
                calls[group] = calls.get(group, 0) + 1
                latency = max(latency, props["latency_ms"])
                endpoints.add(props["endpoint"])
            elif msg["event"] == "Job Completed":
                cpu[group] = cpu.get(group, Decimal(0)) + Decimal(repr(props["cpu_seconds"]))
                jobs += 1
    return {
        "calls": sum(calls.values()),
        "calls_by_customer": calls,
        "cpu": sum(cpu.values(), Decimal(0)),
        "cpu_by_customer": cpu,
        "latency": latency,
        "endpoints": len(endpoints),
        "jobs": jobs,
    }


def usage_of(billing: dict[str, Any], metric: str) -> dict[str, Any]:
    return next(u for u in billing["usage"] if u["metric"] == metric)


def test_the_walkthrough_commands_are_the_readme_s() -> None:
    readme = (ROOT / "README.md").read_text()
    for mapping in (BROKEN, FIXED):
        assert "segmetro " + " ".join(dry_run(mapping)) in readme


def test_the_broken_mapping_is_caught_offline(runner: CliRunner, tmp_path: Path) -> None:
    text = run(runner, dry_run(BROKEN), tmp_path)
    assert text.exit_code == 1, text.output
    assert 'nearest "CPU seconds": cpu_seconds missing' in text.stderr
    assert "CPU seconds [SUM(cpu_seconds)]: 0 from 0 events (no event reaches it)" in text.stderr
    result = run(runner, [*dry_run(BROKEN), "--json"], tmp_path)
    assert result.exit_code == 1
    billing = orjson.loads(result.stdout)["billing"]
    jobs = sum(
        n
        for day in orjson.loads(result.stdout)["sent_by_day"].values()
        for t, n in day.items()
        if t == "Job Completed"
    )
    assert jobs > 0
    assert billing["bill_nothing_by_cause"] == {
        "no_metric": jobs,
        "unknown_customer": 0,
        "aggregation_key": 0,
    }
    (loss,) = billing["losses"]
    assert (loss["cause"], loss["event_type"], loss["metric"]) == (
        "no_metric",
        "Job Completed",
        "CPU seconds",
    )
    assert loss["example"]["source"].startswith("samples/events/2026-11-2")
    assert billing["not_previewed_sql"] == ["Seats (SQL)"]


def test_the_fixed_mapping_passes_and_bills_the_hand_computed_usage(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = run(runner, [*dry_run(FIXED), "--json"], tmp_path)
    assert result.exit_code == 0, result.output
    billing = orjson.loads(result.stdout)["billing"]
    hand = hand_usage()
    assert billing["bill_nothing"] == 0
    assert billing["billed"] == billing["events"] == hand["calls"] + hand["jobs"]
    calls = usage_of(billing, "API calls")
    assert calls["total"] == hand["calls"]
    names = {
        "acme-corp": "Acme Corp",
        "globex": "Globex",
        "initech": "Initech",
        "umbrella": "Umbrella",
        "hooli": "Hooli",
    }
    assert calls["by_customer"] == {names[g]: n for g, n in hand["calls_by_customer"].items()}
    cpu = usage_of(billing, "CPU seconds")
    assert Decimal(repr(cpu["total"])) == hand["cpu"]
    for group, total in hand["cpu_by_customer"].items():
        assert Decimal(repr(cpu["by_customer"][names[group]])) == total
    assert cpu["events"] == hand["jobs"]
    assert usage_of(billing, "Peak latency (ms)")["total"] == hand["latency"]
    assert usage_of(billing, "Endpoints used")["total"] == hand["endpoints"]


def test_online_against_the_fake_account_says_the_same(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    server = fake_metronome(account=load_account(SAMPLES / "account.json"))
    offline = orjson.loads(run(runner, [*dry_run(BROKEN), "--json"], tmp_path).stdout)
    args = [a for a in dry_run(BROKEN) if a not in OFFLINE]
    result = run(
        runner, [*args, "--json", "--api-url", server.url], tmp_path, METRONOME_BEARER_TOKEN=TOKEN
    )
    assert result.exit_code == 1, result.output
    online = orjson.loads(result.stdout)
    assert online["billing"]["sources"]["customers"] == f"GET {server.url}/v1/customers"
    for report in (online, offline):
        del report["billing"]["sources"]
    assert online["billing"] == offline["billing"]
    assert TOKEN not in result.output


def test_map_billing_and_options_that_need_a_dry_run(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    mapped = runner.invoke(
        app,
        [
            "map",
            "--billing",
            *OFFLINE,
            "-m",
            BROKEN,
            *INPUTS,
            "--now",
            "2026-11-26",
            "-o",
            str(out),
            "-q",
        ],
    )
    assert mapped.exit_code == 1, mapped.output
    assert "would bill nothing: " in mapped.stderr
    assert out.read_bytes().count(b"\n") > 0
    fixed = runner.invoke(
        app, ["map", *OFFLINE, "-m", FIXED, *INPUTS, "--now", "2026-11-26", "-o", str(out), "-q"]
    )
    assert fixed.exit_code == 0, fixed.output
    assert "0 bill nothing" in fixed.stderr
    sent = runner.invoke(
        app, ["replay", "--billing", "-m", FIXED, *INPUTS], env={"METRONOME_BEARER_TOKEN": TOKEN}
    )
    assert sent.exit_code == 2
    assert "need --dry-run" in sent.stderr
    missing = runner.invoke(app, ["map", "--billing", "-m", FIXED, *INPUTS, "-o", str(out)])
    assert missing.exit_code == 2
    assert "METRONOME_BEARER_TOKEN is not set" in missing.stderr


def test_verify_reports_what_sampled_events_bill(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    server = fake_metronome(account=load_account(SAMPLES / "account.json"))
    state = tmp_path / "state.db"
    env = {"METRONOME_BEARER_TOKEN": TOKEN}
    sent = runner.invoke(
        app,
        [
            "replay",
            "-m",
            BROKEN,
            *INPUTS,
            "--now",
            SAMPLES_NOW,
            "-q",
            "--api-url",
            server.url,
            "--state",
            str(state),
        ],
        env=env,
    )
    assert sent.exit_code == 0, sent.output
    result = runner.invoke(
        app,
        [
            "verify",
            "--state",
            str(state),
            "--api-url",
            server.url,
            "--now",
            SAMPLES_NOW,
            "--sample",
            "1000",
            "--json",
        ],
        env=env,
    )
    assert result.exit_code == 1, result.output
    report = orjson.loads(result.stdout)
    billing = report["billing"]
    jobs = sum(1 for e in server.snapshot().events if e["event_type"] == "Job Completed")
    assert billing["bill_nothing_by_cause"] == {"unknown_customer": 0, "no_metric": jobs}
    assert billing["billed"] == report["found"] - jobs
    assert billing["events_by_metric"]["API calls"] == billing["billed"]
    assert "CPU seconds" not in billing["events_by_metric"]


def test_invoice_preview_drafts_the_largest_customers_and_ingests_nothing(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    server = fake_metronome(account=load_account(SAMPLES / "account.json"))
    args = [a for a in dry_run(FIXED) if a not in OFFLINE]
    result = run(
        runner,
        [*args, "--invoice-preview", "2", "--json", "--api-url", server.url],
        tmp_path,
        METRONOME_BEARER_TOKEN=TOKEN,
    )
    assert result.exit_code == 0, result.output
    billing = orjson.loads(result.stdout)["billing"]
    drafts = billing["invoice_preview"]
    counts = billing["events_by_customer"]
    assert [d["customer"] for d in drafts] == sorted(counts, key=lambda c: (-counts[c], c))[:2]
    cpu = usage_of(billing, "CPU seconds")["by_customer"]
    for draft in drafts:
        assert draft["events_sent"] == draft["events"] == counts[draft["customer"]]
        (invoice,) = draft["invoices"]
        lines = {line["name"]: line for line in invoice["line_items"]}
        assert lines["CPU seconds"]["quantity"] == cpu[draft["customer"]]
        assert lines["CPU seconds"]["total"] == cpu[draft["customer"]] * 0.5
        assert invoice["total"] == sum(line["total"] for line in invoice["line_items"])
    assert server.snapshot(include_events=False).events_accepted == 0
    text = run(
        runner,
        [*args, "--invoice-preview", "1", "--api-url", server.url],
        tmp_path,
        METRONOME_BEARER_TOKEN=TOKEN,
    )
    assert f"draft invoice of {drafts[0]['customer']} from the first" in text.stderr


def test_only_new_events_are_previewed(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    server = fake_metronome(account=load_account(SAMPLES / "account.json"))
    state = tmp_path / "state.db"
    env = {"METRONOME_BEARER_TOKEN": TOKEN}
    sent = runner.invoke(
        app,
        [
            "replay",
            "-m",
            FIXED,
            INPUTS[0],
            "--now",
            SAMPLES_NOW,
            "-q",
            "--api-url",
            server.url,
            "--state",
            str(state),
        ],
        env=env,
    )
    assert sent.exit_code == 0, sent.output
    result = runner.invoke(
        app, [*dry_run(FIXED), "--api-url", server.url, "--state", str(state), "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    plan = orjson.loads(result.stdout)
    assert plan["inputs_skipped"] == 1, "the sent input is done: a replay skips it"
    assert plan["billing"]["events"] == plan["new"] > 0
    assert sum(sum(day.values()) for day in plan["sent_by_day"].values()) == plan["new"]
    reread = runner.invoke(
        app,
        [
            *dry_run(FIXED),
            "--api-url",
            server.url,
            "--state",
            str(state),
            "--resend-changed",
            "--json",
        ],
        env=env,
    )
    assert reread.exit_code == 0, reread.output
    again = orjson.loads(reread.stdout)
    assert again["unchanged"] > 0, "every input read again: the sent ones are unchanged"
    assert again["billing"]["events"] == again["new"] == plan["new"]
