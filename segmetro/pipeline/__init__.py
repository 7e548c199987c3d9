"""Composing the stages into the commands' runs; every function returns a report, none prints.

The package owns what happens to an event between its source and its destination:

* ``select``: the one selection (map, window, in-run duplicates) every command runs;
* ``maps``: ``segmetro map`` and ``validate --sample``; ``workers``: ``map --workers N``;
* ``resume``: which inputs a run skips or resumes from, by their checkpoints;
* ``ledger``: the one classification against what was sent (``new`` / ``unchanged`` /
  ``changed``), for replay and the plan, and which destination a dry run plans against;
* ``rejects``: where rejects are counted and written; ``outputs``: what a run may write over;
* ``replay``: sending, with the run's state: lock, run record, ledger and checkpoints.

Imports flow one way: ``cli → plan, verify → pipeline → {sources, mapping, delivery, state}``.
"""

from segmetro.pipeline.ledger import (
    LEDGER_CHUNK,
    PlanTarget,
    against_ledger,
    changed_reject,
    field_diff,
    plan_target,
)
from segmetro.pipeline.maps import MapReport, SampleReport, run_map, run_sample
from segmetro.pipeline.outputs import check_outputs, replaced_at_end
from segmetro.pipeline.rejects import SHOWN_REJECTS, RejectSink, default_rejects_path
from segmetro.pipeline.replay import ReplayReport, replay_with_state, run_replay
from segmetro.pipeline.resume import (
    CheckpointKey,
    Resume,
    plan_resume,
    read_resumed,
    run_signature,
)
from segmetro.pipeline.select import deduplicate, select, selected

__all__ = [
    "LEDGER_CHUNK",
    "SHOWN_REJECTS",
    "CheckpointKey",
    "MapReport",
    "PlanTarget",
    "RejectSink",
    "ReplayReport",
    "Resume",
    "SampleReport",
    "against_ledger",
    "changed_reject",
    "check_outputs",
    "deduplicate",
    "default_rejects_path",
    "field_diff",
    "plan_resume",
    "plan_target",
    "read_resumed",
    "replaced_at_end",
    "replay_with_state",
    "run_map",
    "run_replay",
    "run_sample",
    "run_signature",
    "select",
    "selected",
]
