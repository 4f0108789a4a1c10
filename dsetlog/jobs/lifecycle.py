"""One job's life in the log, recorded the same way whoever runs it: `dset datasets generate` in its own
process (:func:`run_generation_job`) or the server's worker (:mod:`dsetlog.jobs.worker`).

    JobSubmitted (if the log has no such job yet) -> JobStarted (attempt n) -> the job's kind runs
    (generate, generate-evaluation, regenerate) -> JobCompleted | JobFailed | JobCancelled

A completed job's result holds the same fields whoever ran it (the run's own, plus ``tokens`` and
``job_id``). A failure is recorded with its message; a job cancelled by a user ends with JobCancelled; an
interruption (Ctrl-C, a server shutting down) records nothing, so the job stays unfinished and resumes. An
end is recorded only while the log shows the job unfinished, so no job ever has two ends.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from dsetlog.engine.progress import Budget, Cancel, Progress
from dsetlog.engine.stages import Outcome, Stage
from dsetlog.errors import DsetError
from dsetlog.generation.batching import job_settings
from dsetlog.generation.document import DocRunResult, DocumentRun
from dsetlog.generation.models import Models
from dsetlog.generation.regeneration import RegenerateRequest, regenerated_by, run_regeneration
from dsetlog.generation.requests import GenerateRequest
from dsetlog.llm.providers import Provider
from dsetlog.paths import export_dir
from dsetlog.store.errors import LogWriteError
from dsetlog.store.events import JobCancelled, JobCompleted, JobFailed, JobStarted, JobSubmitted
from dsetlog.store.log import EventLog
from projections.jobs import JobView
from projections.readmodel import ReadModel

_log = logging.getLogger("dsetlog.jobs")

GENERATE_KINDS = ("generate", "generate-evaluation")
DATASET_VERSION_KEY = "dataset_version"  # kept beside the request in JobSubmitted: the version a job makes


class Recorded(str, enum.Enum):
    """What :meth:`JobLife.run` recorded of a job's end, or why it recorded nothing."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ENDED = "ended"  # the log shows its end already (another server's request cancelled it)
    INTERRUPTED = "interrupted"  # nothing: a shutdown or Ctrl-C stopped it, it resumes at its next start


@dataclass
class JobEnd:
    """How a job's run ended: its outcome, the message a failure is recorded with, and the result."""

    outcome: Outcome
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobRunner:
    """What running a job needs beyond its request: where, against which models, reporting to whom.

    ``again``: how its user retries what failed (said in a failed job's message). ``on_stage`` is told
    every stage the run reaches; ``cancel`` is the job's stop signal (the server's; None on the CLI)."""

    log: EventLog
    rm: ReadModel
    data_dir: Path
    simulator_url: str | None = None
    limiter_for: Callable[[Provider], Any] | None = None
    progress: Progress = field(default_factory=lambda: Progress(total=0, enabled=False))
    budget: Budget | None = None
    cancel: Cancel | None = None
    on_stage: Callable[[Stage], None] = lambda stage: None
    wait: bool = True  # another run holds the dataset: wait for it (False: refused at once, naming it)
    again: str = "POST the same request again"


