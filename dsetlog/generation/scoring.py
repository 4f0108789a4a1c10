"""Scoring: every entry gets a quality score. Its structural checks always make one (cheap, no call); with
analyze_quality, groundedness and near-duplicates join them, and with a judge_model the judge's verdict too.
Entries scored already are skipped (an entry scored from its structural checks alone is analysed by a run that
asks for analysis); an earlier run's score under another quality_threshold stands, and only its
below-threshold mark is rewritten."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from dsetlog.engine.stages import Phase
from dsetlog.generation.calls import Stop, stopped
from dsetlog.generation.context import RunContext
from dsetlog.generation.judging import Scorable, entry_components, judge_entries, near_duplicates, scored
from dsetlog.store.events import EntryScored
from projections.views import EntryView

BATCH = 5000  # events per append


async def score_entries(ctx: RunContext) -> Stop | None:
    """Score (and judge) what is not scored yet; a Stop when the judge's calls end the run."""
    ctx.rm.catch_up()
    analyze = ctx.req.analyze_quality
    judge = ctx.models.judge if analyze else None
    threshold = ctx.req.quality_threshold
    todo, remark = [], []
    for target in components(ctx, analyze=analyze):
        e = target.entry
        if e.quality_score is None or (analyze and not e.quality_analyzed) or (judge is not None
                                                                              and "judge" not in e.quality):
            todo.append(target)  # not scored yet, or scored before analysis or a judge was asked for
        elif e.below_threshold != (e.quality_score < threshold):
            # scored by an earlier run with another quality_threshold: the score stands, the mark follows
            remark.append(EntryScored(dataset_id=ctx.dataset_id, entry_id=e.id, quality_score=e.quality_score,
                                      quality=e.quality, difficulty=e.difficulty, duplicate_of=e.duplicate_of,
                                      below_threshold=e.quality_score < threshold, analyzed=e.quality_analyzed))
    for batch in _batched(remark, BATCH):
        ctx.log.append_many(batch)
    if not todo:
        ctx.rm.catch_up()
        return None
    ctx.calls.show(Phase.SCORING, f"Scoring {len(todo)} entries")
    mode = ctx.req.generation_mode
    if judge is None:
        for batch in _batched(todo, BATCH):
            ctx.log.append_many([scored(t, mode=mode, threshold=threshold, judge=None, analyzed=analyze)
                                 for t in batch])
        ctx.rm.catch_up()
        return None
    result = await judge_entries(ctx.calls, judge, ctx.dataset_id, todo, mode=mode, threshold=threshold,
                                 graded=lambda entry: _graded(ctx, entry))
    ctx.rm.catch_up()
    return stopped(result)


def components(ctx: RunContext, *, analyze: bool = True) -> list[Scorable]:
    """Structural checks for every entry, in dataset order; with ``analyze``, groundedness and near-duplicates."""
    mode = ctx.req.generation_mode
    entries = ctx.rm.full(ctx.rm.datasets.entries(ctx.dataset_id))
    duplicates = near_duplicates(entries, mode=mode) if analyze else {}
    out = []
    for entry in entries:
        answer = None if mode == "question" else entry.answer
        chunk = ctx.rm.projects.chunk(entry.source_chunk) if analyze else None
        text = chunk.text if chunk else None
        comps = entry_components(entry.question, answer, text, mode=mode)
        out.append(Scorable(entry, comps, duplicates.get(entry.id), text))
    return out


def _graded(ctx: RunContext, entry: EntryView) -> bool:
    """Graded meanwhile by a writer outside the lock: one grade per entry."""
    ctx.rm.catch_up()
    now = ctx.rm.datasets.entry(ctx.dataset_id, entry.id)
    return now is not None and "judge" in now.quality


def _batched(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]
