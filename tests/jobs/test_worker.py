"""dsetlog.jobs.worker beyond the lifecycle's contract: live progress from typed stages, and cancelling a job
through its Cancel signal (calls in flight finish, none starts; a job waiting for a lock stops at once)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from harness import Env

from dsetlog.engine.stages import Phase, Stage
from dsetlog.generation.document import DocumentRun
from dsetlog.generation.models import Models
from dsetlog.jobs.lifecycle import JobLife
from dsetlog.jobs.worker import JobWorker, Live
from dsetlog.simulator.server import Simulator
from dsetlog.store import locks
from dsetlog.store.events import EntryGenerated, JobCancelled, JobCompleted, JobFailed
from projections.jobs import JobView


def test_live_progress_follows_the_stages_and_only_moves_forward() -> None:
    live = Live("job_x")
    live.update(Stage(Phase.TITLING, "Titling chunk 5 of 10", 5, 10))
    assert live.percent == 5
    live.update(Stage(Phase.GENERATING, "Processing chunk 45 of 100", 45, 100))
    assert live.percent == pytest.approx(41.5) and live.stage.step == "Processing chunk 45 of 100"
    live.update(Stage(Phase.WAITING, "Waiting for job job_1 to finish dataset d"))  # no span: stays
    assert live.percent == pytest.approx(41.5) and live.stage.phase is Phase.WAITING
    live.update(Stage(Phase.TITLING, "Titling chunk 1 of 10", 1, 10))  # back to an earlier stage: stays
    assert live.percent == pytest.approx(41.5)
    live.update(Stage(Phase.FINISHED, "Finished", 1, 1))
    assert live.percent == 100


@pytest.fixture
def workers() -> Iterator[list[JobWorker]]:
    started: list[JobWorker] = []
    yield started
    for worker in started:
        worker.stop()


def submitted(env: Env, job_id: str, **fields: object) -> str:
    """Submit a generation job as POST /datasets/generate does; returns its dataset's id."""
    req = env.request(**fields)
    run = DocumentRun(log=env.log, rm=env.rm, data_dir=env.data, req=req,
                      models=Models.resolve(req, simulator_url=env.sim.base_url), job_id=job_id)
    JobLife(env.log, env.rm, job_id).submit("generate", msgspec.to_builtins(req), run.dataset_id)
    return run.dataset_id


def wait_until(check: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def job_of(env: Env, job_id: str) -> JobView:
    env.rm.catch_up()
    job = env.rm.jobs.job(job_id)
    assert job is not None
    return job


def test_a_cancelled_job_stops_calling_at_once_and_keeps_its_entries(
        tmp_path: Path, make_simulator: Callable[..., Simulator], workers: list[JobWorker]) -> None:
    env = Env(tmp_path, make_simulator(latency_ms=100))
    env.project_md(30)
    submitted(env, "job_cancel", datasets_per_chunk=1)
    worker = JobWorker(env.data, env.log, simulator_url=env.sim.base_url, cancel_grace=30)
    workers.append(worker)
    worker.start(resume=["job_cancel"])
    wait_until(lambda: len(env.events(EntryGenerated)) >= 2, "the job's first entries")
    assert worker.cancel("job_cancel", "enough")
    # long before the grace: the engine started no call after the cancel, the calls in flight finished
    wait_until(lambda: job_of(env, "job_cancel").finished, "the job to end", timeout=10)
    job = job_of(env, "job_cancel")
    assert job.status == "cancelled" and job.cancel_reason == "enough"
    assert not [e for e in env.events((JobCompleted, JobFailed)) if e.job_id == "job_cancel"]  # type: ignore[arg-type]
    assert len([e for e in env.events(JobCancelled) if e.job_id == "job_cancel"]) == 1
    made = len(env.events(EntryGenerated))
    assert 2 <= made < 30 and len(env.sim.requests()) <= made + 1  # (+1: a call cut short)


def test_a_job_waiting_for_another_runs_lock_is_cancelled_at_once(
        tmp_path: Path, make_simulator: Callable[..., Simulator], workers: list[JobWorker]) -> None:
    env = Env(tmp_path, make_simulator())
    env.project_md(3)
    dataset_id = submitted(env, "job_waits")
    with locks.dataset_lock(env.data, dataset_id, job_id="job_holder"):
        worker = JobWorker(env.data, env.log, simulator_url=env.sim.base_url, cancel_grace=30)
        workers.append(worker)
        worker.start(resume=["job_waits"])
        wait_until(lambda: (live := worker.live("job_waits")) is not None and live.step.startswith("Waiting for"),
                   "the job to wait for the lock")
        started = time.monotonic()
        assert worker.cancel("job_waits", "not needed")
        wait_until(lambda: job_of(env, "job_waits").finished, "the job to end", timeout=10)
        assert time.monotonic() - started < 5  # not after the grace, not once the lock is free
    job = job_of(env, "job_waits")
    assert job.status == "cancelled" and job.cancel_reason == "not needed" and not env.events(EntryGenerated)
