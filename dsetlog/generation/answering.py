"""Answering a questions file (`dset generate QUESTIONS.csv`, the seed "dset" script's job): every question
answered once, resumably, and the seed's outputs written.

The run is a dataset in the log, named by :func:`dataset_id_for`, one item per question (:func:`item_id_for`).
Running it again continues it: answered questions are never requested again, pending and failed ones are.
A caller fills :class:`AnswerSettings`, opens the run (:meth:`QuestionsRun.open`: the questions read, the
places checked, the provider, the log, the dataset's lock), then :meth:`~QuestionsRun.start` records the
dataset, its new questions and the run's start and says what is left (:class:`Started`), and
:meth:`~QuestionsRun.answer` answers them, records the run's end, writes the outputs, bookmarks the failed
questions ERROR in the CSV and says how it went (:class:`Answered`). Nothing here prints but the engine's
progress line; the CLI says the rest.
"""

# The LLM client (openai and its HTTP stack) is imported only when the engine is built: reading this module
# (every `dset` command registers `dset generate`) stays cheap.
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from dsetlog.engine.progress import Budget, Progress
from dsetlog.engine.stages import Outcome
from dsetlog.errors import UsageError
from dsetlog.evaluation import quality
from dsetlog.export.cards import write_output_cards
from dsetlog.export.formats import ENTRY_COLUMNS, FORMATS, SEED_FORMATS, Entry, export
from dsetlog.export.options import INSTRUCTION_FORMATS, ExportOptions
from dsetlog.generation.questions import (
    MAX_INPUT_BYTES,
    QuestionsFile,
    QuestionsFileError,
    normalize,
    read_questions,
    write_statuses,
)
from dsetlog.ids import content_id, entry_id_for, new_id
from dsetlog.llm.providers import Provider, resolve
from dsetlog.paths import check_writable
from dsetlog.store.errors import LogWriteError
from dsetlog.store.events import (
    DatasetCreated,
    EntryGenerated,
    Event,
    QuestionQueued,
    RunFinished,
    RunStarted,
    Usage,
)
from dsetlog.store.locks import dataset_lock
from dsetlog.store.log import EventLog, check_appendable
from projections.readmodel import ReadModel

if TYPE_CHECKING:  # the engine's client imports the openai SDK: only a run that makes calls pays for that import
    from dsetlog.engine.engine import Engine, EngineResult, MakeEvents, WorkItem
    from dsetlog.generation.batching import BatchOutcome, BatchSettings
    from dsetlog.llm.client import Completion
    from projections.views import ItemView


def dataset_id_for(dataset: str | None, csv_path: Path) -> str:
    """The questions dataset of a CSV: named by ``dataset`` (--dataset), else by the CSV's absolute path."""
    return content_id("ds", "questions", dataset or str(csv_path))


def item_id_for(dataset_id: str, question: str) -> str:
    """A question's item in its dataset: the same question (whitespace and case aside) is the same item."""
    return content_id("q", dataset_id, normalize(question))


@dataclass(frozen=True)
class SimulatorSettings:
    """The built-in simulator answering instead of a provider (--simulate): its latency, the share of
    attempts that fail (spread evenly over every fault kind) and its seed."""

    latency_ms: float = 20.0
    fault_rate: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class AnswerSettings:
    """Everything a questions-file run is asked to do; the CLI fills it from `dset generate`'s flags.

    ``formats`` are all the formats to write, the seed's first (CSV, JSON, TXT). ``price`` (USD per million
    input and output tokens) overrides the provider's own for the cost estimate. ``header``: whether the
    CSV's first row is a header (None: detected).
    """

    questions: Path  # the CSV as given
    data: Path
    out: Path
    formats: list[str] = field(default_factory=lambda: list(SEED_FORMATS))
    dataset: str | None = None
    profile: str = "deepseek"
    model: str | None = None
    base_url: str | None = None
    simulator: SimulatorSettings | None = None  # None: the provider the profile, model and base_url name
    system: str | None = None  # a system prompt sent before every question
    temperature: float | None = None
    max_tokens: int | None = None
    concurrency: int = 8
    cores: int | None = None  # None: auto (dsetlog.engine.cores)
    rpm: int = 0
    tpm: int = 0
    timeout: float = 300.0
    max_retries: int = 3
    backoff: float = 2.0
    budget: Budget = field(default_factory=Budget)
    price: tuple[float, float] | None = None
    header: bool | None = None
    max_input_bytes: int = MAX_INPUT_BYTES
    progress: bool = True  # the progress line on stderr
    export: ExportOptions = field(default_factory=ExportOptions)  # reasoning, context, the CSV's BOM
    batch: BatchSettings | None = None  # through the provider's Batch API (--batch); None: online calls

    @property
    def csv_path(self) -> Path:
        return Path(self.questions).resolve()

    @property
    def dataset_id(self) -> str:
        return dataset_id_for(self.dataset, self.csv_path)


