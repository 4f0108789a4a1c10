"""Documents into a project: the file's checks (name, type, size), extraction, chunking, and the events.

Ingesting a document is one ``append_many`` (one write, one fsync): its DocumentIngested, a ChunkCreated per
chunk and the DocumentChunked that lists them. A crash can leave at most a prefix of that batch (the log cuts
a torn last line); the projection shows no chunk set for a document until its DocumentChunked is in the log,
and ingesting the file again completes it. The same content with other chunking settings is re-chunked: new
ChunkCreated and a DocumentChunked, never a second DocumentIngested.

The original file of every document is kept beside the log, under ``<data>/uploads/<document_id>/<filename>``
(:func:`original_path`), so a document can be chunked again with other settings later, by the CLI or the API.

Ids are deterministic, so a repeat is recognised: a document's id comes from its project and content hash, a
chunk's from its document, the chunking settings and its index. Two processes ingesting the same file at once
therefore write the same facts, and the projection keeps one.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

from dsetlog.catalog.chunking import STRATEGIES, Chunk, chunk_text
from dsetlog.catalog.errors import IngestError, TooLargeError
from dsetlog.catalog.extract import (
    DEFAULT_LIMITS,
    MEDIA_TYPES,
    SUPPORTED_EXTENSIONS,
    Extracted,
    ExtractError,
    ExtractLimits,
    content_hash,
    extract_bytes,
)
from dsetlog.catalog.projects import require_project
from dsetlog.fsutil import atomic_write_bytes
from dsetlog.ids import content_id
from dsetlog.store.events import ChunkCreated, DocumentChunked, DocumentIngested, Event
from dsetlog.store.log import EventLog
from projections.projects import ChunkView, DocumentView
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


def document_id_for(project_id: str, digest: str) -> str:
    """A document's id, from its project and its content hash (:func:`~dsetlog.catalog.extract.content_hash`)."""
    return content_id("doc", "document", project_id, digest)


def chunk_id_for(document_id: str, strategy: str, chunk_size: int, overlap: int, index: int) -> str:
    """A chunk's id, from its document, the chunking settings and its index in the chunk set."""
    return content_id("chunk", document_id, strategy, chunk_size, overlap, index)


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


def files_to_ingest(paths: Iterable[str]) -> Iterator[tuple[str, Path | None, str]]:
    """(shown name, file or None, error) for each file to ingest, once each, directories walked in name order
    (for the supported types, hidden files and folders left out)."""
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(
                f for f in path.rglob("*")
                if f.is_file() and f.suffix.lower() in SUPPORTED_EXTENSIONS
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )  # fmt: skip
            if not found:
                yield given, None, f"no supported files in this directory ({', '.join(SUPPORTED_EXTENSIONS)})"
            for f in found:
                if f.resolve() not in seen:
                    seen.add(f.resolve())
                    yield str(f), f, ""
        elif path.exists():
            if path.resolve() not in seen:
                seen.add(path.resolve())
                yield given, path, ""
        else:
            yield given, None, "no such file or directory"


