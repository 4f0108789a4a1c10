"""The Falcon app of the REST API: ``create_app(data_dir)`` is a WSGI app (served by `dset serve`).

Base path ``/api/v1``. The datasets endpoints are those of the Compileo datasets guide; around them
projects, documents, taxonomies, prompts, jobs, entry history, health and the OpenAPI document.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import falcon

from api.catalog import (
    ChunksResource,
    ConfigResource,
    DocumentsResource,
    ParametersResource,
    ProjectsResource,
    PromptsResource,
    TaxonomyResource,
)
from api.context import WRITE_WAIT, Context
from api.datasets import DatasetsResource
from api.download import DownloadResource, ExportFormatsResource
from api.entries import EntriesResource, FeedbackResource
from api.errors import handle_dset_error, handle_unexpected, serialize_error
from api.generation import GenerateResource, JobsResource, RegenerateResource, Submitter
from api.media import MsgspecJSONHandler
from api.meta import HealthResource, OpenAPIResource
from api.middleware import AuthMiddleware, BodyLimitMiddleware, JSONDepthMiddleware, WriteGateMiddleware
from api.spec import Route, openapi_document
from api.ui import add_ui_routes
from dsetlog import redaction
from dsetlog.errors import DsetError

API = "/api/v1"
VERSION = "1.0.0"
DEFAULT_MAX_BODY = 10 * 2**20

_log = logging.getLogger("api")


class DsetApp(falcon.App):
    """falcon.App with the server's shared state (``ctx``) and a ``close()`` that stops the job worker."""

    ctx: Context
    routes: list[Route]

    def close(self, *, save_snapshot: bool = False) -> None:
        self.ctx.close(save_snapshot=save_snapshot)


def routes(ctx: Context) -> list[Route]:
    submitter = Submitter(ctx)
    generate = GenerateResource(ctx, submitter)
    datasets = DatasetsResource(ctx)
    entries = EntriesResource(ctx)
    jobs = JobsResource(ctx, submitter)
    projects = ProjectsResource(ctx)
    documents = DocumentsResource(ctx)
    prompts = PromptsResource(ctx)
    parameters = ParametersResource(ctx)
    config = ConfigResource()
    d = f"{API}/datasets"
    return [
        # the guide's endpoints
        Route(f"{d}/generate", generate),
        Route(f"{d}/generate-evaluation", generate, "evaluation"),
        Route(f"{d}/generate/{{job_id}}/status", generate, "status"),
        Route(f"{d}/{{dataset_id}}", datasets, "item"),
        Route(f"{d}/{{dataset_id}}/entries", entries),
        Route(f"{d}/{{dataset_id}}/entries/{{entry_id}}", entries, "item"),
        Route(f"{d}/{{dataset_id}}/feedback", FeedbackResource(ctx)),
        Route(f"{d}/{{dataset_id}}/regenerate", RegenerateResource(submitter)),
        Route(f"{d}/{{dataset_id}}/download", DownloadResource(ctx)),
        Route(f"{API}/export-formats", ExportFormatsResource()),
        Route(f"{d}/{{dataset_id}}/benchmark-answers", datasets, "benchmark_answers"),
        Route(f"{d}/config/high-level-prompts", config, "high_level"),
        Route(f"{d}/config/default-prompts", config, "default_prompts"),
        Route(f"{d}/parameters", parameters),
        Route(f"{d}/parameters/{{project_id}}", parameters, "item"),
        # around them
        Route(d, datasets),
        Route(f"{API}/entries/{{dataset_id}}/{{entry_id}}/history", entries, "history"),
        Route(f"{API}/projects", projects),
        Route(f"{API}/projects/{{project_id}}", projects, "item"),
        Route(f"{API}/projects/{{project_id}}/documents", documents),
        Route(f"{API}/projects/{{project_id}}/documents/{{document_id}}/chunk", documents, "chunk"),
        Route(f"{API}/projects/{{project_id}}/documents/{{document_id}}/chunks", documents, "chunks"),
        Route(f"{API}/chunks/{{chunk_id}}", ChunksResource(ctx)),
        Route(f"{API}/taxonomy", TaxonomyResource(ctx), doc_path=f"{API}/taxonomy/"),
        Route(f"{API}/prompts", prompts),
        Route(f"{API}/prompts/{{prompt_id}}", prompts, "item"),
        Route(f"{API}/jobs", jobs),
        Route(f"{API}/jobs/{{job_id}}", jobs, "item"),
        Route(f"{API}/jobs/{{job_id}}/cancel", jobs, "cancel"),
        Route(f"{API}/health", HealthResource(ctx)),
    ]


def _remove_stale_downloads(tmp: Path, older_than: float = 3600.0) -> None:
    """Temporary exports a killed server left behind (a live server's are younger and still streaming)."""
    now = time.time()
    for path in tmp.glob("dset-download-*"):
        try:
            if now - path.stat().st_mtime > older_than:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def create_app(data_dir: str | Path, *, token: str | None = None, max_body: int = DEFAULT_MAX_BODY,
               simulator_url: str | None = None, start_worker: bool = True, max_jobs: int = 4, rpm: int = 0,
               tpm: int = 0, write_wait: float = WRITE_WAIT) -> DsetApp:
    """The WSGI app over ``data_dir``; with ``start_worker`` its job worker runs (and resumes unfinished jobs).

    ``token``: when given, every request needs ``Authorization: Bearer <token>``. ``simulator_url``: every
    model name resolves to the simulator there. ``rpm``/``tpm``: limits per provider, shared by all jobs.
    ``write_wait``: how long a write waits for the start-up check of the log (from a snapshot) before a 503.
    """
    if max_body < 1:
        raise ValueError("max_body must be at least 1 byte")
    data_dir = Path(data_dir)
    _remove_stale_downloads(data_dir / "tmp")
    ctx = Context(data_dir, max_body=max_body, simulator_url=simulator_url, start_worker=start_worker,
                  max_jobs=max_jobs, rpm=rpm, tpm=tpm, write_wait=write_wait)
    # size, then depth (nothing too deep reaches a resource), then whether the log may be written
    middleware: list[object] = [BodyLimitMiddleware(max_body), JSONDepthMiddleware(), WriteGateMiddleware(ctx)]
    if token:
        redaction.register(token)  # never echoed back, logged or shown
        middleware.insert(0, AuthMiddleware(token))
    app = DsetApp(middleware=middleware)
    app.ctx = ctx
    app.req_options.strip_url_path_trailing_slash = True
    handler = MsgspecJSONHandler()
    app.req_options.media_handlers[falcon.MEDIA_JSON] = handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = handler
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(DsetError, handle_dset_error)
    table = routes(ctx)
    openapi = OpenAPIResource()
    table.append(Route(f"{API}/openapi.json", openapi))
    openapi.set_document(openapi_document(
        table, title="dsetlog REST API", version=VERSION, bearer=bool(token),
        description='Datasets from questions and documents, on an event log. Errors are {"title", "description"}.'))
    for route in table:
        if route.suffix:
            app.add_route(route.path, route.resource, suffix=route.suffix)
        else:
            app.add_route(route.path, route.resource)
    app.routes = table
    add_ui_routes(app)  # the review page: GET / and /static/ (not API routes, not in the OpenAPI document)
    return app
