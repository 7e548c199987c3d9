"""The fast paths of `segmetro map` give byte-identical output to the general paths.

Random Segment-like events and random mappings are mapped twice: with the fast paths (simple
JSONPaths as dict lookups, the compiled whole-mapping function, the timestamp normal-form check,
one serialisation shared by the duplicate check and the output) and with every one of them off
(`fastpaths.disabled()`: jsonpath-ng, `Mapping.map`, the full timestamp parser, `select`). The
output file, the rejects file and the counts must be the same bytes.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmetro.mapping import fastpaths, load_mapping_text, normalize_timestamp
from segmetro.mapping.timestamps import is_normal_form
from segmetro.pipeline import run_map
from segmetro.sources import open_inputs
from segmetro.window import Window

NOW = "2026-11-26T00:00:00Z"

# ---------------------------------------------------------------------------------- events

normal_ts = st.builds(
    lambda d, h, m, s, ms: f"2026-11-{d:02d}T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z",
    st.integers(1, 30),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
)
odd_ts = st.sampled_from(
    [
        "2026-W47-1T17:16:57.455Z",  # ISO week date: fromisoformat takes it, the normal form not
        "2026-11-23T17:16:5\u0663.455Z",  # an Arabic-Indic digit
        "2026-11-23T17:16:57.\u066455Z",
        "2026-02-30T10:00:00.000Z",
        "2026-11-31T10:00:00.000Z",
        "2026-11-23T24:00:00.000Z",
        "2026-11-23T17:16:60.000Z",
        "0000-11-23T17:16:57.455Z",
        "2026-11-23T17:16:57.455+01:00",
        "2026-11-23 17:16:57.455Z",
        "2026-11-23T17:16:57.45Z",
        "2026-11-23T17:16:57.4555Z",
        "2026-11-23t17:16:57.455z",
        "2026-11-23",
        "2026-11-25T01:02:03Z",
        "1700000000",
        "",
        "  2026-11-23T17:16:57.455Z",
        "2025-01-01T00:00:00.000Z",  # too old
        "2026-12-25T00:00:00.000Z",  # too new
    ]
)
timestamps = st.one_of(
    normal_ts,
    odd_ts,
    normal_ts,
    st.integers(1_790_000_000, 1_800_000_000),
    st.floats(1.79e12, 1.8e12, allow_nan=False),
    st.none(),
    st.booleans(),
    st.text(alphabet="0123456789-T:.Z W+\u0663", min_size=20, max_size=26),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "abc", "API Call", "Job Completed", "x" * 130, "0", "1.5"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c", "id"]), children, max_size=3),
    ),
    max_leaves=8,
)
ids = st.one_of(
    st.sampled_from(["m1", "m2", "m3", "m4", "m5", "m6"]),
    st.sampled_from(["m1", "m2", "m3", "m4", "m5", "m6"]),
    st.sampled_from(["", "x" * 129]),
    st.integers(1, 5),
    st.none(),
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": draw(st.sampled_from(["track", "track", "identify", 7])),
        "event": draw(st.sampled_from(["API Call", "Job Completed", "Seat Added", 3, None])),
        "messageId": draw(ids),
        "timestamp": draw(timestamps),
        "context": draw(
            st.one_of(
                st.just({"groupId": "g1"}),
                st.fixed_dictionaries(
                    {"groupId": st.one_of(st.sampled_from(["g1", "g2", ""]), scalars)}
                ),
                values,
            )
        ),
        "properties": draw(
            st.one_of(st.dictionaries(st.sampled_from(["a", "b", "n"]), values, max_size=3), values)
        ),
        "userId": draw(st.one_of(st.sampled_from(["u1", "u2"]), scalars)),
    }
    for key in draw(st.sets(st.sampled_from(sorted(event)), max_size=2)):
        del event[key]
    return event


# -------------------------------------------------------------------------------- mappings

FIELD_CHOICES: dict[str, list[Any]] = {
    "transaction_id": [
        "$.messageId",
        "$['messageId']",
        "$.context.groupId",
        {"@template": "{{messageId}}-x"},
        "$..messageId",
        "fixed",
    ],
    "customer_id": ["$.context.groupId", "$.userId", "$.properties.a", "acme", "$.context[0]"],
    "event_type": ["$.event", "api_call", {"@case": {"operator": "lower", "value": "$.event"}}],
    "timestamp": ["$.timestamp", "$.properties.a", {"@string": "$.timestamp"}],
    "properties": [
        "$.properties",
        "$.context",
        {"a": "$.properties.a", "n": "$.properties.n", "k": 5},
        "$.properties.a",
        None,
    ],
}
TRIGGERS = [None, 'type = "track"', 'event = "API Call" or event = "Job Completed"', "bad ="]


@st.composite
def mappings(draw: st.DrawFn) -> str:
    items = []
    for n in range(draw(st.integers(1, 2))):
        fields = {}
        for name, choices in FIELD_CHOICES.items():
            # the common mapping (first choice) half of the time: the fast path's home ground
            choice = draw(st.sampled_from([choices[0]] * len(choices) + choices))
            if choice is not None:
                fields[name] = choice
        if n == 1 and draw(st.booleans()):
            fields["transaction_id"] = {"@template": "{{messageId}}-second"}
        item: dict[str, Any] = {"name": f"m{n}", "fields": fields}
        trigger = draw(st.sampled_from(TRIGGERS[:-1]))
        if trigger is not None:
            item["trigger"] = trigger
        if draw(st.booleans()):
            item["string_properties"] = True
        items.append(item)
    return json.dumps({"version": 1, "mappings": items})


# ------------------------------------------------------------------------------------ runs


def run(text: str, path: Path, *, since: str | None, until: str | None) -> tuple[bytes, bytes, Any]:
    mapping_set = load_mapping_text(text, name="m.yaml")
    out = io.BytesIO()
    rejects = path.parent / f"rejects-{fastpaths.enabled()}.jsonl"
    report = run_map(
        mapping_set,
        open_inputs([str(path)]),
        window=Window.from_options(since=since, until=until, now=NOW),
        out=out,
        rejects_path=rejects,
    )
    shown = [r.to_json() for r in report.rejects]
    return out.getvalue(), rejects.read_bytes(), (report.counts.to_json(), shown)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    text=mappings(),
    batch=st.lists(events(), min_size=1, max_size=25),
    repeats=st.lists(st.integers(0, 24), max_size=4),
    window=st.sampled_from(
        [(None, None), ("2026-11-10", None), (None, "2026-11-20"), ("2026-11-05", "2026-11-25")]
    ),
)
def test_fast_paths_match_general_paths(
    text: str,
    batch: list[dict[str, Any]],
    repeats: list[int],
    window: tuple[str | None, str | None],
) -> None:
    # re-deliveries: the same message again (duplicates) or changed (conflicts)
    for i in repeats:
        event = dict(batch[i % len(batch)])
        batch.append(event)
        changed = dict(event, properties={"a": len(batch)})
        batch.append(changed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in batch))
        fast = run(text, path, since=window[0], until=window[1])
        with fastpaths.disabled():
            general = run(text, path, since=window[0], until=window[1])
    assert fast[0] == general[0]
    assert fast[1] == general[1]
    assert fast[2] == general[2]


@given(value=st.one_of(timestamps, st.text(max_size=30)))
@settings(max_examples=500, deadline=None)
def test_timestamp_fast_path_matches_the_parser(value: Any) -> None:
    """normalize_timestamp with its fast path = without it (result or error message)."""

    def outcome() -> str:
        try:
            return "ok " + normalize_timestamp(value)
        except ValueError as exc:
            return f"error {exc}"

    fast = outcome()
    with fastpaths.disabled():
        general = outcome()
    assert fast == general
    if isinstance(value, str) and is_normal_form(value):
        assert fast == f"ok {value}"


def test_fast_paths_are_taken() -> None:
    """The common mapping compiles to one function and simple paths to plain lookups."""
    text = json.dumps(
        {
            "version": 1,
            "mappings": [
                {
                    "name": "usage",
                    "fields": {
                        "transaction_id": "$.messageId",
                        "customer_id": "$.context.groupId",
                        "timestamp": "$.timestamp",
                        "event_type": "$.event",
                        "properties": "$.properties",
                    },
                }
            ],
        }
    )
    event = {
        "messageId": "m",
        "context": {"groupId": "g"},
        "timestamp": "2026-11-23T17:16:57.455Z",
        "event": "API Call",
        "properties": {"n": 1},
    }
    mapping = load_mapping_text(text).mappings[0]
    assert mapping.fast is not None
    assert mapping.fast(event) == {
        "transaction_id": "m",
        "customer_id": "g",
        "event_type": "API Call",
        "timestamp": "2026-11-23T17:16:57.455Z",
        "properties": {"n": 1},
    }
    assert mapping.fast(dict(event, timestamp="2026-W47-1T17:16:57.455Z")) is None
    assert mapping.fast(dict(event, messageId=5)) is None
    with fastpaths.disabled():
        assert load_mapping_text(text).mappings[0].fast is None


@pytest.mark.parametrize("value", ["2026-W47-1T17:16:57.455Z", "2026-11-23T17:16:5\u0663.455Z"])
def test_not_normal_form(value: str) -> None:
    assert not is_normal_form(value)
