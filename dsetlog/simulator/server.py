"""Built-in OpenAI-compatible chat-completions server on loopback, for runs without an API key.

It is the provider behind ``--simulate``, the test fixture, and ``dset simulate``.

* Answers are deterministic functions of ``(seed, prompt key)`` and are built from sentences and words
  of the prompt, so a later groundedness check over a source chunk finds support in them.
* Faults (429, 500, hang, malformed JSON, empty content, connection reset) are a pure function of
  ``(seed, prompt key, attempt)``; attempts ``>= max_faults_per_prompt`` never fault, so a client
  that retries enough always gets through.
* Models whose name contains ``sloppy`` answer JSON requests (json_schema or json_object) with the
  JSON wrapped in chatty prose, as weak models do, so the reply does not parse as it stands: the way to
  exercise a parsing (repair) model.
* ``stats()["max_in_flight"]`` is the most chat requests it was serving at once (from the request read to
  its answer sent); ``requests(last=N)`` / ``GET /_sim/requests?last=N`` return the decoded JSON bodies of
  the last chat requests (a bounded log of ``SimConfig.request_log`` bodies), to see what a client sent.
* Everything it says is labelled: ``"system_fingerprint": "dset-simulator"`` in bodies and an
  ``X-Dset-Simulated: 1`` header on every response.
* ``max_tokens`` / ``max_completion_tokens`` are honoured: a longer answer is cut to fit (by ``_tokens``)
  and ends with ``finish_reason: "length"``; a cut JSON answer is unfinished JSON, as from real servers.

Quirks of real servers, each a ``SimConfig`` switch whose default is the plain behaviour above, so a
client can be tested offline against each:

* ``structured``: ``"openai"`` accepts json_schema and json_object.  ``"llamacpp"`` is llama-cpp-python's
  server (``llama_cpp.server``): its request model only knows ``{"type": "text" | "json_object",
  "schema": ...}``, so json_schema fails pydantic validation, which its error route turns into a 500
  (``_llamacpp_refusal`` has the exact body); json_object with a ``schema`` is grammar-constrained, so the
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

Attempt numbering: the attempt index is 0-based internally.  By default it is the number of
chat-completion requests this server has already seen for the same prompt key (model + messages).
A client may state it instead with the header ``X-Dset-Attempt: N`` where **N is 1-based** (the first
try sends 1, the first retry 2, ...); the server uses ``N - 1``.  So with the default
``max_faults_per_prompt=2``, tries 1 and 2 may fault and try 3 never does.

The HTTP layer is a hand-written HTTP/1.1 server on a bare ``asyncio.Protocol`` (keep-alive,
pipelining, Content-Length bodies): a web framework would cost more per request than all the answer
building does, and delayed answers are scheduled with ``loop.call_later`` instead of a task each.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import math
import random
import re
import signal
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

_log = logging.getLogger(__name__)

__all__ = ["SimConfig", "Simulator", "fault_for", "prompt_key", "serve_forever"]

FINGERPRINT = "dset-simulator"
FAULT_KINDS: tuple[str, ...] = ("429", "500", "hang", "malformed", "empty", "reset")
_STAT_FAULTS: tuple[str, ...] = (*FAULT_KINDS, "401", "402")
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


# --------------------------------------------------------------------------------------------------
# Determinism helpers


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


def _delay_s(config: SimConfig, key: str, attempt: int) -> float:
    if config.latency_ms <= 0 and config.jitter_ms <= 0:
        return 0.0
    jitter = config.jitter_ms * (2.0 * _unit(config.seed, key, attempt, "jitter") - 1.0)
    return max(0.0, config.latency_ms + jitter) / 1000.0


def _tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


# --------------------------------------------------------------------------------------------------
# Text: turning a prompt into plausible, grounded answer material

_FENCE_RE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n?(.*?)```", re.S)
_SCHEMA_LABEL_RE = re.compile(r"json[ _-]?schema\s*:", re.I)
_SENT_SPLIT_RE = re.compile(r"(?<=[.!?])\s+")
_BULLET_RE = re.compile(r"^\s*(?:[-*•>#]+|\d{1,3}[.)])\s*")
_WORD_RE = re.compile(r"[^\W\d_][\w'-]*[^\W_]")
_SALIENT_MIN = 4
# Sentences that instruct the model rather than inform it; they make poor answer material.
_INSTRUCTION_STARTS = frozenset(
    "generate create write return respond answer use provide produce give list output make do don't "
    "read based given each only format include avoid ensure keep consider here below follow please".split()
)
_INSTRUCTION_WORDS_RE = re.compile(r"\b(?:json|schema|you|your)\b")


@functools.lru_cache(maxsize=8192)
def _is_instruction(sentence: str) -> bool:
    low = sentence.lower()
    first = low.split(None, 1)[0].strip(",:;")
    return (
        first in _INSTRUCTION_STARTS
        or low.startswith("the following")
        or bool(_INSTRUCTION_WORDS_RE.search(low))
    )


_COUNT_RE = re.compile(
    r"\b(\d{1,3}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty)\s+"
    r"(?:[\w/&-]+\s+){0,3}?(?:questions?|items?|pairs?|examples?|entries|entry|q&as?|qas?|q/as?|"
    r"samples?|records?|rows?)\b",
    re.I,
)
_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
}  # fmt: skip
_STOPWORDS = frozenset(
    """
    about above after again against also although among another any anything are aren't around
    because been before being below between both but can cannot could did does doing done down
    during each either else enough even ever every few find first following for from further
    generate given gives had has have having her here hers herself him himself his how however
    into its itself just know like made make many may might more most much must near need neither
    never next none nor not nothing now off often once one only onto other others otherwise our ours
    ourselves out over own please provide question questions answer answers rather really same
    several shall she should since some something such than that the their theirs them themselves
    then there therefore these they thing things this those though through thus too toward under
    until upon very was wasn't were what whatever when where whether which while who whom whose why
    will with within without would yet you your yours yourself text based using used uses use
    following write return respond json schema object field fields format output simulated
    """.split()
)

_FILLER_TEMPLATES: tuple[str, ...] = (
    "The main point concerns {a}, and it is best understood together with {b}.",
    "A useful way to approach {a} is to start from {b} and work outward.",
    "Most accounts describe {a} in relation to {b}.",
    "The key facts are about {a}; the details of {b} follow from them.",
    "Discussions of {a} usually also mention {b}.",
    "It helps to separate what is known about {a} from what is assumed about {b}.",
)
_QUESTION_TEMPLATES: tuple[str, ...] = (
    "What does the text say about {k}?",
    "How is {k} described in the text?",
    "What role does {k} play according to the text?",
    "Why does the text mention {k}?",
    "What is stated about {k}?",
)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def _message_texts(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(str(m.get("role", "")), _content_text(m.get("content"))) for m in messages]


def _strip_json_bits(text: str) -> str:
    """Drop fenced blocks and labelled schemas: they are format instructions, not content."""
    text = _FENCE_RE.sub("\n", text)
    match = _SCHEMA_LABEL_RE.search(text)
    while match:
        rest = text[match.end() :].lstrip()
        try:
            _, end = json.JSONDecoder().raw_decode(rest)
        except ValueError:
            text = text[: match.start()]
            break
        text = text[: match.start()] + "\n" + rest[end:]
        match = _SCHEMA_LABEL_RE.search(text)
    return text


def _sentences(text: str) -> tuple[list[str], list[str]]:
    """Split text into (statements, questions), keeping only sentence-like pieces."""
    statements: list[str] = []
    questions: list[str] = []
    for line in text.splitlines():
        if line.strip():
            # Huge single lines are not worth keeping in the cache.
            s, q = _line_sentences(line) if len(line) < 4096 else _line_sentences.__wrapped__(line)
            statements.extend(s)
            questions.extend(q)
    return statements, questions


@functools.lru_cache(maxsize=8192)
def _line_sentences(line: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    # Cached per line because the same source chunk comes back in many prompts (slots, retries).
    statements: list[str] = []
    questions: list[str] = []
    line = _BULLET_RE.sub("", line).strip()
    if line:
        for piece in _SENT_SPLIT_RE.split(line):
            piece = piece.strip().strip('"').strip()
            words = piece.split()
            if len(words) < 4:
                continue
            if len(words) > 60:
                piece = " ".join(words[:60]).rstrip(",;:") + "."
            if piece.endswith("?"):
                questions.append(piece)
            else:
                if piece[-1] not in ".!":
                    piece += "."
                statements.append(piece)
    return tuple(statements), tuple(questions)


def _keywords(text: str) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for word in _WORD_RE.findall(text):
        low = word.lower()
        if len(low) < _SALIENT_MIN or low in _STOPWORDS or low in seen:
            continue
        seen.add(low)
        out.append(word)
    return out


def _salient(sentence: str) -> list[str]:
    """Content words of a sentence, most telling (longest) first."""
    words = _keywords(sentence)
    return sorted(words, key=lambda w: (-len(w), words.index(w)))


class _Source:
    """Answer material drawn from one request's messages, with a seeded RNG."""

    def __init__(self, messages: list[dict[str, Any]], rng: random.Random) -> None:
        self.rng = rng
        texts = _message_texts(messages)
        users = [t for role, t in texts if role == "user"]
        self.user_text = users[-1] if users else (texts[-1][1] if texts else "")
        cleaned = _strip_json_bits(self.user_text)
        statements, self.questions = _sentences(cleaned)
        informative = [s for s in statements if not _is_instruction(s)]
        statements = informative or statements
        self._texts = texts
        self._cleaned = cleaned
        self._keywords: list[str] | None = None
        if not statements:
            # The last user message is only a question or an instruction: fall back on the rest
            # of the conversation (a system prompt may carry the source text).
            more, _ = _sentences(self._others())
            statements = [s for s in more if not _is_instruction(s)]
        self.grounded = bool(statements)
        if not statements:
            statements = self._filler(6)
        self.statements = statements
        # Anchors count from 0; the seeded start offset makes different prompts begin elsewhere.
        self._start = rng.randrange(len(statements))
        self._next_anchor = 0
        self.used: set[str] = set()

    def _others(self) -> str:
        return "\n".join(_strip_json_bits(t) for _, t in self._texts if t is not self.user_text)

    @property
    def keywords(self) -> list[str]:
        # Computed on demand: tokenising the whole prompt is the costliest step and plain answers
        # built from statements never need it.
        if self._keywords is None:
            self._keywords = _keywords(self._cleaned) or _keywords(self._others())
        return self._keywords

    def _filler(self, n: int) -> list[str]:
        kws = self.keywords or ["the topic", "its context"]
        out = []
        for i in range(n):
            a = kws[i % len(kws)]
            b = kws[(i + 1) % len(kws)] if len(kws) > 1 else "its context"
            out.append(
                _FILLER_TEMPLATES[(i + self.rng.randrange(len(_FILLER_TEMPLATES))) % 6].format(a=a, b=b)
            )
        return out

    def next_anchor(self) -> int:
        self._next_anchor += 1
        return self._next_anchor - 1

    def statement(self, index: int) -> str:
        n = len(self.statements)
        base = self.statements[(self._start + index) % n]
        wrap = (index // n) % n if n > 1 else 0
        if wrap:
            # Past the end of the material: pair statements so repeated draws still differ.
            return f"{base} {self.statements[(self._start + index + wrap) % n]}"
        return base

    def keyword(self, index: int) -> str:
        if not self.keywords:
            return "topic"
        return self.keywords[index % len(self.keywords)]

    def plain_answer(self) -> str:
        n = len(self.statements)
        k = min(n, self.rng.choice((2, 3)))
        start = self.rng.randrange(n)
        picked = [self.statements[(start + i) % n] for i in range(k)]
        return "Simulated answer: " + " ".join(picked)

    def reasoning(self) -> str:
        topic = ", ".join(self.keywords[:3]) or "the request"
        lead = f"The request is about {topic}."
        if self.grounded:
            lead += f" The most relevant statement is: {self.statement(0)}"
        return f"{lead} I will answer briefly and stay close to the given text. (simulated reasoning)"

    def requested_count(self) -> int | None:
        match = _COUNT_RE.search(_strip_json_bits(self.user_text))
        if not match:
            return None
        raw = match.group(1).lower()
        value = _NUMBER_WORDS.get(raw) or int(raw)
        return value if 0 < value <= 200 else None


# --------------------------------------------------------------------------------------------------
# JSON instances of a schema


def _name_tokens(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [t for t in re.split(r"[\s_\-.]+", spaced.lower()) if t]


_WORD_ROLES = ("category", "categories", "label", "topic", "tag", "class", "type", "kind", "keyword",
               "subject", "domain", "genre", "intent", "sentiment", "entity")  # fmt: skip
_TITLE_ROLES = ("title", "name", "heading", "headline")
_SENTENCE_ROLES = ("answer", "response", "explanation", "reason", "rationale", "summary", "description",
                   "text", "content", "context", "evidence", "quote", "passage", "output", "body", "detail",
                   "justification", "feedback", "comment", "note", "statement", "fact", "claim",
                   "completion", "solution", "reasoning", "thought")  # fmt: skip
_QUESTION_ROLES = ("question", "query", "prompt", "instruction", "ask", "q")


def _role(name: str) -> str:
    tokens = _name_tokens(name)
    if not tokens:
        return "sentence"
    last = tokens[-1]
    if last in ("id", "uid", "uuid", "key"):
        return "id"
    if last.startswith(_WORD_ROLES):
        return "word"
    if last.startswith(_TITLE_ROLES):
        return "title"
    if last.startswith(("difficulty", "level", "complexity")):
        return "difficulty"
    if last.startswith(("lang", "locale")):
        return "language"
    if last.startswith(("url", "uri", "link", "href")):
        return "url"
    if last.startswith("email"):
        return "email"
    if any(t.startswith(_QUESTION_ROLES) and (len(t) > 1 or t == "q") for t in tokens):
        return "question"
    if last.startswith(("answer", "response", "completion", "solution")):
        return "answer"
    return "sentence"


class _SchemaGen:
    """Builds a JSON value that validates against a (subset of) JSON Schema, from prompt material."""

    max_depth = 6
    hard_depth = 48  # only reached by schemas whose required fields recurse forever

    def __init__(self, root: Any, source: _Source) -> None:
        self.root = root
        self.src = source
        self.rng = source.rng
        self.requested = source.requested_count()
        self._anchor: int | None = None
        self._offset = 0
        self._counter = 0

    # -- entry points

    def instance(self) -> Any:
        return self.gen(self.root, "", 0, outermost=True)

    def from_example(self, example: Any, name: str = "", outermost: bool = True) -> Any:
        """A value shaped like an example object (used when a prompt shows JSON but no schema)."""
        if isinstance(example, dict):
            return self._object_scope(
                lambda: {k: self.from_example(v, k, outermost) for k, v in example.items()}
            )
        if isinstance(example, list):
            count = self.requested if (outermost and self.requested) else max(len(example), 1)
            proto = example[0] if example else ""
            return self._distinct_items(count, lambda: self.from_example(proto, name, False))
        if isinstance(example, bool):
            return example
        if isinstance(example, int):
            return self._integer({}, name)
        if isinstance(example, float):
            return self._number({}, name)
        if example is None:
            return None
        return self._string({}, name)

    # -- the walk

    def gen(self, schema: Any, name: str, depth: int, outermost: bool) -> Any:
        if depth > self.hard_depth:
            raise _BadRequest("response_format schema is too deeply nested or recursive", "response_format")
        if schema is True or not isinstance(schema, dict):
            return self._string({}, name)
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self._enum(schema["enum"])
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                # First option, but skip a leading {"type": "null"} so Optional[X] gets an X.
                resolved = [self._resolve(o) if isinstance(o, dict) else o for o in options]
                chosen = next((o for o in resolved if not _is_null_schema(o)), resolved[0])
                merged = {k: v for k, v in schema.items() if k not in (key,)}
                if isinstance(chosen, dict):
                    merged.update(chosen)
                return self.gen(merged, name, depth + 1, outermost)
        if isinstance(schema.get("allOf"), list):
            merged = _merge_all_of(self, schema)
            return self.gen(merged, name, depth + 1, outermost)
        kind = _schema_type(schema)
        if kind == "object":
            return self._object(schema, depth, outermost)
        if kind == "array":
            return self._array(schema, name, depth, outermost)
        if kind == "integer":
            return self._integer(schema, name)
        if kind == "number":
            return self._number(schema, name)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema, name)

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while isinstance(schema.get("$ref"), str) and seen < 32:
            target = _pointer(self.root, schema["$ref"])
            if not isinstance(target, dict):
                return {"type": "string"}
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest}
            seen += 1
        return schema

    def _object_scope(self, build: Callable[[], Any]) -> Any:
        # Each object gets its own anchor statement, so sibling objects in an array differ and a
        # question and its answer in one object come from the same statement.
        # Anchors are taken lazily so a wrapper object holding only an array does not use one up.
        saved = (self._anchor, self._offset)
        self._anchor, self._offset = None, 0
        try:
            return build()
        finally:
            self._anchor, self._offset = saved

    def _object(self, schema: dict[str, Any], depth: int, outermost: bool) -> dict[str, Any]:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        required = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []

        def build() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for prop, sub in props.items():
                if depth >= self.max_depth and prop not in required:
                    continue
                out[prop] = self.gen(sub, prop, depth + 1, outermost)
            for prop in required:
                if prop not in out:
                    extra = schema.get("additionalProperties")
                    sub = extra if isinstance(extra, dict) else {}
                    out[prop] = self.gen(sub, prop, depth + 1, outermost)
            return out

        return self._object_scope(build)

    def _array(self, schema: dict[str, Any], name: str, depth: int, outermost: bool) -> list[Any]:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [self.gen(s, name, depth + 1, False) for s in prefix]
        lo = _int_or_none(schema.get("minItems"))
        hi = _int_or_none(schema.get("maxItems"))
        if depth >= self.max_depth:
            count = lo or 0
        elif lo is not None and hi is None:
            count = max(lo, 1)
        else:
            if outermost and self.requested:
                count = self.requested
            elif lo is not None:
                count = max(lo, 1)
            else:
                count = 3 if outermost else 2
            count = max(count, lo or 0)
            if hi is not None:
                count = min(count, hi)
        item_schema = schema.get("items", {})
        item_name = _singular(name)
        return self._distinct_items(count, lambda: self.gen(item_schema, item_name, depth + 1, False))

    def _distinct_items(self, count: int, make: Callable[[], Any]) -> list[Any]:
        items: list[Any] = []
        seen: set[bytes] = set()
        for _ in range(count):
            item = make()
            for _retry in range(8):
                fp = msgspec.json.encode(item, order="sorted")
                if fp not in seen:
                    break
                item = make()
            seen.add(msgspec.json.encode(item, order="sorted"))
            items.append(item)
        return items

    def _enum(self, values: list[Any]) -> Any:
        return values[self.rng.randrange(len(values))]

    # -- scalars

    def _integer(self, schema: dict[str, Any], name: str) -> int:
        lo, hi = _bounds(schema, integer=True)
        dlo, dhi = _default_range(name)
        if lo is None and hi is None:
            lo, hi = int(dlo), int(dhi)
        elif lo is None:
            lo = hi - 10 if hi is not None and hi < 10 else 0
        elif hi is None:
            hi = lo + 10
        if hi < lo:
            return int(lo)
        value = self.rng.randint(int(lo), int(hi))
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            snapped = -(-int(lo) // step) * step
            value = snapped if snapped <= hi else value
        return value

    def _number(self, schema: dict[str, Any], name: str) -> float:
        lo, hi = _bounds(schema, integer=False)
        dlo, dhi = _default_range(name)
        if lo is None and hi is None:
            lo, hi = dlo, dhi
        elif lo is None:
            lo = min(0.0, hi - 10.0) if hi is not None else 0.0
        elif hi is None:
            hi = lo + 10.0
        if hi < lo:
            return float(lo)
        value = round(lo + (hi - lo) * self.rng.random(), 2)
        return float(min(max(value, lo), hi))

    def _string(self, schema: dict[str, Any], name: str) -> str:
        fmt = schema.get("format")
        role = _role(name)
        self._counter += 1
        if fmt in _FORMATS:
            text = _FORMATS[fmt](self, self._counter)
        else:
            text = self._text_for(role)
        return self._fit(text, schema, role)

    def _text_for(self, role: str) -> str:
        src, a = self.src, self._current_anchor()
        if role == "question":
            return self._unique(self._question_candidates(a))
        if role == "answer":
            return self._unique(_chain([src.statement(a)], (src.statement(a + k) for k in range(1, 50))))
        if role == "word":
            # A content word of this object's own statement, so labels fit the item they describe.
            words = _salient(src.statement(a)) or [src.keyword(a)]
            return words[self._counter % len(words)].lower()
        if role == "title":
            words = [src.keyword(a + i) for i in range(self.rng.randint(2, 4))]
            return " ".join(w[:1].upper() + w[1:] for w in words)
        if role == "difficulty":
            return ("easy", "medium", "hard")[a % 3]
        if role == "language":
            return "en"
        if role == "id":
            return f"item-{a}-{self._counter}"
        if role == "url":
            return f"https://example.com/{src.keyword(a).lower()}"
        if role == "email":
            return f"user{self._counter}@example.com"
        self._offset += 1
        return self._unique(src.statement(a + self._offset + k) for k in range(50))

    def _current_anchor(self) -> int:
        if self._anchor is None:
            self._anchor = self.src.next_anchor()
        return self._anchor

    def _question_candidates(self, anchor: int) -> Iterable[str]:
        stmt = self.src.statement(anchor)
        keys = _salient(stmt) or [self.src.keyword(anchor)]
        for key in keys:
            for t in range(len(_QUESTION_TEMPLATES)):
                yield _QUESTION_TEMPLATES[(anchor + t) % len(_QUESTION_TEMPLATES)].format(k=key)
        yield from self.src.questions

    def _unique(self, candidates: Iterable[str]) -> str:
        first = None
        for cand in candidates:
            first = first or cand
            if cand not in self.src.used:
                self.src.used.add(cand)
                return cand
        # Out of fresh material: a numbered variant is ugly but keeps array items distinct.
        base = first or "Simulated text."
        n = 2
        while f"{base} ({n})" in self.src.used:
            n += 1
        self.src.used.add(f"{base} ({n})")
        return f"{base} ({n})"

    def _fit(self, text: str, schema: dict[str, Any], role: str) -> str:
        lo = _int_or_none(schema.get("minLength")) or 0
        hi = _int_or_none(schema.get("maxLength"))
        i = 0
        while len(text) < lo:
            text = f"{text} {self.src.statement(self._current_anchor() + 1 + i)}"
            i += 1
        if hi is not None and len(text) > hi:
            suffix = "?" if role == "question" and hi > 1 else ""
            cut = text[: hi - len(suffix)]
            if " " in cut[: max(hi - len(suffix), 0)] and len(cut) > 12:
                cut = cut.rsplit(" ", 1)[0]
            cut = cut.rstrip(" ,;:?") if suffix else cut
            text = (cut + suffix)[:hi]
            if len(text) < lo:
                text = text.ljust(lo, ".")
        return text


def _chain(*parts: Iterable[str]) -> Iterable[str]:
    for part in parts:
        yield from part


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith("s") and not name.endswith("ss"):
        return name[:-1]
    return name


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _is_null_schema(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _schema_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "additionalProperties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema or "minItems" in schema:
        return "array"
    if "minimum" in schema or "maximum" in schema:
        return "number"
    return "string"


def _merge_all_of(gen: _SchemaGen, schema: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    props: dict[str, Any] = dict(merged.get("properties") or {})
    required: list[str] = list(merged.get("required") or [])
    for part in schema["allOf"]:
        if not isinstance(part, dict):
            continue
        part = gen._resolve(part)
        props.update(part.get("properties") or {})
        required.extend(r for r in part.get("required") or [] if r not in required)
        for k, v in part.items():
            if k not in ("properties", "required"):
                merged.setdefault(k, v)
    if props:
        merged["properties"] = props
    if required:
        merged["required"] = required
    return merged


def _pointer(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return None
    node = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _bounds(schema: dict[str, Any], *, integer: bool) -> tuple[Any, Any]:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    lo = lo if isinstance(lo, (int, float)) and not isinstance(lo, bool) else None
    hi = hi if isinstance(hi, (int, float)) and not isinstance(hi, bool) else None
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    nudge = 1 if integer else 1e-6
    # Draft 4 spells exclusivity as booleans next to minimum/maximum; later drafts as numbers.
    if xlo is True and lo is not None:
        lo = lo + nudge
    elif isinstance(xlo, (int, float)) and not isinstance(xlo, bool):
        lo = max(lo, xlo + nudge) if lo is not None else xlo + nudge
    if xhi is True and hi is not None:
        hi = hi - nudge
    elif isinstance(xhi, (int, float)) and not isinstance(xhi, bool):
        hi = min(hi, xhi - nudge) if hi is not None else xhi - nudge
    if integer:
        lo = None if lo is None else int(-(-lo // 1))
        hi = None if hi is None else int(hi // 1)
    return lo, hi


def _default_range(name: str) -> tuple[float, float]:
    tokens = _name_tokens(name)
    if any(
        t.startswith(("confidence", "probability", "prob", "likelihood", "ratio", "share")) for t in tokens
    ):
        return 0.5, 1.0
    if any(t.startswith(("score", "rating", "grade", "quality", "stars")) for t in tokens):
        return 1, 5
    if any(t.startswith(("year",)) for t in tokens):
        return 1990, 2024
    return 1, 10


_FORMATS: dict[str, Callable[[_SchemaGen, int], str]] = {
    "date": lambda g, n: f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}",
    "date-time": lambda g, n: f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}T12:{n % 60:02d}:00Z",
    "time": lambda g, n: f"12:{n % 60:02d}:00",
    "email": lambda g, n: f"user{n}@example.com",
    "uri": lambda g, n: f"https://example.com/{g.src.keyword(n).lower()}",
    "url": lambda g, n: f"https://example.com/{g.src.keyword(n).lower()}",
    "hostname": lambda g, n: "example.com",
    "ipv4": lambda g, n: f"192.0.2.{1 + n % 254}",
    "uuid": lambda g, n: str(uuid.UUID(int=g.rng.getrandbits(128), version=4)),
}


def _looks_like_schema(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and any(
            k in obj
            for k in ("$schema", "properties", "$defs", "definitions", "anyOf", "oneOf", "allOf", "$ref")
        )
        or (
            isinstance(obj, dict)
            and obj.get("type") in ("object", "array")
            and ("items" in obj or "properties" in obj)
        )
    )


def _json_in_prompt(messages: list[dict[str, Any]]) -> tuple[Any, bool] | None:
    """A JSON Schema (True) or an example object (False) shown in the prompt, if any."""
    schemas: list[Any] = []
    examples: list[Any] = []
    decoder = json.JSONDecoder()
    for _, text in reversed(_message_texts(messages)):
        for match in _SCHEMA_LABEL_RE.finditer(text):
            rest = text[match.end() :].lstrip()
            if rest.startswith("```"):
                rest = rest.split("\n", 1)[-1]
            try:
                obj, _ = decoder.raw_decode(rest)
            except ValueError:
                continue
            if isinstance(obj, dict):
                schemas.append(obj)
        for block in _FENCE_RE.findall(text):
            try:
                obj = json.loads(block)
            except ValueError:
                continue
            if _looks_like_schema(obj):
                schemas.append(obj)
            elif isinstance(obj, (dict, list)):
                examples.append(obj)
    if schemas:
        return schemas[0], True
    if examples:
        return examples[0], False
    return None


# --------------------------------------------------------------------------------------------------
# Answers


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _is_sloppy(model: str) -> bool:
    return "sloppy" in model.lower()


def _sloppy(content: str) -> str:
    """What a weak model makes of "reply with JSON only": the JSON, unfenced, between two lines of chat."""
    return f"Sure! Here is the JSON you asked for:\n{content}\nLet me know if you need anything else."


def _is_reasoner(model: str) -> bool:
    low = model.lower()
    return "reasoner" in low or "r1" in low


def _build_content(
    seed: int, key: str, req: dict[str, Any], structured: str = "openai"
) -> tuple[str, str | None]:
    """(content, reasoning_content) for a request; depends only on seed, key, the request and the
    ``structured`` mode (refusals the mode makes are ``_structured_refusal``'s, done before this)."""
    messages = req["messages"]
    rng = random.Random(
        int.from_bytes(hashlib.blake2b(f"{seed}|{key}|answer".encode(), digest_size=8).digest(), "big")
    )
    src = _Source(messages, rng)
    fmt = req.get("response_format")
    fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
    as_json = True
    if fmt_type == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise _BadRequest("response_format.json_schema.schema must be an object", "response_format")
        value = _SchemaGen(schema, src).instance()
    elif fmt_type == "json_object":
        schema = fmt.get("schema") if structured == "llamacpp" else None
        if isinstance(schema, dict):
            # llama.cpp compiles the schema into a grammar: constrained decoding yields an instance.
            value = _SchemaGen(schema, src).instance()
        else:
            value = _prompt_json(_json_in_prompt(messages), src)
    elif fmt_type in (None, "text"):
        # A server without structured output still gets JSON from a model whose prompt asks for it.
        found = _json_in_prompt(messages) if structured == "text" else None
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


def _prompt_json(found: tuple[Any, bool] | None, src: _Source) -> Any:
    """The JSON answer to a prompt that shows a schema (an instance) or an example (one like it)."""
    if found is None:
        return {"answer": src.plain_answer()}
    if found[1]:
        return _SchemaGen(found[0], src).instance()
    return _SchemaGen({}, src).from_example(found[0])


_NEGATIVES_RE = re.compile(
    r"Make (?:all of the questions|exactly (\d+) of the \d+ questions) ones whose answer the text does not give"
    r'.*?answer each of those exactly: "([^"]+)"', re.DOTALL)


def _follow_negatives(messages: list[dict[str, Any]], content: str) -> str:
    """Do what a good model does with "make K of the N questions unanswerable ... answer exactly X":
    the first K items get X as their answer (dset's own prompts ask for this; see prompts.py)."""
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


def _error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return msgspec.json.encode({"error": {"message": message, "type": type_, "param": param, "code": code}})


# --------------------------------------------------------------------------------------------------
# Quirks of real servers

# Where llama-cpp-python's server (v0.3.x, FastAPI >= 0.120) says a validation error came from: FastAPI
# names the endpoint's file and first line (its decorator, line 375 of llama_cpp/server/app.py).
_LLAMACPP_ENDPOINT = (
    '  File "/usr/local/lib/python3.12/site-packages/llama_cpp/server/app.py", line 375, '
    "in create_chat_completion\n"
    "    POST /v1/chat/completions"
)
_LLAMACPP_TYPES = "'text' or 'json_object'"
# Body fields llama-cpp-python's request model has no slot for (pydantic drops them) or excludes.
_LLAMACPP_IGNORED = ("max_completion_tokens", "n", "stream_options")


def _llamacpp_refusal(fmt: dict[str, Any]) -> _Reply | None:
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
    return _Reply(500, _error_body(message, "internal_server_error"))


def _structured_refusal(structured: str, fmt: dict[str, Any]) -> _Reply | None:
    """The refusal a ``structured`` mode makes of a response_format (not called in "openai" mode)."""
    if structured == "llamacpp":
        return _llamacpp_refusal(fmt)
    if fmt.get("type") == "text":
        return None
    message = "Unsupported parameter: 'response_format' is not supported by this server."
    return _Reply(400, _error_body(message, "invalid_request_error", "unsupported_parameter", "response_format"))


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The messages' token estimate: the usage's prompt_tokens, and what context_tokens is checked on."""
    return max(1, (sum(len(t) for _, t in _message_texts(messages)) + 3) // 4)


def _context_refusal(window: int, prompt: int, completion: int | None) -> _Reply | None:
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
    return _Reply(400, _error_body(message, "invalid_request_error", "context_length_exceeded", "messages"))


def _mask_key(key: str) -> str:
    """A key as providers show it in a 401: its start and its last four characters."""
    return f"{key[:8]}...{key[-4:]}" if len(key) > 12 else f"{key[:2]}..."


def _duration(seconds: float) -> str:
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


class _Bucket:
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
            f"x-ratelimit-reset-requests: {_duration((self.capacity - self.tokens) / self.rps)}\r\n"
        )

    def refusal(self, wait: float) -> _Reply:
        """The 429 for a request that found the bucket empty, ``wait`` seconds before the next token."""
        message = (
            f"Rate limit reached for requests in organization org-dset-simulator on requests per second "
            f"(RPS): Limit {self.limit_text}, Used {self.limit_text}, Requested 1. "
            f"Please try again in {_duration(wait)}. (simulated)"
        )
        # Retry-After is whole seconds (rounded up, as real servers send it); retry-after-ms is exact.
        lines = (
            f"Retry-After: {max(1, math.ceil(wait - 1e-9))}\r\n"
            f"retry-after-ms: {max(1, math.ceil(wait * 1000))}\r\n"
        )
        if self.headers:
            lines += self.header_lines()
        return _Reply(429, _error_body(message, "requests", "rate_limit_exceeded"), headers=lines)


_HTML_PAGE = (
    b"<!DOCTYPE html>\n<html>\n<head><title>Welcome!</title></head>\n<body>\n<h1>It works!</h1>\n"
    b"<p>This is the default web page for this server.</p>\n</body>\n</html>\n"
)


def _not_openai_reply(mode: str) -> _Reply:
    if mode == "html":
        return _Reply(200, _HTML_PAGE, content_type="text/html")
    return _Reply(404, b"404 page not found\n", content_type="text/plain; charset=utf-8")


# --------------------------------------------------------------------------------------------------
# HTTP

_REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
    404: "Not Found", 405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large",
    429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    505: "HTTP Version Not Supported",
}  # fmt: skip
_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
_JSON = "application/json"
_MALFORMED = b'{"id": "chatcmpl-sim", "object": "chat.completion", "choices": ['
_MALFORMED_SSE = b'data: {"id": "chatcmpl-sim", "choices": [\n\n'


class _Reply:
    __slots__ = ("status", "body", "content_type", "headers", "delay", "reset", "completion", "tracked")

    def __init__(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = _JSON,
        headers: str = "",
        delay: float = 0.0,
        reset: bool = False,
        completion: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers  # extra header lines, each ending in CRLF
        self.delay = delay
        self.reset = reset
        self.completion = completion
        self.tracked = False  # a chat request counted in flight until this reply is sent or dropped

    def encode(self, keep_alive: bool) -> bytes:
        head = (
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}\r\n"
            f"Content-Type: {self.content_type}\r\nContent-Length: {len(self.body)}\r\n"
            f"Server: dset-simulator\r\nX-Dset-Simulated: 1\r\n{self.headers}"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        return head.encode("latin-1") + self.body


def _error(status: int, message: str, type_: str, code: str | None = None, **kw: Any) -> _Reply:
    return _Reply(status, _error_body(message, type_, code), **kw)


class _Stats:
    """Counters mutated on the server's loop and read from any thread; one lock keeps snapshots whole."""

    def __init__(self, request_log: int = 0) -> None:
        self.lock = threading.Lock()
        self.bodies: deque[Any] = deque(maxlen=request_log)
        self.in_flight = 0
        self.clear()

    def clear(self) -> None:
        self.requests = 0
        self.completions = 0
        self.rate_limited = 0
        self.faults = dict.fromkeys(_STAT_FAULTS, 0)
        self.by_prompt: dict[str, int] = {}
        self.max_in_flight = self.in_flight  # requests still being served when cleared stay counted
        self.bodies.clear()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "completions": self.completions,
                "rate_limited": self.rate_limited,
                "faults": dict(self.faults),
                "by_prompt": dict(self.by_prompt),
                "max_in_flight": self.max_in_flight,
            }

    def began(self) -> None:
        with self.lock:
            self.in_flight += 1
            if self.in_flight > self.max_in_flight:
                self.max_in_flight = self.in_flight

    def ended(self, reply: _Reply) -> None:
        if reply.tracked:
            reply.tracked = False
            with self.lock:
                self.in_flight -= 1


class _Conn(asyncio.Protocol):
    """One client connection: parses requests from the byte stream and answers them in order."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.closed = False
        self.eof = False
        self.timer: asyncio.TimerHandle | None = None
        self.pending: _Reply | None = None  # the delayed reply the timer will send
        self.continued = False
        self.pending_keep_alive = True

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sim._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.sim._conns.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._drop_pending()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._drain()

    def eof_received(self) -> bool:
        self.eof = True
        # Keep the write side open while an answer is still scheduled for this connection.
        return self.busy

    # request handling

    def abort(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._drop_pending()
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    def _drop_pending(self) -> None:
        if self.pending is not None:
            self.sim._stats.ended(self.pending)
            self.pending = None

    def _drain(self) -> None:
        while not self.busy and not self.closed:
            parsed = self._parse()
            if parsed is None:
                break
            method, path, headers, body, keep_alive = parsed
            try:
                reply = self.sim._dispatch(method, path, headers, body)
            except Exception as exc:
                # A bug here must not kill the connection silently: answer 500 and say what broke.
                _log.exception("simulator failed on %s %s", method, path)
                reply = _error(500, f"simulator internal error: {exc!r}", "server_error")
            if reply.delay > 0:
                self.busy = True
                self.pending_keep_alive = keep_alive
                loop = asyncio.get_running_loop()
                self.pending = reply
                self.timer = loop.call_later(reply.delay, self._fire, reply)
                return
            self._send(reply, keep_alive)
        if self.eof and not self.busy and not self.closed and self.transport is not None:
            self.transport.close()
            self.closed = True

    def _fire(self, reply: _Reply) -> None:
        self.timer = None
        self.pending = None
        self.busy = False
        if self.closed:
            self.sim._stats.ended(reply)
            return
        self._send(reply, self.pending_keep_alive)
        if not self.closed:
            self._drain()

    def _send(self, reply: _Reply, keep_alive: bool) -> None:
        self.sim._stats.ended(reply)
        transport = self.transport
        if transport is None or self.closed:
            return
        if reply.reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER (on, 0 s): close() sends RST, so the client sees a reset, not a clean EOF.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            self.closed = True
            return
        keep_alive = keep_alive and not self.eof
        transport.write(reply.encode(keep_alive))
        if reply.completion:
            stats = self.sim._stats
            with stats.lock:
                stats.completions += 1
        if not keep_alive:
            transport.close()
            self.closed = True

    def _fail(self, status: int, message: str) -> None:
        """A protocol error: answer once and close, because the byte stream can't be trusted now."""
        self._send(_error(status, message, "invalid_request_error"), keep_alive=False)

    def _parse(self) -> tuple[str, str, dict[str, str], bytes, bool] | None:
        buf = self.buf
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                self._fail(431, "Request headers too large")
            return None
        if end > _MAX_HEAD:
            self._fail(431, "Request headers too large")
            return None
        lines = buf[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._fail(400 if len(parts) != 3 else 505, "Malformed request line")
            return None
        method, path, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self._fail(400, "Malformed header line")
                return None
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._fail(411, "Chunked request bodies are not supported; send Content-Length")
            return None
        try:
            length = int(headers.get("content-length", "0"))
            if length < 0:
                raise ValueError
        except ValueError:
            self._fail(400, "Invalid Content-Length")
            return None
        if length > _MAX_BODY:
            self._fail(413, "Request body too large")
            return None
        start = end + 4
        if len(buf) < start + length:
            if not self.continued and headers.get("expect", "").lower() == "100-continue":
                self.continued = True
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        body = bytes(buf[start : start + length])
        del buf[: start + length]
        self.continued = False
        conn = headers.get("connection", "").lower()
        keep_alive = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn
        return method, path, headers, body, keep_alive


# --------------------------------------------------------------------------------------------------
# The server


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class Simulator:
    """The simulator server.  ``start()`` runs it on a daemon thread with its own event loop;
    ``await serve()`` runs it on the caller's loop instead.

    ``stats()``: ``requests`` counts chat-completion requests received (whatever their outcome);
    ``completions`` counts 200 answers with content actually written; ``faults`` counts injected
    faults and 401/402 refusals; ``rate_limited`` counts 429s from the ``rate_limit_rps`` bucket (not
    faults, and not attempts); ``by_prompt`` maps prompt key to requests seen for it (this is also
    the counter behind server-side attempt numbering, so ``reset_stats()`` restarts attempts too).
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        self.base_url = ""
        self._stats = _Stats(self.config.request_log)
        self._conns: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._models_body = msgspec.json.encode(
            {"object": "list", "data": [_model_obj(m) for m in self.config.models]}
        )
        cfg = self.config
        # Switches are resolved once here so that, when off, they cost the hot path one test each.
        self._bucket = (
            _Bucket(cfg.rate_limit_rps, cfg.rate_limit_burst, cfg.rate_limit_headers)
            if cfg.rate_limit_rps
            else None
        )
        self._reasoning_key = None if cfg.reasoning_field in ("think", "none") else cfg.reasoning_field

    # -- lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = _new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.serve(host, port, ready=lambda _url: ready.set()))
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="dset-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=30):
            raise RuntimeError("simulator did not start within 30 s")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self.base_url

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._request_stop)
            thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Simulator:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, ready: Callable[[str], None] | None = None
    ) -> None:
        """Serve on the running loop until ``stop()`` (or ``_request_stop`` on this loop)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_event = asyncio.Event()
        server = await loop.create_server(lambda: _Conn(self), host, port, backlog=4096, reuse_address=True)
        try:
            bound = server.sockets[0].getsockname()[1]
            self.base_url = f"http://{_url_host(host)}:{bound}/v1"
            if ready is not None:
                ready(self.base_url)
            await self._stop_event.wait()
        finally:
            server.close()
            # Hanging answers are timers, not tasks: aborting their connections cancels them.
            for conn in list(self._conns):
                conn.abort()
            await server.wait_closed()

    def _request_stop(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()

    # -- stats

    def stats(self) -> dict[str, Any]:
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        with self._stats.lock:
            self._stats.clear()

    def requests(self, last: int | None = None) -> list[Any]:
        """The decoded JSON bodies of the last ``last`` chat requests (all those kept when None), oldest first.

        At most ``SimConfig.request_log`` are kept; ``reset_stats()`` forgets them.
        """
        with self._stats.lock:
            bodies = list(self._stats.bodies)
        return bodies if last is None else bodies[-last:] if last > 0 else []

    # -- routing

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Reply:
        path = target.split("?", 1)[0].rstrip("/") or "/"
        if self.config.not_openai and not path.startswith("/_sim/"):
            return _not_openai_reply(self.config.not_openai)
        if path in ("/v1/chat/completions", "/chat/completions"):
            if method != "POST":
                return _not_allowed("POST")
            return self._chat(headers, body)
        if path in ("/v1/models", "/models"):
            if method != "GET":
                return _not_allowed("GET")
            return self._auth(headers) or _Reply(200, self._models_body)
        if path.startswith(("/v1/models/", "/models/")) and method == "GET":
            denied = self._auth(headers)
            if denied:
                return denied
            model = path.split("/models/", 1)[1]
            if model in self.config.models:
                return _Reply(200, msgspec.json.encode(_model_obj(model)))
            return _error(
                404, f"The model '{model}' does not exist", "invalid_request_error", "model_not_found"
            )
        if path == "/_sim/stats":
            return _Reply(200, msgspec.json.encode(self.stats())) if method == "GET" else _not_allowed("GET")
        if path == "/_sim/requests":
            if method != "GET":
                return _not_allowed("GET")
            query = dict(p.partition("=")[::2] for p in target.partition("?")[2].split("&") if p)
            try:
                last = int(query["last"]) if "last" in query else None
            except ValueError:
                return _error(400, "last must be a whole number", "invalid_request_error")
            return _Reply(200, msgspec.json.encode({"requests": self.requests(last)}))
        if path == "/_sim/reset":
            if method != "POST":
                return _not_allowed("POST")
            self.reset_stats()
            return _Reply(200, b'{"ok":true}')
        return _error(404, f"Unknown path {path}", "invalid_request_error", "not_found")

    def _auth(self, headers: dict[str, str]) -> _Reply | None:
        want = self.config.require_api_key
        if want is None:
            return None
        raw = headers.get("authorization", "")
        scheme, _, token = raw.partition(" ")
        if scheme.lower() == "bearer" and token.strip() == want:
            return None
        sent = token.strip() if scheme.lower() == "bearer" else raw
        if self.config.echo_key and sent:
            # Real providers put (part of) the key they were sent in the message; some proxies echo it
            # whole.  Full, masked and URL-encoded, so a client's redaction is tested on every form.
            # The header parser split on CRLF, so the key can't smuggle a header line in.
            message = (
                f"Incorrect API key provided: {_mask_key(sent)}. "
                f"(sent: {sent}, url: {urllib.parse.quote(sent, safe='')})"
            )
            return _error(
                401, message, "invalid_request_error", "invalid_api_key", headers=f"x-echo-key: {sent}\r\n"
            )
        return _error(
            401, "Incorrect API key provided (simulated).", "invalid_request_error", "invalid_api_key"
        )

    def _chat(self, headers: dict[str, str], body: bytes) -> _Reply:
        stats = self._stats
        stats.began()
        try:
            reply = self._chat_reply(headers, body)
        except BaseException:
            with stats.lock:
                stats.in_flight -= 1
            raise
        reply.tracked = True  # in flight until the connection sends (or drops) it
        return reply

    def _chat_reply(self, headers: dict[str, str], body: bytes) -> _Reply:
        cfg, stats = self.config, self._stats
        with stats.lock:
            stats.requests += 1
        if cfg.max_body_bytes and len(body) > cfg.max_body_bytes:
            message = f"Request body too large: {len(body)} bytes; the limit is {cfg.max_body_bytes} bytes."
            return _error(413, message, "invalid_request_error", "request_too_large")
        denied = self._auth(headers)
        if denied is not None:
            with stats.lock:
                stats.faults["401"] += 1
            return denied
        bucket = self._bucket
        if bucket is None:
            return self._answer(headers, body)
        wait = bucket.take()
        if wait:
            # At once, before the body is read: a provider's limiter sits in front of the model.
            with stats.lock:
                stats.rate_limited += 1
            return bucket.refusal(wait)
        lines = bucket.header_lines() if bucket.headers else ""
        reply = self._answer(headers, body)
        reply.headers += lines
        return reply

    def _answer(self, headers: dict[str, str], body: bytes) -> _Reply:
        cfg, stats = self.config, self._stats
        if cfg.quota_exhausted:
            with stats.lock:
                stats.faults["402"] += 1
            return _Reply(
                402,
                b'{"error":{"message":"Insufficient Balance","type":"insufficient_quota","code":"insufficient_quota"}}',
            )
        try:
            decoded = msgspec.json.decode(body)
            if cfg.request_log:
                with stats.lock:
                    stats.bodies.append(decoded)
            req = _validate(decoded)
        except msgspec.DecodeError as exc:
            return _error(
                400, f"We could not parse the JSON body of your request: {exc}", "invalid_request_error"
            )
        except _BadRequest as exc:
            return _Reply(400, _error_body(exc.message, "invalid_request_error", None, exc.param))
        structured = cfg.structured
        if structured != "openai":
            fmt = req.get("response_format")
            refused = _structured_refusal(structured, fmt) if fmt is not None else None
            if refused is not None:
                return refused
            if structured == "llamacpp":
                req = {k: v for k, v in req.items() if k not in _LLAMACPP_IGNORED}
        if cfg.context_tokens:
            limit = req.get("max_completion_tokens") or req.get("max_tokens")
            refused = _context_refusal(cfg.context_tokens, _prompt_tokens(req["messages"]), limit)
            if refused is not None:
                return refused

        model = req["model"]
        key = prompt_key(model, req["messages"])
        with stats.lock:
            seen = stats.by_prompt.get(key, 0)
            stats.by_prompt[key] = seen + 1
        attempt = seen
        stated = headers.get("x-dset-attempt")
        if stated is not None:
            with contextlib.suppress(ValueError):
                attempt = max(0, int(stated) - 1)  # the header is 1-based
        fault = fault_for(cfg, key, attempt)
        delay = _delay_s(cfg, key, attempt)
        if fault is not None:
            with stats.lock:
                stats.faults[fault] += 1
        if fault == "429":
            ra = cfg.retry_after_s
            ra_text = str(int(ra)) if float(ra).is_integer() else f"{ra:g}"
            return _error(
                429,
                "Rate limit reached for requests (simulated).",
                "requests",
                "rate_limit_exceeded",
                headers=f"Retry-After: {ra_text}\r\nretry-after-ms: {round(ra * 1000)}\r\n",
                delay=delay,
            )
        if fault == "500":
            return _error(500, "The server had an error while processing your request (simulated).",
                          "server_error", delay=delay)  # fmt: skip
        if fault == "reset":
            return _Reply(0, b"", reset=True, delay=delay)
        stream = req.get("stream") is True
        if fault == "malformed":
            if stream:
                return _Reply(200, _MALFORMED_SSE, content_type="text/event-stream", delay=delay)
            return _Reply(200, _MALFORMED, delay=delay)
        if fault == "hang":
            delay = cfg.hang_s

        try:
            content, reasoning = _build_content(cfg.seed, key, req, structured)
        except _BadRequest as exc:
            return _Reply(400, _error_body(exc.message, "invalid_request_error", None, exc.param))
        finish = "stop"
        if fault == "empty":
            content = ""
        else:
            if reasoning is not None and cfg.reasoning_field == "think":
                # Inline, the reasoning is part of the content: max_tokens counts it, usage has no split.
                content = f"<think>\n{reasoning}\n</think>\n\n{content}"
                reasoning = None
            limit = req.get("max_completion_tokens") or req.get("max_tokens")
            if limit is not None and _tokens(content) > limit:
                content = content[: limit * 4]
                finish = "length"
        return self._completion(req, key, attempt, content, reasoning, finish, stream, delay)

    def _completion(
        self,
        req: dict[str, Any],
        key: str,
        attempt: int,
        content: str,
        reasoning: str | None,
        finish: str,
        stream: bool,
        delay: float,
    ) -> _Reply:
        model = req["model"]
        prompt_tokens = _prompt_tokens(req["messages"])
        completion_tokens = _tokens(content) + (_tokens(reasoning) if reasoning else 0)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if reasoning:
            # Counted even when reasoning_field is "none": hidden reasoning is still billed.
            usage["completion_tokens_details"] = {"reasoning_tokens": _tokens(reasoning)}
        reasoning_key = self._reasoning_key if reasoning is not None else None
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning_key is not None:
            message[reasoning_key] = reasoning
        n = req.get("n") or 1
        ident = f"chatcmpl-sim-{key}-{attempt}"
        created = int(time.time())
        has_content = bool(content)
        if not stream:
            body = {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": FINGERPRINT,
                "choices": [
                    {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
                    for i in range(n)
                ],
                "usage": usage,
            }
            return _Reply(200, msgspec.json.encode(body), delay=delay, completion=has_content)
        # Streaming: the whole event stream goes out in one write; clients can't tell the difference.
        base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": FINGERPRINT}  # fmt: skip
        first_delta: dict[str, Any] = {"role": "assistant", "content": ""}
        if reasoning_key is not None:
            first_delta[reasoning_key] = reasoning
        chunks: list[dict[str, Any]] = []
        for i in range(n):
            chunks.append({**base, "choices": [{"index": i, "delta": first_delta, "finish_reason": None}]})
            chunks.append(
                {**base, "choices": [{"index": i, "delta": {"content": content}, "finish_reason": None}]}
            )
            chunks.append({**base, "choices": [{"index": i, "delta": {}, "finish_reason": finish}]})
        opts = req.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage"):
            chunks.append({**base, "choices": [], "usage": usage})
        payload = b"".join(b"data: " + msgspec.json.encode(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        return _Reply(200, payload, content_type="text/event-stream", delay=delay, completion=has_content)


def _model_obj(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": FINGERPRINT}


def _not_allowed(allow: str) -> _Reply:
    return _error(405, "Method not allowed", "invalid_request_error", headers=f"Allow: {allow}\r\n")


def serve_forever(
    config: SimConfig, *, host: str, port: int, ready: Callable[[str], None] | None = None
) -> None:
    """Run the simulator in this thread until SIGINT/SIGTERM; ``ready(base_url)`` once listening."""
    sim = Simulator(config)
    loop = _new_event_loop()

    async def main() -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, sim._request_stop)
        await sim.serve(host, port, ready=ready)

    try:
        loop.run_until_complete(main())
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()
