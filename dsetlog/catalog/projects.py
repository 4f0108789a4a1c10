"""Projects and what they hold besides documents: taxonomies, custom prompts and saved parameters, into the log.

Every function takes the log and a read model of the same data dir, catches the model up before it decides
anything and again after it appends, and returns a Struct (no printing). Bad input raises
:class:`~dsetlog.catalog.errors.IngestError` whose message says what to do; :class:`NotFoundError` for an
unknown project. Saving what is already the current state appends nothing (a project of the same name, the
same taxonomy, a prompt's current text). A project's id comes from its name, so two processes creating it at
once write the same fact; taxonomies, prompt versions and parameter saves get random ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from dsetlog.catalog.errors import IngestError, MissingParametersError, NotFoundError
from dsetlog.ids import content_id, new_id
from dsetlog.prompts.parameters import ProjectParameters
from dsetlog.prompts.templates import normalize_mode, placeholders, prompt_hash
from dsetlog.store.events import Category, ParametersSaved, ProjectCreated, PromptSaved, TaxonomyCreated
from dsetlog.store.log import EventLog
from projections.projects import CATEGORY_PATH_SEP, ProjectView, PromptView
from projections.readmodel import ReadModel

# the variables a prompt template can use (see dsetlog.prompts.parameters.variables_from)
PROMPT_VARIABLES = frozenset(
    {
        "chunk", "n", "purpose", "audience", "complexity_level", "domain", "question_style", "answer_style",
        "categories", "extraction_rules", "negatives", "questions",
    }
)  # fmt: skip


class ProjectResult(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    description: str
    created_at: str
    documents: int
    chunks: int
    created: bool  # False: a project with this name already existed and is returned as it is


class TaxonomyResult(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    project_id: str
    name: str
    description: str
    categories: list[Category]
    created: bool  # False: the same taxonomy was already the current one of that name


class PromptResult(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    content_hash: str
    version: int
    project_id: str | None
    mode: str
    created: bool  # False: the same content was already the current version
    unknown_placeholders: list[str] = []  # {names} no run fills in: left as they are in the prompt


class TaxonomySpec(msgspec.Struct, frozen=True, kw_only=True):
    """A taxonomy read from a file: the name (None when the file gives none) and its categories."""

    name: str | None
    description: str
    categories: list[Category]


def project_id_for(name: str) -> str:
    """A project's id, from its name: the same name is the same project in every log."""
    return content_id("proj", "project", name, length=12)


# --- projects ----------------------------------------------------------------------------------


def create_project(log: EventLog, rm: ReadModel, *, name: str, description: str = "") -> ProjectResult:
    """The project with this name, created if there is none (an existing one is returned unchanged)."""
    name = _clean_name(name, "project name")
    rm.catch_up()
    with rm.lock:
        existing = rm.projects.project_by_name(name)
        if existing is not None:
            return _project_result(existing, created=False)
    log.append(ProjectCreated(project_id=project_id_for(name), name=name, description=description))
    rm.catch_up()
    with rm.lock:
        project = rm.projects.project_by_name(name)
        assert project is not None
        return _project_result(project, created=True)


def _project_result(view: ProjectView, *, created: bool) -> ProjectResult:
    return ProjectResult(
        id=view.id, name=view.name, description=view.description, created_at=view.created_at,
        documents=view.documents, chunks=view.chunks, created=created,
    )  # fmt: skip


def find_project(rm: ReadModel, project: str) -> ProjectView:
    """A project by id or by name (caught up); NotFoundError naming the known projects otherwise."""
    rm.catch_up()
    with rm.lock:
        projects = rm.projects
        view = projects.project(project) or projects.project_by_name(project)
        if view is not None:
            return msgspec.structs.replace(view)
        known = [p.name for p in projects.projects()]
    hint = f"; known projects: {', '.join(known)}" if known else "; create one first"
    raise NotFoundError(f"no project {project!r}{hint}")


