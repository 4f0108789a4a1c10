"""The model calls of one run (a generation or a regeneration): each stage's calls go through an Engine
sharing the run's progress, budget, retry policy and rate limiters, and report their progress as a typed
:class:`dsetlog.engine.stages.Stage` through the run's one ``on_stage``.

Also how a stage's engine run ends the whole run (:class:`Stop`), and taking a lock while showing whom the
run waits for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dsetlog.engine.progress import Budget, Progress
from dsetlog.engine.stages import Outcome, Phase, Stage
from dsetlog.llm.providers import Provider
from dsetlog.store import locks
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel

if TYPE_CHECKING:  # dsetlog.llm.client imports the openai SDK: only runs that make calls pay for that import
    from dsetlog.engine.engine import Engine, EngineResult, WorkItem
    from dsetlog.llm.client import LLMClient, RetryPolicy


@dataclass(frozen=True)
class Stop:
    """How a stage ended the run: its outcome and a message (empty: the outcome says it all)."""

    outcome: Outcome
    message: str = ""


def ended(result: EngineResult) -> Stop:
    """The outcome of an engine run: fatal with the provider's message, else the engine's own outcome."""
    if result.fatal is not None:
        return Stop(Outcome.FATAL, result.fatal.message)
    return Stop(Outcome(result.outcome))


def stopped(result: EngineResult) -> Stop | None:
    """A Stop when a helper stage's engine run means the whole run must stop (fatal, interrupted, budget),
    else None (completed, or some items failed: the run goes on)."""
    if result.fatal is not None:
        return Stop(Outcome.FATAL, result.fatal.message)
    if result.outcome in (Outcome.INTERRUPTED, Outcome.BUDGET):
        return Stop(Outcome(result.outcome))
    return None


@dataclass
class Calls:
    """The engines of one run; ``stage`` is the last Stage reported to ``on_stage``."""

    log: EventLog
    rm: ReadModel
    run_id: str
    concurrency: int
    retry: RetryPolicy
    progress: Progress
    budget: Budget
    # the server passes one RateLimiter per provider, shared by all its jobs; None: one per client
    limiter_for: Callable[[Provider], Any] | None = None
    on_stage: Callable[[Stage], None] = lambda stage: None
    every: float = 0.5  # seconds between progress reports while an engine runs
    stage: Stage = field(default_factory=Stage)

    def show(self, phase: Phase, step: str, done: int = 0, total: int = 0) -> None:
        self.stage = Stage(phase, step, done, total)
        self.on_stage(self.stage)

    def waiting(self, holder: locks.Holder | None, what: str) -> str:
        """Show whom the run waits for; the step shown."""
        step = f"Waiting for {locks.who(holder)} to finish {what}"
        self.show(Phase.WAITING, step)
        return step

    def limiter(self, provider: Provider) -> Any:
        return self.limiter_for(provider) if self.limiter_for is not None else None

    def engine(self, provider: Provider, make_events: Any, total: int, **sampling: Any) -> Engine:
        """An Engine calling ``provider`` for ``total`` more items of the run (``sampling``: temperature, ...)."""
        from dsetlog.engine.engine import Engine
        from dsetlog.llm.client import LLMClient

        self.progress.total += total
        client = LLMClient(provider, concurrency=self.concurrency, timeout=300, limiter=self.limiter(provider),
                           learned=self.rm.endpoints.modes(), **sampling)
        return Engine(log=self.log, client=client, policy=self.retry, make_events=make_events,
                      progress=self.progress, run_id=self.run_id, concurrency=self.concurrency, budget=self.budget,
                      price=provider.price())

    def parser(self, provider: Provider) -> LLMClient:
        """A client of the parsing model, which repairs replies that are not the JSON asked for (close it)."""
        from dsetlog.llm.client import LLMClient

        return LLMClient(provider, concurrency=self.concurrency, timeout=300, limiter=self.limiter(provider),
                         learned=self.rm.endpoints.modes(), on_learned=self.log.append)

    async def run(self, provider: Provider, items: Sequence[WorkItem], make_events: Any, phase: Phase, label: str,
                  **sampling: Any) -> EngineResult:
        """Call ``provider`` for the items, showing "``label`` {done} of {total}" in ``phase`` meanwhile."""
        from dsetlog.engine.engine import run_reporting

        engine = self.engine(provider, make_events, len(items), **sampling)
        return await run_reporting(engine, items, lambda done, total: self.show(phase, f"{label} {done} of {total}",
                                                                                done, total), every=self.every)


async def acquire(lock: locks.FileLock, *, on_wait: Callable[[locks.Holder | None], Any],
                  stop: Callable[[], bool], error: type[Exception]) -> bool:
    """``lock.acquire_async``; a lock file that cannot be made is an ``error`` (a job fails with its message)."""
    try:
        return await lock.acquire_async(on_wait=on_wait, stop=stop)
    except locks.LockError as exc:
        raise error(str(exc)) from None
