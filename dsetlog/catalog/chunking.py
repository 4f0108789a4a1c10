"""Split a document's text into chunks with exact character offsets.

Every chunk satisfies ``text[chunk.start:chunk.end] == chunk.text``; chunks are
trimmed of surrounding whitespace and whitespace-only chunks are never made.
Strategies (``chunk_size`` and ``overlap`` units in brackets):

- ``characters`` [characters]: windows of at most ``chunk_size`` characters,
  ending at the last sentence boundary in the window (:mod:`dsetlog.catalog.sentences`:
  sentence ends, blank lines, markdown block lines), else at whitespace. After a
  sentence end the next window repeats the trailing whole sentences that fit in
  ``overlap`` characters (none when the last sentence is longer); after a cut inside
  a sentence (no boundary in the window) it starts ``overlap`` characters before the
  end, moved forward to a word start.
- ``tokens`` [tokens]: windows of at most ``chunk_size`` tokens, ending at the last
  sentence boundary in the window, else after ``chunk_size`` tokens; ``overlap``
  tokens shared, as whole sentences after a sentence end, as for characters.
  A token is a word, one character of a script that does not space its words
  (Han, kana, Thai, ...: :data:`dsetlog.scripts.SPACELESS`), or one punctuation character
  (:data:`TOKEN_RE`): an approximation of LLM tokens that needs no tokenizer
  download (real BPE tokenizers give roughly 1.3 tokens per English word).
- ``markdown`` [characters]: one chunk per heading section, carrying its heading
  path ("Intro > Setup"); a section longer than ``chunk_size`` is packed by
  paragraphs, and ``overlap`` repeats trailing paragraphs of at most that many
  characters in the next piece.
- ``paragraphs`` [characters / paragraphs]: blank-line separated paragraphs
  packed greedily up to ``chunk_size`` characters; ``overlap`` is the number of
  trailing paragraphs repeated at the start of the next chunk.

A single paragraph longer than ``chunk_size`` is cut by the characters strategy,
so at a sentence end whenever the window holds one: no chunk ends inside a sentence
unless that sentence alone is longer than the window.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable

import msgspec

from dsetlog.catalog.sentences import boundaries, last_boundary
from dsetlog.scripts import SPACELESS

STRATEGIES = ("characters", "tokens", "markdown", "paragraphs")

# scripts that do not space their words (Han, kana, Thai, ...): a token a character, as BPE tokenizers
# roughly count them (a whole run as one "word" would make a window of 400 tokens a whole document)
TOKEN_RE = re.compile(rf"[{SPACELESS}]|[^\W{SPACELESS}]+|[^\w\s]")
_PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t]*\n\s*")
_HEADING_RE = re.compile(r"^(#{1,6})[ \t]+(\S.*?)(?:[ \t]+#+)?[ \t]*$")  # "## Title ##" closes
_FENCE_RE = re.compile(r"^[ \t]*(```|~~~)")
_FENCE_LINE_RE = re.compile(r"^[ \t]*(?:```|~~~)", re.MULTILINE)
_LINE_RE = re.compile(r"[^\n]*\n|[^\n]+")


class Chunk(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    start: int  # character offsets into the chunked text: text[start:end] == self.text
    end: int
    text: str
    heading: str | None = None  # markdown strategy: the heading path, e.g. "Intro > Setup"


Span = tuple[int, int]


def chunk_text(text: str, *, strategy: str, chunk_size: int, overlap: int) -> list[Chunk]:
    """Split ``text`` into chunks by ``strategy``; deterministic for the same arguments."""
    _validate(strategy, chunk_size, overlap)
    pieces = _STRATEGY_FUNCS[strategy](text, chunk_size, overlap)
    return [
        Chunk(index=i, start=start, end=end, text=text[start:end], heading=heading)
        for i, (start, end, heading) in enumerate(pieces)
    ]


def _validate(strategy: str, chunk_size: int, overlap: int) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown chunking strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be greater than 0 (got {chunk_size})")
    if not 0 <= overlap < chunk_size:
        raise ValueError(f"overlap must be at least 0 and less than chunk_size {chunk_size} (got {overlap})")


def _trim(text: str, start: int, end: int) -> Span | None:
    """The span without surrounding whitespace, or None when nothing but whitespace is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


# --- characters -------------------------------------------------------------------


def _characters(text: str, size: int, overlap: int) -> list[tuple[int, int, None]]:
    return [(s, e, None) for s, e in _character_spans(text, 0, len(text), size, overlap)]