def require_project(rm: ReadModel, project_id: str) -> None:
    """NotFoundError unless the project with this id exists (the caller has caught the model up)."""
    with rm.lock:
        if rm.projects.project(project_id) is None:
            raise NotFoundError(f"no project with id {project_id!r}; create the project first")


def _clean_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise IngestError(f"{what} must not be empty")
    return name.strip()


# --- taxonomies ---------------------------------------------------------------------------------


def create_taxonomy(
    log: EventLog,
    rm: ReadModel,
    *,
    project_id: str,
    name: str,
    categories: Sequence[Category | Mapping[str, Any] | str],
    description: str = "",
) -> TaxonomyResult:
    """A taxonomy (nested categories) for the project; one of the same name is superseded.

    Categories may be Category structs, dicts (``name``, ``description``, ``children``) or plain
    names. Names must be non-empty and unique among their siblings. Saving the same taxonomy
    again appends nothing.
    """
    name = _clean_name(name, "taxonomy name")
    cats = to_categories(categories)
    if not cats:
        raise IngestError(f"taxonomy {name!r} has no categories; give at least one")
    rm.catch_up()
    require_project(rm, project_id)
    with rm.lock:
        current = rm.projects.taxonomy(project_id, name)
        if current is not None and current.categories == cats and current.description == description:
            return _taxonomy_result(current, created=False)
    taxonomy_id = new_id("tax")
    log.append(
        TaxonomyCreated(
            taxonomy_id=taxonomy_id, project_id=project_id, name=name, categories=cats, description=description
        )
    )
    rm.catch_up()
    with rm.lock:
        view = rm.projects.taxonomy_by_id(taxonomy_id)
        assert view is not None
        return _taxonomy_result(view, created=True)


def _taxonomy_result(view: Any, *, created: bool) -> TaxonomyResult:
    return TaxonomyResult(
        id=view.id, project_id=view.project_id, name=view.name, description=view.description,
        categories=list(view.categories), created=created,
    )  # fmt: skip


def to_categories(items: Iterable[Category | Mapping[str, Any] | str], *, where: str = "") -> list[Category]:
    """Validated Category structs from structs, dicts or names; IngestError naming the bad one."""
    if isinstance(items, (str, bytes, Mapping)):
        raise IngestError("categories must be a list (of names or of {name, description, children})")
    out: list[Category] = []
    seen: dict[str, str] = {}
    for item in items:
        if isinstance(item, Category):
            name, desc, children = item.name, item.description, item.children
        elif isinstance(item, str):
            name, desc, children = item, "", []
        elif isinstance(item, Mapping):
            unknown = set(item) - {"name", "description", "children"}
            if unknown:
                raise IngestError(
                    f"category {item.get('name', '?')!r}{where}: unknown field(s) {', '.join(sorted(unknown))}; "
                    "a category has name, description and children"
                )
            name, desc, children = item.get("name", ""), item.get("description") or "", item.get("children") or []
        else:
            raise IngestError(f"a category{where} must be a name or an object with a name, not {item!r}")
        if not isinstance(name, str) or not name.strip():
            raise IngestError(f"a category{where} has an empty name; every category needs one")
        if not isinstance(desc, str):
            raise IngestError(f"category {name!r}{where}: description must be text")
        name = name.strip()
        if CATEGORY_PATH_SEP in name:
            raise IngestError(f"category {name!r}{where}: a name may not contain {CATEGORY_PATH_SEP!r}")
        key = name.casefold()
        if key in seen:
            raise IngestError(f"category {name!r}{where} appears twice; names must be unique among siblings")
        seen[key] = name
        path = f"{where.removeprefix(' under ')}{CATEGORY_PATH_SEP}{name}" if where else name
        kids = to_categories(children, where=f" under {path}")
        out.append(Category(name=name, description=desc.strip(), children=kids))
    return out


