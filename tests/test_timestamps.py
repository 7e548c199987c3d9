"""normalize_timestamp: every accepted form maps to exactly one UTC millisecond string."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmetro.mapping import normalize_timestamp
from segmetro.models import format_timestamp
from segmetro.window import Window


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # RFC 3339 with Z, as Segment writes it (returned unchanged)
        ("2021-07-10T05:37:11.000Z", "2021-07-10T05:37:11.000Z"),
        ("2021-07-10T05:37:11Z", "2021-07-10T05:37:11.000Z"),
        ("2021-07-10t05:37:11z", "2021-07-10T05:37:11.000Z"),
        # offsets (Segment's own test: +02:00 → 05:37 UTC)
        ("2021-07-10T07:37:11+02:00", "2021-07-10T05:37:11.000Z"),
        ("2021-07-10T07:37:11+0200", "2021-07-10T05:37:11.000Z"),
        ("2021-07-10T07:37+02", "2021-07-10T05:37:00.000Z"),
        ("2021-07-10T05:37:11.5-05:30", "2021-07-10T11:07:11.500Z"),
        ("2021-01-01T00:30:00+01:00", "2020-12-31T23:30:00.000Z"),
        ("2021-07-10T05:37:11-00:00", "2021-07-10T05:37:11.000Z"),
        # fractional digits: any number, truncated (not rounded) to milliseconds
        ("2021-07-10T05:37:11.1Z", "2021-07-10T05:37:11.100Z"),
        ("2021-07-10T05:37:11.12Z", "2021-07-10T05:37:11.120Z"),
        ("2021-07-10T05:37:11.123456789Z", "2021-07-10T05:37:11.123Z"),
        ("2021-07-10T05:37:11.9999Z", "2021-07-10T05:37:11.999Z"),
        ("2021-07-10T05:37:11,5Z", "2021-07-10T05:37:11.500Z"),
        # dates and naive date-times are UTC
        ("2021-01-01", "2021-01-01T00:00:00.000Z"),
        (" 2021-01-01 ", "2021-01-01T00:00:00.000Z"),
        ("2021-07-10 05:37:11", "2021-07-10T05:37:11.000Z"),
        ("2021-07-10T05:37:11", "2021-07-10T05:37:11.000Z"),
        ("2021-07-10T05:37:11.250", "2021-07-10T05:37:11.250Z"),
        # epoch numbers: seconds below 1e11, milliseconds from 1e11
        (1625895431, "2021-07-10T05:37:11.000Z"),
        (1625895431000, "2021-07-10T05:37:11.000Z"),
        (1625895431.5, "2021-07-10T05:37:11.500Z"),
        (1625895431123.9, "2021-07-10T05:37:11.123Z"),
        (0, "1970-01-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.000Z"),
        (-1.5, "1969-12-31T23:59:58.500Z"),
        (-100000000000, "1966-10-31T14:13:20.000Z"),
        (99999999999, "5138-11-16T09:46:39.000Z"),
        (100000000000, "1973-03-03T09:46:40.000Z"),
        # numeric strings follow the same rule
        ("1625895431", "2021-07-10T05:37:11.000Z"),
        ("1625895431000", "2021-07-10T05:37:11.000Z"),
        ("1625895431.25", "2021-07-10T05:37:11.250Z"),
        ("-1", "1969-12-31T23:59:59.000Z"),
        ("1.6e9", "2020-09-13T12:26:40.000Z"),
        # boundaries of the four-digit year
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z"),
        ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
        # datetimes (e.g. from Python callers)
        (
            datetime(2021, 7, 10, 7, 37, 11, 123999, tzinfo=timezone(timedelta(hours=2))),
            "2021-07-10T05:37:11.123Z",
        ),
        (datetime(2021, 7, 10, 5, 37, 11), "2021-07-10T05:37:11.000Z"),
        (date(2021, 1, 1), "2021-01-01T00:00:00.000Z"),
        (datetime(2021, 1, 1, tzinfo=UTC), "2021-01-01T00:00:00.000Z"),
    ],
)
def test_accepted_forms(value: Any, expected: str) -> None:
    assert normalize_timestamp(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not a date", 'timestamp "not a date" is not RFC 3339, a date or an epoch number'),
        ("", "timestamp is an empty string"),
        ("   ", "timestamp is an empty string"),
        (True, "timestamp true is a boolean, not a time"),
        (False, "timestamp false is a boolean, not a time"),
        (None, "timestamp is null"),
        ({"a": 1}, 'timestamp {"a":1} is not a string or a number'),
        ([1], "timestamp [1] is not a string or a number"),
        ("2021-02-30", 'timestamp "2021-02-30" is not a valid date and time'),
        (
            "2021-02-30T05:37:11.000Z",
            'timestamp "2021-02-30T05:37:11.000Z" is not a valid date and time',
        ),
        ("2021-07-10T24:00:00Z", 'timestamp "2021-07-10T24:00:00Z" is not a valid date and time'),
        (
            "2021-07-10T05:37:11+24:00",
            'timestamp "2021-07-10T05:37:11+24:00" has an invalid UTC offset',
        ),
        ("2021-7-10", 'timestamp "2021-7-10" is not RFC 3339, a date or an epoch number'),
        ("10000-01-01", 'timestamp "10000-01-01" is not RFC 3339, a date or an epoch number'),
        ("0000-01-01", 'timestamp "0000-01-01" is outside the years 0001-9999'),
        (
            "9999-12-31T23:00:00-02:00",
            'timestamp "9999-12-31T23:00:00-02:00" is outside the years 0001-9999',
        ),
        (
            "0001-01-01T00:00:00+01:00",
            'timestamp "0001-01-01T00:00:00+01:00" is outside the years 0001-9999',
        ),
        (1e20, "timestamp 1e+20 is outside the years 0001-9999"),
        (253402300800000, "timestamp 253402300800000 is outside the years 0001-9999"),
        (-62135596800001, "timestamp -62135596800001 is outside the years 0001-9999"),
        (float("nan"), "timestamp nan is not a finite number"),
        (float("inf"), "timestamp inf is not a finite number"),
        ("1.2.3", 'timestamp "1.2.3" is not RFC 3339, a date or an epoch number'),
    ],
)
def test_rejected_values_name_the_value(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r"^timestamp") as excinfo:
        normalize_timestamp(value)
    assert str(excinfo.value) == message


def test_output_sorts_in_time_order() -> None:
    """The window compares timestamps as strings: that needs fixed-width output."""
    values = ["0999-01-01", "1969-12-31T23:59:59Z", 0, "2021-01-01", 1625895431000]
    normalised = [normalize_timestamp(v) for v in values]
    assert normalised == sorted(normalised)
    assert all(len(text) == 24 for text in normalised)


# ------------------------------------------------------------------ the window's one comparison

_NOW = datetime(2026, 11, 26, tzinfo=UTC)
_moments = st.datetimes(
    min_value=datetime(2026, 10, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)
_stamps = st.one_of(
    _moments.map(format_timestamp),
    _moments.map(lambda m: format_timestamp(m)[:-1]),  # a proper prefix of a normal form
    _moments.map(lambda m: format_timestamp(m) + "\0"),
    st.text(alphabet="0123456789-T:.Z\0\uffff", max_size=26),
)


@settings(max_examples=500, deadline=None)
@given(
    drawn=_stamps,
    since=st.one_of(st.none(), _moments),
    until=st.one_of(st.none(), _moments),
    now=st.one_of(st.just(_NOW), _moments),
    edge=st.sampled_from([None, "since", "until", "oldest", "newest"]),
    shift=st.sampled_from(["", "\0", "-"]),
)
def test_the_windows_one_comparison_is_its_rules(
    drawn: str,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    edge: str | None,
    shift: str,
) -> None:
    """``lowest <= t < upper`` holds exactly when `t` is selected and Metronome would take it,
    for any string (the loops that use it skip both checks); the bounds themselves, and strings
    just past or short of them, are drawn on purpose."""
    window = Window(now=now, since=since, until=until)
    stamp = drawn
    if edge is not None:
        since_, until_, oldest, newest = window.bounds()
        bound = {"since": since_, "until": until_, "oldest": oldest, "newest": newest}[edge]
        if bound is not None:
            stamp = bound[:-1] if shift == "-" else bound + shift
    lowest, upper = window.clear()
    expected = window.selects(stamp) and window.ingest_problem(stamp) is None
    assert (lowest <= stamp < upper) == expected
