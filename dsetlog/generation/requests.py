"""The request of a document generation run: POST /datasets/generate's body and `dset datasets generate`'s
options (the CLI makes its flags from these fields), checked as it is decoded."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Annotated, ClassVar, Literal

import msgspec

from dsetlog.evaluation import scoring
from dsetlog.export.formats import EXPORT_FORMATS
from dsetlog.export.options import (
    CONTEXT_MODES,
    DEFAULT_CONTEXT,
    DEFAULT_REASONING,
    REASONING_MODES,
    ExportOptions,
)
from dsetlog.generation.batching import FALLBACKS, check_batch_fields
from dsetlog.paths import OutputDirError
from dsetlog.prompts import templates


def check_output_dir(output_dir: str) -> PurePosixPath:
    """output_dir is a folder inside the data dir: absolute paths and '..' are refused."""
    path = PurePosixPath(output_dir.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (output_dir[1:3] == ":/"):
        raise OutputDirError(f"output_dir {output_dir!r} must be a relative folder inside the data directory, "
                         "without '..'")
    return path


class GenerateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /datasets/generate (and `dset datasets generate`): the guide's fields and defaults, plus ours.

    Models name provider profiles (``"gemini"``, ``"ollama"``) or ``profile:model``. The entries are
    written by ``classification_model`` (as in the guide's examples, the model that generates and
    categorises); ``parsing_model`` turns a reply that is not the JSON asked for into it before the
    attempt counts as failed; ``chunking_model`` writes the one-line topic of each chunk that the
    prompt gives as the chunk's heading when the document had none (markdown chunks keep their own).
    """

    # Checked before the rest of the body (api.spec): a path outside the data dir is refused with 400, a
    # request the server will not take whatever else it says, rather than the 422 of the other fields.
    refused_fields: ClassVar[Mapping[str, Callable[[str], object]]] = {"output_dir": check_output_dir}

    project_id: str | int
    prompt_name: str = "qa_pairs"
    custom_prompt: str | None = None
    generation_mode: Literal[templates.MODE_NAMES] = "default"  # type: ignore[valid-type]  # the schema names them
    format_type: Literal[EXPORT_FORMATS] | None = None  # type: ignore[valid-type]  # None: the project's saved dataset_format, else "jsonl" (the guide's default)
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    include_evaluation_sets: bool = False
    taxonomy_project: str | int | None = None
    taxonomy_name: str | None = None
    output_dir: str = "."
    analyze_quality: bool = True
    quality_threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.7
    enable_versioning: bool = False
    dataset_name: str | None = None
    run_benchmarks: bool = False
    benchmark_suite: str = "glue"
    parsing_model: str = "gemini"
    chunking_model: str = "gemini"
    classification_model: str = "gemini"
    datasets_per_chunk: Annotated[int, msgspec.Meta(ge=1, le=50)] = 3
    # ours, beyond the guide
    judge_model: str | None = None  # an LLM judge (rubric 1-5) joins the quality score when set
    benchmark_model: str | None = None  # the model benchmarked (default: classification_model)
    # generation_mode "answer": the questions to answer from the documents; none: the questions a reader would
    # ask of each chunk (datasets_per_chunk of them), answered from it
    questions: list[str] | None = None
    split_ratios: list[float] = msgspec.field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 0
    max_chunks: Annotated[int, msgspec.Meta(ge=1)] | None = None  # only the first N chunks (a cheap trial run)
    evaluation: bool = False  # set by POST /generate-evaluation: difficulty buckets too
    # the files (dsetlog.export.options): reasoning and the source text in the instruction formats, a CSV BOM
    reasoning: Literal[REASONING_MODES] = DEFAULT_REASONING  # type: ignore[valid-type]
    context: Literal[CONTEXT_MODES] = DEFAULT_CONTEXT  # type: ignore[valid-type]
    csv_bom: bool = False
    # the entries' calls through the provider's Batch API (dsetlog.generation.batching; the other roles stay
    # online): ``batch_fallback`` "online" answers online what the server cannot batch and what batches failed;
    # ``batch_poll``: the first seconds between polls of the batches
    batch: bool = False
    batch_fallback: Literal[FALLBACKS] = "none"  # type: ignore[valid-type]
    batch_poll: Annotated[float, msgspec.Meta(gt=0)] = 5.0

    @property
    def export_options(self) -> ExportOptions:
        return ExportOptions(reasoning=self.reasoning, context=self.context, csv_bom=self.csv_bom)

    def __post_init__(self) -> None:
        self.project_id = str(self.project_id)
        if self.taxonomy_project is not None:
            self.taxonomy_project = str(self.taxonomy_project)
        try:
            self.generation_mode = templates.normalize_mode(self.generation_mode)
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
        if self.generation_mode != "answer" and self.questions:
            raise ValueError(f'questions are answered in generation_mode "answer" only, not {self.generation_mode!r}')
        if len(self.split_ratios) != 3 or abs(sum(self.split_ratios) - 1) > 1e-6 or min(self.split_ratios) < 0:
            raise ValueError("split_ratios must be three non-negative numbers (train, validation, test) summing to 1")
        if self.run_benchmarks:  # the canonical name: " Negative_Rejection " is negative_rejection
            self.benchmark_suite = scoring.check_suite(self.benchmark_suite)
        if self.max_chunks is not None and self.max_chunks < 1:
            raise ValueError("max_chunks must be at least 1")
        check_output_dir(self.output_dir)
        check_batch_fields(self.batch, self.batch_fallback, self.batch_poll)
        if self.format_type is not None:  # else the project's format, known when the run starts
            self.export_options.check([self.format_type])
