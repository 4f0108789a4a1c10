"""POST /datasets/generate with ``batch``: the server's job sends the entries' calls through the simulator's Batch
API (the same pipeline setting as `dset datasets generate --batch`), its other roles staying online; and POST
/datasets/{dataset_id}/regenerate with ``batch``: the new revisions' requests, the same as online, as a batch."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from falcon import testing
from helpers import cancel_batch_job, dataset_of, regenerate, wait_job, wait_status

from dsetlog.simulator.server import Simulator
from dsetlog.store.events import (
    BatchCancelled,
    BatchProgress,
    BatchSubmitted,
    EntryGenerated,
    EntryRegenerated,
    EntryScored,
)
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
    [batch] = cancel_batch_job(client, job_id)["batches"]
    assert sim.stats()["batch_cancels"] == 1
    [cancelled] = events(data, BatchCancelled)
    assert cancelled.batch_id == batch["batch_id"]
    assert len(events(data, BatchSubmitted)) == 1  # nothing was submitted again


# --- POST /datasets/{dataset_id}/regenerate with ``batch`` -------------------------------------------------------


def input_lines(sim: Simulator, file_id: str) -> dict[str, dict[str, Any]]:
    """custom_id -> body of each line of an input file the simulator was sent."""
    with urllib.request.urlopen(f"{sim.base_url}/files/{file_id}/content", timeout=10) as resp:
        lines = [json.loads(line) for line in resp.read().splitlines()]
    return {line["custom_id"]: line["body"] for line in lines}


def test_openapi_documents_the_regenerate_batch_fields(make_client: Callable[..., testing.TestClient]) -> None:
    fields = make_client().simulate_get(f"{API}/openapi.json").json["components"]["schemas"]["RegenerateRequest"]
    props = fields["properties"]
    assert props["batch"]["default"] is False and props["batch_fallback"]["default"] == "none"
    assert set(props["batch_fallback"]["enum"]) == {"none", "online"} and props["batch_poll"]["exclusiveMinimum"] == 0


def test_a_batch_regenerate_job_sends_the_online_requests_as_a_batch(make_client: Callable[..., testing.TestClient],
                                                                     make_simulator: Callable[..., Simulator],
                                                                     data: Path) -> None:
    sim = make_simulator(batch_delay_s=0.3)
    client = make_client(simulator_url=sim.base_url, start_worker=True)
    dataset_id, ids = dataset_of(client, markdown(SECTIONS), datasets_per_chunk=2)
    sim.reset_stats()
    online_job = regenerate(client, dataset_id, ids[:2])  # the same two entries online, for their request bodies
    online = wait_job(client, online_job)
    assert online["status"] == "completed" and not online["batches"], online
    sent_online = sim.requests()
    assert len(sent_online) == 2

    sim.reset_stats()
    job_id = regenerate(client, dataset_id, ids, batch=True, batch_poll=0.05)
    status = wait_job(client, job_id)
    assert status["status"] == "completed" and status["kind"] == "regenerate", status
    assert status["result"]["entries_count"] == len(ids) and not status["result"]["failed"]
    stats = sim.stats()
    assert stats["batch_creates"] == 1 and stats["batch_lines"] == len(ids)
    assert stats.get("requests", 0) == 0  # not one online call (the dataset has no judge)
    [submitted] = events(data, BatchSubmitted)
    assert submitted.run_id == job_id and len(submitted.item_ids) == len(ids)
    # batch_poll 0.05 s: the 0.3 s batch was seen moving several times (the default first poll is at 5 s, by when
    # it would have been seen once, ended)
    progress = [e for e in events(data, BatchProgress) if e.batch_id == submitted.batch_id]
    assert len(progress) >= 3, progress
    [batch] = status["batches"]
    assert (batch["batch_id"], batch["status"], batch["ended"], batch["completed"]) == (
        submitted.batch_id, "completed", True, len(ids))
    # the request bodies the online job sent, line for line
    bodies = input_lines(sim, submitted.input_file_id)
    item_of = {e.entry_id: e.item_id for e in events(data, EntryGenerated)}
    assert sorted(map(canonical, [bodies[item_of[i]] for i in ids[:2]])) == sorted(map(canonical, sent_online))
    assert set(bodies) == {item_of[i] for i in ids}  # one line an entry, its work item's id the custom id
    assert all(b["temperature"] == 0.4 and b["max_tokens"] == 300 for b in bodies.values())
    # the same revisions: one per entry, current, scored; the batch named in its config
    revisions = [e for e in events(data, EntryRegenerated) if e.job_id == job_id]
    assert sorted(e.entry_id for e in revisions) == sorted(ids)
    assert all(e.config["batch_id"] == submitted.batch_id and e.current and e.answer for e in revisions)
    scored = {e.entry_id for e in events(data, EntryScored)}
    assert set(ids) <= scored
    entry = client.simulate_get(f"{API}/datasets/{dataset_id}/entries/{ids[0]}").json
    assert entry["revision"] == 3 and entry["regeneration_job_id"] == job_id
    assert entry["answer"] == next(e.answer for e in revisions if e.entry_id == ids[0])
    # at batch prices: half the profile's, where the online job paid all of it
    online_revisions = [e for e in events(data, EntryRegenerated) if e.job_id == online_job]
    assert online["result"]["cost"] == pytest.approx(list_price(online_revisions), abs=1e-6) and online["result"]["cost"] > 0
    assert status["result"]["cost"] == pytest.approx(list_price(revisions) * 0.5, abs=1e-6)


def canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True)


def list_price(revisions: list[EntryRegenerated]) -> float:
    """What these revisions' tokens cost at their model's online prices."""
    from dsetlog.llm.providers import PRICES

    return sum(e.usage.prompt_tokens * PRICES[e.model][0] + e.usage.completion_tokens * PRICES[e.model][1]
               for e in revisions) / 1e6


def test_regenerate_batch_fields_are_checked(make_client: Callable[..., testing.TestClient],
                                            make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator()
    client = make_client(simulator_url=sim.base_url)
    url = f"{API}/datasets/nope/regenerate"
    bad = client.simulate_post(url, json={"entry_ids": ["e"], "regeneration_config": {}, "batch_fallback": "online"})
    assert bad.status_code == 422 and "batch_fallback goes with batch" in bad.text
    bad = client.simulate_post(url, json={"entry_ids": ["e"], "regeneration_config": {}, "batch": True,
                                          "batch_poll": 0})
    assert bad.status_code == 422 and "batch_poll" in bad.text
