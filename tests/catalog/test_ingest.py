"""Ingest: real .txt, .md, .html, .pdf (fpdf2) and .docx (python-docx) files made here, into the log and back.

Covers the core (dsetlog.catalog: projects, documents) and the `dset ingest/projects/taxonomy/prompts/parameters` commands,
the latter as real processes (``python -m dsetlog``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import docx
import msgspec
import pytest
from helpers import make_image_pdf, make_pdf

from dsetlog.catalog.chunking import chunk_text
from dsetlog.catalog.documents import (
    DEFAULT_CHUNKING,
    chunk_id_for,
    document_id_for,
    ingest_file,
    resolve_chunking,
)
from dsetlog.catalog.errors import IngestError, NotFoundError, TooLargeError
from dsetlog.catalog.extract import content_hash, extract_text
from dsetlog.catalog.projects import (
    create_project,
    create_taxonomy,
    load_taxonomy_file,
    parameters_from,
    project_id_for,
    save_parameters,
    save_prompt,
    to_categories,
)
from dsetlog.prompts.parameters import ProjectParameters
from dsetlog.store.events import Category, ChunkCreated, DocumentChunked, DocumentIngested, ParametersSaved
from dsetlog.store.log import LOG_NAME, EventLog
from projections.projects import flat_categories
from projections.readmodel import ReadModel

ROOT = Path(__file__).resolve().parents[2]

PDF_SENTENCES = [
    "The mitochondria produce most of the chemical energy of the cell.",
    "Ribosomes translate messenger RNA into chains of amino acids.",
    "The Golgi apparatus packages proteins into vesicles for transport.",
]

MARKDOWN = """\
# Field guide

Birds of the northern forest, and how to tell them apart.

## Woodpeckers

The black woodpecker drums loudly on dead trunks in early spring.

The great spotted woodpecker has a red patch under its tail.

### Calls

A sharp "kik" note carries far through the trees.

## Owls

The tawny owl hunts at night and nests in tree holes.
"""

TEXT = "\n\n".join(
    f"Paragraph {i} tells how sample number {i} was weighed, labelled and stored at four degrees." for i in range(40)
)

HTML = """<!doctype html><html><head><title>x</title><script>var hidden = 1;</script></head><body>
<h1>Harbour rules</h1><p>Boats must moor at the east pier after sunset.</p>
<h2>Fuel</h2><p>Refuelling is allowed only between six and nine in the morning.</p>
</body></html>"""


# --- fixtures and file makers -------------------------------------------------------------------


class Env:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.log = EventLog.in_dir(data)
        self.rm = ReadModel.open(data)

    def events(self, kind: type | None = None) -> list:
        evs = [rec.event for rec in self.log.read()]
        return evs if kind is None else [e for e in evs if isinstance(e, kind)]

    @property
    def size(self) -> int:
        return (self.data / LOG_NAME).stat().st_size

    def project(self, name: str = "demo") -> str:
        return create_project(self.log, self.rm, name=name).id


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "data")
    yield e
    e.log.close()


def make_docx(path: Path) -> Path:
    document = docx.Document()
    document.add_heading("Lab safety", level=1)
    document.add_paragraph("Goggles are worn at every bench, at all times.")
    document.add_heading("Spills", level=2)
    document.add_paragraph("Acid spills are neutralised with sodium bicarbonate before wiping.")
    document.save(str(path))
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def check_offsets(env: Env, path: Path, document_id: str) -> None:
    """Every current chunk is exactly text[start:end] of the document's extracted text."""
    text = extract_text(path).text
    chunks = env.rm.projects.document_chunks(document_id)
    assert chunks
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
    assert [c.index for c in chunks] == list(range(len(chunks)))


# --- documents ------------------------------------------------------------------------------------


def test_txt_is_ingested_in_one_batch_with_exact_offsets(env: Env, tmp_path: Path) -> None:
    pid = env.project()
    path = write(tmp_path / "samples.txt", TEXT)
    before = env.log.last_seq
    result = ingest_file(env.log, env.rm, project_id=pid, path=path, strategy="characters", chunk_size=500)
    assert result.status == "ingested" and not result.skipped
    assert result.chunks > 5
    assert (result.chunk_size, result.overlap) == (500, 50)  # the default overlap shrinks to a tenth
    assert result.document_id == document_id_for(pid, content_hash(path.read_bytes()))
    new = env.events()[before:]
    assert isinstance(new[0], DocumentIngested) and isinstance(new[-1], DocumentChunked)
    assert sum(isinstance(e, ChunkCreated) for e in new) == result.chunks == len(new) - 2
    assert new[-1].chunk_ids == [c.chunk_id for c in new[1:-1]]
    # one append_many: every event of the document shares one commit timestamp
    assert len({rec.ts for rec in env.log.read(after=before)}) == 1
    check_offsets(env, path, result.document_id)
    doc = env.rm.projects.document(result.document_id)
    assert doc is not None and doc.chars == len(TEXT) and doc.size == len(path.read_bytes())
    assert env.rm.projects.project(pid).chunks == result.chunks  # type: ignore[union-attr]


