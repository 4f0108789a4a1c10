"""The pipeline and regeneration report typed stages (dsetlog.engine.stages.Stage): the words shown are those
of before, and each stage's phase gives the percentage the job worker used to work out from those words."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Env, plain_text

from dsetlog.catalog.projects import save_parameters
from dsetlog.engine.progress import Progress
from dsetlog.engine.stages import Phase, Stage
from dsetlog.generation.document import DocumentRun
from dsetlog.generation.models import Models
from dsetlog.generation.regeneration import RegenerationConfig, run_regeneration
from dsetlog.prompts import parameters
from dsetlog.simulator.server import SimConfig, Simulator

# The job worker's table before typed stages: where a step sits on the 0-100 scale, by its first words.
TEXT_STAGES: tuple[tuple[str, float, float], ...] = (
    ("Titling chunk", 0, 10),
    ("Processing chunk", 10, 80),
    ("Augmenting", 80, 80),
    ("Scoring", 80, 82),
    ("Judging entry", 82, 90),
    ("Making train/validation/test splits", 90, 90),
    ("Benchmark", 90, 97),
    ("Exporting", 97, 99),
    ("Regenerating entry", 0, 99),
    ("Finished", 100, 100),
)


def percent_from_text(step: str, done: int, total: int) -> float | None:
    for prefix, start, end in TEXT_STAGES:
        if step.startswith(prefix):
            share = done / total if total else 0.0
            return start + (end - start) * min(1.0, max(0.0, share))
    return None


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with Simulator(SimConfig(latency_ms=1)) as sim:
        env = Env(tmp_path / "env", sim)
        yield env
        env.log.close()


def check(stages: list[Stage]) -> None:
    for stage in stages:
        assert isinstance(stage, Stage)
        assert stage.percent() == percent_from_text(stage.step, stage.done, stage.total), stage


def test_every_stage_of_a_run_has_the_phase_of_its_words(env: Env) -> None:
    env.ingest(env.write("notes.txt", plain_text(4)), strategy="paragraphs")  # no headings: titled
    pid = env.rm.projects.project_by_name("demo").id
    save_parameters(env.log, env.rm, project_id=pid, params=parameters.ProjectParameters(
        purpose="fine-tuning", audience="students", dataset_format="jsonl", data_augmentation="paraphrase"))
    req = env.request(datasets_per_chunk=2, analyze_quality=True, judge_model="simulated:judge",
                      include_evaluation_sets=True, run_benchmarks=True, benchmark_suite="reference_qa")
    stages: list[Stage] = []
    run = DocumentRun(log=env.log, rm=env.rm, data_dir=env.data, req=req,
                      models=Models.resolve(req, simulator_url=env.sim.base_url), on_stage=stages.append)
    result = asyncio.run(run.run())
    assert result.outcome == "completed"
    check(stages)
    steps = [s.step for s in stages]
    for prefix, phase in [("Titling chunk ", Phase.TITLING), ("Processing chunk ", Phase.GENERATING),
                          ("Augmenting (paraphrase)", Phase.AUGMENTING), ("Scoring ", Phase.SCORING),
                          ("Judging entry ", Phase.JUDGING), ("Making train/validation/test splits", Phase.SPLITTING),
                          ("Benchmarking ", Phase.BENCHMARKING), ("Benchmark question ", Phase.BENCHMARKING),
                          ("Exporting", Phase.EXPORTING)]:
        assert any(s.step.startswith(prefix) and s.phase is phase for s in stages), (prefix, steps)
    assert stages[-1] == Stage(Phase.FINISHED, "Finished", 0, 0) and stages[-1].percent() == 100
    chunks = len(env.rm.projects.chunks(pid))
    assert any(re.fullmatch(rf"Processing chunk [0-9]+ of {chunks}", step) for step in steps), steps


def test_regeneration_reports_typed_stages_too(env: Env) -> None:
    env.project_md(2)
    done = env.run(datasets_per_chunk=1, analyze_quality=True, judge_model="simulated:judge")
    entries = env.entries(done.dataset_id)
    stages: list[Stage] = []
    result = asyncio.run(run_regeneration(
        log=env.log, rm=env.rm, job_id="job_regen", dataset_id=done.dataset_id, entry_ids=[e.id for e in entries],
        # accept_lower: every new revision current, so each is judged too
        config=RegenerationConfig(accept_lower=True), simulator_url=env.sim.base_url, on_stage=stages.append,
        progress=Progress(total=0, enabled=False)))
    assert result.outcome == "completed" and result.regenerated == len(entries)
    check(stages)
    assert any(s.step.startswith("Regenerating entry ") and s.phase is Phase.REGENERATING for s in stages)
    assert any(s.step.startswith("Judging entry ") and s.phase is Phase.JUDGING for s in stages)
    total = len(entries) * 2  # each entry regenerated, then judged
    assert stages[-1] == Stage(Phase.FINISHED, "Finished", total, total)
