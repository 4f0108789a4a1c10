"""Paragraphs and headings out of a PDF's text layer, from where pypdf says each line is.

pypdf's ``extract_text`` gives one line of text per printed line and no blank line between paragraphs, so
the paragraphs strategy saw one paragraph per page and fell back to character windows. Its
``visitor_text`` callback tells where each piece of text starts (text matrix times the current
transformation matrix) and at what font size; from that, per page, a new paragraph starts where

- the gap to the line before is larger than the usual line pitch (the page's, or the document's on a page
  of few lines): spacing between paragraphs;
- the font size changes (a heading and its body);
- the line is indented relative to the lines before and after it (a first-line indent; the last line of a
  hanging indent, a bullet's, is not);
- the line starts with a bullet;
- the line before ends a sentence and is clearly shorter than the page's full lines (a paragraph's last line).

Lines in a font larger than the body's become markdown headings (``#`` for the largest size, ``##`` for the
next, ...), so the markdown strategy works on PDFs as it does on HTML and .docx; a line's size is that of
most of its text (a bullet or a word of code in a smaller font does not change it). A paragraph that runs
on over a page break or into the next column (the last line ends no sentence and the next starts
unindented) is joined again instead of being cut in two. Left out, as site chrome is from a web page: a
page number alone on a page's first or last line, and a running head or foot (the same first or last line,
digits aside, on three pages or more), each set apart from the text by a gap. The lines of a paragraph
keep their line breaks, so the text is the text pypdf read. A page whose positions cannot be used (the
visitor saw other text than extract_text returned, or rotated text) keeps pypdf's plain text, one block.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from statistics import median
from typing import TYPE_CHECKING, Any, NamedTuple

from dsetlog.catalog.sentences import ends_sentence

if TYPE_CHECKING:
    from pypdf import PageObject

_HEADING_RATIO = 1.15  # a font this much larger than the body's is a heading's
_MAX_HEADING_CHARS = 150
_GAP_RATIO = 1.3  # a gap this much larger than the line pitch separates paragraphs
_SHORT_LINE = 0.75  # a line ending a sentence at under this share of a full line ends its paragraph
_BULLETS = frozenset("•◦▪‣●○■□–—➢►✓")
_ASCII_BULLETS = ("- ", "* ", "· ")  # set in a font without a bullet glyph
_PAGE_NUMBER_RE = re.compile(r"^[\s\-–—]*(?:page\s+)?\d{1,4}(?:\s*(?:/|of)\s*\d{1,4})?[\s\-–—]*$", re.IGNORECASE)


class Line(NamedTuple):
    text: str
    x: float  # where the line starts, in PDF points (y grows upwards)
    y: float
    size: float  # the font size as printed (the font's size times the matrices' vertical scale)


class Page(NamedTuple):
    plain: str  # pypdf's extract_text
    lines: list[Line] | None  # None: no usable positions; the plain text is used


def read_page(page: PageObject) -> Page:
    """A page's text and, where pypdf gives them, its lines with their positions."""
    fragments: list[tuple[str, Any, Any, float]] = []

    def visit(text: str, cm: Any, tm: Any, _font: Any, size: Any) -> None:
        fragments.append((text, cm, tm, float(size or 0)))

    plain = page.extract_text(visitor_text=visit) or ""
    if "".join(f[0] for f in fragments) != plain:
        return Page(plain, None)  # the visitor saw other text (pypdf's right-to-left runs): trust extract_text
    lines: list[Line] = []
    parts: list[str] = []
    where: tuple[float, float] | None = None
    sizes: Counter[float] = Counter()  # characters per font size: a line's size is most of its text's
    upright = True
    for text, cm, tm, size in fragments:
        for i, piece in enumerate(text.split("\n")):
            if i:
                _close(lines, parts, where, sizes)
                parts, where, sizes = [], None, Counter()
            if not piece:
                continue
            parts.append(piece)
            if piece.strip():
                m = _mult(tm, cm)
                sizes[round(size * math.hypot(m[2], m[3]), 2)] += len(piece.strip())
                if where is None:
                    upright = upright and m[0] > 0 and abs(m[1]) <= 1e-3 * m[0]
                    where = (m[4], m[5])
    _close(lines, parts, where, sizes)
    return Page(plain, lines if upright else None)


