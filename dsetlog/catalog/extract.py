"""Plain text out of documents (.txt, .md, .html, .pdf, .docx) for chunking.

Each extractor returns text that keeps the document's structure where chunking
can use it: headings become markdown ``#`` lines and paragraphs are separated by
blank lines, so the "markdown" and "paragraphs" chunking strategies work on
HTML, PDF and .docx too. A PDF's paragraphs and headings are recovered from where its
lines are printed (:mod:`dsetlog.catalog.pdf`); a web page loses its site's chrome (navigation,
headers, footers, cookie banners, link lists: :mod:`dsetlog.catalog.html`). Line endings are
normalised to ``\\n``.

Extraction is bounded (:class:`ExtractLimits`): the input's bytes, the decompressed size of each
part of a .docx read, the number of parts in its zip, the characters extracted and the time
taken. A document beyond any of them is refused with :class:`ExtractLimitError`, which names the
limit, instead of holding a thread and memory for minutes. A .docx is read by streaming its
``word/document.xml`` (``xml.etree.ElementTree.iterparse``, each element freed once read), so its
cost is linear in the document's size and its memory is that of one paragraph.

Extraction's errors are the catalog's: :class:`ExtractError` is an IngestError (422, exit 2) and
:class:`ExtractLimitError` a TooLargeError (413), so ingesting needs no translation of them.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
import struct
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import IO, TYPE_CHECKING
from xml.etree import ElementTree

import msgspec

from dsetlog.catalog.errors import IngestError, TooLargeError
from dsetlog.catalog.html import HTMLText
from dsetlog.catalog.pdf import Page, layout_text, read_page

if TYPE_CHECKING:  # the heavy libraries are imported only when such a file is extracted
    from pypdf import PdfReader

MEDIA_TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
SUPPORTED_EXTENSIONS = tuple(MEDIA_TYPES)


class ExtractError(IngestError):
    """A document whose text cannot be extracted; the message says why and what to do."""


class ExtractLimitError(ExtractError, TooLargeError):
    """A document beyond one of the :class:`ExtractLimits`; ``limit`` is the field's name."""

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message, limit=limit)


MB = 2**20


class ExtractLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What one extraction may cost; a document beyond any of these is refused, naming the limit."""

    max_input_bytes: int = 50 * MB  # the file itself
    max_unzipped_bytes: int = 100 * MB  # one part of a .docx (word/document.xml, styles.xml) once decompressed
    max_zip_members: int = 10_000  # files inside a .docx
    max_chars: int = 50_000_000  # characters of extracted text
    max_seconds: float = 60.0  # wall time of one extraction

    def __post_init__(self) -> None:
        for name in ("max_input_bytes", "max_unzipped_bytes", "max_zip_members", "max_chars", "max_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be greater than 0")


DEFAULT_LIMITS = ExtractLimits()


class _Guard:
    """The limits of one extraction, checked as it goes: time, characters, decompressed bytes."""

    def __init__(self, limits: ExtractLimits, filename: str) -> None:
        self.limits, self.filename = limits, filename
        self.deadline = time.monotonic() + limits.max_seconds
        self.chars = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise ExtractLimitError(
                f"{self.filename}: extraction stopped after {self.limits.max_seconds:g} s, the time limit for one "
                "document (max_seconds); split the document into smaller files", limit="max_seconds")

    def add_chars(self, n: int) -> None:
        self.chars += n
        if self.chars > self.limits.max_chars:
            raise ExtractLimitError(
                f"{self.filename}: more than {self.limits.max_chars:,} characters of text, the limit for one "
                "document (max_chars); split the document into smaller files", limit="max_chars")

    def unzipped_too_big(self, member: str) -> ExtractLimitError:
        return ExtractLimitError(
            f"{self.filename}: {member} unzips to more than {_size(self.limits.max_unzipped_bytes)}, the limit for "
            "one part of a document (max_unzipped_bytes); refused as a likely zip bomb (if the document is real, "
            "split it)", limit="max_unzipped_bytes")


def _size(n: int) -> str:
    return f"{n / MB:g} MB" if n >= MB else f"{n:,} bytes"


class Extracted(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    media_type: str
    extractor: str  # which extractor (and version) produced the text: provenance for the log
    pages: int | None = None  # PDFs only


def content_hash(data: bytes) -> str:
    """sha256 hex of a document's bytes: re-ingesting the same bytes is recognised by it."""
    return hashlib.sha256(data).hexdigest()


