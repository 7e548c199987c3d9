"""The command line: options in, reports out. The only module that imports typer.

Imports of the library happen inside the commands so that ``segmetro --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand

app = typer.Typer(
    name="segmetro",
    help="Replay Segment event exports into Metronome's usage-billing API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: What a value is called in help, by its click type's name: a word a person reads.
_METAVARS: dict[str, str] = {
    "str": "TEXT",
    "int": "N",
    "int range": "N",
    "float": "NUMBER",
    "float range": "NUMBER",
    "path": "PATH",
}


class _Argument(TyperArgument):
    """An argument's help shows its name (``INPUT``), not its Python type as well."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class _Command(TyperCommand):
    """Help for people: the whole first paragraph in the command list, plain metavars, and a
    usage line without Python's type names or braces (``INPUT...``, not ``{inputs}...``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument):
                param.__class__ = _Argument
            if param.metavar is not None or getattr(param, "is_flag", False):
                continue
            if isinstance(param, TyperArgument):
                param.metavar = (param.name or "value").upper()
            else:
                param.metavar = _METAVARS.get(getattr(param.type, "name", ""), "VALUE")

    def get_short_help_str(self, limit: int = 45) -> str:
        return " ".join((self.help or "").split("\n\n")[0].split())

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = (param.metavar or "") + ("..." if param.nargs != 1 else "")
            pieces.append(name if param.required else f"[{name}]")
        return pieces


def _version(value: bool) -> None:
    if value:
        from segmetro import __version__

        typer.echo(f"segmetro {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Replay Segment event exports into Metronome's usage-billing API."""


F = TypeVar("F", bound=Callable[..., Any])

MappingOpt = Annotated[
    Path, typer.Option("--mapping", "-m", help="Mapping file (YAML).", show_default=False)
]
InputsArg = Annotated[
    list[str],
    typer.Argument(
        metavar="INPUT",
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
    typer.Option(
        envvar="SEGMETRO_NOW",
        help="Clock for Metronome's 34-day/24-hour ingest window (default: now).",
    ),
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
StrictOpt = Annotated[
    bool,
    typer.Option(
        help="Treat warnings as errors (exit 2): the mapping's stop the command before anything "
        "is read or sent; those of the run (a mapping that matched nothing) end map, --dry-run "
        "and diff with exit 2 too."
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON summary object on stdout, on every exit (docs/summary.schema.json).",
    ),
]

#: The summary of the running command: the error path fills it in when a command fails.
_SUMMARY: contextvars.ContextVar[Any] = contextvars.ContextVar("summary")
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="Take shard K of N (K/N, from 0) of the input objects, split by a hash of each "
        "object's name; auto/N reads K from $SEGMETRO_SHARD_INDEX, $JOB_COMPLETION_INDEX "
        "(Kubernetes Indexed Job) or $AWS_BATCH_JOB_ARRAY_INDEX (AWS Batch array job).",
        show_default=False,
    ),
]
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
    """Turn a SegmetroError into one line on stderr and its exit code, once, here; under
    ``--json`` also into the command's one JSON object, with its ``error``."""
    name = command.__name__.removesuffix("_command").replace("_", "-")

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from segmetro import output
        from segmetro.errors import Interrupted, SegmetroError
        from segmetro.summary import Summary

        summary = Summary(command=name)
        _SUMMARY.set(summary)
        try:
            return command(*args, **kwargs)
        except SegmetroError as exc:
            code = exc.exit_code
            if code == 0:  # NoInputs: a quiet day, not a failure
                output.info(str(exc))
            else:
                if isinstance(exc, Interrupted) and summary.counts and not kwargs.get("json_out"):
                    output.show_summary(summary, as_json=False)
                output.error(str(exc))
                summary.fail(exc, code)
        except KeyboardInterrupt as exc:
            output.error("interrupted")
            code = 130
            summary.fail(exc, code, "interrupted")
        if kwargs.get("json_out"):
            output.write_json(summary.finish(code).to_json())
        raise typer.Exit(code)

    return wrapper  # type: ignore[return-value]


def _summary() -> Any:
    """The running command's summary (made by `reports_errors`)."""
    return _SUMMARY.get()


