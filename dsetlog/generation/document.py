"""Document-grounded datasets: chunks of a project's documents turned into entries, then scored, split,
benchmarked and exported, every step an event so that a run can stop anywhere and continue.

One call per chunk asks for all of that chunk's missing slots at once (``datasets_per_chunk`` distinct
items in one structured reply), never N identical calls. The stages after generation (augmentation,
quality, splits, benchmark, export) each skip what the log says is already done.

One generator per dataset at a time, across processes: a run holds the dataset's lock (dsetlog.store.locks) from
planning to export. A second run of the same dataset waits for it (server jobs, whose stage then names the
holder; `dset datasets generate --wait`) or is refused at once with a message naming the holder (the CLI
without --wait: exit 2). Once it holds the lock it catches up with the log, so it requests only what the
first left undone, and it checks again before writing that no slot it answered became done meanwhile.
Chunk titles belong to the project: runs of different datasets take turns titling under the project's
titles lock, and each titles only the chunks still untitled once it holds it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import msgspec

from dsetlog import prompts
from dsetlog.engine.progress import Budget, Progress
from dsetlog.errors import UsageError
from dsetlog.evaluation import quality, scoring, splits
from dsetlog.export.formats import FORMATS
from dsetlog.fsutil import atomic_writer
from dsetlog.llm.providers import Provider, ProviderError, resolve_spec
from dsetlog.paths import OutputDirError, export_dir
from dsetlog.store import locks
from dsetlog.store.events import (
    BenchmarkAnswered,
    BenchmarkCompleted,
    DatasetCreated,
    EntryGenerated,
    EntryScored,
    EvaluationSetsCreated,
    Event,
    SlotQueued,
    Usage,
)
from dsetlog.store.log import EventLog
from projections.datasets import DONE, EntryView
from projections.readmodel import ReadModel

if TYPE_CHECKING:  # dsetlog.llm.client imports the openai SDK: only runs that make calls pay for that import
    from dsetlog.llm.client import RetryPolicy

EXPORT_FORMATS = ("jsonl", "parquet", "csv", "alpaca", "sharegpt", "openai-chat")
# Exports of several formats share a folder: the fine-tuning formats carry their name before .jsonl.
EXPORT_SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet", "csv": ".csv", "alpaca": ".alpaca.jsonl",
                 "sharegpt": ".sharegpt.jsonl", "openai-chat": ".openai-chat.jsonl"}
EXPORT_BATCH = 100_000  # entries per file: bigger datasets are split into numbered batch files


class GenerateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /datasets/generate (and `dset datasets generate`): the guide's fields and defaults, plus ours.

    Models name provider profiles (``"gemini"``, ``"ollama"``) or ``profile:model``. The entries are
    written by ``classification_model`` (as in the guide's examples, the model that generates and
    categorises); ``parsing_model`` turns a reply that is not the JSON asked for into it before the
    attempt counts as failed; ``chunking_model`` writes the one-line topic of each chunk that the
    prompt gives as the chunk's heading when the document had none (markdown chunks keep their own).
    """

    project_id: str | int
    prompt_name: str = "qa_pairs"
    custom_prompt: str | None = None
    generation_mode: str = "default"
    format_type: str | None = None  # None: the project's saved dataset_format, else "jsonl" (the guide's default)
    concurrency: int = 1
    include_evaluation_sets: bool = False
    taxonomy_project: str | int | None = None
    taxonomy_name: str | None = None
    output_dir: str = "."
    analyze_quality: bool = True
    quality_threshold: float = 0.7
    enable_versioning: bool = False
    dataset_name: str | None = None
    run_benchmarks: bool = False
    benchmark_suite: str = "glue"
    parsing_model: str = "gemini"
    chunking_model: str = "gemini"
    classification_model: str = "gemini"
    datasets_per_chunk: int = 3
    # ours, beyond the guide
    judge_model: str | None = None  # an LLM judge (rubric 1-5) joins the quality score when set
    benchmark_model: str | None = None  # the model benchmarked (default: classification_model)
    questions: list[str] | None = None  # generation_mode "answer": the questions to answer from the documents
    split_ratios: list[float] = msgspec.field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 0
    max_chunks: int | None = None  # only the first N chunks (a cheap trial run)
    evaluation: bool = False  # set by POST /generate-evaluation: difficulty buckets too

    def __post_init__(self) -> None:
        self.project_id = str(self.project_id)
        if self.taxonomy_project is not None:
            self.taxonomy_project = str(self.taxonomy_project)
        try:
            self.generation_mode = prompts.normalize_mode(self.generation_mode)
        except ValueError as exc:
            raise ValueError(f"generation_mode: {exc}") from None
        if self.format_type is not None and self.format_type not in EXPORT_FORMATS:
            raise ValueError(f"format_type {self.format_type!r} is not one of {', '.join(EXPORT_FORMATS)}")
        if not 1 <= self.concurrency <= 256:
            raise ValueError("concurrency must be between 1 and 256")
        if not 1 <= self.datasets_per_chunk <= 50:
            raise ValueError("datasets_per_chunk must be between 1 and 50")
        if not 0.0 <= self.quality_threshold <= 1.0:
            raise ValueError("quality_threshold must be between 0 and 1")
        if (self.taxonomy_name is None) != (self.taxonomy_project is None) and self.taxonomy_name is None:
            raise ValueError("taxonomy_project needs taxonomy_name")
        if self.enable_versioning and not self.dataset_name:
            raise ValueError("enable_versioning needs dataset_name: versions are versions of a name")
        if self.generation_mode == "answer" and not self.questions:
            raise ValueError('generation_mode "answer" needs questions: the questions to answer')
        if self.generation_mode != "answer" and self.questions:
            raise ValueError(f'questions are answered in generation_mode "answer" only, not {self.generation_mode!r}')
        if len(self.split_ratios) != 3 or abs(sum(self.split_ratios) - 1) > 1e-6 or min(self.split_ratios) < 0:
            raise ValueError("split_ratios must be three non-negative numbers (train, validation, test) summing to 1")
        if self.run_benchmarks:  # the canonical name: " Negative_Rejection " is negative_rejection
            self.benchmark_suite = scoring.check_suite(self.benchmark_suite)
        if self.max_chunks is not None and self.max_chunks < 1:
            raise ValueError("max_chunks must be at least 1")
        check_output_dir(self.output_dir)


