"""Columns: one dataset's work items and entries as the Datasets projection keeps them, a column each.

Ten million entries kept as objects (a Struct of 30 fields, its strings, dicts, tuples, and two ids with their
dict slots each) took ~820 bytes an entry; as columns they take about a third of that, and a snapshot of them
loads by copying bytes instead of making ~35 objects an entry. What is kept per row:

* numbers in :class:`array.array` columns (refs, tokens, latency, scores, revisions, timestamps as int64
  microseconds), flags as bits of a ``bytearray``;
* strings that repeat (categories, models, prompts, runs, chunks, job ids) as codes into the dataset's
  :class:`Strings`; score components and metadata as codes into :class:`Shared` dicts (most entries of a
  dataset have one of a few);
* what few rows have (feedback, later history, set-aside revisions, duplicates, errors) in dicts by row;
* one id per work item, as a number where it has the engine's shape (:mod:`projections.itemids`). An entry's id
  is its item's digits after ``entry_`` (:func:`dsetlog.ids.entry_id_for`) and is not stored; an entry whose id
  does not follow that (a hand-made log) keeps its id in ``odd_ids``.

Views (:class:`~projections.views.EntryView`, :class:`~projections.views.ItemView`) are made from a row when
asked for: they are copies, and do not change when the model does.
"""

from __future__ import annotations

import itertools
import sys
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from typing import Any, overload

import msgspec

from projections.itemids import ID_PARTS, ODD, ItemIds, digits_of
from projections.views import EntryView, FeedbackView, ItemView, SetAside

PENDING, DONE, FAILED = "pending", "done", "failed"
STATUS_NAMES = (PENDING, DONE, FAILED)  # ItemColumns.status holds the index
SHARED_KEPT = 4096  # distinct dicts a Shared table recognises (past it, new ones are kept without sharing)
# new entries' values wait in Rows._pending up to this many: moved into the columns a few thousand at a time, the
# tuples are still in the CPU's cache (a million of them at once took twice as long)
PENDING_KEPT = 2048
COMBOS_KEPT = 4096  # combinations of an entry's strings Strings.codes remembers
NO_ENTRY = -1
# EntryColumns.flags
SIMULATED, FLAGGED, BELOW_THRESHOLD, ANALYZED = 1, 2, 4, 8
NAN = float("nan")
_BIG_ENDIAN = sys.byteorder == "big"  # a snapshot's columns are little-endian


class Strings:
    """The distinct strings (and None) of a dataset's string columns, each once, by code."""

    __slots__ = ("values", "_codes", "_combos")

    def __init__(self, values: list[str | None] | None = None) -> None:
        self.values: list[str | None] = values if values is not None else [None, ""]
        self._codes = {v: i for i, v in enumerate(self.values)}
        # the codes of the strings of recent entries, by those strings: most entries of a dataset repeat one of a
        # few (category, model, provider, ...), and one look-up of them is a quarter of a look-up each
        self._combos: dict[tuple[str | None, ...], tuple[int, ...]] = {}

    def code(self, value: str | None) -> int:
        found = self._codes.get(value)
        if found is None:
            found = self._codes[value] = len(self.values)
            self.values.append(value)
        return found

    def codes(self, *values: str | None) -> tuple[int, ...]:
        """:meth:`code` of each, in order (one call for the strings of a new entry)."""
        found = self._combos.get(values)
        if found is None:
            get = self._codes.get
            found = tuple(get(v) for v in values)
            if None in found:  # a string not seen before
                found = tuple(self.code(v) for v in values)
            if len(self._combos) >= COMBOS_KEPT:  # (codes never change: a combination is forgotten only for room)
                self._combos.clear()
            self._combos[values] = found  # type: ignore[assignment]
        return found  # type: ignore[return-value]


