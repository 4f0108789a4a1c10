"""Work items through a provider's Batch API (``--batch``): submitted, polled and read back, resumably.

:class:`BatchRun` takes the work items an engine would take (:class:`~dsetlog.engine.engine.WorkItem`) and the
same ``make_events``, so a batch answer becomes the same EntryGenerated, scored and provenanced as an online
one (:func:`dsetlog.llm.client.completion_of` reads its reply the way an online call's is read). Every step is
an event, written before the next call that depends on it:

1. the input file is uploaded, then BatchInputUploaded (its items, its token estimate) is recorded;
2. the batch is created on it, then BatchSubmitted (with one AttemptStarted per item) is recorded; a run
   killed between the two finds the batch by its input file on the provider (``adopted``), or creates it;
3. each poll that finds new counts records BatchProgress;
4. an ended batch's output and error files are read back: entries, AttemptFailed / ItemBookmarked, and its
   end (BatchCompleted, BatchFailed, BatchExpired or BatchCancelled) in one write. Items it failed or left
   are submitted again in a new batch (or answered online: ``fallback="online"``) while their retries last.

A run started again polls the batches the log holds open and submits only the items none holds
(:meth:`projections.batches.Batches.held`); an item answered already is never answered again. Prices are
the profile's times its batch discount; a budget refuses a batch whose estimate would cross it.

The work items are a dataset's: its questions or chunk slots (answered once their entry exists), or the entries
a regeneration makes new revisions of (its ``done``: a revision of this job; its batches its own, not the
dataset's: projections.batches' owners). :func:`run_batched` is the one way a run sends its items so, online
what the batches hand back.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import msgspec

from dsetlog.engine.progress import Budget, Cancel, Progress, duration
from dsetlog.engine.stages import Outcome, Phase
from dsetlog.store.events import (
    AttemptFailed,
    AttemptStarted,
    BatchCancelled,
    BatchCompleted,
    BatchExpired,
    BatchFailed,
    BatchInputUploaded,
    BatchProgress,
    BatchSubmitted,
    EntryGenerated,
    EntryRegenerated,
    Event,
    ItemBookmarked,
)
from dsetlog.store.log import EventLog
from projections.batches import BatchView, UploadView
from projections.datasets import DONE
from projections.readmodel import ReadModel

if TYPE_CHECKING:
    from dsetlog.engine.engine import MakeEvents, WorkItem
    from dsetlog.generation.calls import Calls, Stop
    from dsetlog.llm.batches import BatchClient, BatchState, InputFile, Result
    from dsetlog.llm.providers import Provider

FALLBACKS = ("none", "online")
ENDS: dict[str, type[Event]] = {"completed": BatchCompleted, "failed": BatchFailed, "expired": BatchExpired,
                                "cancelled": BatchCancelled}
_LIST_PAGES = 10  # pages of the provider's batch list searched for a batch whose create was never recorded


@dataclass(frozen=True)
class BatchSettings:
    """How a run uses the Batch API. ``fallback``: "online" answers online what the server cannot batch (no
    Batch API) and what batches failed; "none" stops with a message instead. ``poll_first``/``poll_cap``: the
    polling backoff (dsetlog.llm.batches.poll_delay). ``max_requests``/``max_bytes``: per input file (None:
    the profile's). ``cancel``: cancel the dataset's open batches, read back what they answered, submit nothing.
    ``cancel_batches``: the run's cancel, once set, does what ``cancel`` does (a server job a user cancelled)
    instead of leaving the batches running for the next run (Ctrl-C's)."""

    fallback: str = "none"
    poll_first: float = 5.0
    poll_cap: float = 300.0
    max_requests: int | None = None
    max_bytes: int | None = None
    cancel: bool = False
    cancel_batches: bool = False


def check_batch_fields(batch: bool, fallback: str, poll: float) -> None:
    """A request's ``batch``, ``batch_fallback`` and ``batch_poll`` (POST /generate's and /regenerate's): a
    ValueError saying what is wrong."""
    if fallback != "none" and not batch:
        raise ValueError("batch_fallback goes with batch")
    if not poll > 0:
        raise ValueError("batch_poll must be more than 0 seconds")


def job_settings(fallback: str, poll: float, *, cancel_batches: bool) -> BatchSettings:
    """The settings of a request's ``batch`` (``poll``: its ``batch_poll``, the first wait, doubling up to 5 min;
    a sub-second poll, a test's, up to four times itself)."""
    return BatchSettings(fallback=fallback, poll_first=poll, poll_cap=max(poll, 300.0 if poll >= 1 else poll * 4),
                         cancel_batches=cancel_batches)


@dataclass
class BatchOutcome:
    """How the batch part of a run ended. ``online``: the items left to answer online (fallback);
    ``message``: why it stopped (a budget refusal, an unsupported server, an interrupt)."""

    outcome: Outcome = Outcome.COMPLETED
    answered: int = 0
    failed: int = 0
    submitted: int = 0  # batches this run submitted
    open: int = 0  # batches of the dataset still open on the provider when it returned
    cancelled: int = 0
    message: str = ""
    online: list[WorkItem] = field(default_factory=list)


class _Stop(Exception):  # noqa: N818 - control flow inside this module: the run stops with this outcome
    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome, self.message = outcome, message


@dataclass
class _Ending:
    """What reading an ended batch back gave: its events and the items to try again."""

    events: list[Event]
    again: list[WorkItem]
    answered: int = 0
    bookmarked: int = 0

class _Submitting:
    """The submitting half of a :class:`BatchRun`: input files within the limits and the budget, uploaded and
    made batches of, each step recorded before the next."""

    def __init__(self, *, log: EventLog, rm: ReadModel, provider: Provider, dataset_id: str, run_id: str,
                 make_events: MakeEvents, progress: Progress, settings: BatchSettings, max_retries: int = 3,
                 budget: Budget | None = None, price: tuple[float, float] | None = None,
                 sampling: dict[str, Any] | None = None, cancel: Cancel | None = None,
                 done: Callable[[str], bool] | None = None) -> None:
        self.log, self.rm, self.provider, self.dataset_id, self.run_id = log, rm, provider, dataset_id, run_id
        self.make_events, self.progress, self.settings = make_events, progress, settings
        self.max_retries, self.budget, self.price = max_retries, budget or Budget(), price
        self.sampling, self.cancel = sampling or {}, cancel or Cancel()
        self._done = done or self._has_entry  # whether an item is answered: by default, its work item has its entry
        self.owner = rm.batches.owner_of(run_id)  # whose batches this run polls (projections.batches' owners)
        self.items: dict[str, WorkItem] = {}
        self.tries: dict[str, int] = {}  # submissions of each item by this run (an open batch's count once)
        self.result = BatchOutcome()
        self.limits = provider.batch
        self._loop: asyncio.AbstractEventLoop | None = None  # where an async make_events runs

    def _has_entry(self, item_id: str) -> bool:
        view = self.rm.datasets.item(self.dataset_id, item_id)
        return view is not None and view.status == DONE

    def _not_done(self, items: list[WorkItem]) -> list[WorkItem]:
        """The items not answered yet, their attempt numbering where the log has it."""
        self.rm.catch_up()
        out = []
        for item in items:
            if not self._done(item.item_id):
                view = self.rm.datasets.item(self.dataset_id, item.item_id)
                out.append(replace(item, prior_attempts=view.attempts if view else item.prior_attempts))
        return out

    def _open(self) -> list[BatchView]:
        """The open batches this run polls: the dataset's of its owner."""
        return self.rm.batches.open_batches(self.dataset_id, self.owner)

    # -- submitting

    def _submit_within(self, client: BatchClient, items: Sequence[WorkItem]) -> None:
        """Submit what the budget allows; a refusal stops the submitting, not the polling of what was sent."""
        try:
            self._submit(client, items)
        except _Stop as stop:
            if stop.outcome != Outcome.BUDGET:
                raise
            self.result.outcome, self.result.message = stop.outcome, stop.message

    def _submit(self, client: BatchClient, items: Sequence[WorkItem]) -> None:
        """Upload and create batches of the items (split by the limits), each within the budget."""
        from dsetlog.llm.batches import write_inputs

        if not items:
            return
        bodies = request_bodies(self.provider, items, self.sampling)
        estimates = {cid: estimate(body) for cid, body in bodies}
        files = write_inputs(bodies, max_requests=self.settings.max_requests or self.limits.max_requests,
                             max_bytes=self.settings.max_bytes or self.limits.max_bytes)
        for number, batch_input in enumerate(files, 1):
            if self.cancel.is_set():
                if self.settings.cancel_batches:
                    return  # what was submitted is cancelled by the poll
                raise _Stop(Outcome.INTERRUPTED, "interrupted while submitting: run the same command again to "
                            "collect what was submitted and submit the rest")
            prompt = sum(estimates[c][0] for c in batch_input.custom_ids)
            completion = sum(estimates[c][1] for c in batch_input.custom_ids)
            self._within_budget(len(batch_input), prompt, completion)
            self._upload_and_create(client, batch_input, prompt + completion, number)

    def _within_budget(self, requests: int, prompt: int, completion: int) -> None:
        """Raise _Stop(BUDGET) when a batch of this estimate, on top of what the run spent and holds open,
        would cross the budget."""
        open_tokens = sum(b.estimated_tokens for b in self._open() if b.run_id == self.run_id)
        tokens = prompt + completion
        cost = (prompt * self.price[0] + completion * self.price[1]) / 1e6 if self.price is not None else 0.0
        open_cost = open_tokens * max(self.price) / 1e6 if self.price is not None else 0.0
        over_tokens = self.budget.tokens is not None and self.progress.tokens + open_tokens + tokens > self.budget.tokens
        over_cost = self.budget.cost is not None and self.progress.cost + open_cost + cost > self.budget.cost
        if over_tokens or over_cost:
            raise _Stop(Outcome.BUDGET, f"a batch of {requests} requests would take up to ~{tokens:,} tokens "
                        f"(~${cost:.4f} at batch prices) and cross --budget {self.budget}; it was not submitted. "
                        "Run again with a larger --budget to submit it")

    def _upload_and_create(self, client: BatchClient, batch_input: InputFile, estimated: int, number: int) -> None:
        file_id = client.upload(batch_input, filename=f"dset-{self.dataset_id}-{self.run_id}-{number}.jsonl")
        upload = BatchInputUploaded(dataset_id=self.dataset_id, input_file_id=file_id,
                                    item_ids=list(batch_input.custom_ids), model=batch_input.model or "",
                                    requests=len(batch_input), bytes=batch_input.size, endpoint=self.provider.endpoint,
                                    run_id=self.run_id, estimated_tokens=estimated)
        self.log.append(upload)
        self.rm.catch_up()
        view = next(u for u in self.rm.batches.open_uploads(self.dataset_id, self.owner)
                    if u.input_file_id == file_id)
        self._create(client, view)

    def _create(self, client: BatchClient, upload: UploadView, found: BatchState | None = None) -> None:
        """Create the batch of an upload (or record ``found``, made by a run that died before recording it),
        with one AttemptStarted per item."""
        state = found or client.create(upload.input_file_id, metadata={"dset_dataset": self.dataset_id,
                                                                       "dset_run": self.run_id})
        events: list[Event] = [BatchSubmitted(
            dataset_id=self.dataset_id, batch_id=state.id, input_file_id=upload.input_file_id,
            item_ids=upload.item_ids, model=upload.model, requests=upload.requests, status=state.status,
            endpoint=self.provider.endpoint, run_id=self.run_id, adopted=found is not None)]
        for item_id in upload.item_ids:
            view = self.rm.datasets.item(self.dataset_id, item_id)
            events += [AttemptStarted(dataset_id=self.dataset_id, item_id=member,
                                      attempt=(view.attempts if view else 0) + 1, run_id=self.run_id)
                       for member in self._members(item_id)]
            self.tries[item_id] = self.tries.get(item_id, 0) + 1
        self.log.append_many(events)
        self.rm.catch_up()
        self.result.submitted += found is None

    def _members(self, item_id: str) -> tuple[str, ...]:
        """The items a request serves (a chunk's slots: their attempts are recorded as the engine records them)."""
        item = self.items.get(item_id)
        return item.item_ids if item is not None else (item_id,)

    def _resume_uploads(self, client: BatchClient) -> None:
        """Uploads whose batch a dead run never recorded: the batch the provider made of each, else a new one."""
        from dsetlog.llm.batches import BatchNotFound, BatchRejected

        uploads = self.rm.batches.open_uploads(self.dataset_id, self.owner)
        if not uploads:
            return
        wanted, found = {u.input_file_id for u in uploads}, {}
        after = None
        for _ in range(_LIST_PAGES):
            page = client.list_batches(limit=100, after=after)
            found.update({b.input_file_id: b for b in page if b.input_file_id in wanted})
            if not page or wanted <= set(found):
                break
            after = page[-1].id
        for upload in uploads:
            if self.settings.cancel and upload.input_file_id not in found:
                self.log.append(BatchFailed(dataset_id=self.dataset_id, batch_id="", input_file_id=upload.input_file_id,
                                            reason="cancelled (--batch-cancel) before its batch was made"))
                self.rm.catch_up()
                continue
            try:
                self._create(client, upload, found.get(upload.input_file_id))
            except (BatchNotFound, BatchRejected) as exc:  # the file expired or was refused: its items are free
                self.log.append(BatchFailed(dataset_id=self.dataset_id, batch_id="", input_file_id=upload.input_file_id,
                                            reason=exc.message[:500]))
                self.rm.catch_up()


class BatchRun(_Submitting):
    """One run's batches for one dataset (see the module's steps). ``price``: batch prices (USD per million
    input and output tokens), or None when the model has none; ``max_retries``: submissions of an item after
    its first, in this run."""

    # -- the run

    def run(self, items: Sequence[WorkItem]) -> BatchOutcome:
        """Submit, poll and read back until no batch of the dataset is open; its outcome."""
        from dsetlog.llm.batches import BatchClient, BatchError, BatchUnsupported

        self.items = {i.item_id: i for i in items}
        try:
            with sigint_cancels(self.cancel), BatchClient.for_provider(self.provider) as client:
                if self.limits.supported is False:
                    raise BatchUnsupported("unsupported", f"the {self.provider.named} profile's server "
                                           f"({self.provider.endpoint}) has no Batch API")
                self._resume_uploads(client)
                for view in self._open():
                    for item_id in view.item_ids:
                        self.tries[item_id] = 1
                if self.settings.cancel:
                    self._cancel_open(client)
                else:
                    held = self.rm.batches.held(self.dataset_id, self.owner)
                    self._submit_within(client, [i for i in items if i.item_id not in held])
                self._poll(client)
        except _Stop as stop:
            self.result.outcome, self.result.message = stop.outcome, stop.message
        except BatchUnsupported as exc:
            self._unsupported(exc)
        except BatchError as exc:  # a refused key, no quota: every further call would fail the same way
            self.result.outcome, self.result.message = Outcome.FATAL, exc.message
        self.rm.catch_up()
        self.result.open = len(self._open())
        if self._loop is not None:
            self._loop.close()
        self.progress.detail = ""
        self.progress.close()
        return self.result

    def _unsupported(self, exc: Exception) -> None:
        if self.settings.fallback == "online" and not self._open():
            self.result.online = self._not_done(list(self.items.values()))
            return
        self.result.outcome = Outcome.FATAL
        self.result.message = (f"{exc}; nothing was submitted. Run without --batch, or with --batch-fallback online "
                               "to answer online what cannot be batched")

    # -- polling and reading back

    def _poll(self, client: BatchClient) -> None:
        """Poll the dataset's open batches until none is left, reading each back as it ends."""
        from dsetlog.llm.batches import BatchNotFound, BatchUnavailable, poll_delay

        attempt = -1  # the first wait is poll_delay(0)
        while self._open():
            if self.cancel.is_set() and self.settings.cancel_batches and not self.settings.cancel:
                self._cancel_for_job(client)
                attempt = -1  # the cancelled batches are read back as soon as they end
            views = self._open()
            states: list[BatchState] = []
            submitted = self.result.submitted
            for view in views:
                try:
                    state = client.retrieve(view.batch_id)
                    states.append(state)
                    self._progress(view, state)
                    if state.ended:
                        self._read_back(client, view, state)
                except BatchUnavailable:
                    continue  # a 429, 5xx or dropped connection: asked again at the next poll
                except BatchNotFound as exc:
                    self._gone(client, view, exc.message)
            if states:
                self.progress.detail = detail(states)
                self.progress.refresh()
            if not self._open():
                break
            # a batch of retries was just made: polled from the first delay again, not at the cap
            attempt = 0 if self.result.submitted != submitted else attempt + 1
            self._sleep(poll_delay(attempt, first=self.settings.poll_first, cap=self.settings.poll_cap))

    def _sleep(self, seconds: float) -> None:
        """Wait, in slices, so that Ctrl-C (the run's cancel) is seen within a tenth of a second."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if self.cancel.is_set() and self.settings.cancel_batches:
                if not self.settings.cancel:
                    return  # cancelled at the next turn of the poll
            elif self.cancel.is_set():
                left = len(self._open())
                raise _Stop(Outcome.INTERRUPTED, f"interrupted; {left} batch(es) left running on the provider: run "
                            "the same command again to collect them, or add --batch-cancel to cancel them")
            time.sleep(min(0.1, max(0.0, until - time.monotonic())))

    def _progress(self, view: BatchView, state: BatchState) -> None:
        if (state.status, state.total, state.completed, state.failed) != (view.status, view.total, view.completed,
                                                                          view.failed):
            self.log.append(BatchProgress(dataset_id=self.dataset_id, batch_id=view.batch_id, status=state.status,
                                          total=state.total, completed=state.completed, failed=state.failed))
            self.rm.catch_up()

    def _gone(self, client: BatchClient, view: BatchView, message: str) -> None:
        """The provider knows the batch no more: it ended answering nothing, and its items are tried again."""
        ending = self._ending(view, {}, status="failed")
        ending.events.append(BatchFailed(dataset_id=self.dataset_id, batch_id=view.batch_id, reason=message[:500],
                                         total=view.requests, retried=len(ending.again),
                                         bookmarked=ending.bookmarked))
        self._record(client, ending)

    def _read_back(self, client: BatchClient, view: BatchView, state: BatchState) -> None:
        results = client.results(state) if (state.output_file_id or state.error_file_id) else {}
        ending = self._ending(view, results, status=state.status)
        fields: dict[str, Any] = {
            "dataset_id": self.dataset_id, "batch_id": view.batch_id, "output_file_id": state.output_file_id,
            "error_file_id": state.error_file_id, "total": state.total, "completed": state.completed,
            "failed": state.failed, "answered": ending.answered, "retried": len(ending.again),
            "bookmarked": ending.bookmarked}
        if state.status == "failed":
            fields["reason"] = "; ".join(f"{i.code}: {i.message}" for i in state.issues)[:2000]
        ending.events.append(ENDS[state.status](**fields))
        self._record(client, ending)

    def _record(self, client: BatchClient, ending: _Ending) -> None:
        """Write a batch's ending at once (its entries, failures and end), then send its retries on."""
        self.log.append_many(ending.events)
        self.rm.catch_up()
        self.result.answered += ending.answered
        self.result.failed += ending.bookmarked
        if not ending.again or self.settings.cancel:
            return
        if self.settings.fallback == "online":
            self.result.online.extend(self._not_done(ending.again))
        else:
            self._submit_within(client, ending.again)

    def _ending(self, view: BatchView, results: dict[str, Result], *, status: str) -> _Ending:
        """Entries for the batch's answers, failures for the rest; which of those to try again."""
        from dsetlog.llm.client import CallFailure, completion_of

        ending = _Ending([], [])
        for item_id in view.item_ids:
            item, known = self.items.get(item_id), self.rm.datasets.item(self.dataset_id, item_id)
            if item is None or known is None or self._done(item_id):
                continue  # answered meanwhile, or no longer an item of this run's input: never a second entry
            result, attempt = results.get(item_id), known.attempts
            try:
                if result is None:
                    raise CallFailure("unanswered", f"batch {view.batch_id} ended {status} before answering it",
                                      retryable=True)
                if not result.ok:
                    raise CallFailure(result.error_code or "error", f"batch {view.batch_id}: "
                                      f"{result.error_code}: {result.error_message or ''}".rstrip(": "),
                                      status_code=result.status_code, retryable=result.retryable)
                completion = completion_of(result.body or {}, model=view.model, simulated=self.provider.simulated,
                                           max_tokens=self.sampling.get("max_tokens"),
                                           structured_reply=item.schema is not None)
                # a reply the maker refuses (empty, unparseable after its repair) fails as an online one does
                events = self._entry_events(item, completion, attempt, view.batch_id)
            except CallFailure as failure:
                self._failed(ending, item, attempt, failure)
                continue
            self._count(completion.prompt_tokens, completion.completion_tokens)
            ending.events.extend(events)
            ending.answered += 1
        return ending

    def _entry_events(self, item: WorkItem, completion: Any, attempt: int, batch_id: str) -> list[Event]:
        events = self.make_events(item, completion, attempt)
        if inspect.isawaitable(events):  # a maker that makes calls of its own (a repair): one loop for them all,
            # since the clients it calls keep their connections in the loop they were first used in
            self._loop = self._loop or asyncio.new_event_loop()
            events = self._loop.run_until_complete(_awaited(events))
        return [msgspec.structs.replace(e, metadata={**e.metadata, "batch_id": batch_id})
                if isinstance(e, EntryGenerated) else
                msgspec.structs.replace(e, config={**e.config, "batch_id": batch_id})
                if isinstance(e, EntryRegenerated) else e for e in events]

    def _failed(self, ending: _Ending, item: WorkItem, attempt: int, failure: Any) -> None:
        again = (failure.retryable and not self.settings.cancel
                 and self.tries.get(item.item_id, 1) <= self.max_retries)
        ending.events += [AttemptFailed(dataset_id=self.dataset_id, item_id=member, attempt=attempt,
                                        reason=str(failure), status_code=failure.status_code,
                                        retryable=failure.retryable, run_id=self.run_id) for member in item.item_ids]
        if again:
            ending.again.append(item)
        elif not (failure.retryable and self.settings.cancel):  # a cancel leaves its items for the next run
            ending.events += [ItemBookmarked(dataset_id=self.dataset_id, item_id=member, reason=str(failure),
                                             attempts=attempt, run_id=self.run_id) for member in item.item_ids]
            ending.bookmarked += 1
            self.progress.failed += 1

    def _count(self, prompt: int, completion: int) -> None:
        p = self.progress
        p.prompt_tokens += prompt
        p.completion_tokens += completion
        p.done += 1
        if self.price is not None:
            p.cost += (prompt * self.price[0] + completion * self.price[1]) / 1e6

    # -- cancelling

    def _cancel_for_job(self, client: BatchClient) -> None:
        """The job was cancelled: its open batches are cancelled, what they answered is kept, nothing is retried."""
        self.settings = replace(self.settings, cancel=True)
        self._cancel_open(client)
        self.result.outcome = Outcome.INTERRUPTED
        self.result.message = f"cancelled: {self.result.cancelled} batch(es) cancelled on the provider"

    def _cancel_open(self, client: BatchClient) -> None:
        """Ask the provider to cancel every open batch of the dataset; polling then reads back what they answered."""
        from dsetlog.llm.batches import BatchNotFound, BatchRejected

        for view in self._open():
            try:
                state = client.cancel(view.batch_id)
            except BatchRejected:
                continue  # it ended meanwhile: read back as it ended
            except BatchNotFound as exc:
                self._gone(client, view, exc.message)
                continue
            self._progress(view, state)
            self.result.cancelled += 1


async def run_batched(calls: Calls, provider: Provider, units: list[WorkItem], make_events: MakeEvents, *,
                      dataset_id: str, settings: BatchSettings, phase: Phase, step: str, label: str,
                      sampling: dict[str, Any] | None = None,
                      done: Callable[[str], bool] | None = None) -> tuple[Stop, int]:
    """A run's work items through ``provider``'s Batch API at its batch prices (a :class:`BatchRun` under the run's
    progress, budget, retries and cancel), then online what it hands back (``fallback`` "online"); how it ended
    and the items answered. ``step``: the stage shown meanwhile; ``label``: the online calls' (as Calls.run's)."""
    from dsetlog.generation.calls import Stop, ended

    loop, sampling = asyncio.get_running_loop(), sampling or {}

    def on_loop(unit: WorkItem, c: Any, attempt: int) -> Any:
        events = make_events(unit, c, attempt)
        if inspect.isawaitable(events):
            # BatchRun polls in a thread (its waits would block the loop); a maker's own calls (a repair) run on
            # this loop, where its clients keep their connections
            return asyncio.run_coroutine_threadsafe(_awaited(events), loop).result()
        return events

    discount, price = provider.batch.discount, provider.price()
    cancel = calls.cancel or Cancel()
    calls.progress.total += len(units)
    calls.show(phase, step, 0, len(units))
    run = BatchRun(log=calls.log, rm=calls.rm, provider=provider, dataset_id=dataset_id, run_id=calls.run_id,
                   make_events=on_loop, progress=calls.progress, settings=settings,
                   max_retries=calls.retry.max_retries if calls.retry else 3, budget=calls.budget,
                   price=(price[0] * discount, price[1] * discount) if price is not None else None, cancel=cancel,
                   sampling=sampling, done=done)
    # the command's run (no job's cancel): Ctrl-C sets the run's cancel, seen between polls (BatchRun's thread
    # cannot install the handler itself); a server job's worker sets its job's cancel instead
    with sigint_cancels(cancel) if calls.cancel is None else nullcontext():
        out = await asyncio.to_thread(run.run, units)
    if out.online and out.outcome not in (Outcome.INTERRUPTED, Outcome.FATAL):
        calls.progress.total -= len(out.online)  # counted again by the online engine
        online = await calls.run(provider, out.online, make_events, phase, label, **sampling)
        return ended(online), out.answered + online.answered
    if out.outcome is Outcome.COMPLETED and out.failed:
        return Stop(Outcome.FAILED), out.answered
    return Stop(out.outcome, out.message), out.answered


def request_bodies(provider: Provider, items: Sequence[WorkItem],
                   sampling: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(item id, chat body)`` of each item: the body an online call of it would post."""
    from dsetlog.llm.client import request_body

    return [(i.item_id, request_body(provider, i.messages, response_format=i.response_format, schema=i.schema,
                                     temperature=sampling.get("temperature"),
                                     max_tokens=i.max_tokens or sampling.get("max_tokens"))[0])
            for i in items]


def estimate(body: dict[str, Any]) -> tuple[int, int]:
    """(prompt, completion) tokens a request may take: its messages' estimate, and its max_tokens (or the
    average dsetlog.llm.client.estimate_tokens allows one)."""
    from dsetlog.llm.client import estimate_tokens

    total = estimate_tokens(body["messages"], body.get("max_tokens"))
    completion = total - estimate_tokens(body["messages"], 1) + 1
    return total - completion, completion


def detail(states: list[BatchState], now: float | None = None) -> str:
    """The progress line's batch part: states, the provider's counts, an ETA from their rate since the first
    submission (``now``: the epoch seconds, the provider's clock)."""
    by_status: dict[str, int] = {}
    for s in states:
        by_status[s.status] = by_status.get(s.status, 0) + 1
    total = sum(s.total for s in states)
    finished = sum(s.completed + s.failed for s in states)
    left = remaining(total, finished, [s.created_at for s in states if s.created_at], now)
    eta = duration(left) if left is not None else "--:--"
    states_text = ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))
    return f"batches: {states_text} | requests {finished}/{total} | ETA {eta}"


def remaining(total: int, finished: int, started: Sequence[float], now: float | None = None) -> float | None:
    """Seconds until ``total`` requests are finished at the rate ``finished`` were since the first batch
    started (``started``: epoch seconds); None while there is no rate to go by, or nothing is left."""
    now = time.time() if now is None else now
    elapsed = max((now - t for t in started), default=0.0)
    rate = finished / elapsed if elapsed > 0 else 0.0
    return (total - finished) / rate if rate > 0 and total > finished else None


async def _awaited(events: Any) -> Any:
    return await events


@contextmanager
def sigint_cancels(cancel: Cancel) -> Iterator[None]:
    """Ctrl-C sets the run's cancel (seen between polls) instead of raising inside a write to the log."""
    if threading.current_thread() is not threading.main_thread():
        yield  # a server job: its worker sets the cancel
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: cancel.set("interrupted"))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
