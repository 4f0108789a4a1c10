"""Sentence ends in real text (abbreviations, initials, decimals, other scripts), and chunks that never cut one."""

from __future__ import annotations

from itertools import pairwise
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsetlog.catalog import sentences
from dsetlog.catalog.chunking import STRATEGIES, chunk_text
from dsetlog.catalog.sentences import boundaries, ends_sentence, last_boundary, sentence_ends

ENGLISH = [
    "Mount St. Helens erupted in 1980.",
    "Dr. Smith measured the ash, e.g. its grain size, with a 3.5 mm sieve.",
    "The U.S. Geological Survey had warned of a bulge for weeks.",
    "J. R. Harlow wrote the first report at 8 a.m. on Monday.",
    "Was anyone surprised?",
    '"Nobody," said Prof. Lee.',
    "See No. 5 and Fig. 3 in the report, i.e. the maps.",
    "It cost $4.2 million!",
]


def split(text: str) -> list[str]:
    cuts = [0, *sentence_ends(text), len(text)]
    return [text[a:b].strip() for a, b in pairwise(cuts) if text[a:b].strip()]


def test_english_abbreviations_initials_and_decimals_do_not_end_sentences() -> None:
    assert split(" ".join(ENGLISH)) == ENGLISH


@pytest.mark.parametrize(
    "sentences",
    [
        ["北京是中国的首都。", "上海是最大的城市！", "你去过吗？"],  # Chinese: no spaces between sentences
        ["東京は日本の首都です。", "「本当ですか？」", "はい。"],  # Japanese, with closing brackets
        ["यह एक वाक्य है।", "क्या यह दूसरा है?", "हाँ॥"],  # Hindi: danda
        ["هل هذا صحيح؟", "نعم، هذا صحيح."],  # Arabic question mark
        ["Москва — столица России.", "Это правда?", "Да, г. Москва большая."],  # Russian, "г." before a lower word
    ],
)
def test_other_scripts_sentence_ends(sentences: list[str]) -> None:
    joiner = "" if sentences[0][0] in "北東" else " "
    assert split(joiner.join(sentences)) == sentences


def test_what_is_not_a_sentence_end() -> None:
    for text in ("Version 3.5 is out", "see example.com today", "the U.S. Army", "ask Dr. Watson", "1. First item"):
        assert sentence_ends(text) == [], text
    assert ends_sentence("it ended here.") and ends_sentence("(really?)  ") and not ends_sentence("Mount St.")


def test_boundaries_include_blank_lines_and_markdown_blocks() -> None:
    text = "# Title\nno full stop here\n\n- one\n- two\nwrapped line\nof prose"
    assert [text[:c].rsplit("\n", 1)[-1] for c in boundaries(text)] == [
        "# Title", "no full stop here", "- one", "- two",
    ]  # fmt: skip


SENTENCE = st.sampled_from(ENGLISH + ["Short one.", "A much longer sentence that goes on, and on, and on for a while."])


@settings(max_examples=200, deadline=None)
@given(
    sentences=st.lists(SENTENCE, min_size=1, max_size=25),
    seps=st.lists(st.sampled_from([" ", " ", "\n", "\n\n"]), min_size=25, max_size=25),
    strategy=st.sampled_from(STRATEGIES),
    size=st.integers(70, 400),
    data=st.data(),
)
def test_no_chunk_ends_inside_a_sentence_when_one_fits(
    sentences: list[str], seps: list[str], strategy: str, size: int, data: st.DataObject
) -> None:
    """Every sentence here is shorter than the smallest window (70 characters, 20 tokens), so no strategy
    ever needs to cut one: every chunk starts and ends at a sentence's edge."""
    if strategy == "tokens":
        size //= 3
    overlap = data.draw(st.integers(0, size - 1))
    text = "".join(s + sep for s, sep in zip(sentences, seps, strict=False)).rstrip()
    starts = {0} | {c for c in range(len(text)) if text[c - 1].isspace() and not text[c].isspace()}
    edges = set(sentence_ends(text)) | {len(text)}
    chunks = chunk_text(text, strategy=strategy, chunk_size=size, overlap=overlap)
    for chunk in chunks:
        assert chunk.end in edges, (chunk.text, text)
        assert chunk.start in starts and any(chunk.text.startswith(s) for s in sentences), chunk.text
    covered = [False] * len(text)
    for chunk in chunks:
        covered[chunk.start : chunk.end] = [True] * (chunk.end - chunk.start)
    assert all(c or text[i].isspace() for i, c in enumerate(covered))


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(st.sampled_from([*"ab A.!?\"')\n\t#-1。", "Dr", "St", "e.g", "U.S", "\n\n", "- "]), max_size=300)
    .map("".join),
    data=st.data(),
)
def test_boundaries_of_a_piece_are_those_of_the_whole_text(text: str, data: st.DataObject) -> None:
    """Chunking reads boundaries a piece at a time (last_boundary, near a window's end): each piece must see
    exactly the boundaries the whole text has there."""
    whole = boundaries(text)
    lo = data.draw(st.integers(0, len(text)))
    hi = data.draw(st.integers(lo, len(text)))
    assert boundaries(text, lo, hi, end=len(text)) == [c for c in whole if lo < c <= hi]
    before = [c for c in whole if lo < c <= hi]
    assert last_boundary(text, lo, hi, len(text)) == (before[-1] if before else None)
    with patch.object(sentences, "_PIECE", 5):  # many small pieces, each edge between two of them tried
        assert last_boundary(text, lo, hi, len(text)) == (before[-1] if before else None)
        chunks = chunk_text(text, strategy="characters", chunk_size=40, overlap=15)
    with patch.object(sentences, "_PIECE", 10_000):
        assert chunk_text(text, strategy="characters", chunk_size=40, overlap=15) == chunks
