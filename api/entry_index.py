"""Entries: their JSON shape, and fast filtered, sorted pages over datasets of any size.

A dataset's entries at one log seq are an :class:`EntryIndex`; its sort orders and the results of
recent queries (filters + sort) are computed once and kept, so paging through a 100,000-entry dataset,
or many clients asking the same page, costs a slice and the encoding of one page. Any new event in the
log moves the seq; the next request asks the dataset's change journal what changed since
(``Datasets.changes_since``): nothing (a job on another dataset) keeps the index as it is; edits, ratings
and scores of existing entries are followed in place, re-encoding those entries and dropping only the
orders and results they can have moved (an edited answer keeps every order but "updated", and a filtered
result stays when each changed entry is still in or out of it as before); a new entry, new splits or a
journal that no longer reaches back build a fresh index.

Sorting is stable: entries that compare equal are ordered by id. ``quality`` sorts high to low and
``category`` / ``difficulty`` (beginner < intermediate < advanced < expert) / ``position`` (the
dataset's order) low to high by default; ``order`` reverses that. Entries without a score, category
or difficulty come last either way.
"""

from __future__ import annotations

import functools
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from api.schemas import (
    EntriesQuery,
    Entry,
    FeedbackSummary,
    QualityDistribution,
    QualitySummary,
    SetAsideRevision,
)
from dsetlog.evaluation.splits import SPLITS
from dsetlog.store.scan import LINE_REF_BITS
from projections.columns import FLAGGED, Rows
from projections.datasets import summary_of_columns
from projections.readmodel import ReadModel
from projections.search import Hits, matcher, needs_check
from projections.segments import mask_of
from projections.views import EntryView, FullEntry

INDEXES_KEPT = 16  # (dataset, live or as_of) pairs
RESULTS_KEPT = 32  # query results per index
DIFFICULTY_RANK = {"beginner": 0, "basic": 0, "easy": 0, "intermediate": 1, "medium": 1, "advanced": 2,
                   "hard": 2, "expert": 3}
_encoder = msgspec.json.Encoder()
DEFAULT_ORDER = {"quality": "desc", "category": "asc", "difficulty": "asc", "position": "asc", "updated": "desc"}


def entry_out(e: FullEntry, split: str | None = None) -> Entry:
    """The API's shape of an entry (read it under the read model's lock; its texts: ReadModel.full)."""
    meta = dict(e.metadata)
    meta["model"] = e.model
    meta["generation_time"] = e.created_at
    fb = e.feedback
    feedback = None if fb is None else FeedbackSummary(
        count=fb.count, average_rating=fb.average_rating, ratings=list(fb.ratings), comments=list(fb.comments),
        types=list(fb.types))
    return Entry(id=e.id, question=e.question, answer=e.answer, category=e.category,
                 quality_score=e.quality_score, difficulty=e.difficulty, source_chunk=e.source_chunk,
                 metadata=meta, reasoning=e.reasoning, quality=dict(e.quality), flagged=e.flagged,
                 feedback=feedback, revision=e.revision, split=split, below_threshold=e.below_threshold,
                 duplicate_of=e.duplicate_of, model=e.model, provider=e.provider, simulated=e.simulated,
                 item_id=e.item_id, created_at=e.created_at, updated_at=e.updated_at,
                 regeneration_job_id=e.regeneration_job_id, quality_analyzed=e.quality_analyzed,
                 set_aside=_set_aside(e))


def _set_aside(e: EntryView) -> SetAsideRevision | None:
    aside = e.set_aside
    return None if aside is None else SetAsideRevision(seq=aside.seq, job_id=aside.job_id,
                                                       quality_score=aside.quality_score,
                                                       replaced_score=aside.replaced_score)


def quality_summary(doc: dict[str, Any]) -> QualitySummary:
    dist = doc["distribution"]
    return QualitySummary(average_score=float(doc["average_score"]),
                          distribution=QualityDistribution(high=dist["high"], medium=dist["medium"], low=dist["low"]),
                          categories=dict(doc.get("categories", {})))


