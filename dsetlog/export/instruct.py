"""The rows of the instruction formats (alpaca, sharegpt, openai-chat) as the trainers read them.

* alpaca: ``instruction``, ``input``, ``output`` and, when the dataset has a system prompt, ``system`` on every
  row (LLaMA-Factory's columns prompt, query, response, system).
* sharegpt: ``conversations`` of ``{"from", "value"}`` turns, system / human / gpt (LLaMA-Factory's default tags;
  axolotl's chat_template loader with the mapping the README gives).
* openai-chat: ``messages`` of ``{"role", "content"}``, system / user / assistant, as OpenAI's fine-tuning takes.

A system prompt is a first system turn only where the entry's run sent one: an empty system message would be
replaced by the trainer's template default anyway, and OpenAI's checks count it as a message with no content.
"""

from __future__ import annotations

from typing import Any

from dsetlog.evaluation.scoring import is_rejection
from dsetlog.export.options import ExportOptions
from dsetlog.prompts.templates import NEGATIVE_ANSWER

# LLaMA-Factory's thought words: its templates find (and with enable_thinking=False remove) reasoning by them
THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n\n"
_NEGATIVE_LEN = 4 * len(NEGATIVE_ANSWER)  # longer than this, an answer cannot normalise to NEGATIVE_ANSWER


def is_negative(e: Any) -> bool:
    """An entry made to be unanswerable from its text, or answering that the text does not say."""
    # the length first: normalising every long answer of a million-entry export would cost seconds
    return bool((e.metadata or {}).get("negative")) or (len(e.answer) <= _NEGATIVE_LEN and is_rejection(e.answer))


def kept(e: Any, opts: ExportOptions) -> bool:
    """Whether the entry goes into an instruction format: a negative only with the text it refers to."""
    return opts.context == "chunk" or not is_negative(e)


def context_of(e: Any, opts: ExportOptions) -> str:
    """The text the entry was made from, when the export carries it and the entry has one."""
    if opts.context != "chunk" or not e.source_chunk or opts.chunk_text is None:
        return ""
    return opts.chunk_text(e.source_chunk) or ""


def user_text(e: Any, opts: ExportOptions) -> str:
    """The user turn: the question, then its text (LLaMA-Factory joins alpaca's instruction and input so too)."""
    context = context_of(e, opts)
    return f"{e.question}\n\n{context}" if context else e.question


def response(e: Any, opts: ExportOptions) -> str:
    """The answer, after the reasoning in think tags when asked for and there is some."""
    if opts.reasoning == "think" and e.reasoning:
        return f"{THINK_OPEN}{e.reasoning.strip()}{THINK_CLOSE}{e.answer}"
    return e.answer


def alpaca_row(e: Any, opts: ExportOptions) -> dict[str, Any]:
    row = {"instruction": e.question, "input": context_of(e, opts), "output": response(e, opts)}
    if opts.system_column:
        row["system"] = opts.system_of(e)
    return row


# How each conversation format spells a turn: its list's key, its role and content keys, its role names.
_SHAREGPT = ("conversations", "from", "value", ("system", "human", "gpt"))
_OPENAI_CHAT = ("messages", "role", "content", ("system", "user", "assistant"))


def _conversation(e: Any, opts: ExportOptions, shape: tuple[str, str, str, tuple[str, str, str]]) -> dict[str, Any]:
    key, role, content, (system_role, user_role, assistant_role) = shape
    system = opts.system_of(e)
    turns = [{role: system_role, content: system}] if system else []
    turns.append({role: user_role, content: user_text(e, opts)})
    assistant = {role: assistant_role, content: response(e, opts)}
    if opts.reasoning == "field":  # on every assistant turn, "" when none: one schema for the whole file
        assistant["reasoning_content"] = e.reasoning
    turns.append(assistant)
    return {key: turns}


def sharegpt_row(e: Any, opts: ExportOptions) -> dict[str, Any]:
    return _conversation(e, opts, _SHAREGPT)


def openai_chat_row(e: Any, opts: ExportOptions) -> dict[str, Any]:
    return _conversation(e, opts, _OPENAI_CHAT)
