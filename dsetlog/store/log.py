"""The append-only event log: one checksummed JSONL file, the single source of truth.

Each line is an envelope written in one fixed layout::

    {"seq":N,"ts":"2026-11-23T06:22:10.123456Z","crc":C,"event":{...}}

``seq`` is gap-free from 1, ``ts`` is UTC, ``crc`` is the CRC32 of the exact
event bytes. Appends hold an exclusive portalocker lock on ``<log>.lock``,
first catch up with whatever other processes appended, then write, flush and
fdatasync before returning: an append that returned is durable.

A crash can only damage the end of the file (the write in flight), so on open
and before every append everything after the last valid record is cut off and
kept in ``<log>.torn``. A bad line *followed* by good ones is real corruption:
readers refuse it with :class:`CorruptLogError`, and ``dset log repair`` fixes it.
"""

from __future__ import annotations

import errno
import itertools
import operator
import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import msgspec
import portalocker

from dsetlog import redaction
from dsetlog.errors import DsetError, Kind
from dsetlog.store.events import AnyEvent, Event, TornTailSetAside
from dsetlog.store.limits import check_decodable

LOG_NAME = "events.jsonl"
_READ_CHUNK = 1 << 23  # 8 MiB: few calls into C, bounded memory while replaying
# A replay longer than this has its checksums checked by a second process, which takes about 100 ms
# to start: the reader checks the first _CHECK_HEAD bytes itself meanwhile.
PARALLEL_CHECK_BYTES = 1 << 26
_CHECK_HEAD = 1 << 25
_SEEK_LINEAR = 1 << 16  # seek_seq walks record by record once its range is this small
_seq_of = operator.attrgetter("seq")
_crc_of = operator.attrgetter("crc")
_event_of = operator.attrgetter("event")


class Recorded(msgspec.Struct, frozen=True):
    """An event as it sits in the log: its position, commit time and checksum."""

    seq: int
    ts: str
    crc: int
    event: AnyEvent  # type: ignore[valid-type]


class LogError(DsetError):
    """Base of the log's errors; the message says what to do."""

    kind = Kind.FATAL


class LogWriteError(LogError):
    """An append could not be made durable (disk full, quota, read-only, I/O error). Nothing of it is in
    the log, and the log is as it was before it: the message says what to free or fix."""

    kind = Kind.UNAVAILABLE

    lost_entries = 0  # answers a run had received and could not record (set by the engine)

    def __init__(self, path: Path, exc: OSError | None, *, what: str = "append to", detail: str = "") -> None:
        self.path, self.errno = path, exc.errno if exc is not None else None
        self.strerror = (exc.strerror or str(exc)) if exc is not None else ""
        where = path.parent
        if self.errno in (errno.ENOSPC, errno.EDQUOT):
            advice = f"Free space on the disk holding {where} (`df -h {where}`)"
        elif self.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            advice = f"Make {where} writable"
        elif self.errno == errno.EIO:
            advice = f"The disk reported an I/O error: check it (`dmesg`) and copy {where} to a sound disk"
        else:
            advice = "Fix the cause"
        cause = f": {exc.strerror or exc} (errno {exc.errno})" if exc is not None else ""
        super().__init__(f"could not {what} {path}{cause}{detail}. {advice}, then run the same command again: "
                         "everything in the log is kept, and nothing recorded there is requested again.")