def _load_mapping(path: Path, *, strict: bool) -> Any:
    """Load a mapping and show its warnings at once, as every command that uses one does;
    with `strict` a warning is an error (exit 2)."""
    from segmetro.errors import ConfigError
    from segmetro.mapping import load_mapping

    mappings = load_mapping(path)
    for warn in mappings.warnings:
        _warn(str(warn))
    if strict and mappings.warnings:
        raise ConfigError(f"{path}: {len(mappings.warnings)} warning(s) and --strict is set.")
    return mappings


def _warn(text: str) -> None:
    """Show a warning now and keep it in the summary (where the human lines do not repeat it)."""
    from segmetro import output

    summary = _summary()
    summary.warnings.append(text)
    summary.warnings_shown = len(summary.warnings)
    output.warning(text)


def _finish(summary: Any, exit_code: int, json_out: bool, *, strict: bool = False) -> None:
    """Show the summary (human lines on stderr, or the JSON object) and exit with its code;
    with `strict` (a command that sent nothing) a warning of the run is an error, exit 2."""
    from segmetro import output
    from segmetro.errors import ConfigError

    if strict and summary.warnings and exit_code < 2:
        error = ConfigError(f"{len(summary.warnings)} warning(s) and --strict is set.")
        output.error(str(error))
        summary.fail(error, 2)
        exit_code = 2
    output.show_summary(summary.finish(exit_code), as_json=json_out)
    raise typer.Exit(exit_code)


@contextlib.contextmanager
def _summary_if_interrupted(fill: Callable[[Any], None]) -> Iterator[None]:
    """On Ctrl-C or SIGTERM, `fill` the summary from the partial report, which
    `reports_errors` then shows before the one-line "interrupted"."""
    from segmetro.errors import Interrupted

    try:
        yield
    except Interrupted as exc:
        if exc.partial is not None:
            fill(exc.partial)
        raise


@app.command(cls=_Command)
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


