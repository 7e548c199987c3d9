"""``--report FILE.html``: one self-contained page of a dry run, a diff or a verify, for sign-off.

The page is rendered (by Jinja2, autoescaped) from the command's ``--json`` object and nothing
else, so every number on it is a ``--json`` number. It holds aggregates only (counts by day,
event type, reason, cause, metric, and the few sample diffs the JSON carries), so a plan of a
million events is still a small page. CSS and the SVG charts are inline; the page loads
nothing: no script, font, image or stylesheet from anywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from segmetro.errors import ConfigError

__all__ = ["render_report", "write_report"]

#: Colour of each event_type's part of a day's bar, in the order the types first appear.
PALETTE = ("#2f6fdf", "#e8833a", "#3aa870", "#c2439b", "#8c6bd6", "#c9a227", "#4bb3c8", "#777")
CHART_HEIGHT = 160
BAR_WIDTH = 28
BAR_GAP = 10
TOP = 10


@cache
def _template() -> Any:
    from jinja2 import Environment

    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    source = resources.files("segmetro").joinpath("report.html.j2").read_text("utf-8")
    return env.from_string(source)


def _bars(days: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Stacked bars, one per day, laid out for the SVG: heights scaled to the largest day."""
    types = sorted({t for counts in days.values() for t in counts})
    colour = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(types)}
    peak = max((sum(c.values()) for c in days.values()), default=0) or 1
    bars = []
    for index, (day, counts) in enumerate(sorted(days.items())):
        x = BAR_GAP + index * (BAR_WIDTH + BAR_GAP)
        y = float(CHART_HEIGHT)
        parts = []
        for event_type in types:
            n = counts.get(event_type, 0)
            if not n:
                continue
            height = n / peak * CHART_HEIGHT
            y -= height
            parts.append(
                {"type": event_type, "n": n, "y": y, "h": height, "fill": colour[event_type]}
            )
        bars.append({"day": day, "x": x, "total": sum(counts.values()), "parts": parts})
    width = BAR_GAP + len(bars) * (BAR_WIDTH + BAR_GAP)
    return {
        "bars": bars,
        "legend": [(t, colour[t]) for t in types],
        "width": max(width, 120),
        "height": CHART_HEIGHT,
        "bar_width": BAR_WIDTH,
    }


def _plan_view(data: dict[str, Any]) -> dict[str, Any]:
    days = data.get("sent_by_day", {})
    totals = [
        ("events read", data["read"], "read"),
        ("would send (new)", data["new"], "new"),
        ("unchanged (sent before)", data["unchanged"], "unchanged"),
        ("changed", data["changed"], "changed"),
        ("filtered", data["filtered"], "filtered"),
        ("rejected", data["rejected"], "rejected"),
    ]
    return {
        "totals": totals,
        "window": f"{min(days)} to {max(days)}" if days else "no events",
        "inputs": data.get("inputs_total"),
        "chart": _bars(days),
        "rejects": sorted(data["rejected_by_reason"].items(), key=lambda i: -i[1]),
        "diffs": data.get("changed_sample", []),
        "billing": _billing_view(data.get("billing")),
    }


def _billing_view(billing: dict[str, Any] | None) -> dict[str, Any] | None:
    if billing is None:
        return None
    days = sorted({d for u in billing["usage"] for d in u["by_day"]})
    return {
        "summary": [
            ("events previewed", billing["events"], "billing-events"),
            ("would bill", billing["billed"], "billing-billed"),
            ("would bill nothing", billing["bill_nothing"], "billing-nothing"),
        ],
        "causes": list(billing["bill_nothing_by_cause"].items()),
        "losses": billing["losses"][:TOP],
        "more_losses": max(0, len(billing["losses"]) - TOP),
        "days": days,
        "usage": billing["usage"],
        "sql": billing["not_previewed_sql"],
        "archived": billing["archived_left_out"],
        "sources": billing["sources"],
    }


def _diff_view(data: dict[str, Any]) -> dict[str, Any]:
    totals = [
        ("added", data["added"], "added"),
        ("removed", data["removed"], "removed"),
        ("changed", data["changed"], "changed"),
        ("unchanged", data["unchanged"], "unchanged"),
    ]
    rejected = dict(data["new"]["rejected_by_reason"])
    return {
        "totals": totals,
        "rejects": sorted(rejected.items(), key=lambda i: -i[1]),
        "diffs": data["sample"],
    }


def _verify_view(data: dict[str, Any]) -> dict[str, Any]:
    totals = [
        ("sampled", data["sampled"], "sampled"),
        ("found", data["found"], "found"),
        ("missing", data["missing"], "missing"),
        ("duplicated", data["duplicated"], "duplicated"),
        ("differ from what was sent", data["different"], "different"),
    ]
    return {"totals": totals, "verify_billing": data["billing"], "note": data["nothing_checked"]}


_VIEWS = {"plan": _plan_view, "diff": _diff_view, "verify": _verify_view}
_TITLES = {
    "plan": "Dry run: what a replay would send and bill",
    "diff": "Mapping diff: what changes between two mappings",
    "verify": "Verify: what Metronome holds of a delivered sample",
}


def render_report(
    kind: str, data: dict[str, Any], *, command: str, now: datetime | None = None
) -> str:
    """The page for one command's ``--json`` object (`kind`: plan, diff or verify)."""
    view = _VIEWS[kind](data)
    moment = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    html: str = _template().render(
        kind=kind,
        title=_TITLES[kind],
        command=command,
        generated=moment,
        exit_code=data["exit_code"],
        **view,
    )
    return html


def write_report(path: Path, kind: str, data: dict[str, Any], *, command: str) -> None:
    """Write the page; a path that cannot be written is a configuration error (exit 2)."""
    page = render_report(kind, data, command=command)
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--report {path}: cannot write ({exc.strerror or exc})") from None
