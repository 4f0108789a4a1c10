"""Structured output that adapts to the server: the strongest mode an endpoint accepts.

Servers differ in what ``response_format`` they take. From strongest to weakest:

``json_schema``         ``{"type": "json_schema", "json_schema": {"name", "strict": true, "schema"}}`` (OpenAI, vLLM)
``json_object_schema``  ``{"type": "json_object", "schema": {...}}``: llama.cpp's servers constrain decoding to it
``json_object``         ``{"type": "json_object"}`` with the expected shape described in the prompt (DeepSeek)
``text``                no ``response_format``; the prompt describes the shape and the reply is parsed strictly

A call starts in the endpoint's current mode. A refusal that names the request's format (a 400/422, or a
5xx whose body is a request-validation error, mentioning ``response_format``, a schema or JSON mode) moves
the endpoint one mode down and the item is retried at once in the new mode, without spending its retry
budget. The move is recorded as a :class:`~dsetlog.store.events.StructuredModeLearned` event, so a resumed run and
the server's next job start in the learned mode. ``<PROFILE>_STRUCTURED`` forces a mode for a profile.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from dsetlog.errors import UsageError

JSON_SCHEMA, JSON_OBJECT_SCHEMA, JSON_OBJECT, TEXT = "json_schema", "json_object_schema", "json_object", "text"
MODES: tuple[str, ...] = (JSON_SCHEMA, JSON_OBJECT_SCHEMA, JSON_OBJECT, TEXT)


class StructuredModeError(UsageError, ValueError):
    """A forced mode that does not exist; the message lists the ones that do."""


@dataclass(frozen=True)
class Structured:
    """What a call's reply must be: a JSON Schema, with the sentence that describes it in a prompt.

    ``always_describe``: put the description in the prompt in every mode (a custom prompt may not mention
    the shape at all, and constrained decoding alone would give a model no idea what the fields mean).
    """

    name: str
    schema: dict[str, Any]
    always_describe: bool = False

    def describe(self) -> str:
        """The prompt's sentence for the modes without a schema: an example of the shape, then the rules.

        Small models asked with the bare JSON Schema tend to echo it ("type", "required", ...) instead of
        filling it in; an example instance they can copy the shape of works far better.
        """
        example = msgspec.json.encode(example_of(self.schema)).decode()
        rules = msgspec.json.encode(self.schema).decode()
        return (f"Reply with one JSON object only, no prose, shaped like this example (replace every value): "
                f"{example}\nIt must match this JSON Schema: {rules}")

    def request(self, mode: str, messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """(messages, response_format) for a call in ``mode``."""
        describe = self.always_describe or mode in (JSON_OBJECT, TEXT)
        if describe:
            messages = _with_instruction(messages, self.describe())
        if mode == JSON_SCHEMA:
            return messages, {"type": "json_schema",
                              "json_schema": {"name": self.name, "strict": True, "schema": self.schema}}
        if mode == JSON_OBJECT_SCHEMA:
            return messages, {"type": "json_object", "schema": self.schema}
        if mode == JSON_OBJECT:
            return messages, {"type": "json_object"}
        return messages, None


def _with_instruction(messages: list[dict[str, Any]], sentence: str) -> list[dict[str, Any]]:
    """The messages with ``sentence`` appended to the last user message (a copy; the item's stay as they are)."""
    out = list(messages)
    for i in range(len(out) - 1, -1, -1):
        if out[i].get("role") == "user":
            out[i] = {**out[i], "content": f"{out[i].get('content', '')}\n\n{sentence}"}
            return out
    return [*out, {"role": "user", "content": sentence}]


def example_of(schema: Any, name: str = "value") -> Any:
    """A small instance of ``schema`` whose values say what goes there (the prompt's example)."""
    if not isinstance(schema, dict):
        return "..."
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        return {key: example_of(sub, key) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        count = max(1, min(int(schema.get("minItems", 1) or 1), 2))
        return [example_of(schema.get("items", {}), name) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 0.5))
    if kind == "boolean":
        return False
    return f"<{name}>"


_FENCE = re.compile(r"```[\w-]*[ \t]*\n?(.*?)```", re.DOTALL)


def fenced_json(text: str) -> str:
    """The JSON of a reply: the body of its first ``` fenced block if it has one, else the text, stripped."""
    fenced = _FENCE.search(text)
    return (fenced.group(1) if fenced else text).strip()


def lower(mode: str) -> str | None:
    """The next weaker mode, or None below ``text``."""
    index = MODES.index(mode)
    return MODES[index + 1] if index + 1 < len(MODES) else None


_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "json schema", "schema", "json mode",
                 "guided", "grammar", "structured output", "'text' or 'json_object'")


def names_format(text: str, body: Any) -> bool:
    """Does a refusal's text or body point at the request's structured-output format?"""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and str(err.get("param") or "").startswith("response_format"):
            return True
        text = f"{text} {msgspec.json.encode(body).decode(errors='replace')}"
    lowered = text.lower()
    return any(word in lowered for word in _FORMAT_WORDS)


class ModeBook:
    """The current mode of every (endpoint, model) this process has called, seeded from the log.

    Forced modes (``<PROFILE>_STRUCTURED``) never move. Thread-safe: server jobs and the CLI share it.
    """

    def __init__(self) -> None:
        self._modes: dict[tuple[str, str], str] = {}
        self._forced: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def mode(self, endpoint: str, model: str, *, default: str = JSON_SCHEMA) -> str:
        key = (endpoint, model)
        with self._lock:
            return self._forced.get(key) or self._modes.get(key) or default

    def force(self, endpoint: str, model: str, mode: str) -> None:
        check(mode)
        with self._lock:
            self._forced[(endpoint, model)] = mode

    def learned(self, endpoint: str, model: str, mode: str) -> None:
        """Seed from the log: a mode learned earlier (the weakest one recorded wins)."""
        key = (endpoint, model)
        with self._lock:
            current = self._modes.get(key)
            if current is None or MODES.index(mode) > MODES.index(current):
                self._modes[key] = mode

    def step_down(self, endpoint: str, model: str, sent: str) -> tuple[str | None, bool]:
        """The endpoint refused ``sent``: (the mode to use now or None when there is none weaker, whether
        this call moved it). Several calls in flight are refused for the same reason; only the first moves
        the endpoint down, the others are told the mode it is in now."""
        key = (endpoint, model)
        with self._lock:
            if key in self._forced:
                return None, False
            current = self._modes.get(key, JSON_SCHEMA)
            if MODES.index(current) > MODES.index(sent):
                return current, False  # moved down already by another call
            weaker = lower(sent)
            if weaker is not None:
                self._modes[key] = weaker
            return weaker, weaker is not None

    def clear(self) -> None:
        with self._lock:
            self._modes.clear()
            self._forced.clear()


BOOK = ModeBook()


def check(mode: str) -> str:
    if mode not in MODES:
        raise StructuredModeError(f"structured output mode {mode!r} does not exist; use one of: {', '.join(MODES)}")
    return mode


def forced_mode(profile: str, env: Mapping[str, str]) -> str | None:
    """``<PROFILE>_STRUCTURED`` (or ``DSET_STRUCTURED`` for a generic --base-url), checked."""
    value = env.get(f"{profile.upper()}_STRUCTURED") or env.get("DSET_STRUCTURED")
    return check(value.strip().lower()) if value and value.strip() else None