class CorruptLogError(LogError):
    def __init__(self, path: Path, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        data_dir = path.parent
        super().__init__(
            f"{path}: line {line} is corrupt ({reason}) and good records follow it, so it is not a torn "
            f"tail. Nothing was changed. Run `dset log verify --data {data_dir}` to see it and "
            f"`dset log repair --data {data_dir}` to set it aside (a full copy of the log is kept first)."
        )


class _Envelope(msgspec.Struct, gc=False):
    """A line with its event left as the exact bytes the checksum covers."""

    seq: int
    ts: str
    crc: int
    event: msgspec.Raw


_decoder = msgspec.json.Decoder(Recorded)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_encoder = msgspec.json.Encoder()
# RecursionError: a line nested too deep to decode (none can be written now: dsetlog.store.limits), from an old log
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


def parse_line(line: bytes | memoryview) -> Recorded | None:
    """Decode one line (without its newline); None when it is not a whole, valid record.

    Valid means: one JSON envelope whose ``crc`` is the CRC32 of its event's exact
    bytes, and whose event is one this version knows.
    """
    try:
        env = _envelope_decoder.decode(line)
        if zlib.crc32(env.event) != env.crc:
            return None
        return _decoder.decode(line)
    except _DECODE_ERRORS:
        return None


def event_bytes(line: bytes) -> bytes:
    """The exact bytes of a valid line's event (what its crc covers)."""
    return bytes(_envelope_decoder.decode(line).event)


def why_bad(line: bytes | memoryview) -> str:
    """Why :func:`parse_line` refuses a line, in words a user can act on."""
    line = bytes(line)
    if not line:
        return "empty line"
    if not line.strip(b"\0"):
        return f"{len(line)} NUL bytes"
    try:
        obj = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        return f"not JSON ({exc})"
    if not isinstance(obj, dict) or not {"seq", "ts", "crc", "event"} <= obj.keys():
        return "not an envelope (seq, ts, crc, event)"
    try:
        env = _envelope_decoder.decode(line)
        _decoder.decode(line)
    except _DECODE_ERRORS as exc:
        return f"undecodable ({exc}; an event type or field this version does not know?)"
    crc = zlib.crc32(env.event)
    if crc != env.crc:
        return f"checksum mismatch (stored {env.crc}, event bytes give {crc})"
    return "invalid record"


def _first_bad(data: bytes, n: int) -> tuple[int, str]:
    """Line by line: the index of the first line in ``data[:n]`` that is not a valid record, and why."""
    lines = data[:n].split(b"\n")[:-1]
    for i, line in enumerate(lines):
        if parse_line(line) is None:
            return i, why_bad(line)
    return len(lines), ""


def count_checked(data: bytes, n: int) -> tuple[int, str]:
    """Check the checksums of the whole lines in ``data[:n]``: (how many pass before the first that fails, why).

    The reason is "" when all pass. Done in C over the whole buffer (msgspec's line
    decoder, zlib over the raw event bytes), this is the share of a replay that
    :func:`read_batches` hands to another core when there is much to read.
    """
    try:
        envs = _envelope_decoder.decode_lines(memoryview(data)[:n])
    except _DECODE_ERRORS:
        return _first_bad(data, n)
    if len(envs) != data.count(b"\n", 0, n):
        return _first_bad(data, n)  # an empty line, or two records on one
    ok = list(map(operator.eq, map(zlib.crc32, map(_event_of, envs)), map(_crc_of, envs)))
    if all(ok):
        return len(ok), ""
    return _first_bad(data, n)


def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def encode_records(events: Iterable[Event], *, first_seq: int, ts: str) -> bytes:
    """Envelope lines for events numbered from ``first_seq``, all stamped ``ts``."""
    ts_b = ts.encode()
    out = []
    seq = first_seq
    for event in events:
        # the last guard: no event carries a key or token the process knows, whoever made it
        body = redaction.redact_bytes(_encoder.encode(event))
        out.append(b'{"seq":%d,"ts":"%s","crc":%d,"event":%s}\n' % (seq, ts_b, zlib.crc32(body), body))
        seq += 1
    return b"".join(out)


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

    The same checks and the same stops and errors as :func:`read_records`, for
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
        try:
            chunks = itertools.chain(line_chunks(fd, offset, head_end), line_chunks(fd, head_end, valid_end))
            for pos, data, n in chunks:
                if pos == head_end and checker is not None:
                    checker.first_seq = seq + 1
                try:
                    recs = _decoder.decode_lines(memoryview(data)[:n])
                except _DECODE_ERRORS:
                    bad, why = _first_bad(data, n)
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
                        yield recs[:keep], pos + _nth_line_end(data, keep)
                    return
                seq = recs[-1].seq
                yield recs, pos + n
        finally:
            if checker is not None:
                checker.stop()


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


def _nth_line_end(data: bytes, k: int) -> int:
    """The offset in ``data`` just after its k-th newline (k >= 0)."""
    end = 0
    for _ in range(k):
        end = data.index(b"\n", end) + 1
    return end


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
        size = os.fstat(fd).st_size
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


def records_containing(data_dir: str | os.PathLike[str], *needles: bytes) -> Iterator[Recorded]:
    """Every record of the data dir's log whose line holds all of ``needles`` (such as an id and
    ``b'"type":"EntryRegenerated"'``), read in one pass without decoding the others; none if there is no log."""
    try:
        fh = open(Path(data_dir) / LOG_NAME, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            if all(n in line for n in needles):
                rec = parse_line(line.rstrip(b"\n"))
                if rec is not None:
                    yield rec


def check_appendable(data_dir: str | os.PathLike[str]) -> None:
    """Raise :class:`LogWriteError` now if the data dir's existing log cannot be appended to (read-only
    file or mount), before anything is paid for that could then not be recorded."""
    path = Path(data_dir) / LOG_NAME
    if path.exists():
        try:
            with open(path, "ab"):
                pass
        except OSError as exc:
            raise LogWriteError(path, exc, what="append to") from None


class _Ticket:
    """One caller's batch waiting for a group commit."""

    __slots__ = ("events", "seqs", "error", "done")

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.seqs: range | None = None
        self.error: BaseException | None = None
        self.done = False


class EventLog:
    """The writer (and a convenient reader) of one log file, safe across threads and processes.

    Appends from many threads are group-committed: whoever holds the writer's mutex writes every batch
    that is waiting, in one write and one fsync, and each caller returns only once its batch is durable
    (the API's request threads share fsyncs this way).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.torn_path = self.path.with_name(self.path.name + ".torn")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self._lock_file = open(self.lock_path, "a+b")  # noqa: SIM115 - held for the log's lifetime
        except OSError as exc:
            raise LogWriteError(self.path, exc, what="open for writing") from None
        self._mutex = threading.Lock()
        self._waiting: list[_Ticket] = []
        self._waiting_lock = threading.Lock()
        self._size = -1  # forces a tail check under the lock
        self._valid_end = 0  # where the last whole valid record ends (< _size: a tail not set aside yet)
        self._last_seq = 0
        self.torn_bytes = 0  # bytes this instance cut off as a torn tail
        with self._mutex, self._locked():
            self._sync_tail()

    @classmethod
    def in_dir(cls, data_dir: str | os.PathLike[str]) -> EventLog:
        return cls(Path(data_dir) / LOG_NAME)

    # -- writing -------------------------------------------------------------

    def append(self, event: Event) -> int:
        """Durably append one event; returns its seq."""
        return self.append_many((event,)).stop - 1

    def append_many(self, events: Iterable[Event]) -> range:
        """Durably append several events with one write and one fsync (group commit); returns their seqs.

        Raises :class:`LogWriteError` when the disk refuses the write: the log is then exactly as before.
        """
        ticket = _Ticket(list(events))
        if not ticket.events:
            return range(self._last_seq + 1, self._last_seq + 1)
        with self._waiting_lock:
            self._waiting.append(ticket)
        with self._mutex:
            if not ticket.done:  # nobody wrote it while we waited: write everything waiting, ours included
                with self._waiting_lock:
                    group, self._waiting = self._waiting, []
                self._commit(group)
        if ticket.error is not None:
            raise ticket.error
        assert ticket.seqs is not None
        return ticket.seqs

    def _commit(self, group: list[_Ticket]) -> None:
        """Under the mutex: one write and one fsync for the whole group; each ticket learns its seqs or error."""
        try:
            with self._locked():
                self._sync_tail()
                if self._valid_end < self._size:
                    raise LogWriteError(self.path, None, detail=(
                        f": it ends in {self._size - self._valid_end} bytes that are not a whole record (a write "
                        f"cut off), which could not be set aside in {self.torn_path.name}"))
                chunks, first = [], self._last_seq + 1
                for ticket in group:
                    try:
                        data = encode_records(ticket.events, first_seq=first, ts=utc_now())
                        check_decodable(data)  # nothing goes in that replay could not read back
                    except Exception as exc:  # noqa: BLE001 - that caller's events cannot be written: theirs alone fail
                        ticket.error = exc
                        continue
                    chunks.append(data)
                    ticket.seqs = range(first, first + len(ticket.events))
                    first += len(ticket.events)
                self._write(b"".join(chunks))
                self._last_seq = first - 1
        except BaseException as exc:
            for ticket in group:
                if ticket.error is None:
                    ticket.error, ticket.seqs = exc, None
        finally:
            for ticket in group:
                ticket.done = True

    def _write(self, data: bytes) -> None:
        """Write and fdatasync ``data`` at the end, or leave the file as it was and raise LogWriteError."""
        if not data:
            return
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fdatasync(self._fd)
        except OSError as exc:
            # a partial write (ENOSPC midway) or one the disk could not make durable: nobody was told "done",
            # so none of it may stay for a reader to fold (truncating needs no free space)
            with suppress(OSError):
                os.ftruncate(self._fd, self._valid_end)
                os.fsync(self._fd)
            raise LogWriteError(self.path, exc) from None
        self._size += len(data)
        self._valid_end = self._size

    # -- reading -------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The last seq this instance knows of; :meth:`refresh` catches up with other writers."""
        return self._last_seq

    @property
    def size(self) -> int:
        return self._size

    def refresh(self) -> int:
        """Catch up with appends by other processes (cutting a torn tail); returns the last seq."""
        with self._mutex, self._locked():
            self._sync_tail()
        return self._last_seq

    def read(self, *, after: int = 0) -> Iterator[Recorded]:
        """Replay every record with seq > ``after``, in order, reading nothing before it (see :func:`seek_seq`)."""
        offset, seq = seek_seq(self.path, after)
        for rec in read_records(self.path, offset=offset, seq=seq):
            if rec.seq > after:  # seek_seq may send it back to the start
                yield rec

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._lock_file.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        portalocker.lock(self._lock_file, portalocker.LOCK_EX)
        try:
            yield
        finally:
            portalocker.unlock(self._lock_file)

    def _sync_tail(self) -> None:
        """Under the lock: learn the file's end; cut a torn tail left by a crashed writer."""
        st = os.fstat(self._fd)
        try:
            now = os.stat(self.path)
            replaced = (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev)
        except FileNotFoundError:
            replaced = True
        if replaced:
            # `dset log repair` swapped in a new file: appending to the old inode would lose events.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            os.close(self._fd)
            self._fd = fd
            st = os.fstat(fd)
            self._size = -1
        size = st.st_size
        if size == self._size and self._valid_end == size:
            return
        valid_end, last_seq = find_valid_end(self._fd, size)
        self._size, self._valid_end, self._last_seq = size, valid_end, last_seq
        if valid_end < size:
            self._set_aside(valid_end, size)

    def _set_aside(self, valid_end: int, size: int) -> None:
        """Move the bytes after the last valid record into ``.torn``, then cut them off the log.

        When ``.torn`` cannot be written (the disk is full) the bytes stay where they are and appends are
        refused saying so: readers skip a torn tail, and nothing is thrown away that might be a record.
        A tail that is one or more whole, newline-terminated lines failing their checksum is no crash in
        the middle of a write: its append may have returned. That is said loudly, on stderr and as a
        TornTailSetAside event after the recovery.
        """
        torn = os.pread(self._fd, size - valid_end, valid_end)
        try:
            with open(self.torn_path, "ab") as fh:
                fh.write(torn)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            print(f"dset: warning: {self.path} ends in {len(torn)} bytes that are not a whole record; they could "
                  f"not be set aside in {self.torn_path} ({exc.strerror or exc}), so they stay in place and "
                  "nothing can be appended until there is room for them", file=sys.stderr)
            return
        os.ftruncate(self._fd, valid_end)
        os.fsync(self._fd)
        self.torn_bytes += len(torn)
        self._size = valid_end
        complete = torn.count(b"\n") if torn.endswith(b"\n") else 0
        if complete:
            self._report_complete_tail(torn, complete)

    def _report_complete_tail(self, torn: bytes, lines: int) -> None:
        print(f"dset: WARNING: the last {lines} line(s) of {self.path} ({len(torn)} bytes) were complete but "
              f"failed their checksum: that may be an acknowledged write damaged on disk, not a crash mid-write. "
              f"They are kept in {self.torn_path}; look at them there (`dset log verify` checks the log).",
              file=sys.stderr)
        event = TornTailSetAside(bytes=len(torn), lines=lines, torn_file=self.torn_path.name,
                                 complete=True, offset=self._valid_end)
        data = encode_records([event], first_seq=self._last_seq + 1, ts=utc_now())
        try:
            self._write(data)
        except LogWriteError:
            return  # said on stderr already; the next recovery cannot see it again (the bytes are aside)
        self._last_seq += 1