class Shared:
    """Dicts by code, equal ones shared: an entry's dicts are replaced, never changed in place (read them only)."""

    __slots__ = ("values", "_codes")

    def __init__(self, values: list[dict[str, Any]] | None = None) -> None:
        self.values: list[dict[str, Any]] = values if values is not None else [{}]
        self._codes: dict[tuple[Any, ...], int] = {}
        for i, d in enumerate(self.values):
            self._key(d, i)

    def _key(self, d: dict[str, Any], i: int) -> None:
        if len(self._codes) < SHARED_KEPT:
            try:
                self._codes.setdefault(tuple(d.items()), i)
            except TypeError:  # a list or dict among the values: not shared
                pass

    def code(self, d: dict[str, Any]) -> int:
        try:
            found = self._codes.get(tuple(d.items()))
        except TypeError:
            found = None
        if found is None:
            found = len(self.values)
            self.values.append(d)
            self._key(d, found)
        return found


# --- timestamps --------------------------------------------------------------

_EPOCH = date(1970, 1, 1).toordinal()
_day_of: dict[str, int] = {}
_day_text: dict[int, str] = {}


class Times:
    """A record's timestamp (``2026-12-03T06:17:55.123456Z``, dsetlog.store.layout) as int64 microseconds, and
    back to the very same text. One that would not come back the same is kept as text, its code negative."""

    __slots__ = ("odd", "_last", "_last_code")

    def __init__(self, odd: list[str] | None = None) -> None:
        self.odd: list[str] = odd if odd is not None else []
        self._last: tuple[int, str] = (0, "")
        self._last_code: tuple[str | None, int] = (None, 0)  # the records of one append share their time

    def code(self, ts: str) -> int:
        if self._last_code[0] == ts:
            return self._last_code[1]
        micros = _micros(ts)
        if micros is None or self.text(micros) != ts:
            self.odd.append(ts)
            micros = -len(self.odd)
        self._last_code = (ts, micros)
        return micros

    def text(self, micros: int) -> str:
        if micros < 0:
            return self.odd[-micros - 1]
        last = self._last
        if last[0] == micros:
            return last[1]
        seconds, us = divmod(micros, 1_000_000)
        day, s = divmod(seconds, 86400)
        day_text = _day_text.get(day)
        if day_text is None:
            day_text = _day_text[day] = date.fromordinal(day + _EPOCH).isoformat()
        h, s = divmod(s, 3600)
        m, s = divmod(s, 60)
        text = f"{day_text}T{h:02d}:{m:02d}:{s:02d}.{us:06d}Z"
        self._last = (micros, text)
        return text


def _micros(ts: str) -> int | None:
    if len(ts) != 27 or ts[10] != "T" or ts[19] != "." or ts[26] != "Z" or not ts.isascii():
        return None
    day = _day_of.get(ts[:10])
    try:
        if day is None:
            day = _day_of[ts[:10]] = date.fromisoformat(ts[:10]).toordinal() - _EPOCH
        seconds = int(ts[11:13]) * 3600 + int(ts[14:16]) * 60 + int(ts[17:19])
        micros = int(ts[20:26])
    except ValueError:
        return None
    if day < 0:
        return None
    return (day * 86400 + seconds) * 1_000_000 + micros


# --- the columns -------------------------------------------------------------


class ItemColumns:
    """Work items in queue order: row ``r`` is the ``r``-th item queued (or first named)."""

    __slots__ = ("ids", "question_at", "row", "status", "attempts", "source", "queued", "entry", "last_error")

    def __init__(self, *, complete: bool = False) -> None:
        self.ids = ItemIds(complete=complete)  # row -> id, id -> row (complete: see ItemIds)
        self.question_at = array("q")  # the ref of the record that queued it (0: never queued)
        self.row = array("q")
        self.status = bytearray()  # index into STATUS_NAMES
        self.attempts = array("i")
        self.source = array("i")  # Strings code
        self.queued = bytearray()  # 0 while only other events (attempts, an entry) have named it
        self.entry = array("i")  # its entry's row, or NO_ENTRY
        self.last_error: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, item_id: str, question_at: int, row: int, source: int, queued: bool) -> int:
        r = self.ids.add(item_id)
        self.question_at.append(question_at)
        self.row.append(row)
        self.status.append(0)
        self.attempts.append(0)
        self.source.append(source)
        self.queued.append(queued)
        self.entry.append(NO_ENTRY)
        return r


