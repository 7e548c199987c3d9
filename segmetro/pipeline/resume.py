"""Where a run starts: which inputs its checkpoints let it skip or resume, and how it reads them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from segmetro.models import Reason, Record, Reject
from segmetro.sources import InputObject, InputSet, read_object
from segmetro.state import StateStore
from segmetro.window import Window


def run_signature(mapping_path: Path) -> str:
    """What a checkpoint is valid for, besides the window: the mapping's bytes."""
    return hashlib.sha256(mapping_path.read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class CheckpointKey:
    """What a checkpoint is valid for: the input's identity (size/mtime or ETag), the mapping's
    signature and the ``--since/--until`` bounds (normal-form timestamps, or empty)."""

    identity: str
    signature: str
    since: str = ""
    until: str = ""

    @classmethod
    def of(cls, identity: str, signature: str, window: Window) -> CheckpointKey:
        since, until, _, _ = window.bounds()
        return cls(identity, signature, since or "", until or "")

    def encode(self) -> str:
        """The form stored in the state file (``identity|signature|since|until``)."""
        return "|".join((self.identity, self.signature, self.since, self.until))

    @classmethod
    def decode(cls, text: str) -> CheckpointKey:
        """A stored key; one from an older state file may lack the later parts."""
        identity, signature, since, until = ([*text.split("|"), "", "", ""])[:4]
        return cls(identity, signature, since, until)

    def covers(self, window: Window) -> bool:
        """Whether a checkpoint made with this key's window covers every event of `window`."""
        since, until, _, _ = window.bounds()
        if self.since and (since is None or since < self.since):
            return False
        return not self.until or (until is not None and until <= self.until)


@dataclass
class Resume:
    """Where to start each input, from the checkpoints of earlier runs."""

    start: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def plan_resume(inputs: InputSet, state: StateStore, signature: str, window: Window) -> Resume:
    """Skip finished inputs and resume partly read ones, when their checkpoint still applies.

    A checkpoint applies when the input is unchanged (size/mtime or ETag), the mapping is the
    same, and its window covered the current one (so `--since 3d` in a daily cron job resumes).
    """
    resume = Resume()
    for obj in inputs.objects:
        if obj.kind == "stdin":
            continue
        checkpoint = state.checkpoint(obj.name)
        if checkpoint is None:
            continue
        key = CheckpointKey.decode(checkpoint.identity)
        if key.identity != obj.identity:
            resume.warnings.append(
                f"{obj.name} changed since its checkpoint (was {key.identity}, now "
                f"{obj.identity}); "
                "reading it again from the start (events already sent are skipped by the ledger)"
            )
        elif key.signature != signature:
            resume.warnings.append(
                f"{obj.name}: the mapping changed since its checkpoint; reading it again from "
                "the start (events already sent are skipped by the ledger)"
            )
        elif not key.covers(window):
            resume.warnings.append(
                f"{obj.name}: --since/--until reach beyond the window of its checkpoint; reading "
                "it again from the start (events already sent are skipped by the ledger)"
            )
        elif checkpoint.done:
            resume.skipped.append(obj.name)
        elif checkpoint.line > 0:
            resume.start[obj.name] = checkpoint.line
    return resume


def read_resumed(
    objects: Sequence[InputObject],
    resume: Resume,
    *,
    on_bytes: Callable[[int], None] | None,
    on_finish: Callable[[str], None] | None = None,
) -> Iterator[Record | Reject]:
    """Read each object from its resume line; `on_finish` only for objects read to the end.

    An object whose reading broke off (`unreadable`: a read error, an object gone) is not
    finished, so its checkpoint stays at the last good line and the next run retries it.
    """
    for obj in objects:
        complete = True
        for item in read_object(obj, start_line=resume.start.get(obj.name, 0), on_bytes=on_bytes):
            if type(item) is Reject and item.reason == Reason.UNREADABLE:
                complete = False
            yield item
        if complete and on_finish is not None:
            on_finish(obj.name)
