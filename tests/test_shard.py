"""``--shard K/N``: a stable split of the input objects whose union is the unsharded run."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import s3server
from typer.testing import CliRunner

from segmetro.cli import app
from segmetro.errors import ConfigError
from segmetro.fake_metronome import FakeMetronome
from segmetro.sources import SHARD_INDEX_VARIABLES, Shard, open_inputs, parse_shard
from tests.exports import messages, write_jsonl
from tests.support import SAMPLES, SAMPLES_NOW, SAMPLES_NOW_DT, TOKEN

MAPPING = str(SAMPLES / "mapping.yaml")
S3Server = s3server.S3Server
s3 = s3server.s3
s3_server = s3server.s3_server


def multi_object_export(root: Path, objects: int = 12, per_object: int = 40) -> Path:
    """An export of many objects with distinct messageIds (no duplicate spans two objects)."""
    root.mkdir(parents=True, exist_ok=True)
    start = SAMPLES_NOW_DT - timedelta(days=3)
    for i in range(objects):
        items = list(messages(per_object, start=start, seed=i, prefix=f"o{i}"))
        for m in items:
            m["event"] = "API Call"
        if i % 3 == 0:
            (root / f"part-{i:03d}.jsonl.gz").write_bytes(
                gzip.compress(b"".join(orjson.dumps(m) + b"\n" for m in items))
            )
        else:
            write_jsonl(root / f"part-{i:03d}.jsonl", items)
    return root


def test_parse_shard_forms_and_errors() -> None:
    assert parse_shard("2/4", {}) == Shard(2, 4)
    assert parse_shard(" 0/1 ", {}) == Shard(0, 1)
    for variable in SHARD_INDEX_VARIABLES:
        shard = parse_shard("auto/8", {variable: "5"})
        assert shard == Shard(5, 8, variable)
        assert shard.describe() == f"shard 5/8 (index from ${variable})"
    agreeing = {"JOB_COMPLETION_INDEX": "1", "AWS_BATCH_JOB_ARRAY_INDEX": "1"}
    assert parse_shard("auto/2", agreeing).origin == "JOB_COMPLETION_INDEX"
    bad = {
        "4/4": "index 4 is not between 0 and 3",
        "-1/4": "index -1 is not between 0 and 3",
        "1/0": "N must be between 1",
        "x/4": "K must be a whole number",
        "1": "expected K/N",
        "auto/4": "none of SEGMETRO_SHARD_INDEX",
    }
    for spec, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            parse_shard(spec, {})
    with pytest.raises(ConfigError, match=r"disagree \(JOB_COMPLETION_INDEX=1, AWS_BATCH"):
        parse_shard("auto/2", {"JOB_COMPLETION_INDEX": "1", "AWS_BATCH_JOB_ARRAY_INDEX": "0"})
    with pytest.raises(ConfigError, match=r"\$JOB_COMPLETION_INDEX must be a whole number"):
        parse_shard("auto/2", {"JOB_COMPLETION_INDEX": "one"})


def test_every_name_belongs_to_exactly_one_shard_whatever_the_listing() -> None:
    names = [f"s3://bucket/segment-logs/src/1700000000000/part-{i}.gz" for i in range(500)]
    for count in (1, 2, 3, 4, 7):
        owners = [[k for k in range(count) if Shard(k, count).owns(n)] for n in names]
        assert all(len(o) == 1 for o in owners)
        sizes = [sum(1 for o in owners if o == [k]) for k in range(count)]
        assert min(sizes) > 0.6 * len(names) / count  # a hash spreads names, not a prefix cut
    # The split of a name does not depend on what else is listed, nor on the order.
    assert [Shard(1, 4).owns(n) for n in names[:50]] == [
        Shard(1, 4).owns(n) for n in reversed(names[:50])
    ][::-1]


def test_open_inputs_keeps_the_shards_objects_and_counts_the_rest(tmp_path: Path) -> None:
    root = multi_object_export(tmp_path / "export")
    everything = open_inputs([str(root)])
    parts = [open_inputs([str(root)], shard=Shard(k, 4)) for k in range(4)]
    names = sorted(o.name for p in parts for o in p.objects)
    assert names == sorted(o.name for o in everything.objects)
    for part in parts:
        assert len(part.objects) + part.other_shards == len(everything.objects)
        assert part.total_bytes == sum(o.size or 0 for o in part.objects)
        # The shard reads its objects in the listing's order.
        order = [o.name for o in everything.objects if o.name in {p.name for p in part.objects}]
        assert [o.name for o in part.objects] == order
    with pytest.raises(ConfigError, match="stdin and pipes cannot be split"):
        open_inputs(["-"], shard=Shard(0, 2))


def test_s3_objects_split_by_key(s3: S3Server) -> None:
    for i in range(20):
        s3.put_jsonl("logs", f"segment-logs/src/1764000000000/p{i}.gz", [b'{"type":"track"}'])
    listing = open_inputs(["s3://logs/segment-logs/"], endpoint_url=s3.endpoint_url)
    shards = [
        open_inputs(["s3://logs/segment-logs/"], endpoint_url=s3.endpoint_url, shard=Shard(k, 3))
        for k in range(3)
    ]
    for k, part in enumerate(shards):
        assert [o.name for o in part.objects] == [
            o.name for o in listing.objects if Shard(k, 3).owns(o.name)
        ]
    assert sum(len(p.objects) for p in shards) == len(listing.objects) == 20


def _map(runner: CliRunner, out: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(
        app, ["map", "-m", MAPPING, "--now", SAMPLES_NOW, "-q", "-o", str(out), *args], env=env
    )
    assert result.exit_code == 0, result.output
    return result.stderr


@pytest.mark.parametrize("count", [1, 2, 4])
def test_map_shards_union_is_the_unsharded_output(
    runner: CliRunner, tmp_path: Path, count: int
) -> None:
    root = multi_object_export(tmp_path / "export")
    _map(runner, tmp_path / "all.jsonl", str(root))
    whole = (tmp_path / "all.jsonl").read_bytes().splitlines()
    union: list[bytes] = []
    for k in range(count):
        out = tmp_path / f"shard-{k}.jsonl"
        said = _map(runner, out, "--shard", f"auto/{count}", str(root),
                    env={"JOB_COMPLETION_INDEX": str(k)})  # fmt: skip
        assert f"shard {k}/{count} (index from $JOB_COMPLETION_INDEX)" in said
        union.extend(out.read_bytes().splitlines())
    assert len(whole) == 12 * 40
    assert sorted(union) == sorted(whole)
    workers = tmp_path / "workers.jsonl"
    _map(runner, workers, "--shard", f"0/{count}", "--workers", "2", str(root))
    assert set(workers.read_bytes().splitlines()) <= set(whole)


#: the dry run's counts that shards split between them
PLAN_COUNTS = ("read", "matched", "filtered", "rejected", "duplicates", "emitted", "new",
               "unchanged", "changed", "inputs_total")  # fmt: skip


def test_dry_run_shards_add_up_to_the_unsharded_plan(runner: CliRunner, tmp_path: Path) -> None:
    root = multi_object_export(tmp_path / "export")

    def plan(*args: str) -> dict[str, int]:
        result = runner.invoke(
            app,
            ["replay", "--dry-run", "-m", MAPPING, "--now", SAMPLES_NOW, "--json",
             "--state", str(tmp_path / "none.db"), *args, str(root)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        summary = orjson.loads(result.stdout)
        return {key: summary[key] for key in PLAN_COUNTS}

    whole = plan()
    parts = [plan("--shard", f"{k}/4") for k in range(4)]
    assert whole["new"] == 480
    for key in whole:
        assert sum(p[key] for p in parts) == whole[key]


def test_replay_shards_deliver_the_unsharded_events(
    runner: CliRunner, tmp_path: Path, fake_metronome: Callable[..., FakeMetronome]
) -> None:
    """Shards with a state file each send, between them, exactly what one run sends."""
    root = multi_object_export(tmp_path / "export")

    def replay(server: FakeMetronome, state: Path, *args: str) -> dict[str, object]:
        result = runner.invoke(
            app,
            ["replay", "-m", MAPPING, "--now", SAMPLES_NOW, "--api-url", server.url, "-q",
             "--json", "--state", str(state), *args, str(root)],
            env={"METRONOME_BEARER_TOKEN": TOKEN},
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        return dict(orjson.loads(result.stdout))

    single = fake_metronome()
    replay(single, tmp_path / "single.db")
    sharded = fake_metronome()
    sent = [replay(sharded, tmp_path / f"s{k}.db", "--shard", f"{k}/3")["sent"] for k in range(3)]

    def events(server: FakeMetronome) -> list[bytes]:
        return sorted(orjson.dumps(e) for e in server.snapshot().events)

    assert events(sharded) == events(single)
    assert sum(int(str(n)) for n in sent) == len(events(single)) == 480
    assert sharded.snapshot(include_events=False).duplicates_ignored == 0
