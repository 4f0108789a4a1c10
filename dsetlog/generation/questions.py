"""Reading a questions CSV (questions in the first column) and writing bookmarks back into it.

The CSV is the user's file: we read it tolerantly (UTF-8 with or without a BOM,
UTF-16 or UTF-32 with one, blank lines, a header or not, any common delimiter),
and when we write the ``status`` column back we re-read it first and change only
the status cells, in the file's own encoding, atomically, so a concurrent edit or
an unrelated column is never lost. Only a regular file is read, and at most
``max_bytes`` of it: a device (/dev/zero), a FIFO or a directory is refused at once.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from dsetlog.errors import UsageError
from dsetlog.fsutil import atomic_write_bytes

ERROR = "ERROR"
_HEADER_NAMES = {"question", "questions", "prompt", "prompts", "query", "queries", "input", "instruction", "text", "q"}
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_ \-]{0,40}$")
MAX_INPUT_BYTES = 512 * 2**20  # a questions file larger than this is refused (`dset generate --max-input-mb`)
# byte order marks, longest first (UTF-32 LE starts like UTF-16 LE): (BOM, codec of what follows it)
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


class QuestionsFileError(UsageError, ValueError):
    """The questions file cannot be used; the message says why and what to do."""


def normalize(question: str) -> str:
    """The identity of a question: whitespace collapsed, case folded."""
    return " ".join(question.split()).casefold()


@dataclass(frozen=True)
class Question:
    row: int  # 1-based line number in the CSV (what an editor shows)
    text: str
    status: str  # the status cell as read ("" when absent)


@dataclass
class QuestionsFile:
    path: Path
    questions: list[Question]  # unique questions, in file order
    has_header: bool
    status_column: int | None  # index of the status column, None if the file has none
    blank: int = 0  # rows with an empty question
    duplicates: int = 0  # rows repeating an earlier question (answered once)
    duplicate_rows: dict[int, int] = field(default_factory=dict)  # duplicate row -> row of its first occurrence


@dataclass
class _Parsed:
    rows: list[list[str]]
    line_numbers: list[int]
    dialect: type[csv.Dialect] | csv.Dialect
    bom: bytes  # the file's byte order mark (b"" without one), written back as it was
    newline: str
    encoding: str = "utf-8"


def _read_bytes(path: Path, max_bytes: int | None) -> bytes:
    """At most ``max_bytes`` (None: no bound but the file's size) of a regular file; anything else is refused
    before a byte is read (opening a FIFO does not wait for a writer: O_NONBLOCK)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise QuestionsFileError(f"{path}: no such file. Give the path of a CSV with questions in the first column.") \
            from None
    except IsADirectoryError:
        raise QuestionsFileError(f"{path} is a directory, not a CSV file.") from None
    except OSError as exc:
        raise QuestionsFileError(f"{path}: cannot be read ({exc.strerror}).") from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise QuestionsFileError(f"{path}: cannot be read ({exc.strerror}).") from None
    kind = next((name for test, name in _KINDS if test(st.st_mode)), None)
    if kind or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise QuestionsFileError(f"{path} is {kind or 'not a regular file'}, not a CSV file; give the path of "
                                 "a CSV file with questions in the first column.")
    with os.fdopen(fd, "rb") as fh:
        limit = max_bytes if max_bytes is not None else st.st_size
        if max_bytes is not None and st.st_size > max_bytes:
            raise QuestionsFileError(_too_big(path, st.st_size, max_bytes))
        try:
            raw = fh.read(limit + 1)  # the file may grow while it is read: never more than the limit
        except OSError as exc:
            raise QuestionsFileError(f"{path}: cannot be read ({exc.strerror}).") from None
    if max_bytes is not None and len(raw) > max_bytes:
        raise QuestionsFileError(_too_big(path, len(raw), max_bytes))
    return raw


def _too_big(path: Path, size: int, max_bytes: int) -> str:
    return (f"{path} is {_size(size)}, over the limit for a questions file ({_size(max_bytes)}); split it, or raise "
            "the limit with --max-input-mb.")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n:,} bytes"


def _read_text(path: Path, max_bytes: int | None = MAX_INPUT_BYTES) -> tuple[str, bytes, str]:
    """(text, BOM, codec): UTF-8 with or without a BOM, or UTF-16/UTF-32 with one."""
    raw = _read_bytes(path, max_bytes)
    bom, codec = next(((b, c) for b, c in _BOMS if raw.startswith(b)), (b"", "utf-8"))
    body = raw[len(bom):]
    if codec == "utf-8" and b"\x00" in body[:8192]:
        raise QuestionsFileError(f"{path} is not a CSV file (it holds binary data; a UTF-16 or UTF-32 file needs "
                                 "its byte order mark, or save it as UTF-8).")
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        name = codec.upper().replace("-LE", "").replace("-BE", "")
        raise QuestionsFileError(
            f"{path} is not {name} (byte 0x{body[exc.start]:02x} at offset {exc.start + len(bom)}); "
            "save it as UTF-8 and run again."
        ) from None
    if "\x00" in text[:8192]:
        raise QuestionsFileError(f"{path} is not a CSV file (it holds binary data).")
    return text, bom, codec


