"""Splitting: the kept entries (not under the quality threshold) go to train, validation and test, each
category in proportion, near-duplicates and augmentation variants in their source's split; with
``evaluation``, difficulty buckets too. A re-run that would make the same splits writes nothing."""

from __future__ import annotations

from typing import Any

from dsetlog.engine.stages import Phase
from dsetlog.evaluation import splits
from dsetlog.generation.context import RunContext
from dsetlog.store.events import EvaluationSetsCreated
from projections.fields import fields_of


def split_entries(ctx: RunContext) -> None:
    ctx.rm.catch_up()
    req = ctx.req
    entries = _kept(ctx)
    current = ctx.rm.evaluations.split_view(ctx.dataset_id)
    if (current is not None and set(current.splits) == {e[0] for e in entries} and current.seed == req.seed
            and current.ratios == list(req.split_ratios)
            and bool(current.difficulty_buckets) >= req.evaluation):
        return  # the same entries are split already, as asked: a re-run keeps the splits stable
    ctx.calls.show(Phase.SPLITTING, "Making train/validation/test splits")
    roots: dict[str, str] = {}
    for entry_id, _, duplicate_of, metadata, _ in entries:
        # near-duplicates and augmentation variants share their source's group: one split
        link = duplicate_of or metadata.get("variant_of")
        roots[entry_id] = roots.get(link, link) if link else entry_id
    inputs = [splits.SplitInput(entry_id=entry_id, category=category or "Other", group=roots[entry_id])
              for entry_id, category, _, _, _ in entries]
    assignment = splits.assign_splits(inputs, ratios=tuple(req.split_ratios), seed=req.seed)
    buckets = splits.difficulty_buckets(
        [splits.DifficultyInput(entry_id=entry_id, difficulty=difficulty or "intermediate")
         for entry_id, _, _, _, difficulty in entries]
    ) if req.evaluation else {}
    ctx.log.append(EvaluationSetsCreated(dataset_id=ctx.dataset_id, seed=req.seed, ratios=list(req.split_ratios),
                                         splits=assignment, difficulty_buckets=buckets))
    ctx.rm.catch_up()


_FIELDS = ("id", "category", "duplicate_of", "metadata", "difficulty")  # what a split reads of an entry


def _kept(ctx: RunContext) -> list[tuple[Any, ...]]:
    """_FIELDS of the entries not under the quality threshold, in the dataset's order (read from the columns:
    a dataset of millions makes no view)."""
    fields = fields_of(ctx.rm.datasets.views(ctx.dataset_id), ("below_threshold", *_FIELDS))
    return [row[1:] for row in zip(*fields.values(), strict=True) if not row[0]]
