"""The simulator's Batch API (/v1/files, /v1/batches) over real loopback HTTP, its replies parsed by the real openai SDK."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from dsetlog.simulator import SimConfig, Simulator

MakeSim = Callable[..., Simulator]
EXPIRED = "This request could not be executed before the completion window expired."


def sdk(sim: Simulator, key: str = "sk-test") -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key=key, max_retries=0)


def body(i: int, model: str = "sim-chat") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": f"Question {i}: why is the sky blue? "
                                          f"Light scatters in air number {i}."}]}


def line(i: int, **over: Any) -> dict[str, Any]:
    return {"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions", "body": body(i), **over}


def jsonl(items: list[Any]) -> bytes:
    return b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in items)


def upload(c: openai.OpenAI, items: list[Any], name: str = "input.jsonl") -> Any:
    return c.files.create(file=(name, jsonl(items)), purpose="batch")


def start(c: openai.OpenAI, n: int, **meta: str) -> Any:
    f = upload(c, [line(i) for i in range(n)])
    return c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                            metadata=meta or None)


def wait(c: openai.OpenAI, batch_id: str, statuses: tuple[str, ...], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = c.batches.retrieve(batch_id)
        if batch.status in statuses or time.monotonic() > deadline:
            assert batch.status in statuses, batch
            return batch
        time.sleep(0.01)


def lines_of(c: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in c.files.content(file_id).content.splitlines()]


def raw(sim: Simulator, method: str, path: str, data: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    root = sim.base_url.removesuffix("/v1")
    req = urllib.request.Request(root + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def multipart(fields: list[tuple[str, str | None, bytes]], boundary: str = "xXbOuNdArYXx") -> tuple[bytes, str]:
    out = b""
    for name, filename, content in fields:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# -- files


def test_files_upload_retrieve_content_list_delete(make_simulator: MakeSim, tmp_path: Path) -> None:
    sim = make_simulator()
    c = sdk(sim)
    content = jsonl([line(0), line(1)])
    path = tmp_path / "requests.jsonl"
    path.write_bytes(content)
    from_path = c.files.create(file=path, purpose="batch")
    from_bytes = c.files.create(file=("b.jsonl", content), purpose="batch")
    assert (from_path.object, from_path.purpose, from_path.status, from_path.bytes) == ("file", "batch", "processed",
                                                                                        len(content))
    assert from_path.filename == "requests.jsonl" and from_path.id.startswith("file-") and from_path.id != from_bytes.id
    assert from_path.expires_at == from_path.created_at + 30 * 86400
    assert c.files.retrieve(from_path.id) == from_path
    assert c.files.content(from_path.id).content == content
    assert [f.id for f in c.files.list()] == [from_bytes.id, from_path.id]  # newest first
    # the same routes without the /v1 prefix
    status, _, got = raw(sim, "GET", f"/files/{from_bytes.id}/content")
    assert (status, got) == (200, content)
    status, _, got = raw(sim, "GET", f"/files/{from_bytes.id}")
    assert status == 200 and json.loads(got)["filename"] == "b.jsonl"
    deleted = c.files.delete(from_path.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (from_path.id, True, "file")
    with pytest.raises(openai.NotFoundError) as err:
        c.files.retrieve(from_path.id)
    assert err.value.body["message"] == f"No such File object: {from_path.id}"  # type: ignore[index]
    assert sim.stats()["file_uploads"] == 2


def test_hand_made_multipart_upload_without_the_prefix(make_simulator: MakeSim) -> None:
    sim = make_simulator()
    content = jsonl([line(0)])
    data, kind = multipart([("purpose", None, b"batch"), ("file", "mine.jsonl", content)])
    status, _, got = raw(sim, "POST", "/files", data, {"Content-Type": kind})
    assert status == 200
    obj = json.loads(got)
    assert (obj["filename"], obj["bytes"], obj["purpose"]) == ("mine.jsonl", len(content), "batch")
    status, _, got = raw(sim, "GET", f"/v1/files/{obj['id']}/content")
    assert got == content


@pytest.mark.parametrize(("fields", "message"), [
    ([("purpose", None, b"batch")], "Missing required parameter: 'file'"),
    ([("file", "a.jsonl", b"{}\n")], "Missing required parameter: 'purpose'"),
    ([("purpose", None, b"homework"), ("file", "a.jsonl", b"{}\n")], "'homework' is not one of"),
    ([("purpose", None, b"batch"), ("file", "a.csv", b"x,y\n")], "Invalid file format for Batch API. Must be .jsonl"),
])  # fmt: skip
def test_upload_refusals(make_simulator: MakeSim, fields: list[tuple[str, str | None, bytes]], message: str) -> None:
    sim = make_simulator()
    data, kind = multipart(fields)
    status, _, got = raw(sim, "POST", "/v1/files", data, {"Content-Type": kind})
    assert status == 400
    assert json.loads(got)["error"]["message"].startswith(message)
    status, _, got = raw(sim, "POST", "/v1/files", b'{"purpose": "batch"}', {"Content-Type": "application/json"})
    assert status == 400 and "multipart/form-data" in json.loads(got)["error"]["message"]
    assert sim.stats()["file_uploads"] == 0


# -- a batch's life


def test_a_batch_answers_every_line_with_the_chat_endpoints_answer(make_simulator: MakeSim) -> None:
    sim = make_simulator()
    c = sdk(sim)
    created = start(c, 6, run="r1")
    assert created.id.startswith("batch_") and created.object == "batch"
    assert (created.status, created.endpoint, created.completion_window) == ("validating", "/v1/chat/completions",
                                                                             "24h")
    assert created.request_counts is not None and created.request_counts.total == 0
    assert created.metadata == {"run": "r1"} and created.expires_at == created.created_at + 86400
    assert (created.output_file_id, created.error_file_id, created.errors) == (None, None, None)
    done = c.batches.retrieve(created.id)
    assert done.status == "completed" and done.model == "sim-chat"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (6, 6, 0)
    assert done.error_file_id is None and done.output_file_id is not None
    assert None not in (done.in_progress_at, done.finalizing_at, done.completed_at)
    assert (done.failed_at, done.expired_at, done.cancelling_at, done.cancelled_at) == (None, None, None, None)
    out = c.files.retrieve(done.output_file_id)
    assert (out.purpose, out.filename) == ("batch_output", f"{done.id}_output.jsonl")
    results = lines_of(c, done.output_file_id)
    assert sorted(r["custom_id"] for r in results) == [f"q{i}" for i in range(6)]
    stats = sim.stats()
    assert (stats["requests"], stats["file_uploads"], stats["batch_creates"], stats["batch_lines"]) == (0, 1, 1, 6)
    usage = [0, 0]
    for r in results:
        assert r["error"] is None and r["id"].startswith("batch_req_")
        assert r["response"]["status_code"] == 200 and r["response"]["request_id"].startswith("req_")
        answer = r["response"]["body"]
        assert answer["object"] == "chat.completion" and answer["system_fingerprint"] == "dset-simulator"
        live = c.chat.completions.create(**body(int(r["custom_id"][1:])))  # type: ignore[call-overload]
        assert answer["choices"][0]["message"]["content"] == live.choices[0].message.content
        usage[0] += answer["usage"]["prompt_tokens"]
        usage[1] += answer["usage"]["completion_tokens"]
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens, done.usage.total_tokens) == (*usage, sum(usage))


def test_output_order_is_shuffled_from_the_seed(make_simulator: MakeSim) -> None:
    orders = []
    for seed in (0, 0, 1):
        c = sdk(make_simulator(seed=seed))
        batch = c.batches.retrieve(start(c, 30).id)
        orders.append([r["custom_id"] for r in lines_of(c, batch.output_file_id)])
    inputs = [f"q{i}" for i in range(30)]
    assert sorted(orders[0]) == sorted(inputs) and orders[0] != inputs
    assert orders[0] == orders[1] and orders[0] != orders[2]


def test_progress_follows_the_clock(make_simulator: MakeSim) -> None:
    c = sdk(make_simulator(batch_delay_s=0.6))
    created = start(c, 20)
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        b = c.batches.retrieve(created.id)
        assert b.request_counts is not None
        seen.append((b.status, b.request_counts.completed))
        if b.status == "completed":
            break
        time.sleep(0.005)
    statuses = [s for i, (s, _) in enumerate(seen) if i == 0 or seen[i - 1][0] != s]
    assert statuses == ["validating", "in_progress", "finalizing", "completed"], statuses
    counts = [n for _, n in seen]
    assert counts == sorted(counts) and counts[-1] == 20
    assert any(0 < n < 20 for s, n in seen if s == "in_progress"), seen
    assert all(n == 0 for s, n in seen if s == "validating") and all(n == 20 for s, n in seen if s == "finalizing")
    assert b.in_progress_at is not None and b.finalizing_at is not None and b.completed_at is not None
    assert created.created_at <= b.in_progress_at <= b.finalizing_at <= b.completed_at <= created.created_at + 1
    assert b.output_file_id is not None and len(lines_of(c, b.output_file_id)) == 20


def test_error_rate_sends_the_same_lines_to_the_error_file(make_simulator: MakeSim) -> None:
    failed_sets = []
    for _ in range(2):
        c = sdk(make_simulator(batch_error_rate=0.3, seed=7))
        b = c.batches.retrieve(start(c, 40).id)
        ok, bad = lines_of(c, b.output_file_id), lines_of(c, b.error_file_id)
        assert b.request_counts is not None
        assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (40, len(ok), len(bad))
        assert 4 <= len(bad) <= 20  # 0.3 of 40, drawn
        assert {r["custom_id"] for r in ok} | {r["custom_id"] for r in bad} == {f"q{i}" for i in range(40)}
        for r in bad:
            assert r["error"] is None and r["response"]["status_code"] == 500
            assert r["response"]["body"]["error"]["type"] == "server_error"
        assert all(r["response"]["status_code"] == 200 for r in ok)
        failed_sets.append({r["custom_id"] for r in bad})
    assert failed_sets[0] == failed_sets[1]


def test_every_line_failing_leaves_no_output_file(make_simulator: MakeSim) -> None:
    c = sdk(make_simulator(batch_error_rate=1.0))
    b = c.batches.retrieve(start(c, 3).id)
    assert b.status == "completed" and b.output_file_id is None and b.error_file_id is not None
    assert b.request_counts is not None and (b.request_counts.completed, b.request_counts.failed) == (0, 3)
    assert len(lines_of(c, b.error_file_id)) == 3


def test_a_line_the_chat_endpoint_refuses_goes_to_the_error_file(make_simulator: MakeSim) -> None:
    c = sdk(make_simulator())
    bad = {"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "sim-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}}
    f = upload(c, [line(0), bad])
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = c.batches.retrieve(b.id)
    [err] = lines_of(c, b.error_file_id)
    assert err["custom_id"] == "bad" and err["error"] is None and err["response"]["status_code"] == 400
    assert err["response"]["body"]["error"]["message"] == "'max_tokens' must be a positive integer"
    assert [r["custom_id"] for r in lines_of(c, b.output_file_id)] == ["q0"]


def test_an_expired_batch_returns_what_it_did_and_expires_the_rest(make_simulator: MakeSim) -> None:
    c = sdk(make_simulator(batch_delay_s=0.2, batch_expire=True))
    created = start(c, 10)
    assert created.expires_at == created.created_at + 1  # the window is batch_delay_s, rounded up
    b = wait(c, created.id, ("expired",))
    assert b.request_counts is not None
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (10, 5, 5)
    assert b.expired_at is not None and b.completed_at is None and b.finalizing_at is None
    ok, expired = lines_of(c, b.output_file_id), lines_of(c, b.error_file_id)
    assert len(ok) == 5 and all(r["response"]["status_code"] == 200 for r in ok)
    assert len(expired) == 5
    for r in expired:
        assert r["response"] is None and r["error"] == {"code": "batch_expired", "message": EXPIRED}
    assert {r["custom_id"] for r in ok + expired} == {f"q{i}" for i in range(10)}


def test_cancel_keeps_the_lines_done_so_far(make_simulator: MakeSim) -> None:
    sim = make_simulator(batch_delay_s=1.0)
    c = sdk(sim)
    created = start(c, 40)
    deadline = time.monotonic() + 5
    while (b := c.batches.retrieve(created.id)).request_counts.completed < 2:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    cancelling = c.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    assert cancelling.request_counts is not None
    done = cancelling.request_counts.completed
    assert 2 <= done < 40
    assert c.batches.cancel(created.id).status == "cancelling"  # asked again: nothing changes
    b = wait(c, created.id, ("cancelled",))
    assert b.cancelled_at is not None and b.request_counts is not None
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (40, done, 0)
    assert len(lines_of(c, b.output_file_id)) == done and b.error_file_id is None
    time.sleep(0.2)  # the clock runs on; a cancelled batch does not
    assert c.batches.retrieve(created.id).request_counts.completed == done  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError) as err:
        c.batches.cancel(created.id)
    assert err.value.body["message"] == "Cannot cancel a batch with status 'cancelled'."  # type: ignore[index]
    assert sim.stats()["batch_cancels"] == 1


def test_cancel_while_validating_answers_nothing(make_simulator: MakeSim) -> None:
    c = sdk(make_simulator(batch_delay_s=2.0))
    created = start(c, 5)
    assert c.batches.cancel(created.id).status == "cancelling"
    b = wait(c, created.id, ("cancelled",))
    assert b.request_counts is not None and b.request_counts.completed == 0
    assert (b.output_file_id, b.error_file_id, b.in_progress_at) == (None, None, None)


def test_a_finished_batch_cannot_be_cancelled(make_simulator: MakeSim) -> None:
    c = sdk(make_simulator())
    b = start(c, 1)
    assert c.batches.retrieve(b.id).status == "completed"
    with pytest.raises(openai.BadRequestError):
        c.batches.cancel(b.id)


# -- validation


@pytest.mark.parametrize(("items", "config", "code", "at", "param"), [
    ([line(0), b"{not json", line(2)], {}, "invalid_json_line", 2, None),
    ([line(0), b"[1, 2]"], {}, "invalid_json_line", 2, None),
    ([line(0), line(1, url="/v1/embeddings")], {}, "url_mismatch", 2, "url"),
    ([line(0), line(1, method="GET")], {}, "invalid_method", 2, "method"),
    ([line(0), line(1, custom_id="q0")], {}, "duplicate_custom_id", 2, "custom_id"),
    ([line(0), {**line(1), "custom_id": 5}], {}, "missing_required_parameter", 2, "custom_id"),
    ([line(0), line(1, body=body(1, "deepseek-chat"))], {}, "model_mismatch", 2, "body.model"),
    ([line(i) for i in range(4)], {"batch_max_requests": 3}, "too_many_tasks", None, None),
    ([line(0), line(1)], {"batch_max_bytes": 100}, "file_too_large", None, None),
    ([b"   "], {}, "empty_file", None, None),
])  # fmt: skip
def test_invalid_input_fails_the_batch(make_simulator: MakeSim, items: list[Any], config: dict[str, Any], code: str,
                                       at: int | None, param: str | None) -> None:
    c = sdk(make_simulator(batch_delay_s=0.2, **config))
    f = upload(c, items)
    created = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert created.status == "validating"
    b = wait(c, created.id, ("failed",))
    assert b.errors is not None and b.errors.object == "list" and b.errors.data is not None
    [issue] = b.errors.data
    assert (issue.code, issue.line, issue.param) == (code, at, param)
    assert issue.message
    assert b.failed_at is not None and (b.in_progress_at, b.output_file_id, b.error_file_id) == (None, None, None)
    assert b.request_counts is not None and b.request_counts.total == 0


def test_create_refusals(make_simulator: MakeSim) -> None:
    sim = make_simulator()
    c = sdk(sim)
    good = upload(c, [line(0)])
    other = c.files.create(file=("notes.txt", b"hello"), purpose="assistants")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"input_file_id": "file-nope"}, "No such File object: file-nope"),
        ({"input_file_id": other.id}, "uploaded with purpose 'assistants'"),
        ({"endpoint": "/v1/embeddings"}, "/v1/chat/completions only"),
        ({"completion_window": "48h"}, "Supported values are: '24h'"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata must be at most 16"),
    ]
    for over, message in cases:
        args = {"input_file_id": good.id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **over}
        with pytest.raises(openai.BadRequestError) as err:
            c.batches.create(**args)
        assert message in err.value.body["message"], (over, err.value.body)  # type: ignore[index]
    assert sim.stats()["batch_creates"] == 0


def test_list_pages_newest_first(make_simulator: MakeSim) -> None:
    sim = make_simulator()
    c = sdk(sim)
    ids = [start(c, 1).id for _ in range(5)][::-1]
    page = c.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[:2] and page.has_more is True
    assert [b.id for b in c.batches.list(limit=2, after=ids[1]).data] == ids[2:4]
    assert [b.id for b in c.batches.list(limit=2)] == ids  # the SDK follows the pages by `after`
    last = c.batches.list(limit=2, after=ids[3])
    assert [b.id for b in last.data] == ids[4:] and last.has_more is False
    status, _, got = raw(sim, "GET", f"/batches?limit=3&after={ids[0]}")
    page_obj = json.loads(got)
    assert status == 200 and [b["id"] for b in page_obj["data"]] == ids[1:4]
    assert (page_obj["object"], page_obj["first_id"], page_obj["last_id"], page_obj["has_more"]) == (
        "list", ids[1], ids[3], True)
    for bad in ("limit=0", "limit=101", "limit=x", "after=batch_nope"):
        assert raw(sim, "GET", f"/v1/batches?{bad}")[0] == 400


def test_routes_without_the_prefix_and_wrong_methods(make_simulator: MakeSim) -> None:
    sim = make_simulator()
    c = sdk(sim)
    f = upload(c, [line(0)])
    req = json.dumps({"input_file_id": f.id, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    status, _, got = raw(sim, "POST", "/batches", req.encode(), {"Content-Type": "application/json"})
    assert status == 200
    batch_id = json.loads(got)["id"]
    assert json.loads(raw(sim, "GET", f"/batches/{batch_id}")[2])["status"] == "completed"
    status, headers, _ = raw(sim, "PUT", "/v1/batches")
    assert status == 405 and headers["Allow"] == "POST, GET"
    assert raw(sim, "POST", f"/v1/batches/{batch_id}")[0] == 405
    assert raw(sim, "GET", "/v1/batches/a/b/c")[0] == 404
    with pytest.raises(openai.NotFoundError):
        c.batches.retrieve("batch_nope")


def test_a_server_without_the_batch_api_answers_404(make_simulator: MakeSim) -> None:
    sim = make_simulator(batch_supported=False)
    c = sdk(sim)
    with pytest.raises(openai.NotFoundError):
        upload(c, [line(0)])
    with pytest.raises(openai.NotFoundError):
        c.batches.create(input_file_id="file-x", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        c.batches.retrieve("batch_x")
    with pytest.raises(openai.NotFoundError):
        c.batches.list()
    assert c.chat.completions.create(**body(0)).choices[0].message.content  # type: ignore[call-overload]
    stats = sim.stats()
    assert (stats["file_uploads"], stats["batch_creates"]) == (0, 0)


def test_batch_routes_want_the_key(make_simulator: MakeSim) -> None:
    sim = make_simulator(require_api_key="sk-right-0123456789")
    with pytest.raises(openai.AuthenticationError):
        upload(sdk(sim, "sk-wrong-0123456789"), [line(0)])
    with pytest.raises(openai.AuthenticationError):
        sdk(sim, "sk-wrong-0123456789").batches.list()
    c = sdk(sim, "sk-right-0123456789")
    assert c.batches.retrieve(start(c, 2).id).status == "completed"


def test_batch_config_is_validated_and_the_flags_make_it() -> None:
    import argparse

    from dsetlog.cli import simulate as simulate_cmd
    from dsetlog.simulator.config import config_from_options

    for bad in ({"batch_error_rate": 1.5}, {"batch_delay_s": -1.0}, {"batch_max_requests": 0},
                {"batch_max_bytes": 0}):  # fmt: skip
        with pytest.raises(ValueError):
            SimConfig(**bad)
    parser = argparse.ArgumentParser()
    simulate_cmd.register(parser.add_subparsers())
    cfg = config_from_options(vars(parser.parse_args(
        ["simulate", "--no-batch", "--batch-delay-s", "2.5", "--batch-error-rate", "0.1", "--batch-expire",
         "--batch-max-requests", "10", "--batch-max-bytes", "1000"])))  # fmt: skip
    assert (cfg.batch_supported, cfg.batch_delay_s, cfg.batch_error_rate, cfg.batch_expire) == (False, 2.5, 0.1, True)
    assert (cfg.batch_max_requests, cfg.batch_max_bytes) == (10, 1000)
    assert config_from_options(vars(parser.parse_args(["simulate"]))) == SimConfig()
