"""Calls to an OpenAI-compatible chat endpoint: one attempt, its classification, and the retry schedule.

Only retryable failures are retried (429, 5xx, timeouts, connection errors,
malformed or empty output); auth and quota errors are fatal for the whole run
because every other call would fail the same way and may cost money.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
import openai
from openai.types.chat import ChatCompletion

from dsetlog.providers import Provider

SIMULATOR_FINGERPRINT = "dset-simulator"
_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


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


class CallFailure(Exception):
    """One failed attempt, classified.

    ``retryable``: another attempt may succeed. ``fatal``: stop the whole run
    (auth, quota, unknown model), the message says what to fix.
    """

    def __init__(self, kind: str, message: str, *, status_code: int | None = None, retryable: bool = False,
                 fatal: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.status_code = kind, message, status_code
        self.retryable, self.fatal, self.retry_after = retryable, fatal, retry_after

    def __str__(self) -> str:
        code = f" (HTTP {self.status_code})" if self.status_code else ""
        return f"{self.kind}{code}: {self.message}"


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue  # an HTTP date: rare for APIs, fall back to our own backoff
    return None


def _error_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(exc.message)[:300]


def classify(exc: BaseException) -> CallFailure:
    """Turn an SDK exception into a CallFailure that says whether to retry or stop."""
    if isinstance(exc, CallFailure):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return CallFailure("timeout", "the call timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return CallFailure("connection", f"connection failed: {exc.__cause__ or exc}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status, text = exc.status_code, _error_text(exc)
        code = ""
        if isinstance(exc.body, dict):
            err = exc.body.get("error", exc.body)
            code = str(err.get("code") or err.get("type") or "") if isinstance(err, dict) else ""
        if status in (401, 403):
            return CallFailure("auth", f"the API refused the key ({text}); check the API key variable for this "
                               "profile in .env", status_code=status, fatal=True)
        if status == 402 or code == "insufficient_quota":
            return CallFailure("quota", f"the account is out of credit or quota ({text}); top it up or use another "
                               "key, then run again to continue", status_code=status, fatal=True)
        if status == 404:
            return CallFailure("not_found", f"{text}; check --model and --base-url", status_code=status, fatal=True)
        if status == 429 or status in (408, 409) or status >= 500:
            kind = "rate_limited" if status == 429 else "server_error"
            return CallFailure(kind, text, status_code=status, retryable=True,
                               retry_after=_retry_after(exc.response.headers))
        return CallFailure("rejected", text, status_code=status)  # 400/422: this item's request is bad
    if isinstance(exc, (openai.APIResponseValidationError, ValueError, httpx2.DecodingError)):
        return CallFailure("malformed", f"the response could not be parsed ({type(exc).__name__})", retryable=True)
    if isinstance(exc, httpx2.TransportError):
        return CallFailure("connection", f"connection failed: {exc}", retryable=True)
    return CallFailure("unexpected", f"{type(exc).__name__}: {exc}", retryable=True)


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


class RateLimiter:
    """Requests per minute and tokens per minute over a sliding 60 s window (0 means unlimited)."""

    def __init__(self, *, rpm: int = 0, tpm: int = 0) -> None:
        self.rpm, self.tpm = rpm, tpm
        self._calls: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_sum = 0
        self._lock = asyncio.Lock()

    def _expire(self, now: float) -> None:
        while self._calls and now - self._calls[0] >= 60:
            self._calls.popleft()
        while self._tokens and now - self._tokens[0][0] >= 60:
            self._token_sum -= self._tokens.popleft()[1]

    async def acquire(self, estimated_tokens: int) -> None:
        if not self.rpm and not self.tpm:
            return
        async with self._lock:  # one waiter at a time keeps the order fair
            while True:
                now = time.monotonic()
                self._expire(now)
                waits = []
                if self.rpm and len(self._calls) >= self.rpm:
                    waits.append(60 - (now - self._calls[0]))
                if self.tpm and self._tokens and self._token_sum + estimated_tokens > self.tpm:
                    waits.append(60 - (now - self._tokens[0][0]))
                if not waits:
                    break
                await asyncio.sleep(max(0.01, min(waits)))
            self._calls.append(now)
            if self.tpm:
                self._tokens.append((now, estimated_tokens))
                self._token_sum += estimated_tokens

    def record(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct the window with a call's real usage once it is known."""
        if self.tpm and actual_tokens != estimated_tokens:
            self._tokens.append((time.monotonic(), actual_tokens - estimated_tokens))
            self._token_sum += actual_tokens - estimated_tokens