@dataclass(frozen=True)
class Started:
    """What a run found when it started: the questions, how many are answered already and how many it will ask."""

    dataset_id: str
    questions: int
    already: int
    todo: int
    blank: int  # blank rows skipped
    duplicates: int  # repeated questions, answered once
    model: str  # the provider, described for people


@dataclass(frozen=True)
class Answered:
    """How a run ended and what the dataset holds now (every run's answers, not only this one's)."""

    outcome: Outcome
    fatal: str | None  # why the run stopped, when a fatal failure stopped it
    answered: int
    failed: int
    pending: int
    skipped: int  # blank or duplicate rows
    new_answers: int  # answered by this run
    tokens: int  # spent by this run
    cost: float | None  # this run's estimated cost; None when the model has no price
    written: list[Path]  # the output files, in the formats' order
    csv_path: Path
    bookmarked: bool  # the CSV's status column was written
    bookmark_error: str | None  # why the bookmarks could not be written (the outputs were)
    batch: BatchOutcome | None = None  # the batch part of a --batch run
    batch_discount: float = 1.0  # the share of the profile's prices the cost was estimated at

    @property
    def complete(self) -> bool:
        """Every question is answered."""
        return self.failed == 0 and self.pending == 0


@contextmanager
def _provider_for(settings: AnswerSettings) -> Iterator[Provider]:
    """The provider the settings ask for; with a simulator, one running in this process for the run."""
    if settings.simulator is None:  # a ProviderError is a UsageError already: one line, exit code 2
        yield resolve(settings.profile, model=settings.model, base_url=settings.base_url)
        return
    from dsetlog.simulator.server import SimConfig, Simulator

    sim, rate = settings.simulator, settings.simulator.fault_rate / 6
    config = SimConfig(seed=sim.seed, latency_ms=sim.latency_ms, jitter_ms=sim.latency_ms / 4,
                       rate_429=rate, rate_500=rate, rate_hang=rate, rate_malformed=rate, rate_empty=rate,
                       rate_reset=rate, retry_after_s=0.2, hang_s=min(settings.timeout * 2, 600))
    with Simulator(config) as simulator:
        yield resolve(settings.profile, model=settings.model, simulator_url=simulator.base_url)


def _check_places(settings: AnswerSettings) -> None:
    """Refuse now, before any call is paid for, a data dir or output folder that would only fail at the end,
    and export options that the formats asked for cannot carry."""
    settings.export.check(settings.formats)
    try:
        check_writable(settings.data, "--data")
        check_appendable(settings.data)
        check_writable(settings.out, "--out")
    except LogWriteError as exc:  # the log's own message does not name the option
        raise UsageError(f"--data {settings.data}: cannot write its log {exc.path} ({exc.strerror}); "
                         "give a data dir you can write to") from None


