"""Plain records that flow between the stages."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JsonObject = dict[str, Any]

#: Marker key that makes a rejects-file line recognisable as one when it is read back as input.
REJECT_MARKER = "segmetro_reject"


def format_timestamp(moment: datetime) -> str:
    """The one normal form of a timestamp: UTC, milliseconds, four-digit year, ``Z``.

    Normalised timestamps sort lexicographically in time order, which the window checks rely on.
    A naive datetime is read as UTC.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.utcoffset():
        moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}."
        f"{moment.microsecond // 1000:03d}Z"
    )


class Reason:
    """Reject reasons: stable strings, used in counts, the rejects file and ``--json``."""

    # reading
    INVALID_JSON = "invalid_json"
    NOT_OBJECT = "not_object"
    INVALID_UTF8 = "invalid_utf8"
    CORRUPT_GZIP = "corrupt_gzip"
    LINE_TOO_LONG = "line_too_long"
    UNREADABLE = "unreadable"
    # mapping
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TOO_OLD = "too_old"
    TOO_NEW = "too_new"
    CONFLICT = "conflict"
    EXPRESSION_ERROR = "expression_error"
    #: Segment's mapping-kit throws on this event (the live destination would have failed it)
    MAPPING_ERROR = "mapping_error"
    # delivery
    BAD_REQUEST = "bad_request"
    UNDELIVERABLE = "undeliverable"
    CHANGED = "changed"


@dataclass(slots=True)
class Record:
    """One Segment message read from an input, and where it came from.

    Not frozen: one is made per line, and a frozen dataclass's ``__init__`` costs three times
    as much; nothing changes a record after the reader made it."""

    event: JsonObject
    source: str
    line: int

    @property
    def coords(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass(frozen=True, slots=True)
class Reject:
    """An event (or a line) that will not reach Metronome, with the reason and its coordinates."""

    reason: str
    detail: str
    source: str
    mapping: str | None = None
    event: Any = None
    payload: JsonObject | None = None
    raw: str | None = None

    def to_json(self) -> JsonObject:
        out: JsonObject = {
            REJECT_MARKER: 1,
            "reason": self.reason,
            "detail": self.detail,
            "source": self.source,
            "mapping": self.mapping,
            "event": self.event,
        }
        if self.payload is not None:
            out["payload"] = self.payload
        if self.raw is not None:
            out["raw"] = self.raw
        return out


@dataclass(slots=True)
class Mapped:
    """A Metronome usage event produced by one mapping from one Segment message."""

    mapping: str
    payload: JsonObject
    record: Record
    #: the payload as one JSON line, when the consumer writes it (``map``): serialised once
    line: bytes | None = None


@dataclass(slots=True)
class Counts:
    """What happened to the input, message by message and event by event.

    Every line read lands in exactly one of ``unparseable``, ``filtered`` and ``matched``; every
    event a mapping made of a matched message (``mapping_matched``, one per mapping that fired)
    in exactly one of a selection reject, ``outside_window``, ``duplicates`` and ``emitted``.
    The invariants are stated in README "Summaries" and checked by ``segmetro.summary``'s tests.
    """

    #: lines (messages) read, unparseable ones included
    read: int = 0
    unparseable: int = 0
    #: messages at least one mapping's trigger fired on
    matched: int = 0
    filtered: int = 0
    outside_window: int = 0
    #: events that passed the selection (mapping, window, in-run duplicate check)
    emitted: int = 0
    duplicates: int = 0
    #: events the ledger says were sent before with the same payload (not sent again)
    unchanged: int = 0
    #: events sent before with another payload that --resend-changed sends again
    resent_changed: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    #: per mapping: events made (messages its trigger fired on), rejected at selection, emitted
    mapping_matched: Counter[str] = field(default_factory=Counter)
    mapping_rejected: Counter[str] = field(default_factory=Counter)
    mapping_emitted: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def mapped(self) -> int:
        """Events the mappings made: one per mapping that fired on a message."""
        return sum(self.mapping_matched.values())

    def unreadable(self, reason: str) -> None:
        """Count one line (or tail of an object) that could not be read as a message."""
        self.read += 1
        self.unparseable += 1
        self.rejected[reason] += 1

    def reject(self, reason: str, mapping: str | None) -> None:
        """Count one event rejected at selection (by its mapping, the window, or a conflict)."""
        self.rejected[reason] += 1
        if mapping is not None:
            self.mapping_rejected[mapping] += 1

    def add(self, part: Counts) -> None:
        """Add the counts of another collector (a worker process's object)."""
        self.read += part.read
        self.unparseable += part.unparseable
        self.matched += part.matched
        self.filtered += part.filtered
        self.outside_window += part.outside_window
        self.emitted += part.emitted
        self.duplicates += part.duplicates
        self.unchanged += part.unchanged
        self.resent_changed += part.resent_changed
        self.rejected.update(part.rejected)
        self.mapping_matched.update(part.mapping_matched)
        self.mapping_rejected.update(part.mapping_rejected)
        self.mapping_emitted.update(part.mapping_emitted)
