"""Benchmarking: the benchmark model answers the test split's questions from their chunks, scored against
the entries' answers (exact match, token F1, ROUGE-L; negative_rejection: declining the unanswerable ones
and only those). Answers the log has for an unchanged entry (same suite, model and entry revision) are
reused, not asked for again; a job resumed after its benchmark keeps its result."""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, Any

from dsetlog.engine.stages import Phase
from dsetlog.evaluation import scoring
from dsetlog.generation.calls import Stop, stopped
from dsetlog.generation.context import RunContext
from dsetlog.generation.texts import BENCHMARK_SYSTEM
from dsetlog.store.events import BenchmarkAnswered, BenchmarkCompleted, Event, Usage
from projections.columns import Views
from projections.fields import fields_of
from projections.views import FullEntry

if TYPE_CHECKING:
    from dsetlog.engine.engine import WorkItem
    from dsetlog.llm.client import Completion


async def benchmark(ctx: RunContext) -> tuple[dict[str, Any], Stop | None]:
    """Benchmark the model on the test split: (results, a stop)."""
    ctx.rm.catch_up()
    provider, suite = ctx.models.benchmark, ctx.req.benchmark_suite
    evaluations = ctx.rm.evaluations
    done = [b for b in evaluations.benchmarks(ctx.dataset_id, job_id=ctx.job_id)
            if (b.suite, b.model) == (suite, provider.model)]
    if done:  # this job was resumed after its benchmark: the result stands
        return {"suite": suite, "model": provider.model, **done[-1].results}, None
    test = _questions(ctx)

    def still_valid() -> dict[str, dict[str, float]]:
        answers = evaluations.benchmark_answers(ctx.dataset_id, suite=suite, model=provider.model)
        return {e.id: answers[e.id].scores for e in test if e.id in answers and answers[e.id].revision == e.revision}

    reused = still_valid()
    units = _units(ctx, [e for e in test if e.id not in reused])
    stop = None
    if units:
        ctx.calls.show(Phase.BENCHMARKING, f"Benchmarking {provider.model} on {len(units)} questions")
        result = await ctx.calls.run(provider, units, _answers_maker(ctx), Phase.BENCHMARKING, "Benchmark question")
        stop = stopped(result)
    ctx.rm.catch_up()
    results = _results(suite, test, list(still_valid().values()), reused=len(reused))
    if stop is None:  # a stopped benchmark is finished by the run that resumes it
        ctx.log.append(BenchmarkCompleted(dataset_id=ctx.dataset_id, job_id=ctx.job_id, suite=suite,
                                          model=provider.model, results=results))
        ctx.rm.catch_up()
    return {"suite": suite, "model": provider.model, **results}, stop


def _questions(ctx: RunContext) -> list[FullEntry]:
    """The test split, with texts; a tiny dataset may leave it empty: then everything kept."""
    assignment = ctx.rm.evaluations.splits(ctx.dataset_id)
    views = ctx.rm.datasets.views(ctx.dataset_id)
    fields = fields_of(views, ("id", "below_threshold"))  # (from the columns: no view of every entry)
    test = array("i", (r for r, entry_id in zip(views.order, fields["id"], strict=True)
                       if assignment.get(entry_id) == "test"))
    if not test:
        test = array("i", (r for r, below in zip(views.order, fields["below_threshold"], strict=True) if not below))
    return ctx.rm.full(Views(views.rows, test))


def _units(ctx: RunContext, entries: list[FullEntry]) -> list[WorkItem]:
    from dsetlog.engine.engine import WorkItem

    units = []
    for e in entries:
        chunk = ctx.rm.projects.chunk(e.source_chunk)
        messages = [{"role": "system", "content": BENCHMARK_SYSTEM},
                    {"role": "user", "content": f"Text:\n{chunk.text if chunk else ''}\n\nQuestion: {e.question}"}]
        units.append(WorkItem(ctx.dataset_id, e.item_id, messages, context=e, record_attempts=False))
    return units


def _answers_maker(ctx: RunContext) -> Any:
    from dsetlog.llm.client import CallFailure

    provider, suite = ctx.models.benchmark, ctx.req.benchmark_suite
    # negative_rejection asks every test question too: the model must decline the unanswerable ones and
    # only those (refusing everything must not score 1.0)
    rejection_suite = suite == "negative_rejection"

    def make_events(unit: WorkItem, c: Completion, attempt: int) -> list[Event]:
        if not c.content.strip():
            raise CallFailure("empty", "no answer", retryable=True)
        entry: FullEntry = unit.context
        if rejection_suite:
            scores = {"rejection_accuracy": float(scoring.rejection_correct(c.content, entry.answer))}
        else:
            scores = scoring.score_all(c.content, entry.answer)
        return [BenchmarkAnswered(dataset_id=ctx.dataset_id, job_id=ctx.job_id, suite=suite, model=provider.model,
                                  entry_id=entry.id, revision=entry.revision, answer=c.content, scores=scores,
                                  usage=Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens))]

    return make_events


def _results(suite: str, test: list[FullEntry], scores: list[dict[str, float]], *, reused: int) -> dict[str, Any]:
    rejection_suite = suite == "negative_rejection"
    results: dict[str, Any] = {"questions": len(test), "answered": len(scores), "reused": reused}
    if rejection_suite:
        results["unanswerable"] = sum(scoring.is_rejection(e.answer) for e in test)
    for metric in (("rejection_accuracy",) if rejection_suite else ("exact_match", "token_f1", "rouge_l")):
        results[metric] = round(sum(s[metric] for s in scores) / len(scores), 4) if scores else 0.0
    return results
