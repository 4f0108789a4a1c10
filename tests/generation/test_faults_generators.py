"""Nothing paid twice (issue 11, item 4): one generator per dataset at a time, across processes, and helper
calls (chunk titles) shared by concurrent jobs.

Real processes on one data dir: `dset serve` (tests/test_api_server.py's ``Server``) and `python -m dsetlog
datasets generate`, both against one simulator in this process with enough latency that their runs overlap.
What is counted: EntryGenerated per work item (exactly one each), and the simulator's requests (exactly one
per chunk call asked for: the slots a run answers are never asked again by another). Then, in this process:
the lock file's holder identity, a holder killed with SIGKILL, the guard at the point of writing, and a
regeneration that waits for the run holding its dataset.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import DSET, ROOT, Server, clean_env

from dsetlog.catalog.documents import ingest_file
from dsetlog.catalog.projects import create_project
from dsetlog.cli.options import EXIT_CODES
from dsetlog.engine.progress import Progress
from dsetlog.generation.document import DocumentRun
from dsetlog.generation.errors import DatasetBusy
from dsetlog.generation.models import Models
from dsetlog.generation.regeneration import RegenerationConfig, run_regeneration
from dsetlog.generation.requests import GenerateRequest
from dsetlog.generation.texts import TITLE_PROMPT
from dsetlog.jobs.lifecycle import run_generation_job
from dsetlog.simulator.server import Simulator
from dsetlog.store import locks
from dsetlog.store.events import (
    ChunkTitled,
    EntryGenerated,
    JobCompleted,
    JobStarted,
    JobSubmitted,
    SlotQueued,
)
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel

CHUNKS = 60  # at 300 ms a call, two at a time: a 9 s run, time for the second process to meet it
# one slot per chunk, so requests == items; every role answered by the shared simulator (SIMULATED_BASE_URL)
MODELS = {"classification_model": "simulated", "parsing_model": "simulated", "chunking_model": "simulated"}
REQUEST = {"concurrency": 2, "datasets_per_chunk": 1, **MODELS}


def cli_args(data: Path, *extra: str, datasets_per_chunk: int = 1) -> list[str]:
    return [*DSET, "datasets", "generate", "--data", str(data), "--project", "med", "--concurrency", "2",
            "--datasets-per-chunk", str(datasets_per_chunk), "--classification-model", "simulated",
            "--parsing-model", "simulated", "--chunking-model", "simulated", "--no-progress", *extra]


def markdown(sections: int) -> str:
    return "\n\n".join(f"# Topic {i}\n\nThe harbour opens at dawn on day {i} and closes at dusk. Boats unload "
                       f"catch {i} at the north quay, and the harbour master records vessel {i}."
                       for i in range(sections))


def paragraphs(n: int) -> str:
    """Paragraphs without headings: each one a chunk that needs a title from the chunking model."""
    return "\n\n".join(f"Paragraph {i}: the harbour opens at dawn number {i} and closes at dusk; boats unload "
                       f"the catch at the north quay {i} while gulls wait." for i in range(n))


def events(data: Path, kind: type) -> list[Any]:
    with EventLog.in_dir(data) as log:
        return [r.event for r in log.read() if isinstance(r.event, kind)]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def new_project(server: Server, text: str, **chunking: Any) -> str:
    status, project, _ = server.call("POST", "/projects", {"name": "med"})
    assert status == 201, project
    status, doc, _ = server.call("POST", f"/projects/{project['id']}/documents",
                                 {"filename": "notes.md" if not chunking else "notes.txt", "content": text,
                                  **(chunking or {"strategy": "markdown"})})
    assert status == 201, doc
    return project["id"]


def submit(server: Server, project_id: str, **fields: Any) -> str:
    status, accepted, _ = server.call("POST", "/datasets/generate", {"project_id": project_id, **REQUEST, **fields})
    assert status == 200, accepted
    return accepted["job_id"]


def assert_paid_once(data: Path, sim: Simulator, items: int) -> None:
    """Exactly one EntryGenerated per queued slot, and one request per slot (no prompt asked twice)."""
    generated = Counter(e.item_id for e in events(data, EntryGenerated))
    queued = {e.item_id for e in events(data, SlotQueued)}
    assert len(queued) == items and set(generated) == queued
    duplicates = {item: n for item, n in generated.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} slots generated more than once"
    stats = sim.stats()
    assert stats["requests"] == items, stats["requests"]
    assert set(stats["by_prompt"].values()) == {1}


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def popen(args: list[str], env: dict[str, str], procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    return proc


# --- two processes on one dataset ------------------------------------------------------------------


@pytest.mark.slow
def test_a_cli_run_beside_a_server_job_is_refused_naming_it_or_waits_and_pays_nothing(
        tmp_path: Path, make_simulator: Callable[..., Simulator], servers: list[Server],
        procs: list[subprocess.Popen[str]]) -> None:
    sim = make_simulator(latency_ms=300, request_log=20_000)
    data = tmp_path / "data"
    env = clean_env(SIMULATED_BASE_URL=sim.base_url)
    server = Server(data, tmp_path / "server.log", env=env)
    servers.append(server)
    project_id = new_project(server, markdown(CHUNKS))
    job_id = submit(server, project_id)
    wait_for(lambda: len(events(data, EntryGenerated)) >= 3, "the server job's first entries")

    # the same parameters on the command line, while the job runs: at once, and with --wait
    refused = popen(cli_args(data), env, procs)
    waiting = popen(cli_args(data, "--wait"), env, procs)
    out, err = refused.communicate(timeout=60)
    assert refused.returncode == 2, (out, err)
    assert server.get(f"/datasets/generate/{job_id}/status")["status"] == "running"  # refused while it ran
    line = err.strip()
    assert "Traceback" not in err and line.startswith("dset: error: dataset dataset_"), err
    for named in (f"job {job_id}", f"pid {server.proc.pid}", f"on {socket.gethostname()}", "`dset serve",
                  "--wait", f"POST /api/v1/jobs/{job_id}/cancel"):
        assert named in line, (named, line)
    assert [e.job_id for e in events(data, JobSubmitted)] == [job_id]  # the refused run left nothing in the log

    assert server.wait_job(job_id)["status"] == "completed"
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert f"Waiting for job {job_id}" in err  # it said whom it waited for
    dataset_id = server.get(f"/datasets/generate/{job_id}/status")["result"]["dataset_id"]
    assert f"dataset {dataset_id}" in out and f"{CHUNKS} entries" in out and " 0 tokens" in out, out
    assert_paid_once(data, sim, CHUNKS)
    started = Counter(e.job_id for e in events(data, JobStarted))
    assert set(started.values()) == {1} and len(started) == 2  # each job run once, by its own process
    assert server.stop() == 0
    assert "Traceback" not in server.log_text()


@pytest.mark.slow
def test_a_server_job_waits_for_the_cli_run_holding_its_dataset_showing_the_holder(
        tmp_path: Path, make_simulator: Callable[..., Simulator], servers: list[Server],
        procs: list[subprocess.Popen[str]]) -> None:
    sim = make_simulator(latency_ms=300, request_log=20_000)
    data = tmp_path / "data"
    env = clean_env(SIMULATED_BASE_URL=sim.base_url)
    # a server that accepts jobs without running them: its job waits in the log for a worker
    front = Server(data, tmp_path / "front.log", "--no-worker", env=env)
    servers.append(front)
    project_id = new_project(front, markdown(CHUNKS))
    job_id = submit(front, project_id)
    cli = popen(cli_args(data), env, procs)  # meanwhile the same dataset from the command line
    wait_for(lambda: len(events(data, EntryGenerated)) >= 3, "the command's first entries")
    worker = Server(data, tmp_path / "worker.log", env=env)  # a server with a worker: it runs the job
    servers.append(worker)

    def step(job: str) -> str:
        return worker.get(f"/datasets/generate/{job}/status")["current_step"]

    wait_for(lambda: step(job_id).startswith("Waiting for job job_"), "the server job to wait")
    shown = step(job_id)
    for named in (f"pid {cli.pid}", f"on {socket.gethostname()}", "`dset datasets generate"):
        assert named in shown, (named, shown)
    # a regeneration of the same dataset waits for it too, and stops at once when cancelled
    dataset_id = worker.get(f"/datasets/generate/{job_id}/status")["dataset_id"]
    entry_id = events(data, EntryGenerated)[0].entry_id
    status, regen, _ = worker.call("POST", f"/datasets/{dataset_id}/regenerate", {
        "entry_ids": [entry_id], "regeneration_config": {"model": "simulated"}})
    assert status == 200, regen
    wait_for(lambda: step(regen["job_id"]).startswith("Waiting for job job_"), "the regeneration to wait")
    status, body, _ = worker.call("POST", f"/jobs/{regen['job_id']}/cancel", {"reason": "not needed"})
    assert status == 200 and body["status"] == "failed" and body["cancelled"], body  # the guide's four states
    assert cli.poll() is None  # stopped while it waited, not after the holder finished

    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err
    done = worker.wait_job(job_id)
    assert done["status"] == "completed", done
    assert done["result"]["entries_count"] == CHUNKS and done["result"]["tokens"] == 0  # it asked for nothing
    assert_paid_once(data, sim, CHUNKS)
    cli_job = out.split("job ", 1)[1].split()[0]
    # the command's own job was left to it: one start and one end, the server never ran it too
    assert [e.job_id for e in events(data, JobStarted)].count(cli_job) == 1
    assert [e.job_id for e in events(data, JobCompleted)].count(cli_job) == 1
    assert worker.stop() == 0 and front.stop() == 0
    assert "Traceback" not in worker.log_text()


@pytest.mark.slow
def test_concurrent_jobs_on_one_project_title_each_chunk_once(
        tmp_path: Path, make_simulator: Callable[..., Simulator], servers: list[Server],
        procs: list[subprocess.Popen[str]]) -> None:
    sim = make_simulator(latency_ms=150, request_log=20_000)
    data = tmp_path / "data"
    env = clean_env(SIMULATED_BASE_URL=sim.base_url)
    server = Server(data, tmp_path / "server.log", env=env)
    servers.append(server)
    chunks = 20
    project_id = new_project(server, paragraphs(chunks), strategy="paragraphs", chunk_size=200, overlap=0)
    # three datasets of one project at once: two server jobs (one process) and a command (another)
    jobs = [submit(server, project_id, datasets_per_chunk=n) for n in (1, 2)]
    cli = popen(cli_args(data, datasets_per_chunk=3), env, procs)
    for job in jobs:
        assert server.wait_job(job)["status"] == "completed"
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err

    titled = Counter(e.chunk_id for e in events(data, ChunkTitled))
    assert len(titled) == chunks and set(titled.values()) == {1}
    bodies = sim.requests()
    title_calls = [b for b in bodies if b["messages"][-1]["content"].startswith(TITLE_PROMPT[:40])]
    assert len(title_calls) == chunks  # 20 calls for 20 chunks, not one per job
    assert len(bodies) - len(title_calls) == 3 * chunks  # one generation call per chunk per dataset
    generated = Counter((e.dataset_id, e.item_id) for e in events(data, EntryGenerated))
    assert len(generated) == (1 + 2 + 3) * chunks and set(generated.values()) == {1}
    assert server.stop() == 0


# --- the lock itself -------------------------------------------------------------------------------------


TRY_LOCK = """
import sys
from dsetlog.store import locks
try:
    with locks.dataset_lock(sys.argv[1], "dataset_x"):
        print("acquired")
