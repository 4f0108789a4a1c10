"""Reading the log's file: the valid end, whole lines a chunk at a time, replays, and seeks by seq.

Everything up to the last valid record must be valid: after it there can only be a write in flight or a
torn tail (a crash damages only the end), which readers leave alone; a bad line *followed* by good ones is
corruption, refused with :class:`~dsetlog.store.errors.CorruptLogError`. :func:`read_batches` folds
millions of records a chunk at a time, handing the checksums of a big replay to a second process
(:class:`_Checker`, running :mod:`dsetlog.store.crc_worker`); :func:`seek_seq` is the one binary search
by seq, which :func:`read_seqs` and :meth:`dsetlog.store.log.EventLog.read` use.
"""

from __future__ import annotations

import itertools
import operator
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from dsetlog.store.errors import CorruptLogError, LogError
from dsetlog.store.layout import DECODE_ERRORS, Recorded, count_checked, first_bad, parse_line, record_decoder

_READ_CHUNK = 1 << 23  # 8 MiB: few calls into C, bounded memory while replaying
# A replay longer than this has its checksums checked by a second process, which takes about 100 ms
# to start: the reader checks the first _CHECK_HEAD bytes itself meanwhile.
PARALLEL_CHECK_BYTES = 1 << 26
_CHECK_HEAD = 1 << 25
_SEEK_LINEAR = 1 << 16  # seek_seq walks record by record once its range is this small
_seq_of = operator.attrgetter("seq")


def find_valid_end(fd: int, size: int, *, floor: int = 0, floor_seq: int = 0) -> tuple[int, int]:
    """Scan back from ``size`` to the last whole valid record: (its end offset, its seq).

    Nothing before ``floor`` (the end of a record known to be good, seq ``floor_seq``)
    is read; with no valid record after it the answer is (``floor``, ``floor_seq``).
    """
    block = 1 << 16
    start = max(floor, size - block)
    buf = os.pread(fd, size - start, start)
    end = len(buf)
    while True:
        nl = buf.rfind(b"\n", 0, end)
        if nl < 0:
            if start == floor:
                return floor, floor_seq
            grow = min(start - floor, len(buf))  # double the window backwards, keeping the part already read
            start -= grow
            buf = os.pread(fd, grow, start) + buf
            end += grow
            continue
        prev = buf.rfind(b"\n", 0, nl)
        if prev < 0 and start > floor:
            grow = min(start - floor, max(block, len(buf)))
            start -= grow
            buf = os.pread(fd, grow, start) + buf
            end += grow
            continue
        rec = parse_line(buf[prev + 1 : nl])
        if rec is not None:
            return start + nl + 1, rec.seq
        end = nl


def line_chunks(fd: int, start: int, end: int) -> Iterator[tuple[int, bytes, int]]:
    """The whole lines of ``[start, end)`` (which must end a line), a chunk at a time: (offset, data, n).

    ``data[:n]`` is the chunk's lines, newlines included; the bytes after ``n`` are
    read again as the start of the next chunk (less than a line: cheaper than a copy).
    """
    pos = start
    size = _READ_CHUNK
    while pos < end:
        data = os.pread(fd, min(size, end - pos), pos)
        if not data:
            raise LogError(f"the log ended at byte {pos} while it was read up to {end}: was it truncated?")
        n = data.rfind(b"\n") + 1
        if n == 0:
            if pos + len(data) >= end:
                raise LogError(f"the log's byte {end} does not end a line")
            size *= 2  # a line longer than a chunk
            continue
        yield pos, data, n
        pos += n
        size = _READ_CHUNK


def read_batches(
    path: Path, *, offset: int = 0, seq: int = 0, until_seq: int | None = None, end: int | None = None
) -> Iterator[tuple[list[Recorded], int]]:
    """Like :func:`read_records`, a chunk at a time: (records, the file offset just after the last of them).

    See :func:`read_located`, which this is with the records' positions left out.
    """
    for recs, bounds in read_located(path, offset=offset, seq=seq, until_seq=until_seq, end=end, locate=False):
        yield recs, bounds[-1]


