"""Reading questions CSVs and writing bookmarks back: real files, every odd shape users have."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsetlog.generation.questions import QuestionsFileError, read_questions, write_statuses


def write(tmp_path: Path, text: str | bytes, name: str = "q.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_header_row_is_detected_and_skipped(tmp_path: Path) -> None:
    q = read_questions(write(tmp_path, "question,status\nWhat is CRISPR?,\nWhy is the sky blue?,ERROR\n"))
    assert q.has_header and q.status_column == 1
    assert [x.text for x in q.questions] == ["What is CRISPR?", "Why is the sky blue?"]
    assert [x.row for x in q.questions] == [2, 3]
    assert q.questions[1].status == "ERROR"


def test_a_first_row_that_is_a_question_is_kept(tmp_path: Path) -> None:
    q = read_questions(write(tmp_path, "What causes aurora borealis?\nExplain quantum entanglement\n"))
    assert not q.has_header
    assert q.questions[0].text == "What causes aurora borealis?"


def test_a_short_label_above_questions_is_a_header(tmp_path: Path) -> None:
    q = read_questions(write(tmp_path, "Prompt text\nWhat is CRISPR?\nHow do tides work?\n"))
    assert q.has_header and len(q.questions) == 2


def test_header_can_be_forced(tmp_path: Path) -> None:
    path = write(tmp_path, "question\nWhat is CRISPR?\n")
    assert len(read_questions(path, header=False).questions) == 2
    assert len(read_questions(path, header=True).questions) == 1


def test_bom_blank_rows_and_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbfquestion\r\nWhat is CRISPR?\r\n\r\n  \r\nwhat  is crispr?\r\nWhy?\r\n")
    q = read_questions(path)
    assert q.has_header
    assert [x.text for x in q.questions] == ["What is CRISPR?", "Why?"]
    assert q.blank == 2 and q.duplicates == 1
    assert q.duplicate_rows == {5: 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "no questions"),
        (b"question,status\n,\n", "no questions"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
        (b"caf\xe9 question?\n", "not UTF-8"),
        (b'question\n"unterminated\n', "not a valid CSV"),
    ],
)
def test_bad_files_get_a_clear_error(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "q.csv" if content is None else write(tmp_path, content)
    with pytest.raises(QuestionsFileError, match=message):
        read_questions(path)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(QuestionsFileError, match="directory"):
        read_questions(tmp_path)


def test_bookmarks_round_trip_preserving_other_cells(tmp_path: Path) -> None:
    path = write(tmp_path, "question,status,notes\r\nWhat is CRISPR?,,keep me\r\n\"Why, though?\",,\"a, b\"\r\n")
    assert write_statuses(path, {"why, though?"}) is True
    text = path.read_bytes().decode()
    assert text == "question,status,notes\r\nWhat is CRISPR?,,keep me\r\n\"Why, though?\",ERROR,\"a, b\"\r\n"
    assert read_questions(path).questions[1].status == "ERROR"
    assert write_statuses(path, {"why, though?"}) is False  # nothing to change: not rewritten
    assert write_statuses(path, set()) is True  # answered later: ERROR cleared
    assert path.read_bytes().decode() == "question,status,notes\r\nWhat is CRISPR?,,keep me\r\n\"Why, though?\",,\"a, b\"\r\n"


def test_bookmarks_add_a_status_column_when_missing(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbfquestion\nWhat is CRISPR?\nWhy?\n")
    assert write_statuses(path, set()) is False  # no failure, no column needed
    assert write_statuses(path, {"why?"}) is True
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM is kept
    assert raw.decode("utf-8-sig") == "question,status\nWhat is CRISPR?,\nWhy?,ERROR\n"


def test_headerless_bookmarks_are_read_back(tmp_path: Path) -> None:
    path = write(tmp_path, "What is CRISPR?\nWhy is the sky blue?\n")
    write_statuses(path, {"why is the sky blue?"})
    q = read_questions(path)
    assert not q.has_header and q.status_column == 1
    assert [x.status for x in q.questions] == ["", "ERROR"]


def test_other_status_values_are_left_alone(tmp_path: Path) -> None:
    path = write(tmp_path, "question,status\nWhat is CRISPR?,reviewed\nWhy?,ERROR\n")
    write_statuses(path, set())
    assert path.read_text() == "question,status\nWhat is CRISPR?,reviewed\nWhy?,\n"
