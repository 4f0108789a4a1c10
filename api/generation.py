"""Jobs: POST /datasets/generate, /generate-evaluation and /{dataset_id}/regenerate answer at once with a
job id; the server's worker (:mod:`dsetlog.jobs.worker`) runs the job. Status, listing and cancel."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import falcon
import msgspec

from api.context import Context
from api.errors import bad_request, conflict, not_found, unprocessable
from api.schemas import (
    CancelRequest,
    GenerateEvaluationRequest,
    JobAccepted,
    JobBatch,
    JobList,
    JobsQuery,
    JobStatus,
)
from api.spec import operation
from dsetlog.generation.batching import remaining
from dsetlog.generation.document import DocumentRun
from dsetlog.generation.errors import DocGenError
from dsetlog.generation.models import Models
from dsetlog.generation.regeneration import RegenerateError, RegenerateRequest, UnknownEntries, check_request
from dsetlog.generation.requests import GenerateRequest
from dsetlog.ids import new_id, new_job_id
from dsetlog.jobs.lifecycle import DATASET_VERSION_KEY, GENERATE_KINDS
from dsetlog.jobs.worker import LiveStatus, iso
from dsetlog.paths import OutputDirError, export_dir
from dsetlog.store.events import JobCancelled, JobSubmitted, RegenerationRequested
from projections.jobs import JOB_CANCELLED, JOB_COMPLETED, JOB_FAILED, JOB_PENDING, JobView
from projections.readmodel import ReadModel

API = "/api/v1"
CANCEL_WAIT = 5.0  # seconds POST /jobs/{id}/cancel waits for the job to stop before answering

_FINAL_STEP = {JOB_COMPLETED: "Finished", JOB_FAILED: "Failed", JOB_CANCELLED: "Cancelled"}


def job_status(rm: ReadModel, job: JobView, live: LiveStatus | None, write_failure: str | None = None) -> JobStatus:
    """A job's status from the projection, with the worker's live stage while it runs (under rm.lock).

    ``write_failure``: the worker could not write the log for this job (disk full, read-only). The log cannot
    say so (nothing can be appended), so the status does: failed, with that message, until writes work again
    and the worker resumes the job by itself.
    """
    result = job.result
    eta = None
    tokens, cost = 0, 0.0
    status, error = job.status, job.error
    if write_failure is not None and not job.finished:
        status, error = JOB_FAILED, write_failure
        progress = _progress_from_counts(rm, job)
        step = "Stopped: the log cannot be written; the job goes on by itself once it can"
    elif job.status == JOB_COMPLETED:
        progress, step = 100, "Finished"
    elif live is not None:
        progress, step, eta = live.progress, live.step, live.estimated_completion
        tokens, cost = live.prompt_tokens + live.completion_tokens, live.cost
        if live.cancelling:
            step = "Cancelling"
    else:
        progress = _progress_from_counts(rm, job)
        step = _FINAL_STEP.get(job.status) or ("Waiting to start" if job.status == JOB_PENDING else
                                               "Running (resumes when the server's worker picks it up)")
    if result:
        tokens, cost = int(result.get("tokens") or 0), float(result.get("cost") or 0.0)
    batches, batch_eta = _batches(rm, job)
    if batch_eta is not None and not job.finished:
        eta = batch_eta
    cancelled = job.status == JOB_CANCELLED
    if cancelled:  # the guide knows four states: a monitor loop ends on "failed", and error says why
        status, error = JOB_FAILED, f"cancelled: {job.cancel_reason}" if job.cancel_reason else "cancelled"
    return JobStatus(job_id=job.id, status=status, progress=progress, current_step=step,  # type: ignore[arg-type]
                     estimated_completion=eta, result=result, error=error, kind=job.kind,
                     dataset_id=job.dataset_id, submitted_at=job.submitted_at, started_at=job.started_at,
                     finished_at=job.finished_at, attempts=job.starts, tokens=tokens, cost=cost,
                     cancel_reason=job.cancel_reason, cancelled=cancelled, batches=batches)


def _batches(rm: ReadModel, job: JobView) -> tuple[list[JobBatch], str | None]:
    """A batch job's batches (a generation's: its dataset's; a regeneration's: its own), and when its open ones
    should end: the rate of the provider's finished requests since the first was submitted, as the CLI's progress
    line reckons it."""
    if not job.request.get("batch") or not job.dataset_id:
        return [], None
    views = rm.batches.batches(job.dataset_id, rm.batches.owner_of(job.id))
    open_views = [b for b in views if not b.ended]
    left = remaining(sum(b.total for b in open_views), sum(b.completed + b.failed for b in open_views),
                     [datetime.fromisoformat(b.submitted_at).timestamp() for b in open_views])
    return ([JobBatch(batch_id=b.batch_id, status=b.status, total=b.total, completed=b.completed, failed=b.failed,
                      ended=b.ended) for b in views], iso(time.time() + left) if left is not None else None)


def _progress_from_counts(rm: ReadModel, job: JobView) -> int:
    """A job not running here: the share of its dataset's work items done (generation jobs)."""
    if job.kind not in GENERATE_KINDS or not job.dataset_id:
        return 0
    view = rm.datasets.dataset(job.dataset_id)
    if view is None or not view.items:
        return 0
    return min(99, int(80 * view.done / view.items))


