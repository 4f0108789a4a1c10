"""The append-only event log of a data dir: one checksummed JSONL file, the single source of truth.

:class:`EventLog` writes it (and reads it back). Appends hold an exclusive portalocker lock on
``<log>.lock``, first catch up with whatever other processes appended, then write, flush and fdatasync
before returning: an append that returned is durable. Lines are in :mod:`dsetlog.store.layout`'s format;
:mod:`dsetlog.store.scan` reads them.

A crash can only damage the end of the file (the write in flight), so on open
and before every append everything after the last valid record is cut off and
kept in ``<log>.torn``. A bad line *followed* by good ones is real corruption:
readers refuse it with :class:`~dsetlog.store.errors.CorruptLogError`, and ``dset log repair`` fixes it.

The functions taking a data dir (:func:`records_at`, :func:`records_containing`, :func:`check_appendable`,
:func:`log_path`) are how the rest of dsetlog reaches the log without knowing its file's name.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import portalocker

from dsetlog.store.errors import LogWriteError
from dsetlog.store.events import Event, TornTailSetAside
from dsetlog.store.layout import Recorded, encode_records, parse_line, utc_now
from dsetlog.store.limits import check_decodable
from dsetlog.store.scan import find_valid_end, read_records, read_seqs, seek_seq

LOG_NAME = "events.jsonl"


def log_path(data_dir: str | os.PathLike[str]) -> Path:
    """The log's file in a data dir (for those who stat or name it, never to parse it themselves)."""
    return Path(data_dir) / LOG_NAME


def records_at(data_dir: str | os.PathLike[str], seqs: Iterable[int]) -> list[Recorded]:
    """The valid records of the data dir's log with these seqs, in seq order, each found by binary search
    (:func:`~dsetlog.store.scan.seek_seq`); a seq not found, or a damaged line, is left out."""
    return read_seqs(log_path(data_dir), seqs)


def records_containing(data_dir: str | os.PathLike[str], *needles: bytes) -> Iterator[Recorded]:
    """Every record of the data dir's log whose line holds all of ``needles`` (such as an id and
    ``b'"type":"EntryRegenerated"'``), read in one pass without decoding the others; none if there is no log."""
    try:
        fh = open(log_path(data_dir), "rb")  # noqa: SIM115 - closed below
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
    path = log_path(data_dir)
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
        return cls(log_path(data_dir))

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
