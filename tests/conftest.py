"""Shared pytest fixtures."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Server

from dsetlog.simulator.server import SimConfig, Simulator


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A simulator with the default config on a free loopback port; ``.base_url`` ends in ``/v1``."""
    with Simulator(SimConfig()) as sim:
        yield sim


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., Simulator]]:
    """Factory: ``make_simulator(rate_429=1.0, ...)`` starts a simulator with those SimConfig fields."""
    started: list[Simulator] = []

    def make(**config: Any) -> Simulator:
        sim = Simulator(SimConfig(**config))
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture(autouse=True)
def _fresh_endpoints() -> Iterator[None]:
    """Each test meets endpoints as a new process would: no learned modes, rates or secrets from another."""
    from dsetlog import redaction
    from dsetlog.llm import ratelimit, structured

    structured.BOOK.clear()
    ratelimit.forget_all()
    yield
    structured.BOOK.clear()
    ratelimit.forget_all()
    redaction.clear()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data dir (not created: the app or the command makes it)."""
    return tmp_path / "data"


@pytest.fixture
def make_client(data: Path) -> Iterator[Callable[..., Any]]:
    """Factory: ``make_client(**create_app kwargs)`` -> a falcon TestClient over ``data`` (worker off by default)."""
    from falcon import testing

    from api.app import create_app

    apps: list[Any] = []

    def make(**kwargs: Any) -> testing.TestClient:
        kwargs.setdefault("start_worker", False)
        app = create_app(data, **kwargs)
        apps.append(app)
        return testing.TestClient(app)

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """`dset serve` processes a test starts (harness.Server); any still running at its end are killed."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``make(size)``: a real tmpfs of that size (``1m``) mounted in tmp_path; skips where we cannot mount."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("a real tmpfs needs root (CI runs as root); the injected-error tests cover the rest")
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
