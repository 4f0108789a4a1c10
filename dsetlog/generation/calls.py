"""The model calls of one run (a generation or a regeneration): each stage's calls go through an Engine
sharing the run's progress, budget, retry policy and rate limiters, and report their progress as a typed
:class:`dsetlog.engine.stages.Stage` through the run's one ``on_stage``.

Also how a stage's engine run ends the whole run (:class:`Stop`), and showing whom a run waits for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dsetlog.engine.build import EngineSettings, client_for, engine_for
from dsetlog.engine.progress import Budget, Cancel, Progress
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
    progress: Progress
    budget: Budget
    # the server passes one RateLimiter per provider, shared by all its jobs; None: one per client
    limiter_for: Callable[[Provider], Any] | None = None
    on_stage: Callable[[Stage], None] = lambda stage: None
    retry: RetryPolicy | None = None  # None: the builder's default schedule
    cancel: Cancel | None = None  # the job's stop signal; None: the one of the job this task runs
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

    def stop_requested(self) -> bool:
        """The budget is reached or the job cancelled: start nothing new (and stop waiting for a lock)."""
        return self.budget.reached(self.progress) or (self.cancel is not None and self.cancel.is_set())

    def settings(self) -> EngineSettings:
        """How this run's clients and engines are made (dsetlog.engine.build, the one place that makes them)."""
        return EngineSettings(concurrency=self.concurrency, retry=self.retry, limiter_for=self.limiter_for,
                              learned=self.rm.endpoints.modes())

    def engine(self, provider: Provider, make_events: Any, total: int, **sampling: Any) -> Engine:
        """An Engine calling ``provider`` for ``total`` more items of the run (``sampling``: temperature, ...)."""
        self.progress.total += total
        return engine_for(provider, self.settings(), log=self.log, make_events=make_events, progress=self.progress,
                          run_id=self.run_id, budget=self.budget, cancel=self.cancel, **sampling)

    def parser(self, provider: Provider) -> LLMClient:
        """A client of the parsing model, which repairs replies that are not the JSON asked for (close it)."""
        return client_for(provider, self.settings(), on_learned=self.log.append)

    async def run(self, provider: Provider, items: Sequence[WorkItem], make_events: Any, phase: Phase, label: str,
                  **sampling: Any) -> EngineResult:
        """Call ``provider`` for the items, showing "``label`` {done} of {total}" in ``phase`` meanwhile."""
        from dsetlog.engine.engine import run_reporting

        engine = self.engine(provider, make_events, len(items), **sampling)
        return await run_reporting(engine, items, lambda done, total: self.show(phase, f"{label} {done} of {total}",
                                                                                done, total), every=self.every)
