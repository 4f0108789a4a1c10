"""Scoring: every entry's structural checks, groundedness and near-duplicates make its quality score; with
a judge_model, the judge's verdict joins it. Entries scored already are skipped; an earlier run's score under
another quality_threshold stands, and only its below-threshold mark is rewritten."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from dsetlog.engine.stages import Phase
from dsetlog.evaluation import quality
from dsetlog.generation.calls import Stop, stopped
from dsetlog.generation.context import RunContext
from dsetlog.generation.judging import Scorable, entry_components, judge_entries, scored
from dsetlog.store.events import EntryScored
from projections.datasets import EntryView

BATCH = 5000  # events per append


async def score_entries(ctx: RunContext) -> Stop | None:
    """Score (and judge) what is not scored yet; a Stop when the judge's calls end the run."""
    ctx.rm.catch_up()
    judge = ctx.models.judge
    threshold = ctx.req.quality_threshold
    todo, remark = [], []
    for target in components(ctx):
        e = target.entry
        if e.quality_score is None or (judge is not None and "judge" not in e.quality):
            todo.append(target)  # not scored yet, or scored before a judge was asked for
        elif e.below_threshold != (e.quality_score < threshold):
            # scored by an earlier run with another quality_threshold: the score stands, the mark follows
            remark.append(EntryScored(dataset_id=ctx.dataset_id, entry_id=e.id, quality_score=e.quality_score,
                                      quality=e.quality, difficulty=e.difficulty, duplicate_of=e.duplicate_of,
                                      below_threshold=e.quality_score < threshold))
    for batch in _batched(remark, BATCH):
        ctx.log.append_many(batch)
    if not todo:
        ctx.rm.catch_up()
        return None
    ctx.calls.show(Phase.SCORING, f"Scoring {len(todo)} entries")
    mode = ctx.req.generation_mode
    if judge is None:
        for batch in _batched(todo, BATCH):
            ctx.log.append_many([scored(t, mode=mode, threshold=threshold, judge=None) for t in batch])
        ctx.rm.catch_up()
        return None
    result = await judge_entries(ctx.calls, judge, ctx.dataset_id, todo, mode=mode, threshold=threshold,
                                 graded=lambda entry: _graded(ctx, entry))
    ctx.rm.catch_up()
    return stopped(result)


def components(ctx: RunContext) -> list[Scorable]:
    """Structural checks, groundedness and near-duplicates for every entry, in dataset order."""
    index = quality.NearDuplicates()
    mode = ctx.req.generation_mode
    out = []
    for entry in ctx.rm.datasets.entries(ctx.dataset_id):
        answer = None if mode == "question" else entry.answer
        chunk = ctx.rm.projects.chunk(entry.source_chunk)
        text = chunk.text if chunk else None
        comps = entry_components(entry.question, answer, text, mode=mode)
        duplicate_of = index.add(entry.id, f"{entry.question} {answer or ''}")
        if entry.metadata.get("variant_of"):
            duplicate_of = None  # a marked augmentation variant is meant to be close to its source
        out.append(Scorable(entry, comps, duplicate_of, text))
    return out


def _graded(ctx: RunContext, entry: EntryView) -> bool:
    """Graded meanwhile by a writer outside the lock: one grade per entry."""
    ctx.rm.catch_up()
    now = ctx.rm.datasets.entry(ctx.dataset_id, entry.id)
    return now is not None and "judge" in now.quality


def _batched(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]
