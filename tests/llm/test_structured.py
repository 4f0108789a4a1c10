"""Structured output modes (dsetlog.llm.structured): the request each mode sends, the step down, the forced mode."""

from __future__ import annotations

import pytest

from dsetlog.llm import structured
from dsetlog.llm.providers import ProviderError, resolve
from dsetlog.llm.structured import (
    JSON_OBJECT,
    JSON_OBJECT_SCHEMA,
    JSON_SCHEMA,
    MODES,
    TEXT,
    ModeBook,
    Structured,
    example_of,
    names_format,
)

SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {
        "type": "object", "properties": {"question": {"type": "string"}, "category": {"enum": ["A", "Other"]}},
        "required": ["question", "category"], "additionalProperties": False}}},
    "required": ["items"], "additionalProperties": False,
}
SPEC = Structured("qa_items", SCHEMA)
ASK = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Make two questions."}]


def test_each_mode_sends_its_own_request() -> None:
    messages, fmt = SPEC.request(JSON_SCHEMA, ASK)
    assert fmt == {"type": "json_schema", "json_schema": {"name": "qa_items", "strict": True, "schema": SCHEMA}}
    assert messages == ASK
    messages, fmt = SPEC.request(JSON_OBJECT_SCHEMA, ASK)
    assert fmt == {"type": "json_object", "schema": SCHEMA} and messages == ASK  # the server constrains decoding
    for mode, expected in ((JSON_OBJECT, {"type": "json_object"}), (TEXT, None)):
        messages, fmt = SPEC.request(mode, ASK)
        assert fmt == expected
        # the shape is described in the last user message, as an example and as the schema
        assert messages[0] == ASK[0] and messages[1]["content"].startswith("Make two questions.\n\n")
        assert '"question":"<question>"' in messages[1]["content"] and '"maxItems":2' in messages[1]["content"]
    assert ASK[1]["content"] == "Make two questions."  # the item's own messages are never changed


def test_a_custom_prompt_is_described_in_every_mode() -> None:
    spec = Structured("qa_items", SCHEMA, always_describe=True)
    for mode in MODES:
        messages, _ = spec.request(mode, ASK)
        assert "JSON Schema" in messages[-1]["content"], mode


def test_the_example_fills_the_shape_with_placeholders() -> None:
    example = example_of(SCHEMA)
    assert example == {"items": [{"question": "<question>", "category": "A"}] * 2}
    assert example_of({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1},
                                                        "x": {"type": ["null", "number"]}}}) == {"n": 1, "x": 0.5}


def test_the_book_steps_down_once_for_calls_refused_together() -> None:
    book = ModeBook()
    assert book.mode("http://h/v1", "m") == JSON_SCHEMA
    assert book.step_down("http://h/v1", "m", JSON_SCHEMA) == (JSON_OBJECT_SCHEMA, True)
    # a second call that was sent in json_schema before the first refusal came back: told the mode now
    assert book.step_down("http://h/v1", "m", JSON_SCHEMA) == (JSON_OBJECT_SCHEMA, False)
    assert book.mode("http://h/v1", "m") == JSON_OBJECT_SCHEMA
    assert book.mode("http://h/v1", "other-model") == JSON_SCHEMA  # per endpoint and model
    assert book.step_down("http://h/v1", "m", JSON_OBJECT_SCHEMA) == (JSON_OBJECT, True)
    assert book.step_down("http://h/v1", "m", JSON_OBJECT) == (TEXT, True)
    assert book.step_down("http://h/v1", "m", TEXT) == (None, False)  # nothing weaker: the refusal is the item's


def test_a_learned_mode_is_kept_at_its_weakest_and_a_forced_one_never_moves() -> None:
    book = ModeBook()
    book.learned("e", "m", JSON_OBJECT)
    book.learned("e", "m", JSON_OBJECT_SCHEMA)  # an older, stronger record does not undo the newer lesson
    assert book.mode("e", "m") == JSON_OBJECT
    book.force("e", "m", JSON_SCHEMA)
    assert book.mode("e", "m") == JSON_SCHEMA and book.step_down("e", "m", JSON_SCHEMA) == (None, False)


@pytest.mark.parametrize("text, body, expected", [
    ("1 validation error: Input should be 'text' or 'json_object'", None, True),
    ("Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.", None, True),
    ("This response_format type is unavailable now", None, True),
    ("bad", {"error": {"message": "bad", "param": "response_format.type"}}, True),
    ("Unsupported value: 'temperature' does not support 0.2 with this model.", {"error": {"param": "temperature"}},
     False),
    ("messages: field required", None, False),
])
def test_a_refusal_names_the_format_or_not(text: str, body: object, expected: bool) -> None:
    assert names_format(text, body) is expected


def test_profile_structured_forces_a_mode_and_a_wrong_one_is_a_clear_error() -> None:
    env = {"VLLM_STRUCTURED": "json_object"}
    assert resolve("vllm", env=env).structured_forced == JSON_OBJECT
    assert resolve("vllm", env={}).structured_forced is None
    assert resolve("deepseek", env={"DEEPSEEK_API_KEY": "k" * 20}).structured_default == JSON_OBJECT
    with pytest.raises(ProviderError, match="VLLM_STRUCTURED.*json_schema, json_object_schema, json_object, text"):
        resolve("vllm", env={"VLLM_STRUCTURED": "xml"})
    assert structured.check(TEXT) == TEXT
