"""Replay against rate limits a real Metronome account has (issue 9, design §4).

Each scenario starts a local fake Metronome with a limit, writes a Segment export, and runs the
real command line (``segmetro replay`` in a subprocess, start-up included) against it. The
figure is the *share of the allowed rate*: events the server accepted divided by what the limit
allowed in the same wall time (its bucket's burst plus limit * elapsed), after checking that
every event arrived exactly once and the command exited 0.

Peer, measured in the same run against an identical fresh fake: ``naive``, the sender a user
would write with Metronome's official SDK retry policy (sequential batches of 100, 0.5 s · 2^n
backoff capped at 8 s, honouring ``Retry-After``, and, unlike the SDK's 2 retries, retrying 429s
for ever so that it finishes at all).

    python benchmarks/replay_bench.py                       # the four scenarios of issue 9
    python benchmarks/replay_bench.py --scenario client-1000 --events 20000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from segmetro.fake_metronome import FakeConfig, FakeMetronome

TOKEN = "bench-token"
MAPPING = """\
version: 1
mappings:
  - name: usage
    trigger: type = "track"
    fields:
      transaction_id: $.messageId
      customer_id: $.context.groupId
      timestamp: $.timestamp
      event_type: $.event
      properties: $.properties
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    limit: float  # the binding limit, events/s
    customers: int
    events: int  # default export size: long enough that start-up is a small share
    fake: dict[str, object]
    target: float


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("client-5000", "5,000 ev/s account limit, 30 ms latency", 5000, 97, 100_000,
                 {"rate_limit": 5000.0, "latency_ms": 30.0}, 0.95),
        Scenario("hint-500", "500 ev/s, Retry-After: 1 on each 429", 500, 97, 20_000,
                 {"rate_limit": 500.0, "retry_after": 1.0, "latency_ms": 30.0}, 0.90),
        Scenario("client-1000", "1,000 ev/s, no hint", 1000, 97, 20_000,
                 {"rate_limit": 1000.0, "latency_ms": 30.0}, 0.90),
        Scenario("customer-300", "300 ev/s per customer, one-customer export", 300, 1, 20_000,
                 {"customer_rate_limit": 300.0, "latency_ms": 30.0}, 0.90),
    )
}  # fmt: skip


def write_export(path: Path, n: int, customers: int) -> None:
    stamp = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with path.open("wb") as out:
        for i in range(n):
            event = {
                "type": "track",
                "event": "api_call",
                "messageId": f"bench-{i:09d}",
                "timestamp": stamp,
                "context": {"groupId": f"cust-{i % customers}"},
                "properties": {"units": str(i % 13), "region": "eu-west-1"},
            }
            out.write(orjson.dumps(event) + b"\n")


def _burst(fake_options: dict[str, object], customers: int) -> float:
    """Events the server admits for free at the start (its full buckets)."""
    if "customer_rate_limit" in fake_options:
        limit = float(fake_options["customer_rate_limit"])  # type: ignore[arg-type]
        return limit * customers
    return float(fake_options.get("rate_burst") or fake_options["rate_limit"])  # type: ignore[arg-type]


def run_segmetro(
    fake: FakeMetronome, work: Path, export: Path
) -> tuple[float, int, dict[str, object]]:
    env = dict(os.environ, METRONOME_BEARER_TOKEN=TOKEN)
    state = work / "state.db"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "segmetro", "replay", "-m", str(work / "mapping.yaml"),
         str(export), "--api-url", fake.url, "--state", str(state), "--json", "-q"],
        env=env, capture_output=True, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    try:
        summary = json.loads(proc.stdout)
    except json.JSONDecodeError:
        summary = {"stderr": proc.stderr.decode(errors="replace")[-500:]}
    return elapsed, proc.returncode, summary


