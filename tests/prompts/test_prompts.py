"""Prompts: templates, rendering, project parameters, output schemas, strict parsing, negatives, augmentation."""

from __future__ import annotations

import json

import msgspec
import pytest

from dsetlog.prompts.parameters import (
    AUGMENTATIONS,
    HIGH_LEVEL_PROMPT_CONFIG,
    ProjectParameters,
    augment,
    plan_negatives,
    variables_from,
)
from dsetlog.prompts.replies import (
    GeneratedItem,
    InvalidOutput,
    format_instruction,
    output_schema,
    parse_items,
    reply_schema,
)
from dsetlog.prompts.templates import (
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

CHUNK = "Insulin is a hormone made by the pancreas. It lets cells absorb glucose."
PARAMS = ProjectParameters(purpose="medical_qa_training", audience="medical_students", dataset_format="jsonl")


def _prompt(params: ProjectParameters | None, template: str = "qa_pairs", **kwargs: object) -> str:
    options: dict = {"n": 3, "categories": [], **kwargs}
    return render(TEMPLATES[template], {**variables_from(params, **options), "chunk": CHUNK})


# --- templates and rendering -------------------------------------------------------


def test_every_builtin_template_names_its_mode_and_uses_the_chunk() -> None:
    assert set(TEMPLATES) == {
        "qa_pairs", "evaluation_qa", "default", "question", "answer", "reader_questions", "summarization",
        "instruction_following"
    }  # fmt: skip
    for name, text in TEMPLATES.items():
        assert TEMPLATE_MODES[name] in MODES
        assert {
            "chunk",
            "n",
            "purpose",
            "audience",
            "complexity_level",
            "domain",
            "categories",
        } <= placeholders(text)


def test_render_fills_known_variables_and_leaves_other_braces() -> None:
    template = 'Write {n} items for {purpose}. Shape: {"items": [{"q": "..."}]} {unknown}\nText:\n{chunk}'
    out = render(template, {"n": 2, "purpose": "tests", "chunk": "C {n} stays"})
    assert out == 'Write 2 items for tests. Shape: {"items": [{"q": "..."}]} {unknown}\nText:\nC {n} stays'


def test_render_appends_the_chunk_when_the_template_has_no_placeholder() -> None:
    assert render("Make {n} questions.", {"n": 4, "chunk": "Body."}) == "Make 4 questions.\n\nText:\nBody."


def test_render_drops_a_line_that_is_only_an_empty_variable() -> None:
    assert render("a\n{negatives}\nb", {"negatives": ""}) == "a\nb"


def test_render_appends_a_negatives_instruction_a_custom_template_lacks() -> None:
    variables = {**variables_from(None, n=4, categories=[], negatives=1), "chunk": "Body."}
    out = render("Make {n} pairs.", variables)
    assert out.index(NEGATIVE_ANSWER) < out.index("Text:\nBody.")
    assert "exactly 1 of the 4" in out


def test_prompt_hash_is_short_and_follows_content() -> None:
    assert prompt_hash("a") == prompt_hash("a") and len(prompt_hash("a")) == 16
    assert prompt_hash("a") != prompt_hash("a ")


def test_modes_and_template_selection() -> None:
    assert normalize_mode("qa") == "default"
    with pytest.raises(ValueError, match="summarization"):
        normalize_mode("chat")
    assert select_template("default") == ("qa_pairs", TEMPLATES["qa_pairs"])
    assert select_template("question")[0] == "question"  # the request default stands for the mode's own
    assert select_template("qa", "evaluation_qa")[0] == "evaluation_qa"
    with pytest.raises(ValueError, match="written for generation_mode 'summarization'"):
        select_template("question", "summarization")
    with pytest.raises(ValueError, match="built-in prompts"):
        select_template("default", "nope")


# --- project parameters ----------------------------------------------------------------


def test_parameters_decode_with_the_guides_defaults() -> None:
    params = msgspec.json.decode(
        b'{"purpose": "p", "audience": "a", "dataset_format": "jsonl"}', type=ProjectParameters
    )
    assert (params.extraction_rules, params.question_style, params.answer_style) == (
        "default",
        "factual",
        "comprehensive",
    )
    assert (params.negativity_ratio, params.data_augmentation, params.complexity_level, params.domain) == (
        0.1, "none", "intermediate", "general"
    )  # fmt: skip
    assert params.custom_audience is None and params.custom_purpose is None


@pytest.mark.parametrize(
    "body",
    [
        {"audience": "a", "dataset_format": "jsonl"},  # purpose is required
        {"purpose": "p", "audience": "a", "dataset_format": "jsonl", "question_style": "poetic"},
        {"purpose": "p", "audience": "a", "dataset_format": "jsonl", "negativity_ratio": 1.5},
        {"purpose": "p", "audience": "a", "dataset_format": "jsonl", "data_augmentation": "backtranslation"},
        {"purpose": "p", "audience": "a", "dataset_format": "jsonl", "surprise": 1},
    ],
)
def test_bad_parameters_are_refused(body: dict) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(body), type=ProjectParameters)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValueError, match="answer_style"):
        ProjectParameters(purpose="p", audience="a", dataset_format="jsonl", answer_style="long")
    with pytest.raises(ValueError, match="negativity_ratio"):
        ProjectParameters(purpose="p", audience="a", dataset_format="jsonl", negativity_ratio=-0.1)


