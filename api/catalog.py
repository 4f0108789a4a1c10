"""What generation is fed with: projects, documents and chunks, taxonomies, prompts, parameters, config.

Documents come as a multipart upload (a ``file`` part, plus optional ``strategy``, ``chunk_size`` and
``overlap`` fields) or as JSON (``filename`` with ``content`` text or ``content_base64`` bytes). The
original of every document (uploaded here or ingested by `dset ingest`) is kept under
``<data>/uploads/<document_id>/``, which is what POST .../documents/{document_id}/chunk re-chunks.

A filename is stored as :func:`dsetlog.catalog.documents.safe_filename` makes it (a NUL byte is a 422 naming the
field). Extraction is bounded by :class:`dsetlog.catalog.extract.ExtractLimits` (413 naming the limit) and at most
EXTRACTION_SLOTS run at once, with EXTRACTION_QUEUE more waiting up to EXTRACTION_WAIT_SECONDS; an upload
beyond that is a 503 with Retry-After, so documents can never hold every request thread.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import falcon
import msgspec

from api.context import Context
from api.errors import conflict, not_found, unprocessable
from api.schemas import (
    Chunk,
    ChunkingOptions,
    ChunkList,
    DefaultPrompts,
    Document,
    DocumentList,
    DocumentUpload,
    HighLevelPrompts,
    PageQuery,
    Parameters,
    ParametersRequest,
    ParametersResponse,
    ParametersSavedResponse,
    Project,
    ProjectCreate,
    ProjectFilter,
    ProjectList,
    Prompt,
    PromptCreate,
    PromptList,
    Taxonomy,
    TaxonomyCreate,
    TaxonomyList,
)
from api.spec import operation
from dsetlog.catalog.documents import IngestResult, ingest_file, original_path, safe_filename
from dsetlog.catalog.projects import create_project, create_taxonomy, save_parameters, save_prompt
from dsetlog.prompts.parameters import HIGH_LEVEL_PROMPT_CONFIG, ProjectParameters
from dsetlog.prompts.templates import default_prompts
from dsetlog.store.events import ParametersSaved
from dsetlog.store.log import records_at
from projections.projects import DocumentView, ParametersView, ProjectView, flat_categories
from projections.readmodel import ReadModel

API = "/api/v1"
EXTRACTION_SLOTS = 2  # documents extracted and chunked at once (CPU-bound: more would only share the cores)
EXTRACTION_QUEUE = 2  # uploads that may wait for a slot; beyond them an upload is answered 503 at once
EXTRACTION_WAIT_SECONDS = 10.0  # how long an upload waits for a slot before its 503
RETRY_AFTER_SECONDS = 5


class ExtractionSlots:
    """At most ``running`` extractions at once and ``waiting`` more queued for a while: the request threads
    left over (waitress runs 8 by default) keep answering everything else."""

    def __init__(self, running: int | None = None, waiting: int | None = None,
                 wait_seconds: float | None = None) -> None:
        self.running = EXTRACTION_SLOTS if running is None else running  # the module's settings when the app is made
        waiting = EXTRACTION_QUEUE if waiting is None else waiting
        self.wait_seconds = EXTRACTION_WAIT_SECONDS if wait_seconds is None else wait_seconds
        self._running = threading.BoundedSemaphore(self.running)
        self._admitted = threading.BoundedSemaphore(self.running + waiting)

    @contextmanager
    def hold(self) -> Iterator[None]:
        if not self._admitted.acquire(blocking=False):
            raise _busy(self.running)
        try:
            if not self._running.acquire(timeout=self.wait_seconds):
                raise _busy(self.running)
            try:
                yield
            finally:
                self._running.release()
        finally:
            self._admitted.release()


def _busy(running: int) -> falcon.HTTPServiceUnavailable:
    return falcon.HTTPServiceUnavailable(
        title="Service Unavailable", retry_after=RETRY_AFTER_SECONDS,
        description=f"the server is extracting as many documents as it may at once ({running}); "
                    f"send this upload again in {RETRY_AFTER_SECONDS} seconds")


def project_or_404(rm: ReadModel, project: str) -> ProjectView:
    """By id or by name (under rm.lock)."""
    view = rm.projects.project(project) or rm.projects.project_by_name(project)
    if view is None:
        raise not_found(f"no project {project!r}; GET {API}/projects lists them, POST {API}/projects creates one")
    return view


def document_or_404(rm: ReadModel, project: str, document_id: str) -> tuple[ProjectView, DocumentView]:
    """The project (by id or by name) and its document document_id (under rm.lock)."""
    view = project_or_404(rm, project)
    doc = rm.projects.document(document_id)
    if doc is None or doc.project_id != view.id:
        raise not_found(f"project {view.name!r} has no document {document_id!r}")
    return view, doc


def project_out(v: ProjectView, created: bool | None = None) -> Project:
    return Project(id=v.id, name=v.name, description=v.description, created_at=v.created_at, documents=v.documents,
                   chunks=v.chunks, created=created)


def _status(resp: falcon.Response, created: bool) -> None:
    resp.status = falcon.HTTP_201 if created else falcon.HTTP_200


class ProjectsResource:
    """POST /projects, GET /projects, GET /projects/{project_id}."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation("Create a project (a project of that name already there is returned as it is, with 200)",
               body=ProjectCreate, response=Project, status=201, also={200: Project}, tags=("projects",))
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body: ProjectCreate = req.context.body
        res = create_project(self.ctx.log, self.ctx.rm, name=body.name, description=body.description)
        resp.media = msgspec.convert(res, Project, from_attributes=True)  # the same fields as the catalog's result
        _status(resp, res.created)

    @operation("List projects", response=ProjectList, tags=("projects",))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        rm = self.ctx.model()
        with rm.lock:
            out = [project_out(p) for p in rm.projects.projects()]
        resp.media = ProjectList(projects=out, total=len(out))

    @operation("One project, by id or name", response=Project, tags=("projects",))
    def on_get_item(self, req: falcon.Request, resp: falcon.Response, project_id: str) -> None:
        rm = self.ctx.model()
        with rm.lock:
            resp.media = project_out(project_or_404(rm, project_id))


