"""Issue 11, items 5-7: hostile or careless inputs are refused in one clear line and let nothing in.

Uploads (filenames, .docx bombs, extraction limits, extraction slots), output_dir (reserved names, lengths,
symlinks out of the data dir, before any job is accepted) and `dset generate`'s questions file (devices,
FIFOs, size, UTF-16/32, read-only dirs). Real files, real symlinks, a real falcon.testing client, real
`dset` processes, a real 20 MB document.xml zipped here.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import io
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docx
import pytest
from falcon import testing

from api import catalog
from dsetlog.catalog.documents import MAX_FILENAME_BYTES
from dsetlog.catalog.extract import ExtractError, ExtractLimitError, ExtractLimits, extract_bytes
from dsetlog.generation.questions import normalize, read_questions, write_statuses
from dsetlog.simulator.server import Simulator
from dsetlog.store.events import DatasetCreated, EntryGenerated, Event, SlotQueued
from dsetlog.store.log import EventLog

API = "/api/v1"
ROOT = Path(__file__).resolve().parents[2]
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
PARAGRAPH = b"<w:p><w:r><w:t>The quick brown fox jumps over the lazy dog again.</w:t></w:r></w:p>"


# --- helpers ---------------------------------------------------------------------------------------------


def docx_with_body(body: bytes, *, declared: bool = True) -> bytes:
    """A real .docx (python-docx's own package) whose word/document.xml body is ``body``."""
    buf = io.BytesIO()
    docx.Document().save(buf)
    source = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in source.infolist():
            if info.filename == "word/document.xml":
                with z.open("word/document.xml", "w", force_zip64=True) as fh:
                    fh.write(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                             b'<w:document xmlns:w="' + W_NS.encode() + b'"><w:body>')
                    for start in range(0, len(body), 1 << 22):
                        fh.write(body[start : start + (1 << 22)])
                    fh.write(b"<w:sectPr/></w:body></w:document>")
            else:
                z.writestr(info, source.read(info))
    return out.getvalue()


def paragraphs(n_bytes: int) -> bytes:
    return PARAGRAPH * (n_bytes // len(PARAGRAPH))


def multipart(disposition: bytes, data: bytes) -> tuple[bytes, str]:
    boundary = b"dsetfaultsboundary"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; ' + disposition +
            b"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n")
    return body, "multipart/form-data; boundary=" + boundary.decode()


def assert_error(resp: Any, status: int, *words: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json
    assert set(body) == {"title", "description"}, body
    for word in words:
        assert word in body["description"], (word, body)
    return body


def last_seq(data: Path) -> int:
    with EventLog.in_dir(data) as log:
        return log.last_seq


def clean_env(data: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("DSET_")}
    env["PYTHONPATH"] = str(ROOT)
    if data is not None:
        env["DSET_DATA_DIR"] = str(data)
    return env


def dset(*args: str, cwd: Path, data: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "dsetlog", *args], capture_output=True, text=True,
                          env=clean_env(data), cwd=cwd, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def client(make_client: Callable[..., testing.TestClient], simulator: Simulator) -> testing.TestClient:
    return make_client(simulator_url=simulator.base_url)  # the worker is off: jobs are accepted, not run


def new_project(client: testing.TestClient, *, with_chunks: bool = False) -> str:
    project = client.simulate_post(f"{API}/projects", json={"name": "med"}).json["id"]
    if with_chunks:
        resp = client.simulate_post(f"{API}/projects/{project}/documents",
                                    json={"filename": "notes.md", "content": "# Insulin\n\nThe pancreas makes it."})
        assert resp.status_code == 201, resp.text
    return project


# --- 5. uploads -------------------------------------------------------------------------------------------


def test_a_nul_in_an_upload_filename_is_a_422_naming_the_field_and_appends_nothing(
        client: testing.TestClient, data: Path) -> None:
    project = new_project(client)
    url = f"{API}/projects/{project}/documents"
    before = last_seq(data)
    for disposition in (b'filename="notes\x00.md"', b"filename*=UTF-8''notes%00.md"):
        body, ctype = multipart(disposition, b"# Notes\n\nText.")
        assert_error(client.simulate_post(url, body=body, headers={"Content-Type": ctype}), 422, "file", "NUL")
    assert_error(client.simulate_post(url, json={"filename": "notes\x00.md", "content": "x"}), 422, "filename", "NUL")
    assert last_seq(data) == before
    assert not (data / "uploads").exists() or not any((data / "uploads").iterdir())


def test_a_long_upload_filename_is_stored_bounded_keeping_its_extension(client: testing.TestClient,
                                                                       data: Path) -> None:
    project = new_project(client)
    url = f"{API}/projects/{project}/documents"
    for i, name in enumerate(["a" * 300 + ".md", "é" * 240 + ".md", "../../" + "b" * 250 + ".md"]):
        body, ctype = multipart(f'filename="{name}"'.encode(), f"# Part {i}\n\nText {i}.".encode())
        resp = client.simulate_post(url, body=body, headers={"Content-Type": ctype})
        assert resp.status_code == 201, resp.text
        stored = resp.json["filename"]
        assert stored.endswith(".md") and "/" not in stored and len(stored.encode()) <= MAX_FILENAME_BYTES
        kept = data / "uploads" / resp.json["id"] / stored
        assert kept.read_text() == f"# Part {i}\n\nText {i}."
        rechunk = client.simulate_post(f"{url}/{resp.json['id']}/chunk", json={"strategy": "characters"})
        assert rechunk.status_code == 200, rechunk.text  # the kept original is found again by its stored name


def test_cli_ingest_of_a_file_with_a_long_name(tmp_path: Path, data: Path) -> None:
    path = tmp_path / ("n" * 250 + ".txt")
    path.write_text("One paragraph of notes.\n\nAnother one.")
    proc = dset("ingest", str(path), "--project", "p", cwd=tmp_path, data=data)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (kept,) = (data / "uploads").glob("*/*")
    assert kept.name.endswith(".txt") and len(kept.name.encode()) <= MAX_FILENAME_BYTES
    assert kept.read_bytes() == path.read_bytes()


def test_docx_with_20_mb_of_document_xml_is_extracted_in_seconds() -> None:
    body = paragraphs(20 * 2**20)
    data = docx_with_body(body)
    assert len(data) < 300_000  # a small file that unzips to 20 MB
    start = time.perf_counter()
    got = extract_bytes(data, "big.docx")
    elapsed = time.perf_counter() - start
    n = len(body) // len(PARAGRAPH)
    assert got.text.count("The quick brown fox") == n
    assert got.text.split("\n\n")[0] == "The quick brown fox jumps over the lazy dog again."
    assert elapsed < 20, f"{elapsed:.1f} s for 20 MB of document.xml"  # python-docx: ~14 s per MB here


def test_docx_text_matches_what_python_docx_read(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_heading("Report", level=0)
    document.add_heading("Risks", level=2)
    p = document.add_paragraph("Line one\tand a tab")
    p.add_run().add_break()
    p.add_run("line two")
    document.add_paragraph("Currency", style="List Bullet")
    table = document.add_table(rows=2, cols=3)
    for r in range(2):
        for c in range(3):
            table.cell(r, c).text = f"r{r}c{c}"
    table.cell(0, 0).merge(table.cell(0, 1))
    table.cell(0, 2).merge(table.cell(1, 2))
    buf = io.BytesIO()
    document.save(buf)
    assert extract_bytes(buf.getvalue(), "r.docx").text == (
        "# Report\n\n## Risks\n\nLine one\tand a tab\nline two\n\n- Currency\n\n"
        "r0c0 r0c1 | r0c0 r0c1 | r0c2 r1c2\nr1c0 | r1c1 | r0c2 r1c2")


def test_a_docx_bomb_is_refused_413_naming_the_limit(client: testing.TestClient, data: Path) -> None:
    project = new_project(client)
    before = last_seq(data)
    bomb = docx_with_body(b" " * (ExtractLimits().max_unzipped_bytes + 1))  # 100 MB of blanks, ~100 KB zipped
    resp = client.simulate_post(f"{API}/projects/{project}/documents",
                                json={"filename": "bomb.docx", "content_base64": base64.b64encode(bomb).decode()})
    assert_error(resp, 413, "word/document.xml", "max_unzipped_bytes")
    assert last_seq(data) == before


def test_extraction_limits_on_characters_time_and_dtd() -> None:
    data = docx_with_body(paragraphs(2 * 2**20))
    with pytest.raises(ExtractLimitError, match="max_chars") as info:
        extract_bytes(data, "a.docx", ExtractLimits(max_chars=10_000))
    assert info.value.limit == "max_chars"
    with pytest.raises(ExtractLimitError, match="max_unzipped_bytes"):
        extract_bytes(data, "a.docx", ExtractLimits(max_unzipped_bytes=2**20))
    big = docx_with_body(paragraphs(20 * 2**20))
    with pytest.raises(ExtractLimitError, match="max_seconds"):
        extract_bytes(big, "slow.docx", ExtractLimits(max_seconds=0.05))
    html = b"<p>word</p>" * 400_000
    with pytest.raises(ExtractLimitError, match="max_seconds"):
        extract_bytes(html, "slow.html", ExtractLimits(max_seconds=0.01))
    with pytest.raises(ExtractLimitError, match="max_input_bytes"):
        extract_bytes(b"x" * 2000, "a.txt", ExtractLimits(max_input_bytes=1000))
    buf = io.BytesIO()  # a document.xml with a DTD whose entities would expand (billion laughs)
    with zipfile.ZipFile(io.BytesIO(docx_with_body(b""))) as src, zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            content = src.read(info)
            if info.filename == "word/document.xml":
                content = (b'<?xml version="1.0"?><!DOCTYPE w:document [<!ENTITY a "aaaaaaaaaa">'
                           b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><w:document xmlns:w="' + W_NS.encode() +
                           b'"><w:body><w:p><w:r><w:t>&b;</w:t></w:r></w:p></w:body></w:document>')
            out.writestr(info, content)
    with pytest.raises(ExtractError, match="DTD"):
        extract_bytes(buf.getvalue(), "laughs.docx")


def test_cli_ingest_refuses_a_bomb_in_one_line_with_exit_2(tmp_path: Path, data: Path) -> None:
    bomb = tmp_path / "bomb.docx"
    bomb.write_bytes(docx_with_body(b" " * (3 * 2**20)))
    fine = tmp_path / "fine.md"
    fine.write_text("# Fine\n\nText.")
    proc = dset("ingest", str(bomb), str(fine), "--project", "p", "--max-unzipped-mb", "1", cwd=tmp_path, data=data)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if "bomb.docx" in ln]
    assert "refused" in line and "max_unzipped_bytes" in line and "--max-unzipped-mb" in line
    assert any("fine.md: ingested" in ln for ln in proc.stdout.splitlines())  # the others go on
    assert "refused for a limit" in proc.stderr
    slow = tmp_path / "slow.docx"
    slow.write_bytes(docx_with_body(paragraphs(20 * 2**20)))
    proc = dset("ingest", str(slow), "--project", "p", "--extract-timeout", "0.05", cwd=tmp_path, data=data)
    assert proc.returncode == 2 and "max_seconds" in proc.stdout and "--extract-timeout" in proc.stdout


def test_extractions_cannot_hold_every_request_thread(make_client: Callable[..., testing.TestClient],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "EXTRACTION_WAIT_SECONDS", 0.3)
    client = make_client()
    project = new_project(client)
    url = f"{API}/projects/{project}/documents"
    results: dict[int, Any] = {}

    def upload(i: int) -> None:  # ~2 s of parsing each: 4.5 MB of HTML
        html = (f"<h1>Upload {i}</h1>" + "<p>The <b>quick</b> brown <i>fox</i> jumps.</p>" * 100_000).encode()
        results[i] = client.simulate_post(url, json={"filename": f"u{i}.html",
                                                     "content_base64": base64.b64encode(html).decode()})

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    start = time.perf_counter()
    health = client.simulate_get(f"{API}/health")
    answered_in = time.perf_counter() - start
    for t in threads:
        t.join(120)
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [201, 201, 503, 503, 503, 503], statuses
    for r in results.values():
        if r.status_code == 503:
            assert_error(r, 503, "extracting")
            assert r.headers.get("Retry-After") == str(catalog.RETRY_AFTER_SECONDS)
    assert health.status_code == 200 and answered_in < 5, answered_in  # other requests are still answered


# --- 6. output_dir ----------------------------------------------------------------------------------------


BAD_OUTPUT_DIRS = ["x" * 300, "a\x00b", "events.jsonl", "locks/jobs.lock", "a/" * 1500, "uploads", "snapshots/s",
                   "tmp", "Events.JSONL.torn", ".hidden", "exports\nx"]


@pytest.mark.parametrize("output_dir", BAD_OUTPUT_DIRS, ids=lambda v: repr(v)[:24])
def test_a_bad_output_dir_is_a_422_before_the_job_is_accepted(client: testing.TestClient, data: Path,
                                                              output_dir: str) -> None:
    project = new_project(client, with_chunks=True)
    before = last_seq(data)
    resp = client.simulate_post(f"{API}/datasets/generate", json={"project_id": project, "output_dir": output_dir})
    assert_error(resp, 422, "output_dir")
    assert last_seq(data) == before  # nothing appended: no job, no dataset


def test_output_dir_symlinks_and_files_are_checked_where_they_lead(client: testing.TestClient, data: Path,
                                                                   tmp_path: Path) -> None:
    project = new_project(client, with_chunks=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (data / "exports").symlink_to(outside, target_is_directory=True)
    (data / "looks_fine").symlink_to(data / "uploads", target_is_directory=True)
    (data / "notes.txt").write_text("a file, not a folder")
    before = last_seq(data)
    url = f"{API}/datasets/generate"
    assert_error(client.simulate_post(url, json={"project_id": project, "output_dir": "exports"}), 422,
                 "output_dir", "outside the data directory")
    assert_error(client.simulate_post(url, json={"project_id": project, "output_dir": "exports/sub"}), 422,
                 "outside the data directory")
    assert_error(client.simulate_post(url, json={"project_id": project, "output_dir": "looks_fine"}), 422,
                 "output_dir", "uploads")
    assert_error(client.simulate_post(url, json={"project_id": project, "output_dir": "notes.txt/x"}), 422,
                 "output_dir", "not a folder")
    assert last_seq(data) == before
    ok = client.simulate_post(url, json={"project_id": project, "output_dir": "my_exports/run1"})
    assert ok.status_code == 200, ok.text
    assert not any(outside.iterdir())


def seed_dataset(data: Path, dataset_id: str = "dataset_x", n: int = 3) -> None:
    events: list[Event] = [DatasetCreated(dataset_id=dataset_id, name="x", kind="documents", source="s",
                                          params={"quality_threshold": 0.0})]
    for i in range(n):
        events.append(SlotQueued(dataset_id=dataset_id, item_id=f"slot_{i}", chunk_id="c", slot=i))
        events.append(EntryGenerated(dataset_id=dataset_id, item_id=f"slot_{i}", entry_id=f"entry_{i}",
                                     question=f"Q{i}?", answer=f"A{i}.", model="m", provider="simulated",
                                     simulated=True))
    with EventLog.in_dir(data) as log:
        log.append_many(events)


def test_dset_export_never_writes_through_a_symlink_planted_in_the_data_dir(tmp_path: Path, data: Path) -> None:
    seed_dataset(data)
    outside = tmp_path / "outside"
    outside.mkdir()
    (data / "exports").symlink_to(outside, target_is_directory=True)
    proc = dset("export", "dataset_x", cwd=tmp_path, data=data)  # the default --output-dir exports
    assert proc.returncode == 2 and "outside the data directory" in proc.stderr, proc.stderr
    proc = dset("export", "dataset_x", "--output-dir", str(data / "exports"), cwd=tmp_path, data=data)
    assert proc.returncode == 2 and "outside the data directory" in proc.stderr, proc.stderr
    (data / "mine").mkdir()
    (data / "mine" / "dataset_x").symlink_to(outside, target_is_directory=True)  # the dataset's own folder
    proc = dset("export", "dataset_x", "--output-dir", "mine", cwd=tmp_path, data=data)
    assert proc.returncode == 2 and "outside the data directory" in proc.stderr, proc.stderr
    link = tmp_path / "into_uploads"
    link.symlink_to(data / "uploads", target_is_directory=True)
    (data / "uploads").mkdir()
    proc = dset("export", "dataset_x", "--output-dir", str(link), cwd=tmp_path, data=data)
    assert proc.returncode == 2 and "uploads" in proc.stderr, proc.stderr
    assert not any(outside.iterdir()) and not any((data / "uploads").iterdir())
    # a folder the user names outside the data dir is theirs to name
    elsewhere = tmp_path / "elsewhere"
    proc = dset("export", "dataset_x", "--output-dir", str(elsewhere), "--format", "jsonl", cwd=tmp_path, data=data)
    assert proc.returncode == 0, proc.stderr
    assert len((elsewhere / "dataset_x" / "dataset.jsonl").read_text().splitlines()) == 3
    proc = dset("export", "dataset_x", "--output-dir", "fine", "--format", "jsonl", cwd=tmp_path, data=data)
    assert proc.returncode == 0 and (data / "fine" / "dataset_x" / "dataset.jsonl").is_file(), proc.stderr


def test_dset_datasets_generate_refuses_a_bad_output_dir_before_the_job(tmp_path: Path, data: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Insulin\n\nThe pancreas makes insulin.")
    assert dset("ingest", str(notes), "--project", "demo", cwd=tmp_path, data=data).returncode == 0
    before = last_seq(data)
    for bad in ("events.jsonl", "locks", "x" * 300):
        proc = dset("datasets", "generate", "--project", "demo", "--simulate", "--output-dir", bad, "--no-progress",
                    cwd=tmp_path, data=data)
        assert proc.returncode == 2 and "output_dir" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert last_seq(data) == before


# --- 7. dset generate's questions file --------------------------------------------------------------------


def test_generate_reads_regular_files_only_and_bounded(tmp_path: Path) -> None:
    fifo = tmp_path / "questions.csv"
    os.mkfifo(fifo)
    big = tmp_path / "big.csv"
    big.write_text("question\n" + "Why is the sky blue?\n" * 200)
    for path, words in (("/dev/zero", "character device"), (str(fifo), "FIFO"), (str(tmp_path), "directory")):
        start = time.perf_counter()
        proc = dset("generate", path, "--simulate", "--no-progress", cwd=tmp_path, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert time.perf_counter() - start < 30
    proc = dset("generate", str(big), "--simulate", "--no-progress", "--max-input-mb", "0.001", cwd=tmp_path)
    assert proc.returncode == 2 and "--max-input-mb" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()  # refused before the log was opened


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_questions_with_a_bom_are_read_and_written_back_in_kind(tmp_path: Path, codec: str) -> None:
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE, "utf-32-le": codecs.BOM_UTF32_LE,
           "utf-32-be": codecs.BOM_UTF32_BE}[codec]
    path = tmp_path / "q.csv"
    path.write_bytes(bom + "question,status\r\nWhat is café?,\r\nWhy is ice slippery?,\r\n".encode(codec))
    got = read_questions(path)
    assert [q.text for q in got.questions] == ["What is café?", "Why is ice slippery?"]
    assert write_statuses(path, {normalize("Why is ice slippery?")})
    raw = path.read_bytes()
    assert raw.startswith(bom)
    assert raw[len(bom):].decode(codec) == "question,status\r\nWhat is café?,\r\nWhy is ice slippery?,ERROR\r\n"


def test_generate_answers_a_utf16_csv(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_bytes(codecs.BOM_UTF16_LE + "question\nWhat is one?\nWhat is two?\n".encode("utf-16-le"))
    proc = dset("generate", str(path), "--simulate", "--sim-latency-ms", "1", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "What is two?" in (tmp_path / "dset_generator" / "output.csv").read_text()


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """A folder nobody may write to: a read-only tmpfs as root (chmod does not stop root), else mode 0555."""
    path.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
        try:
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=False)
    else:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)


def test_read_only_data_or_out_dir_is_one_line_naming_the_path(tmp_path: Path) -> None:
    q = tmp_path / "q.csv"
    q.write_text("question\nWhat is one?\n")
    with read_only_dir(tmp_path / "ro") as ro:
        for option, target in (("--data", ro / "data"), ("--out", ro / "out"), ("--data", ro)):
            proc = dset("generate", str(q), "--simulate", "--no-progress", option, str(target), cwd=tmp_path)
            assert proc.returncode == 2, proc.stderr
            (line,) = proc.stderr.strip().splitlines()
            assert option in line and str(target) in line and "cannot write" in line, line


def test_a_job_from_an_older_log_with_a_bad_output_dir_fails_saying_so(tmp_path: Path) -> None:
    """The API checks output_dir before it accepts a job; a job recorded before that check existed meets the
    same check when it exports, as a clear job failure instead of an OSError."""
    from dsetlog.export.datasets import export_dataset
    from dsetlog.paths import OutputDirError as DocGenError  # what export_dataset raises for output_dir
    from projections.readmodel import ReadModel

    data = tmp_path / "data"
    data.mkdir()
    rm = ReadModel.open(data)
    for bad in ("locks", "events.jsonl", "a/" * 40):
        with pytest.raises(DocGenError, match="output_dir"):
            export_dataset(rm, "ds_x", data_dir=data, output_dir=bad)
