"""Request and response types of the REST API: declared once, as msgspec Structs.

The same classes decode and validate requests (``forbid_unknown_fields``: an unknown field is a 422
naming it), encode responses, and make the OpenAPI document (``msgspec.json.schema_components``).
Request types of the core are reused as they are: :class:`dsetlog.generation.requests.GenerateRequest` (POST
/datasets/generate), :class:`dsetlog.generation.regeneration.RegenerateRequest`, and
:class:`dsetlog.prompts.parameters.ProjectParameters` (the body of POST /datasets/parameters, with project_id).

Response types allow fields beyond the guide's (clients ignore what they do not know).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from dsetlog.export.formats import EXPORT_FORMATS
from dsetlog.export.options import CONTEXT_MODES, DEFAULT_CONTEXT, DEFAULT_REASONING, REASONING_MODES
from dsetlog.generation.requests import GenerateRequest
from dsetlog.prompts.parameters import NOT_BLANK, ProjectParameters
from dsetlog.store.events import Category

MAX_PER_PAGE = 10_000  # entries (or chunks, answers) in one page: the guide asks for 1,000
INLINE_ENTRIES = 100  # entries GET /datasets/{id} includes; the rest through /entries

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK)]
Score = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Seq = Annotated[int, msgspec.Meta(ge=0, description="a log sequence number: the state as of that event")]


class Struct(msgspec.Struct, kw_only=True):
    """Base of response types."""


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: an unknown field is an error."""


class Query(msgspec.Struct, kw_only=True):
    """Base of query strings (values arrive as text and are converted; unknown parameters are ignored)."""


# --- common --------------------------------------------------------------------------------------


class Error(Struct):
    """Every error: a short title and a description saying what to do."""

    title: str
    description: str


class Message(Struct):
    message: str


class AsOfQuery(Query):
    as_of: Seq | None = None


# --- jobs ----------------------------------------------------------------------------------------


class GenerateEvaluationRequest(GenerateRequest, kw_only=True, forbid_unknown_fields=True):
    """POST /datasets/generate-evaluation: POST /generate's fields, with train/validation/test splits and
    difficulty buckets always made, and the evaluation prompt by default."""

    prompt_name: str = "evaluation_qa"
    include_evaluation_sets: bool = True
    evaluation: bool = True


class JobAccepted(Struct):
    job_id: str
    message: str
    status: str = "pending"
    dataset_id: str | None = None
    status_url: str = ""


JobState = Literal["pending", "running", "completed", "failed"]


class JobBatch(Struct):
    """One of a batch job's provider batches: its last known status and the provider's request counts."""

    batch_id: str
    status: str
    total: int
    completed: int
    failed: int
    ended: bool = False


class JobStatus(Struct):
    """A job as GET /datasets/generate/{job_id}/status shows it (guide fields first). ``status`` is one of the
    guide's four: a job a user cancelled is ``failed``, with ``cancelled`` true and an ``error`` saying so."""

    job_id: str
    status: JobState
    progress: Annotated[int, msgspec.Meta(ge=0, le=100)]
    current_step: str
    estimated_completion: str | None
    result: dict[str, Any] | None
    error: str | None
    kind: str = ""
    dataset_id: str | None = None
    submitted_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    tokens: int = 0
    cost: float = 0.0
    cancel_reason: str | None = None
    cancelled: bool = False
    batches: list[JobBatch] = msgspec.field(default_factory=list)


class JobList(Struct):
    jobs: list[JobStatus]
    total: int


class JobsQuery(Query):
    """``status=failed`` lists cancelled jobs too (they are shown as failed); ``status=cancelled`` only those."""

    status: Literal[JobState, "cancelled"] | None = None
    kind: Literal["generate", "generate-evaluation", "regenerate"] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class CancelRequest(Body):
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""


# --- datasets ------------------------------------------------------------------------------------


class QualityDistribution(Struct):
    high: int
    medium: int
    low: int


class QualitySummary(Struct):
    average_score: float
    distribution: QualityDistribution
    categories: dict[str, int] = {}