def test_reingesting_the_same_file_appends_nothing(env: Env, tmp_path: Path) -> None:
    pid = env.project()
    path = write(tmp_path / "samples.txt", TEXT)
    first = ingest_file(env.log, env.rm, project_id=pid, path=path)
    size, seq = env.size, env.log.last_seq
    again = ingest_file(env.log, env.rm, project_id=pid, path=path)
    assert again.skipped and again.status == "unchanged" and again.chunks == first.chunks
    assert again.document_id == first.document_id
    copy = write(tmp_path / "renamed.txt", TEXT)
    renamed = ingest_file(env.log, env.rm, project_id=pid, data=copy.read_bytes(), filename="renamed.txt")
    assert renamed.skipped and "samples.txt" in renamed.reason
    assert (env.size, env.log.last_seq) == (size, seq)
    assert len(env.rm.projects.documents(pid)) == 1


def test_the_same_file_in_another_project_is_its_own_document(env: Env, tmp_path: Path) -> None:
    a, b = env.project("a"), env.project("b")
    path = write(tmp_path / "samples.txt", TEXT)
    ra = ingest_file(env.log, env.rm, project_id=a, path=path)
    rb = ingest_file(env.log, env.rm, project_id=b, path=path)
    assert not rb.skipped and ra.document_id != rb.document_id


def test_markdown_strategy_keeps_heading_paths(env: Env, tmp_path: Path) -> None:
    pid = env.project()
    path = write(tmp_path / "guide.md", MARKDOWN)
    result = ingest_file(env.log, env.rm, project_id=pid, path=path, strategy="markdown")
    assert (result.chunk_size, result.overlap) == DEFAULT_CHUNKING["markdown"]
    chunks = env.rm.projects.document_chunks(result.document_id)
    assert [c.heading for c in chunks] == [
        "Field guide", "Field guide > Woodpeckers", "Field guide > Woodpeckers > Calls", "Field guide > Owls",
    ]  # fmt: skip
    assert "tawny owl" in chunks[-1].text
    check_offsets(env, path, result.document_id)


def test_html_headings_become_heading_paths_and_scripts_are_dropped(env: Env, tmp_path: Path) -> None:
    pid = env.project()
    path = write(tmp_path / "harbour.html", HTML)
    result = ingest_file(env.log, env.rm, project_id=pid, path=path, strategy="markdown")
    chunks = env.rm.projects.document_chunks(result.document_id)
    assert [c.heading for c in chunks] == ["Harbour rules", "Harbour rules > Fuel"]
    assert "east pier" in chunks[0].text and "six and nine" in chunks[1].text
    assert not any("hidden" in c.text for c in chunks)
    assert env.rm.projects.document(result.document_id).media_type == "text/html"  # type: ignore[union-attr]
    check_offsets(env, path, result.document_id)


def test_pdf_sentences_come_through(env: Env, tmp_path: Path) -> None:
    pid = env.project()
    path = make_pdf(tmp_path / "cell.pdf", PDF_SENTENCES)
    result = ingest_file(env.log, env.rm, project_id=pid, path=path, strategy="paragraphs", chunk_size=80,
                         overlap=0)  # fmt: skip
    texts = [c.text for c in env.rm.projects.document_chunks(result.document_id)]
    assert texts == PDF_SENTENCES  # one page per sentence, a paragraph each, none fits with another in 80
    doc = env.rm.projects.document(result.document_id)
    assert doc is not None and doc.pages == 3 and doc.extractor.startswith("pypdf")
    check_offsets(env, path, result.document_id)


def test_docx_headings_and_paragraphs(env: Env, tmp_path: Path) -> None:
    pid = env.project()
    path = make_docx(tmp_path / "safety.docx")
    result = ingest_file(env.log, env.rm, project_id=pid, path=path, strategy="markdown")
    chunks = env.rm.projects.document_chunks(result.document_id)
    assert [c.heading for c in chunks] == ["Lab safety", "Lab safety > Spills"]
    assert "sodium bicarbonate" in chunks[1].text
    check_offsets(env, path, result.document_id)


