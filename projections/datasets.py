"""Datasets: the read side of datasets, their work items, entries, review and runs.

Every event this projection folds names exactly one dataset, and a dataset's
state depends only on its own events. So the state is kept per dataset (a
*shard*), and a shard loaded from a snapshot stays encoded until someone reads
it or an event for it arrives that must be folded: the events for a still-encoded
shard are queued and folded, in order, when it is first decoded. Opening a big
data dir from a snapshot therefore costs the datasets you touch, not all of them.

Work items and entries are kept as columns (:mod:`projections.columns`); their views
(:class:`ItemView`, :class:`EntryView`) are made when asked for, copies that do not
change with the model. :class:`DatasetView` and :class:`RunView` are the live
objects of the state, handed out without a copy: read them under
``ReadModel.lock`` and treat them as read-only; copy what you keep past the lock
(``msgspec.structs.replace``, ``msgspec.to_builtins``). Readers of a big dataset
(pages, exports) read its columns (:meth:`Datasets.rows`) and make views of the
rows they need.

Item status:

Folded: DatasetCreated, RunStarted/RunFinished, QuestionQueued and SlotQueued
(work items; a repeat for a known item is ignored), AttemptStarted,
AttemptFailed, ItemBookmarked, EntryGenerated, EntryEdited, EntryScored,
EntryRegenerated, RevisionRestored, FeedbackGiven, RegenerationRequested.

* ``pending``: queued or attempted, neither generated nor bookmarked since the last attempt;
* ``failed``: an ItemBookmarked after the last AttemptStarted, and no entry;
* ``done``: an EntryGenerated exists. Final: later bookmarks, failures or a
  second EntryGenerated for the item change nothing (at most one entry per item).
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec

from dsetlog.store.events import (
    AttemptFailed,
    AttemptStarted,
    DatasetCreated,
    EntryEdited,
    EntryGenerated,
    EntryRegenerated,
    EntryScored,
    FeedbackGiven,
    ItemBookmarked,
    QuestionQueued,
    RegenerationRequested,
    RevisionRestored,
    RunFinished,
    RunStarted,
    SlotQueued,
)
from dsetlog.store.layout import Recorded
from dsetlog.store.scan import line_ref
from projections.base import Projection, gc_paused, handles
from projections.columns import (
    ANALYZED,
    BELOW_THRESHOLD,
    DONE,
    FAILED,
    FLAGGED,
    NAN,
    PENDING,
    SIMULATED,
    STATUS_NAMES,
    Rows,
    Views,
)
from projections.snapshot import release_pages
from projections.views import DatasetView, EntryView, FeedbackView, ItemView, RunView, SetAside

ITEM_STATUSES = STATUS_NAMES
FLAGGING_FEEDBACK = frozenset({"content_error", "quality_issue"})
FEEDBACK_COMMENTS_KEPT = 10  # the last comments of an entry; counts and ratings are kept in full
PART_ENTRIES = 500_000  # work item ids a part of a shard's snapshot holds (msgpack's bin holds < 4 GiB)
JOURNAL_KEPT = 4096  # changes to existing entries remembered per dataset (see _Shard.journal)
HIGH_QUALITY, MEDIUM_QUALITY = 0.8, 0.5  # quality_summary's distribution: >= 0.8 high, >= 0.5 medium
_PENDING, _DONE, _FAILED = (STATUS_NAMES.index(s) for s in (PENDING, DONE, FAILED))


# --- snapshot state ----------------------------------------------------------


class ShardState(msgspec.Struct, array_like=True):
    view: DatasetView
    declared: bool
    # its runs, then its columns (projections.columns.Rows.parts), each msgpack bin (< 4 GiB), decoded on first
    # use; memoryviews: decoding does not copy them out of the file
    body: list[memoryview]


class DatasetsState(msgspec.Struct, array_like=True):
    shards: list[ShardState]


_runs_decoder = msgspec.msgpack.Decoder(list[RunView])
_body_encoder = msgspec.msgpack.Encoder()
_intern = sys.intern


class _Shard:
    """One dataset's state; ``body`` is not None while it is still the encoded snapshot."""

    __slots__ = ("view", "declared", "rows", "runs", "body", "deferred", "journal", "added_seq")

    def __init__(self, view: DatasetView, declared: bool, body: list[memoryview] | None = None, *,
                 bulk: bool = False) -> None:
        self.view = view
        self.declared = declared
        self.rows = Rows(view.id, bulk=bulk)
        self.runs: dict[str, RunView] = {}
        self.body = body
        # records for this shard that arrived while it was encoded, with their refs (projections.texts)
        self.deferred: list[tuple[Recorded, int]] = []
        # (seq, entry id) of the latest changes to existing entries, and the seq of the last entry added: what
        # lets a reader's index of this dataset follow an edit without rebuilding (api/entry_index.py). Bounded;
        # not part of the snapshot (an index is never older than the process).
        self.journal: deque[tuple[int, str]] = deque(maxlen=JOURNAL_KEPT)
        self.added_seq = 0

    @classmethod
    def placeholder(cls, dataset_id: str, rec: Recorded, *, bulk: bool) -> _Shard:
        """A dataset named by an event before (or without) its DatasetCreated, which fills it in later."""
        return cls(DatasetView(dataset_id, dataset_id, "questions", "", None, None, "jsonl", {}, rec.ts, rec.seq),
                   False, bulk=bulk)

    def decode_body(self) -> list[tuple[Recorded, int]]:
        """Decode the snapshot's body into runs and columns; returns the records deferred meanwhile."""
        assert self.body is not None
        self.runs = {r.run_id: r for r in _runs_decoder.decode(self.body[0])}
        self.rows = Rows.decode(self.view.id, self.body[1:])
        release_pages(self.body)
        deferred, self.deferred = self.deferred, []
        self.body = None
        return deferred

    def state(self) -> ShardState:
        """What the snapshot keeps of it (its body encoded, or still the encoded one it was loaded with)."""
        return ShardState(self.view, self.declared, [memoryview(part) for part in self.parts()])

    def part_count(self) -> int:
        if self.body is not None:
            return len(self.body)
        return 1 + self.rows.part_count(PART_ENTRIES)

    def parts(self) -> Iterator[bytes | memoryview]:
        """Its body's parts, encoded one at a time (or the encoded ones it was loaded with)."""
        if self.body is not None:
            yield from self.body
            return
        yield _body_encoder.encode(list(self.runs.values()))
        yield from self.rows.parts(PART_ENTRIES)

    def queue(self, item_id: str, at: int, row: int, source: str) -> None:
        """A work item queued by the record at ``at`` (a question, or a document chunk's slot); re-queued on
        resume: idempotent."""
        rows = self.rows
        items = rows.items
        r = items.ids.get(item_id)
        if r is None:
            items.add(item_id, at, row, rows.strings.code(source), True)
            self.view.items += 1
            self.view.pending += 1
        elif not items.queued[r]:
            items.question_at[r], items.row[r], items.queued[r] = at, row, 1
            items.source[r] = rows.strings.code(source)

    def item(self, item_id: str) -> int:
        """The item's row; an item never queued (a document chunk slot) joins the queue here."""
        items = self.rows.items
        r = items.ids.get(item_id)
        if r is None:
            r = items.add(item_id, 0, 0, self.rows.strings.code(""), False)
            self.view.items += 1
            self.view.pending += 1
        return r

    def touched(self, r: int, seq: int) -> None:
        """Record ``seq`` in an existing entry's history, and in the journal of changes readers follow."""
        history = self.rows.entries.history
        history[r] = history.get(r, ()) + (seq,)
        self.journal.append((seq, self.rows.entry_id(r)))

    def changes_since(self, seq: int) -> tuple[list[str], int] | None:
        """See :meth:`Datasets.changes_since`."""
        changed: list[str] = []
        for change_seq, entry_id in reversed(self.journal):
            if change_seq <= seq:
                return changed, self.added_seq
            changed.append(entry_id)
        if len(self.journal) == self.journal.maxlen:
            return None  # older changes were dropped: some may be after seq
        return changed, self.added_seq

    def generated(self, rec: Recorded, ev: EntryGenerated, at: int, ts: str) -> None:
        """An entry for an item that has none: its row of every column."""
        rows = self.rows
        item = self.item(ev.item_id)
        items = rows.items
        status = items.status[item]
        if status == _DONE:
            return  # at most one entry per item (and per entry id: add_entry): the first one stands
        usage, score = ev.usage, ev.quality_score
        category, model, provider, prompt_name, prompt_hash, chunk, difficulty, run_id = rows.strings.codes(
            ev.category, ev.model, ev.provider, ev.prompt_name, ev.prompt_hash, ev.source_chunk, ev.difficulty,
            ev.run_id)
        # NEW_ENTRY_COLUMNS, in order
        if not rows.add_entry(item, ev.item_id, ev.entry_id, (
                at, at, at, category, model, provider, prompt_name, prompt_hash, chunk, difficulty, run_id, 0,
                SIMULATED if ev.simulated else 0, usage.prompt_tokens, usage.completion_tokens, ev.latency_ms,
                NAN if score is None else score, rows.qualities.code(ev.quality), rows.metadata.code(ev.metadata), 1,
                rows.times.code(ts), rec.seq)):
            return
        v = self.view
        if status == _FAILED:
            v.failed -= 1
        else:
            v.pending -= 1
        items.status[item] = _DONE
        items.ids.closed(ev.item_id)
        v.done += 1
        v.entries += 1
        self.added_seq = rec.seq

    def new_content(self, r: int, rec: Recorded, ev: EntryRegenerated | RevisionRestored, at: int) -> None:
        """A model's revision (at ``at`` in the log) became the entry's content (a regeneration, or one a user
        restored)."""
        e, code = self.rows.entries, self.rows.strings.code
        e.answer_at[r] = e.reasoning_at[r] = at
        if ev.question is not None:
            e.question_at[r] = at
        e.model[r], e.provider[r] = code(ev.model), code(ev.provider)
        e.flags[r] = e.flags[r] | SIMULATED if ev.simulated else e.flags[r] & ~SIMULATED
        e.set_aside.pop(r, None)  # a revision was chosen since
        self.revised(r, rec)

    def scored(self, r: int, ev: EntryScored) -> None:
        rows = self.rows
        e = rows.entries
        e.quality_score[r] = NAN if ev.quality_score is None else ev.quality_score
        e.quality[r] = rows.qualities.code(ev.quality)
        if ev.difficulty:
            e.difficulty[r] = rows.strings.code(ev.difficulty)
        if ev.duplicate_of is None:
            e.duplicate_of.pop(r, None)
        else:
            e.duplicate_of[r] = ev.duplicate_of
        flags = e.flags[r] & ~(BELOW_THRESHOLD | ANALYZED)
        e.flags[r] = flags | (BELOW_THRESHOLD if ev.below_threshold else 0) | (ANALYZED if ev.analyzed else 0)

    def revised(self, r: int, rec: Recorded) -> None:
        e = self.rows.entries
        e.revision[r] += 1
        e.updated_at[r] = self.rows.times.code(rec.ts)

    def add_feedback(self, r: int, feedback_type: str, comment: str | None, rating: int | None) -> None:
        feedback = self.rows.entries.feedback
        fb = feedback.get(r)
        if fb is None:
            fb = feedback[r] = FeedbackView()
        fb.count += 1
        if rating is not None:
            fb.ratings.append(rating)
        if comment:
            fb.comments.append(comment)
            if len(fb.comments) > FEEDBACK_COMMENTS_KEPT:
                del fb.comments[0]
        if feedback_type not in fb.types:
            fb.types.append(feedback_type)


