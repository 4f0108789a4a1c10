"""The job lifecycle's contract, one test case run both ways a job runs: the command line's
(:func:`dsetlog.jobs.lifecycle.run_generation_job`, what `dset datasets generate` runs) and the server's
(:class:`dsetlog.jobs.worker.JobWorker`), both against the built-in simulator.

:class:`JobLifeContract` holds the tests and is not collected by itself (eventsourcing's habit: every
backend reuses one test case); each subclass says only how it runs a job to its end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from harness import Env

from dsetlog.engine.progress import Progress
from dsetlog.generation.document import DocumentRun
from dsetlog.generation.models import Models
from dsetlog.generation.requests import GenerateRequest
from dsetlog.jobs.lifecycle import JobLife, run_generation_job
from dsetlog.jobs.worker import JobWorker
from dsetlog.simulator.server import Simulator
from dsetlog.store.events import (
    EntryGenerated,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobStarted,
    JobSubmitted,
)
from projections.jobs import JobView

CHUNKS, PER_CHUNK = 4, 2
# what a completed generation job's result holds, whoever ran it
RESULT_FIELDS = {"dataset_id", "name", "version", "outcome", "message", "entries_count", "exported_count", "files",
                 "prompt_tokens", "completion_tokens", "cost", "quality_summary", "splits", "benchmark", "tokens",
                 "job_id"}
JOB_EVENTS = (JobSubmitted, JobStarted, JobCompleted, JobFailed, JobCancelled)


class JobLifeContract:
    """The tests every way of running a job must pass; subclasses implement :meth:`run_job`."""

    def run_job(self, env: Env, job_id: str, req: GenerateRequest) -> None:
        """Run the job ``job_id`` (submitted already or not) of ``req`` to its end."""
        raise NotImplementedError

    @pytest.fixture
    def env(self, tmp_path: Path, make_simulator: Callable[..., Simulator]) -> Env:
        env = Env(tmp_path, make_simulator(latency_ms=2))
        env.project_md(CHUNKS)
        return env

    def job(self, env: Env, job_id: str) -> JobView:
        env.rm.catch_up()
        job = env.rm.jobs.job(job_id)
        assert job is not None
        return job

    def life(self, env: Env, job_id: str) -> list[Any]:
        return [e for e in env.events(tuple(JOB_EVENTS)) if e.job_id == job_id]  # type: ignore[arg-type]

    def test_a_jobs_life_is_submitted_started_completed_in_that_order(self, env: Env) -> None:
        self.run_job(env, "job_life", env.request(datasets_per_chunk=PER_CHUNK))
        life = self.life(env, "job_life")
        assert [type(e) for e in life] == [JobSubmitted, JobStarted, JobCompleted]
        assert life[0].kind == "generate" and life[1].attempt == 1
        assert self.job(env, "job_life").status == "completed"

    def test_the_result_holds_the_same_fields_whoever_runs_the_job(self, env: Env) -> None:
        self.run_job(env, "job_result", env.request(datasets_per_chunk=PER_CHUNK))
        result = self.job(env, "job_result").result
        assert set(result) == RESULT_FIELDS
        assert result["job_id"] == "job_result" and result["outcome"] == "completed"
        assert result["entries_count"] == CHUNKS * PER_CHUNK
        assert result["tokens"] == result["prompt_tokens"] + result["completion_tokens"] > 0

    def test_a_failing_job_ends_with_job_failed_saying_why(self, tmp_path: Path,
                                                           make_simulator: Callable[..., Simulator]) -> None:
        env = Env(tmp_path, make_simulator(quota_exhausted=True))
        env.project_md(CHUNKS)
        self.run_job(env, "job_fails", env.request(datasets_per_chunk=PER_CHUNK))
        life = self.life(env, "job_fails")
        assert [type(e) for e in life] == [JobSubmitted, JobStarted, JobFailed]
        assert "quota" in life[-1].error.lower(), life[-1].error
        assert self.job(env, "job_fails").status == "failed"

    def test_a_resumed_job_starts_attempt_2_and_makes_no_entry_twice(self, env: Env) -> None:
        req = env.request(datasets_per_chunk=PER_CHUNK)
        run = DocumentRun(log=env.log, rm=env.rm, data_dir=env.data, req=req,
                          models=Models.resolve(req, simulator_url=env.sim.base_url), job_id="job_resumed")
        # a job that was started and then killed before it made anything
        life = JobLife(env.log, env.rm, "job_resumed")
        life.submit("generate", msgspec.to_builtins(req), run.dataset_id)
        assert life.start() == 1
        self.run_job(env, "job_resumed", req)
        events = self.life(env, "job_resumed")
        assert [type(e) for e in events] == [JobSubmitted, JobStarted, JobStarted, JobCompleted]
        assert [e.attempt for e in events if isinstance(e, JobStarted)] == [1, 2]
        job = self.job(env, "job_resumed")
        assert job.starts == 2 and job.result["entries_count"] == CHUNKS * PER_CHUNK

        self.run_job(env, "job_again", req)  # the same request again: nothing left to make
        entries = [e.item_id for e in env.events(EntryGenerated)]
        assert len(entries) == len(set(entries)) == CHUNKS * PER_CHUNK
        assert self.job(env, "job_again").result["tokens"] == 0


class TestTheCommandLineWay(JobLifeContract):
    """`dset datasets generate`'s way: the job runs in this process, recorded by run_generation_job."""

    def run_job(self, env: Env, job_id: str, req: GenerateRequest) -> None:
        run_generation_job(log=env.log, rm=env.rm, data=env.data, req=req, job_id=job_id, kind="generate",
                           sim_url=env.sim.base_url, progress=Progress(total=0, enabled=False))


class TestTheServerWay(JobLifeContract):
    """`dset serve`'s way: the job is submitted to the log and the worker runs it on its thread."""

    @pytest.fixture(autouse=True)
    def _workers(self) -> Iterator[None]:
        self.workers: list[JobWorker] = []
        yield
        for worker in self.workers:
            worker.stop()

    def run_job(self, env: Env, job_id: str, req: GenerateRequest) -> None:
        if self.job_or_none(env, job_id) is None:  # as POST /datasets/generate submits it
            run = DocumentRun(log=env.log, rm=env.rm, data_dir=env.data, req=req,
                              models=Models.resolve(req, simulator_url=env.sim.base_url), job_id=job_id)
            JobLife(env.log, env.rm, job_id).submit("generate", msgspec.to_builtins(req), run.dataset_id)
        worker = JobWorker(env.data, env.log, simulator_url=env.sim.base_url)
        self.workers.append(worker)
        assert worker.start(resume=[job_id])
        deadline = time.monotonic() + 60
        while not self.job(env, job_id).finished:
            assert time.monotonic() < deadline, f"job {job_id} did not finish"
            time.sleep(0.05)
        while worker.is_running(job_id):  # its end is in the log; the worker lets go of it just after
            time.sleep(0.01)
        worker.stop()

    def job_or_none(self, env: Env, job_id: str) -> JobView | None:
        env.rm.catch_up()
        return env.rm.jobs.job(job_id)
