"""The prompt texts of document-grounded generation, and filling them in.

- The built-in templates by name (``TEMPLATES``), each written for one generation mode (``MODES``), and
  :func:`select_template`, which picks the one a run uses; :func:`default_prompts` for the API's config.
- :func:`render` fills ``{variable}`` placeholders without ``str.format``, so literal JSON braces in a
  template are left alone; :func:`placeholders` lists them; :func:`prompt_hash` versions a custom prompt.
- ``NEGATIVE_ANSWER``: the exact answer an unanswerable question gets, asked for here and checked by the parser.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

NEGATIVE_ANSWER = "The text does not say."

MODES = ("default", "question", "answer", "summarization", "instruction_following")
_MODE_ALIASES = {"qa": "default", "instruction following": "instruction_following"}
MODE_NAMES = MODES + tuple(_MODE_ALIASES)  # what a request may name (a schema's enum)


def normalize_mode(mode: str) -> str:
    """The canonical mode name ("qa" is "default"); ValueError naming the modes otherwise."""
    canonical = _MODE_ALIASES.get(mode, mode)
    if canonical not in MODES:
        raise ValueError(f"unknown generation mode {mode!r}; choose one of: {', '.join(MODES)} (or 'qa')")
    return canonical


# --- templates --------------------------------------------------------------------------

_HEADER = """\
You are writing {what} for {purpose}, for {audience}.
Write for the {domain} domain, at this complexity level: {complexity_level}.
"""

_FOOTER = """\
Give each item a category: {categories}.

Reply with JSON only, in this shape: {shape}

Text:
{chunk}"""


def _template(what: str, task: str, shape: str) -> str:
    # the header's {what} and the footer's {shape} are fixed per template, not render variables
    header = _HEADER.replace("{what}", what)
    return header + "\n" + task + "\n" + _FOOTER.replace("{shape}", shape)


_QA_SHAPE = '{"items": [{"question": "...", "answer": "...", "category": "..."}]}'

TEMPLATES: dict[str, str] = {
    "qa_pairs": _template(
        "question-answer pairs",
        """\
Write {n} distinct question-answer pairs from the text below.
{question_style}
{answer_style}
{extraction_rules}
Each question must ask something the others do not, and make sense without seeing the text (name the \
subject, never "the text" or "this passage").
{negatives}""",
        _QA_SHAPE,
    ),
    "evaluation_qa": _template(
        "evaluation questions with reference answers",
        """\
Write {n} distinct questions with reference answers from the text below.
{question_style}
Each question must have one unambiguous correct answer and make sense without seeing the text.
{answer_style}
Make each answer a precise reference that a grader can compare against.
{extraction_rules}
Make the items vary in difficulty, from recalling one fact to combining several.
{negatives}""",
        _QA_SHAPE,
    ),
    "default": _template(
        "question-answer pairs",
        """\
Generate {n} question-answer pairs from the text below, all different.
{question_style}
{answer_style}
{extraction_rules}
{negatives}""",
        _QA_SHAPE,
    ),
    "question": _template(
        "questions",
        """\
Write {n} distinct questions that the text below answers.
{question_style}
{extraction_rules}
Each question must make sense without seeing the text (name the subject, never "the text").""",
        '{"items": [{"question": "...", "category": "..."}]}',
    ),
    "answer": _template(
        "answers to questions",
        f"""\
Answer each of these {{n}} questions from the text below:
{{questions}}
{{answer_style}}
{{extraction_rules}}
Answer exactly "{NEGATIVE_ANSWER}" when the text does not answer a question.
Keep each question unchanged in "question", in the same order.""",
        _QA_SHAPE,
    ),
    # "answer" mode without given questions: the questions a reader of the text would ask, answered from it
    "reader_questions": _template(
        "questions a reader would ask, with their answers",
        """\
Read the text below as its reader would, and write the {n} questions that reader would most want it to \
answer, all different; then answer each one from the text alone.
{question_style}
{answer_style}
{extraction_rules}
Each question must make sense without seeing the text (name the subject, never "the text" or "this \
passage"), and each answer must say only what the text says.
{negatives}""",
        _QA_SHAPE,
    ),
    "summarization": _template(
        "summarization examples",
        """\
Write {n} distinct summarization tasks on the text below. Each has an "instruction" asking for a summary \
of the text or of one aspect of it (vary the aspect, length and form, and name the subject), and a \
"summary" that carries it out.
{answer_style}
{extraction_rules}""",
        '{"items": [{"instruction": "...", "summary": "...", "category": "..."}]}',
    ),
    "instruction_following": _template(
        "instruction-following examples",
        """\
