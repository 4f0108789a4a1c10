"""`dset generate QUESTIONS.csv`: answer every question once, resumably, and write the seed's outputs.

The run is a dataset in the log. Running the same command again continues it:
answered questions are never requested again, pending and bookmarked ones are.
"""

# The LLM client (openai and its HTTP stack) is imported inside run(): every other `dset` command starts faster.
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsetlog.cli.options import EXIT_FAILED, EXIT_OK, add_data_option, data_dir
from dsetlog.engine.progress import Budget, Progress
from dsetlog.engine.stages import Outcome
from dsetlog.errors import UsageError
from dsetlog.export.formats import FORMATS, SEED_FORMATS, export
from dsetlog.generation.questions import (
    QuestionsFile,
    QuestionsFileError,
    normalize,
    read_questions,
    write_statuses,
)
from dsetlog.ids import content_id, entry_id_for, new_id
from dsetlog.llm.providers import PROFILES, Provider, load_env, resolve
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
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel

if TYPE_CHECKING:  # the LLM client imports the openai SDK: only a run that makes calls pays for that import
    from dsetlog.engine.engine import Engine, EngineResult, WorkItem
    from dsetlog.llm.client import Completion

EXTRA_FORMATS = [name for name in FORMATS if name not in SEED_FORMATS]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("generate", help="answer a CSV of questions (first column) with an LLM, resumably",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("questions", metavar="QUESTIONS.csv", help="CSV with one question per row in the first column")
    p.add_argument("--out", default="dset_generator", help="output directory (default: dset_generator)")
    p.add_argument("--formats", default="", metavar="LIST",
                   help=f"extra output formats, comma-separated: {', '.join(EXTRA_FORMATS)} "
                        "(output.csv, output.json and output.txt are always written)")
    add_data_option(p)
    p.add_argument("--dataset", metavar="NAME", help="dataset name (default: derived from the CSV's path)")
    p.add_argument("--simulate", action="store_true", help="answer with the built-in simulator (no key, offline)")
    p.add_argument("--profile", default="deepseek", choices=sorted(PROFILES), help="provider profile (default deepseek)")
    p.add_argument("--model", help="model name (default: the profile's, e.g. deepseek-reasoner)")
    p.add_argument("--base-url", help="any OpenAI-compatible endpoint (key from DSET_API_KEY)")
    p.add_argument("--system", metavar="PROMPT", help="a system prompt sent before every question")
    p.add_argument("--temperature", type=float)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--concurrency", type=int, default=8, help="calls in flight at once (default 8)")
    p.add_argument("--rpm", type=int, default=0, help="requests per minute limit (0: none)")
    p.add_argument("--tpm", type=int, default=0, help="tokens per minute limit (0: none)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per call (default 300)")
    p.add_argument("--max-retries", type=int, default=3, help="retries per question after the first try (default 3)")
    p.add_argument("--backoff", type=float, default=2.0,
                   help="seconds before the first retry, doubling each time (dset's own schedule: --backoff 60)")
    p.add_argument("--budget", metavar="N|$X", help="stop cleanly after N tokens or $X of estimated cost")
    p.add_argument("--price", nargs=2, type=float, metavar=("IN", "OUT"),
                   help="USD per million input and output tokens, for the cost estimate")
    header = p.add_mutually_exclusive_group()
    header.add_argument("--header", dest="header", action="store_true", default=None,
                        help="the first row is a header (default: detected)")
    header.add_argument("--no-header", dest="header", action="store_false", help="the first row is a question")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    from dsetlog.generation.questions import MAX_INPUT_BYTES

    p.add_argument("--max-input-mb", type=float, default=MAX_INPUT_BYTES / 2**20, metavar="MB",
                   help=f"refuse a questions file larger than this (default {MAX_INPUT_BYTES // 2**20} MB)")
    sim = p.add_argument_group("simulator (with --simulate)")
    sim.add_argument("--sim-latency-ms", type=float, default=20.0)
    sim.add_argument("--sim-fault-rate", type=float, default=0.0,
                     help="share of attempts that fail, spread over every fault kind (retries get through)")
    sim.add_argument("--sim-seed", type=int, default=0)
    p.set_defaults(func=run)


def parse_budget(text: str | None) -> Budget:
    if not text:
        return Budget()
    m = re.fullmatch(r"\s*\$\s*([0-9]*\.?[0-9]+)\s*|\s*([0-9]*\.?[0-9]+)\s*(usd|\$)\s*", text, re.IGNORECASE)
    if m:
        return Budget(cost=float(m.group(1) or m.group(2)))
    m = re.fullmatch(r"\s*([0-9][0-9_,]*)\s*(k|m)?\s*(tokens?)?\s*", text, re.IGNORECASE)
    if m:
        scale = {"k": 1_000, "m": 1_000_000}.get((m.group(2) or "").lower(), 1)
        return Budget(tokens=int(m.group(1).replace(",", "").replace("_", "")) * scale)
    raise UsageError(f"--budget {text!r}: give a token count (50000, 200k) or a cost ($2.50)")


def parse_formats(text: str) -> list[str]:
    extra = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in extra if f not in FORMATS]
    if unknown:
        raise UsageError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(EXTRA_FORMATS)}")
    return list(SEED_FORMATS) + [f for f in extra if f not in SEED_FORMATS]


