"""What the tests share besides fixtures: sample paths and constants, waiting, a holding proxy.

Import it as ``from tests.support import ...`` (``pythonpath = ["."]`` in pyproject makes that
work for plain ``pytest`` as well as ``python -m pytest``). ``conftest.py`` keeps only fixtures
and hooks: pytest imports it under its own name, so importing it from a test module would run
it a second time as another module.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
#: The sample export was made on this day; tests pin Metronome's ingest window to it.
SAMPLES_NOW = "2026-11-26T00:00:00Z"
SAMPLES_NOW_DT = datetime(2026, 11, 26, tzinfo=UTC)
TOKEN = "tok_live_5ecret-DO-NOT-LEAK-91f3"
#: How long a test waits for something that takes well under a second: a safety net that turns
#: a hang into a failure saying what never happened. Never a measurement.
PATIENCE = 60.0
#: The installed console script: CLI tests run what a user runs, in a process of its own.
SEGMETRO = str(Path(sys.executable).with_name("segmetro"))
#: ``python -c WITH_SIGINT PROGRAM ARGS...`` runs PROGRAM with SIGINT at its default, as a
#: terminal's Ctrl-C finds it: a test runner started in the background of a script inherits
#: SIGINT ignored, and would pass that on (Python then never raises KeyboardInterrupt).
WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


#: The JSON Schema every ``--json`` output must satisfy.
SUMMARY_SCHEMA = ROOT / "docs" / "summary.schema.json"


@functools.cache
def _summary_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SUMMARY_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def summary_json(stdout: str | bytes) -> dict[str, Any]:
    """The one JSON object a ``--json`` run printed: all of stdout, valid against
    ``docs/summary.schema.json``, its counts adding up (`check_invariants`). Every test that
    reads a ``--json`` output goes through here."""
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    obj = json.loads(text)  # the whole of stdout: exactly one JSON value, nothing else
    assert isinstance(obj, dict), f"--json printed {type(obj).__name__}, not an object"
    errors = sorted(_summary_validator().iter_errors(obj), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    check_invariants(obj)
    return obj


def check_invariants(obj: Mapping[str, Any]) -> None:
    """The sums the README's "Summaries" section promises, on one summary object."""
    if obj["command"] == "diff" and obj["error"] is None:
        check_invariants({"command": "selection", **obj["old"]})
        check_invariants({"command": "selection", **obj["new"]})
        return
    if "read" not in obj:
        if obj["command"] == "verify" and obj["error"] is None:
            assert obj["found"] + obj["missing"] == obj["sampled"], obj
        return
    o = dict(obj)
    changed, dead = o.get("changed", 0), o.get("dead_lettered", 0)
    at_selection = o["rejected"] - o["unparseable"] - changed - dead
    assert o["read"] == o["unparseable"] + o["filtered"] + o["matched"], o
    assert o["rejected"] == sum(o["rejected_by_reason"].values()), o
    assert o["mapped"] == at_selection + o["outside_window"] + o["duplicates"] + o["emitted"], o
    assert o["matched"] <= o["mapped"], o
    rows = o["by_mapping"].values()
    assert o["mapped"] == sum(r["matched"] for r in rows), o
    assert o["emitted"] == sum(r["emitted"] for r in rows), o
    assert at_selection == sum(r["rejected"] for r in rows), o
    if o["command"] == "replay":
        settled = o["unchanged"] + changed + o["sent"] + dead + o["unsent"]
        assert o["emitted"] == settled, o
    if o["command"] == "replay-dry-run":
        assert o["emitted"] == o["new"] + o["unchanged"] + changed + o["resent_changed"], o


