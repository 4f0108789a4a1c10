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

import os
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import portalocker

from dsetlog.events import AnyEvent, Event

LOG_NAME = "events.jsonl"
_EVENT_KEY = b',"event":'
_READ_CHUNK = 1 << 22  # 4 MiB: few syscalls, bounded memory while replaying


class Recorded(msgspec.Struct, frozen=True):
    """An event as it sits in the log: its position, commit time and checksum."""

    seq: int
    ts: str
    crc: int
    event: AnyEvent  # type: ignore[valid-type]


class LogError(Exception):
    """Base of the log's errors; the message says what to do."""


class CorruptLogError(LogError):
    def __init__(self, path: Path, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        data_dir = path.parent
        super().__init__(
            f"{path}: line {line} is corrupt ({reason}) and good records follow it, so it is not a torn "
            f"tail. Nothing was changed. Run `dset log verify --data {data_dir}` to see it and "
            f"`dset log repair --data {data_dir}` to set it aside (a full copy of the log is kept first)."
        )


_decoder = msgspec.json.Decoder(Recorded)
_encoder = msgspec.json.Encoder()


def parse_line(line: bytes) -> Recorded | None:
    """Decode one line (without its newline); None when it is not a whole, valid record."""
    start = line.find(_EVENT_KEY, 0, 96)
    if start < 0 or not line.endswith(b"}"):
        return None
    try:
        rec = _decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if zlib.crc32(line[start + len(_EVENT_KEY) : -1]) != rec.crc:
        return None
    return rec


def _why_bad(line: bytes) -> str:
    start = line.find(_EVENT_KEY, 0, 96)
    if start < 0:
        return "not an envelope"
    try:
        rec = _decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"undecodable: {exc}"
    if zlib.crc32(line[start + len(_EVENT_KEY) : -1]) != rec.crc:
        return "checksum mismatch"
    return "unknown"


def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def encode_records(events: Iterable[Event], *, first_seq: int, ts: str) -> bytes:
    """Envelope lines for events numbered from ``first_seq``, all stamped ``ts``."""
    ts_b = ts.encode()
    out = []
    seq = first_seq
    for event in events:
        body = _encoder.encode(event)
        out.append(b'{"seq":%d,"ts":"%s","crc":%d,"event":%s}\n' % (seq, ts_b, zlib.crc32(body), body))
        seq += 1
    return b"".join(out)


def find_valid_end(fd: int, size: int) -> tuple[int, int]:
    """Scan back from ``size`` to the last whole valid record: (its end offset, its seq), or (0, 0)."""
    block = 1 << 16
    start = max(0, size - block)
    buf = os.pread(fd, size - start, start)
    end = len(buf)
    while True:
        nl = buf.rfind(b"\n", 0, end)
        if nl < 0:
            if start == 0:
                return 0, 0
            grow = min(start, len(buf))  # double the window backwards, keeping the part already read
            start -= grow
            buf = os.pread(fd, grow, start) + buf
            end += grow
            continue
        prev = buf.rfind(b"\n", 0, nl)
        if prev < 0 and start > 0:
            grow = min(start, max(block, len(buf)))
            start -= grow
            buf = os.pread(fd, grow, start) + buf
            end += grow
            continue
        rec = parse_line(buf[prev + 1 : nl])
        if rec is not None:
            return start + nl + 1, rec.seq
        end = nl


def read_batches(path: Path, *, offset: int = 0, seq: int = 0) -> Iterator[tuple[list[Recorded], list[int]]]:
    """:func:`read_records` a chunk at a time: (records, their end offsets), two lists of equal length.

    The same checks and the same stops and errors as :func:`read_records`, for
    callers that fold millions of records (projections): one split per 4 MiB
    and a tight per-line loop instead of a generator step per record.
    """
    decode = _decoder.decode
    crc32 = zlib.crc32
    key, klen = _EVENT_KEY, len(_EVENT_KEY)
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        pending = b""
        pos = offset  # file offset of pending[0]
        while True:
            chunk = fh.read(_READ_CHUNK)
            if not chunk:
                return
            lines = (pending + chunk if pending else chunk).split(b"\n")
            pending = lines.pop()  # after the last newline: incomplete so far
            recs: list[Recorded] = []
            ends: list[int] = []
            end = pos
            for line in lines:
                end += len(line) + 1
                # parse_line, inlined: a call per line is a measurable share of a replay
                rec = None
                start = line.find(key, 0, 96)
                if start >= 0 and line.endswith(b"}"):
                    try:
                        rec = decode(line)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        pass
                    else:
                        if crc32(line[start + klen : -1]) != rec.crc:
                            rec = None
                if rec is None or rec.seq != seq + 1:
                    if recs:
                        yield recs, ends
                    bad_at = end - len(line) - 1
                    valid_end, _ = find_valid_end(fh.fileno(), os.fstat(fh.fileno()).st_size)
                    if valid_end <= bad_at:
                        return  # nothing valid after it: a torn tail the next writer cuts off
                    reason = _why_bad(line) if rec is None else f"seq {rec.seq} where {seq + 1} was due"
                    raise CorruptLogError(path, seq + 1, reason)
                seq = rec.seq
                recs.append(rec)
                ends.append(end)
            if recs:
                yield recs, ends
            pos = end


def read_records(path: Path, *, offset: int = 0, seq: int = 0) -> Iterator[tuple[Recorded, int]]:
    """Yield (record, end offset) for every whole record after ``offset``.

    ``seq`` is the seq of the record ending at ``offset`` (0 at the start); the
    next ones must follow it without a gap. An incomplete or invalid last line is
    a write in flight or a torn tail, so reading stops before it; an invalid line
    with a valid record after it raises :class:`CorruptLogError`.
    """
    for recs, ends in read_batches(path, offset=offset, seq=seq):
        yield from zip(recs, ends, strict=True)


class EventLog:
    """The writer (and a convenient reader) of one log file, safe across threads and processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.torn_path = self.path.with_name(self.path.name + ".torn")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock_file = open(self.lock_path, "a+b")  # noqa: SIM115 - held for the log's lifetime
        self._mutex = threading.Lock()
        self._size = -1  # forces a tail check under the lock
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
        """Durably append several events with one write and one fsync (group commit); returns their seqs."""
        batch = list(events)
        if not batch:
            return range(self._last_seq + 1, self._last_seq + 1)
        with self._mutex, self._locked():
            self._sync_tail()
            first = self._last_seq + 1
            data = encode_records(batch, first_seq=first, ts=utc_now())
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fdatasync(self._fd)
            self._size += len(data)
            self._last_seq = first + len(batch) - 1
        return range(first, self._last_seq + 1)

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
        """Replay every record with seq > ``after``, in order."""
        for rec, _ in read_records(self.path):
            if rec.seq > after:
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
        if size == self._size:
            return
        valid_end, last_seq = find_valid_end(self._fd, size)
        if valid_end < size:
            self._set_aside(valid_end, size)
        self._size, self._last_seq = valid_end, last_seq

    def _set_aside(self, valid_end: int, size: int) -> None:
        torn = os.pread(self._fd, size - valid_end, valid_end)
        with open(self.torn_path, "ab") as fh:
            fh.write(torn)
            fh.flush()
            os.fsync(fh.fileno())
        os.ftruncate(self._fd, valid_end)
        os.fsync(self._fd)
        self.torn_bytes += len(torn)