class EntryIndex:
    """One dataset's entries at one seq (see the module's description), over the read model's columns
    (:mod:`projections.columns`): a position is an entry's place in the dataset's order. Build and read it under
    rm.lock."""

    def __init__(self, rm: ReadModel, dataset_id: str) -> None:
        self.dataset_id = dataset_id
        self.seq = rm.seq
        self.rows = rm.datasets.rows(dataset_id) or Rows(dataset_id)  # the model's own: ids and views from it
        self._order = array("i", self.rows.order())  # position -> entry row
        n = len(self._order)
        # entry row -> position: the order is a permutation of the entry rows (one entry an item), so its inverse
        self._position = _positions(pc.sort_indices(_arrow(self._order)))
        self.splits: dict[str, str] = dict(rm.evaluations.splits(dataset_id))
        self.split_seq = _split_seq(rm, dataset_id)
        self._split_names: list[str | None] = [None, *SPLITS]
        self._split_of = self._split_codes()
        self._keys = _Keys(self.rows, self._order, self._position)  # what each order was sorted by, to see it move
        self.summary = self._summary()
        self.flagged = sum(self._keys.flagged)
        self._encoded: list[msgspec.Raw | None] = [None] * n
        self._orders: dict[tuple[str, str], Sequence[int]] = {}
        self._codes: _TextCodes | None = None  # each entry's texts as the search index numbers them
        self._id_order: array[int] | None = None
        self._results: OrderedDict[tuple[Any, ...], Sequence[int]] = OrderedDict()
        self._members: dict[tuple[Any, ...], set[int]] = {}  # a filtered result's positions, made when needed
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._order)

    def entry_id(self, i: int) -> str:
        """The id of the entry at position ``i``."""
        return self.rows.entry_id(self._order[i])

    def _split_codes(self) -> bytearray:
        """Each position's split, as its index in ``self._split_names`` (0: none)."""
        codes = bytearray(len(self._order))
        names = self._split_names
        for entry_id, name in self.splits.items():
            r = self.rows.entry_row(entry_id)
            if r is not None and r < len(self._position) and (i := self._position[r]) >= 0:
                if name not in names:
                    names.append(name)
                codes[i] = names.index(name)
        return codes

    def _summary(self) -> QualitySummary:
        keys = self._keys
        return quality_summary(summary_of_columns(keys.quality, keys.category, self.rows.strings.values,
                                                  range(len(self._order))))

    def follow(self, rm: ReadModel) -> bool:
        """Bring this index to ``rm.seq`` in place if only existing entries changed; False: build a new one."""
        if rm.datasets.rows(self.dataset_id) is not self.rows:
            return False  # folded anew (the log was rewritten): other columns
        changes = rm.datasets.changes_since(self.dataset_id, self.seq)
        if changes is None or _split_seq(rm, self.dataset_id) != self.split_seq:
            return False
        changed_ids, added_seq = changes
        if added_seq > self.seq:
            return False
        moved: set[str] = set()
        positions = set()
        for entry_id in changed_ids:
            r = self.rows.entry_row(entry_id)
            if r is not None and r < len(self._position) and (i := self._position[r]) >= 0:
                positions.add(i)
        for i in positions:
            self._encoded[i] = None
            moved |= self._keys.update(i, self.rows, self._order[i])
        with self._lock:
            for key in [k for k in self._orders if k[0] in moved]:
                del self._orders[key]
            for key in list(self._results):
                if key[0] in moved or not self._still_holds(key, positions, "text" in moved):
                    del self._results[key]
                    self._members.pop(key, None)
        if "text" in moved and self._codes is not None:
            self._codes.moved |= positions
        if moved & {"quality", "category"}:
            self.summary = self._summary()
        if "flagged" in moved:
            self.flagged = sum(self._keys.flagged)
        self.seq = rm.seq
        return True

    def _still_holds(self, key: tuple[Any, ...], positions: set[int], text_moved: bool) -> bool:
        """Is each changed entry still in (or out of) this cached result, as it was?"""
        filters = key[2:]
        if filters == _NO_FILTER or not positions:
            return True
        needle = filters[-1]
        if needle is not None and text_moved:
            return False  # a changed text may have moved in or out of the search: it is searched again
        members = self._members.get(key)
        if members is None:
            members = self._members[key] = set(self._results[key])
        at = sorted(positions)
        kept = self._kept(*filters[:-1], at=at)
        return all(k == (i in members) for i, k in zip(at, [True] * len(at) if kept is None else kept.to_pylist(),
                                                       strict=True))

    def views(self, positions: Sequence[int]) -> list[EntryView]:
        """The entries at these positions, as they are in the model now."""
        view, order = self.rows.entry_view, self._order
        return [view(order[i]) for i in positions]

    def page(self, rm: ReadModel, positions: Sequence[int]) -> list[msgspec.Raw]:
        """The entries at these positions, JSON-encoded (each once per index: pages are slices of bytes); their
        texts are read from the log, in one pass for the page."""
        encoded, split_of, names = self._encoded, self._split_of, self._split_names
        missing = [i for i in dict.fromkeys(positions) if encoded[i] is None]
        for i, e in zip(missing, rm.full(self.views(missing)), strict=True):
            encoded[i] = msgspec.Raw(_encoder.encode(entry_out(e, names[split_of[i]])))
        return [encoded[i] for i in positions]  # type: ignore[misc]

    def order(self, sort_by: str, direction: str) -> Sequence[int]:
        key = (sort_by, direction)
        found = self._orders.get(key)
        if found is None:
            found = self._orders[key] = self._sort(sort_by, direction == "desc")
        return found

    def _by_id(self) -> Sequence[int]:
        """The positions in id order: what every other order's ties fall back to (ids never change)."""
        if self._id_order is None:
            rows = self.rows
            if rows.entries.odd_ids:
                ids = pa.array([rows.entry_id(r) for r in self._order], pa.string())
            else:  # entry_<16 hex digits> each: in the order of the digits
                digits = pc.take(_arrow(rows.items.ids.digits), _arrow(rows.entries.item))
                ids = pc.take(digits, _arrow(self._order))
            self._id_order = _positions(pc.sort_indices(ids))
        return self._id_order

    def _sort(self, sort_by: str, descending: bool) -> Sequence[int]:
        """The positions in this order, as an array (4 bytes an entry, no int object each), sorted by Arrow
        (pyarrow, which exports use too) over the key columns as they are: entries without the key last, ties
        in id order."""
        n = len(self._order)
        if sort_by == "position":
            return array("i", range(n - 1, -1, -1) if descending else range(n))
        keys, strings = self._keys, self.rows.strings.values
        if sort_by == "quality":
            quality = _arrow(keys.quality)
            primary = pc.if_else(pc.is_nan(quality), pa.scalar(None, pa.float64()), quality)  # NaN: no score
        elif sort_by in ("category", "difficulty"):
            codes = keys.category if sort_by == "category" else keys.difficulty
            primary = pc.take(pa.array(_code_ranks(sort_by, strings), pa.int32()), _arrow(codes))
        else:  # updated (microseconds: the order of the timestamps' text)
            primary = _arrow(keys.updated)
        by_id = _arrow(self._by_id())  # type: ignore[arg-type]
        id_rank = pc.sort_indices(by_id)  # a permutation's inverse: each position's place in id order
        table = pa.table({"key": primary, "id": id_rank})
        return _positions(pc.sort_indices(table, sort_keys=[("key", "descending" if descending else "ascending"),
                                                            ("id", "ascending")]))

    def query(self, rm: ReadModel, q: EntriesQuery) -> tuple[Sequence[int], str]:
        """Positions of the matching entries in the requested order, and that order ("asc" / "desc")."""
        direction = q.order or DEFAULT_ORDER[q.sort_by]
        low = max(v for v in (q.filter_quality, q.min_quality, 0.0) if v is not None)
        high = q.max_quality
        filters = (low, high, q.category, q.difficulty, q.flagged, q.split,
                   q.q.casefold() if q.q else None)
        key = (q.sort_by, direction, *filters)
        with self._lock:
            found = self._results.get(key)
            if found is not None:
                self._results.move_to_end(key)
                return found, direction
        order = self.order(q.sort_by, direction)
        needle = filters[-1]
        if filters == _NO_FILTER:
            result = order
        else:
            kept = self._kept(*filters[:-1])
            if needle is not None:
                kept = self._search(rm, needle, kept)
            assert kept is not None
            in_order = _arrow(order)  # type: ignore[arg-type]
            result = _to_array(pc.filter(in_order, pc.take(kept, in_order)), "i")
        with self._lock:
            self._results[key] = result
            while len(self._results) > RESULTS_KEPT:
                self._results.popitem(last=False)
        return result, direction

    def _search(self, rm: ReadModel, needle: str, kept: pa.Array | None) -> pa.Array:
        """Which entries (a bool a position), of those ``kept`` (None: all), hold ``needle`` (casefolded) in their
        question or answer where a word starts (:func:`projections.search.matcher`). The search index names the
        texts that hold its words; entries whose texts it does not reach yet, and hits its words cannot settle,
        are read from the log."""
        matches, n = matcher(needle), len(self._order)
        hits = rm.search_hits(self.dataset_id, needle)
        if hits is None:
            candidates = range(n) if kept is None else pc.indices_nonzero(kept).to_pylist()
            return mask_of(self._read_and_match(rm, matches, list(candidates)), n)
        codes = self._text_codes(hits)
        found = pc.or_(pc.take(hits.mask, _arrow(codes.question)), pc.take(hits.mask, _arrow(codes.answer)))
        if kept is not None:
            found = pc.and_(found, kept)
        if needs_check(needle):  # the words are there: is the needle?
            found = mask_of(self._read_and_match(rm, matches, pc.indices_nonzero(found).to_pylist()), n)
        if hits.reach < rm.offset:  # texts written past the index's reach
            q_at, a_at = self._text_starts()
            past = pc.or_(pc.greater_equal(q_at, hits.reach), pc.greater_equal(a_at, hits.reach))
            if kept is not None:
                past = pc.and_(past, kept)
            tail = self._read_and_match(rm, matches, pc.indices_nonzero(past).to_pylist())
            found = pc.or_(found, mask_of(tail, n))
        return found

    def _text_starts(self) -> tuple[pa.Array, pa.Array]:
        """Where each position's question and answer are in the log (the starts of their lines)."""
        keys = self._keys
        return (pc.shift_right(_arrow(keys.question_at), LINE_REF_BITS),
                pc.shift_right(_arrow(keys.answer_at), LINE_REF_BITS))

    def _text_codes(self, hits: Hits) -> _TextCodes:
        """Each position's question and answer as places in the search index's mask (0, always False, for a
        text it does not hold), made once for all and then kept up: for the entries whose texts moved, and those
        not found in the index before it grew."""
        codes, n = self._codes, len(self._order)
        lines = len(hits.starts)
        if codes is not None and codes.build == hits.build and codes.lines <= lines:
            if codes.lines < lines:
                codes.moved.update(codes.unheld(lines))
            if len(codes.moved) <= n // 8:
                at = sorted(codes.moved)
                for column, refs, field in ((codes.question, self._keys.question_at, 0),
                                            (codes.answer, self._keys.answer_at, 1)):
                    found = _coded(pc.take(_arrow(refs), pa.array(at, pa.int32())), hits.starts, field)
                    for i, code in zip(at, found.to_pylist(), strict=True):
                        column[i] = code
                codes.moved.clear()
                return codes
        keys = self._keys
        self._codes = _TextCodes(hits.build, lines, _to_array(_coded(_arrow(keys.question_at), hits.starts, 0), "i"),
                                 _to_array(_coded(_arrow(keys.answer_at), hits.starts, 1), "i"))
        return self._codes

    def _read_and_match(self, rm: ReadModel, matches: Callable[[str], bool], positions: list[int]) -> set[int]:
        """Those of these positions (ascending: the log's order) whose question or answer ``matches``."""
        view, order = self.rows.entry_view, self._order
        return {i for i, e in zip(positions, rm.iter_full(view(order[i]) for i in positions), strict=True)
                if matches(e.question) or matches(e.answer)}

    def _kept(self, low: float, high: float | None, category: str | None, difficulty: str | None,
              flagged: bool | None, split: str | None, *, at: Sequence[int] | None = None) -> pa.Array | None:
        """Which entries (a bool a position, or of the positions ``at``) pass these filters, by their values as
        the index took them; None: there is no filter."""
        keys, strings = self._keys, self.rows.strings.values
        picked = None if at is None else pa.array(at, pa.int32())

        def column(values: array[Any] | bytearray) -> pa.Array:
            whole = _arrow(values) if isinstance(values, array) else _arrow_bytes(values)
            return whole if picked is None else pc.take(whole, picked)

        conditions = []
        if low > 0.0:
            conditions.append(pc.greater_equal(column(keys.quality), low))  # NaN (no score) is never >= low
        if high is not None:
            conditions.append(pc.less_equal(column(keys.quality), high))
        if category is not None:
            cats = [c for c in _used(keys.category) if (strings[c] or "").casefold() == category.casefold()]
            conditions.append(pc.is_in(column(keys.category), value_set=pa.array(cats, pa.int32())))
        if difficulty is not None:
            levels = [c for c in _used(keys.difficulty) if strings[c] == difficulty]
            conditions.append(pc.is_in(column(keys.difficulty), value_set=pa.array(levels, pa.int32())))
        if flagged is not None:
            conditions.append(pc.equal(column(keys.flagged), 1 if flagged else 0))
        if split is not None:
            code = self._split_names.index(split) if split in self._split_names else -1
            conditions.append(pc.equal(column(self._split_of), code))
        return functools.reduce(pc.and_, conditions) if conditions else None


