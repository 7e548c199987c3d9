"""docs/deploy/: the recipes parse, and their commands are valid segmetro invocations.

Each command is parsed by the real CLI (click's ``make_context``, which checks every option
and argument without running anything), with the shard count and the scheduler's index
variable checked against the manifest's own parallelism.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
import typer.main
import yaml

from segmetro.cli import app
from segmetro.mapping import load_mapping_text
from segmetro.sources import parse_shard
from segmetro.state import is_database_url
from tests.support import ROOT

DEPLOY = ROOT / "docs" / "deploy"


#: Typer's own copy of click (typer >= 0.17 vendors it): what the CLI raises on a bad argv.
UsageError = typer.BadParameter.__mro__[1]


def parsed(argv: list[str]) -> Any:
    """The click context the CLI would run ``argv`` with; raises on anything it would refuse."""
    assert argv[0] == "segmetro"
    group: Any = typer.main.get_command(app)
    with group.make_context("segmetro", argv[1:2]) as parent:
        command = group.get_command(parent, argv[1])
        assert command is not None, f"no command {argv[1]!r}"
        return command.make_context(argv[1], argv[2:], parent=parent)


def check_sharded_replay(argv: list[str], shards: int, variable: str) -> None:
    ctx = parsed(argv)
    assert ctx.info_name == "replay"
    assert ctx.params["shard"] == f"auto/{shards}"
    assert is_database_url(ctx.params["state"])
    assert ":" not in ctx.params["state"].split("//", 1)[1].split("@", 1)[0]  # no password
    assert ctx.params["inputs"]
    for index in range(shards):
        shard = parse_shard(ctx.params["shard"], {variable: str(index)})
        assert (shard.index, shard.count, shard.origin) == (index, shards, variable)


def job_spec_container(spec: dict[str, Any]) -> tuple[list[str], int]:
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"]
    (container,) = spec["template"]["spec"]["containers"]
    return [*container["command"], *container["args"]], int(spec["completions"])


def test_kubernetes_indexed_job() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes-indexed-job.yaml").read_text()))
    (job,) = [d for d in docs if d["kind"] == "Job"]
    argv, shards = job_spec_container(job["spec"])
    check_sharded_replay(argv, shards, "JOB_COMPLETION_INDEX")
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    mapping = load_mapping_text(config["data"]["mapping.yaml"], name="segmetro-mapping")
    assert [m.name for m in mapping.mappings] == ["usage"]


def test_kubernetes_cronjob() -> None:
    (cron,) = yaml.safe_load_all((DEPLOY / "kubernetes-cronjob.yaml").read_text())
    assert cron["kind"] == "CronJob"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    argv, shards = job_spec_container(cron["spec"]["jobTemplate"]["spec"])
    check_sharded_replay(argv, shards, "JOB_COMPLETION_INDEX")


def test_aws_batch_array_job() -> None:
    definition = orjson.loads((DEPLOY / "aws-batch-job-definition.json").read_bytes())
    submit = orjson.loads((DEPLOY / "aws-batch-submit-job.json").read_bytes())
    assert submit["jobDefinition"] == definition["jobDefinitionName"]
    secrets = {s["name"] for s in definition["containerProperties"]["secrets"]}
    assert {"METRONOME_BEARER_TOKEN", "PGPASSWORD"} <= secrets
    check_sharded_replay(
        definition["containerProperties"]["command"],
        int(submit["arrayProperties"]["size"]),
        "AWS_BATCH_JOB_ARRAY_INDEX",
    )


def test_github_actions_matrix() -> None:
    workflow = yaml.safe_load((DEPLOY / "github-actions.yml").read_text())
    job = workflow["jobs"]["replay"]
    matrix = job["strategy"]["matrix"]["shard"]
    assert job["env"]["SEGMETRO_SHARD_INDEX"] == "${{ matrix.shard }}"
    (step,) = [s for s in job["steps"] if s.get("name") == "replay this shard"]
    assert matrix == list(range(len(matrix)))
    check_sharded_replay(shlex.split(step["run"]), len(matrix), "SEGMETRO_SHARD_INDEX")


def test_the_check_refuses_what_the_cli_refuses() -> None:
    assert UsageError.__name__ == "UsageError"
    with pytest.raises(UsageError, match="No such option"):
        parsed(["segmetro", "replay", "-m", "m.yaml", "--shards", "auto/4", "in"])
    # typer < 0.29 (pinned) words it as click does, "... not a valid float range"; 0.29's
    # pydantic says "... a valid number"
    with pytest.raises(typer.BadParameter, match=r"not a valid float|a valid number"):
        parsed(["segmetro", "replay", "-m", "m.yaml", "--rate", "fast", "in"])
    with pytest.raises(UsageError, match="Missing parameter: mapping"):
        parsed(["segmetro", "replay", "--shard", "auto/4", "in"])
    assert parsed(["segmetro", "map", "-m", "m.yaml", "--shard", "0/2", "in"]).params["shard"]
    assert not Path("m.yaml").exists()
