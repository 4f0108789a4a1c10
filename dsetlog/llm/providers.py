"""LLM provider profiles: where to send a call, with which model and key.

Every profile reads ``<PROFILE>_API_KEY``, ``<PROFILE>_BASE_URL`` and
``<PROFILE>_MODEL`` from the environment (``.env`` included), so any profile
can point at any OpenAI-compatible server. ``DSET_API_KEY`` is the generic key
for ``--base-url``. The key lives only in memory: it is never part of a repr,
an event or an output.

With the built-in simulator (``--simulate``) every profile keeps its name and its model
(``gemini`` is gemini-2.5-flash, or ``GEMINI_MODEL``), so entries and costs say what was
asked for, while the simulator answers: the provider is ``simulated``, its base URL the
simulator's, and no key is read or sent. Costs are those of the profile's model, labelled
as a simulated run's estimate by whoever shows them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import load_dotenv

from dsetlog import redaction
from dsetlog.errors import UsageError
from dsetlog.llm import structured


class ProviderError(UsageError, ValueError):
    """A provider cannot be used as configured; the message says what to set."""


# OpenAI's Batch API limits per input file, and its price: half the online one.
BATCH_MAX_REQUESTS, BATCH_MAX_BYTES, BATCH_DISCOUNT = 50_000, 200_000_000, 0.5


@dataclass(frozen=True)
class BatchLimits:
    """What a profile's Batch API takes. ``supported``: True, False, or None (not known: ask the server,
    as for any profile pointed at another base URL). ``discount``: the batch price's share of the online one."""

    supported: bool | None = None
    max_requests: int = BATCH_MAX_REQUESTS
    max_bytes: int = BATCH_MAX_BYTES
    discount: float = BATCH_DISCOUNT


@dataclass(frozen=True)
class Profile:
    name: str
    base_url: str
    model: str
    needs_key: bool = True
    # the structured-output mode calls start in (dsetlog.llm.structured); an endpoint that refuses it moves down
    structured: str = structured.JSON_SCHEMA
    batch: BatchLimits = BatchLimits()


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        # DeepSeek's, ollama's and vLLM's servers have no /v1/batches; gemini's and grok's OpenAI-compatible
        # endpoints are not known to: their servers are asked
        Profile("deepseek", "https://api.deepseek.com", "deepseek-reasoner", structured=structured.JSON_OBJECT,
                batch=BatchLimits(supported=False)),
        Profile("openai", "https://api.openai.com/v1", "gpt-4o-mini", batch=BatchLimits(supported=True)),
        Profile("gemini", "https://generativelanguage.googleapis.com/v1beta/openai/", "gemini-2.5-flash"),
        Profile("grok", "https://api.x.ai/v1", "grok-3-mini"),
        Profile("ollama", "http://127.0.0.1:11434/v1", "llama3.1", needs_key=False, batch=BatchLimits(supported=False)),
        Profile("vllm", "http://127.0.0.1:8000/v1", "default", needs_key=False, batch=BatchLimits(supported=False)),
        # The simulator's URL is only known once it listens on a free port.
        Profile("simulated", "", "deepseek-reasoner", needs_key=False),
    )
}

# USD per million (input, output) tokens, for the cost *estimate* shown to users.
PRICES: dict[str, tuple[float, float]] = {
    "deepseek-chat": (0.27, 1.10),
    "deepseek-reasoner": (0.55, 2.19),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-pro": (1.25, 10.00),
    "grok-3-mini": (0.30, 0.50),
}


@dataclass(frozen=True)
class Provider:
    """A resolved endpoint. ``api_key`` is excluded from repr so it cannot leak into logs by accident."""

    profile: str
    base_url: str
    model: str
    api_key: str = field(repr=False, default="")
    simulated: bool = False
    structured_forced: str | None = None  # <PROFILE>_STRUCTURED: this mode and no other
    imitates: str = ""  # simulated: the profile asked for ("gemini"), whose model it stands in for

    @property
    def named(self) -> str:
        """The profile asked for: ``imitates`` when simulated, else the profile."""
        return self.imitates or self.profile

    @property
    def endpoint(self) -> str:
        """The base URL as it may be shown and recorded (a key in it redacted): one rate controller and one
        structured-output mode per endpoint."""
        return redaction.redact(self.base_url.rstrip("/"))

    @property
    def structured_default(self) -> str:
        # the server's own: a simulator standing in for deepseek still takes every mode the simulator does
        return PROFILES[self.profile].structured

    def price(self) -> tuple[float, float] | None:
        return PRICES.get(self.model)

    @property
    def batch(self) -> BatchLimits:
        """The Batch API of this endpoint: the profile's, when it is the profile's own server; else not known
        (a profile pointed at another server, the simulator: the server is asked)."""
        spec = PROFILES[self.profile]
        if self.simulated or self.base_url.rstrip("/") != spec.base_url.rstrip("/"):
            return BatchLimits(None, spec.batch.max_requests, spec.batch.max_bytes, spec.batch.discount)
        return spec.batch

    def describe(self) -> str:
        label = " (simulated answers, not a real model)" if self.simulated else ""
        return f"{self.named}:{self.model} at {self.base_url}{label}"