def _character_spans(text: str, lo: int, hi: int, size: int, overlap: int) -> list[Span]:
    """Windows over text[lo:hi] of at most ``size`` characters, ending at the last sentence boundary in the
    window, else at whitespace; after a sentence end, the overlap is the trailing sentences that fit whole."""
    spans: list[Span] = []
    pos, done = lo, lo  # done: where the text not yet in any chunk begins
    overlapped = False  # whether pos repeats whole sentences of the chunk before
    while True:
        trimmed = _trim(text, pos, hi)
        if trimmed is None:
            return spans
        start = trimmed[0]
        limit = min(start + size, hi)
        cut = last_boundary(text, max(start, done), limit, hi) if limit < hi else hi
        if cut is None and overlapped:
            pos, overlapped = done, False  # the next sentence does not fit after the overlap: start without it
            continue
        end = cut if cut is not None else _window_end(text, start, limit, hi)
        span = _trim(text, start, end)
        assert span is not None  # text[start] is not whitespace
        spans.append(span)
        if end >= hi:
            return spans
        done = span[1]
        if cut is None:
            pos, overlapped = _next_start(text, start, span[1], overlap), False
        else:
            pos = _sentence_overlap(text, start, span[1], overlap, hi)
            overlapped = pos < done


def _sentence_overlap(text: str, start: int, end: int, overlap: int, hi: int) -> int:
    """Start of the next window after a chunk that ended at a boundary: the first sentence start at most
    ``overlap`` characters before ``end`` and after ``start``; ``end`` when no whole sentence fits."""
    for cut in boundaries(text, max(start, end - overlap - 1), end - 1, end=hi):
        nxt = _trim(text, cut, end)
        if nxt is not None and end - nxt[0] <= overlap and nxt[0] > start:
            return nxt[0]
    return end


def _window_end(text: str, start: int, limit: int, hi: int) -> int:
    """Where a window with no sentence boundary ends: ``limit``, pulled back to whitespace mid-word."""
    if limit >= hi or text[limit].isspace() or text[limit - 1].isspace():
        return limit
    for i in range(limit - 1, start, -1):
        if text[i].isspace():
            return i
    return limit  # one word longer than the window: cut it


def _next_start(text: str, start: int, end: int, overlap: int) -> int:
    """Start of the next window after a cut inside a sentence: ``overlap`` characters back from ``end``, at a
    word start, past ``start``."""
    candidate = end - overlap
    while candidate < end and candidate > 0 and not text[candidate - 1].isspace():
        candidate += 1  # mid-word: move forward, so the overlap never exceeds what was asked
    return candidate if candidate > start else end


# --- tokens -----------------------------------------------------------------------------


def _tokens(text: str, size: int, overlap: int) -> list[tuple[int, int, None]]:
    tokens = [m.span() for m in TOKEN_RE.finditer(text)]
    ends = [e for _, e in tokens]  # every boundary is a token's end: it follows a character that is not a space
    pieces: list[tuple[int, int, None]] = []
    first, done = 0, 0  # done: the first token not yet in any chunk
    overlapped = False  # whether first repeats whole sentences of the chunk before
    while first < len(tokens):
        limit = min(first + size, len(tokens)) - 1
        if limit == len(tokens) - 1:
            pieces.append((tokens[first][0], tokens[limit][1], None))
            break
        cut = last_boundary(text, tokens[max(first, done)][0], tokens[limit][1], len(text))
        if cut is None and overlapped:
            first, overlapped = done, False  # the next sentence does not fit after the overlap: start without it
            continue
        last = limit if cut is None else bisect_left(ends, cut)
        pieces.append((tokens[first][0], tokens[last][1], None))
        done = last + 1
        if cut is None:  # cut inside a sentence: the overlap is tokens
            first, overlapped = max(last + 1 - overlap, first + 1), False
        else:
            first = _token_overlap(text, ends, first, last, overlap)
            overlapped = first < done
    return pieces


def _token_overlap(text: str, ends: list[int], first: int, last: int, overlap: int) -> int:
    """The next window's first token after one that ended at a boundary: the earliest sentence start among
    the last ``overlap`` tokens (after ``first``), else the token after ``last``."""
    lowest = max(last + 1 - overlap, first + 1)
    if lowest > last:
        return last + 1
    for cut in boundaries(text, ends[lowest - 1] - 1, ends[last - 1], end=len(text)):
        i = bisect_left(ends, cut) + 1
        if lowest <= i <= last:
            return i
    return last + 1


# --- paragraphs -----------------------------------------------------------------------


def _paragraph_spans(text: str, lo: int, hi: int) -> list[Span]:
    """Blank-line separated paragraphs of text[lo:hi], trimmed; a fenced code block is one paragraph,
    blank lines and all."""
    fences = _fenced(text, lo, hi)
    fence_starts = [a for a, _ in fences]
    spans: list[Span] = []
    pos = lo
    for match in _PARAGRAPH_BREAK_RE.finditer(text, lo, hi):
        inside = bisect_left(fence_starts, match.start()) - 1
        if inside >= 0 and match.start() < fences[inside][1]:
            continue
        span = _trim(text, pos, match.start())
        if span:
            spans.append(span)
        pos = match.end()
    span = _trim(text, pos, hi)
    if span:
        spans.append(span)
    return spans


