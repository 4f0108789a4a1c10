"""What a generation call's reply must be, and strict parsing of what comes back.

:func:`output_schema` / :func:`reply_schema` ask for exactly ``n`` items of a mode's shape in one call;
:func:`parse_items` decodes the reply strictly into :class:`GeneratedItem` and raises :class:`InvalidOutput`
(a retryable failure for the caller) on anything else; :func:`strip_wrapping` finds the JSON in a reply.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from dsetlog.errors import DsetError
from dsetlog.llm.structured import Structured, fenced_json
from dsetlog.prompts.parameters import allowed_categories
from dsetlog.prompts.templates import NEGATIVE_ANSWER, normalize_mode
from dsetlog.scripts import word_runs


class InvalidOutput(DsetError, ValueError):
    """A model reply that does not match what was asked for; worth another attempt."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# JSON field names per mode (first = the prompt side, second = the reply side); every item has a category.
MODE_FIELDS: dict[str, tuple[str, ...]] = {
    "default": ("question", "answer"),
    "question": ("question",),
    "answer": ("question", "answer"),
    "summarization": ("instruction", "summary"),
    "instruction_following": ("instruction", "response"),
}


def output_schema(mode: str, n: int, categories: Sequence[str] = ()) -> dict[str, Any]:
    """JSON Schema of a reply: an object whose ``items`` holds exactly ``n`` items of the mode's shape.

    With ``categories`` (a taxonomy), ``category`` is restricted to them plus "Other".
    """
    fields = MODE_FIELDS[normalize_mode(mode)]
    category: dict[str, Any] = {"type": "string"}
    if categories:
        category["enum"] = allowed_categories(categories)
    item = {
        "type": "object",
        "properties": {**{f: {"type": "string"} for f in fields}, "category": category},
        "required": [*fields, "category"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"items": {"type": "array", "items": item, "minItems": n, "maxItems": n}},
        "required": ["items"],
        "additionalProperties": False,
    }


def reply_schema(mode: str, n: int, categories: Sequence[str] = (), *, describe: bool = False) -> Structured:
    """What a generation call's reply must be: ``n`` items of ``mode``; the client sends it in the endpoint's
    structured mode. ``describe``: the prompt states the shape in every mode (custom prompts)."""
    return Structured(f"{normalize_mode(mode)}_items", output_schema(mode, n, categories), always_describe=describe)


def format_instruction(mode: str, n: int, categories: Sequence[str] = ()) -> str:
    """The sentence that describes the reply's JSON in a prompt (an example and the JSON Schema)."""
    return reply_schema(mode, n, categories).describe()


class GeneratedItem(msgspec.Struct, frozen=True, kw_only=True):
    question: str  # the question, instruction or summarization request
    answer: str | None  # None in "question" mode
    category: str
    negative: bool = False  # an unanswerable question answered with NEGATIVE_ANSWER


class _QA(msgspec.Struct, forbid_unknown_fields=True):
    question: str
    answer: str
    category: str


class _Question(msgspec.Struct, forbid_unknown_fields=True):
    question: str
    category: str


class _Summary(msgspec.Struct, forbid_unknown_fields=True):
    instruction: str
    summary: str
    category: str


class _Instruction(msgspec.Struct, forbid_unknown_fields=True):
    instruction: str
    response: str
    category: str


_RawItem = _QA | _Question | _Summary | _Instruction


def _envelope(item: type) -> type:
    return msgspec.defstruct(f"{item.__name__}Reply", [("items", list[item])], forbid_unknown_fields=True)


_REPLY_TYPES = {
    "default": _envelope(_QA),
    "question": _envelope(_Question),
    "answer": _envelope(_QA),
    "summarization": _envelope(_Summary),
    "instruction_following": _envelope(_Instruction),
}

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def strip_wrapping(content: str) -> str:
    """The JSON inside a reply: <think> blocks removed, the first ``` fenced block's body if there is one."""
    text = _THINK_RE.sub("", content)
    if re.search(r"<think>", text, re.IGNORECASE):
        raise InvalidOutput("the reply's <think> block is never closed (truncated output?)")
    return fenced_json(text)


def parse_items(
    mode: str, content: str, n: int, *, categories: Sequence[str] = (), negatives: int | None = None
) -> list[GeneratedItem]:
    """Decode a reply into exactly ``n`` distinct, complete items, or raise InvalidOutput.

    ``categories``: when given, each item's category must be one of them or "Other"
    (matched case-insensitively, returned in the taxonomy's spelling).
    ``negatives``: when given, exactly that many items must answer NEGATIVE_ANSWER.
    """
    mode = normalize_mode(mode)
    if negatives and "answer" not in MODE_FIELDS[mode]:
        raise ValueError(f"generation_mode {mode!r} has no answers, so no unanswerable items")
    try:
        reply = msgspec.json.decode(strip_wrapping(content), type=_REPLY_TYPES[mode])
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise InvalidOutput(f"the reply is not the JSON asked for: {exc}") from None
    if len(reply.items) != n:
        raise InvalidOutput(f"asked for {n} items, got {len(reply.items)}")
    items = [_to_item(mode, raw, categories) for raw in reply.items]
    _check_distinct(items)
    _check_negatives(items, negatives)
    return items


def _to_item(mode: str, raw: _RawItem, categories: Sequence[str]) -> GeneratedItem:
    fields = MODE_FIELDS[mode]
    values = [getattr(raw, f).strip() for f in fields]
    category = raw.category.strip()
    for name, value in zip(fields + ("category",), values + [category], strict=True):
        if not value:
            raise InvalidOutput(f"an item has an empty {name!r}")
    answer = values[1] if len(values) > 1 else None
    negative = answer is not None and _is_negative(answer)
    return GeneratedItem(
        question=values[0],
        answer=NEGATIVE_ANSWER if negative else answer,
        category=_canonical_category(category, categories),
        negative=negative,
    )


def _is_negative(answer: str) -> bool:
    return _normalise(answer) == _normalise(NEGATIVE_ANSWER)


def _normalise(text: str) -> str:
    """Words only, in any script: word_re keeps the vowel signs ``\\w`` leaves out (Devanagari's, Thai's), so
    "दिन" (day) and "दान" (gift) stay two questions."""
    return " ".join(word_runs(text.lower()))


def _canonical_category(category: str, categories: Sequence[str]) -> str:
    if not categories:
        return category
    by_key = {c.casefold(): c for c in allowed_categories(categories)}
    if category.casefold() not in by_key:
        raise InvalidOutput(f"category {category!r} is not in the taxonomy")
    return by_key[category.casefold()]


def _check_distinct(items: list[GeneratedItem]) -> None:
    seen: set[str] = set()
    for item in items:
        key = _normalise(item.question)
        if key in seen:
            raise InvalidOutput(f"duplicate item: {item.question!r}")
        seen.add(key)


def _check_negatives(items: list[GeneratedItem], negatives: int | None) -> None:
    if negatives is None:
        return
    got = sum(item.negative for item in items)
    if got != negatives:
        raise InvalidOutput(f"asked for {negatives} unanswerable questions, got {got}")

