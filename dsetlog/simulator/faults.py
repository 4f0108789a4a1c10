"""The simulator's failures: injected faults, a provider's rate limit, and the refusals of real servers.

* Faults (429, 500, hang, malformed JSON, empty content, connection reset) are a pure function of
  ``(seed, prompt key, attempt)`` (``fault_for``); attempts ``>= max_faults_per_prompt`` never fault, so a
  client that retries enough always gets through.  Latency and jitter are drawn the same way.
* Attempt numbering: the attempt index is 0-based internally.  By default it is the number of
  chat-completion requests the server has already seen for the same prompt key (model + messages).
  A client may state it instead with the header ``X-Dset-Attempt: N`` where **N is 1-based** (the first
  try sends 1, the first retry 2, ...); the server uses ``N - 1``.  So with the default
  ``max_faults_per_prompt=2``, tries 1 and 2 may fault and try 3 never does.
* The quirks of real servers that refuse a request (``SimConfig``'s docstring lists the switches): the
  401 of a wrong key (echoing it with ``echo_key``), the 402 of an exhausted quota, llama-cpp-python's
  and a text-only server's refusals of a response_format, OpenAI's ``context_length_exceeded``, the
  token bucket of ``rate_limit_rps`` (``Bucket``) and the pages of a base URL that is not an OpenAI API.
"""

from __future__ import annotations

import hashlib
import math
import time
import urllib.parse
from typing import Any

import msgspec

from dsetlog.simulator.config import SimConfig
from dsetlog.simulator.reply import Reply, error, error_body

_MALFORMED = b'{"id": "chatcmpl-sim", "object": "chat.completion", "choices": ['
_MALFORMED_SSE = b'data: {"id": "chatcmpl-sim", "choices": [\n\n'


