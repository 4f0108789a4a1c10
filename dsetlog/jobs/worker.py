"""The job worker of `dset serve`: runs submitted jobs in the background, resumes them after a crash.

One thread runs one asyncio loop; every job is a task on it, so the worker's own read model is only
ever touched by that thread (the HTTP threads read theirs). A job's life is in the log, recorded by
:mod:`dsetlog.jobs.lifecycle` as for a job the command line runs:

    JobSubmitted (by the request) -> JobStarted (each time a worker starts it) ->
    JobCompleted | JobFailed | JobCancelled

* **Per-job concurrency** comes from the request (``concurrency``); at most ``max_jobs`` jobs run at
  once, the others wait as ``pending``. All jobs share **one rate controller per endpoint** (profile and
  base URL), so two jobs against one account respect its requests/tokens per minute together.
* **Resume**: on start the worker runs every job the log shows unfinished (``Jobs.unfinished()``). Work
  items already done are never requested again (the generation and regeneration cores skip them), so a
  server killed with kill -9 in the middle of a job finishes it at its next start without a duplicate.
* **Cancel**: the job stops taking new work at once (its :class:`~dsetlog.engine.progress.Cancel` is set,
  which every engine of its run checks), calls in flight may finish for ``cancel_grace`` seconds (none when
  it only waits for another run's lock), then the task is cancelled; JobCancelled is appended. Entries
  already made stay. A server shutting down interrupts its jobs without cancelling them: they resume.
* **Live status**: :meth:`JobWorker.live` gives the running job's stage ("Processing chunk 45 of 100"),
  progress 0-100 from the stage's phase and real counts (:meth:`Stage.percent`), and an estimated completion
  from the observed rate.

* **Several servers on one data dir**: one worker runs the jobs (it holds ``locks/jobs.lock``); every
  ``WATCH_INTERVAL`` seconds it catches up with the log and runs the jobs another server accepted, and
  stops a job another server's request cancelled. The other servers serve reads and accept jobs; their
  workers keep trying the lock and take over, resuming unfinished jobs, when its holder stops or dies.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
import portalocker

from dsetlog.engine.progress import Cancel, Progress
from dsetlog.engine.stages import Phase, Stage
from dsetlog.jobs.lifecycle import JobLife, JobRunner, Recorded, run_kind
from dsetlog.llm.providers import Provider
from dsetlog.store import locks
from dsetlog.store.errors import LogWriteError
from dsetlog.store.log import EventLog
from projections.jobs import JOB_CANCELLED
from projections.readmodel import ReadModel

_log = logging.getLogger("dsetlog.jobs.worker")

WATCH_INTERVAL = 1.0  # seconds between looks at the log for other servers' jobs, and at the worker lock
WRITE_RETRY_S = 5.0  # a job stopped by a log that cannot be written is tried again this often


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Live:
    """What the worker knows of a job it runs, beyond the log."""

    job_id: str
    stage: Stage = field(default_factory=Stage)
    percent: float = 0.0
    started: float = field(default_factory=time.time)
    start_percent: float = 0.0
    progress: Progress = field(default_factory=lambda: Progress(total=0, enabled=False))
    cancel: Cancel = field(default_factory=Cancel)  # set: cancelled by a user (not interrupted by a shutdown)
    task: asyncio.Task[None] | None = None

    def update(self, stage: Stage) -> None:
        self.stage = stage
        percent = stage.percent()
        if percent is not None:
            self.percent = max(self.percent, percent)  # stages only move forward

    def estimated_completion(self) -> str | None:
        """Now plus the time the rest takes at the rate observed since this attempt started."""
        gained = self.percent - self.start_percent
        elapsed = time.time() - self.started
        if gained <= 0.5 or elapsed <= 0 or self.percent >= 100:
            return None
        return iso(time.time() + (100 - self.percent) * elapsed / gained)


class LiveStatus(msgspec.Struct, frozen=True):
    step: str
    progress: int
    estimated_completion: str | None
    prompt_tokens: int
    completion_tokens: int
    cost: float
    cancelling: bool


class JobWorker:
    """Runs the jobs of one data dir on a background thread; see the module's description."""

    def __init__(self, data_dir: str | Path, log: EventLog, *, simulator_url: str | None = None,
                 max_jobs: int = 4, rpm: int = 0, tpm: int = 0, cancel_grace: float = 10.0,
                 open_model: Callable[[Path], ReadModel] = ReadModel.open,
                 after_job: Callable[[], Any] | None = None, jobs_model: ReadModel | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.log = log
        self.simulator_url = simulator_url
        self.max_jobs = max_jobs
        self.rpm, self.tpm = rpm, tpm
        self.cancel_grace = cancel_grace
        self._open_model = open_model
        self._after_job = after_job  # run off the loop after each job that ended (the server saves a snapshot)
        self._rm: ReadModel | None = None  # the worker's own, opened on its thread when first needed
        # where the watcher looks for jobs: the server's read model (shared under its lock, so watching costs
        # no second model), else the worker's own
        self._jobs_model = jobs_model
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._live: dict[str, Live] = {}
        self._queued: set[str] = set()  # launched, not finished (waiting for a slot or running)
        self._cancel_requested: dict[str, str] = {}
        # jobs stopped because the log could not be written: (the message, when to try again)
        self._write_failures: dict[str, tuple[str, float]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._stopping = False
        self._lock_file: Any = None
        self._watch_task: asyncio.Task[None] | None = None
        self.enabled = False  # False: another process holds the data dir's worker lock (for now)
        self.started = threading.Event()

    # -- lifecycle (any thread) ------------------------------------------------------------------------

    def start(self, *, resume: list[str] | None = None) -> bool:
        """Start the thread and resume ``resume`` (ids of unfinished jobs); False if another worker runs the
        dir's jobs for now (this one takes over when that one stops)."""
        lock_dir = self.data_dir / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(lock_dir / "jobs.lock", "a+b")  # noqa: SIM115 - held while the worker runs
        self.enabled = self._try_lock()
        if not self.enabled:
            _log.warning("another server runs the jobs of %s; this one accepts jobs and takes over when it stops",
                         self.data_dir)
        self._thread = threading.Thread(target=self._run_loop, name="dset-jobs", daemon=True)
        self._thread.start()
        self.started.wait(10)
        self._loop.call_soon_threadsafe(self._start_watching)
        for job_id in resume or ():
            self.submit(job_id)
        return self.enabled

    def _try_lock(self) -> bool:
        try:
            portalocker.lock(self._lock_file, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.LockException:
            return False
        return True

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._slots = asyncio.Semaphore(self.max_jobs)
        self.started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def submit(self, job_id: str) -> None:
        """Run this (submitted) job when a slot is free."""
        if not self.enabled or self._stopping:
            return
        self._loop.call_soon_threadsafe(self._launch, job_id)

    def cancel(self, job_id: str, reason: str = "") -> bool:
        """Ask a job this worker has launched to stop; False when it has not launched it (the caller then
        appends JobCancelled itself)."""
        if not self.enabled or job_id not in self._queued:
            return False
        self._cancel_requested[job_id] = reason
        self._loop.call_soon_threadsafe(self._cancel, job_id, reason)
        return True

    def live(self, job_id: str) -> LiveStatus | None:
        live = self._live.get(job_id)
        if live is None:
            return None
        p = live.progress
        return LiveStatus(live.stage.step, int(live.percent), live.estimated_completion(), p.prompt_tokens,
                          p.completion_tokens, round(p.cost, 6), live.cancel.is_set())

    def live_all(self) -> dict[str, LiveStatus]:
        out = {}
        for job_id in list(self._live):
            status = self.live(job_id)
            if status is not None:
                out[job_id] = status
        return out

    def write_failure(self, job_id: str) -> str | None:
        """Why this job is stopped until the log can be written again (disk full, read-only), if it is."""
        failure = self._write_failures.get(job_id)
        return failure[0] if failure is not None else None

    def is_running(self, job_id: str) -> bool:
        return job_id in self._queued

    @property
    def running(self) -> int:
        """Jobs running now (not counting those waiting for a slot)."""
        return len(self._live)

    def stop(self, timeout: float = 15.0) -> None:
        """Interrupt running jobs (they stay unfinished in the log and resume at the next start) and stop."""
        if self._thread is None:
            return
        self._stopping = True
        done = threading.Event()

        async def shutdown() -> None:
            if self._watch_task is not None:
                self._watch_task.cancel()
            tasks = [live.task for live in self._live.values() if live.task is not None]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)
            done.set()

        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(shutdown()))
        done.wait(timeout + 2)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._thread = None
        if self._lock_file is not None:
            if self.enabled:
                portalocker.unlock(self._lock_file)
            self._lock_file.close()
            self._lock_file = None
        self.enabled = False

    # -- on the loop ----------------------------------------------------------------------------------

    @property
    def rm(self) -> ReadModel:
        if self._rm is None:
            self._rm = self._open_model(self.data_dir)
        return self._rm

    def limiter_for(self, provider: Provider) -> Any:
        """The rate controller of this provider's endpoint, shared by every job (and every other client)."""
        from dsetlog.llm.ratelimit import controller_for

        return controller_for(provider.endpoint, rpm=self.rpm, tpm=self.tpm)

    def _start_watching(self) -> None:
        self._watch_task = self._loop.create_task(self._watch())

    async def _watch(self) -> None:
        """Every WATCH_INTERVAL: take the worker lock if it is free; then run the jobs other servers accepted
        and stop the ones they cancelled."""
        while not self._stopping:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                if not self.enabled:
                    if not self._try_lock():
                        continue
                    self.enabled = True
                    _log.info("the worker that ran the jobs of %s stopped; this server runs them now", self.data_dir)
                live = list(self._live)
                if self._jobs_model is not None:  # a big catch-up must not stall the running jobs
                    unfinished, cancelled = await asyncio.to_thread(_jobs_in, self._jobs_model, live)
                else:
                    unfinished, cancelled = _jobs_in(self.rm, live)
            except Exception:  # noqa: BLE001 - looking again next time is the remedy
                _log.exception("watching the log for jobs")
                continue
            for job_id in unfinished:
                self._launch(job_id)  # a no-op for the jobs launched already
            for job_id, reason in cancelled.items():
                live_job = self._live.get(job_id)
                if live_job is not None and not live_job.cancel.is_set():
                    self._cancel(job_id, reason)  # its JobCancelled is in the log: the job's end records nothing

    def _launch(self, job_id: str) -> None:
        if job_id in self._queued or self._stopping:
            return
        failure = self._write_failures.get(job_id)
        if failure is not None and time.monotonic() < failure[1]:
            return  # the log could not be written a moment ago: the watcher launches it again later
        self._queued.add(job_id)
        self._loop.create_task(self._guarded(job_id))

    def _cancel(self, job_id: str, reason: str) -> None:
        live = self._live.get(job_id)
        if live is None:  # still waiting for a slot: it ends here (_run then finds it finished)
            JobLife(self.log, self.rm, job_id).cancelled(reason)
            return
        waiting = live.stage.phase is Phase.WAITING  # for another run's lock: no call in flight to finish
        live.cancel.set(reason)
        live.update(Stage(Phase.CANCELLING, "Cancelling", live.stage.done, live.stage.total))
        if live.task is not None:
            self._loop.call_later(0 if waiting else self.cancel_grace, live.task.cancel)

    async def _guarded(self, job_id: str) -> None:
        try:
            await self._run(job_id)
            self._write_failures.pop(job_id, None)
        except LogWriteError as exc:
            # Nothing can be recorded, not even the job's end: it stays unfinished in the log and is tried again
            # every WRITE_RETRY_S (the watcher relaunches it), so it resumes by itself once writes work again.
            if job_id not in self._write_failures:
                _log.error("job %s stopped: %s", job_id, exc)
            self._write_failures[job_id] = (str(exc), time.monotonic() + WRITE_RETRY_S)
        except Exception:  # noqa: BLE001 - a job must never take the worker down
            _log.exception("job %s: unexpected error in the worker", job_id)
        finally:
            self._queued.discard(job_id)
            self._live.pop(job_id, None)
            self._cancel_requested.pop(job_id, None)
        if self._after_job is not None and not self._stopping:
            try:
                await asyncio.to_thread(self._after_job)
            except Exception:  # noqa: BLE001 - housekeeping must not take the worker down
                _log.exception("after job %s", job_id)

    async def _run(self, job_id: str) -> None:
        assert self._slots is not None
        async with self._slots:
            if self._stopping:
                return
            rm = self.rm
            life = JobLife(self.log, rm, job_id)
            job = life.job()
            if job is None or job.finished:
                return
            if job.dataset_id and locks.running_elsewhere(self.data_dir, job.dataset_id, job_id):
                return  # the `dset datasets generate` that recorded it runs it; resumed here only if that one dies
            if job_id in self._cancel_requested:
                life.cancelled(self._cancel_requested[job_id])
                return
            live = self._live[job_id] = Live(job_id)
            live.task = asyncio.current_task()
            attempt = life.start()
            _log.info("job %s (%s) started, attempt %d", job_id, job.kind, attempt)
            runner = JobRunner(log=self.log, rm=rm, data_dir=self.data_dir, simulator_url=self.simulator_url,
                               limiter_for=self.limiter_for, progress=live.progress, cancel=live.cancel,
                               on_stage=live.update)

            async def work() -> Any:
                live.start_percent = live.percent
                return await run_kind(job, runner)

            ended = await life.run(work, cancel=live.cancel, resumable=lambda: self._stopping)
            _log.info("job %s %s", job_id, _ENDED.get(ended, ended.value))


# what the log says of a job's end, as the worker's output says it
_ENDED = {Recorded.ENDED: "cancelled",
          Recorded.INTERRUPTED: "interrupted by the shutdown; it resumes at the next start"}


def _jobs_in(rm: ReadModel, live: list[str]) -> tuple[list[str], dict[str, str]]:
    """From the log, caught up: the unfinished jobs, and which of ``live`` were cancelled (id -> reason)."""
    with rm.lock:
        rm.catch_up()
        unfinished = [j.id for j in rm.jobs.unfinished()]
        cancelled = {}
        for job_id in live:
            job = rm.jobs.job(job_id)
            if job is not None and job.status == JOB_CANCELLED:
                cancelled[job_id] = job.cancel_reason or ""
        return unfinished, cancelled
