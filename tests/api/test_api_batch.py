"""POST /datasets/generate with ``batch``: the server's job sends the entries' calls through the simulator's Batch
API (the same pipeline setting as `dset datasets generate --batch`), its other roles staying online."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from falcon import testing
from helpers import wait_job

from dsetlog.simulator.server import Simulator
from dsetlog.store.events import BatchCancelled, BatchSubmitted, EntryGenerated
from dsetlog.store.log import EventLog

API = "/api/v1"
SECTIONS = 4


def markdown(sections: int) -> str:
    return "\n\n".join(f"# Topic {i}\n\nThe harbour opens at dawn on day {i} and closes at dusk. Boats unload "
                       f"catch {i} at the north quay." for i in range(sections))


def events(data: Path, kind: type) -> list[Any]:
    with EventLog.in_dir(data) as log:
        return [r.event for r in log.read() if isinstance(r.event, kind)]


def test_openapi_documents_the_batch_fields(make_client: Callable[..., testing.TestClient]) -> None:
    doc = make_client().simulate_get(f"{API}/openapi.json").json
    fields = doc["components"]["schemas"]["GenerateRequest"]["properties"]
    assert fields["batch"]["default"] is False and fields["batch_fallback"]["default"] == "none"
    assert set(fields["batch_fallback"]["enum"]) == {"none", "online"}


def test_a_generate_job_with_batch_submits_a_batch(make_client: Callable[..., testing.TestClient],
                                                   make_simulator: Callable[..., Simulator], data: Path) -> None:
    sim = make_simulator(batch_delay_s=0.2)
    client = make_client(simulator_url=sim.base_url, start_worker=True)
    project = client.simulate_post(f"{API}/projects", json={"name": "med"}).json
    resp = client.simulate_post(f"{API}/projects/{project['id']}/documents",
                                json={"filename": "notes.md", "content": markdown(SECTIONS), "strategy": "markdown"})
    assert resp.status_code == 201, resp.text
    resp = client.simulate_post(f"{API}/datasets/generate", json={
        "project_id": project["id"], "batch": True, "batch_poll": 0.05, "datasets_per_chunk": 3})
    assert resp.status_code == 200, resp.text
    status = wait_job(client, resp.json["job_id"])
    assert status["status"] == "completed", status
    assert status["result"]["entries_count"] == SECTIONS * 3
    stats = sim.stats()
    assert stats["batch_creates"] == 1 and stats["batch_lines"] == SECTIONS
    assert stats.get("requests", 0) == 0  # no online call: the entries went as a batch, no other role called
    [submitted] = events(data, BatchSubmitted)
    per_item = Counter(e.item_id for e in events(data, EntryGenerated))
    assert len(per_item) == SECTIONS * 3 and set(per_item.values()) == {1}
    assert all(e.metadata["batch_id"] == submitted.batch_id for e in events(data, EntryGenerated))
    bad = client.simulate_post(f"{API}/datasets/generate", json={"project_id": project["id"],
                                                                 "batch_fallback": "online"})
    assert bad.status_code in (400, 422) and "batch_fallback goes with batch" in bad.text


def batch_job(client: testing.TestClient, sections: int = SECTIONS) -> str:
    project = client.simulate_post(f"{API}/projects", json={"name": "med"}).json
    resp = client.simulate_post(f"{API}/projects/{project['id']}/documents",
                                json={"filename": "notes.md", "content": markdown(sections), "strategy": "markdown"})
    assert resp.status_code == 201, resp.text
    resp = client.simulate_post(f"{API}/datasets/generate", json={
        "project_id": project["id"], "batch": True, "batch_poll": 0.05, "datasets_per_chunk": 2})
    assert resp.status_code == 200, resp.text
    return resp.json["job_id"]


def wait_status(client: testing.TestClient, job_id: str, ok: Callable[[dict[str, Any]], bool],
                timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = client.simulate_get(f"{API}/datasets/generate/{job_id}/status").json
        if ok(status):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id}: {status}")


def test_a_batch_jobs_status_shows_its_batches_and_their_eta(make_client: Callable[..., testing.TestClient],
                                                             make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(batch_delay_s=4.0)
    client = make_client(simulator_url=sim.base_url, start_worker=True)
    job_id = batch_job(client)
    mid = wait_status(client, job_id, lambda s: any(0 < b["completed"] < b["total"] for b in s["batches"]))
    [batch] = mid["batches"]
    assert mid["status"] == "running" and batch["status"] == "in_progress" and not batch["ended"]
    assert batch["total"] == SECTIONS and batch["failed"] == 0 and batch["batch_id"].startswith("batch_")
    assert mid["estimated_completion"] is not None and mid["estimated_completion"].endswith("Z")
    done = wait_job(client, job_id)
    assert done["status"] == "completed", done
    [batch] = done["batches"]
    assert batch["status"] == "completed" and batch["ended"] and batch["completed"] == SECTIONS
    doc = client.simulate_get(f"{API}/openapi.json").json
    assert "batches" in doc["components"]["schemas"]["JobStatus"]["properties"]


def test_cancelling_a_batch_job_cancels_its_batches(make_client: Callable[..., testing.TestClient],
                                                    make_simulator: Callable[..., Simulator], data: Path) -> None:
    sim = make_simulator(batch_delay_s=6.0)
    client = make_client(simulator_url=sim.base_url, start_worker=True)
    job_id = batch_job(client)
    wait_status(client, job_id, lambda s: any(b["status"] == "in_progress" for b in s["batches"]))
    resp = client.simulate_post(f"{API}/jobs/{job_id}/cancel", json={"reason": "enough"})
    assert resp.status_code == 200 and resp.json["cancelled"], resp.json
    status = wait_status(client, job_id, lambda s: all(b["ended"] for b in s["batches"]))
    assert status["status"] == "failed" and status["error"] == "cancelled: enough"
    [batch] = status["batches"]
    assert batch["status"] == "cancelled" and status["estimated_completion"] is None
    assert sim.stats()["batch_cancels"] == 1
    [cancelled] = events(data, BatchCancelled)
    assert cancelled.batch_id == batch["batch_id"]
    assert len(events(data, BatchSubmitted)) == 1  # nothing was submitted again
