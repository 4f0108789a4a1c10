"""The simulator, exercised over real loopback HTTP with the real openai SDK."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.client import HTTPConnection
from typing import Annotated, Any

import msgspec
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsetlog.simulator import SimConfig, Simulator
from dsetlog.simulator.chat import build_content
from dsetlog.simulator.config import FAULT_KINDS
from dsetlog.simulator.faults import fault_for, prompt_key

CHUNK = (
    "Photosynthesis converts light energy into chemical energy in plants. "
    "It takes place mainly in the chloroplasts of leaf cells. "
    "Chlorophyll absorbs red and blue light most strongly. "
    "The process releases oxygen as a by-product. "
    "Carbon dioxide enters the leaf through small pores called stomata. "
    "Glucose made in the leaves is carried to the rest of the plant."
)

MakeSim = Callable[..., Simulator]


def client(sim: Simulator, **kw: Any) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("api_key", "sk-test")
    return openai.OpenAI(base_url=sim.base_url, **kw)


def aclient(sim: Simulator, **kw: Any) -> openai.AsyncOpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("api_key", "sk-test")
    return openai.AsyncOpenAI(base_url=sim.base_url, **kw)


def ask(c: openai.OpenAI, text: str, model: str = "sim-chat", **kw: Any) -> Any:
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def http(
    sim: Simulator, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], Any]:
    root = sim.base_url.removesuffix("/v1")
    req = urllib.request.Request(root + path, data=body, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


# ----------------------------------------------------------------------------------------------
# A small validator for the schema subset the simulator promises to satisfy.


def check(value: Any, schema: Any, root: Any = None, path: str = "$") -> None:
    root = schema if root is None else root
    if schema is True or schema == {}:
        return
    while "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    if "const" in schema:
        assert value == schema["const"], path
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in enum"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            errors = []
            for option in schema[key]:
                try:
                    check(value, option, root, path)
                    break
                except AssertionError as exc:
                    errors.append(exc)
            else:
                raise AssertionError(f"{path}: no {key} option matched: {errors}")
    for part in schema.get("allOf", []):
        check(value, part, root, path)
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds:
        ok = {
            "object": isinstance(value, dict),
            "array": isinstance(value, list),
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "null": value is None,
        }
        assert any(ok[k] for k in kinds), f"{path}: {value!r} is not {kinds}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            assert name in value, f"{path}: missing {name}"
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(props), f"{path}: extra keys {set(value) - set(props)}"
        for name, sub in props.items():
            if name in value:
                check(value[name], sub, root, f"{path}.{name}")
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0), path
        assert len(value) <= schema.get("maxItems", 10**9), path
        for i, item in enumerate(value):
            check(item, schema.get("items", {}), root, f"{path}[{i}]")
    if isinstance(value, str):
        assert len(value) >= schema.get("minLength", 0), f"{path}: too short {value!r}"
        assert len(value) <= schema.get("maxLength", 10**9), f"{path}: too long {value!r}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        assert value >= schema.get("minimum", -(10**18)), path
        assert value <= schema.get("maximum", 10**18), path
        if "exclusiveMinimum" in schema:
            assert value > schema["exclusiveMinimum"], path
        if "exclusiveMaximum" in schema:
            assert value < schema["exclusiveMaximum"], path


# ----------------------------------------------------------------------------------------------
# Endpoints and answers


def test_models_endpoint(simulator: Simulator) -> None:
    ids = [m.id for m in client(simulator).models.list()]
    assert ids == list(SimConfig().models)
    status, _, body = http(simulator, "GET", "/models")
    assert status == 200 and body["object"] == "list"
    assert client(simulator).models.retrieve("deepseek-chat").id == "deepseek-chat"


def test_plain_completion_with_usage_and_labels(simulator: Simulator) -> None:
    raw = client(simulator).chat.completions.with_raw_response.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "Explain this:\n" + CHUNK}]
    )
    assert raw.headers["x-dset-simulated"] == "1"
    resp = raw.parse()
    assert resp.object == "chat.completion"
    assert resp.model == "deepseek-chat"
    assert resp.system_fingerprint == "dset-simulator"
    choice = resp.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    content = choice.message.content
    assert content.startswith("Simulated answer: ")
    # Grounded: every sentence of the answer comes from the prompt.
    for sentence in content.removeprefix("Simulated answer: ").split(". "):
        assert sentence.rstrip(".") in CHUNK
    assert getattr(choice.message, "reasoning_content", None) is None
    usage = resp.usage
    assert usage.prompt_tokens >= 1 and usage.completion_tokens >= 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_question_only_prompt_uses_its_words(simulator: Simulator) -> None:
    content = ask(client(simulator), "What is the capital of France?").choices[0].message.content
    assert content.startswith("Simulated answer: ") and "France" in content


def test_reasoner_has_reasoning_content(simulator: Simulator) -> None:
    msg = ask(client(simulator), "Why is the sky blue?", model="deepseek-reasoner").choices[0].message
    assert isinstance(msg.reasoning_content, str) and msg.reasoning_content
    assert msg.content and msg.content != msg.reasoning_content


def test_answers_are_deterministic(make_simulator: MakeSim) -> None:
    a, b, other_seed = make_simulator(), make_simulator(), make_simulator(seed=7)
    q1 = "Summarise this passage:\n" + CHUNK
    first = ask(client(a), q1).choices[0].message.content
    assert ask(client(a), q1).choices[0].message.content == first  # a second attempt
    assert ask(client(b), q1).choices[0].message.content == first  # another server, same seed
    assert ask(client(a), "What is the capital of France?").choices[0].message.content != first
    assert ask(client(other_seed), q1).choices[0].message.content != first


def test_max_tokens_truncates(simulator: Simulator) -> None:
    resp = ask(client(simulator), CHUNK, max_tokens=5)
    assert resp.choices[0].finish_reason == "length"
    assert len(resp.choices[0].message.content) <= 20


def test_streaming(simulator: Simulator) -> None:
    stream = ask(client(simulator), CHUNK, stream=True, stream_options={"include_usage": True})
    parts, usage = [], None
    for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
        usage = chunk.usage or usage
    assert "".join(parts) == ask(client(simulator), CHUNK).choices[0].message.content
    assert usage is not None and usage.total_tokens > 0


# ----------------------------------------------------------------------------------------------
# Faults


def test_fault_429_with_retry_after(make_simulator: MakeSim) -> None:
    sim = make_simulator(rate_429=1.0, retry_after_s=0.5)
    with pytest.raises(openai.RateLimitError) as info:
        ask(client(sim), "hello there friend")
    assert info.value.response.headers["retry-after"] == "0.5"
    assert info.value.response.headers["retry-after-ms"] == "500"
    assert sim.stats()["faults"]["429"] == 1


def test_fault_500(make_simulator: MakeSim) -> None:
    with pytest.raises(openai.InternalServerError):
        ask(client(make_simulator(rate_500=1.0)), "hello there friend")


def test_fault_hang_times_out_and_does_not_block(make_simulator: MakeSim) -> None:
    sim = make_simulator(rate_hang=1.0, hang_s=5.0)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        ask(client(sim, timeout=0.3), "hello there friend")
    # The hanging prompt keeps hanging, yet a prompt past its fault budget answers at once.
    ok = client(sim).chat.completions.create(
        model="sim-chat",
        messages=[{"role": "user", "content": "another prompt"}],
        extra_headers={"X-Dset-Attempt": "3"},
    )
    assert ok.choices[0].message.content
    assert time.monotonic() - t0 < 2.0


def test_stop_is_prompt_with_hanging_requests(make_simulator: MakeSim) -> None:
    sim = make_simulator(rate_hang=1.0, hang_s=30.0)

    async def hang_many() -> None:
        c = aclient(sim, timeout=10)
        tasks = [
            asyncio.create_task(
                c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"p{i}"}])
            )
            for i in range(5)
        ]
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await asyncio.to_thread(sim.stop)
        assert time.monotonic() - t0 < 1.0
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, openai.APIConnectionError) for r in results)

    asyncio.run(hang_many())
    assert sim.stats()["faults"]["hang"] == 5


def test_fault_malformed(make_simulator: MakeSim) -> None:
    sim = make_simulator(rate_malformed=1.0)
    raw = client(sim).chat.completions.with_raw_response.create(
        model="sim-chat", messages=[{"role": "user", "content": "hello there friend"}]
    )
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
    # What the SDK actually does with a truncated JSON body: json's own decode error escapes.
    with pytest.raises(json.JSONDecodeError):
        ask(client(sim), "hello there friend")


def test_fault_empty(make_simulator: MakeSim) -> None:
    sim = make_simulator(rate_empty=1.0)
    resp = ask(client(sim), "hello there friend")
    assert resp.choices[0].message.content == ""
    stats = sim.stats()
    assert stats["faults"]["empty"] == 1 and stats["completions"] == 0


def test_fault_reset(make_simulator: MakeSim) -> None:
    sim = make_simulator(rate_reset=1.0)
    with pytest.raises(openai.APIConnectionError) as info:
        ask(client(sim), "hello there friend")
    assert not isinstance(info.value, openai.APITimeoutError)


def test_fault_reset_is_a_tcp_reset(make_simulator: MakeSim) -> None:
    sim = make_simulator(rate_reset=1.0)
    port = int(sim.base_url.rsplit(":", 1)[1].split("/")[0])
    body = b'{"model":"m","messages":[{"role":"user","content":"x"}]}'
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)


def test_fault_choice_is_pure_and_bounded() -> None:
    cfg = SimConfig(seed=3, rate_429=0.2, rate_500=0.2, rate_empty=0.2, max_faults_per_prompt=2)
    keys = [prompt_key("m", [{"role": "user", "content": str(i)}]) for i in range(2000)]
    first = [fault_for(cfg, k, 0) for k in keys]
    assert first == [fault_for(cfg, k, 0) for k in keys]
    assert 0.5 < sum(f is not None for f in first) / len(keys) < 0.7
    assert all(fault_for(cfg, k, 2) is None for k in keys)
    assert prompt_key("m", [{"role": "user", "content": "a"}]) == prompt_key(
        "m", [{"content": "a", "role": "user"}]
    )


@pytest.mark.parametrize("use_header", [False, True])
def test_retrying_client_always_gets_through(make_simulator: MakeSim, use_header: bool) -> None:
    rates = {f"rate_{k}": 0.15 for k in FAULT_KINDS}
    sim = make_simulator(seed=11, hang_s=2.0, **rates)
    max_attempts = sim.config.max_faults_per_prompt + 1
    retryable = (openai.APIError, json.JSONDecodeError)

    async def one(c: openai.AsyncOpenAI, i: int) -> tuple[str, int]:
        for attempt in range(1, max_attempts + 1):
            headers = {"X-Dset-Attempt": str(attempt)} if use_header else None
            try:
                resp = await c.chat.completions.create(
                    model="deepseek-chat",
                    messages=[
                        {"role": "user", "content": f"Question {i}: tell me about {CHUNK[i : i + 40]}"}
                    ],
                    extra_headers=headers,
                )
            except retryable:
                continue
            if resp.choices[0].message.content:
                return resp.choices[0].message.content, attempt
        raise AssertionError(f"prompt {i} did not get through in {max_attempts} attempts")

    async def run() -> list[tuple[str, int]]:
        c = aclient(sim, timeout=1.0)  # a hang (2 s) times out; an answer on a loaded machine does not
        return await asyncio.gather(*(one(c, i) for i in range(50)))

    results = asyncio.run(run())
    assert len(results) == 50
    assert any(attempt > 1 for _, attempt in results)
    stats = sim.stats()
    assert sum(stats["faults"].values()) > 0
    assert stats["completions"] >= 50
    assert len(stats["by_prompt"]) == 50
    assert stats["requests"] == sum(stats["by_prompt"].values())


def test_401_with_required_api_key(make_simulator: MakeSim) -> None:
    sim = make_simulator(require_api_key="sk-right")
    with pytest.raises(openai.AuthenticationError) as info:
        ask(client(sim, api_key="sk-wrong"), "hello there friend")
    assert info.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        client(sim, api_key="sk-wrong").models.list()
    assert ask(client(sim, api_key="sk-right"), "hello there friend").choices[0].message.content
    assert sim.stats()["faults"]["401"] == 1


def test_402_when_quota_exhausted(make_simulator: MakeSim) -> None:
    sim = make_simulator(quota_exhausted=True)
    with pytest.raises(openai.APIStatusError) as info:
        ask(client(sim), "hello there friend")
    assert info.value.status_code == 402
    assert info.value.body == {  # type: ignore[comparison-overlap]
        "message": "Insufficient Balance",
        "type": "insufficient_quota",
        "code": "insufficient_quota",
    }
    assert sim.stats()["faults"]["402"] == 1


# ----------------------------------------------------------------------------------------------
# Structured answers


def test_json_object_default_shape(simulator: Simulator) -> None:
    resp = ask(client(simulator), "Summarise:\n" + CHUNK, response_format={"type": "json_object"})
    data = json.loads(resp.choices[0].message.content)
    assert isinstance(data, dict) and isinstance(data["answer"], str) and data["answer"]


def test_json_object_follows_schema_in_prompt(simulator: Simulator) -> None:
    schema = {
        "type": "object",
        "properties": {
            "question": {"type": "string"},
            "answer": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["question", "answer", "confidence"],
        "additionalProperties": False,
    }
    prompt = f"Write one Q/A pair about the text.\n\n{CHUNK}\n\nJSON schema: {json.dumps(schema)}"
    data = json.loads(
        ask(client(simulator), prompt, response_format={"type": "json_object"}).choices[0].message.content
    )
    check(data, schema)
    assert data["question"].endswith("?")
    fenced = f'Text:\n{CHUNK}\nReply with JSON like:\n```json\n{{"summary": "...", "tags": ["..."]}}\n```'
    data = json.loads(
        ask(client(simulator), fenced, response_format={"type": "json_object"}).choices[0].message.content
    )
    assert set(data) == {"summary", "tags"} and isinstance(data["tags"], list)


class Item(msgspec.Struct, forbid_unknown_fields=True):
    question: Annotated[str, msgspec.Meta(min_length=10)]
    answer: Annotated[str, msgspec.Meta(min_length=10)]
    category: Annotated[str, msgspec.Meta(max_length=40)]
    score: Annotated[int, msgspec.Meta(ge=1, le=5)]


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    items: Annotated[list[Item], msgspec.Meta(min_length=4)]


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """msgspec's schema plus what OpenAI strict mode wants: every object closed."""
    for node in [schema, *schema.get("$defs", {}).values()]:
        if node.get("type") == "object":
            node["additionalProperties"] = False
    return schema


