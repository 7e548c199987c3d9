"""In-run duplicate detection for millions of transaction ids in compact memory.

Metronome keeps the first event it sees for a ``transaction_id`` and silently ignores any later
one, so within one run a second output with the same id is either a harmless ``duplicate``
(identical payload, sent once) or a ``conflict`` (different payload, rejected with both payloads).

A Python ``set`` of every id costs ~100 bytes per id and would break the memory budget of a
10^6-event run (issue 6), so the ids live in flat arrays instead:

* ``_keys``  (``array('q')``): the 64-bit ``hash()`` of each first-seen id, in arrival order;
* ``_offs``  (``array('Q')``): where that id's record starts in the spill (shifted left by one;
  the low bit says whether the record is ``check_encoded``'s bytes alone);
* ``_index`` (``array('I')``): an open-addressing table (linear probing, load ≤ 1/2) of entry
  numbers + 1, 0 meaning empty — rehashing touches only this small table;
* the spill: for each first-seen id, its UTF-8 bytes and its canonical payload (``check``), or
  the payload as the caller serialised it, which holds the id (``check_encoded``), appended to a
  1 MiB memory buffer that overflows into an anonymous temporary file (deleted by the OS even if
  the process is killed).

About 24-28 bytes of memory per id. A hit on the 64-bit key is confirmed against the spilled
bytes, so answers are exact, never probabilistic; the spill is read only on a hit, i.e. for real
duplicates and conflicts.
"""

from __future__ import annotations

import hashlib
import tempfile
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, Literal

import orjson

from segmetro.models import Mapped, Reason, Reject

__all__ = [
    "NEW",
    "DedupResult",
    "RunDeduper",
    "canonical_bytes",
    "conflict_reject",
    "digest_canonical",
    "expected_ids",
    "payload_digest",
]

_INDEX_TYPE = "I" if array("I").itemsize >= 4 else "L"
_MAX_ENTRIES = (1 << (8 * array(_INDEX_TYPE).itemsize)) - 2
_INITIAL_SLOTS = 1 << 10
#: the most slots an ``expected`` count sizes the index to up front (8 MiB: what 10^6 ids
#: grow it to anyway); beyond, it doubles as it fills
_MAX_PRESIZED_SLOTS = 1 << 21
#: stored bytes per event when guessing how many ids an input holds: about what one gzipped
#: Segment message takes, so a plain input is overestimated (harmless: the cap above)
BYTES_PER_EVENT = 128
_SPILL_BUFFER = 1 << 20
_LEN_BYTES = 4
#: low bit of an ``_offs`` entry: the record is ``check_encoded``'s bytes alone (no id prefix)
_ENCODED = 1


def expected_ids(stored_bytes: int | None) -> int:
    """A guess at how many ids inputs of `stored_bytes` hold, to size a `RunDeduper` by."""
    return (stored_bytes or 0) // BYTES_PER_EVENT


def canonical_bytes(payload: Mapping[str, Any]) -> bytes:
    """Serialise a payload so that equal payloads give equal bytes whatever their key order."""
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def digest_canonical(canonical: bytes) -> bytes:
    """16-byte digest of already canonical bytes, so a payload is serialised only once."""
    return hashlib.blake2b(canonical, digest_size=16).digest()


def payload_digest(payload: Mapping[str, Any]) -> bytes:
    """16-byte digest of the canonical payload: what the ledger stores to spot changed events."""
    return digest_canonical(canonical_bytes(payload))


@dataclass(frozen=True, slots=True)
class DedupResult:
    """Verdict for one output: ``first_payload`` is set only for a ``conflict``."""

    status: Literal["new", "duplicate", "conflict"]
    first_payload: dict[str, Any] | None = None


#: the verdict for a first-seen id: the only ``new`` verdict, so ``verdict is NEW`` tells it
NEW = _NEW = DedupResult("new")
_DUPLICATE = DedupResult("duplicate")


