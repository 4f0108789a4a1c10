"""Prompts for document-grounded generation, and strict parsing of what comes back.

- Built-in templates by name (``TEMPLATES``), each written for one generation mode.
- ``render`` fills ``{variable}`` placeholders without ``str.format``, so literal
  JSON braces in a template are left alone.
- ``ProjectParameters`` (POST /parameters) become template variables with
  ``variables_from``: styles, extraction rules and negatives become instructions.
- ``output_schema`` / ``reply_schema`` ask for exactly ``n`` items in one call;
  ``parse_items`` decodes the reply strictly and raises ``InvalidOutput`` (a
  retryable failure for the caller) on anything else.
- ``plan_negatives`` and ``augment`` implement negativity_ratio and data_augmentation.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import msgspec

from dsetlog.errors import DsetError
from dsetlog.llm.structured import Structured, fenced_json

NEGATIVE_ANSWER = "The text does not say."

MODES = ("default", "question", "answer", "summarization", "instruction_following")
_MODE_ALIASES = {"qa": "default", "instruction following": "instruction_following"}


class InvalidOutput(DsetError, ValueError):
    """A model reply that does not match what was asked for; worth another attempt."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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


def select_template(mode: str, prompt_name: str = DEFAULT_PROMPT_NAME) -> tuple[str, str]:
    """(name, text) of the built-in template for a run.

    The request default ``qa_pairs`` stands for "the mode's own template", so
    ``generation_mode="question"`` alone asks for questions. A template named
    explicitly must be written for the mode: its reply shape must match the schema.
    """
    mode = normalize_mode(mode)
    if prompt_name not in TEMPLATES:
        raise ValueError(f"unknown prompt {prompt_name!r}; built-in prompts: {', '.join(TEMPLATES)}")
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


# --- project parameters -------------------------------------------------------------

QUESTION_STYLES = {
    "factual": "Make the questions factual: about what the text states directly (what, who, when, where, "
    "how much).",
    "analytical": "Make the questions analytical: they need reasoning over the text (causes, comparisons, "
    "consequences, why and how).",
    "case_based": "Make the questions case-based: each describes a short realistic scenario and asks what "
    "applies to it according to the text.",
}
ANSWER_STYLES = {
    "concise": "Answer concisely: one or two sentences with just the answer.",
    "comprehensive": "Answer comprehensively: full sentences covering every relevant detail the text gives.",
    "step_by_step": "Answer step by step: numbered steps or reasoning that lead to the conclusion.",
}
COMPLEXITY_LEVELS = {
    "basic": "basic (plain words, one fact at a time, no jargon)",
    "beginner": "beginner (plain words, one fact at a time, no jargon)",
    "intermediate": "intermediate (some domain terms, connecting two or three facts)",
    "advanced": "advanced (precise terminology, multi-step reasoning)",
    "expert": "expert (specialist depth, subtle distinctions and edge cases)",
}
AUGMENTATIONS = ("none", "paraphrase", "synonym_replacement")