def test_json_schema_answer_validates_with_distinct_items(simulator: Simulator) -> None:
    schema = _strict(msgspec.json.schema(Batch))
    assert "$ref" in json.dumps(schema)  # exercises $ref to $defs
    resp = ask(
        client(simulator),
        "Generate question-answer pairs from this text:\n\n" + CHUNK,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "batch", "schema": schema, "strict": True},
        },
    )
    raw = resp.choices[0].message.content
    check(json.loads(raw), schema)
    batch = msgspec.json.decode(raw, type=Batch)
    assert len(batch.items) == 4
    assert len({i.question for i in batch.items}) == 4
    assert len({i.answer for i in batch.items}) == 4
    for item in batch.items:
        assert item.question.endswith("?")
        assert item.answer.split(". ")[0].rstrip(".") in CHUNK


def test_json_schema_count_from_prompt_and_many_items(simulator: Simulator) -> None:
    schema = {
        "type": "object",
        "properties": {
            "pairs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
                    "required": ["question", "answer"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["pairs"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "qa", "schema": schema, "strict": True}}
    data = json.loads(
        ask(client(simulator), f"Write 5 questions about:\n{CHUNK}", response_format=fmt)
        .choices[0]
        .message.content
    )
    assert len(data["pairs"]) == 5
    schema["properties"]["pairs"]["minItems"] = 20  # more items than the text has sentences
    data = json.loads(ask(client(simulator), CHUNK, response_format=fmt).choices[0].message.content)
    check(data, schema)
    assert len(data["pairs"]) == 20
    assert len({json.dumps(p) for p in data["pairs"]}) == 20
    assert len({p["question"] for p in data["pairs"]}) == 20


def test_json_schema_keywords() -> None:
    schema = {
        "$defs": {"Level": {"type": "string", "enum": ["low", "mid", "high"]}},
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 5, "maxLength": 30},
            "level": {"$ref": "#/$defs/Level"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 10, "maximum": 12}]},
            "pick": {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
            "nothing": {"type": "null"},
            "fixed": {"const": "x"},
            "short_question": {"type": "string", "maxLength": 12},
        },
        "required": [
            "title",
            "level",
            "maybe",
            "pick",
            "ratio",
            "tags",
            "nothing",
            "fixed",
            "short_question",
        ],
        "additionalProperties": False,
    }
    req = {"model": "m", "messages": [{"role": "user", "content": CHUNK}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}  # fmt: skip
    content, _ = build_content(0, "k", req)
    data = json.loads(content)
    check(data, schema)
    assert isinstance(data["maybe"], int) and isinstance(data["pick"], bool)
    assert data["short_question"].endswith("?")
    assert len(set(data["tags"])) == 2


_leaf = st.sampled_from(
    [
        {"type": "string"},
        {"type": "string", "minLength": 3, "maxLength": 8},
        {"type": "string", "enum": ["a", "b", "c"]},
        {"type": "integer", "minimum": -3, "maximum": 4},
        {"type": "number", "minimum": 0.5},
        {"type": "boolean"},
        {"type": "null"},
        {"type": ["string", "null"]},
    ]
)
_names = st.sampled_from(["question", "answer", "category", "title", "score", "notes", "id", "x"])


def _compound(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    obj = st.dictionaries(_names, children, min_size=1, max_size=4).map(
        lambda p: {"type": "object", "properties": p, "required": sorted(p), "additionalProperties": False}
    )
    arr = st.tuples(children, st.integers(0, 4), st.one_of(st.none(), st.integers(4, 6))).map(
        lambda t: {"type": "array", "items": t[0], "minItems": t[1], **({"maxItems": t[2]} if t[2] else {})}
    )
    any_of = st.lists(children, min_size=1, max_size=3).map(lambda opts: {"anyOf": opts})
    return st.one_of(obj, arr, any_of)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=st.recursive(_leaf, _compound, max_leaves=12), text=st.sampled_from([CHUNK, "Why?", ""]))
def test_schema_instances_validate(schema: dict[str, Any], text: str) -> None:
    req = {"model": "m", "messages": [{"role": "user", "content": text}],
           "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}  # fmt: skip
    content, _ = build_content(1, "key", req)
    check(json.loads(content), schema)


# ----------------------------------------------------------------------------------------------
# HTTP surface


def test_sim_stats_and_reset_over_http(simulator: Simulator) -> None:
    c = client(simulator)
    ask(c, "first prompt here")
    ask(c, "first prompt here")
    ask(c, "second prompt here")
    status, headers, stats = http(simulator, "GET", "/_sim/stats")
    assert status == 200 and headers["X-Dset-Simulated"] == "1"
    assert stats["requests"] == 3 and stats["completions"] == 3
    assert sorted(stats["by_prompt"].values()) == [1, 2]
    assert stats == simulator.stats()
    assert http(simulator, "POST", "/_sim/reset", b"")[0] == 200
    assert simulator.stats()["requests"] == 0 and simulator.stats()["by_prompt"] == {}


def test_errors_are_openai_shaped(simulator: Simulator) -> None:
    status, _, body = http(simulator, "GET", "/v1/nope")
    assert status == 404 and "message" in body["error"]
    status, _, body = http(simulator, "POST", "/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, _, body = http(simulator, "POST", "/chat/completions", b'{"model": "m", "messages": []}')
    assert status == 400 and body["error"]["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        ask(client(simulator), "x", response_format={"type": "json_schema", "json_schema": {"name": "x"}})


def test_keep_alive_and_pipelining(simulator: Simulator) -> None:
    port = int(simulator.base_url.rsplit(":", 1)[1].split("/")[0])
    body = b'{"model":"m","messages":[{"role":"user","content":"pipelined prompt"}]}'
    req = b"POST /chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(req + req + b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.rstrip().endswith(b"}")
    assert simulator.stats()["by_prompt"] == {
        prompt_key("m", [{"role": "user", "content": "pipelined prompt"}]): 2
    }


def test_serve_forever_stops_cleanly_on_sigterm() -> None:
    code = (
        "import sys\n"
        "from dsetlog.simulator.server import SimConfig, serve_forever\n"
        "serve_forever(SimConfig(rate_hang=1.0), host='127.0.0.1', port=0,"
        " ready=lambda url: print(url, flush=True))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        hanging = socket.create_connection(("127.0.0.1", port), timeout=5)
        body = b'{"model":"m","messages":[{"role":"user","content":"x"}]}'
        hanging.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        hanging.close()
    finally:
        proc.kill()


# ----------------------------------------------------------------------------------------------
# Quirks of real servers


def raw_http(
    sim: Simulator, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, raw body) of one request, whatever its content type."""
    port = int(sim.base_url.rsplit(":", 1)[1].split("/")[0])
    conn = HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def chat(text: str = "hello there friend", model: str = "sim-chat", **kw: Any) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}], **kw}).encode()


def post_chat(sim: Simulator, body: bytes, **headers: str) -> tuple[int, dict[str, str], Any]:
    status, hdrs, raw = raw_http(sim, "POST", "/v1/chat/completions", body, headers)
    return status, hdrs, json.loads(raw)


def sse_chunks(raw: bytes) -> list[dict[str, Any]]:
    lines = [line.removeprefix(b"data: ") for line in raw.split(b"\n\n") if line.startswith(b"data: ")]
    assert lines[-1] == b"[DONE]"
    return [json.loads(line) for line in lines[:-1]]


QA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "minItems": 3,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
                "required": ["question", "answer"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["items"],
    "additionalProperties": False,
}
JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "qa", "schema": QA_SCHEMA, "strict": True},
}


def test_llamacpp_refuses_json_schema_with_its_500(make_simulator: MakeSim) -> None:
    sim = make_simulator(structured="llamacpp")
    status, headers, body = post_chat(sim, chat(CHUNK, response_format=JSON_SCHEMA_FORMAT))
    assert status == 500 and headers["content-type"] == "application/json"
    # llama-cpp-python's RouteErrorHandler wraps FastAPI's RequestValidationError, str() and all.
    assert body == {
        "error": {
            "message": "1 validation error:\n"
            "  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
            "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
            "'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n"
            '  File "/usr/local/lib/python3.12/site-packages/llama_cpp/server/app.py", line 375, '
            "in create_chat_completion\n    POST /v1/chat/completions",
            "type": "internal_server_error",
            "param": None,
            "code": None,
        }
    }
    with pytest.raises(openai.InternalServerError):
        ask(client(sim), CHUNK, response_format=JSON_SCHEMA_FORMAT)
    status, _, body = post_chat(sim, chat(response_format={}))
    assert status == 500 and "'type': 'missing'" in body["error"]["message"]
    assert post_chat(sim, chat(response_format={"type": "text"}))[0] == 200
    # The refusal is deterministic, before any seeded fault, and not an attempt.
    assert sim.stats()["by_prompt"] == {
        prompt_key("sim-chat", [{"role": "user", "content": "hello there friend"}]): 1
    }
    # The default server takes the same request.
    assert post_chat(make_simulator(), chat(CHUNK, response_format=JSON_SCHEMA_FORMAT))[0] == 200


def test_llamacpp_json_object_with_schema_is_constrained(make_simulator: MakeSim) -> None:
    fmt = {"type": "json_object", "schema": QA_SCHEMA}
    prompt = "Write question-answer pairs about this text:\n" + CHUNK
    content = (
        ask(client(make_simulator(structured="llamacpp")), prompt, response_format=fmt)
        .choices[0]
        .message.content
    )
    data = json.loads(content)
    check(data, QA_SCHEMA)
    assert len({item["question"] for item in data["items"]}) == 3
    # OpenAI's json_object has no schema slot: the same request gets the default object.
    plain = json.loads(ask(client(make_simulator()), prompt, response_format=fmt).choices[0].message.content)
    with pytest.raises(AssertionError):
        check(plain, QA_SCHEMA)
    bare = ask(client(make_simulator(structured="llamacpp")), prompt, response_format={"type": "json_object"})
    assert isinstance(json.loads(bare.choices[0].message.content), dict)


def test_llamacpp_ignores_fields_it_has_no_slot_for(make_simulator: MakeSim) -> None:
    sim = make_simulator(structured="llamacpp")
    status, _, body = post_chat(sim, chat(CHUNK, max_completion_tokens=5, n=3))
    assert status == 200 and len(body["choices"]) == 1 and body["choices"][0]["finish_reason"] == "stop"
    status, _, body = post_chat(sim, chat(CHUNK, max_tokens=5))
    assert body["choices"][0]["finish_reason"] == "length"
    status, _, raw = raw_http(sim, "POST", "/v1/chat/completions",
                              chat(CHUNK, stream=True, stream_options={"include_usage": True}))  # fmt: skip
    assert status == 200 and all("usage" not in c for c in sse_chunks(raw))
    # The default server honours all three.
    status, _, body = post_chat(make_simulator(), chat(CHUNK, max_completion_tokens=5, n=3))
    assert len(body["choices"]) == 3 and body["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    "fmt", [{"type": "json_object"}, JSON_SCHEMA_FORMAT, {"type": "json_object", "schema": QA_SCHEMA}]
)
def test_text_server_refuses_response_format(make_simulator: MakeSim, fmt: dict[str, Any]) -> None:
    sim = make_simulator(structured="text")
    status, _, body = post_chat(sim, chat(CHUNK, response_format=fmt))
    assert status == 400
    assert body["error"]["param"] == "response_format" and body["error"]["type"] == "invalid_request_error"
    assert "'response_format' is not supported" in body["error"]["message"]
    with pytest.raises(openai.BadRequestError):
        ask(client(sim), CHUNK, response_format=fmt)
    assert post_chat(sim, chat(CHUNK, response_format={"type": "text"}))[0] == 200


def test_text_server_answers_json_asked_for_in_the_prompt(make_simulator: MakeSim) -> None:
    prompt = f"Write three Q/A pairs about the text.\n\n{CHUNK}\n\nJSON schema: {json.dumps(QA_SCHEMA)}"
    content = ask(client(make_simulator(structured="text")), prompt).choices[0].message.content
    check(json.loads(content), QA_SCHEMA)
    fenced = f'Text:\n{CHUNK}\nReply with JSON like:\n```json\n{{"summary": "...", "tags": ["..."]}}\n```'
    content = ask(client(make_simulator(structured="text")), fenced).choices[0].message.content
    assert set(json.loads(content)) == {"summary", "tags"}
    assert (
        ask(client(make_simulator(structured="text")), CHUNK)
        .choices[0]
        .message.content.startswith("Simulated answer: ")
    )
    # The default server answers a prompt without response_format in prose, JSON request or not.
    assert ask(client(make_simulator()), prompt).choices[0].message.content.startswith("Simulated answer: ")


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning", "think", "none"])
def test_reasoning_field(make_simulator: MakeSim, field: str) -> None:
    sim = make_simulator(reasoning_field=field)
    body = chat("Why is the sky blue?", model="deepseek-reasoner")
    _, _, resp = post_chat(sim, body)
    msg, usage = resp["choices"][0]["message"], resp["usage"]
    others = {"reasoning_content", "reasoning"} - {field}
    assert not others & set(msg)
    content = msg["content"]
    if field in ("reasoning_content", "reasoning"):
        assert "(simulated reasoning)" in msg[field] and content.startswith("Simulated answer: ")
        assert usage["completion_tokens_details"]["reasoning_tokens"] > 0
    elif field == "think":
        assert content.startswith("<think>\n") and "(simulated reasoning)\n</think>\n\n" in content
        assert content.split("</think>\n\n", 1)[1].startswith("Simulated answer: ")
    else:
        assert content.startswith("Simulated answer: ") and "simulated reasoning" not in content
        assert usage["completion_tokens_details"]["reasoning_tokens"] > 0  # hidden, still billed
    # Streaming puts it in the same place.
    _, _, raw = raw_http(sim, "POST", "/v1/chat/completions",
                         chat("Why is the sky blue?", model="deepseek-reasoner", stream=True))  # fmt: skip
    deltas = [c["choices"][0]["delta"] for c in sse_chunks(raw)]
    assert "".join(d.get("content", "") for d in deltas) == content
    streamed = (
        "".join(d.get(field, "") for d in deltas) if field in ("reasoning_content", "reasoning") else None
    )
    assert streamed == msg.get(field)
    assert not any(others & set(d) for d in deltas)
    # A model that does not reason gets none of it.
    plain = post_chat(sim, chat("Why is the sky blue?"))[2]["choices"][0]["message"]
    assert set(plain) == {"role", "content"} and "<think>" not in plain["content"]


def fire_at_once(sim: Simulator, bodies: list[bytes]) -> list[tuple[int, dict[str, str], Any]]:
    """Send each request on its own connection, all before reading any answer."""
    port = int(sim.base_url.rsplit(":", 1)[1].split("/")[0])
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in bodies]
    try:
        for sock, body in zip(socks, bodies, strict=True):
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))  # fmt: skip
        replies = []
        for sock in socks:
            with sock.makefile("rb") as f:
                status = int(f.readline().split()[1])
                headers: dict[str, str] = {}
                while (line := f.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                replies.append((status, headers, json.loads(f.read(int(headers["content-length"])))))
        return replies
    finally:
        for sock in socks:
            sock.close()


DURATION_RE = r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$"


def test_rate_limit_bucket(make_simulator: MakeSim) -> None:
    # 2 per second refills a token every 500 ms, far slower than 30 loopback requests take.
    sim = make_simulator(rate_limit_rps=2.0, rate_limit_burst=5)
    t0 = time.monotonic()
    replies = fire_at_once(sim, [chat("the same prompt each time")] * 30)
    assert time.monotonic() - t0 < 0.4
    ok = [r for r in replies if r[0] == 200]
    limited = [r for r in replies if r[0] == 429]
    assert len(ok) == 5 and len(limited) == 25
    assert sorted(int(h["x-ratelimit-remaining-requests"]) for _, h, _ in ok) == [0, 1, 2, 3, 4]
    for _, headers, _ in ok:
        assert headers["x-ratelimit-limit-requests"] == "5"
        assert re.match(DURATION_RE, headers["x-ratelimit-reset-requests"])
    for _, headers, body in limited:
        assert headers["retry-after"] == "1"  # whole seconds, rounded up
        assert 0 < int(headers["retry-after-ms"]) <= 500
        assert headers["x-ratelimit-limit-requests"] == "5"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        reset = headers["x-ratelimit-reset-requests"]
        assert re.match(DURATION_RE, reset) and 2.0 <= float(reset.removesuffix("s")) <= 2.5
        assert body["error"]["type"] == "requests" and body["error"]["code"] == "rate_limit_exceeded"
        assert body["error"]["message"].startswith("Rate limit reached for requests")
    stats = sim.stats()
    assert stats["rate_limited"] == 25 and stats["requests"] == 30
    assert sum(stats["faults"].values()) == 0
    # The 429s were no attempts: only the five answered requests count for the prompt.
    assert list(stats["by_prompt"].values()) == [5]
    # Waiting retry-after-ms is enough for one more request, and only one.
    time.sleep(min(int(h["retry-after-ms"]) for _, h, _ in limited) / 1000)
    status, headers, _ = post_chat(sim, chat())
    assert status == 200 and headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as info:
        ask(client(sim), "hello there friend")
    assert int(info.value.response.headers["retry-after-ms"]) > 0


def test_rate_limit_is_apart_from_seeded_429s(make_simulator: MakeSim) -> None:
    sim = make_simulator(rate_limit_rps=1.0, rate_429=1.0, max_faults_per_prompt=1)
    status, headers, _ = post_chat(sim, chat())
    # Through the bucket, then the seeded fault: its Retry-After, the bucket's headers.
    assert (
        status == 429 and headers["retry-after"] == "1" and headers["x-ratelimit-remaining-requests"] == "0"
    )
    assert sim.stats()["faults"]["429"] == 1 and sim.stats()["rate_limited"] == 0
    status, _, _ = post_chat(sim, chat())
    assert status == 429 and sim.stats()["rate_limited"] == 1 and sim.stats()["faults"]["429"] == 1
    time.sleep(1.0)
    # The prompt's second attempt (the bucket's 429 was none) is past the fault budget.
    assert post_chat(sim, chat())[0] == 200
    assert list(sim.stats()["by_prompt"].values()) == [2]


def test_rate_limit_without_headers(make_simulator: MakeSim) -> None:
    sim = make_simulator(rate_limit_rps=0.5, rate_limit_headers=False)  # burst 1: one at a time
    status, headers, _ = post_chat(sim, chat())
    assert status == 200 and not any(h.startswith("x-ratelimit") for h in headers)
    status, headers, body = post_chat(sim, chat())
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    assert headers["retry-after"] == "2" and 1900 <= int(headers["retry-after-ms"]) <= 2000
    assert not any(h.startswith("x-ratelimit") for h in headers)
    assert post_chat(make_simulator(), chat())[1].keys().isdisjoint({"x-ratelimit-remaining-requests"})


def test_reset_duration_format() -> None:
    from dsetlog.simulator.faults import duration

    assert [duration(s) for s in (0, 0.0004, 0.25, 1, 1.5, 59.9996, 90, 3600, 3725.5)] == [
        "0s", "1ms", "250ms", "1s", "1.5s", "1m0s", "1m30s", "1h0m0s", "1h2m5.5s"
    ]  # fmt: skip


def test_echo_key_in_401(make_simulator: MakeSim) -> None:
    sim = make_simulator(require_api_key="sk-right", echo_key=True)
    key = "sk-live_abc123+/=wxyz"
    with pytest.raises(openai.AuthenticationError) as info:
        ask(client(sim, api_key=key), "hello there friend")
    message = info.value.body["message"]  # type: ignore[index]
    assert message == (
        "Incorrect API key provided: sk-live_...wxyz. (sent: sk-live_abc123+/=wxyz, url: sk-live_abc123%2B%2F%3Dwxyz)"
    )
    assert info.value.response.headers["x-echo-key"] == key
    assert info.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError) as info:
        client(sim, api_key=key).models.list()
    assert info.value.response.headers["x-echo-key"] == key
    assert ask(client(sim, api_key="sk-right"), "hello there friend").choices[0].message.content
    # Without the switch the key is not repeated.
    with pytest.raises(openai.AuthenticationError) as info:
        ask(client(make_simulator(require_api_key="sk-right"), api_key=key), "hello there friend")
    assert "abc123" not in str(info.value.body) and "x-echo-key" not in info.value.response.headers


def test_not_openai_html(make_simulator: MakeSim) -> None:
    sim = make_simulator(not_openai="html")
    for method, path, body in (("POST", "/v1/chat/completions", chat()), ("GET", "/v1/models", None),
                               ("POST", "/chat/completions", chat())):  # fmt: skip
        status, headers, raw = raw_http(sim, method, path, body)
        assert status == 200 and headers["content-type"] == "text/html"
        assert raw.startswith(b"<!DOCTYPE html>") and b"It works!" in raw
    assert http(sim, "GET", "/_sim/stats")[0] == 200  # the simulator's own endpoints still answer
    assert sim.stats()["completions"] == 0


def test_not_openai_404(make_simulator: MakeSim) -> None:
    sim = make_simulator(not_openai="404")
    status, headers, raw = raw_http(sim, "POST", "/v1/chat/completions", chat())
    assert status == 404 and headers["content-type"].startswith("text/plain")
    assert raw.decode().strip() == "404 page not found"
    with pytest.raises(openai.NotFoundError):
        ask(client(sim), "hello there friend")


def test_context_tokens(make_simulator: MakeSim) -> None:
    sim = make_simulator(context_tokens=100)
    text = "x" * 360  # 90 tokens by the simulator's estimate
    status, _, body = post_chat(sim, chat(text, max_tokens=20))
    assert status == 400
    assert body["error"] == {
        "message": "This model's maximum context length is 100 tokens. However, you requested 110 tokens "
        "(90 in the messages, 20 in the completion). Please reduce the length of the messages or completion.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    assert post_chat(sim, chat(text, max_tokens=10))[0] == 200
    assert post_chat(sim, chat(text, max_completion_tokens=11))[0] == 400
    status, _, body = post_chat(sim, chat("x" * 404))
    assert status == 400 and "your messages resulted in 101 tokens" in body["error"]["message"]
    with pytest.raises(openai.BadRequestError):
        ask(client(sim), text, max_tokens=20)
    assert post_chat(make_simulator(), chat(text, max_tokens=20))[0] == 200


def test_max_body_bytes(make_simulator: MakeSim) -> None:
    sim = make_simulator(max_body_bytes=300)
    small, big = chat("x" * 100), chat("x" * 400)
    assert len(small) <= 300 < len(big)
    assert post_chat(sim, small)[0] == 200
    status, _, body = post_chat(sim, big)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert post_chat(sim, small)[0] == 200  # the connection's stream was kept in step
    assert post_chat(make_simulator(), big)[0] == 200


def test_max_tokens_cuts_json_with_finish_length(simulator: Simulator) -> None:
    for limit in ({"max_tokens": 10}, {"max_completion_tokens": 10}):
        _, _, body = post_chat(simulator, chat(CHUNK, response_format=JSON_SCHEMA_FORMAT, **limit))
        choice = body["choices"][0]
        assert choice["finish_reason"] == "length" and 30 < len(choice["message"]["content"]) <= 40
        with pytest.raises(json.JSONDecodeError):
            json.loads(choice["message"]["content"])  # unfinished JSON, as from a real server
        assert body["usage"]["completion_tokens"] == 10
    _, _, raw = raw_http(simulator, "POST", "/v1/chat/completions", chat(CHUNK, max_tokens=3, stream=True))
    chunks = sse_chunks(raw)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert len("".join(c["choices"][0]["delta"].get("content", "") for c in chunks)) <= 12
    _, _, body = post_chat(simulator, chat(CHUNK, max_tokens=4000))
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "bad",
    [
        {"structured": "vllm"},
        {"reasoning_field": "thoughts"},
        {"not_openai": "500"},
        {"rate_limit_rps": -1.0},
        {"rate_limit_rps": float("inf")},
        {"rate_limit_rps": 5.0, "rate_limit_burst": 0.5},
        {"rate_limit_burst": 3.0},
        {"echo_key": True},
        {"context_tokens": -1},
        {"max_body_bytes": -1},
    ],
)
def test_quirk_config_is_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimConfig(**bad)


def test_simulate_flags_make_the_config() -> None:
    import argparse

    from dsetlog.cli import simulate as simulate_cmd
    from dsetlog.simulator.config import config_from_options

    parser = argparse.ArgumentParser()
    simulate_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["simulate"])
    assert config_from_options(vars(args)) == SimConfig()
    args = parser.parse_args(
        ["simulate", "--structured", "llamacpp", "--reasoning-field", "think", "--rate-limit", "20",
         "--rate-limit-burst", "5", "--no-rate-limit-headers", "--require-api-key", "sk-x", "--echo-key",
         "--not-openai", "404", "--context-tokens", "4096", "--max-body-bytes", "1000"]
    )  # fmt: skip
    cfg = config_from_options(vars(args))
    assert (cfg.structured, cfg.reasoning_field, cfg.rate_limit_rps, cfg.rate_limit_burst) == (
        "llamacpp",
        "think",
        20,
        5,
    )
    assert (cfg.rate_limit_headers, cfg.echo_key, cfg.not_openai) == (False, True, "404")
    assert (cfg.context_tokens, cfg.max_body_bytes) == (4096, 1000)
    args = parser.parse_args(["simulate", "--echo-key"])
    assert simulate_cmd.run(args) == 2  # refused before serving: echo_key needs require_api_key