def test_tokens_strategy_counts_tokens(env: Env, tmp_path: Path) -> None:
    pid = env.project()
    path = write(tmp_path / "samples.txt", TEXT)
    result = ingest_file(env.log, env.rm, project_id=pid, path=path, strategy="tokens", chunk_size=50, overlap=5)
    text = extract_text(path).text
    expected = chunk_text(text, strategy="tokens", chunk_size=50, overlap=5)
    got = env.rm.projects.document_chunks(result.document_id)
    assert [(c.start, c.end) for c in got] == [(c.start, c.end) for c in expected]


def test_another_strategy_rechunks_without_reingesting(env: Env, tmp_path: Path) -> None:
    pid = env.project()
    path = write(tmp_path / "guide.md", MARKDOWN)
    first = ingest_file(env.log, env.rm, project_id=pid, path=path)  # paragraphs
    old_ids = list(env.rm.projects.document(first.document_id).chunk_ids)  # type: ignore[union-attr]
    second = ingest_file(env.log, env.rm, project_id=pid, path=path, strategy="characters", chunk_size=120)
    assert second.status == "rechunked" and not second.skipped
    assert second.document_id == first.document_id
    assert "paragraphs 2000/1" in second.reason and "characters 120/12" in second.reason
    assert len(env.events(DocumentIngested)) == 1
    assert len(env.events(DocumentChunked)) == 2
    doc = env.rm.projects.document(first.document_id)
    assert doc is not None and doc.strategy == "characters" and doc.chunk_size == 120
    assert set(doc.chunk_ids).isdisjoint(old_ids)
    assert env.rm.projects.chunks(pid) == env.rm.projects.document_chunks(doc.id)
    check_offsets(env, path, doc.id)
    # back to the first settings: the chunks are in the log already, only the DocumentChunked is new
    chunk_events = len(env.events(ChunkCreated))
    third = ingest_file(env.log, env.rm, project_id=pid, path=path)
    assert third.status == "rechunked"
    assert len(env.events(ChunkCreated)) == chunk_events
    assert env.rm.projects.document(doc.id).chunk_ids == old_ids  # type: ignore[union-attr]
    # and the same settings once more: nothing
    seq = env.log.last_seq
    assert ingest_file(env.log, env.rm, project_id=pid, path=path).skipped
    assert env.log.last_seq == seq


def test_chunk_ids_are_deterministic(tmp_path: Path) -> None:
    path = write(tmp_path / "guide.md", MARKDOWN)
    got = []
    for name in ("one", "two"):
        e = Env(tmp_path / name)
        pid = e.project()
        result = ingest_file(e.log, e.rm, project_id=pid, path=path, strategy="markdown")
        got.append(list(e.rm.projects.document(result.document_id).chunk_ids))  # type: ignore[union-attr]
        assert got[-1][0] == chunk_id_for(result.document_id, "markdown", 2000, 0, 0)
        e.log.close()
    assert got[0] == got[1]


def test_ids_are_those_of_existing_logs() -> None:
    """The ids a log already holds must be found again: fixed inputs, the ids the first versions made."""
    assert project_id_for("handbook") == "proj_cbd098834e9c"
    assert document_id_for("proj_x", "ab" * 32) == "doc_487b67edff85aa59"
    assert chunk_id_for("doc_1", "paragraphs", 2000, 1, 7) == "chunk_2f8a81bfc342a6ac"
    assert [chunk_id_for("doc_1", "tokens", 400, 40, i) for i in (10, 11)] == [
        "chunk_d91c119fd867197c", "chunk_9a0d7b8b14318ef7"]


def test_random_ids_keep_their_shape(env: Env) -> None:
    pid = env.project()
    tax = create_taxonomy(env.log, env.rm, project_id=pid, name="t", categories=["A"]).id
    prompt = save_prompt(env.log, env.rm, name="p", content="Write {n} items from {chunk}").id
    params = save_parameters(env.log, env.rm, project_id=pid, params=ProjectParameters(
        purpose="p", audience="a", dataset_format="jsonl"))
    assert [re.fullmatch(r"[a-z]+_[0-9a-f]{12}", i) is not None for i in (tax, prompt, params)] == [True] * 3
    assert (tax[:4], prompt[:7], params[:7]) == ("tax_", "prompt_", "params_")


def test_upload_bytes_are_ingested_like_the_file(env: Env, tmp_path: Path) -> None:
    pid = env.project()
    path = make_pdf(tmp_path / "cell.pdf", PDF_SENTENCES)
    result = ingest_file(env.log, env.rm, project_id=pid, data=path.read_bytes(), filename="../../etc/cell.pdf")
    assert result.filename == "cell.pdf"  # a client's path is never kept
    assert result.content_hash == content_hash(path.read_bytes())
    assert ingest_file(env.log, env.rm, project_id=pid, path=path).skipped


