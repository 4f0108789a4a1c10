"""Quality components: each one moves the score the right way, and every parameter matters."""

from __future__ import annotations

import random

import pytest

from dsetlog.evaluation.quality import (
    DIFFICULTIES,
    JUDGE_SCHEMA,
    NearDuplicates,
    combine,
    content_words,
    difficulty,
    flesch_kincaid_grade,
    groundedness,
    judge_prompt,
    parse_judge,
    parse_verdict,
    structural_checks,
    summarize,
)
from dsetlog.prompts.replies import InvalidOutput
from dsetlog.prompts.templates import NEGATIVE_ANSWER

CHUNK = (
    "Insulin is a hormone produced by the beta cells of the pancreas. It lowers blood glucose by "
    "letting muscle and fat cells absorb glucose. Type 1 diabetes is caused by the destruction of beta cells."
)
QUESTION = "What produces insulin in the body?"
ANSWER = "Insulin is produced by the beta cells of the pancreas."


# --- structural checks -------------------------------------------------------------------


def test_a_good_entry_passes_every_check() -> None:
    assert structural_checks(QUESTION, ANSWER) == {
        "non_empty": 1.0, "length_ok": 1.0, "no_refusal": 1.0, "is_question": 1.0, "not_copy": 1.0
    }  # fmt: skip


@pytest.mark.parametrize(
    ("question", "answer", "failed"),
    [
        (QUESTION, "   ", "non_empty"),
        (QUESTION, "As an AI, I cannot give medical advice.", "no_refusal"),
        (QUESTION, "I'm sorry, but that is not covered.", "no_refusal"),
        ("Insulin and the pancreas.", ANSWER, "is_question"),
        (QUESTION, "What produces insulin in the body", "not_copy"),
        (QUESTION, "x" * 5000, "length_ok"),
        ("Why?", ANSWER, "length_ok"),
    ],
)
def test_each_check_catches_its_problem(question: str, answer: str, failed: str) -> None:
    checks = structural_checks(question, answer)
    assert checks[failed] == 0.0
    assert all(v == 1.0 for k, v in checks.items() if k != failed and k != "length_ok")


def test_interrogative_openers_count_as_questions_without_a_question_mark() -> None:
    assert structural_checks("Explain how insulin lowers blood glucose.", ANSWER)["is_question"] == 1.0
    assert structural_checks("How does insulin lower glucose", ANSWER)["is_question"] == 1.0


def test_check_parameters_are_used() -> None:
    assert structural_checks(QUESTION, ANSWER, max_answer_chars=20)["length_ok"] == 0.0
    assert structural_checks(QUESTION, "Pancreas.", min_answer_chars=20)["length_ok"] == 0.0
    assert structural_checks(QUESTION, ANSWER, min_question_chars=50)["length_ok"] == 0.0
    assert structural_checks("Which organ?", ANSWER, max_question_chars=5)["length_ok"] == 0.0
    near = "What produces the insulin in a body?"
    assert structural_checks(QUESTION, near)["not_copy"] == 0.0
    assert structural_checks(QUESTION, near, copy_threshold=0.99)["not_copy"] == 1.0
    assert "is_question" not in structural_checks(
        "Summarize the role of insulin.", ANSWER, expect_question=False
    )


def test_questions_only_entries_skip_the_answer_checks() -> None:
    checks = structural_checks(QUESTION, None)
    assert "not_copy" not in checks and checks["non_empty"] == 1.0


def test_the_unanswerable_answer_is_not_a_refusal() -> None:
    assert structural_checks(QUESTION, NEGATIVE_ANSWER)["no_refusal"] == 1.0


# --- groundedness ---------------------------------------------------------------------------


def test_groundedness_is_the_share_of_answer_content_in_the_chunk() -> None:
    assert groundedness(ANSWER, CHUNK) == 1.0
    assert groundedness("Insulin is made in the liver from cholesterol.", CHUNK) == pytest.approx(1 / 4)
    assert groundedness("Mitochondria generate ATP.", CHUNK) == 0.0


def test_groundedness_matches_word_forms() -> None:
    assert content_words("The symptoms caused") == content_words("symptom causes")
    assert groundedness("Destroying beta cells causes diabetes.", CHUNK) > 0.6


def test_groundedness_special_cases() -> None:
    assert groundedness(NEGATIVE_ANSWER, CHUNK) == 1.0  # claims absence: nothing to ground
    assert groundedness("Yes.", CHUNK) == 0.0