def read_located(
    path: Path, *, offset: int = 0, seq: int = 0, until_seq: int | None = None, end: int | None = None,
    decoder: msgspec.json.Decoder[list[Any]] | None = None, locate: bool = True,
) -> Iterator[tuple[list[Any], list[int]]]:
    """Like :func:`read_records`, a chunk at a time: (records, their bounds).

    ``bounds`` has one offset more than there are records: record ``i``'s line is
    ``[bounds[i], bounds[i + 1] - 1)``, its newline after it, and ``bounds[-1]`` is where the last one ends.
    ``decoder`` decodes the lines (:data:`~dsetlog.store.layout.record_decoder`'s Recorded when None): a
    reader that folds only some fields of an event may decode a Struct that declares just those, which
    msgspec then skips over without building them. The same checks and the same stops and errors as :func:`read_records`, for
    callers that fold millions of records (projections). Each chunk is decoded by one
    C call, and when there is much to read the checksums are checked by a second
    process (:mod:`dsetlog.store.crc_worker`) on another core; no record is yielded before
    its checksum has passed. ``until_seq`` stops after that record; ``end`` reads as if the file ended
    there (what a caller saw under the lock).
    """
    with open(path, "rb", buffering=0) as fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size if end is None else min(end, os.fstat(fd).st_size)
        if size <= offset:
            return
        # Everything up to the last valid record must be valid; after it is a write in flight or a torn tail.
        # (Found from the end back, reading nothing before offset: a catch-up reads only what was appended.)
        valid_end, _ = find_valid_end(fd, size, floor=offset, floor_seq=seq)
        if valid_end <= offset:
            return
        # The worker takes the lines after a head that is checked here while it starts up.
        head_end = valid_end
        checker = None
        if valid_end - offset >= PARALLEL_CHECK_BYTES:
            head_end = _line_end_after(fd, offset + _CHECK_HEAD, valid_end)
            checker = _Checker.start(path, fd, head_end, valid_end)
        decode_lines = (decoder or record_decoder).decode_lines
        try:
            chunks = itertools.chain(line_chunks(fd, offset, head_end), line_chunks(fd, head_end, valid_end))
            for pos, data, n in chunks:
                if pos == head_end and checker is not None:
                    checker.first_seq = seq + 1
                try:
                    recs = decode_lines(memoryview(data)[:n])
                except DECODE_ERRORS:
                    bad, why = first_bad(data, n)
                    raise CorruptLogError(path, seq + 1 + bad, why) from None
                due = range(seq + 1, seq + 1 + len(recs))
                seqs = list(map(_seq_of, recs))
                if seqs != list(due):
                    bad = next(i for i, (got, want) in enumerate(zip(seqs, due, strict=True)) if got != want)
                    raise CorruptLogError(path, seq + 1 + bad, f"seq {seqs[bad]} where {due[bad]} was due")
                # the checksums, and the layout (one record a line), by the worker or here
                if checker is None or pos < head_end or not checker.checked_to(pos + n):
                    if checker is not None and pos >= head_end:
                        checker.stop()  # it died without a verdict (killed, out of memory): go on here
                        checker = None
                    good, why = count_checked(data, n)
                    if why:
                        raise CorruptLogError(path, seq + 1 + good, why)
                if until_seq is not None and recs[-1].seq >= until_seq:
                    keep = until_seq - seq
                    if keep > 0:
                        yield recs[:keep], _line_starts(data, n, pos, keep)
                    return
                seq = recs[-1].seq
                yield recs, _line_starts(data, n, pos, len(recs)) if locate else [pos + n]
        finally:
            if checker is not None:
                checker.stop()


# A line's place in the log in one int (what a read model keeps instead of the text the line holds):
# its start, shifted, and its length, which MAX_RECORD_BYTES (2**27) keeps below 2**28.
LINE_REF_BITS = 28
_LENGTH_MASK = (1 << LINE_REF_BITS) - 1
_REF_SPAN = 1 << 20  # read_lines covers neighbouring lines with one pread up to this many bytes
_REF_GAP = 1 << 16  # and reads over a gap this small rather than make a second call


def line_ref(start: int, end: int) -> int:
    """The ref of the line at ``[start, end)`` (its newline not included)."""
    return start << LINE_REF_BITS | (end - start)


def ref_start(ref: int) -> int:
    return ref >> LINE_REF_BITS


