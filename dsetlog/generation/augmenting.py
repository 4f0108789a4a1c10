"""Augmenting (the project's data_augmentation parameter): a marked variant of each entry's question with
the same answer, rule-based (no call), each variant a slot and an entry of its own."""

from __future__ import annotations

from array import array

from dsetlog.engine.stages import Phase
from dsetlog.generation.context import RunContext
from dsetlog.ids import content_id, entry_id_for
from dsetlog.prompts import parameters
from dsetlog.store.events import EntryGenerated, Event, SlotQueued
from projections.columns import Views
from projections.fields import fields_of


def augment(ctx: RunContext) -> None:
    """Append the variants the log does not have yet."""
    technique = ctx.plan.params.data_augmentation if ctx.plan.params else "none"
    if technique == "none":
        return
    ctx.rm.catch_up()
    datasets = ctx.rm.datasets
    new: list[Event] = []
    views = datasets.views(ctx.dataset_id)
    fields = fields_of(views, ("item_id", "metadata"))  # (from the columns: no view of every entry)
    sources = array("i", (r for r, item_id, metadata in zip(views.order, fields["item_id"], fields["metadata"], strict=True)
                          if not metadata.get("variant_of")
                          and datasets.item(ctx.dataset_id, content_id("slot", item_id, technique)) is None))
    for entry in ctx.rm.iter_full(Views(views.rows, sources)):
        variant_item = content_id("slot", entry.item_id, technique)
        question = parameters.augment(entry.question, technique, seed=entry.id)
        if question is None:
            continue
        item = datasets.item(ctx.dataset_id, entry.item_id)
        new.append(SlotQueued(dataset_id=ctx.dataset_id, item_id=variant_item, chunk_id=entry.source_chunk,
                              slot=(item.row if item else 0), mode=ctx.req.generation_mode))
        new.append(EntryGenerated(
            dataset_id=ctx.dataset_id, item_id=variant_item, entry_id=entry_id_for(variant_item),
            question=question, answer=entry.answer, reasoning=entry.reasoning, category=entry.category,
            model=entry.model, provider=entry.provider, simulated=entry.simulated, run_id=ctx.job_id,
            prompt_name=entry.prompt_name, prompt_hash=entry.prompt_hash, source_chunk=entry.source_chunk,
            metadata={**entry.metadata, "augmentation": technique, "variant_of": entry.id}))
    if new:
        ctx.calls.show(Phase.AUGMENTING, f"Augmenting ({technique})")
        ctx.log.append_many(new)
        ctx.rm.catch_up()