# --- near-duplicates ---------------------------------------------------------------------------


def test_near_duplicates_are_found_and_distinct_texts_are_not() -> None:
    index = NearDuplicates()
    assert index.add("a", "What are the common symptoms of type 1 diabetes in young children?") is None
    assert index.add("b", "How is insulin stored and transported in pharmacies?") is None
    assert index.add("c", "What are the common symptoms of type 1 diabetes in small children?") == "a"
    assert index.add("d", "what are THE common symptoms of type-1 diabetes in young children") == "a"
    assert index.add("e", "In young children, what are the common symptoms of type 1 diabetes?") == "a"
    assert index.add("f", "What are the rare complications of type 2 diabetes in elderly adults?") is None
    assert len(index) == 6


def test_clusters_follow_chains_to_their_first_entry() -> None:
    index = NearDuplicates(threshold=0.85)
    base = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    assert index.add("1", base) is None
    assert index.add("2", base.replace("kappa", "lambda")) == "1"
    assert index.cluster_of("2") == "1" and index.cluster_of("1") == "1"
    with pytest.raises(ValueError, match="already indexed"):
        index.add("1", "anything")


def test_threshold_decides_what_counts_as_duplicate() -> None:
    first = "What are the main causes of high blood pressure in adults?"
    second = "What are the main causes of low blood pressure in adults?"
    loose, strict = NearDuplicates(threshold=0.8), NearDuplicates(threshold=0.97)
    for index in (loose, strict):
        index.add("x", first)
    assert loose.add("y", second) == "x"
    assert strict.add("y", second) is None
    with pytest.raises(ValueError, match="threshold"):
        NearDuplicates(threshold=0)


def _random_text(rng: random.Random, vocab: list[str]) -> str:
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(14, 24)))


def test_blocking_keeps_comparisons_far_below_all_pairs_and_finds_edits() -> None:
    rng = random.Random(5)
    vocab = [
        f"w{i}" for i in range(300)
    ]  # a small vocabulary: texts share many words + ["the", "of", "what", "is"] * 50
    index = NearDuplicates()
    originals = [_random_text(rng, vocab) for _ in range(4000)]
    for i, text in enumerate(originals):
        index.add(f"o{i}", text)
    assert index.comparisons < 0.001 * len(originals) ** 2 / 2
    found = 0
    for i, text in enumerate(originals[:300]):
        words = text.split()
        words[rng.randrange(len(words))] = rng.choice(vocab)  # one word changed
        found += index.add(f"m{i}", " ".join(words)) == f"o{i}"
    assert found >= 290


# --- judge ---------------------------------------------------------------------------------------


def test_judge_prompt_carries_the_entry_and_the_rubric() -> None:
    messages = judge_prompt(QUESTION, ANSWER, CHUNK)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "1-5" in messages[0]["content"] and NEGATIVE_ANSWER in messages[0]["content"]
    assert (
        QUESTION in messages[1]["content"]
        and ANSWER in messages[1]["content"]
        and CHUNK in messages[1]["content"]
    )
    assert JUDGE_SCHEMA.schema["required"] == ["score", "difficulty"]


def test_parse_judge_is_strict() -> None:
    assert parse_judge('{"score": 4, "difficulty": 2}') == 4
    assert parse_judge('<think>hmm</think>```json\n{"score": 5, "difficulty": 1}\n```') == 5
    assert parse_verdict('{"score": 2, "difficulty": 5}').difficulty == 5
    for bad in ('{"score": 6, "difficulty": 2}', '{"score": "4", "difficulty": 2}', '{"score": 4}', "4", "",
                '{"score": 4.5, "difficulty": 2}', '{"score": 4, "difficulty": 2, "why": "x"}'):  # fmt: skip
        with pytest.raises(InvalidOutput):
            parse_judge(bad)


# --- difficulty -------------------------------------------------------------------------------------


def test_flesch_kincaid_grade_formula() -> None:
    # 6 words, 1 sentence, 6 syllables: 0.39 * 6 + 11.8 * 1 - 15.59
    assert flesch_kincaid_grade("The cat sat on the mat.") == -1.45
    assert flesch_kincaid_grade("") == 0.0


EASY_Q, EASY_A = "What is a cat?", "A cat is a small pet. It likes to play."
HARD_Q = "How does oxidative phosphorylation couple mitochondrial electron transport to ATP synthesis?"
HARD_A = (
    "Electron transport through respiratory complexes translocates protons across the inner mitochondrial "
    "membrane, establishing an electrochemical gradient that drives conformational rotation of ATP synthase."
)


