"""`dset generate QUESTIONS.csv`: answer every question once, resumably, and write the seed's outputs.

The run is a dataset in the log. Running the same command again continues it:
answered questions are never requested again, pending and bookmarked ones are.
"""

# The run itself is dsetlog.generation.answering; this module turns the flags into its settings and says
# how it went. The LLM client (openai and its HTTP stack) is imported only once the run calls a model.
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsetlog.cli.datasets import add_export_options, export_options
from dsetlog.cli.options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_data_option,
    data_dir,
    parse_budget,
)
from dsetlog.engine.progress import Budget
from dsetlog.engine.stages import Outcome
from dsetlog.errors import UsageError
from dsetlog.export.formats import FORMATS, SEED_FORMATS
from dsetlog.generation.answering import Answered, AnswerSettings, QuestionsRun, SimulatorSettings, Started
from dsetlog.generation.batching import FALLBACKS, BatchSettings
from dsetlog.generation.questions import MAX_INPUT_BYTES
from dsetlog.llm.providers import PROFILES, load_env

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
    p.add_argument("--cores", default="auto", choices=["auto", "1", "2"],
                   help="processes the client may use: 1; 2 (the requests sent from a second process, on another "
                        "core); auto (default): 2 once this one is CPU-bound and the machine has a core to spare")
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
    add_export_options(p)
    p.add_argument("--max-input-mb", type=float, default=MAX_INPUT_BYTES / 2**20, metavar="MB",
                   help=f"refuse a questions file larger than this (default {MAX_INPUT_BYTES // 2**20} MB)")
    batch = p.add_argument_group("batches (a provider's Batch API: half the price, answers within 24 h)")
    batch.add_argument("--batch", action="store_true",
                       help="send the questions as batches (/v1/files + /v1/batches); the same command again "
                            "polls the batches already submitted and submits only what none holds")
    batch.add_argument("--batch-fallback", choices=FALLBACKS, default="none",
                       help="online: answer online what the server cannot batch (no Batch API) and what batches "
                            "failed; none (default): stop with a message")
    batch.add_argument("--batch-cancel", action="store_true",
                       help="cancel this dataset's open batches on the provider, keep what they answered, submit nothing")
    batch.add_argument("--batch-poll", type=float, default=5.0, metavar="S",
                       help="seconds before the first poll, doubling up to 300 (default 5)")
    batch.add_argument("--batch-max-requests", type=int, metavar="N",
                       help="requests per batch input file (default: the profile's, OpenAI's 50,000)")
    sim = p.add_argument_group("simulator (with --simulate)")
    sim.add_argument("--sim-latency-ms", type=float, default=20.0)
    sim.add_argument("--sim-fault-rate", type=float, default=0.0,
                     help="share of attempts that fail, spread over every fault kind (retries get through)")
    sim.add_argument("--sim-seed", type=int, default=0)
    p.set_defaults(func=run)


def parse_formats(text: str) -> list[str]:
    """--formats: the seed's formats, then the extra ones asked for."""
    extra = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in extra if f not in FORMATS]
    if unknown:
        raise UsageError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(EXTRA_FORMATS)}")
    return list(SEED_FORMATS) + [f for f in extra if f not in SEED_FORMATS]


def settings_from(args: argparse.Namespace) -> AnswerSettings:
    """The run the flags ask for; a UsageError naming the flag when one is out of range."""
    formats = parse_formats(args.formats)
    budget = parse_budget(args.budget)
    if args.concurrency < 1 or args.max_retries < 0 or args.backoff < 0 or args.timeout <= 0:
        raise UsageError("--concurrency must be >= 1, --max-retries and --backoff >= 0, --timeout > 0")
    if not args.max_input_mb > 0:
        raise UsageError("--max-input-mb must be greater than 0")
    batch = batch_settings(args)
    simulator = (SimulatorSettings(latency_ms=args.sim_latency_ms, fault_rate=args.sim_fault_rate, seed=args.sim_seed)
                 if args.simulate else None)
    return AnswerSettings(
        questions=Path(args.questions), data=data_dir(args), out=Path(args.out), formats=formats,
        dataset=args.dataset, profile=args.profile, model=args.model, base_url=args.base_url, simulator=simulator,
        system=args.system, temperature=args.temperature, max_tokens=args.max_tokens,
        concurrency=args.concurrency, cores=None if args.cores == "auto" else int(args.cores), rpm=args.rpm,
        tpm=args.tpm, timeout=args.timeout,
        max_retries=args.max_retries, backoff=args.backoff, budget=budget,
        price=tuple(args.price) if args.price else None, header=args.header,
        max_input_bytes=int(args.max_input_mb * 2**20), progress=not args.no_progress, export=export_options(args),
        batch=batch)


