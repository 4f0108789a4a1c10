"""Document-grounded generation (dsetlog.generation.document, `dset datasets generate`, `dset export`) end to end.

Real Markdown, text, HTML and PDF files made here are ingested into a real log; every model role is
answered by the simulator on loopback, whose request log (``Simulator.requests``) shows what each call
asked for. Each test names the option it covers and fails if that option were ignored.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest
from harness import GEN_SCHEMAS, ROOT, TOPICS, Env, html_doc, kind_of, markdown, plain_text, user_text  # noqa: F401
from helpers import make_pdf

from dsetlog.catalog.documents import ingest_file
from dsetlog.catalog.projects import create_project, create_taxonomy, save_parameters, save_prompt
from dsetlog.engine.progress import Progress
from dsetlog.evaluation.quality import DUPLICATE_FACTOR
from dsetlog.export.datasets import export_dataset
from dsetlog.generation.errors import DocGenError
from dsetlog.generation.requests import GenerateRequest
from dsetlog.jobs.lifecycle import run_generation_job
from dsetlog.llm.client import RetryPolicy
from dsetlog.prompts import parameters, replies, templates
from dsetlog.simulator.server import Simulator
from dsetlog.store.events import (
    BenchmarkAnswered,
    ChunkTitled,
    EntryEdited,
    EntryGenerated,
    ItemBookmarked,
    SlotQueued,
)
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel

# --- fixture documents ----------------------------------------------------------------------------

@pytest.fixture
def make_env(tmp_path: Path, make_simulator: Callable[..., Simulator]) -> Iterator[Callable[..., Env]]:
    envs: list[Env] = []

    def make(**sim_config: Any) -> Env:
        sim_config.setdefault("request_log", 20_000)
        env = Env(tmp_path / f"env{len(envs)}", make_simulator(**sim_config))
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.log.close()


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()


FAST_RETRY = RetryPolicy(max_retries=2, backoff=0.01, jitter=0.0)


# --- generation modes ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["default", "qa", "question", "summarization", "instruction_following"])
def test_generation_modes_shape_the_request_and_the_entries(env: Env, mode: str) -> None:
    env.project_md(3)
    result = env.run(generation_mode=mode, datasets_per_chunk=2)
    canonical = templates.normalize_mode(mode)
    entries = env.entries(result.dataset_id)
    assert result.outcome == "completed" and len(entries) == 6
    gen = env.requests("generate")
    assert len(gen) == 3
    schema = gen[0]["response_format"]["json_schema"]
    assert schema["name"] == f"{canonical}_items"
    item_fields = set(schema["schema"]["properties"]["items"]["items"]["properties"])
    assert item_fields == {*replies.MODE_FIELDS[canonical], "category"}
    phrase = {"default": "Write 2 distinct question-answer pairs", "question": "Write 2 distinct questions that",
              "summarization": "Write 2 distinct summarization tasks", "instruction_following": "Write 2 distinct "
              "instructions a user could give"}[canonical]
    assert all(phrase in user_text(b) for b in gen)
    for e in entries:
        assert e.metadata["mode"] == canonical and e.prompt_name == templates.MODE_TEMPLATES[canonical]
        assert e.question.strip()
        if canonical == "question":
            assert e.answer == ""  # questions only
        else:
            assert e.answer.strip() and e.answer != e.question
    if canonical == "default":
        assert all(e.question.endswith("?") for e in entries)


def test_answer_mode_answers_the_given_questions(env: Env) -> None:
    env.project_md(4)
    questions = ["When does the harbour open?", "How often does the lighthouse lamp turn?",
                 "On which days is the fish market held?"]
    result = env.run(generation_mode="answer", questions=questions)
    entries = env.entries(result.dataset_id)
    assert [e.question for e in entries] == questions
    assert all(e.answer.strip() for e in entries)
    gen = env.requests("generate")
    for q in questions:  # each question went to a model, with the chunk that fits it best
        assert any(q in user_text(b) for b in gen)
    by_question = {e.question: e for e in entries}
    chunk = env.rm.projects.chunk(by_question[questions[1]].source_chunk)
    assert chunk is not None and "Lighthouse" in (chunk.heading or "")


# --- datasets_per_chunk, negativity_ratio, data_augmentation, parameters ---------------------------


def test_datasets_per_chunk_is_one_call_for_n_distinct_items(env: Env) -> None:
    env.project_md(4)  # four '##' sections: four chunks, each with its heading (no title calls)
    result = env.run(datasets_per_chunk=5)
    entries = env.entries(result.dataset_id)
    assert len(entries) == 20
    per_chunk = Counter(e.source_chunk for e in entries)
    assert len(per_chunk) == 4 and set(per_chunk.values()) == {5}
    assert env.sim.stats()["requests"] == 4  # exactly one request per chunk, nothing else
    gen = env.requests("generate")
    assert len(gen) == 4
    for body in gen:
        items = body["response_format"]["json_schema"]["schema"]["properties"]["items"]
        assert items["minItems"] == items["maxItems"] == 5
        assert "Write 5 distinct" in user_text(body)
    for chunk_id in per_chunk:
        questions = [e.question for e in entries if e.source_chunk == chunk_id]
        assert len({q.lower() for q in questions}) == 5
        assert sorted(e.metadata["slot"] for e in entries if e.source_chunk == chunk_id) == [0, 1, 2, 3, 4]


def save_params(env: Env, project: str = "demo", **fields: Any) -> None:
    pid = env.rm.projects.project_by_name(project).id
    base = {"purpose": "fine-tuning", "audience": "students", "dataset_format": "jsonl"}
    save_parameters(env.log, env.rm, project_id=pid, params=parameters.ProjectParameters(**{**base, **fields}))


@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_negativity_ratio_is_the_share_of_unanswerable_entries(env: Env, ratio: float) -> None:
    env.project_md(10)
    save_params(env, negativity_ratio=ratio)
    result = env.run(datasets_per_chunk=4)
    entries = env.entries(result.dataset_id)
    assert len(entries) == 40
    negatives = [e for e in entries if e.answer == templates.NEGATIVE_ANSWER]
    assert [e.metadata["negative"] for e in negatives] == [True] * len(negatives)
    assert abs(len(negatives) / 40 - ratio) <= 0.1
    if ratio == 0.5:
        assert len(negatives) == 20  # 2 of every 4, exactly
    assert all("of the 4 questions" in user_text(b) for b in env.requests("generate")
               if "does not give" in user_text(b))


def test_no_saved_parameters_means_no_unanswerable_entries(env: Env) -> None:
    env.project_md(10)
    result = env.run(datasets_per_chunk=4)
    assert not [e for e in env.entries(result.dataset_id) if e.answer == templates.NEGATIVE_ANSWER]


def test_paraphrase_augmentation_adds_marked_variants_that_are_not_duplicates(env: Env) -> None:
    env.project_md(6)
    save_params(env, data_augmentation="paraphrase")
    result = env.run(datasets_per_chunk=3, analyze_quality=True, quality_threshold=0.0,
                     include_evaluation_sets=True)
    entries = env.entries(result.dataset_id)
    originals = [e for e in entries if "variant_of" not in e.metadata]
    variants = [e for e in entries if "variant_of" in e.metadata]
    assert len(originals) == 18 and variants
    by_id = {e.id: e for e in entries}
    splits = env.rm.evaluations.splits(result.dataset_id)
    for v in variants:
        source = by_id[v.metadata["variant_of"]]
        assert v.metadata["augmentation"] == "paraphrase"
        assert v.question != source.question and v.answer == source.answer
        assert v.duplicate_of is None and source.duplicate_of is None  # not counted as near-duplicates
        assert v.quality_score is not None and v.quality_score > 0.5
        assert splits[v.id] == splits[source.id]  # a variant never leaks into another split than its source
    assert env.sim.stats()["requests"] == 6  # rule-based: no calls of its own
    again = env.run(datasets_per_chunk=3, analyze_quality=True, quality_threshold=0.0, include_evaluation_sets=True)
    assert len(env.entries(again.dataset_id)) == len(entries)  # variants are made once


def test_every_parameter_reaches_the_prompt(env: Env) -> None:
    env.project_md(2)
    save_params(env, purpose="zebra_training", audience="lighthouse keepers", extraction_rules="only dates and names",
                question_style="analytical", answer_style="step_by_step", negativity_ratio=0.5,
                complexity_level="expert", domain="maritime_history")
    env.run(datasets_per_chunk=2)
    text = user_text(env.requests("generate")[0])
    for expected in ("zebra training", "lighthouse keepers", "only dates and names", parameters.QUESTION_STYLES["analytical"],
                     parameters.ANSWER_STYLES["step_by_step"], parameters.COMPLEXITY_LEVELS["expert"], "maritime history",
                     "exactly 1 of the 2 questions", templates.NEGATIVE_ANSWER):
        assert expected in text, expected
    # custom_purpose and custom_audience stand in for purpose and audience; new parameters are a new dataset
    save_params(env, purpose="zebra_training", audience="lighthouse keepers", custom_purpose="teaching seamanship",
                custom_audience="first-year cadets", question_style="case_based", answer_style="concise",
                complexity_level="basic", domain="navigation", negativity_ratio=0.0)
    env.sim.reset_stats()
    env.run(datasets_per_chunk=2)
    gen = env.requests("generate")
    assert len(gen) == 2
    text = user_text(gen[0])
    for expected in ("teaching seamanship", "first-year cadets", parameters.QUESTION_STYLES["case_based"],
                     parameters.ANSWER_STYLES["concise"], parameters.COMPLEXITY_LEVELS["basic"], "navigation"):
        assert expected in text, expected
    for gone in ("zebra", "lighthouse keepers", "does not give"):
        assert gone not in text, gone


# --- taxonomy ----------------------------------------------------------------------------------------

TAXONOMY = [
    {"name": "Places", "children": [{"name": "Buildings"}, {"name": "Waters", "children": [{"name": "Tides"}]}]},
    {"name": "Transport", "description": "ferries, trains"},
    {"name": "Wildlife"},
]
LEAVES = {"Places > Buildings", "Places > Waters > Tides", "Transport", "Wildlife"}


def test_taxonomy_categories_are_leaves_or_other(env: Env) -> None:
    env.project_md(6)
    owner = create_project(env.log, env.rm, name="shared").id
    create_taxonomy(env.log, env.rm, project_id=owner, name="port", categories=TAXONOMY)
    result = env.run(datasets_per_chunk=3, taxonomy_project="shared", taxonomy_name="port")
    entries = env.entries(result.dataset_id)
    assert len(entries) == 18
    assert {e.category for e in entries} <= LEAVES | {"Other"}
    for body in env.requests("generate"):
        enum = body["response_format"]["json_schema"]["schema"]["properties"]["items"]["items"]["properties"][
            "category"]["enum"]
        assert set(enum) == LEAVES | {"Other"}
        assert '(use "Other" when none fits)' in user_text(body)
    # without a taxonomy: the generator's own labels, free text
    env.sim.reset_stats()
    free = env.run(datasets_per_chunk=3)
    assert free.dataset_id != result.dataset_id
    categories = {e.category for e in env.entries(free.dataset_id)}
    assert categories and not categories <= LEAVES | {"Other"}
    assert "enum" not in json.dumps(env.requests("generate")[0]["response_format"])


def test_unknown_taxonomy_is_refused_before_any_request(env: Env) -> None:
    env.project_md(2)
    with pytest.raises(DocGenError, match="no taxonomy 'nope'"):
        env.run(taxonomy_project="demo", taxonomy_name="nope")
    assert env.sim.stats()["requests"] == 0


# --- quality --------------------------------------------------------------------------------------------


def test_analyze_quality_scores_every_entry_with_components(env: Env) -> None:
    env.project_md(5)
    result = env.run(datasets_per_chunk=3, analyze_quality=True, quality_threshold=0.0)
    entries = env.entries(result.dataset_id)
    assert len(entries) == 15
    for e in entries:
        assert e.quality_score is not None and 0.0 <= e.quality_score <= 1.0
        assert {"groundedness", "non_empty", "length_ok", "no_refusal", "is_question", "not_copy"} <= set(e.quality)
        assert "judge" not in e.quality
        assert e.difficulty in ("beginner", "intermediate", "advanced", "expert")
    summary = result.quality_summary
    assert set(summary) == {"average_score", "distribution", "categories"}
    assert set(summary["distribution"]) == {"high", "medium", "low"}
    assert sum(summary["distribution"].values()) == 15 and sum(summary["categories"].values()) == 15
    assert summary["average_score"] == pytest.approx(sum(e.quality_score for e in entries) / 15)
    assert summary == env.rm.datasets.quality_summary(result.dataset_id)
    assert not env.requests("judge")  # no judge model: no judge calls

    # without analysis: a score from the structural checks alone, said so (tests/generation/test_guide_generation.py)
    other = env.run(datasets_per_chunk=3, analyze_quality=False, enable_versioning=True, dataset_name="structural")
    assert all(e.quality_score is not None and not e.quality_analyzed and "groundedness" not in e.quality
               for e in env.entries(other.dataset_id))


def test_quality_threshold_marks_entries_and_leaves_them_out_of_the_files(env: Env) -> None:
    env.project_md(4, repeat=2)  # the second copy of each section nearly duplicates the first: two qualities
    save_params(env, negativity_ratio=0.0)
    probe = env.run(datasets_per_chunk=3, analyze_quality=True, quality_threshold=0.0)
    scores = sorted(e.quality_score for e in env.entries(probe.dataset_id))
    assert scores[0] < scores[-1], "the fixture needs entries of different quality"
    threshold = (scores[0] + scores[-1]) / 2
    result = env.run(datasets_per_chunk=3, analyze_quality=True, quality_threshold=threshold)
    assert result.dataset_id == probe.dataset_id  # the same dataset; the new threshold applies to it
    entries = env.entries(result.dataset_id)
    below = [e for e in entries if e.below_threshold]
    kept = [e for e in entries if not e.below_threshold]
    assert below and kept
    assert all(e.quality_score < threshold for e in below) and all(e.quality_score >= threshold for e in kept)
    assert len(entries) == 24  # still in the log and the projection
    exported = [json.loads(line) for f in result.files for line in (env.data / f).read_text().splitlines()]
    assert sorted(d["id"] for d in exported) == sorted(e.id for e in kept)
    assert result.exported_count == len(kept) and result.entries_count == 24


def test_judge_model_adds_a_judge_component(env: Env) -> None:
    env.project_md(3)
    first = env.run(datasets_per_chunk=2, analyze_quality=True, quality_threshold=0.0)
    assert not env.requests("judge") and all("judge" not in e.quality for e in env.entries(first.dataset_id))
    # the same dataset run again with a judge: its entries are judged now
    result = env.run(datasets_per_chunk=2, analyze_quality=True, quality_threshold=0.0,
                     judge_model="simulated:judge-model")
    assert result.dataset_id == first.dataset_id
    entries = env.entries(result.dataset_id)
    judged = env.requests("judge")
    assert len(judged) == 6 and {b["model"] for b in judged} == {"judge-model"}
    for e in entries:
        assert 0.0 <= e.quality["judge"] <= 5.0 and e.quality["judge"] >= 1.0
        assert e.quality_score is not None


def test_repeated_paragraphs_are_marked_near_duplicates_and_scored_down(env: Env) -> None:
    env.project_md(3, repeat=2)  # the same three sections twice: the second copy repeats the first
    result = env.run(datasets_per_chunk=2, analyze_quality=True, quality_threshold=0.0)
    entries = env.entries(result.dataset_id)
    by_id = {e.id: e for e in entries}
    dups = [e for e in entries if e.duplicate_of]
    assert len(dups) >= 6
    for d in dups:
        source = by_id[d.duplicate_of]
        assert source.duplicate_of is None and source.source_chunk != d.source_chunk
        assert d.quality_score == pytest.approx(source.quality_score * DUPLICATE_FACTOR, abs=0.02)


# --- model roles: chunking_model, parsing_model; concurrency -------------------------------------------


def test_chunking_model_titles_chunks_without_headings_once(env: Env) -> None:
    env.ingest(env.write("notes.txt", plain_text(5)), strategy="paragraphs")
    chunks = env.rm.projects.chunks(env.rm.projects.project_by_name("demo").id)
    assert chunks and all(not c.heading for c in chunks)
    first = env.run(datasets_per_chunk=2, chunking_model="simulated:topic-model")
    view = env.rm.datasets.dataset(first.dataset_id)
    assert (view.items, view.done, view.pending) == (2 * len(chunks), 2 * len(chunks), 0)  # titles are not items
    titles = env.requests("title")
    assert len(titles) == len(chunks) and {b["model"] for b in titles} == {"topic-model"}
    titled = env.events(ChunkTitled)
    assert sorted(t.chunk_id for t in titled) == sorted(c.id for c in chunks)
    assert all(t.model == "topic-model" and t.title for t in titled)
    by_chunk = {t.chunk_id: t.title for t in titled}
    for body in env.requests("generate"):  # each chunk goes to the generator under its topic
        assert any(f"[{title}]\n{chunk.text}" in user_text(body) for chunk in chunks
                   for title in [by_chunk[chunk.id]])
    env.sim.reset_stats()
    env.run(datasets_per_chunk=3, chunking_model="simulated:topic-model")  # another dataset, same chunks
    assert not env.requests("title") and len(env.events(ChunkTitled)) == len(chunks)
    assert len(env.requests("generate")) == len(chunks)


def test_chunks_with_headings_need_no_titles(env: Env) -> None:
    env.ingest(env.write("port.html", html_doc()), strategy="markdown")
    env.run(datasets_per_chunk=1)
    assert not env.requests("title") and not env.events(ChunkTitled)
    assert any("[Harbour]" in user_text(b) or "Harbour" in user_text(b) for b in env.requests("generate"))


def test_parsing_model_repairs_a_sloppy_generators_replies(env: Env) -> None:
    env.project_md(3)
    result = env.run(datasets_per_chunk=2, classification_model="simulated:sloppy-chat",
                     parsing_model="simulated:fixer")
    assert result.outcome == "completed" and len(env.entries(result.dataset_id)) == 6
    gen, repairs = env.requests("generate"), env.requests("repair")
    assert {b["model"] for b in gen} == {"sloppy-chat"} and len(gen) == 3
    assert len(repairs) == 3 and {b["model"] for b in repairs} == {"fixer"}
    assert all("Sure! Here is the JSON" in user_text(b) for b in repairs)  # the reply itself went to be repaired
    assert all(e.model == "sloppy-chat" for e in env.entries(result.dataset_id))


def test_without_a_working_repair_attempts_are_retried_then_bookmarked(env: Env) -> None:
    env.project_md(2)
    run = env.document_run(datasets_per_chunk=2, classification_model="simulated:sloppy-chat",
                           parsing_model="simulated:sloppy-fixer", retry=FAST_RETRY)
    result = asyncio.run(run.run())
    assert result.outcome == "failed" and result.entries_count == 0
    gen = env.requests("generate")
    assert len(gen) == 2 * (1 + FAST_RETRY.max_retries)  # every attempt of both chunks
    assert len(env.requests("repair")) == len(gen)
    bookmarked = env.events(ItemBookmarked)
    assert len(bookmarked) == 4 and all("invalid_output" in b.reason for b in bookmarked)
    assert {i.status for i in env.rm.datasets.items(result.dataset_id)} == {"failed"}
    # a later run with a working parser picks the bookmarked items up, in the same dataset
    env.sim.reset_stats()
    fixed = env.run(datasets_per_chunk=2, classification_model="simulated:sloppy-chat", parsing_model="simulated")
    assert fixed.dataset_id == result.dataset_id and fixed.outcome == "completed"
    assert len(env.entries(fixed.dataset_id)) == 4 and len(env.requests("generate")) == 2


@pytest.mark.parametrize("concurrency", [1, 4])
def test_concurrency_is_the_number_of_calls_in_flight(make_env: Callable[..., Env], concurrency: int) -> None:
    env = make_env(latency_ms=250)
    env.project_md(8)
    started = time.perf_counter()
    result = env.run(datasets_per_chunk=1, concurrency=concurrency)
    elapsed = time.perf_counter() - started
    assert len(env.entries(result.dataset_id)) == 8
    in_flight = env.sim.stats()["max_in_flight"]
    if concurrency == 1:
        assert in_flight == 1 and elapsed >= 8 * 0.25
    else:
        assert 1 < in_flight <= 4


# --- evaluation sets ------------------------------------------------------------------------------


def test_evaluation_sets_split_80_10_10_with_duplicates_together(env: Env) -> None:
    env.project_md(10, repeat=2)  # twenty chunks, the second ten repeating the first ten
    result = env.run(datasets_per_chunk=5, analyze_quality=True, quality_threshold=0.0,
                     include_evaluation_sets=True)
    entries = env.entries(result.dataset_id)
    assert len(entries) == 100
    splits = env.rm.evaluations.splits(result.dataset_id)
    counts = Counter(splits.values())
    assert result.splits == dict(sorted(counts.items()))
    assert abs(counts["train"] - 80) <= 2 and abs(counts["validation"] - 10) <= 2 and abs(counts["test"] - 10) <= 2
    dups = [e for e in entries if e.duplicate_of]
    assert len(dups) >= 30
    assert all(splits[e.id] == splits[e.duplicate_of] for e in dups)
    names = sorted(Path(f).name for f in result.files)
    assert names == ["test.jsonl", "train.jsonl", "validation.jsonl"]
    for f in result.files:
        split = Path(f).stem
        ids = [json.loads(line)["id"] for line in (env.data / f).read_text().splitlines()]
        assert len(ids) == counts[split] and all(splits[i] == split for i in ids)
    view = env.rm.evaluations.split_view(result.dataset_id)
    assert view is not None and view.difficulty_buckets == {}  # buckets only for generate-evaluation

    # generate-evaluation on the same dataset: difficulty buckets too; other ratios and seed are applied
    again = env.run(datasets_per_chunk=5, analyze_quality=True, quality_threshold=0.0, include_evaluation_sets=True,
                    evaluation=True, split_ratios=[0.6, 0.2, 0.2], seed=7)
    assert again.dataset_id == result.dataset_id
    view = env.rm.evaluations.split_view(result.dataset_id)
    assert view is not None and view.seed == 7 and view.ratios == [0.6, 0.2, 0.2]
    counts = Counter(view.splits.values())
    assert abs(counts["train"] - 60) <= 2 and abs(counts["test"] - 20) <= 2
    buckets = view.difficulty_buckets
    assert buckets and set(buckets) <= {"beginner", "intermediate", "advanced", "expert"}
    assert sorted(i for ids in buckets.values() for i in ids) == sorted(e.id for e in entries)


def test_no_evaluation_sets_means_one_file_and_no_splits(env: Env) -> None:
    env.project_md(3)
    result = env.run(datasets_per_chunk=2)
    assert result.splits == {} and env.rm.evaluations.split_view(result.dataset_id) is None
    assert [Path(f).name for f in result.files] == ["dataset.jsonl"]


def test_generate_evaluation_alone_makes_splits_and_buckets(env: Env) -> None:
    env.project_md(4)
    result = env.run(datasets_per_chunk=5, analyze_quality=True, quality_threshold=0.0, evaluation=True)
    view = env.rm.evaluations.split_view(result.dataset_id)
    assert view is not None and len(view.splits) == 20 and view.difficulty_buckets


# --- versions ----------------------------------------------------------------------------------------------


def test_versioning_makes_new_versions_and_resumes_an_unfinished_one(env: Env) -> None:
    from dsetlog.engine.progress import Budget

    env.project_md(4)
    v1 = env.run(datasets_per_chunk=2, enable_versioning=True, dataset_name="port")
    v2 = env.run(datasets_per_chunk=2, enable_versioning=True, dataset_name="port")
    assert (v1.version, v2.version) == ("1.0.0", "1.1.0") and v1.dataset_id != v2.dataset_id
    assert len(env.entries(v1.dataset_id)) == len(env.entries(v2.dataset_id)) == 8
    # v1.2.0 stops after its first call (a token budget): the next run resumes it, it is not superseded
    req = env.request(datasets_per_chunk=2, enable_versioning=True, dataset_name="port")
    partial = run_generation_job(log=env.log, rm=env.rm, data=env.data, req=req, job_id="job_partial",
                                 kind="generate", sim_url=env.sim.base_url, progress=Progress(total=0, enabled=False),
                                 budget=Budget(tokens=1))
    assert partial.version == "1.2.0" and partial.outcome == "budget"
    done_before = len(env.entries(partial.dataset_id))
    assert 0 < done_before < 8
    env.sim.reset_stats()
    resumed = env.run(datasets_per_chunk=2, enable_versioning=True, dataset_name="port")
    assert (resumed.dataset_id, resumed.version) == (partial.dataset_id, "1.2.0")
    assert len(env.entries(resumed.dataset_id)) == 8
    assert len(env.requests("generate")) == 4 - done_before // 2  # only the chunks that were missing
    v3 = env.run(datasets_per_chunk=2, enable_versioning=True, dataset_name="port")
    assert v3.version == "1.3.0"
    history = env.rm.datasets.datasets(name="port")
    assert [d.version for d in history] == ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]
    assert len({d.id for d in history}) == 4 and all(d.entries == 8 for d in history)


def test_without_versioning_a_second_run_requests_nothing(env: Env) -> None:
    env.project_md(4)
    first = env.run(datasets_per_chunk=2, analyze_quality=True, include_evaluation_sets=True)
    env.sim.reset_stats()
    second = env.run(datasets_per_chunk=2, analyze_quality=True, include_evaluation_sets=True)
    assert second.dataset_id == first.dataset_id and second.version is None
    assert env.sim.stats()["requests"] == 0 and len(env.entries(second.dataset_id)) == 8
    assert len(env.rm.datasets.datasets()) == 1


# --- benchmarks ---------------------------------------------------------------------------------------------


def test_reference_qa_benchmark_results_in_the_job_and_the_dataset(env: Env) -> None:
    env.project_md(10)
    result = env.run(job_id="job_bench", datasets_per_chunk=3, analyze_quality=True, quality_threshold=0.0,
                     include_evaluation_sets=True, run_benchmarks=True, benchmark_suite="reference_qa",
                     benchmark_model="simulated:student")
    test_ids = {i for i, s in env.rm.evaluations.splits(result.dataset_id).items() if s == "test"}
    asked = env.requests("benchmark")
    assert len(asked) == len(test_ids) > 0 and {b["model"] for b in asked} == {"student"}
    bench = result.benchmark
    assert bench is not None and bench["suite"] == "reference_qa" and bench["model"] == "student"
    assert bench["questions"] == bench["answered"] == len(test_ids)
    for metric in ("exact_match", "token_f1", "rouge_l"):
        assert 0.0 <= bench[metric] <= 1.0
    assert bench["token_f1"] > 0  # the simulator answers from the same chunk
    job = env.rm.jobs.job("job_bench")
    assert job is not None and job.status == "completed" and job.result["benchmark"] == bench
    stored = env.rm.evaluations.benchmarks(result.dataset_id)
    assert len(stored) == 1 and stored[0].suite == "reference_qa" and stored[0].results["token_f1"] == bench["token_f1"]


def test_negative_rejection_benchmark_scores_refusals_both_ways(env: Env) -> None:
    env.project_md(10)
    save_params(env, negativity_ratio=0.5)
    result = env.run(datasets_per_chunk=4, analyze_quality=True, quality_threshold=0.0, include_evaluation_sets=True,
                     run_benchmarks=True, benchmark_suite="Negative_Rejection")
    entries = {e.id: e for e in env.entries(result.dataset_id)}
    test = [entries[i] for i, s in env.rm.evaluations.splits(result.dataset_id).items() if s == "test"]
    negatives = [e for e in test if e.answer == templates.NEGATIVE_ANSWER]
    assert negatives and len(negatives) < len(test)
    bench = result.benchmark
    assert bench is not None and bench["suite"] == "negative_rejection" and bench["questions"] == len(test)
    assert bench["unanswerable"] == len(negatives)
    # the simulator answers every question from the text, never refusing: right on the answerable ones only
    assert bench["rejection_accuracy"] == pytest.approx((len(test) - len(negatives)) / len(test), abs=1e-4)


def test_a_benchmark_answer_is_never_paid_for_twice(env: Env) -> None:
    """Answers in the log for an unchanged entry (same suite and model) are reused: by a resumed job, by a
    later run of the same request, after a crash in the middle of a benchmark."""
    env.project_md(10)
    fields = dict(datasets_per_chunk=3, analyze_quality=True, quality_threshold=0.0, include_evaluation_sets=True,
                  benchmark_suite="reference_qa", benchmark_model="simulated:student")
    made = env.run(job_id="job_plain", **fields)  # no benchmark yet
    test = sorted(i for i, s in env.rm.evaluations.splits(made.dataset_id).items() if s == "test")
    assert len(test) >= 3 and not env.requests("benchmark")
    entries = {e.id: e for e in env.entries(made.dataset_id)}
    env.log.append_many([  # a benchmark that answered two questions and was killed
        BenchmarkAnswered(dataset_id=made.dataset_id, job_id="job_killed", suite="reference_qa", model="student",
                          entry_id=i, revision=entries[i].revision, answer=entries[i].answer,
                          scores={"exact_match": 1.0, "token_f1": 1.0, "rouge_l": 1.0}) for i in test[:2]])

    first = env.run(job_id="job_bench", run_benchmarks=True, **fields).benchmark
    assert first is not None and len(env.requests("benchmark")) == len(test) - 2
    assert (first["questions"], first["answered"], first["reused"]) == (len(test), len(test), 2)
    answers = env.events(BenchmarkAnswered)
    assert sorted(a.entry_id for a in answers) == sorted(test)  # each asked question is in the log, with its answer
    assert all(a.answer and a.usage.completion_tokens > 0 for a in answers if a.job_id == "job_bench")

    again = env.run(job_id="job_again", run_benchmarks=True, **fields).benchmark  # the same request, later
    assert len(env.requests("benchmark")) == len(test) - 2  # nothing asked
    assert again is not None and again["reused"] == len(test) and again["token_f1"] == first["token_f1"]
    resumed = env.run(job_id="job_bench", run_benchmarks=True, **fields).benchmark  # a resumed job
    assert resumed == first and [b.job_id for b in env.rm.evaluations.benchmarks(made.dataset_id)] == [
        "job_bench", "job_again"]

    env.log.append(EntryEdited(dataset_id=made.dataset_id, entry_id=test[0], answer="An edited reference answer."))
    edited = env.run(job_id="job_edited", run_benchmarks=True, **fields).benchmark
    asked = env.requests("benchmark")
    assert len(asked) == len(test) - 1  # only the edited entry, asked again
    assert edited is not None and edited["reused"] == len(test) - 1 and edited["answered"] == len(test)


@pytest.mark.parametrize("suite", ["glue", "squad", "made_up"])
def test_suites_without_data_are_refused_naming_the_available_ones(env: Env, suite: str) -> None:
    env.project_md(2)
    with pytest.raises(ValueError, match="available suites: reference_qa, negative_rejection"):
        env.run(run_benchmarks=True, benchmark_suite=suite)
    assert env.sim.stats()["requests"] == 0
    env.run(run_benchmarks=False, benchmark_suite=suite)  # not asked to run: the guide's default "glue" is fine


# --- exports -------------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("format_type", ["jsonl", "parquet", "csv", "alpaca", "sharegpt", "openai-chat"])
def test_format_type_writes_that_format(env: Env, format_type: str) -> None:
    env.project_md(3)
    result = env.run(datasets_per_chunk=2, format_type=format_type, output_dir="exports/run1")
    entries = env.entries(result.dataset_id)
    assert len(result.files) == 1 and result.exported_count == 6
    path = env.data / result.files[0]
    assert path.parent == env.data / "exports" / "run1" / result.dataset_id  # inside the data dir
    questions = [e.question for e in entries]
    answers = [e.answer for e in entries]
    if format_type == "jsonl":
        assert path.name == "dataset.jsonl"
        docs = read_jsonl(path)
        assert [d["question"] for d in docs] == questions and [d["id"] for d in docs] == [e.id for e in entries]
        # metadata is a JSON object's text, as in parquet: one column type whatever its keys
        assert all(d["source_chunk"] and json.loads(d["metadata"])["mode"] == "default" for d in docs)
    elif format_type == "parquet":
        assert path.suffix == ".parquet" and path.read_bytes()[:4] == b"PAR1"
        table = pq.read_table(path)
        assert table.column("question").to_pylist() == questions and table.column("answer").to_pylist() == answers
    elif format_type == "csv":
        assert path.suffix == ".csv"
        rows = list(csv.reader(path.open(encoding="utf-8", newline="")))
        assert rows[0] == ["timestamp", "question", "thoughts", "final_answer", "id", "category", "difficulty",
                           "quality_score", "source_chunk"]  # the seed's columns first
        assert [r[1] for r in rows[1:]] == questions and [r[3] for r in rows[1:]] == answers
        assert [r[4] for r in rows[1:]] == [e.id for e in entries]
    else:
        assert path.name == f"dataset.{format_type}.jsonl"  # several formats can share one folder
        docs = read_jsonl(path)
        if format_type == "alpaca":
            assert docs[0] == {"instruction": questions[0], "input": "", "output": answers[0]}
        elif format_type == "sharegpt":
            assert docs[0] == {"conversations": [{"from": "human", "value": questions[0]},
                                                 {"from": "gpt", "value": answers[0]}]}
        else:
            assert docs[0] == {"messages": [{"role": "user", "content": questions[0]},
                                            {"role": "assistant", "content": answers[0]}]}
        assert len(docs) == 6
    assert not list(path.parent.glob("*.tmp*"))  # written atomically: no temp file left


@pytest.mark.parametrize("output_dir", ["/tmp/elsewhere", "../outside", "exports/../../up", "C:/windows", "a\\..\\..\\b"])
def test_output_dir_outside_the_data_dir_is_refused(env: Env, output_dir: str) -> None:
    env.project_md(2)
    with pytest.raises(ValueError, match="output_dir"):
        GenerateRequest(project_id="demo", output_dir=output_dir)
    with pytest.raises(msgspec.ValidationError, match="output_dir"):
        msgspec.convert({"project_id": "demo", "output_dir": output_dir}, GenerateRequest)
    with pytest.raises(ValueError, match="output_dir"):
        export_dataset(env.rm, "dataset_x", data_dir=env.data, output_dir=output_dir)
    assert env.sim.stats()["requests"] == 0


def test_batch_size_splits_an_export_into_numbered_parts(env: Env) -> None:
    env.project_md(5)
    result = env.run(datasets_per_chunk=4)
    entries = env.entries(result.dataset_id)
    files, total = export_dataset(env.rm, result.dataset_id, data_dir=env.data, output_dir="batches",
                                  format_type="jsonl", batch_size=7)
    assert total == 20
    assert [f.name for f in files] == ["dataset_part0001.jsonl", "dataset_part0002.jsonl", "dataset_part0003.jsonl"]
    docs = [read_jsonl(f) for f in files]
    assert [len(d) for d in docs] == [7, 7, 6]
    assert [d["id"] for part in docs for d in part] == [e.id for e in entries]  # in order, each once
    files, total = export_dataset(env.rm, result.dataset_id, data_dir=env.data, output_dir="whole",
                                  format_type="parquet", batch_size=20)
    assert [f.name for f in files] == ["dataset.parquet"] and pq.read_table(files[0]).num_rows == 20  # fits in one
    # exported again in one file: the parts of the earlier export are gone, nothing is read twice
    files, total = export_dataset(env.rm, result.dataset_id, data_dir=env.data, output_dir="batches")
    # (beside the dataset card, README.md, which names the files that form the dataset)
    assert sorted(p.name for p in files[0].parent.iterdir()) == ["README.md", "dataset.jsonl"] and total == 20


# --- prompts -----------------------------------------------------------------------------------------------


def test_custom_prompt_is_used_and_its_hash_recorded(env: Env) -> None:
    env.project_md(2)
    custom = "Write {n} quiz questions about the harbour for {audience}, with answers.\n\n{chunk}"
    result = env.run(datasets_per_chunk=2, custom_prompt=custom)
    entries = env.entries(result.dataset_id)
    assert {e.prompt_hash for e in entries} == {templates.prompt_hash(custom)}
    assert {e.prompt_name for e in entries} == {"custom"}
    for body in env.requests("generate"):
        text = user_text(body)
        assert text.startswith("Write 2 quiz questions about the harbour for general readers, with answers.")
        assert "JSON Schema" in text  # the reply's shape is added to a custom prompt
    dataset = env.rm.datasets.dataset(result.dataset_id)
    assert dataset is not None and dataset.params["prompt_hash"] == templates.prompt_hash(custom)


def test_custom_prompt_without_chunk_placeholder_gets_the_chunk(env: Env) -> None:
    env.project_md(2)
    env.run(datasets_per_chunk=1, custom_prompt="Ask {n} tricky questions.")
    chunks = env.rm.projects.chunks(env.rm.projects.project_by_name("demo").id)
    texts = [user_text(b) for b in env.requests("generate")]
    assert all(t.startswith("Ask 1 tricky questions.") for t in texts)
    assert all(any(c.text in t for t in texts) for c in chunks)


def test_stored_prompt_by_name_is_used_and_versions_are_new_datasets(env: Env) -> None:
    pid = env.project_md(2)
    first = "Make {n} flashcards (question and answer) for {audience}.\nText:\n{chunk}"
    save_prompt(env.log, env.rm, name="flashcards", content=first, project_id=pid, mode="default")
    r1 = env.run(datasets_per_chunk=2, prompt_name="flashcards")
    assert {(e.prompt_name, e.prompt_hash) for e in env.entries(r1.dataset_id)} == {("flashcards",
                                                                                    templates.prompt_hash(first))}
    assert all(user_text(b).startswith("Make 2 flashcards") for b in env.requests("generate"))
    second = first.replace("flashcards", "revision cards")
    save_prompt(env.log, env.rm, name="flashcards", content=second, project_id=pid, mode="default")
    env.sim.reset_stats()
    r2 = env.run(datasets_per_chunk=2, prompt_name="flashcards")
    assert r2.dataset_id != r1.dataset_id  # a new version of the prompt is a new dataset
    assert {e.prompt_hash for e in env.entries(r2.dataset_id)} == {templates.prompt_hash(second)}
    assert all(user_text(b).startswith("Make 2 revision cards") for b in env.requests("generate"))


def test_pdf_and_html_documents_become_grounded_entries(env: Env) -> None:
    pdf = make_pdf(env.tmp / "port.pdf", [body for _, body in TOPICS[:3]])
    pid = env.ingest(pdf, strategy="paragraphs")
    ingest_file(env.log, env.rm, project_id=pid, path=env.write("port.html", html_doc()), strategy="markdown")
    result = env.run(datasets_per_chunk=2, analyze_quality=True, quality_threshold=0.0)
    entries = env.entries(result.dataset_id)
    chunks = {c.id: c for c in env.rm.projects.chunks(pid)}
    assert len(entries) == 2 * len(chunks) and {e.source_chunk for e in entries} == set(chunks)
    assert all(e.quality["groundedness"] > 0.5 for e in entries if e.answer != templates.NEGATIVE_ANSWER)
    from_pdf = {c.id for c in chunks.values() if "granite" in c.text}  # the PDF's text came through
    assert from_pdf and len([e for e in entries if e.source_chunk in from_pdf]) == 2 * len(from_pdf)


# --- the command line, as real processes ----------------------------------------------------------------


def cli_env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and not k.startswith(("SIMULATED_", "GEMINI_"))}
    return {**env, "PYTHONPATH": str(ROOT), "DSET_DATA_DIR": str(data), **extra}


def dset(data: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "dsetlog", *args], capture_output=True, text=True,
                          env=cli_env(data, **extra), cwd=data.parent, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_cli_generate_answer_mode_with_questions_file_and_questions(env: Env) -> None:
    env.project_md(4)
    env.log.close()
    qfile = env.write("questions.txt", "When does the harbour open?\n\nHow long does the ferry crossing take?\n")
    proc = dset(env.data, "datasets", "generate", "--project", "demo", "--simulate", "--generation-mode", "answer",
                "--questions-file", str(qfile), "--no-progress", "--format-type", "openai-chat")
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.split("job ", 1)[1].split()[0]
    dataset_id = proc.stdout.split("dataset ", 1)[1].split()[0]
    assert job_id.startswith("job_") and dataset_id.startswith("dataset_")
    rm = ReadModel.open(env.data)
    assert [e.question for e in rm.full(rm.datasets.entries(dataset_id))] == ["When does the harbour open?",
                                                                     "How long does the ferry crossing take?"]
    assert rm.jobs.job(job_id).status == "completed" and rm.jobs.job(job_id).dataset_id == dataset_id
    files = list((env.data / dataset_id).glob("*.jsonl"))
    assert len(files) == 1 and "messages" in read_jsonl(files[0])[0]
    proc = dset(env.data, "datasets", "generate", "--project", "demo", "--simulate", "--generation-mode", "answer",
                "--questions", "Who built the lighthouse?", "Is entry to the museum free?", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    other = proc.stdout.split("dataset ", 1)[1].split()[0]
    assert other != dataset_id
    again = ReadModel.open(env.data)
    assert [e.question for e in again.full(again.datasets.entries(other))] == [
        "Who built the lighthouse?", "Is entry to the museum free?"]
    listed = dset(env.data, "datasets", "list")
    assert dataset_id in listed.stdout and other in listed.stdout
    # a prompt stored with `dset prompts add`, used by name; --evaluation-sets (generate-evaluation)
    template = "Write {n} exam questions with model answers for {audience}.\n\n{chunk}"
    assert dset(env.data, "prompts", "add", "exam", str(env.write("exam.txt", template)), "--project", "demo",
                "--mode", "default").returncode == 0
    proc = dset(env.data, "datasets", "generate", "--project", "demo", "--simulate", "--prompt-name", "exam",
                "--datasets-per-chunk", "3", "--evaluation-sets", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    exam = proc.stdout.split("dataset ", 1)[1].split()[0]
    rm = ReadModel.open(env.data)
    assert {(e.prompt_name, e.prompt_hash) for e in rm.datasets.entries(exam)} == {
        ("exam", templates.prompt_hash(template))}
    view = rm.evaluations.split_view(exam)
    kept = [e for e in rm.datasets.entries(exam) if not e.below_threshold]  # default quality_threshold 0.7
    assert view is not None and sorted(view.splits) == sorted(e.id for e in kept) and view.difficulty_buckets
    assert "splits:" in proc.stdout


def test_cli_export_as_of_gives_the_dataset_as_it_was(env: Env) -> None:
    env.project_md(4)
    result = env.run(datasets_per_chunk=2)
    records = list(env.log.read())
    generated = [r for r in records if isinstance(r.event, EntryGenerated)]
    assert len(generated) == 8
    halfway = generated[3].seq  # the first four entries only
    before_edit = env.log.append(SlotQueued(dataset_id="other", item_id="x", chunk_id="c", slot=0))  # any later event
    first = generated[0].event
    env.log.append(EntryEdited(dataset_id=result.dataset_id, entry_id=first.entry_id, answer="Edited answer."))
    env.log.close()

    def exported(*args: str) -> list[dict[str, Any]]:
        out = f"x{uuid.uuid4().hex[:6]}"
        proc = dset(env.data, "export", result.dataset_id, "--output-dir", out, *args)
        assert proc.returncode == 0, proc.stderr
        return [d for f in sorted((env.data / out / result.dataset_id).glob("*.jsonl")) for d in read_jsonl(f)]

    now = {d["id"]: d for d in exported()}
    assert len(now) == 8 and now[first.entry_id]["answer"] == "Edited answer."
    then = {d["id"]: d for d in exported("--as-of", str(before_edit))}
    assert len(then) == 8 and then[first.entry_id]["answer"] == first.answer
    early = exported("--as-of", str(halfway), "--format", "jsonl")
    assert [d["id"] for d in early] == [r.event.entry_id for r in generated[:4]]
    proc = dset(env.data, "datasets", "show", result.dataset_id, "--as-of", str(halfway))
    assert proc.returncode == 0 and json.loads(proc.stdout)["entries"] == 4
    proc = dset(env.data, "export", result.dataset_id, "--as-of", "999999")
    assert proc.returncode == 2 and "--as-of 999999" in proc.stderr
    created = next(r.seq for r in records if type(r.event).__name__ == "DatasetCreated")
    proc = dset(env.data, "export", result.dataset_id, "--as-of", str(created - 1))
    assert proc.returncode == 2 and "no dataset" in proc.stderr  # it did not exist yet


BAD_INPUT = [
    (["--project", "nope", "--simulate"], "no project 'nope'"),
    (["--project", "empty", "--simulate"], "has no chunks"),
    (["--project", "demo", "--simulate", "--generation-mode", "bogus"], "generation_mode"),
    (["--project", "demo", "--simulate", "--format-type", "xml"], "format_type"),
    (["--project", "demo", "--simulate", "--datasets-per-chunk", "0"], "datasets_per_chunk"),
    (["--project", "demo"], "GEMINI_API_KEY"),
    (["--project", "demo", "--simulate", "--output-dir", "/abs/path"], "output_dir"),
    (["--project", "demo", "--simulate", "--output-dir", "../up"], "output_dir"),
    (["--project", "demo", "--simulate", "--run-benchmarks"], "available suites: reference_qa, negative_rejection"),
    (["--project", "demo", "--simulate", "--generation-mode", "answer", "--prompt-name", "answer"],
     "for answer mode with questions"),  # without questions, answer mode writes the reader's questions
    (["--project", "demo", "--simulate", "--taxonomy-name", "none"], "no taxonomy 'none' in project 'demo'"),
]


def test_cli_bad_input_exits_2_with_a_message_and_writes_nothing(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from dsetlog.cli.main import main

    env.project_md(2)
    create_project(env.log, env.rm, name="empty")
    env.log.close()
    size = (env.data / "events.jsonl").stat().st_size
    monkeypatch.chdir(env.tmp)  # no .env here
    for name in [k for k in os.environ if k.endswith("_API_KEY") or k.startswith(("GEMINI_", "SIMULATED_"))]:
        monkeypatch.delenv(name)
    for args, expected in BAD_INPUT:  # in this process: `dset` is main(); one real process below
        code = main(["datasets", "generate", *args, "--no-progress", "--data", str(env.data)])
        err = capsys.readouterr().err
        assert code == 2, (expected, err)
        assert expected in err and "Traceback" not in err, (expected, err)
    assert (env.data / "events.jsonl").stat().st_size == size  # refused before anything was written
    proc = dset(env.data, "datasets", "generate", "--project", "demo", "--no-progress")
    assert proc.returncode == 2 and "GEMINI_API_KEY" in proc.stderr
    proc = dset(env.data, "export", "dataset_nope")
    assert proc.returncode == 2 and "no dataset 'dataset_nope'" in proc.stderr


# --- kill -9 and resume --------------------------------------------------------------------------------


def test_kill_9_and_resume_a_document_run(make_env: Callable[..., Env]) -> None:
    env = make_env(latency_ms=200, jitter_ms=100)
    env.project_md(32)
    env.log.close()
    slots = 64
    args = ["datasets", "generate", "--project", "demo", "--concurrency", "4", "--datasets-per-chunk", "2",
            "--classification-model", "simulated", "--parsing-model", "simulated", "--chunking-model", "simulated",
            "--include-evaluation-sets", "--no-progress"]
    extra = {"SIMULATED_BASE_URL": env.sim.base_url}
    rng = random.Random(7)
    log_path = env.data / "events.jsonl"

    def entries_in_log() -> int:
        with EventLog.in_dir(env.data) as log:
            return sum(isinstance(r.event, EntryGenerated) for r in log.read())

    kills, progress = 0, []
    while kills < 4:
        before = log_path.stat().st_size
        proc = subprocess.Popen([sys.executable, "-m", "dsetlog", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=cli_env(env.data, **extra), cwd=env.data.parent)
        # a random moment of its work (a random amount of it written, then up to 30 ms more): calls in
        # flight, entries being appended; measured in bytes of log, not seconds, so a slow machine kills too
        target = before + rng.randint(1_500, 15_000)
        deadline = time.monotonic() + 60
        while log_path.stat().st_size < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.03))
        if proc.poll() is not None:
            break  # it finished before the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        progress.append(entries_in_log())
    assert kills >= 3 and any(0 < n < slots for n in progress), progress
    requests_before_final = env.sim.stats()["requests"]
    proc = subprocess.run([sys.executable, "-m", "dsetlog", *args], capture_output=True, text=True,
                          env=cli_env(env.data, **extra), cwd=env.data.parent, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with EventLog.in_dir(env.data) as log:
        events = [r.event for r in log.read()]
    created = [e for e in events if type(e).__name__ == "DatasetCreated"]
    assert len(created) == 1  # the same dataset every time
    dataset_id = created[0].dataset_id
    assert f"dataset {dataset_id}" in proc.stdout
    queued = {e.item_id for e in events if isinstance(e, SlotQueued)}
    generated = Counter(e.item_id for e in events if isinstance(e, EntryGenerated))
    assert len(queued) == slots
    assert set(generated) == queued and set(generated.values()) == {1}  # exactly one EntryGenerated per slot
    rm = ReadModel.open(env.data)
    entries = rm.datasets.entries(dataset_id)
    assert len(entries) == slots and len({e.id for e in entries}) == slots
    assert len({(e.source_chunk, e.metadata["slot"]) for e in entries}) == slots  # no duplicate entries
    assert len(rm.evaluations.splits(dataset_id)) == len([e for e in entries if not e.below_threshold])
    # finished chunks were never asked again: at most the calls in flight at each kill were asked twice
    assert len(env.requests("generate")) <= slots // 2 + 4 * kills
    assert env.sim.stats()["requests"] > requests_before_final or progress[-1] == slots


def test_the_projects_dataset_format_is_the_default_format_type(env: Env) -> None:
    env.project_md(2)
    save_params(env, dataset_format="parquet")
    result = env.run(datasets_per_chunk=1)
    assert [Path(f).name for f in result.files] == ["dataset.parquet"]
    assert env.rm.datasets.dataset(result.dataset_id).format_type == "parquet"
    named = env.run(datasets_per_chunk=1, format_type="csv")  # a format_type given wins
    assert [Path(f).name for f in named.files] == ["dataset.csv"]
    save_params(env, dataset_format="xml")
    with pytest.raises(DocGenError, match="dataset_format 'xml'"):
        env.run(datasets_per_chunk=1)
    assert env.run(datasets_per_chunk=1, format_type="jsonl").files
    env.log.close()
    proc = dset(env.data, "export", result.dataset_id, "--output-dir", "again")  # the dataset's own format
    assert proc.returncode == 0 and (env.data / "again" / result.dataset_id / "dataset.parquet").is_file()


def test_builtin_prompt_names_and_max_chunks(env: Env) -> None:
    env.project_md(5)
    result = env.run(datasets_per_chunk=2, prompt_name="evaluation_qa", max_chunks=2)
    entries = env.entries(result.dataset_id)
    assert len(entries) == 4 and len({e.source_chunk for e in entries}) == 2  # only the first two chunks
    assert {e.prompt_name for e in entries} == {"evaluation_qa"}
    assert {e.prompt_hash for e in entries} == {templates.prompt_hash(templates.TEMPLATES["evaluation_qa"])}
    gen = env.requests("generate")
    assert len(gen) == 2 and all("evaluation questions with reference answers" in user_text(b) for b in gen)
    with pytest.raises(DocGenError, match="written for generation_mode 'summarization'"):
        env.run(prompt_name="summarization")
    with pytest.raises(DocGenError, match="unknown prompt 'nope'"):
        env.run(prompt_name="nope")
    with pytest.raises(ValueError, match='generation_mode "answer" only'):
        GenerateRequest(project_id="demo", questions=["Why?"])


def test_simulator_request_log_and_in_flight_over_http(make_env: Callable[..., Env]) -> None:
    env = make_env(latency_ms=300, request_log=3)
    env.project_md(5)
    env.run(datasets_per_chunk=1, concurrency=5)
    root = env.sim.base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/_sim/requests?last=2") as resp:
        bodies = json.loads(resp.read())["requests"]
    assert bodies == env.sim.requests(last=2) and len(env.sim.requests()) == 3  # bounded log
    assert all(kind_of(b) == "generate" for b in bodies)
    with urllib.request.urlopen(f"{root}/_sim/stats") as resp:
        stats = json.loads(resp.read())
    assert stats["max_in_flight"] == 5 and stats["requests"] == 5
    env.sim.reset_stats()
    assert env.sim.requests() == [] and env.sim.stats()["max_in_flight"] == 0
