"""Shards: a deterministic share of the input objects, computed by each shard on its own.

An object belongs to shard ``int(sha256(name)[:8]) mod N``: every shard lists the same objects,
keeps its own, and needs no coordination; a re-run gives each shard the same objects. ``name``
is the object's name as the listing spells it (``s3://bucket/key`` or the path as expanded from
the INPUT arguments), so every shard must be given the same INPUT spelling.

``--shard auto/N`` takes the index from the scheduler: ``SEGMETRO_SHARD_INDEX`` (set it
yourself, e.g. from a CI matrix), ``JOB_COMPLETION_INDEX`` (Kubernetes Indexed Job) or
``AWS_BATCH_JOB_ARRAY_INDEX`` (AWS Batch array job).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

from segmetro.errors import ConfigError

__all__ = ["SHARD_INDEX_VARIABLES", "Shard", "parse_shard"]

#: Where ``auto`` looks for the index, in this order.
SHARD_INDEX_VARIABLES = (
    "SEGMETRO_SHARD_INDEX",
    "JOB_COMPLETION_INDEX",
    "AWS_BATCH_JOB_ARRAY_INDEX",
)

#: Most shards: far more than any object listing benefits from, small enough to catch typos.
MAX_SHARDS = 4096


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based); ``origin`` names the variable ``auto`` read."""

    index: int
    count: int
    origin: str | None = None

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, name: str) -> bool:
        """Whether the object called ``name`` is this shard's."""
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def describe(self) -> str:
        where = f" (index from ${self.origin})" if self.origin else ""
        return f"shard {self.label}{where}"


def parse_shard(spec: str, environ: Mapping[str, str] | None = None) -> Shard:
    """``K/N`` (0 ≤ K < N) or ``auto/N``; raises ``ConfigError`` with the reason."""
    env = os.environ if environ is None else environ
    index_text, sep, count_text = spec.strip().partition("/")
    if not sep:
        raise ConfigError(f"--shard {spec!r}: expected K/N (e.g. 0/4) or auto/N")
    count = _number(count_text, spec, "N")
    if not 1 <= count <= MAX_SHARDS:
        raise ConfigError(f"--shard {spec!r}: N must be between 1 and {MAX_SHARDS}")
    origin = None
    if index_text.strip().lower() == "auto":
        found = [(name, env[name]) for name in SHARD_INDEX_VARIABLES if env.get(name, "").strip()]
        if not found:
            raise ConfigError(
                f"--shard {spec}: none of {', '.join(SHARD_INDEX_VARIABLES)} is set; run it "
                "as a Kubernetes Indexed Job or an AWS Batch array job, or give the index "
                "(--shard K/N)"
            )
        origin, index_text = found[0]
        others = {value.strip() for _name, value in found[1:]} - {index_text.strip()}
        if others:
            listed = ", ".join(f"{name}={value.strip()}" for name, value in found)
            raise ConfigError(f"--shard {spec}: the shard index variables disagree ({listed})")
    index = _number(index_text, spec, "K" if origin is None else f"${origin}")
    if not 0 <= index < count:
        raise ConfigError(
            f"--shard {spec}: index {index} is not between 0 and {count - 1} "
            "(shards are numbered from 0)"
        )
    return Shard(index, count, origin)


def _number(text: str, spec: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(
            f"--shard {spec!r}: {what} must be a whole number, got {text!r}"
        ) from None