class Submitter:
    """Checks and appends job submissions; one at a time, so two equal requests cannot both start."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.lock = threading.Lock()

    def generation(self, req: GenerateRequest, kind: str) -> tuple[str, str]:
        ctx = self.ctx
        job_id = new_job_id()
        self._check_output_dir(req)
        with self.lock:
            rm = ctx.model()
            with rm.lock:
                project = rm.projects.project(req.project_id) or rm.projects.project_by_name(req.project_id)
                if project is None:
                    raise not_found(f"no project {req.project_id!r}; create one with POST {API}/projects")
                if req.taxonomy_name:
                    owner_id = str(req.taxonomy_project or project.id)
                    owner = rm.projects.project(owner_id) or rm.projects.project_by_name(owner_id)
                    if owner is None:
                        raise not_found(f"no project {owner_id!r} (taxonomy_project)")
                    if rm.projects.taxonomy(owner.id, req.taxonomy_name) is None:
                        raise not_found(f"no taxonomy {req.taxonomy_name!r} in project {owner.name!r}; "
                                        f"add one with POST {API}/taxonomy/")
                if project.chunks == 0:
                    raise conflict(f"project {project.name!r} has no chunks yet; upload documents first "
                                   f"(POST {API}/projects/{project.id}/documents)")
                try:
                    models = Models.resolve(req, simulator_url=ctx.simulator_url)
                    run = DocumentRun(log=ctx.log, rm=rm, data_dir=ctx.data_dir, req=req, models=models,
                                      job_id=job_id)
                except DocGenError as exc:
                    raise bad_request(str(exc)) from None
                self._check_output_dir(req, run.dataset_id)
                for other in rm.jobs.unfinished():
                    if other.dataset_id == run.dataset_id:
                        raise conflict(f"job {other.id} is already making dataset {run.dataset_id} "
                                       f"({other.status}); follow it at {API}/datasets/generate/{other.id}/status "
                                       "or cancel it first")
            request = msgspec.to_builtins(req)
            if run.version:
                request[DATASET_VERSION_KEY] = run.version
            ctx.log.append(JobSubmitted(job_id=job_id, kind=kind, request=request, dataset_id=run.dataset_id))
        ctx.worker.submit(job_id)
        return job_id, run.dataset_id

    def _check_output_dir(self, req: GenerateRequest, dataset_id: str | None = None) -> None:
        """The job's export folder, as the job will check it (:func:`dsetlog.paths.export_dir`): 422 before
        anything is appended."""
        try:
            export_dir(self.ctx.data_dir, req.output_dir, dataset_id)
        except OutputDirError as exc:
            raise unprocessable(str(exc)) from None

    def regeneration(self, dataset_id: str, req: RegenerateRequest) -> tuple[str, int]:
        ctx = self.ctx
        job_id = new_id("regenerate")  # the prefix is pinned: the API's tests and the UI's short ids know it
        with self.lock:
            rm = ctx.model()
            with rm.lock:
                if rm.datasets.dataset(dataset_id) is None:
                    raise not_found(f"no dataset {dataset_id!r}")
                try:
                    ids, _ = check_request(rm, dataset_id, req, simulator_url=ctx.simulator_url)
                except UnknownEntries as exc:
                    raise not_found(str(exc)) from None
                except RegenerateError as exc:
                    raise bad_request(str(exc)) from None
                busy = {j.id for j in rm.jobs.unfinished() if j.kind == "regenerate"}
                for entry_id in ids:
                    entry = rm.datasets.entry(dataset_id, entry_id)
                    if entry is not None and entry.regeneration_job_id in busy:
                        raise conflict(f"entry {entry_id} is already being regenerated by job "
                                       f"{entry.regeneration_job_id}; wait for it or cancel it")
            request = {"dataset_id": dataset_id, **msgspec.to_builtins(req), "entry_ids": ids}
            ctx.log.append_many([
                RegenerationRequested(dataset_id=dataset_id, entry_ids=ids, job_id=job_id,
                                      config=request["regeneration_config"]),
                JobSubmitted(job_id=job_id, kind="regenerate", dataset_id=dataset_id, request=request),
            ])
        ctx.worker.submit(job_id)
        return job_id, len(ids)


def _accepted(resp: falcon.Response, job_id: str, message: str, dataset_id: str | None) -> None:
    resp.media = JobAccepted(job_id=job_id, message=message, dataset_id=dataset_id,
                             status_url=f"{API}/datasets/generate/{job_id}/status")


class GenerateResource:
    """POST /datasets/generate, POST /datasets/generate-evaluation, GET /datasets/generate/{job_id}/status."""

    def __init__(self, ctx: Context, submitter: Submitter) -> None:
        self.ctx, self.submitter = ctx, submitter

    @operation("Generate a dataset from a project's document chunks", body=GenerateRequest, response=JobAccepted,
               errors=(400, 404, 409), tags=("datasets",),
               description="Answers at once with a job id; the server's worker runs the job. Model fields name "
                           "provider profiles (gemini, openai, deepseek, ollama, vllm, simulated) or profile:model. "
                           "batch_fallback goes with batch.")
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        job_id, dataset_id = self.submitter.generation(req.context.body, "generate")
        _accepted(resp, job_id, "Dataset generation started", dataset_id)

    @operation("Generate an evaluation dataset: train/validation/test splits and difficulty buckets",
               body=GenerateEvaluationRequest, response=JobAccepted, errors=(400, 404, 409), tags=("datasets",))
    def on_post_evaluation(self, req: falcon.Request, resp: falcon.Response) -> None:
        job_id, dataset_id = self.submitter.generation(req.context.body, "generate-evaluation")
        _accepted(resp, job_id, "Evaluation dataset generation started", dataset_id)

    @operation("Status of a job: progress 0-100, current step, estimated completion, result or error",
               response=JobStatus, tags=("jobs",),
               description="status is one of the guide's four: pending, running, completed, failed. A job a user "
                           "cancelled is failed, with cancelled true and error \"cancelled: <reason>\".")
    def on_get_status(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        resp.media = _status_or_404(self.ctx, job_id)


class RegenerateResource:
    """POST /datasets/{dataset_id}/regenerate."""

    def __init__(self, submitter: Submitter) -> None:
        self.submitter = submitter

    @operation("Regenerate entries (each gets a new revision; the old one stays in the history)",
               body=RegenerateRequest, response=JobAccepted, errors=(400, 404, 409), tags=("datasets",),
               description="Answers at once with a job id; the server's worker runs the job. batch: the new "
                           "revisions' requests go through the provider's Batch API at its batch prices (the job's "
                           "status lists its batches; a cancel cancels them); batch_fallback goes with batch.")
    def on_post(self, req: falcon.Request, resp: falcon.Response, dataset_id: str) -> None:
        job_id, n = self.submitter.regeneration(dataset_id, req.context.body)
        _accepted(resp, job_id, f"Regeneration started for {n} entries", dataset_id)


def _status_or_404(ctx: Context, job_id: str) -> JobStatus:
    # the live stage first, then the log: the worker appends a job's last event before it drops the stage,
    # so a stage gone missing in between is always replaced by the final status
    live = ctx.worker.live(job_id)
    rm = ctx.model()
    with rm.lock:
        job = rm.jobs.job(job_id)
        if job is None:
            raise not_found(f"no job {job_id!r}")
        return job_status(rm, job, live if not job.finished else None, ctx.worker.write_failure(job_id))


class JobsResource:
    """GET /jobs, GET /jobs/{job_id}, POST /jobs/{job_id}/cancel."""

    def __init__(self, ctx: Context, submitter: Submitter) -> None:
        self.ctx, self.submitter = ctx, submitter

    @operation("List jobs, newest first", query=JobsQuery, response=JobList, tags=("jobs",),
               description="A cancelled job is shown as failed (cancelled: true, error says so): status=failed "
                           "lists it, status=cancelled lists only those.")
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        q: JobsQuery = req.context.query
        lives = self.ctx.worker.live_all()  # before the log (see _status_or_404)
        rm = self.ctx.model()
        # cancelled jobs are shown as failed, so ?status=failed lists them too
        wanted = {q.status} | ({JOB_CANCELLED} if q.status == JOB_FAILED else set())
        with rm.lock:
            jobs = [j for j in rm.jobs.jobs(kind=q.kind) if q.status is None or j.status in wanted]
            total = len(jobs)
            out = [job_status(rm, j, None if j.finished else lives.get(j.id), self.ctx.worker.write_failure(j.id))
                   for j in jobs[: q.limit]]
        resp.media = JobList(jobs=out, total=total)

    @operation("One job (as its status)", response=JobStatus, tags=("jobs",))
    def on_get_item(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        resp.media = _status_or_404(self.ctx, job_id)

    @operation("Cancel a job: it stops cleanly, entries already made stay", body=CancelRequest, response=JobStatus,
               errors=(409,), tags=("jobs",))
    def on_post_cancel(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        ctx = self.ctx
        reason = req.context.body.reason
        with self.submitter.lock:
            rm = ctx.model()
            with rm.lock:
                job = rm.jobs.job(job_id)
                if job is None:
                    raise not_found(f"no job {job_id!r}")
                if job.finished:
                    raise conflict(f"job {job_id} has already ended ({job.status})")
            if not ctx.worker.cancel(job_id, reason):
                ctx.log.append(JobCancelled(job_id=job_id, reason=reason))
        deadline = time.monotonic() + CANCEL_WAIT
        while time.monotonic() < deadline:
            status = _status_or_404(ctx, job_id)
            if status.status in (JOB_COMPLETED, JOB_FAILED):  # (a cancelled job's status is failed)
                break
            time.sleep(0.05)
        resp.media = _status_or_404(ctx, job_id)
