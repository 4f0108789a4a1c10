"""Records of the log by seq, without reading the log: a binary search over byte offsets.

Every line starts with ``{"seq":N,`` and seqs grow by one from the first line to the last, so the line
of a given seq is found in O(log size) small reads. An entry's history (the seqs of every record that
touched it, kept by the Datasets projection) is thus served in microseconds even from a log of millions
of events, where `dset log history` scans the whole file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dsetlog.store.log import Recorded, parse_line

_PREFIX = b'{"seq":'
_WINDOW = 1 << 16


def _seq_of(head: bytes) -> int | None:
    if not head.startswith(_PREFIX):
        return None
    end = head.find(b",", len(_PREFIX), len(_PREFIX) + 24)
    if end < 0:
        return None
    try:
        return int(head[len(_PREFIX) : end])
    except ValueError:
        return None


class _Reader:
    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size

    def next_line_start(self, pos: int) -> int | None:
        """The first line start at or after ``pos`` (None past the end)."""
        if pos <= 0:
            return 0
        at = pos - 1
        while at < self.size:
            buf = os.pread(self.fd, 4096, at)
            if not buf:
                return None
            nl = buf.find(b"\n")
            if nl >= 0:
                start = at + nl + 1
                return start if start < self.size else None
            at += len(buf)
        return None

    def seq_at(self, start: int) -> int | None:
        return _seq_of(os.pread(self.fd, 32, start))

    def line(self, start: int) -> bytes:
        out = bytearray()
        at = start
        while True:
            buf = os.pread(self.fd, _WINDOW, at)
            if not buf:
                return bytes(out)
            nl = buf.find(b"\n")
            if nl >= 0:
                out += buf[:nl]
                return bytes(out)
            out += buf
            at += len(buf)

    def find(self, seq: int) -> int | None:
        """Offset of the line holding ``seq``, or None."""
        lo, hi = 0, self.size  # the line of ``seq`` starts in [lo, hi); lo is a line start
        while hi - lo > _WINDOW:
            mid = (lo + hi) // 2
            start = self.next_line_start(mid)
            if start is None or start >= hi:
                hi = mid
                continue
            found = self.seq_at(start)
            if found is None:
                return None  # not a record where one should start: let the caller give up on this seq
            if found == seq:
                return start
            if found < seq:
                lo = start
            else:
                hi = start
        buf = os.pread(self.fd, hi - lo, lo)
        pos = 0
        while pos < len(buf):
            if _seq_of(buf[pos : pos + 32]) == seq:
                return lo + pos
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            pos = nl + 1
        return None


def records_by_seq(path: str | os.PathLike[str], seqs: Iterable[int]) -> list[Recorded]:
    """The valid records with these seqs, in seq order (a seq not found, or a damaged line, is left out)."""
    try:
        fd = os.open(Path(path), os.O_RDONLY)
    except FileNotFoundError:
        return []
    try:
        reader = _Reader(fd, os.fstat(fd).st_size)
        out = []
        for seq in sorted(set(seqs)):
            start = reader.find(seq)
            if start is None:
                continue
            rec = parse_line(reader.line(start))
            if rec is not None and rec.seq == seq:
                out.append(rec)
        return out
    finally:
        os.close(fd)
