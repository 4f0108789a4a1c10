"""Event types: immutable facts, in past tense, that make up the log.

Every event is a msgspec Struct tagged with its class name, so one tagged union
decodes any line. Schemas evolve by adding fields *with defaults*: an old line
that lacks a newer field still decodes. Never rename or remove a field, and
never store a secret (API key, token) in an event.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type", tag=True):
    """Base of every event; the tag (``type`` in JSON) is the class name."""

    def ids(self) -> tuple[str, ...]:
        """Every id this event touches (fields named ``*_id`` or ``*_ids``), for history queries."""
        found: list[str] = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name.endswith("_id") and isinstance(value, str) and value:
                found.append(value)
            elif name.endswith("_ids") and isinstance(value, (list, tuple)):
                found.extend(v for v in value if isinstance(v, str))
        return tuple(found)

    @property
    def type(self) -> str:
        return type(self).__name__


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# --- datasets and runs -------------------------------------------------------


class DatasetCreated(Event, frozen=True, kw_only=True):
    dataset_id: str
    name: str
    kind: str = "questions"  # "questions" (a CSV answered) or "documents" (chunks turned into entries)
    source: str = ""  # the input file or project it was made from
    project_id: str | None = None
    version: str | None = None
    format_type: str = "jsonl"
    params: dict[str, Any] = {}


class RunStarted(Event, frozen=True, kw_only=True):
    run_id: str
    dataset_id: str
    command: str
    model: str = ""
    provider: str = ""
    simulated: bool = False
    settings: dict[str, Any] = {}  # concurrency, retries, limits: never a key
    # the system prompt sent before every message of the run (`dset generate --system`), once per run rather
    # than on each of its entries: exports give it to the entries the run made
    system: str = ""


class RunFinished(Event, frozen=True, kw_only=True):
    run_id: str
    dataset_id: str
    outcome: str  # completed | failed | interrupted | budget | fatal
    answered: int = 0
    failed: int = 0
    skipped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    message: str = ""


# --- work items ----------------------------------------------------------------


class QuestionQueued(Event, frozen=True, kw_only=True):
    dataset_id: str
    item_id: str  # deterministic: derived from the dataset and the normalised question
    question: str
    row: int = 0  # 1-based line of the CSV it came from
    source: str = ""


class AttemptStarted(Event, frozen=True, kw_only=True):
    dataset_id: str
    item_id: str
    attempt: int
    run_id: str = ""


class AttemptFailed(Event, frozen=True, kw_only=True):
    dataset_id: str
    item_id: str
    attempt: int
    reason: str
    status_code: int | None = None
    retryable: bool = True
    run_id: str = ""


class ItemBookmarked(Event, frozen=True, kw_only=True):
    """An item exhausted its retries: the next run retries it."""

    dataset_id: str
    item_id: str
    reason: str
    attempts: int = 0
    run_id: str = ""


class EntryGenerated(Event, frozen=True, kw_only=True):
    dataset_id: str
    item_id: str
    entry_id: str
    question: str
    answer: str
    reasoning: str = ""
    category: str = ""
    model: str = ""
    provider: str = ""
    simulated: bool = False
    usage: Usage = Usage()
    latency_ms: float = 0.0
    attempt: int = 1
    run_id: str = ""
    prompt_name: str = ""
    prompt_hash: str = ""
    source_chunk: str = ""  # chunk id for document-grounded entries
    quality_score: float | None = None
    quality: dict[str, float] = {}  # the score's components, kept with the entry
    difficulty: str = ""
    metadata: dict[str, Any] = {}


# --- review ------------------------------------------------------------------


class EntryEdited(Event, frozen=True, kw_only=True):
    dataset_id: str
    entry_id: str
    question: str | None = None
    answer: str | None = None
    category: str | None = None
    feedback: str | None = None


class FeedbackGiven(Event, frozen=True, kw_only=True):
    dataset_id: str
    entry_ids: list[str]
    feedback_type: str = "bulk_edit"
    comments: str | None = None
    rating: int | None = None


class RegenerationRequested(Event, frozen=True, kw_only=True):
    dataset_id: str
    entry_ids: list[str]
    job_id: str
    config: dict[str, Any] = {}


# --- projects, documents, taxonomies, prompts, parameters ----------------------


class ProjectCreated(Event, frozen=True, kw_only=True):
    project_id: str
    name: str
    description: str = ""


class DocumentIngested(Event, frozen=True, kw_only=True):
    """A document's text was extracted; re-ingesting the same content (same hash) is a no-op."""

    project_id: str
    document_id: str
    filename: str
    content_hash: str
    media_type: str
    size: int = 0  # bytes of the original file
    chars: int = 0  # characters of extracted text
    extractor: str = ""
    pages: int | None = None