class _TextCodes:
    """Each position's question and answer as codes of one search index's mask (``_coded``), for its first
    ``lines`` lines; ``moved``: positions to code again (their texts moved, or the index grew past them)."""

    def __init__(self, build: str, lines: int, question: array[int], answer: array[int]) -> None:
        self.build, self.lines, self.question, self.answer = build, lines, question, answer
        self.moved: set[int] = set()

    def unheld(self, lines: int) -> list[int]:
        """As the index grows to ``lines``: the positions whose texts it did not hold (they may be on the new
        lines; the places of the others stay)."""
        self.lines = lines
        return sorted({i for column in (self.question, self.answer)
                       for i in pc.indices_nonzero(pc.equal(_arrow(column), 0)).to_pylist()})


def _coded(refs: pa.Array, starts: pa.Array, field: int) -> pa.Array:
    """Texts at these line refs as places in the mask of a search index whose lines start at ``starts``
    (ascending): 1 + the line's number * 2 + field, or 0 (the mask's always-False bit) for a line it does not hold."""
    at = pc.shift_right(refs, LINE_REF_BITS)
    line = pc.cast(pc.search_sorted(starts, at), pa.int64())
    last = len(starts) - 1
    held = pc.and_(pc.less_equal(line, last), pc.not_equal(refs, 0))
    if last >= 0:
        held = pc.and_(held, pc.equal(pc.take(starts, pc.min_element_wise(line, last)), at))
    return pc.cast(pc.if_else(held, pc.add(pc.multiply(line, 2), field + 1), 0), pa.int32())


