"""Where a run writes: checked against what it reads, and written so a failure leaves no half file.

The rules live here, once: an output (``-o``, ``--rejects``) is never one of the inputs, the
mapping, the state file or the other output; ``-o`` is written to a temporary file beside it and
renamed over it only when the run ends well.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from segmetro.errors import ConfigError
from segmetro.sources import InputSet

#: The first bytes of every SQLite database: a file that starts so is a state file, never an
#: output.
_SQLITE_MAGIC = b"SQLite format 3\x00"


def same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: symlinks and relative parts resolved, hard links too."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where they would be
        return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(
    inputs: InputSet,
    outputs: Mapping[str, Path | None],
    *,
    protected: Mapping[str, Path | None] | None = None,
    overwrite_rejects: bool = False,
) -> None:
    """Refuse an output that would harm something the run reads or keeps.

    ``outputs`` maps an option (``-o``, ``--rejects``) to its path; ``protected`` maps what must
    not be written over (``the mapping``, ``the state file``) to its path. An output may not be
    an input, a protected file, a SQLite database (some state file) or another output. With
    ``overwrite_rejects``, a ``--rejects`` file that already holds rejects is refused too.
    """
    given = [(option, path) for option, path in outputs.items() if path is not None]
    keep = [(what, path) for what, path in (protected or {}).items() if path is not None]
    for index, (option, path) in enumerate(given):
        if path.is_dir():
            raise ConfigError(f"{option} {path} is a directory: give a file's path.")
        for obj in inputs.objects:
            if obj.is_local_file(path):
                raise ConfigError(
                    f"{option} {path} is also an input: writing it would destroy what this run "
                    "reads; choose another file."
                )
        for what, other in keep:
            if same_path(path, other):
                raise ConfigError(
                    f"{option} {path} is {what}: writing it would destroy it; choose another file."
                )
        if _is_sqlite(path):
            raise ConfigError(
                f"{option} {path} is a SQLite database (a state file?): choose another file."
            )
        for other_option, other in given[index + 1 :]:
            if same_path(path, other):
                raise ConfigError(
                    f"{option} and {other_option} are the same file {path}: give each its own."
                )
    rejects = outputs.get("--rejects")
    if overwrite_rejects and rejects is not None and _holds_data(rejects):
        raise ConfigError(
            f"--rejects {rejects} already holds rejects (the record of events that were not "
            "billed); this command would overwrite it: choose another file."
        )


def _holds_data(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


@contextlib.contextmanager
def replaced_at_end(path: Path) -> Iterator[IO[bytes]]:
    """A file written beside ``path`` and renamed to it when the block ends without an error.

    Whatever ends the block early (an error, Ctrl-C, SIGTERM turned into an exception) removes
    the temporary file and leaves ``path`` as it was. The new file gets the mode an ordinary
    ``open`` would give it (or the mode of the file it replaces).
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}.") from None
    else:
        if not stat.S_ISREG(st.st_mode):  # /dev/null, a named pipe: written as they are
            try:
                special = path.open("wb")
            except OSError as exc:
                raise ConfigError(f"cannot write {path}: {exc.strerror}.") from None
            with special:
                yield special
            return
        mode = stat.S_IMODE(st.st_mode)
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: cannot create a file in {path.parent}: {exc.strerror}."
        ) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
