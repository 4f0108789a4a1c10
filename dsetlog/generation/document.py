"""Document-grounded datasets: chunks of a project's documents turned into entries, then scored, split,
benchmarked and exported, every step an event so that a run can stop anywhere and continue.

:class:`DocumentRun` runs the stages in order, each in its own module: titling, generating, augmenting,
scoring (and judging), splitting, benchmark, exporting. The stages after generation each skip what the
log says is already done. Progress is reported as typed stages (dsetlog.engine.stages) through ``on_stage``.

One generator per dataset at a time, across processes: a run holds the dataset's lock (dsetlog.store.locks) from
planning to export. A second run of the same dataset waits for it (server jobs, whose stage then names the
holder; `dset datasets generate --wait`) or is refused at once with a message naming the holder (the CLI
without --wait: exit 2). Once it holds the lock it catches up with the log, so it requests only what the
first left undone, and it checks again before writing that no slot it answered became done meanwhile.
Chunk titles belong to the project: runs of different datasets take turns titling under the project's
titles lock, and each titles only the chunks still untitled once it holds it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from dsetlog.engine.progress import Budget, Cancel, Progress
from dsetlog.engine.stages import Outcome, Phase, Stage
from dsetlog.generation.augmenting import augment
from dsetlog.generation.benchmark import benchmark
from dsetlog.generation.calls import Calls, Stop
from dsetlog.generation.context import RunContext
from dsetlog.generation.errors import BUSY_ADVICE, DatasetBusy
from dsetlog.generation.exporting import export_files
from dsetlog.generation.generating import generate_entries
from dsetlog.generation.models import Models
from dsetlog.generation.plan import Plan, make_plan, queue, slot_plan
from dsetlog.generation.requests import GenerateRequest
from dsetlog.generation.scoring import score_entries
from dsetlog.generation.splitting import split_entries
from dsetlog.generation.titling import title_chunks
from dsetlog.ids import new_job_id
from dsetlog.llm.providers import Provider
from dsetlog.store import locks
from dsetlog.store.events import SlotQueued
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel

if TYPE_CHECKING:  # dsetlog.llm.client imports the openai SDK: only runs that make calls pay for that import
    from dsetlog.llm.client import RetryPolicy

# the outcomes after which a run goes on to its next stage (some failed items are retried by the next run)
GOING_ON = (Outcome.COMPLETED, Outcome.FAILED)


@dataclass
class DocRunResult:
    dataset_id: str
    name: str
    version: str | None
    outcome: str = Outcome.COMPLETED.value  # an Outcome's value: completed | failed | interrupted | budget | fatal
    message: str = ""
    entries_count: int = 0
    exported_count: int = 0
    files: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    quality_summary: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    benchmark: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.__dict__)


class DocumentRun:
    """One generation run over a project: plan, generate, augment, score, split, benchmark, export."""

    def __init__(self, *, log: EventLog, rm: ReadModel, data_dir: Path, req: GenerateRequest, models: Models,
                 job_id: str = "", progress: Progress | None = None, budget: Budget | None = None,
                 on_stage: Callable[[Stage], None] = lambda stage: None, retry: RetryPolicy | None = None,
                 limiter_for: Callable[[Provider], Any] | None = None, wait: bool = True,
                 cancel: Cancel | None = None) -> None:
        """``wait``: when another run holds this dataset, wait for it (server jobs) rather than refuse at once
        with :class:`DatasetBusy` (`dset datasets generate` without --wait). ``cancel``: the job's stop signal
        (its engines start no new call once it is set)."""
        self.log, self.rm, self.data_dir, self.req, self.models = log, rm, data_dir.resolve(), req, models
        self.wait = wait
        self._lock: locks.FileLock | None = None
        self.job_id = job_id or new_job_id()
        self.calls = Calls(log=log, rm=rm, run_id=self.job_id, concurrency=req.concurrency,
                           progress=progress or Progress(total=0, enabled=False), budget=budget or Budget(),
                           limiter_for=limiter_for, on_stage=on_stage, retry=retry, cancel=cancel)
        self.plan: Plan = make_plan(rm, req)
        # the run's own: the job worker may point the run at the dataset its job was submitted for
        self.dataset_id, self.version = self.plan.dataset_id, self.plan.version

    @property
    def progress(self) -> Progress:
        return self.calls.progress

    @property
    def budget(self) -> Budget:
        return self.calls.budget

    @property
    def stage(self) -> Stage:
        return self.calls.stage

    @property
    def name(self) -> str:
        return self.plan.name

    def slot_plan(self) -> list[SlotQueued]:
        """Every slot of the run, deterministic: N per chunk, or one per given question in "answer" mode."""
        return slot_plan(self.plan, self.dataset_id)

    def queue(self) -> None:
        """Append the dataset and the slots the log does not have yet (one fsync)."""
        queue(self.log, self.rm, self.plan, self.dataset_id, self.version)

    # -- the dataset's lock --------------------------------------------------------

    def _dataset_lock(self) -> locks.FileLock:
        # made when first needed: the job worker may point the run at the dataset its job was submitted for
        if self._lock is None or self._lock.path != locks.lock_path(self.data_dir, self.dataset_id):
            self._lock = locks.dataset(self.data_dir, self.dataset_id, job_id=self.job_id)
        return self._lock

    def claim(self, *, wait: bool | None = None, notify: Callable[[str], None] | None = None) -> None:
        """Take this dataset's lock now, before anything of the run is written (the CLI calls it before it
        records its job, so a refused run leaves nothing behind). ``wait`` (default: the run's own) False:
        :class:`DatasetBusy` naming the holder if another run has it; True: block until it is free, telling
        ``notify`` whom it waits for. The claimer releases it (:meth:`release`), after recording the job's
        end: until then the server's worker sees the job's lock held and leaves the job to its own process."""
        lock = self._dataset_lock()
        if lock.held:
            return

        def waiting(holder: locks.Holder | None) -> None:
            step = self.calls.waiting(holder, f"dataset {self.dataset_id}")
            if notify is not None:
                notify(step)

        try:
            lock.acquire(wait=self.wait if wait is None else wait, what=f"dataset {self.dataset_id}",
                         advice=BUSY_ADVICE, on_wait=waiting)
        except locks.LockBusy as exc:  # a DocGenError too, naming the holder: `dset datasets generate` refused
            raise DatasetBusy(str(exc), exc.holder) from None

    def release(self) -> None:
        """Release the dataset's lock taken by :meth:`claim` (a no-op when not held)."""
        if self._lock is not None:
            self._lock.release()

    # -- running ---------------------------------------------------------------

    async def run(self) -> DocRunResult:
        """The whole run under the dataset's lock: claimed already (:meth:`claim`; the claimer releases it),
        else taken here (waited for without blocking the loop, or refused at once when the run must not
        wait) and released at the end."""
        lock = self._dataset_lock()
        if lock.held:
            return await self._run_locked()
        if not self.wait:
            self.claim(wait=False)
        elif not await lock.acquire_async(on_wait=lambda holder: self.calls.waiting(holder, f"dataset {self.dataset_id}"),
                                          stop=self.calls.stop_requested):
            # cancelled while waiting: nothing was done, the job ends as stopped
            self.calls.show(Phase.STOPPED, f"Stopped: {Outcome.INTERRUPTED.value}")
            return DocRunResult(self.dataset_id, self.name, self.version, outcome=Outcome.INTERRUPTED.value,
                                message=f"stopped while waiting for dataset {self.dataset_id}")
        try:
            return await self._run_locked()
        finally:
            lock.release()

    def _context(self) -> RunContext:
        return RunContext(log=self.log, rm=self.rm, data_dir=self.data_dir, req=self.req, models=self.models,
                          plan=self.plan, dataset_id=self.dataset_id, job_id=self.job_id, calls=self.calls)

    async def _run_locked(self) -> DocRunResult:
        self.queue()  # catches up first: what another run made while this one waited is done, not planned
        ctx = self._context()
        result = DocRunResult(self.dataset_id, self.name, self.version)
        end = await title_chunks(ctx) or await generate_entries(ctx)
        if end.outcome in GOING_ON:
            end = await self._after_generation(ctx, result, end)
        result.outcome, result.message = end.outcome.value, end.message
        result.files, result.exported_count = export_files(ctx)
        self._summarise(result)
        finished = end.outcome is Outcome.COMPLETED
        total = self.stage.total
        self.calls.show(Phase.FINISHED if finished else Phase.STOPPED,
                        "Finished" if finished else f"Stopped: {end.outcome.value}", total, total)
        return result

    async def _after_generation(self, ctx: RunContext, result: DocRunResult, end: Stop) -> Stop:
        """Augment, score, split and benchmark as the request asks; how the run ends (``end`` unless stopped)."""
        augment(ctx)
        end = await score_entries(ctx) or end  # structural checks always; the costly analysis as asked
        if end.outcome in GOING_ON and (self.req.include_evaluation_sets or self.req.evaluation):
            split_entries(ctx)
        if end.outcome in GOING_ON and self.req.run_benchmarks:
            result.benchmark, stop = await benchmark(ctx)
            end = stop or end
        return end

    def _summarise(self, result: DocRunResult) -> None:
        view = self.rm.datasets.dataset(self.dataset_id)
        result.entries_count = view.entries if view is not None else 0
        result.quality_summary = self.rm.datasets.quality_summary(self.dataset_id)
        evaluation = self.rm.evaluations.splits(self.dataset_id)
        result.splits = dict(sorted(_count(evaluation.values()).items())) if evaluation else {}
        result.prompt_tokens, result.completion_tokens = self.progress.prompt_tokens, self.progress.completion_tokens
        result.cost = round(self.progress.cost, 6)


def _count(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out
