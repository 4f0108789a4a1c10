"""POST /datasets/{dataset_id}/regenerate with ``batch``: the new revisions' requests through the simulator's Batch API
(its own HTTP server, its clock-driven batches), run by the server's job worker: a `dset serve` killed with kill -9
after the submission and started again, error lines and expired batches retried, a fallback online, a cancel, a
server without the Batch API, and a budget that the estimate at batch prices must fit."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from falcon import testing
from harness import Server, clean_env
from helpers import cancel_batch_job, dataset_of, regenerate, wait_job, wait_status
from test_generate_batch import log_count, wait_for

from dsetlog.engine.progress import Budget
from dsetlog.generation.batching import job_settings
from dsetlog.generation.regeneration import RegenerationConfig, RegenResult, run_regeneration
from dsetlog.simulator.server import Simulator
from dsetlog.store.events import (
    AttemptFailed,
    BatchCancelled,
    BatchCompleted,
    BatchExpired,
    BatchSubmitted,
    EntryRegenerated,
    ItemBookmarked,
    JobStarted,
)
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel

MakeSim = Callable[..., Simulator]
MakeClient = Callable[..., testing.TestClient]
API = "/api/v1"
SECTIONS, PER_CHUNK = 4, 2
FAST = {"batch": True, "batch_poll": 0.05}


def markdown(sections: int = SECTIONS) -> str:
    return "\n\n".join(f"# Topic {i}\n\nThe harbour opens at dawn on day {i} and closes at dusk. Boats unload "
                       f"catch {i} at the north quay." for i in range(sections))


def events(data: Path, kind: type) -> list[Any]:
    with EventLog.in_dir(data) as log:
        return [r.event for r in log.read() if isinstance(r.event, kind)]


def revisions(data: Path, job_id: str) -> Counter[str]:
    """EntryRegenerated events of the job, by entry."""
    return Counter(e.entry_id for e in events(data, EntryRegenerated) if e.job_id == job_id)


def submitted(data: Path, job_id: str) -> list[BatchSubmitted]:
    return [e for e in events(data, BatchSubmitted) if e.run_id == job_id]


def in_process(make_client: MakeClient, sim: Simulator) -> tuple[testing.TestClient, str, list[str]]:
    """A server (its worker on) whose every model the simulator answers, with a dataset generated online."""
    client = make_client(simulator_url=sim.base_url, start_worker=True)
    dataset_id, ids = dataset_of(client, markdown(), datasets_per_chunk=PER_CHUNK)
    sim.reset_stats()
    return client, dataset_id, ids


# --- a real server, killed -----------------------------------------------------------------------------------


def serve(tmp_path: Path, data: Path, sim: Simulator, name: str) -> Server:
    """`dset serve` whose "simulated" profile is the test's simulator (it outlives the server: the provider)."""
    return Server(data, tmp_path / f"{name}.log", env=clean_env(SIMULATED_BASE_URL=sim.base_url))


