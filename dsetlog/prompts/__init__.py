"""Prompt texts, the parameters that fill them, and parsing the replies they ask for.

- :mod:`dsetlog.prompts.templates`: the built-in templates, choosing one, rendering, placeholders, prompt_hash.
- :mod:`dsetlog.prompts.parameters`: ProjectParameters and its choices, variables_from, plan_negatives, augment.
- :mod:`dsetlog.prompts.replies`: the reply's schema, parse_items, GeneratedItem and InvalidOutput.
"""
