"""Shared fixtures: a quiet, stable terminal; the CLI runner; a fake Metronome on loopback.

Only fixtures and hooks live here; constants and helpers are in ``tests/support.py``.
"""

from __future__ import annotations

import compileall
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from typer.testing import CliRunner

import segmetro
from segmetro.fake_metronome import FakeConfig, FakeMetronome
from tests.support import (
    SAMPLES,
    SAMPLES_NOW,
    SAMPLES_NOW_DT,
    TOKEN,
    HoldingProxy,
    JsonCheckingRunner,
)

# `from tests.conftest import SAMPLES, SAMPLES_NOW` (tests/test_workers.py) keeps working until
# it imports from tests.support.
__all__ = ["SAMPLES", "SAMPLES_NOW", "SAMPLES_NOW_DT", "TOKEN"]

# CI explores the same examples every run (a landing must not hinge on a lucky draw); local runs
# keep drawing new ones, and whatever they find is pinned with @example.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile segmetro once: under PYTHONDONTWRITEBYTECODE=1 every CLI subprocess the
    tests start would otherwise compile its ~80 modules from source (~70 ms each)."""
    if not hasattr(config, "workerinput"):  # xdist workers start after the controller did it
        compileall.compile_dir(Path(segmetro.__file__).parent, quiet=1)


@pytest.fixture(autouse=True)
def _stable_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """No colours, no terminal detection, a wide console: output is plain and comparable."""
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.delenv("METRONOME_BEARER_TOKEN", raising=False)
    monkeypatch.delenv("METRONOME_BASE_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture(autouse=True, scope="session")
def _samples_stay_clean() -> Iterator[None]:
    """No test may leave state beside the sample mappings (every replay passes --state)."""
    stray = SAMPLES / ".segmetro"
    existed = stray.exists()
    yield
    assert existed or not stray.exists(), f"a test wrote {stray}: pass --state to replay"


@pytest.fixture
def runner() -> CliRunner:
    """The in-process CLI runner; every ``--json`` output it sees is checked against the
    summary schema and its invariants."""
    return JsonCheckingRunner()


@pytest.fixture
def fake_metronome() -> Iterator[Callable[..., FakeMetronome]]:
    """Start fake Metronome servers with the given config; all are stopped at teardown."""
    started: list[FakeMetronome] = []

    def start(**overrides: object) -> FakeMetronome:
        options: dict[str, object] = {"token": TOKEN, "now": SAMPLES_NOW_DT}
        options.update(overrides)
        server = FakeMetronome(FakeConfig(**options))  # type: ignore[arg-type]
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def holding_proxy() -> Iterator[Callable[[str], HoldingProxy]]:
    """Start holding proxies in front of the given URLs; all are stopped at teardown."""
    started: list[HoldingProxy] = []

    def start(upstream: str) -> HoldingProxy:
        proxy = HoldingProxy(upstream)
        proxy.start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