class EntryColumns:
    """Entries in the order they were generated; ``item[r]`` is the row of entry ``r``'s work item."""

    __slots__ = ("item", "question_at", "answer_at", "reasoning_at", "category", "model", "provider", "prompt_name",
                 "prompt_hash", "source_chunk", "difficulty", "run_id", "regeneration_job_id", "flags",
                 "prompt_tokens", "completion_tokens", "latency_ms", "quality_score", "quality", "metadata",
                 "revision", "created_at", "first_seq", "updated_at", "history", "feedback", "duplicate_of",
                 "set_aside", "odd_ids", "odd_rows")

    def __init__(self) -> None:
        self.item = array("i")
        self.question_at, self.answer_at, self.reasoning_at = array("q"), array("q"), array("q")
        # Strings codes
        self.category, self.model, self.provider = array("i"), array("i"), array("i")
        self.prompt_name, self.prompt_hash, self.source_chunk = array("i"), array("i"), array("i")
        self.difficulty, self.run_id, self.regeneration_job_id = array("i"), array("i"), array("i")
        self.flags = bytearray()
        self.prompt_tokens, self.completion_tokens = array("q"), array("q")
        self.latency_ms = array("d")
        self.quality_score = array("d")  # NaN: none
        self.quality, self.metadata = array("i"), array("i")  # Shared codes
        self.revision = array("i")
        self.created_at = array("q")  # Times codes
        self.first_seq = array("q")  # the seq of its EntryGenerated: the first of its history
        # by row, for the rows that have them
        self.updated_at: dict[int, int] = {}  # when it differs from created_at
        self.history: dict[int, tuple[int, ...]] = {}  # seqs after the first
        self.feedback: dict[int, FeedbackView] = {}
        self.duplicate_of: dict[int, str] = {}
        self.set_aside: dict[int, SetAside] = {}
        self.odd_ids: dict[int, str] = {}  # ids that are not entry_id_for(their item)
        self.odd_rows: dict[str, int] = {}  # and their rows (not in a snapshot: made from odd_ids)

    def __len__(self) -> int:
        return len(self.item)


class Views(Sequence[EntryView]):
    """Views of these entry rows of a dataset, made as they are read (a list of millions of views would take
    gigabytes): the values a view shows are the model's when it is made."""

    __slots__ = ("rows", "order")

    def __init__(self, rows: Rows, order: Sequence[int]) -> None:
        self.rows, self.order = rows, order  # an array of rows, or a range (the rows in their own order)

    def __len__(self) -> int:
        return len(self.order)

    @overload
    def __getitem__(self, i: int) -> EntryView: ...
    @overload
    def __getitem__(self, i: slice) -> Views: ...
    def __getitem__(self, i: int | slice) -> EntryView | Views:
        if isinstance(i, slice):
            return Views(self.rows, self.order[i])
        return self.rows.entry_view(self.order[i])

    def __iter__(self) -> Iterator[EntryView]:
        views, order = self.rows.entry_views, self.order
        for start in range(0, len(order), 1024):
            yield from views(order[start : start + 1024])

    def ids(self) -> Iterator[str]:
        entry_id = self.rows.entry_id
        return (entry_id(r) for r in self.order)


_NO_TEXTS = itertools.repeat(())  # entry_views without texts

# the columns an entry's first record fills, in this order (Rows.add_entry's values)
NEW_ENTRY_COLUMNS = ("question_at", "answer_at", "reasoning_at", "category", "model", "provider", "prompt_name",
                     "prompt_hash", "source_chunk", "difficulty", "run_id", "regeneration_job_id", "flags",
                     "prompt_tokens", "completion_tokens", "latency_ms", "quality_score", "quality", "metadata",
                     "revision", "created_at", "first_seq")
# the columns a snapshot keeps as raw bytes, in this order
_ITEM_ARRAYS = ("question_at", "row", "attempts", "source", "entry")
_ITEM_BYTES = ("status", "queued")
_ENTRY_ARRAYS = ("item", "question_at", "answer_at", "reasoning_at", "category", "model", "provider", "prompt_name",
                 "prompt_hash", "source_chunk", "difficulty", "run_id", "regeneration_job_id", "prompt_tokens",
                 "completion_tokens", "latency_ms", "quality_score", "quality", "metadata", "revision", "created_at",
                 "first_seq")
_ENTRY_BYTES = ("flags",)
# parts of raw bytes: the ItemIds arrays, then the columns
COLUMN_PARTS = ID_PARTS + len(_ITEM_ARRAYS) + len(_ITEM_BYTES) + len(_ENTRY_ARRAYS) + len(_ENTRY_BYTES)


