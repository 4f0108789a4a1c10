"""Where a sentence ends, and so where a chunk may end without cutting one.

A period ends a sentence only when whitespace follows and the next word does not start in lower case, and
not after an abbreviation ("Mount St. Helens", "Dr. Smith", "e.g. its"), an initial ("J. R. Tolkien"), a
dotted acronym ("the U.S. Army") or a number's label ("No. 5", "Fig. 3"); "3.5" has no whitespace after its
dot. A missed end only makes a chunk end one sentence earlier, a false one cuts a sentence, so doubtful
cases ("in the U.S. The") count as no end. ``!``, ``?`` and ``…`` end a sentence under the same rule on
the next word. The other sentence signs of :data:`dsetlog.scripts.SENTENCE_ENDS` end one whatever follows:
``。！？`` (Chinese, Japanese), ``।`` and ``॥`` (Devanagari and its neighbours), ``؟`` and ``۔`` (Arabic,
Urdu), ``։`` (Armenian), ``።`` (Ethiopic), ``။`` (Myanmar), ``។ ៕`` (Khmer), ``།`` (Tibetan). Closing quotes
and brackets after the sign belong to the sentence.
"""

from __future__ import annotations

import re

from dsetlog.scripts import SENTENCE_ENDS

# abbreviations after which a period does not end a sentence (lower case, without their final period)
ABBREVIATIONS = frozenset(
    """mr mrs ms mx dr prof sr jr st mt ft rev fr hon gen col lt sgt capt cmdr adm gov sen rep pres supt
    messrs mme mlle vs etc cf al approx ca est dept univ assn inc ltd co corp bros jan feb mar apr jun jul aug
    sep sept oct nov dec mon tue tues wed thu thur thurs fri sat sun ave blvd rd hwy viz ibid resp esp incl
    min max""".split()
)
# labels of a number ("No. 5", "Fig. 3", "pp. 10-12"): no end when a digit follows
NUMBER_LABELS = frozenset("no nos fig figs eq eqs p pp vol vols ch chap sec art para ref refs tab op".split())

_ANY_END = SENTENCE_ENDS.replace(".", "").replace("!", "").replace("?", "")  # end a sentence whatever follows
_ANY_END_SET = frozenset(_ANY_END)
_CLOSERS = "\"'”’»›)]}」』）】〕〉》"
_END_RE = re.compile(rf"[.!?…‽{_ANY_END}]+[{re.escape(_CLOSERS)}]*")
_LATIN_END_RE = re.compile(rf"[.!?…‽]+[{re.escape(_CLOSERS)}]*")  # 2-3x faster to scan for: most text needs no more
_DOTTED_RE = re.compile(r"^(?:[^\W\d_]{1,2}\.)+[^\W\d_]{1,2}$")  # U.S, e.g, i.e, a.m, Ph.D
_OPENERS = "\"'“‘«‹([{「『（【〔〈《¿¡"
_PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t]*\n")
_NEWLINE_RE = re.compile(r"\n")
# a line that starts a markdown block of its own: a heading, a list item, a table row, a code fence
_BLOCK_LINE_RE = re.compile(r"[ \t]*(?:#{1,6}[ \t]|[-*+•][ \t]|\d{1,3}[.)][ \t]|\||```|~~~)")


def sentence_ends(text: str, lo: int = 0, hi: int | None = None, *, end: int | None = None) -> list[int]:
    """Offsets just after each sentence end in ``text[lo:hi]`` (after its sign and closing quotes), in order.

    ``end`` (``hi`` by default) is where the text ends: what follows a sign is read up to there, so a piece
    of a longer text gives the ends the whole text has in that piece."""
    hi = len(text) if hi is None else hi
    end = hi if end is None else end
    scan = max(0, lo - 16)  # a sign's run or its closers may begin before lo
    other_scripts = not text[scan:hi].isascii() and any(text.find(sign, scan, hi) >= 0 for sign in _ANY_END)
    regex = _END_RE if other_scripts else _LATIN_END_RE
    ends: list[int] = []
    for match in regex.finditer(text, scan, hi):
        start, stop = match.span()
        if stop == hi and hi < end:
            stop = regex.match(text, start, end).end()  # type: ignore[union-attr]  # its closers may go on
        if not lo < stop <= hi:
            continue
        sign = text[start:stop].rstrip(_CLOSERS)
        if (other_scripts and not _ANY_END_SET.isdisjoint(sign)) or _is_end(text, sign, start, stop, end):
            ends.append(stop)
    return ends


