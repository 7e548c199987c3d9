"""The command line: options in, reports out. The only module that imports typer.

Imports of the library happen inside the commands so that ``segmetro --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    name="segmetro",
    help="Replay Segment event exports into Metronome's usage-billing API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)

F = TypeVar("F", bound=Callable[..., Any])

MappingOpt = Annotated[
    Path, typer.Option("--mapping", "-m", help="Mapping file (YAML).", show_default=False)
]
InputsArg = Annotated[
    list[str],
    typer.Argument(
        help="Files, directories, globs, '-' for stdin, or s3://bucket/prefix.",
        show_default=False,
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(help="Keep events whose mapped timestamp is at or after T (RFC 3339, date, 7d)."),
]
UntilOpt = Annotated[
    str | None, typer.Option(help="Keep events whose mapped timestamp is before T.")
]
NowOpt = Annotated[
    str | None,
    typer.Option(help="Clock for Metronome's 34-day/24-hour ingest window (default: now)."),
]
RejectsOpt = Annotated[
    Path | None,
    typer.Option(help="Write every rejected event (JSON lines) here; the file is a valid INPUT."),
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3-compatible endpoint for s3:// inputs."
    ),
]
SourceIdOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--source-id",
        help="Only these Segment sources of an s3:// prefix holding several (repeatable).",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
BillingOpt = Annotated[
    bool,
    typer.Option(
        "--billing",
        help="Preview what the events would bill: the account's billable metrics and "
        "customers (GET with METRONOME_BEARER_TOKEN, or the files below); exit 1 when any "
        "event would bill nothing.",
    ),
]
MetricsFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--billable-metrics",
        help="Billable metrics offline: a saved GET /v1/billable-metrics answer (implies "
        "--billing).",
    ),
]
ReportOpt = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Also write a self-contained HTML page of the result (aggregates only; "
        "opens offline), for a sign-off.",
    ),
]
CustomersFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--customers",
        help="Customers offline: a saved GET /v1/customers answer (implies --billing).",
    ),
]


def reports_errors(command: F) -> F:
    """Turn a SegmetroError into one line on stderr and its exit code, once, here."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from segmetro import output
        from segmetro.errors import SegmetroError

        try:
            return command(*args, **kwargs)
        except SegmetroError as exc:
            output.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            output.error("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@reports_errors
def init(
    out: Annotated[Path, typer.Option("--output", "-o", help="Where to write the mapping.")] = Path(
        "mapping.yaml"
    ),
    from_segment: Annotated[
        Path | None,
        typer.Option(
            "--from-segment",
            help="Convert a Segment action's settings JSON (subscribe + mapping) instead.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a starter mapping: the defaults of Segment's Metronome (Actions) destination."""
    import orjson

    from segmetro import output
    from segmetro.errors import ConfigError
    from segmetro.mapping import load_mapping_text, mapping_from_segment, starter_mapping_text

    if from_segment is None:
        text = starter_mapping_text()
    else:
        try:
            action = orjson.loads(from_segment.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read {from_segment}: {exc.strerror}.") from None
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{from_segment} is not JSON: {exc}.") from None
        text = mapping_from_segment(action, source_name=str(from_segment))
    load_mapping_text(text, name=str(out))
    if out.is_dir():
        raise ConfigError(f"{out} is a directory; give the mapping file's path with -o.")
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists; use --force to overwrite it.")
    if not out.parent.is_dir():
        what = "is not a directory" if out.parent.exists() else "does not exist"
        raise ConfigError(f"cannot write {out}: {out.parent} {what}.")
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}.") from None
    output.info(f"wrote {out}")


@app.command()
@reports_errors
def validate(
    mapping: Annotated[Path, typer.Argument(help="Mapping file (YAML).", show_default=False)],
    sample: Annotated[
        list[str] | None,
        typer.Option(help="Run the mapping over this input and report how each field fares."),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Treat warnings as errors (exit 2).")] = False,
    now: NowOpt = None,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Check a mapping: its expressions and triggers, and optionally its effect on a sample."""
    from segmetro import output
    from segmetro.errors import ConfigError
    from segmetro.mapping import load_mapping
    from segmetro.pipeline import run_sample
    from segmetro.sources import open_inputs
    from segmetro.window import Window

    mappings = load_mapping(mapping)
    for warn in mappings.warnings:
        output.warning(str(warn))
    if strict and mappings.warnings:
        raise ConfigError(f"{mapping}: {len(mappings.warnings)} warning(s) and --strict is set.")
    names = ", ".join(m.name for m in mappings.mappings)
    output.info(f"{mapping}: ok ({len(mappings.mappings)} mapping(s): {names})")
    if not sample:
        return
    window = Window.from_options(since=None, until=None, now=now)
    report = run_sample(mappings, open_inputs(sample, endpoint_url=endpoint_url), window=window)
    output.summary(report.counts)
    for row in report.stats.rows():
        mapping_name, field_name, missing, matched = row
        if matched and missing:
            pct = 100.0 * missing / matched
            output.info(
                f"{mapping_name}: {field_name} empty in {pct:.0f}% of matched events "
                f"({missing} of {matched})"
            )
    output.rejects(report.rejects, total=report.counts.rejected_total, path=None)


@app.command("map")
@reports_errors
def map_command(
    mapping: MappingOpt,
    inputs: InputsArg,
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write events here (default: stdout).")
    ] = None,
    rejects: RejectsOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    now: NowOpt = None,
    endpoint_url: EndpointOpt = None,
    source_id: SourceIdOpt = None,
    quiet: QuietOpt = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes that read and map input files; 1 = this process only. Default: 1, "
            "or one per CPU (at most half the files) when there are 4 or more input files "
            "with 64 MiB of gzip or more between them and none holding over half of it "
            "(below that, extra processes cost more than they save). Output and rejects do "
            "not depend on it.",
            show_default=False,
        ),
    ] = None,
    billing: BillingOpt = False,
    billable_metrics: MetricsFileOpt = None,
    customers: CustomersFileOpt = None,
    api_url: Annotated[
        str,
        typer.Option(envvar="METRONOME_BASE_URL", help="Metronome API base URL (for --billing)."),
    ] = "https://api.metronome.com",
) -> None:
    """Write the exact Metronome events as JSON lines, without sending anything.

    Exit 0 when nothing was rejected (and, with --billing, every event bills), 1 when
    something was rejected or would bill nothing, 2 for a configuration error.
    """
    from segmetro import output
    from segmetro.pipeline import check_rejects_path, run_map
    from segmetro.pipeline.workers import choose_workers

    mappings, window, inputs_set = _job(
        mapping, inputs, since, until, now, endpoint_url=endpoint_url, source_id=source_id
    )
    check_rejects_path(rejects, inputs_set, overwrite=False)
    preview = _billing(billing, billable_metrics, customers, api_url)
    with (
        _open_output(out) as sink,
        output.Progress(total_bytes=inputs_set.total_bytes, quiet=quiet) as progress,
        _write_errors(out),
    ):
        report = run_map(
            mappings,
            inputs_set,
            window=window,
            out=sink,
            rejects_path=rejects,
            on_bytes=progress.advance,
            workers=workers if workers is not None else choose_workers(inputs_set.objects),
            billing=preview,
        )
    output.summary(report.counts)
    output.rejects(
        report.rejects,
        total=report.counts.rejected_total,
        path=str(rejects) if rejects is not None else None,
    )
    if preview is not None:
        output.billing(preview)
    if report.counts.rejected_total or (preview is not None and preview.exit_code):
        raise typer.Exit(1)


def _job(
    mapping: Path,
    inputs: list[str],
    since: str | None,
    until: str | None,
    now: str | None,
    *,
    endpoint_url: str | None,
    source_id: list[str] | None,
) -> tuple[Any, Any, Any]:
    """What map and replay share: the mapping, the window, and the inputs it selects."""
    from segmetro import output
    from segmetro.mapping import load_mapping
    from segmetro.sources import open_inputs
    from segmetro.window import Window

    mappings = load_mapping(mapping)
    window = Window.from_options(since=since, until=until, now=now)
    inputs_set = open_inputs(
        inputs,
        endpoint_url=endpoint_url,
        since=window.since,
        until=window.until,
        source_ids=source_id or (),
    )
    output.skipped_inputs(inputs_set)
    return mappings, window, inputs_set


def _command_line() -> str:
    """The command as typed, for a report page; the token is an environment variable."""
    return " ".join(["segmetro", *sys.argv[1:]])


def _write_report(path: Path | None, kind: str, result: Any, command: str) -> None:
    if path is None:
        return
    from segmetro.report import write_report

    write_report(path, kind, result.to_json(), command=command)


def _billing(
    enabled: bool, metrics: Path | None, customers: Path | None, api_url: str, keep: int = 0
) -> Any:
    """The billing preview to feed, or None; lists not given as files are read from the API."""
    if not (enabled or metrics or customers):
        return None
    from segmetro.billing import BillingPreview, fetch_account

    token = os.environ.get("METRONOME_BEARER_TOKEN", "")
    account = fetch_account(api_url, token, metrics_file=metrics, customers_file=customers)
    return BillingPreview(account, keep_events=100 if keep else 0)


@contextlib.contextmanager
def _write_errors(out: Path | None) -> Iterator[None]:
    """A failed write to the output (disk full, closed pipe) is one clear line, exit 2."""
    from segmetro.errors import ConfigError

    try:
        yield
    except BrokenPipeError:
        if out is not None:
            raise ConfigError(f"cannot write {out}: broken pipe.") from None
        # `map | head`: the reader has what it wanted. End quietly, as Unix tools do
        # (exit 141 = killed by SIGPIPE), and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(141) from None
    except OSError as exc:
        where = out if out is not None else "stdout"
        raise ConfigError(f"cannot write {where}: {exc.strerror}.") from None


def _open_output(out: Path | None) -> Any:
    from segmetro.errors import ConfigError

    if out is None:
        return _StdoutBytes()
    try:
        return out.open("wb")
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}.") from None


class _StdoutBytes:
    """stdout as a binary sink that is flushed, not closed, at the end."""

    def __enter__(self) -> Any:
        return sys.stdout.buffer

    def __exit__(self, *exc: object) -> None:
        sys.stdout.buffer.flush()


def main() -> None:
    """Console-script entry point."""
    app()


StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state",
        help="State file (SQLite): runs, lock, and per destination (API URL + the account of "
        "the token, known by an HMAC; the token is never stored) the checkpoints, the "
        "ledger of sent events and undeliverable events. Default: .segmetro/state.db beside "
        "the mapping.",
        show_default=False,
    ),
]


def _state_path(state: Path | None, mapping: Path) -> Path:
    return state if state is not None else mapping.resolve().parent / ".segmetro" / "state.db"


@app.command()
@reports_errors
def replay(
    mapping: MappingOpt,
    inputs: InputsArg,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Send nothing: print the plan (new / unchanged / changed / filtered / rejected) "
            "against what was sent to --api-url (with METRONOME_BEARER_TOKEN set: to its "
            "account). Needs no token; writes no state.",
        ),
    ] = False,
    state: StateOpt = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            help="Append every rejected event (JSON lines) here; the file is a valid INPUT. "
            "Default: a file of each run's own, <state dir>/rejects/<run id>.jsonl, created "
            "only when there are rejects (a dry run writes none unless given this option).",
            show_default=False,
        ),
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    now: NowOpt = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=100, help="Events per request (Metronome takes at most 100).")
    ] = 100,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Most requests in flight (adapts below this).")
    ] = 16,
    rate: Annotated[
        float | None, typer.Option(min=0.1, help="Client-side cap in events per second.")
    ] = None,
    api_url: Annotated[
        str,
        typer.Option(envvar="METRONOME_BASE_URL", help="Metronome API base URL."),
    ] = "https://api.metronome.com",
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per request.")] = 30.0,
    max_retries: Annotated[
        int,
        typer.Option(
            min=0,
            help="Retries per batch for faults: 408/409/5xx, timeouts, dropped connections. "
            "429s are not counted: a rate-limited batch waits and is re-sent until it goes "
            "through (see --max-stall).",
        ),
    ] = 8,
    max_stall: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="Seconds without any batch delivered before the run gives up (exit 3, state "
            "saved; re-run to resume). Bounds waiting on rate limits and outages.",
        ),
    ] = 900.0,
    resend_changed: Annotated[
        bool,
        typer.Option(
            "--resend-changed",
            help="Also send events whose transaction_id was sent before with a different "
            "payload. Metronome ignores them (it keeps the first); give them a new "
            "transaction_id instead.",
        ),
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON summary object on stdout.")
    ] = False,
    endpoint_url: EndpointOpt = None,
    source_id: SourceIdOpt = None,
    quiet: QuietOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Per-batch detail.")] = False,
    billing: BillingOpt = False,
    billable_metrics: MetricsFileOpt = None,
    customers: CustomersFileOpt = None,
    report_page: ReportOpt = None,
    invoice_preview: Annotated[
        int,
        typer.Option(
            min=0,
            help="Implies --billing: post the planned events of the N largest customers to "
            "previewEvents (at most 100 each; nothing is ingested) and show the draft "
            "invoice totals.",
        ),
    ] = 0,
) -> None:
    """Send the mapped events to Metronome's /v1/ingest in batches.

    The API token is read from METRONOME_BEARER_TOKEN and never printed or stored. A re-run of
    the same command resumes: finished inputs are skipped and events already delivered are not
    sent again — to the same destination (API URL and the token's account): a run to another
    URL or with another account's token starts from zero. Every reject is kept, in --rejects or
    in a file of the run's own beside the state. Exit 0: all delivered, nothing rejected. 1:
    some events rejected, changed or dead-lettered (or, with --dry-run, the plan holds rejects
    or changes). 2: configuration error. 3: fatal delivery error (token refused, API
    unreachable, no progress for --max-stall, fault retries exhausted) or the state file is
    locked by another run. 130: interrupted. State is saved in every case. Rate limits (429)
    never fail a run: segmetro paces itself to Metronome's limit and waits.
    """
    import logging

    from segmetro import output
    from segmetro.delivery import SenderConfig
    from segmetro.errors import ConfigError
    from segmetro.pipeline import check_rejects_path, replay_with_state, run_signature
    from segmetro.state import normalize_api_url

    if quiet and verbose:
        raise ConfigError("Passing both --quiet and --verbose makes no sense.")
    if not dry_run and (billing or billable_metrics or customers or report_page or invoice_preview):
        raise ConfigError(
            "--billing, --billable-metrics, --customers, --invoice-preview and --report need "
            "--dry-run"
        )
    token = os.environ.get("METRONOME_BEARER_TOKEN", "")
    if not token and not dry_run:
        raise ConfigError(
            "METRONOME_BEARER_TOKEN is not set: export your Metronome API token "
            "(or use `segmetro map` / `replay --dry-run`, which send nothing)."
        )
    if verbose:
        output.log_to_stderr(logging.DEBUG)
    mappings, window, inputs_set = _job(
        mapping, inputs, since, until, now, endpoint_url=endpoint_url, source_id=source_id
    )
    state_path = _state_path(state, mapping)
    signature = run_signature(mapping)
    check_rejects_path(rejects, inputs_set, overwrite=dry_run)
    if dry_run:
        _dry_run(
            mappings,
            inputs_set,
            window,
            state_path,
            signature=signature,
            rejects=rejects,
            api_url=api_url,
            token=token,
            resend_changed=resend_changed,
            json_out=json_out,
            quiet=quiet,
            billing=_billing(
                billing or invoice_preview > 0,
                billable_metrics,
                customers,
                api_url,
                invoice_preview,
            ),
            invoice_preview=invoice_preview,
            report=report_page,
            command=_command_line(),
        )
        return
    config = SenderConfig(
        api_url=api_url,
        token=token,
        batch_size=batch_size,
        concurrency=concurrency,
        rate=rate,
        timeout=timeout,
        max_retries=max_retries,
        max_stall=max_stall,
    )
    options = {
        "mapping": str(mapping),
        "inputs": list(inputs),
        "since": since,
        "until": until,
        "now": now,
        "api_url": normalize_api_url(api_url),
        "batch_size": batch_size,
        "concurrency": concurrency,
        "rate": rate,
        "resend_changed": resend_changed,
    }
    with output.Progress(
        total_bytes=inputs_set.total_bytes, quiet=quiet or json_out, label="replay"
    ) as progress:
        report = replay_with_state(
            mappings,
            inputs_set,
            window=window,
            sender=config,
            state_path=state_path,
            options=options,
            signature=signature,
            rejects_path=rejects,
            resend_changed=resend_changed,
            on_warning=output.warning,
            on_bytes=progress.advance,
            on_tick=lambda counts, stats: progress.update(output.delivery_status(stats)),
        )
    for warn in report.warnings:
        output.warning(warn)
    if json_out:
        output.write_json(report.to_json())
    if report.fatal is not None:
        output.error(report.fatal)
    if not json_out or report.fatal is not None:
        if report.inputs_skipped:
            output.info(
                f"{report.inputs_skipped} of {report.inputs_total} inputs already done "
                f"(state {state_path})"
            )
        output.summary(report.counts, extra=output.delivery_extra(report))
        output.rejects(
            report.rejects,
            total=report.counts.rejected_total,
            path=str(report.rejects_path) if report.rejects_path is not None else None,
            appended=rejects is not None,
        )
    raise typer.Exit(report.exit_code)


def _dry_run(
    mappings: Any,
    inputs_set: Any,
    window: Any,
    state_path: Path,
    *,
    signature: str,
    rejects: Path | None,
    api_url: str,
    token: str,
    resend_changed: bool,
    json_out: bool,
    quiet: bool,
    billing: Any,
    report: Path | None,
    command: str,
    invoice_preview: int = 0,
) -> None:
    from segmetro import output
    from segmetro.pipeline import RejectSink, plan_resume, plan_target
    from segmetro.plan import plan
    from segmetro.state import StateDB

    db = StateDB.open(state_path, readonly=True) if state_path.exists() else None
    try:
        target = plan_target(db, api_url, token)
        state = target.state
        # --resend-changed makes a replay read every input from the start; so does its plan.
        resume = (
            plan_resume(inputs_set, state, signature, window)
            if state is not None and not resend_changed
            else None
        )
        with (
            RejectSink(rejects) as sink,
            output.Progress(
                total_bytes=inputs_set.total_bytes, quiet=quiet or json_out, label="plan"
            ) as progress,
        ):
            result = plan(
                mappings,
                inputs_set,
                window=window,
                state=state,
                resume=resume,
                rejects=sink,
                on_bytes=progress.advance,
                target=target,
                billing=billing,
            )
    finally:
        if db is not None:
            db.close()
    if invoice_preview and billing is not None:
        from segmetro.billing import draft_invoices

        draft_invoices(billing, invoice_preview, api_url=api_url, token=token)
    _write_report(report, "plan", result, command)
    if json_out:
        output.write_json(result.to_json())
    else:
        output.show_plan(result)
    raise typer.Exit(result.exit_code)


@app.command()
@reports_errors
def diff(
    mapping: Annotated[
        list[Path],
        typer.Option(
            "--mapping", "-m", help="The OLD then the NEW mapping file.", show_default=False
        ),
    ],
    inputs: InputsArg,
    since: SinceOpt = None,
    until: UntilOpt = None,
    now: NowOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout.")
    ] = False,
    endpoint_url: EndpointOpt = None,
    report_page: ReportOpt = None,
) -> None:
    """Compare two versions of a mapping over the same input: events added, removed, changed.

    Exit 0 when both send exactly the same events, 1 when they differ, 2 for a bad option.
    """
    from segmetro import output
    from segmetro.errors import ConfigError
    from segmetro.mapping import load_mapping
    from segmetro.plan import diff as diff_mappings
    from segmetro.sources import open_inputs
    from segmetro.window import Window

    if len(mapping) != 2:
        raise ConfigError("diff needs exactly two mappings: -m OLD.yaml -m NEW.yaml")
    old, new = load_mapping(mapping[0]), load_mapping(mapping[1])
    window = Window.from_options(since=since, until=until, now=now)
    inputs_set = open_inputs(inputs, endpoint_url=endpoint_url)
    result = diff_mappings(old, new, inputs_set, window=window)
    _write_report(report_page, "diff", result, _command_line())
    if json_out:
        output.write_json(result.to_json())
    else:
        output.show_diff(result, old=str(mapping[0]), new=str(mapping[1]))
    raise typer.Exit(result.exit_code)


@app.command()
@reports_errors
def verify(
    state: Annotated[
        Path, typer.Option("--state", help="State file of earlier runs.", show_default=False)
    ],
    sample: Annotated[
        int, typer.Option(min=1, max=10000, help="How many delivered events to check.")
    ] = 100,
    api_url: Annotated[
        str, typer.Option(envvar="METRONOME_BASE_URL", help="Metronome API base URL.")
    ] = "https://api.metronome.com",
    now: Annotated[
        str | None, typer.Option(help="Clock for the 34-day search window (default: now).")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout.")
    ] = False,
    report_page: ReportOpt = None,
) -> None:
    """Check a sample of delivered events with Metronome's /v1/events/search.

    Samples the ledger of the destination of --api-url and METRONOME_BEARER_TOKEN. Reports
    events Metronome does not have, duplicates, and events that matched no customer or no
    billable metric. Search is heavily rate limited, so this samples gently.
    Exit 0 when every sampled event was found and matched a customer and a billable metric;
    1 when some are missing or matched no customer or no billable metric, or when nothing
    could be checked (no delivered event in the last 34 days); 3 on API errors.
    """
    import asyncio

    from segmetro import output
    from segmetro.delivery import SenderConfig
    from segmetro.errors import ConfigError, StateError
    from segmetro.state import StateDB, normalize_api_url
    from segmetro.verify import verify_sample
    from segmetro.window import Window

    if not state.exists():
        raise StateError(f"state file {state} does not exist")
    token = os.environ.get("METRONOME_BEARER_TOKEN", "")
    if not token:
        raise ConfigError("METRONOME_BEARER_TOKEN is not set: export your Metronome API token.")
    window = Window.from_options(since=None, until=None, now=now)
    config = SenderConfig(api_url=api_url, token=token)
    with StateDB.open(state, readonly=True) as db:
        destination = db.find_destination(api_url, token)
        if destination is None:
            known = "; ".join(d.describe() for d in db.destinations()) or "none"
            raise StateError(
                f"state file {state} records nothing sent to {normalize_api_url(api_url)} with "
                f"this token (destinations in it: {known}); check --api-url and "
                "METRONOME_BEARER_TOKEN."
            )
        report = asyncio.run(
            verify_sample(
                db.for_destination(destination), sample=sample, now=window.now, config=config
            )
        )
    _write_report(report_page, "verify", report, _command_line())
    if json_out:
        output.write_json(report.to_json())
    else:
        output.show_verify(report)
    raise typer.Exit(report.exit_code)


@app.command()
@reports_errors
def status(
    state: Annotated[
        Path,
        typer.Option(
            "--state",
            help="State file to describe (replay's default is .segmetro/state.db beside the "
            "mapping).",
            show_default=False,
        ),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout.")
    ] = False,
) -> None:
    """Show the runs, the lock and each destination of a state file.

    A destination is an API URL and the account of a token (shown as a short fingerprint of
    its HMAC, never the token): its ledger size, checkpoints, and the undeliverable events of
    earlier runs, open or superseded (delivered by a later run).
    """
    from segmetro import output
    from segmetro.errors import StateError
    from segmetro.state import StateDB

    if not state.exists():
        raise StateError(f"state file {state} does not exist")
    with StateDB.open(state, readonly=True) as db:
        runs = db.runs()
        checkpoints = db.checkpoints()
        ledger = db.ledger_size()
        lock = db.lock_holder()
        destinations = db.summaries()
    output.show_status(
        runs,
        checkpoints,
        ledger=ledger,
        lock=lock,
        path=str(state),
        destinations=destinations,
        as_json=json_out,
    )


@app.command()
@reports_errors
def unlock(
    state: Annotated[
        Path, typer.Option("--state", help="State file whose lock to remove.", show_default=False)
    ],
) -> None:
    """Remove a lock left by a run on another host (e.g. a container that was killed).

    A lock left by a dead process on this host is taken over automatically; a lock held by a
    live process here is never removed.
    """
    from segmetro import output
    from segmetro.errors import StateError
    from segmetro.state import StateDB

    if not state.exists():
        raise StateError(f"state file {state} does not exist")
    with StateDB.open(state) as db:
        holder = db.break_lock()
    output.info("not locked" if holder is None else f"removed the lock of {holder.describe()}")


@app.command("fake-metronome")
@reports_errors
def fake_metronome(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8080,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="METRONOME_BEARER_TOKEN",
            show_envvar=True,
            show_default=False,
            help="Bearer token to accept (default: $METRONOME_BEARER_TOKEN, else test-token).",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible faults.")] = None,
    now: Annotated[str | None, typer.Option(help="Fixed server clock (RFC 3339 or date).")] = None,
    p_429: Annotated[float, typer.Option(help="Probability of a 429.")] = 0.0,
    retry_after: Annotated[
        float | None,
        typer.Option(help="Retry-After seconds on every 429 (default: none, like Metronome)."),
    ] = None,
    retry_after_ms: Annotated[
        float | None,
        typer.Option(help="retry-after-ms on every 429 (default: none, like Metronome)."),
    ] = None,
    rate_limit_type: Annotated[
        str, typer.Option(help="X-Metronome-Rate-Limit-Type of injected 429s: client or customer.")
    ] = "client",
    p_500: Annotated[float, typer.Option(help="Probability of a 500.")] = 0.0,
    p_502: Annotated[float, typer.Option(help="Probability of a 502.")] = 0.0,
    p_503: Annotated[float, typer.Option(help="Probability of a 503.")] = 0.0,
    p_partial: Annotated[
        float, typer.Option(help="Probability of a 500 after ingesting part of the batch.")
    ] = 0.0,
    p_drop: Annotated[
        float, typer.Option(help="Probability of closing the connection without an answer.")
    ] = 0.0,
    latency_ms: Annotated[float, typer.Option(help="Added latency per request.")] = 0.0,
    latency_jitter_ms: Annotated[float, typer.Option(help="Random extra latency.")] = 0.0,
    rate_limit: Annotated[
        float,
        typer.Option(
            help="Ingest token bucket in events/s; 5000 is Metronome's documented default "
            "(0 turns it off)."
        ),
    ] = 5000.0,
    rate_burst: Annotated[
        float | None, typer.Option(help="Bucket size in events (default: one second's worth).")
    ] = None,
    rate_limit_hint: Annotated[
        bool,
        typer.Option(
            help="Send the exact wait as Retry-After and retry-after-ms on rate-limit 429s, "
            "instead of --retry-after(-ms) (Metronome sends neither)."
        ),
    ] = False,
    customer_rate_limit: Annotated[
        float | None,
        typer.Option(
            help="Token bucket per customer_id in events/s; a batch over it gets a 429 of "
            "type customer (default: none)."
        ),
    ] = None,
    customer_rate_burst: Annotated[
        float | None,
        typer.Option(help="Per-customer bucket size in events (default: one second's worth)."),
    ] = None,
    fail_status: Annotated[
        int | None, typer.Option(help="Answer every request with this status.")
    ] = None,
    fail_count: Annotated[
        int | None, typer.Option(help="Only the first N requests get --fail-status.")
    ] = None,
    search_rate: Annotated[
        float | None, typer.Option(help="Search requests per second before 429.")
    ] = None,
    known_customer: Annotated[
        list[str] | None, typer.Option(help="Customer ids search reports as matched.")
    ] = None,
    billable_event_type: Annotated[
        list[str] | None, typer.Option(help="event_types search reports as billable.")
    ] = None,
    account: Annotated[
        Path | None,
        typer.Option(
            help="Account file (customers, ingest aliases, billable metrics; see "
            "samples/account.json): served by GET /v1/billable-metrics and /v1/customers, "
            "matched in search, drafted by previewEvents."
        ),
    ] = None,
) -> None:
    """Run a local fake of Metronome's ingest and search API, to rehearse a backfill.

    It validates every request like Metronome, deduplicates by transaction_id, limits
    ingest to Metronome's default 5,000 events/s (429s without retry hints, as documented),
    and can inject faults. GET /_fake/state shows what it accepted. Stop it with Ctrl-C.
    """
    from segmetro import output
    from segmetro.fake_metronome import FakeConfig, load_account, serve
    from segmetro.window import parse_when

    clock = None
    if now is not None:
        from datetime import UTC, datetime

        clock = parse_when(now, now=datetime.now(UTC), option="--now")
    config = FakeConfig(
        token=token or "test-token",
        now=clock,
        seed=seed,
        p_429=p_429,
        retry_after=retry_after,
        retry_after_ms=retry_after_ms,
        rate_limit_type=rate_limit_type,
        p_500=p_500,
        p_502=p_502,
        p_503=p_503,
        p_partial=p_partial,
        p_drop=p_drop,
        latency_ms=latency_ms,
        latency_jitter_ms=latency_jitter_ms,
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        rate_limit_hint=rate_limit_hint,
        customer_rate_limit=customer_rate_limit,
        customer_rate_burst=customer_rate_burst,
        fail_status=fail_status,
        fail_count=fail_count,
        search_rate=search_rate,
        known_customers=frozenset(known_customer) if known_customer else None,
        billable_event_types=frozenset(billable_event_type) if billable_event_type else None,
        account=load_account(account) if account is not None else None,
    )
    state = serve(
        config,
        host=host,
        port=port,
        ready=lambda url: output.info(
            f"fake Metronome listening on {url} (state: {url}/_fake/state); Ctrl-C stops it"
        ),
    )
    output.info(
        f"accepted {state.events_accepted} events in {state.requests} requests "
        f"({state.duplicates_ignored} duplicates ignored, {state.batches_rejected_400} "
        f"batches rejected)"
    )
