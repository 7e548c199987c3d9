"""Print segmetro's agreement with Segment's golden answers, per directive and for triggers.

    python tests/segment_oracle/agreement.py                 # the table
    python tests/segment_oracle/agreement.py --show 5        # and 5 disagreements per class
    python tests/segment_oracle/agreement.py --only @path --show 50

The comparison rules live in tests/test_segment_golden.py and tests/test_triggers_golden.py;
this script only counts what they decide.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.test_segment_golden import CLASSES, Verdict, difference_for, verdicts
from tests.test_triggers_golden import trigger_verdicts


def shows_segments_reason(verdict: Verdict) -> bool:
    """Whether segmetro's refusal quotes Segment's reason (its first one, without the path)."""
    first = verdict.segment.detail.splitlines()[0] if verdict.segment.detail else ""
    reason = re.sub(r"^/\S*\s+", "", first).rstrip(".")
    return bool(reason) and reason in verdict.segmetro.detail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", type=int, default=0, help="disagreements to print per class")
    parser.add_argument("--only", action="append", help="a class to report (repeatable)")
    args = parser.parse_args()
    wanted = args.only or [*CLASSES, "triggers"]
    print(
        f"{'class':18} {'cases':>6} {'agree':>6} {'rate':>7}  validation/throw/value"
        "  [both refuse: segmetro quotes Segment's reason]"
    )
    total = agreed = 0
    shown: list[str] = []
    for name in wanted:
        if name == "triggers":
            results = trigger_verdicts()
            listed = 0
            refused, quoted = [], 0
        else:
            results = verdicts(name)
            listed = sum(1 for v in results if not v.agrees and difference_for(v.case))
            refused = [v for v in results if v.segment.kind == v.segmetro.kind == "refused"]
            quoted = sum(shows_segments_reason(v) for v in refused)
        wrong = [v for v in results if not v.agrees]
        kinds = Counter(v.kind for v in wrong)
        ok = len(results) - len(wrong)
        total += len(results)
        agreed += ok
        rate = 100.0 * ok / len(results) if results else 100.0
        note = f"  [{quoted}/{len(refused)}]" if refused else ""
        note += f"  ({listed} listed as differences)" if listed else ""
        print(
            f"{name:18} {len(results):6} {ok:6} {rate:6.1f}%  "
            f"{kinds['validation']}/{kinds['throw']}/{kinds['value']}{note}"
        )
        shown.extend(v.describe() for v in wrong[: args.show])
    print(f"{'all':18} {total:6} {agreed:6} {100.0 * agreed / max(total, 1):6.1f}%")
    for text in shown:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