def dataset_id_for(dataset: str | None, csv_path: Path) -> str:
    """The questions dataset of a CSV: named by --dataset, else by the CSV's absolute path."""
    return content_id("ds", "questions", dataset or str(csv_path))


def item_id_for(dataset_id: str, question: str) -> str:
    return content_id("q", dataset_id, normalize(question))


@contextmanager
def provider_for(args: argparse.Namespace) -> Iterator[Provider]:
    """The provider the flags ask for; with --simulate, a simulator running in this process."""
    if not args.simulate:  # a ProviderError is a UsageError already: one line, exit code 2
        yield resolve(args.profile, model=args.model, base_url=args.base_url)
        return
    from dsetlog.simulator.server import SimConfig, Simulator

    rate = args.sim_fault_rate / 6
    config = SimConfig(seed=args.sim_seed, latency_ms=args.sim_latency_ms, jitter_ms=args.sim_latency_ms / 4,
                       rate_429=rate, rate_500=rate, rate_hang=rate, rate_malformed=rate, rate_empty=rate,
                       rate_reset=rate, retry_after_s=0.2, hang_s=min(args.timeout * 2, 600))
    with Simulator(config) as sim:
        yield resolve(model=args.model, simulator_url=sim.base_url)


def run(args: argparse.Namespace) -> int:
    load_env()
    formats = parse_formats(args.formats)
    budget = parse_budget(args.budget)
    if args.concurrency < 1 or args.max_retries < 0 or args.backoff < 0 or args.timeout <= 0:
        raise UsageError("--concurrency must be >= 1, --max-retries and --backoff >= 0, --timeout > 0")
    if not args.max_input_mb > 0:
        raise UsageError("--max-input-mb must be greater than 0")
    qfile = read_questions(args.questions, header=args.header, max_bytes=int(args.max_input_mb * 2**20))
    csv_path = Path(args.questions).resolve()
    name = args.dataset or csv_path.stem
    dataset_id = dataset_id_for(args.dataset, csv_path)
    data = data_dir(args)
    from dsetlog.paths import check_writable
    from dsetlog.store.errors import LogWriteError
    from dsetlog.store.log import check_appendable

    try:  # before any call is paid for: a read-only data dir or --out would only fail at the end
        check_writable(data, "--data")
        check_appendable(data)
        check_writable(args.out, "--out")
    except LogWriteError as exc:
        raise UsageError(f"--data {data}: cannot write its log {exc.path} ({exc.strerror}); "
                         "give a data dir you can write to") from None
    with provider_for(args) as provider, EventLog.in_dir(data) as log, dataset_lock(data, dataset_id):
        rm = ReadModel.open(data)
        rm.wait_verified()  # opened from a snapshot: the whole log's checksums hold before anything is added
        return _generate(args, qfile, csv_path, name, dataset_id, provider, log, rm, formats, budget)


