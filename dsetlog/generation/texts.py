"""The texts the generation pipeline and regeneration send to models, besides the prompt templates of
dsetlog.prompts: the repair of a reply that is not the JSON asked for, a chunk's topic line, the benchmark's
system message, and regeneration's prompts (a grounded answer, a new question, the improvement note)."""

from __future__ import annotations

from dsetlog.prompts import templates

REPAIR_PROMPT = """A model was asked for JSON but its reply is not usable ({problem}).
Rewrite the reply as the JSON asked for, keeping its content; invent nothing.

Reply to rewrite:
{reply}"""

BENCHMARK_SYSTEM = ("Answer the question from the text. Be brief: a short phrase or one sentence. If the text "
                    f"does not give the answer, reply exactly: {templates.NEGATIVE_ANSWER}")

TITLE_PROMPT = """Give the topic of this text in at most eight words. Reply with the topic only.

Text:
{text}"""

# --- regeneration ----------------------------------------------------------------------------------------

IMPROVE = """
A reviewer found the previous version wanting. Do better: correct what the feedback points out, keep what was
right, and stay faithful to {source}.

Previous {what}:
{old}
{feedback}"""

GROUNDED = """Using only the text below, {task}. If the text does not give the answer, reply exactly: {negative}
Reply with the {what} only.

Text:
{chunk}

{label}: {question}"""

NEW_QUESTION = """Write one question that the text below answers, different from this one: {question}
Reply with the question only.

Text:
{chunk}"""

# per generation mode: what a grounded regeneration is asked to do, what it writes, and the entry's label
GROUNDED_TASKS = {
    "summarization": ("follow the instruction", "summary", "Instruction"),
    "instruction_following": ("carry out the instruction", "response", "Instruction"),
}
