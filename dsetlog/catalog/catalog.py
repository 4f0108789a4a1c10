"""Projects, documents, taxonomies, prompts and parameters into the log: the core behind `dset ingest` and the API.

Every function takes the log and a read model of the same data dir, catches the
model up before it decides anything and again after it appends, and returns a
Struct (no printing). Bad input raises :class:`IngestError` (a ValueError) whose
message says what to do; :class:`NotFoundError` and :class:`TooLargeError` are
its kinds for an unknown project and an oversized file (404 and 413 on HTTP).

Ingesting a document is one ``append_many`` (one write, one fsync): its
DocumentIngested, a ChunkCreated per chunk and the DocumentChunked that lists
them. A crash can leave at most a prefix of that batch (the log cuts a torn last
line); the projection shows no chunk set for a document until its DocumentChunked
is in the log, and ingesting the file again completes it.

The original file of every document is kept beside the log, under
``<data>/uploads/<document_id>/<filename>`` (:func:`original_path`), so a document
can be chunked again with other settings later, by the CLI or the API.

Ids are deterministic where a repeat must be recognised: a project's id comes
from its name, a document's from its project and content hash, a chunk's from
its document, the chunking settings and its index. Two processes ingesting the
same file at once therefore write the same facts, and the projection keeps one.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from dsetlog.catalog.chunking import STRATEGIES, chunk_text
from dsetlog.catalog.extract import (
    DEFAULT_LIMITS,
    MEDIA_TYPES,
    SUPPORTED_EXTENSIONS,
    ExtractError,
    ExtractLimitError,
    ExtractLimits,
    content_hash,
    extract_bytes,
)
from dsetlog.errors import Kind, UsageError
from dsetlog.fsutil import atomic_write_bytes
from dsetlog.prompts.parameters import ProjectParameters
from dsetlog.prompts.templates import normalize_mode, placeholders, prompt_hash
from dsetlog.store.events import (
    Category,
    ChunkCreated,
    DocumentChunked,
    DocumentIngested,
    Event,
    ParametersSaved,
    ProjectCreated,
    PromptSaved,
    TaxonomyCreated,
)
from dsetlog.store.log import EventLog
from projections.projects import CATEGORY_PATH_SEP, ChunkView, ProjectView
from projections.readmodel import ReadModel

MAX_FILE_BYTES = DEFAULT_LIMITS.max_input_bytes  # files larger than this are refused (``max_bytes`` changes it)
MAX_FILENAME_BYTES = 200  # a stored filename's UTF-8 length at most (the file system's limit is 255 per name)

# (chunk_size, overlap) per strategy; units as in dsetlog.catalog.chunking (tokens for "tokens", paragraphs
# for the overlap of "paragraphs", characters otherwise)
DEFAULT_CHUNKING: dict[str, tuple[int, int]] = {
    "characters": (2000, 200),
    "tokens": (400, 40),
    "markdown": (2000, 0),
    "paragraphs": (2000, 1),
}
DEFAULT_STRATEGY = "paragraphs"

# the variables a prompt template can use (see dsetlog.prompts.templates.variables_from)
PROMPT_VARIABLES = frozenset(
    {
        "chunk", "n", "purpose", "audience", "complexity_level", "domain", "question_style", "answer_style",
        "categories", "extraction_rules", "negatives", "questions",
    }
)  # fmt: skip


class IngestError(UsageError, ValueError):
    """Bad input to ingest, a taxonomy, a prompt or parameters; the message says what to do."""


class NotFoundError(IngestError):
    """A project (or other thing) named by the caller does not exist."""

    kind = Kind.NOT_FOUND


class TooLargeError(IngestError):
    """A file over a limit: its size, or one of extraction's (``limit`` names it; 413 on HTTP)."""

    kind = Kind.TOO_LARGE

    def __init__(self, message: str, *, limit: str = "max_input_bytes") -> None:
        super().__init__(message)
        self.limit = limit


