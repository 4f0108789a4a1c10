"""Projects: projects, their documents and chunks, taxonomies, custom prompts and saved parameters.

What the document-grounded side reads before it generates anything. Rules, all
deterministic in log order:

* **Projects** (ProjectCreated): the first event for a ``project_id`` defines it; a repeat changes
  nothing. :meth:`Projects.project_by_name` answers the first project created with that name.
* **Documents** (DocumentIngested): the first event for a ``document_id`` defines it. Within a
  project a content hash names at most one document: a later DocumentIngested with a hash the
  project already holds (under another id) is ignored, so re-ingesting the same file is a no-op
  even when two ingests raced. Documents of a project are listed in ingest order; a document may
  arrive before its ProjectCreated (it is kept, and counted once the project is created).
* **Chunks** (ChunkCreated, DocumentChunked): every chunk ever created is kept and found by
  :meth:`Projects.chunk` (a later ChunkCreated with the same id replaces its content). A document's
  *current* chunk set is the ids listed by its latest DocumentChunked that name chunks of that
  document, ordered by chunk index; chunks created but never listed by a DocumentChunked (a crash
  mid-ingest) are in no current set. Re-chunking replaces the set.
* **Taxonomies** (TaxonomyCreated): the first event for a ``taxonomy_id`` defines it. A taxonomy with
  the (project, name) of an earlier one supersedes it: :meth:`Projects.taxonomy` and
  :meth:`Projects.taxonomies` show the latest, :meth:`Projects.taxonomy_by_id` any of them.
* **Prompts** (PromptSaved): every save is a version of its name, kept in save order; the first
  event for a ``prompt_id`` defines it, and a save whose content hash equals the current version of
  the same name and project is a no-op (no new version). Prompts saved with a ``project_id`` belong
  to that project and override, there, a global prompt (no ``project_id``) of the same name.
* **Parameters** (ParametersSaved): each save is kept (first event per ``parameter_id``); the latest
  save of a project is its parameters (GET /datasets/parameters/{project_id}).

Views are the live objects of the state, handed out without a copy: read them under
``ReadModel.lock``, treat them as read-only, and copy what you keep past the lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from dsetlog.store.events import (
    Category,
    ChunkCreated,
    ChunkTitled,
    DocumentChunked,
    DocumentIngested,
    ParametersSaved,
    ProjectCreated,
    PromptSaved,
    TaxonomyCreated,
)
from dsetlog.store.layout import Recorded
from projections.base import Projection, handles

CATEGORY_PATH_SEP = " > "

# gc=False: views never take part in a reference cycle (see projections.datasets).


class ProjectView(msgspec.Struct, gc=False):
    id: str
    name: str
    description: str
    created_at: str  # the record's timestamp
    created_seq: int
    documents: int = 0  # documents ingested into it
    chunks: int = 0  # chunks in its documents' current chunk sets


class DocumentView(msgspec.Struct, gc=False):
    id: str
    project_id: str
    filename: str
    content_hash: str
    media_type: str
    size: int
    chars: int
    extractor: str
    pages: int | None
    ingested_at: str
    ingested_seq: int
    # the current chunk set (latest DocumentChunked), by chunk index; empty until chunked
    chunk_ids: list[str] = []
    strategy: str | None = None
    chunk_size: int | None = None
    overlap: int | None = None
    chunked_at: str | None = None
    chunked_seq: int | None = None
    chunkings: int = 0  # DocumentChunked seen for it


class ChunkView(msgspec.Struct, gc=False):
    id: str
    project_id: str
    document_id: str
    index: int
    start: int  # character offsets into the document's extracted text
    end: int
    text: str
    strategy: str
    heading: str | None
    created_at: str
    created_seq: int
    title: str | None = None  # ChunkTitled: the chunking model's topic line, for chunks without a heading

    @property
    def length(self) -> int:
        return len(self.text)


class TaxonomyView(msgspec.Struct, gc=False):
    id: str
    project_id: str
    name: str
    description: str
    categories: list[Category]  # nested: each Category has its children
    created_at: str
    created_seq: int


class PromptView(msgspec.Struct, gc=False):
    id: str
    name: str
    content: str
    content_hash: str
    project_id: str | None  # None: a global prompt
    mode: str
    version: int  # 1, 2, ... among the saves of this name in this project (or globally)
    created_at: str
    created_seq: int


class ParametersView(msgspec.Struct, gc=False):
    id: str
    project_id: str
    parameters: dict[str, Any]
    created_at: str
    created_seq: int


class ProjectsState(msgspec.Struct, array_like=True):
    """Every primary collection in fold order; the indexes are rebuilt from these on load."""

    projects: list[ProjectView]
    documents: list[DocumentView]
    chunks: list[ChunkView]
    taxonomies: list[TaxonomyView]
    prompts: list[PromptView]
    parameters: list[ParametersView]


class Projects(Projection):
    """Projects, documents, chunks, taxonomies, prompts and parameters (see the module's rules)."""

    name = "projects"
    version = 2
    state_type = ProjectsState

    def __init__(self) -> None:
        super().__init__()
        self._clear()

    def _clear(self) -> None:
        self._projects: dict[str, ProjectView] = {}  # creation order
        self._project_by_name: dict[str, str] = {}  # name -> first project id with it
        self._documents: dict[str, DocumentView] = {}  # ingest order
        self._docs_by_project: dict[str, list[str]] = {}
        self._doc_by_hash: dict[tuple[str, str], str] = {}
        self._chunks: dict[str, ChunkView] = {}  # first-creation order
        self._taxonomies: dict[str, TaxonomyView] = {}  # creation order, every version
        self._current_taxonomy: dict[tuple[str, str], str] = {}  # (project, name) -> id; latest last
        self._prompts: dict[str, PromptView] = {}  # save order, every version
        self._prompt_versions: dict[str, list[str]] = {}  # name -> ids, save order
        self._current_prompt: dict[tuple[str, str | None], str] = {}  # (name, project) -> id; latest last
        self._parameters: dict[str, ParametersView] = {}  # save order
        self._latest_parameters: dict[str, str] = {}  # project -> id

    # -- folding: projects and documents ---------------------------------------------

    @handles(ProjectCreated)
    def _project_created(self, rec: Recorded, ev: ProjectCreated) -> None:
        if ev.project_id in self._projects:
            return
        view = ProjectView(ev.project_id, ev.name, ev.description, rec.ts, rec.seq)
        for doc_id in self._docs_by_project.get(ev.project_id, ()):  # documents that came first
            view.documents += 1
            view.chunks += len(self._documents[doc_id].chunk_ids)
        self._projects[ev.project_id] = view
        self._project_by_name.setdefault(ev.name, ev.project_id)

    @handles(DocumentIngested)
    def _document_ingested(self, rec: Recorded, ev: DocumentIngested) -> None:
        if ev.document_id in self._documents or (ev.project_id, ev.content_hash) in self._doc_by_hash:
            return
        self._add_document(
            DocumentView(
                ev.document_id, ev.project_id, ev.filename, ev.content_hash, ev.media_type, ev.size, ev.chars,
                ev.extractor, ev.pages, rec.ts, rec.seq,
            )
        )  # fmt: skip
        project = self._projects.get(ev.project_id)
        if project is not None:
            project.documents += 1

    def _add_document(self, doc: DocumentView) -> None:
        self._documents[doc.id] = doc
        self._docs_by_project.setdefault(doc.project_id, []).append(doc.id)
        self._doc_by_hash[(doc.project_id, doc.content_hash)] = doc.id

    @handles(ChunkCreated)
    def _chunk_created(self, rec: Recorded, ev: ChunkCreated) -> None:
        self._chunks[ev.chunk_id] = ChunkView(
            ev.chunk_id, ev.project_id, ev.document_id, ev.index, ev.start, ev.end, ev.text, ev.strategy,
            ev.heading, rec.ts, rec.seq,
        )  # fmt: skip

    @handles(ChunkTitled)
    def _chunk_titled(self, rec: Recorded, ev: ChunkTitled) -> None:
        chunk = self._chunks.get(ev.chunk_id)
        if chunk is not None:
            chunk.title = ev.title

    @handles(DocumentChunked)
    def _document_chunked(self, rec: Recorded, ev: DocumentChunked) -> None:
        doc = self._documents.get(ev.document_id)
        if doc is None:
            return  # a document this projection does not hold (never ingested, or a duplicate it ignored)
        chunks = self._chunks
        found = [
            chunks[cid]
            for cid in dict.fromkeys(ev.chunk_ids)
            if cid in chunks and chunks[cid].document_id == doc.id
        ]
        found.sort(key=_chunk_index)  # stable: equal indexes keep the listed order
        old = len(doc.chunk_ids)
        doc.chunk_ids = [c.id for c in found]
        doc.strategy, doc.chunk_size, doc.overlap = ev.strategy, ev.chunk_size, ev.overlap
        doc.chunked_at, doc.chunked_seq = rec.ts, rec.seq
        doc.chunkings += 1
        project = self._projects.get(doc.project_id)
        if project is not None:
            project.chunks += len(doc.chunk_ids) - old

    # -- folding: taxonomies, prompts, parameters ---------------------------------------

    @handles(TaxonomyCreated)
    def _taxonomy_created(self, rec: Recorded, ev: TaxonomyCreated) -> None:
        if ev.taxonomy_id in self._taxonomies:
            return
        self._add_taxonomy(
            TaxonomyView(
                ev.taxonomy_id, ev.project_id, ev.name, ev.description, ev.categories, rec.ts, rec.seq
            )
        )

    def _add_taxonomy(self, tax: TaxonomyView) -> None:
        self._taxonomies[tax.id] = tax
        key = (tax.project_id, tax.name)
        self._current_taxonomy.pop(key, None)  # the latest version moves to the end
        self._current_taxonomy[key] = tax.id

    @handles(PromptSaved)
    def _prompt_saved(self, rec: Recorded, ev: PromptSaved) -> None:
        if ev.prompt_id in self._prompts:
            return
        current_id = self._current_prompt.get((ev.name, ev.project_id))
        current = self._prompts[current_id] if current_id is not None else None
        if current is not None and current.content_hash == ev.content_hash:
            return  # the same content again: no new version
        version = 1 if current is None else current.version + 1
        self._add_prompt(
            PromptView(
                ev.prompt_id, ev.name, ev.content, ev.content_hash, ev.project_id, ev.mode, version, rec.ts,
                rec.seq,
            )
        )  # fmt: skip

    def _add_prompt(self, prompt: PromptView) -> None:
        self._prompts[prompt.id] = prompt
        self._prompt_versions.setdefault(prompt.name, []).append(prompt.id)
        key = (prompt.name, prompt.project_id)
        self._current_prompt.pop(key, None)
        self._current_prompt[key] = prompt.id

    @handles(ParametersSaved)
    def _parameters_saved(self, rec: Recorded, ev: ParametersSaved) -> None:
        if ev.parameter_id in self._parameters:
            return
        self._add_parameters(ParametersView(ev.parameter_id, ev.project_id, ev.parameters, rec.ts, rec.seq))

    def _add_parameters(self, params: ParametersView) -> None:
        self._parameters[params.id] = params
        self._latest_parameters[params.project_id] = params.id

    # -- reading: projects, documents, chunks ------------------------------------------------

    def project(self, project_id: str) -> ProjectView | None:
        return self._projects.get(project_id)

    def projects(self) -> list[ProjectView]:
        """All projects in creation order."""
        return list(self._projects.values())

    def project_by_name(self, name: str) -> ProjectView | None:
        """The first project created with this name."""
        project_id = self._project_by_name.get(name)
        return None if project_id is None else self._projects[project_id]

    def documents(self, project_id: str) -> list[DocumentView]:
        """The project's documents in ingest order."""
        docs = self._documents
        return [docs[d] for d in self._docs_by_project.get(project_id, ())]

    def document(self, document_id: str) -> DocumentView | None:
        return self._documents.get(document_id)

    def document_by_hash(self, project_id: str, content_hash: str) -> DocumentView | None:
        """The project's document with this content hash: when there is one, ingesting the file again is a no-op."""
        document_id = self._doc_by_hash.get((project_id, content_hash))
        return None if document_id is None else self._documents[document_id]

    def chunks(self, project_id: str) -> list[ChunkView]:
        """The project's current chunk set: each document's latest chunking, in document order then chunk index."""
        chunks, docs = self._chunks, self._documents
        return [chunks[c] for d in self._docs_by_project.get(project_id, ()) for c in docs[d].chunk_ids]

    def document_chunks(self, document_id: str) -> list[ChunkView]:
        """One document's current chunk set, by chunk index (empty until it is chunked)."""
        doc = self._documents.get(document_id)
        return [] if doc is None else [self._chunks[c] for c in doc.chunk_ids]

    def chunk(self, chunk_id: str) -> ChunkView | None:
        """Any chunk ever created, current or not."""
        return self._chunks.get(chunk_id)

    # -- reading: taxonomies, prompts, parameters ---------------------------------------------

    def taxonomies(self, project_id: str | None = None) -> list[TaxonomyView]:
        """The latest taxonomy of each (project, name), oldest latest-version first; all projects when None."""
        taxes = self._taxonomies
        return [
            taxes[t] for (p, _), t in self._current_taxonomy.items() if project_id is None or p == project_id
        ]

    def taxonomy(self, project_id: str, name: str) -> TaxonomyView | None:
        """The latest taxonomy with this name in this project."""
        taxonomy_id = self._current_taxonomy.get((project_id, name))
        return None if taxonomy_id is None else self._taxonomies[taxonomy_id]

    def taxonomy_by_id(self, taxonomy_id: str) -> TaxonomyView | None:
        """Any taxonomy ever created, superseded or not."""
        return self._taxonomies.get(taxonomy_id)

    def prompts(self, project_id: str | None = None) -> list[PromptView]:
        """The current version of each prompt, oldest current version first.

        ``project_id=None``: every prompt, global and per project. With a project: the prompts usable
        there, i.e. the project's own and the global ones it does not override by name.
        """
        prompts = self._prompts
        if project_id is None:
            return [prompts[i] for i in self._current_prompt.values()]
        own = {name for (name, p) in self._current_prompt if p == project_id}
        return [
            prompts[i]
            for (name, p), i in self._current_prompt.items()
            if p == project_id or (p is None and name not in own)
        ]

    def prompt(self, prompt_id: str) -> PromptView | None:
        """One saved version, by its id."""
        return self._prompts.get(prompt_id)

    def prompt_by_name(self, name: str, project_id: str | None = None) -> PromptView | None:
        """The current version of a prompt.

        With a project: the project's own prompt of this name when it has one, else the global one.
        With ``project_id=None``: the version saved last under this name, whatever its scope.
        """
        if project_id is None:
            ids = self._prompt_versions.get(name)
            return self._prompts[ids[-1]] if ids else None
        current = self._current_prompt
        prompt_id = current.get((name, project_id))
        if prompt_id is None:
            prompt_id = current.get((name, None))
        return None if prompt_id is None else self._prompts[prompt_id]

    def prompt_versions(self, name: str, project_id: str | None = None) -> list[PromptView]:
        """Every version saved under this name, oldest first: all scopes when ``project_id`` is None,
        else only that project's own (filter on ``project_id is None`` for the global ones)."""
        prompts = self._prompts
        found = [prompts[i] for i in self._prompt_versions.get(name, ())]
        return found if project_id is None else [p for p in found if p.project_id == project_id]

    def latest_parameters(self, project_id: str) -> ParametersView | None:
        """The project's parameters: its latest ParametersSaved."""
        parameter_id = self._latest_parameters.get(project_id)
        return None if parameter_id is None else self._parameters[parameter_id]

    def parameters(self, parameter_id: str) -> ParametersView | None:
        """One saved parameter set, by its id (the latest or an older one)."""
        return self._parameters.get(parameter_id)

    def parameter_history(self, project_id: str) -> list[ParametersView]:
        """Every parameter set saved for the project, oldest first."""
        return [p for p in self._parameters.values() if p.project_id == project_id]

    # -- snapshots -------------------------------------------------------------------------

    def snapshot_state(self) -> ProjectsState:
        return ProjectsState(
            list(self._projects.values()),
            list(self._documents.values()),
            list(self._chunks.values()),
            list(self._taxonomies.values()),
            list(self._prompts.values()),
            list(self._parameters.values()),
        )

    def load_snapshot_state(self, state: ProjectsState) -> None:
        self._clear()  # empty indexes, rebuilt below in fold order
        self._projects = {p.id: p for p in state.projects}
        for p in state.projects:
            self._project_by_name.setdefault(p.name, p.id)
        for doc in state.documents:
            self._add_document(doc)
        self._chunks = {c.id: c for c in state.chunks}
        for tax in state.taxonomies:
            self._add_taxonomy(tax)
        for prompt in state.prompts:
            self._add_prompt(prompt)
        for params in state.parameters:
            self._add_parameters(params)


def _chunk_index(chunk: ChunkView) -> int:
    return chunk.index


def flat_categories(
    taxonomy: TaxonomyView | Iterable[Category], *, sep: str = CATEGORY_PATH_SEP
) -> list[str]:
    """The taxonomy's leaf categories as paths, depth first in the taxonomy's order.

    A top-level category without children is its own name (``"Cardiology"``); a nested leaf is
    the path from the top joined by ``sep`` (``"Cardiology > Arrhythmia"``). Parents with children
    are not listed themselves: an entry is classified into a leaf. Duplicate paths appear once.
    """
    categories = taxonomy.categories if isinstance(taxonomy, TaxonomyView) else taxonomy
    out: dict[str, None] = {}

    def walk(cats: Iterable[Category], prefix: str) -> None:
        for cat in cats:
            path = f"{prefix}{sep}{cat.name}" if prefix else cat.name
            if cat.children:
                walk(cat.children, path)
            else:
                out[path] = None

    walk(categories, "")
    return list(out)
