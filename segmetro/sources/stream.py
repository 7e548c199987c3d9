"""What flows between the stages: content chunks, the markers among them, the two breaks.

An input yields stored bytes; ``gunzip.decompress`` turns them into *content*: ``bytes`` chunks,
with a marker where gzip has something to say (``NotGzip`` first, or a ``Damaged`` member's
data between ``Damaged`` and ``DAMAGE_END``). A stream that cannot go on raises ``StreamBreak``
(one reject, then the object is done); a transient read failure raises ``RetryableReadError``
(the input may read the object again and resume).
"""

from __future__ import annotations


class StreamBreak(Exception):
    """The stored bytes end abnormally; the reader yields one reject for it and stops."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class RetryableReadError(Exception):
    """A transient failure reading the bytes (S3): the caller may re-read and resume.

    ``line`` is set by the reader to the line that was being read when it failed.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error
        self.line = 0


class Damaged:
    """A marker in content: the chunks that follow, up to ``DAMAGE_END``, are the data of a gzip
    member that failed its integrity check. No line touching them may be used."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail


#: closes the data of a ``Damaged`` member
DAMAGE_END = Damaged("")


class NotGzip:
    """The first item of content whose bytes start with the gzip magic but do not go on as a
    gzip header: the content is the stored bytes as they are, which follow. Its first line holds
    the magic bytes (never JSON), so its reject becomes a ``corrupt_gzip`` one with ``detail``."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail


Chunk = bytes | Damaged | NotGzip
