"""The REST API through falcon.testing: every endpoint, the guide's shapes, errors, auth, jobs on the simulator.

Datasets for the read endpoints are written straight into a real log (so filters and sort orders can be
checked against known values); jobs run for real in the app's worker against the simulator on loopback.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest
from falcon import testing
from helpers import wait_job

from api.app import DsetApp
from dsetlog.simulator.server import Simulator
from dsetlog.store import contents as logtools
from dsetlog.store.events import (
    DatasetCreated,
    EntryGenerated,
    EntryRegenerated,
    EntryScored,
    EvaluationSetsCreated,
    Event,
    JobCancelled,
    JobStarted,
    QuestionQueued,
    SlotQueued,
)
from dsetlog.store.log import LOG_NAME, EventLog

API = "/api/v1"
DS = "dataset_seeded"
QDS = "ds_questions"
CATS = ("Cardiology", "Endocrinology", "Neurology", "")
DIFFS = ("beginner", "intermediate", "advanced", "expert")
N = 60


# --- helpers -------------------------------------------------------------------------------------------


def seeded_events(n: int = N, *, splits: bool = False) -> list[Event]:
    """A document dataset of n entries with known scores (ties included), categories and difficulties."""
    events: list[Event] = [DatasetCreated(dataset_id=DS, name="seeded", kind="documents", source="med",
                                          params={"generation_mode": "default", "quality_threshold": 0.0})]
    for i in range(n):
        item, entry = f"slot_{i:04d}", f"entry_{i:04d}"
        events.append(SlotQueued(dataset_id=DS, item_id=item, chunk_id="chunk_none", slot=i))
        events.append(EntryGenerated(
            dataset_id=DS, item_id=item, entry_id=entry, question=f"What is fact {i}?",
            answer=f"Fact {i} is about {'apples' if i % 5 == 0 else 'pears'}.", category=CATS[i % 4],
            model="sim-chat", provider="simulated", simulated=True, source_chunk="chunk_none",
            metadata={"chunk_length": 100 + i}))
        events.append(EntryScored(dataset_id=DS, entry_id=entry, quality_score=(i * 7 % 20) / 20,
                                  difficulty=DIFFS[i % 4] if i % 9 else ""))
    if splits:
        names = ("train", "validation", "test")
        events.append(EvaluationSetsCreated(dataset_id=DS, seed=0, ratios=[0.8, 0.1, 0.1],
                                            splits={f"entry_{i:04d}": names[i % 3] for i in range(n)}))
    return events


def seed(data: Path, events: list[Event]) -> range:
    with EventLog.in_dir(data) as log:
        return log.append_many(events)


def questions_dataset(data: Path, n: int = 3) -> list[str]:
    events: list[Event] = [DatasetCreated(dataset_id=QDS, name="q", kind="questions", source="q.csv")]
    for i in range(n):
        events.append(QuestionQueued(dataset_id=QDS, item_id=f"q_{i}", question=f"Why is the sky blue, part {i}?",
                                     row=i + 1))
        events.append(EntryGenerated(dataset_id=QDS, item_id=f"q_{i}", entry_id=f"entry_q{i}",
                                     question=f"Why is the sky blue, part {i}?", answer=f"Old answer {i}.",
                                     model="deepseek-reasoner", provider="simulated", simulated=True))
    seed(data, events)
    return [f"entry_q{i}" for i in range(n)]


def markdown(sections: int) -> str:
    return "\n\n".join(
        f"# Topic {i}\n\nThe pancreas makes insulin, which lowers blood sugar number {i}. Diabetes follows when "
        f"it fails, and symptom {i} is thirst. Patients {i} check their glucose daily."
        for i in range(sections))


def multipart(file_name: str, data: bytes, **fields: str) -> tuple[bytes, str]:
    boundary = "----dsettestboundary"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def events_of(data: Path, kind: type) -> list[Any]:
    with EventLog.in_dir(data) as log:
        return [r.event for r in log.read() if isinstance(r.event, kind)]


def assert_error(resp: Any, status: int, *words: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json
    assert set(body) == {"title", "description"}, body
    assert "Traceback" not in resp.text
    for word in words:
        assert word in body["description"], (word, body)


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture
def client(make_client: Callable[..., testing.TestClient]) -> testing.TestClient:
    return make_client()


@pytest.fixture
def seeded(data: Path, make_client: Callable[..., testing.TestClient]) -> testing.TestClient:
    seed(data, seeded_events())
    return make_client()


@pytest.fixture
def sim_client(make_client: Callable[..., testing.TestClient], simulator: Simulator) -> testing.TestClient:
    return make_client(simulator_url=simulator.base_url, start_worker=True)


def new_project(client: testing.TestClient, sections: int = 4, name: str = "med") -> str:
    project = client.simulate_post(f"{API}/projects", json={"name": name}).json
    resp = client.simulate_post(f"{API}/projects/{project['id']}/documents",
                                json={"filename": "notes.md", "content": markdown(sections), "strategy": "markdown"})
    assert resp.status_code == 201, resp.text
    return project["id"]


def generated(client: testing.TestClient, **fields: Any) -> tuple[str, dict[str, Any]]:
    project = new_project(client, fields.pop("sections", 4))
    resp = client.simulate_post(f"{API}/datasets/generate", json={"project_id": project, **fields})
    assert resp.status_code == 200, resp.text
    status = wait_job(client, resp.json["job_id"])
    assert status["status"] == "completed", status
    return status["result"]["dataset_id"], status


# --- the OpenAPI document ---------------------------------------------------------------------------------


def test_openapi_document_covers_every_route_and_schema(client: testing.TestClient) -> None:
    doc = client.simulate_get(f"{API}/openapi.json").json
    assert doc["openapi"].startswith("3.")
    app: DsetApp = client.app  # type: ignore[assignment]
    for route in app.routes:
        path = route.doc_path or route.path
        assert path in doc["paths"], path
    guide = {
        ("post", "/datasets/generate"), ("post", "/datasets/generate-evaluation"),
        ("get", "/datasets/generate/{job_id}/status"), ("get", "/datasets/{dataset_id}"),
        ("get", "/datasets/{dataset_id}/entries"), ("put", "/datasets/{dataset_id}/entries/{entry_id}"),
        ("post", "/datasets/{dataset_id}/feedback"), ("post", "/datasets/{dataset_id}/regenerate"),
        ("get", "/datasets/{dataset_id}/download"), ("get", "/datasets/config/high-level-prompts"),
        ("get", "/datasets/config/default-prompts"), ("post", "/datasets/parameters"),
        ("get", "/datasets/parameters/{project_id}"), ("get", "/taxonomy/"), ("post", "/taxonomy/"),
        ("post", "/projects"), ("get", "/jobs"), ("post", "/jobs/{job_id}/cancel"), ("get", "/openapi.json"),
    }
    for method, path in guide:
        assert method in doc["paths"][API + path], (method, path)
    refs = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert refs <= set(doc["components"]["schemas"]), refs - set(doc["components"]["schemas"])
    generate = doc["components"]["schemas"]["GenerateRequest"]
    assert generate["required"] == ["project_id"] and generate["additionalProperties"] is False
    assert generate["properties"]["datasets_per_chunk"]["default"] == 3
    entries_params = {p["name"] for p in doc["paths"][f"{API}/datasets/{{dataset_id}}/entries"]["get"]["parameters"]}
    assert {"page", "per_page", "filter_quality", "sort_by", "q", "flagged", "category", "as_of"} <= entries_params


# --- configuration and parameters -----------------------------------------------------------------------


def test_config_endpoints_have_the_guides_shapes(client: testing.TestClient) -> None:
    high = client.simulate_get(f"{API}/datasets/config/high-level-prompts").json
    assert {"audience_defaults", "purpose_defaults", "complexity_options", "domain_defaults"} <= set(high)
    assert high["complexity_options"] == ["beginner", "intermediate", "advanced", "expert"]
    prompts = client.simulate_get(f"{API}/datasets/config/default-prompts").json["prompts"]
    assert set(prompts) == {"instruction following", "question and answer", "summarization"}
    assert all("{chunk}" in text for text in prompts.values())


def test_parameters_are_saved_and_the_latest_is_returned(client: testing.TestClient) -> None:
    project = client.simulate_post(f"{API}/projects", json={"name": "med"}).json["id"]
    body = {"project_id": project, "purpose": "medical_qa_training", "audience": "medical_students",
            "extraction_rules": "clinical_guidelines", "dataset_format": "jsonl", "question_style": "factual",
            "answer_style": "comprehensive", "negativity_ratio": 0.1, "data_augmentation": "synonym_replacement",
            "custom_audience": "3rd_year_medical_students", "custom_purpose": "board_exam_preparation",
            "complexity_level": "intermediate", "domain": "medicine"}
    resp = client.simulate_post(f"{API}/datasets/parameters", json=body)
    assert resp.status_code == 200
    assert resp.json["message"] == "Dataset parameters saved successfully"
    assert resp.json["project_id"] == project and resp.json["parameter_id"]
    client.simulate_post(f"{API}/datasets/parameters", json={**body, "complexity_level": "advanced"})
    got = client.simulate_get(f"{API}/datasets/parameters/{project}").json["parameters"]
    assert {"id", "project_id", "purpose", "audience", "dataset_format", "complexity_level", "domain",
            "created_at"} <= set(got)
    assert got["complexity_level"] == "advanced" and got["project_id"] == project and got["domain"] == "medicine"
    # by name too
    assert client.simulate_get(f"{API}/datasets/parameters/med").json["parameters"]["id"] == got["id"]
    assert_error(client.simulate_post(f"{API}/datasets/parameters", json={**body, "project_id": "nope"}), 404, "nope")
    missing = {k: v for k, v in body.items() if k != "purpose"}
    assert_error(client.simulate_post(f"{API}/datasets/parameters", json=missing), 422, "purpose")
    assert_error(client.simulate_post(f"{API}/datasets/parameters", json={**body, "colour": 1}), 422, "colour")
    assert_error(client.simulate_post(f"{API}/datasets/parameters", json={**body, "question_style": "x"}), 422,
                 "question_style")
    other = client.simulate_post(f"{API}/projects", json={"name": "empty"}).json["id"]
    assert_error(client.simulate_get(f"{API}/datasets/parameters/{other}"), 404, "no saved parameters")
    assert_error(client.simulate_get(f"{API}/datasets/parameters/unknown"), 404)


# --- projects, documents, taxonomies, prompts --------------------------------------------------------------


def test_projects_create_list_and_get(client: testing.TestClient) -> None:
    first = client.simulate_post(f"{API}/projects", json={"name": "med", "description": "notes"})
    assert first.status_code == 201 and first.json["created"] is True
    again = client.simulate_post(f"{API}/projects", json={"name": "med"})
    assert again.status_code == 200 and again.json["created"] is False and again.json["id"] == first.json["id"]
    listing = client.simulate_get(f"{API}/projects").json
    assert listing["total"] == 1 and listing["projects"][0]["name"] == "med"
    assert client.simulate_get(f"{API}/projects/med").json["id"] == first.json["id"]
    assert_error(client.simulate_get(f"{API}/projects/other"), 404, "other")
    assert_error(client.simulate_post(f"{API}/projects", json={"name": ""}), 422, "name")
    assert_error(client.simulate_post(f"{API}/projects", json={}), 422, "name")


def test_documents_multipart_json_and_base64_uploads(client: testing.TestClient, data: Path) -> None:
    project = client.simulate_post(f"{API}/projects", json={"name": "med"}).json["id"]
    url = f"{API}/projects/{project}/documents"
    body, ctype = multipart("a.md", markdown(3).encode(), strategy="markdown")
    up = client.simulate_post(url, body=body, headers={"Content-Type": ctype})
    assert up.status_code == 201, up.text
    doc = up.json
    assert doc["filename"] == "a.md" and doc["chunks"] == 3 and doc["strategy"] == "markdown" and doc["original_kept"]
    again = client.simulate_post(url, body=body, headers={"Content-Type": ctype})
    assert again.status_code == 200 and again.json["status"] == "unchanged"
    text = client.simulate_post(url, json={"filename": "b.txt", "content": "One paragraph.\n\nAnother paragraph."})
    assert text.status_code == 201 and text.json["media_type"] == "text/plain"
    b64 = client.simulate_post(url, json={"filename": "c.md", "content_base64": base64.b64encode(b"# C\n\nSee.").decode()})
    assert b64.status_code == 201 and b64.json["chunks"] == 1
    listing = client.simulate_get(url).json
    assert [d["filename"] for d in listing["documents"]] == ["a.md", "b.txt", "c.md"]
    assert client.simulate_get(f"{API}/projects/{project}").json["documents"] == 3
    # re-chunk from the kept original
    rechunk = client.simulate_post(f"{url}/{doc['id']}/chunk", json={"strategy": "characters", "chunk_size": 100,
                                                                     "overlap": 10})
    assert rechunk.status_code == 200 and rechunk.json["status"] == "rechunked", rechunk.text
    assert rechunk.json["chunks"] > 3 and rechunk.json["strategy"] == "characters"
    chunks = client.simulate_get(f"{url}/{doc['id']}/chunks", params={"per_page": 2}).json
    assert chunks["total"] == rechunk.json["chunks"] and len(chunks["chunks"]) == 2
    one = client.simulate_get(f"{API}/chunks/{chunks['chunks'][0]['id']}").json
    assert one["text"] and one["document_id"] == doc["id"]
    # refusals
    assert_error(client.simulate_post(url, json={"filename": "x.exe", "content": "MZ"}), 422, "unsupported")
    assert_error(client.simulate_post(url, json={"filename": "x.md"}), 422, "content")
    assert_error(client.simulate_post(url, json={"filename": "x.md", "content": "a", "content_base64": "YQ=="}), 422)
    assert_error(client.simulate_post(url, json={"filename": "x.md", "content_base64": "%%%"}), 422, "base64")
    assert_error(client.simulate_post(url, json={"filename": "x.md", "content": "a", "colour": 1}), 422, "colour")
    assert_error(client.simulate_post(url, json={"filename": "x.md", "content": ""}), 422, "empty")
    assert_error(client.simulate_post(f"{API}/projects/nope/documents", json={"filename": "x.md", "content": "a"}),
                 404, "nope")
    assert_error(client.simulate_post(f"{url}/doc_unknown/chunk", json={}), 404, "doc_unknown")
    form, ctype = multipart("a.md", b"# A\n\ntext", colour="red")
    assert_error(client.simulate_post(url, body=form, headers={"Content-Type": ctype}), 422, "colour")
    assert_error(client.simulate_post(url, body=b"x", headers={"Content-Type": "text/plain"}), 415)


def test_a_document_ingested_by_the_cli_can_be_rechunked_over_http(client: testing.TestClient, data: Path) -> None:
    from dsetlog.catalog import documents as ingest
    from projections.readmodel import ReadModel

    project = client.simulate_post(f"{API}/projects", json={"name": "med"}).json["id"]
    source = data.parent / "cli.md"
    source.write_text(markdown(6))
    with EventLog.in_dir(data) as log:  # `dset ingest`: the data dir keeps the original too
        res = ingest.ingest_file(log, ReadModel.open(data), project_id=project, path=source, strategy="markdown")
    kept = ingest.original_path(data, res.document_id, "cli.md")
    assert kept.read_bytes() == source.read_bytes()
    source.unlink()  # the user's file may be gone: the copy is what counts
    docs = client.simulate_get(f"{API}/projects/{project}/documents").json["documents"]
    assert [d["original_kept"] for d in docs] == [True]
    url = f"{API}/projects/{project}/documents/{res.document_id}/chunk"
    resp = client.simulate_post(url, json={"strategy": "characters", "chunk_size": 100, "overlap": 10})
    assert resp.status_code == 200 and resp.json["strategy"] == "characters", resp.text
    assert resp.json["chunks"] > res.chunks
    kept.unlink()
    assert_error(client.simulate_post(url, json={}), 409, "upload it again")


def test_taxonomies_list_shape_and_create(client: testing.TestClient) -> None:
    project = client.simulate_post(f"{API}/projects", json={"name": "med"}).json["id"]
    body = {"project_id": project, "name": "specialties",
            "categories": ["Endocrinology", {"name": "Cardiology", "children": [{"name": "Arrhythmia"}]}]}
    created = client.simulate_post(f"{API}/taxonomy/", json=body)
    assert created.status_code == 201, created.text
    assert created.json["leaf_categories"] == ["Endocrinology", "Cardiology > Arrhythmia"]
    assert client.simulate_post(f"{API}/taxonomy", json=body).status_code == 200  # same again: nothing new
    listing = client.simulate_get(f"{API}/taxonomy/").json
    assert list(listing) == ["taxonomies"]
    (tax,) = listing["taxonomies"]
    assert tax["project_id"] == project and tax["name"] == "specialties"
    assert client.simulate_get(f"{API}/taxonomy", params={"project_id": "med"}).json == listing
    assert_error(client.simulate_post(f"{API}/taxonomy/", json={**body, "categories": []}), 422, "categories")
    assert_error(client.simulate_post(f"{API}/taxonomy/", json={**body, "project_id": "x"}), 404)
    assert_error(client.simulate_post(f"{API}/taxonomy/", json={**body, "categories": ["A", "a"]}), 422, "twice")


def test_prompts_create_list_get_and_versions(client: testing.TestClient) -> None:
    project = client.simulate_post(f"{API}/projects", json={"name": "med"}).json["id"]
    body = {"name": "terse", "content": "Write {n} short pairs from:\n{chunk}", "mode": "default"}
    first = client.simulate_post(f"{API}/prompts", json=body)
    assert first.status_code == 201 and first.json["version"] == 1
    same = client.simulate_post(f"{API}/prompts", json=body)
    assert same.status_code == 200 and same.json["created"] is False
    second = client.simulate_post(f"{API}/prompts", json={**body, "content": body["content"] + " {colour}"})
    assert second.json["version"] == 2 and second.json["unknown_placeholders"] == ["colour"]
    scoped = client.simulate_post(f"{API}/prompts", json={**body, "project_id": project})
    assert scoped.json["project_id"] == project
    assert client.simulate_get(f"{API}/prompts/{first.json['id']}").json["content"] == body["content"]
    assert client.simulate_get(f"{API}/prompts/terse").json["version"] == 1  # the project's own, saved last
    assert {p["id"] for p in client.simulate_get(f"{API}/prompts").json["prompts"]} == {second.json["id"],
                                                                                        scoped.json["id"]}
    assert_error(client.simulate_get(f"{API}/prompts/nope"), 404)
    assert_error(client.simulate_post(f"{API}/prompts", json={**body, "mode": "poetry"}), 422, "mode")


# --- generation requests: validation -----------------------------------------------------------------------


def test_generate_request_validation(make_client: Callable[..., testing.TestClient], simulator: Simulator) -> None:
    client = make_client(simulator_url=simulator.base_url)
    project = new_project(client)
    url = f"{API}/datasets/generate"
    assert_error(client.simulate_post(url, json={"project_id": project, "colour": "red"}), 422, "colour")
    assert_error(client.simulate_post(url, json={"project_id": project, "concurrency": "two"}), 422, "concurrency")
    assert_error(client.simulate_post(url, json={"project_id": project, "concurrency": 0}), 422, "concurrency")
    assert_error(client.simulate_post(url, json={"project_id": project, "format_type": "xml"}), 422, "format_type")
    assert_error(client.simulate_post(url, json={}), 422, "project_id")
    assert_error(client.simulate_post(url, json={"project_id": project, "output_dir": "../out"}), 400, "output_dir")
    assert_error(client.simulate_post(url, json={"project_id": project, "output_dir": "/tmp/x"}), 400, "output_dir")
    assert_error(client.simulate_post(url, body=b"{not json", headers={"Content-Type": "application/json"}), 400,
                 "JSON")
    assert_error(client.simulate_post(url, json={"project_id": "nope"}), 404, "nope")
    assert_error(client.simulate_post(url, json={"project_id": project, "taxonomy_name": "x",
                                                 "taxonomy_project": project}), 404, "taxonomy")
    empty = client.simulate_post(f"{API}/projects", json={"name": "empty"}).json["id"]
    assert_error(client.simulate_post(url, json={"project_id": empty}), 409, "no chunks")
    first = client.simulate_post(url, json={"project_id": project})
    assert first.status_code == 200 and first.json["message"] == "Dataset generation started"
    assert set(first.json) >= {"job_id", "message"}
    assert_error(client.simulate_post(url, json={"project_id": project}), 409, first.json["job_id"])
    # nothing ran: the worker is off, the job waits
    status = client.simulate_get(f"{API}/datasets/generate/{first.json['job_id']}/status").json
    assert status["status"] == "pending" and status["progress"] == 0 and status["result"] is None


def test_body_size_limit(make_client: Callable[..., testing.TestClient]) -> None:
    client = make_client(max_body=2000)
    project = client.simulate_post(f"{API}/projects", json={"name": "med"}).json["id"]
    big = {"filename": "a.md", "content": "x" * 5000}
    assert_error(client.simulate_post(f"{API}/projects/{project}/documents", json=big), 413, "limit")
    assert_error(client.simulate_post(f"{API}/datasets/generate", json={"project_id": "p", "custom_prompt": "y" * 3000}),
                 413)


def test_providers_without_keys_are_refused(client: testing.TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GEMINI_API_KEY", "DSET_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    project = new_project(client)
    assert_error(client.simulate_post(f"{API}/datasets/generate", json={"project_id": project}), 400, "GEMINI_API_KEY")


# --- jobs on the simulator ------------------------------------------------------------------------------


def test_generate_job_runs_and_reports_the_guides_shapes(sim_client: testing.TestClient) -> None:
    dataset_id, status = generated(sim_client, sections=5, concurrency=2, dataset_name="medical_qa_dataset")
    assert set(status) >= {"job_id", "status", "progress", "current_step", "estimated_completion", "result", "error"}
    assert status["progress"] == 100 and status["current_step"] == "Finished" and status["error"] is None
    result = status["result"]
    assert {"dataset_id", "entries_count", "files", "tokens", "cost", "quality_summary"} <= set(result)
    assert result["entries_count"] == 15 and result["tokens"] > 0 and result["files"]
    ds = sim_client.simulate_get(f"{API}/datasets/{dataset_id}").json
    assert {"id", "name", "entries", "total_entries", "created_at", "format_type", "quality_summary"} <= set(ds)
    assert ds["name"] == "medical_qa_dataset" and ds["total_entries"] == 15 and ds["format_type"] == "jsonl"
    assert set(ds["quality_summary"]) >= {"average_score", "distribution", "categories"}
    assert set(ds["quality_summary"]["distribution"]) == {"high", "medium", "low"}
    entry = ds["entries"][0]
    assert {"id", "question", "answer", "category", "quality_score", "difficulty", "source_chunk",
            "metadata"} <= set(entry)
    assert {"model", "generation_time", "chunk_length"} <= set(entry["metadata"])
    chunk = sim_client.simulate_get(f"{API}/chunks/{entry['source_chunk']}").json
    assert chunk["heading"].startswith("Topic")
    listing = sim_client.simulate_get(f"{API}/datasets").json
    assert [d["id"] for d in listing["datasets"]] == [dataset_id]
    jobs = sim_client.simulate_get(f"{API}/jobs").json
    assert jobs["total"] == 1 and jobs["jobs"][0]["status"] == "completed"
    assert sim_client.simulate_get(f"{API}/jobs/{status['job_id']}").json["result"] == result


def test_generate_evaluation_makes_splits(sim_client: testing.TestClient) -> None:
    project = new_project(sim_client, 10)
    resp = sim_client.simulate_post(f"{API}/datasets/generate-evaluation",
                                    json={"project_id": project, "quality_threshold": 0.0, "concurrency": 2})
    assert resp.status_code == 200 and resp.json["message"] == "Evaluation dataset generation started"
    status = wait_job(sim_client, resp.json["job_id"])
    assert status["status"] == "completed", status
    assert status["kind"] == "generate-evaluation"
    assert sum(status["result"]["splits"].values()) == 30
    ds = sim_client.simulate_get(f"{API}/datasets/{status['result']['dataset_id']}").json
    assert set(ds["splits"]) == {"train", "validation", "test"}
    assert ds["params"]["prompt_name"] == "evaluation_qa"


def test_cancel_a_running_job_keeps_its_entries(make_client: Callable[..., testing.TestClient],
                                                make_simulator: Callable[..., Simulator], data: Path) -> None:
    sim = make_simulator(latency_ms=150)
    client = make_client(simulator_url=sim.base_url, start_worker=True)
    project = new_project(client, 40)
    job_id = client.simulate_post(f"{API}/datasets/generate", json={"project_id": project, "datasets_per_chunk": 1,
                                                                  "concurrency": 1}).json["job_id"]
    deadline = time.monotonic() + 30
    while not events_of(data, EntryGenerated):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    running = client.simulate_get(f"{API}/datasets/generate/{job_id}/status").json
    assert running["status"] == "running" and running["current_step"].startswith("Processing chunk")
    resp = client.simulate_post(f"{API}/jobs/{job_id}/cancel", json={"reason": "enough"})
    # the guide's four states: a cancelled job is failed, and says it was cancelled
    assert resp.status_code == 200 and resp.json["status"] == "failed" and resp.json["cancelled"], resp.json
    assert resp.json["cancel_reason"] == "enough" and resp.json["error"] == "cancelled: enough"
    made = events_of(data, EntryGenerated)
    assert 0 < len(made) < 40
    (cancelled,) = events_of(data, JobCancelled)
    assert cancelled.job_id == job_id
    time.sleep(0.5)
    assert len(events_of(data, EntryGenerated)) == len(made)  # nothing more was asked for
    ds = client.simulate_get(f"{API}/datasets/{running['dataset_id']}").json
    assert ds["total_entries"] == len(made)
    assert_error(client.simulate_post(f"{API}/jobs/{job_id}/cancel"), 409, "cancelled")


def test_jobs_beyond_max_jobs_wait_and_can_be_cancelled_while_waiting(
        make_client: Callable[..., testing.TestClient], make_simulator: Callable[..., Simulator], data: Path) -> None:
    sim = make_simulator(latency_ms=100)
    client = make_client(simulator_url=sim.base_url, start_worker=True, max_jobs=1)
    project = new_project(client, 30)
    url = f"{API}/datasets/generate"
    first = client.simulate_post(url, json={"project_id": project, "datasets_per_chunk": 1}).json["job_id"]
    second = client.simulate_post(url, json={"project_id": project, "dataset_name": "other"}).json["job_id"]
    deadline = time.monotonic() + 30
    while client.simulate_get(f"{API}/jobs/{first}").json["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    waiting = client.simulate_get(f"{API}/jobs/{second}").json
    assert waiting["status"] == "pending" and waiting["current_step"] == "Waiting to start"
    cancelled = client.simulate_post(f"{API}/jobs/{second}/cancel").json
    assert cancelled["status"] == "failed" and cancelled["cancelled"] and cancelled["error"] == "cancelled"
    assert client.simulate_get(f"{API}/jobs/{first}").json["status"] == "running"  # untouched
    assert client.simulate_post(f"{API}/jobs/{first}/cancel").json["cancelled"] is True
    assert len(events_of(data, JobCancelled)) == 2
    assert {e.job_id for e in events_of(data, JobStarted)} == {first}  # the waiting one never started


def test_jobs_list_filter_and_cancel_of_a_waiting_job(client: testing.TestClient, data: Path) -> None:
    project = new_project(client)
    job_id = client.simulate_post(f"{API}/datasets/generate", json={"project_id": project,
                                                                  "classification_model": "ollama",
                                                                  "parsing_model": "ollama",
                                                                  "chunking_model": "ollama"}).json["job_id"]
    assert client.simulate_get(f"{API}/jobs", params={"status": "pending"}).json["total"] == 1
    assert client.simulate_get(f"{API}/jobs", params={"status": "completed"}).json["total"] == 0
    assert_error(client.simulate_get(f"{API}/jobs", params={"status": "asleep"}), 422, "status")
    resp = client.simulate_post(f"{API}/jobs/{job_id}/cancel")
    assert resp.json["status"] == "failed" and resp.json["cancelled"] and resp.json["current_step"] == "Cancelled"
    # shown as failed, so listed as failed; status=cancelled still picks the cancelled ones
    for status in ("failed", "cancelled"):
        listed = client.simulate_get(f"{API}/jobs", params={"status": status}).json
        assert [j["job_id"] for j in listed["jobs"]] == [job_id] and listed["jobs"][0]["status"] == "failed"
    assert client.simulate_get(f"{API}/jobs", params={"status": "pending"}).json["total"] == 0
    assert_error(client.simulate_post(f"{API}/jobs/nope/cancel"), 404)
    assert_error(client.simulate_get(f"{API}/datasets/generate/nope/status"), 404, "nope")
    assert_error(client.simulate_get(f"{API}/jobs/nope"), 404)


def test_unfinished_jobs_resume_when_the_worker_starts(make_client: Callable[..., testing.TestClient],
                                                       simulator: Simulator, data: Path) -> None:
    client = make_client(simulator_url=simulator.base_url)  # no worker: the job is only submitted
    project = new_project(client, 3)
    job_id = client.simulate_post(f"{API}/datasets/generate", json={"project_id": project}).json["job_id"]
    with EventLog.in_dir(data) as log:  # as if a server had started it and died
        log.append(JobStarted(job_id=job_id))
    restarted = make_client(simulator_url=simulator.base_url, start_worker=True)
    status = wait_job(restarted, job_id)
    assert status["status"] == "completed" and status["attempts"] == 2
    per_item: dict[str, int] = {}
    for e in events_of(data, EntryGenerated):
        per_item[e.item_id] = per_item.get(e.item_id, 0) + 1
    assert len(per_item) == 9 and set(per_item.values()) == {1}


def test_one_rate_limiter_per_provider_is_shared(client: testing.TestClient) -> None:
    from dsetlog.llm.providers import resolve

    worker = client.app.ctx.worker  # type: ignore[attr-defined]
    a = worker.limiter_for(resolve("ollama"))
    assert worker.limiter_for(resolve("ollama", model="other")) is a  # same endpoint, same limits
    assert worker.limiter_for(resolve("vllm")) is not a


# --- datasets and entries ------------------------------------------------------------------------------------


def test_entries_default_sort_is_quality_high_first_with_id_ties(seeded: testing.TestClient) -> None:
    page = seeded.simulate_get(f"{API}/datasets/{DS}/entries").json
    assert set(page) >= {"entries", "total", "page", "per_page", "quality_summary"}
    assert page["total"] == N and page["page"] == 1 and page["per_page"] == 50 and page["pages"] == 2
    assert set(page["quality_summary"]) >= {"average_score", "distribution"}
    scores = {f"entry_{i:04d}": (i * 7 % 20) / 20 for i in range(N)}
    expected = sorted(scores, key=lambda e: (-scores[e], e))
    full = [e["id"] for p in (1, 2) for e in seeded.simulate_get(f"{API}/datasets/{DS}/entries",
                                                                 params={"page": p}).json["entries"]]
    assert full == expected
    asc = seeded.simulate_get(f"{API}/datasets/{DS}/entries", params={"order": "asc", "per_page": 500}).json
    assert [e["id"] for e in asc["entries"]] == sorted(scores, key=lambda e: (scores[e], e))


def test_entries_sort_by_category_and_difficulty(seeded: testing.TestClient) -> None:
    cats = {f"entry_{i:04d}": CATS[i % 4] for i in range(N)}
    got = seeded.simulate_get(f"{API}/datasets/{DS}/entries", params={"sort_by": "category", "per_page": 500}).json
    ids = [e["id"] for e in got["entries"]]
    named = sorted((e for e in cats if cats[e]), key=lambda e: (cats[e], e))
    assert ids == named + sorted(e for e in cats if not cats[e])  # no category: last
    diffs = {f"entry_{i:04d}": DIFFS[i % 4] if i % 9 else "" for i in range(N)}
    got = seeded.simulate_get(f"{API}/datasets/{DS}/entries", params={"sort_by": "difficulty", "per_page": 500}).json
    rank = {d: r for r, d in enumerate(DIFFS)}
    known = sorted((e for e in diffs if diffs[e]), key=lambda e: (rank[diffs[e]], e))
    assert [e["id"] for e in got["entries"]] == known + sorted(e for e in diffs if not diffs[e])
    pos = seeded.simulate_get(f"{API}/datasets/{DS}/entries", params={"sort_by": "position", "per_page": 5}).json
    assert [e["id"] for e in pos["entries"]] == [f"entry_{i:04d}" for i in range(5)]


def test_entries_filters(seeded: testing.TestClient) -> None:
    def ids(**params: Any) -> list[str]:
        body = seeded.simulate_get(f"{API}/datasets/{DS}/entries", params={"per_page": 500, **params}).json
        assert body["total"] == len(body["entries"])
        return sorted(e["id"] for e in body["entries"])

    score = {f"entry_{i:04d}": (i * 7 % 20) / 20 for i in range(N)}
    assert ids(filter_quality=0.8) == sorted(e for e, s in score.items() if s >= 0.8)
    assert ids(min_quality=0.25, max_quality=0.5) == sorted(e for e, s in score.items() if 0.25 <= s <= 0.5)
    assert ids(category="cardiology") == [f"entry_{i:04d}" for i in range(0, N, 4)]  # case-insensitive
    assert ids(difficulty="expert") == [f"entry_{i:04d}" for i in range(N) if i % 4 == 3 and i % 9]
    assert ids(q="APPLES") == [f"entry_{i:04d}" for i in range(0, N, 5)]
    assert ids(q="fact 12?") == ["entry_0012"]
    assert ids(flagged="true") == []
    assert len(ids(flagged="false")) == N
    assert ids(q="apples", category="Cardiology") == [f"entry_{i:04d}" for i in range(0, N, 20)]
    assert len(ids(per_page=1000)) == N  # the guide's per_page=1000
    for bad in ({"per_page": 10_001}, {"per_page": 0}, {"page": 0}, {"sort_by": "colour"}, {"filter_quality": 2},
                {"flagged": "perhaps"}, {"page": "one"}, {"per_page": ""}, {"sort_by": ""}):
        assert_error(seeded.simulate_get(f"{API}/datasets/{DS}/entries", params=bad), 422, next(iter(bad)))
    past = seeded.simulate_get(f"{API}/datasets/{DS}/entries", params={"page": 9}).json
    assert past["entries"] == [] and past["total"] == N
    assert_error(seeded.simulate_get(f"{API}/datasets/nope/entries"), 404, "nope")


def test_an_entries_index_outlives_appends_to_other_datasets(seeded: testing.TestClient, data: Path) -> None:
    ctx = seeded.app.ctx  # type: ignore[attr-defined]
    seeded.simulate_get(f"{API}/datasets/{DS}/entries")
    with ctx.rm.lock:
        first = ctx.entries.index(ctx.rm, DS)
    questions_dataset(data)  # another dataset moves the log on
    page = seeded.simulate_get(f"{API}/datasets/{DS}/entries").json
    with ctx.rm.lock:
        assert ctx.entries.index(ctx.rm, DS) is first and page["seq"] == ctx.rm.seq
    seeded.simulate_put(f"{API}/datasets/{DS}/entries/entry_0007", json={"category": "Zoology"})
    found = seeded.simulate_get(f"{API}/datasets/{DS}/entries", params={"category": "zoology"}).json
    assert [e["id"] for e in found["entries"]] == ["entry_0007"]
    with ctx.rm.lock:
        assert ctx.entries.index(ctx.rm, DS) is first  # an edit is followed in place, not a rebuild


def test_an_index_followed_through_edits_answers_as_a_fresh_one(seeded: testing.TestClient) -> None:
    import random

    from api.entry_index import EntryIndex
    from api.schemas import EntriesQuery

    ctx = seeded.app.ctx  # type: ignore[attr-defined]
    queries = [EntriesQuery(sort_by=s, **f) for s in ("quality", "category", "difficulty", "position", "updated")
               for f in ({}, {"q": "zebra"}, {"category": "Zoology"}, {"flagged": True}, {"filter_quality": 0.5})]
    rng = random.Random(3)
    for step in range(40):
        for q in queries:  # every order and result cached before the next change
            seeded.simulate_get(f"{API}/datasets/{DS}/entries", params={
                k: v for k, v in {"sort_by": q.sort_by, "q": q.q, "category": q.category,
                                  "flagged": "true" if q.flagged else None,
                                  "filter_quality": q.filter_quality}.items() if v is not None})
        entry = f"entry_{rng.randrange(N):04d}"
        if step % 3 == 0:
            seeded.simulate_put(f"{API}/datasets/{DS}/entries/{entry}", json={"answer": f"a zebra {step}"})
        elif step % 3 == 1:
            seeded.simulate_put(f"{API}/datasets/{DS}/entries/{entry}", json={"category": rng.choice(["Zoology", "X"])})
        else:
            seeded.simulate_post(f"{API}/datasets/{DS}/feedback", json={
                "entry_ids": [entry], "feedback_type": "quality_issue", "comments": "check"})
        rm = ctx.model()
        with rm.lock:
            followed, fresh = ctx.entries.index(rm, DS), EntryIndex(rm, DS)
            for q in queries:
                assert followed.query(rm, q) == fresh.query(rm, q), (step, q)
            assert followed.summary == fresh.summary and followed.flagged == fresh.flagged
            first = fresh.query(rm, queries[0])[0][:50]
            assert followed.page(rm, first) == fresh.page(rm, first)


def test_dataset_inlines_a_bounded_number_of_entries(data: Path, make_client: Callable[..., Any]) -> None:
    seed(data, seeded_events(150))
    client = make_client()
    ds = client.simulate_get(f"{API}/datasets/{DS}").json
    assert ds["total_entries"] == 150 and len(ds["entries"]) == ds["entries_inline"] == 100
    assert ds["entries_url"].endswith(f"/datasets/{DS}/entries")
    assert_error(client.simulate_get(f"{API}/datasets/nope"), 404, "nope")


def test_edit_is_an_event_in_the_history(seeded: testing.TestClient, data: Path) -> None:
    url = f"{API}/datasets/{DS}/entries/entry_0003"
    body = {"question": "What are the most common symptoms of diabetes mellitus?",
            "answer": "Polydipsia and polyuria.", "category": "Endocrinology", "feedback": "Improved terminology"}
    resp = seeded.simulate_put(url, json=body)
    assert resp.status_code == 200 and resp.json["message"] == "Entry entry_0003 updated successfully"
    entry = resp.json["entry"]
    assert entry["answer"] == body["answer"] and entry["revision"] == 2 and entry["category"] == "Endocrinology"
    assert entry["feedback"]["comments"] == ["Improved terminology"]
    assert seeded.simulate_get(url).json["question"] == body["question"]
    cli = subprocess.run([sys.executable, "-m", "dsetlog", "log", "history", "entry_0003", "--data", str(data),
                          "--json"], capture_output=True, text=True, timeout=60, check=True)
    history = json.loads(cli.stdout)  # `dset log history entry_0003`
    # the edit is scored again in the same append (tests/api/test_entry_rescoring.py)
    assert [h["type"] for h in history] == ["EntryGenerated", "EntryScored", "EntryEdited", "EntryScored"]
    assert history[-2]["fields"]["answer"] == body["answer"]
    assert [h.seq for h in logtools.history(data / LOG_NAME, "entry_0003")] == [h["seq"] for h in history]
    api_history = seeded.simulate_get(f"{API}/entries/{DS}/entry_0003/history").json
    assert [(e["seq"], e["type"]) for e in api_history["events"]] == [(h["seq"], h["type"]) for h in history]
    assert api_history["events"][0]["fields"]["answer"] == "Fact 3 is about pears."  # the old revision stays
    assert api_history["revision"] == 2
    assert_error(seeded.simulate_put(f"{API}/datasets/{DS}/entries/entry_9999", json=body), 404, "entry_9999")
    assert_error(seeded.simulate_put(f"{API}/datasets/nope/entries/entry_0003", json=body), 404, "nope")
    assert_error(seeded.simulate_put(url, json={}), 422, "at least one")
    assert_error(seeded.simulate_put(url, json={"answer": 3}), 422, "answer")
    assert_error(seeded.simulate_put(url, json={"answer": "x", "score": 1}), 422, "score")
    assert_error(seeded.simulate_get(f"{API}/entries/{DS}/entry_9999/history"), 404)


def test_feedback_is_aggregated_per_entry_and_flags(seeded: testing.TestClient) -> None:
    url = f"{API}/datasets/{DS}/feedback"
    resp = seeded.simulate_post(url, json={"entry_ids": ["entry_0001", "entry_0002", "entry_0003"],
                                           "feedback_type": "bulk_edit", "comments": "Improved accuracy",
                                           "rating": 4})
    assert resp.status_code == 200 and resp.json["message"] == "Feedback submitted for 3 entries"
    assert not any(e["flagged"] for e in resp.json["entries"])
    seeded.simulate_post(url, json={"entry_ids": ["entry_0001"], "feedback_type": "quality_issue", "rating": 2,
                                    "comments": "vague"})
    seeded.simulate_post(url, json={"entry_ids": ["entry_0002"], "feedback_type": "content_error"})
    one = seeded.simulate_get(f"{API}/datasets/{DS}/entries/entry_0001").json
    assert one["flagged"] and one["feedback"]["count"] == 2 and one["feedback"]["average_rating"] == 3.0
    assert one["feedback"]["comments"] == ["Improved accuracy", "vague"]
    flagged = seeded.simulate_get(f"{API}/datasets/{DS}/entries", params={"flagged": "true"}).json
    assert sorted(e["id"] for e in flagged["entries"]) == ["entry_0001", "entry_0002"]
    assert seeded.simulate_get(f"{API}/datasets/{DS}").json["flagged"] == 2
    default = seeded.simulate_post(url, json={"entry_ids": ["entry_0005"]})
    assert default.status_code == 200 and not default.json["entries"][0]["flagged"]  # bulk_edit by default
    assert_error(seeded.simulate_post(url, json={"entry_ids": ["entry_0001", "entry_x", "entry_y"]}), 404,
                 "entry_x, entry_y")
    assert_error(seeded.simulate_post(url, json={"entry_ids": ["entry_0001"], "rating": 6}), 422, "rating")
    assert_error(seeded.simulate_post(url, json={"entry_ids": ["entry_0001"], "feedback_type": "praise"}), 422,
                 "feedback_type")
    assert_error(seeded.simulate_post(url, json={"entry_ids": []}), 422, "entry_ids")
    assert_error(seeded.simulate_post(f"{API}/datasets/nope/feedback", json={"entry_ids": ["a"]}), 404, "nope")


def test_as_of_reads_and_downloads_the_past(data: Path, make_client: Callable[..., Any]) -> None:
    seqs = seed(data, seeded_events(10))
    client = make_client()
    before = seqs[-1]
    client.simulate_put(f"{API}/datasets/{DS}/entries/entry_0001", json={"answer": "new"})
    now = client.simulate_get(f"{API}/datasets/{DS}/entries/entry_0001").json
    then = client.simulate_get(f"{API}/datasets/{DS}/entries/entry_0001", params={"as_of": before}).json
    assert now["answer"] == "new" and then["answer"] == "Fact 1 is about pears."
    page = client.simulate_get(f"{API}/datasets/{DS}/entries", params={"as_of": before, "q": "new"}).json
    assert page["total"] == 0 and page["seq"] == before
    ds = client.simulate_get(f"{API}/datasets/{DS}", params={"as_of": 3}).json
    assert ds["total_entries"] == 1 and ds["seq"] == 3
    assert_error(client.simulate_get(f"{API}/datasets/{DS}", params={"as_of": 0}), 404, "at seq 0")
    assert_error(client.simulate_get(f"{API}/datasets/{DS}", params={"as_of": 10**6}), 404, "past the end")
    assert_error(client.simulate_get(f"{API}/datasets/{DS}", params={"as_of": -1}), 422, "as_of")
    old = client.simulate_get(f"{API}/datasets/{DS}/download", params={"as_of": before})
    answers = [json.loads(line)["answer"] for line in old.text.splitlines()]
    assert "new" not in answers and len(answers) == 10
    assert "new" in [json.loads(line)["answer"] for line in client.simulate_get(
        f"{API}/datasets/{DS}/download").text.splitlines()]


def test_download_one_file_per_format(seeded: testing.TestClient) -> None:
    resp = seeded.simulate_get(f"{API}/datasets/{DS}/download")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/x-ndjson"
    assert resp.headers["content-disposition"] == f'attachment; filename="{DS}.jsonl"'
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert len(lines) == N and lines[0]["id"] == "entry_0000"
    parquet = seeded.simulate_get(f"{API}/datasets/{DS}/download", params={"format_type": "parquet"})
    assert parquet.headers["content-type"] == "application/vnd.apache.parquet"
    assert parquet.headers["content-disposition"].endswith('.parquet"')
    assert pq.read_table(io.BytesIO(parquet.content)).num_rows == N
    csv_file = seeded.simulate_get(f"{API}/datasets/{DS}/download", params={"format_type": "csv"})
    assert csv_file.headers["content-type"].startswith("text/csv") and csv_file.text.startswith("timestamp,")
    alpaca = seeded.simulate_get(f"{API}/datasets/{DS}/download", params={"format_type": "alpaca"})
    assert set(json.loads(alpaca.text.splitlines()[0])) == {"instruction", "input", "output"}
    assert_error(seeded.simulate_get(f"{API}/datasets/{DS}/download", params={"format_type": "xml"}), 422)
    assert_error(seeded.simulate_get(f"{API}/datasets/nope/download"), 404)
    assert not list((seeded.app.ctx.data_dir / "tmp").iterdir())  # type: ignore[attr-defined]  # cleaned up


def test_download_zips_split_files(data: Path, make_client: Callable[..., Any]) -> None:
    seed(data, seeded_events(30, splits=True))
    client = make_client()
    resp = client.simulate_get(f"{API}/datasets/{DS}/download")
    assert resp.headers["content-type"] == "application/zip"
    assert resp.headers["content-disposition"] == f'attachment; filename="{DS}.zip"'
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        # the split files, and the dataset card that says which is which split
        assert zf.namelist() == ["train.jsonl", "validation.jsonl", "test.jsonl", "README.md"]
        counts = {n: len(zf.read(n).splitlines()) for n in zf.namelist()[:3]}
        assert zf.testzip() is None
    assert counts == {"train.jsonl": 10, "validation.jsonl": 10, "test.jsonl": 10}
    split = client.simulate_get(f"{API}/datasets/{DS}/entries", params={"split": "test", "per_page": 500}).json
    assert split["total"] == 10 and {e["split"] for e in split["entries"]} == {"test"}


def test_benchmark_answers_can_be_inspected(sim_client: testing.TestClient, simulator: Simulator) -> None:
    dataset_id, status = generated(sim_client, sections=6, datasets_per_chunk=2, include_evaluation_sets=True,
                                   run_benchmarks=True, benchmark_suite="reference_qa",
                                   benchmark_model="simulated:student")
    bench = status["result"]["benchmark"]
    url = f"{API}/datasets/{dataset_id}/benchmark-answers"
    doc = sim_client.simulate_get(url).json
    assert (doc["suite"], doc["model"], doc["total"]) == ("reference_qa", "student", bench["questions"])
    asked = {r["messages"][-1]["content"]: r for r in simulator.requests() if r["model"] == "student"}
    first = doc["answers"][0]
    assert first["current"] and set(first["scores"]) == {"exact_match", "token_f1", "rouge_l"}
    assert any(first["question"] in text for text in asked)  # the question the model was asked
    entry = sim_client.simulate_get(f"{API}/datasets/{dataset_id}/entries/{first['entry_id']}").json
    assert first["reference"] == entry["answer"] and first["answer"]
    mean = sum(a["scores"]["token_f1"] for a in doc["answers"]) / doc["total"]
    assert round(mean, 4) == bench["token_f1"]  # the run's figure is the mean of these

    sim_client.simulate_put(f"{API}/datasets/{dataset_id}/entries/{first['entry_id']}", json={"answer": "Changed."})
    again = sim_client.simulate_get(url, params={"suite": "reference_qa", "model": "student", "per_page": 1}).json
    assert again["answers"][0]["current"] is False and again["answers"][0]["reference"] == "Changed."
    assert len(again["answers"]) == 1 and again["total"] == doc["total"]
    assert_error(sim_client.simulate_get(url, params={"suite": "negative_rejection"}), 404, "reference_qa / student")
    assert_error(sim_client.simulate_get(f"{API}/datasets/nope/benchmark-answers"), 404, "nope")


# --- regeneration -------------------------------------------------------------------------------------------


def test_regenerate_makes_a_new_revision_with_the_old_one_in_history(sim_client: testing.TestClient,
                                                                      simulator: Simulator, data: Path) -> None:
    dataset_id, _ = generated(sim_client, sections=3)
    entries = sim_client.simulate_get(f"{API}/datasets/{dataset_id}/entries", params={"sort_by": "position"}).json
    target = entries["entries"][0]
    sim_client.simulate_post(f"{API}/datasets/{dataset_id}/feedback",
                             json={"entry_ids": [target["id"]], "feedback_type": "quality_issue",
                                   "comments": "mention the glucose checks", "rating": 2})
    resp = sim_client.simulate_post(f"{API}/datasets/{dataset_id}/regenerate", json={
        "entry_ids": [target["id"]],
        "regeneration_config": {"model": "gemini-2.5-flash", "temperature": 0.3, "max_tokens": 500,
                                "improve_quality": True, "accept_lower": True}})  # current whatever it scores
    assert resp.status_code == 200, resp.text
    assert resp.json["job_id"].startswith("regenerate_") and resp.json["message"] == "Regeneration started for 1 entries"
    status = wait_job(sim_client, resp.json["job_id"])
    assert status["status"] == "completed" and status["result"]["entries_count"] == 1, status
    after = sim_client.simulate_get(f"{API}/datasets/{dataset_id}/entries/{target['id']}").json
    assert after["revision"] == target["revision"] + 1 and after["regeneration_job_id"] == resp.json["job_id"]
    (regen,) = events_of(data, EntryRegenerated)
    assert regen.answer == after["answer"] and regen.config["temperature"] == 0.3
    prompt = simulator.requests(1)[0]
    assert prompt["model"] == "gemini-2.5-flash" and prompt["temperature"] == 0.3 and prompt["max_tokens"] == 500
    content = prompt["messages"][0]["content"]
    assert target["answer"] in content and "mention the glucose checks" in content and "Topic" in content
    history = sim_client.simulate_get(f"{API}/entries/{dataset_id}/{target['id']}/history").json["events"]
    types = [e["type"] for e in history]
    assert types.index("EntryGenerated") < types.index("RegenerationRequested") < types.index("EntryRegenerated")
    assert history[types.index("EntryGenerated")]["fields"]["answer"] == target["answer"]
    assert types[-1] == "EntryScored"  # scored again


def test_a_dataset_made_with_a_judge_has_its_regenerations_judged(sim_client: testing.TestClient,
                                                                   simulator: Simulator, data: Path) -> None:
    dataset_id, _ = generated(sim_client, sections=2, judge_model="simulated:judge-model")
    entries = sim_client.simulate_get(f"{API}/datasets/{dataset_id}/entries", params={"sort_by": "position"}).json
    target = entries["entries"][0]
    assert "judge" in target["quality"]
    simulator.reset_stats()
    resp = sim_client.simulate_post(f"{API}/datasets/{dataset_id}/regenerate",
                                    json={"entry_ids": [target["id"]],
                                          "regeneration_config": {"temperature": 0.9, "accept_lower": True}})
    status = wait_job(sim_client, resp.json["job_id"])
    assert status["status"] == "completed" and status["result"]["entries_count"] == 1, status
    regen, judged = simulator.requests()
    assert regen["model"] != "judge-model" and regen["temperature"] == 0.9
    assert judged["model"] == "judge-model" and "temperature" not in judged  # the judge's own settings
    after = sim_client.simulate_get(f"{API}/datasets/{dataset_id}/entries/{target['id']}").json
    assert after["revision"] == target["revision"] + 1 and 1.0 <= after["quality"]["judge"] <= 5.0
    assert after["answer"] in judged["messages"][-1]["content"]  # the new revision was judged
    scores = [e for e in events_of(data, EntryScored) if e.entry_id == target["id"]]
    assert "judge" not in scores[-2].quality and scores[-1].quality["judge"] == after["quality"]["judge"]
    assert after["quality_score"] == scores[-1].quality_score


def test_a_resumed_regeneration_judges_what_it_made_before_the_crash(data: Path, make_client: Callable[..., Any],
                                                                     simulator: Simulator) -> None:
    first = make_client(simulator_url=simulator.base_url, start_worker=True)
    dataset_id, _ = generated(first, sections=2, judge_model="simulated:judge-model")
    ids = [e["id"] for e in first.simulate_get(f"{API}/datasets/{dataset_id}/entries").json["entries"]][:2]
    first.app.close()  # type: ignore[attr-defined]
    client = make_client(simulator_url=simulator.base_url)  # no worker: the job is only submitted
    job_id = client.simulate_post(f"{API}/datasets/{dataset_id}/regenerate",
                                  json={"entry_ids": ids, "regeneration_config": {}}).json["job_id"]
    with EventLog.in_dir(data) as log:  # a server regenerated both and scored them, then died before judging
        log.append_many([JobStarted(job_id=job_id)] + [
            ev for i in ids for ev in (
                EntryRegenerated(dataset_id=dataset_id, entry_id=i, job_id=job_id, answer=f"made before the crash {i}"),
                EntryScored(dataset_id=dataset_id, entry_id=i, quality_score=0.5, quality={"length": 0.5}))])
    simulator.reset_stats()
    restarted = make_client(simulator_url=simulator.base_url, start_worker=True)
    status = wait_job(restarted, job_id)
    assert status["status"] == "completed" and status["result"]["entries_count"] == 2, status
    sent = simulator.requests()
    assert len(sent) == 2 and {r["model"] for r in sent} == {"judge-model"}  # judged, not regenerated again
    for i in ids:
        entry = restarted.simulate_get(f"{API}/datasets/{dataset_id}/entries/{i}").json
        assert entry["answer"] == f"made before the crash {i}" and "judge" in entry["quality"]


def test_regenerate_answers_a_questions_dataset_again(make_client: Callable[..., Any], simulator: Simulator,
                                                      data: Path) -> None:
    ids = questions_dataset(data)
    client = make_client(simulator_url=simulator.base_url, start_worker=True)
    resp = client.simulate_post(f"{API}/datasets/{QDS}/regenerate",
                                json={"entry_ids": ids[:2], "regeneration_config": {}})
    status = wait_job(client, resp.json["job_id"])
    assert status["status"] == "completed" and status["result"]["entries_count"] == 2
    sent = [r["messages"][0]["content"] for r in simulator.requests(2)]
    assert sorted(sent) == ["Why is the sky blue, part 0?", "Why is the sky blue, part 1?"]
    answers = {e["id"]: e["answer"] for e in client.simulate_get(f"{API}/datasets/{QDS}/entries").json["entries"]}
    assert answers["entry_q2"] == "Old answer 2." and answers["entry_q0"] != "Old answer 0."


def test_a_resumed_regeneration_skips_what_it_already_made(data: Path, make_client: Callable[..., Any],
                                                           simulator: Simulator) -> None:
    ids = questions_dataset(data)
    client = make_client(simulator_url=simulator.base_url)  # no worker: the job is only submitted
    job_id = client.simulate_post(f"{API}/datasets/{QDS}/regenerate",
                                  json={"entry_ids": ids, "regeneration_config": {}}).json["job_id"]
    with EventLog.in_dir(data) as log:  # a server started it, regenerated the first entry, and was killed
        log.append_many([JobStarted(job_id=job_id),
                         EntryRegenerated(dataset_id=QDS, entry_id=ids[0], job_id=job_id, answer="before the crash")])
    restarted = make_client(simulator_url=simulator.base_url, start_worker=True)
    status = wait_job(restarted, job_id)
    assert status["status"] == "completed" and status["result"]["entries_count"] == 3, status
    assert len(simulator.requests()) == 2  # only the two not made yet
    made = [e.entry_id for e in events_of(data, EntryRegenerated)]
    assert sorted(made) == sorted(ids)
    assert restarted.simulate_get(f"{API}/datasets/{QDS}/entries/{ids[0]}").json["answer"] == "before the crash"


def test_regenerate_refusals(data: Path, make_client: Callable[..., Any], simulator: Simulator) -> None:
    ids = questions_dataset(data)
    client = make_client(simulator_url=simulator.base_url)  # no worker: jobs stay pending
    url = f"{API}/datasets/{QDS}/regenerate"
    assert_error(client.simulate_post(url, json={"entry_ids": ["entry_q0", "nope"], "regeneration_config": {}}),
                 404, "nope")
    assert_error(client.simulate_post(url, json={"entry_ids": ids}), 422, "regeneration_config")
    assert_error(client.simulate_post(url, json={"entry_ids": ids, "regeneration_config": {"temperature": 9}}), 422,
                 "temperature")
    assert_error(client.simulate_post(url, json={"entry_ids": ids, "regeneration_config": {"colour": 1}}), 422,
                 "colour")
    assert_error(client.simulate_post(f"{API}/datasets/nope/regenerate",
                                      json={"entry_ids": ids, "regeneration_config": {}}), 404)
    first = client.simulate_post(url, json={"entry_ids": ids[:1], "regeneration_config": {}})
    assert first.status_code == 200
    assert_error(client.simulate_post(url, json={"entry_ids": ids, "regeneration_config": {}}), 409,
                 first.json["job_id"])


def test_regenerate_without_the_simulator_needs_a_model(data: Path, make_client: Callable[..., Any]) -> None:
    ids = questions_dataset(data)
    client = make_client()
    assert_error(client.simulate_post(f"{API}/datasets/{QDS}/regenerate",
                                      json={"entry_ids": ids, "regeneration_config": {}}), 400, "simulator")


# --- auth and errors ----------------------------------------------------------------------------------------


def test_bearer_token_guards_every_route(make_client: Callable[..., Any]) -> None:
    token = "s3cret-token-value"
    client = make_client(token=token)
    for path in (f"{API}/openapi.json", f"{API}/datasets", f"{API}/jobs", f"{API}/health", f"{API}/nope"):
        assert_error(client.simulate_get(path), 401, "Bearer")
        assert_error(client.simulate_get(path, headers={"Authorization": "Bearer wrong"}), 401)
        assert_error(client.simulate_get(path, headers={"Authorization": token}), 401)
    ok = client.simulate_get(f"{API}/datasets", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    # the review page's own files hold no data: a browser loads them, then asks its user for the token
    assert client.simulate_get("/").status_code == 200
    assert client.simulate_get("/static/app.js").status_code == 200
    assert_error(client.simulate_post("/", json={}), 401)
    assert_error(client.simulate_get("/static/../api/v1/datasets"), 401)
    assert client.simulate_get(f"{API}/datasets").headers["www-authenticate"].startswith("Bearer")
    doc = client.simulate_get(f"{API}/openapi.json", headers={"Authorization": f"Bearer {token}"}).json
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert token not in json.dumps(doc)


def test_errors_are_json_and_never_a_traceback(client: testing.TestClient, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    assert_error(client.simulate_get(f"{API}/nope"), 404, "openapi.json")
    assert_error(client.simulate_delete(f"{API}/datasets"), 405, "DELETE")
    assert_error(client.simulate_get(f"{API}/datasets/x", headers={"Accept": "application/xml"}), 404)

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(client.app.ctx.rm.datasets, "datasets", boom)  # type: ignore[attr-defined]
    resp = client.simulate_get(f"{API}/datasets")
    assert_error(resp, 500)
    assert "secret internal detail" not in resp.text
    assert "secret internal detail" in caplog.text  # logged on the server side


def test_health(client: testing.TestClient) -> None:
    health = client.simulate_get(f"{API}/health").json
    assert health["status"] == "ok" and health["worker"] is False and health["seq"] == 0


def test_no_secret_in_the_log_or_responses(make_client: Callable[..., Any], simulator: Simulator, data: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-very-secret-key-0123456789"
    monkeypatch.setenv("DSET_API_KEY", secret)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    token = "tok-very-secret-0123456789"
    client = make_client(token=token, simulator_url=simulator.base_url, start_worker=True)
    auth = {"Authorization": f"Bearer {token}"}
    project = client.simulate_post(f"{API}/projects", json={"name": "med"}, headers=auth).json["id"]
    client.simulate_post(f"{API}/projects/{project}/documents", headers=auth,
                         json={"filename": "a.md", "content": markdown(2)})
    job = client.simulate_post(f"{API}/datasets/generate", headers=auth,
                               json={"project_id": project, "classification_model": "openai"}).json["job_id"]
    deadline = time.monotonic() + 30
    while client.simulate_get(f"{API}/jobs/{job}", headers=auth).json["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    log_text = (data / LOG_NAME).read_text()
    bodies = [client.simulate_get(f"{API}/{p}", headers=auth).text for p in ("jobs", "datasets", "openapi.json")]
    for text in (log_text, *bodies):
        assert secret not in text and token not in text


def test_servers_sharing_a_data_dir_share_one_job_worker(make_client: Callable[..., testing.TestClient],
                                                          make_simulator: Callable[..., Simulator], data: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker of the first server runs the jobs the second accepts and stops those it cancels; when the
    first server stops, the second's worker takes over."""
    monkeypatch.setattr("dsetlog.jobs.worker.WATCH_INTERVAL", 0.1)
    sim = make_simulator(latency_ms=100)
    first = make_client(simulator_url=sim.base_url, start_worker=True)
    second = make_client(simulator_url=sim.base_url, start_worker=True)
    assert first.app.ctx.worker.enabled and not second.app.ctx.worker.enabled  # type: ignore[attr-defined]
    assert second.simulate_get(f"{API}/health").json["worker"] is False
    time.sleep(0.5)  # watching the log shares the server's read model: no second model while no job runs
    assert first.app.ctx.worker._rm is None  # type: ignore[attr-defined]

    project = new_project(second, 3)
    job = second.simulate_post(f"{API}/datasets/generate", json={"project_id": project}).json["job_id"]
    assert wait_job(second, job)["status"] == "completed"
    assert first.simulate_get(f"{API}/jobs/{job}").json["attempts"] == 1

    big = new_project(second, 40, name="big")
    slow = second.simulate_post(f"{API}/datasets/generate", json={"project_id": big, "concurrency": 1}).json["job_id"]
    deadline = time.monotonic() + 30
    while second.simulate_get(f"{API}/jobs/{slow}").json["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    assert first.app.ctx.worker.is_running(slow)  # type: ignore[attr-defined]
    resp = second.simulate_post(f"{API}/jobs/{slow}/cancel", json={"reason": "from the other server"})
    assert resp.json["status"] == "failed" and resp.json["cancelled"], resp.json
    deadline = time.monotonic() + 30
    while first.app.ctx.worker.is_running(slow):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the running job was not stopped"
        time.sleep(0.05)
    made = len(events_of(data, EntryGenerated))
    time.sleep(0.5)
    assert len(events_of(data, EntryGenerated)) == made  # nothing more was asked for
    assert [e.job_id for e in events_of(data, JobCancelled)] == [slow]  # recorded once, by the request

    first.app.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while not second.simulate_get(f"{API}/health").json["worker"]:
        assert time.monotonic() < deadline, "the second server did not take the jobs over"
        time.sleep(0.05)
    third = second.simulate_post(f"{API}/datasets/generate", json={"project_id": project, "dataset_name": "again"})
    assert wait_job(second, third.json["job_id"])["status"] == "completed"


def test_requests_decode_into_the_declared_types() -> None:
    from api.schemas import EntriesQuery, GenerateEvaluationRequest

    req = msgspec.json.decode(b'{"project_id": 1}', type=GenerateEvaluationRequest)
    assert req.project_id == "1" and req.include_evaluation_sets and req.evaluation
    assert req.prompt_name == "evaluation_qa"
    q = msgspec.convert({"page": "2", "flagged": "false"}, EntriesQuery, strict=False)
    assert q.page == 2 and q.flagged is False and q.sort_by == "quality"
