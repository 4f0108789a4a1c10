"""Splitting: the kept entries (not under the quality threshold) go to train, validation and test, each
category in proportion, near-duplicates and augmentation variants in their source's split; with
``evaluation``, difficulty buckets too. A re-run that would make the same splits writes nothing."""

from __future__ import annotations

from dsetlog.engine.stages import Phase
from dsetlog.evaluation import splits
from dsetlog.generation.context import RunContext
from dsetlog.store.events import EvaluationSetsCreated


def split_entries(ctx: RunContext) -> None:
    ctx.rm.catch_up()
    req = ctx.req
    entries = [e for e in ctx.rm.datasets.entries(ctx.dataset_id) if not e.below_threshold]
    current = ctx.rm.evaluations.split_view(ctx.dataset_id)
    if (current is not None and set(current.splits) == {e.id for e in entries} and current.seed == req.seed
            and current.ratios == list(req.split_ratios)
            and bool(current.difficulty_buckets) >= req.evaluation):
        return  # the same entries are split already, as asked: a re-run keeps the splits stable
    ctx.calls.show(Phase.SPLITTING, "Making train/validation/test splits")
    roots: dict[str, str] = {}
    for e in entries:  # near-duplicates and augmentation variants share their source's group: one split
        link = e.duplicate_of or e.metadata.get("variant_of")
        roots[e.id] = roots.get(link, link) if link else e.id
    inputs = [splits.SplitInput(entry_id=e.id, category=e.category or "Other", group=roots[e.id]) for e in entries]
    assignment = splits.assign_splits(inputs, ratios=tuple(req.split_ratios), seed=req.seed)
    buckets = splits.difficulty_buckets(
        [splits.DifficultyInput(entry_id=e.id, difficulty=e.difficulty or "intermediate") for e in entries]
    ) if req.evaluation else {}
    ctx.log.append(EvaluationSetsCreated(dataset_id=ctx.dataset_id, seed=req.seed, ratios=list(req.split_ratios),
                                         splits=assignment, difficulty_buckets=buckets))
    ctx.rm.catch_up()
