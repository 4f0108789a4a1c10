"""Generating: one call per chunk asks for all of that chunk's missing slots at once (``datasets_per_chunk``
distinct items in one structured reply), never N identical calls. A reply that is not the JSON asked for
gets one repair by the parsing model before the attempt counts as failed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dsetlog.engine.stages import Outcome, Phase
from dsetlog.generation.calls import Stop, ended
from dsetlog.generation.context import RunContext
from dsetlog.generation.errors import DocGenError
from dsetlog.generation.plan import Chunk, slot_plan
from dsetlog.generation.texts import REPAIR_PROMPT
from dsetlog.ids import entry_id_for
from dsetlog.prompts import parameters, replies, templates
from dsetlog.store.events import EntryGenerated, Event, SlotQueued, Usage
from projections.datasets import DONE

if TYPE_CHECKING:
    from dsetlog.engine.engine import WorkItem
    from dsetlog.llm.client import Completion, LLMClient


@dataclass(frozen=True)
class ChunkCall:
    """What one call of this stage fills: a chunk's slots still to do, ``negatives`` of them unanswerable."""

    chunk: Chunk
    slots: tuple[SlotQueued, ...]
    negatives: int


async def generate_entries(ctx: RunContext) -> Stop:
    """Ask for every slot not done yet; how the calls ended."""
    units = _units(ctx)
    if not units:
        return Stop(Outcome.COMPLETED)
    parser = ctx.calls.parser(ctx.models.parse)
    try:
        make_events = _entries_maker(ctx, parser)
        if ctx.req.batch:
            return await _batched(ctx, units, make_events)
        result = await ctx.calls.run(ctx.models.generate, units, make_events, Phase.GENERATING, "Processing chunk")
    finally:
        await parser.close()
    return ended(result)


async def _batched(ctx: RunContext, units: list[WorkItem], make_events: Any) -> Stop:
    """The same work items and entries through the generating model's Batch API (a run started again polls the
    batches the log holds open, submits only what none holds), at its batch prices; what it hands back
    (batch_fallback "online") answered online."""
    from dsetlog.generation.batching import job_settings, run_batched

    req = ctx.req
    stop, _ = await run_batched(
        ctx.calls, ctx.models.generate, units, make_events, dataset_id=ctx.dataset_id,
        settings=job_settings(req.batch_fallback, req.batch_poll, cancel_batches=ctx.calls.cancel is not None),
        phase=Phase.GENERATING, step=f"Processing {len(units)} chunks through the Batch API", label="Processing chunk")
    return stop


def _units(ctx: RunContext) -> list[WorkItem]:
    """One work item per chunk with slots to do, its members those slots."""
    from dsetlog.engine.engine import WorkItem

    ctx.rm.catch_up()
    plan = {s.item_id: s for s in slot_plan(ctx.plan, ctx.dataset_id)}
    by_chunk: dict[str, list[Any]] = {}
    for item in ctx.rm.datasets.items(ctx.dataset_id):
        # only the slots: the titling calls' attempts (item id = chunk id) also name this dataset
        if item.status != DONE and item.item_id in plan:
            by_chunk.setdefault(item.source, []).append(item)
    chunks = {c.id: c for c in ctx.plan.chunks}
    mode = ctx.req.generation_mode
    units = []
    for chunk_id, items in by_chunk.items():
        chunk = chunks.get(chunk_id) or _chunk_from_log(ctx, chunk_id)
        slots = tuple(plan[i.item_id] for i in items if i.item_id in plan)
        if not slots:
            continue
        call = ChunkCall(chunk, slots, sum(s.negative for s in slots))
        units.append(WorkItem(
            ctx.dataset_id, slots[0].item_id, [{"role": "user", "content": _prompt(ctx, call)}],
            prior_attempts=max(i.attempts for i in items),
            schema=replies.reply_schema(mode, len(slots), ctx.plan.categories, describe=bool(ctx.req.custom_prompt)),
            context=call, members=tuple(s.item_id for s in slots)))
    return units


