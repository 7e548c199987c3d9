"""The one ledger classification of replay and the plan: ``new``, ``unchanged`` or ``changed``."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from segmetro.dedup import payload_digest
from segmetro.models import Mapped, Reason, Reject
from segmetro.state import (
    UNRECORDED_PAYLOAD,
    Destination,
    DestinationState,
    LedgerEntry,
    SqlState,
    StateStore,
    normalize_api_url,
)


def changed_reject(mapped: Mapped, previous: LedgerEntry) -> Reject:
    before = previous.payload
    lines = [UNRECORDED_PAYLOAD] if before is None else field_diff(before, mapped.payload)
    changes = "; ".join(line.strip() for line in lines)
    return Reject(
        reason=Reason.CHANGED,
        detail=(
            f"transaction_id {mapped.payload['transaction_id']!r} was sent by run "
            f"{previous.run_id} with a different payload ({changes}); Metronome ignores a "
            "second event with the same transaction_id, so this one was not sent. To bill "
            "the new version, give it a new transaction_id (e.g. a suffix in the mapping)."
        ),
        source=mapped.record.coords,
        mapping=mapped.mapping,
        event=mapped.record.event,
        payload=mapped.payload,
    )


def concurrent_conflict(mapped: Mapped, theirs: LedgerEntry) -> Reject:
    """Another run (a shard) sent this ``transaction_id`` with another payload at the same time."""
    before = theirs.payload
    lines = [UNRECORDED_PAYLOAD] if before is None else field_diff(before, mapped.payload)
    changes = "; ".join(line.strip() for line in lines)
    return Reject(
        reason=Reason.CONFLICT,
        detail=(
            f"transaction_id {mapped.payload['transaction_id']!r} was also sent, at the same "
            f"time, by run {theirs.run_id} with a different payload ({changes}); Metronome "
            "keeps whichever reached it first. Give one version a new transaction_id."
        ),
        source=mapped.record.coords,
        mapping=mapped.mapping,
        event=mapped.record.event,
        payload=mapped.payload,
    )


def field_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Terraform-style field changes: ``+ added``, ``- removed``, ``~ changed: old -> new``."""
    lines: list[str] = []
    for key in sorted(old.keys() | new.keys(), key=str):
        name = f"{prefix}{key}"
        if key not in old:
            lines.append(f"+ {name}: {orjson.dumps(new[key]).decode()}")
        elif key not in new:
            lines.append(f"- {name}: {orjson.dumps(old[key]).decode()}")
        elif old[key] != new[key] or type(old[key]) is not type(new[key]):
            if isinstance(old[key], dict) and isinstance(new[key], dict):
                lines.extend(field_diff(old[key], new[key], prefix=f"{name}."))
            else:
                before = orjson.dumps(old[key]).decode()
                after = orjson.dumps(new[key]).decode()
                lines.append(f"~ {name}: {before} -> {after}")
    return lines


LEDGER_CHUNK = 256


def against_ledger(
    pending: deque[Mapped], state: StateStore | None
) -> Iterator[tuple[Mapped, str, LedgerEntry | None]]:
    """Pop each event off `pending` with its category: ``new``, ``unchanged`` or ``changed``.

    One ledger query per chunk. Events still in `pending` when the caller stops were never
    classified (a replay counts them as unsent).
    """
    found = (
        state.ledger_lookup([m.payload["transaction_id"] for m in pending])
        if state is not None
        else {}
    )
    while pending:
        mapped = pending.popleft()
        previous = found.get(mapped.payload["transaction_id"])
        if previous is None:
            yield mapped, "new", None
        elif previous.digest == payload_digest(mapped.payload):
            yield mapped, "unchanged", previous
        else:
            yield mapped, "changed", previous


@dataclass
class PlanTarget:
    """Which destination a dry run plans against, and why: stated with the plan."""

    state: DestinationState | None
    note: str
    warning: str | None = None

    @property
    def destination(self) -> Destination | None:
        return None if self.state is None else self.state.destination

    def to_json(self) -> dict[str, Any]:
        dest = self.destination
        return {"destination": None if dest is None else dest.to_json(), "note": self.note}


def plan_target(db: SqlState | None, api_url: str, token: str) -> PlanTarget:
    """The destination a replay with this URL (and token, if set) would use; nothing is written.

    Without a token the account is unknown: the URL's only destination is used, and when it has
    several the plan treats every event as new rather than guess (with a warning).
    """
    if db is None:
        return PlanTarget(None, "no state file yet: every event is new")
    url = normalize_api_url(api_url)
    if token:
        dest = db.find_destination(url, token)
        if dest is None:
            return PlanTarget(
                None, f"nothing was sent to {url} with this token yet: every event is new"
            )
        how = (
            "unclaimed: a run with this token claims it"
            if dest.account is None
            else "the account of METRONOME_BEARER_TOKEN"
        )
        return PlanTarget(db.for_destination(dest), f"planned against {dest.describe()}, {how}")
    candidates = db.destinations(url)
    if not candidates:
        return PlanTarget(None, f"nothing was sent to {url} yet: every event is new")
    if len(candidates) == 1:
        (dest,) = candidates
        return PlanTarget(
            db.for_destination(dest),
            f"planned against {dest.describe()}, the only destination with this URL "
            "(set METRONOME_BEARER_TOKEN to plan for a given account)",
        )
    accounts = ", ".join(d.fingerprint for d in candidates)
    return PlanTarget(
        None,
        f"every event planned as new: {len(candidates)} destinations use {url}",
        warning=(
            f"{len(candidates)} destinations in {db.where} use {url} (accounts {accounts}); "
            "without METRONOME_BEARER_TOKEN the plan cannot tell which one a run would send "
            "to, so it plans as if nothing was sent. Set the token to plan for its account."
        ),
    )
