"""The plan of a document generation run, made before anything is written: the project's chunks, the
taxonomy's categories, the saved parameters, the export format, the prompt template, the dataset's id and
version, and every slot the dataset has (N per chunk, or one per given question).

The ids are content ids (dsetlog.ids): the same project, request fields, template, parameters, categories
and chunks give the same dataset id and the same slot ids, which is how a run finds and resumes its work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from dsetlog.evaluation import quality
from dsetlog.export.formats import EXPORT_FORMATS
from dsetlog.export.options import ExportError
from dsetlog.generation.errors import DocGenError
from dsetlog.generation.requests import GenerateRequest
from dsetlog.ids import content_id, digest
from dsetlog.prompts import parameters, replies, templates
from dsetlog.store.events import DatasetCreated, Event, SlotQueued
from dsetlog.store.log import EventLog
from projections.projects import ProjectView, flat_categories
from projections.readmodel import ReadModel

# Fields that change what is generated: the same project, these, the prompt template's text, the project's
# saved parameters and the taxonomy's categories give the same dataset (and resume it).
CONTENT_FIELDS = ("prompt_name", "custom_prompt", "generation_mode", "taxonomy_project", "taxonomy_name",
                  "dataset_name", "classification_model", "datasets_per_chunk", "questions", "max_chunks")


@dataclass(frozen=True)
class Chunk:
    id: str
    text: str
    heading: str | None


@dataclass(frozen=True)
class Plan:
    """What a run is made of, read from the log once; the dataset's id and version are the run's own
    (the job worker may point a run at the dataset its job was submitted for)."""

    req: GenerateRequest
    project: ProjectView
    chunks: list[Chunk]
    categories: list[str]
    params: parameters.ProjectParameters | None
    format_type: str
    template_name: str
    template: str
    template_hash: str
    content_key: str
    dataset_id: str
    version: str | None

    @property
    def name(self) -> str:
        return self.req.dataset_name or f"{self.project.name}-{self.req.generation_mode}"


def make_plan(rm: ReadModel, req: GenerateRequest) -> Plan:
    """The plan of ``req`` as the log stands; DocGenError when it cannot run as asked."""
    rm.catch_up()
    project = rm.projects.project(req.project_id) or rm.projects.project_by_name(req.project_id)
    if project is None:
        raise DocGenError(f"no project {req.project_id!r}; create one with `dset ingest PATH --project NAME` "
                          "or POST /api/v1/projects")
    chunks = _chunks(rm, req, project)
    categories = _categories(rm, req, project)
    params = _parameters(rm, project)
    format_type = _format_type(req, params, project)
    try:  # before a call is paid for, not when the files are written
        req.export_options.check([format_type])
    except ExportError as exc:
        raise DocGenError(str(exc)) from None
    template_name, template = _template(rm, req, project)
    template_hash = templates.prompt_hash(template)
    content = [project.id] + [msgspec.json.encode(getattr(req, f)).decode() for f in CONTENT_FIELDS]
    # and what the prompt is made of besides the request: the template's text (a stored prompt gets new
    # versions under the same name), the saved parameters and the taxonomy's categories
    content += [template_hash, msgspec.json.encode(params).decode(), "\x1e".join(categories)]
    # and the chunks themselves: re-chunked documents are new material, not slots of the old run to finish
    content.append(digest(*(c.id for c in chunks))[:16])
    content_key = digest(*content)[:16]
    dataset_id, version = _dataset_identity(rm, req, project, content, content_key)
    return Plan(req=req, project=project, chunks=chunks, categories=categories, params=params,
                format_type=format_type, template_name=template_name, template=template,
                template_hash=template_hash, content_key=content_key, dataset_id=dataset_id, version=version)


def _chunks(rm: ReadModel, req: GenerateRequest, project: ProjectView) -> list[Chunk]:
    views = rm.projects.chunks(project.id)
    if not views:
        raise DocGenError(f"project {project.name!r} has no chunks yet; ingest documents first "
                          f"(`dset ingest PATH --project {project.name}`)")
    if req.max_chunks is not None:
        views = views[: req.max_chunks]
    return [Chunk(c.id, c.text, c.heading) for c in views]


def _categories(rm: ReadModel, req: GenerateRequest, project: ProjectView) -> list[str]:
    if not req.taxonomy_name:
        return []
    owner = req.taxonomy_project or project.id
    holder = rm.projects.project(str(owner)) or rm.projects.project_by_name(str(owner))
    taxonomy = rm.projects.taxonomy(holder.id, req.taxonomy_name) if holder else None
    if taxonomy is None:
        raise DocGenError(f"no taxonomy {req.taxonomy_name!r} in project {holder.name if holder else owner!r}; "
                          "add one with `dset taxonomy add` or POST /api/v1/taxonomy/")
    return flat_categories(taxonomy)


def _parameters(rm: ReadModel, project: ProjectView) -> parameters.ProjectParameters | None:
    saved = rm.projects.latest_parameters(project.id)
    if saved is None:
        return None
    known = {f: v for f, v in saved.parameters.items() if f in parameters.ProjectParameters.__struct_fields__}
    return msgspec.convert(known, parameters.ProjectParameters)


def _format_type(req: GenerateRequest, params: parameters.ProjectParameters | None, project: ProjectView) -> str:
    if req.format_type is not None:
        return req.format_type
    if params is None:
        return "jsonl"
    saved = params.dataset_format.strip().lower()
    if saved not in EXPORT_FORMATS:
        raise DocGenError(f"project {project.name!r} has dataset_format {params.dataset_format!r}, "
                          f"not one of {', '.join(EXPORT_FORMATS)}; give format_type, or save parameters "
                          "with one of those")
    return saved


def _template(rm: ReadModel, req: GenerateRequest, project: ProjectView) -> tuple[str, str]:
    if req.custom_prompt:
        return "custom", req.custom_prompt
    stored = rm.projects.prompt_by_name(req.prompt_name, project_id=project.id)
    if stored is None:
        stored = rm.projects.prompt_by_name(req.prompt_name)
    if stored is not None:
        return stored.name, stored.content
    try:
        return templates.select_template(req.generation_mode, req.prompt_name, questions_given=bool(req.questions))
    except ValueError as exc:
        raise DocGenError(str(exc)) from None


def _dataset_identity(rm: ReadModel, req: GenerateRequest, project: ProjectView, content: list[str],
                      content_key: str) -> tuple[str, str | None]:
    if not req.enable_versioning:
        return content_id("dataset", *content), None
    versions = [d for d in rm.datasets.datasets(name=req.dataset_name, kind="documents")
                if d.version and d.project_id == project.id]
    if versions:
        latest = max(versions, key=lambda d: _semver(d.version))
        unfinished = latest.pending or latest.failed or not latest.items
        if unfinished and latest.params.get("content_key") == content_key:
            return latest.id, latest.version  # an interrupted version: continue it rather than start anew
        major, minor, _ = _semver(latest.version)
        version = f"{major}.{minor + 1}.0"
    else:
        version = "1.0.0"
    return content_id("dataset", *content, version), version


def _semver(version: str | None) -> tuple[int, int, int]:
    try:
        major, minor, patch = (int(x) for x in (version or "0.0.0").split("."))
        return major, minor, patch
    except ValueError:
        return 0, 0, 0


def slot_plan(plan: Plan, dataset_id: str) -> list[SlotQueued]:
    """Every slot of the dataset, deterministic: N per chunk, or one per given question in "answer" mode (without
    questions, "answer" mode has N per chunk: the questions a reader would ask of it)."""
    req, mode = plan.req, plan.req.generation_mode
    slots: list[SlotQueued] = []
    if mode == "answer" and req.questions:
        for i, question in enumerate(req.questions or []):
            chunk = _best_chunk(question, plan.chunks)
            slots.append(SlotQueued(dataset_id=dataset_id, item_id=content_id("slot", dataset_id, "q", i),
                                    chunk_id=chunk.id, slot=i, mode=mode, question=question))
        return slots
    n = req.datasets_per_chunk
    ratio = (plan.params.negativity_ratio if plan.params else 0.0) if "answer" in replies.MODE_FIELDS[mode] else 0
    for chunk in plan.chunks:
        negatives = parameters.plan_negatives(n, ratio, key=f"{dataset_id}:{chunk.id}")
        for slot in range(n):
            slots.append(SlotQueued(dataset_id=dataset_id, item_id=content_id("slot", dataset_id, chunk.id, slot),
                                    chunk_id=chunk.id, slot=slot, mode=mode, negative=slot < negatives))
    return slots


def queue(log: EventLog, rm: ReadModel, plan: Plan, dataset_id: str, version: str | None) -> None:
    """Append the dataset and the slots the log does not have yet (one fsync)."""
    rm.catch_up()
    datasets = rm.datasets
    new: list[Event] = []
    if datasets.dataset(dataset_id) is None:
        params = {k: v for k, v in msgspec.to_builtins(plan.req).items()}
        params["prompt_hash"] = plan.template_hash
        params["content_key"] = plan.content_key
        new.append(DatasetCreated(dataset_id=dataset_id, name=plan.name, kind="documents",
                                  source=plan.project.name, project_id=plan.project.id, version=version,
                                  format_type=plan.format_type, params=params))
    new += [s for s in slot_plan(plan, dataset_id) if datasets.item(dataset_id, s.item_id) is None]
    if new:
        log.append_many(new)
        rm.catch_up()


def _best_chunk(question: str, chunks: Sequence[Chunk]) -> Chunk:
    """The chunk sharing the most content words with the question (the first on ties)."""
    words = quality.content_words(question)
    return max(chunks, key=lambda c: len(words & quality.content_words(c.text)))
