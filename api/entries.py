"""A dataset's entries: pages of them (filters, stable sort), one entry, its edits, its history, and feedback.

The pages come from api.entry_index's indexes; every change is an event (EntryEdited, FeedbackGiven), so an
entry's history is the log's own records of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import falcon
import msgspec

from api.context import Context
from api.datasets import dataset_or_404
from api.entry_index import entry_out
from api.errors import not_found, unprocessable
from api.media import encode
from api.schemas import (
    AsOfQuery,
    EntriesPage,
    EntriesQuery,
    Entry,
    EntryEdit,
    EntryFeedback,
    EntryHistory,
    EntryUpdated,
    FeedbackAccepted,
    FeedbackRequest,
    HistoryEvent,
)
from api.spec import operation
from dsetlog.generation import rescoring
from dsetlog.store.events import EntryEdited, FeedbackGiven
from dsetlog.store.log import records_at

STREAM_OVER = 500  # entries: a bigger page goes out in pieces of this many, never joined into one body


def _streamed(head: bytes, page: list[msgspec.Raw], tail: bytes) -> Iterator[bytes]:
    """The page's envelope (encoded with no entries, cut at its empty list) with the pre-encoded entries
    spliced in, joined a piece at a time as the server sends them: a 10,000-entry page (10 MB) is never one
    body in memory beside the index's own copy of its entries."""
    yield head + b'"entries":['
    for start in range(0, len(page), STREAM_OVER):
        yield (b"," if start else b"") + b",".join(page[start : start + STREAM_OVER])
    yield b"]" + tail


