"""The Projects and Jobs projections on real log files.

Every accessor; the current chunk set (re-chunking replaces it, a crash before DocumentChunked
leaves none); latest parameters; prompt versions; nested taxonomies; the job lifecycle with final
terminal states and what a restarted server must resume; and the key property: a rebuild from
scratch, an incremental catch-up and a snapshot plus the tail hold the same state.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers import append, three_ways
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsetlog.store.events import (
    Category,
    ChunkCreated,
    DocumentChunked,
    DocumentIngested,
    Event,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobStarted,
    JobSubmitted,
    ParametersSaved,
    ProjectCreated,
    PromptSaved,
    TaxonomyCreated,
)
from projections import (
    JOB_CANCELLED,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_PENDING,
    JOB_RUNNING,
    Jobs,
    Projects,
    ReadModel,
    flat_categories,
    standard_projections,
)

P1, P2 = "p-1", "p-2"


# --- helpers ---------------------------------------------------------------------------------------


def open_rm(data: Path) -> ReadModel:
    return ReadModel.open(data, use_snapshot=False)


def ids(views: list[Any]) -> list[str]:
    return [v.id for v in views]


def project(pid: str = P1, name: str = "medical", description: str = "") -> ProjectCreated:
    return ProjectCreated(project_id=pid, name=name, description=description)


def doc(
    did: str, pid: str = P1, content_hash: str | None = None, filename: str | None = None
) -> DocumentIngested:
    return DocumentIngested(
        project_id=pid,
        document_id=did,
        filename=filename or f"{did}.md",
        content_hash=content_hash or f"h-{did}",
        media_type="text/markdown",
        size=100,
        chars=90,
        extractor="markdown",
    )


def chunk(
    cid: str, did: str, index: int, pid: str = P1, strategy: str = "paragraphs", **kw: Any
) -> ChunkCreated:
    text = kw.pop("text", f"text of {cid}")
    start = kw.pop("start", index * 100)
    return ChunkCreated(
        project_id=pid,
        document_id=did,
        chunk_id=cid,
        index=index,
        start=start,
        end=start + len(text),
        text=text,
        strategy=strategy,
        **kw,
    )


def chunked(did: str, chunk_ids: list[str], pid: str = P1, strategy: str = "paragraphs") -> DocumentChunked:
    return DocumentChunked(
        project_id=pid, document_id=did, strategy=strategy, chunk_size=1000, overlap=0, chunk_ids=chunk_ids
    )


def prompt(pid: str, name: str, content: str, project_id: str | None = None, mode: str = "") -> PromptSaved:
    return PromptSaved(
        prompt_id=pid,
        name=name,
        content=content,
        content_hash=f"sha-{content}",
        project_id=project_id,
        mode=mode,
    )


def params(parameter_id: str, project_id: str = P1, **fields: Any) -> ParametersSaved:
    return ParametersSaved(parameter_id=parameter_id, project_id=project_id, parameters=fields)


TREE = [
    Category(
        name="Cardiology",
        description="the heart",
        children=[Category(name="Arrhythmia"), Category(name="Heart failure")],
    ),
    Category(name="Endocrinology", children=[Category(name="Diabetes", children=[Category(name="Type 1")])]),
    Category(name="Other"),
]


def scenario() -> list[Event]:
    """Every event type the two projections fold, in a plausible order, two projects."""
    return [
        project(P1, "medical", "clinical notes"),
        doc("d1"),
        chunk("c1", "d1", 0, heading="Intro"),
        chunk("c2", "d1", 1),
        chunked("d1", ["c1", "c2"]),
        JobSubmitted(job_id="j1", kind="generate", request={"project_id": P1, "datasets_per_chunk": 3}),
        project(P2, "legal"),
        doc("d2", pid=P2),
        TaxonomyCreated(taxonomy_id="t1", project_id=P1, name="specialties", categories=TREE),
        prompt("pr1", "qa", "Ask about {chunk}"),
        JobStarted(job_id="j1"),
        params("par1", purpose="training", audience="students"),
        doc("d3"),
        chunk("c3", "d3", 0),
        chunked("d3", ["c3"]),
        JobSubmitted(job_id="j2", kind="regenerate", dataset_id="ds-9"),
        JobCompleted(job_id="j1", result={"dataset_id": "ds-1", "entries_count": 6}),
        chunk("c4", "d1", 0, strategy="characters", text="all of d1"),
        chunked("d1", ["c4"], strategy="characters"),  # re-chunked: c4 replaces c1 and c2
        prompt("pr2", "qa", "Ask carefully about {chunk}"),
        TaxonomyCreated(taxonomy_id="t2", project_id=P1, name="specialties", categories=TREE[:1]),
        params("par2", purpose="evaluation", audience="doctors"),
        JobStarted(job_id="j2"),
        JobFailed(job_id="j2", error="quota exceeded"),
        JobSubmitted(job_id="j3", kind="generate-evaluation"),
        chunk("c5", "d2", 0, pid=P2),  # a crash before DocumentChunked: no current set for d2
        JobCancelled(job_id="j3", reason="user"),
        JobSubmitted(job_id="j4", kind="generate"),
    ]


def state(rm: ReadModel) -> dict[str, bytes]:
    with rm.lock:
        return {p.name: msgspec.msgpack.encode(p.snapshot_state()) for p in (rm.projects, rm.jobs)}


def views(rm: ReadModel) -> list[Any]:
    """What the accessors show, as builtins: a readable diff when states differ."""
    pr, jb = rm.projects, rm.jobs
    out: list[Any] = [pr.projects(), pr.taxonomies(), pr.prompts(), jb.jobs(), jb.unfinished()]
    for p in pr.projects():
        out += [pr.documents(p.id), pr.chunks(p.id), pr.latest_parameters(p.id), pr.prompts(p.id)]
    return msgspec.to_builtins(out)


def assert_same(a: ReadModel, b: ReadModel) -> None:
    assert (a.seq, a.offset) == (b.seq, b.offset)
    assert views(a) == views(b)
    assert state(a) == state(b)


# --- registration ------------------------------------------------------------------------------------------


def test_registered_in_the_standard_read_model(tmp_path: Path) -> None:
    names = [p.name for p in standard_projections()]
    assert "projects" in names and "jobs" in names
    rm = ReadModel.open(tmp_path)
    assert isinstance(rm.projects, Projects) and rm.projects is rm.get(Projects) is rm["projects"]
    assert isinstance(rm.jobs, Jobs) and rm.jobs is rm.get(Jobs) is rm["jobs"]
    assert rm.projects.projects() == [] and rm.jobs.jobs() == [] and rm.jobs.unfinished() == []


# --- projects and documents ----------------------------------------------------------------------------------


def test_projects_in_creation_order_by_id_and_by_name(tmp_path: Path) -> None:
    append(tmp_path, project(P2, "legal", "contracts"), project(P1, "medical"), project("p-3", "medical"))
    append(tmp_path, project(P2, "renamed"))  # a repeat of an id changes nothing
    pr = open_rm(tmp_path).projects
    assert ids(pr.projects()) == [P2, P1, "p-3"]
    p2 = pr.project(P2)
    assert p2 is not None and (p2.name, p2.description) == ("legal", "contracts")
    assert p2.created_at.endswith("Z") and p2.created_seq == 1
    assert pr.project("nope") is None
    assert pr.project_by_name("medical").id == P1  # type: ignore[union-attr]  # the first with that name
    assert pr.project_by_name("renamed") is None


def test_documents_by_project_id_and_hash(tmp_path: Path) -> None:
    append(
        tmp_path,
        project(P1),
        project(P2, "other"),
        doc("d1", filename="a.md"),
        doc("d2", pid=P2, content_hash="h-d1"),  # the same content in another project is another document
        doc("d3"),
    )
    pr = open_rm(tmp_path).projects
    assert ids(pr.documents(P1)) == ["d1", "d3"] and ids(pr.documents(P2)) == ["d2"]
    assert pr.documents("nope") == []
    d1 = pr.document("d1")
    assert d1 is not None
    assert (d1.project_id, d1.filename, d1.content_hash, d1.media_type) == (
        P1,
        "a.md",
        "h-d1",
        "text/markdown",
    )
    assert (d1.size, d1.chars, d1.extractor, d1.pages) == (100, 90, "markdown", None)
    assert d1.chunk_ids == [] and d1.strategy is None and d1.chunkings == 0
    assert pr.document("nope") is None
    assert pr.document_by_hash(P1, "h-d1").id == "d1"  # type: ignore[union-attr]
    assert pr.document_by_hash(P2, "h-d1").id == "d2"  # type: ignore[union-attr]
    assert pr.document_by_hash(P1, "h-unknown") is None
    assert (pr.project(P1).documents, pr.project(P2).documents) == (2, 1)  # type: ignore[union-attr]


def test_reingesting_the_same_content_is_a_no_op(tmp_path: Path) -> None:
    append(tmp_path, project(), doc("d1", content_hash="same"), chunk("c1", "d1", 0), chunked("d1", ["c1"]))
    # a racing second ingest of the same file (another id, same hash), and a repeat of the first id
    append(tmp_path, doc("d1-again", content_hash="same"), doc("d1", content_hash="other"))
    append(tmp_path, chunk("cx", "d1-again", 0), chunked("d1-again", ["cx"]))
    pr = open_rm(tmp_path).projects
    assert ids(pr.documents(P1)) == ["d1"]
    assert pr.document("d1").content_hash == "same"  # type: ignore[union-attr]
    assert pr.document("d1-again") is None
    assert ids(pr.chunks(P1)) == ["c1"]
    assert pr.chunk("cx") is not None  # created, so kept, but in no current set
    p = pr.project(P1)
    assert p is not None and (p.documents, p.chunks) == (1, 1)


def test_documents_before_their_project_are_counted_once_it_exists(tmp_path: Path) -> None:
    append(tmp_path, doc("d1"), chunk("c1", "d1", 0), chunked("d1", ["c1"]), project())
    pr = open_rm(tmp_path).projects
    p = pr.project(P1)
    assert p is not None and (p.documents, p.chunks) == (1, 1)
    assert ids(pr.chunks(P1)) == ["c1"]


# --- chunks ----------------------------------------------------------------------------------------------------


def test_chunks_in_document_order_then_index(tmp_path: Path) -> None:
    append(
        tmp_path,
        project(),
        doc("d1"),
        doc("d2"),
        # d2 chunked first, and its chunks listed out of index order
        chunk("b1", "d2", 1),
        chunk("b0", "d2", 0),
        chunked("d2", ["b1", "b0"]),
        chunk("a0", "d1", 0, heading="Intro > Scope", text="alpha", start=0),
        chunk("a1", "d1", 1),
        chunked("d1", ["a0", "a1"]),
    )
    pr = open_rm(tmp_path).projects
    assert ids(pr.chunks(P1)) == ["a0", "a1", "b0", "b1"]
    assert ids(pr.document_chunks("d2")) == ["b0", "b1"] and pr.document_chunks("nope") == []
    a0 = pr.chunk("a0")
    assert a0 is not None
    assert (a0.document_id, a0.project_id, a0.index, a0.start, a0.end) == ("d1", P1, 0, 0, 5)
    assert (a0.text, a0.heading, a0.strategy, a0.length) == ("alpha", "Intro > Scope", "paragraphs", 5)
    assert pr.chunk("a1").heading is None  # type: ignore[union-attr]
    assert pr.chunk("nope") is None
    d2 = pr.document("d2")
    assert d2 is not None and d2.chunk_ids == ["b0", "b1"] and d2.strategy == "paragraphs"
    assert (d2.chunk_size, d2.overlap, d2.chunkings) == (1000, 0, 1) and d2.chunked_at is not None
    assert pr.project(P1).chunks == 4  # type: ignore[union-attr]
    assert pr.chunks("nope") == []


def test_rechunking_replaces_the_current_chunk_set(tmp_path: Path) -> None:
    append(tmp_path, project(), doc("d1"), doc("d2"))
    append(
        tmp_path,
        chunk("p0", "d1", 0),
        chunk("p1", "d1", 1),
        chunk("p2", "d1", 2),
        chunked("d1", ["p0", "p1", "p2"]),
    )
    append(tmp_path, chunk("q0", "d2", 0), chunked("d2", ["q0"]))
    rm = open_rm(tmp_path)
    assert ids(rm.projects.chunks(P1)) == ["p0", "p1", "p2", "q0"]
    assert rm.projects.project(P1).chunks == 4  # type: ignore[union-attr]
    append(
        tmp_path,
        chunk("t0", "d1", 0, strategy="tokens"),
        chunk("t1", "d1", 1, strategy="tokens"),
        DocumentChunked(
            project_id=P1,
            document_id="d1",
            strategy="tokens",
            chunk_size=256,
            overlap=32,
            chunk_ids=["t0", "t1"],
        ),
    )
    assert rm.catch_up() == 3
    pr = rm.projects
    assert ids(pr.chunks(P1)) == ["t0", "t1", "q0"]  # d1's new set, still before d2's
    d1 = pr.document("d1")
    assert d1 is not None and (d1.strategy, d1.chunk_size, d1.overlap, d1.chunkings) == ("tokens", 256, 32, 2)
    assert pr.project(P1).chunks == 3  # type: ignore[union-attr]
    assert pr.chunk("p1") is not None and pr.chunk("p1").strategy == "paragraphs"  # type: ignore[union-attr]
    # chunking again with the first strategy's chunks brings them back
    append(tmp_path, chunked("d1", ["p0", "p1", "p2"]))
    rm.catch_up()
    assert ids(rm.projects.chunks(P1)) == ["p0", "p1", "p2", "q0"]
    assert rm.projects.project(P1).chunks == 4  # type: ignore[union-attr]


def test_crash_before_document_chunked_leaves_no_partial_set(tmp_path: Path) -> None:
    append(
        tmp_path,
        project(),
        doc("d1"),
        chunk("c0", "d1", 0),
        chunk("c1", "d1", 1),
        chunked("d1", ["c0", "c1"]),
    )
    append(tmp_path, doc("d2"), chunk("n0", "d2", 0), chunk("n1", "d2", 1))  # killed before DocumentChunked
    # and d1 re-chunked, killed half way: its old set stays current
    append(tmp_path, chunk("r0", "d1", 0, strategy="markdown"))
    pr = open_rm(tmp_path).projects
    assert ids(pr.chunks(P1)) == ["c0", "c1"]
    assert pr.document_chunks("d2") == [] and pr.document("d2").chunk_ids == []  # type: ignore[union-attr]
    assert pr.chunk("n0") is not None and pr.chunk("r0") is not None
    assert pr.project(P1).chunks == 2  # type: ignore[union-attr]
    # the resumed ingest finishes: now d2 has its set
    append(tmp_path, chunk("n0", "d2", 0), chunk("n1", "d2", 1), chunked("d2", ["n0", "n1"]))
    pr = open_rm(tmp_path).projects
    assert ids(pr.chunks(P1)) == ["c0", "c1", "n0", "n1"]
    assert pr.project(P1).chunks == 4  # type: ignore[union-attr]


def test_document_chunked_ignores_ids_of_unknown_or_foreign_chunks(tmp_path: Path) -> None:
    append(
        tmp_path,
        project(),
        doc("d1"),
        doc("d2"),
        chunk("x", "d2", 0),
        chunk("c0", "d1", 0),
        chunked("d1", ["c0", "never-created", "x", "c0"]),
        chunked("unknown-doc", ["x"]),
    )
    pr = open_rm(tmp_path).projects
    assert ids(pr.chunks(P1)) == ["c0"]
    assert pr.project(P1).chunks == 1  # type: ignore[union-attr]


# --- taxonomies ---------------------------------------------------------------------------------------------------


def test_taxonomies_nested_latest_by_name(tmp_path: Path) -> None:
    append(
        tmp_path,
        project(),
        project(P2, "other"),
        TaxonomyCreated(
            taxonomy_id="t1", project_id=P1, name="specialties", categories=TREE, description="v1"
        ),
        TaxonomyCreated(
            taxonomy_id="t2", project_id=P2, name="areas", categories=[Category(name="Contracts")]
        ),
        TaxonomyCreated(
            taxonomy_id="t3", project_id=P1, name="audiences", categories=[Category(name="Students")]
        ),
    )
    pr = open_rm(tmp_path).projects
    assert ids(pr.taxonomies()) == ["t1", "t2", "t3"]
    assert ids(pr.taxonomies(P1)) == ["t1", "t3"] and ids(pr.taxonomies("nope")) == []
    t1 = pr.taxonomy(P1, "specialties")
    assert t1 is not None and (t1.id, t1.project_id, t1.description) == ("t1", P1, "v1")
    cardio = t1.categories[0]
    assert (cardio.name, cardio.description) == ("Cardiology", "the heart")
    assert [c.name for c in cardio.children] == ["Arrhythmia", "Heart failure"]
    assert t1.categories[1].children[0].children[0].name == "Type 1"
    assert flat_categories(t1) == [
        "Cardiology > Arrhythmia",
        "Cardiology > Heart failure",
        "Endocrinology > Diabetes > Type 1",
        "Other",
    ]
    assert flat_categories(TREE, sep="/")[0] == "Cardiology/Arrhythmia"
    assert flat_categories([]) == []
    assert pr.taxonomy(P2, "specialties") is None  # names are per project
    # a new version of a (project, name) supersedes the old one and moves to the end
    append(
        tmp_path,
        TaxonomyCreated(
            taxonomy_id="t4", project_id=P1, name="specialties", categories=[Category(name="Only")]
        ),
        TaxonomyCreated(taxonomy_id="t1", project_id=P1, name="specialties", categories=[]),  # an id repeated
    )
    pr = open_rm(tmp_path).projects
    assert pr.taxonomy(P1, "specialties").id == "t4"  # type: ignore[union-attr]
    assert ids(pr.taxonomies()) == ["t2", "t3", "t4"]
    assert flat_categories(pr.taxonomy(P1, "specialties")) == ["Only"]  # type: ignore[arg-type]
    assert pr.taxonomy_by_id("t1").categories == TREE  # type: ignore[union-attr]  # the old one is kept
    assert pr.taxonomy_by_id("nope") is None


# --- prompts ------------------------------------------------------------------------------------------------------


def test_prompt_versions_and_scopes(tmp_path: Path) -> None:
    append(
        tmp_path,
        project(),
        prompt("a1", "qa", "v1 {chunk}", mode="default"),
        prompt("b1", "summary", "sum {chunk}"),
        prompt("a2", "qa", "v2 {chunk}"),
        prompt("a2-same", "qa", "v2 {chunk}"),  # the same content again: no new version
        prompt("a1", "qa", "renamed id repeat"),  # an id repeated: nothing
        prompt("own1", "qa", "project's own {chunk}", project_id=P1),
        prompt("a3", "qa", "v1 {chunk}"),  # back to the first content: a new version
    )
    pr = open_rm(tmp_path).projects
    assert [(p.id, p.version) for p in pr.prompt_versions("qa")] == [
        ("a1", 1),
        ("a2", 2),
        ("own1", 1),
        ("a3", 3),
    ]
    assert ids(pr.prompt_versions("qa", P1)) == ["own1"]
    assert pr.prompt_versions("nope") == []
    a1 = pr.prompt("a1")
    assert a1 is not None
    assert (a1.name, a1.content, a1.content_hash, a1.mode, a1.project_id) == (
        "qa",
        "v1 {chunk}",
        "sha-v1 {chunk}",
        "default",
        None,
    )
    assert pr.prompt("a2-same") is None and pr.prompt("nope") is None
    assert pr.prompt_by_name("qa").id == "a3"  # type: ignore[union-attr]  # the latest saved, any scope
    assert pr.prompt_by_name("qa", P1).id == "own1"  # type: ignore[union-attr]  # the project's own wins there
    assert pr.prompt_by_name("summary", P1).id == "b1"  # type: ignore[union-attr]  # else the global one
    assert pr.prompt_by_name("summary", "other-project").id == "b1"  # type: ignore[union-attr]
    assert pr.prompt_by_name("nope") is None and pr.prompt_by_name("nope", P1) is None
    assert ids(pr.prompts()) == ["b1", "own1", "a3"]  # current versions, in the order they became current
    assert ids(pr.prompts(P1)) == ["b1", "own1"]  # its own, and the globals it does not override
    assert ids(pr.prompts("other-project")) == ["b1", "a3"]


# --- parameters -------------------------------------------------------------------------------------------------------


def test_latest_parameters_win_and_every_save_is_kept(tmp_path: Path) -> None:
    append(
        tmp_path,
        project(),
        project(P2, "other"),
        params("par1", purpose="training", audience="students", negativity_ratio=0.1),
        params("par2", project_id=P2, purpose="qa"),
        params("par3", purpose="evaluation", audience="doctors", domain="medicine"),
        params("par1", purpose="repeat of an id"),
    )
    pr = open_rm(tmp_path).projects
    latest = pr.latest_parameters(P1)
    assert latest is not None and latest.id == "par3" and latest.project_id == P1
    assert latest.parameters == {"purpose": "evaluation", "audience": "doctors", "domain": "medicine"}
    assert latest.created_at.endswith("Z") and latest.created_seq == 5
    assert pr.latest_parameters(P2).id == "par2"  # type: ignore[union-attr]
    assert pr.latest_parameters("nope") is None
    old = pr.parameters("par1")
    assert (
        old is not None
        and old.parameters["negativity_ratio"] == 0.1
        and old.parameters["purpose"] == "training"
    )
    assert pr.parameters("nope") is None
    assert ids(pr.parameter_history(P1)) == ["par1", "par3"]


# --- jobs -------------------------------------------------------------------------------------------------------------


def test_job_lifecycle(tmp_path: Path) -> None:
    append(tmp_path, JobSubmitted(job_id="j1", kind="generate", request={"project_id": P1, "concurrency": 2}))
    rm = open_rm(tmp_path)
    j = rm.jobs.job("j1")
    assert j is not None
    assert (j.id, j.kind, j.request, j.dataset_id, j.status) == (
        "j1",
        "generate",
        {"project_id": P1, "concurrency": 2},
        None,
        JOB_PENDING,
    )
    assert j.submitted_at.endswith("Z") and j.started_at is None and j.finished_at is None
    assert (j.starts, j.result, j.error, j.finished) == (0, None, None, False)
    append(tmp_path, JobStarted(job_id="j1"))
    rm.catch_up()
    j = rm.jobs.job("j1")
    assert j is not None and j.status == JOB_RUNNING and j.starts == 1 and j.started_at is not None
    first_start = j.started_at
    append(tmp_path, JobStarted(job_id="j1", attempt=2))  # a restarted server resumed it
    rm.catch_up()
    j = rm.jobs.job("j1")
    assert j is not None and j.status == JOB_RUNNING and j.starts == 2
    assert j.first_started_at == first_start and j.started_at is not None and j.started_at >= first_start
    append(tmp_path, JobCompleted(job_id="j1", result={"dataset_id": "ds-1", "entries_count": 9}))
    rm.catch_up()
    j = rm.jobs.job("j1")
    assert j is not None and j.status == JOB_COMPLETED and j.finished
    assert j.result == {"dataset_id": "ds-1", "entries_count": 9}
    assert j.dataset_id == "ds-1"  # learnt from the result
    assert j.finished_at is not None and j.error is None
    assert rm.jobs.job("nope") is None


def test_a_result_written_before_the_one_lifecycle_reads_with_its_tokens(tmp_path: Path) -> None:
    """`dset datasets generate` once recorded results without ``tokens``; they read as every job's do now."""
    append(tmp_path, JobSubmitted(job_id="old", kind="generate", request={}),
           JobCompleted(job_id="old", result={"dataset_id": "ds-1", "prompt_tokens": 120, "completion_tokens": 30}),
           JobSubmitted(job_id="new", kind="generate", request={}),
           JobCompleted(job_id="new", result={"dataset_id": "ds-1", "prompt_tokens": 1, "tokens": 7}))
    rm = ReadModel.open(tmp_path)
    old, new = rm.jobs.job("old"), rm.jobs.job("new")
    assert old is not None and old.result is not None and old.result["tokens"] == 150
    assert new is not None and new.result is not None and new.result["tokens"] == 7  # as written