class RunDeduper:
    """Remembers every ``transaction_id`` of one run and the first payload sent for it.

    `expected` (a guess at the number of ids, e.g. `expected_ids`) sizes the index up front,
    up to ``_MAX_PRESIZED_SLOTS``: growing it is a pure-Python rehash of every id so far,
    which a run of 300,000 events otherwise pays for at ten doublings (a quarter of the
    checks' own time, 2 % of a ``map`` run's). A wrong guess costs only memory within that
    cap, or the growth it saves.
    """

    def __init__(self, *, spill_dir: str | None = None, expected: int = 0) -> None:
        self._spill_dir = spill_dir
        self._keys = array("q")
        self._offs = array("Q")
        slots = _INITIAL_SLOTS
        while slots < _MAX_PRESIZED_SLOTS and slots // 2 < expected:
            slots *= 2
        self._mask = slots - 1
        self._index = array(_INDEX_TYPE, [0]) * slots
        self._limit = slots // 2
        self._buf = bytearray()
        self._flushed = 0  # bytes already in the spill file; the buffer holds what follows
        self._file: IO[bytes] | None = None
        self._closed = False

    def __enter__(self) -> RunDeduper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._keys)

    def close(self) -> None:
        """Drop the tables and delete the spill file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._keys = array("q")
        self._offs = array("Q")
        self._index = array(_INDEX_TYPE, [0]) * 1
        self._mask = 0
        self._buf = bytearray()
        self._closed = True

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the tables and the spill buffer, for reports and tests."""
        return (
            self._keys.buffer_info()[1] * self._keys.itemsize
            + self._offs.buffer_info()[1] * self._offs.itemsize
            + self._index.buffer_info()[1] * self._index.itemsize
            + len(self._buf)
        )

    def check(
        self, transaction_id: str, payload: dict[str, Any], *, canonical: bytes | None = None
    ) -> DedupResult:
        """Classify one output; ``new`` ones are remembered. Pass ``canonical`` if already known."""
        if self._closed:
            raise ValueError("RunDeduper is closed")
        if canonical is None:
            canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        key = hash(transaction_id)
        index = self._index
        keys = self._keys
        mask = self._mask
        slot = key & mask
        entry = index[slot]
        while entry:
            if keys[entry - 1] == key:
                verdict = self._compare(entry - 1, transaction_id, canonical, canonical=True)
                if verdict is not None:
                    return verdict
            slot = (slot + 1) & mask
            entry = index[slot]
        tid_bytes = transaction_id.encode("utf-8", "surrogatepass")
        self._add(key, slot, len(tid_bytes).to_bytes(_LEN_BYTES, "little") + tid_bytes, 0)
        self._buf += canonical
        self._after_add()
        return _NEW

    def check_encoded(self, transaction_id: str, encoded: bytes) -> DedupResult:
        """As `check`, for a payload already serialised, in any key order, as a JSON object whose
        ``"transaction_id"`` is `transaction_id` (e.g. the output line).

        The hot path of ``map``: no second serialisation, and only the bytes are kept (the id is
        read back from them on a hit). Equal bytes are a duplicate at once; when the bytes differ
        the two payloads are compared in canonical form. A ``conflict``'s ``first_payload`` is the
        same (key-sorted) object `check` would give.
        """
        if self._closed:
            raise ValueError("RunDeduper is closed")
        key = hash(transaction_id)
        index = self._index
        keys = self._keys
        mask = self._mask
        slot = key & mask
        entry = index[slot]
        while entry:
            if keys[entry - 1] == key:
                verdict = self._compare(entry - 1, transaction_id, encoded, canonical=False)
                if verdict is not None:
                    return verdict
            slot = (slot + 1) & mask
            entry = index[slot]
        entries = len(keys)
        if entries >= _MAX_ENTRIES:
            raise OverflowError("too many transaction ids for one run")
        keys.append(key)
        buf = self._buf
        self._offs.append((self._flushed + len(buf)) << 1 | _ENCODED)
        buf += encoded
        index[slot] = entries + 1
        if entries >= self._limit:
            self._grow()
        if len(buf) >= _SPILL_BUFFER:
            self._spill()
        return _NEW

    def _add(self, key: int, slot: int, head: bytes, flag: int) -> None:
        entries = len(self._keys)
        if entries >= _MAX_ENTRIES:
            raise OverflowError("too many transaction ids for one run")
        self._keys.append(key)
        self._offs.append((self._flushed + len(self._buf)) << 1 | flag)
        self._buf += head
        self._index[slot] = entries + 1

    def _after_add(self) -> None:
        if len(self._keys) > self._limit:
            self._grow()
        if len(self._buf) >= _SPILL_BUFFER:
            self._spill()

    def _compare(
        self, entry: int, transaction_id: str, data: bytes, *, canonical: bool
    ) -> DedupResult | None:
        """The verdict against an entry with the same 64-bit key, or None if its id differs."""
        first_tid, first_payload = self._record(entry)
        if first_tid != transaction_id:
            return None
        if first_payload == data:
            return _DUPLICATE
        sorted_first = orjson.dumps(orjson.loads(first_payload), option=orjson.OPT_SORT_KEYS)
        later = data if canonical else orjson.dumps(orjson.loads(data), option=orjson.OPT_SORT_KEYS)
        if later == sorted_first:
            return _DUPLICATE
        return DedupResult("conflict", orjson.loads(sorted_first))

    def _grow(self) -> None:
        """Double the index and reinsert every entry; the entry arrays stay where they are."""
        size = (self._mask + 1) * 2
        mask = size - 1
        index = array(_INDEX_TYPE, [0]) * size
        for entry, key in enumerate(self._keys, 1):
            slot = key & mask
            while index[slot]:
                slot = (slot + 1) & mask
            index[slot] = entry
        self._index = index
        self._mask = mask
        self._limit = size // 2

    def _spill(self) -> None:
        if self._file is None:
            # Lives as long as the deduper; close() closes it.
            self._file = tempfile.TemporaryFile(  # noqa: SIM115
                "w+b", buffering=0, prefix="segmetro-dedup-", dir=self._spill_dir
            )
        self._file.seek(self._flushed)
        self._file.write(self._buf)
        self._flushed += len(self._buf)
        self._buf = bytearray()

    def _record(self, entry: int) -> tuple[str, bytes]:
        """The spilled (id, payload bytes) of an entry; only read on a key hit."""
        offs = self._offs
        start = offs[entry] >> 1
        encoded = offs[entry] & _ENCODED
        end = offs[entry + 1] >> 1 if entry + 1 < len(offs) else self._flushed + len(self._buf)
        if start >= self._flushed:
            data = bytes(self._buf[start - self._flushed : end - self._flushed])
        else:
            if end > self._flushed:
                self._spill()
            assert self._file is not None
            self._file.seek(start)
            data = b""
            while len(data) < end - start:  # an unbuffered read may return less than asked
                chunk = self._file.read(end - start - len(data))
                if not chunk:
                    raise OSError("dedup spill file is shorter than expected")
                data += chunk
        if encoded:
            tid = orjson.loads(data).get("transaction_id")
            return (tid if isinstance(tid, str) else ""), data
        tid_len = int.from_bytes(data[:_LEN_BYTES], "little")
        tid_bytes = data[_LEN_BYTES : _LEN_BYTES + tid_len]
        return tid_bytes.decode("utf-8", "surrogatepass"), data[_LEN_BYTES + tid_len :]


def conflict_reject(mapped: Mapped, first: dict[str, Any] | None) -> Reject:
    """Metronome keeps the first event of a transaction_id; a different later one would be lost."""
    tid = mapped.payload["transaction_id"]
    detail = (
        f"transaction_id {tid!r} was already emitted in this run with a different payload; "
        "Metronome keeps only the first. first: "
        + orjson.dumps(first).decode()
        + " later: "
        + orjson.dumps(mapped.payload).decode()
    )
    return Reject(
        reason=Reason.CONFLICT,
        detail=detail,
        source=mapped.record.coords,
        mapping=mapped.mapping,
        event=mapped.record.event,
        payload=mapped.payload,
    )