def load_taxonomy_file(path: Path | str) -> TaxonomySpec:
    """A taxonomy from a file: JSON, or plain text with one category per line, indented for nesting.

    JSON: ``{"name": ..., "description": ..., "categories": [{"name", "description", "children": [...]}]}``
    or just the list of categories. Text: ``Name`` or ``Name: description`` per line; a line
    indented deeper than the one before is its child; blank lines and ``#`` comments are skipped,
    and a leading ``-`` or ``*`` bullet is allowed.
    """
    path = Path(path)
    text = _utf8(_read_bytes(path, str(path)), str(path))
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("{", "["):
        return _taxonomy_from_json(path, text)
    return TaxonomySpec(name=None, description="", categories=_taxonomy_from_text(path, text))


def _taxonomy_from_json(path: Path, text: str) -> TaxonomySpec:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if isinstance(doc, list):
        return TaxonomySpec(name=None, description="", categories=to_categories(doc))
    if not isinstance(doc, dict) or "categories" not in doc:
        raise IngestError(f'{path}: expected {{"name": ..., "categories": [...]}} or a list of categories')
    name = doc.get("name")
    if name is not None and not isinstance(name, str):
        raise IngestError(f"{path}: name must be text")
    description = doc.get("description") or ""
    if not isinstance(description, str):
        raise IngestError(f"{path}: description must be text")
    return TaxonomySpec(name=name or None, description=description, categories=to_categories(doc["categories"]))


def _taxonomy_from_text(path: Path, text: str) -> list[Category]:
    roots: list[dict[str, Any]] = []
    stack: list[tuple[int, dict[str, Any]]] = []  # (indent, node) of the open ancestors
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        expanded = line.expandtabs(4)
        indent = len(expanded) - len(expanded.lstrip())
        body = expanded.strip()
        if body[:2] in ("- ", "* "):
            body = body[2:].strip()
        name, _, desc = body.partition(": ")
        node: dict[str, Any] = {"name": name.strip().rstrip(":"), "description": desc.strip(), "children": []}
        while stack and stack[-1][0] >= indent:
            top_indent, _ = stack.pop()
            if top_indent > indent and (not stack or stack[-1][0] < indent):
                raise IngestError(
                    f"{path}, line {lineno}: the indentation does not match any enclosing category's"
                )
        (stack[-1][1]["children"] if stack else roots).append(node)
        stack.append((indent, node))
    if not roots:
        raise IngestError(f"{path}: no categories in it; write one category per line")
    return to_categories(roots)


# --- prompts ----------------------------------------------------------------------------------


def save_prompt(
    log: EventLog,
    rm: ReadModel,
    *,
    name: str,
    content: str,
    project_id: str | None = None,
    mode: str = "",
) -> PromptResult:
    """Save a custom prompt; versioned by content hash (the same content as the current version: nothing appended)."""
    name = _clean_name(name, "prompt name")
    if not isinstance(content, str) or not content.strip():
        raise IngestError(f"prompt {name!r} is empty; give the template text")
    if mode:
        try:
            mode = normalize_mode(mode)
        except ValueError as exc:
            raise IngestError(str(exc)) from None
    digest = prompt_hash(content)
    unknown = sorted(placeholders(content) - PROMPT_VARIABLES)
    rm.catch_up()
    if project_id is not None:
        require_project(rm, project_id)
    with rm.lock:
        versions = rm.projects.prompt_versions(name, project_id)
        current = next((p for p in reversed(versions) if p.project_id == project_id), None)
        if current is not None and current.content_hash == digest:
            return _prompt_result(current, created=False, unknown=unknown)
    prompt_id = new_id("prompt")
    log.append(
        PromptSaved(
            prompt_id=prompt_id, name=name, content=content, content_hash=digest, project_id=project_id, mode=mode
        )
    )
    rm.catch_up()
    with rm.lock:
        view = rm.projects.prompt(prompt_id)
        if view is None:  # another process saved the same content first: the projection kept that one
            versions = rm.projects.prompt_versions(name, project_id)
            view = next(p for p in reversed(versions) if p.project_id == project_id)
        return _prompt_result(view, created=view.id == prompt_id, unknown=unknown)


