"""What the tests share besides fixtures: sample paths and constants, waiting, a holding proxy.

Import it as ``from tests.support import ...`` (``pythonpath = ["."]`` in pyproject makes that
work for plain ``pytest`` as well as ``python -m pytest``). ``conftest.py`` keeps only fixtures
and hooks: pytest imports it under its own name, so importing it from a test module would run
it a second time as another module.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    stdin: bytes | None = None,
    timeout: float = PATIENCE,
) -> subprocess.CompletedProcess[str]:
    """Run ``segmetro ARGS`` and return its exit code, stdout and stderr (text)."""
    return subprocess.run(
        [SEGMETRO, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=dict(os.environ) | (env or {}),
        cwd=cwd if cwd is not None else ROOT,
        timeout=timeout,
        check=False,
    )


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