def test_kill_9_after_submission_then_the_resumed_job_polls_the_same_batch(tmp_path: Path, make_simulator: MakeSim,
                                                                           servers: list[Server]) -> None:
    sim = make_simulator(batch_delay_s=4.0)
    data = tmp_path / "data"
    server = serve(tmp_path, data, sim, "first")
    servers.append(server)
    _, project, _ = server.call("POST", "/projects", {"name": "med"})
    status, _, _ = server.call("POST", f"/projects/{project['id']}/documents",
                               {"filename": "notes.md", "content": markdown(), "strategy": "markdown"})
    assert status == 201
    models = {f"{role}_model": "simulated" for role in ("classification", "parsing", "chunking")}
    _, accepted, _ = server.call("POST", "/datasets/generate", {"project_id": project["id"],
                                                              "datasets_per_chunk": PER_CHUNK, **models})
    dataset_id = server.wait_job(accepted["job_id"])["result"]["dataset_id"]
    ids = [e["id"] for e in server.get(f"/datasets/{dataset_id}/entries?per_page=100")["entries"]]
    assert len(ids) == SECTIONS * PER_CHUNK
    sim.reset_stats()
    status, accepted, _ = server.call("POST", f"/datasets/{dataset_id}/regenerate", {
        "entry_ids": ids, "regeneration_config": {"model": "simulated", "accept_lower": True}, **FAST})
    assert status == 200, accepted
    job_id = accepted["job_id"]
    wait_for(lambda: log_count(data, "BatchProgress") >= 2)  # submitted, being polled
    server.proc.kill()  # SIGKILL: no clean-up of any kind
    server.proc.wait(timeout=30)
    assert sim.stats()["batch_creates"] == 1 and not revisions(data, job_id)

    again = serve(tmp_path, data, sim, "second")
    servers.append(again)
    done = again.wait_job(job_id)
    assert done["status"] == "completed" and done["attempts"] == 2, done
    assert done["result"]["entries_count"] == len(ids) and not done["result"]["failed"]
    stats = sim.stats()
    assert stats["batch_creates"] == 1 and stats["file_uploads"] == 1  # the batch submitted before was polled
    assert stats.get("requests", 0) == 0  # and nothing went online
    [batch] = submitted(data, job_id)
    entries = again.get(f"/datasets/{dataset_id}/entries?per_page=100")["entries"]
    assert sorted(batch.item_ids) == sorted(e["item_id"] for e in entries)  # each entry once, in the one batch
    per_entry = revisions(data, job_id)
    assert sorted(per_entry) == sorted(ids) and set(per_entry.values()) == {1}  # 0 duplicates
    assert [e.batch_id for e in events(data, BatchCompleted)] == [batch.batch_id]
    assert len([e for e in events(data, JobStarted) if e.job_id == job_id]) == 2
    [shown] = done["batches"]
    assert shown["batch_id"] == batch.batch_id and shown["ended"] and shown["completed"] == len(ids)
    assert again.stop() == 0
    assert "Traceback" not in server.log_text() + again.log_text()


# --- the server's worker in this process ------------------------------------------------------------------------


def test_a_resumed_batch_job_does_not_request_what_it_regenerated_before(make_client: MakeClient,
                                                                         make_simulator: MakeSim, data: Path) -> None:
    sim = make_simulator(batch_delay_s=0.2)
    client, dataset_id, ids = in_process(make_client, sim)
    client.app.close()  # type: ignore[attr-defined]
    idle = make_client(simulator_url=sim.base_url)  # no worker: the job is only submitted
    job_id = regenerate(idle, dataset_id, ids, **FAST)
    with EventLog.in_dir(data) as log:  # a server started it, regenerated two entries online, and was killed
        log.append_many([JobStarted(job_id=job_id)] + [
            EntryRegenerated(dataset_id=dataset_id, entry_id=i, job_id=job_id, answer=f"before the crash {i}")
            for i in ids[:2]])
    restarted = make_client(simulator_url=sim.base_url, start_worker=True)
    status = wait_job(restarted, job_id)
    assert status["status"] == "completed" and status["result"]["entries_count"] == len(ids), status
    [batch] = submitted(data, job_id)
    item_of = {e["id"]: e["item_id"] for e in
               restarted.simulate_get(f"{API}/datasets/{dataset_id}/entries", params={"per_page": 100}).json["entries"]}
    assert sorted(batch.item_ids) == sorted(item_of[i] for i in ids[2:])
    assert sim.stats()["batch_lines"] == len(ids) - 2
    assert set(revisions(data, job_id).values()) == {1}
    entry = restarted.simulate_get(f"{API}/datasets/{dataset_id}/entries/{ids[0]}").json
    assert entry["answer"] == f"before the crash {ids[0]}"


