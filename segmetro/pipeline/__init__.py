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

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# eager: the submodule ``select`` would otherwise shadow the function of the same name
from segmetro.pipeline.select import deduplicate, select, selected

if TYPE_CHECKING:
    from segmetro.pipeline.ledger import (
        LEDGER_CHUNK,
        PlanTarget,
        against_ledger,
        changed_reject,
        concurrent_conflict,
        field_diff,
        plan_target,
    )
    from segmetro.pipeline.maps import MapReport, SampleReport, run_map, run_sample
    from segmetro.pipeline.outputs import check_outputs, replaced_at_end
    from segmetro.pipeline.rejects import SHOWN_REJECTS, RejectSink
    from segmetro.pipeline.replay import ReplayReport, replay_with_state, run_replay
    from segmetro.pipeline.resume import (
        CheckpointKey,
        Resume,
        plan_resume,
        read_resumed,
        run_signature,
    )

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
    "concurrent_conflict",
    "deduplicate",
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

#: where each name lives: imported on first use, so ``segmetro map`` does not load delivery
_HOMES = {
    "CheckpointKey": "segmetro.pipeline.resume",
    "LEDGER_CHUNK": "segmetro.pipeline.ledger",
    "MapReport": "segmetro.pipeline.maps",
    "PlanTarget": "segmetro.pipeline.ledger",
    "RejectSink": "segmetro.pipeline.rejects",
    "ReplayReport": "segmetro.pipeline.replay",
    "Resume": "segmetro.pipeline.resume",
    "SHOWN_REJECTS": "segmetro.pipeline.rejects",
    "SampleReport": "segmetro.pipeline.maps",
    "against_ledger": "segmetro.pipeline.ledger",
    "changed_reject": "segmetro.pipeline.ledger",
    "check_outputs": "segmetro.pipeline.outputs",
    "concurrent_conflict": "segmetro.pipeline.ledger",
    "replaced_at_end": "segmetro.pipeline.outputs",
    "field_diff": "segmetro.pipeline.ledger",
    "plan_resume": "segmetro.pipeline.resume",
    "plan_target": "segmetro.pipeline.ledger",
    "read_resumed": "segmetro.pipeline.resume",
    "replay_with_state": "segmetro.pipeline.replay",
    "run_map": "segmetro.pipeline.maps",
    "run_replay": "segmetro.pipeline.replay",
    "run_sample": "segmetro.pipeline.maps",
    "run_signature": "segmetro.pipeline.resume",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
