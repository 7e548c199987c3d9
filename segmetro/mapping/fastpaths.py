"""The switch for the shortcuts that make ``map`` fast, so tests can compare them with the
general paths they stand for.

With fast paths on (the default), simple JSONPaths compile to plain dict lookups, a mapping
compiles to one function for the common event, timestamps already in normal form are checked
and kept, and ``map`` serialises each output once. ``SEGMETRO_NO_FAST_PATHS=1`` in the
environment, or :func:`disabled` around loading a mapping and running it, turns every one of them
off; the output must be byte-identical either way (``tests/test_perf_paths.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

_enabled = os.environ.get("SEGMETRO_NO_FAST_PATHS", "").strip() in ("", "0")


def enabled() -> bool:
    """Whether the fast paths are in use (read when a mapping is compiled and when it runs)."""
    return _enabled


def set_enabled(flag: bool) -> None:
    """Turn the fast paths on or off for this process (worker processes follow their parent)."""
    global _enabled
    _enabled = flag


@contextmanager
def disabled() -> Iterator[None]:
    """Use only the general paths inside the block (tests and benchmarks)."""
    global _enabled
    before = _enabled
    _enabled = False
    try:
        yield
    finally:
        _enabled = before
