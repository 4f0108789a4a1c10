"""Scoring an entry again when its content changes outside a generation run: a user's edit (PUT), a revision
a user makes current again, a regeneration. The dataset's own settings decide how (:class:`Rescoring`): the
structural checks always; groundedness in the entry's chunk and near-duplicates across the dataset where
the dataset was generated with analyze_quality; then its quality_threshold is applied again, so an entry
edited into an empty answer scores 0 and leaves the downloads.

A changed entry's judge grade is dropped: the judge graded other content (the next run of the dataset, or a
regeneration, judges it again). Near-duplicates are decided by the dataset's index (quality.NearDuplicates),
for the changed entry against every other: the edit made the copy, so the changed entry is the duplicate of
the entry it now nearly repeats; an entry marked as a duplicate of it that no longer repeats it is freed and
scored again. The dataset is narrowed down by rapidfuzz first (a 50,000-entry dataset in ~0.2 s), so a PUT
never rebuilds the dataset's index.

The events come back with the change itself, for one append: EntryEdited (or RevisionRestored) then the
EntryScored events, so no reader ever sees the new content with the old score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rapidfuzz import fuzz, process, utils

from dsetlog.errors import UsageError
from dsetlog.evaluation import quality
from dsetlog.generation.judging import duplicate_text, entry_components, entry_scored, final_score
from dsetlog.store.events import (
    EntryEdited,
    EntryGenerated,
    EntryRegenerated,
    EntryScored,
    Event,
    RevisionRestored,
)
from dsetlog.store.log import records_at
from projections.readmodel import ReadModel
from projections.views import DatasetView, EntryView, FullEntry

# rapidfuzz similarity a candidate must reach before the near-duplicate index looks at it: well below the
# index's own threshold (0.9), so the index, not this filter, decides
PREFILTER = 70.0


class NotARevision(UsageError, ValueError):
    """The seq given does not record a revision of the entry."""


@dataclass(frozen=True)
class Rescoring:
    """How the dataset's entries are scored again: as it was generated (its mode, analyze_quality,
    quality_threshold and judge_model)."""

    mode: str
    scored: bool  # its entries carry scores (a document dataset): a change is scored again
    analyzed: bool  # analyze_quality: groundedness and near-duplicates (and the judge, if any) too
    threshold: float
    judge_spec: str  # the dataset's judge_model ("" none), when analysed

    @classmethod
    def of(cls, dataset: DatasetView) -> Rescoring:
        documents = dataset.kind == "documents"
        analyzed = documents and bool(dataset.params.get("analyze_quality", True))
        return cls(mode=str(dataset.params.get("generation_mode") or "default"), scored=documents,
                   analyzed=analyzed, threshold=float(dataset.params.get("quality_threshold", 0.7) or 0.0),
                   judge_spec=str(dataset.params.get("judge_model") or "") if analyzed else "")

    def checked_answer(self, answer: str) -> str | None:
        """The answer as scored: none in "question" mode (its entries are questions)."""
        return None if self.mode == "question" else answer


def chunk_text(rm: ReadModel, entry: EntryView) -> str | None:
    """The text of the entry's chunk (None: not a document entry, or the chunk is gone)."""
    view = rm.projects.chunk(entry.source_chunk) if entry.source_chunk else None
    return view.text if view is not None else None


def rescored(rm: ReadModel, entry: EntryView, question: str, answer: str, *,
             duplicates: bool = True) -> list[EntryScored]:
    """The EntryScored events of ``entry`` with this new content, and of the entries whose near-duplicate
    mark it changes (none when the dataset's entries are not scored). ``duplicates`` False: the entry keeps
    its mark and no other entry is looked at (a regeneration, entry by entry). Read under ``rm.lock``."""
    dataset = rm.datasets.dataset(entry.dataset_id)
    if dataset is None:
        return []
    how = Rescoring.of(dataset)
    if not how.scored and entry.quality_score is None:
        return []
    checked = how.checked_answer(answer)
    comps = entry_components(question, checked, chunk_text(rm, entry) if how.analyzed else None, mode=how.mode)
    if not (how.analyzed and duplicates):
        return [entry_scored(entry, question, checked, comps, duplicate_of=entry.duplicate_of, judge=None,
                             threshold=how.threshold, analyzed=how.analyzed)]
    others = rm.full(e for e in rm.datasets.entries(dataset.id) if e.id != entry.id)
    text = duplicate_text(how.mode, question, answer)
    twin = _twin(text, others, how.mode)
    out = [entry_scored(entry, question, checked, comps, duplicate_of=twin.id if twin else None, judge=None,
                        threshold=how.threshold, analyzed=True)]
    for other in others:  # those it duplicated before, and no longer does (or now is a copy of)
        if other.duplicate_of == entry.id and other.quality_score is not None and (
                other is twin or not _pair(duplicate_text(how.mode, other.question, other.answer), text)):
            out.append(_marked(other, None, how.threshold))
    return out