def estimate_tokens(messages: list[dict[str, Any]], max_tokens: int | None) -> int:
    chars = sum(len(str(m.get("content", ""))) for m in messages)
    return chars // 4 + 1 + (max_tokens or 512)


class LLMClient:
    """An AsyncOpenAI client for one provider, with the SDK's own retries off: we retry, and log each attempt.

    It runs on the SDK's aiohttp transport: against the simulator at 100 ms, `dset generate` made
    321 rows/s on it where httpx2's pool (even split into pools of 8) gave 253 at concurrency 64, and
    httpx2's single pool spent ~5 ms of CPU per call at concurrency 256 walking its connections
    (bench/bench_generate.py).
    """

    def __init__(self, provider: Provider, *, timeout: float = 300.0, concurrency: int = 8,
                 limiter: RateLimiter | None = None, temperature: float | None = None,
                 max_tokens: int | None = None) -> None:
        self.provider = provider
        self.limiter = limiter or RateLimiter()
        self.temperature, self.max_tokens = temperature, max_tokens
        self._client = openai.AsyncOpenAI(
            api_key=provider.api_key, base_url=provider.base_url, max_retries=0, timeout=timeout,
            http_client=openai.DefaultAioHttpClient(
                limits=httpx2.Limits(max_connections=max(concurrency * 2, 16),
                                     max_keepalive_connections=max(concurrency, 16)),
                timeout=timeout,
            ),
        )

    async def complete(self, messages: list[dict[str, Any]], *, attempt: int = 1,
                       response_format: dict[str, Any] | None = None, temperature: float | None = None,
                       max_tokens: int | None = None, model: str | None = None) -> Completion:
        """One attempt. Raises CallFailure; empty content is a (retryable) failure."""
        max_tokens = max_tokens if max_tokens is not None else self.max_tokens
        temperature = temperature if temperature is not None else self.temperature
        estimate = estimate_tokens(messages, max_tokens)
        await self.limiter.acquire(estimate)
        kwargs: dict[str, Any] = {}
        if response_format is not None:
            kwargs["response_format"] = response_format
        if temperature is not None:
            kwargs["temperature"] = temperature
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        # The request chat.completions.create() would send, byte for byte, without its parameter
        # transform: that walks every one of create()'s ~45 parameters through typing introspection, ~1 ms
        # of CPU per call, and has nothing to convert in plain JSON messages.
        body: dict[str, Any] = {"model": model or self.provider.model, "messages": messages}
        for key in ("max_tokens", "response_format", "temperature"):  # create()'s order
            if key in kwargs:
                body[key] = kwargs[key]
        # The simulator decides faults per (prompt, attempt); real APIs ignore the header.
        options: openai.RequestOptions = {"headers": {"X-Dset-Attempt": str(attempt)},
                                          "security": {"bearer_auth": True}}
        started = time.perf_counter()
        try:
            resp = await self._client.post("/chat/completions", body=body, cast_to=ChatCompletion, options=options)
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes raw
            raise classify(exc) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        if not getattr(resp, "choices", None):
            raise CallFailure("malformed", "the response has no choices", retryable=True)
        choice = resp.choices[0]
        message = choice.message
        content = (message.content or "") if message is not None else ""
        reasoning = str(getattr(message, "reasoning_content", None) or "")
        think = _THINK.match(content)
        if think:  # models served by ollama/vllm put their reasoning inline
            reasoning = reasoning or think.group(1).strip()
            content = content[think.end():]
        usage = resp.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        self.limiter.record(estimate, prompt_tokens + completion_tokens)
        if not content.strip():
            raise CallFailure("empty", "the model returned no content", retryable=True)
        simulated = self.provider.simulated or getattr(resp, "system_fingerprint", None) == SIMULATOR_FINGERPRINT
        return Completion(content.strip(), reasoning.strip(), resp.model or self.provider.model, prompt_tokens,
                          completion_tokens, latency_ms, choice.finish_reason or "stop", simulated)

    async def close(self) -> None:
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

    ``on_failure`` gets the delay before the next attempt, or None when there is none.
    """
    attempt = first_attempt
    last = first_attempt + policy.max_retries
    while True:
        on_attempt(attempt)
        try:
            return await call(attempt)
        except CallFailure as failure:
            if failure.fatal or not failure.retryable or attempt >= last:
                on_failure(attempt, failure, None)
                raise
            delay = policy.delay(attempt - first_attempt + 1, failure)
            on_failure(attempt, failure, delay)
            await asyncio.sleep(delay)
            attempt += 1