def _parse(path: Path, max_bytes: int | None = MAX_INPUT_BYTES) -> _Parsed:
    text, bom, codec = _read_text(path, max_bytes)
    newline = "\r\n" if "\r\n" in text[:65536] else "\n"
    sample = text[:16384]  # hundreds of rows tell the delimiter; the sniffer's regexes grow faster than its sample
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel  # one column, or too little text to tell: plain CSV
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""), dialect, strict=True)
    try:
        line = 1
        for row in reader:
            rows.append(row)
            line_numbers.append(line)
            line = reader.line_num + 1
    except csv.Error as exc:
        raise QuestionsFileError(f"{path}: not a valid CSV near line {reader.line_num} ({exc}).") from None
    return _Parsed(rows, line_numbers, dialect, bom, newline, codec)


def _looks_like_header(rows: list[list[str]]) -> bool:
    first = [c.strip() for c in rows[0]]
    if not first or not first[0]:
        return False
    lowered = [c.casefold() for c in first]
    if lowered[0] in _HEADER_NAMES or "status" in lowered[1:]:
        return True
    # A short label ("Question text") above cells that read like questions is a header; a question is kept.
    label = first[0]
    if label.endswith(("?", ".", "!")) or not _LABEL.match(label) or len(label.split()) > 3:
        return False
    body = [r[0].strip() for r in rows[1:21] if r and r[0].strip()]
    return bool(body) and sum(q.endswith("?") or len(q.split()) > 3 for q in body) >= max(1, len(body) * 3 // 4)


def _layout(rows: list[list[str]], header: bool | None) -> tuple[bool, int | None]:
    """(has a header row, index of the status column or None)."""
    has_header = _looks_like_header(rows) if header is None else header
    if has_header:
        names = [c.strip().casefold() for c in rows[0]]
        return True, (names.index("status") if "status" in names[1:] else None)
    if any(len(r) > 1 and r[1].strip().upper() == ERROR for r in rows):
        return False, 1  # headerless "question,ERROR" rows written by an earlier run
    return False, None


def read_questions(path: str | Path, *, header: bool | None = None, max_bytes: int = MAX_INPUT_BYTES) -> QuestionsFile:
    """Parse the file; ``header`` forces (True/False) or auto-detects (None) a header row. QuestionsFileError
    for anything but a regular file of at most ``max_bytes``, or one that is not text."""
    path = Path(path)
    parsed = _parse(path, max_bytes)
    rows = parsed.rows
    if not any(any(c.strip() for c in r) for r in rows):
        raise QuestionsFileError(f"{path} holds no questions. Put one question per row in the first column.")
    has_header, status_column = _layout(rows, header)
    result = QuestionsFile(path, [], has_header, status_column)
    seen: dict[str, int] = {}
    skip = 1 if has_header else 0
    for row, line in zip(rows[skip:], parsed.line_numbers[skip:], strict=True):
        text = row[0].strip() if row else ""
        if not text:
            result.blank += 1
            continue
        key = normalize(text)
        if key in seen:
            result.duplicates += 1
            result.duplicate_rows[line] = seen[key]
            continue
        seen[key] = line
        status = row[status_column].strip() if status_column is not None and status_column < len(row) else ""
        result.questions.append(Question(line, text, status))
    if not result.questions:
        raise QuestionsFileError(f"{path} holds no questions (only a header or empty cells).")
    return result


def write_statuses(path: str | Path, failed: set[str], *, header: bool | None = None) -> bool:
    """Set ``ERROR`` on rows whose normalised question is in ``failed`` and clear it on the others.

    Re-reads the file so edits made during the run survive; only status cells
    change, and other status values than ERROR are left alone. Returns whether
    the file was rewritten (it is not when nothing changes).
    """
    path = Path(path)
    parsed = _parse(path, None)  # the file read_questions accepted: a regular file, as large as it is
    rows = [list(r) for r in parsed.rows]
    has_header, col = _layout(rows, header)
    changed = False
    if col is None:
        if not failed:
            return False  # nothing to bookmark: leave a file without a status column as it is
        col = max(len(r) for r in rows)
        for row in rows:  # a new column: every row gets its cell, so the file stays rectangular
            row += [""] * (col + 1 - len(row))
        if has_header:
            rows[0][col] = "status"
    for i, row in enumerate(rows):
        if (has_header and i == 0) or not row or not row[0].strip():
            continue
        current = row[col].strip() if col < len(row) else ""
        want = ERROR if normalize(row[0]) in failed else ("" if current.upper() == ERROR else current)
        if want != current:
            row += [""] * (col + 1 - len(row))
            row[col] = want
            changed = True
    if not changed:
        return False
    out = io.StringIO(newline="")
    writer = csv.writer(out, dialect=parsed.dialect, lineterminator=parsed.newline)
    writer.writerows(rows)
    data = out.getvalue().encode(parsed.encoding)
    atomic_write_bytes(path, parsed.bom + data)
    return True
