"""Timestamp normalisation: every mapped timestamp becomes ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC).

One normal form lets the window and the ledger compare timestamps as strings, and it is what
Segment's destination sends (``dayjs.utc(x).toISOString()``). Unlike Segment, epoch numbers are
read as seconds when their magnitude is below 1e11 (Segment reads every number as milliseconds
and silently turns epoch seconds into January 1970), and garbage is an error, never a guess.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

import orjson

from segmetro.models import format_timestamp

#: Epoch values whose magnitude is at least this are milliseconds, smaller ones seconds.
#: 1e11 s is the year 5138, while 1e11 ms is March 1973: the two ranges do not overlap in practice.
EPOCH_MS_THRESHOLD = 100_000_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# YYYY-MM-DD, optionally followed by a time (T, t or a space), fraction (. or ,) and a zone.
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?)?"
)
_NUMERIC = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _describe(value: Any) -> str:
    """The value as the user would see it in their data (JSON), kept short."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _from_epoch(amount: Decimal, original: Any) -> str:
    """Epoch seconds or milliseconds (by magnitude) to the normal form, truncated to the ms."""
    if not amount.is_finite():
        raise ValueError(f"timestamp {_describe(original)} is not a finite number")
    millis = amount if abs(amount) >= EPOCH_MS_THRESHOLD else amount * 1000
    whole_ms = int(millis.to_integral_value(rounding=ROUND_FLOOR))
    try:
        moment = _EPOCH + timedelta(milliseconds=whole_ms)
    except OverflowError:
        raise ValueError(
            f"timestamp {_describe(original)} is outside the years 0001-9999"
        ) from None
    return format_timestamp(moment)


def _from_text(text: str, original: Any) -> str:
    stripped = text.strip()
    if not stripped:
        raise ValueError("timestamp is an empty string")
    # ISO first (the common case); no text matches both it and the numeric pattern
    match = _ISO.fullmatch(stripped)
    if match is None:
        if _NUMERIC.fullmatch(stripped):
            try:
                return _from_epoch(Decimal(stripped), original)
            except InvalidOperation:  # pragma: no cover - the pattern only admits decimals
                raise ValueError(f"timestamp {_describe(original)} is not a number") from None
        raise ValueError(
            f"timestamp {_describe(original)} is not RFC 3339, a date or an epoch number"
        )
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    # a date and time with a valid offset (if any): let the C parser do the common forms
    if hour is not None and (sign is None or (off_h <= "23" and (off_m or "0") <= "59")):
        quick = _quick(stripped)
        if quick is not None:
            return quick
    if year == "0000":
        raise ValueError(f"timestamp {_describe(original)} is outside the years 0001-9999")
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    micro -= micro % 1000  # truncate to milliseconds
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=UTC,
        )
    except ValueError:
        raise ValueError(f"timestamp {_describe(original)} is not a valid date and time") from None
    if sign is not None:
        hours, minutes = int(off_h), int(off_m or 0)
        if hours > 23 or minutes > 59:
            raise ValueError(f"timestamp {_describe(original)} has an invalid UTC offset")
        offset = timedelta(hours=hours, minutes=minutes)
        try:
            moment = moment - offset if sign == "+" else moment + offset
        except OverflowError:
            raise ValueError(
                f"timestamp {_describe(original)} is outside the years 0001-9999"
            ) from None
    del zulu  # Z, an offset or nothing (naive, read as UTC) all end up in UTC
    if not 1 <= moment.year <= 9999:
        raise ValueError(f"timestamp {_describe(original)} is outside the years 0001-9999")
    return format_timestamp(moment)


_fromisoformat = datetime.fromisoformat


def _quick(text: str) -> str | None:
    """`text` (already matched by ``_ISO``, with a time) through ``datetime.fromisoformat``.

    Only a shortcut: None whenever the C parser refuses the text or the result leaves the
    years 0001-9999, and the regular parse below decides (and words the error). Where both
    accept a text they read it the same way (``tests/test_one_path.py`` holds them to it).
    """
    try:
        moment = _fromisoformat(text)
        zone = moment.tzinfo
        if zone is None:
            moment = moment.replace(tzinfo=UTC)
        elif zone is not UTC:
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    # isoformat without `timespec` (much faster): microseconds, truncated here, or none at all
    stamp = moment.isoformat()
    size = len(stamp)
    if size == 32:
        return stamp[:23] + "Z"
    return stamp[:19] + ".000Z" if size == 25 else None


