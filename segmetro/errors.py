"""The one exception tree of segmetro.

Library code raises these; ``cli.py`` translates them into messages and exit codes once.

* SegmetroError                      anything segmetro reports on purpose
  + ConfigError                      bad mapping, bad option, bad trigger (exit 2)
    - MappingFileError               a mapping file that cannot be loaded; carries file, line, key
    - TriggerError                   a trigger Segment cannot parse; carries the position
  + SourceError                      an input that cannot be opened or listed at all (exit 2)
  + DeliveryError                    sending to Metronome failed for the whole run (exit 3)
    - AuthenticationError            401/403: the token was refused
  + StateError                       the state database is unusable (exit 2)
    - LockedError                    another run holds the state lock (exit 3)
  + Interrupted                      Ctrl-C or SIGTERM; carries the partial report (exit 130)
  + NoInputs                         every input spec matched nothing: a quiet day (exit 0)

Per-event problems are never exceptions that cross a stage: they become counted rejects.
"""

from __future__ import annotations


class SegmetroError(Exception):
    """Base of every error segmetro raises on purpose."""

    exit_code = 1


class ConfigError(SegmetroError):
    """The user must fix a mapping file, a trigger or an option."""

    exit_code = 2


class MappingFileError(ConfigError):
    """A mapping file that cannot be loaded; the message names file, line and key."""

    def __init__(
        self, message: str, *, path: str, line: int | None = None, key: str | None = None
    ) -> None:
        self.path = path
        self.line = line
        self.key = key
        where = path if line is None else f"{path}:{line}"
        prefix = f"{where}: " if key is None else f"{where}: {key}: "
        super().__init__(prefix + message)
        self.message = message


class TriggerError(ConfigError):
    """A trigger Segment cannot parse (Segment would silently match nothing)."""

    def __init__(self, message: str, *, trigger: str, position: int) -> None:
        self.trigger = trigger
        self.position = position
        self.message = message
        super().__init__(f"{message} at position {position + 1} of trigger {trigger!r}")


class SourceError(SegmetroError):
    """An input that cannot be opened or listed at all."""

    exit_code = 2


class DeliveryError(SegmetroError):
    """Delivery failed for the whole run; state is saved and a re-run resumes."""

    exit_code = 3


class AuthenticationError(DeliveryError):
    """Metronome refused the token."""


class StateError(SegmetroError):
    """The state database cannot be used."""

    exit_code = 2


class LockedError(StateError):
    """Another run holds the lock of this state database."""

    exit_code = 3


class Interrupted(SegmetroError):
    """Ctrl-C or SIGTERM ended a run; ``partial`` is its report so far, for the summary."""

    exit_code = 130

    def __init__(self, partial: object = None, message: str = "interrupted") -> None:
        super().__init__(message)
        self.partial = partial


class NoInputs(SegmetroError):
    """Every input spec (a glob, a directory, an S3 prefix) matched nothing: nothing to do.

    Not a failure: a cron job on a quiet day exits 0 and says which specs were empty.
    """

    exit_code = 0