def prompt_key(model: str, messages: Any) -> str:
    """Key of a prompt: a short hash of (model, messages), independent of dict key order."""
    raw = msgspec.json.encode([model, messages], order="sorted")
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def _unit(seed: int, key: str, attempt: int, salt: str) -> float:
    """A uniform number in [0, 1) that depends only on its arguments (never on process state)."""
    digest = hashlib.blake2b(f"{seed}|{key}|{attempt}|{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def fault_for(config: SimConfig, key: str, attempt: int) -> str | None:
    """The fault kind (one of ``FAULT_KINDS``) a request gets, or None; ``attempt`` is 0-based."""
    if attempt >= config.max_faults_per_prompt:
        return None
    u = _unit(config.seed, key, attempt, "fault")
    edge = 0.0
    for kind, rate in config.rates():
        edge += rate
        if u < edge:
            return kind
    return None


def delay_s(config: SimConfig, key: str, attempt: int) -> float:
    if config.latency_ms <= 0 and config.jitter_ms <= 0:
        return 0.0
    jitter = config.jitter_ms * (2.0 * _unit(config.seed, key, attempt, "jitter") - 1.0)
    return max(0.0, config.latency_ms + jitter) / 1000.0


# Where llama-cpp-python's server (v0.3.x, FastAPI >= 0.120) says a validation error came from: FastAPI
# names the endpoint's file and first line (its decorator, line 375 of llama_cpp/server/app.py).
_LLAMACPP_ENDPOINT = (
    '  File "/usr/local/lib/python3.12/site-packages/llama_cpp/server/app.py", line 375, '
    "in create_chat_completion\n"
    "    POST /v1/chat/completions"
)
_LLAMACPP_TYPES = "'text' or 'json_object'"
# Body fields llama-cpp-python's request model has no slot for (pydantic drops them) or excludes.
LLAMACPP_IGNORED = ("max_completion_tokens", "n", "stream_options")


def llamacpp_refusal(fmt: dict[str, Any]) -> Reply | None:
    """What llama-cpp-python's server answers to a response_format its request model rejects.

    Its ``response_format`` is a TypedDict ``{"type": Literal["text", "json_object"], "schema": ...}``, so
    FastAPI raises RequestValidationError; its ``RouteErrorHandler`` catches every exception, matches
    none of its known messages, and answers 500 ``{"error": {"message": str(exc), "type":
    "internal_server_error", "param": null, "code": null}}``, where ``str(exc)`` lists pydantic's error
    dicts and then the endpoint.
    """
    if "type" not in fmt:
        err: dict[str, Any] = {"type": "missing", "loc": ("body", "response_format", "type"),
                               "msg": "Field required", "input": fmt}  # fmt: skip
    elif fmt["type"] in ("text", "json_object"):
        return None
    else:
        err = {"type": "literal_error", "loc": ("body", "response_format", "type"),
               "msg": f"Input should be {_LLAMACPP_TYPES}", "input": fmt["type"],
               "ctx": {"expected": _LLAMACPP_TYPES}}  # fmt: skip
    message = f"1 validation error:\n  {err!r}\n\n{_LLAMACPP_ENDPOINT}"
    return Reply(500, error_body(message, "internal_server_error"))


def structured_refusal(structured: str, fmt: dict[str, Any]) -> Reply | None:
    """The refusal a ``structured`` mode makes of a response_format (not called in "openai" mode)."""
    if structured == "llamacpp":
        return llamacpp_refusal(fmt)
    if fmt.get("type") == "text":
        return None
    message = "Unsupported parameter: 'response_format' is not supported by this server."
    return Reply(400, error_body(message, "invalid_request_error", "unsupported_parameter", "response_format"))


def context_refusal(window: int, prompt: int, completion: int | None) -> Reply | None:
    """OpenAI's 400 for a request that does not fit the model's context window, or None if it fits."""
    if prompt + (completion or 0) <= window:
        return None
    if completion is None:
        message = (f"This model's maximum context length is {window} tokens. However, your messages resulted "
                   f"in {prompt} tokens. Please reduce the length of the messages.")  # fmt: skip
    else:
        message = (f"This model's maximum context length is {window} tokens. However, you requested "
                   f"{prompt + completion} tokens ({prompt} in the messages, {completion} in the completion). "
                   "Please reduce the length of the messages or completion.")  # fmt: skip
    return Reply(400, error_body(message, "invalid_request_error", "context_length_exceeded", "messages"))


def _mask_key(key: str) -> str:
    """A key as providers show it in a 401: its start and its last four characters."""
    return f"{key[:8]}...{key[-4:]}" if len(key) > 12 else f"{key[:2]}..."


def duration(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` format (Go's time.Duration, to the ms): 250ms, 1.5s, 1m30s, 1h0m0s."""
    ms = math.ceil(seconds * 1000 - 1e-6)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


class Bucket:
    """A provider's request rate limit: a token bucket of ``capacity`` refilling continuously at ``rps``.

    Only touched on the server's loop thread, so it needs no lock."""

    __slots__ = ("rps", "capacity", "tokens", "stamp", "limit_text", "headers")

    def __init__(self, rps: float, burst: float, headers: bool) -> None:
        self.rps = rps
        self.capacity = burst if burst > 0 else max(1.0, rps)
        self.tokens = self.capacity  # starts full, as a provider's quota does
        self.stamp = time.monotonic()
        self.limit_text = f"{self.capacity:g}"
        self.headers = headers

    def take(self) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there is (nothing is taken)."""
        now = time.monotonic()
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rps)
        self.stamp = now
        if tokens >= 1.0 - 1e-9:  # float dust must not turn away a client that waited exactly retry-after-ms
            self.tokens = max(0.0, tokens - 1.0)
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rps

    def header_lines(self) -> str:
        """OpenAI's x-ratelimit-*-requests headers for the state after this request."""
        return (
            f"x-ratelimit-limit-requests: {self.limit_text}\r\n"
            f"x-ratelimit-remaining-requests: {int(self.tokens + 1e-9)}\r\n"
            f"x-ratelimit-reset-requests: {duration((self.capacity - self.tokens) / self.rps)}\r\n"
        )

    def refusal(self, wait: float) -> Reply:
        """The 429 for a request that found the bucket empty, ``wait`` seconds before the next token."""
        message = (
            f"Rate limit reached for requests in organization org-dset-simulator on requests per second "
            f"(RPS): Limit {self.limit_text}, Used {self.limit_text}, Requested 1. "
            f"Please try again in {duration(wait)}. (simulated)"
        )
        # Retry-After is whole seconds (rounded up, as real servers send it); retry-after-ms is exact.
        lines = (
            f"Retry-After: {max(1, math.ceil(wait - 1e-9))}\r\n"
            f"retry-after-ms: {max(1, math.ceil(wait * 1000))}\r\n"
        )
        if self.headers:
            lines += self.header_lines()
        return Reply(429, error_body(message, "requests", "rate_limit_exceeded"), headers=lines)


_HTML_PAGE = (
    b"<!DOCTYPE html>\n<html>\n<head><title>Welcome!</title></head>\n<body>\n<h1>It works!</h1>\n"
    b"<p>This is the default web page for this server.</p>\n</body>\n</html>\n"
)


def not_openai_reply(mode: str) -> Reply:
    if mode == "html":
        return Reply(200, _HTML_PAGE, content_type="text/html")
    return Reply(404, b"404 page not found\n", content_type="text/plain; charset=utf-8")


def fault_reply(fault: str, retry_after_s: float, delay: float, stream: bool) -> Reply | None:
    """The reply an injected fault sends instead of an answer; None for "hang" and "empty", which
    answer (late, or with no content)."""
    if fault == "429":
        ra = retry_after_s
        ra_text = str(int(ra)) if float(ra).is_integer() else f"{ra:g}"
        return error(
            429,
            "Rate limit reached for requests (simulated).",
            "requests",
            "rate_limit_exceeded",
            headers=f"Retry-After: {ra_text}\r\nretry-after-ms: {round(ra * 1000)}\r\n",
            delay=delay,
        )
    if fault == "500":
        return error(500, "The server had an error while processing your request (simulated).",
                     "server_error", delay=delay)  # fmt: skip
    if fault == "reset":
        return Reply(0, b"", reset=True, delay=delay)
    if fault == "malformed":
        if stream:
            return Reply(200, _MALFORMED_SSE, content_type="text/event-stream", delay=delay)
        return Reply(200, _MALFORMED, delay=delay)
    return None


def auth_refusal(config: SimConfig, headers: dict[str, str]) -> Reply | None:
    """The 401 for a request without the key ``require_api_key`` asks for, or None if it may pass."""
    want = config.require_api_key
    if want is None:
        return None
    raw = headers.get("authorization", "")
    scheme, _, token = raw.partition(" ")
    if scheme.lower() == "bearer" and token.strip() == want:
        return None
    sent = token.strip() if scheme.lower() == "bearer" else raw
    if config.echo_key and sent:
        # Real providers put (part of) the key they were sent in the message; some proxies echo it
        # whole.  Full, masked and URL-encoded, so a client's redaction is tested on every form.
        # The header parser split on CRLF, so the key can't smuggle a header line in.
        message = (
            f"Incorrect API key provided: {_mask_key(sent)}. "
            f"(sent: {sent}, url: {urllib.parse.quote(sent, safe='')})"
        )
        return error(
            401, message, "invalid_request_error", "invalid_api_key", headers=f"x-echo-key: {sent}\r\n"
        )
    return error(401, "Incorrect API key provided (simulated).", "invalid_request_error", "invalid_api_key")


def quota_refusal() -> Reply:
    """DeepSeek's 402 for an account with no balance left (``quota_exhausted``)."""
    return Reply(
        402,
        b'{"error":{"message":"Insufficient Balance","type":"insufficient_quota","code":"insufficient_quota"}}',
    )
