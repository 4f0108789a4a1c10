"""The search index: which log lines hold an entry text with these words, kept in SQLite's FTS5.

A ``q=`` search (``EntryIndex``) finds the entries whose question or answer holds the needle where a word
starts (case-insensitive): "insulin" finds "Insulin resistance" and "insulinoma", "sulin" finds neither, and
"fact 12?" finds "... a fact 12? ...". In scripts written without spaces between words (Chinese, Japanese,
Thai, Lao, Khmer, Myanmar) every character starts a word, so "光合" finds "植物的光合作用".

The read model keeps no text, so without an index a search reads every text of the dataset from the log
(~9 us an entry: 45 s at 5M entries). This index is a projection of the log like the others, and a cache like
the snapshot: ``<data>/snapshots/search.sqlite3`` maps each word of each line that writes an entry's
question or answer (EntryGenerated, EntryEdited, EntryRegenerated, RevisionRestored) to that line's start.
A line is current when an entry's ``question_at`` / ``answer_at`` still points at it; lines an edit replaced
stay in the index and simply name no entry. So the index only grows, is never wrong, and never needs a
delete (SQLite's contentless FTS5 tables cannot delete without the old text).

:meth:`SearchIndex.hits` gives the lines whose words match the needle's (its last word as a prefix) up to where
the index reaches; entries whose texts are past that are searched by reading them (the caller's tail). The
words are a superset test: a hit that is not one word-start match (the needle's punctuation, or case rules
that FTS folds differently) is checked on the text itself by :func:`matcher`, which is the definition.

The file records the last record it holds (seq, end offset, crc); when the log no longer has that record
(a repair rewrote it) the index is dropped and built again. Writers (a server's background thread, a
search that finds a short tail to add) take SQLite's write lock, so processes sharing a data dir can
both keep it. Any SQLite failure (a read-only or full disk) turns the index off for that process: a
search then reads the texts, which is slower and exactly as right.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Union

import msgspec

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
from projections.snapshot import SNAPSHOT_DIR

_log = logging.getLogger(__name__)

SEARCH_NAME = "search.sqlite3"  # in the snapshot dir: a cache
SEARCH_FORMAT = 2  # of the file's tables and of the words it keeps: another one is built again
COMMIT_BYTES = 16 << 20  # of log indexed per transaction: a search waits at most one of them for the lock

# Scripts written without spaces between words: each character is indexed (and searched) as a word.
_SPACELESS = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0003134f]")
# what FTS5's unicode61 tokenizer keeps in a word: letters, numbers, marks, private use (L*, N*, M*, Co)
_WORD_CATEGORIES = frozenset("LNM")


def _in_word(c: str) -> bool:
    if c < "\x80":
        return c.isalnum()
    cat = unicodedata.category(c)
    return cat[0] in _WORD_CATEGORIES or cat == "Co"


def _spaced(text: str) -> str:
    """A casefolded text as it is indexed: a space around each character of a spaceless script."""
    return _SPACELESS.sub(r" \g<0> ", text) if _SPACELESS.search(text) else text


def words(needle: str) -> list[str]:
    """The words of a (casefolded) needle as the index has them."""
    out, word = [], []
    for c in _spaced(needle):
        if _in_word(c):
            word.append(c)
        elif word:
            out.append("".join(word))
            word = []
    if word:
        out.append("".join(word))
    return out


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
    """False when the index's hits are exactly the matches: one ASCII word (FTS and Python fold it alike)."""
    return not (needle.isascii() and needle.isalnum())


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


class Hits(NamedTuple):
    """The starts of the lines whose question or answer holds the needle's words, with the entry each was written
    for, of every line before ``reach`` (where the index ends). Which of the two texts holds them is not kept
    (the index has no positions or columns: a third of the size, twice the speed of building)."""

    reach: int
    lines: list[tuple[int, str]]  # (line start, entry id)