# --- crash mid-ingest -----------------------------------------------------------------------------


def test_a_partial_batch_shows_no_chunks_and_the_next_ingest_completes_it(env: Env, tmp_path: Path) -> None:
    """DocumentIngested and some ChunkCreated without their DocumentChunked: what a crash can leave."""
    pid = env.project()
    path = write(tmp_path / "samples.txt", TEXT)
    raw = path.read_bytes()
    did = document_id_for(pid, content_hash(raw))
    text = extract_text(path).text
    size, overlap = resolve_chunking("characters", 400)
    chunks = chunk_text(text, strategy="characters", chunk_size=size, overlap=overlap)
    partial = [
        DocumentIngested(project_id=pid, document_id=did, filename="samples.txt", content_hash=content_hash(raw),
                         media_type="text/plain", size=len(raw), chars=len(text)),
        *[ChunkCreated(project_id=pid, document_id=did, chunk_id=chunk_id_for(did, "characters", size, overlap, c.index),
                       index=c.index, start=c.start, end=c.end, text=c.text, strategy="characters")
          for c in chunks[:3]],
    ]  # fmt: skip
    env.log.append_many(partial)
    env.rm.catch_up()
    assert env.rm.projects.chunks(pid) == [] and env.rm.projects.document_chunks(did) == []
    before = len(env.events())
    result = ingest_file(env.log, env.rm, project_id=pid, path=path, strategy="characters", chunk_size=400)
    assert result.status == "completed" and result.document_id == did and result.chunks == len(chunks)
    new = env.events()[before:]
    assert sum(isinstance(e, ChunkCreated) for e in new) == len(chunks) - 3  # the 3 already there are kept
    assert isinstance(new[-1], DocumentChunked) and not any(isinstance(e, DocumentIngested) for e in new)
    check_offsets(env, path, did)


@pytest.mark.parametrize("cut", ["after_document", "mid_chunk", "mid_chunked", "before_newline"])
def test_a_torn_ingest_batch_leaves_nothing_visible(tmp_path: Path, cut: str) -> None:
    """Cut the log inside the batch as a crash during the write would; reopen; ingest again."""
    data = tmp_path / "data"
    path = write(tmp_path / "guide.md", MARKDOWN * 3)
    e = Env(data)
    pid = e.project()
    start = e.size
    ingest_file(e.log, e.rm, project_id=pid, path=path, strategy="markdown")
    e.log.close()
    log_path = data / LOG_NAME
    lines = log_path.read_bytes()[start:].splitlines(keepends=True)
    ends = [start + sum(len(x) for x in lines[: i + 1]) for i in range(len(lines))]
    offset = {
        "after_document": ends[0],
        "mid_chunk": ends[1] + len(lines[2]) // 2,
        "mid_chunked": ends[-2] + len(lines[-1]) // 2,
        "before_newline": ends[-1] - 1,
    }[cut]
    os.truncate(log_path, offset)
    e = Env(data)  # opening cuts the torn last line aside
    try:
        assert e.rm.projects.chunks(pid) == []
        docs = e.rm.projects.documents(pid)
        assert len(docs) == 1 and docs[0].chunk_ids == []
        result = ingest_file(e.log, e.rm, project_id=pid, path=path, strategy="markdown")
        assert result.status == "completed"
        assert len(e.rm.projects.chunks(pid)) == result.chunks
        check_offsets(e, path, result.document_id)
        assert len(e.events(DocumentIngested)) == 1
    finally:
        e.log.close()


def test_two_writers_ingesting_the_same_file_at_once_make_one_document(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = write(tmp_path / "guide.md", MARKDOWN)
    pid = Env(data).project()
    envs = [Env(data) for _ in range(4)]
    barrier = threading.Barrier(len(envs))
    results = []

    def work(e: Env) -> None:
        barrier.wait()
        results.append(ingest_file(e.log, e.rm, project_id=pid, path=path, strategy="markdown"))

    threads = [threading.Thread(target=work, args=(e,)) for e in envs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.document_id for r in results}) == 1
    rm = ReadModel.open(data)
    assert len(rm.projects.documents(pid)) == 1
    assert len(rm.projects.chunks(pid)) == results[0].chunks == 4
    for e in envs:
        e.log.close()


