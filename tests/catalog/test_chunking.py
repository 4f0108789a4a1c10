"""Chunking: exact offsets, each strategy's unit for size and overlap, validation, determinism."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsetlog.catalog.chunking import STRATEGIES, TOKEN_RE, Chunk, chunk_text

PROSE = (
    "Photosynthesis converts light energy into chemical energy. It happens in chloroplasts, "
    "which contain chlorophyll. The light reactions make ATP and NADPH; the Calvin cycle then "
    "fixes carbon dioxide into sugars. Respiration later releases that energy in mitochondria."
)

MARKDOWN = """Preface text before any heading.

# Intro

Welcome to the guide.

## Setup

Install the tool.

Configure the tool.

```
# not a heading inside a fence
```

## Usage

Run it.

# Reference

### Options

Every option explained.
"""


def _assert_exact(text: str, chunks: list[Chunk]) -> None:
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip() and chunk.text


def _covered(text: str, chunks: list[Chunk], *, except_headings: bool = False) -> bool:
    """Every non-whitespace character of text lies in some chunk (markdown: a heading may not)."""
    inside = [False] * len(text)
    for chunk in chunks:
        for i in range(chunk.start, chunk.end):
            inside[i] = True
    if except_headings:
        for match in re.finditer(r"(?m)^#{1,6}[ \t].*$", text):
            inside[match.start() : match.end()] = [True] * (match.end() - match.start())
    return all(inside[i] or ch.isspace() for i, ch in enumerate(text))


# --- characters --------------------------------------------------------------------


def test_characters_respects_size_breaks_at_whitespace_and_covers() -> None:
    chunks = chunk_text(PROSE, strategy="characters", chunk_size=60, overlap=0)
    _assert_exact(PROSE, chunks)
    assert _covered(PROSE, chunks)
    assert all(len(c.text) <= 60 for c in chunks)
    for chunk in chunks[:-1]:  # every cut falls at whitespace, never inside a word
        assert PROSE[chunk.end].isspace()
    assert chunks[1].start > chunks[0].end  # no overlap asked, none given


# one sentence with no end inside it: windows end at whitespace, and the overlap is words
RUN_ON = PROSE.replace(". ", ", ").replace("; ", ", ")


def test_characters_overlap_repeats_text_up_to_the_overlap() -> None:
    plain = chunk_text(RUN_ON, strategy="characters", chunk_size=60, overlap=0)
    overlapped = chunk_text(RUN_ON, strategy="characters", chunk_size=60, overlap=20)
    _assert_exact(RUN_ON, overlapped)
    assert len(overlapped) > len(plain)
    for prev, nxt in pairwise(overlapped):
        shared = prev.end - nxt.start
        assert 0 < shared <= 20
        assert RUN_ON[nxt.start - 1].isspace()  # starts at a word


def test_characters_end_at_sentence_ends_and_overlap_whole_sentences() -> None:
    chunks = chunk_text(PROSE, strategy="characters", chunk_size=150, overlap=80)
    _assert_exact(PROSE, chunks)
    sentences = ["Photosynthesis", "It happens", "The light", "Respiration"]
    # the third sentence (96 characters) is longer than the overlap: not repeated
    assert [c.text.split(" ")[0] for c in chunks] == ["Photosynthesis", "It", "Respiration"]
    for chunk in chunks:  # every chunk is whole sentences: it starts one and ends one
        assert chunk.text.endswith(".") and any(chunk.text.startswith(s) for s in sentences)
    assert chunks[0].text.endswith("chlorophyll.") and chunks[1].text.startswith("It happens")  # overlap <= 80


def test_characters_cuts_a_word_longer_than_the_window() -> None:
    text = "a " + "x" * 25 + " b"
    chunks = chunk_text(text, strategy="characters", chunk_size=10, overlap=0)
    _assert_exact(text, chunks)
    assert _covered(text, chunks)
    assert all(len(c.text) <= 10 for c in chunks)


# --- tokens ------------------------------------------------------------------------


def test_tokens_windows_count_tokens_with_overlap() -> None:
    tokens = TOKEN_RE.findall(RUN_ON)
    chunks = chunk_text(RUN_ON, strategy="tokens", chunk_size=12, overlap=4)
    _assert_exact(RUN_ON, chunks)
    counts = [len(TOKEN_RE.findall(c.text)) for c in chunks]
    assert all(n == 12 for n in counts[:-1]) and 0 < counts[-1] <= 12
    for prev, nxt in pairwise(chunks):
        assert TOKEN_RE.findall(prev.text)[-4:] == TOKEN_RE.findall(nxt.text)[:4]
    assert sum(counts) - 4 * (len(chunks) - 1) == len(tokens)


def test_tokens_windows_end_at_sentence_ends_and_overlap_whole_sentences() -> None:
    chunks = chunk_text(PROSE, strategy="tokens", chunk_size=30, overlap=12)
    _assert_exact(PROSE, chunks)
    assert all(len(TOKEN_RE.findall(c.text)) <= 30 for c in chunks)
    assert [c.text for c in chunks] == [
        "Photosynthesis converts light energy into chemical energy. It happens in chloroplasts, which contain "
        "chlorophyll.",
        "It happens in chloroplasts, which contain chlorophyll. The light reactions make ATP and NADPH; the "
        "Calvin cycle then fixes carbon dioxide into sugars.",
        "Respiration later releases that energy in mitochondria.",
    ]  # the second sentence (8 tokens) is repeated; the third (21) does not fit in 12


def test_tokens_punctuation_is_its_own_token() -> None:
    chunks = chunk_text("Hi, there! Bye.", strategy="tokens", chunk_size=2, overlap=0)
    assert [c.text for c in chunks] == ["Hi,", "there!", "Bye."]


def test_tokens_count_han_and_kana_one_a_character_and_windows_end_at_their_full_stops() -> None:
    text = "北京是中国的首都。上海是最大的城市！東京はどうですか？Tokyo is big."
    assert TOKEN_RE.findall("北京是首都。Tokyo 2024") == ["北", "京", "是", "首", "都", "。", "Tokyo", "2024"]
    chunks = chunk_text(text, strategy="tokens", chunk_size=12, overlap=0)
    assert [c.text for c in chunks] == ["北京是中国的首都。", "上海是最大的城市！", "東京はどうですか？", "Tokyo is big."]


# --- paragraphs -------------------------------------------------------------------


PARAGRAPHS = "\n\n".join(f"Paragraph {i} " + "word " * 8 + "end." for i in range(6))  # 60 chars each


def test_paragraphs_pack_greedily_up_to_the_size() -> None:
    chunks = chunk_text(PARAGRAPHS, strategy="paragraphs", chunk_size=130, overlap=0)
    _assert_exact(PARAGRAPHS, chunks)
    assert [c.text.count("Paragraph") for c in chunks] == [2, 2, 2]
    assert all(len(c.text) <= 130 for c in chunks)


def test_paragraphs_overlap_is_a_number_of_paragraphs() -> None:
    chunks = chunk_text(PARAGRAPHS, strategy="paragraphs", chunk_size=200, overlap=1)
    _assert_exact(PARAGRAPHS, chunks)
    firsts = [c.text.split()[1] for c in chunks]
    assert firsts == ["0", "2", "4"]  # three per chunk, the last one repeated next
    assert [c.text.count("Paragraph") for c in chunks] == [3, 3, 2]


def test_a_fenced_code_block_is_one_paragraph_blank_lines_and_all() -> None:
    code = "```\ntilt = read()\n\nif tilt > 2.5:\n    warn()\n```"
    text = f"Intro line.\n\n{code}\n\nOutro line."
    chunks = chunk_text(text, strategy="paragraphs", chunk_size=len(code), overlap=0)
    assert [c.text for c in chunks] == ["Intro line.", code, "Outro line."]


def test_paragraph_longer_than_the_size_is_cut() -> None:
    text = "short one\n\n" + "long " * 40 + "\n\nshort two"
    chunks = chunk_text(text, strategy="paragraphs", chunk_size=50, overlap=0)
    _assert_exact(text, chunks)
    assert _covered(text, chunks)
    assert all(len(c.text) <= 50 for c in chunks)


# --- markdown ------------------------------------------------------------------------


def test_markdown_sections_carry_their_heading_path() -> None:
    chunks = chunk_text(MARKDOWN, strategy="markdown", chunk_size=1000, overlap=0)
    _assert_exact(MARKDOWN, chunks)
    assert [c.heading for c in chunks] == [
        None,
        "Intro",
        "Intro > Setup",
        "Intro > Usage",
        "Reference > Options",  # "# Reference" has no body of its own: no chunk, but in the path
    ]
    setup = chunks[2].text
    assert setup.startswith("## Setup") and "# not a heading inside a fence" in setup
    assert "# Reference" not in "".join(c.text for c in chunks)  # an empty section lives on in paths only
    assert _covered(MARKDOWN, chunks, except_headings=True)


def test_markdown_long_section_is_split_by_paragraphs_with_character_overlap() -> None:
    body = "\n\n".join(f"Step {i}: do the thing number {i} carefully." for i in range(10))
    text = f"# Guide\n\n## Steps\n\n{body}\n"
    plain = chunk_text(text, strategy="markdown", chunk_size=120, overlap=0)
    _assert_exact(text, plain)
    assert len(plain) > 1 and all(len(c.text) <= 120 for c in plain)
    assert {c.heading for c in plain} == {"Guide > Steps"}
    assert all(b.start > a.end for a, b in pairwise(plain))

    overlapped = chunk_text(text, strategy="markdown", chunk_size=120, overlap=50)
    _assert_exact(text, overlapped)
    assert all(0 < a.end - b.start <= 50 for a, b in pairwise(overlapped))


# --- validation and determinism ---------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "size", "overlap", "message"),
    [
        ("sentences", 100, 0, "characters, tokens, markdown, paragraphs"),
        ("characters", 0, 0, "chunk_size"),
        ("characters", 10, 10, "overlap"),
        ("tokens", 10, -1, "overlap"),
    ],
)
def test_invalid_arguments_are_refused(strategy: str, size: int, overlap: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chunk_text(PROSE, strategy=strategy, chunk_size=size, overlap=overlap)


def test_strategies_are_listed_and_deterministic() -> None:
    assert STRATEGIES == ("characters", "tokens", "markdown", "paragraphs")
    for strategy in STRATEGIES:
        assert chunk_text(MARKDOWN, strategy=strategy, chunk_size=40, overlap=5) == chunk_text(
            MARKDOWN, strategy=strategy, chunk_size=40, overlap=5
        )


def test_whitespace_only_text_gives_no_chunks() -> None:
    for strategy in STRATEGIES:
        assert chunk_text(" \n\n \t", strategy=strategy, chunk_size=10, overlap=0) == []


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("ab #\n\t.,"), max_size=300),
    strategy=st.sampled_from(STRATEGIES),
    size=st.integers(1, 60),
    data=st.data(),
)
def test_offsets_are_exact_and_text_is_covered(
    text: str, strategy: str, size: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(0, size - 1))
    chunks = chunk_text(text, strategy=strategy, chunk_size=size, overlap=overlap)
    _assert_exact(text, chunks)
    assert _covered(text, chunks, except_headings=strategy == "markdown")
    if strategy != "tokens":
        assert all(len(c.text) <= size for c in chunks)


def test_markdown_heading_closing_hashes_are_dropped_but_a_trailing_hash_in_a_word_is_kept() -> None:
    text = "# Languages ##\n\n## C#\n\nA language."
    chunks = chunk_text(text, strategy="markdown", chunk_size=100, overlap=0)
    assert [c.heading for c in chunks] == ["Languages > C#"]
