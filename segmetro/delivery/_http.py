"""What one answer from Metronome means, for ingest and search alike (design §4).

Every request segmetro makes ends in exactly one ``Verdict``; the sender and the search client
act on verdicts only, so a status code is classified in this one place.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

import httpx
import orjson

from segmetro import __version__
from segmetro.errors import ConfigError

__all__ = [
    "INGEST_PATH",
    "RETRY_AFTER_CAP",
    "SEARCH_PATH",
    "USER_AGENT",
    "Answer",
    "Verdict",
    "backoff_delay",
    "check_base_url",
    "classify_error",
    "classify_response",
    "headers",
    "parse_retry_after",
]

INGEST_PATH = "/v1/ingest"
SEARCH_PATH = "/v1/events/search"
USER_AGENT = f"segmetro/{__version__}"
#: Longest server-requested wait we honour (the official SDK ignores longer hints).
RETRY_AFTER_CAP = 60.0
#: Longest piece of a non-JSON error body kept in a detail.
_DETAIL_LIMIT = 500
#: Faults (not rate limits) worth another try of the same bytes.
_FAULT_STATUSES = frozenset({408, 409})
#: Statuses that blame the events of the batch: split to isolate them.
_SPLIT_STATUSES = frozenset({400, 413, 422})
_AUTH_STATUSES = frozenset({401, 403})

BASE_URL_HINT = (
    "--api-url / METRONOME_BASE_URL is the base URL without /v1 "
    "(e.g. https://api.metronome.com); segmetro adds /v1/ingest itself"
)


class Verdict(Enum):
    OK = "ok"
    RATE_LIMITED = "rate_limited"  # back-pressure: retried until it goes through
    FAULT = "fault"  # 408/409/5xx, timeouts, dropped connections: retried within the budget
    UNREACHABLE = "unreachable"  # no connection could be made (refused, DNS, TLS)
    SPLIT = "split"  # the events are to blame: bisect
    AUTH = "auth"  # the token was refused
    REFUSED = "refused"  # any other answer: the run itself is misconfigured; never retried


@dataclass(frozen=True)
class Answer:
    """The verdict on one attempt, with what the retry logic and the reports need."""

    verdict: Verdict
    detail: str
    status: int | None = None
    hint: float | None = None  # server-requested wait, seconds
    customer: bool = False  # a 429 of type ``customer``: only that customer is limited
    timeout: bool = False


def headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }


def check_base_url(api_url: str) -> None:
    """Refuse URLs that cannot be Metronome's base URL before anything is sent."""
    if not api_url.startswith(("http://", "https://")):
        raise ConfigError(f"API URL must start with http:// or https://, got {api_url!r}")
    path = urlsplit(api_url).path.rstrip("/")
    if path.endswith(("/v1", "/v1/ingest")):
        raise ConfigError(f"API URL {api_url!r} ends with /v1: {BASE_URL_HINT}")


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random) -> float:
    """Delay before retry number ``retry`` (0-based): ``min(base·2^n, cap)·U(0.75, 1)``."""
    return min(base * 2.0 ** min(retry, 60), cap) * rng.uniform(0.75, 1.0)


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """The server's requested wait in seconds (``retry-after-ms``, then ``Retry-After``).

    Returns ``None`` when there is no usable positive hint; caps the hint at ``RETRY_AFTER_CAP``.
    ``now`` is the wall clock (epoch seconds) used for an HTTP-date value.
    """
    value: float | None = None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = None
    if value is None:
        ra = headers.get("retry-after")
        if ra is not None:
            try:
                value = float(ra)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(ra)
                except (TypeError, ValueError, IndexError):
                    when = None
                if when is not None and when.tzinfo is not None:
                    value = when.timestamp() - (time.time() if now is None else now)
    if value is None or value != value or value <= 0:  # absent, NaN, zero or in the past
        return None
    return min(value, RETRY_AFTER_CAP)


def error_message(response: httpx.Response) -> str:
    """Metronome's ``{"message": ...}``, or the start of whatever the body was."""
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    text = response.text.strip()
    if not text:
        return response.reason_phrase or "(empty body)"
    return text[:_DETAIL_LIMIT]


def classify_response(response: httpx.Response, url: str) -> Answer:
    status = response.status_code
    if 200 <= status < 300:
        return Answer(Verdict.OK, "", status)
    if status in _AUTH_STATUSES:
        return Answer(
            Verdict.AUTH,
            f"Metronome refused the API token (HTTP {status}). Check METRONOME_BEARER_TOKEN.",
            status,
        )
    message = error_message(response)
    hint = parse_retry_after(response.headers)
    if status == 429:
        kind = response.headers.get("x-metronome-rate-limit-type", "").strip().lower()
        return Answer(
            Verdict.RATE_LIMITED, f"HTTP 429 {message}", status, hint, customer=kind == "customer"
        )
    if status in _SPLIT_STATUSES:
        return Answer(Verdict.SPLIT, message if status == 400 else f"HTTP {status}: {message}",
                      status)  # fmt: skip
    if status in _FAULT_STATUSES or status >= 500:
        return Answer(Verdict.FAULT, f"HTTP {status} {message}", status, hint)
    detail = f"HTTP {status} {message} from {url} (not retried)"
    if status == 404:
        detail += f"; {BASE_URL_HINT}"
    return Answer(Verdict.REFUSED, detail, status)


def classify_error(exc: httpx.TransportError, url: str) -> Answer:
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return Answer(Verdict.FAULT, f"timeout ({name})", timeout=True)
    if isinstance(exc, httpx.ConnectError):
        return Answer(Verdict.UNREACHABLE, f"cannot connect to {url} ({_root_cause(exc)})")
    if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)):
        return Answer(Verdict.FAULT, f"connection error ({name}: {exc})")
    # unsupported protocol, proxy errors, local protocol errors: retrying cannot help
    return Answer(Verdict.REFUSED, f"cannot send to {url} ({name}: {exc})")


def _root_cause(exc: BaseException) -> str:
    """The OS-level reason under an httpx error (anyio hides it behind a generic message)."""
    found: BaseException = exc
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and (current.strerror or str(current)):
            found = current
        nested = getattr(current, "exceptions", None)  # an ExceptionGroup of attempts
        if isinstance(nested, tuple) and nested:
            current = nested[0]
            continue
        current = current.__cause__ or current.__context__
    if isinstance(found, OSError):
        code = found.errno
        text = os.strerror(code) if isinstance(code, int) and code > 0 else found.strerror
        if text:
            return f"{type(found).__name__}: {text}"
    return f"{type(found).__name__}: {found}"