@app.command(cls=_Command)
@reports_errors
def validate(
    mapping: Annotated[
        Path, typer.Argument(metavar="MAPPING", help="Mapping file (YAML).", show_default=False)
    ],
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="INPUT",
            help="With --sample: files, directories, globs, '-' or s3://bucket/prefix.",
            show_default=False,
        ),
    ] = None,
    sample: Annotated[
        bool,
        typer.Option(
            "--sample", help="Run the mapping over the INPUTs and report how each field fares."
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(help="Treat warnings (also those of the sample) as errors (exit 2)."),
    ] = False,
    now: NowOpt = None,
    endpoint_url: EndpointOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check a mapping: its expressions and triggers, and optionally its effect on a sample.

    The sample flags mappings that match nothing, reject half of what they match or more, fields
    empty in most events, and two mappings that give one message's events the same
    transaction_id. Exit 0: no warning (or warnings without --strict); 2: an error, or a
    warning with --strict.
    """
    from segmetro import output
    from segmetro.errors import ConfigError
    from segmetro.pipeline import run_sample
    from segmetro.sources import open_inputs
    from segmetro.window import Window

    if inputs and not sample:
        raise ConfigError("INPUT given without --sample: add --sample to run the mapping over it.")
    if sample and not inputs:
        raise ConfigError("--sample needs at least one INPUT: validate MAPPING --sample INPUT...")
    summary = _summary()
    summary.mapping = str(mapping)
    mappings = _load_mapping(mapping, strict=strict)
    names = ", ".join(mappings.names())
    output.info(f"{mapping}: ok ({len(mappings.mappings)} mapping(s): {names})")
    if sample and inputs:
        summary.inputs = list(inputs)
        window = Window.from_options(since=None, until=None, now=now)
        inputs_set = open_inputs(inputs, endpoint_url=endpoint_url)
        with _summary_if_interrupted(lambda partial: partial.fill(summary, mappings.names())):
            report = run_sample(mappings, inputs_set, window=window)
        report.fill(summary, mappings.names())
        if not json_out:
            output.rejects(report.rejects, total=report.counts.rejected_total, path=None)
    _finish(summary, 0, json_out, strict=strict)


@app.command("map", cls=_Command)
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
    strict: StrictOpt = False,
    json_out: JsonOpt = False,
    shard: ShardOpt = None,
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
    from segmetro.errors import ConfigError
    from segmetro.models import Counts
    from segmetro.pipeline import check_outputs, run_map
    from segmetro.pipeline.workers import choose_workers

    if json_out and out is None:
        raise ConfigError("--json prints the summary on stdout: write the events with -o FILE.")
    summary = _summary()
    summary.output = None if out is None else str(out)
    summary.rejects = None if rejects is None else str(rejects)
    mappings, window, inputs_set = _job(
        mapping, inputs, since, until, now, endpoint_url=endpoint_url, source_id=source_id,
        strict=strict,
        shard=shard,
    )  # fmt: skip
    check_outputs(
        inputs_set,
        {"-o": out, "--rejects": rejects},
        protected={"the mapping": mapping, "the state file": Path(_state_path(None, mapping))},
    )
    counts = Counts()
    preview = _billing(billing, billable_metrics, customers, api_url)
    with (
        _summary_if_interrupted(lambda part: part.fill(summary, mappings.names())),
        _open_output(out) as sink,
        output.Progress(
            total_bytes=inputs_set.total_bytes, quiet=quiet or json_out, label="map",
            counts=counts,
        ) as progress,
        _write_errors(out),
    ):  # fmt: skip
        report = run_map(
            mappings,
            inputs_set,
            window=window,
            out=sink,
            rejects_path=rejects,
            on_bytes=progress.advance,
            workers=workers if workers is not None else choose_workers(inputs_set.objects),
            counts=counts,
            billing=preview,
        )
    report.fill(summary, mappings.names())
    if preview is not None:
        summary.details["billing"] = preview.to_json()
    if not json_out:
        output.rejects(
            report.rejects,
            total=report.counts.rejected_total,
            path=str(rejects) if rejects is not None else None,
            hint="--rejects FILE",
        )
        if preview is not None:
            output.billing(preview)
    bills_nothing = preview is not None and preview.exit_code
    exit_code = 1 if report.counts.rejected_total or bills_nothing else 0
    _finish(summary, exit_code, json_out, strict=strict)


def _job(
    mapping: Path,
    inputs: list[str],
    since: str | None,
    until: str | None,
    now: str | None,
    *,
    endpoint_url: str | None,
    source_id: list[str] | None,
    strict: bool,
    shard: str | None = None,
) -> tuple[Any, Any, Any]:
    """What map and replay share: the mapping, the window, and the inputs it selects."""
    from segmetro import output
    from segmetro.sources import open_inputs, parse_shard
    from segmetro.window import Window

    summary = _summary()
    summary.mapping = str(mapping)
    summary.inputs = list(inputs)
    mappings = _load_mapping(mapping, strict=strict)
    window = Window.from_options(since=since, until=until, now=now)
    inputs_set = open_inputs(
        inputs,
        endpoint_url=endpoint_url,
        since=window.since,
        until=window.until,
        source_ids=source_id or (),
        shard=parse_shard(shard) if shard is not None else None,
    )
    output.skipped_inputs(inputs_set)
    if inputs_set.shard is not None:
        summary.shard = inputs_set.shard.label
    if (note := inputs_set.shard_note()) is not None:
        output.info(note)
    return mappings, window, inputs_set


def _command_line() -> str:
    """The command as typed, for a report page; the token is an environment variable."""
    return " ".join(["segmetro", *sys.argv[1:]])


def _write_report(path: Path | None, kind: str, summary: Any, exit_code: int, command: str) -> None:
    """The --report page, from the --json object the command is about to print."""
    if path is None:
        return
    from segmetro.report import write_report

    data = summary.to_json()
    data["exit_code"] = exit_code
    write_report(path, kind, data, command=command)


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
    """``-o``: written beside itself and renamed at the end, so a failed run leaves no half file."""
    from segmetro.pipeline import replaced_at_end

    return _StdoutBytes() if out is None else replaced_at_end(out)


class _StdoutBytes:
    """stdout as a binary sink that is flushed, not closed, at the end."""

    def __enter__(self) -> Any:
        return sys.stdout.buffer

    def __exit__(self, *exc: object) -> None:
        sys.stdout.buffer.flush()


def main() -> None:
    """Console-script entry point.

    SIGTERM (a service stop, ``kill``) ends every command as Ctrl-C does: partial summary,
    exit 130, files and worker processes cleaned up.
    """
    import signal

    # typer's own click: its usage errors
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    from segmetro import output

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if "--json" in sys.argv[1:]:
        sys.exit(_main_json())
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `segmetro` alone: the help, as a usage error
        sys.stderr.write(exc.format_message() + "\n")
        sys.exit(exc.exit_code)
    except ClickException as exc:  # a bad option: one line, the command's help named
        where = getattr(getattr(exc, "ctx", None), "command_path", None) or "segmetro"
        output.error(f"{exc.format_message()} (see {where} -h)")
        sys.exit(exc.exit_code)
    except typer.Abort:
        output.error("interrupted")
        sys.exit(130)
    except Exception as exc:
        # Every error a user can cause is a SegmetroError with its own message; this is a bug.
        if os.environ.get("SEGMETRO_TRACEBACK"):
            raise
        output.error(
            f"internal error ({type(exc).__name__}: {exc}); this is a bug in segmetro, please "
            "report it (SEGMETRO_TRACEBACK=1 shows where it happened)."
        )
        sys.exit(70)
    sys.exit(code if isinstance(code, int) else 0)


def _main_json() -> int:
    """Under ``--json`` a usage error (a bad option) is also the one JSON object on stdout."""
    from typer.exceptions import TyperException

    from segmetro import output
    from segmetro.errors import ConfigError
    from segmetro.summary import Summary

    try:
        code = typer.main.get_command(app).main(prog_name="segmetro", standalone_mode=False)
    except TyperException as exc:  # the usage errors: bad option, missing argument
        exit_code = int(getattr(exc, "exit_code", 2))
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        ctx = getattr(exc, "ctx", None)
        command = getattr(getattr(ctx, "command", None), "name", None)
        summary = Summary(command=command if command in _COMMANDS else "segmetro")
        summary.fail(ConfigError(exc.format_message()), exit_code)
        output.write_json(summary.finish(exit_code).to_json())
        return exit_code
    except typer.Abort:
        return 130
    return code if isinstance(code, int) else 0


#: The commands whose ``--json`` object names them.
_COMMANDS = frozenset({"map", "replay", "diff", "validate", "verify", "status"})


StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state",
        help="State: an SQLite file, or a PostgreSQL URL (postgresql://user@host/db; the "
        "password from the URL, PGPASSWORD or ~/.pgpass, never shown or stored) that shards "
        "running at once share. It holds runs, locks, and per destination (API URL + the "
        "account of the token, known by an HMAC; the token is never stored) the checkpoints, "
        "the ledger of sent events and undeliverable events. Default: .segmetro/state.db "
        "beside the mapping.",
        show_default=False,
    ),
]


def _state_path(state: str | None, mapping: Path | None) -> str | Path:
    """--state (a file or a PostgreSQL URL), else replay's default: .segmetro/state.db beside
    the mapping (or here, without one)."""
    from segmetro.state import is_database_url

    if state is None:
        base = mapping.resolve().parent if mapping is not None else Path.cwd()
        return base / ".segmetro" / "state.db"
    return state if is_database_url(state) else Path(state)


#: --state of status, verify and unlock: replay's default when not given.
StateOfOpt = Annotated[
    str | None,
    typer.Option(
        "--state",
        help="State file or PostgreSQL URL (default: replay's, .segmetro/state.db beside "
        "--mapping, or in the current directory without --mapping).",
        show_default=False,
    ),
]
#: --mapping of status, verify and unlock: only to find replay's default state file.
StateMappingOpt = Annotated[
    Path | None,
    typer.Option(
        "--mapping",
        "-m",
        help="The mapping replay ran with: its default state file is the one used.",
        show_default=False,
    ),
]


@app.command(cls=_Command)
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
    json_out: JsonOpt = False,
    strict: StrictOpt = False,
    endpoint_url: EndpointOpt = None,
    source_id: SourceIdOpt = None,
    shard: ShardOpt = None,
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
    from segmetro.pipeline import check_outputs, replay_with_state, run_signature
    from segmetro.state import new_run_id, normalize_api_url, redact, rejects_dir

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
    summary = _summary()
    summary.api_url = normalize_api_url(api_url)
    summary.state = redact(_state_path(state, mapping))
    if dry_run:
        summary.command = "replay-dry-run"
    mappings, window, inputs_set = _job(
        mapping, inputs, since, until, now, endpoint_url=endpoint_url, source_id=source_id,
        strict=strict,
        shard=shard,
    )  # fmt: skip
    state_path = _state_path(state, mapping)
    signature = run_signature(mapping)
    check_outputs(
        inputs_set,
        {"--rejects": rejects},
        protected={
            "the mapping": mapping,
            "the state file": state_path if isinstance(state_path, Path) else None,
        },
        overwrite_rejects=dry_run,
    )
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
            strict=strict,
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
    run_id = new_run_id()
    with output.Progress(
        total_bytes=inputs_set.total_bytes, quiet=quiet or json_out, label="replay", run_id=run_id
    ) as progress:
        report = replay_with_state(
            mappings,
            inputs_set,
            window=window,
            sender=config,
            state_path=state_path,
            rejects_dir=rejects_dir(state_path, mapping),
            options=options,
            signature=signature,
            rejects_path=rejects,
            resend_changed=resend_changed,
            on_warning=_warn,
            on_bytes=progress.advance,
            on_tick=progress.delivery,
            run_id=run_id,
        )
    report.fill(summary, mappings.names())
    if report.fatal is not None:
        output.error(report.fatal)
    if report.inputs_skipped:
        output.info(
            f"{report.inputs_skipped} of {report.inputs_total} inputs already done "
            f"(state {redact(state_path)})"
        )
    output.rejects(
        report.rejects,
        total=report.counts.rejected_total,
        path=str(report.rejects_path) if report.rejects_path is not None else None,
        appended=rejects is not None,
    )
    _finish(summary, report.exit_code, json_out)


def _dry_run(
    mappings: Any,
    inputs_set: Any,
    window: Any,
    state_path: str | Path,
    *,
    signature: str,
    rejects: Path | None,
    api_url: str,
    token: str,
    resend_changed: bool,
    json_out: bool,
    quiet: bool,
    strict: bool,
    billing: Any,
    report: Path | None,
    command: str,
    invoice_preview: int = 0,
) -> None:
    """The plan of a replay: what it would send, sending nothing and writing no state."""
    from segmetro import output
    from segmetro.models import Counts
    from segmetro.pipeline import RejectSink, plan_resume, plan_target
    from segmetro.plan import plan
    from segmetro.state import open_state, state_exists

    db = open_state(state_path, readonly=True) if state_exists(state_path) else None
    try:
        target = plan_target(db, api_url, token)
        state = target.state
        # --resend-changed makes a replay read every input from the start; so does its plan.
        resume = (
            plan_resume(inputs_set, state, signature, window)
            if state is not None and not resend_changed
            else None
        )
        counts = Counts()
        summary = _summary()

        def partial_plan(partial: Any) -> None:
            partial.fill(summary, mappings.names())
            if not json_out:
                output.show_plan(partial)

        with (
            _summary_if_interrupted(partial_plan),
            RejectSink(rejects) as sink,
            output.Progress(
                total_bytes=inputs_set.total_bytes, quiet=quiet or json_out, label="plan",
                counts=counts,
            ) as progress,
        ):  # fmt: skip
            result = plan(
                mappings,
                inputs_set,
                window=window,
                state=state,
                resume=resume,
                rejects=sink,
                on_bytes=progress.advance,
                target=target,
                resend_changed=resend_changed,
                counts=counts,
                billing=billing,
            )
    finally:
        if db is not None:
            db.close()
    if invoice_preview and billing is not None:
        from segmetro.billing import draft_invoices

        draft_invoices(billing, invoice_preview, api_url=api_url, token=token)
    summary.rejects = None if rejects is None else str(rejects)
    result.fill(summary, mappings.names())
    _write_report(report, "plan", summary, result.exit_code, command)
    if not json_out:
        output.show_plan(result)
    _finish(summary, result.exit_code, json_out, strict=strict)


@app.command(cls=_Command)
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
    json_out: JsonOpt = False,
    strict: StrictOpt = False,
    endpoint_url: EndpointOpt = None,
    report_page: ReportOpt = None,
) -> None:
    """Compare two versions of a mapping over the same input: events added, removed, changed.

    Exit 0 when both send exactly the same events, 1 when they differ, 2 for a bad option.
    """
    from segmetro import output
    from segmetro.errors import ConfigError
    from segmetro.plan import diff as diff_mappings
    from segmetro.sources import open_inputs
    from segmetro.window import Window

    summary = _summary()
    summary.mapping = [str(m) for m in mapping]
    summary.inputs = list(inputs)
    if len(mapping) != 2:
        raise ConfigError("diff needs exactly two mappings: -m OLD.yaml -m NEW.yaml")
    old = _load_mapping(mapping[0], strict=strict)
    new = _load_mapping(mapping[1], strict=strict)
    window = Window.from_options(since=since, until=until, now=now)
    inputs_set = open_inputs(inputs, endpoint_url=endpoint_url)
    result = diff_mappings(old, new, inputs_set, window=window)
    result.fill(summary, old, new)
    _write_report(report_page, "diff", summary, result.exit_code, _command_line())
    if not json_out:
        output.show_diff(summary)
    _finish(summary, result.exit_code, json_out, strict=strict)


@app.command(cls=_Command)
@reports_errors
def verify(
    state: StateOfOpt = None,
    mapping: StateMappingOpt = None,
    sample: Annotated[
        int, typer.Option(min=1, max=10000, help="How many delivered events to check.")
    ] = 100,
    api_url: Annotated[
        str, typer.Option(envvar="METRONOME_BASE_URL", help="Metronome API base URL.")
    ] = "https://api.metronome.com",
    now: Annotated[
        str | None,
        typer.Option(
            envvar="SEGMETRO_NOW", help="Clock for the 34-day search window (default: now)."
        ),
    ] = None,
    json_out: JsonOpt = False,
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
    from segmetro.state import normalize_api_url, open_state, redact, require_state
    from segmetro.verify import verify_sample
    from segmetro.window import Window

    where = _state_path(state, mapping)
    summary = _summary()
    summary.state, summary.api_url = redact(where), normalize_api_url(api_url)
    require_state(where)
    token = os.environ.get("METRONOME_BEARER_TOKEN", "")
    if not token:
        raise ConfigError("METRONOME_BEARER_TOKEN is not set: export your Metronome API token.")
    window = Window.from_options(since=None, until=None, now=now)
    config = SenderConfig(api_url=api_url, token=token)
    with open_state(where, readonly=True) as db:
        destination = db.find_destination(api_url, token)
        if destination is None:
            known = "; ".join(d.describe() for d in db.destinations()) or "none"
            raise StateError(
                f"state {redact(where)} records nothing sent to {normalize_api_url(api_url)} with "
                f"this token (destinations in it: {known}); check --api-url and "
                "METRONOME_BEARER_TOKEN."
            )
        report = asyncio.run(
            verify_sample(
                db.for_destination(destination), sample=sample, now=window.now, config=config
            )
        )
    report.fill(summary)
    _write_report(report_page, "verify", summary, report.exit_code, _command_line())
    if not json_out:
        output.show_verify(report)
    _finish(summary, report.exit_code, json_out)


@app.command(cls=_Command)
@reports_errors
def status(
    state: StateOfOpt = None,
    mapping: StateMappingOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the runs, the locks, each shard and each destination of a state.

    A destination is an API URL and the account of a token (shown as a short fingerprint of
    its HMAC, never the token): its ledger size, checkpoints, and the undeliverable events of
    earlier runs, open or superseded (delivered by a later run).
    """
    from segmetro import output
    from segmetro.state import open_state, redact
    from segmetro.summary import status_details

    where = _state_path(state, mapping)
    summary = _summary()
    summary.state = redact(where)
    with open_state(where, readonly=True, must_exist=True) as db:
        runs = db.runs()
        checkpoints = db.checkpoints()
        ledger = db.ledger_size()
        lock = db.lock_holder()
        destinations = db.summaries()
        shards = db.shards()
    status_details(
        summary,
        runs,
        checkpoints,
        ledger=ledger,
        lock=lock,
        destinations=destinations,
        shards=shards,
    )
    if not json_out:
        output.show_status(summary)
    _finish(summary, 0, json_out)


@app.command(cls=_Command)
@reports_errors
def unlock(
    state: StateOfOpt = None,
    mapping: StateMappingOpt = None,
) -> None:
    """Remove a lock left by a run on another host (e.g. a container that was killed).

    A lock left by a dead process on this host is taken over automatically; a lock held by a
    live process here is never removed.
    """
    from segmetro import output
    from segmetro.state import open_state

    where = _state_path(state, mapping)
    with open_state(where, must_exist=True) as db:
        removed = db.break_locks()
    for holder in removed:
        output.info(f"removed the lock of {holder.describe()}")
    if not removed:
        output.info("not locked")


@app.command("fake-metronome", cls=_Command)
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
    now: Annotated[
        str | None,
        typer.Option(envvar="SEGMETRO_NOW", help="Fixed server clock (RFC 3339 or date)."),
    ] = None,
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
    raise typer.Exit(130)  # it serves until Ctrl-C or SIGTERM
