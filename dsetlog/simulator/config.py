"""How the simulator behaves: ``SimConfig``, its switches and their allowed values, and the config
that a mapping of options (``dset simulate``'s parsed flags) describes.

Every switch defaults to the plain behaviour (an OpenAI-like server that never fails).  Faults
(``rate_*``, ``hang_s``, ``retry_after_s``, ``max_faults_per_prompt``) are drawn by ``faults.fault_for``.

Quirks of real servers, each a ``SimConfig`` switch whose default is the plain behaviour above, so a
client can be tested offline against each:

* ``structured``: ``"openai"`` accepts json_schema and json_object.  ``"llamacpp"`` is llama-cpp-python's
  server (``llama_cpp.server``): its request model only knows ``{"type": "text" | "json_object",
  "schema": ...}``, so json_schema fails pydantic validation, which its error route turns into a 500
  (``faults.llamacpp_refusal`` has the exact body); json_object with a ``schema`` is grammar-constrained, so the
  answer is an instance of it; fields it has no slot for (``max_completion_tokens``, ``n``,
  ``stream_options``) are ignored.  ``"text"`` has no structured output: any response_format but text is
  a 400, and JSON comes only when the prompt shows a schema or an example, as plain content.
* ``reasoning_field``: where a reasoner's reasoning goes: ``reasoning_content`` (DeepSeek),
  ``reasoning`` (vLLM, OpenRouter), ``think`` (inline ``<think>...</think>`` before the content, as
  ollama and llama.cpp templates give it) or ``none`` (hidden; only usage counts it).
* ``rate_limit_rps``: a provider-style token bucket over all chat requests; an empty bucket answers 429
  at once with ``Retry-After`` / ``retry-after-ms``, and (``rate_limit_headers``) every chat answer carries
  OpenAI's ``x-ratelimit-{limit,remaining,reset}-requests``.  These 429s are not attempts.
* ``echo_key``: a wrong key's 401 echoes it (in full, masked, URL-encoded, and in ``x-echo-key``), as some
  providers do, so tests can prove the client redacts secrets.
* ``not_openai``: ``"html"`` answers every API path with a web server's default page, ``"404"`` with a
  plain-text ``404 page not found``: what a wrong base URL gives.
* ``context_tokens`` / ``max_body_bytes``: OpenAI's 400 ``context_length_exceeded``, and a 413.

OpenAI's Batch API (``/v1/files`` + ``/v1/batches``, ``batches.Batches``), whose progress is read off the
clock, never run in the background:

* ``batch_supported``: False answers the file and batch routes 404 as a server without them does
  (llama.cpp's server, vLLM's, ollama).
* ``batch_delay_s``: seconds from a batch's create to ``completed``: ``validating`` for its first tenth,
  ``in_progress`` (``request_counts`` climbing with the clock) to nine tenths, then ``finalizing``.
* ``batch_error_rate``: the share of lines answered 500 ``server_error`` (into the error file), drawn
  from ``(seed, custom_id)``.
* ``batch_expire``: the window closes at ``batch_delay_s`` with half the lines done: status ``expired``,
  those lines in the output file and the rest in the error file as ``batch_expired``, as OpenAI does.
* ``batch_max_requests`` / ``batch_max_bytes``: the input file limits (OpenAI's 50,000 lines and 200 MB);
  a file over either fails the batch's validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

FAULT_KINDS: tuple[str, ...] = ("429", "500", "hang", "malformed", "empty", "reset")
STRUCTURED_MODES: tuple[str, ...] = ("openai", "llamacpp", "text")
REASONING_FIELDS: tuple[str, ...] = ("reasoning_content", "reasoning", "think", "none")
NOT_OPENAI_MODES: tuple[str, ...] = ("", "html", "404")


class SimConfig(msgspec.Struct, kw_only=True):
    """How the simulator behaves.  Rates are probabilities per (prompt, attempt), walked in the
    order of ``FAULT_KINDS``; if they sum past 1 the later kinds get what is left."""

    seed: int = 0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_hang: float = 0.0
    rate_malformed: float = 0.0
    rate_empty: float = 0.0
    rate_reset: float = 0.0
    retry_after_s: float = 1.0
    hang_s: float = 30.0
    max_faults_per_prompt: int = 2
    require_api_key: str | None = None
    quota_exhausted: bool = False
    models: tuple[str, ...] = ("sim-chat", "deepseek-chat", "deepseek-reasoner")
    request_log: int = 256  # chat request bodies kept for requests(); 0 keeps none
    # Quirks of real servers (see the module docstring); the defaults are the plain behaviour.
    structured: str = "openai"  # one of STRUCTURED_MODES
    reasoning_field: str = "reasoning_content"  # one of REASONING_FIELDS
    rate_limit_rps: float = 0.0  # token bucket refill rate; 0 = no rate limit
    rate_limit_burst: float = 0.0  # bucket capacity; 0 = max(1, rate_limit_rps), one second's worth
    rate_limit_headers: bool = True  # x-ratelimit-* on every chat answer while rate limited
    echo_key: bool = False  # a wrong key's 401 echoes it (needs require_api_key)
    not_openai: str = ""  # "", "html" or "404"
    context_tokens: int = 0  # prompt + max_tokens above this is a 400; 0 = unlimited
    max_body_bytes: int = 0  # a larger chat request body is a 413; 0 = unlimited
    # OpenAI's Batch API (see the module docstring)
    batch_supported: bool = True  # False: /files and /batches answer 404
    batch_delay_s: float = 0.0  # create -> completed
    batch_error_rate: float = 0.0  # share of lines answered 500 into the error file
    batch_expire: bool = False  # the window closes at batch_delay_s with half the lines done
    batch_max_requests: int = 50_000  # lines per input file
    batch_max_bytes: int = 200 * 1024 * 1024  # bytes per input file

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            rate = getattr(self, f"rate_{kind}")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate_{kind} must be between 0 and 1, got {rate}")
        for name in ("latency_ms", "jitter_ms", "retry_after_s", "hang_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_faults_per_prompt < 0:
            raise ValueError("max_faults_per_prompt must not be negative")
        if self.request_log < 0:
            raise ValueError("request_log must not be negative")
        for name, allowed in (("structured", STRUCTURED_MODES), ("reasoning_field", REASONING_FIELDS),
                              ("not_openai", NOT_OPENAI_MODES)):  # fmt: skip
            if getattr(self, name) not in allowed:
                choices = ", ".join(map(repr, allowed))
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if not 0.0 <= self.rate_limit_rps < float("inf"):
            raise ValueError("rate_limit_rps must be a finite number, 0 or more")
        if self.rate_limit_burst != 0.0 and not 1.0 <= self.rate_limit_burst < float("inf"):
            # A bucket smaller than one token would never let a request through.
            raise ValueError("rate_limit_burst must be 0 (one second's worth) or at least 1")
        if self.rate_limit_burst and not self.rate_limit_rps:
            raise ValueError("rate_limit_burst needs rate_limit_rps")
        if self.echo_key and self.require_api_key is None:
            raise ValueError("echo_key needs require_api_key (only a wrong key is echoed)")
        for name in ("context_tokens", "max_body_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (0 means unlimited)")
        if not 0.0 <= self.batch_delay_s < float("inf"):
            raise ValueError("batch_delay_s must be a finite number, 0 or more")
        if not 0.0 <= self.batch_error_rate <= 1.0:
            raise ValueError(f"batch_error_rate must be between 0 and 1, got {self.batch_error_rate}")
        for name in ("batch_max_requests", "batch_max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    def rates(self) -> tuple[tuple[str, float], ...]:
        """(kind, rate) in the order faults are drawn."""
        return (
            ("429", self.rate_429),
            ("500", self.rate_500),
            ("hang", self.rate_hang),
            ("malformed", self.rate_malformed),
            ("empty", self.rate_empty),
            ("reset", self.rate_reset),
        )


def config_from_options(options: Mapping[str, Any]) -> SimConfig:
    """The SimConfig that the options named like its fields describe (others are ignored; a field not
    given keeps its default); raises ValueError for values it refuses."""
    return SimConfig(**{name: options[name] for name in SimConfig.__struct_fields__ if name in options})