except locks.LockBusy as exc:
    print(exc)
    sys.exit(2)
"""


def test_the_lock_file_names_its_holder_and_another_process_is_refused_with_it(tmp_path: Path) -> None:
    with locks.dataset_lock(tmp_path, "dataset_x", job_id="job_1") as held:
        holder = json.loads(held.path.read_text())
        assert (holder["pid"], holder["host"], holder["job_id"]) == (os.getpid(), socket.gethostname(), "job_1")
        assert holder["command"] and holder["since"].endswith("Z")
        proc = subprocess.run([sys.executable, "-c", TRY_LOCK, str(tmp_path)], capture_output=True, text=True,
                              cwd=ROOT, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert f"job job_1 of `{holder['command']}` (pid {os.getpid()} on {socket.gethostname()}" in proc.stdout
        with pytest.raises(locks.LockBusy, match="dataset dataset_x is busy") as busy:  # in one process, too
            with locks.dataset_lock(tmp_path, "dataset_x"):
                pass
        assert EXIT_CODES[busy.value.kind] == 2  # `dset generate`: exit 2
    assert held.path.read_text() == ""  # released: nobody is named any more
    proc = subprocess.run([sys.executable, "-c", TRY_LOCK, str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "acquired", proc.stderr


HOLD_LOCK = """
import sys, time
from dsetlog.store import locks
with locks.dataset_lock(sys.argv[1], "dataset_x"):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        lock = locks.dataset(tmp_path, "dataset_x")
        assert not lock.try_acquire() and lock.holder() is not None and lock.holder().pid == proc.pid
        proc.kill()
        proc.wait(timeout=30)
        # a waiter takes it at once: the kernel dropped the dead holder's lock, whatever its file still says
        got = asyncio.run(asyncio.wait_for(lock.acquire_async(), timeout=5))
        assert got and lock.holder() == lock.identity
        lock.release()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


