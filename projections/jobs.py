"""Jobs: the background work the API server runs (generate, generate-evaluation, regenerate).

Status, folded in log order:

* ``pending``: submitted (JobSubmitted), not started;
* ``running``: a JobStarted arrived (one per start: a restarted server that resumes a job starts it
  again, and ``starts`` counts them);
* ``completed`` / ``failed`` / ``cancelled``: a JobCompleted, JobFailed or JobCancelled arrived.
  Terminal states are final: any later start, completion, failure or cancellation changes nothing.

A job exists once submitted: the first JobSubmitted for a ``job_id`` defines it, a repeat changes
nothing, and lifecycle events for an id never submitted are ignored. :meth:`Jobs.unfinished` is what a
restarted server must resume.

Views are the live objects of the state, handed out without a copy: read them under
``ReadModel.lock``, treat them as read-only, and copy what you keep past the lock.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dsetlog.store.events import JobCancelled, JobCompleted, JobFailed, JobStarted, JobSubmitted
from dsetlog.store.layout import Recorded
from projections.base import Projection, handles

JOB_PENDING, JOB_RUNNING = "pending", "running"
JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED = "completed", "failed", "cancelled"
JOB_STATUSES = (JOB_PENDING, JOB_RUNNING, JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED)
TERMINAL_JOB_STATUSES = frozenset({JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED})


class JobView(msgspec.Struct, gc=False):
    id: str
    kind: str  # generate | generate-evaluation | regenerate
    request: dict[str, Any]
    dataset_id: str | None  # from the submission, else from the result's "dataset_id" once completed
    status: str  # pending | running | completed | failed | cancelled
    submitted_at: str
    submitted_seq: int
    started_at: str | None = None  # the latest start (the attempt now running, or the one that ended)
    finished_at: str | None = None  # when it reached its terminal state
    starts: int = 0  # JobStarted folded before it ended
    result: dict[str, Any] | None = None  # JobCompleted's result
    error: str | None = None  # JobFailed's error
    cancel_reason: str | None = None  # JobCancelled's reason ("" when none was given)
    first_started_at: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES


class JobsState(msgspec.Struct, array_like=True):
    jobs: list[JobView]  # submission order


class Jobs(Projection):
    """Jobs by id, their status and outcome (see the module's rules)."""

    name = "jobs"
    version = 1
    state_type = JobsState

    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[str, JobView] = {}  # submission order

    # -- folding -------------------------------------------------------------------------

    @handles(JobSubmitted)
    def _submitted(self, rec: Recorded, ev: JobSubmitted) -> None:
        if ev.job_id in self._jobs:
            return
        self._jobs[ev.job_id] = JobView(
            ev.job_id, ev.kind, ev.request, ev.dataset_id, JOB_PENDING, rec.ts, rec.seq
        )

    def _open(self, job_id: str) -> JobView | None:
        """The job, if it exists and has not ended."""
        job = self._jobs.get(job_id)
        return None if job is None or job.status in TERMINAL_JOB_STATUSES else job

    @handles(JobStarted)
    def _started(self, rec: Recorded, ev: JobStarted) -> None:
        job = self._open(ev.job_id)
        if job is None:
            return
        job.status = JOB_RUNNING
        job.starts += 1
        job.started_at = rec.ts
        if job.first_started_at is None:
            job.first_started_at = rec.ts

    @handles(JobCompleted)
    def _completed(self, rec: Recorded, ev: JobCompleted) -> None:
        job = self._open(ev.job_id)
        if job is None:
            return
        job.status, job.finished_at, job.result = JOB_COMPLETED, rec.ts, _upcast_result(ev.result)
        if job.dataset_id is None:
            dataset_id = ev.result.get("dataset_id")
            if isinstance(dataset_id, str) and dataset_id:
                job.dataset_id = dataset_id

    @handles(JobFailed)
    def _failed(self, rec: Recorded, ev: JobFailed) -> None:
        job = self._open(ev.job_id)
        if job is not None:
            job.status, job.finished_at, job.error = JOB_FAILED, rec.ts, ev.error

    @handles(JobCancelled)
    def _cancelled(self, rec: Recorded, ev: JobCancelled) -> None:
        job = self._open(ev.job_id)
        if job is not None:
            job.status, job.finished_at, job.cancel_reason = JOB_CANCELLED, rec.ts, ev.reason

    # -- reading -------------------------------------------------------------------------

    def job(self, job_id: str) -> JobView | None:
        return self._jobs.get(job_id)

    def jobs(self, *, status: str | None = None, kind: str | None = None) -> list[JobView]:
        """Jobs newest first (by submission), optionally only those with this status and/or kind."""
        if status is not None and status not in JOB_STATUSES:
            raise ValueError(f"status must be one of {', '.join(JOB_STATUSES)}, not {status!r}")
        return [
            j
            for j in reversed(self._jobs.values())
            if (status is None or j.status == status) and (kind is None or j.kind == kind)
        ]

    def unfinished(self) -> list[JobView]:
        """Pending or running jobs, in submission order: what a restarted server must resume."""
        return [j for j in self._jobs.values() if j.status not in TERMINAL_JOB_STATUSES]

    # -- snapshots -------------------------------------------------------------------------

    def snapshot_state(self) -> JobsState:
        return JobsState(list(self._jobs.values()))

    def load_snapshot_state(self, state: JobsState) -> None:
        self._jobs = {j.id: j for j in state.jobs}


def _upcast_result(result: dict[str, Any]) -> dict[str, Any]:
    """A result as every job writes it now: results the CLI wrote before the one job lifecycle (#12) have no
    ``tokens``, which is their prompt and completion tokens."""
    if "tokens" in result or not ("prompt_tokens" in result or "completion_tokens" in result):
        return result
    return {**result, "tokens": int(result.get("prompt_tokens") or 0) + int(result.get("completion_tokens") or 0)}
