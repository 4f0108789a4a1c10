"""Reference-answer metrics (SQuAD-style EM and F1, ROUGE-L) and benchmark suite checks."""

from __future__ import annotations

import pytest

from dsetlog.evaluation.scoring import (
    BENCHMARK_SUITES,
    check_suite,
    exact_match,
    is_rejection,
    normalize_answer,
    rejection_correct,
    rouge_l,
    score_all,
    token_f1,
)
from dsetlog.prompts.templates import NEGATIVE_ANSWER


def test_normalisation_is_squad_style() -> None:
    assert normalize_answer("  The Pancreas's  beta-cells! ") == "pancreass betacells"
    assert normalize_answer("An apple, a day") == "apple day"


def test_exact_match() -> None:
    assert exact_match("The pancreas.", "pancreas") == 1.0
    assert exact_match("PANCREAS", "the pancreas") == 1.0
    assert exact_match("the liver", "the pancreas") == 0.0
    assert exact_match("", "") == 1.0


def test_text_without_spaces_counts_a_token_per_character() -> None:
    """As MLQA scores Chinese: the same facts in another order overlap, and CJK punctuation is punctuation."""
    assert token_f1("北京是中国的首都。", "中国的首都是北京") == pytest.approx(1.0)  # same characters, other order
    assert 0.5 < token_f1("首都是北京", "中国的首都是北京") < 1.0
    assert exact_match("北京。", "北京") == 1.0
    assert token_f1("东京", "北京") == pytest.approx(0.5)  # one character of two
    assert rouge_l("火山在1980年喷发", "1980年火山喷发") > 0.5  # digits stay one token beside Han
    assert token_f1("Москва — столица России", "столица России") == pytest.approx(0.8)  # spaced: words, — dropped


def test_token_f1_counts_overlap_with_multiplicity() -> None:
    # pred: beta cells pancreas (3), ref: beta cells of pancreas (4), common 3 -> P=1, R=0.75
    assert token_f1("the beta cells, pancreas", "beta cells of the pancreas") == pytest.approx(
        0.8571, abs=1e-4
    )
    assert token_f1("cells cells cells", "cells") == pytest.approx(0.5)  # P=1/3, R=1
    assert token_f1("liver", "pancreas") == 0.0
    assert token_f1("", "pancreas") == 0.0 and token_f1("the", "a") == 1.0  # both empty after normalising


def test_rouge_l_rewards_order() -> None:
    ref = "insulin lowers blood glucose"
    assert rouge_l("insulin lowers blood glucose", ref) == 1.0
    in_order = rouge_l("insulin quickly lowers glucose", ref)  # LCS 3 of 4 and 4 -> 0.75
    shuffled = rouge_l("glucose blood lowers insulin", ref)  # same tokens, LCS 1
    assert in_order == 0.75 and shuffled == 0.25
    assert token_f1("glucose blood lowers insulin", ref) == 1.0  # F1 ignores order; ROUGE-L does not
    assert rouge_l("", ref) == 0.0


def test_score_all() -> None:
    assert score_all("The pancreas.", "pancreas") == {"exact_match": 1.0, "token_f1": 1.0, "rouge_l": 0.6667}


def test_suites_this_project_can_run() -> None:
    assert set(BENCHMARK_SUITES) == {"reference_qa", "negative_rejection"}
    assert check_suite("reference_qa") == "reference_qa"
    assert check_suite(" Negative_Rejection ") == "negative_rejection"


@pytest.mark.parametrize("name", ["glue", "superglue", "MMLU"])
def test_suites_needing_external_data_are_refused_with_the_alternatives(name: str) -> None:
    with pytest.raises(ValueError, match="needs data this project does not ship") as info:
        check_suite(name)
    assert f"'{name}'" in str(info.value)
    assert "available suites: reference_qa, negative_rejection" in str(info.value)


def test_unknown_suite_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown benchmark suite 'nope'; available suites: reference_qa"):
        check_suite("nope")


def test_rejection_scoring() -> None:
    assert is_rejection("the text does not say") and not is_rejection("The pancreas.")
    assert rejection_correct("The text does not say.", NEGATIVE_ANSWER) == 1.0
    assert rejection_correct("Banting and Best.", NEGATIVE_ANSWER) == 0.0
    assert rejection_correct("The text does not say.", "The pancreas.") == 0.0  # refused an answerable one
    assert rejection_correct("The pancreas makes it.", "The pancreas.") == 1.0
