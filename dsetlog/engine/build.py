"""The one place an LLM client and an engine are made from settings: :class:`EngineSettings`,
:func:`client_for`, :func:`engine_for`, and the default retry schedule (:data:`DEFAULT_RETRY`).

Every run (a document-grounded generation, a regeneration, `dset generate` over a questions file) builds
its clients and engines here, so the timeout, the retry schedule, the rate controller of an endpoint and
the structured-output modes learned from the log are chosen the same way everywhere. The openai SDK is
imported only when a client is made: runs that make no calls never pay for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dsetlog.engine.progress import Budget, Cancel, Progress

if TYPE_CHECKING:
    from dsetlog.engine.engine import Engine, MakeEvents
    from dsetlog.llm.client import LLMClient, RetryPolicy
    from dsetlog.llm.providers import Provider
    from dsetlog.llm.ratelimit import RateController
    from dsetlog.store.events import StructuredModeLearned
    from dsetlog.store.log import EventLog
    from projections.endpoints import LearnedMode

TIMEOUT = 300.0  # seconds one call may take


def default_retry() -> RetryPolicy:
    """The retry schedule of runs that do not choose one: 3 retries, 2 s before the first, doubling."""
    from dsetlog.llm.client import RetryPolicy

    return RetryPolicy(max_retries=3, backoff=2.0)


@dataclass(frozen=True)
class EngineSettings:
    """How a run calls its models: the same for every client and engine it makes.

    ``limiter_for`` gives the rate controller of a provider's endpoint (the server's, shared by all its
    jobs); without it the process's controller for the endpoint is used, with ``rpm``/``tpm`` as ceilings.
    ``learned`` are the structured-output modes the log learned earlier (``rm.endpoints.modes()``).
    ``temperature``/``max_tokens`` are the clients' sampling defaults (None: the endpoint's own).
    """

    concurrency: int = 8
    timeout: float = TIMEOUT
    retry: RetryPolicy | None = None  # None: default_retry()
    limiter_for: Callable[[Provider], RateController | None] | None = None
    rpm: int = 0
    tpm: int = 0
    temperature: float | None = None
    max_tokens: int | None = None
    learned: Iterable[LearnedMode] = ()
    cores: int | None = None  # the engines' processes: 1, 2 (a send process), None: 2 once that pays

    def policy(self) -> RetryPolicy:
        return self.retry if self.retry is not None else default_retry()

    def limiter(self, provider: Provider) -> RateController:
        from dsetlog.llm.ratelimit import controller_for

        limiter = self.limiter_for(provider) if self.limiter_for is not None else None
        return limiter if limiter is not None else controller_for(provider.endpoint, rpm=self.rpm, tpm=self.tpm)


def client_for(provider: Provider, settings: EngineSettings, *,
               on_learned: Callable[[StructuredModeLearned], None] | None = None, **sampling: Any) -> LLMClient:
    """A client of ``provider`` as ``settings`` say; ``sampling`` (temperature, max_tokens) overrides theirs."""
    from dsetlog.llm.client import LLMClient

    sampling = {"temperature": settings.temperature, "max_tokens": settings.max_tokens, **sampling}
    return LLMClient(provider, concurrency=settings.concurrency, timeout=settings.timeout,
                     limiter=settings.limiter(provider), learned=settings.learned, on_learned=on_learned,
                     **sampling)


def engine_for(provider: Provider, settings: EngineSettings, *, log: EventLog, make_events: MakeEvents,
               progress: Progress, run_id: str = "", budget: Budget | None = None, cancel: Cancel | None = None,
               price: tuple[float, float] | None = None, **sampling: Any) -> Engine:
    """An engine calling ``provider`` through a new client (:func:`client_for`), priced by the provider unless
    ``price`` is given. ``cancel``: the run's stop signal (a job's, which its worker sets when a user cancels it)."""
    from dsetlog.engine.engine import Engine

    return Engine(log=log, client=client_for(provider, settings, **sampling), policy=settings.policy(),
                  make_events=make_events, progress=progress, run_id=run_id, concurrency=settings.concurrency,
                  budget=budget or Budget(), cancel=cancel,
                  price=price if price is not None else provider.price(), cores=settings.cores)
