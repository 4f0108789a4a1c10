"""Datasets: the read side of datasets, their work items, entries, review and runs.

Every event this projection folds names exactly one dataset, and a dataset's
state depends only on its own events. So the state is kept per dataset (a
*shard*), and a shard loaded from a snapshot stays encoded until someone reads
it or an event for it arrives that must be folded: the events for a still-encoded
shard are queued and folded, in order, when it is first decoded. Opening a big
data dir from a snapshot therefore costs the datasets you touch, not all of them.

Views (:class:`DatasetView`, :class:`ItemView`, :class:`EntryView`,
:class:`RunView`) are the live objects of the state, handed out without a copy:
read them under ``ReadModel.lock`` and treat them as read-only; copy what you
keep past the lock (``msgspec.structs.replace``, ``msgspec.to_builtins``).

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
from projections.snapshot import release_pages
from projections.views import (
    DatasetView,
    EntryView,
    FeedbackView,
    ItemView,
    RunView,
    SetAside,
)

PENDING, DONE, FAILED = "pending", "done", "failed"
ITEM_STATUSES = (PENDING, DONE, FAILED)
FLAGGING_FEEDBACK = frozenset({"content_error", "quality_issue"})
FEEDBACK_COMMENTS_KEPT = 10  # the last comments of an entry; counts and ratings are kept in full
PART_ENTRIES = 500_000  # entries (and items) a part of a shard's snapshot holds: ~0.5 GB encoded
JOURNAL_KEPT = 4096  # changes to existing entries remembered per dataset (see _Shard.journal)
HIGH_QUALITY, MEDIUM_QUALITY = 0.8, 0.5  # quality_summary's distribution: >= 0.8 high, >= 0.5 medium


# --- snapshot state ----------------------------------------------------------


class ShardBody(msgspec.Struct, array_like=True):
    items: list[ItemView]
    entries: list[EntryView]
    runs: list[RunView]


class ShardState(msgspec.Struct, array_like=True):
    view: DatasetView
    declared: bool
    # msgpack of ShardBody in parts of at most PART_ENTRIES entries (msgpack's bin holds < 4 GiB: a dataset of
    # millions of entries is more), decoded on first use; memoryviews: decoding does not copy them out of the file
    body: list[memoryview]


class DatasetsState(msgspec.Struct, array_like=True):
    shards: list[ShardState]


_body_decoder = msgspec.msgpack.Decoder(ShardBody)
# Fields with a handful of distinct values across millions of entries (models, prompts, runs, categories):
# one string each instead of one per entry, a fifth of an entry's memory.
_intern = sys.intern
def _intern_entry(e: EntryView) -> None:
    """Share an entry's strings (category, model, provider, prompt_name, prompt_hash, difficulty, run_id) and
    dicts as a fold shares them (one at a time, not by name: it runs for each of millions of decoded entries)."""
    e.category, e.model, e.provider = _intern(e.category), _intern(e.model), _intern(e.provider)
    e.prompt_name, e.prompt_hash = _intern(e.prompt_name), _intern(e.prompt_hash)
    e.difficulty, e.run_id = _intern(e.difficulty), _intern(e.run_id)
    e.quality, e.metadata = _shared(e.quality), e.metadata or _NO_METADATA


# The same goes for score components: structural checks give a few values each, so most entries of a dataset
# have one of a few dicts of them, and an entry's dicts are replaced, never changed in place (read them only).
# Components that vary (a judge's grade, groundedness) stop the sharing at SHARED_KEPT distinct dicts.
SHARED_KEPT = 4096
_shared_quality: dict[tuple[tuple[str, float], ...], dict[str, float]] = {}
_NO_METADATA: dict[str, Any] = {}


def _shared(quality: dict[str, float]) -> dict[str, float]:
    key = tuple(quality.items())
    found = _shared_quality.get(key)
    if found is None:
        if len(_shared_quality) >= SHARED_KEPT:
            return quality
        found = _shared_quality[key] = quality
    return found


_body_encoder = msgspec.msgpack.Encoder()


class _SameAsLast:
    """The string it was last given when this one is equal to it: the records of one append share their
    timestamp, and an entry keeps it (a replay decodes each record's as a string of its own)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = ""

    def __call__(self, ts: str) -> str:
        if ts == self.last:
            return self.last
        self.last = ts
        return ts


class _Shard:
    """One dataset's state; ``body`` is not None while it is still the encoded snapshot."""

    __slots__ = ("view", "declared", "items", "entries", "runs", "body", "deferred", "journal", "added_seq")

    def __init__(self, view: DatasetView, declared: bool, body: list[memoryview] | None = None) -> None:
        self.view = view
        self.declared = declared
        self.items: dict[str, ItemView] = {}  # queue order
        self.entries: dict[str, EntryView] = {}
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
    def placeholder(cls, dataset_id: str, rec: Recorded) -> _Shard:
        """A dataset named by an event before (or without) its DatasetCreated, which fills it in later."""
        return cls(DatasetView(dataset_id, dataset_id, "questions", "", None, None, "jsonl", {}, rec.ts, rec.seq),
                   False)

    def decode_body(self) -> list[tuple[Recorded, int]]:
        """Decode the snapshot's body into items, entries and runs; returns the records deferred meanwhile."""
        assert self.body is not None
        ds = self.view.id
        items: dict[str, ItemView] = {}
        entries: dict[str, EntryView] = {}
        runs: dict[str, RunView] = {}
        same_ts = _SameAsLast()
        # a part at a time, each string decoded shared at once as a fold shares it (memory: a 5M-entry dataset
        # decoded whole first held ~2 GB of strings it then dropped)
        for raw in self.body:
            part = _body_decoder.decode(raw)
            for it in part.items:
                it.dataset_id = ds
                items[it.item_id] = it
            for e in part.entries:
                _intern_entry(e)
                e.dataset_id = ds
                e.created_at = same_ts(e.created_at)
                e.updated_at = same_ts(e.updated_at)
                entries[e.id] = e
            runs.update((r.run_id, r) for r in part.runs)
            del part
        for e in entries.values():  # an entry and its item share their ids, as in a fold (an item may be in another part)
            item = items.get(e.item_id)
            if item is not None:
                e.item_id = item.item_id
                if item.entry_id == e.id:
                    item.entry_id = e.id
        self.items, self.entries, self.runs = items, entries, runs
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
        return max(1, -(-max(len(self.items), len(self.entries)) // PART_ENTRIES))

    def parts(self) -> Iterator[bytes | memoryview]:
        """Its body's parts, encoded one at a time (or the encoded ones it was loaded with)."""
        if self.body is not None:
            yield from self.body
            return
        items, entries = list(self.items.values()), list(self.entries.values())
        for i in range(self.part_count()):
            a, b = i * PART_ENTRIES, (i + 1) * PART_ENTRIES
            yield _body_encoder.encode(ShardBody(items[a:b], entries[a:b], list(self.runs.values()) if i == 0 else []))

    def queue(self, item_id: str, at: int, row: int, source: str) -> None:
        """A work item queued by the record at ``at`` (a question, or a document chunk's slot); re-queued on
        resume: idempotent."""
        item = self.items.get(item_id)
        if item is None:
            self.items[item_id] = ItemView(item_id, self.view.id, at, row, PENDING, 0, None, None, source)
            self.view.items += 1
            self.view.pending += 1
        elif not item.queued:
            item.question_at, item.row, item.source, item.queued = at, row, source, True

    def item(self, item_id: str) -> ItemView:
        """The item, or one never queued (a document chunk slot) that joins the queue here."""
        item = self.items.get(item_id)
        if item is None:
            item = self.items[item_id] = ItemView(item_id, self.view.id, 0, 0, PENDING, queued=False)
            self.view.items += 1
            self.view.pending += 1
        return item

    def touched(self, entry: EntryView, seq: int) -> None:
        """Record ``seq`` in an existing entry's history, and in the journal of changes readers follow."""
        entry.history += (seq,)
        self.journal.append((seq, entry.id))

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


class _Where:
    """Where the records being folded are in the log: a batch's bounds (dsetlog.store.scan.read_located) and its
    first seq, or, while a shard's deferred records are folded, their refs by seq; and their shared timestamps."""

    __slots__ = ("bounds", "first_seq", "refs", "ts")

    def __init__(self) -> None:
        self.bounds: Sequence[int] | None = None
        self.first_seq = 0
        self.refs: dict[int, int] | None = None
        self.ts = _SameAsLast()  # and when: the records of one append share their time

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
    version = 5  # 2: EntryView.quality_analyzed, .set_aside; 3: texts in the log (*_at); 4: parts; 5: array_like
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
                shard = shards[ev.dataset_id] = _Shard.placeholder(ev.dataset_id, rec)
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
        item = shard.item(ev.item_id)
        item.attempts += 1
        if item.status == FAILED:  # retried after a bookmark: pending again until this attempt ends
            item.status = PENDING
            shard.view.failed -= 1
            shard.view.pending += 1

    @handles(AttemptFailed)
    def _attempt_failed(self, shard: _Shard, rec: Recorded, ev: AttemptFailed) -> None:
        item = shard.item(ev.item_id)
        item.last_error = ev.reason

    @handles(ItemBookmarked)
    def _item_bookmarked(self, shard: _Shard, rec: Recorded, ev: ItemBookmarked) -> None:
        item = shard.item(ev.item_id)
        item.last_error = ev.reason
        if item.status == PENDING:
            item.status = FAILED
            shard.view.pending -= 1
            shard.view.failed += 1

    @handles(EntryGenerated)
    def _entry_generated(self, shard: _Shard, rec: Recorded, ev: EntryGenerated) -> None:
        item = shard.item(ev.item_id)
        if item.status == DONE or ev.entry_id in shard.entries:
            return  # at most one entry per item (and per entry id): the first one stands
        at = self._where.ref(rec)  # its texts stay in the log (the replay did not even decode them: projections.lean)
        # positional: keyword construction of a 28-field Struct costs several times more in a replay
        ts, usage = self._where.ts(rec.ts), ev.usage
        shard.entries[ev.entry_id] = EntryView(
            ev.entry_id, shard.view.id, item.item_id, at, at, at, _intern(ev.category),
            _intern(ev.model), _intern(ev.provider), ev.simulated, usage.prompt_tokens, usage.completion_tokens,
            ev.latency_ms, _intern(ev.prompt_name), _intern(ev.prompt_hash), ev.source_chunk, ev.quality_score,
            _shared(ev.quality), _intern(ev.difficulty), ev.metadata or _NO_METADATA, ts, ts,
            _intern(ev.run_id), 1, None, False,
            None, (rec.seq,),
        )  # fmt: skip
        v = shard.view
        if item.status == FAILED:
            v.failed -= 1
        else:
            v.pending -= 1
        item.status = DONE
        item.entry_id = ev.entry_id
        v.done += 1
        v.entries += 1
        shard.added_seq = rec.seq

    @handles(EntryEdited)
    def _entry_edited(self, shard: _Shard, rec: Recorded, ev: EntryEdited) -> None:
        entry = shard.entries.get(ev.entry_id)
        if entry is None:
            return  # names no entry of this dataset: nothing to edit
        if ev.question is not None:
            entry.question_at = self._where.ref(rec)
        if ev.answer is not None:
            entry.answer_at = self._where.ref(rec)
        if ev.category is not None:
            entry.category = ev.category
        if ev.feedback is not None:
            _add_feedback(entry, "edit", ev.feedback, None)
        entry.revision += 1
        entry.updated_at = rec.ts
        shard.touched(entry, rec.seq)

    @handles(EntryScored)
    def _entry_scored(self, shard: _Shard, rec: Recorded, ev: EntryScored) -> None:
        entry = shard.entries.get(ev.entry_id)
        if entry is None:
            return
        entry.quality_score, entry.quality = ev.quality_score, _shared(ev.quality)
        if ev.difficulty:
            entry.difficulty = _intern(ev.difficulty)
        entry.duplicate_of, entry.below_threshold = ev.duplicate_of, ev.below_threshold
        entry.quality_analyzed = ev.analyzed
        shard.touched(entry, rec.seq)

    @handles(EntryRegenerated)
    def _entry_regenerated(self, shard: _Shard, rec: Recorded, ev: EntryRegenerated) -> None:
        entry = shard.entries.get(ev.entry_id)
        if entry is None:
            return
        entry.regeneration_job_id = ev.job_id
        if ev.current:
            entry.prompt_tokens, entry.completion_tokens = ev.usage.prompt_tokens, ev.usage.completion_tokens
            _new_content(entry, rec, ev, self._where.ref(rec))
        else:  # scored lower: the content stays, the revision waits in the log for a choice
            entry.set_aside = SetAside(rec.seq, ev.job_id, ev.quality_score, ev.replaced_score)
        shard.touched(entry, rec.seq)

    @handles(RevisionRestored)
    def _revision_restored(self, shard: _Shard, rec: Recorded, ev: RevisionRestored) -> None:
        if (entry := shard.entries.get(ev.entry_id)) is not None:
            _new_content(entry, rec, ev, self._where.ref(rec))
            shard.touched(entry, rec.seq)

    @handles(FeedbackGiven)
    def _feedback_given(self, shard: _Shard, rec: Recorded, ev: FeedbackGiven) -> None:
        flags = ev.feedback_type in FLAGGING_FEEDBACK
        for entry_id in dict.fromkeys(ev.entry_ids):  # an id named twice in one event counts once
            entry = shard.entries.get(entry_id)
            if entry is None:
                continue
            _add_feedback(entry, ev.feedback_type, ev.comments, ev.rating)
            if flags:
                entry.flagged = True
            shard.touched(entry, rec.seq)

    @handles(RegenerationRequested)
    def _regeneration_requested(self, shard: _Shard, rec: Recorded, ev: RegenerationRequested) -> None:
        for entry_id in dict.fromkeys(ev.entry_ids):
            entry = shard.entries.get(entry_id)
            if entry is None:
                continue
            entry.regeneration_job_id = ev.job_id
            shard.touched(entry, rec.seq)

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

    def items(self, dataset_id: str, *, status: str | None = None) -> list[ItemView]:
        """Work items in queue order (first QuestionQueued first), optionally only those with ``status``."""
        if status is not None and status not in ITEM_STATUSES:
            raise ValueError(f"status must be one of {', '.join(ITEM_STATUSES)}, not {status!r}")
        shard = self._shard(dataset_id)
        if shard is None:
            return []
        if status is None:
            return list(shard.items.values())
        return [it for it in shard.items.values() if it.status == status]

    def item(self, dataset_id: str, item_id: str) -> ItemView | None:
        shard = self._shard(dataset_id)
        return None if shard is None else shard.items.get(item_id)

    def entries(self, dataset_id: str) -> list[EntryView]:
        """Entries in their items' queue order: the input order output files must keep."""
        shard = self._shard(dataset_id)
        if shard is None:
            return []
        by_id = shard.entries
        return [by_id[it.entry_id] for it in shard.items.values() if it.entry_id is not None]

    def changes_since(self, dataset_id: str, seq: int) -> tuple[list[str], int] | None:
        """(ids of the existing entries changed after ``seq``, the seq of the last entry added), or None when
        the journal no longer reaches back to ``seq`` (a reader must then look at everything again)."""
        shard = self._shard(dataset_id)
        return None if shard is None else shard.changes_since(seq)

    def entry(self, dataset_id: str, entry_id: str) -> EntryView | None:
        shard = self._shard(dataset_id)
        return None if shard is None else shard.entries.get(entry_id)

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
        return quality_summary_of(self.entries(dataset_id))

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


def quality_summary_of(entries: Iterable[EntryView]) -> dict[str, Any]:
    """Datasets.quality_summary of these entries."""
    total, scored = 0.0, 0
    dist = {"high": 0, "medium": 0, "low": 0}
    cats: dict[str, int] = {}
    for e in entries:
        score = e.quality_score
        if score is not None:
            total += score
            scored += 1
            dist["high" if score >= HIGH_QUALITY else "medium" if score >= MEDIUM_QUALITY else "low"] += 1
        cat = e.category or "Other"
        cats[cat] = cats.get(cat, 0) + 1
    return {"average_score": total / scored if scored else 0.0, "distribution": dist, "categories": cats}


def _new_content(entry: EntryView, rec: Recorded, ev: EntryRegenerated | RevisionRestored, at: int) -> None:
    """A model's revision (at ``at`` in the log) became the entry's content (a regeneration, or one a user
    restored)."""
    entry.answer_at = entry.reasoning_at = at
    if ev.question is not None:
        entry.question_at = at
    entry.model, entry.provider, entry.simulated = _intern(ev.model), _intern(ev.provider), ev.simulated
    entry.set_aside = None  # a revision was chosen since
    entry.revision += 1
    entry.updated_at = rec.ts


def _add_feedback(entry: EntryView, feedback_type: str, comment: str | None, rating: int | None) -> None:
    fb = entry.feedback
    if fb is None:
        fb = entry.feedback = FeedbackView()
    fb.count += 1
    if rating is not None:
        fb.ratings.append(rating)
    if comment:
        fb.comments.append(comment)
        if len(fb.comments) > FEEDBACK_COMMENTS_KEPT:
            del fb.comments[0]
    if feedback_type not in fb.types:
        fb.types.append(feedback_type)