def test_terminal_states_are_final(tmp_path: Path) -> None:
    append(
        tmp_path,
        JobSubmitted(job_id="done", kind="generate", dataset_id="ds-x"),
        JobStarted(job_id="done"),
        JobCompleted(job_id="done", result={"dataset_id": "ds-other", "n": 1}),
        JobSubmitted(job_id="bad", kind="generate"),
        JobStarted(job_id="bad"),
        JobFailed(job_id="bad", error="quota exceeded"),
        JobSubmitted(job_id="gone", kind="regenerate"),
        JobCancelled(job_id="gone", reason="user asked"),
    )
    before = msgspec.to_builtins(open_rm(tmp_path).jobs.jobs())
    for job_id in ("done", "bad", "gone"):
        append(
            tmp_path,
            JobStarted(job_id=job_id, attempt=2),
            JobCompleted(job_id=job_id, result={"again": True}),
            JobFailed(job_id=job_id, error="late"),
            JobCancelled(job_id=job_id, reason="late"),
            JobSubmitted(job_id=job_id, kind="other", request={"x": 1}),
        )
    jb = open_rm(tmp_path).jobs
    assert msgspec.to_builtins(jb.jobs()) == before
    done, bad, gone = jb.job("done"), jb.job("bad"), jb.job("gone")
    assert done is not None and bad is not None and gone is not None
    assert (done.status, done.result, done.dataset_id, done.starts) == (
        JOB_COMPLETED,
        {"dataset_id": "ds-other", "n": 1},
        "ds-x",
        1,
    )
    assert (bad.status, bad.error, bad.result) == (JOB_FAILED, "quota exceeded", None)
    assert (gone.status, gone.cancel_reason, gone.starts, gone.started_at) == (
        JOB_CANCELLED,
        "user asked",
        0,
        None,
    )
    assert gone.finished_at is not None
    assert jb.unfinished() == []