Write {n} distinct instructions a user could give about the subject of the text below (explain, compare, \
list, rewrite, apply to a case, ...), each with the "response" a helpful assistant would give.
Each instruction must make sense without seeing the text.
{answer_style}
{extraction_rules}""",
        '{"items": [{"instruction": "...", "response": "...", "category": "..."}]}',
    ),
}

TEMPLATE_MODES = {
    "qa_pairs": "default",
    "evaluation_qa": "default",
    "default": "default",
    "question": "question",
    "answer": "answer",
    "reader_questions": "answer",
    "summarization": "summarization",
    "instruction_following": "instruction_following",
}
MODE_TEMPLATES = {
    "default": "qa_pairs",
    "question": "question",
    "answer": "answer",
    "summarization": "summarization",
    "instruction_following": "instruction_following",
}
DEFAULT_PROMPT_NAME = "qa_pairs"  # POST /generate's default prompt_name


GIVEN_QUESTIONS, READER_QUESTIONS = "answer", "reader_questions"  # "answer" mode's two templates


def select_template(mode: str, prompt_name: str = DEFAULT_PROMPT_NAME, *,
                    questions_given: bool = True) -> tuple[str, str]:
    """(name, text) of the built-in template for a run.

    The request default ``qa_pairs`` stands for "the mode's own template", so
    ``generation_mode="question"`` alone asks for questions. A template named
    explicitly must be written for the mode: its reply shape must match the schema.
    "answer" mode has two: ``answer`` answers the questions given, ``reader_questions``
    (``questions_given`` False) writes the questions a reader would ask and answers them.
    """
    mode = normalize_mode(mode)
    if prompt_name not in TEMPLATES:
        raise ValueError(f"unknown prompt {prompt_name!r}; built-in prompts: {', '.join(TEMPLATES)}")
    if mode == "answer":
        wanted = GIVEN_QUESTIONS if questions_given else READER_QUESTIONS
        if prompt_name in (GIVEN_QUESTIONS, READER_QUESTIONS) and prompt_name != wanted:
            raise ValueError(f"prompt {prompt_name!r} is for answer mode {'without' if questions_given else 'with'} "
                             f"questions; use {wanted!r}, or {'leave out' if questions_given else 'give'} questions")
        if prompt_name == DEFAULT_PROMPT_NAME:
            return wanted, TEMPLATES[wanted]
    if TEMPLATE_MODES[prompt_name] == mode:
        return prompt_name, TEMPLATES[prompt_name]
    if prompt_name == DEFAULT_PROMPT_NAME:
        name = MODE_TEMPLATES[mode]
        return name, TEMPLATES[name]
    raise ValueError(
        f"prompt {prompt_name!r} is written for generation_mode {TEMPLATE_MODES[prompt_name]!r}, "
        f"not {mode!r}; use {MODE_TEMPLATES[mode]!r} or a custom prompt"
    )


_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholders(template: str) -> set[str]:
    """The ``{name}`` placeholders a template uses."""
    return set(_PLACEHOLDER_RE.findall(template))


def render(template: str, variables: Mapping[str, object]) -> str:
    """Fill the template's ``{name}`` placeholders that ``variables`` has; leave every other brace alone.

    One pass, so a value that itself contains ``{n}`` (a chunk of code, say) is not
    expanded again. A line holding only a placeholder whose value is empty is
    dropped. Requirements a custom template may lack are appended: the negatives
    instruction (when there is one) and the chunk, under a "Text:" label.
    """
    used = placeholders(template)
    lines = []
    for line in template.split("\n"):
        alone = _PLACEHOLDER_RE.fullmatch(line.strip())
        if alone and alone.group(1) in variables and _text(variables[alone.group(1)]) == "":
            continue
        lines.append(_PLACEHOLDER_RE.sub(lambda m: _fill(m, variables), line))
    out = "\n".join(lines).rstrip()
    if "negatives" not in used and _text(variables.get("negatives", "")):
        out += "\n" + _text(variables["negatives"])
    if "chunk" not in used and "chunk" in variables:
        out += "\n\nText:\n" + _text(variables["chunk"])
    return out


def _fill(match: re.Match[str], variables: Mapping[str, object]) -> str:
    name = match.group(1)
    return _text(variables[name]) if name in variables else match.group(0)


def _text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def prompt_hash(content: str) -> str:
    """Short sha256 hex of a prompt's text: custom prompts are versioned by it."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]


def default_prompts() -> dict[str, str]:
    """The default template of each kind of generation, by the names GET /config/default-prompts uses."""
    return {
        "instruction following": TEMPLATES["instruction_following"],
        "question and answer": TEMPLATES["qa_pairs"],
        "summarization": TEMPLATES["summarization"],
    }