def check_output_dir(output_dir: str) -> PurePosixPath:
    """output_dir is a folder inside the data dir: absolute paths and '..' are refused."""
    path = PurePosixPath(output_dir.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (output_dir[1:3] == ":/"):
        raise ValueError(f"output_dir {output_dir!r} must be a relative folder inside the data directory, "
                         "without '..'")
    return path


REPAIR_PROMPT = """A model was asked for JSON but its reply is not usable ({problem}).
Rewrite the reply as the JSON asked for, keeping its content; invent nothing.

Reply to rewrite:
{reply}"""

BENCHMARK_SYSTEM = ("Answer the question from the text. Be brief: a short phrase or one sentence. If the text "
                    f"does not give the answer, reply exactly: {prompts.NEGATIVE_ANSWER}")

TITLE_PROMPT = """Give the topic of this text in at most eight words. Reply with the topic only.

Text:
{text}"""


class DocGenError(UsageError, ValueError):
    """The request cannot run as asked; the message says what to change."""


class DatasetBusy(locks.LockBusy, DocGenError):
    """Another run is generating this dataset and this one was told not to wait; the message names it."""


# what a refused `dset datasets generate` is told (only the CLI runs without waiting)
BUSY_ADVICE = "run the same command with --wait to start once it has finished"


def _hash(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:16]


# Fields that change what is generated: the same project, these, the prompt template's text, the project's
# saved parameters and the taxonomy's categories give the same dataset (and resume it).
_CONTENT_FIELDS = ("prompt_name", "custom_prompt", "generation_mode", "taxonomy_project", "taxonomy_name",
                   "dataset_name", "classification_model", "datasets_per_chunk", "questions", "max_chunks")


@dataclass
class Models:
    generate: Provider
    parse: Provider
    chunk_topics: Provider
    judge: Provider | None
    benchmark: Provider

    @classmethod
    def resolve(cls, req: GenerateRequest, *, simulator_url: str | None = None) -> Models:
        def one(spec: str) -> Provider:
            try:
                return resolve_spec(spec, simulator_url=simulator_url)
            except ProviderError as exc:
                raise DocGenError(str(exc)) from None

        return cls(one(req.classification_model), one(req.parsing_model), one(req.chunking_model),
                   one(req.judge_model) if req.judge_model else None,
                   one(req.benchmark_model or req.classification_model))


@dataclass
class Chunk:
    id: str
    text: str
    heading: str | None


@dataclass
class DocRunResult:
    dataset_id: str
    name: str
    version: str | None
    outcome: str = "completed"  # completed | failed | interrupted | budget | fatal
    message: str = ""
    entries_count: int = 0
    exported_count: int = 0
    files: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    quality_summary: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    benchmark: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.__dict__)


@dataclass
class Stage:
    """What a job shows while it runs: the step in words and progress in [0, 100]."""

    step: str = "pending"
    done: int = 0
    total: int = 0

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0