# --- ingesting one file ---------------------------------------------------------------------------


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
    require_project(rm, project_id)
    digest = content_hash(raw)
    known = _known_document(rm, project_id, digest)
    if known is not None and known.chunked_seq is not None and (
            known.strategy, known.chunk_size, known.overlap) == (strategy, size, overlap):
        _keep_original(log, known.id, known.filename, raw)
        return IngestResult(
            document_id=known.id, filename=filename, chunks=len(known.chunk_ids), skipped=True,
            reason=_unchanged_reason(known.filename, filename), status="unchanged", project_id=project_id,
            content_hash=digest, media_type=known.media_type, size=known.size, chars=known.chars,
            strategy=strategy, chunk_size=size, overlap=overlap,
        )  # fmt: skip
    document_id = known.id if known is not None else document_id_for(project_id, digest)
    extracted = _extract(raw, filename, limits)
    chunks = chunk_text(extracted.text, strategy=strategy, chunk_size=size, overlap=overlap)
    if not chunks:  # extract_bytes refuses blank text, so this is only a safeguard
        raise IngestError(f"{filename}: no text to chunk")
    events: list[Event] = []
    if known is None:
        events.append(DocumentIngested(
            project_id=project_id, document_id=document_id, filename=filename, content_hash=digest,
            media_type=extracted.media_type, size=len(raw), chars=len(extracted.text),
            extractor=extracted.extractor, pages=extracted.pages,
        ))  # fmt: skip
    chunk_ids = [chunk_id_for(document_id, strategy, size, overlap, index) for index in range(len(chunks))]
    events += _new_chunks(rm, project_id, document_id, strategy, chunks, chunk_ids, new_document=known is None)
    events.append(DocumentChunked(project_id=project_id, document_id=document_id, strategy=strategy,
                                  chunk_size=size, overlap=overlap, chunk_ids=chunk_ids))
    # the original before the events: no document without its original
    _keep_original(log, document_id, known.filename if known is not None else filename, raw)
    log.append_many(events)
    rm.catch_up()
    status, reason = _what_was_done(known, len(chunks), f"{strategy} {size}/{overlap}")
    return IngestResult(
        document_id=document_id, filename=filename, chunks=len(chunks), skipped=False, reason=reason,
        status=status, project_id=project_id, content_hash=digest, media_type=extracted.media_type,
        size=len(raw), chars=len(extracted.text), strategy=strategy, chunk_size=size, overlap=overlap,
    )  # fmt: skip


def _known_document(rm: ReadModel, project_id: str, digest: str) -> DocumentView | None:
    """The project's document of this content as the log holds it now (a copy), or None."""
    with rm.lock:
        view = rm.projects.document_by_hash(project_id, digest)
        return None if view is None else msgspec.structs.replace(view)


def _new_chunks(rm: ReadModel, project_id: str, document_id: str, strategy: str, chunks: list[Chunk],
                chunk_ids: list[str], *, new_document: bool) -> list[Event]:
    """ChunkCreated for each chunk the log does not already hold with exactly this content: every chunk of a
    new document; of a re-chunking or an interrupted ingest, those not written before under their id."""
    events: list[Event] = []
    with rm.lock:
        known = rm.projects
        for chunk, cid in zip(chunks, chunk_ids, strict=True):
            if new_document or not _same_chunk(known.chunk(cid), chunk):
                events.append(ChunkCreated(
                    project_id=project_id, document_id=document_id, chunk_id=cid, index=chunk.index,
                    start=chunk.start, end=chunk.end, text=chunk.text, strategy=strategy, heading=chunk.heading,
                ))  # fmt: skip
    return events


def _same_chunk(view: ChunkView | None, chunk: Chunk) -> bool:
    """Whether a chunk with this id is already in the log with exactly this content (no need to write it again)."""
    return (
        view is not None
        and view.start == chunk.start
        and view.end == chunk.end
        and view.heading == chunk.heading
        and view.text == chunk.text
    )


def _what_was_done(known: DocumentView | None, chunks: int, chunking: str) -> tuple[str, str]:
    """(status, reason) of an ingest that appended: a new document, a re-chunking, or an interrupted one completed."""
    if known is None:
        return "ingested", f"ingested {chunks} chunks"
    if known.chunked_seq is not None:
        return "rechunked", f"re-chunked from {known.strategy} {known.chunk_size}/{known.overlap} to {chunking}"
    return "completed", "an interrupted ingest was completed"


def _unchanged_reason(stored: str, given: str) -> str:
    if stored == given:
        return "already ingested with the same chunking"
    return f"the same content was already ingested as {stored!r} with the same chunking"


# --- the file's checks ------------------------------------------------------------------------------


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


def _extract(raw: bytes, filename: str, limits: ExtractLimits) -> Extracted:
    """The document's text; extraction's own errors (ExtractError, ExtractLimitError) are the catalog's."""
    try:
        return extract_bytes(raw, filename, limits)
    except ExtractError:
        raise
    except Exception as exc:  # a damaged file can trip a parser anywhere (zipfile.BadZipFile, RecursionError, ...)
        suffix = Path(filename).suffix.lower()
        raise IngestError(
            f"{filename}: not a readable {suffix} file ({type(exc).__name__}: {exc}); check that it opens"
        ) from None
