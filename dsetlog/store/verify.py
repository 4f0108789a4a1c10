"""`dset log verify`: every line of the log judged the way the readers judge it, without changing anything.

A sound log is checked at the speed of a replay (:func:`~dsetlog.store.scan.read_batches`, its checksums on
the second core); one with a bad line is then read line by line by a :class:`LineJudge`, which names every
bad line (the first :data:`LISTED`) and blames as few as it can. The report also names a torn tail, and
whether a writer held the lock the whole time (the end may then be a write in flight).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import portalocker

from dsetlog.errors import UsageError
from dsetlog.store.errors import CorruptLogError
from dsetlog.store.layout import Recorded, parse_line, why_bad
from dsetlog.store.scan import find_valid_end, line_chunks, read_batches

LISTED = 20  # bad lines kept in a report; a log full of garbage must not fill memory
_DUP_WINDOW = 1 << 16  # recent records remembered to spot a duplicated line or block
_LOCK_WAIT_VERIFY = 2.0  # appends hold the lock for milliseconds; verify never waits long


class BadLine(msgspec.Struct):
    line: int  # 1-based line number in the file as it was
    offset: int  # byte offset of the line's start
    length: int  # bytes, newline included
    reason: str


class TornTail(msgspec.Struct):
    """Bytes after the last valid record: a write that never finished, cut off on the next open."""

    line: int
    offset: int
    length: int
    reason: str


class VerifyReport(msgspec.Struct):
    path: str
    size: int
    lines: int  # whole lines before any torn tail
    records: int  # valid records among them
    last_seq: int
    bad_count: int
    bad: list[BadLine]  # the first few, in file order
    torn: TornTail | None = None
    writer_busy: bool = False  # the lock was held throughout, so the end may be a write in flight

    @property
    def ok(self) -> bool:
        return self.bad_count == 0 and self.torn is None



def whole_lines(fd: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line without its newline) for every line in [0, end), which ends a line."""
    for pos, data, n in line_chunks(fd, 0, end):
        for line in data[:n].split(b"\n")[:-1]:
            yield pos, line
            pos += len(line) + 1


def _describe_tail(tail: bytes) -> str:
    if not tail.strip(b"\0"):
        return "NUL bytes (space allocated for a write that never landed)"
    nl = tail.find(b"\n")
    if nl < 0:
        return "incomplete last line (a write that never finished)"
    return f"{why_bad(tail[:nl])}, with nothing valid after it"


class LineJudge:
    """Judges each line in file order the way the readers do, blaming as few lines as it can.

    A line is "ok", "seq" (valid, but its seq does not follow), "dup" (an exact copy of a recent
    record: same seq, ts and crc) or "bad" (not a valid record). A seq gap as wide as the bad lines
    before it is explained by them. After a record with an unexpected seq, the next one may follow
    either that seq (lines went missing) or the count of lines (that one seq was damaged), so only
    the odd line out is reported, not every line after it.
    """

    def __init__(self) -> None:
        self.last_seq = 0
        self.alt_last: int | None = None  # the seq the odd record would have had by counting lines
        self.unexplained = 0  # bad lines since the last valid record: each may have held a seq
        self.recent: OrderedDict[tuple[int, str, int], int] = OrderedDict()

    def _fits(self, seq: int, last: int | None) -> bool:
        return last is not None and last + 1 <= seq <= last + 1 + self.unexplained

    def judge(self, number: int, line: bytes) -> tuple[str, Recorded | None, str]:
        rec = parse_line(line)
        if rec is None:
            self.unexplained += 1
            return "bad", None, why_bad(line)
        key = (rec.seq, rec.ts, rec.crc)
        first = self.recent.get(key)
        if first is not None:
            return "dup", rec, f"duplicate of line {first} (seq {rec.seq})"
        if self._fits(rec.seq, self.last_seq) or self._fits(rec.seq, self.alt_last):
            kind, why, self.alt_last = "ok", "", None
        else:
            due = self.last_seq + 1 + self.unexplained
            kind, why, self.alt_last = "seq", f"seq {rec.seq} where {due} was due", due
        self.last_seq, self.unexplained = rec.seq, 0
        self.recent[key] = number
        if len(self.recent) > _DUP_WINDOW:
            self.recent.popitem(last=False)
        return kind, rec, why


def scan_log(path: Path, fd: int, size: int) -> VerifyReport:
    """The report on the first ``size`` bytes of the log open as ``fd``."""
    valid_end, _ = find_valid_end(fd, size)
    records = last_seq = 0
    try:  # the common case, a sound log, at the speed of a replay (checksums on the second core)
        for recs, _ in read_batches(path, end=valid_end):
            records += len(recs)
            last_seq = recs[-1].seq
    except CorruptLogError:  # then line by line, to name every bad line and not only the first
        return _classify(path, fd, size, valid_end)
    return VerifyReport(str(path), size, records, records, last_seq, 0, [], _torn(fd, size, valid_end, records))


def _classify(path: Path, fd: int, size: int, valid_end: int) -> VerifyReport:
    judge = LineJudge()
    bad: list[BadLine] = []
    bad_count = lines = records = last_seq = 0
    for offset, line in whole_lines(fd, valid_end):
        lines += 1
        kind, rec, why = judge.judge(lines, line)
        if rec is not None and kind != "dup":
            records += 1
            last_seq = rec.seq
        if kind != "ok":
            bad_count += 1
            if len(bad) < LISTED:
                bad.append(BadLine(lines, offset, len(line) + 1, why))
    return VerifyReport(str(path), size, lines, records, last_seq, bad_count, bad, _torn(fd, size, valid_end, lines))


def _torn(fd: int, size: int, valid_end: int, lines: int) -> TornTail | None:
    if valid_end >= size:
        return None
    tail = os.pread(fd, min(size - valid_end, 1 << 16), valid_end)
    return TornTail(lines + 1, valid_end, size - valid_end, _describe_tail(tail))


def lock_path(path: Path) -> Path:
    """The lock file the log's writers hold while they append (see :class:`~dsetlog.store.log.EventLog`)."""
    return path.with_name(path.name + ".lock")


def try_lock(fh: Any, wait: float) -> bool:
    """Take the exclusive lock on ``fh`` within ``wait`` seconds: True, or False when it stayed held."""
    deadline = time.monotonic() + wait
    while True:
        try:
            portalocker.lock(fh, portalocker.LOCK_EX | portalocker.LOCK_NB)
            return True
        except portalocker.exceptions.LockException:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)


def open_log(path: Path) -> int:
    """A read-only descriptor of the log; a UsageError saying how to name the data dir when there is none."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise UsageError(f"no event log at {path} (give the data directory with --data DIR or DSET_DATA_DIR)") from None


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Check every line of the log without changing anything (not even creating the lock file)."""
    path = Path(path)
    fd = open_log(path)
    try:
        # Hold the lock only to read the size: appends are whole under it, so a half-written
        # line then is a real torn tail and not a write in flight. Reading happens unlocked.
        busy = False
        try:
            lock_fh = open(lock_path(path), "rb")  # noqa: SIM115 - closed just below
        except OSError:
            lock_fh = None  # no writer has ever opened this log here
        if lock_fh is not None:
            with lock_fh:
                busy = not try_lock(lock_fh, _LOCK_WAIT_VERIFY)
                size = os.fstat(fd).st_size
        else:
            size = os.fstat(fd).st_size
        report = scan_log(path, fd, size)
        report.writer_busy = busy
        return report
    finally:
        os.close(fd)


