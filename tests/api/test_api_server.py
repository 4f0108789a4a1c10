"""`dset serve` as a user runs it: a real waitress server in a subprocess, a real HTTP client, the simulator.

The whole review loop over HTTP (project, upload, generate, status, entries, edit, feedback, regenerate,
download), a clean stop that leaves a snapshot, and a server killed with SIGKILL in the middle of a job:
the next start resumes the job and finishes it with exactly one entry per work item.
"""

from __future__ import annotations

import io
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from harness import DSET, ROOT, Server, clean_env
from harness import pancreas_markdown as markdown
from helpers import append

from api.context import SEARCH_CHILD_BYTES
from dsetlog.store.events import DatasetCreated, EntryGenerated, JobStarted, QuestionQueued, SlotQueued
from dsetlog.store.log import EventLog

pytestmark = pytest.mark.slow


def multipart(file_name: str, data: bytes, **fields: str) -> tuple[bytes, str]:
    boundary = "----dsetserverboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
                 "Content-Type: text/markdown\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def entries_per_item(data: Path) -> Counter[str]:
    with EventLog.in_dir(data) as log:
        return Counter(r.event.item_id for r in log.read() if isinstance(r.event, EntryGenerated))


def test_the_review_loop_over_http(tmp_path: Path, servers: list[Server]) -> None:
    data = tmp_path / "data"
    server = Server(data, tmp_path / "server.log", "--simulate", "--sim-latency-ms", "5")
    servers.append(server)
    status, project, _ = server.call("POST", "/projects", {"name": "med"})
    assert status == 201
    body, ctype = multipart("notes.md", markdown(6).encode(), strategy="markdown")
    status, doc, _ = server.call("POST", f"/projects/{project['id']}/documents", raw=body, content_type=ctype)
    assert status == 201 and doc["chunks"] == 6, doc
    status, accepted, _ = server.call("POST", "/datasets/generate", {
        "project_id": project["id"], "concurrency": 2, "include_evaluation_sets": True, "quality_threshold": 0.0,
        "dataset_name": "medical_qa_dataset"})
    assert status == 200 and accepted["message"] == "Dataset generation started"
    done = server.wait_job(accepted["job_id"])
    assert done["status"] == "completed", done
    assert done["_progress_seen"] == sorted(done["_progress_seen"])  # progress only moves forward
    dataset_id = done["result"]["dataset_id"]
    assert done["result"]["entries_count"] == 18

    page = server.get(f"/datasets/{dataset_id}/entries?page=1&per_page=5&filter_quality=0.1&sort_by=quality")
    assert page["per_page"] == 5 and len(page["entries"]) == 5
    scores = [e["quality_score"] for e in page["entries"]]
    assert scores == sorted(scores, reverse=True)
    entry = page["entries"][0]
    status, edited, _ = server.call("PUT", f"/datasets/{dataset_id}/entries/{entry['id']}",
                                    {"answer": "Insulin lowers blood sugar.", "feedback": "shorter"})
    assert status == 200 and edited["message"] == f"Entry {entry['id']} updated successfully"
    status, fb, _ = server.call("POST", f"/datasets/{dataset_id}/feedback",
                                {"entry_ids": [entry["id"]], "feedback_type": "content_error", "rating": 1,
                                 "comments": "wrong organ"})
    assert status == 200 and fb["entries"][0]["flagged"]
    status, regen, _ = server.call("POST", f"/datasets/{dataset_id}/regenerate", {
        "entry_ids": [entry["id"]],
        "regeneration_config": {"improve_quality": True, "temperature": 0.5, "accept_lower": True}})
    assert status == 200
    assert server.wait_job(regen["job_id"])["status"] == "completed"
    now = server.get(f"/datasets/{dataset_id}/entries/{entry['id']}")
    assert now["revision"] == 3 and now["answer"] != "Insulin lowers blood sugar."  # generated, edited, regenerated
    history = server.get(f"/entries/{dataset_id}/{entry['id']}/history")
    assert [e["type"] for e in history["events"]].count("EntryEdited") == 1

    status, payload, headers = server.call("GET", f"/datasets/{dataset_id}/download")
    assert status == 200 and headers["content-type"] == "application/zip"
    assert headers["content-disposition"] == f'attachment; filename="{dataset_id}.zip"'
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        # the split files (beside them the dataset card, README.md)
        lines = sum(len(zf.read(n).splitlines()) for n in zf.namelist() if n.endswith(".jsonl"))
    assert lines == 18
    status, payload, headers = server.call("GET", f"/datasets/{dataset_id}/download?format_type=csv")
    assert headers["content-type"].startswith("application/zip")  # three splits: still a zip

    status, err, _ = server.call("GET", "/datasets/nope")
    assert status == 404 and set(err) == {"title", "description"}
    assert server.stop() == 0
    assert (data / "snapshots" / "readmodel.msgpack").exists()  # saved on the clean stop
    assert "Traceback" not in server.log_text()

    again = Server(data, tmp_path / "server2.log", "--simulate")
    servers.append(again)
    assert "from snapshot" in again.banner
    assert again.get(f"/datasets/{dataset_id}/entries/{entry['id']}")["revision"] == 3
    assert again.stop() == 0


