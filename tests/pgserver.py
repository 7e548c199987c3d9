"""A real PostgreSQL server for the tests, started in a temporary directory on 127.0.0.1.

Use it from a test module with::

    import pgserver
    pg_server = pgserver.pg_server  # session fixture
    pg_url = pgserver.pg_url  # per test: a database of its own

The server binaries are Debian's (``/usr/lib/postgresql/<version>/bin``; ``.ci/run`` installs
the ``postgresql`` package when they are missing). PostgreSQL refuses to run as root, so when
the tests run as root the server runs as ``nobody``, in a directory it owns. Password
authentication (scram-sha-256) is on, so the tests see what a real deployment sees.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

USER = "segmetro"


@dataclass
class PgServer:
    host: str
    port: int
    password: str
    datadir: Path

    def url(self, database: str = "postgres", *, password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{USER}{secret}@{self.host}:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(), autocommit=True)

    def create_database(self) -> str:
        name = f"t_{secrets.token_hex(6)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def terminate(self, database: str, application_name: str = "segmetro") -> int:
        """End every session of ``application_name`` on ``database`` (a lost connection)."""
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = %s AND pid <> pg_backend_pid()",
                (database, application_name),
            ).fetchall()
        return len(rows)


class PgServerError(RuntimeError):
    """The server could not be set up (binaries missing, initdb or pg_ctl failed)."""


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise PgServerError(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): install "
            "Debian's postgresql package (.ci/run does it when they are missing)"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "nobody", "--", *argv]


@contextmanager
def running_server() -> Iterator[PgServer]:
    """Start a server (initdb, pg_ctl start) in a temporary directory; stop and delete it."""
    bindir = _binaries()
    root = Path(tempfile.mkdtemp(prefix="segmetro-pg-"))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
    os.chmod(root, 0o700)
    password = secrets.token_urlsafe(18)
    pwfile = root / "pw"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        os.chown(pwfile, nobody.pw_uid, nobody.pw_gid)
    datadir = root / "data"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}

    def run(argv: list[str]) -> None:
        done = subprocess.run(
            _as_server_user(argv), env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise PgServerError(f"{argv[0]} failed: {done.stdout}{done.stderr}")

    run([str(bindir / "initdb"), "-D", str(datadir), "-U", USER, "--auth=scram-sha-256",
         f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"])  # fmt: skip
    pwfile.unlink()
    port = _free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
        "-c fsync=off -c max_connections=60 -c shared_buffers=16MB"
    )
    run([str(bindir / "pg_ctl"), "-D", str(datadir), "-o", options,
         "-l", str(root / "log"), "-w", "-t", "60", "start"])  # fmt: skip
    try:
        yield PgServer("127.0.0.1", port, password, datadir)
    finally:
        subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate",
                             "-w", "stop"]),
            env=env, capture_output=True, check=False,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        with running_server() as server:
            yield server
    except PgServerError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def pg_url(pg_server: PgServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A URL (password included) of a database of this test's own."""
    for name in ("PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGOPTIONS"):
        monkeypatch.delenv(name, raising=False)
    return pg_server.url(pg_server.create_database())
