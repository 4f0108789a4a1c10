"""`dset datasets generate|list|show` and `dset export`: document-grounded datasets on the command line.

The options of `dset datasets generate` are derived from GenerateRequest, the same Struct that
validates POST /api/v1/datasets/generate, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import msgspec

from dsetlog.cli.options import EXIT_FAILED, EXIT_OK, add_data_option, data_dir, parse_budget, simulator_url
from dsetlog.engine.progress import Progress
from dsetlog.errors import UsageError
from dsetlog.export.datasets import export_dataset
from dsetlog.export.formats import EXPORT_FORMATS
from dsetlog.export.options import (
    CONTEXT_MODES,
    DEFAULT_CONTEXT,
    DEFAULT_REASONING,
    INSTRUCTION_FORMATS,
    REASONING_MODES,
    ExportOptions,
)
from dsetlog.generation.errors import DocGenError
from dsetlog.generation.requests import GenerateRequest
from dsetlog.ids import new_job_id
from dsetlog.jobs.lifecycle import run_generation_job
from dsetlog.llm.providers import load_env
from dsetlog.paths import cli_export_dir
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel


def add_export_options(p: argparse.ArgumentParser) -> None:
    """--reasoning, --context and --csv-bom: what `dset generate` and `dset export` ask of the files."""
    formats = ", ".join(INSTRUCTION_FORMATS)
    p.add_argument("--reasoning", choices=REASONING_MODES, default=DEFAULT_REASONING,
                   help=f"the model's reasoning in {formats}: omit it (default), think: <think>...</think> before "
                        "the answer (LLaMA-Factory), field: reasoning_content on the assistant message "
                        "(axolotl; sharegpt and openai-chat)")
    p.add_argument("--context", choices=CONTEXT_MODES, default=DEFAULT_CONTEXT,
                   help=f"none (default): {formats} hold the question alone and leave out the negatives "
                        "(\"The text does not say.\"); chunk: every entry with the text it was made from, "
                        "negatives included")
    p.add_argument("--csv-bom", action="store_true",
                   help="write the CSV with a UTF-8 BOM (utf-8-sig), so Excel reads its non-ASCII text right")


def export_options(args: argparse.Namespace) -> ExportOptions:
    return ExportOptions(reasoning=args.reasoning, context=args.context, csv_bom=args.csv_bom)


def _option_type(annotation: Any) -> tuple[Any, str]:
    """argparse type and kind ("bool", "list" or "value") for a GenerateRequest field's annotation."""
    if get_origin(annotation) in (Union, UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if annotation is bool:
        return bool, "bool"
    if get_origin(annotation) is list:
        return get_args(annotation)[0], "list"
    return (annotation if annotation in (int, float) else str), "value"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    datasets = sub.add_parser("datasets", help="document-grounded datasets: generate, list, show")
    dsub = datasets.add_subparsers(dest="datasets_command", metavar="COMMAND", required=True)

    gen = dsub.add_parser("generate", help="generate a dataset from a project's chunks (options of POST /generate)",
                          description=GenerateRequest.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_option(gen)
    gen.add_argument("--project", dest="project_id", required=True, metavar="NAME_OR_ID")
    defaults = GenerateRequest(project_id="-", questions=["-"], generation_mode="answer")
    for f in msgspec.structs.fields(GenerateRequest):
        if f.name in ("project_id", "evaluation"):
            continue
        flag = "--" + f.name.replace("_", "-")
        kind_type, kind = _option_type(f.type)
        default = getattr(defaults, f.name) if f.name != "questions" else None
        if f.name == "generation_mode":
            default = "default"
        if f.name == "format_type":
            gen.add_argument(flag, dest=f.name, help=f"{', '.join(EXPORT_FORMATS)} (default: the project's saved "
                                                     "dataset_format, else jsonl)")
            continue
        if kind == "bool":
            gen.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                             help=f"(default: {default})")
        elif kind == "list":
            gen.add_argument(flag, dest=f.name, type=kind_type, nargs="+", default=default, help=f"(default: {default})")
        else:
            gen.add_argument(flag, dest=f.name, type=kind_type, default=default, help=f"(default: {default})")
    gen.add_argument("--questions-file", type=Path, help='"answer" mode: a file with one question per line')
    gen.add_argument("--evaluation-sets", dest="evaluation", action="store_true",
                     help="like POST /generate-evaluation: splits plus difficulty buckets")
    gen.add_argument("--simulate", action="store_true", help="every model role answered by the built-in simulator")
    gen.add_argument("--budget", metavar="N|$X", help="stop cleanly after N tokens or $X of estimated cost")
    gen.add_argument("--no-progress", action="store_true")
    gen.add_argument("--wait", action="store_true",
                     help="if another run (a command or a server job) is generating this dataset, wait for it and "
                          "then continue where it stopped (default: stop at once, naming it, with exit code 2)")
    gen.set_defaults(func=generate)

    lst = dsub.add_parser("list", help="list datasets")
    add_data_option(lst)
    lst.set_defaults(func=list_datasets)

    show = dsub.add_parser("show", help="a dataset's summary (as of now or --as-of SEQ)")
    add_data_option(show)
    show.add_argument("dataset_id")
    show.add_argument("--as-of", type=int, metavar="SEQ")
    show.set_defaults(func=show_dataset)

    exp = sub.add_parser("export", help="write a dataset's files, as of now or --as-of a log sequence number")
    add_data_option(exp)
    exp.add_argument("dataset_id")
    exp.add_argument("--format", dest="format_type", choices=EXPORT_FORMATS,
                     help="(default: the dataset's own format_type)")
    exp.add_argument("--output-dir", default="exports",
                     help="a folder inside the data dir (default: exports), or an absolute path anywhere; "
                          "the files go into its DATASET_ID folder")
    exp.add_argument("--as-of", type=int, metavar="SEQ", help="the dataset as it was at this log sequence number")
    add_export_options(exp)
    exp.set_defaults(func=export)


def request_from_args(args: argparse.Namespace) -> GenerateRequest:
    values = {f.name: getattr(args, f.name) for f in msgspec.structs.fields(GenerateRequest)
              if hasattr(args, f.name) and getattr(args, f.name) is not None}
    if args.questions_file is not None:
        try:
            values["questions"] = [q.strip() for q in args.questions_file.read_text().splitlines() if q.strip()]
        except OSError as exc:
            raise UsageError(f"{args.questions_file}: {exc.strerror}") from None
    try:
        return msgspec.convert(values, GenerateRequest)
    except msgspec.ValidationError as exc:
        raise UsageError(str(exc)) from None


def generate(args: argparse.Namespace) -> int:
    load_env()
    req = request_from_args(args)
    budget = parse_budget(args.budget)
    data = data_dir(args)
    job_id = new_job_id()
    with simulator_url(args.simulate, latency_ms=5) as sim_url, EventLog.in_dir(data) as log:
        rm = ReadModel.open(data)
        rm.wait_verified()  # opened from a snapshot: the whole log's checksums hold before anything is added
        progress = Progress(total=0, enabled=not args.no_progress)
        result = run_generation_job(log=log, rm=rm, data=data, req=req, job_id=job_id, kind="generate",
                                    sim_url=sim_url, progress=progress, budget=budget, wait=args.wait)
    print(f"job {job_id}\ndataset {result.dataset_id} ({result.name}{' v' + result.version if result.version else ''})")
    print(f"{result.entries_count} entries, {result.exported_count} exported to "
          f"{', '.join(result.files) or '(no files)'}; {result.prompt_tokens + result.completion_tokens:,} tokens")
    if result.quality_summary.get("average_score") is not None and args.analyze_quality:
        print(f"quality: {msgspec.json.encode(result.quality_summary).decode()}")
    if result.splits:
        print(f"splits: {result.splits}")
    if result.benchmark:
        print(f"benchmark: {msgspec.json.encode(result.benchmark).decode()}")
    if result.outcome == "interrupted":
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    if result.outcome != "completed":
        print(f"stopped: {result.outcome} {result.message}".rstrip(), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def list_datasets(args: argparse.Namespace) -> int:
    rm = ReadModel.open(data_dir(args))
    for d in rm.datasets.datasets():
        version = f" v{d.version}" if d.version else ""
        print(f"{d.id}  {d.name}{version}  {d.kind}  {d.entries} entries  {d.done}/{d.items} done  {d.failed} failed")
    return EXIT_OK


def _read_model(args: argparse.Namespace) -> ReadModel:
    rm = ReadModel.open(data_dir(args))
    if getattr(args, "as_of", None) is not None:
        if not 0 <= args.as_of <= rm.seq:
            raise UsageError(f"--as-of {args.as_of}: the log holds seqs 1 to {rm.seq}")
        rm = rm.as_of(args.as_of)
    if rm.datasets.dataset(args.dataset_id) is None:
        raise UsageError(f"no dataset {args.dataset_id!r}{' at seq ' + str(args.as_of) if args.as_of else ''}; "
                         "`dset datasets list` shows them")
    return rm


def show_dataset(args: argparse.Namespace) -> int:
    rm = _read_model(args)
    d = rm.datasets.dataset(args.dataset_id)
    doc = msgspec.to_builtins(d)
    doc["quality_summary"] = rm.datasets.quality_summary(args.dataset_id)
    doc["splits"] = rm.evaluations.splits(args.dataset_id) and {
        name: sum(1 for v in rm.evaluations.splits(args.dataset_id).values() if v == name)
        for name in ("train", "validation", "test")}
    doc["benchmarks"] = msgspec.to_builtins(rm.evaluations.benchmarks(args.dataset_id))
    print(msgspec.json.format(msgspec.json.encode(doc)).decode())
    return EXIT_OK


def export(args: argparse.Namespace) -> int:
    rm = _read_model(args)
    try:
        folder = cli_export_dir(data_dir(args), args.output_dir, args.dataset_id)
        files, n = export_dataset(rm, args.dataset_id, data_dir=folder, output_dir=".",
                                  format_type=args.format_type or rm.datasets.dataset(args.dataset_id).format_type,
                                  options=export_options(args))
    except (DocGenError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # an absolute --output-dir the user cannot write to
        raise UsageError(f"--output-dir {args.output_dir}: cannot write there ({exc.strerror or exc}); "
                         "give a folder you can write to") from None
    print(f"{n} entries written to {', '.join(str(f) for f in files)}")
    return EXIT_OK
