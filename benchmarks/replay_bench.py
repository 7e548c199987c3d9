"""Replay throughput against a rate-limited fake Metronome (design §8: ≥ 95 % of the limit).

Generates N valid events, sends them with ``segmetro.delivery.deliver`` (no client-side rate
cap) to a local ``FakeMetronome`` with a token-bucket rate limit and latency, and prints the
achieved events/s, its ratio to the limit, the number of 429s and the elapsed time. The ratio is
computed from the server's own acceptance count, after checking that nothing was lost.

    python benchmarks/replay_bench.py --events 50000 --limit 5000 --latency-ms 30
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

from segmetro.delivery import DeliveryStats, Outbound, SenderConfig, deliver
from segmetro.fake_metronome import FakeConfig, FakeMetronome

TOKEN = "bench-token"


class _Hooks:
    def __init__(self) -> None:
        self.delivered_count = 0
        self.failures: list[tuple[str, str]] = []

    def delivered(self, items: Sequence[Outbound]) -> None:
        self.delivered_count += len(items)

    def failed(self, item: Outbound, reason: str, detail: str) -> None:
        self.failures.append((reason, detail))


def events(n: int) -> Iterator[Outbound]:
    stamp = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    for i in range(n):
        yield Outbound(
            {
                "transaction_id": f"bench-{i:09d}",
                "customer_id": f"cust-{i % 97}",
                "event_type": "api_call",
                "timestamp": stamp,
                "properties": {"units": str(i % 13), "region": "eu-west-1"},
            }
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="events to send")
    parser.add_argument("--limit", type=float, default=5_000.0, help="server limit, events/s")
    parser.add_argument(
        "--burst", type=float, default=500.0, help="server bucket size in events (default 500)"
    )
    parser.add_argument("--latency-ms", type=float, default=30.0, help="server latency")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)

    fake_config = FakeConfig(
        token=TOKEN,
        rate_limit=args.limit,
        rate_burst=args.burst,
        latency_ms=args.latency_ms,
    )
    hooks = _Hooks()
    stats = DeliveryStats()
    with FakeMetronome(fake_config) as fake:
        config = SenderConfig(
            api_url=fake.url,
            token=TOKEN,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
        )
        started = time.perf_counter()
        asyncio.run(deliver(events(args.events), config=config, hooks=hooks, stats=stats))
        elapsed = time.perf_counter() - started
        state = fake.snapshot(include_events=False)

    lost = args.events - state.events_accepted
    # The bucket starts full: its burst is free, so only the rest is paced by the limit.
    paced = max(state.events_accepted - args.burst, 1.0)
    rate = paced / elapsed
    ratio = rate / args.limit
    print(f"events sent        {args.events}")
    print(f"accepted by server {state.events_accepted} (lost {lost}, failed {len(hooks.failures)})")
    print(f"elapsed            {elapsed:.2f} s")
    print(f"achieved           {rate:,.0f} events/s (first {args.burst:.0f} = burst, excluded)")
    print(f"limit              {args.limit:,.0f} events/s")
    print(f"ratio              {ratio:.3f}")
    print(f"429s               {state.rate_limited} (client saw {stats.rate_limited})")
    print(f"requests           {stats.requests} for {stats.batches} batches")
    print(f"final concurrency  {stats.concurrency}")
    ok = lost == 0 and not hooks.failures and hooks.delivered_count == args.events
    return 0 if ok and ratio >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