@pytest.mark.parametrize(
    ("field", "value", "visible"),
    [
        ("purpose", "exam_revision", "exam revision"),
        ("audience", "nurses", "nurses"),
        ("extraction_rules", "clinical_guidelines", "clinical guidelines"),
        ("question_style", "case_based", "scenario"),
        ("answer_style", "step_by_step", "step by step"),
        ("complexity_level", "expert", "expert"),
        ("domain", "cardiology", "cardiology"),
        ("custom_audience", "3rd_year_medical_students", "3rd year medical students"),
        ("custom_purpose", "board_exam_preparation", "board exam preparation"),
    ],
)
def test_each_prompt_field_shapes_the_rendered_prompt(field: str, value: str, visible: str) -> None:
    changed = msgspec.structs.replace(PARAMS, **{field: value})
    before, after = _prompt(PARAMS), _prompt(changed)
    assert before != after
    assert visible in after and visible not in before


def test_custom_audience_and_purpose_override_the_plain_ones() -> None:
    params = msgspec.structs.replace(PARAMS, custom_audience="residents", custom_purpose="board prep")
    prompt = _prompt(params)
    assert "for board prep, for residents" in prompt
    assert "medical students" not in prompt and "medical qa training" not in prompt


def test_categories_and_negatives_reach_the_prompt() -> None:
    plain = _prompt(PARAMS)
    assert "of your choosing" in plain and NEGATIVE_ANSWER not in plain
    with_taxonomy = _prompt(PARAMS, categories=["Cardiology", "Neurology"], negatives=2)
    assert 'one of: Cardiology, Neurology, Other (use "Other" when none fits)' in with_taxonomy
    assert "exactly 2 of the 3 questions" in with_taxonomy and NEGATIVE_ANSWER in with_taxonomy


def test_answer_mode_lists_the_given_questions() -> None:
    prompt = _prompt(None, "answer", n=2, questions=["What makes insulin?", "What does it do?"])
    assert "1. What makes insulin?\n2. What does it do?" in prompt
    assert "{questions}" not in prompt
    with pytest.raises(ValueError, match="questions given"):
        variables_from(None, n=3, categories=[], questions=["only one?"])


def test_variables_are_validated() -> None:
    with pytest.raises(ValueError, match="n must be"):
        variables_from(None, n=0, categories=[])
    with pytest.raises(ValueError, match="negatives"):
        variables_from(None, n=2, categories=[], negatives=3)


def test_high_level_config_and_default_prompts() -> None:
    assert HIGH_LEVEL_PROMPT_CONFIG["complexity_options"] == [
        "beginner",
        "intermediate",
        "advanced",
        "expert",
    ]
    for key in ("audience_defaults", "purpose_defaults", "domain_defaults"):
        assert HIGH_LEVEL_PROMPT_CONFIG[key]
    assert "general" in HIGH_LEVEL_PROMPT_CONFIG["domain_defaults"]
    prompts = default_prompts()
    assert set(prompts) == {"instruction following", "question and answer", "summarization"}
    assert prompts["question and answer"] == TEMPLATES["qa_pairs"]


# --- structured output ---------------------------------------------------------------------