def test_difficulty_follows_readability_and_answer_length() -> None:
    assert difficulty(EASY_Q, EASY_A, judge_score=None) == "beginner"
    assert DIFFICULTIES.index(difficulty(HARD_Q, HARD_A, judge_score=None)) >= 2
    medium_q = "Why do plants need sunlight to produce their own food?"
    short = difficulty(medium_q, "Photosynthesis needs light.", judge_score=None)
    long = difficulty(
        medium_q,
        " ".join(["Plants capture light energy in their leaves to make sugar."] * 7),
        judge_score=None,
    )
    assert DIFFICULTIES.index(long) > DIFFICULTIES.index(short)


def test_a_judge_score_nudges_difficulty_one_step() -> None:
    assert difficulty(EASY_Q, EASY_A, judge_score=5) == "intermediate"
    assert difficulty(EASY_Q, EASY_A, judge_score=1) == "beginner"
    hard = difficulty(HARD_Q, HARD_A, judge_score=None)
    assert DIFFICULTIES.index(difficulty(HARD_Q, HARD_A, judge_score=1)) == DIFFICULTIES.index(hard) - 1
    with pytest.raises(ValueError, match="judge_score"):
        difficulty(EASY_Q, EASY_A, judge_score=9)


# --- combine and summarize ---------------------------------------------------------------------------


def _components(question: str = QUESTION, answer: str = ANSWER) -> dict[str, float]:
    return {**structural_checks(question, answer), "groundedness": groundedness(answer, CHUNK)}


def test_a_clean_grounded_entry_scores_full_marks() -> None:
    assert combine(_components(), duplicate=False, judge=None) == 1.0


def test_each_component_moves_the_score_the_right_way() -> None:
    good = combine(_components(), duplicate=False, judge=None)
    refusal = combine(_components(answer="I'm sorry, I cannot answer that."), duplicate=False, judge=None)
    ungrounded = combine(
        _components(answer="Insulin comes from the liver and spleen."), duplicate=False, judge=None
    )
    not_a_question = combine(_components(question="Insulin production facts."), duplicate=False, judge=None)
    copied = combine(_components(answer="What produces insulin in the body."), duplicate=False, judge=None)
    duplicate = combine(_components(), duplicate=True, judge=None)
    assert refusal == 0.0
    assert ungrounded < good and not_a_question < good and copied < good
    assert duplicate == pytest.approx(good * 0.5)
    assert combine(_components(), duplicate=False, judge=1) < good
    assert combine({**_components(), "groundedness": 0.5}, duplicate=False, judge=5) > combine(
        {**_components(), "groundedness": 0.5}, duplicate=False, judge=None
    )


def test_weights_change_the_balance_and_are_validated() -> None:
    components = {**_components(), "groundedness": 0.0}
    default = combine(components, duplicate=False, judge=None)
    assert combine(components, weights={"groundedness": 10}, duplicate=False, judge=None) < default
    assert combine(components, weights={"groundedness": 0}, duplicate=False, judge=None) == 1.0
    with_judge = combine(components, duplicate=False, judge=5)
    assert combine(components, weights={"judge": 0.9}, duplicate=False, judge=5) > with_judge
    with pytest.raises(ValueError, match="not among the components"):
        combine(components, weights={"fluency": 1}, duplicate=False, judge=None)
    with pytest.raises(ValueError, match="gate"):
        combine(components, weights={"no_refusal": 2}, duplicate=False, judge=None)
    with pytest.raises(ValueError, match="judge"):
        combine(components, duplicate=False, judge=0)
    with pytest.raises(ValueError, match="groundedness"):
        combine({"groundedness": 1.5}, duplicate=False, judge=None)


def test_summarize_has_the_guides_shape() -> None:
    summary = summarize([(0.92, "Endocrinology"), (0.8, "Cardiology"), (0.5, "Endocrinology"), (0.49, "Other"),
                         (None, "Other"), (0.1, "Endocrinology")])  # fmt: skip
    assert summary == {
        "average_score": round((0.92 + 0.8 + 0.5 + 0.49 + 0.1) / 5, 4),
        "distribution": {"high": 2, "medium": 1, "low": 2},
        "categories": {"Endocrinology": 3, "Other": 2, "Cardiology": 1},
    }
    assert summarize([])["average_score"] is None
