"""dsetlog.llm.batches end to end against the real simulator over loopback: input files split by both limits,
uploaded, batches created and polled to their end, results read back; expiry, cancel, validation failures,
servers without the Batch API, unknown ids and refused keys."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from dsetlog import redaction
from dsetlog.errors import DsetError, Kind
from dsetlog.llm.batches import (
    BatchClient,
    BatchError,
    BatchInputError,
    BatchNotEnded,
    BatchNotFound,
    BatchRejected,
    BatchState,
    BatchUnsupported,
    InputFile,
    Result,
    input_line,
    parse_results,
    poll_delay,
    unanswered,
    write_inputs,
)
from dsetlog.llm.providers import resolve
from dsetlog.simulator.server import Simulator

MakeSim = Callable[..., Simulator]
EXPIRED = "This request could not be executed before the completion window expired."


def body(i: int, model: str = "sim-chat") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": f"Item {i}: bees make honey from nectar."}]}


def pairs(n: int, model: str = "sim-chat") -> list[tuple[str, dict[str, Any]]]:
    return [(f"item-{i:03d}", body(i, model)) for i in range(n)]


def until_ended(client: BatchClient, batch_id: str, timeout: float = 10.0) -> BatchState:
    """The caller's poll loop, with the module's backoff (scaled down for a simulator that takes 0.3 s)."""
    deadline, attempt = time.monotonic() + timeout, 0
    while not (state := client.retrieve(batch_id)).ended:
        assert time.monotonic() < deadline, state
        time.sleep(poll_delay(attempt, first=0.01, cap=0.05))
        attempt += 1
    return state


# -- writing input files


def test_inputs_split_by_request_count() -> None:
    files = write_inputs(pairs(7), max_requests=3)
    assert [len(f) for f in files] == [3, 3, 1]
    assert [f.custom_ids for f in files] == [("item-000", "item-001", "item-002"),
                                             ("item-003", "item-004", "item-005"), ("item-006",)]  # fmt: skip
    lines = [json.loads(x) for f in files for x in f.content.splitlines()]
    assert lines[4] == {"custom_id": "item-004", "method": "POST", "url": "/v1/chat/completions", "body": body(4)}
    assert all(f.model == "sim-chat" for f in files) and files[0].size == len(files[0].content)


def test_inputs_split_by_bytes() -> None:
    sizes = [len(input_line(cid, b)) for cid, b in pairs(5)]
    assert len(set(sizes)) == 1  # same-length lines: the split points are exact
    files = write_inputs(pairs(5), max_bytes=2 * sizes[0] + 1)
    assert [len(f) for f in files] == [2, 2, 1]
    assert [f.size for f in files] == [2 * sizes[0], 2 * sizes[0], sizes[0]]
    assert [len(f) for f in write_inputs(pairs(5), max_bytes=2 * sizes[0])] == [2, 2, 1]  # a file may fill up
    assert [len(f) for f in write_inputs(pairs(5), max_bytes=2 * sizes[0] - 1)] == [1, 1, 1, 1, 1]


def test_inputs_split_by_both_limits_and_by_model() -> None:
    mixed = [(f"a{i}", body(i, "sim-chat" if i % 2 else "deepseek-chat")) for i in range(9)]
    files = write_inputs(mixed, max_requests=2)
    assert [(f.model, f.custom_ids) for f in files] == [
        ("deepseek-chat", ("a0", "a2")), ("sim-chat", ("a1", "a3")), ("deepseek-chat", ("a4", "a6")),
        ("sim-chat", ("a5", "a7")), ("deepseek-chat", ("a8",))]  # fmt: skip
    assert write_inputs([]) == []
    # a file that fills first still comes after one whose first request came before it
    late = write_inputs([("s0", body(0)), ("d1", body(1, "deepseek-chat")), ("d2", body(2, "deepseek-chat")),
                         ("d3", body(3, "deepseek-chat"))], max_requests=2)  # fmt: skip
    assert [f.custom_ids for f in late] == [("s0",), ("d1", "d2"), ("d3",)]


@pytest.mark.parametrize(("requests", "kw", "message"), [
    ([("a", body(0)), ("a", body(1))], {}, "custom_id 'a' is given twice"),
    ([("", body(0))], {}, "non-empty string custom_id"),
    ([("a", body(0))], {"max_bytes": 50}, "more than a whole batch input file may be (50 bytes)"),
    ([("a", body(0))], {"max_requests": 0}, "at least 1"),
])  # fmt: skip
def test_inputs_that_cannot_be_written(requests: list[Any], kw: dict[str, Any], message: str) -> None:
    with pytest.raises(BatchInputError) as err:
        write_inputs(requests, **kw)
    assert message in str(err.value) and err.value.kind is Kind.INVALID


def test_poll_delay_is_capped_exponential() -> None:
    assert [poll_delay(a) for a in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert [poll_delay(a, first=1, cap=3) for a in range(4)] == [1, 2, 3, 3]
    assert poll_delay(10_000) == 300
    with pytest.raises(ValueError):
        poll_delay(-1)


# -- end to end


def test_submit_poll_and_read_every_result_back(make_simulator: MakeSim) -> None:
    sim = make_simulator(batch_delay_s=0.3, batch_error_rate=0.2, seed=3)
    files = write_inputs(pairs(25), max_requests=10)
    assert [len(f) for f in files] == [10, 10, 5]
    with BatchClient.for_provider(resolve("openai", simulator_url=sim.base_url)) as client:
        submitted = [client.submit(f, metadata={"part": str(i)}) for i, f in enumerate(files)]
        assert [s.status for s in submitted] == ["validating"] * 3
        assert [s.metadata for s in submitted] == [{"part": "0"}, {"part": "1"}, {"part": "2"}]
        stats = sim.stats()
        assert (stats["file_uploads"], stats["batch_creates"], stats["requests"]) == (3, 3, 0)
        states = [until_ended(client, s.id) for s in submitted]
        assert [s.status for s in states] == ["completed"] * 3
        assert [s.total for s in states] == [10, 10, 5]
        results: dict[str, Result] = {}
        for f, state in zip(files, states, strict=True):
            got = client.results(state)
            assert set(got) == set(f.custom_ids) and unanswered(f.custom_ids, got) == []
            assert (sum(r.ok for r in got.values()), sum(not r.ok for r in got.values())) == (state.completed,
                                                                                              state.failed)
            results.update(got)
    assert len(results) == 25
    failed = [r for r in results.values() if not r.ok]
    assert 1 <= len(failed) <= 12
    for r in failed:
        assert (r.status_code, r.error_code, r.retryable) == (500, "server_error", True)
        assert r.error_message and "error" in (r.body or {})
    for r in results.values():
        if r.ok:
            assert r.body is not None and r.body["object"] == "chat.completion"
            assert r.body["choices"][0]["message"]["content"] and (r.error_code, r.retryable) == (None, False)
    assert sim.stats()["requests"] == 0  # not one live call: every answer came through the batches


def test_an_expired_batch_comes_back_half_answered(make_simulator: MakeSim) -> None:
    sim = make_simulator(batch_delay_s=0.2, batch_expire=True)
    [f] = write_inputs(pairs(10))
    with BatchClient(sim.base_url) as client:
        state = until_ended(client, client.submit(f).id)
        assert (state.status, state.total, state.completed, state.failed) == ("expired", 10, 5, 5)
        results = client.results(state)
    assert len(results) == 10
    expired = [r for r in results.values() if not r.ok]
    assert len(expired) == 5
    for r in expired:
        assert (r.status_code, r.body, r.error_code, r.error_message, r.retryable) == (
            None, None, "batch_expired", EXPIRED, True)


def test_a_cancelled_batch_keeps_what_it_did(make_simulator: MakeSim) -> None:
    sim = make_simulator(batch_delay_s=1.0)
    [f] = write_inputs(pairs(40))
    with BatchClient(sim.base_url) as client:
        state = client.submit(f)
        deadline = time.monotonic() + 5
        while (state := client.retrieve(state.id)).completed < 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        cancelling = client.cancel(state.id)
        assert cancelling.status == "cancelling" and not cancelling.ended
        with pytest.raises(BatchNotEnded) as err:
            client.results(cancelling)
        assert err.value.kind is Kind.CONFLICT and "poll until BatchState.ended" in str(err.value)
        state = until_ended(client, state.id)
        assert (state.status, state.completed) == ("cancelled", cancelling.completed)
        results = client.results(state)
        assert len(results) == cancelling.completed and all(r.ok for r in results.values())
        missing = unanswered(f.custom_ids, results)
        assert len(missing) == 40 - cancelling.completed and missing == sorted(missing)  # in input order
        with pytest.raises(BatchRejected) as rejected:
            client.cancel(state.id)
        assert "Cannot cancel a batch with status 'cancelled'" in str(rejected.value)
    assert sim.stats()["batch_cancels"] == 1


def test_a_batch_that_fails_validation_says_why(make_simulator: MakeSim) -> None:
    sim = make_simulator(batch_max_requests=3)
    [f] = write_inputs(pairs(4))  # the client's limit is OpenAI's; this server's is lower
    with BatchClient(sim.base_url) as client:
        state = until_ended(client, client.submit(f).id)
        assert state.status == "failed" and state.total == 0
        [issue] = state.issues
        assert (issue.code, issue.line) == ("too_many_tasks", None)
        assert "at most 3" in issue.message
        assert client.results(state) == {}


def test_list_upload_and_delete(make_simulator: MakeSim) -> None:
    sim = make_simulator()
    with BatchClient(sim.base_url) as client:
        ids = [client.submit(InputFile(input_line(f"x{i}", body(i)), (f"x{i}",))).id for i in range(3)][::-1]
        assert [s.id for s in client.list_batches(limit=2)] == ids[:2]
        assert [s.id for s in client.list_batches(limit=2, after=ids[1])] == ids[2:]
        file_id = client.upload(b"raw bytes are uploaded as they are\n", filename="raw.jsonl")
        assert client.content(file_id) == b"raw bytes are uploaded as they are\n"
        client.delete_file(file_id)
        with pytest.raises(BatchNotFound):
            client.content(file_id)
        with pytest.raises(BatchInputError):
            client.upload(b"{}", filename="input.json")
        with pytest.raises(BatchInputError):
            client.retrieve("")


# -- failures


@pytest.mark.parametrize("config", [{"batch_supported": False}, {"not_openai": "404"}, {"not_openai": "html"}])
def test_a_server_without_the_batch_api(make_simulator: MakeSim, config: dict[str, Any]) -> None:
    sim = make_simulator(**config)
    [f] = write_inputs(pairs(2))
    with BatchClient(sim.base_url) as client:
        for call in (lambda: client.submit(f), lambda: client.retrieve("batch_abc"),
                     lambda: client.create("file-abc"), lambda: client.list_batches(),
                     lambda: client.content("file-abc")):  # fmt: skip
            with pytest.raises(BatchUnsupported) as err:
                call()
            assert f"{sim.base_url} does not support OpenAI's Batch API" in str(err.value)
            assert "without --batch" in str(err.value) and err.value.reason == "unsupported"
            assert isinstance(err.value, DsetError) and not err.value.retryable
    assert sim.stats()["file_uploads"] == 0


def test_unknown_ids_and_refused_creates(make_simulator: MakeSim) -> None:
    sim = make_simulator()
    with BatchClient(sim.base_url) as client:
        with pytest.raises(BatchNotFound) as err:
            client.retrieve("batch_nope")
        assert err.value.kind is Kind.NOT_FOUND and "knows no batch_nope" in str(err.value)
        with pytest.raises(BatchNotFound):
            client.cancel("batch_nope")
        with pytest.raises(BatchRejected) as rejected:
            client.create("file-nope")
        assert rejected.value.status_code == 400 and "No such File object: file-nope" in str(rejected.value)


def test_a_refused_key_stops_and_is_never_shown(make_simulator: MakeSim) -> None:
    key = "sk-live-0123456789abcdefSECRETwxyz"
    sim = make_simulator(require_api_key="sk-the-right-one-0123456789", echo_key=True)
    [f] = write_inputs(pairs(1))
    with BatchClient(sim.base_url, key) as client:
        for call in (lambda: client.submit(f), lambda: client.retrieve("batch_x")):
            with pytest.raises(BatchError) as err:
                call()
            assert type(err.value) is BatchError and err.value.reason == "auth" and not err.value.retryable
            text = str(err.value)
            assert "check the API key" in text and redaction.MASK in text
            for form in (key, key[-8:], key[:12], "SECRET"):
                assert form not in text, text


def test_nothing_listening(unused_port: int) -> None:
    with BatchClient(f"http://127.0.0.1:{unused_port}/v1", timeout=5) as client:
        with pytest.raises(BatchError) as err:
            client.retrieve("batch_x")
    assert err.value.reason == "unreachable" and "connection was refused" in str(err.value)


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_result_lines_in_every_shape() -> None:
    lines = [
        {"id": "r1", "custom_id": "ok", "error": None,
         "response": {"status_code": 200, "request_id": "q", "body": {"object": "chat.completion"}}},
        {"id": "r2", "custom_id": "bad", "error": None,
         "response": {"status_code": 400, "request_id": "q", "body": {"error": {"message": "no", "type": "invalid_request_error", "code": None}}}},
        {"id": "r3", "custom_id": "slow", "error": None, "response": {"status_code": 429, "body": {}}},
        {"id": "r4", "custom_id": "late", "response": None, "error": {"code": "batch_expired", "message": EXPIRED}},
    ]  # fmt: skip
    got = parse_results(b"\n".join(json.dumps(x).encode() for x in lines) + b"\n\n")
    assert got == [
        Result("ok", 200, {"object": "chat.completion"}),
        Result("bad", 400, lines[1]["response"]["body"], "invalid_request_error", "no"),  # type: ignore[index]
        Result("slow", 429, {}, "http_429", ""),
        Result("late", None, None, "batch_expired", EXPIRED),
    ]
    assert [(r.ok, r.retryable) for r in got] == [(True, False), (False, False), (False, True), (False, True)]
    with pytest.raises(BatchError) as err:
        parse_results(b'{"custom_id": "ok"}\nnot json\n')
    assert "line 2 of a batch result file" in str(err.value)
