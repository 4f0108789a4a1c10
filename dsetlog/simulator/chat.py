"""How the simulator answers a chat completion: the endpoint's steps (size, key, rate limit, quota, the
body, the quirks' refusals, the context window, the attempt and its fault) and the answer itself.

* Content: JSON when the request asks for it (json_schema: an instance of the schema; json_object: the
  schema or example the prompt shows, or ``{"answer": ...}``), else a few statements of the prompt.
  ``structured`` changes which response_formats are refused (``faults.structured_refusal``) and where JSON
  comes from: llama.cpp's json_object takes a ``schema``; a ``text`` server writes JSON only when the
  prompt shows a schema or an example.
* Models whose name contains ``sloppy`` answer JSON requests with the JSON wrapped in chatty prose, as
  weak models do, so the reply does not parse as it stands: the way to exercise a parsing (repair) model.
  Models named ``reasoner`` or ``r1`` reason first; ``reasoning_field`` says where that goes
  (``reasoning_content``, ``reasoning``, inline ``<think>`` in the content, or nowhere but the usage).
* ``max_tokens`` / ``max_completion_tokens`` are honoured: a longer answer is cut to fit (by
  ``text.tokens``) and ends with ``finish_reason: "length"``; a cut JSON answer is unfinished JSON, as
  from real servers.  ``n`` choices are the same answer; ``stream`` sends it as one event stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import time
from typing import Any

import msgspec

from dsetlog.simulator.config import SimConfig
from dsetlog.simulator.faults import (
    LLAMACPP_IGNORED,
    Bucket,
    auth_refusal,
    context_refusal,
    delay_s,
    fault_for,
    fault_reply,
    prompt_key,
    quota_refusal,
    structured_refusal,
)
from dsetlog.simulator.reply import FINGERPRINT, Reply, _BadRequest, error
from dsetlog.simulator.schema import SchemaGen, json_in_prompt
from dsetlog.simulator.stats import Stats
from dsetlog.simulator.text import Source, prompt_tokens, tokens


class Chat:
    """The chat-completions endpoint: a request's body and headers in, its reply out.

    Switches are resolved once here so that, when off, they cost the hot path one test each."""

    def __init__(self, config: SimConfig, stats: Stats) -> None:
        self.config = config
        self.stats = stats
        cfg = config
        self._bucket = (
            Bucket(cfg.rate_limit_rps, cfg.rate_limit_burst, cfg.rate_limit_headers) if cfg.rate_limit_rps else None
        )
        self._reasoning_key = None if cfg.reasoning_field in ("think", "none") else cfg.reasoning_field

    def handle(self, headers: dict[str, str], body: bytes) -> Reply:
        stats = self.stats
        stats.began()
        try:
            reply = self._reply(headers, body)
        except BaseException:
            stats.abandoned()
            raise
        reply.tracked = True  # in flight until the connection sends (or drops) it
        return reply

    def answer_line(self, body: bytes) -> Reply:
        """The reply to one batch input line's body: the same answer a chat request gets, without the
        endpoint's front door (size, key, rate limit: the batch routes have their own) and without injected
        faults, which belong to live calls; ``stream`` is ignored, as a batch has nothing to stream to."""
        if self.config.quota_exhausted:
            return quota_refusal()
        req = self._request(body)
        if isinstance(req, Reply):
            return req
        req = {k: v for k, v in req.items() if k not in ("stream", "stream_options")}
        return self._complete(req, prompt_key(req["model"], req["messages"]), 0, empty=False, delay=0.0)

    def _reply(self, headers: dict[str, str], body: bytes) -> Reply:
        cfg, stats = self.config, self.stats
        stats.count("requests")
        if cfg.max_body_bytes and len(body) > cfg.max_body_bytes:
            message = f"Request body too large: {len(body)} bytes; the limit is {cfg.max_body_bytes} bytes."
            return error(413, message, "invalid_request_error", "request_too_large")
        denied = auth_refusal(cfg, headers)
        if denied is not None:
            stats.fault("401")
            return denied
        bucket = self._bucket
        if bucket is None:
            return self._answer(headers, body)
        wait = bucket.take()
        if wait:
            # At once, before the body is read: a provider's limiter sits in front of the model.
            stats.count("rate_limited")
            return bucket.refusal(wait)
        lines = bucket.header_lines() if bucket.headers else ""
        reply = self._answer(headers, body)
        reply.headers += lines
        return reply

    def _answer(self, headers: dict[str, str], body: bytes) -> Reply:
        cfg = self.config
        if cfg.quota_exhausted:
            self.stats.fault("402")
            return quota_refusal()
        req = self._request(body)
        if isinstance(req, Reply):
            return req
        key = prompt_key(req["model"], req["messages"])
        attempt = self._attempt(key, headers)
        fault = fault_for(cfg, key, attempt)
        delay = delay_s(cfg, key, attempt)
        if fault is not None:
            self.stats.fault(fault)
            failed = fault_reply(fault, cfg.retry_after_s, delay, stream=req.get("stream") is True)
            if failed is not None:
                return failed
            if fault == "hang":
                delay = cfg.hang_s
        return self._complete(req, key, attempt, empty=fault == "empty", delay=delay)

    def _request(self, body: bytes) -> dict[str, Any] | Reply:
        """The request the body holds, as this server reads it, or the reply that refuses it."""
        cfg = self.config
        try:
            decoded = msgspec.json.decode(body)
            if cfg.request_log:
                self.stats.log(decoded)
            req = _validate(decoded)
        except msgspec.DecodeError as exc:
            return error(400, f"We could not parse the JSON body of your request: {exc}", "invalid_request_error")
        except _BadRequest as exc:
            return exc.reply()
        if cfg.structured != "openai":
            fmt = req.get("response_format")
            refused = structured_refusal(cfg.structured, fmt) if fmt is not None else None
            if refused is not None:
                return refused
            if cfg.structured == "llamacpp":
                req = {k: v for k, v in req.items() if k not in LLAMACPP_IGNORED}
        if cfg.context_tokens:
            limit = req.get("max_completion_tokens") or req.get("max_tokens")
            refused = context_refusal(cfg.context_tokens, prompt_tokens(req["messages"]), limit)
            if refused is not None:
                return refused
        return req

    def _attempt(self, key: str, headers: dict[str, str]) -> int:
        """The request's 0-based attempt: as the client states it (``X-Dset-Attempt``, 1-based), else the
        requests already seen for its prompt key."""
        attempt = self.stats.seen(key)
        stated = headers.get("x-dset-attempt")
        if stated is not None:
            with contextlib.suppress(ValueError):
                attempt = max(0, int(stated) - 1)  # the header is 1-based
        return attempt

    def _complete(self, req: dict[str, Any], key: str, attempt: int, *, empty: bool, delay: float) -> Reply:
        cfg = self.config
        try:
            content, reasoning = build_content(cfg.seed, key, req, cfg.structured)
        except _BadRequest as exc:
            return exc.reply()
        finish = "stop"
        if empty:
            content = ""
        else:
            if reasoning is not None and cfg.reasoning_field == "think":
                # Inline, the reasoning is part of the content: max_tokens counts it, usage has no split.
                content = f"<think>\n{reasoning}\n</think>\n\n{content}"
                reasoning = None
            limit = req.get("max_completion_tokens") or req.get("max_tokens")
            if limit is not None and tokens(content) > limit:
                content = content[: limit * 4]
                finish = "length"
        answer = _Answer(content, reasoning, self._reasoning_key if reasoning is not None else None, finish)
        return completion(req, f"chatcmpl-sim-{key}-{attempt}", answer, delay)


def _is_sloppy(model: str) -> bool:
    return "sloppy" in model.lower()


def _sloppy(content: str) -> str:
    """What a weak model makes of "reply with JSON only": the JSON, unfenced, between two lines of chat."""
    return f"Sure! Here is the JSON you asked for:\n{content}\nLet me know if you need anything else."


def _is_reasoner(model: str) -> bool:
    low = model.lower()
    return "reasoner" in low or "r1" in low


def build_content(
    seed: int, key: str, req: dict[str, Any], structured: str = "openai"
) -> tuple[str, str | None]:
    """(content, reasoning_content) for a request; depends only on seed, key, the request and the
    ``structured`` mode (refusals the mode makes are ``faults.structured_refusal``'s, done before this)."""
    messages = req["messages"]
    rng = random.Random(
        int.from_bytes(hashlib.blake2b(f"{seed}|{key}|answer".encode(), digest_size=8).digest(), "big")
    )
    src = Source(messages, rng)
    fmt = req.get("response_format")
    fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
    as_json = True
    if fmt_type == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise _BadRequest("response_format.json_schema.schema must be an object", "response_format")
        value = SchemaGen(schema, src).instance()
    elif fmt_type == "json_object":
        schema = fmt.get("schema") if structured == "llamacpp" else None
        if isinstance(schema, dict):
            # llama.cpp compiles the schema into a grammar: constrained decoding yields an instance.
            value = SchemaGen(schema, src).instance()
        else:
            value = _prompt_json(json_in_prompt(messages), src)
    elif fmt_type in (None, "text"):
        # A server without structured output still gets JSON from a model whose prompt asks for it.
        found = json_in_prompt(messages) if structured == "text" else None
        as_json = found is not None
        value = _prompt_json(found, src) if as_json else None
    else:
        raise _BadRequest(f"Invalid response_format type: {fmt_type!r}", "response_format")
    if as_json:
        content = _follow_negatives(messages, msgspec.json.encode(value).decode())
        if _is_sloppy(str(req.get("model", ""))):
            content = _sloppy(content)
    else:
        content = src.plain_answer()
    reasoning = src.reasoning() if _is_reasoner(str(req.get("model", ""))) else None
    return content, reasoning


def _prompt_json(found: tuple[Any, bool] | None, src: Source) -> Any:
    """The JSON answer to a prompt that shows a schema (an instance) or an example (one like it)."""
    if found is None:
        return {"answer": src.plain_answer()}
    if found[1]:
        return SchemaGen(found[0], src).instance()
    return SchemaGen({}, src).from_example(found[0])


_NEGATIVES_RE = re.compile(
    r"Make (?:all of the questions|exactly (\d+) of the \d+ questions) ones whose answer the text does not give"
    r'.*?answer each of those exactly: "([^"]+)"', re.DOTALL)


def _follow_negatives(messages: list[dict[str, Any]], content: str) -> str:
    """Do what a good model does with "make K of the N questions unanswerable ... answer exactly X":
    the first K items get X as their answer (dset's own prompts ask for this; see dsetlog/prompts/templates.py)."""
    text = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    found = _NEGATIVES_RE.search(text)
    if not found:
        return content
    try:
        value = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return content
    items = value.get("items") if isinstance(value, dict) else None
    if not isinstance(items, list):
        return content
    wanted = len(items) if found.group(1) is None else int(found.group(1))
    for item in items[:wanted]:
        if isinstance(item, dict) and "answer" in item:
            item["answer"] = found.group(2)
    return msgspec.json.encode(value).decode()


def _validate(req: Any) -> dict[str, Any]:
    if not isinstance(req, dict):
        raise _BadRequest("The request body must be a JSON object.")
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("you must provide a model parameter", "model")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' must be a non-empty array", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _BadRequest(f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
    for field in ("max_tokens", "max_completion_tokens"):
        value = req.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise _BadRequest(f"'{field}' must be a positive integer", field)
    n = req.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        raise _BadRequest("'n' must be an integer between 1 and 128", "n")
    fmt = req.get("response_format")
    if fmt is not None and not isinstance(fmt, dict):
        raise _BadRequest("'response_format' must be an object", "response_format")
    return req


class _Answer(msgspec.Struct, frozen=True):
    """What a completion says: its content, its reasoning and the message field that carries it (None
    when the reasoning is hidden or inline), and why it ended."""

    content: str
    reasoning: str | None
    reasoning_key: str | None
    finish: str


def completion(req: dict[str, Any], ident: str, answer: _Answer, delay: float) -> Reply:
    """The 200 carrying an answer: a chat.completion body, or with ``stream`` the event stream of its chunks."""
    content, reasoning, reasoning_key = answer.content, answer.reasoning, answer.reasoning_key
    completion_tokens = tokens(content) + (tokens(reasoning) if reasoning else 0)
    prompt = prompt_tokens(req["messages"])
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }
    if reasoning:
        # Counted even when reasoning_field is "none": hidden reasoning is still billed.
        usage["completion_tokens_details"] = {"reasoning_tokens": tokens(reasoning)}
    n = req.get("n") or 1
    base = {"id": ident, "created": int(time.time()), "model": req["model"], "system_fingerprint": FINGERPRINT}
    has_content = bool(content)
    if req.get("stream") is not True:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning_key is not None:
            message[reasoning_key] = reasoning
        body = {
            "id": ident,
            "object": "chat.completion",
            "created": base["created"],
            "model": base["model"],
            "system_fingerprint": FINGERPRINT,
            "choices": [
                {"index": i, "message": message, "logprobs": None, "finish_reason": answer.finish} for i in range(n)
            ],
            "usage": usage,
        }
        return Reply(200, msgspec.json.encode(body), delay=delay, completion=has_content)
    payload = _event_stream(base, answer, n, usage if _include_usage(req) else None)
    return Reply(200, payload, content_type="text/event-stream", delay=delay, completion=has_content)


