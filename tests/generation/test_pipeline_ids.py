"""The pipeline's ids (datasets, versions, slots, augmentation variants, entries; `dset generate`'s dataset,
questions and entries) are byte for byte those of the code before dsetlog.ids existed, so old logs resume.

The expected ids below were printed by the code of commit a548241 (before the pipeline was split and moved
to dsetlog.ids) for this very scenario: same documents, parameters and requests.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import DSET, ROOT, Env, clean_env

from dsetlog.catalog.projects import save_parameters
from dsetlog.generation.answering import dataset_id_for, item_id_for
from dsetlog.generation.questions import normalize
from dsetlog.ids import content_id, entry_id_for
from dsetlog.prompts import parameters
from dsetlog.simulator.server import SimConfig, Simulator
from dsetlog.store.events import DatasetCreated, EntryGenerated, QuestionQueued, SlotQueued
from dsetlog.store.log import EventLog

# dataset id -> (version, its slots in the order they were queued); the last slots of each are the
# augmentation variants ("paraphrase")
EXPECTED = {
    "dataset_4af4d7a2668d92eb": (None, (
        "slot_8268a1c0898f5b89", "slot_a3ffa5631d9af3c6", "slot_4c74afeac60fc111", "slot_10c2ba63dd65fde5",
        "slot_f3ddf6f301e598d8", "slot_9c5e912a6d6e7d72", "slot_f3dc85fca6e829fa", "slot_72c042cce2473254",
        "slot_85658b8fcf32ea05")),
    "dataset_fae54e89b2b65730": ("1.0.0", (
        "slot_5112ed916691783e", "slot_cae977fada7a2128", "slot_b4a3846e348a4bd6", "slot_c6726c4b0f5af3bf",
        "slot_7b565dc902642276", "slot_e05d11f6540358a0", "slot_667b540512ee99c9", "slot_090dfa6169c23dac",
        "slot_1c057eeee3a2a54b")),
    "dataset_a83131490f06d510": ("1.1.0", (
        "slot_6ca50104374e9cf0", "slot_59cc4d299f3391af", "slot_4387f6ef5980afbe", "slot_d7fdb1eaff47c641",
        "slot_da8e77ee9d79153c", "slot_145ba57ec96378d0")),
    "dataset_82e0aa667ef49a36": (None, ("slot_77f99c7efd362623", "slot_ef12b8b2cf6c2db5", "slot_2f3916c8661a223a")),
}
QUESTIONS_DATASET = "ds_8ed7af42b57ce842"
QUESTION_ITEMS = {"What is 2+2?": "q_056aea64baad9921", "Name a colour": "q_92338f4c869e1c3c"}


def old_hash(*parts: object) -> str:
    """The removed ``document._hash`` (and ``cli.generate._hash``, whose parts were all text already)."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:16]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with Simulator(SimConfig(latency_ms=1)) as sim:
        env = Env(tmp_path / "env", sim)
        yield env
        env.log.close()


def test_the_content_ids_are_the_old_hashes() -> None:
    for parts in [("dataset_x", "chunk_1", 0), ("dataset_x", "q", 3), ("slot_ab", "paraphrase"), ("a\x1fb",)]:
        assert content_id("slot", *parts) == "slot_" + old_hash(*parts)
    assert entry_id_for("slot_0123456789abcdef") == "entry_0123456789abcdef"
    assert entry_id_for("q_0123456789abcdef") == "entry_0123456789abcdef"
    assert dataset_id_for(None, Path("/data/questions.csv")) == "ds_" + old_hash("questions", "/data/questions.csv")
    assert item_id_for("ds_x", " What  is it? ") == "q_" + old_hash("ds_x", normalize(" What  is it? "))


def test_a_run_makes_the_ids_the_old_code_made(env: Env) -> None:
    env.project_md(3)
    pid = env.rm.projects.project_by_name("demo").id
    save_parameters(env.log, env.rm, project_id=pid, params=parameters.ProjectParameters(
        purpose="fine-tuning", audience="students", dataset_format="jsonl", data_augmentation="paraphrase",
        negativity_ratio=0.3))
    env.run(datasets_per_chunk=2, job_id="job_fixed")
    env.run(datasets_per_chunk=2, enable_versioning=True, dataset_name="named", job_id="job_fixed2")
    env.run(datasets_per_chunk=2, enable_versioning=True, dataset_name="named", max_chunks=2, job_id="job_fixed3")
    env.run(generation_mode="answer", questions=["What does the pancreas make?", "What is thirst?"],
            job_id="job_fixed4")
    made = {e.dataset_id: (e.version, tuple(s.item_id for s in env.events(SlotQueued) if s.dataset_id == e.dataset_id))
            for e in env.events(DatasetCreated)}
    assert made == EXPECTED
    entries = env.events(EntryGenerated)
    assert len(entries) == sum(len(slots) for _, slots in EXPECTED.values())
    assert all(e.entry_id == "entry_" + e.item_id[5:] for e in entries)


def test_dset_generate_makes_the_ids_the_old_code_made(tmp_path: Path) -> None:
    csv = tmp_path / "q.csv"
    csv.write_text("question\nWhat is 2+2?\nName a colour\n")
    data = tmp_path / "data"
    done = subprocess.run([*DSET, "generate", str(csv), "--simulate", "--data", str(data), "--out",
                           str(tmp_path / "out"), "--no-progress", "--dataset", "fixed"], cwd=ROOT, env=clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with EventLog.in_dir(data) as log:
        events = [r.event for r in log.read()]
    assert [e.dataset_id for e in events if isinstance(e, DatasetCreated)] == [QUESTIONS_DATASET]
    assert {e.question: e.item_id for e in events if isinstance(e, QuestionQueued)} == QUESTION_ITEMS
    assert sorted(e.entry_id for e in events if isinstance(e, EntryGenerated)) == sorted(
        "entry_" + i[2:] for i in QUESTION_ITEMS.values())