def batch_settings(args: argparse.Namespace) -> BatchSettings | None:
    """The --batch options; None for an online run (a --batch-* option without --batch is refused)."""
    if not (args.batch or args.batch_cancel):
        if args.batch_fallback != "none" or args.batch_max_requests is not None:
            raise UsageError("--batch-fallback and --batch-max-requests go with --batch")
        return None
    if not args.batch_poll > 0 or (args.batch_max_requests is not None and args.batch_max_requests < 1):
        raise UsageError("--batch-poll must be > 0 and --batch-max-requests >= 1")
    return BatchSettings(fallback=args.batch_fallback, poll_first=args.batch_poll,
                         poll_cap=max(args.batch_poll, 300.0 if args.batch_poll >= 1 else args.batch_poll * 4),
                         max_requests=args.batch_max_requests, cancel=args.batch_cancel)


def run(args: argparse.Namespace) -> int:
    load_env()
    settings = settings_from(args)
    with QuestionsRun.open(settings) as questions_run:
        print_start(questions_run.start())
        answered = questions_run.answer()
        print_end(answered)
        if settings.batch is not None and settings.batch.cancel and answered.batch is not None:
            return cancelled(answered)
        return ending(answered, settings.budget)


def print_start(started: Started) -> None:
    print(f"dset: {started.questions} questions ({started.already} already answered, {started.todo} to do"
          f"{', ' + str(started.blank) + ' blank skipped' if started.blank else ''}"
          f"{', ' + str(started.duplicates) + ' duplicates answered once' if started.duplicates else ''}); "
          f"model {started.model}; dataset {started.dataset_id}", file=sys.stderr)


def print_end(a: Answered) -> None:
    if a.bookmark_error is not None:
        print(f"dset: warning: could not write bookmarks into {a.csv_path}: {a.bookmark_error}", file=sys.stderr)
    cost = f", est. cost ${a.cost:.4f}" if a.cost is not None else ""
    if a.cost is not None and a.batch is not None:
        cost += f" (batch prices: {a.batch_discount:.0%} of the profile's)"
    print(f"dset: {a.answered} answered, {a.failed} failed, {a.pending} pending, "
          f"{a.skipped} skipped (blank or duplicate); this run: {a.new_answers} new answers, "
          f"{a.tokens:,} tokens{cost}", file=sys.stderr)
    if a.batch is not None:
        print(f"dset: batches: {a.batch.submitted} submitted by this run, {a.batch.open} still open on the provider"
              f"{f', {len(a.batch.online)} answered online (--batch-fallback online)' if a.batch.online else ''}",
              file=sys.stderr)
    print(f"dset: wrote {', '.join(str(p) for p in a.written)}"
          f"{'; bookmarks updated in ' + str(a.csv_path) if a.bookmarked else ''}", file=sys.stderr)


def ending(a: Answered, budget: Budget) -> int:
    """Say how the run ended; its exit code."""
    if a.outcome == Outcome.FATAL and a.fatal is not None:
        print(f"dset: stopped: {a.fatal}", file=sys.stderr)
    elif a.outcome == Outcome.BUDGET:
        print(f"dset: stopped: {a.fatal}" if a.fatal else
              f"dset: stopped: budget of {budget} reached; run again with a larger --budget to continue", file=sys.stderr)
    elif a.outcome == Outcome.INTERRUPTED:
        print(f"dset: {a.fatal or 'interrupted; run the same command again to continue'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if a.failed:
        print(f"dset: {a.failed} question(s) bookmarked ERROR; run again to retry them", file=sys.stderr)
    return EXIT_OK if a.complete else EXIT_FAILED


def cancelled(a: Answered) -> int:
    """Say what --batch-cancel did: 0 once no batch of the dataset is open on the provider."""
    assert a.batch is not None
    if a.fatal:
        print(f"dset: stopped: {a.fatal}", file=sys.stderr)
        return EXIT_INTERRUPTED if a.outcome == Outcome.INTERRUPTED else EXIT_FAILED
    print(f"dset: cancelled {a.batch.cancelled} batch(es); {a.pending} question(s) not answered are left for the "
          "next run (the same command without --batch-cancel submits them)", file=sys.stderr)
    return EXIT_OK if a.batch.open == 0 else EXIT_FAILED