def _close(lines: list[Line], parts: list[str], where: tuple[float, float] | None, sizes: Counter[float]) -> None:
    """The line so far, if it holds text: where its first piece starts, in the size of most of its text
    (a bullet or a word of code in a smaller font does not make a line another paragraph)."""
    text = "".join(parts).rstrip()
    if text.strip() and where is not None:
        lines.append(Line(text, *where, sizes.most_common(1)[0][0]))


def _mult(m: Sequence[float], n: Sequence[float]) -> tuple[float, ...]:
    """The product of two PDF matrices [a b c d e f] (m applied first)."""
    return (
        m[0] * n[0] + m[1] * n[2], m[0] * n[1] + m[1] * n[3],
        m[2] * n[0] + m[3] * n[2], m[2] * n[1] + m[3] * n[3],
        m[4] * n[0] + m[5] * n[2] + n[4], m[4] * n[1] + m[5] * n[3] + n[5],
    )  # fmt: skip


class _Block(NamedTuple):
    lines: list[Line]
    heading: int  # its level, 0 for a paragraph


def layout_text(pages: list[Page]) -> str:
    """The document's text: paragraphs separated by blank lines, headings as ``#`` lines."""
    lines = [line for page in pages for line in page.lines or ()]
    body = _body_size(lines)
    levels = _heading_levels(lines, body)
    document_pitch = _document_pitch(pages)
    trimmed = [None if p.lines is None else _without_page_numbers(p.lines, document_pitch) for p in pages]
    running = _running_lines(trimmed, document_pitch)
    blocks: list[_Block | str] = []  # a str: a page kept as pypdf's plain text
    for page, page_lines in zip(pages, trimmed, strict=True):
        if page_lines is None:
            if page.plain.strip():
                blocks.append(page.plain.strip())
            continue
        page_lines = [line for line in page_lines if line not in running]
        page_blocks = _page_blocks(page_lines, levels, document_pitch)
        if page_blocks and blocks and _runs_on(blocks[-1], page_blocks[0]):
            previous = blocks.pop()
            assert isinstance(previous, _Block)
            page_blocks[0] = _Block(previous.lines + page_blocks[0].lines, 0)
        blocks.extend(page_blocks)
    return "\n\n".join(_render(block) for block in blocks)


