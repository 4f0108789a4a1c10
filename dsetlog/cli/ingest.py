"""`dset ingest`, `dset projects`, `dset taxonomy`, `dset prompts`, `dset parameters`: what document runs read.

    dset ingest docs/ notes.pdf --project handbook          # extract, hash, chunk; the project is made if missing
    dset ingest docs/ --project handbook --strategy markdown --chunk-size 1500
    dset projects list | dset projects show handbook
    dset taxonomy add --project handbook --name topics topics.txt
    dset prompts add my_qa prompt.txt --project handbook --mode default
    dset parameters set --project handbook --purpose fine-tuning --audience nurses --dataset-format jsonl

Ingesting the same file again changes nothing; other chunking settings re-chunk it.
Extraction is bounded (--max-mb, --max-unzipped-mb, --max-chars, --extract-timeout): a file beyond a
limit is refused with one line naming it, and the others are ingested.
Exit codes: 0 all done, 1 some files failed (the others are ingested), 2 bad usage or a file refused
for a limit (the others are ingested).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from dsetlog.catalog.chunking import STRATEGIES
from dsetlog.catalog.documents import (
    DEFAULT_CHUNKING,
    DEFAULT_STRATEGY,
    MAX_FILE_BYTES,
    files_to_ingest,
    ingest_file,
    resolve_chunking,
)
from dsetlog.catalog.errors import IngestError, MissingParametersError, NotFoundError, TooLargeError
from dsetlog.catalog.extract import DEFAULT_LIMITS, SUPPORTED_EXTENSIONS, ExtractLimits
from dsetlog.catalog.projects import (
    create_project,
    create_taxonomy,
    find_project,
    list_prompts,
    load_prompt_file,
    load_taxonomy_file,
    prompt_text,
    save_prompt,
    update_parameters,
)
from dsetlog.cli.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_data_option, data_dir
from dsetlog.errors import UsageError
from dsetlog.prompts.parameters import (
    ANSWER_STYLES,
    AUGMENTATIONS,
    COMPLEXITY_LEVELS,
    QUESTION_STYLES,
    ProjectParameters,
)
from dsetlog.prompts.templates import MODES
from dsetlog.store.errors import LogError
from dsetlog.store.events import Category
from dsetlog.store.log import EventLog
from projections.projects import ProjectView
from projections.readmodel import ReadModel

Sub = argparse._SubParsersAction  # type: ignore[type-arg]


def register(sub: Sub) -> None:
    _register_ingest(sub)
    _register_projects(sub)
    _register_taxonomy(sub)
    _register_prompts(sub)
    _register_parameters(sub)


def _defaults_text() -> str:
    return ", ".join(f"{s} {size}/{overlap}" for s, (size, overlap) in DEFAULT_CHUNKING.items())


def _register_ingest(sub: Sub) -> None:
    p = sub.add_parser("ingest", help="extract and chunk documents into a project",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help=f"files or directories (walked for {', '.join(SUPPORTED_EXTENSIONS)})")
    _project_option(p, required=True)
    p.add_argument("--strategy", default=DEFAULT_STRATEGY, choices=STRATEGIES,
                   help=f"chunking strategy (default {DEFAULT_STRATEGY})")
    p.add_argument("--chunk-size", type=int, metavar="N",
                   help=f"chunk size: characters, or tokens for 'tokens' (defaults size/overlap: {_defaults_text()})")
    p.add_argument("--overlap", type=int, metavar="N",
                   help="overlap: characters, tokens for 'tokens', paragraphs for 'paragraphs'")
    create = p.add_mutually_exclusive_group()
    create.add_argument("--create", dest="create", action="store_true", default=True,
                        help="create the project when it does not exist (default)")
    create.add_argument("--no-create", dest="create", action="store_false",
                        help="fail when the project does not exist")
    p.add_argument("--description", default="", help="description of a project created here")
    p.add_argument("--max-mb", type=float, default=MAX_FILE_BYTES / 2**20,
                   help=f"refuse files larger than this (default {MAX_FILE_BYTES // 2**20} MB)")
    p.add_argument("--max-unzipped-mb", type=float, default=DEFAULT_LIMITS.max_unzipped_bytes / 2**20,
                   help="refuse a .docx whose document part unzips to more than this "
                        f"(default {DEFAULT_LIMITS.max_unzipped_bytes // 2**20} MB: zip bombs)")
    p.add_argument("--max-chars", type=int, default=DEFAULT_LIMITS.max_chars,
                   help=f"refuse a document of more characters of text (default {DEFAULT_LIMITS.max_chars:,})")
    p.add_argument("--extract-timeout", type=float, default=DEFAULT_LIMITS.max_seconds, metavar="SECONDS",
                   help=f"give up extracting one document after this long (default {DEFAULT_LIMITS.max_seconds:g} s)")
    add_data_option(p)
    p.set_defaults(func=run_ingest)


def _register_projects(sub: Sub) -> None:
    p = sub.add_parser("projects", help="list projects, show one with its documents")
    actions = p.add_subparsers(dest="projects_command", metavar="ACTION", required=True)
    a = actions.add_parser("list", help="every project with its document and chunk counts")
    _common(a)
    a.set_defaults(func=run_projects_list)
    a = actions.add_parser("show", help="a project's documents and their chunk counts")
    a.add_argument("project", metavar="NAME", help="project name (or id)")
    _common(a)
    a.set_defaults(func=run_projects_show)
    a = actions.add_parser("create", help="create a project (nothing happens if it exists)")
    a.add_argument("project", metavar="NAME")
    a.add_argument("--description", default="")
    add_data_option(a)
    a.set_defaults(func=run_projects_create)


def _register_taxonomy(sub: Sub) -> None:
    p = sub.add_parser("taxonomy", help="add and list a project's category taxonomies")
    actions = p.add_subparsers(dest="taxonomy_command", metavar="ACTION", required=True)
    a = actions.add_parser(
        "add", help="add a taxonomy from a file (JSON, or text: one category per line, indented for nesting)",
        description="FILE is JSON ({\"name\": ..., \"categories\": [{\"name\", \"description\", \"children\"}]}) "
                    "or plain text: one category per line, 'Name' or 'Name: description', children indented "
                    "under their parent, '#' comments. A taxonomy with the same name replaces the old one.")
    a.add_argument("file", metavar="FILE")
    _project_option(a, required=True)
    a.add_argument("--name", metavar="TAX", help="taxonomy name (default: the JSON's name, else the file's stem)")
    a.add_argument("--description", help="description (default: the JSON's)")
    add_data_option(a)
    a.set_defaults(func=run_taxonomy_add)
    a = actions.add_parser("list", help="the current taxonomies with their categories")
    _project_option(a, "only this project's")
    _common(a)
    a.set_defaults(func=run_taxonomy_list)


def _register_prompts(sub: Sub) -> None:
    p = sub.add_parser("prompts", help="save and list custom prompt templates (versioned by content hash)")
    actions = p.add_subparsers(dest="prompts_command", metavar="ACTION", required=True)
    a = actions.add_parser("add", help="save a prompt template from a file; a new version when its text changed")
    a.add_argument("name", metavar="NAME")
    a.add_argument("file", metavar="FILE", help="the template ('-' for stdin); variables like {chunk}, {n}, {purpose}")
    _project_option(a, "belongs to this project (default: global)")
    a.add_argument("--mode", default="", help=f"the generation mode it is written for: {', '.join(MODES)}")
    add_data_option(a)
    a.set_defaults(func=run_prompts_add)
    a = actions.add_parser("list", help="the current version of each prompt")
    _project_option(a, "the prompts usable in this project")
    a.add_argument("--versions", action="store_true", help="every version, not only the current ones")
    _common(a)
    a.set_defaults(func=run_prompts_list)


_PARAM_CHOICES: dict[str, Any] = {
    "question_style": list(QUESTION_STYLES),
    "answer_style": list(ANSWER_STYLES),
    "complexity_level": list(COMPLEXITY_LEVELS),
    "data_augmentation": list(AUGMENTATIONS),
}


def _register_parameters(sub: Sub) -> None:
    p = sub.add_parser("parameters", help="save and show a project's generation parameters")
    actions = p.add_subparsers(dest="parameters_command", metavar="ACTION", required=True)
    a = actions.add_parser(
        "set", help="save the project's parameters (fields not given keep their saved values)",
        description="Save a project's generation parameters. purpose, audience and dataset-format are required "
                    "the first time; later, options not given keep the values saved last.")
    _project_option(a, required=True)
    for field in msgspec.structs.fields(ProjectParameters):
        kwargs: dict[str, Any] = {"dest": f"param_{field.name}", "metavar": "VALUE"}
        if field.name in _PARAM_CHOICES:
            kwargs["choices"] = _PARAM_CHOICES[field.name]
            kwargs.pop("metavar")
        if field.name == "negativity_ratio":
            kwargs["type"] = float
            kwargs["metavar"] = "0..1"
        default = "required" if field.required else f"default {field.default!r}"
        a.add_argument("--" + field.name.replace("_", "-"), help=default, **kwargs)
    add_data_option(a)
    a.set_defaults(func=run_parameters_set)
    a = actions.add_parser("show", help="the project's latest parameters")
    _project_option(a, required=True)
    a.add_argument("--history", action="store_true", help="every save, oldest first")
    _common(a)
    a.set_defaults(func=run_parameters_show)


def _project_option(p: argparse.ArgumentParser, help: str = "project name (or id)", *, required: bool = False) -> None:
    p.add_argument("--project", required=required, metavar="NAME", help=help)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")
    add_data_option(p)


# --- helpers ---------------------------------------------------------------------------------


def _read_model(args: argparse.Namespace) -> ReadModel:
    return ReadModel.open(data_dir(args))


def _print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.1f} KB"


# --- dset ingest ----------------------------------------------------------------------------


def run_ingest(args: argparse.Namespace) -> int:
    size, overlap = resolve_chunking(args.strategy, args.chunk_size, args.overlap)
    limits = _extract_limits(args)
    data = data_dir(args)
    with EventLog.in_dir(data) as log:
        rm = ReadModel.open(data)
        project = _ingest_project(args, log, rm)
        counts: Counter[str] = Counter()
        chunks_written = 0
        for shown, path, error in files_to_ingest(args.paths):
            if path is None:
                print(f"{shown}: error: {error}")
                counts["failed"] += 1
                continue
            outcome, written = _ingest_one(log, rm, project.id, shown, path, args.strategy, size, overlap, limits)
            counts[outcome] += 1
            chunks_written += written
    parts = [f"{counts[k]} {label}" for k, label in (("ingested", "ingested"), ("rechunked", "re-chunked"),
             ("completed", "completed"), ("unchanged", "unchanged"), ("failed", "failed"),
             ("refused", "refused for a limit")) if counts[k]]
    print(f"project {project.name}: {', '.join(parts) or 'nothing to do'}; {chunks_written} chunks written "
          f"({args.strategy} {size}/{overlap})")
    if counts["refused"]:
        print(f"dset: {counts['refused']} file(s) refused for a limit (see above); the others were ingested",
              file=sys.stderr)
        return EXIT_USAGE
    if counts["failed"]:
        print(f"dset: {counts['failed']} file(s) failed; the others were ingested", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _extract_limits(args: argparse.Namespace) -> ExtractLimits:
    if args.max_mb <= 0 or args.max_unzipped_mb <= 0 or args.max_chars <= 0 or args.extract_timeout <= 0:
        raise UsageError("--max-mb, --max-unzipped-mb, --max-chars and --extract-timeout must be greater than 0")
    return ExtractLimits(max_input_bytes=int(args.max_mb * 2**20), max_unzipped_bytes=int(args.max_unzipped_mb * 2**20),
                         max_chars=args.max_chars, max_seconds=args.extract_timeout)


def _ingest_project(args: argparse.Namespace, log: EventLog, rm: ReadModel) -> ProjectView:
    """The project of --project, created here unless --no-create."""
    try:
        return find_project(rm, args.project)
    except NotFoundError:
        if not args.create:
            raise UsageError(f"no project {args.project!r}; leave out --no-create to create it") from None
    made = create_project(log, rm, name=args.project, description=args.description)
    print(f"created project {made.name} ({made.id})")
    return find_project(rm, made.id)


def _ingest_one(log: EventLog, rm: ReadModel, project_id: str, shown: str, path: Path, strategy: str, size: int,
                overlap: int, limits: ExtractLimits) -> tuple[str, int]:
    """Ingest one file and print its line; returns what happened to it and the chunks written."""
    try:
        result = ingest_file(log, rm, project_id=project_id, path=path, strategy=strategy, chunk_size=size,
                             overlap=overlap, max_bytes=limits.max_input_bytes, limits=limits)
    except TooLargeError as exc:
        print(f"{shown}: refused: {_without_name(str(exc), path.name)}{_LIMIT_OPTIONS.get(exc.limit, '')}")
        return "refused", 0
    except IngestError as exc:
        print(f"{shown}: error: {_without_name(str(exc), path.name)}")
        return "failed", 0
    except LogError:
        raise
    except Exception as exc:  # an extractor's unforeseen failure on one odd file: the others go on
        print(f"{shown}: error: could not extract it ({type(exc).__name__}: {exc})")
        return "failed", 0
    chunks = _plural(result.chunks, "chunk")
    if result.status == "unchanged":
        print(f"{shown}: unchanged ({result.reason})")
        return result.status, 0
    if result.status == "ingested":
        print(f"{shown}: ingested {chunks} ({_mb(result.size)}, {result.chars} chars)")
    elif result.status == "rechunked":
        print(f"{shown}: re-chunked into {chunks} ({result.reason})")
    else:
        print(f"{shown}: completed {chunks} ({result.reason})")
    return result.status, result.chunks


_LIMIT_OPTIONS = {  # the option that raises each limit, added to its message
    "max_input_bytes": " (--max-mb raises the limit)",
    "max_unzipped_bytes": " (--max-unzipped-mb raises the limit)",
    "max_chars": " (--max-chars raises the limit)",
    "max_seconds": " (--extract-timeout raises the limit)",
}


def _without_name(message: str, name: str) -> str:
    """The error without its leading "name: " (the line already starts with the path)."""
    return message[len(name) + 2:] if message.startswith(name + ": ") else message


# --- dset projects -----------------------------------------------------------------------------


def run_projects_list(args: argparse.Namespace) -> int:
    rm = _read_model(args)
    with rm.lock:
        projects = [msgspec.structs.asdict(p) for p in rm.projects.projects()]
    if args.json:
        _print_json({"projects": projects})
        return EXIT_OK
    if not projects:
        print("no projects yet; `dset ingest PATH --project NAME` makes one")
        return EXIT_OK
    width = max(len(p["name"]) for p in projects)
    for p in projects:
        print(f"{p['name']:<{width}}  {p['id']}  {p['documents']} documents, {p['chunks']} chunks  {p['created_at']}")
    return EXIT_OK


def run_projects_show(args: argparse.Namespace) -> int:
    rm = _read_model(args)
    project = find_project(rm, args.project)
    with rm.lock:
        docs = [msgspec.structs.asdict(d) for d in rm.projects.documents(project.id)]
        taxonomies = [t.name for t in rm.projects.taxonomies(project.id)]
        params = rm.projects.latest_parameters(project.id)
        params_id = params.id if params else None
    if args.json:
        out = msgspec.structs.asdict(project)
        out["documents"] = [{**d, "chunks": len(d["chunk_ids"])} for d in docs]
        for d in out["documents"]:
            del d["chunk_ids"]
        out["taxonomies"], out["parameter_id"] = taxonomies, params_id
        _print_json(out)
        return EXIT_OK
    print(f"project {project.name} ({project.id}), created {project.created_at}")
    if project.description:
        print(f"  {project.description}")
    print(f"{project.documents} documents, {project.chunks} chunks; taxonomies: {', '.join(taxonomies) or 'none'}; "
          f"parameters: {params_id or 'none'}")
    for d in docs:
        chunking = f"{d['strategy']} {d['chunk_size']}/{d['overlap']}" if d["strategy"] else "not chunked"
        print(f"  {d['filename']}  {d['id']}  {_mb(d['size'])}  {d['chars']} chars  "
              f"{len(d['chunk_ids'])} chunks ({chunking})")
    return EXIT_OK


def run_projects_create(args: argparse.Namespace) -> int:
    data = data_dir(args)
    with EventLog.in_dir(data) as log:
        made = create_project(log, ReadModel.open(data), name=args.project, description=args.description)
    print(f"{'created' if made.created else 'exists:'} project {made.name} ({made.id})")
    return EXIT_OK


# --- dset taxonomy ------------------------------------------------------------------------------


def run_taxonomy_add(args: argparse.Namespace) -> int:
    spec = load_taxonomy_file(args.file)
    name = args.name or spec.name or Path(args.file).stem
    description = args.description if args.description is not None else spec.description
    data = data_dir(args)
    with EventLog.in_dir(data) as log:
        rm = ReadModel.open(data)
        project = find_project(rm, args.project)
        made = create_taxonomy(log, rm, project_id=project.id, name=name, categories=spec.categories,
                               description=description)
    state = "saved" if made.created else "unchanged:"
    print(f"{state} taxonomy {made.name} ({made.id}) in project {project.name}: "
          f"{_count(made.categories)} categories")
    for line in _tree(made.categories):
        print(line)
    return EXIT_OK


def _count(categories: list[Category]) -> int:
    return sum(1 + _count(c.children) for c in categories)


def _tree(categories: list[Category], depth: int = 1) -> Iterator[str]:
    for c in categories:
        yield "  " * depth + c.name + (f": {c.description}" if c.description else "")
        yield from _tree(c.children, depth + 1)


def run_taxonomy_list(args: argparse.Namespace) -> int:
    rm = _read_model(args)
    project_id = find_project(rm, args.project).id if args.project else None
    with rm.lock:
        names = {p.id: p.name for p in rm.projects.projects()}
        taxonomies = [msgspec.structs.replace(t) for t in rm.projects.taxonomies(project_id)]
    if args.json:
        _print_json({"taxonomies": [{**msgspec.structs.asdict(t), "project": names.get(t.project_id)}
                                    for t in taxonomies]})
        return EXIT_OK
    if not taxonomies:
        print("no taxonomies yet; `dset taxonomy add --project NAME --name TAX FILE` adds one")
    for t in taxonomies:
        print(f"{t.name} ({t.id}) in project {names.get(t.project_id, t.project_id)}: "
              f"{_count(t.categories)} categories{f' - {t.description}' if t.description else ''}")
        for line in _tree(t.categories):
            print(line)
    return EXIT_OK


# --- dset prompts --------------------------------------------------------------------------------


def run_prompts_add(args: argparse.Namespace) -> int:
    content = prompt_text(sys.stdin.buffer.read(), args.file) if args.file == "-" else load_prompt_file(args.file)
    data = data_dir(args)
    with EventLog.in_dir(data) as log:
        rm = ReadModel.open(data)
        project_id = find_project(rm, args.project).id if args.project else None
        saved = save_prompt(log, rm, name=args.name, content=content, project_id=project_id, mode=args.mode)
    scope = f"project {args.project}" if project_id else "global"
    if saved.created:
        print(f"saved prompt {saved.name} version {saved.version} ({scope}, hash {saved.content_hash}, id {saved.id})")
    else:
        print(f"unchanged: prompt {saved.name} version {saved.version} already has this text "
              f"({scope}, hash {saved.content_hash})")
    if saved.unknown_placeholders:
        print(f"note: {', '.join('{' + n + '}' for n in saved.unknown_placeholders)} will be left as written "
              "(not a known variable)", file=sys.stderr)
    return EXIT_OK


def run_prompts_list(args: argparse.Namespace) -> int:
    rm = _read_model(args)
    project_id = find_project(rm, args.project).id if args.project else None
    rows = [msgspec.structs.asdict(p) for p in list_prompts(rm, project_id, versions=args.versions)]
    with rm.lock:
        names = {p.id: p.name for p in rm.projects.projects()}
    if args.json:
        _print_json({"prompts": rows})
        return EXIT_OK
    if not rows:
        print("no custom prompts yet; `dset prompts add NAME FILE` saves one")
    for p in rows:
        scope = f"project {names.get(p['project_id'], p['project_id'])}" if p["project_id"] else "global"
        first = p["content"].strip().splitlines()[0][:60]
        print(f"{p['name']} v{p['version']}  {p['content_hash']}  {scope}  mode {p['mode'] or '-'}  "
              f"{p['created_at']}  {first!r}")
    return EXIT_OK


# --- dset parameters -----------------------------------------------------------------------------


def run_parameters_set(args: argparse.Namespace) -> int:
    given = {f.name: getattr(args, f"param_{f.name}") for f in msgspec.structs.fields(ProjectParameters)}
    given = {k: v for k, v in given.items() if v is not None}
    data = data_dir(args)
    with EventLog.in_dir(data) as log:
        rm = ReadModel.open(data)
        project = find_project(rm, args.project)
        try:
            parameter_id, params = update_parameters(log, rm, project_id=project.id, changes=given)
        except MissingParametersError as exc:  # said as the options that give them
            raise UsageError(f"give {', '.join('--' + m.replace('_', '-') for m in exc.fields)} "
                             f"(required the first time parameters are set for project {project.name})") from None
    print(f"saved parameters {parameter_id} for project {project.name}")
    for name, value in msgspec.structs.asdict(params).items():
        print(f"  {name}: {value if value is not None else '-'}")
    return EXIT_OK


def run_parameters_show(args: argparse.Namespace) -> int:
    rm = _read_model(args)
    project = find_project(rm, args.project)
    with rm.lock:
        views = rm.projects.parameter_history(project.id) if args.history else []
        latest = rm.projects.latest_parameters(project.id)
        rows = [msgspec.structs.asdict(v) for v in (views or ([latest] if latest else []))]
    if args.json:
        _print_json({"parameters": rows} if args.history else {"parameters": rows[0] if rows else None})
        return EXIT_OK
    if not rows:
        print(f"no parameters saved for project {project.name}; `dset parameters set --project {project.name} "
              "--purpose ... --audience ... --dataset-format ...` saves them")
        return EXIT_OK
    for row in rows:
        print(f"parameters {row['id']} of project {project.name}, saved {row['created_at']}")
        for name, value in row["parameters"].items():
            print(f"  {name}: {json.dumps(value) if not isinstance(value, str) else value}")
    return EXIT_OK