class JobLife:
    """Records one job's life in the log (see the module's description)."""

    def __init__(self, log: EventLog, rm: ReadModel, job_id: str) -> None:
        self.log, self.rm, self.job_id = log, rm, job_id

    def job(self) -> JobView | None:
        self.rm.catch_up()
        return self.rm.jobs.job(self.job_id)

    def submit(self, kind: str, request: dict[str, Any], dataset_id: str | None) -> None:
        """JobSubmitted, unless the log has this job already (a resumed job keeps its first submission)."""
        if self.job() is None:
            self.log.append(JobSubmitted(job_id=self.job_id, kind=kind, request=request, dataset_id=dataset_id))

    def start(self) -> int:
        """JobStarted with the attempt's number (1 for a new job, n + 1 after n starts); returns it."""
        job = self.job()
        attempt = job.starts + 1 if job is not None else 1
        self.log.append(JobStarted(job_id=self.job_id, attempt=attempt))
        return attempt

    def fail(self, message: str) -> None:
        if self._unfinished():
            self.log.append(JobFailed(job_id=self.job_id, error=message))

    def cancelled(self, reason: str) -> None:
        if self._unfinished():
            self.log.append(JobCancelled(job_id=self.job_id, reason=reason))

    def end(self, end: JobEnd, *, cancel: Cancel | None = None, resumable: bool = True) -> Recorded:
        """Record how the run ended (``resumable``: an interrupted run records nothing, it resumes)."""
        if not self._unfinished():
            return Recorded.ENDED
        if cancel is not None and cancel.is_set() and end.outcome is not Outcome.COMPLETED:
            self.cancelled(cancel.reason or "")
            return Recorded.CANCELLED
        if end.outcome is Outcome.COMPLETED:
            self.log.append(JobCompleted(job_id=self.job_id, result=end.result))
            return Recorded.COMPLETED
        if end.outcome is Outcome.INTERRUPTED and resumable:
            return Recorded.INTERRUPTED
        self.fail(end.message or end.outcome.explain())
        return Recorded.FAILED

    def _unfinished(self) -> bool:
        job = self.job()
        return job is None or not job.finished

    async def run(self, work: Callable[[], Awaitable[JobEnd]], *, cancel: Cancel | None = None,
                  resumable: Callable[[], bool] = lambda: True, raise_errors: bool = False) -> Recorded:
        """Run ``work`` (the job's kind, already started) and record its end; returns what was recorded.

        A task cancelled (by the worker, after the cancel grace) records JobCancelled when ``cancel`` is set,
        else nothing: a shutdown interrupted it. A :class:`DsetError` (or a request that no longer validates)
        fails the job with its message; anything else with "internal error", the output having the details.
        ``raise_errors``: raise the error once its JobFailed is recorded (the CLI shows it). A log that cannot
        be written is raised as it is: nothing, not even the job's end, can be recorded."""
        try:
            end = await work()
        except asyncio.CancelledError:
            if cancel is not None and cancel.is_set():
                self.cancelled(cancel.reason or "")
                return Recorded.CANCELLED
            return Recorded.INTERRUPTED
        except LogWriteError:
            raise
        except (DsetError, msgspec.ValidationError) as exc:
            self.fail(str(exc))
            if raise_errors:
                raise
            return Recorded.FAILED
        except Exception as exc:
            where = "the command's output" if raise_errors else "the server's output"
            self.fail(f"internal error ({type(exc).__name__}); {where} has the details")
            if raise_errors:
                raise  # the command shows it
            _log.exception("job %s failed with an unexpected error", self.job_id)
            return Recorded.FAILED
        return self.end(end, cancel=cancel, resumable=resumable())


# -- the kinds of job ----------------------------------------------------------------------------------------


def generation_result(res: DocRunResult, job_id: str) -> dict[str, Any]:
    """A generation job's result: the run's own fields, its tokens and the job's id."""
    return {**res.as_dict(), "tokens": res.prompt_tokens + res.completion_tokens, "job_id": job_id}


def document_run(runner: JobRunner, req: GenerateRequest, job_id: str) -> DocumentRun:
    """The generation run of a job, its export folder checked (before the job is in the log, and again for a
    job resumed with a request from an older version)."""
    models = Models.resolve(req, simulator_url=runner.simulator_url)
    run = DocumentRun(log=runner.log, rm=runner.rm, data_dir=runner.data_dir, req=req, models=models,
                      job_id=job_id, progress=runner.progress, budget=runner.budget,
                      on_stage=runner.on_stage, limiter_for=runner.limiter_for, wait=runner.wait,
                      cancel=runner.cancel)
    export_dir(runner.data_dir, req.output_dir, run.dataset_id)  # an OutputDirError is the job's failure
    return run