def _document_pitch(pages: list[Page]) -> float:
    gaps = sorted(gap for page in pages for gap in _gaps(page.lines or []))
    if gaps:
        return gaps[len(gaps) // 4]
    return _pitch([line for page in pages for line in page.lines or []])


def _render(block: _Block | str) -> str:
    if isinstance(block, str):
        return block
    if block.heading:
        return "#" * block.heading + " " + " ".join(line.text.strip() for line in block.lines)
    return "\n".join(line.text.strip() for line in block.lines)


def _body_size(lines: list[Line]) -> float:
    sizes: Counter[float] = Counter()
    for line in lines:
        sizes[round(line.size, 1)] += len(line.text)
    return sizes.most_common(1)[0][0] if sizes else 0.0


def _heading_levels(lines: list[Line], body: float) -> dict[float, int]:
    """Heading level by font size: the largest size that is a heading's is level 1."""
    sizes = {round(line.size, 1) for line in lines
             if line.size > body * _HEADING_RATIO and len(line.text.strip()) <= _MAX_HEADING_CHARS}
    return {size: min(level, 6) for level, size in enumerate(sorted(sizes, reverse=True), start=1)}


def _without_page_numbers(lines: list[Line], document_pitch: float) -> list[Line]:
    """The page's lines without a page number alone at its top or bottom, set apart from the text."""
    if len(lines) < 3:
        return lines
    pitch = _pitch(lines, document_pitch)
    kept = list(lines)
    if _PAGE_NUMBER_RE.match(kept[-1].text) and kept[-2].y - kept[-1].y > _GAP_RATIO * pitch:
        kept.pop()
    if _PAGE_NUMBER_RE.match(kept[0].text) and kept[0].y - kept[1].y > _GAP_RATIO * pitch:
        kept.pop(0)
    return kept


def _running_lines(pages: list[list[Line] | None], document_pitch: float) -> set[Line]:
    """Running heads and feet: a page's first or last line, set apart from the text, that is the first or
    last line of at least three pages (digits aside: "Chapter 2 ... 17")."""
    ends: dict[str, list[Line]] = {}
    for lines in pages:
        if lines is None or len(lines) < 3:
            continue
        pitch = _pitch(lines, document_pitch)
        for line, neighbour in ((lines[0], lines[1]), (lines[-1], lines[-2])):
            if abs(line.y - neighbour.y) > _GAP_RATIO * pitch:
                ends.setdefault(_DIGITS_RE.sub("0", line.text.strip().lower()), []).append(line)
    return {line for found in ends.values() if len(found) >= _RUNNING_PAGES for line in found}


_DIGITS_RE = re.compile(r"\d+")
_RUNNING_PAGES = 3


def _gaps(lines: list[Line]) -> list[float]:
    """Distances between the baselines of consecutive lines of one size going down the page."""
    return [a.y - b.y for a, b in zip(lines, lines[1:], strict=False) if a.y > b.y and abs(a.size - b.size) < 0.5]


def _pitch(lines: list[Line], document: float | None = None) -> float:
    """The usual distance between two lines of one paragraph: the lower quartile of the page's gaps (those
    between paragraphs are the larger ones); a page of few lines goes by the whole document's."""
    gaps = sorted(_gaps(lines))
    if len(gaps) >= _PAGE_GAPS or (gaps and document is None):
        return gaps[len(gaps) // 4]
    if document is not None:
        return document
    return 1.2 * (median(line.size for line in lines) if lines else 12.0)


_PAGE_GAPS = 8  # a page with fewer gaps than this has too few to tell its line pitch


def _page_blocks(lines: list[Line], levels: dict[float, int], document_pitch: float) -> list[_Block]:
    if not lines:
        return []
    pitch = _pitch(lines, document_pitch)
    margin = min(line.x for line in lines)
    lengths = sorted(len(line.text.strip()) for line in lines)
    full = lengths[int(0.9 * (len(lengths) - 1))]
    blocks: list[_Block] = []
    current: list[Line] = [lines[0]]
    for i in range(1, len(lines)):
        prev, line = lines[i - 1], lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else None
        if _starts_paragraph(prev, line, nxt, pitch=pitch, margin=margin, full=full):
            blocks.append(_Block(current, levels.get(round(current[0].size, 1), 0)))
            current = []
        current.append(line)
    blocks.append(_Block(current, levels.get(round(current[0].size, 1), 0)))
    return blocks


def _starts_paragraph(prev: Line, line: Line, nxt: Line | None, *, pitch: float, margin: float, full: int) -> bool:
    gap = prev.y - line.y
    if abs(line.size - prev.size) >= 0.5 or gap > _GAP_RATIO * pitch:
        return True
    em = line.size or 12.0
    indent = 0.4 * em
    hanging = _bullet(prev)  # a bullet's second line is indented under its text
    if (nxt is not None and line.x - nxt.x > indent and line.x - prev.x > indent and not hanging
            and abs(nxt.size - line.size) < 0.5):
        return True  # a first-line indent: further right than the lines around it (not a hanging indent's last)
    if gap <= 0:  # back up the page: the next column, where a paragraph runs on as over a page break
        return ends_sentence(prev.text)
    if nxt is None and line.x - margin > 0.4 * em and prev.x - margin <= 0.4 * em:
        return True  # an indented last line of the page, after a line at the margin
    if _bullet(line):
        return True
    return ends_sentence(prev.text) and len(prev.text.strip()) < _SHORT_LINE * full


def _bullet(line: Line) -> bool:
    text = line.text.lstrip()
    return text[:1] in _BULLETS or text.startswith(_ASCII_BULLETS)


def _runs_on(before: _Block | str, after: _Block) -> bool:
    """Whether a page's first paragraph continues the last one of the page before."""
    if isinstance(before, str) or before.heading or after.heading:
        return False
    last, first = before.lines[-1], after.lines[0]
    if ends_sentence(last.text) or abs(first.size - last.size) >= 0.5:
        return False
    indented = len(after.lines) > 1 and first.x - after.lines[1].x > 0.4 * (first.size or 12.0)
    return not indented
