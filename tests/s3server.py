"""A real moto S3 server (server mode, plain HTTP on 127.0.0.1) for the tests.

Use it from a test module with::

    from s3server import S3Server, s3, s3_server  # noqa: F401  (fixtures)

``s3_server`` (session) starts one server on a free port; ``s3`` (per test) resets its state,
points the AWS environment at dummy credentials (nothing real is ever read or reached) and
returns the ``S3Server`` with an ``endpoint_url`` and a ready boto3 ``client``.
"""

from __future__ import annotations

import gzip
import logging
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.session
import pytest
from moto.server import ThreadedMotoServer

DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/segmetro-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/segmetro-test-aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
UNSET_AWS_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@dataclass
class S3Server:
    endpoint_url: str
    _clients: list[Any] = field(default_factory=list)

    def reset(self) -> None:
        """Forget every bucket and object."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    @property
    def client(self) -> Any:
        """A boto3 S3 client for setting up fixtures (created lazily, closed after the test)."""
        if not self._clients:
            self._clients.append(
                boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint_url, region_name="us-east-1"
                )
            )
        return self._clients[0]

    def put(self, bucket: str, key: str, body: bytes, **extra: Any) -> str:
        """Store an object (creating the bucket if needed); returns its ETag."""
        self.ensure_bucket(bucket)
        response = self.client.put_object(Bucket=bucket, Key=key, Body=body, **extra)
        return str(response["ETag"])

    def put_jsonl(self, bucket: str, key: str, lines: list[bytes], *, gz: bool = True) -> str:
        data = b"".join(line + b"\n" for line in lines)
        return self.put(bucket, key, gzip.compress(data) if gz else data)

    def put_many(self, bucket: str, keys: list[str], body: bytes) -> None:
        """Store one body under many keys straight into moto's in-process backend (the server
        runs in this process): a PUT over HTTP costs ~6 ms here, and the point of such a
        fixture is the listing, not the uploads."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends
        from moto.utilities.utils import get_partition

        self.ensure_bucket(bucket)
        backend = s3_backends[DEFAULT_ACCOUNT_ID][get_partition("us-east-1")]
        for key in keys:
            backend.put_object(bucket, key, body)

    def ensure_bucket(self, bucket: str) -> None:
        existing = {b["Name"] for b in self.client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            self.client.create_bucket(Bucket=bucket)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()


@contextmanager
def one_botocore_loader() -> Iterator[None]:
    """Every botocore session of this process shares one loader of botocore's bundled JSON
    models (read-only data): a new session parses them again, ~0.15 s per boto3 client, which
    was most of a small S3 test (the fixture's client, segmetro's own, moto's)."""
    real = botocore.session.create_loader
    loaders: dict[str | None, Any] = {}

    def shared(search_path_string: str | None = None) -> Any:
        if search_path_string not in loaders:
            loaders[search_path_string] = real(search_path_string)
        return loaders[search_path_string]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session, "create_loader", shared)
        yield


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        with one_botocore_loader():
            yield S3Server(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()
        inner = getattr(server, "_server", None)
        if inner is not None:
            inner.server_close()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    for name in UNSET_AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    s3_server.reset()
    try:
        yield s3_server
    finally:
        s3_server.close()
        try:
            from segmetro.sources import _s3
        except ImportError:  # pragma: no cover - the package is part of this project
            pass
        else:
            _s3.close_clients()
