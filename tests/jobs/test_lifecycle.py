"""dsetlog.jobs.lifecycle.JobLife on a real log: what each way a run ends records, and that a job never gets
two ends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dsetlog.engine.progress import Cancel
from dsetlog.engine.stages import Outcome
from dsetlog.generation.errors import DocGenError
from dsetlog.jobs.lifecycle import JobEnd, JobLife
from dsetlog.store.events import JobCancelled, JobCompleted, JobFailed, JobStarted, JobSubmitted
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel


@pytest.fixture
def life(tmp_path: Path) -> JobLife:
    log = EventLog.in_dir(tmp_path)
    life = JobLife(log, ReadModel.open(tmp_path), "job_1")
    life.submit("generate", {"project_id": "p"}, "dataset_1")
    life.start()
    return life


def ends(life: JobLife) -> list[object]:
    return [r.event for r in life.log.read() if isinstance(r.event, (JobCompleted, JobFailed, JobCancelled))]


def test_submitting_again_keeps_the_first_submission_and_attempts_count_on(life: JobLife) -> None:
    life.submit("generate", {"project_id": "other"}, "dataset_2")
    assert life.start() == 2
    kinds = [type(r.event) for r in life.log.read()]
    assert kinds == [JobSubmitted, JobStarted, JobStarted]


@pytest.mark.parametrize("end, resumable, recorded", [
    (JobEnd(Outcome.COMPLETED, result={"a": 1}), True, "completed"),
    (JobEnd(Outcome.INTERRUPTED), True, "interrupted"),  # a shutdown or Ctrl-C: it resumes, nothing recorded
    (JobEnd(Outcome.INTERRUPTED), False, "failed"),
    (JobEnd(Outcome.BUDGET), True, "failed"),
    (JobEnd(Outcome.FATAL, "the key was refused"), True, "failed"),
])
def test_each_end_records_what_it_should(life: JobLife, end: JobEnd, resumable: bool, recorded: str) -> None:
    assert life.end(end, resumable=resumable) == recorded
    events = ends(life)
    if recorded == "interrupted":
        assert events == []
    elif recorded == "completed":
        assert events == [JobCompleted(job_id="job_1", result={"a": 1})]
    else:
        assert events == [JobFailed(job_id="job_1", error=end.message or end.outcome.explain())]


def test_a_cancelled_job_ends_cancelled_unless_it_had_completed(life: JobLife) -> None:
    cancel = Cancel()
    cancel.set("enough")
    assert life.end(JobEnd(Outcome.INTERRUPTED), cancel=cancel) == "cancelled"
    assert ends(life) == [JobCancelled(job_id="job_1", reason="enough")]
    # its end is in the log: whatever the run says next is not recorded
    assert life.end(JobEnd(Outcome.COMPLETED), cancel=cancel) == "ended"
    life.fail("late")
    assert len(ends(life)) == 1


def test_run_records_a_failure_with_its_message_and_raises_it_for_the_command(life: JobLife) -> None:
    async def fails() -> JobEnd:
        raise DocGenError("no project 'x'")

    with pytest.raises(DocGenError):
        asyncio.run(life.run(fails, raise_errors=True))
    assert ends(life) == [JobFailed(job_id="job_1", error="no project 'x'")]


def test_run_of_a_task_cancelled_records_a_cancel_only_when_asked(life: JobLife) -> None:
    async def cancelled() -> JobEnd:
        raise asyncio.CancelledError

    assert asyncio.run(life.run(cancelled)) == "interrupted" and ends(life) == []  # a shutdown
    cancel = Cancel()
    cancel.set("")
    assert asyncio.run(life.run(cancelled, cancel=cancel)) == "cancelled"
    assert ends(life) == [JobCancelled(job_id="job_1", reason="")]