# --- refused input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make", "match"),
    [
        ("notes.rtf", lambda p: p.write_text("{\\rtf1 hello}"), "unsupported file type '.rtf'"),
        ("empty.txt", lambda p: p.write_bytes(b""), "empty"),
        ("blank.md", lambda p: p.write_text("  \n\n\t\n"), "no text"),
        ("locked.pdf", lambda p: make_pdf(p, PDF_SENTENCES, owner_password="o", user_password="u"), "encrypted"),
        ("scan.pdf", make_image_pdf, "no text layer"),
        ("broken.pdf", lambda p: p.write_bytes(b"%PDF-1.4 this is not really a pdf"), "not a readable PDF"),
        ("broken.docx", lambda p: p.write_bytes(b"PK not a zip"), "not a readable .docx"),
    ],
)
def test_unreadable_input_is_a_clear_error_and_appends_nothing(
    env: Env, tmp_path: Path, name: str, make, match: str  # noqa: ANN001
) -> None:
    pid = env.project()
    path = tmp_path / name
    make(path)
    seq = env.log.last_seq
    with pytest.raises(IngestError, match=match) as info:
        ingest_file(env.log, env.rm, project_id=pid, path=path)
    assert name in str(info.value)
    assert env.log.last_seq == seq


def test_files_over_the_limit_are_refused(env: Env, tmp_path: Path) -> None:
    pid = env.project()
    path = write(tmp_path / "big.txt", "word " * 1000)
    with pytest.raises(TooLargeError, match="over the 0.0 MB limit"):
        ingest_file(env.log, env.rm, project_id=pid, path=path, max_bytes=1000)
    with pytest.raises(TooLargeError):
        ingest_file(env.log, env.rm, project_id=pid, data=path.read_bytes(), filename="big.txt", max_bytes=1000)
    assert ingest_file(env.log, env.rm, project_id=pid, path=path, max_bytes=5000).status == "ingested"


def test_chunking_settings_are_validated_with_the_choices(env: Env, tmp_path: Path) -> None:
    pid = env.project()
    path = write(tmp_path / "a.txt", TEXT)
    with pytest.raises(IngestError, match="choose one of: characters, tokens, markdown, paragraphs"):
        ingest_file(env.log, env.rm, project_id=pid, path=path, strategy="sentences")
    with pytest.raises(IngestError, match="less than chunk_size 100"):
        ingest_file(env.log, env.rm, project_id=pid, path=path, strategy="characters", chunk_size=100, overlap=100)
    with pytest.raises(IngestError, match="greater than 0"):
        ingest_file(env.log, env.rm, project_id=pid, path=path, chunk_size=0)
    assert resolve_chunking("tokens") == (400, 40)
    assert resolve_chunking("paragraphs", 1) == (1, 0)
    assert resolve_chunking("characters", overlap=0) == (2000, 0)


