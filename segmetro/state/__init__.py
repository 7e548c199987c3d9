"""The state of runs: checkpoints, the ledger of sent events, runs, destinations and locks.

Metronome cannot undo anything and silently ignores a second event with a known
``transaction_id``, so the state is the only record of what was sent. Two backends implement
one set of semantics (``store``): an SQLite file (``sqlite``, the default: one run at a time)
and a PostgreSQL database (``postgres``: a lock per shard and one ledger all shards share).
``open_state`` picks the backend from ``--state``: a ``postgresql://`` URL or a file path.
"""

from __future__ import annotations

from pathlib import Path

from segmetro.errors import StateError
from segmetro.state.records import (
    DEFAULT_API_URL,
    UNRECORDED_PAYLOAD,
    Checkpoint,
    Destination,
    DestinationSummary,
    LedgerEntry,
    LockInfo,
    RunInfo,
    ShardStatus,
    UndeliverableRun,
    format_time,
    new_run_id,
    normalize_api_url,
)
from segmetro.state.sqlite import SCHEMA_VERSION, StateDB
from segmetro.state.store import DestinationState, SqlState, StateStore
from segmetro.state.tracker import CheckpointTracker

__all__ = [
    "DEFAULT_API_URL",
    "SCHEMA_VERSION",
    "UNRECORDED_PAYLOAD",
    "Checkpoint",
    "CheckpointTracker",
    "Destination",
    "DestinationState",
    "DestinationSummary",
    "LedgerEntry",
    "LockInfo",
    "RunInfo",
    "ShardStatus",
    "SqlState",
    "StateDB",
    "StateStore",
    "UndeliverableRun",
    "format_time",
    "is_database_url",
    "new_run_id",
    "normalize_api_url",
    "open_state",
    "redact",
    "rejects_dir",
    "require_state",
    "state_exists",
]

_DATABASE_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(spec: str | Path) -> bool:
    """Whether ``--state`` names a PostgreSQL database rather than a file."""
    return isinstance(spec, str) and spec.lower().startswith(_DATABASE_SCHEMES)


def redact(spec: str | Path) -> str:
    """``--state`` as it may be shown: a database URL loses its password."""
    if not is_database_url(spec):
        return str(spec)
    from segmetro.state.postgres import redact_url

    return redact_url(str(spec))


def open_state(spec: str | Path, *, readonly: bool = False, must_exist: bool = False) -> SqlState:
    """Open the state ``--state`` names, creating or migrating it unless ``readonly``;
    ``must_exist`` refuses to create one (``unlock``)."""
    if must_exist:
        require_state(spec)
    if is_database_url(spec):
        from segmetro.state.postgres import PostgresState

        return PostgresState.open(str(spec), readonly=readonly)
    return StateDB.open(spec, readonly=readonly)


def state_exists(spec: str | Path) -> bool:
    """Whether there is a state to read (a dry run without one plans every event as new)."""
    if is_database_url(spec):
        from segmetro.state.postgres import PostgresState

        return PostgresState.exists(str(spec))
    return Path(spec).exists()


def require_state(spec: str | Path) -> None:
    """Refuse a state that does not exist yet, before anything else is checked."""
    if not state_exists(spec):
        what = "PostgreSQL state" if is_database_url(spec) else "state file"
        raise StateError(
            f"{what} {redact(spec)} does not exist: give the --state of the runs (or the "
            "--mapping replay ran with, whose default state file is beside it)."
        )


def rejects_dir(spec: str | Path, mapping: Path) -> Path:
    """Where runs without ``--rejects`` keep their rejects: beside a state file, or for a
    database in ``.segmetro/`` beside the mapping."""
    if is_database_url(spec):
        return mapping.resolve().parent / ".segmetro" / "rejects"
    return Path(spec).parent / "rejects"