def test_events_for_a_job_never_submitted_are_ignored(tmp_path: Path) -> None:
    append(
        tmp_path,
        JobStarted(job_id="ghost"),
        JobCompleted(job_id="ghost"),
        JobFailed(job_id="ghost2", error="x"),
    )
    jb = open_rm(tmp_path).jobs
    assert jb.jobs() == [] and jb.job("ghost") is None and jb.unfinished() == []


def test_jobs_listing_filters_and_unfinished(tmp_path: Path) -> None:
    append(
        tmp_path,
        JobSubmitted(job_id="j1", kind="generate"),
        JobSubmitted(job_id="j2", kind="regenerate", dataset_id="ds-1"),
        JobSubmitted(job_id="j3", kind="generate-evaluation"),
        JobSubmitted(job_id="j4", kind="generate"),
        JobStarted(job_id="j3"),
        JobStarted(job_id="j1"),
        JobCompleted(job_id="j1"),
        JobCancelled(job_id="j4"),
    )
    jb = open_rm(tmp_path).jobs
    assert ids(jb.jobs()) == ["j4", "j3", "j2", "j1"]  # newest first
    assert ids(jb.jobs(kind="generate")) == ["j4", "j1"]
    assert ids(jb.jobs(status=JOB_RUNNING)) == ["j3"]
    assert ids(jb.jobs(status=JOB_PENDING)) == ["j2"]
    assert ids(jb.jobs(status=JOB_COMPLETED, kind="generate")) == ["j1"]
    assert jb.jobs(status=JOB_CANCELLED, kind="regenerate") == []
    assert jb.job("j4").cancel_reason == ""  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="status must be one of"):
        jb.jobs(status="done")
    # what a restarted server resumes: pending and running, in submission order
    assert ids(jb.unfinished()) == ["j2", "j3"]
    assert [j.status for j in jb.unfinished()] == [JOB_PENDING, JOB_RUNNING]