def _fenced(text: str, lo: int, hi: int) -> list[Span]:
    """The fenced code blocks (```` ``` ```` or ``~~~`` lines) of text[lo:hi]; one left open runs to hi."""
    blocks: list[Span] = []
    if text.find("```", lo, hi) < 0 and text.find("~~~", lo, hi) < 0:
        return blocks  # the usual case, found without the slower line-anchored search
    opened: int | None = None
    for match in _FENCE_LINE_RE.finditer(text, lo, hi):
        if opened is None:
            opened = match.start()
        else:
            blocks.append((opened, match.end()))
            opened = None
    if opened is not None:
        blocks.append((opened, hi))
    return blocks


def _split_long(text: str, paragraphs: list[Span], size: int) -> list[Span]:
    """Paragraphs longer than ``size`` cut into character windows, so every unit fits a chunk."""
    units: list[Span] = []
    for start, end in paragraphs:
        if end - start <= size:
            units.append((start, end))
        else:
            units.extend(_character_spans(text, start, end, size, 0))
    return units


def _pack(units: list[Span], size: int, carry: Callable[[list[Span]], int]) -> list[Span]:
    """Greedily pack consecutive units into spans of at most ``size`` characters.

    ``carry(units_of_chunk)`` says how many trailing units of a chunk start the next one.
    """
    spans: list[Span] = []
    first = 0
    while first < len(units):
        last = first
        while last + 1 < len(units) and units[last + 1][1] - units[first][0] <= size:
            last += 1
        spans.append((units[first][0], units[last][1]))
        if last == len(units) - 1:
            break
        first = _next_first(units, first, last, carry(units[first : last + 1]), size)
    return spans


def _next_first(units: list[Span], first: int, last: int, repeat: int, size: int) -> int:
    """First unit of the next chunk: ``repeat`` units back, fewer if the next new unit would not fit."""
    nxt = max(last + 1 - repeat, first + 1)  # always make progress
    while nxt <= last and units[last + 1][1] - units[nxt][0] > size:
        nxt += 1
    return nxt


def _paragraphs(text: str, size: int, overlap: int) -> list[tuple[int, int, None]]:
    units = _split_long(text, _paragraph_spans(text, 0, len(text)), size)
    return [(s, e, None) for s, e in _pack(units, size, lambda chunk: overlap)]


def _carry_characters(overlap: int) -> Callable[[list[Span]], int]:
    """Carry as many trailing units as fit, whole, in ``overlap`` characters."""

    def carry(chunk: list[Span]) -> int:
        count = 0
        while count < len(chunk) and chunk[-1][1] - chunk[-1 - count][0] <= overlap:
            count += 1
        return count

    return carry


# --- markdown ------------------------------------------------------------------------


class _Section(msgspec.Struct):
    start: int
    end: int
    path: str | None
    body_start: int  # after the heading line: a section with nothing there is not a chunk


def _markdown_sections(text: str) -> list[_Section]:
    """Sections between headings (outside code fences), each with its heading path."""
    sections: list[_Section] = []
    stack: list[tuple[int, str]] = []  # (level, title) of the enclosing headings
    start, body_start, path = 0, 0, None
    in_fence = False
    offset = 0
    for line in _LINE_RE.findall(text):  # only "\n" ends a line, as in the paragraph splitting
        if _FENCE_RE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING_RE.match(line.rstrip("\n"))
        if heading:
            sections.append(_Section(start, offset, path, body_start))
            level, title = len(heading.group(1)), heading.group(2).strip()
            stack = [(lv, t) for lv, t in stack if lv < level] + [(level, title)]
            start, body_start, path = offset, offset + len(line), " > ".join(t for _, t in stack)
        offset += len(line)
    sections.append(_Section(start, len(text), path, body_start))
    return [s for s in sections if _trim(text, s.body_start, s.end) is not None]


def _markdown(text: str, size: int, overlap: int) -> list[tuple[int, int, str | None]]:
    pieces: list[tuple[int, int, str | None]] = []
    for section in _markdown_sections(text):
        span = _trim(text, section.start, section.end)
        assert span is not None
        if span[1] - span[0] <= size:
            pieces.append((span[0], span[1], section.path))
            continue
        units = _split_long(text, _paragraph_spans(text, section.start, section.end), size)
        pieces.extend((s, e, section.path) for s, e in _pack(units, size, _carry_characters(overlap)))
    return pieces


_STRATEGY_FUNCS: dict[str, Callable[[str, int, int], list]] = {
    "characters": _characters,
    "tokens": _tokens,
    "markdown": _markdown,
    "paragraphs": _paragraphs,
}