class FeedbackSummary(Struct):
    count: int
    average_rating: float | None
    ratings: list[int]
    comments: list[str]
    types: list[str]


class SetAsideRevision(Struct):
    """A regenerated revision that scored lower than the entry's current one and was not made current:
    ``seq`` is its EntryRegenerated's log seq (PUT ``{"revision_seq": seq}`` makes it current), the scores are
    its and the current revision's, both without the judge's grade."""

    seq: int
    job_id: str
    quality_score: float | None
    replaced_score: float | None


class Entry(Struct):
    """One entry: the guide's fields first, then the review state.

    ``quality_score`` is always a number once the entry is scored: the structural checks make it, and with
    analyze_quality groundedness, near-duplicates and the judge (if any) join them. ``quality`` holds the
    components computed, ``quality_analyzed`` says whether the costly analysis was among them."""

    id: str
    question: str
    answer: str
    category: str
    quality_score: float | None
    difficulty: str
    source_chunk: str
    metadata: dict[str, Any]
    reasoning: str = ""
    quality: dict[str, float] = {}
    flagged: bool = False
    feedback: FeedbackSummary | None = None
    revision: int = 1
    split: str | None = None
    below_threshold: bool = False
    duplicate_of: str | None = None
    model: str = ""
    provider: str = ""
    simulated: bool = False
    item_id: str = ""
    created_at: str = ""
    updated_at: str = ""
    regeneration_job_id: str | None = None
    quality_analyzed: Annotated[bool, msgspec.Meta(description=(
        "the costly analysis (groundedness, near-duplicates, the judge if any) made quality_score; false: the "
        "structural checks alone (analyze_quality false), or not scored"))] = False
    set_aside: SetAsideRevision | None = None


class Benchmark(Struct):
    job_id: str
    suite: str
    model: str
    results: dict[str, Any]
    completed_at: str


class DatasetSummary(Struct):
    id: str
    name: str
    kind: str
    total_entries: int
    created_at: str
    format_type: str
    project_id: str | None = None
    version: str | None = None
    source: str = ""
    items: int = 0
    done: int = 0
    failed: int = 0
    pending: int = 0


class Dataset(Struct):
    """GET /datasets/{dataset_id}: the guide's shape; ``entries`` holds the first ones (see entries_inline)."""

    id: str
    name: str
    entries: list[Entry]
    total_entries: int
    created_at: str
    format_type: str
    quality_summary: QualitySummary
    kind: str = "documents"
    project_id: str | None = None
    version: str | None = None
    source: str = ""
    entries_inline: int = INLINE_ENTRIES
    entries_url: str = ""
    items: int = 0
    done: int = 0
    failed: int = 0
    pending: int = 0
    flagged: int = 0
    splits: dict[str, int] = {}
    benchmarks: list[Benchmark] = []
    params: dict[str, Any] = {}
    seq: int = 0


class DatasetList(Struct):
    datasets: list[DatasetSummary]
    total: int


class DatasetsQuery(Query):
    kind: Literal["questions", "documents"] | None = None
    project_id: Id | None = None


class EntriesQuery(Query):
    """GET /datasets/{dataset_id}/entries: the guide's page, per_page, filter_quality and sort_by, and more
    filters. Sorting is stable: ties are ordered by entry id."""

    page: Annotated[int, msgspec.Meta(ge=1)] = 1
    per_page: Annotated[int, msgspec.Meta(ge=1, le=MAX_PER_PAGE)] = 50
    filter_quality: Score | None = None
    sort_by: Literal["quality", "category", "difficulty", "position", "updated"] = "quality"
    order: Literal["asc", "desc"] | None = None
    min_quality: Score | None = None
    max_quality: Score | None = None
    category: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    difficulty: Annotated[str, msgspec.Meta(max_length=50)] | None = None
    flagged: bool | None = None
    split: Literal["train", "validation", "test"] | None = None
    q: Annotated[str, msgspec.Meta(max_length=200, description=(
        "Search: entries whose question or answer holds this text where a word starts, case-insensitive "
        "(each character of a script written without spaces starts a word)"))] | None = None
    as_of: Seq | None = None


