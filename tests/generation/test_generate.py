"""`dset generate` as a user runs it: a real process, a real simulator on loopback, real files."""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import DSET, against, clean_env, dset, questions_csv, sim_env  # noqa: F401

from dsetlog.simulator.server import Simulator
from dsetlog.store.events import EntryGenerated, ItemBookmarked
from dsetlog.store.log import EventLog


def entries_by_item(data: Path) -> Counter[str]:
    with EventLog.in_dir(data) as log:
        return Counter(r.event.item_id for r in log.read() if isinstance(r.event, EntryGenerated))


def test_outputs_have_the_seed_shapes(tmp_path: Path) -> None:
    q = questions_csv(tmp_path / "q.csv", 5)
    proc = dset(["generate", str(q), "--simulate", "--sim-latency-ms", "1", "--no-progress",
                 "--formats", "parquet,jsonl,alpaca,sharegpt,openai-chat"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "dset_generator"
    questions = [f"What is fact number {i} about topic {i % 7}?" for i in range(5)]

    with open(out / "output.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["timestamp", "question", "thoughts", "final_answer"]
    assert [r[1] for r in rows[1:]] == questions  # input order, one record each
    for ts, _, thoughts, answer in rows[1:]:
        assert ts.endswith("Z") and "T" in ts
        assert thoughts and answer  # deepseek-reasoner on the simulator: thoughts are kept

    lines = [json.loads(line) for line in (out / "output.json").read_text().splitlines()]
    assert [d["metadata"]["question"] for d in lines] == questions
    assert set(lines[0]) == {"metadata", "response"}
    assert set(lines[0]["metadata"]) == {"timestamp", "question"}
    assert set(lines[0]["response"]) == {"reasoning", "answer"}

    txt = (out / "output.txt").read_text()
    assert all(f"Question: {q}" in txt for q in questions)
    assert txt.count("Answer:") == 5

    import pyarrow.parquet as pq

    table = pq.read_table(out / "dataset.parquet")
    assert table.column("question").to_pylist() == questions
    assert table.column("simulated").to_pylist() == [True] * 5
    alpaca = [json.loads(x) for x in (out / "alpaca.jsonl").read_text().splitlines()]
    assert alpaca[0]["instruction"] == questions[0] and alpaca[0]["output"]
    share = json.loads((out / "sharegpt.jsonl").read_text().splitlines()[0])
    assert [t["from"] for t in share["conversations"]] == ["human", "gpt"]
    chat = json.loads((out / "openai_chat.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant"]
    full = json.loads((out / "dataset.jsonl").read_text().splitlines()[0])
    assert full["simulated"] is True and full["model"]


def test_a_second_run_requests_nothing(tmp_path: Path, simulator: Simulator) -> None:
    q = questions_csv(tmp_path / "q.csv", 12)
    first = dset(["generate", str(q), *against(simulator)], cwd=tmp_path, env=sim_env())
    assert first.returncode == 0, first.stderr
    requests = simulator.stats()["requests"]
    assert requests == 12
    before = (tmp_path / "dset_generator" / "output.csv").read_bytes()
    second = dset(["generate", str(q), *against(simulator)], cwd=tmp_path, env=sim_env())
    assert second.returncode == 0, second.stderr
    assert simulator.stats()["requests"] == requests
    assert "12 already answered" in second.stderr
    assert (tmp_path / "dset_generator" / "output.csv").read_bytes() == before


def test_kill_9_at_several_moments_then_resume_answers_each_question_once(
        tmp_path: Path, make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(latency_ms=40, jitter_ms=20)
    n = 150
    q = questions_csv(tmp_path / "q.csv", n)
    rng = random.Random(7)
    for _ in range(4):
        proc = subprocess.Popen([*DSET, "generate", str(q), *against(sim, "--concurrency", "8")], cwd=tmp_path,
                                env=sim_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.4, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = dset(["generate", str(q), *against(sim, "--concurrency", "8")], cwd=tmp_path, env=sim_env())
    assert final.returncode == 0, final.stderr
    per_item = entries_by_item(tmp_path / "data")
    assert len(per_item) == n and set(per_item.values()) == {1}  # every question exactly once
    with open(tmp_path / "dset_generator" / "output.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    assert len(rows) == n and len({r[1] for r in rows}) == n
    # at most the calls in flight were lost per kill: far fewer than re-requesting everything
    assert sim.stats()["requests"] <= n + 4 * 8 + 8


@pytest.mark.parametrize("kind", ["429", "500", "hang", "malformed", "empty", "reset"])
def test_each_fault_kind_is_retried_and_the_run_completes(
        tmp_path: Path, make_simulator: Callable[..., Simulator], kind: str) -> None:
    sim = make_simulator(**{f"rate_{kind}": 0.5, "retry_after_s": 0.05, "hang_s": 5.0, "max_faults_per_prompt": 2})
    q = questions_csv(tmp_path / "q.csv", 10)
    proc = dset(["generate", str(q), *against(sim, "--backoff", "0.01", "--timeout", "1")], cwd=tmp_path,
                env=sim_env())
    assert proc.returncode == 0, proc.stderr
    stats = sim.stats()
    assert stats["faults"][kind] > 0
    assert len(entries_by_item(tmp_path / "data")) == 10
    with EventLog.in_dir(tmp_path / "data") as log:
        failures = [r.event for r in log.read() if type(r.event).__name__ == "AttemptFailed"]
    assert len(failures) == stats["faults"][kind]


def test_401_stops_at_once_with_a_clear_message(tmp_path: Path, make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(require_api_key="sk-the-right-one")
    q = questions_csv(tmp_path / "q.csv", 50)
    proc = dset(["generate", str(q), *against(sim, "--concurrency", "2")], cwd=tmp_path, env=sim_env())
    assert proc.returncode == 1
    assert "API key" in proc.stderr
    assert sim.stats()["requests"] <= 2  # no retries, no further items
    again = dset(["generate", str(q), *against(sim)], cwd=tmp_path,
                 env=clean_env(DSET_API_KEY="sk-the-right-one"))
    assert again.returncode == 0, again.stderr


def test_quota_exhausted_stops_the_run(tmp_path: Path, make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(quota_exhausted=True)
    q = questions_csv(tmp_path / "q.csv", 20)
    proc = dset(["generate", str(q), *against(sim, "--concurrency", "1")], cwd=tmp_path, env=sim_env())
    assert proc.returncode == 1 and "credit or quota" in proc.stderr
    assert sim.stats()["requests"] == 1


def test_bookmarks_round_trip_in_the_csv(tmp_path: Path, make_simulator: Callable[..., Simulator]) -> None:
    flaky = make_simulator(rate_500=0.5, max_faults_per_prompt=100, seed=3)
    q = questions_csv(tmp_path / "q.csv", 20)
    first = dset(["generate", str(q), *against(flaky, "--max-retries", "1", "--backoff", "0")], cwd=tmp_path,
                 env=sim_env())
    assert first.returncode == 1
    with open(q, newline="") as fh:
        rows = list(csv.reader(fh))
    errors = [r[0] for r in rows[1:] if r[1] == "ERROR"]
    assert errors and len(errors) < 20
    assert f"{len(errors)} question(s) bookmarked ERROR" in first.stderr
    with EventLog.in_dir(tmp_path / "data") as log:
        bookmarked = {r.event.item_id for r in log.read() if isinstance(r.event, ItemBookmarked)}
    assert len(bookmarked) == len(errors)
    with open(tmp_path / "dset_generator" / "output.csv", newline="") as fh:
        assert len(list(csv.reader(fh))) - 1 == 20 - len(errors)

    healthy = make_simulator()
    second = dset(["generate", str(q), *against(healthy)], cwd=tmp_path, env=sim_env())
    assert second.returncode == 0, second.stderr
    assert healthy.stats()["requests"] == len(errors)  # only the bookmarked ones are asked again
    with open(q, newline="") as fh:
        assert all(r[1] == "" for r in list(csv.reader(fh))[1:])
    assert set(entries_by_item(tmp_path / "data").values()) == {1}


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"\x00\x01\x02binary", "binary"), (b"caf\xe9?\n", "not UTF-8"), (b"", "no questions")],
)
def test_bad_csv_gets_exit_code_2(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "q.csv"
    if content is not None:
        path.write_bytes(content)
    proc = dset(["generate", str(path), "--simulate", "--no-progress"], cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_no_key_and_no_simulate_says_what_to_set(tmp_path: Path) -> None:
    q = questions_csv(tmp_path / "q.csv", 2)
    proc = dset(["generate", str(q)], cwd=tmp_path)
    assert proc.returncode == 2
    assert "DEEPSEEK_API_KEY" in proc.stderr and "--simulate" in proc.stderr


def test_simulate_stands_in_for_the_profile_asked_for(tmp_path: Path) -> None:
    """--profile openai --simulate: the simulator answers as gpt-4o-mini (openai's model, openai's prices), labelled
    simulated; it never reaches openai's URL, and no key is needed."""
    q = questions_csv(tmp_path / "q.csv", 2)
    proc = dset(["generate", str(q), "--profile", "openai", "--simulate", "--no-progress", "--formats", "jsonl"],
                cwd=tmp_path, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    with EventLog.in_dir(tmp_path / "data") as log:
        made = [r.event for r in log.read() if isinstance(r.event, EntryGenerated)]
    assert len(made) == 2 and {(e.model, e.simulated) for e in made} == {("gpt-4o-mini", True)}
    assert "api.openai.com" not in proc.stdout + proc.stderr


def test_the_key_never_reaches_the_log_or_outputs(tmp_path: Path, simulator: Simulator) -> None:
    q = questions_csv(tmp_path / "q.csv", 3)
    proc = dset(["generate", str(q), *against(simulator, "--formats", "jsonl")], cwd=tmp_path, env=sim_env())
    assert proc.returncode == 0
    for path in [*(tmp_path / "data").rglob("*"), *(tmp_path / "dset_generator").rglob("*")]:
        if path.is_file():
            assert b"sk-test-secret" not in path.read_bytes(), path
    assert "sk-test-secret" not in proc.stderr + proc.stdout


def test_budget_stops_cleanly_and_a_later_run_continues(tmp_path: Path, simulator: Simulator) -> None:
    q = questions_csv(tmp_path / "q.csv", 30)
    proc = dset(["generate", str(q), *against(simulator, "--concurrency", "1", "--budget", "600")], cwd=tmp_path,
                env=sim_env())
    assert proc.returncode == 1 and "budget" in proc.stderr
    answered = len(entries_by_item(tmp_path / "data"))
    assert 0 < answered < 30
    with open(tmp_path / "dset_generator" / "output.csv", newline="") as fh:
        assert len(list(csv.reader(fh))) - 1 == answered
    rest = dset(["generate", str(q), *against(simulator)], cwd=tmp_path, env=sim_env())
    assert rest.returncode == 0
    assert simulator.stats()["requests"] == 30


def test_ctrl_c_writes_outputs_and_resumes(tmp_path: Path, make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(latency_ms=100)
    q = questions_csv(tmp_path / "q.csv", 80)
    proc = subprocess.Popen([*DSET, "generate", str(q), *against(sim, "--concurrency", "4")], cwd=tmp_path,
                            env=sim_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (tmp_path / "data" / "events.jsonl").exists():
        time.sleep(0.05)
    while time.monotonic() < deadline and len(entries_by_item(tmp_path / "data")) < 8:
        time.sleep(0.05)  # mid-run: some answers are in, most are not
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    answered = len(entries_by_item(tmp_path / "data"))
    assert 0 < answered < 80
    with open(tmp_path / "dset_generator" / "output.csv", newline="") as fh:
        assert len(list(csv.reader(fh))) - 1 == answered
    rest = dset(["generate", str(q), *against(sim, "--concurrency", "16")], cwd=tmp_path, env=sim_env())
    assert rest.returncode == 0
    assert set(entries_by_item(tmp_path / "data").values()) == {1}
    assert len(entries_by_item(tmp_path / "data")) == 80