_NO_FILTER = (0.0, None, None, None, None, None, None)
_KEY_NAMES = ("quality", "category", "difficulty", "updated", "flagged", "text")


class _Keys:
    """The values each entry's orders, summaries, filters and searches were made from (``_KEY_NAMES``), a column
    each in the index's order, to see which of them a change moved ("text": where the texts a search reads are
    in the log; an edit of them moves it). Strings as the model's codes. ~45 bytes an entry."""

    __slots__ = ("quality", "category", "difficulty", "updated", "flagged", "question_at", "answer_at")

    def __init__(self, rows: Rows, order: array[int], position: array[int]) -> None:
        e = rows.entries
        in_order = rows.in_item_order
        arrow_order = _arrow(order)

        def take(column: array[Any]) -> array[Any]:
            return column[:] if in_order else _to_array(pc.take(_arrow(column), arrow_order), column.typecode)

        self.quality = take(e.quality_score)
        self.category = take(e.category)
        self.difficulty = take(e.difficulty)
        self.updated = take(e.created_at)
        self.question_at = take(e.question_at)
        self.answer_at = take(e.answer_at)
        flags = e.flags
        self.flagged = bytearray(1 if flags[r] & FLAGGED else 0 for r in order)
        for r, ts in e.updated_at.items():
            self.updated[position[r]] = ts

    def update(self, i: int, rows: Rows, r: int) -> set[str]:
        """Take the values of entry row ``r`` (at position ``i``) now; the names of those that moved."""
        e = rows.entries
        moved = set()
        quality = e.quality_score[r]
        if quality != self.quality[i] and not (quality != quality and self.quality[i] != self.quality[i]):
            moved.add("quality")
            self.quality[i] = quality
        updated = e.updated_at.get(r, e.created_at[r])
        for name, now in (("category", e.category[r]), ("difficulty", e.difficulty[r]), ("updated", updated)):
            column = getattr(self, name)
            if column[i] != now:
                moved.add(name)
                column[i] = now
        flagged = 1 if e.flags[r] & FLAGGED else 0
        if self.flagged[i] != flagged:
            moved.add("flagged")
            self.flagged[i] = flagged
        if (self.question_at[i], self.answer_at[i]) != (e.question_at[r], e.answer_at[r]):
            moved.add("text")
            self.question_at[i], self.answer_at[i] = e.question_at[r], e.answer_at[r]
        return moved