def extract_text(path: Path, limits: ExtractLimits = DEFAULT_LIMITS) -> Extracted:
    """Extract the text of the document at ``path``, chosen by its extension."""
    path = Path(path)
    _check_supported(path.name)
    try:
        with path.open("rb") as fh:
            data = fh.read(limits.max_input_bytes + 1)  # never more than the limit, whatever the file is
    except OSError as exc:
        raise ExtractError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return extract_bytes(data, path.name, limits)


def extract_bytes(data: bytes, filename: str, limits: ExtractLimits = DEFAULT_LIMITS) -> Extracted:
    """Extract text from a document's bytes (an upload, say); ``filename``'s extension picks the format."""
    suffix = _check_supported(filename)
    if len(data) > limits.max_input_bytes:
        raise ExtractLimitError(
            f"{filename}: over {_size(limits.max_input_bytes)}, the size limit for one document (max_input_bytes); "
            "split the document into smaller files", limit="max_input_bytes")
    guard = _Guard(limits, filename)
    extracted = _EXTRACTORS[suffix](data, filename, guard)
    if len(extracted.text) > limits.max_chars:
        guard.add_chars(len(extracted.text) + 1 - guard.chars)  # raises: the extractor did not count as it went
    if not extracted.text.strip():
        raise ExtractError(f"{filename}: contains no text")
    return extracted