def document_out(d: DocumentView, *, kept: bool, status: str | None = None, message: str | None = None) -> Document:
    return Document(id=d.id, project_id=d.project_id, filename=d.filename, media_type=d.media_type, size=d.size,
                    chars=d.chars, chunks=len(d.chunk_ids), content_hash=d.content_hash, strategy=d.strategy,
                    chunk_size=d.chunk_size, overlap=d.overlap, ingested_at=d.ingested_at, pages=d.pages,
                    status=status, message=message, original_kept=kept)


class DocumentsResource:
    """POST and GET /projects/{project_id}/documents, POST .../documents/{document_id}/chunk,
    GET .../documents/{document_id}/chunks."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.slots = ExtractionSlots()

    def _kept(self, document_id: str, filename: str) -> Path:
        return original_path(self.ctx.data_dir, document_id, filename)

    @operation("Upload a document (multipart ``file``, or JSON); its text is extracted and chunked",
               body=DocumentUpload, multipart=ChunkingOptions, response=Document, status=201,
               also={200: Document}, errors=(503,), tags=("documents",),
               description="Uploading the same content again with the same chunking changes nothing (200); with "
                           "other chunking settings the document is re-chunked. Types: .txt .md .html .pdf .docx.")
    def on_post(self, req: falcon.Request, resp: falcon.Response, project_id: str) -> None:
        if req.context.body is None:
            data, filename, options = self._from_form(req)
        else:
            data, filename, options = self._from_json(req.context.body)
        ctx = self.ctx
        rm = ctx.model()
        with rm.lock:
            project = project_or_404(rm, project_id)
        res = self._ingest(project.id, options, data=data, filename=filename)
        rm = ctx.model()
        with rm.lock:
            doc = rm.projects.document(res.document_id)
            assert doc is not None
            resp.media = document_out(doc, kept=True, status=res.status, message=res.reason)
        _status(resp, not res.skipped)

    def _ingest(self, project_id: str, options: ChunkingOptions, **source: Any) -> IngestResult:
        with self.slots.hold():
            return ingest_file(self.ctx.log, self.ctx.rm, project_id=project_id, strategy=options.strategy,
                               chunk_size=options.chunk_size, overlap=options.overlap, max_bytes=self.ctx.max_body,
                               **source)

    @staticmethod
    def _from_json(body: DocumentUpload) -> tuple[bytes, str, ChunkingOptions]:
        if (body.content is None) == (body.content_base64 is None):
            raise unprocessable("give the document as content (text) or content_base64 (bytes), exactly one")
        if body.content is not None:
            data = body.content.encode("utf-8")
        else:
            try:
                data = base64.b64decode(body.content_base64 or "", validate=True)
            except (binascii.Error, ValueError):
                raise unprocessable("content_base64 is not valid base64") from None
        options = ChunkingOptions(strategy=body.strategy, chunk_size=body.chunk_size, overlap=body.overlap)
        filename = safe_filename(body.filename, field="filename")
        return data, filename, options

    @staticmethod
    def _from_form(req: falcon.Request) -> tuple[bytes, str, ChunkingOptions]:
        form = req.get_media()
        data: bytes | None = None
        filename = ""
        fields: dict[str, str] = {}
        for part in form:
            if part.name == "file":
                if data is not None:
                    raise unprocessable("one file per upload")
                filename = safe_filename(part.filename or "", field="file (its filename)")
                data = part.stream.read()
            elif part.name in ChunkingOptions.__struct_fields__:
                text = part.stream.read(1024).decode("utf-8", "replace").strip()
                if text:
                    fields[part.name] = text
            else:
                raise unprocessable(f"unknown form field `{part.name}`; send `file` and optionally "
                                    f"{', '.join(ChunkingOptions.__struct_fields__)}")
        if data is None:
            raise unprocessable("the form has no `file` part")
        try:
            options = msgspec.convert(fields, ChunkingOptions, strict=False)
        except msgspec.ValidationError as exc:
            raise unprocessable(str(exc)) from None
        return data, filename, options

    @operation("List a project's documents", response=DocumentList, tags=("documents",))
    def on_get(self, req: falcon.Request, resp: falcon.Response, project_id: str) -> None:
        rm = self.ctx.model()
        with rm.lock:
            project = project_or_404(rm, project_id)
            docs = rm.projects.documents(project.id)
            out = [document_out(d, kept=self._kept(d.id, d.filename).exists()) for d in docs]
        resp.media = DocumentList(documents=out, total=len(out))

    @operation("Chunk a document again with other settings (from the original the server kept)",
               body=ChunkingOptions, response=Document, errors=(409, 503), tags=("documents",))
    def on_post_chunk(self, req: falcon.Request, resp: falcon.Response, project_id: str, document_id: str) -> None:
        options: ChunkingOptions = req.context.body
        rm = self.ctx.model()
        with rm.lock:
            project, doc = document_or_404(rm, project_id, document_id)
            filename = doc.filename
        kept = self._kept(document_id, filename)
        if not kept.exists():
            raise conflict(f"the original of {filename} is not in the data dir (it was ingested by an older version, "
                           f"or removed from {kept.parent}); upload it again with the new chunking settings instead")
        res = self._ingest(project.id, options, path=kept, filename=filename)
        rm = self.ctx.model()
        with rm.lock:
            doc = rm.projects.document(document_id)
            assert doc is not None
            resp.media = document_out(doc, kept=True, status=res.status, message=res.reason)

    @operation("A document's current chunks", query=PageQuery, response=ChunkList, tags=("documents",))
    def on_get_chunks(self, req: falcon.Request, resp: falcon.Response, project_id: str, document_id: str) -> None:
        q: PageQuery = req.context.query
        rm = self.ctx.model()
        with rm.lock:
            document_or_404(rm, project_id, document_id)
            chunks = rm.projects.document_chunks(document_id)
            start = (q.page - 1) * q.per_page
            out = [chunk_out(c) for c in chunks[start : start + q.per_page]]
        resp.media = ChunkList(chunks=out, total=len(chunks), page=q.page, per_page=q.per_page)


def chunk_out(c: Any) -> Chunk:
    return Chunk(id=c.id, document_id=c.document_id, index=c.index, start=c.start, end=c.end, text=c.text,
                 heading=c.heading, title=c.title)


class ChunksResource:
    """GET /chunks/{chunk_id}: an entry's source chunk."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation("One chunk (an entry's source_chunk), current or not", response=Chunk, tags=("documents",))
    def on_get(self, req: falcon.Request, resp: falcon.Response, chunk_id: str) -> None:
        rm = self.ctx.model()
        with rm.lock:
            c = rm.projects.chunk(chunk_id)
            if c is None:
                raise not_found(f"no chunk {chunk_id!r}")
            resp.media = chunk_out(c)