def run_naive(fake: FakeMetronome, export: Path) -> tuple[float, int, dict[str, object]]:
    """What a user script with the SDK's retry policy does (see the module doc)."""
    events = []
    for line in export.read_bytes().splitlines():
        e = orjson.loads(line)
        events.append({
            "transaction_id": e["messageId"], "customer_id": e["context"]["groupId"],
            "timestamp": e["timestamp"], "event_type": e["event"], "properties": e["properties"],
        })  # fmt: skip
    headers = {"Authorization": f"Bearer {TOKEN}"}
    retries = 0
    started = time.perf_counter()
    with httpx.Client(base_url=fake.url, headers=headers, timeout=60) as client:
        for start in range(0, len(events), 100):
            body = events[start : start + 100]
            attempt = 0
            while True:
                response = client.post("/v1/ingest", json=body)
                if response.status_code == 200:
                    break
                hint = response.headers.get("retry-after")
                time.sleep(float(hint) if hint else min(0.5 * 2**attempt, 8.0))
                attempt += 1
                retries += 1
    return time.perf_counter() - started, 0, {"retries": retries}


def measure(scenario: Scenario, n: int, work: Path, who: str) -> dict[str, object]:
    export = work / f"export-{scenario.customers}-{n}.jsonl"
    if not export.exists():
        write_export(export, n, scenario.customers)
    options: dict[str, object] = {"rate_limit": 0.0}
    options.update(scenario.fake)
    with FakeMetronome(FakeConfig(token=TOKEN, **options)) as fake:  # type: ignore[arg-type]
        if who == "segmetro":
            (work / "state.db").unlink(missing_ok=True)
            elapsed, code, summary = run_segmetro(fake, work, export)
        else:
            elapsed, code, summary = run_naive(fake, export)
        state = fake.snapshot(include_events=True)
    ids = [e["transaction_id"] for e in state.events]
    once = len(ids) == len(set(ids)) == n
    allowed = _burst(scenario.fake, scenario.customers) + scenario.limit * elapsed
    share = min(state.events_accepted, allowed) / allowed
    return {
        "who": who,
        "elapsed_s": round(elapsed, 2),
        "accepted": state.events_accepted,
        "every_event_once": once,
        "exit_code": code,
        "share_of_allowed": round(share, 3),
        "server_429s": state.rate_limited + getattr(state, "customer_rate_limited", 0),
        "summary": {k: summary.get(k) for k in ("sent", "retries", "rate_limited", "error")}
        if isinstance(summary, dict)
        else summary,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--events", type=int, help="events per scenario (default: its own)")
    parser.add_argument("--no-peer", action="store_true", help="skip the naive sender")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    results = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="segmetro-replay-bench-") as tmp:
        work = Path(tmp)
        (work / "mapping.yaml").write_text(MAPPING)
        for name in names:
            scenario = SCENARIOS[name]
            n = args.events or scenario.events
            ours = measure(scenario, n, work, "segmetro")
            row: dict[str, object] = {"scenario": name, "what": scenario.what, "events": n,
                                      "target": scenario.target, "segmetro": ours}  # fmt: skip
            passed = (
                ours["exit_code"] == 0
                and ours["every_event_once"]
                and float(ours["share_of_allowed"]) >= scenario.target  # type: ignore[arg-type]
            )
            ok = ok and passed
            line = (
                f"{name:13} {scenario.what:45} segmetro {ours['share_of_allowed']:.3f} "
                f"({ours['elapsed_s']} s, exit {ours['exit_code']}, "
                f"once {ours['every_event_once']}, 429s {ours['server_429s']})"
            )
            if not args.no_peer:
                peer = measure(scenario, n, work, "naive")
                row["naive"] = peer
                theirs = max(float(peer["share_of_allowed"]), 1e-9)  # type: ignore[arg-type]
                ratio = float(ours["share_of_allowed"]) / theirs  # type: ignore[arg-type]
                row["segmetro_vs_naive"] = round(ratio, 2)
                line += f" | naive {peer['share_of_allowed']:.3f} ({peer['elapsed_s']} s)"
                line += f" -> {ratio:.2f}x"
            print(line + ("" if passed else "  BELOW TARGET"), flush=True)
            results.append(row)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