class DocumentRun:
    """One generation run over a project: plan, generate, augment, score, split, benchmark, export."""

    def __init__(self, *, log: EventLog, rm: ReadModel, data_dir: Path, req: GenerateRequest, models: Models,
                 job_id: str = "", progress: Progress | None = None, budget: Budget | None = None,
                 on_stage: Callable[[Stage], None] = lambda stage: None, retry: RetryPolicy | None = None,
                 limiter_for: Callable[[Provider], Any] | None = None, wait: bool = True) -> None:
        """``wait``: when another run holds this dataset, wait for it (server jobs) rather than refuse at once
        with :class:`DatasetBusy` (`dset datasets generate` without --wait)."""
        self.log, self.rm, self.data_dir, self.req, self.models = log, rm, data_dir.resolve(), req, models
        self.wait = wait
        self._lock: locks.FileLock | None = None
        # the server passes one RateLimiter per provider, shared by all its jobs; None: one per client
        self.limiter_for = limiter_for
        self.retry = retry  # None: the builder's default (dsetlog.engine.build)
        self.job_id = job_id or "job_" + uuid.uuid4().hex[:12]
        self.progress = progress or Progress(total=0, enabled=False)
        self.budget = budget or Budget()
        self.on_stage = on_stage
        self.stage = Stage()
        rm.catch_up()
        self.project = rm.projects.project(req.project_id) or rm.projects.project_by_name(req.project_id)
        if self.project is None:
            raise DocGenError(f"no project {req.project_id!r}; create one with `dset ingest PATH --project NAME` "
                              "or POST /api/v1/projects")
        self.chunks = self._chunks()
        self.categories = self._categories()
        self.params = self._parameters()
        self.format_type = self._format_type()
        self.template_name, self.template = self._template()
        self.template_hash = prompts.prompt_hash(self.template)
        self.dataset_id, self.version = self._dataset_identity()

    # -- planning ------------------------------------------------------------

    def _chunks(self) -> list[Chunk]:
        views = self.rm.projects.chunks(self.project.id)
        if not views:
            raise DocGenError(f"project {self.project.name!r} has no chunks yet; ingest documents first "
                              f"(`dset ingest PATH --project {self.project.name}`)")
        if self.req.max_chunks is not None:
            views = views[: self.req.max_chunks]
        return [Chunk(c.id, c.text, c.heading) for c in views]

    def _categories(self) -> list[str]:
        if not self.req.taxonomy_name:
            return []
        from projections.projects import flat_categories

        owner = self.req.taxonomy_project or self.project.id
        project = self.rm.projects.project(str(owner)) or self.rm.projects.project_by_name(str(owner))
        taxonomy = self.rm.projects.taxonomy(project.id, self.req.taxonomy_name) if project else None
        if taxonomy is None:
            raise DocGenError(f"no taxonomy {self.req.taxonomy_name!r} in project {project.name if project else owner!r}; "
                              "add one with `dset taxonomy add` or POST /api/v1/taxonomy/")
        return flat_categories(taxonomy)

    def _parameters(self) -> prompts.ProjectParameters | None:
        saved = self.rm.projects.latest_parameters(self.project.id)
        if saved is None:
            return None
        known = {f: v for f, v in saved.parameters.items() if f in prompts.ProjectParameters.__struct_fields__}
        return msgspec.convert(known, prompts.ProjectParameters)

    def _format_type(self) -> str:
        if self.req.format_type is not None:
            return self.req.format_type
        if self.params is None:
            return "jsonl"
        saved = self.params.dataset_format.strip().lower()
        if saved not in EXPORT_FORMATS:
            raise DocGenError(f"project {self.project.name!r} has dataset_format {self.params.dataset_format!r}, "
                              f"not one of {', '.join(EXPORT_FORMATS)}; give format_type, or save parameters "
                              "with one of those")
        return saved

    def _template(self) -> tuple[str, str]:
        if self.req.custom_prompt:
            return "custom", self.req.custom_prompt
        stored = self.rm.projects.prompt_by_name(self.req.prompt_name, project_id=self.project.id)
        if stored is None:
            stored = self.rm.projects.prompt_by_name(self.req.prompt_name)
        if stored is not None:
            return stored.name, stored.content
        try:
            return prompts.select_template(self.req.generation_mode, self.req.prompt_name)
        except ValueError as exc:
            raise DocGenError(str(exc)) from None

    def _dataset_identity(self) -> tuple[str, str | None]:
        req = self.req
        content = [self.project.id] + [msgspec.json.encode(getattr(req, f)).decode() for f in _CONTENT_FIELDS]
        # and what the prompt is made of besides the request: the template's text (a stored prompt gets new
        # versions under the same name), the saved parameters and the taxonomy's categories
        content += [self.template_hash, msgspec.json.encode(self.params).decode(), "\x1e".join(self.categories)]
        # and the chunks themselves: re-chunked documents are new material, not slots of the old run to finish
        content.append(_hash(*(c.id for c in self.chunks)))
        self.content_key = _hash(*content)
        if not req.enable_versioning:
            return "dataset_" + self.content_key, None
        versions = [d for d in self.rm.datasets.datasets(name=req.dataset_name, kind="documents")
                    if d.version and d.project_id == self.project.id]
        if versions:
            latest = max(versions, key=lambda d: _semver(d.version))
            unfinished = latest.pending or latest.failed or not latest.items
            if unfinished and latest.params.get("content_key") == self.content_key:
                return latest.id, latest.version  # an interrupted version: continue it rather than start anew
            major, minor, _ = _semver(latest.version)
            version = f"{major}.{minor + 1}.0"
        else:
            version = "1.0.0"
        return "dataset_" + _hash(*content, version), version

    @property
    def name(self) -> str:
        return self.req.dataset_name or f"{self.project.name}-{self.req.generation_mode}"

    def slot_plan(self) -> list[SlotQueued]:
        """Every slot of the run, deterministic: N per chunk, or one per given question in "answer" mode."""
        req, mode = self.req, self.req.generation_mode
        slots: list[SlotQueued] = []
        if mode == "answer":
            for i, question in enumerate(req.questions or []):
                chunk = _best_chunk(question, self.chunks)
                slots.append(SlotQueued(dataset_id=self.dataset_id, item_id="slot_" + _hash(self.dataset_id, "q", i),
                                        chunk_id=chunk.id, slot=i, mode=mode, question=question))
            return slots
        n = req.datasets_per_chunk
        ratio = (self.params.negativity_ratio if self.params else 0.0) if "answer" in prompts.MODE_FIELDS[mode] else 0
        for chunk in self.chunks:
            negatives = prompts.plan_negatives(n, ratio, key=f"{self.dataset_id}:{chunk.id}")
            for slot in range(n):
                slots.append(SlotQueued(dataset_id=self.dataset_id,
                                        item_id="slot_" + _hash(self.dataset_id, chunk.id, slot), chunk_id=chunk.id,
                                        slot=slot, mode=mode, negative=slot < negatives))
        return slots

    def queue(self) -> None:
        """Append the dataset and the slots the log does not have yet (one fsync)."""
        self.rm.catch_up()
        datasets = self.rm.datasets
        new: list[Event] = []
        if datasets.dataset(self.dataset_id) is None:
            params = {k: v for k, v in msgspec.to_builtins(self.req).items()}
            params["prompt_hash"] = self.template_hash
            params["content_key"] = self.content_key
            new.append(DatasetCreated(dataset_id=self.dataset_id, name=self.name, kind="documents",
                                      source=self.project.name, project_id=self.project.id, version=self.version,
                                      format_type=self.format_type, params=params))
        new += [s for s in self.slot_plan() if datasets.item(self.dataset_id, s.item_id) is None]
        if new:
            self.log.append_many(new)
            self.rm.catch_up()

    # -- running ---------------------------------------------------------------

    def _set_stage(self, step: str, done: int = 0, total: int = 0) -> None:
        self.stage = Stage(step, done, total)
        self.on_stage(self.stage)

    # -- the dataset's lock --------------------------------------------------------

    def _dataset_lock(self) -> locks.FileLock:
        # made when first needed: the job worker may point the run at the dataset its job was submitted for
        if self._lock is None or self._lock.path != locks.lock_path(self.data_dir, self.dataset_id):
            self._lock = locks.dataset(self.data_dir, self.dataset_id, job_id=self.job_id)
        return self._lock

    def _waiting(self, holder: locks.Holder | None, what: str) -> str:
        step = f"Waiting for {locks.who(holder)} to finish {what}"
        self._set_stage(step)
        return step

    def claim(self, *, wait: bool | None = None, notify: Callable[[str], None] | None = None) -> None:
        """Take this dataset's lock now, before anything of the run is written (the CLI calls it before it
        records its job, so a refused run leaves nothing behind). ``wait`` (default: the run's own) False:
        :class:`DatasetBusy` naming the holder if another run has it; True: block until it is free, telling
        ``notify`` whom it waits for. The claimer releases it (:meth:`release`), after recording the job's
        end: until then the server's worker sees the job's lock held and leaves the job to its own process."""
        lock = self._dataset_lock()
        if lock.held:
            return

        def waiting(holder: locks.Holder | None) -> None:
            step = self._waiting(holder, f"dataset {self.dataset_id}")
            if notify is not None:
                notify(step)

        try:
            lock.acquire(wait=self.wait if wait is None else wait, what=f"dataset {self.dataset_id}",
                         advice=BUSY_ADVICE, on_wait=waiting)
        except locks.LockBusy as exc:
            raise DatasetBusy(str(exc), exc.holder) from None
        except locks.LockError as exc:
            raise DocGenError(str(exc)) from None

    def release(self) -> None:
        """Release the dataset's lock taken by :meth:`claim` (a no-op when not held)."""
        if self._lock is not None:
            self._lock.release()

    async def run(self) -> DocRunResult:
        """The whole run under the dataset's lock: claimed already (:meth:`claim`; the claimer releases it),
        else taken here (waited for without blocking the loop, or refused at once when the run must not
        wait) and released at the end."""
        lock = self._dataset_lock()
        if lock.held:
            return await self._run_locked()
        if not self.wait:
            self.claim(wait=False)
        elif not await _acquire(lock, on_wait=lambda holder: self._waiting(holder, f"dataset {self.dataset_id}"),
                                stop=lambda: self.budget.reached(self.progress)):
            # cancelled while waiting: nothing was done, the job ends as stopped
            self._set_stage("Stopped: interrupted")
            return DocRunResult(self.dataset_id, self.name, self.version, outcome="interrupted",
                                message=f"stopped while waiting for dataset {self.dataset_id}")
        try:
            return await self._run_locked()
        finally:
            lock.release()

    async def _run_locked(self) -> DocRunResult:
        self.queue()  # catches up first: what another run made while this one waited is done, not planned
        result = DocRunResult(self.dataset_id, self.name, self.version)
        stopped = await self._title_chunks()
        result.outcome, result.message = stopped or await self._generate()
        if result.outcome in ("completed", "failed"):
            self._augment()
            if self.req.analyze_quality:
                stop = await self._score()
                if stop:
                    result.outcome, result.message = stop
            if result.outcome in ("completed", "failed") and (self.req.include_evaluation_sets or self.req.evaluation):
                self._split()
            if result.outcome in ("completed", "failed") and self.req.run_benchmarks:
                result.benchmark, stop = await self._benchmark()
                if stop:
                    result.outcome, result.message = stop
        self.rm.catch_up()
        self._set_stage("Exporting")
        files, exported = export_dataset(self.rm, self.dataset_id, data_dir=self.data_dir,
                                         output_dir=self.req.output_dir, format_type=self.format_type)
        result.files = [str(p.relative_to(self.data_dir)) for p in files]
        result.exported_count = exported
        result.entries_count = len(self.rm.datasets.entries(self.dataset_id))
        result.quality_summary = self.rm.datasets.quality_summary(self.dataset_id)
        evaluation = self.rm.evaluations.splits(self.dataset_id)
        result.splits = dict(sorted(_count(evaluation.values()).items())) if evaluation else {}
        result.prompt_tokens, result.completion_tokens = self.progress.prompt_tokens, self.progress.completion_tokens
        result.cost = round(self.progress.cost, 6)
        self._set_stage("Finished" if result.outcome == "completed" else f"Stopped: {result.outcome}",
                        self.stage.total, self.stage.total)
        return result

    def _engine(self, provider: Provider, make_events: Any, total: int) -> Any:
        from dsetlog.engine.build import EngineSettings, engine_for

        self.progress.total += total
        settings = EngineSettings(concurrency=self.req.concurrency, retry=self.retry, limiter_for=self.limiter_for,
                                  learned=self.rm.endpoints.modes())
        return engine_for(provider, settings, log=self.log, make_events=make_events, progress=self.progress,
                          run_id=self.job_id, budget=self.budget)

    async def _run_engine(self, engine: Any, items: Sequence[Any], step: Callable[[int, int], str]) -> Any:
        from dsetlog.engine.engine import run_reporting

        return await run_reporting(engine, items, lambda done, total: self._set_stage(step(done, total), done, total),
                                   every=0.5)

    async def _title_chunks(self) -> tuple[str, str] | None:
        """chunking_model: a topic line for each chunk without a heading, written once per chunk ever."""
        from dsetlog.engine.engine import WorkItem
        from dsetlog.llm.client import CallFailure
        from dsetlog.store.events import ChunkTitled

        def untitled() -> list[Chunk]:
            self.rm.catch_up()
            return [c for c in self.chunks if not c.heading and not self._title(c.id)]

        if not untitled():
            return None
        # Titles are the project's: runs of other datasets on this project title the same chunks. They take
        # turns under the project's lock, and each asks only for what is still untitled once it holds it.
        lock = locks.project_titles(self.data_dir, self.project.id, job_id=self.job_id)
        if not await _acquire(
                lock, on_wait=lambda holder: self._waiting(holder, f"titling the chunks of project {self.project.name}"),
                stop=lambda: self.budget.reached(self.progress)):
            return "interrupted", ""
        try:
            todo = untitled()
            if not todo:
                return None  # another run titled them while this one waited
            provider = self.models.chunk_topics

            def make_events(unit: Any, c: Any, attempt: int) -> list[Event]:
                title = " ".join(c.content.strip().strip('"').split())[:120]
                if not title:
                    raise CallFailure("empty", "no topic", retryable=True)
                self.rm.catch_up()
                if self._title(unit.item_id):
                    return []  # titled meanwhile by a writer outside the lock: one title per chunk
                return [ChunkTitled(project_id=self.project.id, chunk_id=unit.item_id, title=title, model=c.model)]

            units = [WorkItem(self.dataset_id, c.id,
                              [{"role": "user", "content": TITLE_PROMPT.format(text=c.text[:6000])}],
                              max_tokens=32, record_attempts=False) for c in todo]
            engine = self._engine(provider, make_events, len(units))
            result = await self._run_engine(engine, units, lambda done, total: f"Titling chunk {done} of {total}")
            self.rm.catch_up()
            return _stopped(result)
        finally:
            lock.release()

    def _title(self, chunk_id: str) -> str | None:
        view = self.rm.projects.chunk(chunk_id)
        return view.title if view else None

    async def _generate(self) -> tuple[str, str]:
        from dsetlog.engine.engine import WorkItem
        from dsetlog.llm.client import CallFailure

        self.rm.catch_up()
        datasets = self.rm.datasets
        plan = {s.item_id: s for s in self.slot_plan()}
        by_chunk: dict[str, list[Any]] = {}
        for item in datasets.items(self.dataset_id):
            # only the slots: the titling calls' attempts (item id = chunk id) also name this dataset
            if item.status != DONE and item.item_id in plan:
                by_chunk.setdefault(item.source, []).append(item)
        chunks = {c.id: c for c in self.chunks}
        mode = self.req.generation_mode
        provider = self.models.generate
        units = []
        for chunk_id, items in by_chunk.items():
            chunk = chunks.get(chunk_id) or self._chunk_from_log(chunk_id)
            slots = [plan[i.item_id] for i in items if i.item_id in plan]
            if not slots:
                continue
            negatives = sum(s.negative for s in slots)
            questions = [s.question for s in slots] if mode == "answer" else []
            variables = prompts.variables_from(self.params, n=len(slots), categories=self.categories,
                                               negatives=negatives, questions=questions)
            topic = chunk.heading or self._title(chunk.id)
            variables["chunk"] = f"[{topic}]\n{chunk.text}" if topic else chunk.text
            content = prompts.render(self.template, variables)
            units.append(WorkItem(
                self.dataset_id, slots[0].item_id, [{"role": "user", "content": content}],
                prior_attempts=max(i.attempts for i in items),
                schema=prompts.reply_schema(mode, len(slots), self.categories,
                                            describe=bool(self.req.custom_prompt)),
                context=(chunk, slots, negatives), members=tuple(s.item_id for s in slots)))
        if not units:
            return "completed", ""
        from dsetlog.engine.build import EngineSettings, client_for

        parser = client_for(self.models.parse, EngineSettings(concurrency=self.req.concurrency,
                                                              limiter_for=self.limiter_for,
                                                              learned=self.rm.endpoints.modes()),
                            on_learned=self.log.append)

        async def make_events(unit: Any, c: Any, attempt: int) -> list[Event]:
            chunk, slots, negatives = unit.context

            def parse(content: str) -> list[prompts.GeneratedItem]:
                # "answer" mode: the model may honestly find no answer in the text, so no count is imposed
                return prompts.parse_items(mode, content, len(slots), categories=self.categories,
                                           negatives=None if mode == "answer" else negatives)

            try:
                items = parse(c.content)
            except prompts.InvalidOutput as first:
                # The parsing model gets one chance to turn the reply into the JSON asked for; if it cannot,
                # the attempt failed (retryable) and the generation model is asked again.
                try:
                    repaired = await parser.complete(
                        [{"role": "user", "content": REPAIR_PROMPT.format(problem=first, reply=c.content[:20000])}],
                        attempt=attempt, schema=prompts.reply_schema(mode, len(slots), self.categories,
                                                                     describe=True))
                    items = parse(repaired.content)
                except (prompts.InvalidOutput, CallFailure) as exc:
                    raise CallFailure("invalid_output", f"{first}; repair by {self.models.parse.model} failed: "
                                      f"{exc}", retryable=True) from None
            events: list[Event] = []
            for slot, item in zip(slots, items, strict=True):
                question = slot.question if mode == "answer" else item.question
                events.append(EntryGenerated(
                    dataset_id=self.dataset_id, item_id=slot.item_id, entry_id="entry_" + slot.item_id[5:],
                    question=question, answer=item.answer or "", reasoning=c.reasoning,
                    category=item.category or "Other", model=c.model, provider=provider.profile,
                    simulated=c.simulated,
                    usage=Usage(prompt_tokens=c.prompt_tokens // len(slots),
                                completion_tokens=c.completion_tokens // len(slots)),
                    latency_ms=round(c.latency_ms, 1), attempt=attempt, run_id=self.job_id,
                    prompt_name=self.template_name, prompt_hash=self.template_hash, source_chunk=chunk.id,
                    metadata={"mode": mode, "negative": item.negative, "chunk_length": len(chunk.text),
                              "slot": slot.slot, "job_id": self.job_id}))
            # The lock keeps other runs of this dataset out; this guards the write itself against any writer
            # that does not take it: a slot done meanwhile keeps its one entry.
            self.rm.catch_up()
            return [e for e in events if not self._done(e.item_id)]

        engine = self._engine(provider, make_events, len(units))
        try:
            result = await self._run_engine(engine, units,
                                            lambda done, total: f"Processing chunk {done} of {total}")
        finally:
            await parser.close()
        if result.fatal is not None:
            return "fatal", result.fatal.message
        return result.outcome, ""

    def _done(self, item_id: str) -> bool:
        item = self.rm.datasets.item(self.dataset_id, item_id)
        return item is not None and item.status == DONE

    def _chunk_from_log(self, chunk_id: str) -> Chunk:
        view = self.rm.projects.chunk(chunk_id)
        if view is None:
            raise DocGenError(f"chunk {chunk_id} of dataset {self.dataset_id} is no longer in the log")
        return Chunk(view.id, view.text, view.heading)

    # -- after generation --------------------------------------------------------------

    def _augment(self) -> None:
        """data_augmentation: a marked variant of each entry's question, same answer (rule-based, no call)."""
        technique = self.params.data_augmentation if self.params else "none"
        if technique == "none":
            return
        self.rm.catch_up()
        datasets = self.rm.datasets
        new: list[Event] = []
        for entry in datasets.entries(self.dataset_id):
            if entry.metadata.get("variant_of"):
                continue
            variant_item = "slot_" + _hash(entry.item_id, technique)
            if datasets.item(self.dataset_id, variant_item) is not None:
                continue
            question = prompts.augment(entry.question, technique, seed=entry.id)
            if question is None:
                continue
            item = datasets.item(self.dataset_id, entry.item_id)
            new.append(SlotQueued(dataset_id=self.dataset_id, item_id=variant_item, chunk_id=entry.source_chunk,
                                  slot=(item.row if item else 0), mode=self.req.generation_mode))
            new.append(EntryGenerated(
                dataset_id=self.dataset_id, item_id=variant_item, entry_id="entry_" + variant_item[5:],
                question=question, answer=entry.answer, reasoning=entry.reasoning, category=entry.category,
                model=entry.model, provider=entry.provider, simulated=entry.simulated, run_id=self.job_id,
                prompt_name=entry.prompt_name, prompt_hash=entry.prompt_hash, source_chunk=entry.source_chunk,
                metadata={**entry.metadata, "augmentation": technique, "variant_of": entry.id}))
        if new:
            self._set_stage(f"Augmenting ({technique})")
            self.log.append_many(new)
            self.rm.catch_up()

    def _components(self) -> list[tuple[EntryView, dict[str, float], str | None]]:
        """Structural checks, groundedness and near-duplicates for every entry, in dataset order."""
        index = quality.NearDuplicates()
        mode = self.req.generation_mode
        out = []
        for entry in self.rm.datasets.entries(self.dataset_id):
            answer = None if mode == "question" else entry.answer
            chunk = self.rm.projects.chunk(entry.source_chunk)
            comps = entry_components(entry.question, answer, chunk.text if chunk else None, mode=mode)
            duplicate_of = index.add(entry.id, f"{entry.question} {answer or ''}")
            if entry.metadata.get("variant_of"):
                duplicate_of = None  # a marked augmentation variant is meant to be close to its source
            out.append((entry, comps, duplicate_of))
        return out

    def _scored(self, entry: EntryView, comps: dict[str, float], duplicate_of: str | None,
                judge: tuple[int, int] | None) -> EntryScored:
        answer = None if self.req.generation_mode == "question" else entry.answer
        return entry_scored(entry, entry.question, answer, comps, duplicate_of=duplicate_of, judge=judge,
                            threshold=self.req.quality_threshold)

    async def _score(self) -> tuple[str, str] | None:
        from dsetlog.engine.engine import WorkItem
        from dsetlog.llm.client import CallFailure

        self.rm.catch_up()
        judge = self.models.judge
        todo, remark = [], []
        threshold = self.req.quality_threshold
        for e, c, d in self._components():
            if e.quality_score is None or (judge is not None and "judge" not in e.quality):
                todo.append((e, c, d))  # not scored yet, or scored before a judge was asked for
            elif e.below_threshold != (e.quality_score < threshold):
                # scored by an earlier run with another quality_threshold: the score stands, the mark follows
                remark.append(EntryScored(dataset_id=self.dataset_id, entry_id=e.id, quality_score=e.quality_score,
                                          quality=e.quality, difficulty=e.difficulty, duplicate_of=e.duplicate_of,
                                          below_threshold=e.quality_score < threshold))
        for batch in _batched(remark, 5000):
            self.log.append_many(batch)
        if not todo:
            self.rm.catch_up()
            return None
        self._set_stage(f"Scoring {len(todo)} entries")
        if judge is None:
            for batch in _batched(todo, 5000):
                self.log.append_many([self._scored(e, c, d, None) for e, c, d in batch])
            self.rm.catch_up()
            return None
        units = []
        for entry, comps, dup in todo:
            chunk = self.rm.projects.chunk(entry.source_chunk)
            units.append(WorkItem(self.dataset_id, entry.item_id,
                                  quality.judge_prompt(entry.question, entry.answer, chunk.text if chunk else ""),
                                  schema=quality.JUDGE_SCHEMA,
                                  context=(entry, comps, dup), record_attempts=False))

        def make_events(unit: Any, c: Any, attempt: int) -> list[Event]:
            entry, comps, dup = unit.context
            try:
                verdict = quality.parse_verdict(c.content)
            except prompts.InvalidOutput as exc:
                raise CallFailure("invalid_output", str(exc), retryable=True) from None
            self.rm.catch_up()
            now = self.rm.datasets.entry(self.dataset_id, entry.id)
            if now is not None and "judge" in now.quality:
                return []  # graded meanwhile by a writer outside the lock: one grade per entry
            return [self._scored(entry, comps, dup, (verdict.score, verdict.difficulty))]

        engine = self._engine(judge, make_events, len(units))
        result = await self._run_engine(engine, units, lambda done, total: f"Judging entry {done} of {total}")
        self.rm.catch_up()
        return _stopped(result)

    def _split(self) -> None:
        self.rm.catch_up()
        entries = [e for e in self.rm.datasets.entries(self.dataset_id) if not e.below_threshold]
        current = self.rm.evaluations.split_view(self.dataset_id)
        if (current is not None and set(current.splits) == {e.id for e in entries} and current.seed == self.req.seed
                and current.ratios == list(self.req.split_ratios)
                and bool(current.difficulty_buckets) >= self.req.evaluation):
            return  # the same entries are split already, as asked: a re-run keeps the splits stable
        self._set_stage("Making train/validation/test splits")
        roots: dict[str, str] = {}
        for e in entries:  # near-duplicates and augmentation variants share their source's group: one split
            link = e.duplicate_of or e.metadata.get("variant_of")
            roots[e.id] = roots.get(link, link) if link else e.id
        inputs = [splits.SplitInput(entry_id=e.id, category=e.category or "Other", group=roots[e.id])
                  for e in entries]
        assignment = splits.assign_splits(inputs, ratios=tuple(self.req.split_ratios), seed=self.req.seed)
        buckets = splits.difficulty_buckets(
            [splits.DifficultyInput(entry_id=e.id, difficulty=e.difficulty or "intermediate") for e in entries]
        ) if self.req.evaluation else {}
        self.log.append(EvaluationSetsCreated(dataset_id=self.dataset_id, seed=self.req.seed,
                                              ratios=list(self.req.split_ratios), splits=assignment,
                                              difficulty_buckets=buckets))
        self.rm.catch_up()

    async def _benchmark(self) -> tuple[dict[str, Any], tuple[str, str] | None]:
        """Benchmark the model on the test split: (results, a stop). Answers the log has for an unchanged
        entry (same suite, model and entry revision) are reused, not asked for again."""
        from dsetlog.engine.engine import WorkItem
        from dsetlog.llm.client import CallFailure

        self.rm.catch_up()
        provider, suite = self.models.benchmark, self.req.benchmark_suite
        evaluations = self.rm.evaluations
        done = [b for b in evaluations.benchmarks(self.dataset_id, job_id=self.job_id)
                if (b.suite, b.model) == (suite, provider.model)]
        if done:  # this job was resumed after its benchmark: the result stands
            return {"suite": suite, "model": provider.model, **done[-1].results}, None
        assignment = evaluations.splits(self.dataset_id)
        test = [e for e in self.rm.datasets.entries(self.dataset_id) if assignment.get(e.id) == "test"]
        if not test:  # a tiny dataset may leave the test split empty: benchmark on everything kept
            test = [e for e in self.rm.datasets.entries(self.dataset_id) if not e.below_threshold]

        def still_valid() -> dict[str, dict[str, float]]:
            answers = evaluations.benchmark_answers(self.dataset_id, suite=suite, model=provider.model)
            return {e.id: answers[e.id].scores for e in test
                    if e.id in answers and answers[e.id].revision == e.revision}

        reused = still_valid()
        units = []
        for e in test:
            if e.id in reused:
                continue
            chunk = self.rm.projects.chunk(e.source_chunk)
            messages = [{"role": "system", "content": BENCHMARK_SYSTEM},
                        {"role": "user", "content": f"Text:\n{chunk.text if chunk else ''}\n\nQuestion: {e.question}"}]
            units.append(WorkItem(self.dataset_id, e.item_id, messages, context=e, record_attempts=False))
        # negative_rejection asks every test question too: the model must decline the unanswerable ones and
        # only those (refusing everything must not score 1.0)
        rejection_suite = suite == "negative_rejection"

        def make_events(unit: Any, c: Any, attempt: int) -> list[Event]:
            if not c.content.strip():
                raise CallFailure("empty", "no answer", retryable=True)
            entry = unit.context
            if rejection_suite:
                scores = {"rejection_accuracy": float(scoring.rejection_correct(c.content, entry.answer))}
            else:
                scores = scoring.score_all(c.content, entry.answer)
            return [BenchmarkAnswered(dataset_id=self.dataset_id, job_id=self.job_id, suite=suite, model=provider.model,
                                      entry_id=entry.id, revision=entry.revision, answer=c.content, scores=scores,
                                      usage=Usage(prompt_tokens=c.prompt_tokens,
                                                  completion_tokens=c.completion_tokens))]

        stop = None
        if units:
            self._set_stage(f"Benchmarking {provider.model} on {len(units)} questions")
            engine = self._engine(provider, make_events, len(units))
            outcome = await self._run_engine(engine, units, lambda done, total: f"Benchmark question {done} of {total}")
            stop = _stopped(outcome)
        self.rm.catch_up()
        scores = list(still_valid().values())
        results: dict[str, Any] = {"questions": len(test), "answered": len(scores), "reused": len(reused)}
        if rejection_suite:
            results["unanswerable"] = sum(scoring.is_rejection(e.answer) for e in test)
        for metric in (("rejection_accuracy",) if rejection_suite else ("exact_match", "token_f1", "rouge_l")):
            results[metric] = round(sum(s[metric] for s in scores) / len(scores), 4) if scores else 0.0
        if stop is None:  # a stopped benchmark is finished by the run that resumes it
            self.log.append(BenchmarkCompleted(dataset_id=self.dataset_id, job_id=self.job_id, suite=suite,
                                               model=provider.model, results=results))
            self.rm.catch_up()
        return {"suite": suite, "model": provider.model, **results}, stop


def entry_components(question: str, answer: str | None, chunk: str | None, *, mode: str) -> dict[str, float]:
    """An entry's structural checks, and its groundedness in its chunk (``answer`` None: a question-only mode)."""
    comps = quality.structural_checks(question, answer, expect_question=mode in ("default", "question", "answer"))
    if answer is not None and chunk is not None:
        comps["groundedness"] = quality.groundedness(answer, chunk)
    return comps


def entry_scored(entry: EntryView, question: str, answer: str | None, comps: dict[str, float], *,
                 duplicate_of: str | None, judge: tuple[int, int] | None, threshold: float) -> EntryScored:
    """The EntryScored of an entry with this question and answer: ``judge`` is the judge's (score, difficulty)."""
    score = quality.combine(comps, duplicate=duplicate_of is not None, judge=judge[0] if judge else None)
    level = quality.difficulty(question, answer, judge_score=judge[1] if judge else None)
    components = dict(comps)
    if judge:
        components["judge"] = float(judge[0])
    return EntryScored(dataset_id=entry.dataset_id, entry_id=entry.id, quality_score=score, quality=components,
                       difficulty=level, duplicate_of=duplicate_of, below_threshold=score < threshold)


async def _acquire(lock: locks.FileLock, *, on_wait: Callable[[locks.Holder | None], Any],
                   stop: Callable[[], bool]) -> bool:
    """``lock.acquire_async``, a lock file that cannot be made being a DocGenError (a job fails with its message)."""
    try:
        return await lock.acquire_async(on_wait=on_wait, stop=stop)
    except locks.LockError as exc:
        raise DocGenError(str(exc)) from None


def _stopped(result: Any) -> tuple[str, str] | None:
    """(outcome, message) when a helper stage's engine run means the whole run must stop, else None."""
    if result.fatal is not None:
        return "fatal", result.fatal.message
    if result.outcome in ("interrupted", "budget"):
        return result.outcome, ""
    return None


def _semver(version: str | None) -> tuple[int, int, int]:
    try:
        major, minor, patch = (int(x) for x in (version or "0.0.0").split("."))
        return major, minor, patch
    except ValueError:
        return 0, 0, 0


def _best_chunk(question: str, chunks: Sequence[Chunk]) -> Chunk:
    """The chunk sharing the most content words with the question (the first on ties)."""
    words = quality.content_words(question)
    return max(chunks, key=lambda c: len(words & quality.content_words(c.text)))


def _count(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _batched(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def exportable(rm: ReadModel, dataset_id: str) -> Iterator[EntryView]:
    """Entries that go into files: those under the quality threshold stay in the log only."""
    return (e for e in rm.datasets.entries(dataset_id) if not e.below_threshold)


def export_dataset(rm: ReadModel, dataset_id: str, *, data_dir: Path, output_dir: str = ".",
                   format_type: str = "jsonl", batch_size: int = EXPORT_BATCH) -> tuple[list[Path], int]:
    """Write the dataset into ``<data>/<output_dir>/<dataset_id>/``: one file per split (train, validation,
    test) when it has splits, else ``dataset``; ``batch_size`` entries per file at most. Streamed and atomic."""
    if format_type not in EXPORT_FORMATS:
        raise DocGenError(f"format_type {format_type!r} is not one of {', '.join(EXPORT_FORMATS)}")
    try:  # resolved and checked where it leads (a job resumed from a log older than the API's own check)
        base = export_dir(data_dir, output_dir, dataset_id) / dataset_id
    except OutputDirError as exc:
        raise DocGenError(str(exc)) from None
    fmt = FORMATS[format_type]
    suffix = EXPORT_SUFFIX[format_type]
    assignment = rm.evaluations.splits(dataset_id)
    groups: dict[str, Iterable[EntryView]]
    if assignment:
        def in_split(name: str) -> Iterator[EntryView]:
            return (e for e in exportable(rm, dataset_id) if assignment.get(e.id) == name)

        groups = {name: in_split(name) for name in ("train", "validation", "test")}
    else:
        groups = {"dataset": exportable(rm, dataset_id)}
    files: list[Path] = []
    total = 0
    for name, entries in groups.items():
        iterator = iter(entries)
        batch, part = _take(iterator, batch_size), 1
        while True:
            following = _take(iterator, batch_size) if len(batch) == batch_size else []
            # one file when it all fits (a dataset of exactly batch_size entries too), else numbered parts
            stem = name if part == 1 and not following else f"{name}_part{part:04d}"
            target = base / f"{stem}{suffix}"
            with atomic_writer(target) as fh:
                total += fmt.write(fh, batch)
            files.append(target)
            if not following:
                break
            batch, part = following, part + 1
    # files an earlier export of this dataset left here (other parts, other splits) would be read as part of it
    written = set(files)
    for name in ("dataset", "train", "validation", "test"):
        for stale in [base / f"{name}{suffix}", *base.glob(f"{name}_part[0-9][0-9][0-9][0-9]{suffix}")]:
            if stale not in written and stale.is_file():
                stale.unlink()
    return files, total


def _take(iterator: Iterator[EntryView], n: int) -> list[EntryView]:
    out = []
    for e in iterator:
        out.append(e)
        if len(out) >= n:
            break
    return out