class JsonCheckingRunner(CliRunner):
    """typer's in-process runner, checking every ``--json`` output with `summary_json`."""

    def invoke(self, cli: Any, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        result = super().invoke(cli, args, *rest, **kwargs)
        if args is not None and "--json" in list(args):
            summary_json(result.stdout)
        return result


def _console_script() -> str:
    """The installed ``segmetro`` console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("segmetro")
    found = str(beside) if beside.exists() else shutil.which("segmetro")
    assert found, "the segmetro console script is not installed (pip install -e .)"
    return found


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | bytes | None = None,
    stdin: bytes | None = None,
    cwd: Path | str | None = None,
    timeout: float = PATIENCE,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``segmetro`` console script in a subprocess, as a user or cron would:
    a plain terminal-less environment without Metronome or AWS settings, plus `env`. A
    ``--json`` run's stdout is checked with `summary_json`."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("METRONOME_", "AWS_ENDPOINT")) and k != "COLUMNS"
    }
    base.update(TERM="dumb", NO_COLOR="1", COLUMNS="300")
    base.update(env or {})
    given = stdin if stdin is not None else input
    result = subprocess.run(
        [_console_script(), *args],
        env=base,
        input=given.decode() if isinstance(given, bytes) else given,
        capture_output=True,
        text=True,
        cwd=cwd if cwd is not None else ROOT,
        timeout=timeout,
        check=False,
    )
    if "--json" in args:
        summary_json(result.stdout)
    return result


def wait_until(condition: Callable[[], bool], what: str, *, timeout: float = PATIENCE) -> None:
    """Return once ``condition()`` holds; fail naming ``what`` if it still does not in time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.005)


# Headers that belong to one connection, not to the message (RFC 9110 §7.6.1), and the length,
# which the proxy sets itself.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding"}
    | {"upgrade", "host", "content-length"}
)


class HoldingProxy:
    """A loopback HTTP proxy that stops answering at an exact point, so a run can be stopped
    where it cannot have finished, instead of hoping a sleep lands before the end.

    Every request is forwarded to ``upstream`` as it came, and its answer passed back. After
    ``hold_when(condition)``, the first answer that comes back from upstream once
    ``condition()`` holds, and every answer after it, is held: upstream has handled the request
    (accepted the batch) but the client never hears of it. ``held`` is set when the first
    answer is held; ``release()`` lets the held answers go (to a client that may be gone) and
    forwards normally again. Use it as a context manager, or through the ``holding_proxy``
    fixture.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"HoldingProxy needs an http://host:port upstream, not {upstream!r}")
        self._upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._condition: Callable[[], bool] | None = None
        self._gate: threading.Event | None = None  # set = the held answers may go
        self.held = threading.Event()
        self.answers_held = 0
        self._server = _ProxyServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="holding-proxy",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Release what is held, stop serving and join the serving thread."""
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> HoldingProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def hold_when(self, condition: Callable[[], bool]) -> None:
        """Hold every answer from the first one that comes back once ``condition()`` holds."""
        with self._lock:
            self._condition = condition
            self.held.clear()

    def release(self) -> None:
        """Let the held answers go and stop holding."""
        with self._lock:
            gate, self._gate, self._condition = self._gate, None, None
        if gate is not None:
            gate.set()

    def _hold(self) -> threading.Event | None:
        """Called with each upstream answer: the event to wait for before passing it on."""
        with self._lock:
            if self._gate is None and self._condition is not None and self._condition():
                self._gate = threading.Event()
                self._condition = None
            if self._gate is not None:
                self.answers_held += 1
                self.held.set()
            return self._gate


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: HoldingProxy) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.proxy = proxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished mid-request (killed) is expected; anything else is not."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects of Metronome
    server: _ProxyServer

    def do_POST(self) -> None:
        self._forward()

    def do_GET(self) -> None:
        self._forward()

    def _forward(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) < length:  # the client died mid-request: nothing to forward
            self.close_connection = True
            return
        upstream = http.client.HTTPConnection(*proxy._upstream, timeout=PATIENCE)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body, headers)
            answer = upstream.getresponse()
            data = answer.read()
        except OSError:  # upstream dropped the connection (a fault it injects): so do we
            self.close_connection = True
            return
        finally:
            upstream.close()
        gate = proxy._hold()
        if gate is not None:
            gate.wait(PATIENCE)
        try:
            self.send_response_only(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client is gone (killed or interrupted while its answer was held)
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read the client's and the fake's accounts, not this one's."""
