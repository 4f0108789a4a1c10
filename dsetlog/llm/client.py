"""Calls to an OpenAI-compatible chat endpoint: one attempt, its classification, and the retry schedule.

Only retryable failures are retried (429, 5xx, timeouts, connection errors,
malformed or empty output); auth and quota errors are fatal for the whole run
because every other call would fail the same way and may cost money. Failures
are classified by meaning, not by status alone: a 5xx whose body is a request
validation error is the request's fault, a refused structured-output format
moves the endpoint down a mode (:mod:`dsetlog.llm.structured`), a 429 is the
endpoint's (:mod:`dsetlog.llm.ratelimit`), and a server that is not
OpenAI-compatible at all stops the run at once.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
import msgspec
import openai

from dsetlog import redaction
from dsetlog.errors import DsetError, Kind
from dsetlog.llm import structured
from dsetlog.llm.providers import Provider
from dsetlog.llm.ratelimit import RateController, controller_for, retry_after
from dsetlog.llm.sender import Pool, SendFailed, SendProcess, refused, ssl_context
from dsetlog.llm.structured import Structured
from dsetlog.scripts import token_estimate
from dsetlog.store.events import StructuredModeLearned

SIMULATOR_FINGERPRINT = "dset-simulator"
_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)
# A 5xx whose body says the request did not validate (FastAPI/pydantic servers such as llama-cpp-python
# answer 500 for it) is the request's fault: sending it again changes nothing.
_VALIDATION = re.compile(r"validation error|input should be|field required|literal_error|extra_forbidden|"
                         r"unprocessable|'loc':|\"loc\":|invalid request|invalid_request_error", re.IGNORECASE)
_CONTEXT = re.compile(r"context[ _-]?(length|window)|maximum context|too many tokens|prompt is too long|"
                      r"exceeds? the (model's )?(maximum|max)", re.IGNORECASE)
_NUMBER = re.compile(r"\d[\d,]*")
MAX_TOKENS_CAP = 16384  # a cut structured reply is retried once with twice its max_tokens, up to this
MAX_RATE_LIMITED = 200  # 429s one item may meet before they count against its retries (a provider that
# never lets anything through must not hold a run forever)


@dataclass(frozen=True)
class Completion:
    content: str
    reasoning: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    finish_reason: str = "stop"
    simulated: bool = False  # answered by dset's simulator, never by a real model
    mode: str = ""  # the structured-output mode the call was made in ("" for free text)


class CallFailure(DsetError):
    """One failed attempt, classified.

    ``retryable``: another attempt may succeed. ``fatal``: stop the whole run (auth, quota, unknown model,
    not an OpenAI-compatible server), the message says what to fix. ``free``: the retry does not spend
    the item's retry budget (a 429, or a structured-output mode the endpoint refused and that was
    lowered). ``cut``: the reply stopped at max_tokens with unfinished JSON. The message is redacted:
    providers echo keys in their errors. ``reason`` names the class of failure ("auth", "rate_limited", ...).
    """

    kind = Kind.FATAL  # one that escapes the retry loop stops the run

    def __init__(self, reason: str, message: str, *, status_code: int | None = None, retryable: bool = False,
                 fatal: bool = False, retry_after: float | None = None, free: bool = False,
                 cut: bool = False) -> None:
        message = redaction.redact(message)
        super().__init__(message)
        self.reason, self.message, self.status_code = reason, message, status_code
        self.retryable, self.fatal, self.retry_after = retryable, fatal, retry_after
        self.free, self.cut = free, cut

    def __str__(self) -> str:
        code = f" (HTTP {self.status_code})" if self.status_code else ""
        return f"{self.reason}{code}: {self.message}"


def _error_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:600]
        if isinstance(err, str):
            return err[:600]
        if body.get("detail"):
            return str(body["detail"])[:600]
    return str(exc.message)[:600]


def _body_code(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("code") or err.get("type") or "")
    return ""


def _is_html(headers: Any, body: Any) -> bool:
    kind = str(headers.get("content-type", "")) if headers is not None else ""
    return "html" in kind or (isinstance(body, str) and body.lstrip()[:1] == "<")


def _context_failure(text: str, status: int) -> CallFailure:
    numbers = [int(n.replace(",", "")) for n in _NUMBER.findall(text)]
    limit = f" (the model's limit is {numbers[0]} tokens)" if numbers else ""
    return CallFailure("too_large", f"the prompt and max_tokens do not fit the model's context{limit}: "
                       f"{text}; use a smaller chunk_size or --max-tokens", status_code=status)


def classify(exc: BaseException, *, url: str = "", reached: bool = True) -> CallFailure:
    """Turn an SDK exception into a CallFailure that says whether to retry or stop.

    ``url`` names the endpoint in messages that send the user to check it; ``reached``: has this endpoint
    ever answered? A refused connection to one that never did is a wrong URL or a server that is down.
    """
    if isinstance(exc, CallFailure):
        return exc
    if isinstance(exc, openai.APIConnectionError) and refused(exc):
        # (the aiohttp transport reports a refused connection as a connect *timeout*: look at the cause)
        if not reached:
            return CallFailure("unreachable", f"nothing answers at {url}: the connection was refused. Is the "
                               "server running, and is --base-url (or <PROFILE>_BASE_URL) right?", fatal=True)
        return CallFailure("connection", f"the connection to {url} was refused", retryable=True)
    if isinstance(exc, openai.APITimeoutError):
        return CallFailure("timeout", "the call timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return CallFailure("connection", f"connection failed: {exc.__cause__ or exc}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        return _classify_status(exc, url)
    if isinstance(exc, (openai.APIResponseValidationError, ValueError, httpx2.DecodingError)):
        return CallFailure("malformed", f"the response could not be parsed ({type(exc).__name__})", retryable=True)
    if isinstance(exc, httpx2.TransportError):
        return CallFailure("connection", f"connection failed: {exc}", retryable=True)
    return CallFailure("unexpected", f"{type(exc).__name__}: {exc}", retryable=True)


def _classify_status(exc: openai.APIStatusError, url: str) -> CallFailure:
    status, text, code = exc.status_code, _error_text(exc), _body_code(exc.body)
    headers = exc.response.headers
    if status in (401, 403):
        return CallFailure("auth", f"the API refused the key ({text}); check the API key variable for this "
                           "profile in .env", status_code=status, fatal=True)
    if status == 402 or code == "insufficient_quota":
        return CallFailure("quota", f"the account is out of credit or quota ({text}); top it up or use another "
                           "key, then run again to continue", status_code=status, fatal=True)
    if _is_html(headers, exc.body) or (status == 404 and not isinstance(exc.body, dict)):
        return CallFailure("not_openai", f"{url}/chat/completions answered HTTP {status} with "
                           f"{'an HTML page' if _is_html(headers, exc.body) else 'no JSON error'}: this is not an "
                           "OpenAI-compatible API. Check --base-url (it usually ends in /v1)",
                           status_code=status, fatal=True)
    if status == 404:
        return CallFailure("not_found", f"{text}; check --model and --base-url ({url})", status_code=status,
                           fatal=True)
    if status == 413:
        return CallFailure("too_large", f"the request is larger than the server accepts ({text}); use a smaller "
                           "chunk_size", status_code=status)
    if _CONTEXT.search(text) or code == "context_length_exceeded":
        return _context_failure(text, status)
    if status == 429:
        return CallFailure("rate_limited", text, status_code=status, retryable=True, free=True,
                           retry_after=retry_after(headers))
    if status >= 500 and _VALIDATION.search(f"{text} {exc.body!r}"[:4000]):
        return CallFailure("rejected", f"the server refused the request as invalid: {text}", status_code=status)
    if status in (408, 409) or status >= 500:
        return CallFailure("server_error", text, status_code=status, retryable=True, retry_after=retry_after(headers))
    return CallFailure("rejected", text, status_code=status)  # 400/422: this item's request is bad


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; ``Retry-After`` from the server wins when given."""

    max_retries: int = 3
    backoff: float = 2.0  # seconds before the first retry; dset's own schedule is --backoff 60 (1, 2, 4 min)
    max_delay: float = 600.0
    jitter: float = 0.25  # +/- this share of the delay, so many clients do not retry in lockstep

    def delay(self, retry: int, failure: CallFailure) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if failure.retry_after is not None:
            return min(self.max_delay, failure.retry_after)
        base = min(self.max_delay, self.backoff * 2 ** (retry - 1))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