def _generate(args: argparse.Namespace, qfile: QuestionsFile, csv_path: Path, name: str, dataset_id: str,
              provider: Provider, log: EventLog, rm: ReadModel, formats: list[str], budget: Budget) -> int:
    from dsetlog.engine.engine import EngineResult, run_engine

    run_id = new_id("run")
    item_ids = [item_id_for(dataset_id, q.text) for q in qfile.questions]
    price = tuple(args.price) if args.price else provider.price()
    _start(args, qfile, csv_path, name, dataset_id, item_ids, provider, log, rm, formats, budget, run_id, price)
    todo, already = _todo(args, qfile, dataset_id, item_ids, rm)
    progress = Progress(total=len(item_ids), done=already, priced=price is not None,
                        enabled=not args.no_progress)
    print(f"dset: {len(item_ids)} questions ({already} already answered, {len(todo)} to do"
          f"{', ' + str(qfile.blank) + ' blank skipped' if qfile.blank else ''}"
          f"{', ' + str(qfile.duplicates) + ' duplicates answered once' if qfile.duplicates else ''}); "
          f"model {provider.describe()}; dataset {dataset_id}", file=sys.stderr)
    result = EngineResult("completed")
    if todo:
        result = run_engine(_engine(args, provider, log, rm, run_id, progress, budget, price), todo)

    rm.catch_up()
    datasets = rm.datasets
    statuses = {item_id: datasets.item(dataset_id, item_id) for item_id in item_ids}
    failed_items = [i for i in statuses.values() if i is not None and i.status == "failed"]
    log.append(RunFinished(run_id=run_id, dataset_id=dataset_id, outcome=result.outcome, answered=result.answered,
                           failed=result.failed, skipped=qfile.blank + qfile.duplicates,
                           prompt_tokens=progress.prompt_tokens, completion_tokens=progress.completion_tokens,
                           cost=round(progress.cost, 6), message=str(result.fatal or "")))

    def entries():  # noqa: ANN202 - a fresh stream per format, in the CSV's order
        for item_id in item_ids:
            item = statuses[item_id]
            if item is not None and item.entry_id:
                entry = datasets.entry(dataset_id, item.entry_id)
                if entry is not None:
                    yield entry

    written = export(entries, Path(args.out), formats)
    bookmarked = _bookmark(args, csv_path, failed_items)
    answered = sum(1 for i in statuses.values() if i is not None and i.status == "done")
    pending = len(item_ids) - answered - len(failed_items)
    cost = f", est. cost ${progress.cost:.4f}" if price is not None else ""
    print(f"dset: {answered} answered, {len(failed_items)} failed, {pending} pending, "
          f"{qfile.blank + qfile.duplicates} skipped (blank or duplicate); this run: {result.answered} new answers, "
          f"{progress.tokens:,} tokens{cost}", file=sys.stderr)
    print(f"dset: wrote {', '.join(str(p) for p in written.values())}"
          f"{'; bookmarks updated in ' + str(csv_path) if bookmarked else ''}", file=sys.stderr)
    return _ending(result, budget, failed=len(failed_items), complete=answered == len(item_ids))


def _start(args: argparse.Namespace, qfile: QuestionsFile, csv_path: Path, name: str, dataset_id: str,
           item_ids: list[str], provider: Provider, log: EventLog, rm: ReadModel, formats: list[str], budget: Budget,
           run_id: str, price: tuple[float, float] | None) -> None:
    """Append the dataset and the questions the log does not have yet, and the run's start (one write)."""
    datasets = rm.datasets
    new: list[Event] = []
    if datasets.dataset(dataset_id) is None:
        new.append(DatasetCreated(dataset_id=dataset_id, name=name, kind="questions", source=str(csv_path)))
    for q, item_id in zip(qfile.questions, item_ids, strict=True):
        if datasets.item(dataset_id, item_id) is None:
            new.append(QuestionQueued(dataset_id=dataset_id, item_id=item_id, question=q.text, row=q.row,
                                      source=str(csv_path)))
    settings = {"concurrency": args.concurrency, "max_retries": args.max_retries, "backoff": args.backoff,
                "timeout": args.timeout, "rpm": args.rpm, "tpm": args.tpm, "budget": str(budget),
                "formats": formats, "out": str(Path(args.out).resolve())}
    new.append(RunStarted(run_id=run_id, dataset_id=dataset_id, command="generate", model=provider.model,
                          provider=provider.profile, simulated=provider.simulated, settings=settings))
    log.append_many(new)
    rm.catch_up()


