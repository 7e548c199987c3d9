"""The HTTP side: a ThreadingHTTPServer around ``FakeApp``, ``FakeMetronome`` and ``serve``.

The handler reads bodies (Content-Length or chunked, gzip, the 413 limit), hands them to the
app and writes its ``Reply``, waiting out injected latency unless the fake stops first. The
server tracks its connections so ``stop`` closes and joins every one of them. Headers are never
logged, so the token never reaches a log.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import logging
import socket
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, cast

from segmetro.fake_metronome.app import FakeApp, FakeState, Reply
from segmetro.fake_metronome.app import message as json_message
from segmetro.fake_metronome.config import FakeConfig, FakeListenError
from segmetro.fake_metronome.schema import compile_validators

__all__ = ["MAX_BODY_BYTES", "FakeMetronome", "serve"]

logger = logging.getLogger(__name__)

#: Request bodies above this size are refused with 413.
MAX_BODY_BYTES = 32 * 1024 * 1024


class FakeMetronome(FakeApp):
    """A Metronome ingest/search server on a background thread; use as a context manager.

    ``clock`` (monotonic seconds) drives the rate buckets; tests pass a hand-moved one so rate
    limits are checked without racing the wall clock.
    """

    def __init__(
        self,
        config: FakeConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= port <= 65535:
            raise FakeListenError(f"port {port} is not between 0 and 65535")
        super().__init__(config, clock=clock)
        self._host = host
        self._port = port
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FakeMetronome:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Bind the socket and serve on a background thread."""
        if self._server is not None:
            raise RuntimeError("the fake Metronome is already running")
        compile_validators()  # compile the schemas now, not on the first request
        self._stopping.clear()
        try:
            server = _Server((self._host, self._port), self)
        except OSError as exc:
            raise FakeListenError(_listen_problem(self._host, self._port, exc)) from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="fake-metronome",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close every connection and join every thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        if thread is not None:
            thread.join()
        self._stopping.set()
        server.close_connections()
        server.server_close()
        self._server = None
        self._thread = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("the fake Metronome is not running")
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def wait_or_stop(self, seconds: float) -> bool:
        """Sleep ``seconds`` of injected latency; True when the fake stopped meanwhile."""
        return self._stopping.wait(seconds)


def serve(
    config: FakeConfig,
    *,
    host: str,
    port: int,
    ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> FakeState:
    """Serve until KeyboardInterrupt (or ``stop`` is set); return the final counts."""
    fake = FakeMetronome(config, host=host, port=port)
    fake.start()
    try:
        if ready is not None:
            ready(fake.url)
        waiter = stop if stop is not None else threading.Event()
        while not waiter.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return fake.snapshot(include_events=False)


def _listen_problem(host: str, port: int, exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {host!r}: not an address or a known host name"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen: port {port} on {host} is in use; stop what holds it "
            "or choose another port (0 picks a free one)"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on port {port} of {host}: permission denied"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: not an address of this machine"
    return f"cannot listen on port {port} of {host}: {exc.strerror or exc}"


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its connections so ``stop`` can close and join them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeMetronome) -> None:
        self.fake = fake
        self._conn_lock = threading.Lock()
        self._conns: dict[threading.Thread, socket.socket] = {}
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # skip HTTPServer's reverse DNS lookup
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        thread = threading.Thread(
            target=self._run, args=(request, client_address), name="fake-metronome-conn"
        )
        thread.daemon = True
        with self._conn_lock:
            self._conns[thread] = cast(socket.socket, request)
        thread.start()

    def _run(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - one broken connection must not stop the server
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._conn_lock:
                self._conns.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s failed", client_address, exc_info=True)

    def close_connections(self, timeout: float = 5.0) -> None:
        """Shut down every open connection and join its thread."""
        with self._conn_lock:
            conns = list(self._conns.items())
        for _, sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread, _ in conns:
            thread.join(timeout)


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, lets the owning fake answer it, writes the reply; never logs headers."""

    protocol_version = "HTTP/1.1"
    server_version = "segmetro-fake-metronome"
    sys_version = ""
    disable_nagle_algorithm = True

    @property
    def fake(self) -> FakeMetronome:
        return cast(_Server, self.server).fake

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _route(self) -> None:
        data = self._read_body()
        if data is None:
            return
        auth = self.headers.get("Authorization")
        self._send(self.fake.handle(self.command, self.path, auth, data))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _route

    def _send(self, reply: Reply) -> None:
        if reply.delay > 0 and self.fake.wait_or_stop(reply.delay):
            self.close_connection = True
            return
        if reply.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def _fail(self, status: int, text: str) -> None:
        self.close_connection = True
        self._send(Reply(status, json_message(text), {"Connection": "close"}))

    def _read_body(self) -> bytes | None:
        """The request body (de-chunked, gunzipped), or None after answering an error."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = self._read_chunked()
            if data is None:
                return None
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self._fail(400, "invalid Content-Length")
                return None
            if length < 0 or length > MAX_BODY_BYTES:
                self._fail(413, "request body too large")
                return None
            data = self.rfile.read(length)
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error):
                self._send(Reply(400, json_message("request body is not valid gzip")))
                return None
        elif encoding not in ("", "identity"):
            self._send(Reply(415, json_message(f"unsupported Content-Encoding {encoding!r}")))
            return None
        return data

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._fail(400, "invalid chunked body")
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                self._fail(413, "request body too large")
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unknown method) in JSON like the rest."""
        text = message or self.responses.get(code, ("Error",))[0]
        self.log_error("code %d, message %s", code, text)
        self.close_connection = True
        body = json_message(text)
        self.send_response(code)
        self.send_header("Connection", "close")
        if code >= 200 and code not in (204, 304) and self.command != "HEAD":
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.end_headers()