def estimate_tokens(messages: list[dict[str, Any]], max_tokens: int | None) -> int:
    """The tokens a call may take, for budgets and the tokens-per-minute limit: its messages by the token
    estimate of their script (dsetlog.scripts.token_estimate: a Han character is about a token, English four
    characters), plus the completion's limit (512 when none is set)."""
    prompt = sum(token_estimate(c if isinstance(c := m.get("content", ""), str) else str(c)) for m in messages)
    return int(prompt) + 1 + (max_tokens or 512)


# The reply, decoded straight from the body's bytes with msgspec: what we read of it, nothing more.
class _Message(msgspec.Struct):
    content: Any = None
    reasoning_content: Any = None  # DeepSeek, older vLLM
    reasoning: Any = None  # current vLLM, OpenRouter


class _Choice(msgspec.Struct):
    message: _Message | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0


class _Reply(msgspec.Struct):
    choices: list[_Choice] | None = None
    model: str | None = None
    usage: _Usage | None = None
    system_fingerprint: str | None = None


_reply_decoder = msgspec.json.Decoder(_Reply)
_encoder = msgspec.json.Encoder()


def _text(value: Any) -> str:
    """Content or reasoning as servers send it: a string, or a list of text parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in value)
    return "" if value is None else str(value)


def split_reasoning(message: _Message) -> tuple[str, str]:
    """(content, reasoning) in every shape servers send reasoning: ``reasoning_content``, ``reasoning``, or
    an inline ``<think>...</think>`` at the start of the content (ollama, llama.cpp)."""
    content = _text(message.content)
    reasoning = _text(message.reasoning_content) or _text(message.reasoning)
    think = _THINK.match(content)
    if think:
        reasoning = reasoning or think.group(1).strip()
        content = content[think.end():]
    return content, reasoning


def _unfinished_json(content: str) -> bool:
    try:
        msgspec.json.decode(structured.fenced_json(content))
    except msgspec.DecodeError:
        return True
    return False


def structured_mode(provider: Provider, model: str | None = None) -> str:
    """The structured-output mode calls to the provider's endpoint and model are made in now."""
    return provider.structured_forced or structured.BOOK.mode(
        provider.endpoint, model or provider.model, default=provider.structured_default)


