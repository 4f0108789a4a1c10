"""Prompt texts, the parameters that fill them, and parsing the replies they ask for.

- :mod:`dsetlog.prompts.templates`: the built-in templates, choosing one, rendering, placeholders, prompt_hash.
- :mod:`dsetlog.prompts.parameters`: ProjectParameters and its choices, variables_from, plan_negatives, augment.
- :mod:`dsetlog.prompts.replies`: the reply's schema, parse_items, GeneratedItem and InvalidOutput.

Import names from those modules. The package also re-exports their public names, for the generators, which
use many of them as ``prompts.X`` (``from dsetlog import prompts``); that is the only reason it does.
"""

from dsetlog.prompts.parameters import (
    ANSWER_STYLES,
    AUGMENTATIONS,
    COMPLEXITY_LEVELS,
    DEFAULT_AUDIENCE,
    DEFAULT_PURPOSE,
    HIGH_LEVEL_PROMPT_CONFIG,
    QUESTION_STYLES,
    ProjectParameters,
    allowed_categories,
    augment,
    plan_negatives,
    variables_from,
)
from dsetlog.prompts.replies import (
    MODE_FIELDS,
    GeneratedItem,
    InvalidOutput,
    format_instruction,
    output_schema,
    parse_items,
    reply_schema,
    strip_wrapping,
)
from dsetlog.prompts.templates import (
    DEFAULT_PROMPT_NAME,
    MODE_TEMPLATES,
    MODES,
    NEGATIVE_ANSWER,
    TEMPLATE_MODES,
    TEMPLATES,
    default_prompts,
    normalize_mode,
    placeholders,
    prompt_hash,
    render,
    select_template,
)

__all__ = [
    "ANSWER_STYLES", "AUGMENTATIONS", "COMPLEXITY_LEVELS", "DEFAULT_AUDIENCE", "DEFAULT_PROMPT_NAME",
    "DEFAULT_PURPOSE", "HIGH_LEVEL_PROMPT_CONFIG", "MODES", "MODE_FIELDS", "MODE_TEMPLATES", "NEGATIVE_ANSWER",
    "QUESTION_STYLES", "TEMPLATES", "TEMPLATE_MODES", "GeneratedItem", "InvalidOutput", "ProjectParameters",
    "allowed_categories", "augment", "default_prompts", "format_instruction", "normalize_mode", "output_schema",
    "parse_items", "placeholders", "plan_negatives", "prompt_hash", "render", "reply_schema", "select_template",
    "strip_wrapping", "variables_from",
]  # fmt: skip
