"""`dset generate --batch` as a user runs it: real processes, the real simulator's Batch API on loopback (its
clock-driven batches), kill -9 and Ctrl-C in the middle, and the same command again."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import DSET, against, dset, questions_csv, sim_env

from dsetlog.simulator.server import Simulator
from dsetlog.store.events import (
    AttemptFailed,
    BatchCancelled,
    BatchCompleted,
    BatchExpired,
    BatchInputUploaded,
    BatchSubmitted,
    EntryGenerated,
    ItemBookmarked,
    RunFinished,
)
from dsetlog.store.log import EventLog

MakeSim = Callable[..., Simulator]
KEY = sim_env()["DSET_API_KEY"]
FAST = ("--batch", "--batch-poll", "0.05")


def events(data: Path, kind: type | None = None) -> list[Any]:
    with EventLog.in_dir(data) as log:
        return [r.event for r in log.read() if kind is None or isinstance(r.event, kind)]


def entries_by_item(data: Path) -> Counter[str]:
    return Counter(e.item_id for e in events(data, EntryGenerated))


def csv_rows(tmp_path: Path) -> list[list[str]]:
    with open(tmp_path / "dset_generator" / "output.csv", newline="") as fh:
        return list(csv.reader(fh))[1:]


def log_count(data: Path, event_type: str) -> int:
    """Lines of this event type in the log, read raw while another process writes it."""
    path = data / "events.jsonl"
    return path.read_bytes().count(f'"type":"{event_type}"'.encode()) if path.exists() else 0


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def start(tmp_path: Path, q: Path, sim: Simulator, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*DSET, "generate", str(q), *against(sim, *FAST, *extra)], cwd=tmp_path, env=sim_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def no_secret(tmp_path: Path, *texts: str) -> None:
    assert KEY.encode() not in (tmp_path / "data" / "events.jsonl").read_bytes()
    for path in (tmp_path / "dset_generator").iterdir():
        assert KEY.encode() not in path.read_bytes(), path
    assert all(KEY not in t for t in texts)


def test_a_batch_run_end_to_end_writes_the_seed_outputs(tmp_path: Path) -> None:
    q = questions_csv(tmp_path / "q.csv", 7)
    proc = dset(["generate", str(q), "--simulate", *FAST, "--no-progress"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "batch prices: 50% of the profile's" in proc.stderr
    assert "1 submitted by this run, 0 still open" in proc.stderr
    data = tmp_path / "data"
    per_item = entries_by_item(data)
    assert len(per_item) == 7 and set(per_item.values()) == {1}
    [submitted] = events(data, BatchSubmitted)
    assert len(submitted.item_ids) == 7 and submitted.requests == 7 and not submitted.adopted
    [completed] = events(data, BatchCompleted)
    assert (completed.total, completed.completed, completed.failed, completed.answered) == (7, 7, 0, 7)
    assert completed.output_file_id and completed.error_file_id is None
    for e in events(data, EntryGenerated):  # the online path's scoring, reasoning and provenance
        assert e.metadata["batch_id"] == submitted.batch_id and e.reasoning and e.answer
        assert e.quality_score is not None and e.quality and e.difficulty and e.model == "deepseek-reasoner"
        assert e.simulated and e.usage.prompt_tokens > 0
    rows = csv_rows(tmp_path)
    assert [r[1] for r in rows] == [f"What is fact number {i} about topic {i % 7}?" for i in range(7)]
    assert all(r[2] and r[3] for r in rows)
    assert all("(simulated reasoning)" in r[2] and "[REDACTED]" not in r[2] + r[3] for r in rows)
    out = tmp_path / "dset_generator"
    assert len((out / "output.json").read_text().splitlines()) == 7
    assert (out / "output.txt").read_text().count("Answer:") == 7
    again = dset(["generate", str(q), "--simulate", *FAST, "--no-progress"], cwd=tmp_path)
    assert again.returncode == 0 and "7 already answered" in again.stderr
    assert len(events(data, BatchSubmitted)) == 1


def test_kill_9_after_submission_and_after_partial_completion_then_resume(tmp_path: Path, make_simulator: MakeSim,
                                                                          ) -> None:
    sim = make_simulator(batch_delay_s=4.0, seed=5, require_api_key=KEY)
    n, data = 30, tmp_path / "data"
    q = questions_csv(tmp_path / "q.csv", n)
    first = start(tmp_path, q, sim, "--batch-max-requests", "10")
    wait_for(lambda: log_count(data, "BatchSubmitted") == 3)  # three input files of 10: all submitted
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = start(tmp_path, q, sim, "--batch-max-requests", "10")
    # the provider's counts climb: the batches are part done
    wait_for(lambda: b'"completed":' in (data / "events.jsonl").read_bytes().split(b'"type":"BatchProgress"')[-1]
             and log_count(data, "BatchProgress") >= 6)
    second.send_signal(signal.SIGKILL)
    second.wait()
    assert sim.stats()["batch_creates"] == 3
    final = dset(["generate", str(q), *against(sim, *FAST, "--batch-max-requests", "10")], cwd=tmp_path,
                 env=sim_env())
    assert final.returncode == 0, final.stderr
    assert sim.stats()["batch_creates"] == 3 and sim.stats()["file_uploads"] == 3  # nothing submitted twice
    assert sim.stats()["requests"] == 0  # no online call either
    per_item = entries_by_item(data)
    assert len(per_item) == n and set(per_item.values()) == {1}
    assert len(events(data, BatchCompleted)) == 3
    assert len(csv_rows(tmp_path)) == n
    no_secret(tmp_path, final.stderr)


def test_a_batch_created_but_never_recorded_is_found_not_made_again(tmp_path: Path, make_simulator: MakeSim) -> None:
    """kill -9 between the provider's create and the log's BatchSubmitted: the next run finds the batch by its
    input file (BatchInputUploaded was recorded before the create)."""
    from dsetlog.generation.answering import dataset_id_for, item_id_for
    from dsetlog.llm.batches import BatchClient, write_inputs

    sim = make_simulator(batch_delay_s=0.3)
    q = questions_csv(tmp_path / "q.csv", 4)
    ds = dataset_id_for(None, q.resolve())
    questions = [f"What is fact number {i} about topic {i % 7}?" for i in range(4)]
    bodies = [(item_id_for(ds, t), {"model": "deepseek-reasoner", "messages": [{"role": "user", "content": t}]})
              for t in questions]
    [batch_input] = write_inputs(bodies)
    with BatchClient(sim.base_url, KEY) as client:
        file_id = client.upload(batch_input)
        client.create(file_id)
    with EventLog.in_dir(tmp_path / "data") as log:
        log.append(BatchInputUploaded(dataset_id=ds, input_file_id=file_id, item_ids=list(batch_input.custom_ids),
                                      model="deepseek-reasoner", requests=4))
    proc = dset(["generate", str(q), *against(sim, *FAST)], cwd=tmp_path, env=sim_env())
    assert proc.returncode == 0, proc.stderr
    assert sim.stats()["batch_creates"] == 1
    [submitted] = events(tmp_path / "data", BatchSubmitted)
    assert submitted.adopted and submitted.input_file_id == file_id
    assert len(entries_by_item(tmp_path / "data")) == 4


def test_an_expired_batch_leaves_its_rest_to_new_batches_within_the_retry_budget(tmp_path: Path,
                                                                                  make_simulator: MakeSim) -> None:
    sim = make_simulator(batch_delay_s=0.2, batch_expire=True)  # every batch expires with half its lines done
    q = questions_csv(tmp_path / "q.csv", 8)
    proc = dset(["generate", str(q), *against(sim, *FAST, "--max-retries", "3")], cwd=tmp_path, env=sim_env())
    data = tmp_path / "data"
    # 8 -> 4 answered, 4 left -> 2, 2 left -> 1, 1 left -> 0: the fourth submission was its last
    assert proc.returncode == 1, proc.stderr
    assert sim.stats()["batch_creates"] == 4
    assert [len(e.item_ids) for e in events(data, BatchSubmitted)] == [8, 4, 2, 1]
    assert [(e.answered, e.retried, e.bookmarked) for e in events(data, BatchExpired)] == [
        (4, 4, 0), (2, 2, 0), (1, 1, 0), (0, 0, 1)]
    assert len(entries_by_item(data)) == 7 and len(events(data, ItemBookmarked)) == 1
    assert len(events(data, AttemptFailed)) == 4 + 2 + 1 + 1
    assert "1 question(s) bookmarked ERROR" in proc.stderr
    statuses = [r[1] for r in csv.reader(q.open())][1:]
    assert statuses.count("ERROR") == 1


def test_error_lines_are_retried_in_a_new_batch(tmp_path: Path, make_simulator: MakeSim) -> None:
    sim = make_simulator(batch_delay_s=0.2, batch_error_rate=0.5, seed=11)
    n = 20
    q = questions_csv(tmp_path / "q.csv", n)
    proc = dset(["generate", str(q), *against(sim, *FAST)], cwd=tmp_path, env=sim_env())
    assert proc.returncode == 0, proc.stderr
    data = tmp_path / "data"
    ended = events(data, BatchCompleted)
    sizes = [len(e.item_ids) for e in events(data, BatchSubmitted)]
    # each batch's error lines are the next batch's requests; the third sees none fail (max_faults_per_prompt 2)
    assert len(sizes) == sim.stats()["batch_creates"] == 3
    assert sizes[1:] == [ended[0].failed, ended[1].failed] and ended[2].failed == 0 and 0 < sizes[2] < sizes[1]
    assert [e.retried for e in ended] == [sizes[1], sizes[2], 0]
    assert len(events(data, AttemptFailed)) == sizes[1] + sizes[2]
    per_item = entries_by_item(data)
    assert len(per_item) == n and set(per_item.values()) == {1}
    no_secret(tmp_path, proc.stderr)


def test_error_lines_beyond_the_retry_budget_are_bookmarked(tmp_path: Path, make_simulator: MakeSim) -> None:
    sim = make_simulator(batch_delay_s=0.1, batch_error_rate=0.5, seed=11)
    q = questions_csv(tmp_path / "q.csv", 20)
    proc = dset(["generate", str(q), *against(sim, *FAST, "--max-retries", "0")], cwd=tmp_path, env=sim_env())
    [ended] = events(tmp_path / "data", BatchCompleted)
    assert proc.returncode == 1 and sim.stats()["batch_creates"] == 1
    assert ended.bookmarked == ended.failed > 0 and ended.answered == 20 - ended.failed
    assert len(events(tmp_path / "data", ItemBookmarked)) == ended.failed


def test_ctrl_c_leaves_the_batch_running_and_batch_cancel_cancels_it(tmp_path: Path, make_simulator: MakeSim) -> None:
    # long enough for two processes to start one after the other on a loaded machine before it is all answered
    # (3 s was not: the cancel came when 18 or all 20 lines were)
    sim = make_simulator(batch_delay_s=8.0)
    n, data = 20, tmp_path / "data"
    q = questions_csv(tmp_path / "q.csv", n)
    proc = start(tmp_path, q, sim)
    wait_for(lambda: log_count(data, "BatchProgress") >= 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "1 batch(es) left running on the provider" in err and "run the same command again" in err
    assert [e.outcome for e in events(data, RunFinished)] == ["interrupted"]
    assert sim.stats()["batch_cancels"] == 0
    time.sleep(0.6)  # the provider works on: some of its lines are answered by now
    cancel = dset(["generate", str(q), *against(sim, "--batch-cancel", "--batch-poll", "0.05")], cwd=tmp_path,
                  env=sim_env())
    assert cancel.returncode == 0, cancel.stderr
    assert "cancelled 1 batch(es)" in cancel.stderr
    assert sim.stats()["batch_cancels"] == 1 and sim.stats()["batch_creates"] == 1
    [ended] = events(data, BatchCancelled)
    answered = len(entries_by_item(data))
    assert ended.answered == answered == ended.completed and 0 < answered < n
    assert not events(data, ItemBookmarked)  # what a cancel leaves is for the next run, not a failure
    again = dset(["generate", str(q), *against(sim, *FAST)], cwd=tmp_path, env=sim_env())
    assert again.returncode == 0, again.stderr
    assert sim.stats()["batch_creates"] == 2
    assert [len(e.item_ids) for e in events(data, BatchSubmitted)] == [n, n - answered]
    per_item = entries_by_item(data)
    assert len(per_item) == n and set(per_item.values()) == {1}


def test_budget_refuses_a_batch_that_would_cross_it(tmp_path: Path, make_simulator: MakeSim) -> None:
    sim = make_simulator()
    q = questions_csv(tmp_path / "q.csv", 3)
    assert dset(["generate", str(q), *against(sim, *FAST)], cwd=tmp_path, env=sim_env()).returncode == 0
    questions_csv(tmp_path / "q.csv", 6)  # three more questions
    proc = dset(["generate", str(q), *against(sim, *FAST, "--budget", "1000", "--max-tokens", "400")],
                cwd=tmp_path, env=sim_env())
    assert proc.returncode == 1, proc.stderr
    assert "a batch of 3 requests would take up to ~1,2" in proc.stderr and "cross --budget 1,000 tokens" in proc.stderr
    assert "it was not submitted" in proc.stderr
    assert sim.stats()["batch_creates"] == 1 and sim.stats()["file_uploads"] == 1  # only the first run's
    assert len(csv_rows(tmp_path)) == 3  # nothing already done lost
    ok = dset(["generate", str(q), *against(sim, *FAST, "--budget", "5000", "--max-tokens", "400")], cwd=tmp_path,
              env=sim_env())
    assert ok.returncode == 0, ok.stderr
    assert len(csv_rows(tmp_path)) == 6 and sim.stats()["batch_creates"] == 2


def test_a_server_without_the_batch_api(tmp_path: Path, make_simulator: MakeSim) -> None:
    sim = make_simulator(batch_supported=False)
    q = questions_csv(tmp_path / "q.csv", 5)
    proc = dset(["generate", str(q), *against(sim, *FAST)], cwd=tmp_path, env=sim_env())
    assert proc.returncode == 1
    assert "does not support OpenAI's Batch API" in proc.stderr and "--batch-fallback online" in proc.stderr
    assert sim.stats()["requests"] == 0
    assert not events(tmp_path / "data", EntryGenerated)
    online = dset(["generate", str(q), *against(sim, *FAST, "--batch-fallback", "online")], cwd=tmp_path,
                  env=sim_env())
    assert online.returncode == 0, online.stderr
    assert "5 answered online" in online.stderr
    assert sim.stats()["requests"] == 5 and len(entries_by_item(tmp_path / "data")) == 5
    no_secret(tmp_path, proc.stderr, online.stderr)


def test_batch_options_need_batch(tmp_path: Path) -> None:
    q = questions_csv(tmp_path / "q.csv", 2)
    proc = dset(["generate", str(q), "--simulate", "--batch-fallback", "online"], cwd=tmp_path)
    assert proc.returncode == 2 and "go with --batch" in proc.stderr


def test_a_batch_cancelled_on_the_provider_side_leaves_its_rest_to_a_new_batch(tmp_path: Path,
                                                                               make_simulator: MakeSim) -> None:
    from dsetlog.llm.batches import BatchClient

    sim = make_simulator(batch_delay_s=2.0)
    n, data = 20, tmp_path / "data"
    q = questions_csv(tmp_path / "q.csv", n)
    proc = start(tmp_path, q, sim)
    wait_for(lambda: log_count(data, "BatchProgress") >= 3)  # in progress, some lines answered
    [line] = [x for x in (data / "events.jsonl").read_bytes().splitlines() if b'"type":"BatchSubmitted"' in x]
    with BatchClient(sim.base_url, KEY) as client:
        client.cancel(json.loads(line)["event"]["batch_id"])  # someone cancels it on the provider's dashboard
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    [cancelled] = events(data, BatchCancelled)
    sizes = [len(e.item_ids) for e in events(data, BatchSubmitted)]
    assert 0 < cancelled.answered < n and cancelled.retried == n - cancelled.answered
    assert sizes == [n, n - cancelled.answered] and sim.stats()["batch_creates"] == 2
    per_item = entries_by_item(data)
    assert len(per_item) == n and set(per_item.values()) == {1}


def test_the_progress_line_shows_batch_states_counts_and_an_eta() -> None:
    from dsetlog.generation.batching import detail
    from dsetlog.llm.batches import BatchState

    now = int(time.time())
    states = [BatchState("b1", "in_progress", "f1", total=100, completed=30, failed=10, created_at=now - 40),
              BatchState("b2", "validating", "f2", total=100, created_at=now - 1)]
    # 40 of 200 requests in 40 s: 160 left at 1 a second
    assert detail(states, now) == "batches: 1 in_progress, 1 validating | requests 40/200 | ETA 02:40"
    assert detail([BatchState("b3", "validating", "f3", total=5, created_at=now)], now).endswith("ETA --:--")


def test_a_profile_known_to_have_no_batch_api_is_refused_before_any_call(tmp_path: Path) -> None:
    from harness import clean_env

    q = questions_csv(tmp_path / "q.csv", 2)
    proc = dset(["generate", str(q), "--profile", "deepseek", "--batch", "--no-progress"], cwd=tmp_path,
                env=clean_env(DEEPSEEK_API_KEY="sk-deepseek-secret-9876543210"))
    assert proc.returncode == 1
    assert "the deepseek profile's server (https://api.deepseek.com) has no Batch API" in proc.stderr
    assert "--batch-fallback online" in proc.stderr
    assert "sk-deepseek-secret-9876543210" not in proc.stderr
    assert b"sk-deepseek-secret" not in (tmp_path / "data" / "events.jsonl").read_bytes()