_ARROW_TYPES = {"d": pa.float64(), "i": pa.int32(), "q": pa.int64(), "Q": pa.uint64()}


def _used(codes: array[int]) -> list[int]:
    """The string codes a column holds (one C pass, not a Python set of millions)."""
    return pc.unique(_arrow(codes)).to_pylist()  # type: ignore[no-any-return]


def _arrow_bytes(values: bytearray) -> pa.Array:
    """A bytearray as an Arrow uint8 array over the same memory."""
    return pa.Array.from_buffers(pa.uint8(), len(values), [None, pa.py_buffer(values)])


def _arrow(column: array[Any]) -> pa.Array:
    """An array.array as an Arrow array over the same memory (no copy: keep the array alive meanwhile)."""
    return pa.Array.from_buffers(_ARROW_TYPES[column.typecode], len(column), [None, pa.py_buffer(column)])


def _to_array(values: pa.Array, typecode: str) -> array[Any]:
    """An Arrow array without nulls as an array.array of this typecode (its values copied once)."""
    if values.type != _ARROW_TYPES[typecode]:
        raise TypeError(f"an array of {values.type} is not one of {_ARROW_TYPES[typecode]}")  # its bytes would be
    out = array(typecode)
    out.frombytes(values.buffers()[1])
    return out[values.offset : values.offset + len(values)]