def test_output_schema_asks_for_exactly_n_items_of_the_modes_shape() -> None:
    schema = output_schema("qa", 4)
    items = schema["properties"]["items"]
    assert (items["minItems"], items["maxItems"]) == (4, 4)
    assert items["items"]["required"] == ["question", "answer", "category"]
    assert items["items"]["additionalProperties"] is False and schema["additionalProperties"] is False
    assert output_schema("question", 2)["properties"]["items"]["items"]["required"] == [
        "question",
        "category",
    ]
    assert output_schema("summarization", 1)["properties"]["items"]["items"]["required"][:2] == [
        "instruction", "summary"
    ]  # fmt: skip
    taxonomy = output_schema("default", 1, ["A", "B"])["properties"]["items"]["items"]["properties"][
        "category"
    ]
    assert taxonomy["enum"] == ["A", "B", "Other"]


def test_reply_schema_and_format_instruction() -> None:
    spec = reply_schema("question", 3)
    assert spec.name == "question_items" and spec.schema == output_schema("question", 3)
    messages, fmt = spec.request("json_schema", [{"role": "user", "content": "q"}])
    assert fmt is not None and fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert messages == [{"role": "user", "content": "q"}]  # the schema is in the request, not the prompt
    assert '"maxItems":3' in format_instruction("question", 3)
    assert reply_schema("question", 3, describe=True).always_describe


def _reply(*items: dict) -> str:
    return json.dumps({"items": list(items)})


QA1 = {"question": "What makes insulin?", "answer": "The pancreas.", "category": "Endocrinology"}
QA2 = {
    "question": "What does insulin let cells do?",
    "answer": "Absorb glucose.",
    "category": "Endocrinology",
}
NEG = {"question": "Who discovered insulin?", "answer": "the text does not say", "category": "History"}


def test_parse_items_decodes_each_mode() -> None:
    assert parse_items("default", _reply(QA1, QA2), 2) == [
        GeneratedItem(question="What makes insulin?", answer="The pancreas.", category="Endocrinology"),
        GeneratedItem(
            question="What does insulin let cells do?", answer="Absorb glucose.", category="Endocrinology"
        ),
    ]
    [question] = parse_items("question", _reply({"question": " Why? ", "category": "x"}), 1)
    assert question == GeneratedItem(question="Why?", answer=None, category="x")
    [summary] = parse_items(
        "summarization", _reply({"instruction": "Sum up.", "summary": "S.", "category": "c"}), 1
    )
    assert (summary.question, summary.answer) == ("Sum up.", "S.")
    [inst] = parse_items(
        "instruction_following", _reply({"instruction": "Do.", "response": "Done.", "category": "c"}), 1
    )
    assert (inst.question, inst.answer) == ("Do.", "Done.")


def test_parse_items_strips_fences_and_think_blocks() -> None:
    content = f"<think>Let me plan {{the}} items.</think>\nHere you go:\n```json\n{_reply(QA1)}\n```\n"
    assert parse_items("qa", content, 1)[0].question == "What makes insulin?"
    with pytest.raises(InvalidOutput, match="never closed"):
        parse_items("qa", "<think>still thinking", 1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not the JSON"),
        (json.dumps([QA1]), "not the JSON"),  # a bare list is not the schema's object
        (_reply({**QA1, "extra": 1}), "not the JSON"),
        (_reply({"question": "Q?", "category": "c"}), "not the JSON"),  # answer missing
        (_reply({**QA1, "answer": 3}), "not the JSON"),  # strict: no number-to-string coercion
        (_reply(QA1), "asked for 2 items, got 1"),
        (_reply(QA1, QA2, NEG), "asked for 2 items, got 3"),
        (_reply(QA1, {**QA2, "answer": "  "}), "empty 'answer'"),
        (_reply(QA1, {**QA2, "category": ""}), "empty 'category'"),
        (_reply(QA1, {**QA1, "question": "what makes  INSULIN"}), "duplicate"),
    ],
)
def test_parse_items_rejects_bad_output(content: str, message: str) -> None:
    with pytest.raises(InvalidOutput, match=message):
        parse_items("default", content, 2)


def test_questions_that_differ_in_their_vowel_signs_are_two_questions() -> None:
    """Hindi's vowel signs are combining marks, which ``\\w`` leaves out: दिन (day) and दान (gift) are not one word."""
    day = {"question": "दिन क्या है?", "answer": "सुबह से शाम तक का समय।", "category": "समय"}
    gift = {**day, "question": "दान क्या है?", "answer": "किसी को कुछ देना।"}
    assert [i.question for i in parse_items("default", _reply(day, gift), 2)] == ["दिन क्या है?", "दान क्या है?"]
    with pytest.raises(InvalidOutput, match="duplicate"):
        parse_items("default", _reply(day, {**day, "question": "दिन  क्या है"}), 2)


