"""Datasets: list them, read one (now or ``?as_of=SEQ``), its benchmark answers. Their entries are in api.entries."""

from __future__ import annotations

from array import array

import falcon
import msgspec

from api.context import Context
from api.errors import not_found
from api.schemas import (
    INLINE_ENTRIES,
    AsOfQuery,
    Benchmark,
    BenchmarkAnswer,
    BenchmarkAnswers,
    BenchmarkAnswersQuery,
    Dataset,
    DatasetList,
    DatasetsQuery,
    DatasetSummary,
)
from api.spec import operation
from projections.columns import Views
from projections.readmodel import ReadModel
from projections.views import DatasetView

API = "/api/v1"


def dataset_or_404(rm: ReadModel, dataset_id: str, as_of: int | None = None) -> DatasetView:
    view = rm.datasets.dataset(dataset_id)
    if view is None:
        when = f" at seq {as_of}" if as_of is not None else ""
        raise not_found(f"no dataset {dataset_id!r}{when}; GET {API}/datasets lists them")
    return view


def summary_of(v: DatasetView) -> DatasetSummary:
    return DatasetSummary(id=v.id, name=v.name, kind=v.kind, total_entries=v.entries, created_at=v.created_at,
                          format_type=v.format_type, project_id=v.project_id, version=v.version, source=v.source,
                          items=v.items, done=v.done, failed=v.failed, pending=v.pending)


class DatasetsResource:
    """GET /datasets, GET /datasets/{dataset_id} and GET /datasets/{dataset_id}/benchmark-answers."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation("List datasets", query=DatasetsQuery, response=DatasetList, tags=("datasets",))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        q: DatasetsQuery = req.context.query
        rm = self.ctx.model()
        with rm.lock:
            views = [v for v in rm.datasets.datasets(kind=q.kind)
                     if q.project_id is None or v.project_id == q.project_id]
            out = [summary_of(v) for v in views]
        resp.media = DatasetList(datasets=out, total=len(out))

    @operation("A dataset: its summary, quality_summary and its first entries (the rest through /entries)",
               query=AsOfQuery, response=Dataset, errors=(400,), tags=("datasets",))
    def on_get_item(self, req: falcon.Request, resp: falcon.Response, dataset_id: str) -> None:
        as_of = req.context.query.as_of
        rm = self.ctx.model(as_of)
        with rm.lock:
            v = dataset_or_404(rm, dataset_id, as_of)
            index = self.ctx.entries.index(rm, dataset_id)
            splits = index.splits
            counts: dict[str, int] = {}
            for name in splits.values():
                counts[name] = counts.get(name, 0) + 1
            doc = Dataset(
                id=v.id, name=v.name, entries=index.page(rm, list(range(min(INLINE_ENTRIES, len(index))))),
                total_entries=len(index), created_at=v.created_at, format_type=v.format_type,
                quality_summary=index.summary, kind=v.kind, project_id=v.project_id, version=v.version,
                source=v.source, entries_inline=INLINE_ENTRIES, entries_url=f"{API}/datasets/{v.id}/entries",
                items=v.items, done=v.done, failed=v.failed, pending=v.pending, flagged=index.flagged,
                splits=dict(sorted(counts.items())),
                benchmarks=[Benchmark(job_id=b.job_id, suite=b.suite, model=b.model, results=dict(b.results),
                                      completed_at=b.completed_at) for b in rm.evaluations.benchmarks(dataset_id)],
                params=msgspec.to_builtins(v.params), seq=rm.seq)
        resp.media = doc


    @operation("What a benchmarked model answered to each test question, with its scores",
               query=BenchmarkAnswersQuery, response=BenchmarkAnswers, tags=("datasets",),
               description="The latest answer of the model in the suite to each entry (a later benchmark reuses it "
                           "while the entry is unchanged). Without suite and model: those answered last.")
    def on_get_benchmark_answers(self, req: falcon.Request, resp: falcon.Response, dataset_id: str) -> None:
        q: BenchmarkAnswersQuery = req.context.query
        rm = self.ctx.model()
        with rm.lock:
            dataset_or_404(rm, dataset_id)
            pairs = rm.evaluations.benchmarked(dataset_id)
            wanted = [(s, m) for s, m in pairs if q.suite in (None, s) and q.model in (None, m)]
            if not wanted:
                known = ", ".join(f"{s} / {m}" for s, m in pairs) or "none yet (generate with run_benchmarks)"
                raise not_found(f"no benchmark answers for suite {q.suite or 'any'} and model {q.model or 'any'} "
                                f"in dataset {dataset_id}; benchmarked: {known}")
            suite, model = wanted[-1]
            answers = rm.evaluations.benchmark_answers(dataset_id, suite=suite, model=model)
            out = []
            every = rm.datasets.views(dataset_id)
            rows = array("i", (r for r, entry_id in zip(every.order, every.ids(), strict=True) if entry_id in answers))
            for e in rm.full(Views(every.rows, rows)):  # in the dataset's order
                a = answers[e.id]
                out.append(BenchmarkAnswer(entry_id=e.id, question=e.question, reference=e.answer, answer=a.answer,
                                           scores=dict(a.scores), current=a.revision == e.revision, job_id=a.job_id))
        start = (q.page - 1) * q.per_page
        resp.media = BenchmarkAnswers(dataset_id=dataset_id, suite=suite, model=model,
                                      answers=out[start : start + q.per_page], total=len(out), page=q.page,
                                      per_page=q.per_page)
