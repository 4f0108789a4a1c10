"""A project's generation parameters and what they do to a run.

- :class:`ProjectParameters` (POST /datasets/parameters) with its choices (styles, complexity levels,
  augmentations) and ``HIGH_LEVEL_PROMPT_CONFIG``, the options the API offers for them.
- :func:`variables_from` turns them into template variables: styles, extraction rules, categories and the
  negatives become instructions.
- :func:`plan_negatives` (negativity_ratio: how many items of a call are unanswerable) and :func:`augment`
  (data_augmentation: rule-based variants of a question), both deterministic per key and seed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import msgspec

from dsetlog.prompts.templates import NEGATIVE_ANSWER

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

# Not blank: a character that is no space to Python (str.strip) nor to JSON Schema's ECMA-262 regexes (whose
# \s lacks \x1c-\x1f and \x85 and has \ufeff), so the document and the server agree on every string.
NOT_BLANK = r"[^\s\x1c-\x1f\x85\ufeff]"
NonEmpty = Annotated[str, msgspec.Meta(min_length=1, pattern=NOT_BLANK)]
Ratio = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
# the choices as types: the OpenAPI document lists them, and decoding refuses any other
QuestionStyle = Literal[tuple(QUESTION_STYLES)]  # type: ignore[valid-type]
AnswerStyle = Literal[tuple(ANSWER_STYLES)]  # type: ignore[valid-type]
ComplexityLevel = Literal[tuple(COMPLEXITY_LEVELS)]  # type: ignore[valid-type]
Augmentation = Literal[AUGMENTATIONS]  # type: ignore[valid-type]


class ProjectParameters(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A project's saved generation parameters: every field of POST /datasets/parameters but project_id."""

    purpose: NonEmpty
    audience: NonEmpty
    dataset_format: NonEmpty  # the export format_type a run of this project uses unless it names one
    extraction_rules: NonEmpty = "default"
    question_style: QuestionStyle = "factual"
    answer_style: AnswerStyle = "comprehensive"
    negativity_ratio: Ratio = 0.1
    data_augmentation: Augmentation = "none"
    custom_audience: str | None = None
    custom_purpose: str | None = None
    complexity_level: ComplexityLevel = "intermediate"
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


# --- the options offered for them (GET /datasets/config/high-level-prompts) ---------------

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