class _Where:
    """Where the records being folded are in the log: a batch's bounds (dsetlog.store.scan.read_located) and its
    first seq, or, while a shard's deferred records are folded, their refs by seq."""

    __slots__ = ("bounds", "first_seq", "refs")

    def __init__(self) -> None:
        self.bounds: Sequence[int] | None = None
        self.first_seq = 0
        self.refs: dict[int, int] | None = None

    @contextmanager
    def deferred(self, deferred: list[tuple[Recorded, int]]) -> Iterator[None]:
        self.refs = {rec.seq: at for rec, at in deferred}
        try:
            yield
        finally:
            self.refs = None

    def ref(self, rec: Recorded) -> int:
        """The line ref of ``rec`` (dsetlog.store.scan.line_ref); 0 when it was folded without its bounds."""
        if self.refs is not None:
            return self.refs.get(rec.seq, 0)
        bounds = self.bounds
        if not bounds:
            return 0
        i = rec.seq - self.first_seq
        return line_ref(bounds[i], bounds[i + 1] - 1)


class Datasets(Projection):
    """Datasets, their work items (queue order), entries (item order), review state and runs."""

    name = "datasets"
    # 2: EntryView.quality_analyzed, .set_aside; 3: texts in the log (*_at); 4: parts; 5: array_like; 6: columns
    version = 6
    state_type = DatasetsState

    def __init__(self) -> None:
        super().__init__()
        self._shards: dict[str, _Shard] = {}  # first-mention order
        self._where = _Where()
        self._decode_lock = threading.Lock()  # two readers may race to decode the same shard

    # -- folding ---------------------------------------------------------------

    def apply_batch(self, recs: Sequence[Recorded], bounds: Sequence[int] | None = None) -> None:
        self._where.bounds, self._where.first_seq = bounds, recs[0].seq if recs else 0
        get = self._handlers.get
        shards = self._shards
        for rec in recs:
            ev = rec.event
            handler = get(ev.__class__)
            if handler is None:
                continue
            shard = shards.get(ev.dataset_id)
            if shard is None:
                shard = shards[ev.dataset_id] = _Shard.placeholder(ev.dataset_id, rec, bulk=self.bulk)
            elif shard.body is not None:
                shard.deferred.append((rec, self._where.ref(rec)))
                continue
            handler(shard, rec, ev)

    @handles(DatasetCreated)
    def _dataset_created(self, shard: _Shard, rec: Recorded, ev: DatasetCreated) -> None:
        if shard.declared:
            return  # the first DatasetCreated defines the dataset; a repeat (a resumed run) changes nothing
        v = shard.view
        v.name, v.kind, v.source, v.project_id = ev.name, ev.kind, ev.source, ev.project_id
        v.version, v.format_type, v.params = ev.version, ev.format_type, ev.params
        v.created_at, v.created_seq = rec.ts, rec.seq
        shard.declared = True

    @handles(RunStarted)
    def _run_started(self, shard: _Shard, rec: Recorded, ev: RunStarted) -> None:
        run = shard.runs.get(ev.run_id)
        if run is None:
            shard.runs[ev.run_id] = RunView(
                ev.run_id, shard.view.id, ev.command, ev.model, ev.provider, ev.simulated, rec.ts, rec.seq,
                system=_intern(ev.system),
            )
        elif run.started_seq is None:
            run.command, run.model, run.provider, run.simulated = ev.command, ev.model, ev.provider, ev.simulated
            run.started_at, run.started_seq, run.system = rec.ts, rec.seq, _intern(ev.system)

    @handles(RunFinished)
    def _run_finished(self, shard: _Shard, rec: Recorded, ev: RunFinished) -> None:
        run = shard.runs.get(ev.run_id)
        if run is None:
            run = shard.runs[ev.run_id] = RunView(ev.run_id, shard.view.id, "", "", "", False, None, None)
        run.outcome, run.finished_at, run.finished_seq = ev.outcome, rec.ts, rec.seq
        run.answered, run.failed, run.skipped = ev.answered, ev.failed, ev.skipped
        run.prompt_tokens, run.completion_tokens = ev.prompt_tokens, ev.completion_tokens
        run.cost, run.message = ev.cost, ev.message

    @handles(QuestionQueued)
    def _question_queued(self, shard: _Shard, rec: Recorded, ev: QuestionQueued) -> None:
        shard.queue(ev.item_id, self._where.ref(rec), ev.row, ev.source)

    @handles(SlotQueued)
    def _slot_queued(self, shard: _Shard, rec: Recorded, ev: SlotQueued) -> None:
        # a chunk slot is a work item like a CSV question: its row is the slot, its source the chunk
        shard.queue(ev.item_id, self._where.ref(rec), ev.slot, ev.chunk_id)

    @handles(AttemptStarted)
    def _attempt_started(self, shard: _Shard, rec: Recorded, ev: AttemptStarted) -> None:
        r = shard.item(ev.item_id)
        items = shard.rows.items
        items.attempts[r] += 1
        if items.status[r] == _FAILED:  # retried after a bookmark: pending again until this attempt ends
            items.status[r] = _PENDING
            shard.view.failed -= 1
            shard.view.pending += 1

    @handles(AttemptFailed)
    def _attempt_failed(self, shard: _Shard, rec: Recorded, ev: AttemptFailed) -> None:
        shard.rows.items.last_error[shard.item(ev.item_id)] = ev.reason

    @handles(ItemBookmarked)
    def _item_bookmarked(self, shard: _Shard, rec: Recorded, ev: ItemBookmarked) -> None:
        r = shard.item(ev.item_id)
        items = shard.rows.items
        items.last_error[r] = ev.reason
        if items.status[r] == _PENDING:
            items.status[r] = _FAILED
            shard.view.pending -= 1
            shard.view.failed += 1

    @handles(EntryGenerated)
    def _entry_generated(self, shard: _Shard, rec: Recorded, ev: EntryGenerated) -> None:
        # its texts stay in the log (the replay did not even decode them: projections.lean)
        shard.generated(rec, ev, self._where.ref(rec), rec.ts)

    @handles(EntryEdited)
    def _entry_edited(self, shard: _Shard, rec: Recorded, ev: EntryEdited) -> None:
        r = shard.rows.entry_row(ev.entry_id)
        if r is None:
            return  # names no entry of this dataset: nothing to edit
        e = shard.rows.entries
        if ev.question is not None:
            e.question_at[r] = self._where.ref(rec)
        if ev.answer is not None:
            e.answer_at[r] = self._where.ref(rec)
        if ev.category is not None:
            e.category[r] = shard.rows.strings.code(ev.category)
        if ev.feedback is not None:
            shard.add_feedback(r, "edit", ev.feedback, None)
        shard.revised(r, rec)
        shard.touched(r, rec.seq)

    @handles(EntryScored)
    def _entry_scored(self, shard: _Shard, rec: Recorded, ev: EntryScored) -> None:
        if (r := shard.rows.entry_row(ev.entry_id)) is not None:
            shard.scored(r, ev)
            shard.touched(r, rec.seq)

    @handles(EntryRegenerated)
    def _entry_regenerated(self, shard: _Shard, rec: Recorded, ev: EntryRegenerated) -> None:
        rows = shard.rows
        r = rows.entry_row(ev.entry_id)
        if r is None:
            return
        e = rows.entries
        e.regeneration_job_id[r] = rows.strings.code(ev.job_id)
        if ev.current:
            e.prompt_tokens[r], e.completion_tokens[r] = ev.usage.prompt_tokens, ev.usage.completion_tokens
            shard.new_content(r, rec, ev, self._where.ref(rec))
        else:  # scored lower: the content stays, the revision waits in the log for a choice
            e.set_aside[r] = SetAside(rec.seq, ev.job_id, ev.quality_score, ev.replaced_score)
        shard.touched(r, rec.seq)

    @handles(RevisionRestored)
    def _revision_restored(self, shard: _Shard, rec: Recorded, ev: RevisionRestored) -> None:
        if (r := shard.rows.entry_row(ev.entry_id)) is not None:
            shard.new_content(r, rec, ev, self._where.ref(rec))
            shard.touched(r, rec.seq)

    @handles(FeedbackGiven)
    def _feedback_given(self, shard: _Shard, rec: Recorded, ev: FeedbackGiven) -> None:
        flags = ev.feedback_type in FLAGGING_FEEDBACK
        rows = shard.rows
        for entry_id in dict.fromkeys(ev.entry_ids):  # an id named twice in one event counts once
            r = rows.entry_row(entry_id)
            if r is None:
                continue
            shard.add_feedback(r, ev.feedback_type, ev.comments, ev.rating)
            if flags:
                rows.entries.flags[r] |= FLAGGED
            shard.touched(r, rec.seq)

    @handles(RegenerationRequested)
    def _regeneration_requested(self, shard: _Shard, rec: Recorded, ev: RegenerationRequested) -> None:
        rows = shard.rows
        for entry_id in dict.fromkeys(ev.entry_ids):
            r = rows.entry_row(entry_id)
            if r is None:
                continue
            rows.entries.regeneration_job_id[r] = rows.strings.code(ev.job_id)
            shard.touched(r, rec.seq)

    def settle(self) -> None:
        for shard in self._shards.values():
            shard.rows.items.ids.settle()  # ids as numbers only, once a bulk fold is over

    # -- reading ---------------------------------------------------------------

    def _shard(self, dataset_id: str) -> _Shard | None:
        shard = self._shards.get(dataset_id)
        if shard is not None and shard.body is not None:
            self._decode(shard)
        return shard

    def _decode(self, shard: _Shard) -> None:
        with self._decode_lock, gc_paused():
            if shard.body is None:
                return  # another thread got here first
            get = self._handlers.get
            deferred = shard.decode_body()
            with self._where.deferred(deferred):
                for rec, _ in deferred:
                    get(rec.event.__class__)(shard, rec, rec.event)  # type: ignore[misc]

    def dataset(self, dataset_id: str) -> DatasetView | None:
        shard = self._shards.get(dataset_id)
        if shard is None:
            return None
        if shard.deferred:  # its counts move with the queued records
            self._decode(shard)
        return shard.view

    def datasets(self, *, name: str | None = None, kind: str | None = None) -> list[DatasetView]:
        """All datasets in creation order, optionally only those with this name and/or kind."""
        out = []
        for shard in self._shards.values():
            if shard.deferred:
                self._decode(shard)
            v = shard.view
            if (name is None or v.name == name) and (kind is None or v.kind == kind):
                out.append(v)
        return out

    def rows(self, dataset_id: str) -> Rows | None:
        """The dataset's columns (:mod:`projections.columns`): read them under the read model's lock, and only."""
        shard = self._shard(dataset_id)
        return None if shard is None else shard.rows

    def items(self, dataset_id: str, *, status: str | None = None) -> list[ItemView]:
        """Work items in queue order (first QuestionQueued first), optionally only those with ``status``."""
        if status is not None and status not in ITEM_STATUSES:
            raise ValueError(f"status must be one of {', '.join(ITEM_STATUSES)}, not {status!r}")
        shard = self._shard(dataset_id)
        if shard is None:
            return []
        rows = shard.rows
        if status is None:
            return [rows.item_view(r) for r in range(len(rows.items))]
        code = STATUS_NAMES.index(status)
        return [rows.item_view(r) for r, s in enumerate(rows.items.status) if s == code]

    def item(self, dataset_id: str, item_id: str) -> ItemView | None:
        shard = self._shard(dataset_id)
        if shard is None or (r := shard.rows.items.ids.get(item_id)) is None:
            return None
        return shard.rows.item_view(r)

    def entries(self, dataset_id: str) -> list[EntryView]:
        """Entries in their items' queue order: the input order output files must keep."""
        shard = self._shard(dataset_id)
        return [] if shard is None else shard.rows.entry_views(shard.rows.order())

    def views(self, dataset_id: str) -> Views:
        """:meth:`entries`, each view made when it is read (for a dataset of millions)."""
        shard = self._shard(dataset_id)
        rows = Rows(dataset_id) if shard is None else shard.rows
        return Views(rows, rows.in_order())

    def changes_since(self, dataset_id: str, seq: int) -> tuple[list[str], int] | None:
        """(ids of the existing entries changed after ``seq``, the seq of the last entry added), or None when
        the journal no longer reaches back to ``seq`` (a reader must then look at everything again)."""
        shard = self._shard(dataset_id)
        return None if shard is None else shard.changes_since(seq)

    def entry(self, dataset_id: str, entry_id: str) -> EntryView | None:
        shard = self._shard(dataset_id)
        if shard is None or (r := shard.rows.entry_row(entry_id)) is None:
            return None
        return shard.rows.entry_view(r)

    def runs(self, dataset_id: str) -> list[RunView]:
        """Runs in the order they started (RunStarted, or RunFinished for a run whose start is unknown)."""
        shard = self._shard(dataset_id)
        return [] if shard is None else list(shard.runs.values())

    def quality_summary(self, dataset_id: str) -> dict[str, Any]:
        """``{"average_score", "distribution": {"high", "medium", "low"}, "categories"}`` of a dataset.

        Scores and the distribution count entries that have a quality score
        (high >= 0.8 > medium >= 0.5 > low); categories count every entry, an
        empty category as "Other". An empty dataset averages 0.0.
        """
        rows = self.rows(dataset_id) or Rows(dataset_id)
        e = rows.entries
        return summary_of_columns(e.quality_score, e.category, rows.strings.values, rows.in_order())

    # -- snapshots -------------------------------------------------------------

    def _ready_shards(self) -> Iterator[_Shard]:
        for shard in self._shards.values():
            if shard.deferred:
                self._decode(shard)
            yield shard

    def snapshot_state(self) -> DatasetsState:
        return DatasetsState([shard.state() for shard in self._ready_shards()])

    def snapshot_parts(self) -> Iterator[bytes | memoryview]:
        """The msgpack of :meth:`snapshot_state`, a part of a shard at a time: a save holds one encoded part."""
        yield _array_header(1) + _array_header(len(self._shards))  # DatasetsState(shards=[...])
        for shard in self._ready_shards():
            yield _array_header(3) + _body_encoder.encode(shard.view) + _body_encoder.encode(shard.declared)
            yield _array_header(shard.part_count())
            for part in shard.parts():
                yield _bin_header(len(part))
                yield part

    def load_snapshot_state(self, state: DatasetsState) -> None:
        # bodies stay encoded (often views into the snapshot file's bytes) until first use
        self._shards = {s.view.id: _Shard(s.view, s.declared, s.body) for s in state.shards}


