"""A log that cannot be written (disk full, read-only, I/O error): calls stop at once, the log stays sound,
and the next run, once there is room, asks only for what is not in it.

On a real 1 MB tmpfs where the tests run as root (CI does), and by injecting the OSError at the write
everywhere.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import against, dset, questions_csv, sim_env

from dsetlog.simulator.server import Simulator
from dsetlog.store.errors import LogWriteError
from dsetlog.store.events import EntryGenerated, QuestionQueued
from dsetlog.store.log import LOG_NAME, EventLog
from dsetlog.store.scan import read_records
from dsetlog.store.verify import verify


def entries(data: Path) -> Counter[str]:
    with EventLog.in_dir(data) as log:
        return Counter(r.event.item_id for r in log.read() if isinstance(r.event, EntryGenerated))


def test_a_full_disk_stops_the_calls_and_the_next_run_asks_only_for_the_rest(
        tmp_path: Path, tmpfs: Callable[[str], Path], make_simulator: Callable[..., Simulator]) -> None:
    disk = tmpfs("1m")
    sim = make_simulator(latency_ms=2)
    q = questions_csv(tmp_path / "q.csv", 3000)
    data = disk / "data"
    proc = dset(["generate", str(q), *against(sim, "--concurrency", "16"), "--data", str(data),
                 "--out", str(tmp_path / "out")], cwd=tmp_path, env=sim_env(), timeout=300)
    assert proc.returncode == 3, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dset: stopped: could not append to") and "No space left on device" in last
    assert "Free space on the disk holding" in last and "run the same command again" in last
    assert verify(data / LOG_NAME).ok  # the log is undamaged
    recorded = entries(data)
    assert recorded and max(recorded.values()) == 1
    paid = sim.stats()["completions"]
    # at most the calls in flight when the append failed (and the batch being written) are lost, not 2,779
    assert paid - len(recorded) <= 16 + 64, (paid, len(recorded))

    again = dset(["generate", str(q), *against(sim, "--concurrency", "16"), "--data", str(data),
                  "--out", str(tmp_path / "out")], cwd=tmp_path, env=sim_env(), timeout=300)
    assert again.returncode == 3 and "Traceback" not in again.stderr  # still full: the same one line

    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    sim.reset_stats()
    before = entries(data)
    done = dset(["generate", str(q), *against(sim, "--concurrency", "16"), "--data", str(data),
                 "--out", str(tmp_path / "out")], cwd=tmp_path, env=sim_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    after = entries(data)
    assert len(after) == 3000 and max(after.values()) == 1
    assert sim.stats()["completions"] == 3000 - len(before)  # nothing recorded was asked for again


def test_opening_a_log_with_a_torn_tail_on_a_full_disk_never_crashes(tmpfs: Callable[[str], Path]) -> None:
    disk = tmpfs("256k")
    path = disk / LOG_NAME
    with EventLog(path) as log:
        log.append_many([QuestionQueued(dataset_id="d", item_id=f"q{i}", question="x" * 100) for i in range(50)])
    good = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(b'{"seq":51,"ts":"2026-')  # a crash mid-write
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # the rest of the disk
    try:
        while True:
            os.write(fd, b"\0" * 1024)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    with EventLog(path) as log:  # no crash: the tail stays where it is, and appends say why they cannot go on
        assert log.last_seq == 50
        with pytest.raises(LogWriteError, match="not a whole record.*could not be set aside"):
            log.append(QuestionQueued(dataset_id="d", item_id="q51", question="y"))
    assert [r.seq for r in read_records(path)][-1] == 50  # readers skip the tail meanwhile
    filler.unlink()
    with EventLog(path) as log:  # room again: the tail is set aside, appending goes on
        assert log.append(QuestionQueued(dataset_id="d", item_id="q51", question="y")) == 51
    assert path.read_bytes().startswith(good) and (disk / (LOG_NAME + ".torn")).read_bytes() == b'{"seq":51,"ts":"2026-'


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO])
def test_a_failed_append_leaves_the_log_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  code: int) -> None:
    path = tmp_path / LOG_NAME
    with EventLog(path) as log:
        log.append(QuestionQueued(dataset_id="d", item_id="q0", question="first"))
        before = path.read_bytes()
        real_write = os.write

        def half_then_fail(fd: int, data: bytes) -> int:  # part of the batch lands, then the disk refuses
            if fd == log._fd and len(data) > 40:
                real_write(fd, bytes(data[:40]))
                raise OSError(code, os.strerror(code))
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", half_then_fail)
        with pytest.raises(LogWriteError) as caught:
            log.append_many([QuestionQueued(dataset_id="d", item_id=f"q{i}", question="more") for i in range(1, 5)])
        monkeypatch.undo()
        assert caught.value.errno == code and "run the same command again" in str(caught.value)
        assert path.read_bytes() == before  # the partial write was taken back
        assert log.append(QuestionQueued(dataset_id="d", item_id="q1", question="after")) == 2
    assert [r.seq for r in read_records(path)] == [1, 2] and verify(path).ok


def test_the_engine_stops_calling_the_model_when_the_log_cannot_be_written(
        tmp_path: Path, make_simulator: Callable[..., Simulator], monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from dsetlog.engine.engine import Engine, WorkItem
    from dsetlog.engine.progress import Progress
    from dsetlog.llm.client import LLMClient, RetryPolicy
    from dsetlog.llm.providers import resolve

    sim = make_simulator(latency_ms=5)
    log = EventLog(tmp_path / LOG_NAME)
    appended = {"n": 0}
    real = EventLog.append_many

    def fail_after_two(self: EventLog, events: object) -> range:
        appended["n"] += 1
        if appended["n"] > 2:
            raise LogWriteError(self.path, OSError(errno.ENOSPC, "No space left on device"))
        return real(self, events)  # type: ignore[arg-type]

    monkeypatch.setattr(EventLog, "append_many", fail_after_two)
    provider = resolve("vllm", base_url=sim.base_url, model="sim-chat", env={})
    engine = Engine(log=log, client=LLMClient(provider, concurrency=8), policy=RetryPolicy(),
                    make_events=lambda item, c, attempt: [EntryGenerated(
                        dataset_id="d", item_id=item.item_id, entry_id=item.item_id, question="q", answer=c.content)],
                    progress=Progress(total=500, enabled=False), concurrency=8)
    items = [WorkItem("d", f"i{i}", [{"role": "user", "content": f"question {i} {uuid.uuid4()}"}]) for i in range(500)]

    async def go() -> None:
        try:
            await engine.run(items)
        finally:
            await engine.client.close()

    started = time.monotonic()
    with pytest.raises(LogWriteError) as caught:
        asyncio.run(go())
    assert time.monotonic() - started < 10
    assert sim.stats()["completions"] < 100  # stopped at once, not 500 paid calls into the void
    assert caught.value.lost_entries >= 0
    log.close()


def test_a_server_job_stopped_by_a_full_disk_resumes_once_there_is_room(
        tmp_path: Path, tmpfs: Callable[[str], Path]) -> None:
    from harness import Server
    from harness import pancreas_markdown as markdown

    disk = tmpfs("2m")
    data = disk / "data"
    server = Server(data, tmp_path / "server.log", "--simulate", "--sim-latency-ms", "5")
    try:
        _, project, _ = server.call("POST", "/projects", {"name": "med"})
        _, doc, _ = server.call("POST", f"/projects/{project['id']}/documents",
                                {"filename": "notes.md", "content": markdown(400), "strategy": "markdown"})
        assert doc["chunks"] == 400
        _, accepted, _ = server.call("POST", "/datasets/generate", {"project_id": project["id"], "concurrency": 4,
                                                                  "datasets_per_chunk": 3})
        job_id = accepted["job_id"]
        deadline = time.monotonic() + 120
        while True:  # the disk fills up: the job stops, saying why
            status = server.get(f"/datasets/generate/{job_id}/status")
            if status["status"] == "failed":
                break
            assert status["status"] != "completed" and time.monotonic() < deadline, status
            time.sleep(0.2)
        assert "No space left on device" in status["error"] and "Free space" in status["error"]
        assert server.get("/health")["status"] == "ok"  # the server stays up
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
        deadline = time.monotonic() + 240
        while (done := server.get(f"/datasets/generate/{job_id}/status"))["status"] != "completed":
            assert time.monotonic() < deadline, (done, server.log_text()[-3000:])  # tried again every 5 s
            time.sleep(0.5)
        per_item = entries(data)
        assert len(per_item) == 1200 and max(per_item.values()) == 1
    finally:
        server.stop()
