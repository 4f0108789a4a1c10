"""The generation engine: work items through an LLM, every step an event, resumable at any moment.

Workers (``concurrency`` of them) take items, call the model with retries, and
hand events to one writer task that group-commits them: whatever finished is
durable within one fsync, so a kill -9 loses at most the calls in flight. An
item is done once its entry is in the log; the caller only ever hands in items
that are not done, so a finished answer is never paid for twice.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import signal
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsetlog.engine.cores import PAYS, rows_per_s, second_core
from dsetlog.engine.progress import Budget, Cancel, Progress
from dsetlog.engine.stages import Outcome
from dsetlog.llm.client import (
    MAX_TOKENS_CAP,
    CallFailure,
    Completion,
    LLMClient,
    RetryPolicy,
    call_with_retries,
)
from dsetlog.llm.structured import Structured
from dsetlog.store.errors import LogWriteError
from dsetlog.store.events import AttemptFailed, AttemptStarted, EntryGenerated, Event, ItemBookmarked
from dsetlog.store.log import EventLog


@dataclass(frozen=True)
class WorkItem:
    dataset_id: str
    item_id: str
    messages: list[dict[str, Any]]
    prior_attempts: int = 0  # attempts made by earlier runs: numbering goes on from there
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = None
    schema: Structured | None = None  # the reply is this JSON; sent in the endpoint's structured mode
    context: Any = None  # whatever ``make_events`` needs (the question, the chunk, ...)
    members: tuple[str, ...] = ()  # the items one call serves (several slots of a chunk); default: item_id
    # Attempt and bookmark events are written for the dataset's own work items only; a helper call
    # (a chunk's topic, a judge's grade, a benchmark answer) is not an item of the dataset.
    record_attempts: bool = True

    @property
    def item_ids(self) -> tuple[str, ...]:
        return self.members or (self.item_id,)


# Turns a completion into the events that make the item done, directly or as an awaitable (when it
# needs a call of its own, such as repairing a reply). It may raise a retryable CallFailure (for
# example: structured output that does not parse).
MakeEvents = Callable[[WorkItem, Completion, int], "Sequence[Event] | Awaitable[Sequence[Event]]"]


@dataclass
class EngineResult:
    outcome: Outcome
    answered: int = 0
    failed: int = 0
    not_started: int = 0
    fatal: CallFailure | None = None


class EventWriter:
    """One thread that appends queued events in batches: many events, one write, one fsync.

    Events are handed over on a thread-safe queue and the thread takes whatever has arrived while its last
    fsync ran, so the event loop never waits for the disk nor hops threads per batch (an ``asyncio.to_thread``
    per batch, with its futures and wake-ups, cost more CPU than the append itself).

    When an append fails (disk full, read-only, I/O error) nothing more is written: ``failure`` holds the
    error, ``on_failure`` is called at once in the event loop (the engine stops calling the model), and what
    is still queued is counted in ``lost_entries`` (answers received but never recorded: the next run asks
    for them again).
    """

    def __init__(self, log: EventLog, *, max_batch: int = 5000,
                 on_failure: Callable[[LogWriteError], None] = lambda exc: None) -> None:
        self.log = log
        self.max_batch = max_batch
        self.on_failure = on_failure
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="dset-log-writer", daemon=True)
        self._loop: asyncio.AbstractEventLoop  # set by start(), which alone starts the thread
        self.committed = 0
        self.failure: LogWriteError | None = None
        self.lost_entries = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def put(self, event: Event) -> None:
        self._queue.put(event)

    def _run(self) -> None:
        closing = False
        while not closing:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    event = self._queue.get_nowait()
                except queue.Empty:
                    break
                if event is None:
                    closing = True
                    break
                batch.append(event)
            if self.failure is not None:
                self._lose(batch)
                continue
            try:
                self.log.append_many(batch)
            except LogWriteError as exc:
                self.failure = exc
                self._lose(batch)
                self._loop.call_soon_threadsafe(self.on_failure, exc)
                continue
            self.committed += len(batch)

    def _lose(self, batch: list[Event]) -> None:
        self.lost_entries += sum(isinstance(e, EntryGenerated) for e in batch)

    async def close(self) -> None:
        """Commit everything queued so far, then stop."""
        self._queue.put(None)
        if self._thread.is_alive():
            await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, self._thread.join))


@dataclass
class Engine:
    log: EventLog
    client: LLMClient
    policy: RetryPolicy
    make_events: MakeEvents
    progress: Progress
    run_id: str = ""
    concurrency: int = 8
    budget: Budget = field(default_factory=Budget)
    cancel: Cancel | None = None  # set: stop taking items, as when interrupted (a job cancelled by a user)
    price: tuple[float, float] | None = None  # USD per million input/output tokens
    cores: int | None = None  # 1: requests sent from this process; 2: from a send process; None: when it pays

    async def run(self, items: Sequence[WorkItem]) -> EngineResult:
        writer = EventWriter(self.log, on_failure=lambda exc: write_failed())
        writer.start()
        self.client.on_learned = writer.put  # a structured mode the endpoint refused is a fact for the log
        pending = deque(items)
        result = EngineResult(Outcome.COMPLETED)
        state = {"stop": ""}  # why workers stop taking items: "", "budget", "fatal", "interrupted", "write_failed"

        async def worker() -> None:
            while pending and not state["stop"]:
                if self.cancel is not None and self.cancel.is_set():
                    state["stop"] = "interrupted"
                    break
                if self.budget.reached(self.progress):
                    state["stop"] = "budget"
                    break
                await self._process(pending.popleft(), writer, result, state)

        async def ticker() -> None:
            while True:
                self.progress.refresh()
                await asyncio.sleep(0.1)

        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(worker()) for _ in range(max(1, min(self.concurrency, len(items) or 1)))]
        tick = asyncio.create_task(ticker())
        spread = asyncio.create_task(self._second_core(pending))

        def interrupt() -> None:
            state["stop"] = "interrupted"
            for task in tasks:
                task.cancel()  # in-flight calls are abandoned: their items stay pending for the next run

        def write_failed() -> None:
            # nothing more can be recorded: every further call would be paid for and lost
            interrupt()
            state["stop"] = "write_failed"

        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, interrupt)
                handled.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (a server job): the caller cancels us instead
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            interrupt()
            await asyncio.gather(*tasks, return_exceptions=True)
            state["stop"] = "interrupted"
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            tick.cancel()
            spread.cancel()
            await writer.close()
            self.progress.close()
        if writer.failure is not None:
            writer.failure.lost_entries = writer.lost_entries
            raise writer.failure
        result.not_started = len(pending)
        if state["stop"]:
            result.outcome = Outcome(state["stop"])  # (never "write_failed": that raised above)
        elif result.failed:
            result.outcome = Outcome.FAILED
        return result

    async def _second_core(self, pending: deque[WorkItem]) -> None:
        """Move the requests to a send process on another core once that pays (dsetlog.engine.cores), and
        (auto) back when it did not."""
        if not await second_core(self.cores, lambda: len(pending), self.concurrency):
            return
        if self.cores is not None:
            await self.client.use_send_process()
            return
        done = lambda: self.progress.done + self.progress.failed  # noqa: E731 - read at each end of a window
        alone = await rows_per_s(done)
        if not await self.client.use_send_process():
            return
        spread = await rows_per_s(done)
        if len(pending) and spread < alone * PAYS:
            await self.client.stop_send_process()

    async def _process(self, item: WorkItem, writer: EventWriter, result: EngineResult,
                       state: dict[str, str]) -> None:
        last_attempt = item.prior_attempts

        def on_attempt(attempt: int) -> None:
            nonlocal last_attempt
            last_attempt = attempt
            if not item.record_attempts:
                return
            for item_id in item.item_ids:
                writer.put(AttemptStarted(dataset_id=item.dataset_id, item_id=item_id, attempt=attempt,
                                          run_id=self.run_id))

        def on_failure(attempt: int, failure: CallFailure, delay: float | None) -> None:
            if not item.record_attempts:
                return
            for item_id in item.item_ids:
                writer.put(AttemptFailed(dataset_id=item.dataset_id, item_id=item_id, attempt=attempt,
                                         reason=str(failure), status_code=failure.status_code,
                                         retryable=delay is not None, run_id=self.run_id))

        limit = {"max_tokens": item.max_tokens, "grown": False}

        async def call(attempt: int) -> tuple[Completion, Sequence[Event]]:
            try:
                completion = await self.client.complete(item.messages, attempt=attempt, schema=item.schema,
                                                        response_format=item.response_format,
                                                        max_tokens=limit["max_tokens"])
            except CallFailure as failure:
                raise _more_room(failure, limit, self.client.max_tokens) if failure.cut else failure from None
            self._count_usage(completion)
            events = self.make_events(item, completion, attempt)
            if inspect.isawaitable(events):
                events = await events
            return completion, events

        try:
            _, events = await call_with_retries(call, self.policy, on_attempt=on_attempt, on_failure=on_failure,
                                                first_attempt=item.prior_attempts + 1)
        except CallFailure as failure:
            if failure.fatal:
                state["stop"] = "fatal"
                result.fatal = result.fatal or failure
                return
            for item_id in item.item_ids if item.record_attempts else ():
                writer.put(ItemBookmarked(dataset_id=item.dataset_id, item_id=item_id, reason=str(failure),
                                          attempts=last_attempt, run_id=self.run_id))
            result.failed += 1
            self.progress.failed += 1
            return
        for event in events:
            writer.put(event)
        result.answered += 1
        self.progress.done += 1

    def _count_usage(self, c: Completion) -> None:
        p = self.progress
        p.prompt_tokens += c.prompt_tokens
        p.completion_tokens += c.completion_tokens
        if self.price is not None:
            p.cost += (c.prompt_tokens * self.price[0] + c.completion_tokens * self.price[1]) / 1e6


def _more_room(failure: CallFailure, limit: dict[str, Any], default: int | None) -> CallFailure:
    """A reply cut inside its JSON: one more try with twice the max_tokens, if that stays within the cap."""
    current = limit["max_tokens"] or default
    if limit["grown"] or (current is not None and current >= MAX_TOKENS_CAP):
        return CallFailure("cut", f"{failure.message}; raise --max-tokens (or shorten the request)")
    limit["grown"] = True
    limit["max_tokens"] = min(MAX_TOKENS_CAP, current * 2) if current else MAX_TOKENS_CAP
    return CallFailure("cut", f"{failure.message}; trying once more with max_tokens={limit['max_tokens']}",
                       retryable=True, free=True)


async def run_reporting(engine: Engine, items: Sequence[WorkItem], report: Callable[[int, int], None], *,
                        every: float = 0.25) -> EngineResult:
    """``engine.run(items)`` with ``report(done, total)`` called every ``every`` seconds meanwhile (a job's live
    stage line), then the client closed."""
    start = engine.progress.done + engine.progress.failed

    async def watch() -> None:
        while True:
            report(engine.progress.done + engine.progress.failed - start, len(items))
            await asyncio.sleep(every)

    watcher = asyncio.create_task(watch())
    try:
        return await engine.run(items)
    finally:
        watcher.cancel()
        await engine.client.close()


def run_engine(engine: Engine, items: Sequence[WorkItem]) -> EngineResult:
    """Run in a fresh event loop (the CLI's entry point); Ctrl-C ends it cleanly via the signal handler."""
    async def main() -> EngineResult:
        try:
            return await engine.run(items)
        finally:
            await engine.client.close()

    return asyncio.run(main())