def test_a_job_killed_with_sigkill_resumes_at_the_next_start(tmp_path: Path, servers: list[Server]) -> None:
    data = tmp_path / "data"
    slow = ("--simulate", "--sim-latency-ms", "250")
    server = Server(data, tmp_path / "server.log", *slow)
    servers.append(server)
    _, project, _ = server.call("POST", "/projects", {"name": "med"})
    _, doc, _ = server.call("POST", f"/projects/{project['id']}/documents",
                            {"filename": "notes.md", "content": markdown(30), "strategy": "markdown"})
    assert doc["chunks"] == 30
    _, accepted, _ = server.call("POST", "/datasets/generate", {"project_id": project["id"], "concurrency": 2,
                                                              "datasets_per_chunk": 2})
    job_id = accepted["job_id"]
    deadline = time.monotonic() + 60
    while sum(entries_per_item(data).values()) < 6:
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.05)
    status = server.get(f"/datasets/generate/{job_id}/status")
    assert status["status"] == "running" and 0 < status["progress"] < 100
    server.proc.kill()  # SIGKILL: no clean-up of any kind
    server.proc.wait(timeout=30)
    before = sum(entries_per_item(data).values())
    assert before < 60

    again = Server(data, tmp_path / "server2.log", *slow)
    servers.append(again)
    done = again.wait_job(job_id)
    assert done["status"] == "completed", done
    assert done["attempts"] == 2 and done["result"]["entries_count"] == 60
    per_item = entries_per_item(data)
    with EventLog.in_dir(data) as log:
        records = list(log.read())
    slots = {r.event.item_id for r in records if isinstance(r.event, SlotQueued)}
    assert set(per_item) == slots and len(slots) == 60
    assert set(per_item.values()) == {1}  # every slot exactly one entry
    assert [r.event.attempt for r in records if isinstance(r.event, JobStarted)] == [1, 2]
    assert again.stop() == 0
    assert "Traceback" not in again.log_text()


def test_a_non_loopback_host_needs_a_token(tmp_path: Path) -> None:
    proc = subprocess.run([*DSET, "serve", "--data", str(tmp_path / "d"), "--host", "0.0.0.0", "--port", "0"],
                          cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "DSET_API_TOKEN" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "d" / "events.jsonl").exists()  # refused before anything was opened


def test_the_token_is_required_over_http(tmp_path: Path, servers: list[Server]) -> None:
    token = "tok-0123456789abcdef"
    server = Server(tmp_path / "data", tmp_path / "server.log", env=clean_env(DSET_API_TOKEN=token))
    servers.append(server)
    status, body, headers = server.call("GET", "/datasets")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer") and set(body) == {"title", "description"}
    req = urllib.request.Request(server.base + "/datasets", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    assert server.stop() == 0
    assert token not in server.log_text()


def test_the_server_indexes_the_log_for_searches_in_a_child_process(tmp_path: Path, servers: list[Server]) -> None:
    data = tmp_path / "data"
    events: list[Any] = [DatasetCreated(dataset_id="ds", name="d")]
    for i in range(300):
        answer = f"answer {i} about {'zebras' if i % 7 == 0 else 'horses'} and more words " + "filler " * 600
        events += [QuestionQueued(dataset_id="ds", item_id=f"q{i}", question=f"question {i}?", row=i),
                   EntryGenerated(dataset_id="ds", item_id=f"q{i}", entry_id=f"e{i:03d}", question=f"question {i}?",
                                  answer=answer, quality_score=0.5)]
    append(data, *events)
    assert (data / "events.jsonl").stat().st_size > SEARCH_CHILD_BYTES  # a child's work, not a short tail
    server = Server(data, tmp_path / "server.log")
    servers.append(server)
    deadline = time.monotonic() + 60
    while (index := server.get("/health")["search_index"])["indexed"] < index["log_bytes"]:
        assert time.monotonic() < deadline and not index["off"], index
        time.sleep(0.2)
    # indexed by a child process, not by a thread holding the server's interpreter
    line = next(x for x in server.log_text().splitlines() if "indexing the log in process" in x)
    assert int(line.rsplit(" ", 1)[1]) != server.proc.pid
    assert (data / "snapshots" / "search" / "manifest.json").exists()
    page = server.get("/datasets/ds/entries?q=zebra&sort_by=position&per_page=100")
    assert [e["id"] for e in page["entries"]] == [f"e{i:03d}" for i in range(0, 300, 7)]
