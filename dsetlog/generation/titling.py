"""Titling: the chunking model writes a topic line for each chunk without a heading, once per chunk ever
(the prompt shows it as the chunk's heading). Titles belong to the project: runs of different datasets take
turns under the project's titles lock, and each titles only the chunks still untitled once it holds it."""

from __future__ import annotations

from typing import Any

from dsetlog.engine.stages import Outcome, Phase
from dsetlog.generation.calls import Stop, stopped
from dsetlog.generation.context import RunContext
from dsetlog.generation.plan import Chunk
from dsetlog.generation.texts import TITLE_PROMPT
from dsetlog.store import locks
from dsetlog.store.events import ChunkTitled, Event


async def title_chunks(ctx: RunContext) -> Stop | None:
    """Title the untitled chunks of the plan; a Stop when the run must end here."""

    def untitled() -> list[Chunk]:
        ctx.rm.catch_up()
        return [c for c in ctx.plan.chunks if not c.heading and not ctx.title(c.id)]

    if not untitled():
        return None
    project = ctx.plan.project
    lock = locks.project_titles(ctx.data_dir, project.id, job_id=ctx.job_id)
    if not await lock.acquire_async(on_wait=lambda holder: ctx.calls.waiting(holder, f"titling the chunks of "
                                                                                     f"project {project.name}"),
                                    stop=ctx.stop_requested):
        return Stop(Outcome.INTERRUPTED)
    try:
        todo = untitled()
        if not todo:
            return None  # another run titled them while this one waited
        return await _title(ctx, todo)
    finally:
        lock.release()


async def _title(ctx: RunContext, todo: list[Chunk]) -> Stop | None:
    from dsetlog.engine.engine import WorkItem
    from dsetlog.llm.client import CallFailure

    def make_events(unit: Any, c: Any, attempt: int) -> list[Event]:
        title = " ".join(c.content.strip().strip('"').split())[:120]
        if not title:
            raise CallFailure("empty", "no topic", retryable=True)
        ctx.rm.catch_up()
        if ctx.title(unit.item_id):
            return []  # titled meanwhile by a writer outside the lock: one title per chunk
        return [ChunkTitled(project_id=ctx.plan.project.id, chunk_id=unit.item_id, title=title, model=c.model)]

    units = [WorkItem(ctx.dataset_id, c.id, [{"role": "user", "content": TITLE_PROMPT.format(text=c.text[:6000])}],
                      max_tokens=32, record_attempts=False) for c in todo]
    result = await ctx.calls.run(ctx.models.chunk_topics, units, make_events, Phase.TITLING, "Titling chunk")
    ctx.rm.catch_up()
    return stopped(result)