class Head(msgspec.Struct, array_like=True):
    """What a snapshot keeps of a dataset's columns besides their raw bytes."""

    items: int
    entries: int
    strings: list[str | None]
    qualities: list[dict[str, float]]
    metadata: list[dict[str, Any]]
    odd_times: list[str]
    last_error: dict[int, str]
    updated_at: dict[int, int]
    history: dict[int, tuple[int, ...]]
    feedback: dict[int, FeedbackView]
    duplicate_of: dict[int, str]
    set_aside: dict[int, SetAside]
    odd_ids: dict[int, str]
    prefixes: list[str]  # ItemIds.prefixes
    shared_digits: bool  # ItemIds.shared_digits
    in_item_order: bool


_head_decoder = msgspec.msgpack.Decoder(Head)
_ids_decoder = msgspec.msgpack.Decoder(list[str])
_encoder = msgspec.msgpack.Encoder()


class Rows:
    """A dataset's work items and entries: the columns, their tables, and the views made from them."""

    __slots__ = ("dataset_id", "items", "_entries", "_pending", "_pending_lock", "strings", "qualities", "metadata",
                 "times", "in_item_order", "_order")

    def __init__(self, dataset_id: str, *, bulk: bool = False) -> None:
        """``bulk``: made by a bulk fold (Projection.bulk), which keeps every id by its string until it settles."""
        self.dataset_id = dataset_id
        self.items = ItemColumns(complete=bulk)
        self._entries = EntryColumns()
        # new entries' values of NEW_ENTRY_COLUMNS, not yet in them: a replay adds millions, and one tuple each,
        # moved into the columns by C loops when they are next read, costs a fraction of 22 appends each
        self._pending: list[tuple[int | float, ...]] = []
        # a reader may flush them without the model's lock (an export of rows taken under it, while folds go on)
        self._pending_lock = threading.Lock()
        self.strings = Strings()
        self.qualities = Shared()
        self.metadata = Shared()
        self.times = Times()
        self.in_item_order = True  # entries were generated in their items' order (the order is then range)
        self._order: array[int] | None = None

    @property
    def entries(self) -> EntryColumns:
        if self._pending:
            self._flush()
        return self._entries

    def _flush(self) -> None:
        with self._pending_lock:
            e, pending = self._entries, self._pending
            if pending:
                for name, values in zip(NEW_ENTRY_COLUMNS, zip(*pending, strict=True), strict=True):
                    column = getattr(e, name)
                    if type(column) is array:
                        column.fromlist(list(values))  # (which sizes the array once: extend does not)
                    else:
                        column.extend(values)
                pending.clear()

    # -- ids -------------------------------------------------------------------
    # (these read only the columns an entry's row has at once: items, and the entries' item and ids)

    def entry_row(self, entry_id: str) -> int | None:
        """The row of the entry with this id, or None."""
        if entry_id.startswith("entry_") and (value := digits_of(entry_id[6:])) is not None:
            entry, odd = self.items.entry, self._entries.odd_ids
            for item in self.items.ids.by_digits(value):
                if (r := entry[item]) != NO_ENTRY and r not in odd:
                    return r
        return self._entries.odd_rows.get(entry_id)

    def entry_id(self, r: int) -> str:
        e = self._entries
        odd = e.odd_ids.get(r) if e.odd_ids else None
        if odd is not None:
            return odd
        return f"entry_{self.items.ids.digits[e.item[r]]:016x}"

    def add_entry(self, item: int, item_id: str, entry_id: str, values: tuple[int | float, ...]) -> bool:
        """A new entry for the item at row ``item`` (``item_id``) with these values of NEW_ENTRY_COLUMNS; False
        (nothing added) when an entry has this id already."""
        ent, ids = self._entries, self.items.ids
        # the engine's entry_<the item's digits>: only an entry of an item with the same digits (another prefix)
        # or one of the ids kept as strings can have it already
        usual = (ids.prefix[item] != ODD and entry_id.startswith("entry_")
                 and entry_id[6:] == item_id.partition("_")[2])
        if entry_id in ent.odd_rows or ((ids.may_share_digits or not usual) and self.entry_row(entry_id) is not None):
            return False
        r = len(ent.item)
        if not usual:
            ent.odd_ids[r] = entry_id
            ent.odd_rows[entry_id] = r
        if r and self.in_item_order and ent.item[r - 1] > item:
            self.in_item_order = False
        with self._pending_lock:
            self._pending.append(values)  # before its row is known: a reader that sees the row finds its values
            ent.item.append(item)
        if len(self._pending) >= PENDING_KEPT:
            self._flush()
        self.items.entry[item] = r
        self._order = None
        return True

    def in_order(self) -> Sequence[int]:
        """:meth:`order`, as a range when it is the rows' own (a dataset of millions then makes no array of them)."""
        return range(len(self._entries)) if self.in_item_order else self.order()

    def order(self) -> array[int]:
        """The entries' rows in their items' queue order: the order output files keep."""
        if self.in_item_order:
            return array("i", range(len(self._entries)))
        if self._order is None:
            self._order = array("i", (r for r in self.items.entry if r != NO_ENTRY))
        return self._order

    # -- views -----------------------------------------------------------------

    def entry_view(self, r: int) -> EntryView:
        """The entry at row ``r``."""
        return self.entry_views((r,))[0]

    def entry_views(self, rows: Iterable[int], cls: type[EntryView] = EntryView,
                    texts: Iterable[tuple[str, str, str, str]] | None = None) -> list[EntryView]:
        """The entries at these rows as ``cls``: EntryView, or FullEntry with their (id, question, answer,
        reasoning) ``texts``. One loop with everything it reads bound once: an export makes millions."""
        e, s, text, item_id, entry_id = self.entries, self.strings.values, self.times.text, self.items.ids.id, \
            self.entry_id
        item, q_at, a_at, r_at, flags, scores = e.item, e.question_at, e.answer_at, e.reasoning_at, e.flags, \
            e.quality_score
        category, model, provider, name, prompt_hash, chunk, difficulty, run, regen = (
            e.category, e.model, e.provider, e.prompt_name, e.prompt_hash, e.source_chunk, e.difficulty, e.run_id,
            e.regeneration_job_id)
        prompt_tokens, completion_tokens, latency, revision, created_at, first_seq = (
            e.prompt_tokens, e.completion_tokens, e.latency_ms, e.revision, e.created_at, e.first_seq)
        qualities, metadata, quality, meta = self.qualities.values, self.metadata.values, e.quality, e.metadata
        updated_at, feedback, history, duplicate_of, set_aside = (e.updated_at, e.feedback, e.history, e.duplicate_of,
                                                                   e.set_aside)
        dataset_id, out = self.dataset_id, []
        for r, texts_of in zip(rows, texts or _NO_TEXTS, strict=False):  # (_NO_TEXTS never ends)
            f, score, created = flags[r], scores[r], created_at[r]
            fb = feedback.get(r) if feedback else None
            out.append(cls(
                texts_of[0] if texts_of else entry_id(r), dataset_id, item_id(item[r]), q_at[r], a_at[r], r_at[r], s[category[r]], s[model[r]],
                s[provider[r]], bool(f & SIMULATED), prompt_tokens[r], completion_tokens[r], latency[r], s[name[r]],
                s[prompt_hash[r]], s[chunk[r]], None if score != score else score, qualities[quality[r]],
                s[difficulty[r]], metadata[meta[r]], text(created), text(updated_at.get(r, created)), s[run[r]],
                revision[r],
                None if fb is None else FeedbackView(fb.count, list(fb.ratings), list(fb.comments), list(fb.types)),
                bool(f & FLAGGED), s[regen[r]], (first_seq[r], *history.get(r, ())), duplicate_of.get(r),
                bool(f & BELOW_THRESHOLD), bool(f & ANALYZED), set_aside.get(r), *texts_of[1:],
            ))  # type: ignore[arg-type]  # fmt: skip
        return out

    def where(self, rows: Iterable[int], *, without: int) -> array[int]:
        """Those of these entry rows that have none of the ``without`` flags."""
        flags = self.entries.flags
        return array("i", (r for r in rows if not flags[r] & without))

    def item_view(self, r: int) -> ItemView:
        it = self.items
        entry = it.entry[r]
        return ItemView(it.ids.id(r), self.dataset_id, it.question_at[r], it.row[r], STATUS_NAMES[it.status[r]],
                        it.attempts[r], it.last_error.get(r), None if entry == NO_ENTRY else self.entry_id(entry),
                        self.strings.values[it.source[r]], bool(it.queued[r]))  # type: ignore[arg-type]

    # -- snapshots -------------------------------------------------------------

    def parts(self, ids_per_part: int) -> Iterator[bytes]:
        """The columns encoded: a :class:`Head`, the item ids kept as strings in parts of ``ids_per_part``, then
        the ItemIds arrays and each column's bytes (little-endian)."""
        it, e = self.items, self.entries
        odd = it.ids.odd
        yield _encoder.encode(Head(
            len(it), len(e), self.strings.values, self.qualities.values, self.metadata.values, self.times.odd,
            it.last_error, e.updated_at, e.history, e.feedback, e.duplicate_of, e.set_aside, e.odd_ids,
            it.ids.prefixes, it.ids.shared_digits, self.in_item_order))  # fmt: skip
        for i in range(-(-len(odd) // ids_per_part)):
            yield _encoder.encode(odd[i * ids_per_part : (i + 1) * ids_per_part])
        yield from it.ids.arrays()
        for cols, arrays, raw in ((it, _ITEM_ARRAYS, _ITEM_BYTES), (e, _ENTRY_ARRAYS, _ENTRY_BYTES)):
            for name in arrays:
                column = getattr(cols, name)
                if _BIG_ENDIAN:
                    column = array(column.typecode, column)
                    column.byteswap()
                yield column.tobytes()
            for name in raw:
                yield bytes(getattr(cols, name))

    def part_count(self, ids_per_part: int) -> int:
        return 1 + -(-len(self.items.ids.odd) // ids_per_part) + COLUMN_PARTS

    @classmethod
    def decode(cls, dataset_id: str, parts: list[memoryview]) -> Rows:
        """The columns :meth:`parts` encoded (copied out of ``parts``, which may be released after)."""
        head = _head_decoder.decode(parts[0])
        rows = cls(dataset_id)
        it, e = rows.items, rows.entries
        id_parts, fixed = parts[1 : len(parts) - COLUMN_PARTS], iter(parts[len(parts) - COLUMN_PARTS :])
        odd: list[str] = []
        for raw in id_parts:
            odd += _ids_decoder.decode(raw)
        it.ids = ItemIds.from_arrays(head.prefixes, odd, [next(fixed) for _ in range(ID_PARTS)],
                                     shared_digits=head.shared_digits)
        if len(it.ids) != head.items or len(it.ids.odd_rows) != len(odd):
            raise ValueError(f"a snapshot of dataset {dataset_id} holds {len(it.ids)} item ids for {head.items} items")
        for cols, arrays, raw_names, n in ((it, _ITEM_ARRAYS, _ITEM_BYTES, head.items),
                                           (e, _ENTRY_ARRAYS, _ENTRY_BYTES, head.entries)):
            for name in arrays:
                column = array(getattr(cols, name).typecode)
                column.frombytes(next(fixed))
                if _BIG_ENDIAN:
                    column.byteswap()
                _check_length(dataset_id, name, len(column), n)
                setattr(cols, name, column)
            for name in raw_names:
                column = bytearray(next(fixed))
                _check_length(dataset_id, name, len(column), n)
                setattr(cols, name, column)
        rows.strings = Strings(head.strings)
        rows.qualities, rows.metadata = Shared(head.qualities), Shared(head.metadata)
        rows.times = Times(head.odd_times)
        it.last_error = head.last_error
        e.updated_at, e.history, e.feedback = head.updated_at, head.history, head.feedback
        e.duplicate_of, e.set_aside, e.odd_ids = head.duplicate_of, head.set_aside, head.odd_ids
        e.odd_rows = {odd: r for r, odd in head.odd_ids.items()}
        rows.in_item_order = head.in_item_order
        return rows


def _check_length(dataset_id: str, name: str, got: int, want: int) -> None:
    if got != want:
        raise ValueError(f"a snapshot of dataset {dataset_id} holds {got} values of {name} for {want} rows")
