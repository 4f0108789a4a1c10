"""The judge step, one for the generation pipeline and regeneration: an LLM judge rates each entry on a
rubric (1-5) with a difficulty, and the verdict joins the entry's quality score in a new EntryScored."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dsetlog.engine.stages import Phase
from dsetlog.evaluation import quality
from dsetlog.generation.calls import Calls
from dsetlog.llm.providers import Provider
from dsetlog.prompts import replies
from dsetlog.store.events import EntryScored, Event
from projections.views import EntryView, FullEntry

if TYPE_CHECKING:
    from dsetlog.engine.engine import EngineResult, WorkItem
    from dsetlog.llm.client import Completion


@dataclass(frozen=True)
class Scorable:
    """An entry with what its score is made of: its structural checks and groundedness (``components``),
    the entry it nearly duplicates, and its chunk's text (None: the chunk is gone)."""

    entry: FullEntry
    components: dict[str, float]
    duplicate_of: str | None
    chunk: str | None


def duplicate_text(mode: str, question: str, answer: str) -> str:
    """What an entry's near-duplicates are found in: question and answer, the question alone in "question"
    mode (its entries are questions)."""
    return question if mode == "question" else f"{question} {answer}"


def near_duplicates(entries: Iterable[FullEntry], *, mode: str) -> dict[str, str]:
    """Entry id -> the earlier entry it nearly duplicates, over entries in dataset order (question and answer;
    the question alone in "question" mode). A marked augmentation variant is meant to be close to its
    source: never one."""
    index = quality.NearDuplicates()
    found = {}
    for entry in entries:
        duplicate_of = index.add(entry.id, duplicate_text(mode, entry.question, entry.answer))
        if duplicate_of is not None and not entry.metadata.get("variant_of"):
            found[entry.id] = duplicate_of
    return found


def entry_components(question: str, answer: str | None, chunk: str | None, *, mode: str) -> dict[str, float]:
    """An entry's structural checks, and its groundedness in its chunk (``answer`` None: a question-only mode;
    ``chunk`` None: the chunk is gone, or quality is not analysed)."""
    comps = quality.structural_checks(question, answer, expect_question=mode in ("default", "question", "answer"))
    if answer is not None and chunk is not None:
        comps["groundedness"] = quality.groundedness(answer, chunk)
    return comps


def final_score(comps: dict[str, float], *, duplicate: bool, judge: int | None) -> float:
    """The quality score of these components (quality.combine). A judge's grade cannot lift an answer that
    shares no content word with its chunk (groundedness 0): it may lower such a score, never raise it."""
    score = quality.combine(comps, duplicate=duplicate, judge=judge)
    if judge is not None and comps.get("groundedness") == 0.0:
        score = min(score, quality.combine(comps, duplicate=duplicate, judge=None))
    return score


def entry_scored(entry: EntryView, question: str, answer: str | None, comps: dict[str, float], *,
                 duplicate_of: str | None, judge: tuple[int, int] | None, threshold: float,
                 analyzed: bool = True) -> EntryScored:
    """The EntryScored of an entry with this question and answer: ``judge`` is the judge's (score, difficulty);
    ``analyzed`` False: ``comps`` are the structural checks alone (analyze_quality false)."""
    score = final_score(comps, duplicate=duplicate_of is not None, judge=judge[0] if judge else None)
    level = quality.difficulty(question, answer, judge_score=judge[1] if judge else None)
    components = dict(comps)
    if judge:
        components["judge"] = float(judge[0])
    return EntryScored(dataset_id=entry.dataset_id, entry_id=entry.id, quality_score=score, quality=components,
                       difficulty=level, duplicate_of=duplicate_of, below_threshold=score < threshold,
                       analyzed=analyzed)


def scored(target: Scorable, *, mode: str, threshold: float, judge: tuple[int, int] | None,
           analyzed: bool = True) -> EntryScored:
    """The EntryScored of a Scorable (its answer is not scored in "question" mode)."""
    answer = None if mode == "question" else target.entry.answer
    return entry_scored(target.entry, target.entry.question, answer, target.components,
                        duplicate_of=target.duplicate_of, judge=judge, threshold=threshold, analyzed=analyzed)


async def judge_entries(calls: Calls, judge: Provider, dataset_id: str, targets: Sequence[Scorable], *, mode: str,
                        threshold: float, graded: Callable[[EntryView], bool] | None = None) -> EngineResult:
    """Ask ``judge`` to rate each target and append its new EntryScored, showing "Judging entry n of N".

    ``graded``: checked before a verdict is written (a writer outside the lock may have graded the entry
    meanwhile): True, and the verdict is dropped, one grade per entry."""
    from dsetlog.engine.engine import WorkItem
    from dsetlog.llm.client import CallFailure

    units = [WorkItem(dataset_id, t.entry.item_id, quality.judge_prompt(t.entry.question, t.entry.answer, t.chunk or ""),
                      schema=quality.JUDGE_SCHEMA, context=t, record_attempts=False) for t in targets]

    def make_events(unit: WorkItem, c: Completion, attempt: int) -> list[Event]:
        target: Scorable = unit.context
        try:
            verdict = quality.parse_verdict(c.content)
        except replies.InvalidOutput as exc:
            raise CallFailure("invalid_output", str(exc), retryable=True) from None
        if graded is not None and graded(target.entry):
            return []
        return [scored(target, mode=mode, threshold=threshold, judge=(verdict.score, verdict.difficulty))]

    return await calls.run(judge, units, make_events, Phase.JUDGING, "Judging entry")