#: two ASCII digits → their value (00-59), and back
_TWO_DIGITS = {f"{n:02d}": n for n in range(60)}
_PADDED = tuple(_TWO_DIGITS)
_MINUTES_PER_DAY = 24 * 60


def _shifted(text: str) -> str | None:
    """A text of 29 characters shaped as ``YYYY-MM-DDTHH:MM:SS.mmm±HH:MM`` (the other form
    Segment's libraries write) in UTC, by moving its clock by the offset when that stays
    within the day (the usual case), else as `_quick` reads it; None if it is not so shaped.

    One slice checks the separators, ``datetime.fromisoformat`` the local part's digits and
    ranges, and a lookup the offset's. Through ``astimezone`` and ``isoformat`` (`_quick`) the
    form took ~1.9 µs, this way ~1.1 µs; an offset that moves the date (so perhaps the month
    or the year) is left to them.
    """
    if text[4:20:3] != "--T::." or text[26] != ":" or not text.isascii():
        return None
    sign = text[23]
    digits = _TWO_DIGITS
    hours, minutes = digits.get(text[24:26]), digits.get(text[27:])
    if hours is None or minutes is None or hours > 23 or (sign != "+" and sign != "-"):
        return None
    try:
        _fromisoformat(text[:23])
    except ValueError:
        return None
    clock = digits[text[11:13]] * 60 + digits[text[14:16]]
    utc = clock - (hours * 60 + minutes) if sign == "+" else clock + hours * 60 + minutes
    if not 0 <= utc < _MINUTES_PER_DAY:
        return _quick(text)
    padded = _PADDED
    return f"{text[:11]}{padded[utc // 60]}:{padded[utc % 60]}{text[16:23]}Z"


def is_normal_form(value: str) -> bool:
    """Whether `value` is already ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (ASCII digits) and a valid time.

    The form Segment itself writes, so the common case: the separators are checked in one slice
    and ``datetime.fromisoformat`` (fast, in C) checks the digits and the ranges. With the
    separators where they are and only ASCII, nothing else it accepts fits (no week dates, no
    offsets, no other fraction length).
    """
    if len(value) != 24 or value[23] != "Z" or value[4:20:3] != "--T::." or not value.isascii():
        return False
    try:  # not `_valid_iso`: a second call is a third of this function's cost
        _fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_whole_seconds_utc(value: str) -> bool:
    """``YYYY-MM-DDTHH:MM:SSZ`` (ASCII digits, a valid time): RFC 3339 as many sources write it."""
    return (
        len(value) == 20
        and value[19] == "Z"
        and value[10] == "T"
        and value[4:17:3] == "--T::"
        and value.isascii()
        and _valid_iso(value)
    )


def _valid_iso(value: str) -> bool:
    try:
        _fromisoformat(value)
    except ValueError:
        return False
    return True


def quick_text(value: str) -> str | None:
    """The normal form of a text in a form sources commonly write (the normal form itself,
    whole seconds with ``Z``, milliseconds with an offset), else None: the general parse
    decides. The first step of `normalize_timestamp`, which the compiled mapping calls alone."""
    size = len(value)
    if size == 24:
        return value if is_normal_form(value) else None
    if size == 20:
        return f"{value[:19]}.000Z" if _is_whole_seconds_utc(value) else None
    if size == 29:
        return _shifted(value)
    return None


def normalize_timestamp(value: Any) -> str:
    """Normalise a timestamp to ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC, or raise ``ValueError``.

    Accepts RFC 3339 / ISO 8601 strings with ``Z`` or an offset (any number of fractional digits,
    truncated to milliseconds), naive date-times (space or ``T``, read as UTC), dates, and epoch
    numbers or numeric strings (milliseconds when ``abs(value) >= 1e11``, else seconds; negative and
    fractional values allowed). The ``ValueError`` message quotes the value.
    """
    kind = type(value)
    if kind is str:
        quick = quick_text(value)
        return quick if quick is not None else _from_text(value, value)
    if kind is int:
        return _from_epoch(Decimal(value), value)
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"timestamp {_describe(value)} is not a finite number")
        return _from_epoch(Decimal(repr(value)), value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        try:
            return format_timestamp(moment.astimezone(UTC))
        except OverflowError:
            raise ValueError(f"timestamp {value} is outside the years 0001-9999") from None
    if isinstance(value, date):
        return format_timestamp(datetime(value.year, value.month, value.day, tzinfo=UTC))
    if value is None:
        raise ValueError("timestamp is null")
    if kind is bool:
        raise ValueError(f"timestamp {_describe(value)} is a boolean, not a time")
    raise ValueError(f"timestamp {_describe(value)} is not a string or a number")