def _include_usage(req: dict[str, Any]) -> bool:
    opts = req.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


def _event_stream(base: dict[str, Any], answer: _Answer, n: int, usage: dict[str, Any] | None) -> bytes:
    """The chunks of a streamed answer, each choice's role, content and finish in turn, then the usage
    if asked for; the whole stream goes out in one write (clients can't tell the difference)."""
    chunk_base = {"id": base["id"], "object": "chat.completion.chunk", "created": base["created"],
                  "model": base["model"], "system_fingerprint": FINGERPRINT}  # fmt: skip
    first_delta: dict[str, Any] = {"role": "assistant", "content": ""}
    if answer.reasoning_key is not None:
        first_delta[answer.reasoning_key] = answer.reasoning
    chunks: list[dict[str, Any]] = []
    for i in range(n):
        chunks.append({**chunk_base, "choices": [{"index": i, "delta": first_delta, "finish_reason": None}]})
        chunks.append(
            {**chunk_base, "choices": [{"index": i, "delta": {"content": answer.content}, "finish_reason": None}]}
        )
        chunks.append({**chunk_base, "choices": [{"index": i, "delta": {}, "finish_reason": answer.finish}]})
    if usage is not None:
        chunks.append({**chunk_base, "choices": [], "usage": usage})
    return b"".join(b"data: " + msgspec.json.encode(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