class QuestionsRun:
    """One run over a questions file, holding its dataset's lock: open it, start it, answer."""

    def __init__(self, settings: AnswerSettings, qfile: QuestionsFile, provider: Provider, log: EventLog,
                 rm: ReadModel) -> None:
        self.settings, self.qfile, self.provider, self.log, self.rm = settings, qfile, provider, log, rm
        self.csv_path, self.dataset_id = settings.csv_path, settings.dataset_id
        self.run_id = new_id("run")
        self.item_ids = [item_id_for(self.dataset_id, q.text) for q in qfile.questions]
        self.price = settings.price if settings.price is not None else provider.price()
        self.todo: list[WorkItem] = []
        self.progress: Progress  # made by start()

    @classmethod
    @contextmanager
    def open(cls, settings: AnswerSettings) -> Iterator[QuestionsRun]:
        """The run, once its questions are read and its places checked, with its provider (a simulator
        running meanwhile), the log and the dataset's lock held until the block ends."""
        qfile = read_questions(settings.questions, header=settings.header, max_bytes=settings.max_input_bytes)
        _check_places(settings)
        with (_provider_for(settings) as provider, EventLog.in_dir(settings.data) as log,
              dataset_lock(settings.data, settings.dataset_id)):
            rm = ReadModel.open(settings.data)
            rm.wait_verified()  # opened from a snapshot: the whole log's checksums hold before anything is added
            yield cls(settings, qfile, provider, log, rm)

    def start(self) -> Started:
        """Record the dataset, the questions the log does not have yet and the run's start (one write);
        choose the questions still to answer."""
        self.log.append_many(self._start_events())
        self.rm.catch_up()
        self.todo, already = self._todo()
        self.progress = Progress(total=len(self.item_ids), done=already, priced=self.price is not None,
                                 enabled=self.settings.progress)
        qfile = self.qfile
        return Started(dataset_id=self.dataset_id, questions=len(self.item_ids), already=already,
                       todo=len(self.todo), blank=qfile.blank, duplicates=qfile.duplicates,
                       model=self.provider.describe())

    def answer(self) -> Answered:
        """Answer what :meth:`start` left to do, record how the run ended, write the outputs and the CSV's
        bookmarks."""
        from dsetlog.engine.engine import EngineResult, run_engine

        result, batch = EngineResult(Outcome.COMPLETED), None
        if self.todo and self.settings.batch is not None:
            result, batch = self._batched()
        elif self.todo:
            result = run_engine(self._engine(), self.todo)
        self.rm.catch_up()
        items = {item_id: self.rm.datasets.item(self.dataset_id, item_id) for item_id in self.item_ids}
        failed = [i for i in items.values() if i is not None and i.status == "failed"]
        self._finish(result)
        written = self._write(items)
        bookmark_error = None
        try:
            bookmarked = write_statuses(self.csv_path, {normalize(q) for q in self.rm.questions(failed)},
                                        header=self.settings.header)
        except (QuestionsFileError, OSError) as exc:  # the outputs are written: a warning, not a failure
            bookmarked, bookmark_error = False, str(exc)
        answered = sum(1 for i in items.values() if i is not None and i.status == "done")
        progress = self.progress
        fatal = result.fatal.message if result.fatal is not None else (batch.message if batch else None) or None
        return Answered(
            outcome=result.outcome, fatal=fatal,
            answered=answered, failed=len(failed),
            pending=len(self.item_ids) - answered - len(failed), skipped=self.qfile.blank + self.qfile.duplicates,
            new_answers=result.answered, tokens=progress.tokens, cost=progress.cost if self.price is not None else None,
            written=list(written.values()), csv_path=self.csv_path, bookmarked=bookmarked,
            bookmark_error=bookmark_error, batch=batch,
            batch_discount=self.provider.batch.discount if batch is not None else 1.0)

    def _batched(self) -> tuple[EngineResult, BatchOutcome]:
        """Answer through the provider's Batch API at its batch prices (dsetlog.generation.batching); what it
        hands back (a server without the API, batches' failures, with --batch-fallback online) online."""
        from dsetlog.engine.engine import EngineResult, run_engine
        from dsetlog.generation.batching import BatchRun

        s, discount = self.settings, self.provider.batch.discount
        assert s.batch is not None
        price = (self.price[0] * discount, self.price[1] * discount) if self.price is not None else None
        out = BatchRun(log=self.log, rm=self.rm, provider=self.provider, dataset_id=self.dataset_id,
                       run_id=self.run_id, make_events=self._answer_events(), progress=self.progress,
                       settings=s.batch, max_retries=s.max_retries, budget=s.budget, price=price,
                       sampling={"temperature": s.temperature, "max_tokens": s.max_tokens}).run(self.todo)
        result = EngineResult(out.outcome, answered=out.answered, failed=out.failed)
        if out.online and out.outcome not in (Outcome.INTERRUPTED, Outcome.FATAL):
            online = run_engine(self._engine(), out.online)  # online items are priced as online calls
            result.answered += online.answered
            result.failed += online.failed
            result.fatal = online.fatal
            if online.outcome != Outcome.COMPLETED:
                result.outcome = online.outcome
        if result.outcome == Outcome.COMPLETED and result.failed:
            result.outcome = Outcome.FAILED
        return result, out

    def _start_events(self) -> list[Event]:
        """The dataset unless the log has it, each question it does not have, and the run's start."""
        datasets, settings, source = self.rm.datasets, self.settings, str(self.csv_path)
        new: list[Event] = []
        if datasets.dataset(self.dataset_id) is None:
            name = settings.dataset or self.csv_path.stem
            new.append(DatasetCreated(dataset_id=self.dataset_id, name=name, kind="questions", source=source))
        for q, item_id in zip(self.qfile.questions, self.item_ids, strict=True):
            if datasets.item(self.dataset_id, item_id) is None:
                new.append(QuestionQueued(dataset_id=self.dataset_id, item_id=item_id, question=q.text, row=q.row,
                                          source=source))
        recorded = {"concurrency": settings.concurrency, "cores": settings.cores or "auto",
                    "max_retries": settings.max_retries,
                    "backoff": settings.backoff, "timeout": settings.timeout, "rpm": settings.rpm,
                    "tpm": settings.tpm, "budget": str(settings.budget), "formats": settings.formats,
                    "out": str(Path(settings.out).resolve())}
        if settings.batch is not None:
            recorded["batch"] = {"fallback": settings.batch.fallback, "cancel": settings.batch.cancel}
        new.append(RunStarted(run_id=self.run_id, dataset_id=self.dataset_id, command="generate",
                              model=self.provider.model, provider=self.provider.profile,
                              simulated=self.provider.simulated, settings=recorded, system=settings.system or ""))
        return new

    def _todo(self) -> tuple[list[WorkItem], int]:
        """The questions still to answer as work items, and how many are answered already."""
        from dsetlog.engine.engine import WorkItem

        system = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        todo = []
        already = 0
        for q, item_id in zip(self.qfile.questions, self.item_ids, strict=True):
            item = self.rm.datasets.item(self.dataset_id, item_id)
            if item is not None and item.status == "done":
                already += 1
                continue
            todo.append(WorkItem(self.dataset_id, item_id, [*system, {"role": "user", "content": q.text}],
                                 prior_attempts=item.attempts if item else 0, context=q.text))
        return todo, already

    def _engine(self) -> Engine:
        """The engine answering the questions, as the settings say, within the budget."""
        from dsetlog.engine.build import EngineSettings, engine_for
        from dsetlog.llm.client import RetryPolicy

        s = self.settings
        engine_settings = EngineSettings(
            concurrency=s.concurrency, cores=s.cores, timeout=s.timeout, rpm=s.rpm, tpm=s.tpm,
            retry=RetryPolicy(max_retries=s.max_retries, backoff=s.backoff), temperature=s.temperature,
            max_tokens=s.max_tokens, learned=self.rm.endpoints.modes())
        return engine_for(self.provider, engine_settings, log=self.log, make_events=self._answer_events(),
                          progress=self.progress, run_id=self.run_id, budget=s.budget, price=self.price)

    def _answer_events(self) -> MakeEvents:
        """What an answer records: the entry of its question."""
        profile, run_id = self.provider.profile, self.run_id

        def make_events(item: WorkItem, c: Completion, attempt: int) -> list[Event]:
            # the cheap structural checks score it, as a document entry is scored without the costly analysis:
            # the two kinds of dataset have the same columns, numbers where numbers are
            checks = quality.structural_checks(item.context, c.content)
            return [EntryGenerated(
                dataset_id=item.dataset_id, item_id=item.item_id, entry_id=entry_id_for(item.item_id),
                question=item.context, answer=c.content, reasoning=c.reasoning, model=c.model,
                provider=profile, simulated=c.simulated,
                usage=Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens),
                latency_ms=round(c.latency_ms, 1), attempt=attempt, run_id=run_id,
                quality_score=quality.combine(checks, duplicate=False, judge=None), quality=checks,
                difficulty=quality.difficulty(item.context, c.content, judge_score=None))]

        return make_events

    def _finish(self, result: EngineResult) -> None:
        """Record how the run ended, with what it spent."""
        progress, skipped = self.progress, self.qfile.blank + self.qfile.duplicates
        self.log.append(RunFinished(
            run_id=self.run_id, dataset_id=self.dataset_id, outcome=result.outcome, answered=result.answered,
            failed=result.failed, skipped=skipped, prompt_tokens=progress.prompt_tokens,
            completion_tokens=progress.completion_tokens, cost=round(progress.cost, 6),
            message=str(result.fatal or "")))

    def _write(self, items: dict[str, ItemView | None]) -> dict[str, Path]:
        """The outputs, then the folder's dataset card and dataset_info.json (which files form the dataset)."""
        settings = self.settings
        systems = {run.run_id: run.system for run in self.rm.datasets.runs(self.dataset_id) if run.system}
        opts = replace(settings.export, systems=systems)
        written = export(lambda: self._entries(items), settings.out, settings.formats, opts)
        view = self.rm.datasets.dataset(self.dataset_id)
        write_output_cards(settings.out, written, title=view.name if view is not None else self.dataset_id,
                           entry_columns=ENTRY_COLUMNS, instruction=INSTRUCTION_FORMATS,
                           ours=[f.filename for f in FORMATS.values()])
        return written

    def _entries(self, items: dict[str, ItemView | None]) -> Iterator[Entry]:
        """The dataset's answers in the CSV's order (a fresh stream for each format), their texts read from the log."""
        datasets = self.rm.datasets
        views = (datasets.entry(self.dataset_id, item.entry_id) for item in items.values()
                 if item is not None and item.entry_id)
        return self.rm.iter_full(e for e in views if e is not None)
