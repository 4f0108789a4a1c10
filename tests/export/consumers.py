"""What the training tools check of a file, written down from their documentation and loaders (read, not
copied; none of them installs here within CI's time but Hugging Face datasets, which the tests use as is):

* OpenAI's chat fine-tuning format checks (the cookbook "Data preparation and analysis for chat model
  fine-tuning"), with the token count from the project's own estimate;
* LLaMA-Factory's dataset_info.json (data/README.md; DatasetAttr in src/llamafactory/data/parser.py) and
  what its alpaca and sharegpt converters read of a row (src/llamafactory/data/converter.py);
* axolotl's chat_template loader (src/axolotl/prompt_strategies/chat_template.py: field_messages,
  message_property_mappings, roles), given the mapping the README documents.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from dsetlog.llm.client import estimate_tokens

OPENAI_ROLES = ("system", "user", "assistant", "tool")
OPENAI_MESSAGE_KEYS = ("role", "content", "name", "function_call", "weight")
OPENAI_MAX_TOKENS = 16_385  # the cookbook's per-example limit


def openai_chat_errors(examples: Iterable[Any]) -> dict[str, int]:
    """The cookbook's format errors by kind (none: an empty dict), with assistant-last and the token limit."""
    errors: dict[str, int] = {}

    def err(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    for ex in examples:
        if not isinstance(ex, dict):
            err("data_type")
            continue
        if set(ex) != {"messages"}:
            err("example_unrecognized_key")
        messages = ex.get("messages")
        if not messages:
            err("missing_messages_list")
            continue
        for m in messages:
            if "role" not in m or "content" not in m:
                err("message_missing_key")
            if any(k not in OPENAI_MESSAGE_KEYS for k in m):
                err("message_unrecognized_key")
            if m.get("role") not in OPENAI_ROLES:
                err("unrecognized_role")
            if not isinstance(m.get("content"), str) or not m.get("content"):
                err("missing_content")
        if not any(m.get("role") == "assistant" for m in messages):
            err("example_missing_assistant_message")
        if messages[-1].get("role") != "assistant":
            err("assistant_not_last")
        if estimate_tokens(messages, 1) > OPENAI_MAX_TOKENS:
            err("too_many_tokens")
    return errors


# --- LLaMA-Factory ------------------------------------------------------------------------------------

LF_ENTRY_KEYS = {"hf_hub_url", "ms_hub_url", "script_url", "cloud_file_name", "file_name", "formatting", "ranking",
                 "subset", "split", "folder", "num_samples", "columns", "tags"}
LF_COLUMNS = {"prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos", "audios",
              "chosen", "rejected", "kto_tag"}
LF_TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"}
LF_DEFAULTS = {"prompt": "instruction", "query": "input", "response": "output", "messages": "conversations",
               "system": None, "role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
               "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}


def lf_attr(entry: Mapping[str, Any]) -> dict[str, Any]:
    """DatasetAttr as LLaMA-Factory's parser fills it from a dataset_info.json entry (unknown keys refused)."""
    assert set(entry) <= LF_ENTRY_KEYS, set(entry) - LF_ENTRY_KEYS
    assert entry.get("formatting", "alpaca") in ("alpaca", "sharegpt")
    columns, tags = entry.get("columns", {}), entry.get("tags", {})
    assert set(columns) <= LF_COLUMNS and set(tags) <= LF_TAGS
    return {**LF_DEFAULTS, "formatting": entry.get("formatting", "alpaca"), **columns, **tags}


def lf_convert(attr: Mapping[str, Any], example: Mapping[str, Any]) -> tuple[list[dict[str, str]], str, str]:
    """(prompt messages, response, system) as LLaMA-Factory's converter makes them; AssertionError where it
    would drop the example as broken."""
    if attr["formatting"] == "alpaca":
        query = [example[attr[c]] for c in ("prompt", "query") if example[attr[c]]]
        response = example[attr["response"]]
        assert isinstance(response, str)
        system = example[attr["system"]] if attr["system"] else ""
        return [{"role": "user", "content": "\n".join(query)}], response, system
    messages = list(example[attr["messages"]])
    role, content = attr["role_tag"], attr["content_tag"]
    system = ""
    if attr["system_tag"] and messages and messages[0][role] == attr["system_tag"]:
        system, messages = messages[0][content], messages[1:]
    accept = ((attr["user_tag"], attr["observation_tag"]), (attr["assistant_tag"], attr["function_tag"]))
    for i, m in enumerate(messages):
        assert m[role] in accept[i % 2], f"invalid role tag {m[role]!r} at turn {i}"
    assert len(messages) % 2 == 0, "invalid message count"
    aligned = [{"role": "user" if i % 2 == 0 else "assistant", "content": m[content]} for i, m in enumerate(messages)]
    return aligned[:-1], aligned[-1]["content"], system


def lf_remove_thought(content: str, thought_words: tuple[str, str] = ("<think>\n", "\n</think>\n\n")) -> str:
    """LLaMA-Factory's Template.remove_thought: what enable_thinking=False trains on."""
    pattern = re.compile(f"{re.escape(thought_words[0])}(.*?){re.escape(thought_words[1])}", re.DOTALL)
    return re.sub(pattern, "", content).lstrip("\n")


# --- axolotl ------------------------------------------------------------------------------------------

AXOLOTL_DEFAULT_ROLES = {"human": "user", "user": "user", "assistant": "assistant", "gpt": "assistant",
                         "system": "system", "tool": "tool"}


def axolotl_turns(config: Mapping[str, Any], row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The turns axolotl's chat_template strategy makes of a row under a dataset config (type chat_template)."""
    assert config["type"] == "chat_template"
    mappings = config.get("message_property_mappings") or {"role": "role", "content": "content",
                                                           "reasoning_content": "reasoning_content"}
    roles = ({s: t for t, sources in config["roles"].items() for s in sources} if config.get("roles")
             else AXOLOTL_DEFAULT_ROLES)
    messages = row[config.get("field_messages", "messages")]
    assert isinstance(messages, list), "Messages is null. Please check `field_messages`."
    turns = []
    for m in messages:
        turn = {key: m[value] for key, value in mappings.items() if m.get(value) is not None}
        turn["role"] = roles.get(turn["role"], turn["role"])
        turns.append(turn)
    return turns
