"""Files segmetro creates that hold customer data (the state, rejects files): owner-only.

The state keeps every payload it sent and the rejects keep the original Segment events, so
both are created readable and writable by their owner alone, whatever the umask.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

PRIVATE_MODE = 0o600


def open_private(path: Path, *, append: bool) -> IO[bytes]:
    """Open ``path`` for writing bytes; a file this creates gets ``PRIVATE_MODE``."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE_MODE)
    return os.fdopen(fd, "ab" if append else "wb")


def create_private(path: Path) -> None:
    """Create ``path`` empty with ``PRIVATE_MODE`` unless it exists (SQLite then fills it)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