def taxonomy_out(t: Any, created: bool | None = None) -> Taxonomy:
    return Taxonomy(id=t.id, project_id=t.project_id, name=t.name, description=t.description,
                    categories=list(t.categories), leaf_categories=flat_categories(t.categories),
                    created_at=getattr(t, "created_at", ""), created=created)


class TaxonomyResource:
    """GET and POST /taxonomy/."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation("List taxonomies (the latest of each name per project)", query=ProjectFilter, response=TaxonomyList,
               errors=(404,), tags=("taxonomies",))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        q: ProjectFilter = req.context.query
        rm = self.ctx.model()
        with rm.lock:
            project_id = project_or_404(rm, q.project_id).id if q.project_id else None
            out = [taxonomy_out(t) for t in rm.projects.taxonomies(project_id)]
        resp.media = TaxonomyList(taxonomies=out)

    @operation("Create a taxonomy (nested categories); one of the same name in the project is superseded",
               body=TaxonomyCreate, response=Taxonomy, status=201, also={200: Taxonomy}, errors=(404,),
               tags=("taxonomies",))
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body: TaxonomyCreate = req.context.body
        rm = self.ctx.model()
        with rm.lock:
            project = project_or_404(rm, str(body.project_id))
        res = create_taxonomy(self.ctx.log, self.ctx.rm, project_id=project.id, name=body.name,
                              categories=msgspec.to_builtins(body.categories), description=body.description)
        rm = self.ctx.model()
        with rm.lock:
            view = rm.projects.taxonomy_by_id(res.id)
            resp.media = taxonomy_out(view if view is not None else res, created=res.created)
        _status(resp, res.created)


def prompt_out(p: Any, *, created: bool | None = None, unknown: list[str] | None = None) -> Prompt:
    return Prompt(id=p.id, name=p.name, content=p.content, content_hash=p.content_hash, version=p.version,
                  project_id=p.project_id, mode=p.mode, created_at=p.created_at, created=created,
                  unknown_placeholders=unknown or [])


class PromptsResource:
    """POST /prompts, GET /prompts, GET /prompts/{prompt_id}."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation("Save a custom prompt template (versioned by content: the same text again is not a new version)",
               body=PromptCreate, response=Prompt, status=201, also={200: Prompt}, errors=(404,), tags=("prompts",),
               description="Placeholders: {chunk} {n} {purpose} {audience} {complexity_level} {domain} "
                           "{question_style} {answer_style} {categories} {extraction_rules} {negatives} {questions}.")
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body: PromptCreate = req.context.body
        project_id = None
        if body.project_id is not None:
            rm = self.ctx.model()
            with rm.lock:
                project_id = project_or_404(rm, str(body.project_id)).id
        res = save_prompt(self.ctx.log, self.ctx.rm, name=body.name, content=body.content, project_id=project_id,
                          mode=body.mode)
        rm = self.ctx.model()
        with rm.lock:
            view = rm.projects.prompt(res.id)
            assert view is not None
            resp.media = prompt_out(view, created=res.created, unknown=res.unknown_placeholders)
        _status(resp, res.created)

    @operation("List prompts: the current version of each (with project_id: those usable in that project)",
               query=ProjectFilter, response=PromptList, errors=(404,), tags=("prompts",))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        q: ProjectFilter = req.context.query
        rm = self.ctx.model()
        with rm.lock:
            project_id = project_or_404(rm, q.project_id).id if q.project_id else None
            out = [prompt_out(p) for p in rm.projects.prompts(project_id)]
        resp.media = PromptList(prompts=out, total=len(out))

    @operation("One prompt: a version by its id, or the current version by name", response=Prompt,
               tags=("prompts",))
    def on_get_item(self, req: falcon.Request, resp: falcon.Response, prompt_id: str) -> None:
        rm = self.ctx.model()
        with rm.lock:
            view = rm.projects.prompt(prompt_id) or rm.projects.prompt_by_name(prompt_id)
            if view is None:
                raise not_found(f"no prompt {prompt_id!r}")
            resp.media = prompt_out(view)