def ends_sentence(text: str) -> bool:
    """Whether ``text`` (a line, say) ends with a sentence end."""
    stripped = text.rstrip()
    ends = sentence_ends(stripped)
    return bool(ends) and ends[-1] == len(stripped)


def _is_end(text: str, sign: str, start: int, end: int, hi: int) -> bool:
    after = end
    while after < hi and text[after].isspace():
        after += 1
    if after == end and after < hi:
        return False  # "3.5", "example.com", "?!x": no space after the sign
    nxt = text[after] if after < hi else ""  # "": the end of the text
    if nxt.islower():
        return False
    if sign != ".":
        return True  # "!", "?", "...", "…" before a word that is not lower case
    return not _abbreviation(text, start, nxt)


def _abbreviation(text: str, dot: int, nxt: str) -> bool:
    """Whether the period at ``dot`` closes an abbreviation, an initial or a list number rather than a sentence."""
    floor = max(0, dot - 40)
    begin = max(text.rfind(" ", floor, dot), text.rfind("\n", floor, dot), text.rfind("\t", floor, dot), floor - 1) + 1
    word = text[begin:dot].lstrip(_OPENERS)
    if not word or any(ch.isspace() for ch in word):  # another kind of space (no-break, ideographic)
        word = re.split(r"\s", word)[-1] if word else word
    if not word:
        return False
    low = word.lower()
    if low in ABBREVIATIONS or ("." in word and _DOTTED_RE.match(word)):
        return True
    if low in NUMBER_LABELS and nxt.isdigit():
        return True
    if len(word) == 1 and word.isalpha() and (word.isupper() or word.islower()):
        return True  # an initial: "J. R. Tolkien"
    if word.isdigit() and len(word) <= 3:
        line_start = text.rfind("\n", 0, begin) + 1
        return not text[line_start:begin].strip()  # "1. Item": a numbered list's marker
    return False


def boundaries(text: str, lo: int = 0, hi: int | None = None, *, end: int | None = None) -> list[int]:
    """Where a chunk may end without cutting a sentence, in (lo, hi] and in order: sentence ends, paragraph
    breaks (blank lines) and the line ends around markdown blocks (headings, list items, table rows,
    fences). Each is the offset after the last non-space character before the break. ``end`` is where the
    text ends, as for :func:`sentence_ends`."""
    hi = len(text) if hi is None else hi
    end = hi if end is None else end
    cuts = set(sentence_ends(text, lo, hi, end=end))
    reach = hi  # a break whose cut is at most hi lies in the whitespace up to the first character after hi
    while reach < end and text[reach].isspace():
        reach += 1
    for match in _PARAGRAPH_BREAK_RE.finditer(text, lo, reach):
        cuts.add(_trimmed(text, match.start()))
    for match in _NEWLINE_RE.finditer(text, lo, reach):
        at = match.start()
        line_start = text.rfind("\n", 0, at) + 1
        if _BLOCK_LINE_RE.match(text, at + 1, end) or _BLOCK_LINE_RE.match(text, line_start, at):
            cuts.add(_trimmed(text, at))
    return sorted(cut for cut in cuts if lo < cut <= hi)


def last_boundary(text: str, after: int, limit: int, end: int) -> int | None:
    """The last boundary in (after, limit] of a text ending at ``end``, or None: read back from ``limit`` a
    piece at a time, so a window costs what its last sentences cost, not its length."""
    hi = limit
    while hi > after:
        lo = max(after, hi - _PIECE)
        cuts = boundaries(text, lo, hi, end=end)
        if cuts:
            return cuts[-1]
        hi = lo
    return None


_PIECE = 256


def _trimmed(text: str, at: int) -> int:
    while at > 0 and text[at - 1].isspace():
        at -= 1
    return at
