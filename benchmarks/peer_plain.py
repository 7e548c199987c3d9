"""The script a user would write instead of ``segmetro map``, for the easy export's mapping.

Standard library ``json`` and ``gzip``, jsonpath-ng for the field paths (parsed once),
``datetime.fromisoformat`` to bring each timestamp to Metronome's UTC millisecond form, and a set
of the ``transaction_id`` values already written to drop re-deliveries. No rejects file, no
window check, no output rules: an event with a missing field is written with ``null``.

    python benchmarks/peer_plain.py export/events/*.jsonl.gz > events.jsonl
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from jsonpath_ng import parse

#: gen_export.MAPPING_YAML: which messages, and where each field comes from
EVENTS = {"API Call", "Job Completed"}
FIELDS = {
    "transaction_id": parse("$.messageId"),
    "customer_id": parse("$.context.groupId"),
    "event_type": parse("$.event"),
    "timestamp": parse("$.timestamp"),
    "properties": parse("$.properties"),
}


def main(paths: Sequence[str]) -> int:
    seen: set[str] = set()
    write = sys.stdout.write
    for path in paths:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                message = json.loads(line)
                if message.get("type") != "track" or message.get("event") not in EVENTS:
                    continue
                event = {}
                for name, expr in FIELDS.items():
                    found = expr.find(message)
                    event[name] = found[0].value if found else None
                moment = datetime.fromisoformat(event["timestamp"]).astimezone(UTC)
                event["timestamp"] = moment.isoformat(timespec="milliseconds").replace(
                    "+00:00", "Z"
                )
                if event["transaction_id"] in seen:
                    continue
                seen.add(event["transaction_id"])
                write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
