"""Entry texts, read from the log where the read model says they are.

The read model keeps no entry's question, answer or reasoning: it keeps, for each, where the record that
wrote it sits in the log (a line ref, :func:`dsetlog.store.scan.line_ref`), and :func:`iter_full` reads
them back when a page, an export, a search or a job needs them. The log is the store; nothing else holds
the texts.

Reads are made in the log's order, neighbouring lines by one ``pread``, and each line is checked as a replay
checks it (its checksum) and must be the record its ref was taken from (an event naming the entry): a log
rewritten under a model (`dset log repair`) is caught, never read as the wrong text.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec.structs import astuple

from dsetlog.store.errors import LogError
from dsetlog.store.layout import checked_events, event_decoder
from dsetlog.store.scan import read_lines, ref_start
from projections.columns import Rows, Views
from projections.fields import field_values
from projections.views import EntryView, FullEntry, ItemView

if TYPE_CHECKING:  # the index loads pyarrow: a command that never searches does not pay for it (~0.13 s)
    from projections.search import Hits, SearchIndex

_TEXT_FIELDS = ("question", "answer", "reasoning")  # a FullEntry's fields that are read from the log
TEXTS_CHUNK = 2048  # entries whose texts iter_full reads at a time
SEARCH_INLINE_BYTES = 32 << 20  # of log a search indexes before it answers; more, and it reads the tail's texts


class StaleTextError(LogError):
    """A ref does not point at the record it was taken from: the log changed under the read model."""


class _Texts(msgspec.Struct, gc=False):
    """The text fields of the events that write an entry's content; the rest of the event is skipped."""

    entry_id: str = ""
    item_id: str = ""
    question: str | None = None
    answer: str | None = None
    reasoning: str | None = None


_EMPTY_JSON, _NULL_JSON = msgspec.Raw(b'""'), msgspec.Raw(b"null")


class _JsonTexts(msgspec.Struct, gc=False):
    """:class:`_Texts` with the texts as the JSON the log holds them in (not decoded: a jsonl export writes them
    as they are)."""

    entry_id: str = ""
    item_id: str = ""
    question: msgspec.Raw = _EMPTY_JSON
    answer: msgspec.Raw = _EMPTY_JSON
    reasoning: msgspec.Raw = _EMPTY_JSON


_line_decoder, _json_decoder = event_decoder(_Texts), event_decoder(_JsonTexts)