DEFAULT_PURPOSE = "training a language model"
DEFAULT_AUDIENCE = "general readers"

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Ratio = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class ProjectParameters(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A project's saved generation parameters: every field of POST /datasets/parameters but project_id."""

    purpose: NonEmpty
    audience: NonEmpty
    dataset_format: NonEmpty  # the export format_type a run of this project uses unless it names one
    extraction_rules: NonEmpty = "default"
    question_style: str = "factual"
    answer_style: str = "comprehensive"
    negativity_ratio: Ratio = 0.1
    data_augmentation: str = "none"
    custom_audience: str | None = None
    custom_purpose: str | None = None
    complexity_level: str = "intermediate"
    domain: NonEmpty = "general"

    def __post_init__(self) -> None:
        # msgspec checks the Meta constraints when decoding JSON; these also hold for direct construction
        for field in ("purpose", "audience", "dataset_format", "extraction_rules", "domain"):
            if not getattr(self, field).strip():
                raise ValueError(f"{field} must not be empty")
        if not 0.0 <= self.negativity_ratio <= 1.0:
            raise ValueError(f"negativity_ratio must be between 0 and 1 (got {self.negativity_ratio})")
        _check_choice("question_style", self.question_style, QUESTION_STYLES)
        _check_choice("answer_style", self.answer_style, ANSWER_STYLES)
        _check_choice("complexity_level", self.complexity_level, COMPLEXITY_LEVELS)
        _check_choice("data_augmentation", self.data_augmentation, AUGMENTATIONS)


def _check_choice(field: str, value: str, choices: Sequence[str] | Mapping[str, str]) -> None:
    if value not in choices:
        raise ValueError(f"{field} {value!r} is not one of: {', '.join(choices)}")


def _humanize(value: str) -> str:
    """``medical_qa_training`` reads as "medical qa training" in a prompt."""
    return value.replace("_", " ").strip()


def variables_from(
    params: ProjectParameters | None,
    *,
    n: int,
    categories: Sequence[str],
    negatives: int = 0,
    questions: Sequence[str] = (),
) -> dict[str, str]:
    """Template variables for one call (the caller adds ``chunk``).

    ``negatives``: how many of the ``n`` items must be unanswerable (see plan_negatives).
    ``questions``: the questions to answer in "answer" mode; there must be ``n`` of them.
    """
    params = params or ProjectParameters(
        purpose=DEFAULT_PURPOSE, audience=DEFAULT_AUDIENCE, dataset_format="jsonl"
    )
    _check_counts(n, negatives, questions)
    variables = {
        "n": str(n),
        "purpose": _humanize(params.custom_purpose or params.purpose),
        "audience": _humanize(params.custom_audience or params.audience),
        "domain": _humanize(params.domain),
        "complexity_level": COMPLEXITY_LEVELS[params.complexity_level],
        "question_style": QUESTION_STYLES[params.question_style],
        "answer_style": ANSWER_STYLES[params.answer_style],
        "extraction_rules": _extraction_rules(params.extraction_rules),
        "categories": _categories_text(categories),
        "negatives": _negatives_text(negatives, n),
    }
    if questions:
        variables["questions"] = "\n".join(f"{i}. {q.strip()}" for i, q in enumerate(questions, 1))
    return variables


def _check_counts(n: int, negatives: int, questions: Sequence[str]) -> None:
    if n < 1:
        raise ValueError(f"n must be at least 1 (got {n})")
    if not 0 <= negatives <= n:
        raise ValueError(f"negatives must be between 0 and n={n} (got {negatives})")
    if questions and len(questions) != n:
        raise ValueError(f"{len(questions)} questions given for n={n}")


def _extraction_rules(rules: str) -> str:
    base = "Use only information stated in the text; add no outside knowledge."
    if rules.strip() == "default":
        return base
    return f"{base} Follow these extraction rules: {_humanize(rules)}."


def _categories_text(categories: Sequence[str]) -> str:
    if not categories:
        return "a short topic label (one to three words) of your choosing"
    names = ", ".join(allowed_categories(categories))
    return f'one of: {names} (use "Other" when none fits)'


def allowed_categories(categories: Sequence[str]) -> list[str]:
    """The taxonomy's categories plus "Other", the category for items that fit none."""
    names = [c for c in dict.fromkeys(c.strip() for c in categories) if c]
    return names if "Other" in names else [*names, "Other"]


def _negatives_text(negatives: int, n: int) -> str:
    if negatives == 0:
        return ""
    which = "all of the questions" if negatives == n else f"exactly {negatives} of the {n} questions"
    return (
        f"Make {which} ones whose answer the text does not give (plausible for the subject, yet not "
        f'answered by the text); answer each of those exactly: "{NEGATIVE_ANSWER}"'
    )


# --- high-level configuration (GET /config/high-level-prompts, /config/default-prompts) ---

HIGH_LEVEL_PROMPT_CONFIG: dict[str, list[str]] = {
    "audience_defaults": [
        "general readers", "students", "healthcare professionals", "researchers", "software developers",
        "legal professionals", "business analysts", "educators",
    ],
    "purpose_defaults": [
        "fine-tuning", "question answering", "evaluation", "patient education", "research",
        "customer support", "training materials",
    ],
    "complexity_options": ["beginner", "intermediate", "advanced", "expert"],
    "domain_defaults": ["general", "medicine", "law", "finance", "technology", "science", "education"],
    "question_style_options": list(QUESTION_STYLES),
    "answer_style_options": list(ANSWER_STYLES),
    "data_augmentation_options": list(AUGMENTATIONS),
}  # fmt: skip


def default_prompts() -> dict[str, str]:
    """The default template of each kind of generation, by the names GET /config/default-prompts uses."""
    return {
        "instruction following": TEMPLATES["instruction_following"],
        "question and answer": TEMPLATES["qa_pairs"],
        "summarization": TEMPLATES["summarization"],
    }


# --- structured output -------------------------------------------------------------------

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
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


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


# --- negativity_ratio ---------------------------------------------------------------------


def plan_negatives(n: int, ratio: float, *, key: str) -> int:
    """How many of ``n`` items must be unanswerable questions.

    ``n * ratio`` rounded down, plus one more when a hash of ``key`` (the chunk's work
    key) falls under the fractional part: deterministic per chunk, and over many
    chunks the share of negatives converges to ``ratio`` (plain rounding would give
    0 of 3 at ratio 0.1 for every chunk).
    """
    if n < 0:
        raise ValueError(f"n must not be negative (got {n})")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"negativity_ratio must be between 0 and 1 (got {ratio})")
    expected = n * ratio
    whole = math.floor(expected + 1e-9)  # 0.1 * 10 is 1.0000000000000002 or 0.9999999999999999
    fraction = max(0.0, expected - whole)
    return whole + (1 if fraction > 1e-9 and _unit(key) < fraction else 0)