def _check_supported(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix not in MEDIA_TYPES:
        supported = ", ".join(SUPPORTED_EXTENSIONS)
        raise ExtractError(
            f"{filename}: unsupported file type {suffix or '(none)'!r}; supported: {supported}"
        )
    return suffix


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode(data: bytes, filename: str) -> tuple[str, str]:
    """UTF-8 (a BOM is dropped), else Windows-1252, the usual non-UTF-8 text; returns (text, encoding)."""
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        utf8_error = exc
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        raise ExtractError(
            f"{filename}: not UTF-8 text (bad byte at offset {utf8_error.start}); save it as UTF-8"
        ) from None


# --- plain text and markdown --------------------------------------------------


def _extract_plain(data: bytes, filename: str, guard: _Guard) -> Extracted:
    text, encoding = _decode(data, filename)
    suffix = Path(filename).suffix.lower()
    return Extracted(
        text=_normalise_newlines(text), media_type=MEDIA_TYPES[suffix], extractor=f"text ({encoding})"
    )


# --- HTML ------------------------------------------------------------------------

_HTML_PIECE = 1 << 20  # characters fed to the parser between two looks at the clock


def _extract_html(data: bytes, filename: str, guard: _Guard) -> Extracted:
    source, encoding = _decode(data, filename)
    source = _normalise_newlines(source)
    parser = HTMLText()
    for start in range(0, len(source), _HTML_PIECE):
        parser.feed(source[start : start + _HTML_PIECE])
        guard.tick()
    parser.close()
    text = parser.text()
    if not text.strip() and parser.visible_chars:
        raise ExtractError(f"{filename}: the page holds only site navigation, headers, footers or link lists "
                           "(nothing that reads as content)")
    return Extracted(text=text, media_type="text/html", extractor=f"html.parser ({encoding}; site chrome dropped)")


# --- PDF -----------------------------------------------------------------------------


def _extract_pdf(data: bytes, filename: str, guard: _Guard) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PdfReadError

    pages: list[Page] = []
    try:
        reader = PdfReader(io.BytesIO(data))
        _unlock(reader, filename)
        for page in reader.pages:
            guard.tick()
            pages.append(read_page(page))
            guard.add_chars(len(pages[-1].plain) + 2)
        guard.tick()
    except ExtractError:
        raise
    except LimitReachedError as exc:  # pypdf's own bounds on decompressed streams and page trees
        raise ExtractLimitError(f"{filename}: the PDF is over one of pypdf's safety limits ({exc}); refused as "
                                "a likely decompression bomb", limit="pdf_stream") from exc
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise ExtractError(f"{filename}: not a readable PDF ({exc})") from exc
    if not any(page.plain.strip() for page in pages):
        raise ExtractError(
            f"{filename}: the PDF has no text layer (image-only or scanned); run OCR on it first"
        )
    text = _normalise_newlines(layout_text(pages))
    return Extracted(
        text=text, media_type="application/pdf", extractor=f"pypdf {version('pypdf')} (layout)", pages=len(pages)
    )


def _unlock(reader: PdfReader, filename: str) -> None:
    """Open an encrypted PDF only when it needs no password (an owner-password-only PDF)."""
    if not reader.is_encrypted:
        return
    try:
        opened = reader.decrypt("")
    except Exception as exc:  # pypdf raises several types here (missing AES backend, bad key)
        raise ExtractError(f"{filename}: the PDF is encrypted and cannot be opened ({exc})") from exc
    if not opened:
        raise ExtractError(f"{filename}: the PDF is encrypted with a password; remove the password first")


# --- DOCX ---------------------------------------------------------------------------
#
# word/document.xml is streamed: each element is handled at its end and then dropped from its parent,
# so memory stays at one paragraph's worth and time is linear. The text is what python-docx gave
# (paragraph text from runs: w:t, w:tab/w:ptab as a tab, w:br/w:cr as a newline, w:noBreakHyphen as "-";
# headings, Title and List styles by name; table rows as "cell | cell", a merged cell repeated as
# python-docx's row.cells repeats it), read without building the whole document in memory. Text boxes
# (w:txbxContent) and mc:Fallback copies are skipped, as python-docx skips them.

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_RELS_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_P, _T, _TBL, _TR, _TC = _W + "p", _W + "t", _W + "tbl", _W + "tr", _W + "tc"
_PSTYLE, _GRID_SPAN, _VMERGE, _GRID_BEFORE = _W + "pStyle", _W + "gridSpan", _W + "vMerge", _W + "gridBefore"
_W_VAL, _W_TYPE = _W + "val", _W + "type"
_SKIPPED = frozenset({_W + "txbxContent", _MC_FALLBACK})
_CHAR_OF = {_W + "tab": "\t", _W + "ptab": "\t", _W + "cr": "\n", _W + "noBreakHyphen": "-"}
_DOCX_HEADING_RE = re.compile(r"^heading ([1-9])$", re.IGNORECASE)
_DOCTYPE = b"<!DOCTYPE"
_TICK_EVERY = 4096  # parser events between two looks at the clock


def _extract_docx(data: bytes, filename: str, guard: _Guard) -> Extracted:
    zf = _open_docx(data, filename, guard)
    with zf:
        main = _docx_main_part(zf, filename, guard)
        styles, default_style = _docx_styles(zf, main, filename, guard)
        with _member(zf, main, filename, guard) as stream:
            try:
                text = _DocxText(styles, default_style, guard).parse(stream)
            except ElementTree.ParseError as exc:
                raise ExtractError(f"{filename}: not a readable .docx file ({main}: {exc})") from None
    return Extracted(text=text, media_type=MEDIA_TYPES[".docx"], extractor="docx stream (xml.etree iterparse)")


def _open_docx(data: bytes, filename: str, guard: _Guard) -> zipfile.ZipFile:
    members = _zip_member_count(data)
    if members is not None and members > guard.limits.max_zip_members:
        raise ExtractLimitError(f"{filename}: {members:,} files inside the .docx, over the limit of "
                                f"{guard.limits.max_zip_members:,} (max_zip_members); refused", limit="max_zip_members")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise ExtractError(f"{filename}: not a readable .docx file ({exc})") from None
    if len(zf.infolist()) > guard.limits.max_zip_members:
        zf.close()
        raise ExtractLimitError(f"{filename}: more than {guard.limits.max_zip_members:,} files inside the .docx "
                                "(max_zip_members); refused", limit="max_zip_members")
    return zf


def _zip_member_count(data: bytes) -> int | None:
    """Entries in the zip's end-of-central-directory record (read before zipfile builds one object per entry);
    None when there is no such record (zipfile then says the file is not a zip). A zip64 count is 0xFFFF here."""
    at = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if at < 0 or at + 22 > len(data):
        return None
    return int(struct.unpack_from("<H", data, at + 10)[0])


@contextmanager
def _member(zf: zipfile.ZipFile, name: str, filename: str, guard: _Guard) -> Iterator[IO[bytes]]:
    """A part of the zip as a stream that stops at ``max_unzipped_bytes`` and refuses a DTD."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ExtractError(f"{filename}: not a readable .docx file (it has no {name})") from None
    if info.file_size > guard.limits.max_unzipped_bytes:
        raise guard.unzipped_too_big(name)
    try:
        with zf.open(info) as raw:
            yield _Bounded(raw, name, guard)  # type: ignore[misc]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as exc:
        raise ExtractError(f"{filename}: not a readable .docx file ({name}: {exc})") from None


class _Bounded(io.RawIOBase):
    """Reads a zip member, counting: past the limit it raises; a DTD (entity declarations) is refused."""

    def __init__(self, raw: IO[bytes], name: str, guard: _Guard) -> None:
        self.raw, self.name, self.guard = raw, name, guard
        self.count = 0
        self.tail = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        limit = self.guard.limits.max_unzipped_bytes
        want = limit + 1 - self.count if size is None or size < 0 else min(size, limit + 1 - self.count)
        chunk = self.raw.read(max(want, 1))
        self.count += len(chunk)
        if self.count > limit:
            raise self.guard.unzipped_too_big(self.name)
        if _DOCTYPE in self.tail + chunk[: len(_DOCTYPE)] or _DOCTYPE in chunk:
            raise ExtractError(f"{self.guard.filename}: {self.name} declares a DTD, which a .docx never does; "
                               "refused (it could expand entities without bound)")
        self.tail = chunk[-len(_DOCTYPE) :]
        self.guard.tick()
        return chunk

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _small_xml(zf: zipfile.ZipFile, name: str, filename: str, guard: _Guard) -> ElementTree.Element | None:
    """A small part (relationships, styles) parsed whole, within the same limits; None when absent."""
    if name not in zf.NameToInfo:
        return None
    with _member(zf, name, filename, guard) as stream:
        try:
            return ElementTree.parse(stream).getroot()
        except ElementTree.ParseError as exc:
            raise ExtractError(f"{filename}: not a readable .docx file ({name}: {exc})") from None


def _rel_target(rels: ElementTree.Element | None, kind: str, base: str) -> str | None:
    """The target of the first relationship whose type ends with ``/kind``, as a path inside the zip."""
    for rel in rels if rels is not None else ():
        if rel.tag == _RELS_NS + "Relationship" and rel.get("Type", "").endswith("/" + kind) \
                and rel.get("TargetMode") != "External":
            target = rel.get("Target", "")
            path = target.lstrip("/") if target.startswith("/") else posixpath.join(base, target)
            return posixpath.normpath(path)
    return None


def _docx_main_part(zf: zipfile.ZipFile, filename: str, guard: _Guard) -> str:
    main = _rel_target(_small_xml(zf, "_rels/.rels", filename, guard), "officeDocument", "")
    main = main or "word/document.xml"
    if main not in zf.NameToInfo:
        raise ExtractError(f"{filename}: not a readable .docx file (it has no {main}; is it a Word document?)")
    return main


def _docx_styles(zf: zipfile.ZipFile, main: str, filename: str, guard: _Guard) -> tuple[dict[str, str], str]:
    """Paragraph style ids -> names (python-docx's names: "heading 1" is "Heading 1"), and the default's name."""
    folder, part = posixpath.split(main)
    rels = _small_xml(zf, posixpath.join(folder, "_rels", part + ".rels"), filename, guard)
    styles_part = _rel_target(rels, "styles", folder) or posixpath.join(folder, "styles.xml")
    root = _small_xml(zf, styles_part, filename, guard)
    names: dict[str, str] = {}
    default = ""
    for style in root.iter(_W + "style") if root is not None else ():
        if style.get(_W_TYPE, "paragraph") != "paragraph":
            continue
        style_id = style.get(_W + "styleId", "")
        name_el = style.find(_W + "name")
        name = name_el.get(_W_VAL, "") if name_el is not None else style_id
        heading = _DOCX_HEADING_RE.match(name)
        name = f"Heading {heading.group(1)}" if heading else name
        names[style_id] = name
        if style.get(_W + "default") in ("1", "true", "on") and not default:
            default = name
    return names, default


class _Cell:
    __slots__ = ("paragraphs", "span", "merged")

    def __init__(self) -> None:
        self.paragraphs: list[str] = []
        self.span = 1
        self.merged = False  # w:vMerge continue: python-docx shows the cell above


class _DocxText:
    """The text of word/document.xml, read in one pass over iterparse's events."""

    def __init__(self, styles: dict[str, str], default_style: str, guard: _Guard) -> None:
        self.styles, self.default_style, self.guard = styles, default_style, guard
        self.blocks: list[str] = []
        self.runs: list[list[str]] = []  # the open paragraphs' text pieces (paragraphs nest in tables' cells)
        self.styles_of: list[str | None] = []  # the open paragraphs' style ids
        self.tables: list[tuple[list[list[str]], dict[int, str]]] = []  # rows, and the text above each grid column
        self.rows: list[tuple[list[_Cell], int]] = []  # the open rows' cells, and their gridBefore
        self.cells: list[_Cell] = []

    def parse(self, stream: IO[bytes]) -> str:
        stack: list[ElementTree.Element] = []
        skip = 0
        guard = self.guard
        for n, (event, elem) in enumerate(ElementTree.iterparse(stream, events=("start", "end"))):
            if n % _TICK_EVERY == 0:
                guard.tick()
            tag = elem.tag
            if event == "start":
                stack.append(elem)
                if tag in _SKIPPED:
                    skip += 1
                elif skip:
                    pass
                elif tag == _P:
                    self.runs.append([])
                    self.styles_of.append(None)
                elif tag == _TC:
                    self.cells.append(_Cell())
                elif tag == _TR:
                    self.rows.append(([], 0))
                elif tag == _TBL:
                    self.tables.append(([], {}))
                continue
            stack.pop()
            if tag in _SKIPPED:
                skip -= 1
            elif skip:
                pass
            elif tag == _T:
                if self.runs and elem.text:
                    self.runs[-1].append(elem.text)
            elif tag in _CHAR_OF:
                if self.runs:
                    self.runs[-1].append(_CHAR_OF[tag])
            elif tag == _W + "br":
                if self.runs and elem.get(_W_TYPE, "textWrapping") == "textWrapping":
                    self.runs[-1].append("\n")
            elif tag == _PSTYLE:
                if self.styles_of:
                    self.styles_of[-1] = elem.get(_W_VAL)
            elif tag == _P:
                self._end_paragraph()
            elif tag == _GRID_SPAN:
                if self.cells:
                    self.cells[-1].span = max(1, _int(elem.get(_W_VAL), 1))
            elif tag == _VMERGE:
                if self.cells:
                    self.cells[-1].merged = elem.get(_W_VAL, "continue") == "continue"
            elif tag == _GRID_BEFORE:
                if self.rows:
                    cells, _ = self.rows[-1]
                    self.rows[-1] = (cells, max(0, _int(elem.get(_W_VAL), 0)))
            elif tag == _TC:
                if self.cells and self.rows:
                    self.rows[-1][0].append(self.cells.pop())
            elif tag == _TR:
                if self.rows and self.tables:
                    self._end_row(*self.rows.pop())
            elif tag == _TBL:
                if self.tables:
                    self._end_table(self.tables.pop()[0])
            if stack:  # done with it: drop it from its parent, so memory holds one paragraph at most
                parent = stack[-1]
                if len(parent) and parent[-1] is elem:
                    del parent[-1]
        return "\n\n".join(self.blocks)

    def _emit(self, text: str, *, counted: bool = False) -> None:
        """A paragraph or table: a block of the document, or a paragraph of the cell it is in."""
        if self.cells:
            self.cells[-1].paragraphs.append(text)
        elif text:
            if not counted:
                self.guard.add_chars(len(text) + 2)
            self.blocks.append(text)

    def _end_paragraph(self) -> None:
        if not self.runs:
            return
        text = _normalise_newlines("".join(self.runs.pop()))
        style_id = self.styles_of.pop()
        if self.cells:  # python-docx's cell.text: its paragraphs' text, whatever their style
            self._emit(text)
            return
        text = text.strip()
        if not text:
            return
        style = self.styles.get(style_id or "", self.default_style) if style_id else self.default_style
        heading = _DOCX_HEADING_RE.match(style)
        if heading:
            text = "#" * int(heading.group(1)) + " " + text
        elif style == "Title":
            text = "# " + text
        elif style.startswith("List"):
            text = "- " + text
        self._emit(text)

    def _end_row(self, cells: list[_Cell], grid_before: int) -> None:
        rows, above = self.tables[-1]
        out: list[str] = []
        column = grid_before
        for cell in cells:
            if cell.merged:
                text = above.get(column, "")
            else:
                text = " ".join("\n".join(cell.paragraphs).split())
                for c in range(column, column + cell.span):
                    above[c] = text
            out.extend([text] * cell.span)
            column += cell.span
            self.guard.add_chars(len(text) * cell.span)
        if any(out):
            rows.append(out)

    def _end_table(self, rows: list[list[str]]) -> None:
        self._emit("\n".join(" | ".join(cells) for cells in rows), counted=True)  # counted row by row


def _int(text: str | None, default: int) -> int:
    try:
        return int(text or "")
    except ValueError:
        return default


_EXTRACTORS = {
    ".txt": _extract_plain,
    ".md": _extract_plain,
    ".markdown": _extract_plain,
    ".html": _extract_html,
    ".htm": _extract_html,
    ".pdf": _extract_pdf,
    ".docx": _extract_docx,
}
