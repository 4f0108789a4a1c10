"""Plain text out of documents (.txt, .md, .html, .pdf, .docx) for chunking.

Each extractor returns text that keeps the document's structure where chunking
can use it: headings become markdown ``#`` lines and paragraphs are separated by
blank lines, so the "markdown" and "paragraphs" chunking strategies work on
HTML and .docx too. Line endings are normalised to ``\\n``.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from html.parser import HTMLParser
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:  # the heavy libraries are imported only when such a file is extracted
    from docx.table import Table
    from docx.text.paragraph import Paragraph
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


class ExtractError(Exception):
    """A document whose text cannot be extracted; the message says why and what to do."""


class Extracted(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    media_type: str
    extractor: str  # which extractor (and version) produced the text: provenance for the log
    pages: int | None = None  # PDFs only


def content_hash(data: bytes) -> str:
    """sha256 hex of a document's bytes: re-ingesting the same bytes is recognised by it."""
    return hashlib.sha256(data).hexdigest()


def extract_text(path: Path) -> Extracted:
    """Extract the text of the document at ``path``, chosen by its extension."""
    path = Path(path)
    _check_supported(path.name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ExtractError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return extract_bytes(data, path.name)


def extract_bytes(data: bytes, filename: str) -> Extracted:
    """Extract text from a document's bytes (an upload, say); ``filename``'s extension picks the format."""
    suffix = _check_supported(filename)
    extracted = _EXTRACTORS[suffix](data, filename)
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


def _extract_plain(data: bytes, filename: str) -> Extracted:
    text, encoding = _decode(data, filename)
    suffix = Path(filename).suffix.lower()
    return Extracted(
        text=_normalise_newlines(text), media_type=MEDIA_TYPES[suffix], extractor=f"text ({encoding})"
    )


# --- HTML ------------------------------------------------------------------------

_SKIPPED_TAGS = frozenset({"script", "style", "nav", "noscript", "template", "head", "svg"})
_VOID_TAGS = frozenset(
    {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "wbr"}
)
_BLOCK_TAGS = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "aside", "blockquote", "pre",
        "ul", "ol", "dl", "dt", "dd", "table", "tr", "figure", "figcaption", "form", "fieldset",
        "address", "details", "summary", "body", "html",
    }
)  # fmt: skip
_HEADING_LEVELS = {f"h{level}": level for level in range(1, 7)}
_LIST_BLOCKS = frozenset({"ul", "ol", "dl"})


class _HTMLText(HTMLParser):
    """Collects visible text as blocks: headings, paragraphs and list items, one per line.

    Blocks are separated by blank lines, except consecutive list items, which stay
    on adjacent lines so a list reads as one paragraph.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # entities (&amp;, &#8217;) decoded for us
        self.blocks: list[tuple[str, bool]] = []  # (text, is_list_item)
        self._parts: list[str] = []
        self._prefix = ""
        self._is_item = False
        self._skip_depth = 0
        self._pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            if tag not in _VOID_TAGS:
                self._skip_depth += 1
            return
        if self._skip_depth:
            return
        if tag == "br":
            self._parts.append("\n")
        elif tag in _HEADING_LEVELS:
            self._flush()
            self._prefix = "#" * _HEADING_LEVELS[tag] + " "
        elif tag == "li":
            self._flush()
            self._prefix, self._is_item = "- ", True
        elif tag in _BLOCK_TAGS or tag == "td" or tag == "th":
            self._cell_or_block(tag)
        if tag == "pre":
            self._pre_depth += 1

    def _cell_or_block(self, tag: str) -> None:
        if tag in ("td", "th"):
            # cells of one row stay on one line, separated like a markdown table
            if self._parts and "".join(self._parts).strip():
                self._parts.append(" | ")
            return
        self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if self._skip_depth:
            return
        if tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
        if tag in _HEADING_LEVELS or tag == "li" or tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self._parts.append(data if self._pre_depth else re.sub(r"\s+", " ", data))

    def close(self) -> None:
        super().close()
        self._flush()

    def _flush(self) -> None:
        raw = "".join(self._parts)
        self._parts = []
        lines = [line.strip() if not self._pre_depth else line.rstrip() for line in raw.split("\n")]
        text = "\n".join(line for line in lines if line)
        if text:
            self.blocks.append((self._prefix + text, self._is_item))
        self._prefix, self._is_item = "", False

    def text(self) -> str:
        out: list[str] = []
        previous_item = False
        for block, is_item in self.blocks:
            if out:
                out.append("\n" if is_item and previous_item else "\n\n")
            out.append(block)
            previous_item = is_item
        return "".join(out)


def _extract_html(data: bytes, filename: str) -> Extracted:
    source, encoding = _decode(data, filename)
    parser = _HTMLText()
    parser.feed(_normalise_newlines(source))
    parser.close()
    return Extracted(text=parser.text(), media_type="text/html", extractor=f"html.parser ({encoding})")


# --- PDF -----------------------------------------------------------------------------


def _extract_pdf(data: bytes, filename: str) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        _unlock(reader, filename)
        texts = [(page.extract_text() or "").strip() for page in reader.pages]
    except ExtractError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise ExtractError(f"{filename}: not a readable PDF ({exc})") from exc
    if not any(texts):
        raise ExtractError(
            f"{filename}: the PDF has no text layer (image-only or scanned); run OCR on it first"
        )
    text = _normalise_newlines("\n\n".join(t for t in texts if t))
    return Extracted(
        text=text, media_type="application/pdf", extractor=f"pypdf {version('pypdf')}", pages=len(texts)
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

_DOCX_HEADING_RE = re.compile(r"^Heading (\d)$")


def _extract_docx(data: bytes, filename: str) -> Extracted:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ExtractError(f"{filename}: not a readable .docx file ({exc})") from exc
    blocks: list[str] = []
    for item in document.iter_inner_content():  # paragraphs and tables in document order
        block = _docx_table(item) if isinstance(item, Table) else _docx_paragraph(item)
        if block:
            blocks.append(block)
    return Extracted(
        text="\n\n".join(blocks),
        media_type=MEDIA_TYPES[".docx"],
        extractor=f"python-docx {version('python-docx')}",
    )


def _docx_paragraph(paragraph: Paragraph) -> str:
    text = _normalise_newlines(paragraph.text).strip()
    if not text:
        return ""
    style = paragraph.style.name if paragraph.style is not None else ""
    heading = _DOCX_HEADING_RE.match(style or "")
    if heading:
        return "#" * int(heading.group(1)) + " " + text
    if style == "Title":
        return "# " + text
    if (style or "").startswith("List"):
        return "- " + text
    return text


def _docx_table(table: Table) -> str:
    rows = []
    for row in table.rows:
        cells = [" ".join(cell.text.split()) for cell in row.cells]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


_EXTRACTORS = {
    ".txt": _extract_plain,
    ".md": _extract_plain,
    ".markdown": _extract_plain,
    ".html": _extract_html,
    ".htm": _extract_html,
    ".pdf": _extract_pdf,
    ".docx": _extract_docx,
}
