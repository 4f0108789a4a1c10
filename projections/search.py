"""The search index: which texts of which entries hold which words, kept as Arrow segment files.

A ``q=`` search (``EntryIndex``) finds the entries whose question or answer holds the needle where a word
starts (case-insensitive): "insulin" finds "Insulin resistance" and "insulinoma", "sulin" finds neither, and
"fact 12?" finds "... a fact 12? ...". In scripts written without spaces between words (Chinese, Japanese,
Thai, Lao, Khmer, Myanmar) every character starts a word, so "光合" finds "植物的光合作用".

The read model keeps no text, so without an index a search reads every text of the dataset from the log
(~9 us an entry: 45 s at 5M entries). This index is a projection of the log like the others, and a cache like
the snapshot, in ``<data>/snapshots/search/``. Each line of the log that writes an entry's question or answer
(EntryGenerated, EntryEdited, EntryRegenerated, RevisionRestored) is its dataset's next *line*, numbered from 0;
a text is ``line * 2 + field`` (0 the question, 1 the answer): its *code*. For each dataset and word the index
keeps the codes of the texts holding that word, and the start in the log of each line. A line is current when
an entry's ``question_at`` / ``answer_at`` still points at it; lines an edit replaced stay in the index and
simply name no entry, so the index only grows and is never wrong.

It is kept in segments (:mod:`projections.segments`), each one Arrow IPC file of the lines of a stretch of the log (read memory-mapped, no
copy): a row per (dataset, word), sorted, holding its codes as offsets from the segment's first line of that
dataset, and a row per dataset with the word "" holding its lines' starts. A search takes, in each segment,
the rows of the needle's words (its last word as a prefix: every row from it to the next word), marks their
codes in a mask of the segment's texts (Arrow's scatter, a cache-sized array), and joins the segments' masks:
the dataset's texts holding the words, one bit each (:class:`Hits`). ``manifest.json`` names the segments and
records the last record they hold (seq, end offset, crc); when the log no longer has that record (a repair
rewrote it) the index is dropped and built again. Each catch-up writes one segment of at most
``COMMIT_BYTES`` of log, and ``MERGE_FANOUT`` segments of one size are merged into one (no more than
``MERGE_MAX_LINES`` lines), so a log of any length has a few dozen segments.

:meth:`SearchIndex.hits` gives the texts whose words match the needle's up to where the index reaches; entries
whose texts are past that are searched by reading them (the caller's tail). The words are a superset test: a
needle of more than one word, or with punctuation, is checked on the text itself by :func:`matcher`, which is
the definition; a needle that is one word is settled by the words alone, as texts and needles are split into
words the same way (:func:`words`).

Writers (a server's background thread, a search that finds a short tail to add) take ``lock`` in the index's
directory, so processes sharing a data dir can both keep it; readers need no lock (files are written whole and
renamed into place, and a merged segment is deleted only after the manifest that replaces it). Any failure to
read or write it (a read-only or full disk) turns the index off for that process: a search then reads the
texts, which is slower and exactly as right.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
import unicodedata
import uuid
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Union

import msgspec
import portalocker
import pyarrow as pa

from dsetlog.store.errors import LogError
from dsetlog.store.events import (
    EVENT_TYPES,
    EntryEdited,
    EntryGenerated,
    EntryRegenerated,
    Event,
    RevisionRestored,
)
from dsetlog.store.layout import Recorded
from dsetlog.store.scan import file_identity, read_located, record_ends_at
from projections.segments import SCHEMA, Part, Segment, holding, lists_of, merge, packed, put
from projections.snapshot import SNAPSHOT_DIR

_log = logging.getLogger(__name__)

SEARCH_DIR = "search"  # in the snapshot dir: a cache
OLD_SEARCH_NAME = "search.sqlite3"  # the SQLite index of earlier versions: deleted when this one is made
SEARCH_FORMAT = 3  # of the manifest, the segments and the words they keep: another one is built again
COMMIT_BYTES = 16 << 20  # of log per segment written: a search waits at most one of them for the lock
MERGE_FANOUT = 8  # this many segments of one size (within a factor of MERGE_FANOUT) are merged into one
MERGE_MAX_LINES = 1 << 22  # nor beyond this many lines (a search's per-segment work stays small against its bits)

# Scripts written without spaces between words: each character is indexed (and searched) as a word.
_SPACELESS = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0003134f]")
# what a word is made of: letters, numbers, marks, private use (L*, N*, M*, Co), as SQLite's unicode61 has it
_WORD_CATEGORIES = frozenset("LNM")
_ASCII_WORD = re.compile(r"[a-z0-9]+")  # the same, of a casefolded ASCII text


def _in_word(c: str) -> bool:
    if c < "\x80":
        return c.isalnum()
    cat = unicodedata.category(c)
    return cat[0] in _WORD_CATEGORIES or cat == "Co"


@functools.cache
def _word() -> re.Pattern[str]:
    r"""A word (a run of :func:`_in_word` characters) as a regular expression: ``[^\W_]`` is L* and N*, and the
    marks and private-use characters it leaves out are listed (found once, ~0.3 s, on the first non-ASCII text)."""
    letters = re.compile(r"[^\W_]")
    extra, start = [], None
    for cp in range(sys.maxunicode + 2):
        more = cp <= sys.maxunicode and not letters.match(c := chr(cp)) and _in_word(c)
        if more and start is None:
            start = cp
        elif not more and start is not None:
            extra.append(re.escape(chr(start)) + ("" if cp - 1 == start else "-" + re.escape(chr(cp - 1))))
            start = None
    return re.compile(r"(?:[^\W_]|[" + "".join(extra) + "])+")


def _spaced(text: str) -> str:
    """A casefolded text as it is split into words: a space around each character of a spaceless script."""
    return _SPACELESS.sub(r" \g<0> ", text) if _SPACELESS.search(text) else text


def words(folded: str) -> list[str]:
    """The words of a casefolded needle or text, in order: what the index keeps of a text and looks up of a
    needle (one function, so the two always agree)."""
    if folded.isascii():
        return _ASCII_WORD.findall(folded)
    return _word().findall(_spaced(folded))


def matcher(needle: str) -> Callable[[str], bool]:
    """Whether a text holds the (casefolded) needle where a word starts: the meaning of a search."""
    first = needle[:1]
    free = not first or not _in_word(first) or bool(_SPACELESS.match(first))

    def matches(text: str) -> bool:
        text = text.casefold()
        at = text.find(needle)
        while at >= 0:
            if free or at == 0:
                return True
            before = text[at - 1]
            if not _in_word(before) or _SPACELESS.match(before):
                return True
            at = text.find(needle, at + 1)
        return False

    return matches


def needs_check(needle: str) -> bool:
    """False when the index's hits are exactly the matches: the (casefolded) needle is one word, which a text
    holds where a word starts just when one of its words starts with it."""
    return words(needle) != [needle]


# -- what indexing decodes: the entry texts of the four content events, nothing of any other event ------------

_CONTENT = (EntryGenerated, EntryEdited, EntryRegenerated, RevisionRestored)
_TEXT_FIELDS = [("entry_id", str, ""), ("dataset_id", str, ""), ("question", Union[str, None], None),  # noqa: UP007
                ("answer", Union[str, None], None)]  # noqa: UP007


def _texts_only(cls: type[Event]) -> type[Event]:
    # the same name, so the same tag; msgspec skips every field it does not declare
    fields = _TEXT_FIELDS if cls in _CONTENT else []
    return msgspec.defstruct(cls.__name__, fields, bases=(Event,), module=__name__, frozen=True, kw_only=True)


_TextEvent = Union[tuple(_texts_only(cls) for cls in EVENT_TYPES)]  # type: ignore[valid-type]  # noqa: UP007
_CONTENT_NAMES = frozenset(cls.__name__ for cls in _CONTENT)


class _TextRecorded(Recorded, frozen=True):
    event: _TextEvent  # type: ignore[valid-type]


_decoder = msgspec.json.Decoder(_TextRecorded)


# -- the files -------------------------------------------------------------------------------------------------

class _Manifest(msgspec.Struct):
    format: int
    build: str  # made anew with each index built from the start: the lines it numbers are its own
    seq: int = 0  # the last record indexed
    offset: int = 0  # where it ends
    crc: int = 0
    lines: dict[str, int] = {}  # each dataset's lines indexed
    segments: list[Segment] = []


class Hits(NamedTuple):
    """A search's hits in one dataset, of every line before ``reach`` (where the index ends): ``mask[code + 1]``
    is whether the text of that code holds the needle's words (``mask[0]``, always False, is what an entry's text
    not in the index looks up, wherever the index has grown to); ``starts`` each line's start in the log;
    ``build`` the index's identity (another numbers its lines otherwise)."""

    reach: int
    build: str
    starts: pa.Array  # int64, a line's start
    mask: pa.Array  # bool, by code


