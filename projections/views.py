"""The views of the Datasets projection: datasets, work items, entries (without their texts, and with them:
FullEntry), feedback and runs, as msgspec Structs. A snapshot keeps datasets, runs, feedback and set-aside
revisions as they are; work items and entries are kept as columns (:mod:`projections.columns`), their views
made from a row when asked for."""

from __future__ import annotations

from typing import Any

import msgspec

# gc=False: these never take part in a reference cycle, and a page, an export or a job makes millions of them;
# left to the cyclic GC every full collection would walk all of them. array_like: a snapshot keeps the fields of
# those it holds by position, not each under its name again.


class DatasetView(msgspec.Struct, gc=False):
    id: str
    name: str
    kind: str
    source: str
    project_id: str | None
    version: str | None
    format_type: str
    params: dict[str, Any]
    created_at: str  # the record's timestamp
    created_seq: int
    items: int = 0
    done: int = 0
    failed: int = 0
    pending: int = 0
    entries: int = 0


class ItemView(msgspec.Struct, gc=False, array_like=True):
    """A work item: one question to answer (or one chunk slot), in queue order. Its question stays in the log:
    ``question_at`` is the line ref of the record that queued it (0: never queued); ReadModel.questions reads it."""

    item_id: str
    dataset_id: str
    question_at: int
    row: int
    status: str  # pending | done | failed
    attempts: int = 0  # AttemptStarted seen
    last_error: str | None = None  # reason of the last AttemptFailed / ItemBookmarked
    entry_id: str | None = None
    source: str = ""
    queued: bool = True  # False while only other events (attempts, an entry) have named it


class FeedbackView(msgspec.Struct, gc=False, array_like=True):
    count: int = 0
    ratings: list[int] = []
    comments: list[str] = []  # the last FEEDBACK_COMMENTS_KEPT, oldest first
    types: list[str] = []  # feedback types seen, first seen first ("edit" for an edit's feedback)

    @property
    def average_rating(self) -> float | None:
        return sum(self.ratings) / len(self.ratings) if self.ratings else None


class SetAside(msgspec.Struct, gc=False, array_like=True):
    """A regenerated revision that scored lower than the current one and was kept out of it (the log has it)."""

    seq: int  # of its EntryRegenerated: what RevisionRestored names to make it current
    job_id: str
    quality_score: float | None
    replaced_score: float | None


class EntryView(msgspec.Struct, gc=False, array_like=True):
    """An entry as the read model keeps it: what lists, filters, sorts and summaries need, and where its texts
    are in the log (refs, :mod:`projections.texts`); :meth:`ReadModel.full` reads them into a :class:`FullEntry`."""

    id: str
    dataset_id: str
    item_id: str
    question_at: int  # the refs of the records whose question, answer and reasoning are the entry's now
    answer_at: int
    reasoning_at: int
    category: str
    model: str
    provider: str
    simulated: bool
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    prompt_name: str
    prompt_hash: str
    source_chunk: str
    quality_score: float | None
    quality: dict[str, float]
    difficulty: str
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    run_id: str = ""
    revision: int = 1  # 1 + number of edits and regenerations
    feedback: FeedbackView | None = None  # None until the first feedback
    flagged: bool = False  # a content_error / quality_issue feedback named it
    regeneration_job_id: str | None = None  # the last RegenerationRequested / EntryRegenerated naming it
    history: tuple[int, ...] = ()  # seqs of the records that touched it, oldest first
    duplicate_of: str | None = None  # from the last EntryScored
    below_threshold: bool = False  # from the last EntryScored: left out of exports
    quality_analyzed: bool = False  # from the last EntryScored: the costly analysis made its score
    set_aside: SetAside | None = None  # the last regenerated revision kept out for scoring lower


class FullEntry(EntryView, gc=False):
    """An entry with its texts, read from the log (:meth:`ReadModel.full`): a copy, made when asked for."""

    question: str = ""
    answer: str = ""
    reasoning: str = ""


class RunView(msgspec.Struct, gc=False):
    run_id: str
    dataset_id: str
    command: str
    model: str
    provider: str
    simulated: bool
    started_at: str | None
    started_seq: int | None
    outcome: str | None = None  # None while running (or after a crash that left no RunFinished)
    finished_at: str | None = None
    finished_seq: int | None = None
    answered: int = 0
    failed: int = 0
    skipped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    message: str = ""
    system: str = ""  # the system prompt the run sent (RunStarted.system)
