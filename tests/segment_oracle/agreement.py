"""Print segmetro's agreement with Segment's golden answers, per directive and for triggers.

"agree" counts raw agreement; cases covered by DIFFERENCES (which the tests accept) are noted.

    python tests/segment_oracle/agreement.py                 # the table
    python tests/segment_oracle/agreement.py --show 5        # and 5 disagreements per class
    python tests/segment_oracle/agreement.py --only @path --kind value --show 50
    python tests/segment_oracle/agreement.py --id m13 --id t4-e9  # cases, agreeing or not

The comparison rules live in tests/test_segment_golden.py and tests/test_triggers_golden.py;
this script only counts what they decide.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.test_segment_golden import CLASSES, difference_for, quotes_segments_reason, verdicts
from tests.test_triggers_golden import trigger_verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", type=int, default=0, help="disagreements to print per class")
    parser.add_argument("--only", action="append", help="a class to report (repeatable)")
    parser.add_argument("--kind", choices=("validation", "throw", "value"), help="show only these")
    parser.add_argument("--id", action="append", help="cases to print (m13: all of expression 13)")
    args = parser.parse_args()
    if args.id:
        everything = [*verdicts(), *trigger_verdicts()]
        for verdict in everything:
            if any(verdict.case.id == n or verdict.case.id.startswith(n + "-") for n in args.id):
                print(("agrees  " if verdict.agrees else "DIFFERS ") + verdict.describe())
        return 0
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
            quoted = sum(quotes_segments_reason(v) for v in refused)
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
        picked = [v for v in wrong if args.kind in (None, v.kind)]
        shown.extend(v.describe() for v in picked[: args.show])
    print(f"{'all':18} {total:6} {agreed:6} {100.0 * agreed / max(total, 1):6.1f}%")
    for text in shown:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