# --- the key property: scratch == incremental == snapshot + tail ----------------------------------------------------


def test_rebuild_equals_incremental_equals_snapshot(tmp_path: Path) -> None:
    events = scenario()
    live = ReadModel.open(tmp_path)
    cuts = (0, 1, 5, 9, 14, 17, 21, len(events))
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        append(tmp_path, *events[lo:hi])
        assert live.catch_up() == hi - lo
        if hi == 14:
            live.save_snapshot()
    scratch = open_rm(tmp_path)
    from_snapshot = ReadModel.open(tmp_path)
    assert from_snapshot.snapshot_used and from_snapshot.snapshot_seq == 14
    assert_same(scratch, live)
    assert_same(scratch, from_snapshot)
    # the scenario ends where the docstrings say it does
    pr, jb = scratch.projects, scratch.jobs
    assert ids(pr.chunks(P1)) == ["c4", "c3"] and pr.chunks(P2) == []
    assert pr.project(P1).chunks == 2 and pr.project(P2).documents == 1  # type: ignore[union-attr]
    assert pr.taxonomy(P1, "specialties").id == "t2"  # type: ignore[union-attr]
    assert pr.prompt_by_name("qa").id == "pr2"  # type: ignore[union-attr]
    assert pr.latest_parameters(P1).id == "par2"  # type: ignore[union-attr]
    assert [(j.id, j.status) for j in jb.jobs()] == [
        ("j4", JOB_PENDING),
        ("j3", JOB_CANCELLED),
        ("j2", JOB_FAILED),
        ("j1", JOB_COMPLETED),
    ]
    assert ids(jb.unfinished()) == ["j4"]
    # a snapshot saved by a model that came from a snapshot holds the same state again
    from_snapshot.save_snapshot()
    again = ReadModel.open(tmp_path)
    assert again.snapshot_used and again.snapshot_seq == len(events)
    assert_same(scratch, again)
    # and the past: as_of the snapshot's seq equals a rebuild that stopped there
    assert_same(live.as_of(14), scratch.as_of(14))
    past = live.as_of(14)  # c3 created, d3's DocumentChunked not yet: not in the set
    assert ids(past.projects.chunks(P1)) == ["c1", "c2"] and past.projects.chunk("c3") is not None


