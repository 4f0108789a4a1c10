"""PUT /datasets/{dataset_id}/entries/{entry_id} scores the edit again (dsetlog.generation.rescoring).

Datasets are made by real jobs in the app's worker against the simulator on loopback; the edits go through
falcon.testing, the log is read back to see that each change and its new score are one append, and the
downloads show the threshold applied again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from falcon import testing
from harness import markdown

from dsetlog.store.events import EntryEdited
from dsetlog.store.log import EventLog

API = "/api/v1"


@pytest.fixture
def client(make_client: Callable[..., testing.TestClient], simulator: Any) -> testing.TestClient:
    return make_client(simulator_url=simulator.base_url, start_worker=True)


def dataset(client: testing.TestClient, sections: int = 3, **body: Any) -> str:
    pid = client.simulate_post(f"{API}/projects", json={"name": "port"}).json["id"]
    resp = client.simulate_post(f"{API}/projects/{pid}/documents", json={
        "filename": "guide.md", "content": markdown(sections), "strategy": "markdown"})
    assert resp.status_code == 201, resp.text
    job = client.simulate_post(f"{API}/datasets/generate", json={"project_id": pid, **body}).json["job_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.simulate_get(f"{API}/datasets/generate/{job}/status").json
        if status["status"] in ("completed", "failed"):
            assert status["status"] == "completed", status
            return str(status["result"]["dataset_id"])
        time.sleep(0.05)
    raise AssertionError("the job did not finish")


def entries(client: testing.TestClient, dataset_id: str) -> list[dict[str, Any]]:
    return client.simulate_get(f"{API}/datasets/{dataset_id}/entries",
                               params={"per_page": 500, "sort_by": "position"}).json["entries"]


def put(client: testing.TestClient, dataset_id: str, entry_id: str, **body: Any) -> dict[str, Any]:
    resp = client.simulate_put(f"{API}/datasets/{dataset_id}/entries/{entry_id}", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json["entry"]


def downloaded_ids(client: testing.TestClient, dataset_id: str) -> set[str]:
    resp = client.simulate_get(f"{API}/datasets/{dataset_id}/download", params={"format_type": "jsonl"})
    assert resp.status_code == 200, resp.text
    return {json.loads(line)["id"] for line in resp.text.splitlines() if line.strip()}


def appended_after(data: Path, entry_id: str) -> list[tuple[int, str]]:
    """(seq, type) of the log's last EntryEdited naming the entry and every record after it."""
    with EventLog.in_dir(data) as log:
        recs = list(log.read())
    last = max(i for i, r in enumerate(recs) if isinstance(r.event, EntryEdited) and r.event.entry_id == entry_id)
    return [(r.seq, r.event.type) for r in recs[last:]]


@pytest.mark.parametrize("analyze", [True, False])
def test_an_emptied_answer_scores_zero_and_leaves_the_download(client: testing.TestClient, data: Path,
                                                              analyze: bool) -> None:
    dataset_id = dataset(client, datasets_per_chunk=2, analyze_quality=analyze)
    target = next(e for e in entries(client, dataset_id) if not e["below_threshold"])
    assert target["id"] in downloaded_ids(client, dataset_id)
    edited = put(client, dataset_id, target["id"], answer="")  # the guide's PUT, with the answer emptied
    assert edited["answer"] == "" and edited["quality"]["non_empty"] == 0.0 and edited["quality_score"] == 0.0
    assert edited["below_threshold"] and edited["quality_analyzed"] is analyze
    assert target["id"] not in downloaded_ids(client, dataset_id)
    after = appended_after(data, target["id"])
    assert [t for _, t in after] == ["EntryEdited", "EntryScored"] and after[1][0] == after[0][0] + 1  # one append
    # and an answer written back in is scored again: in the download once more
    chunk_sentence = "The harbour opens at dawn and closes at dusk."
    restored = put(client, dataset_id, target["id"], answer=chunk_sentence)
    assert restored["quality_score"] >= 0.7 and not restored["below_threshold"]
    assert target["id"] in downloaded_ids(client, dataset_id)


def test_an_edit_is_scored_for_groundedness_in_its_chunk_and_loses_its_judge_grade(
        client: testing.TestClient) -> None:
    dataset_id = dataset(client, datasets_per_chunk=2, judge_model="simulated:judge-model")
    target = entries(client, dataset_id)[0]
    assert "judge" in target["quality"]
    edited = put(client, dataset_id, target["id"], answer="Bananas ripen slowly in Ecuadorian warehouses.")
    assert edited["quality"]["groundedness"] < 0.5 and "judge" not in edited["quality"]  # the judge graded other text
    assert edited["quality_score"] < target["quality_score"] and edited["quality_analyzed"]
    same = put(client, dataset_id, target["id"], category="Bananas", feedback="recategorised")
    assert same["quality_score"] == edited["quality_score"]  # a category or a comment changes no score


def test_an_edit_can_make_or_end_a_near_duplicate(client: testing.TestClient, data: Path) -> None:
    dataset_id = dataset(client, sections=4, datasets_per_chunk=1)
    first, second, third = entries(client, dataset_id)[:3]
    assert first["duplicate_of"] is None and third["duplicate_of"] is None
    copy = put(client, dataset_id, third["id"], question=first["question"], answer=first["answer"])
    assert copy["duplicate_of"] == first["id"] and copy["quality_score"] <= first["quality_score"] / 2 + 1e-9
    # the copy is the duplicate, wherever it stands: here the earlier entry, edited into a copy of a later one
    put(client, dataset_id, third["id"], question=third["question"], answer=third["answer"])
    edited = put(client, dataset_id, first["id"], question=second["question"], answer=second["answer"])
    assert edited["duplicate_of"] == second["id"]
    untouched = client.simulate_get(f"{API}/datasets/{dataset_id}/entries/{second['id']}").json
    assert untouched["duplicate_of"] is None and untouched["quality_score"] == second["quality_score"]
    # an entry marked as a copy of the edited one is freed once the edit makes them differ
    put(client, dataset_id, first["id"], question=first["question"], answer=first["answer"])
    marked = put(client, dataset_id, third["id"], question=first["question"], answer=first["answer"])
    assert marked["duplicate_of"] == first["id"]
    put(client, dataset_id, first["id"], question=second["question"] + " Again?", answer="Lighthouses are tall.")
    after = appended_after(data, first["id"])
    assert [t for _, t in after] == ["EntryEdited", "EntryScored", "EntryScored"]  # the freed one, same append
    freed = client.simulate_get(f"{API}/datasets/{dataset_id}/entries/{third['id']}").json
    assert freed["duplicate_of"] is None and freed["quality_score"] > marked["quality_score"]