def _pair(first: str, second: str) -> bool:
    """Does ``second`` nearly duplicate ``first``, as the dataset's near-duplicate index decides?"""
    index = quality.NearDuplicates()
    index.add("first", first)
    return index.add("second", second) is not None


def _twin(text: str, others: list[FullEntry], mode: str) -> FullEntry | None:
    """The entry, other than the edited one, that ``text`` nearly duplicates: the edit made the copy, so the
    edited entry is the duplicate. rapidfuzz narrows the dataset down in C; the index decides each candidate."""
    texts = [duplicate_text(mode, e.question, e.answer) for e in others]
    found = process.extract(text, texts, scorer=fuzz.token_sort_ratio, processor=utils.default_process,
                            score_cutoff=PREFILTER, limit=None)
    for _, _, i in sorted(found, key=lambda hit: (-hit[1], hit[2])):  # the closest first, earliest on ties
        if not others[i].metadata.get("variant_of") and _pair(texts[i], text):
            return others[i]
    return None


def _marked(entry: EntryView, duplicate_of: str | None, threshold: float) -> EntryScored:
    """An unchanged entry's score with a new near-duplicate mark, from the components it has."""
    comps = {k: v for k, v in entry.quality.items() if k != "judge"}
    judge = entry.quality.get("judge")
    score = final_score(comps, duplicate=duplicate_of is not None, judge=int(judge) if judge is not None else None)
    return EntryScored(dataset_id=entry.dataset_id, entry_id=entry.id, quality_score=score, quality=entry.quality,
                       difficulty=entry.difficulty, duplicate_of=duplicate_of, below_threshold=score < threshold,
                       analyzed=entry.quality_analyzed)


def comparable_score(entry: EntryView) -> float | None:
    """The entry's score without its judge's grade: what a new revision, scored without the judge, is
    compared with (None: the entry has no score)."""
    if entry.quality_score is None or "judge" not in entry.quality:
        return entry.quality_score
    comps = {k: v for k, v in entry.quality.items() if k != "judge"}
    return final_score(comps, duplicate=entry.duplicate_of is not None, judge=None)


def edit_events(rm: ReadModel, entry: EntryView, edit: EntryEdited) -> list[Event]:
    """The edit, then the scores it changes (a category or a comment changes none). Read under ``rm.lock``."""
    if edit.question is None and edit.answer is None:
        return [edit]
    now = rm.text_of(entry)
    question = now.question if edit.question is None else edit.question
    answer = now.answer if edit.answer is None else edit.answer
    if (question, answer) == (now.question, now.answer):
        return [edit]
    return [edit, *rescored(rm, entry, question, answer)]


def restore_events(rm: ReadModel, data_dir: Path, entry: EntryView, seq: int) -> list[Event]:
    """RevisionRestored making the revision recorded at ``seq`` current again (an EntryGenerated or
    EntryRegenerated of the entry, as its history lists them), then its scores. Read under ``rm.lock``."""
    recs = list(records_at(data_dir, [seq])) if seq in entry.history else []
    ev = recs[0].event if recs else None
    if not isinstance(ev, (EntryGenerated, EntryRegenerated)) or ev.entry_id != entry.id:
        raise NotARevision(f"seq {seq} is not a revision of entry {entry.id}: give the seq of one of its "
                           "EntryGenerated or EntryRegenerated events (GET .../entries/{entry_id}/history)")
    question = ev.question
    restored = RevisionRestored(dataset_id=entry.dataset_id, entry_id=entry.id, seq=seq, answer=ev.answer,
                                question=question, reasoning=ev.reasoning, model=ev.model, provider=ev.provider,
                                simulated=ev.simulated)
    if question is None:
        question = rm.text_of(entry).question
    return [restored, *rescored(rm, entry, question, ev.answer)]

