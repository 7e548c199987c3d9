"""A local stand-in for Metronome's ingest and search endpoints, with fault injection.

Tests drive it over real HTTP; users rehearse a backfill against it (``segmetro fake-metronome``).
It owns its own idea of what Metronome accepts and shares no validation code with the segmetro
code it tests, so a mistake in segmetro's mapping or window rules shows up as a 400 here:

* ``schema``: request bodies validated by ``fastjsonschema`` against the packaged OpenAPI
  (``openapi-usage.json``), plus the checks a schema cannot express (RFC 3339, the 34-day /
  24-hour window around the server clock, nesting depth).
* ``faults``: latency, seeded fault draws (429, 5xx, partial ingests, dropped connections) and
  the token buckets: Metronome's documented 5,000 events/s account limit by default, an
  optional one per ``customer_id`` and one for search.
* ``app``: routing, auth, ingest with deduplication by ``transaction_id``, search, state.
* ``server``: the threaded HTTP server, ``FakeMetronome`` (start/stop) and ``serve`` for the CLI.
* ``config``: ``FakeConfig`` and its errors.
* ``account``: ``--account``: customers, ingest aliases and billable metrics, listed in cursor
  pages, matched in search and drafted into invoices by ``previewEvents``, by its own reading
  of Metronome's rules (no code shared with ``segmetro.billing``).

Everything callers need is importable from here.
"""

from __future__ import annotations

from segmetro.fake_metronome.account import FakeAccount, load_account
from segmetro.fake_metronome.app import FakeApp, FakeState
from segmetro.fake_metronome.config import (
    DEFAULT_RATE_LIMIT,
    FakeConfig,
    FakeConfigError,
    FakeListenError,
)
from segmetro.fake_metronome.schema import (
    FUTURE_WINDOW,
    MAX_EVENT_DEPTH,
    PAST_WINDOW,
    openapi_schema,
    parse_rfc3339,
)
from segmetro.fake_metronome.server import MAX_BODY_BYTES, FakeMetronome, serve

__all__ = [
    "DEFAULT_RATE_LIMIT",
    "FUTURE_WINDOW",
    "MAX_BODY_BYTES",
    "MAX_EVENT_DEPTH",
    "PAST_WINDOW",
    "FakeAccount",
    "FakeApp",
    "FakeConfig",
    "FakeConfigError",
    "FakeListenError",
    "FakeMetronome",
    "FakeState",
    "load_account",
    "openapi_schema",
    "parse_rfc3339",
    "serve",
]
