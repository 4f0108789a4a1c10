"""What an export is asked to do beyond its format: how reasoning goes into the instruction formats, whether
they carry the text an entry was made from (and so its negatives), a BOM for Excel's CSV reader.

One :class:`ExportOptions` travels from `dset generate`, `dset export`, POST /datasets/generate and
GET /datasets/{id}/download to the writers; :meth:`ExportOptions.check` refuses, with a message naming the
option, a choice the formats asked for cannot carry (never an option accepted and ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dsetlog.errors import UsageError

# The formats a trainer reads as prompt and response (LLaMA-Factory, axolotl, OpenAI's fine-tuning); the full
# formats (jsonl, parquet, csv) keep every field, reasoning and negatives included, in their own columns.
INSTRUCTION_FORMATS = ("alpaca", "sharegpt", "openai-chat")
MESSAGE_FORMATS = ("sharegpt", "openai-chat")  # whose assistant turn is a message that can hold a field

# omit: the answer alone (the default: what OpenAI's fine-tuning checks accept and an answer-only model learns);
# think: "<think>\n...\n</think>\n\n" before the answer, LLaMA-Factory's thought words (its reasoning templates
# and enable_thinking read them; axolotl's split_thinking too); field: reasoning_content on the assistant
# message, as axolotl's chat_template loader and reasoning templates (qwen3) read it.
REASONING_MODES = ("omit", "think", "field")
DEFAULT_REASONING = "omit"
# none: the question alone, and the negatives (answer "The text does not say.") left out, since without the
# text they teach a refusal with no reason for it; chunk: every entry with the text it was made from (alpaca
# input, after the question in the user message), negatives included: a reading-comprehension set.
CONTEXT_MODES = ("none", "chunk")
DEFAULT_CONTEXT = "none"


class ExportError(UsageError, ValueError):
    """The export cannot be written as asked (an unknown format, an option its format cannot carry); the
    message says what to give instead."""


@dataclass(frozen=True)
class ExportOptions:
    """The choices of one export. ``systems`` and ``chunk_text`` are filled by the exporter from the dataset:
    the system prompt of each run that sent one (by run id: a run's entries have its prompt, and the read
    model keeps it once per run, not once per entry), and the text of a source chunk by its id."""

    reasoning: str = DEFAULT_REASONING
    context: str = DEFAULT_CONTEXT
    csv_bom: bool = False
    systems: Mapping[str, str] = field(default_factory=dict)
    chunk_text: Callable[[str], str | None] | None = None

    @property
    def system_column(self) -> bool:
        """Whether alpaca has a ``system`` column: on every row when any entry has a prompt (one schema)."""
        return bool(self.systems)

    def system_of(self, e: Any) -> str:
        """The system prompt the entry's run sent ("" for none)."""
        return self.systems.get(e.run_id, "") if self.systems else ""

    def check(self, formats: Iterable[str]) -> None:
        """Refuse what none of ``formats`` can carry, or what one of them cannot."""
        formats = list(formats)
        if self.reasoning not in REASONING_MODES:
            raise ExportError(f"reasoning {self.reasoning!r} is not one of {', '.join(REASONING_MODES)}")
        if self.context not in CONTEXT_MODES:
            raise ExportError(f"context {self.context!r} is not one of {', '.join(CONTEXT_MODES)}")
        instruction = [f for f in formats if f in INSTRUCTION_FORMATS]
        for name, value, default in (("reasoning", self.reasoning, DEFAULT_REASONING),
                                     ("context", self.context, DEFAULT_CONTEXT)):
            if value != default and not instruction:
                raise ExportError(f"{name} {value!r} applies to the instruction formats ({', '.join(INSTRUCTION_FORMATS)}); "
                                  f"{', '.join(formats)} keep every field in its own column")
        if self.reasoning == "field" and "alpaca" in formats:
            raise ExportError("reasoning 'field' puts reasoning_content on assistant messages (sharegpt, openai-chat); "
                              "alpaca has none: give reasoning 'think' for alpaca")
        if self.csv_bom and not {"csv"} & set(formats):
            raise ExportError("the CSV BOM (utf-8-sig, for Excel) applies to the csv format only")
