"""Quality on real text in any script: the one tokenizer, groundedness, near-duplicates, the structural
checks, difficulty and readability, on the paragraphs of tests/realtext.py (ten languages, eight scripts)."""

from __future__ import annotations

import pytest
from realtext import SAMPLES

from dsetlog.evaluation import words
from dsetlog.evaluation.quality import (
    READABILITY_UNDEFINED,
    NearDuplicates,
    combine,
    content_words,
    difficulty,
    groundedness,
    is_question,
    readability_defined,
    structural_checks,
)
from dsetlog.scripts import word_count

NON_LATIN = [k for k, s in SAMPLES.items() if s.script != "Latin"]

# --- the tokenizer ---------------------------------------------------------------------------------------


def test_spaced_scripts_give_whole_words_with_their_marks() -> None:
    # Devanagari's vowel signs and viramas are no \w in Python: a plain \w+ cuts "हिन्दी" into ह न द
    assert words.tokens("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert words.tokens("Байкал — пресноводное озеро.") == ["байкал", "пресноводное", "озеро"]
    assert words.tokens("نهر النيل") == ["نهر", "النيل"]
    assert words.tokens("Ο Παρθενώνας") == ["ο", "παρθενώνασ"]  # casefold makes final sigma σ
    assert words.tokens("Café naïve Straße") == ["café", "naïve", "strasse"]


def test_spaceless_scripts_give_bigrams_and_mixed_text_is_split_per_run() -> None:
    assert words.tokens("长城") == ["长城"]
    assert words.tokens("万里长城") == ["万里", "里长", "长城"]
    assert words.tokens("2008年北京奥运会") == ["2008", "年北", "北京", "京奥", "奥运", "运会"]
    assert words.tokens("Python是一种语言") == ["python", "是一", "一种", "种语", "语言"]
    # Thai vowels above and below stay with their consonant: "กี่" is one letter of three code points
    assert words.tokens("ที่นี่") == ["ที่นี่"[:3] + "นี่"]
    assert words.tokens("東京タワー") == ["東京", "京タ", "タワ", "ワー"]


def test_text_is_normalised_nfkc_and_casefolded() -> None:
    assert words.tokens("ＡＢＣ　１２３") == ["abc", "123"]  # full-width forms
    assert words.normalised("長城？") == words.normalised("長城?")
    assert content_words("ﬁnal") == content_words("FINAL")


def test_only_english_is_stemmed_and_only_known_function_words_are_dropped() -> None:
    assert content_words("The symptoms caused") == content_words("symptom causes")
    assert content_words("озера озеро") == {"озера", "озеро"}  # no English suffix rule on Cyrillic
    assert content_words("озеро и река в горах") == {"озеро", "река", "горах"}
    assert content_words("गंगा भारत की नदी है") == {"गंगा", "भारत", "नदी"}


# --- groundedness -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", list(SAMPLES))
def test_an_answer_copied_from_the_chunk_is_fully_grounded(lang: str) -> None:
    sample = SAMPLES[lang]
    assert groundedness(sample.answer, sample.text) == 1.0


@pytest.mark.parametrize("lang", list(SAMPLES))
def test_an_unrelated_answer_is_not_grounded(lang: str) -> None:
    sample = SAMPLES[lang]
    assert groundedness(sample.unrelated, sample.text) < 0.3, lang


def test_a_partly_supported_chinese_answer_scores_in_between() -> None:
    chunk = SAMPLES["zh"].text
    half = "现存的长城大多是明朝修建的。熊猫主要以竹子为食。"
    assert 0.3 < groundedness(half, chunk) < 0.8


# --- near-duplicates --------------------------------------------------------------------------------------


def test_unrelated_chinese_sentences_are_not_near_duplicates_and_a_near_copy_is() -> None:
    index = NearDuplicates()
    assert index.add("a", "长城是中国古代的军事防御工程，修筑的历史可上溯到西周时期。") is None
    assert index.add("b", "熊猫主要以竹子为食，生活在四川的山区。") is None  # both were "" before: a duplicate
    assert index.add("c", "富士山は日本で最も高い山である。") is None
    assert index.add("d", "长城是中国古代的军事防御工程，修筑历史可上溯到西周时期。") == "a"  # one character less
    assert index.add("e", "？？") is None and index.add("f", "！！") is None  # no words: the texts themselves


@pytest.mark.parametrize("lang", list(SAMPLES))
def test_sentences_of_one_paragraph_are_not_near_duplicates(lang: str) -> None:
    sample = SAMPLES[lang]
    index = NearDuplicates()
    found = [index.add(f"s{i}", s) for i, s in enumerate([sample.answer, sample.unrelated, sample.question])]
    assert found == [None, None, None]
    assert index.add("copy", sample.answer + " ") == "s0"


# --- structural checks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", list(SAMPLES))
def test_a_real_question_and_copied_answer_pass_every_check(lang: str) -> None:
    sample = SAMPLES[lang]
    checks = structural_checks(sample.question, sample.answer)
    assert {k: v for k, v in checks.items() if k != READABILITY_UNDEFINED} == {
        "non_empty": 1.0, "length_ok": 1.0, "no_refusal": 1.0, "is_question": 1.0, "not_copy": 1.0}  # fmt: skip


@pytest.mark.parametrize("question", [
    "长城有多长？", "长城有多长?", "富士山の高さは何メートルですか。", "これは何ですか", "你喜欢喝茶吗",
    "한라산은 얼마나 높습니까", "أين يقع نهر النيل؟", "Σε ποια θεά είναι αφιερωμένος ο Παρθενώνας;",
    "¿Dónde desemboca el Amazonas", "Ո՞վ է գրել այս գիրքը", "«Где находится Байкал?»", "Explain photosynthesis.",
])  # fmt: skip
def test_questions_are_recognised_in_every_script(question: str) -> None:
    assert is_question(question)


@pytest.mark.parametrize("statement", [
    "长城是中国古代的军事防御工程。", "Байкал — пресноводное озеро.", "نهر النيل هو أطول نهر في أفريقيا.",
    "The lake is deep; it is also old;", "富士山は日本で最も高い山である。",
])  # fmt: skip
def test_statements_are_not_questions(statement: str) -> None:
    assert not is_question(statement)


def test_length_counts_wide_characters_twice() -> None:
    # five Han characters say about what a ten-letter English question does
    assert structural_checks("长城多长？", "约两万一千千米。")["length_ok"] == 1.0
    assert structural_checks("多长？", "约两万千米。")["length_ok"] == 0.0
    assert words.width("长城abc") == 7


def test_not_copy_works_on_spaceless_text() -> None:
    question = "现存的长城大多是哪个朝代修建的？"
    assert structural_checks(question, "现存的长城大多是哪个朝代修建的")["not_copy"] == 0.0
    assert structural_checks(question, "现存的长城大多是明朝修建的。")["not_copy"] == 1.0
    assert structural_checks("？？？？？？？？？？", "。。")["not_copy"] == 1.0  # no words, different texts


# --- difficulty and readability -----------------------------------------------------------------------------------


def test_readability_is_defined_for_latin_script_text_only() -> None:
    assert readability_defined(SAMPLES["en"].text) and readability_defined(SAMPLES["es"].text)
    for lang in NON_LATIN:
        assert not readability_defined(SAMPLES[lang].text), lang
    assert not readability_defined("12345 678")


@pytest.mark.parametrize("lang", NON_LATIN)
def test_without_readability_the_entry_says_so_and_difficulty_is_neutral(lang: str) -> None:
    sample = SAMPLES[lang]
    checks = structural_checks(sample.question, sample.answer)
    assert checks[READABILITY_UNDEFINED] == 1.0
    assert difficulty(sample.question, sample.answer, judge_score=None) == "intermediate"
    assert difficulty(sample.question, sample.answer, judge_score=5) == "advanced"  # the judge moves it
    assert difficulty(sample.question, sample.answer, judge_score=1) == "beginner"


def test_english_entries_carry_no_readability_flag() -> None:
    assert READABILITY_UNDEFINED not in structural_checks(SAMPLES["en"].question, SAMPLES["en"].answer)


def test_answer_length_counts_words_as_the_script_has_them() -> None:
    assert word_count("长城") == pytest.approx(1.25)
    assert word_count("two words") == 2
    long_chinese = "长城是中国古代的军事防御工程，修筑的历史可上溯到西周时期。" * 4  # ~120 characters, ~70 words
    assert word_count(long_chinese) >= 60
    question = SAMPLES["zh"].question
    assert difficulty(question, long_chinese, judge_score=None) == "advanced"
    assert difficulty(question, "明朝。", judge_score=None) == "beginner"


def test_the_readability_flag_is_no_part_of_the_score() -> None:
    sample = SAMPLES["zh"]
    comps = {**structural_checks(sample.question, sample.answer), "groundedness": 1.0}
    assert combine(comps, duplicate=False, judge=None) == 1.0
    with pytest.raises(ValueError, match="no weight"):
        combine(comps, weights={READABILITY_UNDEFINED: 1.0}, duplicate=False, judge=None)
