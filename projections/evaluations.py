"""Evaluations: each dataset's train/validation/test splits, difficulty buckets, and benchmark results."""

from __future__ import annotations

from typing import Any

import msgspec

from dsetlog.store.events import BenchmarkAnswered, BenchmarkCompleted, EvaluationSetsCreated
from dsetlog.store.layout import Recorded
from projections.base import Projection, handles


class BenchmarkView(msgspec.Struct, gc=False):
    dataset_id: str
    job_id: str
    suite: str
    model: str
    results: dict[str, Any]
    completed_at: str
    seq: int


class BenchmarkAnswerView(msgspec.Struct, gc=False):
    """The last answer of one model, in one suite, to one entry (at the entry's revision then)."""

    dataset_id: str
    suite: str
    model: str
    entry_id: str
    revision: int
    answer: str
    scores: dict[str, float]
    job_id: str
    seq: int


class SplitsView(msgspec.Struct, gc=False):
    dataset_id: str
    seed: int
    ratios: list[float]
    splits: dict[str, str]  # entry_id -> train | validation | test
    difficulty_buckets: dict[str, list[str]]
    created_at: str
    seq: int


class EvaluationsState(msgspec.Struct, array_like=True):
    splits: list[SplitsView]
    benchmarks: list[BenchmarkView]
    answers: list[BenchmarkAnswerView]


class Evaluations(Projection):
    """The latest split of each dataset (a re-split replaces it), every benchmark run, oldest first, and the
    last benchmark answer of each (dataset, suite, model, entry)."""

    name = "evaluations"
    version = 2
    state_type = EvaluationsState

    def __init__(self) -> None:
        super().__init__()
        self._splits: dict[str, SplitsView] = {}
        self._benchmarks: dict[str, list[BenchmarkView]] = {}
        self._answers: dict[tuple[str, str, str], dict[str, BenchmarkAnswerView]] = {}

    @handles(EvaluationSetsCreated)
    def _sets(self, rec: Recorded, ev: EvaluationSetsCreated) -> None:
        self._splits[ev.dataset_id] = SplitsView(ev.dataset_id, ev.seed, list(ev.ratios), dict(ev.splits),
                                                 dict(ev.difficulty_buckets), rec.ts, rec.seq)

    @handles(BenchmarkCompleted)
    def _benchmark(self, rec: Recorded, ev: BenchmarkCompleted) -> None:
        self._benchmarks.setdefault(ev.dataset_id, []).append(
            BenchmarkView(ev.dataset_id, ev.job_id, ev.suite, ev.model, dict(ev.results), rec.ts, rec.seq))

    @handles(BenchmarkAnswered)
    def _answered(self, rec: Recorded, ev: BenchmarkAnswered) -> None:
        self._answers.setdefault((ev.dataset_id, ev.suite, ev.model), {})[ev.entry_id] = BenchmarkAnswerView(
            ev.dataset_id, ev.suite, ev.model, ev.entry_id, ev.revision, ev.answer, dict(ev.scores), ev.job_id, rec.seq)

    def splits(self, dataset_id: str) -> dict[str, str]:
        """entry_id -> split name; empty when the dataset has no evaluation sets."""
        view = self._splits.get(dataset_id)
        return view.splits if view else {}

    def split_view(self, dataset_id: str) -> SplitsView | None:
        return self._splits.get(dataset_id)

    def benchmarks(self, dataset_id: str, *, job_id: str | None = None) -> list[BenchmarkView]:
        """The dataset's benchmark runs, oldest first (only those of ``job_id`` when given)."""
        runs = self._benchmarks.get(dataset_id, ())
        return [b for b in runs if job_id is None or b.job_id == job_id]

    def benchmark_answers(self, dataset_id: str, *, suite: str, model: str) -> dict[str, BenchmarkAnswerView]:
        """entry_id -> the last answer ``model`` gave to that entry in ``suite``."""
        return dict(self._answers.get((dataset_id, suite, model), {}))

    def benchmarked(self, dataset_id: str) -> list[tuple[str, str]]:
        """The (suite, model) pairs with answers for this dataset, the most recently answered last."""
        pairs = [(max(a.seq for a in answers.values()), suite, model)
                 for (ds, suite, model), answers in self._answers.items() if ds == dataset_id and answers]
        return [(suite, model) for _, suite, model in sorted(pairs)]

    def snapshot_state(self) -> EvaluationsState:
        return EvaluationsState(list(self._splits.values()),
                                [b for runs in self._benchmarks.values() for b in runs],
                                [a for answers in self._answers.values() for a in answers.values()])

    def load_snapshot_state(self, state: EvaluationsState) -> None:
        self._splits = {s.dataset_id: s for s in state.splits}
        self._benchmarks = {}
        for b in state.benchmarks:
            self._benchmarks.setdefault(b.dataset_id, []).append(b)
        self._answers = {}
        for a in state.answers:
            self._answers.setdefault((a.dataset_id, a.suite, a.model), {})[a.entry_id] = a