def _prompt_result(view: Any, *, created: bool, unknown: list[str]) -> PromptResult:
    return PromptResult(
        id=view.id, name=view.name, content_hash=view.content_hash, version=view.version,
        project_id=view.project_id, mode=view.mode, created=created, unknown_placeholders=unknown,
    )  # fmt: skip


def load_prompt_file(path: Path | str) -> str:
    """A prompt template's text from a file (see :func:`prompt_text`)."""
    return prompt_text(_read_bytes(Path(path), str(path)), str(path))


def prompt_text(raw: bytes, source: str) -> str:
    """A prompt template's text from its bytes (a file's, stdin's): UTF-8 (a BOM dropped), lines ending in \\n."""
    return _utf8(raw, source).replace("\r\n", "\n")


def list_prompts(rm: ReadModel, project_id: str | None = None, *, versions: bool = False) -> list[PromptView]:
    """The current version of each prompt (with ``project_id``: of those usable in that project); with
    ``versions``, every version of those prompts instead, each prompt's versions together."""
    rm.catch_up()
    with rm.lock:
        current = rm.projects.prompts(project_id)
        if not versions:
            return [msgspec.structs.replace(p) for p in current]
        wanted = {(p.name, p.project_id) for p in current}
        return [msgspec.structs.replace(v) for name in dict.fromkeys(p.name for p in current)
                for v in rm.projects.prompt_versions(name) if (v.name, v.project_id) in wanted]


def _read_bytes(path: Path, shown: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{shown}: cannot read: {exc.strerror or exc}") from None


def _utf8(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise IngestError(f"{source}: not UTF-8 text; save it as UTF-8") from None


# --- parameters ----------------------------------------------------------------------------------


def save_parameters(log: EventLog, rm: ReadModel, *, project_id: str, params: ProjectParameters) -> str:
    """Save the project's generation parameters (every field); the latest save is the project's. Returns its id."""
    if not isinstance(params, ProjectParameters):
        raise IngestError("params must be a ProjectParameters")
    rm.catch_up()
    require_project(rm, project_id)
    parameter_id = new_id("params")
    log.append(
        ParametersSaved(parameter_id=parameter_id, project_id=project_id, parameters=msgspec.structs.asdict(params))
    )
    rm.catch_up()
    return parameter_id


def parameters_from(fields: Mapping[str, Any]) -> ProjectParameters:
    """ProjectParameters from a dict (a request body, CLI options); IngestError naming the bad field."""
    try:
        return msgspec.convert(dict(fields), ProjectParameters)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        raise IngestError(f"invalid parameters: {exc}") from None


def update_parameters(
    log: EventLog, rm: ReadModel, *, project_id: str, changes: Mapping[str, Any]
) -> tuple[str, ProjectParameters]:
    """Save the project's parameters: ``changes`` over those saved last (a field an older version saved that is
    no parameter any more is dropped). Returns the save's id and the parameters; a required field that neither
    gives is a :class:`MissingParametersError` naming it."""
    rm.catch_up()
    require_project(rm, project_id)
    with rm.lock:
        name = rm.projects.project(project_id).name  # type: ignore[union-attr]  # required just above
        latest = rm.projects.latest_parameters(project_id)
        saved = dict(latest.parameters) if latest else {}
    fields = msgspec.structs.fields(ProjectParameters)
    known = {f.name for f in fields}
    merged = {k: v for k, v in saved.items() if k in known} | dict(changes)
    missing = [f.name for f in fields if f.required and f.name not in merged]
    if missing:
        raise MissingParametersError(missing, name)
    params = parameters_from(merged)
    return save_parameters(log, rm, project_id=project_id, params=params), params