class ParametersResource:
    """POST /datasets/parameters, GET /datasets/parameters/{project_id}."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation("Save a project's generation parameters (the latest save is the project's)", body=ParametersRequest,
               response=ParametersSavedResponse, errors=(404,), tags=("parameters",))
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body: ParametersRequest = req.context.body
        fields = msgspec.structs.asdict(body)
        fields.pop("project_id")
        rm = self.ctx.model()
        with rm.lock:
            project = project_or_404(rm, str(body.project_id))
        try:
            params = ProjectParameters(**fields)
        except ValueError as exc:
            raise unprocessable(str(exc)) from None
        parameter_id = save_parameters(self.ctx.log, self.ctx.rm, project_id=project.id, params=params)
        rm = self.ctx.model()
        with rm.lock:
            saved = rm.projects.parameters(parameter_id)
            assert saved is not None  # save_parameters caught the model up
            seq = saved.created_seq
        resp.media = ParametersSavedResponse(message="Dataset parameters saved successfully", parameter_id=seq,
                                             project_id=project.id, id=parameter_id)

    @operation("The latest generation parameters of a project, or one save by its id", response=ParametersResponse,
               tags=("parameters",),
               description="{project_id}: a project's id or name (its latest save), or a save's parameter_id (the "
                           "integer POST answered) or string id. A project's id or name comes first.")
    def on_get_item(self, req: falcon.Request, resp: falcon.Response, project_id: str) -> None:
        rm = self.ctx.model()
        with rm.lock:
            project = rm.projects.project(project_id) or rm.projects.project_by_name(project_id)
            if project is not None:
                saved = rm.projects.latest_parameters(project.id)
                if saved is None:
                    raise not_found(f"project {project.name!r} has no saved parameters; "
                                    f"POST {API}/datasets/parameters")
            else:
                saved = rm.projects.parameters(project_id) or self._saved_at(rm, project_id)
                if saved is None:
                    raise not_found(f"no project and no saved parameters {project_id!r}; GET {API}/projects lists "
                                    "the projects")
            known = {k: v for k, v in saved.parameters.items() if k in Parameters.__struct_fields__}
            doc = {**known, "id": saved.id, "project_id": saved.project_id, "created_at": saved.created_at,
                   "parameter_id": saved.created_seq}
        resp.media = ParametersResponse(parameters=msgspec.convert(doc, Parameters))

    def _saved_at(self, rm: ReadModel, key: str) -> ParametersView | None:
        """The save whose ParametersSaved event has this seq (the integer parameter_id), read from the log."""
        if not key.isdecimal() or not 0 < int(key) <= rm.seq:
            return None
        for rec in records_at(self.ctx.data_dir, [int(key)]):
            if isinstance(rec.event, ParametersSaved):
                return rm.projects.parameters(rec.event.parameter_id)
        return None


class ConfigResource:
    """GET /datasets/config/high-level-prompts and /datasets/config/default-prompts."""

    @operation("Default options for high-level prompt configuration", response=HighLevelPrompts, tags=("config",))
    def on_get_high_level(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = msgspec.convert(HIGH_LEVEL_PROMPT_CONFIG, HighLevelPrompts)

    @operation("The default prompt template of each kind of generation", response=DefaultPrompts, tags=("config",))
    def on_get_default_prompts(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = DefaultPrompts(prompts=default_prompts())
