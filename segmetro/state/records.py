"""What the state holds, whatever stores it: checkpoints, ledger entries, runs, destinations.

Timestamps are stored and returned as RFC 3339 UTC strings with milliseconds (the same normal
form as payload timestamps), so they compare correctly as text.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from segmetro.dedup import canonical_bytes, digest_canonical
from segmetro.errors import ConfigError
from segmetro.models import format_timestamp

format_time = format_timestamp

#: Where rows of an older file go when no replay run recorded its ``--api-url``.
DEFAULT_API_URL = "https://api.metronome.com"

#: Shown instead of a field diff for a ledger entry from schema v1, which kept no payload.
UNRECORDED_PAYLOAD = (
    "(the payload sent then was not recorded by this older state file; only its digest differs)"
)

#: Host parameters per ``IN (...)`` query: below SQLite's historical limit of 999.
_IN_CHUNK = 500

#: Option names never written to the runs table, whatever the caller passes.
_SECRET_WORDS = ("token", "secret", "password", "authorization", "credential", "api_key")


def normalize_api_url(url: str) -> str:
    """The identity of an API base URL, so that spellings of one URL are one destination.

    Scheme, lower-case host, port (unless the scheme's default) and path without a trailing
    slash. User info, query and fragment are dropped: credentials in a URL never reach the file.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"API URL {url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        raise ConfigError(f"API URL must start with http:// or https://, got {url!r}")
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


def _now() -> str:
    return format_time(datetime.now(UTC))


def new_run_id() -> str:
    """Sortable by start time, unique enough for concurrent starts on many hosts."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _scrub(options: Mapping[str, Any]) -> dict[str, Any]:
    """Drop anything that looks like a credential, recursively: tokens never reach the file."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if any(word in str(key).lower() for word in _SECRET_WORDS):
            continue
        out[str(key)] = _scrub(value) if isinstance(value, Mapping) else value
    return out


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far one source object is done: every event of lines ≤ ``line`` is resolved."""

    source: str
    identity: str
    line: int
    done: bool = False
    updated_at: str | None = None
    run_id: str | None = None
    #: Id of the destination it belongs to (set on checkpoints read from the file).
    destination: int | None = None


@dataclass(slots=True)
class LedgerEntry:
    """One delivered event: what Metronome now holds for this ``transaction_id``.

    The payload is kept as its canonical JSON text and parsed only when asked for: lookups run
    for every event of a re-run, diffs only for the few that changed. Not frozen, because a
    frozen dataclass costs ~3x more to build on this hot path.
    """

    transaction_id: str
    digest: bytes
    payload_json: str | None = None  # None only for entries migrated from schema v1
    sent_at: str | None = None
    run_id: str | None = None
    mapping: str | None = None
    event_type: str | None = None
    event_day: str | None = None
    event_time: str | None = None

    @property
    def payload(self) -> dict[str, Any] | None:
        """The payload that was sent, or None for entries from before payloads were kept."""
        return None if self.payload_json is None else orjson.loads(self.payload_json)

    @classmethod
    def from_payload(
        cls,
        payload: Mapping[str, Any],
        *,
        mapping: str | None = None,
        run_id: str | None = None,
        sent_at: str | None = None,
        canonical: bytes | None = None,
    ) -> LedgerEntry:
        """Build an entry from a mapped payload; pass ``canonical`` if the deduper made it."""
        if canonical is None:
            canonical = canonical_bytes(payload)
        timestamp = payload.get("timestamp")
        event_time = timestamp if isinstance(timestamp, str) else None
        event_type = payload.get("event_type")
        return cls(
            str(payload["transaction_id"]),
            digest_canonical(canonical),
            canonical.decode(),
            sent_at,
            run_id,
            mapping,
            None if event_type is None else str(event_type),
            event_time[:10] if event_time else None,
            event_time,
        )


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One row of the runs table."""

    id: str
    command: str
    started_at: str
    ended_at: str | None
    exit_code: int | None
    options: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] | None = None
    pid: int | None = None
    host: str | None = None
    destination: int | None = None


@dataclass(frozen=True, slots=True)
class Destination:
    """Where events were sent: an API base URL and the account behind the token.

    ``account`` is the hex HMAC-SHA256 of the token under this file's random key; None for a
    destination migrated from an older file, until the first run to its URL claims it.
    """

    id: int
    api_url: str
    account: str | None
    created_at: str
    claimed_at: str | None = None

    @property
    def fingerprint(self) -> str:
        """Short enough to show; meaningless outside this file, whose HMAC key is random."""
        return self.account[:8] if self.account is not None else "unclaimed"

    def describe(self) -> str:
        return f"destination #{self.id} {self.api_url} (account {self.fingerprint})"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "api_url": self.api_url,
            "account": self.fingerprint if self.account is not None else None,
            "claimed_at": self.claimed_at,
        }


@dataclass(frozen=True, slots=True)
class UndeliverableRun:
    """The undeliverable events one run recorded for a destination, and how many were sent since."""

    run_id: str
    events: int
    delivered_since: int

    @property
    def still_open(self) -> int:
        return self.events - self.delivered_since


@dataclass(frozen=True, slots=True)
class DestinationSummary:
    """What ``status`` shows of one destination."""

    destination: Destination
    ledger: int
    checkpoints: list[Checkpoint]
    undeliverable: list[UndeliverableRun]


@dataclass(frozen=True, slots=True)
class LockInfo:
    """Who holds (or held) the lock."""

    run_id: str
    pid: int
    host: str
    acquired_at: str
    #: The shard whose lock it is (``K/N``); None for an unsharded run.
    shard: str | None = None

    def describe(self) -> str:
        host = self.host or "unknown host"
        of = f" for shard {self.shard}" if self.shard else ""
        return f"run {self.run_id}{of} (pid {self.pid} on host {host}) since {self.acquired_at}"


@dataclass(frozen=True, slots=True)
class ShardStatus:
    """What ``status`` shows of one shard: its latest run and who holds its lock."""

    shard: str
    last_run: RunInfo | None
    lock: LockInfo | None


_LEDGER_COLUMNS = (
    "transaction_id, digest, payload, sent_at, run_id, mapping, event_type, event_day, event_time"
)


def _ledger_row(row: Sequence[Any]) -> LedgerEntry:
    return LedgerEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8])


_CHECKPOINT_COLUMNS = "source, identity, line, done, updated_at, run_id, destination"


def _checkpoint_row(row: Sequence[Any]) -> Checkpoint:
    return Checkpoint(
        source=row[0],
        identity=row[1],
        line=row[2],
        done=bool(row[3]),
        updated_at=row[4],
        run_id=row[5],
        destination=row[6],
    )