def request_body(provider: Provider, messages: list[dict[str, Any]], *, response_format: dict[str, Any] | None = None,
                 schema: Structured | None = None, temperature: float | None = None, max_tokens: int | None = None,
                 model: str | None = None) -> tuple[dict[str, Any], str]:
    """The request body of one chat call and the structured mode it is made in ("" for free text): what
    :meth:`LLMClient.complete` posts, and what a batch input line carries (dsetlog.llm.batches)."""
    model = model or provider.model
    mode = ""
    if schema is not None:
        mode = structured_mode(provider, model)
        messages, response_format = schema.request(mode, messages)
    # The request chat.completions.create() would send, byte for byte, without its parameter
    # transform: that walks every one of create()'s ~45 parameters through typing introspection, ~1 ms
    # of CPU per call, and has nothing to convert in plain JSON messages.
    body: dict[str, Any] = {"model": model, "messages": messages}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if response_format is not None:
        body["response_format"] = response_format
    if temperature is not None:
        body["temperature"] = temperature
    return body, mode


def completion_of(resp: _Reply | dict[str, Any], *, model: str, mode: str = "", structured_reply: bool = False,
                  max_tokens: int | None = None, latency_ms: float = 0.0, simulated: bool = False) -> Completion:
    """The completion a chat reply holds (decoded, or the JSON object of a batch output line): its content
    and reasoning split as every server sends them, its usage; a CallFailure for what online and batch
    answers alike must not become an entry (no choices, no content, structured JSON cut at max_tokens)."""
    if isinstance(resp, dict):
        try:
            resp = msgspec.convert(resp, _Reply)
        except msgspec.ValidationError as exc:
            raise CallFailure("malformed", f"the response could not be parsed ({exc})", retryable=True) from None
    if not resp.choices:
        raise CallFailure("malformed", "the response has no choices", retryable=True)
    choice = resp.choices[0]
    content, reasoning = split_reasoning(choice.message or _Message())
    usage = resp.usage
    prompt_tokens = (usage.prompt_tokens or 0) if usage else 0
    completion_tokens = (usage.completion_tokens or 0) if usage else 0
    finish = choice.finish_reason or "stop"
    if finish == "length" and structured_reply and content.strip() and _unfinished_json(content):
        raise CallFailure("cut", f"the reply stopped at max_tokens={max_tokens or 'the server default'} "
                          "(finish_reason length) inside its JSON", cut=True)
    if not content.strip():
        raise CallFailure("empty", "the model returned no content", retryable=True)
    simulated = simulated or resp.system_fingerprint == SIMULATOR_FINGERPRINT
    return Completion(content.strip(), reasoning.strip(), resp.model or model, prompt_tokens,
                      completion_tokens, latency_ms, finish, simulated, mode)