class EntriesResource:
    """GET /datasets/{dataset_id}/entries, GET and PUT /datasets/{dataset_id}/entries/{entry_id}."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation("A page of a dataset's entries: filters, stable sort, paging", query=EntriesQuery,
               response=EntriesPage, errors=(400,), tags=("entries",),
               description="filter_quality (or min_quality) and max_quality bound the quality score; category, "
                           "difficulty, flagged and split select; q searches question and answer text "
                           "(case-insensitive). sort_by quality (high first), category, difficulty, position "
                           "(dataset order) or updated; ties are ordered by entry id.")
    def on_get(self, req: falcon.Request, resp: falcon.Response, dataset_id: str) -> None:
        q: EntriesQuery = req.context.query
        rm = self.ctx.model(q.as_of)
        with rm.lock:
            dataset_or_404(rm, dataset_id, q.as_of)
            index = self.ctx.entries.index(rm, dataset_id)
            positions, direction = index.query(rm, q)
            start = (q.page - 1) * q.per_page
            page = index.page(rm, positions[start : start + q.per_page])  # pre-encoded: msgspec.Raw
            seq = rm.seq
        total = len(positions)
        envelope = EntriesPage(entries=[] if len(page) > STREAM_OVER else page, total=total, page=q.page,
                               per_page=q.per_page, quality_summary=index.summary, pages=-(-total // q.per_page),
                               sort_by=q.sort_by, order=direction, seq=seq)
        if len(page) <= STREAM_OVER:
            resp.media = envelope
            return
        head, tail = encode(envelope).split(b'"entries":[]', 1)
        resp.content_type = falcon.MEDIA_JSON
        # the length known before a byte is joined: the envelope, the entries and the commas between them
        resp.content_length = (len(head) + len(b'"entries":[]') + len(tail)
                               + sum(memoryview(raw).nbytes for raw in page) + len(page) - 1)
        resp.stream = _streamed(head, page, tail)

    @operation("One entry", query=AsOfQuery, response=Entry,
               errors=(400,), tags=("entries",))
    def on_get_item(self, req: falcon.Request, resp: falcon.Response, dataset_id: str, entry_id: str) -> None:
        as_of = req.context.query.as_of
        rm = self.ctx.model(as_of)
        with rm.lock:
            dataset_or_404(rm, dataset_id, as_of)
            entry = rm.datasets.entry(dataset_id, entry_id)
            if entry is None:
                raise not_found(f"dataset {dataset_id} has no entry {entry_id!r}")
            resp.media = entry_out(rm.text_of(entry), rm.evaluations.splits(dataset_id).get(entry_id))

    @operation("Edit an entry (an EntryEdited event: the history keeps every revision), scored again",
               body=EntryEdit, response=EntryUpdated, tags=("entries",),
               description="A changed question or answer is scored again as the dataset was (structural checks; "
                           "groundedness and near-duplicates where it was analysed; the judge's grade dropped) "
                           "and the dataset's quality_threshold applied again, in the same append. revision_seq "
                           "makes an earlier revision of the entry current instead (RevisionRestored).")
    def on_put_item(self, req: falcon.Request, resp: falcon.Response, dataset_id: str, entry_id: str) -> None:
        edit: EntryEdit = req.context.body
        changes = (edit.question, edit.answer, edit.category, edit.feedback)
        if edit.revision_seq is None and all(c is None for c in changes):
            raise unprocessable("give at least one of question, answer, category, feedback, revision_seq")
        if edit.revision_seq is not None and any(c is not None for c in changes[:3]):
            raise unprocessable("revision_seq makes a whole revision current: give it without question, answer "
                                "or category (edit them in a second PUT)")
        ctx = self.ctx
        rm = ctx.model()
        with rm.lock:
            dataset_or_404(rm, dataset_id)
            entry = rm.datasets.entry(dataset_id, entry_id)
            if entry is None:
                raise not_found(f"dataset {dataset_id} has no entry {entry_id!r}")
            if edit.revision_seq is not None:
                events = rescoring.restore_events(rm, ctx.data_dir, entry, edit.revision_seq)
                if edit.feedback is not None:
                    events.append(EntryEdited(dataset_id=dataset_id, entry_id=entry_id, feedback=edit.feedback))
            else:
                events = rescoring.edit_events(rm, entry, EntryEdited(
                    dataset_id=dataset_id, entry_id=entry_id, question=edit.question, answer=edit.answer,
                    category=edit.category, feedback=edit.feedback))
        ctx.log.append_many(events)
        rm = ctx.model()
        with rm.lock:
            entry = rm.datasets.entry(dataset_id, entry_id)
            assert entry is not None
            out = entry_out(rm.text_of(entry), rm.evaluations.splits(dataset_id).get(entry_id))
        resp.media = EntryUpdated(message=f"Entry {entry_id} updated successfully", entry=out)

    @operation("Every event of the log that touched an entry, oldest first", response=EntryHistory,
               tags=("entries",))
    def on_get_history(self, req: falcon.Request, resp: falcon.Response, dataset_id: str, entry_id: str) -> None:
        rm = self.ctx.model()
        with rm.lock:
            dataset_or_404(rm, dataset_id)
            entry = rm.datasets.entry(dataset_id, entry_id)
            if entry is None:
                raise not_found(f"dataset {dataset_id} has no entry {entry_id!r}")
            seqs, revision = entry.history, entry.revision
        events = []
        for rec in records_at(self.ctx.data_dir, seqs):
            fields = msgspec.to_builtins(rec.event)
            fields.pop("type", None)
            events.append(HistoryEvent(seq=rec.seq, ts=rec.ts, type=rec.event.type, fields=fields))
        resp.media = EntryHistory(dataset_id=dataset_id, entry_id=entry_id, revision=revision, events=events)


class FeedbackResource:
    """POST /datasets/{dataset_id}/feedback."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation("Feedback on entries: aggregated per entry; content_error and quality_issue flag them",
               body=FeedbackRequest, response=FeedbackAccepted, tags=("entries",))
    def on_post(self, req: falcon.Request, resp: falcon.Response, dataset_id: str) -> None:
        fb: FeedbackRequest = req.context.body
        ids = list(dict.fromkeys(fb.entry_ids))
        ctx = self.ctx
        rm = ctx.model()
        with rm.lock:
            dataset_or_404(rm, dataset_id)
            missing = [i for i in ids if rm.datasets.entry(dataset_id, i) is None]
        if missing:
            shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
            raise not_found(f"dataset {dataset_id} has no entries {shown}; no feedback was recorded")
        ctx.log.append(FeedbackGiven(dataset_id=dataset_id, entry_ids=ids, feedback_type=fb.feedback_type,
                                     comments=fb.comments, rating=fb.rating))
        rm = ctx.model()
        out = []
        with rm.lock:
            for entry_id in ids:
                e = rm.datasets.entry(dataset_id, entry_id)
                if e is not None and e.feedback is not None:
                    out.append(EntryFeedback(entry_id=entry_id, count=e.feedback.count,
                                             average_rating=e.feedback.average_rating, flagged=e.flagged))
        resp.media = FeedbackAccepted(message=f"Feedback submitted for {len(ids)} entries", entries=out)
