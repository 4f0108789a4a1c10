"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dsetlog.simulator import SimConfig, Simulator


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
    from dsetlog import ratelimit, redaction, structured

    structured.BOOK.clear()
    ratelimit.forget_all()
    yield
    structured.BOOK.clear()
    ratelimit.forget_all()
    redaction.clear()