def load_env(path: str | os.PathLike[str] | None = None) -> None:
    """Load ``.env`` (from the working directory up, or ``path``) without overriding real variables."""
    if path is not None:
        load_dotenv(Path(path), override=False)
    else:
        load_dotenv(Path.cwd() / ".env", override=False)
    redaction.register_env()  # every key and token the environment holds, used or not, is never shown


def resolve(
    profile: str = "deepseek",
    *,
    model: str | None = None,
    base_url: str | None = None,
    env: Mapping[str, str] | None = None,
    simulator_url: str | None = None,
) -> Provider:
    """Explicit arguments win over ``<PROFILE>_*`` variables, which win over the profile's defaults.

    ``simulator_url``: the simulator answers in the profile's stead, with the profile's model (see above)."""
    env = os.environ if env is None else env
    if profile not in PROFILES:
        raise ProviderError(f"unknown provider profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    if simulator_url is not None:
        return _simulating(profile, model=model, env=env, simulator_url=simulator_url)
    spec = PROFILES[profile]
    prefix = profile.upper()
    url = base_url or env.get(f"{prefix}_BASE_URL") or spec.base_url
    chosen_model = model or env.get(f"{prefix}_MODEL") or spec.model
    try:
        forced = structured.forced_mode(profile, env)
    except structured.StructuredModeError as exc:
        raise ProviderError(f"{prefix}_STRUCTURED: {exc}") from None
    if profile == "simulated":
        return Provider(profile, url, chosen_model, api_key="simulated", simulated=True, structured_forced=forced)
    key = env.get(f"{prefix}_API_KEY") or env.get("DSET_API_KEY") or ""
    if base_url and env.get("DSET_API_KEY"):
        key = env["DSET_API_KEY"]  # a generic --base-url takes the generic key first
    if not key and spec.needs_key and not base_url:
        raise ProviderError(
            f"no API key for the {profile} profile: set {prefix}_API_KEY in .env or the environment "
            f"(or DSET_API_KEY), or run with --simulate to use the built-in simulator"
        )
    redaction.register(key)
    return Provider(profile, url, chosen_model, api_key=key or "none", structured_forced=forced)


def _simulating(profile: str, *, model: str | None, env: Mapping[str, str], simulator_url: str) -> Provider:
    """The simulator standing in for ``profile``: the profile's model (never its URL or key), the simulator's
    structured-output setting (``SIMULATED_STRUCTURED``)."""
    try:
        forced = structured.forced_mode("simulated", env)
    except structured.StructuredModeError as exc:
        raise ProviderError(f"SIMULATED_STRUCTURED: {exc}") from None
    chosen = model or env.get(f"{profile.upper()}_MODEL") or PROFILES[profile].model
    imitates = "" if profile == "simulated" else profile
    return Provider("simulated", simulator_url, chosen, api_key="simulated", simulated=True, structured_forced=forced,
                    imitates=imitates)


# Model families and the profile that serves them: a bare model name of a family goes to its provider.
_FAMILIES = (("gemini-", "gemini"), ("gpt-", "openai"), ("o1", "openai"), ("o3", "openai"), ("o4", "openai"),
             ("grok-", "grok"), ("deepseek-", "deepseek"))


def resolve_spec(spec: str, *, default_profile: str = "deepseek", env: Mapping[str, str] | None = None,
                 simulator_url: str | None = None) -> Provider:
    """A model field of the API: ``"gemini"`` (a profile), ``"gemini:gemini-2.5-pro"``, or a bare model name.

    A bare model name goes to the profile of its family (the guide's ``"gemini-2.5-flash"`` is gemini's, a
    ``gpt-*`` or ``o*`` model openai's), any other to ``default_profile``."""
    name, _, model = spec.partition(":")
    if name in PROFILES:
        return resolve(name, model=model or None, env=env, simulator_url=simulator_url)
    family = next((profile for prefix, profile in _FAMILIES if spec.startswith(prefix)), default_profile)
    return resolve(family, model=spec, env=env, simulator_url=simulator_url)