_PROJECTS = [P1, P2]
_DOCS = ["d1", "d2", "d3"]
_CHUNKS = ["c0", "c1", "c2", "c3"]


@st.composite
def _event(draw: st.DrawFn) -> Event:
    pid = draw(st.sampled_from(_PROJECTS))
    did = draw(st.sampled_from(_DOCS))
    cid = draw(st.sampled_from(_CHUNKS))
    job = draw(st.sampled_from(["j1", "j2", "j3"]))
    n = draw(st.integers(0, 2))
    return draw(
        st.sampled_from(
            [
                project(pid, f"name-{n}"),
                doc(did, pid, content_hash=f"h{n}"),
                chunk(cid, did, draw(st.integers(0, 3)), pid=pid, text=f"t{n}"),
                chunked(did, draw(st.lists(st.sampled_from(_CHUNKS), max_size=4)), pid=pid),
                TaxonomyCreated(
                    taxonomy_id=f"t{cid}", project_id=pid, name=f"tax{n}", categories=TREE[: n + 1]
                ),
                prompt(
                    f"pr-{cid}-{did}", f"name{n}", f"content {cid}", project_id=draw(st.none() | st.just(pid))
                ),
                params(f"par-{cid}", project_id=pid, n=n),
                JobSubmitted(job_id=job, kind=draw(st.sampled_from(["generate", "regenerate"]))),
                JobStarted(job_id=job),
                JobCompleted(job_id=job, result={"dataset_id": f"ds-{n}"}),
                JobFailed(job_id=job, error="boom"),
                JobCancelled(job_id=job),
            ]
        )
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(_event(), min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=4),
    snap_at=st.integers(0, 40),
)
def test_property_rebuild_incremental_snapshot_agree(
    events: list[Event], cuts: list[int], snap_at: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        snap_at = min(snap_at, len(events))
        scratch, live, from_snapshot = three_ways(data, events, cuts, snap_at)
        assert_same(scratch, live)
        assert_same(scratch, from_snapshot)
        # the counts on project views agree with the lists they summarise
        pr = scratch.projects
        for p in pr.projects():
            assert p.documents == len(pr.documents(p.id))
            assert p.chunks == len(pr.chunks(p.id))
        # and a second snapshot round trip keeps the state byte for byte
        from_snapshot.save_snapshot()
        assert_same(scratch, ReadModel.open(data))