def test_error_lines_are_retried_in_a_new_batch(make_client: MakeClient, make_simulator: MakeSim, data: Path) -> None:
    # every line fails in its first batch and gets through in the next (a custom id batched once before is spared)
    sim = make_simulator(batch_delay_s=0.1, batch_error_rate=1.0, max_faults_per_prompt=1)
    client, dataset_id, ids = in_process(make_client, sim)
    job_id = regenerate(client, dataset_id, ids, **FAST)
    status = wait_job(client, job_id)
    assert status["status"] == "completed" and status["result"]["entries_count"] == len(ids), status
    assert [len(b.item_ids) for b in submitted(data, job_id)] == [len(ids), len(ids)]
    first, second = events(data, BatchCompleted)
    assert (first.failed, first.retried, first.answered) == (len(ids), len(ids), 0)
    assert (second.failed, second.answered) == (0, len(ids))
    assert len([e for e in events(data, AttemptFailed) if e.run_id == job_id]) == len(ids)
    per_entry = revisions(data, job_id)
    assert sorted(per_entry) == sorted(ids) and set(per_entry.values()) == {1}
    assert {e.config["batch_id"] for e in events(data, EntryRegenerated) if e.job_id == job_id} == {
        second.batch_id}
    assert [b["status"] for b in status["batches"]] == ["completed", "completed"]
    assert sim.stats().get("requests", 0) == 0


def test_error_lines_go_online_with_batch_fallback_online(make_client: MakeClient, make_simulator: MakeSim,
                                                          data: Path) -> None:
    sim = make_simulator(batch_delay_s=0.1, batch_error_rate=1.0, max_faults_per_prompt=1)
    client, dataset_id, ids = in_process(make_client, sim)
    job_id = regenerate(client, dataset_id, ids, batch_fallback="online", **FAST)
    status = wait_job(client, job_id)
    assert status["status"] == "completed" and status["result"]["entries_count"] == len(ids), status
    assert len(submitted(data, job_id)) == 1 and sim.stats()["batch_creates"] == 1
    assert sim.stats()["requests"] == len(ids)  # each failed line asked once online
    per_entry = revisions(data, job_id)
    assert sorted(per_entry) == sorted(ids) and set(per_entry.values()) == {1}
    assert not any("batch_id" in e.config for e in events(data, EntryRegenerated))


def test_an_expired_batch_leaves_its_rest_to_new_batches_within_the_retry_budget(make_client: MakeClient,
                                                                                  make_simulator: MakeSim,
                                                                                  data: Path) -> None:
    sim = make_simulator(batch_delay_s=0.1, batch_expire=True)  # every batch expires with half its lines done
    client, dataset_id, ids = in_process(make_client, sim)
    assert len(ids) == 8
    job_id = regenerate(client, dataset_id, ids, **FAST)
    status = wait_job(client, job_id)
    # 8 -> 4 answered, 4 left -> 2, 2 left -> 1, 1 left -> 0: its fourth submission was its last (3 retries)
    assert [len(b.item_ids) for b in submitted(data, job_id)] == [8, 4, 2, 1]
    assert [(e.answered, e.retried, e.bookmarked) for e in events(data, BatchExpired)] == [
        (4, 4, 0), (2, 2, 0), (1, 1, 0), (0, 0, 1)]
    per_entry = revisions(data, job_id)
    assert len(per_entry) == 7 and set(per_entry.values()) == {1}
    [left] = set(ids) - set(per_entry)
    assert status["status"] == "failed" and status["result"] is None, status
    assert status["error"] == f"1 entries could not be regenerated: {left}"
    assert len([e for e in events(data, ItemBookmarked) if e.run_id == job_id]) == 1