def _positions(indices: pa.Array) -> array[int]:
    """Arrow's sort indices as an array of positions."""
    return _to_array(pc.cast(indices, pa.int32()), "i")


def _code_ranks(sort_by: str, strings: Sequence[str | None]) -> list[int | None]:
    """For each string code, its rank in a category (casefolded) or difficulty order; None: empty (no key)."""
    if sort_by == "difficulty":
        return [DIFFICULTY_RANK.get(s, 9) if s else None for s in strings]
    folded = sorted({s.casefold() for s in strings if s})
    rank = {name: i for i, name in enumerate(folded)}
    return [rank[s.casefold()] if s else None for s in strings]


def _split_seq(rm: ReadModel, dataset_id: str) -> int:
    split = rm.evaluations.split_view(dataset_id)
    return split.seq if split is not None else 0


class EntryCache:
    """The latest :class:`EntryIndex` of each (dataset, live or as_of) the API was asked about."""

    def __init__(self) -> None:
        self._indexes: OrderedDict[tuple[str, int | None], EntryIndex] = OrderedDict()
        self._lock = threading.Lock()

    def index(self, rm: ReadModel, dataset_id: str) -> EntryIndex:
        """Call with ``rm.lock`` held."""
        key = (dataset_id, rm.until_seq)
        with self._lock:
            found = self._indexes.get(key)
            if found is not None and found.seq == rm.seq and found.rows is rm.datasets.rows(dataset_id):
                self._indexes.move_to_end(key)
                return found
        if found is not None and found.seq < rm.seq and found.follow(rm):
            return found  # the log moved on, and this dataset's entries could be followed in place
        index = EntryIndex(rm, dataset_id)
        with self._lock:
            self._indexes[key] = index
            self._indexes.move_to_end(key)
            while len(self._indexes) > INDEXES_KEPT:
                self._indexes.popitem(last=False)
        return index