# --- in one process: the guard at the point of writing, and regeneration ----------------------------------


class Local:
    """A data dir with a project, in this process, and the simulator answering every role."""

    def __init__(self, tmp_path: Path, sim: Simulator, sections: int) -> None:
        self.data = tmp_path / "data"
        self.log = EventLog.in_dir(self.data)
        self.rm = ReadModel.open(self.data)
        self.sim = sim
        path = tmp_path / "notes.md"
        path.write_text(markdown(sections), encoding="utf-8")
        pid = create_project(self.log, self.rm, name="med").id
        ingest_file(self.log, self.rm, project_id=pid, path=path, strategy="markdown")

    def document_run(self, **fields: Any) -> DocumentRun:
        req = GenerateRequest(project_id="med", analyze_quality=False, **{**REQUEST, **fields})
        return DocumentRun(log=self.log, rm=self.rm, data_dir=self.data, req=req,
                           models=Models.resolve(req, simulator_url=self.sim.base_url))


@pytest.fixture
def local(tmp_path: Path, make_simulator: Callable[..., Simulator]) -> Iterator[Callable[..., Local]]:
    made: list[Local] = []

    def make(sections: int = 4, **sim: Any) -> Local:
        made.append(Local(tmp_path, make_simulator(request_log=1000, **sim), sections))
        return made[-1]

    yield make
    for env in made:
        env.log.close()