class TextReads:
    """The texts of a read model's entries and work items, read from its log (``self.path``), and the words of
    its search index (``<data_dir>/snapshots``)."""

    path: Path
    data_dir: Path
    offset: int
    _search: SearchIndex | None = None

    def full(self, entries: Iterable[EntryView]) -> list[FullEntry]:
        """These entries with their texts."""
        return list(self.iter_full(entries))

    def iter_full(self, entries: Iterable[EntryView], *, chunk: int = TEXTS_CHUNK) -> Iterator[FullEntry]:
        """:meth:`full`, ``chunk`` at a time (an export of millions holds one chunk's texts); :class:`StaleTextError`
        (a LogError) when the log was rewritten under this model (``catch_up()`` folds it again, and the texts can
        then be read). :class:`~projections.columns.Views` are read from their columns, no view made twice."""
        if isinstance(entries, Views):
            rows, order = entries.rows, entries.order
            for start in range(0, len(order), chunk):
                part = order[start : start + chunk]
                refs = _refs(rows, part, field_values(rows, "id", part))
                yield from rows.entry_views(part, FullEntry, self._texts_of(refs))  # type: ignore[misc]
            return
        it = iter(entries)
        while views := list(itertools.islice(it, chunk)):
            refs = [(v.question_at, v.answer_at, v.reasoning_at, v.id) for v in views]
            for v, texts in zip(views, self._texts_of(refs), strict=True):
                yield FullEntry(*astuple(v), *texts[1:])

    def iter_columns(self, entries: Views, names: Sequence[str], *, chunk: int = TEXTS_CHUNK,
                     json_texts: bool = False) -> Iterator[dict[str, list[Any]]]:
        """The ``names`` fields (a FullEntry's: texts included) of these entries, ``chunk`` entries at a time, each
        chunk a list of values by name (:func:`projections.fields.field_values`): what an export of millions
        writes, without a view made for each. Texts are read as :meth:`iter_full` reads them; ``json_texts``: as
        the JSON strings the log holds (msgspec.Raw, which msgspec encodes as it is), not decoded."""
        rows, order = entries.rows, entries.order
        texts = any(name in _TEXT_FIELDS for name in names)
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            out = {name: field_values(rows, name, part) for name in names if name not in _TEXT_FIELDS}
            if texts:
                refs = _refs(rows, part, out["id"] if "id" in out else field_values(rows, "id", part))
                out.update(zip(_TEXT_FIELDS, self._text_lists(refs, json=json_texts), strict=True))
            yield {name: out[name] for name in names}

    def _texts_of(self, refs: list[tuple[int, int, int, str]]) -> Iterator[tuple[str, str, str, str]]:
        """The (entry id, question, answer, reasoning) at these (question_at, answer_at, reasoning_at, entry id)."""
        return zip((ref[3] for ref in refs), *self._text_lists(refs), strict=True)

    def _text_lists(self, refs: list[tuple[int, int, int, str]], *, json: bool = False
                    ) -> tuple[list[Any], list[Any], list[Any]]:
        """The questions, answers and reasonings at these (question_at, answer_at, reasoning_at, entry id), in
        their order; ``json``: as JSON strings (msgspec.Raw)."""
        owners: dict[int, str] = {}
        for q, a, r, entry_id in refs:
            if not (q and a and r):
                raise StaleTextError(f"entry {entry_id} was folded without its place in the log (records fed "
                                     "to a projection by hand?): open it with ReadModel.open to read its texts")
            owners[q] = owners[a] = owners[r] = entry_id  # most often one line: the EntryGenerated
        found = _texts_at(self.path, owners, items=False, decoder=_json_decoder if json else _line_decoder)
        empty, none = (_EMPTY_JSON, _NULL_JSON) if json else ("", None)
        questions, answers, reasonings = [], [], []
        for q_at, a_at, r_at, _ in refs:
            q = found[q_at]
            a = q if a_at == q_at else found[a_at]
            r = a if r_at == a_at else found[r_at]
            question, answer, reasoning = q.question, a.answer, r.reasoning
            questions.append(empty if question == none else question)
            answers.append(empty if answer == none else answer)
            reasonings.append(empty if reasoning == none else reasoning)
        return questions, answers, reasonings

    def text_of(self, entry: EntryView) -> FullEntry:
        """One entry with its texts."""
        return self.full((entry,))[0]

    def questions(self, items: Sequence[ItemView]) -> list[str]:
        """The questions of these work items, as the records that queued them say ("" for one never queued)."""
        found = _texts_at(self.path, {it.question_at: it.item_id for it in items if it.question_at}, items=True)
        return [(found[it.question_at].question or "") if it.question_at else "" for it in items]


    def search_index(self) -> SearchIndex:
        """The data dir's search index, as this model reaches it (made on first use)."""
        if self._search is None:
            from projections.search import SearchIndex

            self._search = SearchIndex(self.data_dir, self.path)
        return self._search

    def search_hits(self, dataset_id: str, needle: str) -> Hits | None:
        """The search index's hits for the (casefolded) needle in this dataset (:class:`SearchIndex`), the index
        first brought up to this model's records if that is at most SEARCH_INLINE_BYTES of log; None: no index or
        no words in the needle (read the texts)."""
        index = self.search_index()
        if 0 < self.offset - index.reach() <= SEARCH_INLINE_BYTES:
            index.catch_up()
        return index.hits(dataset_id, needle)


class FullEntries:
    """These entries with their texts, read from the log as they are read: one :class:`FullEntry` at a time
    (iterated), or a chunk of fields at a time (:meth:`columns`, what the full export formats read)."""

    def __init__(self, reads: TextReads, entries: Views) -> None:
        self.reads, self.entries = reads, entries

    def __iter__(self) -> Iterator[FullEntry]:
        return self.reads.iter_full(self.entries)

    def columns(self, names: Sequence[str], size: int, *, json_texts: bool = False) -> Iterator[dict[str, list[Any]]]:
        return self.reads.iter_columns(self.entries, names, chunk=size, json_texts=json_texts)


def _refs(rows: Rows, part: Sequence[int], ids: list[str]) -> list[tuple[int, int, int, str]]:
    """(question_at, answer_at, reasoning_at, entry id) of the entries at these rows, whose ids are ``ids``."""
    e = rows.entries
    return list(zip(map(e.question_at.__getitem__, part), map(e.answer_at.__getitem__, part),
                    map(e.reasoning_at.__getitem__, part), ids, strict=True))


def _texts_at(path: Path, owners: dict[int, str], *, items: bool,
              decoder: msgspec.json.Decoder[Any] = _line_decoder) -> dict[int, Any]:
    """The texts of the records at these refs, each checked (its checksum) to be the record of its owner: the
    entry (or, with ``items``, the work item) the ref was taken for."""
    try:
        lines = read_lines(path, owners)
    except FileNotFoundError:
        raise StaleTextError(f"the log {path} is gone: texts cannot be read") from None
    found = {}
    for at, texts in zip(lines, checked_events(list(lines.values()), decoder), strict=True):
        owner = owners[at]
        # a work item's question is on a record naming it and no entry (QuestionQueued, SlotQueued)
        mine = texts is not None and (texts.item_id == owner and not texts.entry_id if items else texts.entry_id == owner)
        if not mine:
            whose = f"work item {owner}" if items else f"entry {owner}"
            raise StaleTextError(
                f"the log {path} changed under the read model: byte {ref_start(at)} no longer holds the record "
                f"that wrote {whose} (was it repaired?); catch up and read again")
        found[at] = texts
    return found