class LLMClient:
    """The OpenAI SDK's client for one provider, its chat-completions call made at the floor of Python's cost.

    The SDK gives the client everything but the per-call machinery: its auth and default headers, its base
    URL, its certificates and its errors (a non-2xx reply becomes the SDK's own APIStatusError subclass, so
    every failure is classified as the SDK would raise it). The call itself is one POST on aiohttp (what the
    SDK's aiohttp transport sends on, without httpx2 in between) with the body encoded and the reply decoded
    by msgspec: through ``AsyncOpenAI.post`` a call cost ~1.4 ms of CPU more (its request building, header
    merges, the httpx2-to-aiohttp adapter and the httpx2 response), five times the raw aiohttp loop's whole cost
    (bench/bench_rows_per_core.py). The POST is made in this process's :class:`~dsetlog.llm.sender.Pool`, or,
    after :meth:`use_send_process`, by a send process on another core; what comes back is handled the same
    either way. The SDK's own retries are off: we retry, and log each attempt. Every
    call to an endpoint goes through its one :class:`RateController`; structured calls through the
    endpoint's mode in :data:`dsetlog.llm.structured.BOOK`.
    """

    def __init__(self, provider: Provider, *, timeout: float = 300.0, concurrency: int = 8,
                 limiter: RateController | None = None, temperature: float | None = None,
                 max_tokens: int | None = None, learned: Iterable[Any] = (),
                 on_learned: Callable[[StructuredModeLearned], None] | None = None) -> None:
        self.provider = provider
        self.endpoint = provider.endpoint
        self.limiter = limiter or controller_for(self.endpoint)
        self.temperature, self.max_tokens = temperature, max_tokens
        # told of every mode this client learns, to record it (the engine puts it in the log)
        self.on_learned = on_learned
        for mode in learned:  # what the log learned earlier (projections.endpoints.LearnedMode)
            structured.BOOK.learned(mode.endpoint, mode.model, mode.mode)
        # The SDK's own HTTP client sends nothing (our calls go by _post); given the shared SSL context it costs
        # nothing to make, where a default one builds its own (~18 ms of CPU for every client of every job).
        self._client = openai.AsyncOpenAI(api_key=provider.api_key, base_url=provider.base_url, max_retries=0,
                                          timeout=timeout, http_client=httpx2.AsyncClient(verify=ssl_context()))
        self._url = str(self._client.base_url.join("chat/completions"))
        self._timeout, self._connections = timeout, max(concurrency * 2, 16)
        self._pool: Pool | None = None
        self._sender: SendProcess | None = None

    def _open(self) -> Pool:
        """The connection pool, made in the running event loop on the first call; it sends the SDK's headers."""
        self._pool = Pool(self._url, self._headers(), timeout=self._timeout, connections=self._connections)
        return self._pool

    def _headers(self) -> dict[str, str]:
        sdk = self._client
        return {k: v for k, v in {**sdk.default_headers, **sdk.auth_headers}.items() if isinstance(v, str)}

    async def use_send_process(self) -> bool:
        """Send from now on through a send process on another core (:class:`~dsetlog.llm.sender.SendProcess`),
        once it is ready; True when it is. Calls already in flight finish where they are."""
        if self._sender is None:
            self._sender = SendProcess(self._url, self._headers(), timeout=self._timeout,
                                       connections=self._connections)
            return await self._sender.start()
        return self._sender.ready

    async def stop_send_process(self) -> None:
        """Send from this process again; the send process ends once the calls it holds are answered."""
        if self._sender is not None:
            await self._sender.retire()

    @property
    def sending_elsewhere(self) -> bool:
        """Calls go through a send process now."""
        return self._sender is not None and self._sender.ready

    async def _post(self, body: bytes, attempt: int) -> tuple[int, Mapping[str, str], bytes]:
        """POST the body; (status, headers, content) of a 2xx reply, else the SDK's own exception."""
        sender = self._sender
        try:
            if sender is not None and sender.ready:
                status, headers, content = await sender.send(body, attempt)
            else:
                status, headers, content = await (self._pool or self._open()).send(body, attempt)
        except SendFailed as exc:
            if exc.failure == "timeout":
                raise openai.APITimeoutError(request=self._request()) from exc
            raise openai.APIConnectionError(message=exc.message, request=self._request()) from exc
        if not 200 <= status < 300:
            reply = httpx2.Response(status, headers=list(headers.items()), content=content, request=self._request())
            raise self._client._make_status_error_from_response(reply)  # noqa: SLF001 - the SDK's status -> error map
        return status, headers, content

    def _request(self) -> httpx2.Request:
        """What the SDK's errors name as their request (built only when a call failed)."""
        return httpx2.Request("POST", self._url)

    def mode(self, model: str | None = None) -> str:
        """The structured-output mode calls to this endpoint and model are made in now."""
        return structured_mode(self.provider, model)

    async def complete(self, messages: list[dict[str, Any]], *, attempt: int = 1,
                       response_format: dict[str, Any] | None = None, schema: Structured | None = None,
                       temperature: float | None = None, max_tokens: int | None = None,
                       model: str | None = None) -> Completion:
        """One attempt. Raises CallFailure; empty content is a (retryable) failure.

        ``schema``: the reply must be this JSON; the request is shaped by the endpoint's structured mode.
        ``response_format`` is sent as given (for callers that know the server).
        """
        max_tokens = max_tokens if max_tokens is not None else self.max_tokens
        model = model or self.provider.model
        temperature = temperature if temperature is not None else self.temperature
        body, mode = request_body(self.provider, messages, response_format=response_format, schema=schema,
                                  temperature=temperature, max_tokens=max_tokens, model=model)
        estimate = estimate_tokens(body["messages"], max_tokens)
        await self.limiter.acquire(estimate)
        started = time.perf_counter()
        try:
            status, headers, content = await self._post(_encoder.encode(body), attempt)
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes raw
            raise self._failed(exc, mode, model) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        resp = self._decode(status, headers, content)
        usage = resp.usage
        actual = ((usage.prompt_tokens or 0) + (usage.completion_tokens or 0)) if usage else 0
        self.limiter.succeeded(headers, estimated_tokens=estimate, actual_tokens=actual)
        return completion_of(resp, model=model, mode=mode, structured_reply=schema is not None,
                             max_tokens=max_tokens, latency_ms=latency_ms, simulated=self.provider.simulated)

    def _decode(self, status: int, headers: Mapping[str, str], content: bytes) -> _Reply:
        if _is_html(headers, content[:64].decode("latin-1")):
            self.limiter.seen()
            raise CallFailure("not_openai", f"{self.endpoint}/chat/completions answered with an HTML page, not "
                              "JSON: this is not an OpenAI-compatible API. Check --base-url (it usually ends "
                              "in /v1)", status_code=status, fatal=True)
        try:
            resp = _reply_decoder.decode(content)
        except msgspec.DecodeError as exc:
            raise CallFailure("malformed", f"the response could not be parsed ({exc})", retryable=True) from None
        if not resp.choices:
            raise CallFailure("malformed", "the response has no choices", retryable=True)
        return resp

    def _failed(self, exc: Exception, mode: str, model: str) -> CallFailure:
        """Classify a failed call; a 429 slows the endpoint, a refused format lowers its mode."""
        failure = classify(exc, url=self.endpoint, reached=self.limiter.reached)
        if isinstance(exc, openai.APIStatusError):
            self.limiter.seen()
            if failure.reason == "rate_limited":
                self.limiter.rate_limited(exc.response.headers, failure.retry_after)
            elif (mode and failure.reason == "rejected" and not self.provider.structured_forced
                  and structured.names_format(failure.message, exc.body)):
                return self._lower_mode(failure, mode, model)
        return failure

    def _lower_mode(self, failure: CallFailure, sent: str, model: str) -> CallFailure:
        now, moved = structured.BOOK.step_down(self.endpoint, model, sent)
        if now is None:
            return failure  # nothing weaker to try: the item's request is bad as it is
        if moved and self.on_learned is not None:
            self.on_learned(StructuredModeLearned(endpoint=self.endpoint, model=model, mode=now, previous=sent,
                                                  reason=failure.message[:500]))
        return CallFailure("mode_lowered", f"{self.endpoint} refused structured mode {sent} ({failure.message}); "
                           f"calls use {now} from now on", status_code=failure.status_code, retryable=True,
                           free=True)

    async def close(self) -> None:
        if self._sender is not None:
            await self._sender.close()
        if self._pool is not None:
            await self._pool.close()
        await self._client.close()


T = TypeVar("T")


async def call_with_retries(
    call: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_attempt: Callable[[int], None] = lambda attempt: None,
    on_failure: Callable[[int, CallFailure, float | None], None] = lambda attempt, failure, delay: None,
    first_attempt: int = 1,
) -> T:
    """Run ``call(attempt)`` until it succeeds, fails for good, or retries run out (raising the last failure).

    ``on_failure`` gets the delay before the next attempt, or None when there is none. A ``free`` failure
    (a 429, a lowered structured mode) is tried again without spending a retry, and without a delay of
    its own: the endpoint's rate controller holds the next call until the server allows it.
    """
    attempt, spent, free = first_attempt, 0, 0
    while True:
        on_attempt(attempt)
        try:
            return await call(attempt)
        except CallFailure as failure:
            is_free = failure.free and free < MAX_RATE_LIMITED
            if failure.fatal or not failure.retryable or (not is_free and spent >= policy.max_retries):
                on_failure(attempt, failure, None)
                raise
            if is_free:
                free += 1
                delay = 0.0
            else:
                spent += 1
                delay = policy.delay(spent, failure)
            on_failure(attempt, failure, delay)
            if delay:
                await asyncio.sleep(delay)
            attempt += 1