class EntriesPage(Struct):
    entries: list[Entry]
    total: int
    page: int
    per_page: int
    quality_summary: QualitySummary
    pages: int = 0
    sort_by: str = "quality"
    order: str = "desc"
    seq: int = 0


class EntryEdit(Body):
    """PUT /datasets/{dataset_id}/entries/{entry_id}: any of the fields; an edit is an event (EntryEdited),
    scored again with the dataset's settings in the same append (EntryScored) when question or answer
    changes. ``revision_seq`` instead makes an earlier revision current (RevisionRestored): the log seq of
    one of the entry's EntryGenerated or EntryRegenerated events (its history, or ``set_aside.seq``)."""

    question: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)] | None = None
    answer: Annotated[str, msgspec.Meta(max_length=1_000_000)] | None = None
    category: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    feedback: Annotated[str, msgspec.Meta(max_length=10_000)] | None = None
    revision_seq: Annotated[int, msgspec.Meta(ge=1, description=(
        "make the revision recorded at this log seq current (an EntryGenerated or EntryRegenerated of the "
        "entry); without question, answer or category"))] | None = None


class EntryUpdated(Struct):
    message: str
    entry: Entry


class FeedbackRequest(Body):
    entry_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=10_000)]
    feedback_type: Literal["bulk_edit", "quality_issue", "content_error"] = "bulk_edit"
    comments: Annotated[str, msgspec.Meta(max_length=10_000)] | None = None
    rating: Annotated[int, msgspec.Meta(ge=1, le=5)] | None = None


class EntryFeedback(Struct):
    entry_id: str
    count: int
    average_rating: float | None
    flagged: bool


class FeedbackAccepted(Struct):
    message: str
    entries: list[EntryFeedback] = []


class DownloadQuery(Query):
    format_type: Literal[EXPORT_FORMATS] | None = None  # type: ignore[valid-type]  # the one list of formats
    as_of: Seq | None = None
    # the files, as the generate request's fields of the same names (dsetlog.export.options)
    reasoning: Literal[REASONING_MODES] = DEFAULT_REASONING  # type: ignore[valid-type]
    context: Literal[CONTEXT_MODES] = DEFAULT_CONTEXT  # type: ignore[valid-type]
    csv_bom: bool = False


class HistoryEvent(Struct):
    seq: int
    ts: str
    type: str
    fields: dict[str, Any]


class EntryHistory(Struct):
    dataset_id: str
    entry_id: str
    revision: int
    events: list[HistoryEvent]


# --- configuration and parameters ------------------------------------------------------------


class HighLevelPrompts(Struct):
    audience_defaults: list[str]
    purpose_defaults: list[str]
    complexity_options: list[str]
    domain_defaults: list[str]
    question_style_options: list[str] = []
    answer_style_options: list[str] = []
    data_augmentation_options: list[str] = []


class DefaultPrompts(Struct):
    prompts: dict[str, str]