def _array_header(n: int) -> bytes:
    """msgpack's array header, sized as msgspec writes it."""
    if n < 16:
        return bytes((0x90 | n,))
    return b"\xdc" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdd" + n.to_bytes(4, "big")


def _bin_header(n: int) -> bytes:
    """msgpack's bin header, sized as msgspec writes it."""
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n >= 1 << 32:
        raise ValueError(f"a snapshot part of {n:,} bytes is more than msgpack's bin holds (4 GiB): lower "
                         "projections.datasets.PART_ENTRIES")
    return b"\xc5" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xc6" + n.to_bytes(4, "big")


def summary_of_columns(scores: Sequence[float], categories: Sequence[int], strings: Sequence[str | None],
                       rows: Iterable[int]) -> dict[str, Any]:
    """Datasets.quality_summary of the entries at these rows of a dataset's columns (scores NaN where there is
    none, categories as codes into ``strings``)."""
    total, scored = 0.0, 0
    high = medium = low = 0
    counts: dict[int, int] = {}
    for r in rows:
        score = scores[r]
        if score == score:
            total += score
            scored += 1
            if score >= HIGH_QUALITY:
                high += 1
            elif score >= MEDIUM_QUALITY:
                medium += 1
            else:
                low += 1
        c = categories[r]
        counts[c] = counts.get(c, 0) + 1
    cats: dict[str, int] = {}
    for c, n in counts.items():  # each name where it was first seen
        name = strings[c] or "Other"
        cats[name] = cats.get(name, 0) + n
    return {"average_score": total / scored if scored else 0.0,
            "distribution": {"high": high, "medium": medium, "low": low}, "categories": cats}