def test_parse_items_checks_taxonomy_categories() -> None:
    [item] = parse_items("qa", _reply({**QA1, "category": "endocrinology"}), 1, categories=["Endocrinology"])
    assert item.category == "Endocrinology"
    assert (
        parse_items("qa", _reply({**QA1, "category": "other"}), 1, categories=["Endocrinology"])[0].category
        == "Other"
    )
    with pytest.raises(InvalidOutput, match="not in the taxonomy"):
        parse_items("qa", _reply({**QA1, "category": "Cardiology"}), 1, categories=["Endocrinology"])


def test_parse_items_marks_and_counts_negatives() -> None:
    items = parse_items("qa", _reply(QA1, NEG), 2, negatives=1)
    assert [i.negative for i in items] == [False, True]
    assert items[1].answer == NEGATIVE_ANSWER
    with pytest.raises(InvalidOutput, match="asked for 2 unanswerable questions, got 1"):
        parse_items("qa", _reply(QA1, NEG), 2, negatives=2)
    with pytest.raises(ValueError, match="no answers"):
        parse_items("question", _reply({"question": "Q?", "category": "c"}), 1, negatives=1)


# --- negativity_ratio ------------------------------------------------------------------------


def test_plan_negatives_is_deterministic_and_converges_to_the_ratio() -> None:
    assert plan_negatives(3, 0.1, key="chunk-1") == plan_negatives(3, 0.1, key="chunk-1")
    counts = [plan_negatives(3, 0.1, key=f"chunk-{i}") for i in range(4000)]
    assert set(counts) == {0, 1}
    assert abs(sum(counts) / (3 * len(counts)) - 0.1) < 0.01
    assert plan_negatives(10, 0.1, key="x") == 1  # exact products are not rounded up by float noise
    assert plan_negatives(5, 0.0, key="x") == 0 and plan_negatives(5, 1.0, key="x") == 5
    assert [plan_negatives(4, 0.5, key=str(i)) for i in range(20)] == [2] * 20


def test_plan_negatives_validates() -> None:
    with pytest.raises(ValueError, match="negativity_ratio"):
        plan_negatives(3, 1.2, key="k")


# --- data_augmentation -----------------------------------------------------------------------


def test_synonym_replacement_swaps_words_and_keeps_case() -> None:
    out = augment("What are the main symptoms of diabetes?", "synonym_replacement", seed="1")
    assert out in {"What are the primary signs of diabetes?", "What are the principal signs of diabetes?"}
    assert augment("Main risks?", "synonym_replacement", seed="1") in {
        "Primary dangers?",
        "Principal dangers?",
    }


def test_paraphrase_rewrites_openers_and_keeps_the_subject() -> None:
    assert augment("Why does the heart beat faster?", "paraphrase", seed="s") == (
        "For what reason does the heart beat faster?"
    )
    assert augment("How do vaccines work?", "paraphrase", seed="s") == "In what way do vaccines work?"
    assert augment("What does DNA mean?", "paraphrase", seed="s") in {
        "What is meant by DNA?", "What is the meaning of DNA?"
    }  # fmt: skip
    assert augment("Who was Ada Lovelace?", "paraphrase", seed="s") in {
        "Could you tell me who Ada Lovelace was?", "Do you know who Ada Lovelace was?"
    }  # fmt: skip


def test_augment_returns_none_when_nothing_changes() -> None:
    assert augment("What is X used for?", "paraphrase", seed="s") is None  # reordering would read badly
    assert augment("Who wrote Hamlet?", "synonym_replacement", seed="s") is None
    assert augment("Why does the heart beat faster?", "none", seed="s") is None


def test_augment_is_seeded() -> None:
    question = "What is the main purpose of the common method?"
    variants = {augment(question, "paraphrase", seed=str(i)) for i in range(30)}
    assert len(variants) > 1
    assert augment(question, "paraphrase", seed="7") == augment(question, "paraphrase", seed="7")


def test_augment_refuses_unknown_techniques() -> None:
    assert AUGMENTATIONS == ("none", "paraphrase", "synonym_replacement")
    with pytest.raises(ValueError, match="none, paraphrase, synonym_replacement"):
        augment("Q?", "backtranslation", seed="s")