def _unit(key: str) -> float:
    """A uniform number in [0, 1) from a key."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


# --- data_augmentation ---------------------------------------------------------------------

# One-word swaps that keep a question grammatical; alternatives are chosen by the seed.
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "main": ("primary", "principal"),
    "important": ("significant", "key"),
    "common": ("frequent", "typical"),
    "purpose": ("aim", "goal"),
    "benefit": ("advantage",),
    "benefits": ("advantages",),
    "problem": ("issue",),
    "problems": ("issues",),
    "method": ("approach", "technique"),
    "methods": ("approaches", "techniques"),
    "example": ("instance",),
    "examples": ("instances",),
    "result": ("outcome",),
    "results": ("outcomes",),
    "role": ("function",),
    "type": ("kind",),
    "types": ("kinds",),
    "symptoms": ("signs",),
    "affect": ("influence",),
    "affects": ("influences",),
    "increase": ("raise",),
    "reduce": ("lower", "decrease"),
    "quickly": ("rapidly",),
    "different": ("distinct",),
    "describe": ("explain",),
    "explain": ("describe",),
    "show": ("demonstrate",),
    "shows": ("demonstrates",),
    "use": ("employ",),
    "uses": ("employs",),
    "begin": ("start",),
    "start": ("begin",),
    "large": ("big",),
    "small": ("little",),
    "risk": ("danger",),
    "risks": ("dangers",),
    "cause": ("reason",),
    "causes": ("reasons",),
    "goal": ("aim",),
    "help": ("assist",),
    "helps": ("assists",),
}

_OPENER_WORDS = frozenset("does do can could did is are was were what where who explain describe".split())
_PREPOSITIONS = frozenset("for of to in on with by from about at into as".split())


def _opener_rules() -> list[tuple[re.Pattern[str], tuple[str, ...]]]:
    """Rewrites of common question openers; each keeps the rest of the question as it is."""
    rules = [
        (r"how (does|do|can|did|is|are) (.+)\?", ("In what way {0} {1}?",)),
        (r"why (does|do|did|is|are|was|were|can) (.+)\?", ("For what reason {0} {1}?",)),
        (r"when (did|was|were|does|do|is) (.+)\?", ("At what point {0} {1}?",)),
        (r"what does (.+) mean\?", ("What is meant by {0}?", "What is the meaning of {0}?")),
        (r"which (.+)\?", ("What {0}?",)),
        (r"(explain|describe) (.+?)[.?]?", ("Can you {0} {1}?", "Could you {0} {1}?")),
        (r"(what|where|who) (is|are|was|were) (.+)\?", ("Could you tell me {0} {2} {1}?", "Do you know {0} {2} {1}?")),
        (r"(can|could) you (.+)\?", ("Would you {1}?",)),
    ]  # fmt: skip
    return [(re.compile(pattern, re.IGNORECASE), templates) for pattern, templates in rules]


_OPENERS = _opener_rules()


def augment(question: str, technique: str, *, seed: str) -> str | None:
    """A variant of ``question`` made by ``technique``, or None when it would not change.

    "synonym_replacement" swaps words from a small synonym table; "paraphrase" also
    rewrites a common opener ("Why does X?" -> "For what reason does X?"). Rule-based
    and deterministic: the same question, technique and seed give the same variant.
    "none" makes no variant.
    """
    if technique not in AUGMENTATIONS:
        raise ValueError(
            f"unknown data_augmentation {technique!r}; choose one of: {', '.join(AUGMENTATIONS)}"
        )
    if technique == "none":
        return None
    text = question.strip()
    if technique == "paraphrase":
        text = _rewrite_opener(text, seed)
    text = _replace_synonyms(text, seed)
    return text if text != question.strip() else None


def _pick(options: Sequence[str], seed: str, salt: str) -> str:
    return options[int(_unit(f"{seed}\x00{salt}") * len(options))]


def _rewrite_opener(text: str, seed: str) -> str:
    for pattern, templates in _OPENERS:
        match = pattern.fullmatch(text)
        if not match or _ends_awkwardly(match.groups()[-1]):
            continue
        # opener words are lowercased mid-sentence; the subject keeps its case ("DNA", "Paris")
        groups = [g.lower() if g.lower() in _OPENER_WORDS else g for g in match.groups()]
        rewritten = _pick(templates, seed, "opener").format(*groups)
        return rewritten[0].upper() + rewritten[1:]
    return text


def _ends_awkwardly(rest: str) -> bool:
    """Moving a verb after ``rest`` reads badly when ``rest`` ends in a preposition ("What is X used for?")."""
    words = rest.split()
    return bool(words) and words[-1].lower() in _PREPOSITIONS


def _replace_synonyms(text: str, seed: str) -> str:
    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        options = _SYNONYMS.get(word.lower())
        if not options:
            return word
        chosen = _pick(options, seed, f"{match.start()}:{word.lower()}")
        return chosen.capitalize() if word[0].isupper() else chosen

    return re.sub(r"[A-Za-z]+", swap, text)