def test_cancelling_a_batch_regenerate_job_cancels_its_batch(make_client: MakeClient, make_simulator: MakeSim,
                                                             data: Path) -> None:
    sim = make_simulator(batch_delay_s=6.0)
    client, dataset_id, ids = in_process(make_client, sim)
    before = {i: client.simulate_get(f"{API}/datasets/{dataset_id}/entries/{i}").json for i in ids}
    job_id = regenerate(client, dataset_id, ids, **FAST)
    wait_status(client, job_id, lambda s: any(b["status"] == "in_progress" and b["completed"] > 0
                                              for b in s["batches"]))
    [batch] = cancel_batch_job(client, job_id)["batches"]
    assert sim.stats()["batch_cancels"] == 1 and sim.stats()["batch_creates"] == 1  # nothing submitted again
    [cancelled] = events(data, BatchCancelled)
    per_entry = revisions(data, job_id)
    assert cancelled.batch_id == batch["batch_id"] and 0 < cancelled.answered == len(per_entry) < len(ids)
    assert set(per_entry.values()) == {1}
    assert not [e for e in events(data, ItemBookmarked) if e.run_id == job_id]  # left for another job, not failed
    for i in ids:  # what the batch answered is kept; the others are as they were
        now = client.simulate_get(f"{API}/datasets/{dataset_id}/entries/{i}").json
        assert now["revision"] == before[i]["revision"] + (i in per_entry)


def test_a_server_without_the_batch_api(make_client: MakeClient, make_simulator: MakeSim, data: Path) -> None:
    sim = make_simulator(batch_supported=False)
    client, dataset_id, ids = in_process(make_client, sim)
    refused = wait_job(client, regenerate(client, dataset_id, ids, **FAST))
    assert refused["status"] == "failed" and "does not support OpenAI's Batch API" in refused["error"], refused
    assert "nothing was submitted" in refused["error"] and sim.stats().get("requests", 0) == 0
    job_id = regenerate(client, dataset_id, ids, batch_fallback="online", **FAST)
    status = wait_job(client, job_id)
    assert status["status"] == "completed" and status["result"]["entries_count"] == len(ids), status
    assert sim.stats()["requests"] == len(ids) and sim.stats().get("batch_creates", 0) == 0
    assert set(revisions(data, job_id).values()) == {1}


def test_a_budget_refuses_a_batch_whose_estimate_at_batch_prices_would_cross_it(make_client: MakeClient,
                                                                                make_simulator: MakeSim,
                                                                                data: Path) -> None:
    sim = make_simulator(batch_delay_s=0.1)
    client, dataset_id, ids = in_process(make_client, sim)
    client.app.close()  # type: ignore[attr-defined]
    idle = make_client(simulator_url=sim.base_url)  # no worker: the job is only submitted; run here with a budget
    job_id = regenerate(idle, dataset_id, ids, **FAST)
    idle.app.close()  # type: ignore[attr-defined]
    config = RegenerationConfig(max_tokens=4000, accept_lower=True)

    def run(budget: Budget) -> RegenResult:
        with EventLog.in_dir(data) as log:
            return asyncio.run(run_regeneration(
                log=log, rm=ReadModel.open(data), job_id=job_id, dataset_id=dataset_id, entry_ids=ids, config=config,
                simulator_url=sim.base_url, budget=budget,
                batch=job_settings("none", 0.05, cancel_batches=False)))

    refused = run(Budget(tokens=1000))
    assert refused.outcome == "budget" and "it was not submitted" in refused.message, refused
    estimate = re.search(r"a batch of 8 requests would take up to ~([0-9,]+) tokens \(~\$([0-9.]+) at batch prices\)",
                         refused.message)
    assert estimate is not None, refused.message
    assert int(estimate[1].replace(",", "")) > len(ids) * 4000  # the prompts, and max_tokens for each answer
    assert sim.stats().get("file_uploads", 0) == 0 and not revisions(data, job_id)
    # within the budget at batch prices, not at the profile's (twice as much)
    done = run(Budget(cost=float(estimate[2]) * 1.5))
    assert done.outcome == "completed" and done.regenerated == len(ids), done
    assert sim.stats()["batch_creates"] == 1 and set(revisions(data, job_id).values()) == {1}
    assert 0 < done.cost <= float(estimate[2])