def generation_end(res: DocRunResult, job_id: str, runner: JobRunner) -> JobEnd:
    """How a generation job ended; a failed one says how many work items failed and how to retry them."""
    end = JobEnd(Outcome(res.outcome), res.message, generation_result(res, job_id))
    if end.outcome is Outcome.FAILED and not end.message:
        failed = runner.rm.datasets.items(res.dataset_id, status="failed")
        end.message = f"{len(failed)} work items failed after their retries; {runner.again} to retry them"
    return end


async def generate(job: JobView, runner: JobRunner) -> JobEnd:
    """A generate or generate-evaluation job from its request in the log."""
    request = dict(job.request)
    version = request.pop(DATASET_VERSION_KEY, None)
    run = document_run(runner, msgspec.convert(request, GenerateRequest), job.id)
    if job.dataset_id and run.dataset_id != job.dataset_id:
        # the dataset this job was submitted for (a versioned dataset resumed after its entries were all made
        # would otherwise look finished, and a new version would start)
        run.dataset_id = job.dataset_id
        existing = runner.rm.datasets.dataset(job.dataset_id)
        run.version = existing.version if existing is not None else version
    return generation_end(await run.run(), job.id, runner)


async def regenerate(job: JobView, runner: JobRunner) -> JobEnd:
    """A regenerate job; a resumed one skips the entries its earlier attempts regenerated (and polls the batches it
    submitted, with ``batch``)."""
    request = dict(job.request)
    dataset_id = str(request.pop("dataset_id", None) or job.dataset_id or "")
    req = msgspec.convert(request, RegenerateRequest)
    batch = None  # online calls
    if req.batch:
        batch = job_settings(req.batch_fallback, req.batch_poll, cancel_batches=runner.cancel is not None)
    skip = await asyncio.to_thread(regenerated_by, runner.data_dir, job.id) if job.starts else set()
    res = await run_regeneration(log=runner.log, rm=runner.rm, job_id=job.id, dataset_id=dataset_id,
                                 entry_ids=req.entry_ids, config=req.regeneration_config,
                                 simulator_url=runner.simulator_url, limiter_for=runner.limiter_for,
                                 budget=runner.budget, on_stage=runner.on_stage, skip=skip, progress=runner.progress,
                                 cancel=runner.cancel, batch=batch)
    message = res.message
    if res.outcome == Outcome.FAILED:
        message = f"{len(res.failed)} entries could not be regenerated: {', '.join(res.failed[:20])}"
    return JobEnd(Outcome(res.outcome), message, {**res.as_dict(), "job_id": job.id})


async def run_kind(job: JobView, runner: JobRunner) -> JobEnd:
    """Run the job as its kind says."""
    if job.kind in GENERATE_KINDS:
        return await generate(job, runner)
    if job.kind == "regenerate":
        return await regenerate(job, runner)
    return JobEnd(Outcome.FATAL, f"unknown job kind {job.kind!r}")


# -- the command line's way ----------------------------------------------------------------------------------


def run_generation_job(*, log: EventLog, rm: ReadModel, data: Path, req: GenerateRequest, job_id: str,
                       kind: str, sim_url: str | None, progress: Progress, budget: Budget | None = None,
                       on_stage: Callable[[Stage], None] | None = None, wait: bool = True) -> DocRunResult:
    """Submit (if new), start, run and record the end of one generation job in this process (`dset datasets
    generate`): refused (or waiting, ``wait``) before anything is written when another run holds the dataset."""
    runner = JobRunner(log=log, rm=rm, data_dir=data, simulator_url=sim_url, progress=progress, budget=budget,
                       wait=wait, again="run the same command again", **({"on_stage": on_stage} if on_stage else {}))
    run = document_run(runner, req, job_id)
    # one generator per dataset: held from here until the job's end is in the log
    run.claim(notify=lambda step: print(step, file=sys.stderr, flush=True))
    made: list[DocRunResult] = []

    async def work() -> JobEnd:
        made.append(await run.run())
        return generation_end(made[0], job_id, runner)

    try:
        life = JobLife(log, rm, job_id)
        life.submit(kind, msgspec.to_builtins(req), run.dataset_id)
        life.start()
        asyncio.run(life.run(work, raise_errors=True))
        rm.catch_up()
        return made[0]
    finally:
        run.release()
