"""The client against servers that differ from ours: each quirk a simulator switch, each handled for real.

Structured output steps down to what the endpoint accepts (and the log remembers it), reasoning is kept in
every shape, a rate limit slows the whole client instead of failing items, secrets never leave, and
failures are classified by what they mean.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import Env, against, dset, questions_csv, sim_env

from dsetlog import redaction
from dsetlog.engine.engine import Engine, WorkItem, run_engine
from dsetlog.engine.progress import Progress
from dsetlog.llm.client import CallFailure, LLMClient, RetryPolicy
from dsetlog.llm.providers import resolve
from dsetlog.llm.structured import Structured
from dsetlog.simulator.server import Simulator
from dsetlog.store.events import AttemptFailed, EntryGenerated, ItemBookmarked, StructuredModeLearned
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel

KEY = "sk-live-0123456789abcdefSECRETwxyz"
SCHEMA = Structured("qa_items", {
    "type": "object",
    "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
        "type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
        "required": ["question", "answer"], "additionalProperties": False}}},
    "required": ["items"], "additionalProperties": False,
})


def formats_sent(sim: Simulator) -> list[str]:
    """The structured mode of each chat request the simulator saw, in order."""
    out = []
    for body in sim.requests():
        fmt = body.get("response_format")
        if fmt is None:
            out.append("text")
        elif fmt.get("type") == "json_object":
            out.append("json_object_schema" if "schema" in fmt else "json_object")
        else:
            out.append(fmt.get("type", "?"))
    return out


def learned(data: Path) -> list[StructuredModeLearned]:
    with EventLog.in_dir(data) as log:
        return [r.event for r in log.read() if isinstance(r.event, StructuredModeLearned)]


def doc_env(tmp_path: Path, make_simulator: Callable[..., Simulator], **sim: Any) -> Env:
    env = Env(tmp_path, make_simulator(request_log=5000, **sim))
    env.project_md(3)
    return env


# --- structured output -----------------------------------------------------------------------------


def test_llamacpp_refuses_json_schema_and_the_endpoint_steps_down_once(
        tmp_path: Path, make_simulator: Callable[..., Simulator]) -> None:
    env = doc_env(tmp_path, make_simulator, structured="llamacpp")
    result = env.run(datasets_per_chunk=2, analyze_quality=False, concurrency=2)
    assert result.outcome == "completed" and len(env.entries(result.dataset_id)) == 6
    sent = formats_sent(env.sim)
    # refused json_schema calls (at most one per worker in flight), then the server's own schema mode
    assert sent[0] == "json_schema" and set(sent) <= {"json_schema", "json_object_schema"}
    assert sent.count("json_schema") <= 2 and sent.count("json_object_schema") >= 3
    [lesson] = learned(env.data)
    assert (lesson.mode, lesson.previous, lesson.endpoint) == ("json_object_schema", "json_schema",
                                                                 env.sim.base_url.rstrip("/"))
    assert "Input should be 'text' or 'json_object'" in lesson.reason
    # the step down spends no retry: no item was bookmarked, each refused attempt is recorded as such
    reasons = [e.reason for e in env.events(AttemptFailed)]
    assert reasons and all(r.startswith("mode_lowered (HTTP 500)") for r in reasons)
    assert not env.events(ItemBookmarked)


def test_a_resumed_run_starts_in_the_mode_the_log_learned(
        tmp_path: Path, make_simulator: Callable[..., Simulator]) -> None:
    from dsetlog.llm import structured

    env = doc_env(tmp_path, make_simulator, structured="llamacpp")
    env.run(datasets_per_chunk=1, max_chunks=1)
    structured.BOOK.clear()  # a new process: only the log knows
    env.sim.reset_stats()
    env.rm = ReadModel.open(env.data)
    again = env.run(datasets_per_chunk=1, dataset_name="second", enable_versioning=True)
    assert again.outcome == "completed"
    assert formats_sent(env.sim) and set(formats_sent(env.sim)) == {"json_object_schema"}
    assert len(learned(env.data)) == 1


def test_a_server_without_structured_output_gets_plain_text_parsed_strictly(
        tmp_path: Path, make_simulator: Callable[..., Simulator]) -> None:
    env = doc_env(tmp_path, make_simulator, structured="text")
    result = env.run(datasets_per_chunk=2, concurrency=1)
    assert result.outcome == "completed" and len(env.entries(result.dataset_id)) == 6
    assert [e.mode for e in learned(env.data)] == ["json_object_schema", "json_object", "text"]
    assert formats_sent(env.sim)[-1] == "text"
    plain = [b for b in env.sim.requests() if "response_format" not in b]
    assert all("JSON Schema" in b["messages"][-1]["content"] for b in plain)  # the shape is in the prompt


def test_profile_structured_forces_the_mode(tmp_path: Path, make_simulator: Callable[..., Simulator],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMULATED_STRUCTURED", "json_object")
    env = doc_env(tmp_path, make_simulator)
    assert env.run(datasets_per_chunk=1).outcome == "completed"
    assert set(formats_sent(env.sim)) == {"json_object"} and not learned(env.data)
    # forced onto a server that refuses it: the refusal is the items' failure, never a silent step down
    monkeypatch.setenv("SIMULATED_STRUCTURED", "json_schema")
    env2 = doc_env(tmp_path / "b", make_simulator, structured="llamacpp")
    failed = env2.run(datasets_per_chunk=1, max_chunks=1)
    assert failed.outcome == "failed" and not learned(env2.data)
    assert set(formats_sent(env2.sim)) == {"json_schema"} and len(env2.sim.requests()) == 1  # not retried


# --- reasoning ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning", "think"])
def test_reasoning_is_kept_in_every_shape_servers_send_it(
        tmp_path: Path, make_simulator: Callable[..., Simulator], field: str) -> None:
    sim = make_simulator(reasoning_field=field)
    q = questions_csv(tmp_path / "q.csv", 3)
    proc = dset(["generate", str(q), *against(sim)], cwd=tmp_path, env=sim_env())
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "dset_generator" / "output.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    for row in rows:
        assert row["thoughts"].strip(), field
        assert "<think>" not in row["final_answer"] and "</think>" not in row["final_answer"]


# --- rate limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [True, False])
def test_a_rate_limit_slows_the_client_and_spends_no_retries(
        tmp_path: Path, make_simulator: Callable[..., Simulator], headers: bool) -> None:
    sim = make_simulator(rate_limit_rps=25, rate_limit_burst=5, rate_limit_headers=headers, latency_ms=5)
    q = questions_csv(tmp_path / "q.csv", 100)
    proc = dset(["generate", str(q), *against(sim, "--concurrency", "32", "--max-retries", "0")], cwd=tmp_path,
                env=sim_env())
    assert proc.returncode == 0, proc.stderr  # every 429 was waited out, none spent the (zero) retries
    stats = sim.stats()
    assert stats["rate_limited"] > 0  # the limit was met...
    assert stats["rate_limited"] <= 0.3 * stats["requests"], stats  # ...and the whole client slowed down
    with open(tmp_path / "dset_generator" / "output.csv", newline="") as fh:
        assert sum(1 for _ in fh) == 101


def test_one_controller_paces_every_client_of_an_endpoint(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(rate_limit_rps=20, rate_limit_burst=2)
    provider = resolve("vllm", base_url=sim.base_url, model="sim-chat", env={})

    async def go() -> None:
        clients = [LLMClient(provider, concurrency=8) for _ in range(3)]  # three jobs, one endpoint
        assert clients[0].limiter is clients[1].limiter is clients[2].limiter

        async def one(client: LLMClient, i: int) -> None:
            for attempt in range(1, 60):
                try:
                    await client.complete([{"role": "user", "content": f"q{i}"}], attempt=attempt)
                    return
                except CallFailure as failure:
                    assert failure.free and failure.reason == "rate_limited"

        await asyncio.gather(*(one(clients[i % 3], i) for i in range(30)))
        for client in clients:
            await client.close()

    asyncio.run(go())
    stats = sim.stats()
    # the first wave of 30 meets a bucket of 2; from then on the three clients wait together
    assert stats["requests"] - stats["rate_limited"] == 30 and stats["rate_limited"] <= 40, stats


# --- secrets -----------------------------------------------------------------------------------------


def test_a_key_the_provider_echoes_is_nowhere(tmp_path: Path, make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(require_api_key="sk-the-right-key-0000000000", echo_key=True)
    q = questions_csv(tmp_path / "q.csv", 4)
    env = sim_env()
    env["DSET_API_KEY"] = KEY
    proc = dset(["generate", str(q), *against(sim)], cwd=tmp_path, env=env)
    assert proc.returncode != 0 and "refused the key" in proc.stderr
    history = dset(["log", "history", "--data", "data", next(iter(_item_ids(tmp_path / "data")))], cwd=tmp_path,
                   env=env)
    shown = proc.stdout + proc.stderr + history.stdout + history.stderr
    for where, text in [("output", shown), *_files(tmp_path)]:
        for form in (KEY, KEY[-4:] + ".", "SECRETwxyz", "0123456789abcdef"):
            assert form not in text, (where, form)
    assert redaction.MASK in (tmp_path / "data" / "events.jsonl").read_text()


def _item_ids(data: Path) -> set[str]:
    with EventLog.in_dir(data) as log:
        return {r.event.item_id for r in log.read() if hasattr(r.event, "item_id")}


def _files(root: Path) -> list[tuple[str, str]]:
    return [(str(p), p.read_bytes().decode("utf-8", "replace")) for p in root.rglob("*") if p.is_file()]


# --- failures by meaning -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind, expected", [("html", "HTML page"), ("404", "not an OpenAI-compatible API")])
def test_a_server_that_is_not_openai_compatible_stops_the_run_at_once(
        tmp_path: Path, make_simulator: Callable[..., Simulator], kind: str, expected: str) -> None:
    sim = make_simulator(not_openai=kind)
    q = questions_csv(tmp_path / "q.csv", 20)
    proc = dset(["generate", str(q), *against(sim, "--concurrency", "2")], cwd=tmp_path, env=sim_env())
    assert proc.returncode == 1 and expected in proc.stderr and sim.base_url.rstrip("/") in proc.stderr
    assert sim.stats()["requests"] <= 3  # stopped at once, not 20 questions x 4 attempts


def test_nothing_listening_stops_the_run_at_once(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    q = questions_csv(tmp_path / "q.csv", 5)
    proc = dset(["generate", str(q), "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m", "--no-progress"],
                cwd=tmp_path, env=sim_env(), timeout=60)
    assert proc.returncode == 1 and "connection was refused" in proc.stderr and f":{port}/v1" in proc.stderr


def test_context_and_size_errors_fail_the_item_naming_the_limit(
        tmp_path: Path, make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(context_tokens=60, max_body_bytes=700)
    rows = ["question", "short one?", "long " * 100 + "?", "wide " * 130 + "?"]
    q = tmp_path / "q.csv"
    q.write_text("\n".join(rows) + "\n")
    proc = dset(["generate", str(q), *against(sim, "--max-tokens", "20")], cwd=tmp_path, env=sim_env())
    assert proc.returncode == 1
    with EventLog.in_dir(tmp_path / "data") as log:
        marks = [r.event for r in log.read() if isinstance(r.event, ItemBookmarked)]
    reasons = sorted(m.reason for m in marks)
    assert len(marks) == 2 and all(m.attempts == 1 for m in marks)  # not retried: it would fail the same way
    assert "HTTP 413" in reasons[1] or "HTTP 413" in reasons[0]
    assert any("limit is 60 tokens" in r for r in reasons)


def _engine(tmp_path: Path, sim: Simulator, make_events: Any) -> Engine:
    provider = resolve("vllm", base_url=sim.base_url, model="sim-chat", env={})
    return Engine(log=EventLog.in_dir(tmp_path), client=LLMClient(provider),
                  policy=RetryPolicy(max_retries=3, backoff=0.01), make_events=make_events,
                  progress=Progress(total=1, enabled=False))


@pytest.mark.parametrize("max_tokens, cap, outcome, sizes", [
    (15, 16384, "completed", [15, 30]),  # cut at 15 tokens, whole at 30
    (5, 16384, "failed", [5, 10]),  # cut twice: the item fails, saying to raise --max-tokens
    (5, 8, "failed", [5, 8]),  # more room only up to the cap
    (8, 8, "failed", [8]),  # at the cap already: no second try
])
def test_a_reply_cut_inside_its_json_is_tried_once_with_more_room(
        tmp_path: Path, make_simulator: Callable[..., Simulator], monkeypatch: pytest.MonkeyPatch,
        max_tokens: int, cap: int, outcome: str, sizes: list[int]) -> None:
    import dsetlog.engine.engine

    monkeypatch.setattr(dsetlog.engine.engine, "MAX_TOKENS_CAP", cap)
    sim = make_simulator(request_log=100)  # cuts content at max_tokens (4 characters a token), finish "length"

    def make_events(item: WorkItem, c: Any, attempt: int) -> list[Any]:
        json.loads(c.content)
        return [EntryGenerated(dataset_id="d", item_id="i", entry_id="e", question="q", answer=c.content)]

    engine = _engine(tmp_path, sim, make_events)
    item = WorkItem("d", "i", [{"role": "user", "content": "The reply must be long. " * 40}], schema=SCHEMA,
                    max_tokens=max_tokens)
    result = run_engine(engine, [item])
    assert result.outcome == outcome
    assert [b["max_tokens"] for b in sim.requests()] == sizes
    if outcome == "failed":
        with EventLog.in_dir(tmp_path) as log:
            [mark] = [r.event for r in log.read() if isinstance(r.event, ItemBookmarked)]
        assert "finish_reason length" in mark.reason and "raise --max-tokens" in mark.reason


def test_a_key_the_provider_echoes_never_reaches_the_api_or_the_snapshot(
        tmp_path: Path, make_simulator: Callable[..., Simulator]) -> None:
    from harness import Server, clean_env
    from harness import pancreas_markdown as markdown

    sim = make_simulator(require_api_key="sk-the-right-key-0000000000", echo_key=True)
    token = "dset-token-0123456789-abcdef"
    env = clean_env(VLLM_BASE_URL=sim.base_url, VLLM_API_KEY=KEY, VLLM_MODEL="sim-chat", DSET_API_TOKEN=token)
    data = tmp_path / "data"
    server = Server(data, tmp_path / "server.log", env=env)
    try:
        server_call = _authorized(server, token)
        _, project, _ = server_call("POST", "/projects", {"name": "med"})
        server_call("POST", f"/projects/{project['id']}/documents", {"filename": "n.md", "content": markdown(2)})
        _, accepted, _ = server_call("POST", "/datasets/generate", {
            "project_id": project["id"], "classification_model": "vllm", "parsing_model": "vllm",
            "chunking_model": "vllm"})
        job_id = accepted["job_id"]
        for _ in range(300):
            _, status, _ = server_call("GET", f"/datasets/generate/{job_id}/status", None)
            if status["status"] in ("completed", "failed"):
                break
            import time

            time.sleep(0.1)
        assert status["status"] == "failed" and "refused the key" in status["error"], status
        responses = [json.dumps(status)]
        for path in ("/jobs", f"/jobs/{job_id}", f"/datasets/generate/{job_id}/status"):
            code, body, _ = server_call("GET", path, None)
            responses.append(json.dumps(body))
    finally:
        server.stop()
    texts = [("responses", "\n".join(responses)), ("server stderr", server.log_text()), *_files(data)]
    assert any(p.endswith("readmodel.msgpack") for p, _ in texts)  # the clean stop saved a snapshot
    for where, text in texts:
        for form in (KEY, "SECRETwxyz", "0123456789abcdef", token):
            assert form not in text, (where, form)


def _authorized(server: Any, token: str) -> Callable[..., tuple[int, Any, dict[str, str]]]:
    import urllib.error
    import urllib.request

    def call(method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(server.base + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read()), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)

    return call