class SearchIndex:
    """The data dir's search index (see the module's description). Safe to share between threads."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.dir = data_dir / SNAPSHOT_DIR / SEARCH_DIR
        self.path = self.dir / "manifest.json"
        self.log = log
        self._lock = threading.Lock()
        self.off = False  # a failure turned it off
        self.known_reach = 0  # the reach last read or made here: for a status, without waiting for the lock
        self._stopped: tuple[int, int, int] | None = None  # the log's identity when a bad line stopped it
        self._segments: dict[str, pa.Table] = {}  # open, by name
        self._starts: dict[tuple[str, str], pa.Array] = {}  # (build, dataset) -> its lines' starts, as last joined

    def _off(self, exc: BaseException) -> None:
        _log.warning("search index %s is off (searches read the texts instead): %s", self.dir, exc)
        self.off = True
        self.close()

    def close(self) -> None:
        self._segments.clear()
        self._starts.clear()

    def _read_manifest(self) -> _Manifest | None:
        """The manifest as the file has it now (read each time: a few kB; a replaced file may have the old one's
        inode, size and time); None: no index of this version."""
        try:
            manifest = msgspec.json.decode(self.path.read_bytes(), type=_Manifest)
        except FileNotFoundError:
            return None
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None  # not one of this version's: built again
        if manifest.format != SEARCH_FORMAT:
            return None
        names = {s.name for s in manifest.segments}
        for name in [n for n in self._segments if n not in names]:
            del self._segments[name]
        return manifest

    def _segment(self, name: str) -> pa.Table:
        """A segment, memory-mapped (kept open: searches touch only their words' pages)."""
        found = self._segments.get(name)
        if found is None:
            found = self._segments[name] = pa.ipc.open_file(pa.memory_map(str(self.dir / name))).read_all()
        return found

    # -- keeping it caught up ------------------------------------------------------------------

    def reach(self) -> int:
        """Where in the log the index ends (0: nothing indexed, or no index)."""
        if self.off:
            return 0
        with self._lock:
            try:
                manifest = self._read_manifest()
            except OSError as exc:
                self._off(exc)
                return 0
            self.known_reach = 0 if manifest is None else manifest.offset
            return self.known_reach

    def catch_up(self, *, limit: int | None = None) -> int:
        """Index what the log holds past the index (with ``limit``, segments until about that many bytes are
        indexed); where the index ends now."""
        done, reach = 0, self.known_reach
        if self._stopped is not None and self._stopped == file_identity(self.log):
            return reach  # still the log with the bad line
        while limit is None or done < limit:
            if self.off:
                return 0
            with self._lock:
                try:
                    self.dir.mkdir(parents=True, exist_ok=True)
                    with portalocker.Lock(str(self.dir / "lock"), mode="a", timeout=600):
                        reach, more = self._index_some()
                except (OSError, portalocker.LockException, pa.ArrowException) as exc:
                    self._off(exc)
                    return 0
                except LogError as exc:  # a bad line: the index stops before it, as a replay does, until the
                    # log is another (a repair): entries past it are searched by reading their texts
                    _log.warning("search index %s stops before a bad line of the log: %s", self.dir, exc)
                    self._stopped = file_identity(self.log)
                    return self.known_reach
                self.known_reach = reach
            if not more:
                break
            done += more
        return reach

    def _index_some(self) -> tuple[int, int]:
        """One segment's worth, under the writers' lock: (the reach after it, bytes indexed)."""
        for left in self.dir.glob("*.tmp"):  # of a writer killed as it wrote (no other writes: the lock is ours)
            left.unlink(missing_ok=True)
        manifest = self._read_manifest()
        if manifest is not None and manifest.offset and not record_ends_at(
                self.log, manifest.offset, seq=manifest.seq, crc=manifest.crc):
            _log.info("search index %s: the log changed under it; building it again", self.dir)
            manifest = None
        if manifest is None:
            manifest = self._start_over()
        adding = _Adding(manifest.lines)
        offset, last = manifest.offset, None
        # a segment's worth of log (or, when one record is longer than that, that record)
        for end in (offset + COMMIT_BYTES, None):
            try:
                for recs, bounds in read_located(self.log, offset=offset, seq=manifest.seq, end=end,
                                                 decoder=_decoder):
                    adding.add(recs, bounds)
                    last, offset = recs[-1], bounds[-1]
                    if end is None:
                        break
            except FileNotFoundError:
                break  # no log yet
            if last is not None:
                break
        if last is None:
            return manifest.offset, 0
        done = offset - manifest.offset
        segments = list(manifest.segments)
        if adding.lines:
            segments.append(self._write(lambda writer: (put(writer, adding.table()), adding.parts())[1]))
        segments, dropped = self._merged(segments)
        lines = dict(manifest.lines)
        lines.update(adding.next)
        self._write_manifest(_Manifest(format=SEARCH_FORMAT, build=manifest.build, seq=last.seq, offset=offset,
                                       crc=last.crc, lines=lines, segments=segments))
        for name in dropped:  # readers that read the old manifest keep their maps of these
            (self.dir / name).unlink(missing_ok=True)
        return offset, done

    def _start_over(self) -> _Manifest:
        for path in self.dir.glob("*.arrow"):
            path.unlink()
        old = self.dir.parent / OLD_SEARCH_NAME
        for name in ("", "-wal", "-shm"):
            old.with_name(OLD_SEARCH_NAME + name).unlink(missing_ok=True)
        return _Manifest(format=SEARCH_FORMAT, build=uuid.uuid4().hex)

    def _write(self, fill: Callable[[pa.ipc.RecordBatchFileWriter], dict[str, Part]]) -> Segment:
        """A new segment file, its batches written by ``fill`` (which says what they hold)."""
        name = f"{uuid.uuid4().hex}.arrow"
        tmp = self.dir / (name + ".tmp")
        try:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
                parts = fill(writer)
            tmp.rename(self.dir / name)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk keeps no half a file
            raise
        return Segment(name=name, lines=sum(p.lines for p in parts.values()), parts=parts)

    def _write_manifest(self, manifest: _Manifest) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_bytes(msgspec.json.encode(manifest))
            tmp.rename(self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _merged(self, segments: list[Segment]) -> tuple[list[Segment], list[str]]:
        """The segments with their last ``MERGE_FANOUT`` of one size merged, while there are (the names merged
        away)."""
        dropped: list[str] = []
        while len(segments) >= MERGE_FANOUT:
            last = segments[-MERGE_FANOUT:]
            sizes = [max(1, s.lines) for s in last]
            if max(sizes) > MERGE_FANOUT * min(sizes) or sum(sizes) > MERGE_MAX_LINES:
                break
            # mapped for the merge only, not kept with the maps searches use: its pages are let go with it
            tables = [pa.ipc.open_file(pa.memory_map(str(self.dir / s.name))).read_all() for s in last]
            merged = self._write(lambda writer: merge(writer, tables, last))  # noqa: B023 (called at once)
            segments = [*segments[:-MERGE_FANOUT], merged]
            dropped += [s.name for s in last]
        return segments, dropped

    # -- searching ------------------------------------------------------------------------------

    def hits(self, dataset_id: str, needle: str) -> Hits | None:
        """The texts of this dataset holding every word of the (casefolded) needle (its last as a prefix); None
        when the needle has no words, or there is no index (the caller reads the texts)."""
        terms = words(needle)
        if not terms or self.off:
            return None
        prefix = _in_word(needle[-1]) and not _SPACELESS.match(needle[-1])  # the text's word may go on
        with self._lock:
            for attempt in range(3):
                try:
                    manifest = self._read_manifest()
                    if manifest is None:
                        return None
                    parts = [(self._segment(s.name), s.parts[dataset_id]) for s in manifest.segments
                             if dataset_id in s.parts]
                    break
                except FileNotFoundError:  # merged away by another process since its manifest was read
                    if attempt == 2:
                        return None
                except (OSError, pa.ArrowException) as exc:
                    self._off(exc)
                    return None
            try:
                masks = [holding(table, part, terms, prefix) for table, part in parts]
                starts = self._starts_of(manifest.build, dataset_id, parts)
            except pa.ArrowException as exc:
                self._off(exc)
                return None
        return Hits(manifest.offset, manifest.build, starts, pa.concat_arrays([pa.array([False]), *masks]))

    def _starts_of(self, build: str, dataset_id: str, parts: list[tuple[pa.Table, Part]]) -> pa.Array:
        key = (build, dataset_id)
        lines = sum(part.lines for _, part in parts)
        found = self._starts.get(key)
        if found is None or len(found) != lines:
            found = self._starts[key] = pa.concat_arrays(
                [pa.array([], pa.int64()), *(table["starts"][part.lo].values for table, part in parts)])
        return found


class _Adding:
    """The lines of one new segment, as the log's records are read: each dataset's lines' starts and, for each
    word, the codes of its texts (from the dataset's first line in the segment)."""

    def __init__(self, lines: dict[str, int]) -> None:
        self.first = dict(lines)  # each dataset's first line here (lines indexed before)
        self.next = dict(lines)
        self.starts: dict[str, array[int]] = {}
        self.codes: dict[str, dict[str, array[int]]] = {}
        self.lines = 0

    def add(self, recs: list[Any], bounds: list[int]) -> None:
        for i, rec in enumerate(recs):
            ev = rec.event
            if ev.__class__.__name__ not in _CONTENT_NAMES or not ev.entry_id:
                continue
            q, a = ev.question, ev.answer
            if q is None and a is None:
                continue  # an edit of the category or feedback only
            ds = ev.dataset_id
            starts = self.starts.get(ds)
            if starts is None:
                starts = self.starts[ds] = array("q")
                self.codes[ds] = {}
                self.first.setdefault(ds, 0)
            code = 2 * len(starts)
            starts.append(bounds[i])
            codes = self.codes[ds]
            for field, text in ((0, q), (1, a)):
                if text:
                    for word in set(words(text.casefold())):
                        held = codes.get(word)
                        if held is None:
                            codes[word] = array("i", (code + field,))
                        else:
                            held.append(code + field)
            self.lines += 1
        for ds, starts in self.starts.items():
            self.next[ds] = self.first[ds] + len(starts)

    def parts(self) -> dict[str, Part]:
        out, row = {}, 0
        for ds in sorted(self.starts):
            n = len(self.codes[ds]) + 1
            out[ds] = Part(row, row + n, self.first[ds], len(self.starts[ds]))
            row += n
        return out

    def table(self) -> pa.Table:
        datasets, names, code_lengths, held, start_lengths = [], [], [], [], []
        for ds in sorted(self.starts):
            codes = self.codes[ds]
            order = sorted(codes)
            datasets += [ds] * (len(order) + 1)
            names += ["", *order]
            code_lengths += [0, *(len(codes[w]) for w in order)]
            held += [codes[w] for w in order]
            start_lengths += [len(self.starts[ds]), *([0] * len(order))]
        table = pa.table([pa.array(datasets, pa.string()), pa.array(names, pa.string()),
                          lists_of(code_lengths, held, "i", pa.int32()),
                          lists_of(start_lengths, [self.starts[ds] for ds in sorted(self.starts)], "q", pa.int64()),
                          pa.nulls(len(names), pa.binary())], schema=SCHEMA)
        return packed(table, {ds: len(starts) for ds, starts in self.starts.items()})


def main(argv: list[str] | None = None) -> int:
    """``python -m projections.search DATA_DIR LOG``: bring the data dir's index up to the log, at a lower CPU
    priority (``dset serve`` runs it so: the tokenizing holds this interpreter's GIL, not the server's)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m projections.search DATA_DIR LOG", file=sys.stderr)
        return 2
    os.nice(10)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    index = SearchIndex(Path(args[0]), Path(args[1]))
    reach = index.catch_up()
    print(reach)
    return 1 if index.off else 0


if __name__ == "__main__":
    sys.exit(main())