class ParametersRequest(ProjectParameters, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """POST /datasets/parameters: the project and its generation parameters."""

    project_id: str | int


ParameterSeq = Annotated[int, msgspec.Meta(ge=1, description="the log sequence number of the ParametersSaved "
                                                              "event that saved them (the guide's integer id)")]


class ParametersSavedResponse(Struct):
    message: str
    parameter_id: ParameterSeq
    project_id: str
    id: str = ""  # the save's string id (also accepted by GET /datasets/parameters/{id})


class Parameters(ProjectParameters, kw_only=True, frozen=True):
    """A saved parameter set: the fields of ProjectParameters, declared once there, plus where it belongs."""

    id: str
    project_id: str
    created_at: str
    parameter_id: ParameterSeq | None = None


class ParametersResponse(Struct):
    parameters: Parameters


# --- projects, documents, taxonomies, prompts -----------------------------------------------------


class ProjectCreate(Body):
    name: Name
    description: Annotated[str, msgspec.Meta(max_length=10_000)] = ""


class Project(Struct):
    id: str
    name: str
    description: str
    created_at: str
    documents: int
    chunks: int
    created: bool | None = None


class ProjectList(Struct):
    projects: list[Project]
    total: int


class ChunkingOptions(Body):
    """How a document is cut into chunks (defaults per strategy: characters 2000/200, tokens 400/40,
    markdown 2000/0, paragraphs 2000 characters with 1 paragraph of overlap)."""

    strategy: Literal["characters", "tokens", "markdown", "paragraphs"] = "paragraphs"
    chunk_size: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    overlap: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None


class DocumentUpload(ChunkingOptions, kw_only=True, forbid_unknown_fields=True):
    """A document in a JSON body: its text in ``content``, or its bytes base64-encoded in ``content_base64``
    (for PDF and DOCX). The filename's extension picks the extractor."""

    filename: Name
    content: str | None = None
    content_base64: str | None = None


class Document(Struct):
    id: str
    project_id: str
    filename: str
    media_type: str
    size: int
    chars: int
    chunks: int
    content_hash: str
    strategy: str | None = None
    chunk_size: int | None = None
    overlap: int | None = None
    ingested_at: str = ""
    pages: int | None = None
    status: str | None = None  # ingested | unchanged | rechunked | completed (for the answer to an upload)
    message: str | None = None
    original_kept: bool = False


class DocumentList(Struct):
    documents: list[Document]
    total: int


class Chunk(Struct):
    id: str
    document_id: str
    index: int
    start: int
    end: int
    text: str
    heading: str | None = None
    title: str | None = None


class ChunkList(Struct):
    chunks: list[Chunk]
    total: int
    page: int
    per_page: int


class PageQuery(Query):
    page: Annotated[int, msgspec.Meta(ge=1)] = 1
    per_page: Annotated[int, msgspec.Meta(ge=1, le=MAX_PER_PAGE)] = 50


class BenchmarkAnswersQuery(PageQuery):
    suite: str | None = None  # default: the suite of the latest answers
    model: str | None = None  # default: the model of the latest answers


class BenchmarkAnswer(Struct):
    entry_id: str
    question: str
    reference: str  # the entry's answer now
    answer: str  # the benchmarked model's
    scores: dict[str, float]
    current: bool  # scored against the entry as it is now (False: it was edited or regenerated since)
    job_id: str


class BenchmarkAnswers(Struct):
    dataset_id: str
    suite: str
    model: str
    answers: list[BenchmarkAnswer]
    total: int
    page: int
    per_page: int


class CategoryIn(Body):
    """A category of a taxonomy being created. At every level a category is either this object or just its
    name (a plain string); names must be unique among siblings."""

    name: Name
    description: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    children: Annotated[list[CategoryIn | Name], msgspec.Meta(max_length=10_000)] = []


class TaxonomyCreate(Body):
    project_id: str | int
    name: Name
    categories: Annotated[list[CategoryIn | Name], msgspec.Meta(min_length=1, max_length=10_000)]
    description: Annotated[str, msgspec.Meta(max_length=10_000)] = ""


class Taxonomy(Struct):
    id: str
    project_id: str
    name: str
    description: str
    categories: list[Category]
    leaf_categories: list[str] = []
    created_at: str = ""
    created: bool | None = None


class TaxonomyList(Struct):
    taxonomies: list[Taxonomy]


class ProjectFilter(Query):
    project_id: Id | None = None


class PromptCreate(Body):
    name: Name
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=200_000)]
    project_id: str | int | None = None
    mode: Literal["", "default", "qa", "question", "answer", "summarization", "instruction_following",
                  "instruction following"] = ""


class Prompt(Struct):
    id: str
    name: str
    content: str
    content_hash: str
    version: int
    project_id: str | None
    mode: str
    created_at: str = ""
    created: bool | None = None
    unknown_placeholders: list[str] = []


class PromptList(Struct):
    prompts: list[Prompt]
    total: int


class Health(Struct):
    status: str
    seq: int
    jobs_running: int
    worker: bool
    simulated: bool
