"""`dset datasets generate --batch` as a user runs it: real processes, a project ingested by `dset ingest`, the
real simulator's Batch API on loopback (every role answered by it: SIMULATED_BASE_URL), kill -9 in the middle
and the same command again. The entries' calls go as batches; the other roles stay online."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import DSET, clean_env, dset
from test_generate_batch import log_count, wait_for

from dsetlog.simulator.server import Simulator
from dsetlog.store.events import BatchCompleted, BatchSubmitted, EntryGenerated, SlotQueued
from dsetlog.store.log import EventLog

MakeSim = Callable[..., Simulator]
CHUNKS, PER_CHUNK = 6, 2
MODELS = ("--classification-model", "simulated", "--parsing-model", "simulated", "--chunking-model", "simulated")


def events(data: Path, kind: type) -> list[Any]:
    with EventLog.in_dir(data) as log:
        return [r.event for r in log.read() if isinstance(r.event, kind)]


def project(tmp_path: Path, sim: Simulator, name: str = "data") -> Path:
    """A data dir holding project "med": CHUNKS markdown sections, each with its heading (no titling calls)."""
    doc = tmp_path / "harbour.md"
    doc.write_text("\n\n".join(f"# Topic {i}\n\nThe harbour opens at dawn on day {i} and closes at dusk. Boats "
                               f"unload catch {i} at the north quay, and the harbour master records vessel {i}."
                               for i in range(CHUNKS)), encoding="utf-8")
    data = tmp_path / name
    proc = dset(["ingest", str(doc), "--project", "med", "--strategy", "markdown", "--data", str(data)],
                cwd=tmp_path, env=env(sim))
    assert proc.returncode == 0, proc.stderr
    return data


def env(sim: Simulator) -> dict[str, str]:
    return clean_env(SIMULATED_BASE_URL=sim.base_url)


def args(data: Path, *extra: str) -> list[str]:
    return ["datasets", "generate", "--data", str(data), "--project", "med", "--datasets-per-chunk",
            str(PER_CHUNK), *MODELS, "--no-progress", *extra]


def generate(tmp_path: Path, sim: Simulator, data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return dset(args(data, *extra), cwd=tmp_path, env=env(sim))


def entries_by_item(data: Path) -> Counter[str]:
    return Counter(e.item_id for e in events(data, EntryGenerated))


def test_batch_entries_are_the_online_entries_and_no_generation_call_goes_online(tmp_path: Path,
                                                                                 make_simulator: MakeSim) -> None:
    online_sim, batch_sim = make_simulator(), make_simulator(batch_delay_s=0.2)
    online_data, batch_data = project(tmp_path, online_sim, "online"), project(tmp_path, batch_sim, "batched")
    online = generate(tmp_path, online_sim, online_data)
    assert online.returncode == 0, online.stderr
    assert online_sim.stats()["requests"] == CHUNKS  # one call per chunk, as a batch has one line per chunk
    batched = generate(tmp_path, batch_sim, batch_data, "--batch", "--batch-poll", "0.05")
    assert batched.returncode == 0, batched.stderr
    assert f"{CHUNKS * PER_CHUNK} entries" in batched.stdout, batched.stdout
    stats = batch_sim.stats()
    assert stats["batch_creates"] == 1 and stats["file_uploads"] == 1 and stats["batch_lines"] == CHUNKS
    assert stats.get("requests", 0) == 0  # no online chat call: not for the entries, nor any other role
    per_item = entries_by_item(batch_data)
    assert len(per_item) == CHUNKS * PER_CHUNK == len(entries_by_item(online_data)) and set(per_item.values()) == {1}
    assert set(per_item) == {s.item_id for s in events(batch_data, SlotQueued)}
    [submitted] = events(batch_data, BatchSubmitted)
    [completed] = events(batch_data, BatchCompleted)
    assert submitted.requests == CHUNKS and completed.answered == CHUNKS
    for e in events(batch_data, EntryGenerated):  # the online path's entries: provenance, scores, the chunk
        assert e.metadata["batch_id"] == submitted.batch_id and e.source_chunk and e.question and e.answer
        assert e.simulated and e.usage.prompt_tokens > 0 and e.attempt == 1
    # scored after generation, as online entries are
    assert "quality:" in batched.stdout and "average_score" in batched.stdout
    again = generate(tmp_path, batch_sim, batch_data, "--batch", "--batch-poll", "0.05")
    assert again.returncode == 0, again.stderr
    assert batch_sim.stats()["batch_creates"] == 1  # nothing left to submit


def test_kill_9_during_the_batch_then_the_same_command_polls_and_submits_nothing(tmp_path: Path,
                                                                                 make_simulator: MakeSim) -> None:
    sim = make_simulator(batch_delay_s=3.0)
    data = project(tmp_path, sim)
    first = subprocess.Popen([*DSET, *args(data, "--batch", "--batch-poll", "0.05")], cwd=tmp_path, env=env(sim),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: log_count(data, "BatchProgress") >= 2)  # submitted, being polled
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert sim.stats()["batch_creates"] == 1 and not events(data, EntryGenerated)
    final = generate(tmp_path, sim, data, "--batch", "--batch-poll", "0.05")
    assert final.returncode == 0, final.stderr
    stats = sim.stats()
    assert stats["batch_creates"] == 1 and stats["file_uploads"] == 1  # 0 second creates: the same batch polled
    assert stats.get("requests", 0) == 0
    per_item = entries_by_item(data)
    assert len(per_item) == CHUNKS * PER_CHUNK and set(per_item.values()) == {1}
    assert len(events(data, BatchCompleted)) == 1


def test_a_server_without_the_batch_api_answers_online_with_batch_fallback_online(tmp_path: Path,
                                                                                 make_simulator: MakeSim) -> None:
    sim = make_simulator(batch_supported=False)
    data = project(tmp_path, sim)
    refused = generate(tmp_path, sim, data, "--batch", "--batch-poll", "0.05")
    assert refused.returncode == 1, refused.stderr
    assert "--batch-fallback online" in refused.stderr
    assert sim.stats().get("requests", 0) == 0 and not events(data, EntryGenerated)
    online = generate(tmp_path, sim, data, "--batch", "--batch-poll", "0.05", "--batch-fallback", "online")
    assert online.returncode == 0, online.stderr
    assert sim.stats()["requests"] == CHUNKS and sim.stats().get("batch_creates", 0) == 0
    per_item = entries_by_item(data)
    assert len(per_item) == CHUNKS * PER_CHUNK and set(per_item.values()) == {1}


def test_batch_fallback_needs_batch(tmp_path: Path, make_simulator: MakeSim) -> None:
    sim = make_simulator()
    data = project(tmp_path, sim)
    proc = generate(tmp_path, sim, data, "--batch-fallback", "online")
    assert proc.returncode == 2 and "batch_fallback goes with batch" in proc.stderr