def read_lines(path: Path, refs: Iterable[int]) -> dict[int, bytes]:
    """The lines at these refs (:func:`line_ref`), read in the log's order, neighbours by one ``pread``.

    Unchecked: the caller checks that a line is the record it expects (a log rewritten since the ref was
    taken holds other bytes there). FileNotFoundError when there is no log.
    """
    wanted = sorted(set(refs))
    out: dict[int, bytes] = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        i = 0
        while i < len(wanted):
            span_start = wanted[i] >> LINE_REF_BITS
            span_end = span_start + (wanted[i] & _LENGTH_MASK)
            j = i + 1
            while j < len(wanted):  # the neighbours one read can cover
                start = wanted[j] >> LINE_REF_BITS
                end = start + (wanted[j] & _LENGTH_MASK)
                if start - span_end > _REF_GAP or end - span_start > _REF_SPAN:
                    break
                span_end = max(span_end, end)
                j += 1
            data = os.pread(fd, span_end - span_start, span_start)
            for ref in wanted[i:j]:
                start = (ref >> LINE_REF_BITS) - span_start
                out[ref] = data[start : start + (ref & _LENGTH_MASK)]
            i = j
    finally:
        os.close(fd)
    return out


def _line_starts(data: bytes, n: int, pos: int, k: int) -> list[int]:
    """Where the first ``k`` lines of ``data[:n]`` (read at ``pos``) start, and where the k-th ends.

    A loop over ``bytes.find`` (memchr): half the cost of splitting the chunk into line objects to measure them.
    """
    out = [pos]
    find, add = data.find, out.append
    i = 0
    while k > 0 and (j := find(b"\n", i, n)) >= 0:
        i = j + 1
        add(pos + i)
        k -= 1
    return out


def _line_end_after(fd: int, pos: int, end: int) -> int:
    """The offset just after the first newline at or after ``pos`` (``end`` when there is none before it)."""
    while pos < end:
        data = os.pread(fd, min(1 << 16, end - pos), pos)
        nl = data.find(b"\n")
        if nl >= 0:
            return pos + nl + 1
        pos += len(data)
    return end


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1




class _Checker:
    """A :mod:`dsetlog.store.crc_worker` process checking checksums ahead of the reader."""

    def __init__(self, path: Path, proc: subprocess.Popen[bytes], start: int) -> None:
        self.path, self.proc = path, proc
        self.checked = start  # the bytes from the start up to here passed
        self.first_seq = 0  # the seq of the line at the start: the reader sets it when it gets there

    @classmethod
    def start(cls, path: Path, fd: int, start: int, end: int) -> _Checker | None:
        """The worker for ``[start, end)`` of the file open as ``fd`` (inherited: the very file the reader
        reads, even if ``dset log repair`` swaps another in meanwhile); None when none can run."""
        if usable_cpus() < 2:
            return None  # one core: checking here costs the same and spares a process
        # the package's parent on the path, so the worker imports this very dsetlog
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dsetlog.store.crc_worker", str(fd), str(start), str(end)], pass_fds=(fd,),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            )
        except (OSError, ValueError):  # ValueError: no pass_fds on this platform
            return None
        return cls(path, proc, start)

    def checked_to(self, end: int) -> bool:
        """Wait until the worker has checked up to ``end``: True; False if it stopped without a verdict.

        Raises :class:`CorruptLogError` for a bad line the worker found.
        """
        assert self.proc.stdout is not None
        while self.checked < end:
            report = self.proc.stdout.readline()
            if not report:
                return False  # it died (killed, out of memory): the reader checks the rest itself
            if report.startswith(b"bad "):
                index, why = report[4:].decode().rstrip("\n").split(" ", 1)
                raise CorruptLogError(self.path, self.first_seq + int(index), why)
            self.checked = int(report)
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def seek_seq(path: Path, seq: int) -> tuple[int, int]:
    """Where the record after ``seq`` starts: (its offset, ``seq``), or the log's end when it is shorter.

    Seqs grow with file offsets, so a binary search finds it in a few dozen small
    reads whatever the log's size. A line that is not a valid record where one
    should be sends the caller back to the start, (0, 0), so that the reader's own
    checks name the problem.
    """
    if seq <= 0:
        return 0, 0
    with open(path, "rb", buffering=0) as fh:
        fd = fh.fileno()
        return _seek_in(fd, os.fstat(fd).st_size, seq)


