"""Where a run is: typed stages with their share of the 0-100 progress scale, and how a run ended.

A generation or regeneration reports a :class:`Stage` each time it moves (``on_stage(stage)``); the job
worker turns it into a percentage with :meth:`Stage.percent`, never by reading the text, so the words shown
to people can change freely. A run ends with an :class:`Outcome`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Phase(str, enum.Enum):
    STARTING = "starting"
    WAITING = "waiting"  # for another run that holds the dataset
    TITLING = "titling"  # chunks without a heading get a topic
    GENERATING = "generating"
    AUGMENTING = "augmenting"
    SCORING = "scoring"
    JUDGING = "judging"
    SPLITTING = "splitting"
    BENCHMARKING = "benchmarking"
    EXPORTING = "exporting"
    REGENERATING = "regenerating"
    CANCELLING = "cancelling"
    FINISHED = "finished"
    STOPPED = "stopped"


# Each phase's span of the 0-100 scale: (start, end). Phases without one (waiting, cancelling, stopped)
# leave the percentage where it was.
SPANS: dict[Phase, tuple[float, float]] = {
    Phase.TITLING: (0, 10),
    Phase.GENERATING: (10, 80),
    Phase.AUGMENTING: (80, 80),
    Phase.SCORING: (80, 82),
    Phase.JUDGING: (82, 90),
    Phase.SPLITTING: (90, 90),
    Phase.BENCHMARKING: (90, 97),
    Phase.EXPORTING: (97, 99),
    Phase.REGENERATING: (0, 99),
    Phase.FINISHED: (100, 100),
}


@dataclass(frozen=True)
class Stage:
    """A phase, the line people read ("Processing chunk 45 of 100"), and its counts."""

    phase: Phase = Phase.STARTING
    step: str = "Starting"
    done: int = 0
    total: int = 0

    def percent(self) -> float | None:
        """Overall progress, 0-100; None for a phase that has no span."""
        span = SPANS.get(self.phase)
        if span is None:
            return None
        start, end = span
        share = self.done / self.total if self.total else 0.0
        return start + (end - start) * min(1.0, max(0.0, share))


class Outcome(str, enum.Enum):
    """How a run ended. A str, so it is written to the log and to results as its value."""

    COMPLETED = "completed"
    FAILED = "failed"  # some work items failed after their retries: the same run again retries them
    INTERRUPTED = "interrupted"  # stopped from outside (Ctrl-C, a shutdown): the same run again continues
    BUDGET = "budget"  # the token or cost budget was reached
    FATAL = "fatal"  # the provider refused the calls (key, quota, model)

    def __str__(self) -> str:
        return self.value

    def explain(self) -> str:
        """What a job's status says for a run that ended so, when the run gave no message of its own."""
        return _EXPLAINED[self]


_EXPLAINED = {
    Outcome.COMPLETED: "completed",
    Outcome.FAILED: "some work items failed after their retries; submit the same request again to retry them",
    Outcome.INTERRUPTED: "interrupted",
    Outcome.BUDGET: "stopped: the budget was reached",
    Outcome.FATAL: "the provider refused the calls (key, quota or model); fix it and submit the job again",
}
