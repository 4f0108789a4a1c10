"""The send process (dsetlog.llm.sender): requests POSTed from a second process, against the real simulator on
loopback; what a reply, an error or a refused connection becomes on the way back; the send process killed with
-9 in a run (the run goes on from its own pool, nothing lost or doubled) and the run killed with -9 (the send
process ends with it); and when a run decides to start one (dsetlog.engine.cores)."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dsetlog.engine import cores
from dsetlog.engine.engine import Engine, WorkItem
from dsetlog.engine.progress import Progress
from dsetlog.llm.client import Completion, LLMClient, RetryPolicy
from dsetlog.llm.providers import resolve
from dsetlog.simulator.server import Simulator
from dsetlog.store.events import EntryGenerated, Event
from dsetlog.store.log import EventLog

QUESTION = [{"role": "user", "content": "What is the water cycle?"}]


def _client(sim_url: str, **kwargs: object) -> LLMClient:
    return LLMClient(resolve("vllm", base_url=sim_url, model="sim-chat", env={}), concurrency=4, **kwargs)  # type: ignore[arg-type]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_call_through_the_send_process_is_the_call_this_process_would_make(simulator: Simulator) -> None:
    async def go() -> tuple[Completion, Completion, bool, bool, list[int]]:
        local, remote = _client(simulator.base_url), _client(simulator.base_url)
        try:
            here = await local.complete(QUESTION)
            assert await remote.use_send_process()
            there = await remote.complete(QUESTION, attempt=1)
            return here, there, remote.sending_elsewhere, remote._pool is None, _children(os.getpid())  # noqa: SLF001
        finally:
            await local.close()
            await remote.close()

    here, there, elsewhere, no_pool_here, children = asyncio.run(go())
    assert elsewhere and no_pool_here  # this process never opened a pool of its own: the POST came from the other
    assert children, "the send process is a child of this one"
    assert (there.content, there.model, there.prompt_tokens, there.simulated) == (
        here.content, here.model, here.prompt_tokens, here.simulated)
    sent = simulator.requests()[-1]
    assert sent["messages"] == QUESTION
    assert not any(_alive(pid) for pid in children), "close() waits for the send process to end"


def test_the_key_goes_over_the_socket_never_on_the_command_line(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(require_api_key="sk-secret-0123456789")
    provider = resolve("vllm", base_url=sim.base_url, model="sim-chat", env={"VLLM_API_KEY": "sk-secret-0123456789"})

    async def go() -> tuple[str, bytes]:
        client = LLMClient(provider, concurrency=2)
        try:
            assert await client.use_send_process()
            (pid,) = _children(os.getpid())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            return (await client.complete(QUESTION)).content, cmdline
        finally:
            await client.close()

    content, cmdline = asyncio.run(go())
    assert content  # the key reached the server: it was accepted
    assert b"sk-secret" not in cmdline


def test_errors_come_back_as_the_sdk_raises_them(make_simulator: Callable[..., Simulator]) -> None:
    limited = make_simulator(rate_429=1.0, retry_after_s=7, max_faults_per_prompt=5)
    keyed = make_simulator(require_api_key="right")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{s.getsockname()[1]}/v1"

    async def failure(url: str) -> object:
        client = _client(url)
        try:
            assert await client.use_send_process()
            with pytest.raises(Exception) as caught:
                await client.complete(QUESTION)
            return caught.value
        finally:
            await client.close()

    rate = asyncio.run(failure(limited.base_url))
    assert (rate.reason, rate.status_code, rate.retry_after, rate.free) == ("rate_limited", 429, 7.0, True)  # type: ignore[attr-defined]
    auth = asyncio.run(failure(keyed.base_url))
    assert (auth.reason, auth.fatal) == ("auth", True)  # type: ignore[attr-defined]
    refused = asyncio.run(failure(nobody))
    assert (refused.reason, refused.fatal) == ("unreachable", True)  # type: ignore[attr-defined]


def _answer(item: WorkItem, c: Completion, attempt: int) -> list[Event]:
    return [EntryGenerated(dataset_id=item.dataset_id, item_id=item.item_id, entry_id=f"e_{item.item_id}",
                           question=str(item.context), answer=c.content, attempt=attempt)]


def test_kill_9_of_the_send_process_mid_run_loses_nothing_and_doubles_nothing(
        make_simulator: Callable[..., Simulator], tmp_path: Path) -> None:
    sim = make_simulator(latency_ms=50)
    items = [WorkItem("ds", f"q{i}", [{"role": "user", "content": f"Question {i}?"}], context=f"Question {i}?")
             for i in range(600)]

    async def go() -> tuple[int, int, bool]:
        with EventLog(tmp_path / "events.jsonl") as log:
            engine = Engine(log=log, client=_client(sim.base_url), policy=RetryPolicy(max_retries=3, backoff=0.01),
                            make_events=_answer, progress=Progress(total=len(items), enabled=False),
                            concurrency=16, cores=2)
            run = asyncio.create_task(engine.run(items))
            while not engine.client.sending_elsewhere:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # calls in flight in the send process
            assert not run.done()
            (pid,) = _children(os.getpid())
            os.kill(pid, signal.SIGKILL)
            result = await run
            back_here = not engine.client.sending_elsewhere and engine.client._pool is not None  # noqa: SLF001
            await engine.client.close()
            return result.answered, result.failed, back_here

    answered, failed, back_here = asyncio.run(go())
    assert (answered, failed) == (600, 0)
    assert back_here  # the run sent the rest from its own pool
    with EventLog(tmp_path / "events.jsonl") as log:
        records = list(log.read())
    entries = [r.event.item_id for r in records if isinstance(r.event, EntryGenerated)]
    assert sorted(entries) == sorted(i.item_id for i in items)  # every item once
    lost = [r.event for r in records if type(r.event).__name__ == "AttemptFailed"]
    assert lost and all("send process" in e.reason for e in lost)  # the calls it held, failed and retried


def test_kill_9_of_the_run_ends_its_send_process(make_simulator: Callable[..., Simulator], tmp_path: Path) -> None:
    sim = make_simulator(latency_ms=200)
    questions = tmp_path / "q.csv"
    with open(questions, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["question"])
        writer.writerows([f"Question {i}: how does tide {i} work?"] for i in range(2000))
    env = {**os.environ, "DSET_API_KEY": "x", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "dsetlog", "generate", str(questions), "--base-url", sim.base_url,
                             "--model", "sim-chat", "--concurrency", "32", "--cores", "2", "--no-progress",
                             "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        helpers: list[int] = []
        while not helpers and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            helpers = _children(proc.pid)
        assert helpers, "the run started its send process"
        time.sleep(1.0)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in helpers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in helpers), "the send process outlived its run"
    finally:
        proc.kill()


def test_a_second_process_starts_only_when_the_run_is_cpu_bound_with_a_core_to_spare(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores, "WINDOW_S", 0.01)
    readings: list[tuple[float, float | None]] = []
    monkeypatch.setattr(cores.CpuWatch, "sample", lambda self: readings.pop(0))
    monkeypatch.setattr(cores.CpuWatch, "cores", property(lambda self: 2))

    def decide(cores_: int | None, seen: list[tuple[float, float | None]], left: int = 1000) -> bool:
        readings[:] = seen
        return asyncio.run(cores.second_core(cores_, lambda: left, 8))

    assert decide(1, []) is False and decide(2, []) is True  # the user's word, at once
    assert decide(None, [(0.95, 1.0), (0.97, 0.9)]) is True
    # busy windows must follow each other; a busy machine (no idle core) does not count
    assert decide(None, [(0.95, 1.0), (0.5, 1.0), (0.95, 0.1), (0.95, 1.0), (0.9, None)]) is True
    assert readings == []
    with pytest.raises(IndexError):  # never decided on these: it went on watching
        decide(None, [(0.95, 1.0), (0.5, 1.0), (0.95, 0.2)])
    assert decide(None, [(0.95, 1.0)], left=10) is False  # too little left to pay for a start


def test_the_process_share_of_a_core_is_measured() -> None:
    watch = cores.CpuWatch()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        pass
    share, idle = watch.sample()
    assert 0.5 < share <= 1.2  # one thread spinning: about one core (a shared machine may steal some)
    assert idle is None or idle >= 0


def test_auto_goes_back_to_one_process_when_the_second_did_not_pay(
        make_simulator: Callable[..., Simulator], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's auto path for real (a send process started, then retired) with the measurements fixed: the
    rows a second did not rise with the send process, so it ends once its calls are answered and the run sends
    the rest itself, every item answered once."""
    from dsetlog.engine import engine as engine_module

    sim = make_simulator(latency_ms=40)
    items = [WorkItem("ds", f"q{i}", [{"role": "user", "content": f"Question {i}?"}], context=f"Question {i}?")
             for i in range(800)]
    rates = [100.0, 100.0]  # alone, then with the send process: no gain

    async def fixed_rate(done: Callable[[], int], seconds: float = 0.0) -> float:
        await asyncio.sleep(0.3)
        return rates.pop(0)

    async def decided(*args: object) -> bool:
        return True

    monkeypatch.setattr(engine_module, "second_core", decided)
    monkeypatch.setattr(engine_module, "rows_per_s", fixed_rate)

    async def go() -> tuple[int, list[int], bool]:
        with EventLog(tmp_path / "events.jsonl") as log:
            client = _client(sim.base_url)
            engine = Engine(log=log, client=client, policy=RetryPolicy(max_retries=3, backoff=0.01),
                            make_events=_answer, progress=Progress(total=len(items), enabled=False), concurrency=8)
            run = asyncio.create_task(engine.run(items))
            helpers: list[int] = []
            while not run.done():
                helpers = helpers or _children(os.getpid())
                await asyncio.sleep(0.02)
            result = await run
            retired = not client.sending_elsewhere and not any(_alive(pid) for pid in helpers)
            await client.close()
            return result.answered, helpers, retired

    answered, helpers, retired = asyncio.run(go())
    assert answered == 800 and rates == []
    assert helpers and retired  # it was started, then ended during the run
    with EventLog(tmp_path / "events.jsonl") as log:
        records = list(log.read())
    entries = [r.event.item_id for r in records if isinstance(r.event, EntryGenerated)]
    assert sorted(entries) == sorted(i.item_id for i in items)
    assert not [r for r in records if type(r.event).__name__ == "AttemptFailed"]  # retired without failing a call