# --- results --------------------------------------------------------------------------------


class ProjectResult(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    description: str
    created_at: str
    documents: int
    chunks: int
    created: bool  # False: a project with this name already existed and is returned as it is


class IngestResult(msgspec.Struct, frozen=True, kw_only=True):
    document_id: str
    filename: str
    chunks: int  # chunks in the document's current chunk set
    skipped: bool  # True: nothing was appended
    reason: str = ""  # why it was skipped, or what was done
    status: str = "ingested"  # ingested | unchanged | rechunked | completed (an interrupted ingest finished)
    project_id: str = ""
    content_hash: str = ""
    media_type: str = ""
    size: int = 0  # bytes of the file
    chars: int = 0  # characters of extracted text
    strategy: str = ""
    chunk_size: int = 0
    overlap: int = 0


class TaxonomyResult(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    project_id: str
    name: str
    description: str
    categories: list[Category]
    created: bool  # False: the same taxonomy was already the current one of that name


class PromptResult(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    content_hash: str
    version: int
    project_id: str | None
    mode: str
    created: bool  # False: the same content was already the current version
    unknown_placeholders: list[str] = []  # {names} no run fills in: left as they are in the prompt


class TaxonomySpec(msgspec.Struct, frozen=True, kw_only=True):
    """A taxonomy read from a file: the name (None when the file gives none) and its categories."""

    name: str | None
    description: str
    categories: list[Category]


# --- ids ----------------------------------------------------------------------------------------


def _hash(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()


def project_id_for(name: str) -> str:
    return "proj_" + _hash("project", name)[:12]


def document_id_for(project_id: str, digest: str) -> str:
    return "doc_" + _hash("document", project_id, digest)[:16]


def chunk_id_for(document_id: str, strategy: str, chunk_size: int, overlap: int, index: int) -> str:
    return "chunk_" + _hash(document_id, strategy, chunk_size, overlap, index)[:16]


def _chunk_ids(document_id: str, strategy: str, chunk_size: int, overlap: int, count: int) -> list[str]:
    """chunk_id_for for indexes 0..count-1, hashing the shared prefix once."""
    prefix = hashlib.sha256("\x1f".join(map(str, (document_id, strategy, chunk_size, overlap, ""))).encode("utf-8"))
    ids = []
    for index in range(count):
        h = prefix.copy()
        h.update(str(index).encode("ascii"))
        ids.append("chunk_" + h.hexdigest()[:16])
    return ids


# --- projects ----------------------------------------------------------------------------------


def create_project(log: EventLog, rm: ReadModel, *, name: str, description: str = "") -> ProjectResult:
    """The project with this name, created if there is none (an existing one is returned unchanged)."""
    name = _clean_name(name, "project name")
    rm.catch_up()
    with rm.lock:
        existing = rm.projects.project_by_name(name)
        if existing is not None:
            return _project_result(existing, created=False)
    log.append(ProjectCreated(project_id=project_id_for(name), name=name, description=description))
    rm.catch_up()
    with rm.lock:
        project = rm.projects.project_by_name(name)
        assert project is not None
        return _project_result(project, created=True)


def _project_result(view: ProjectView, *, created: bool) -> ProjectResult:
    return ProjectResult(
        id=view.id, name=view.name, description=view.description, created_at=view.created_at,
        documents=view.documents, chunks=view.chunks, created=created,
    )  # fmt: skip


def find_project(rm: ReadModel, project: str) -> ProjectView:
    """A project by id or by name (caught up); NotFoundError naming the known projects otherwise."""
    rm.catch_up()
    with rm.lock:
        projects = rm.projects
        view = projects.project(project) or projects.project_by_name(project)
        if view is not None:
            return msgspec.structs.replace(view)
        known = [p.name for p in projects.projects()]
    hint = f"; known projects: {', '.join(known)}" if known else "; create one first"
    raise NotFoundError(f"no project {project!r}{hint}")


def _require_project(rm: ReadModel, project_id: str) -> None:
    with rm.lock:
        if rm.projects.project(project_id) is None:
            raise NotFoundError(f"no project with id {project_id!r}; create the project first")


def _clean_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise IngestError(f"{what} must not be empty")
    return name.strip()


# --- documents -----------------------------------------------------------------------------------


def resolve_chunking(strategy: str, chunk_size: int | None = None, overlap: int | None = None) -> tuple[int, int]:
    """(chunk_size, overlap) for ``strategy``: the defaults fill what is not given; IngestError if invalid.

    When only ``chunk_size`` is given the default overlap shrinks to fit it (a tenth of the size
    for characters and tokens, one paragraph for paragraphs when the size allows).
    """
    if strategy not in STRATEGIES:
        raise IngestError(f"unknown chunking strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    default_size, default_overlap = DEFAULT_CHUNKING[strategy]
    size = default_size if chunk_size is None else chunk_size
    if overlap is None:
        if chunk_size is None:
            overlap = default_overlap
        elif strategy == "paragraphs":
            overlap = min(default_overlap, max(size - 1, 0))
        else:
            overlap = min(default_overlap, size // 10)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise IngestError(f"chunk_size must be a whole number greater than 0 (got {size!r})")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < size:
        raise IngestError(
            f"overlap must be a whole number, at least 0 and less than chunk_size {size} (got {overlap!r})"
        )
    return size, overlap


def original_path(data_dir: str | os.PathLike[str], document_id: str, filename: str) -> Path:
    """Where the original file of a document is kept."""
    return Path(data_dir) / "uploads" / document_id / Path(filename).name


def _keep_original(log: EventLog, document_id: str, filename: str, raw: bytes) -> None:
    kept = original_path(log.path.parent, document_id, filename)
    if not kept.exists():
        atomic_write_bytes(kept, raw)


def ingest_file(
    log: EventLog,
    rm: ReadModel,
    *,
    project_id: str,
    path: Path | str | None = None,
    data: bytes | None = None,
    filename: str | None = None,
    strategy: str = DEFAULT_STRATEGY,
    chunk_size: int | None = None,
    overlap: int | None = None,
    max_bytes: int = MAX_FILE_BYTES,
    limits: ExtractLimits = DEFAULT_LIMITS,
) -> IngestResult:
    """Extract, hash and chunk one document into the project: from ``path``, or ``data`` (an upload) named ``filename``.

    The same content with the same chunking again is a no-op (``skipped``); with other chunking
    settings the document is re-chunked (new ChunkCreated + DocumentChunked, not re-ingested).
    ``filename`` is stored as :func:`safe_filename` makes it. A document beyond ``max_bytes`` or one of
    ``limits`` raises :class:`TooLargeError` naming the limit, before anything is appended.
    """
    size, overlap = resolve_chunking(strategy, chunk_size, overlap)
    raw, filename = _read_input(path, data, filename, max_bytes)
    limits = msgspec.structs.replace(limits, max_input_bytes=max_bytes)
    rm.catch_up()
    _require_project(rm, project_id)
    digest = content_hash(raw)
    with rm.lock:
        doc = rm.projects.document_by_hash(project_id, digest)
        if doc is not None:
            current = (doc.strategy, doc.chunk_size, doc.overlap)
            if doc.chunked_seq is not None and current == (strategy, size, overlap):
                _keep_original(log, doc.id, doc.filename, raw)
                return IngestResult(
                    document_id=doc.id, filename=filename, chunks=len(doc.chunk_ids), skipped=True,
                    reason=_unchanged_reason(doc.filename, filename), status="unchanged",
                    project_id=project_id, content_hash=digest, media_type=doc.media_type, size=doc.size,
                    chars=doc.chars, strategy=strategy, chunk_size=size, overlap=overlap,
                )  # fmt: skip
            document_id, was_chunked, stored_name = doc.id, doc.chunked_seq is not None, doc.filename
            old = f"{doc.strategy} {doc.chunk_size}/{doc.overlap}" if was_chunked else ""
        else:
            document_id, was_chunked, old = document_id_for(project_id, digest), False, ""
            stored_name = filename
    extracted = _extract(raw, filename, limits)
    chunks = chunk_text(extracted.text, strategy=strategy, chunk_size=size, overlap=overlap)
    if not chunks:  # extract_bytes refuses blank text, so this is only a safeguard
        raise IngestError(f"{filename}: no text to chunk")

    events: list[Event] = []
    if doc is None:
        events.append(
            DocumentIngested(
                project_id=project_id, document_id=document_id, filename=filename, content_hash=digest,
                media_type=extracted.media_type, size=len(raw), chars=len(extracted.text),
                extractor=extracted.extractor, pages=extracted.pages,
            )
        )  # fmt: skip
    chunk_ids = _chunk_ids(document_id, strategy, size, overlap, len(chunks))
    with rm.lock:
        known = rm.projects
        for chunk, cid in zip(chunks, chunk_ids, strict=True):
            if doc is None or not _same_chunk(known.chunk(cid), chunk.start, chunk.end, chunk.text, chunk.heading):
                events.append(
                    ChunkCreated(
                        project_id=project_id, document_id=document_id, chunk_id=cid, index=chunk.index,
                        start=chunk.start, end=chunk.end, text=chunk.text, strategy=strategy,
                        heading=chunk.heading,
                    )
                )  # fmt: skip
    events.append(
        DocumentChunked(
            project_id=project_id, document_id=document_id, strategy=strategy, chunk_size=size,
            overlap=overlap, chunk_ids=chunk_ids,
        )
    )  # fmt: skip
    _keep_original(log, document_id, stored_name, raw)  # before the events: no document without its original
    log.append_many(events)
    rm.catch_up()
    if doc is None:
        status, reason = "ingested", f"ingested {len(chunks)} chunks"
    elif was_chunked:
        status, reason = "rechunked", f"re-chunked from {old} to {strategy} {size}/{overlap}"
    else:
        status, reason = "completed", "an interrupted ingest was completed"
    return IngestResult(
        document_id=document_id, filename=filename, chunks=len(chunks), skipped=False, reason=reason,
        status=status, project_id=project_id, content_hash=digest, media_type=extracted.media_type,
        size=len(raw), chars=len(extracted.text), strategy=strategy, chunk_size=size, overlap=overlap,
    )  # fmt: skip


def _unchanged_reason(stored: str, given: str) -> str:
    if stored == given:
        return "already ingested with the same chunking"
    return f"the same content was already ingested as {stored!r} with the same chunking"


def _same_chunk(view: ChunkView | None, start: int, end: int, text: str, heading: str | None) -> bool:
    """Whether a chunk with this id is already in the log with exactly this content (no need to write it again)."""
    return (
        view is not None
        and view.start == start
        and view.end == end
        and view.heading == heading
        and view.text == text
    )


def _read_input(
    path: Path | str | None, data: bytes | None, filename: str | None, max_bytes: int
) -> tuple[bytes, str]:
    if (path is None) == (data is None):
        raise IngestError("give either a file path or the file's bytes, not both or neither")
    if path is not None:
        path = Path(path)
        filename = safe_filename(filename or path.name)
        _check_type(filename)
        try:
            st = path.stat()
        except OSError as exc:
            raise IngestError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if not path.is_file():
            raise IngestError(f"{path}: not a file")
        _check_size(filename, st.st_size, max_bytes)
        try:
            with path.open("rb") as fh:
                raw = fh.read(max_bytes + 1)  # the file may have grown since stat
        except OSError as exc:
            raise IngestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    else:
        filename = safe_filename(filename or "")  # never a path from the client
        _check_type(filename)
        raw = bytes(data)  # type: ignore[arg-type]
    _check_size(filename, len(raw), max_bytes)
    if not raw:
        raise IngestError(f"{filename}: the file is empty; nothing to ingest")
    return raw, filename


def safe_filename(name: str, *, field: str = "filename") -> str:
    """A document's name as it is stored (in the log and under uploads/): its last path component, control
    characters replaced by ``_``, at most MAX_FILENAME_BYTES of UTF-8 with its extension kept. A NUL byte or
    no name at all is an IngestError naming ``field``."""
    if "\x00" in name:
        raise IngestError(f"{field}: the filename contains a NUL byte, which no file name may hold; "
                          "rename the file and send it again")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of a local file name (surrogate escapes)
        name = name.encode("utf-8", "surrogateescape" if _escaped_only(name) else "replace").decode("utf-8", "replace")
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join("_" if c in _BIDI_CONTROLS or unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
                   for c in name).strip()
    if name in ("", ".", ".."):
        raise IngestError(f"{field}: an uploaded document needs a filename (its extension picks the extractor)")
    encoded = name.encode("utf-8")
    if len(encoded) <= MAX_FILENAME_BYTES:
        return name
    suffix = Path(name).suffix
    suffix = suffix if len(suffix.encode("utf-8")) <= 16 else ""
    room = MAX_FILENAME_BYTES - len(suffix.encode("utf-8"))
    stem = name[: len(name) - len(suffix)] if suffix else name
    return stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip() + suffix


_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")  # "gpj.exe"


def _escaped_only(name: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in name)


def _check_type(filename: str) -> None:
    suffix = Path(filename).suffix.lower()
    if suffix not in MEDIA_TYPES:
        raise IngestError(
            f"{filename}: unsupported file type {suffix or '(none)'!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )


def _check_size(filename: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise TooLargeError(
            f"{filename}: {size / 2**20:.1f} MB is over the {max_bytes / 2**20:.1f} MB limit for one file "
            "(max_input_bytes); split the document"
        )


def _extract(raw: bytes, filename: str, limits: ExtractLimits):  # noqa: ANN202 - dsetlog.catalog.extract.Extracted
    try:
        return extract_bytes(raw, filename, limits)
    except ExtractLimitError as exc:
        raise TooLargeError(str(exc), limit=exc.limit) from None
    except ExtractError as exc:
        raise IngestError(str(exc)) from None
    except Exception as exc:  # a damaged file can trip a parser anywhere (zipfile.BadZipFile, RecursionError, ...)
        suffix = Path(filename).suffix.lower()
        raise IngestError(
            f"{filename}: not a readable {suffix} file ({type(exc).__name__}: {exc}); check that it opens"
        ) from None


# --- taxonomies ---------------------------------------------------------------------------------


def create_taxonomy(
    log: EventLog,
    rm: ReadModel,
    *,
    project_id: str,
    name: str,
    categories: Sequence[Category | Mapping[str, Any] | str],
    description: str = "",
) -> TaxonomyResult:
    """A taxonomy (nested categories) for the project; one of the same name is superseded.

    Categories may be Category structs, dicts (``name``, ``description``, ``children``) or plain
    names. Names must be non-empty and unique among their siblings. Saving the same taxonomy
    again appends nothing.
    """
    name = _clean_name(name, "taxonomy name")
    cats = to_categories(categories)
    if not cats:
        raise IngestError(f"taxonomy {name!r} has no categories; give at least one")
    rm.catch_up()
    _require_project(rm, project_id)
    with rm.lock:
        current = rm.projects.taxonomy(project_id, name)
        if current is not None and current.categories == cats and current.description == description:
            return _taxonomy_result(current, created=False)
    taxonomy_id = "tax_" + uuid.uuid4().hex[:12]
    log.append(
        TaxonomyCreated(
            taxonomy_id=taxonomy_id, project_id=project_id, name=name, categories=cats, description=description
        )
    )
    rm.catch_up()
    with rm.lock:
        view = rm.projects.taxonomy_by_id(taxonomy_id)
        assert view is not None
        return _taxonomy_result(view, created=True)


def _taxonomy_result(view: Any, *, created: bool) -> TaxonomyResult:
    return TaxonomyResult(
        id=view.id, project_id=view.project_id, name=view.name, description=view.description,
        categories=list(view.categories), created=created,
    )  # fmt: skip


def to_categories(items: Iterable[Category | Mapping[str, Any] | str], *, where: str = "") -> list[Category]:
    """Validated Category structs from structs, dicts or names; IngestError naming the bad one."""
    if isinstance(items, (str, bytes, Mapping)):
        raise IngestError("categories must be a list (of names or of {name, description, children})")
    out: list[Category] = []
    seen: dict[str, str] = {}
    for item in items:
        if isinstance(item, Category):
            name, desc, children = item.name, item.description, item.children
        elif isinstance(item, str):
            name, desc, children = item, "", []
        elif isinstance(item, Mapping):
            unknown = set(item) - {"name", "description", "children"}
            if unknown:
                raise IngestError(
                    f"category {item.get('name', '?')!r}{where}: unknown field(s) {', '.join(sorted(unknown))}; "
                    "a category has name, description and children"
                )
            name, desc, children = item.get("name", ""), item.get("description") or "", item.get("children") or []
        else:
            raise IngestError(f"a category{where} must be a name or an object with a name, not {item!r}")
        if not isinstance(name, str) or not name.strip():
            raise IngestError(f"a category{where} has an empty name; every category needs one")
        if not isinstance(desc, str):
            raise IngestError(f"category {name!r}{where}: description must be text")
        name = name.strip()
        if CATEGORY_PATH_SEP in name:
            raise IngestError(f"category {name!r}{where}: a name may not contain {CATEGORY_PATH_SEP!r}")
        key = name.casefold()
        if key in seen:
            raise IngestError(f"category {name!r}{where} appears twice; names must be unique among siblings")
        seen[key] = name
        path = f"{where.removeprefix(' under ')}{CATEGORY_PATH_SEP}{name}" if where else name
        kids = to_categories(children, where=f" under {path}")
        out.append(Category(name=name, description=desc.strip(), children=kids))
    return out


def load_taxonomy_file(path: Path | str) -> TaxonomySpec:
    """A taxonomy from a file: JSON, or plain text with one category per line, indented for nesting.

    JSON: ``{"name": ..., "description": ..., "categories": [{"name", "description", "children": [...]}]}``
    or just the list of categories. Text: ``Name`` or ``Name: description`` per line; a line
    indented deeper than the one before is its child; blank lines and ``#`` comments are skipped,
    and a leading ``-`` or ``*`` bullet is allowed.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise IngestError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("{", "["):
        return _taxonomy_from_json(path, text)
    return TaxonomySpec(name=None, description="", categories=_taxonomy_from_text(path, text))


def _taxonomy_from_json(path: Path, text: str) -> TaxonomySpec:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if isinstance(doc, list):
        return TaxonomySpec(name=None, description="", categories=to_categories(doc))
    if not isinstance(doc, dict) or "categories" not in doc:
        raise IngestError(f'{path}: expected {{"name": ..., "categories": [...]}} or a list of categories')
    name = doc.get("name")
    if name is not None and not isinstance(name, str):
        raise IngestError(f"{path}: name must be text")
    description = doc.get("description") or ""
    if not isinstance(description, str):
        raise IngestError(f"{path}: description must be text")
    return TaxonomySpec(name=name or None, description=description, categories=to_categories(doc["categories"]))


def _taxonomy_from_text(path: Path, text: str) -> list[Category]:
    roots: list[dict[str, Any]] = []
    stack: list[tuple[int, dict[str, Any]]] = []  # (indent, node) of the open ancestors
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        expanded = line.expandtabs(4)
        indent = len(expanded) - len(expanded.lstrip())
        body = expanded.strip()
        if body[:2] in ("- ", "* "):
            body = body[2:].strip()
        name, _, desc = body.partition(": ")
        node: dict[str, Any] = {"name": name.strip().rstrip(":"), "description": desc.strip(), "children": []}
        while stack and stack[-1][0] >= indent:
            top_indent, _ = stack.pop()
            if top_indent > indent and (not stack or stack[-1][0] < indent):
                raise IngestError(
                    f"{path}, line {lineno}: the indentation does not match any enclosing category's"
                )
        (stack[-1][1]["children"] if stack else roots).append(node)
        stack.append((indent, node))
    if not roots:
        raise IngestError(f"{path}: no categories in it; write one category per line")
    return to_categories(roots)


# --- prompts ----------------------------------------------------------------------------------


def save_prompt(
    log: EventLog,
    rm: ReadModel,
    *,
    name: str,
    content: str,
    project_id: str | None = None,
    mode: str = "",
) -> PromptResult:
    """Save a custom prompt; versioned by content hash (the same content as the current version: nothing appended)."""
    name = _clean_name(name, "prompt name")
    if not isinstance(content, str) or not content.strip():
        raise IngestError(f"prompt {name!r} is empty; give the template text")
    if mode:
        try:
            mode = normalize_mode(mode)
        except ValueError as exc:
            raise IngestError(str(exc)) from None
    digest = prompt_hash(content)
    unknown = sorted(placeholders(content) - PROMPT_VARIABLES)
    rm.catch_up()
    if project_id is not None:
        _require_project(rm, project_id)
    with rm.lock:
        versions = rm.projects.prompt_versions(name, project_id)
        current = next((p for p in reversed(versions) if p.project_id == project_id), None)
        if current is not None and current.content_hash == digest:
            return _prompt_result(current, created=False, unknown=unknown)
    prompt_id = "prompt_" + uuid.uuid4().hex[:12]
    log.append(
        PromptSaved(
            prompt_id=prompt_id, name=name, content=content, content_hash=digest, project_id=project_id, mode=mode
        )
    )
    rm.catch_up()
    with rm.lock:
        view = rm.projects.prompt(prompt_id)
        if view is None:  # another process saved the same content first: the projection kept that one
            versions = rm.projects.prompt_versions(name, project_id)
            view = next(p for p in reversed(versions) if p.project_id == project_id)
        return _prompt_result(view, created=view.id == prompt_id, unknown=unknown)


def _prompt_result(view: Any, *, created: bool, unknown: list[str]) -> PromptResult:
    return PromptResult(
        id=view.id, name=view.name, content_hash=view.content_hash, version=view.version,
        project_id=view.project_id, mode=view.mode, created=created, unknown_placeholders=unknown,
    )  # fmt: skip


# --- parameters ----------------------------------------------------------------------------------


def save_parameters(log: EventLog, rm: ReadModel, *, project_id: str, params: ProjectParameters) -> str:
    """Save the project's generation parameters (every field); the latest save is the project's. Returns its id."""
    if not isinstance(params, ProjectParameters):
        raise IngestError("params must be a ProjectParameters")
    rm.catch_up()
    _require_project(rm, project_id)
    parameter_id = "params_" + uuid.uuid4().hex[:12]
    log.append(
        ParametersSaved(parameter_id=parameter_id, project_id=project_id, parameters=msgspec.structs.asdict(params))
    )
    rm.catch_up()
    return parameter_id


def parameters_from(fields: Mapping[str, Any]) -> ProjectParameters:
    """ProjectParameters from a dict (a request body, CLI options); IngestError naming the bad field."""
    try:
        return msgspec.convert(dict(fields), ProjectParameters)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        raise IngestError(f"invalid parameters: {exc}") from None