def _seek_in(fd: int, size: int, seq: int) -> tuple[int, int]:
    """:func:`seek_seq` in the file open as ``fd``, of ``size`` bytes."""
    lo, lo_seq = 0, 0  # a line starts at lo, just after the record lo_seq (<= seq)
    hi = size  # no record at or after hi has a seq <= seq
    while hi - lo > _SEEK_LINEAR:
        mid = (lo + hi) // 2
        found = _record_after(fd, mid, hi)
        if found is None:  # one long line spans mid..hi
            hi = mid
            continue
        start, end, rec_seq = found
        if rec_seq < 0:
            return 0, 0
        if rec_seq <= seq:
            lo, lo_seq = end, rec_seq
        else:
            hi = start
    pos = lo  # a short stretch is left: walk it record by record
    while lo_seq < seq:
        found = _record_after(fd, pos, size, line_start=True)
        if found is None:
            break  # the end (at most a write in flight or a torn tail after it)
        _, end, rec_seq = found
        if rec_seq != lo_seq + 1:
            return 0, 0
        pos, lo_seq = end, rec_seq
    return pos, lo_seq


def read_seqs(path: Path, seqs: Iterable[int]) -> list[Recorded]:
    """The valid records with these seqs, in seq order, each found by :func:`seek_seq`'s search (a seq past
    the end, or one the search cannot reach past a damaged line, is left out); none when there is no log."""
    try:
        fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return []
    out = []
    with fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size
        for seq in sorted(set(seqs)):
            if seq <= 0:
                continue
            start, before = _seek_in(fd, size, seq - 1) if seq > 1 else (0, 0)
            if before != seq - 1:
                continue
            found = _record_after(fd, start, size, line_start=True)
            if found is None:
                continue
            rec = parse_line(os.pread(fd, found[1] - found[0] - 1, found[0]))
            if rec is not None and rec.seq == seq:
                out.append(rec)
    return out


def _record_after(fd: int, pos: int, limit: int, *, line_start: bool = False) -> tuple[int, int, int] | None:
    """The first whole line starting at or after ``pos`` (exactly at ``pos`` with ``line_start``) and before
    ``limit``: (its start, its end, its record's seq, or -1 when it is not a valid record); None if none."""
    block = 1 << 16
    # pos falls inside a line unless told otherwise: the next one starts after its newline
    start = pos if line_start or pos == 0 else _line_end_after(fd, pos, limit)
    if start >= limit:
        return None
    buf = b""
    while True:
        data = os.pread(fd, block, start + len(buf))
        if not data:
            return None  # no newline before the end: not a whole line
        buf += data
        nl = buf.find(b"\n")
        if nl >= 0:
            rec = parse_line(buf[:nl])
            return start, start + nl + 1, -1 if rec is None else rec.seq


def read_records(path: Path, *, offset: int = 0, seq: int = 0) -> Iterator[Recorded]:
    """Yield every whole record after ``offset``.

    ``seq`` is the seq of the record ending at ``offset`` (0 at the start); the
    next ones must follow it without a gap. An incomplete or invalid last line is
    a write in flight or a torn tail, so reading stops before it; an invalid line
    with a valid record after it raises :class:`CorruptLogError`.
    """
    for recs, _ in read_batches(path, offset=offset, seq=seq):
        yield from recs




def record_ends_at(path: Path, offset: int, *, seq: int, crc: int) -> bool:
    """Whether the log at ``path`` holds a valid record with this ``seq`` and ``crc`` ending exactly at ``offset``."""
    if offset == 0:
        return seq == 0
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size < offset:
            return False
        window = min(offset, 1 << 16)
        while True:
            buf = os.pread(fd, window, offset - window)
            if len(buf) != window or not buf.endswith(b"\n"):
                return False
            start = buf.rfind(b"\n", 0, window - 1)
            if start >= 0 or window == offset:
                break
            window = min(offset, window * 4)  # a line longer than the window: look further back
        rec = parse_line(buf[start + 1 : -1])
        return rec is not None and rec.seq == seq and rec.crc == crc
    finally:
        os.close(fd)


def last_line_end(fd: int, limit: int, floor: int) -> int:
    """The offset just after the last newline before ``limit`` (``floor`` when there is none after it)."""
    pos = limit
    while pos > floor:
        start = max(floor, pos - (1 << 16))
        nl = os.pread(fd, pos - start, start).rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return floor


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """The log's (size, inode, device), one ``os.stat``: a change means something was appended or the file
    was swapped (``dset log repair``); None when there is no log yet."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_ino, st.st_dev