def _prompt(ctx: RunContext, call: ChunkCall) -> str:
    questions = [s.question for s in call.slots if s.question]  # "answer" mode's given questions
    variables = parameters.variables_from(ctx.plan.params, n=len(call.slots), categories=ctx.plan.categories,
                                       negatives=call.negatives, questions=questions)
    topic = call.chunk.heading or ctx.title(call.chunk.id)
    variables["chunk"] = f"[{topic}]\n{call.chunk.text}" if topic else call.chunk.text
    return templates.render(ctx.plan.template, variables)


def _chunk_from_log(ctx: RunContext, chunk_id: str) -> Chunk:
    view = ctx.rm.projects.chunk(chunk_id)
    if view is None:
        raise DocGenError(f"chunk {chunk_id} of dataset {ctx.dataset_id} is no longer in the log")
    return Chunk(view.id, view.text, view.heading)


def _entries_maker(ctx: RunContext, parser: LLMClient) -> Any:
    """The engine's make_events: a reply's items as the entries of the call's slots (repaired once if need be)."""
    mode = ctx.req.generation_mode

    async def make_events(unit: WorkItem, c: Completion, attempt: int) -> list[Event]:
        call: ChunkCall = unit.context
        items = await _items(ctx, parser, call, c.content, attempt)
        events: list[Event] = []
        for slot, item in zip(call.slots, items, strict=True):
            question = slot.question or item.question  # a given question is kept as it was asked
            events.append(EntryGenerated(
                dataset_id=ctx.dataset_id, item_id=slot.item_id, entry_id=entry_id_for(slot.item_id),
                question=question, answer=item.answer or "", reasoning=c.reasoning,
                category=item.category or "Other", model=c.model, provider=ctx.models.generate.profile,
                simulated=c.simulated,
                usage=Usage(prompt_tokens=c.prompt_tokens // len(call.slots),
                            completion_tokens=c.completion_tokens // len(call.slots)),
                latency_ms=round(c.latency_ms, 1), attempt=attempt, run_id=ctx.job_id,
                prompt_name=ctx.plan.template_name, prompt_hash=ctx.plan.template_hash, source_chunk=call.chunk.id,
                metadata={"mode": mode, "negative": item.negative, "chunk_length": len(call.chunk.text),
                          "profile": ctx.models.generate.named,
                          "slot": slot.slot, "job_id": ctx.job_id}))
        # The lock keeps other runs of this dataset out; this guards the write itself against any writer
        # that does not take it: a slot done meanwhile keeps its one entry.
        ctx.rm.catch_up()
        return [e for e in events if not _done(ctx, e.item_id)]

    return make_events


async def _items(ctx: RunContext, parser: LLMClient, call: ChunkCall, content: str,
                 attempt: int) -> list[replies.GeneratedItem]:
    from dsetlog.llm.client import CallFailure

    mode, categories = ctx.req.generation_mode, ctx.plan.categories

    given = any(s.question for s in call.slots)

    def parse(text: str) -> list[replies.GeneratedItem]:
        # given questions: the model may honestly find no answer in the text, so no count is imposed
        return replies.parse_items(mode, text, len(call.slots), categories=categories,
                                   negatives=None if given else call.negatives)

    try:
        return parse(content)
    except replies.InvalidOutput as first:
        # The parsing model gets one chance to turn the reply into the JSON asked for; if it cannot, the
        # attempt failed (retryable) and the generation model is asked again.
        try:
            repaired = await parser.complete(
                [{"role": "user", "content": REPAIR_PROMPT.format(problem=first, reply=content[:20000])}],
                attempt=attempt, schema=replies.reply_schema(mode, len(call.slots), categories, describe=True))
            return parse(repaired.content)
        except (replies.InvalidOutput, CallFailure) as exc:
            raise CallFailure("invalid_output", f"{first}; repair by {ctx.models.parse.model} failed: {exc}",
                              retryable=True) from None


def _done(ctx: RunContext, item_id: str) -> bool:
    item = ctx.rm.datasets.item(ctx.dataset_id, item_id)
    return item is not None and item.status == DONE