class ChunkCreated(Event, frozen=True, kw_only=True):
    project_id: str
    document_id: str
    chunk_id: str
    index: int
    start: int  # character offsets into the document's extracted text
    end: int
    text: str
    strategy: str
    heading: str | None = None


class ChunkTitled(Event, frozen=True, kw_only=True):
    """A one-line topic for a chunk without a heading, written once by the chunking model and reused."""

    project_id: str
    chunk_id: str
    title: str
    model: str = ""


class DocumentChunked(Event, frozen=True, kw_only=True):
    """The chunk set of a document under one strategy is complete (its ChunkCreated events precede this)."""

    project_id: str
    document_id: str
    strategy: str
    chunk_size: int
    overlap: int
    chunk_ids: list[str] = []


class Category(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str = ""
    children: list[Category] = []


class TaxonomyCreated(Event, frozen=True, kw_only=True):
    taxonomy_id: str
    project_id: str
    name: str
    categories: list[Category] = []
    description: str = ""


class PromptSaved(Event, frozen=True, kw_only=True):
    """A custom prompt; its version is its content hash, recorded with every entry it produced."""

    prompt_id: str
    name: str
    content: str
    content_hash: str
    project_id: str | None = None
    mode: str = ""


class ParametersSaved(Event, frozen=True, kw_only=True):
    parameter_id: str
    project_id: str
    parameters: dict[str, Any] = {}


# --- document-grounded generation ----------------------------------------------


class SlotQueued(Event, frozen=True, kw_only=True):
    """One entry to make from a chunk: the work item of document-grounded generation."""

    dataset_id: str
    item_id: str  # deterministic: dataset, chunk and slot
    chunk_id: str
    slot: int
    mode: str = "default"
    question: str = ""  # the given question, in "answer" mode
    negative: bool = False  # to be an unanswerable question (negativity_ratio)


class EntryScored(Event, frozen=True, kw_only=True):
    dataset_id: str
    entry_id: str
    quality_score: float
    quality: dict[str, float] = {}  # components
    difficulty: str = ""
    duplicate_of: str | None = None
    below_threshold: bool = False  # left out of exports, kept in the log
    # True: the costly analysis (groundedness, near-duplicates, the judge when there is one) made the score;
    # False: the structural checks alone (analyze_quality false). Scores before this field were all analysed.
    analyzed: bool = True


class EntryRegenerated(Event, frozen=True, kw_only=True):
    """A new revision of an entry's content; the old one stays in the log."""

    dataset_id: str
    entry_id: str
    job_id: str
    answer: str
    question: str | None = None
    reasoning: str = ""
    model: str = ""
    provider: str = ""
    simulated: bool = False
    usage: Usage = Usage()
    config: dict[str, Any] = {}
    # False: it scored lower than the revision it was to replace, which stays current (the user may choose
    # it: RevisionRestored); this revision is kept here only. Older events all became current.
    current: bool = True
    quality_score: float | None = None  # its score, on the basis compared (the judge's grade left out)
    replaced_score: float | None = None  # the score of the current revision, on the same basis


class RevisionRestored(Event, frozen=True, kw_only=True):
    """A user made an earlier revision of an entry current again (the one recorded at ``seq``, an
    EntryGenerated or EntryRegenerated of the entry): its content, copied here, is the entry's again."""

    dataset_id: str
    entry_id: str
    seq: int
    answer: str
    question: str | None = None  # None: the revision wrote no question (the entry's question stays)
    reasoning: str = ""
    model: str = ""
    provider: str = ""
    simulated: bool = False


class EvaluationSetsCreated(Event, frozen=True, kw_only=True):
    dataset_id: str
    seed: int
    ratios: list[float]
    splits: dict[str, str] = {}  # entry_id -> train | validation | test
    difficulty_buckets: dict[str, list[str]] = {}


class BenchmarkAnswered(Event, frozen=True, kw_only=True):
    """The benchmarked model's answer to one test entry, scored against the entry at that revision.

    A later benchmark of the same suite and model reuses it while the entry is unchanged (never paid twice).
    """

    dataset_id: str
    job_id: str
    suite: str
    model: str
    entry_id: str
    revision: int
    answer: str
    scores: dict[str, float] = {}
    usage: Usage = Usage()


class BenchmarkCompleted(Event, frozen=True, kw_only=True):
    dataset_id: str
    job_id: str
    suite: str
    model: str
    results: dict[str, Any] = {}


# --- jobs (work the API server runs in the background) --------------------------


class JobSubmitted(Event, frozen=True, kw_only=True):
    job_id: str
    kind: str  # generate | generate-evaluation | regenerate
    request: dict[str, Any] = {}
    dataset_id: str | None = None


class JobStarted(Event, frozen=True, kw_only=True):
    job_id: str
    attempt: int = 1  # > 1 when a restarted server resumes it


class JobCompleted(Event, frozen=True, kw_only=True):
    job_id: str
    result: dict[str, Any] = {}


class JobFailed(Event, frozen=True, kw_only=True):
    job_id: str
    error: str


class JobCancelled(Event, frozen=True, kw_only=True):
    job_id: str
    reason: str = ""


# --- the log itself --------------------------------------------------------------


class TornTailSetAside(Event, frozen=True, kw_only=True):
    """On opening, the log's last ``lines`` whole, newline-terminated lines (``bytes`` bytes from ``offset``)
    failed their checksum and were moved to ``torn_file``: possibly an acknowledged write damaged on disk."""

    bytes: int
    lines: int = 0
    torn_file: str = ""
    complete: bool = True
    offset: int = 0


# --- providers ---------------------------------------------------------------


class StructuredModeLearned(Event, frozen=True, kw_only=True):
    """An endpoint refused a structured-output mode; calls to it use ``mode`` from now on (and after a
    restart). ``endpoint`` is the base URL (secrets redacted), ``reason`` the server's refusal."""

    endpoint: str
    model: str
    mode: str  # json_schema | json_object_schema | json_object | text (dsetlog.llm.structured.MODES)
    previous: str = ""
    reason: str = ""


# --- batches (a provider's Batch API: /v1/files + /v1/batches) ----------------------


class BatchInputUploaded(Event, frozen=True, kw_only=True):
    """A batch input file of these items was uploaded; its batch is not created yet. Recorded before the
    create, so a run killed between the two looks the batch up by its input file instead of making another."""

    dataset_id: str
    input_file_id: str
    item_ids: list[str]
    model: str = ""
    requests: int = 0
    bytes: int = 0
    endpoint: str = ""  # the base URL (secrets redacted)
    run_id: str = ""
    estimated_tokens: int = 0  # prompt tokens of the requests plus their max_tokens (or the average allowed)


class BatchSubmitted(Event, frozen=True, kw_only=True):
    """The provider made a batch of these items (on the uploaded ``input_file_id``): until it ends, none of
    them is submitted again. ``adopted``: found on the provider after a run died before recording it."""

    dataset_id: str
    batch_id: str
    input_file_id: str
    item_ids: list[str]
    model: str = ""
    requests: int = 0
    status: str = ""
    endpoint: str = ""
    run_id: str = ""
    adopted: bool = False


class BatchProgress(Event, frozen=True, kw_only=True):
    """A poll found the batch's status or request counts changed."""

    dataset_id: str
    batch_id: str
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchCompleted(Event, frozen=True, kw_only=True):
    """The batch ended completed and its results were read back (its entries and failures precede this).
    ``answered``: entries written from it; ``retried``: items it failed that a later batch (or call) takes."""

    dataset_id: str
    batch_id: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    answered: int = 0
    retried: int = 0
    bookmarked: int = 0


class BatchFailed(Event, frozen=True, kw_only=True):
    """The provider refused the batch (validation: ``reason`` names the issues), or knows it no more; none of
    its items ran. With ``batch_id`` empty: no batch could be made of the upload ``input_file_id`` (its file
    expired or was refused), whose items are free again."""

    dataset_id: str
    batch_id: str
    reason: str = ""
    input_file_id: str = ""
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    answered: int = 0
    retried: int = 0
    bookmarked: int = 0


class BatchExpired(Event, frozen=True, kw_only=True):
    """The batch's completion window closed: what it answered was read back, the rest is ``retried``."""

    dataset_id: str
    batch_id: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    answered: int = 0
    retried: int = 0
    bookmarked: int = 0


class BatchCancelled(Event, frozen=True, kw_only=True):
    """The batch ended cancelled (``dset generate --batch-cancel``, or on the provider's side): what it had
    answered was read back; the items it left are taken by a later run."""

    dataset_id: str
    batch_id: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    answered: int = 0
    retried: int = 0
    bookmarked: int = 0


def _all_event_types() -> tuple[type[Event], ...]:
    seen: list[type[Event]] = []
    stack = list(Event.__subclasses__())
    while stack:
        cls = stack.pop(0)
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return tuple(seen)


EVENT_TYPES: tuple[type[Event], ...] = _all_event_types()
EVENT_TYPES_BY_NAME: dict[str, type[Event]] = {cls.__name__: cls for cls in EVENT_TYPES}
AnyEvent = Union[EVENT_TYPES]  # type: ignore[valid-type]  # noqa: UP007 - built at run time