class SearchIndex:
    """The data dir's search index (see the module's description). Safe to share between threads."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.path = data_dir / SNAPSHOT_DIR / SEARCH_NAME
        self.log = log
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.off = False  # an SQLite failure turned it off
        self.known_reach = 0  # the reach last read or made here: for a status, without waiting for the lock
        self._stopped: tuple[int, int, int] | None = None  # the log's identity when a bad line stopped it
        self._dataset_ids: dict[str, int] = {}  # of the current transaction (another process may rebuild the file)

    # -- the file ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is not None or self.off:
            return self._db
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a cache: a power cut loses a transaction, never sense
            db.execute("BEGIN IMMEDIATE")
            try:
                if self._format(db) != SEARCH_FORMAT:
                    _create(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._db = db
        except (sqlite3.Error, OSError) as exc:
            self._off(exc)
        return self._db

    @staticmethod
    def _format(db: sqlite3.Connection) -> int | None:
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        except sqlite3.OperationalError:
            return None  # a new file
        return None if row is None else int(row[0])

    def _off(self, exc: BaseException) -> None:
        _log.warning("search index %s is off (searches read the texts instead): %s", self.path, exc)
        self.off = True
        if self._db is not None:
            self._db.close()
            self._db = None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- keeping it caught up ------------------------------------------------------------------

    def reach(self) -> int:
        """Where in the log the index ends (0: nothing indexed, or no index)."""
        with self._lock:
            db = self._connect()
            if db is None:
                return 0
            try:
                self.known_reach = _meta(db)[1]
                return self.known_reach
            except sqlite3.Error as exc:
                self._off(exc)
                return 0

    def catch_up(self, *, limit: int | None = None) -> int:
        """Index what the log holds past the index (with ``limit``, transactions until about that many bytes
        are indexed); where the index ends now."""
        done, reach = 0, self.known_reach
        if self._stopped is not None and self._stopped == file_identity(self.log):
            return reach  # still the log with the bad line
        while limit is None or done < limit:
            with self._lock:
                db = self._connect()
                if db is None:
                    return 0
                try:
                    reach, more = self._index_some(db)
                except (sqlite3.Error, OSError) as exc:
                    self._off(exc)
                    return 0
                except LogError as exc:  # a bad line: the index stops before it, as a replay does, until the
                    # log is another (a repair): entries past it are searched by reading their texts
                    _log.warning("search index %s stops before a bad line of the log: %s", self.path, exc)
                    self._stopped = file_identity(self.log)
                    return self.known_reach
                self.known_reach = reach
            if not more:
                break
            done += more
        return reach

    def _index_some(self, db: sqlite3.Connection) -> tuple[int, int]:
        """One transaction's worth: (the reach after it, bytes indexed)."""
        db.execute("BEGIN IMMEDIATE")  # another process may be indexing too: its progress is read under the lock
        self._dataset_ids.clear()
        try:
            seq, offset, crc = _meta(db)
            if offset and not record_ends_at(self.log, offset, seq=seq, crc=crc):
                _log.info("search index %s: the log changed under it; building it again", self.path)
                _create(db)
                seq = offset = crc = 0
            start, last = offset, None
            # a transaction's worth of log (or, when one record is longer than that, that record)
            for end in (offset + COMMIT_BYTES, None):
                try:
                    for recs, bounds in read_located(self.log, offset=offset, seq=seq, end=end, decoder=_decoder):
                        self._add(db, recs, bounds)
                        last, offset = recs[-1], bounds[-1]
                        if end is None:
                            break
                except FileNotFoundError:
                    break  # no log yet
                if last is not None:
                    break
            if last is not None:
                db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                               ((last.seq, "seq"), (offset, "offset"), (last.crc, "crc")))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return offset, offset - start

    def _add(self, db: sqlite3.Connection, recs: list[Any], bounds: list[int]) -> None:
        lines, texts = [], []
        for i, rec in enumerate(recs):
            ev = rec.event
            if ev.__class__.__name__ not in _CONTENT_NAMES or not ev.entry_id:
                continue
            q, a = ev.question, ev.answer
            if q is None and a is None:
                continue  # an edit of the category or feedback only
            start = bounds[i]
            lines.append((start, self._dataset_id(db, ev.dataset_id), ev.entry_id))
            texts.append((start, "" if q is None else _spaced(q.casefold()), "" if a is None else _spaced(a.casefold())))
        if lines:
            db.executemany("INSERT INTO lines(start, dataset, entry) VALUES (?, ?, ?)", lines)
            db.executemany("INSERT INTO words(rowid, question, answer) VALUES (?, ?, ?)", texts)

    def _dataset_id(self, db: sqlite3.Connection, dataset_id: str) -> int:
        found = self._dataset_ids.get(dataset_id)
        if found is None:
            row = db.execute("SELECT id FROM datasets WHERE name = ?", (dataset_id,)).fetchone()
            if row is None:
                row = db.execute("INSERT INTO datasets(name) VALUES (?) RETURNING id", (dataset_id,)).fetchone()
            found = self._dataset_ids[dataset_id] = int(row[0])
        return found

    # -- searching ------------------------------------------------------------------------------

    def hits(self, dataset_id: str, needle: str) -> Hits | None:
        """The lines of this dataset holding every word of the (casefolded) needle (its last as a prefix) in
        their question or answer; None when the needle has no words, or there is no index (the caller reads the
        texts)."""
        terms = words(needle)
        if not terms:
            return None
        # each word a string (whatever it spells, even "and"), all of them required: words in any order
        query = " ".join(f'"{t}"' for t in terms)
        if _in_word(needle[-1]) and not _SPACELESS.match(needle[-1]):
            query += " *"  # the text's word may go on
        with self._lock:
            db = self._connect()
            if db is None:
                return None
            try:
                db.execute("BEGIN")  # one read transaction: the reach and the hits agree
                try:
                    reach = _meta(db)[1]
                    row = db.execute("SELECT id FROM datasets WHERE name = ?", (dataset_id,)).fetchone()
                    lines = [] if row is None else db.execute(
                        "SELECT l.start, l.entry FROM words JOIN lines l ON l.start = words.rowid "
                        "WHERE words MATCH ? AND l.dataset = ?", (query, row[0])).fetchall()
                finally:
                    db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._off(exc)
                return None
        return Hits(reach, lines)


def _create(db: sqlite3.Connection) -> None:
    for table in ("meta", "datasets", "lines", "words"):
        db.execute(f"DROP TABLE IF EXISTS {table}")
    db.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.executemany("INSERT INTO meta VALUES (?, ?)",
                   (("format", SEARCH_FORMAT), ("seq", 0), ("offset", 0), ("crc", 0)))
    db.execute("CREATE TABLE datasets(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
    db.execute("CREATE TABLE lines(start INTEGER PRIMARY KEY, dataset INTEGER NOT NULL, entry TEXT NOT NULL)")
    # contentless: the texts stay in the log; detail=none: which words a line holds, not where (a search
    # that needs more reads the texts); remove_diacritics 0: "cafe" is not "café", as in matcher
    db.execute("CREATE VIRTUAL TABLE words USING fts5(question, answer, content='', detail=none, "
               "tokenize='unicode61 remove_diacritics 0')")


def _meta(db: sqlite3.Connection) -> tuple[int, int, int]:
    got = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('seq', 'offset', 'crc')").fetchall())
    return got["seq"], got["offset"], got["crc"]

