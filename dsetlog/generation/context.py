"""What every stage of a document generation run reads: the log, the read model, the request, the models,
the plan, the dataset being made and the run's calls."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dsetlog.generation.calls import Calls
from dsetlog.generation.models import Models
from dsetlog.generation.plan import Plan
from dsetlog.generation.requests import GenerateRequest
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel


@dataclass(frozen=True)
class RunContext:
    log: EventLog
    rm: ReadModel
    data_dir: Path
    req: GenerateRequest
    models: Models
    plan: Plan
    dataset_id: str
    job_id: str
    calls: Calls

    def stop_requested(self) -> bool:
        """The budget is reached, or the job cancelled: start nothing new."""
        return self.calls.stop_requested()

    def title(self, chunk_id: str) -> str | None:
        """The chunk's topic line, when a run has titled it."""
        view = self.rm.projects.chunk(chunk_id)
        return view.title if view else None