def test_unknown_project_and_bad_arguments(env: Env, tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", TEXT)
    with pytest.raises(NotFoundError, match="no project with id 'proj_nope'"):
        ingest_file(env.log, env.rm, project_id="proj_nope", path=path)
    pid = env.project()
    with pytest.raises(IngestError, match="either a file path or the file's bytes"):
        ingest_file(env.log, env.rm, project_id=pid, path=path, data=b"x", filename="a.txt")
    with pytest.raises(IngestError, match="needs a filename"):
        ingest_file(env.log, env.rm, project_id=pid, data=b"hello")
    with pytest.raises(IngestError, match="cannot read"):
        ingest_file(env.log, env.rm, project_id=pid, path=tmp_path / "missing.txt")


# --- projects ----------------------------------------------------------------------------------------


def test_create_project_is_idempotent_by_name(env: Env) -> None:
    first = create_project(env.log, env.rm, name="  medical ", description="clinical notes")
    assert first.created and first.name == "medical" and first.id.startswith("proj_")
    seq = env.log.last_seq
    again = create_project(env.log, env.rm, name="medical", description="other words")
    assert not again.created and again.id == first.id and again.description == "clinical notes"
    assert env.log.last_seq == seq
    with pytest.raises(IngestError, match="must not be empty"):
        create_project(env.log, env.rm, name="   ")


# --- taxonomies -------------------------------------------------------------------------------------


def test_taxonomy_with_nested_categories_from_mixed_input(env: Env) -> None:
    pid = env.project()
    cats = [
        "Anatomy",
        {"name": "Cardiology", "description": "heart", "children": [
            {"name": "Arrhythmia"}, Category(name="Heart failure", children=[Category(name="Acute")])]},
    ]  # fmt: skip
    made = create_taxonomy(env.log, env.rm, project_id=pid, name="topics", categories=cats, description="d")
    assert made.created
    tax = env.rm.projects.taxonomy(pid, "topics")
    assert tax is not None and tax.categories[1].description == "heart"
    assert flat_categories(tax) == ["Anatomy", "Cardiology > Arrhythmia", "Cardiology > Heart failure > Acute"]
    seq = env.log.last_seq
    same = create_taxonomy(env.log, env.rm, project_id=pid, name="topics", categories=cats, description="d")
    assert not same.created and same.id == made.id and env.log.last_seq == seq
    newer = create_taxonomy(env.log, env.rm, project_id=pid, name="topics", categories=["Anatomy", "Surgery"])
    assert newer.created and newer.id != made.id
    assert [t.id for t in env.rm.projects.taxonomies(pid)] == [newer.id]


@pytest.mark.parametrize(
    ("categories", "match"),
    [
        ([], "no categories"),
        (["A", " "], "empty name"),
        (["Heart", "heart"], "appears twice"),
        ([{"name": "A", "children": ["x", "x"]}], "'x' under A appears twice"),
        ([{"name": "A", "colour": "red"}], "unknown field"),
        ([{"name": "A > B"}], "may not contain"),
        ([42], "must be a name or an object"),
        ("Anatomy", "must be a list"),
    ],
)
def test_taxonomy_validation(env: Env, categories, match: str) -> None:  # noqa: ANN001
    pid = env.project()
    with pytest.raises(IngestError, match=match):
        create_taxonomy(env.log, env.rm, project_id=pid, name="t", categories=categories)


def test_taxonomy_files_json_and_indented_text(tmp_path: Path) -> None:
    text = write(tmp_path / "topics.txt", """\
# medical topics
Cardiology: the heart
    Arrhythmia
    - Heart failure: when the pump weakens
\tValves
Oncology

  Staging
""")  # fmt: skip
    spec = load_taxonomy_file(text)
    assert spec.name is None
    assert flat_categories(spec.categories) == [
        "Cardiology > Arrhythmia", "Cardiology > Heart failure", "Cardiology > Valves", "Oncology > Staging",
    ]  # fmt: skip
    assert spec.categories[0].description == "the heart"
    assert spec.categories[0].children[1].description == "when the pump weakens"
    js = tmp_path / "topics.json"
    js.write_text(json.dumps({"name": "med", "description": "d", "categories": [
        {"name": "Cardiology", "description": "heart", "children": [{"name": "Arrhythmia"}]}]}))  # fmt: skip
    spec = load_taxonomy_file(js)
    assert (spec.name, spec.description) == ("med", "d")
    assert spec.categories == to_categories([{"name": "Cardiology", "description": "heart", "children": ["Arrhythmia"]}])
    bad = write(tmp_path / "bad.txt", "A\n    B\n  C\n")
    with pytest.raises(IngestError, match="line 3"):
        load_taxonomy_file(bad)
    broken = write(tmp_path / "broken.json", '{"name": "x", "categories": [')
    with pytest.raises(IngestError, match="not valid JSON"):
        load_taxonomy_file(broken)


# --- prompts -------------------------------------------------------------------------------------------


def test_prompts_are_versioned_by_content_hash(env: Env) -> None:
    a = save_prompt(env.log, env.rm, name="my_qa", content="Ask {n} questions about:\n{chunk}", mode="qa")
    assert a.created and a.version == 1 and a.mode == "default" and a.unknown_placeholders == []
    seq = env.log.last_seq
    same = save_prompt(env.log, env.rm, name="my_qa", content="Ask {n} questions about:\n{chunk}", mode="qa")
    assert not same.created and same.id == a.id and same.version == 1 and env.log.last_seq == seq
    b = save_prompt(env.log, env.rm, name="my_qa", content="Write {n} hard questions on {topic}.")
    assert b.created and b.version == 2 and b.content_hash != a.content_hash
    assert b.unknown_placeholders == ["topic"]
    back = save_prompt(env.log, env.rm, name="my_qa", content="Ask {n} questions about:\n{chunk}")
    assert back.created and back.version == 3 and back.content_hash == a.content_hash
    assert env.rm.projects.prompt_by_name("my_qa").id == back.id  # type: ignore[union-attr]
    pid = env.project()
    own = save_prompt(env.log, env.rm, name="my_qa", content="Project's own {chunk}", project_id=pid)
    assert own.version == 1 and own.project_id == pid
    assert env.rm.projects.prompt_by_name("my_qa", pid).id == own.id  # type: ignore[union-attr]
    with pytest.raises(IngestError, match="unknown generation mode"):
        save_prompt(env.log, env.rm, name="x", content="y", mode="poetry")
    with pytest.raises(IngestError, match="empty"):
        save_prompt(env.log, env.rm, name="x", content="  ")
    with pytest.raises(NotFoundError):
        save_prompt(env.log, env.rm, name="x", content="y", project_id="proj_missing")


# --- parameters -------------------------------------------------------------------------------------


def test_parameters_every_field_saved_and_latest_wins(env: Env) -> None:
    pid = env.project()
    first = ProjectParameters(purpose="fine-tuning", audience="nurses", dataset_format="jsonl")
    second = parameters_from({
        "purpose": "medical_qa_training", "audience": "medical_students", "extraction_rules": "clinical_guidelines",
        "dataset_format": "parquet", "question_style": "analytical", "answer_style": "concise",
        "negativity_ratio": 0.25, "data_augmentation": "synonym_replacement", "custom_audience": "3rd years",
        "custom_purpose": "boards", "complexity_level": "advanced", "domain": "medicine",
    })  # fmt: skip
    id1 = save_parameters(env.log, env.rm, project_id=pid, params=first)
    id2 = save_parameters(env.log, env.rm, project_id=pid, params=second)
    assert id1 != id2
    latest = env.rm.projects.latest_parameters(pid)
    assert latest is not None and latest.id == id2
    assert latest.parameters == msgspec.structs.asdict(second)
    saved = env.events(ParametersSaved)[0].parameters
    assert set(saved) == {f.name for f in msgspec.structs.fields(ProjectParameters)}  # every field, None too
    with pytest.raises(IngestError, match="negativity_ratio"):
        parameters_from({"purpose": "p", "audience": "a", "dataset_format": "jsonl", "negativity_ratio": 2})
    with pytest.raises(IngestError, match="purpose"):
        parameters_from({"audience": "a", "dataset_format": "jsonl"})
    with pytest.raises(NotFoundError):
        save_parameters(env.log, env.rm, project_id="proj_missing", params=first)


# --- the command line -------------------------------------------------------------------------------


def dset(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DSET_DATA_DIR": str(data)}
    proc = subprocess.run([sys.executable, "-m", "dsetlog", *args], capture_output=True, text=True, env=env,
                          cwd=data.parent, input=stdin, timeout=120)  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_cli_ingest_reports_each_file_and_goes_on_past_failures(tmp_path: Path) -> None:
    data = tmp_path / "data"
    docs = tmp_path / "docs"
    write(docs / "guide.md", MARKDOWN)
    write(docs / "sub" / "notes.txt", TEXT)
    write(docs / "harbour.html", HTML)
    make_pdf(docs / "cell.pdf", PDF_SENTENCES)
    make_docx(docs / "safety.docx")
    make_pdf(docs / "locked.pdf", PDF_SENTENCES, owner_password="o", user_password="u")
    write(docs / "empty.txt", "")
    write(docs / "ignored.rtf", "not walked")
    write(docs / ".hidden" / "secret.md", "# not walked")
    odd = write(tmp_path / "odd.rtf", "{\\rtf1}")
    proc = dset(data, "ingest", str(docs), str(odd), str(tmp_path / "missing.md"), "--project", "lab")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "created project lab" in out
    for name in ("guide.md", "notes.txt", "harbour.html", "cell.pdf", "safety.docx"):
        assert any(name in line and "ingested" in line for line in out.splitlines()), out
    assert "locked.pdf: error: the PDF is encrypted" in out
    assert "empty.txt: error: the file is empty" in out
    assert "odd.rtf: error: unsupported file type '.rtf'" in out
    assert "missing.md: error: no such file or directory" in out
    assert "secret.md" not in out and "ignored.rtf" not in out
    assert "5 ingested, 4 failed" in out
    assert "4 file(s) failed" in proc.stderr
    rm = ReadModel.open(data)
    project = rm.projects.project_by_name("lab")
    assert project is not None and project.documents == 5
    size = (data / LOG_NAME).stat().st_size

    again = dset(data, "ingest", str(docs / "guide.md"), str(docs / "sub"), "--project", "lab")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count(": unchanged (already ingested") == 2 and "2 unchanged; 0 chunks written" in again.stdout
    assert (data / LOG_NAME).stat().st_size == size

    rechunk = dset(data, "ingest", str(docs / "guide.md"), "--project", "lab", "--strategy", "markdown")
    assert rechunk.returncode == 0 and "re-chunked into 4 chunks" in rechunk.stdout

    show = dset(data, "projects", "show", "lab")
    assert show.returncode == 0 and "5 documents" in show.stdout
    assert "guide.md" in show.stdout and "4 chunks (markdown 2000/0)" in show.stdout
    listed = dset(data, "projects", "list", "--json")
    assert json.loads(listed.stdout)["projects"][0]["documents"] == 5
    shown = json.loads(dset(data, "projects", "show", "lab", "--json").stdout)
    assert {d["filename"]: d["chunks"] for d in shown["documents"]}["guide.md"] == 4


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "data"
    doc = write(tmp_path / "a.txt", TEXT)
    proc = dset(data, "ingest", str(doc), "--project", "nope", "--no-create")
    assert proc.returncode == 2 and "no project 'nope'" in proc.stderr
    proc = dset(data, "ingest", str(doc), "--project", "p", "--strategy", "characters", "--chunk-size", "10",
                "--overlap", "10")  # fmt: skip
    assert proc.returncode == 2 and "less than chunk_size 10" in proc.stderr
    proc = dset(data, "ingest", str(doc), "--project", "p", "--strategy", "sentences")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = dset(data, "projects", "show", "ghost")
    assert proc.returncode == 2 and "no project 'ghost'" in proc.stderr
    assert not (data / LOG_NAME).exists() or ReadModel.open(data).projects.projects() == []


def test_cli_taxonomy_prompts_and_parameters(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert dset(data, "projects", "create", "med").returncode == 0
    tax = write(tmp_path / "topics.txt", "Cardiology: the heart\n  Arrhythmia\nOncology\n")
    proc = dset(data, "taxonomy", "add", "--project", "med", "--name", "topics", str(tax))
    assert proc.returncode == 0 and "saved taxonomy topics" in proc.stdout and "3 categories" in proc.stdout
    again = dset(data, "taxonomy", "add", "--project", "med", "--name", "topics", str(tax))
    assert "unchanged" in again.stdout
    listed = json.loads(dset(data, "taxonomy", "list", "--json").stdout)["taxonomies"]
    assert [t["name"] for t in listed] == ["topics"] and listed[0]["categories"][0]["children"][0]["name"] == "Arrhythmia"
    bad = write(tmp_path / "bad.txt", "A\n    B\n  C\n")
    proc = dset(data, "taxonomy", "add", "--project", "med", str(bad))
    assert proc.returncode == 2 and "line 3" in proc.stderr

    prompt = write(tmp_path / "p.txt", "Write {n} questions for {audience}:\n{chunk}\n")
    first = dset(data, "prompts", "add", "my_qa", str(prompt), "--project", "med", "--mode", "qa")
    assert first.returncode == 0 and "version 1" in first.stdout
    assert "unchanged" in dset(data, "prompts", "add", "my_qa", str(prompt), "--project", "med").stdout
    second = dset(data, "prompts", "add", "my_qa", "-", "--project", "med", stdin="New {chunk} {oops}")
    assert "version 2" in second.stdout and "{oops}" in second.stderr
    rows = json.loads(dset(data, "prompts", "list", "--json", "--versions").stdout)["prompts"]
    assert [r["version"] for r in rows] == [1, 2]
    assert "my_qa v2" in dset(data, "prompts", "list").stdout

    missing = dset(data, "parameters", "set", "--project", "med", "--purpose", "fine-tuning")
    assert missing.returncode == 2 and "--audience, --dataset-format" in missing.stderr
    proc = dset(data, "parameters", "set", "--project", "med", "--purpose", "fine-tuning", "--audience", "nurses",
                "--dataset-format", "jsonl", "--negativity-ratio", "0.3", "--question-style", "analytical")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = dset(data, "parameters", "set", "--project", "med", "--domain", "medicine")  # the rest is kept
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(dset(data, "parameters", "show", "--project", "med", "--json").stdout)["parameters"]
    p = shown["parameters"]
    assert (p["purpose"], p["audience"], p["negativity_ratio"], p["question_style"], p["domain"]) == (
        "fine-tuning", "nurses", 0.3, "analytical", "medicine")  # fmt: skip
    history = json.loads(dset(data, "parameters", "show", "--project", "med", "--history", "--json").stdout)
    assert len(history["parameters"]) == 2
    bad = dset(data, "parameters", "set", "--project", "med", "--negativity-ratio", "1.5")
    assert bad.returncode == 2 and "negativity_ratio" in bad.stderr
    text = dset(data, "parameters", "show", "--project", "med").stdout
    assert "domain: medicine" in text
    events = Counter(type(rec.event).__name__ for rec in EventLog.in_dir(data).read())
    assert events["ParametersSaved"] == 2 and events["PromptSaved"] == 2 and events["TaxonomyCreated"] == 1