def _todo(args: argparse.Namespace, qfile: QuestionsFile, dataset_id: str, item_ids: list[str],
          rm: ReadModel) -> tuple[list[WorkItem], int]:
    """The questions still to answer as work items, and how many are answered already."""
    from dsetlog.engine.engine import WorkItem

    todo = []
    already = 0
    for q, item_id in zip(qfile.questions, item_ids, strict=True):
        item = rm.datasets.item(dataset_id, item_id)
        if item is not None and item.status == "done":
            already += 1
            continue
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
            {"role": "user", "content": q.text}]
        todo.append(WorkItem(dataset_id, item_id, messages, prior_attempts=item.attempts if item else 0,
                             context=q.text))
    return todo, already


def _engine(args: argparse.Namespace, provider: Provider, log: EventLog, rm: ReadModel, run_id: str,
            progress: Progress, budget: Budget, price: tuple[float, float] | None) -> Engine:
    """The engine answering the questions, as the flags say."""
    from dsetlog.engine.build import EngineSettings, engine_for
    from dsetlog.llm.client import RetryPolicy

    settings = EngineSettings(concurrency=args.concurrency, timeout=args.timeout, rpm=args.rpm, tpm=args.tpm,
                              retry=RetryPolicy(max_retries=args.max_retries, backoff=args.backoff),
                              temperature=args.temperature, max_tokens=args.max_tokens, learned=rm.endpoints.modes())
    return engine_for(provider, settings, log=log, make_events=_answers_maker(provider, run_id), progress=progress,
                      run_id=run_id, budget=budget, price=price)  # type: ignore[arg-type]


def _answers_maker(provider: Provider, run_id: str) -> Any:
    def make_events(item: WorkItem, c: Completion, attempt: int) -> list[Event]:
        return [EntryGenerated(
            dataset_id=item.dataset_id, item_id=item.item_id, entry_id=entry_id_for(item.item_id),
            question=item.context, answer=c.content, reasoning=c.reasoning, model=c.model,
            provider=provider.profile, simulated=c.simulated,
            usage=Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens),
            latency_ms=round(c.latency_ms, 1), attempt=attempt, run_id=run_id)]

    return make_events


def _bookmark(args: argparse.Namespace, csv_path: Path, failed_items: Iterable[Any]) -> bool:
    """Mark the failed questions ERROR in the CSV; whether it was written (a warning says why not)."""
    failed_keys = {normalize(i.question) for i in failed_items}
    try:
        return write_statuses(csv_path, failed_keys, header=args.header)
    except (QuestionsFileError, OSError) as exc:
        print(f"dset: warning: could not write bookmarks into {csv_path}: {exc}", file=sys.stderr)
        return False


def _ending(result: EngineResult, budget: Budget, *, failed: int, complete: bool) -> int:
    """Say how the run ended; its exit code."""
    if result.outcome == Outcome.FATAL and result.fatal is not None:
        print(f"dset: stopped: {result.fatal.message}", file=sys.stderr)
    elif result.outcome == Outcome.BUDGET:
        print(f"dset: stopped: budget of {budget} reached; run again with a larger --budget to continue",
              file=sys.stderr)
    elif result.outcome == Outcome.INTERRUPTED:
        print("dset: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    if failed:
        print(f"dset: {failed} question(s) bookmarked ERROR; run again to retry them", file=sys.stderr)
    return EXIT_OK if complete else EXIT_FAILED