def test_a_slot_written_meanwhile_by_a_writer_outside_the_lock_is_not_written_again(
        local: Callable[..., Local]) -> None:
    env = local(4, latency_ms=600)
    run = env.document_run(concurrency=4)
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(asyncio.run(run.run())))
    thread.start()
    try:
        wait_for(lambda: env.sim.stats()["requests"] == 4, "the four calls to be in flight", timeout=30)
        # a writer that takes no lock (an older dset, a hand-made tool) makes every slot while the calls run
        with EventLog.in_dir(env.data) as other:
            other.append_many([EntryGenerated(dataset_id=s.dataset_id, item_id=s.item_id,
                                              entry_id="entry_" + s.item_id[5:], question="Outside?",
                                              answer="Outside.", source_chunk=s.chunk_id)
                               for s in run.slot_plan()])
    finally:
        thread.join(timeout=60)
    assert outcome and outcome[0].outcome == "completed"
    generated = Counter(e.item_id for e in events(env.data, EntryGenerated))
    assert len(generated) == 4 and set(generated.values()) == {1}  # the outside entries stand, alone
    assert {e.question for e in events(env.data, EntryGenerated)} == {"Outside?"}


def test_a_run_told_not_to_wait_is_refused_naming_the_holder_before_writing(local: Callable[..., Local]) -> None:
    env = local(2)
    first, second = env.document_run(), env.document_run()
    first.claim()
    try:
        before = env.log.refresh()
        refused = env.document_run()
        refused.wait = False
        with pytest.raises(DatasetBusy, match=f"job {first.job_id} of .*pid {os.getpid()}.*--wait"):
            refused.claim()
        with pytest.raises(DatasetBusy):
            asyncio.run(refused.run())
        assert env.log.refresh() == before  # nothing written by the refused run
    finally:
        try:
            asyncio.run(first.run())  # the claimed run goes on
        finally:
            first.release()  # its claimer releases it, as the CLI does once the job's end is recorded
    result = asyncio.run(second.run())  # free now: it finds everything done
    assert result.outcome == "completed" and result.prompt_tokens == 0
    assert env.sim.stats()["requests"] == 2


def test_regeneration_waits_for_the_run_holding_its_dataset(local: Callable[..., Local]) -> None:
    env = local(2)
    done = run_generation_job(log=env.log, rm=env.rm, data=env.data, job_id="job_gen", kind="generate",
                              req=GenerateRequest(project_id="med", analyze_quality=False, **REQUEST),
                              sim_url=env.sim.base_url, progress=Progress(total=0, enabled=False))
    entry = env.rm.datasets.entries(done.dataset_id)[0]
    before = env.sim.stats()["requests"]
    holder = locks.dataset(env.data, done.dataset_id, job_id="job_holder")
    assert holder.try_acquire()
    stages: list[str] = []
    result: list[Any] = []

    def regenerate() -> None:
        result.append(asyncio.run(run_regeneration(
            log=env.log, rm=env.rm, job_id="job_regen", dataset_id=done.dataset_id, entry_ids=[entry.id],
            config=RegenerationConfig(), simulator_url=env.sim.base_url,
            on_stage=lambda stage: stages.append(stage.step))))

    thread = threading.Thread(target=regenerate)
    thread.start()
    try:
        wait_for(lambda: any(s.startswith("Waiting for job job_holder") for s in stages), "the regeneration to wait")
        time.sleep(0.5)
        assert env.sim.stats()["requests"] == before and not result  # nothing asked while the run holds it
    finally:
        holder.release()
        thread.join(timeout=60)
    assert result and result[0].outcome == "completed" and result[0].regenerated == 1
    assert env.sim.stats()["requests"] == before + 1
