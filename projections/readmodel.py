"""ReadModel: a data dir's projections, folded from its log and kept caught up.

    rm = ReadModel.open("data")          # snapshot (if still valid) + the tail, or a full replay
    rm.wait_verified()                   # before the first write: the records the snapshot stands for are sound
    rm.catch_up()                        # fold what other processes appended; one os.stat when nothing did
    with rm.lock:                        # consistent reads while another thread catches up
        view = rm.datasets.dataset(dataset_id)
    old = rm.as_of(seq)                  # the same projections folded only up to ``seq``
    rm.maybe_save_snapshot()             # start-up cache, written atomically

The snapshot (``<data>/snapshots/readmodel.msgpack``) is only a cache. It is
used when its format and the projections' fingerprint (class names and
versions) match, its checksums hold, and the log still has the very record it
ends at (same offset, seq and crc); anything else, including an unreadable file,
means a replay from the first record. Deleting it changes start-up time only.

A snapshot stands for records nobody checked in this process. Start-up from one still checks the whole
log: ``ReadModel.open(data, verify=True)`` starts a background check (:class:`LogCheck`) that reads the
records the snapshot covers with every check of a replay (:func:`dsetlog.store.log.read_batches`: checksums,
seqs, layout, decoding), in a child process for a big log (so on the second core, its checksums on a
``dsetlog.store.crc_worker`` of its own), while reads are served from the snapshot. Whoever writes first calls
:meth:`ReadModel.wait_verified`, which waits for that verdict and raises
:class:`~dsetlog.store.log.CorruptLogError` (naming the line, saying to run `dset log verify` / `dset log
repair`) if the log is corrupt there, or if a catch-up met corruption after it. A full replay checks as it
folds, so a model opened without a snapshot is verified at once.

A record that passed its checksum is never a reason for catch-up to fail. If this version's decoder cannot
read it (nested too deep: ``RecursionError``) or a projection's handler raises on it, the record is
*skipped*: logged as an error, counted (:attr:`ReadModel.skipped_count`, :attr:`ReadModel.skipped`, kept in
the snapshot, shown by the API's /health), and the fold goes on with the next record. Refusing writes
instead would brick the data dir for good: its checksum holds, so it is not corruption and no repair
would ever remove it (and the writer now refuses to append such a record: :mod:`dsetlog.store.limits`). A record
that cannot be decoded is skipped by every projection; one whose handler raised, by that projection only
(its effect on it may be partial). Skipping is deterministic: a rebuild, a snapshot and a catch-up skip
the same records. A record that fails its checksum is corruption, as ever.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import msgspec

from dsetlog.store.errors import CorruptLogError, LogError
from dsetlog.store.layout import Recorded, parse_line
from dsetlog.store.limits import json_depth
from dsetlog.store.log import LOG_NAME
from dsetlog.store.scan import PARALLEL_CHECK_BYTES, line_chunks, read_batches
from projections.base import ProjectionProtocol, event_classes, gc_paused
from projections.datasets import Datasets
from projections.endpoints import Endpoints
from projections.evaluations import Evaluations
from projections.jobs import Jobs
from projections.projects import Projects
from projections.stats import EventStats

SNAPSHOT_DIR = "snapshots"
SNAPSHOT_NAME = "readmodel.msgpack"
SNAPSHOT_FORMAT = 1
# records folded since the last snapshot before maybe_save_snapshot() writes a new one
DEFAULT_SNAPSHOT_EVERY = 50_000
_GC_PAUSE_BYTES = 1 << 20  # a catch-up reading more than this pauses the cyclic GC
# a background check of this much or more runs in a child process (see LogCheck)
CHILD_CHECK_BYTES = PARALLEL_CHECK_BYTES
SKIPPED_KEPT = 100  # skipped records described (in the model, the snapshot and /health); the count is exact

P = TypeVar("P", bound=ProjectionProtocol)
_log = logging.getLogger("projections")


class SkippedRecord(msgspec.Struct, frozen=True):
    """A record that passed its checksum and was not folded: this version cannot decode it, or a handler raised."""

    seq: int
    type: str  # its event type ("" when not even that could be read)
    reason: str  # the exception, in one line
    projection: str = ""  # the projection whose handler raised; "": undecodable, no projection folded it


class StateRef(msgspec.Struct, array_like=True):
    name: str
    start: int  # file offset of the projection's msgpack state
    length: int
    crc: int  # crc32 of those bytes


class SnapshotHeader(msgspec.Struct):
    format: int
    fingerprint: str
    seq: int  # the last record folded into the states
    offset: int  # where that record ends in the log
    crc: int  # that record's crc, to recognise it
    states: list[StateRef]
    skipped_count: int = 0  # records up to seq that were skipped (see SkippedRecord)
    skipped: list[SkippedRecord] = []  # the first SKIPPED_KEPT of them


# The file: MAGIC, each projection's state (msgpack) back to back, the header (msgpack), the header's
# length (8 bytes, big-endian). States are written as they are encoded, a projection (or a piece of
# one) at a time, so a save never holds a second copy of the whole state; the header comes last
# because only then are the lengths and checksums known.
_MAGIC = b"DSETSNAP"
_header_decoder = msgspec.msgpack.Decoder(SnapshotHeader)
_encoder = msgspec.msgpack.Encoder()


def standard_projections() -> list[ProjectionProtocol]:
    """New, empty instances of every standard projection."""
    return [EventStats(), Datasets(), Projects(), Jobs(), Evaluations(), Endpoints()]


def fingerprint(projections: Iterable[ProjectionProtocol]) -> str:
    """Names and versions of the projections' classes: a snapshot made by other code does not match."""
    return ";".join(f"{p.name}={type(p).__module__}.{type(p).__qualname__}:v{p.version}" for p in projections)


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


# -- reading records that passed their checksum but do not decode ------------------------------------------

# the fixed layout the writer uses (dsetlog.store.log.encode_records), to check the checksum and seq of a line the
# decoder cannot read at all: {"seq":N,"ts":"...","crc":C,"event":{...}}
_LAYOUT = re.compile(rb'\{"seq":(\d{1,20}),"ts":"[^"\\]{0,64}","crc":(\d{1,10}),"event":(.*)\}\Z', re.S)
_TYPE = re.compile(rb'\{"type":"([A-Za-z0-9_]{1,64})"')
_record_decoder = msgspec.json.Decoder(Recorded)


class _Undecodable(NamedTuple):
    """A whole line at [start, end) whose decoding raises (not a plain decode error: RecursionError)."""

    start: int
    end: int
    line: bytes
    last: bool  # no whole line after it (before the end read to)


def _last_line_end(fd: int, limit: int, floor: int) -> int:
    """The offset just after the last newline before ``limit`` (``floor`` when there is none after it)."""
    pos = limit
    while pos > floor:
        start = max(floor, pos - (1 << 16))
        nl = os.pread(fd, pos - start, start).rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return floor


def _find_undecodable(path: Path, offset: int, end: int | None) -> _Undecodable | None:
    """The first whole line at or after ``offset`` whose decoding raises something other than a decode error."""
    with open(path, "rb", buffering=0) as fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size if end is None else min(end, os.fstat(fd).st_size)
        last_end = _last_line_end(fd, size, offset)
        for pos, data, n in line_chunks(fd, offset, last_end):
            try:
                _record_decoder.decode_lines(memoryview(data)[:n])
                continue
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                pass  # one line or more to look at one by one
            start = 0
            while start < n:
                stop = data.index(b"\n", start) + 1
                line = data[start : stop - 1]
                try:
                    _record_decoder.decode(line)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    pass  # not a valid record: the reader's own checks name it
                except RecursionError:
                    return _Undecodable(pos + start, pos + stop, line, pos + stop == last_end)
                start = stop
    return None


def _undecodable_record(path: Path, found: _Undecodable, due: int) -> tuple[int, SkippedRecord] | None:
    """Check a line the decoder cannot read by the writer's layout: (its crc, what to record of it) when its
    checksum and seq hold. Otherwise CorruptLogError, or None when it is the last line (a tail, as for reads)."""
    m = _LAYOUT.match(found.line)
    why = ""
    if m is None:
        why = "not a record in the log's layout, and nested too deep to decode"
    else:
        seq, crc, event = int(m.group(1)), int(m.group(2)), m.group(3)
        if zlib.crc32(event) != crc:
            why = f"checksum mismatch (stored {crc}, event bytes give {zlib.crc32(event)})"
        elif seq != due:
            why = f"seq {seq} where {due} was due"
    if why:
        if found.last:
            return None
        raise CorruptLogError(path, due, why)
    assert m is not None
    t = _TYPE.match(m.group(3))
    reason = f"RecursionError: nested {json_depth(m.group(3))} levels deep, more than this version can decode"
    return crc, SkippedRecord(seq=due, type=t.group(1).decode() if t else "", reason=reason)


class _Batch(NamedTuple):
    recs: list[Recorded]  # empty for a skipped record
    end: int  # the offset just after the last of them
    skipped: SkippedRecord | None = None
    crc: int = 0  # the skipped record's crc


def _batches(path: Path, *, offset: int = 0, seq: int = 0, until_seq: int | None = None,
             end: int | None = None) -> Iterator[_Batch]:
    """:func:`~dsetlog.store.log.read_batches`, with its every check and error, except that a record which passed
    its checksum but which the decoder cannot read (``RecursionError``) comes as a skipped one instead."""
    while True:
        try:
            for recs, batch_end in read_batches(path, offset=offset, seq=seq, until_seq=until_seq, end=end):
                yield _Batch(recs, batch_end)
                offset, seq = batch_end, recs[-1].seq
            return
        except RecursionError:
            found = _find_undecodable(path, offset, end)
            if found is None:
                raise
        if found.start > offset:  # the records before it, with every check
            for recs, batch_end in read_batches(path, offset=offset, seq=seq, until_seq=until_seq, end=found.start):
                yield _Batch(recs, batch_end)
                offset, seq = batch_end, recs[-1].seq
            if until_seq is not None and seq >= until_seq:
                return
            if offset != found.start:  # what is before it is not valid records, and a record follows
                raise CorruptLogError(path, seq + 1, "not a valid record, and records follow it")
        if until_seq is not None and seq >= until_seq:
            return
        checked = _undecodable_record(path, found, seq + 1)
        if checked is None:
            return
        crc, skipped = checked
        yield _Batch([], found.end, skipped, crc)
        offset, seq = found.end, seq + 1


# -- the background check of what a snapshot stands for --------------------------------------------------------

CheckState = Literal["checking", "ok", "corrupt"]


class LogCheckStatus(msgspec.Struct, frozen=True):
    """Where the check of the log's records stands (what the API's /health shows)."""

    state: CheckState  # "ok": every record checked; "corrupt": see error; "checking": still going
    checked_bytes: int
    total_bytes: int
    seconds: float  # how long it ran (so far)
    error: str = ""  # the CorruptLogError's message: what is wrong and what to run
    by: str = ""  # who checks: "child process" (a big log), "thread", or "" (the replay as it folded)


class LogCheck:
    """A background check of the records ``[0, end)`` of a log with every check of a replay, folding nothing.

    It reads with :func:`_batches` and holds no lock of the read model: reads go on meanwhile. A small log
    is read by a thread; one of :data:`CHILD_CHECK_BYTES` or more by a child process (``python -c`` running
    :func:`check_child_main` on the log's descriptor, so the very file opened here), whose replay hands the
    checksums on to its own ``dsetlog.store.crc_worker``: decoding hundreds of MB in this process would hold its
    GIL ~45 ms per 8 MiB chunk and stall the requests served meanwhile. If the child cannot start or dies
    without a verdict, the thread checks everything itself. :meth:`wait` waits for the verdict.
    """

    def __init__(self, path: Path, end: int) -> None:
        self.path, self.end = path, end
        self.checked = 0
        self.error: LogError | None = None
        self.started = self.finished = 0.0
        self._done = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.by = ""  # "child process" or "thread", once it runs
        if end == 0:
            self._done.set()

    def start(self) -> LogCheck:
        if self._thread is None and not self._done.is_set():
            self.started = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="dset-log-check", daemon=True)
            self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    def _run(self) -> None:
        try:
            if self.end < CHILD_CHECK_BYTES or not self._run_child():
                self.checked, self.by = 0, "thread"
                for batch in _batches(self.path, end=self.end):
                    if self._stop:
                        break
                    self.checked = batch.end
            if self._stop:
                self.error = LogError(f"the check of {self.path} was stopped before it had a verdict")
            elif self.error is None and self.checked != self.end:
                self.error = LogError(
                    f"{self.path}: only its first {self.checked:,} bytes are whole records, but the snapshot stands "
                    f"for {self.end:,}: was it cut? Run `dset log verify --data {self.path.parent}`")
        except LogError as exc:
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - unreadable (EIO...): no verdict is a refusal too
            self.error = LogError(f"could not check {self.path}: {type(exc).__name__}: {exc}. Run `dset log "
                                  f"verify --data {self.path.parent}` to see what is wrong")
        finally:
            self.finished = time.monotonic()
            self._done.set()
            if self.error is not None and not self._stop:
                _log.error("the log check found a problem; writes are refused: %s", self.error)
            elif not self._stop:
                _log.info("log check: %s MB of records checked in %.2f s", f"{self.end / 1e6:,.0f}",
                          self.finished - self.started)

    def _run_child(self) -> bool:
        """Check in a child process: True when it gave a verdict (in ``error``; ``checked`` its progress)."""
        with open(self.path, "rb", buffering=0) as fh:
            fd = fh.fileno()
            root = str(Path(__file__).resolve().parent.parent)  # the child imports this very code
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
            try:
                self._proc = proc = subprocess.Popen(
                    [sys.executable, "-c", "import sys; from projections.readmodel import check_child_main; "
                     "sys.exit(check_child_main(sys.argv[1:]))", str(fd), str(self.end)],
                    pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                    env=env,
                )
            except (OSError, ValueError):  # ValueError: no pass_fds on this platform
                return False
        self.by = "child process"
        assert proc.stdout is not None
        try:
            for report in proc.stdout:
                word, _, rest = report.decode("utf-8", "replace").rstrip("\n").partition(" ")
                if word == "ok":
                    return True
                if word == "corrupt":
                    line, _, reason = rest.partition(" ")
                    self.error = CorruptLogError(self.path, int(line), reason)
                    return True
                if word == "error":
                    self.error = LogError(f"could not check {self.path}: {rest}. Run `dset log verify --data "
                                          f"{self.path.parent}` to see what is wrong")
                    return True
                self.checked = int(word)
            return self._stop  # it died without a verdict (killed, out of memory): check here, unless stopping
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Start the check if it has not started; True once it has a verdict (within ``timeout`` seconds)."""
        self.start()
        return self._done.wait(timeout)

    def stop(self) -> None:
        """Stop checking (the model no longer stands on these records, or is closing): no verdict, a refusal."""
        self._stop = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with suppress(OSError):
                proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=10)
        elif not self._done.is_set():
            self.error = LogError(f"the check of {self.path} was stopped before it had a verdict")
            self._done.set()

    def status(self) -> LogCheckStatus:
        done = self._done.is_set()
        state: CheckState = "checking" if not done else "corrupt" if self.error is not None else "ok"
        now = self.finished if done and self.started else time.monotonic() if self.started else 0.0
        return LogCheckStatus(state=state, checked_bytes=self.end if state == "ok" else self.checked,
                              total_bytes=self.end, seconds=round(now - self.started, 3) if self.started else 0.0,
                              error=str(self.error) if self.error is not None else "", by=self.by)


def check_child_main(argv: list[str]) -> int:
    """The child of a :class:`LogCheck`: ``FD END``. Checks ``[0, END)`` of the log open as descriptor FD
    (inherited) and prints the offset checked up to after each batch, then ``ok``, ``corrupt LINE REASON``
    or ``error MESSAGE``."""
    fd, end = int(argv[0]), int(argv[1])
    out = sys.stdout
    try:
        for batch in _batches(Path(f"/dev/fd/{fd}"), end=end):
            out.write(f"{batch.end}\n")
            out.flush()
    except CorruptLogError as exc:
        out.write(f"corrupt {exc.line} {' '.join(exc.reason.split())}\n")
    except Exception as exc:  # noqa: BLE001 - every failure is a verdict the parent reports
        out.write(f"error {' '.join(f'{type(exc).__name__}: {exc}'.split())}\n")
    else:
        out.write("ok\n")
    out.flush()
    return 0


class _FoldFailed(Exception):
    """A projection's handler raised somewhere in a batch: fold that stretch again record by record."""

    def __init__(self, first: int, last: int, projection: str, exc: Exception) -> None:
        super().__init__(f"{projection} failed folding seqs {first}-{last}: {type(exc).__name__}: {exc}")
        self.first, self.last = first, last


class ReadModel:
    """A data dir's projections, folded from ``<data>/events.jsonl`` in order.

    Hold :attr:`lock` while reading the projections from several threads: a
    catch-up holds it while folding, so a reader sees the state at one seq.
    Reach projections through the model each time (``rm.datasets``, ``rm.get(Datasets)``):
    if the log is rewritten under it (``dset log repair``) the model rebuilds them anew.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        projections: Sequence[ProjectionProtocol] | None = None,
        *,
        until_seq: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOG_NAME
        self.snapshot_path = self.data_dir / SNAPSHOT_DIR / SNAPSHOT_NAME
        projections = list(projections) if projections is not None else standard_projections()
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique (they key the snapshot); got {names}")
        self._projections: tuple[ProjectionProtocol, ...] = tuple(projections)
        self.lock = threading.RLock()
        self._until = until_seq
        self._seq = 0  # last record folded
        self._offset = 0  # where it ends
        self._crc = 0  # its crc, to recognise it if the log is rewritten
        self._seen: tuple[int, int, int] | None = None  # the log's (size, inode, device) when last read
        self._snapshot_seq = 0  # seq of the snapshot loaded or saved last
        self.snapshot_used = False  # whether opening started from a snapshot
        # the records before this offset came from a snapshot: nobody checked them in this process yet
        self._unchecked_end = 0
        self._check: LogCheck | None = None  # the check of those records, once started
        self._fold_error: LogError | None = None  # corruption a catch-up met (cleared when one gets past it)
        self._failed_seen: tuple[int, int, int] | None = None  # the log's (size, inode, device) then
        self._skipped: list[SkippedRecord] = []
        self._skipped_count = 0
        self._careful: list[tuple[int, int]] = []  # seq ranges folded record by record (a handler raised there)

    # -- opening and catching up ---------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        projections: Sequence[ProjectionProtocol] | None = None,
        use_snapshot: bool = True,
        verify: bool = False,
    ) -> ReadModel:
        """Fold the whole log (from the snapshot when it is valid). ``projections`` must be new, empty ones.

        ``verify``: when the snapshot was used, start checking the records it stands for at once, in the
        background (:meth:`wait_verified` waits for the verdict, and starts the check itself if need be).
        """
        rm = cls(data_dir, projections)
        with rm.lock:
            if use_snapshot:
                rm._load_snapshot()
            rm.catch_up()
            if verify:
                rm._start_check()
        return rm

    # -- is the log sound? ---------------------------------------------------------------

    def wait_verified(self, timeout: float | None = None) -> None:
        """Return once every record of the log is known to be sound; call it before the first write.

        Records folded from the log were checked as they were read; those a snapshot stands for are checked
        by a background thread (started here if :meth:`open` did not). Raises
        :class:`~dsetlog.store.log.CorruptLogError` (its message names the line and says to run `dset log verify` /
        `dset log repair`) when that check or a catch-up found corruption, and ``TimeoutError`` when the
        check has no verdict within ``timeout`` seconds (None: wait as long as it takes).
        """
        with self.lock:
            check = self._start_check()
        if check is not None and not check.wait(timeout):
            st = check.status()
            raise TimeoutError(
                f"the log's records are still being checked ({st.checked_bytes / 1e6:,.0f} of "
                f"{st.total_bytes / 1e6:,.0f} MB after {st.seconds:.1f} s); writes wait for that, try again shortly"
            )
        with self.lock:  # a catch-up folding meanwhile (a replay after a repair) has its verdict too
            problem = self.problem
        if problem is not None:
            raise problem

    @property
    def problem(self) -> LogError | None:
        """Why nothing may be written now (the corruption found), or None; does not wait for the check."""
        check = self._check
        if check is not None and check.error is not None:
            return check.error
        return self._fold_error

    def verification(self) -> LogCheckStatus:
        """Where the check of the log's records stands (the background check's, or that of the replay)."""
        check = self._check
        if check is not None:
            st = check.status()
        elif self._unchecked_end:
            st = LogCheckStatus(state="checking", checked_bytes=0, total_bytes=self._unchecked_end, seconds=0.0)
        else:
            st = LogCheckStatus(state="ok", checked_bytes=self._offset, total_bytes=self._offset, seconds=0.0)
        if self._fold_error is not None and st.state != "corrupt":
            st = msgspec.structs.replace(st, state="corrupt", error=str(self._fold_error))
        return st

    def stop_check(self) -> None:
        """Stop the background check, if one runs (closing a server); its verdict is then void."""
        check = self._check
        if check is not None and check.running:
            check.stop()

    def _start_check(self) -> LogCheck | None:
        """Under the lock: the check of the records the snapshot stands for, started (None: nothing to check)."""
        if self._check is None and self._unchecked_end:
            self._check = LogCheck(self.path, self._unchecked_end).start()
        return self._check

    @property
    def skipped_count(self) -> int:
        """Records that passed their checksum and could not be folded (see the module's description)."""
        return self._skipped_count

    @property
    def skipped(self) -> list[SkippedRecord]:
        """The first :data:`SKIPPED_KEPT` of them."""
        return list(self._skipped)

    def _skip(self, skipped: SkippedRecord) -> None:
        self._skipped_count += 1
        if len(self._skipped) < SKIPPED_KEPT:
            self._skipped.append(skipped)
        who = f"projection {skipped.projection!r}" if skipped.projection else "every projection"
        _log.error("%s: record %d (%s) passed its checksum but was not folded by %s: %s. It stays in the log; "
                   "the read model goes on without it", self.path, skipped.seq, skipped.type or "unknown type",
                   who, skipped.reason)

    def catch_up(self) -> int:
        """Fold the records appended since the last call; returns how many. One ``os.stat`` when none were."""
        with self.lock:
            if self._until is not None and self._seq >= self._until:
                return 0
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return 0  # no log yet: nothing happened
            seen = (st.st_size, st.st_ino, st.st_dev)
            if seen == self._seen:
                return 0
            if self._seq and (
                st.st_size < self._offset or (self._seen is not None and seen[1:] != self._seen[1:])
            ):
                # shorter, or another file (repair swaps one in): still ours up to where we stand?
                if not record_ends_at(self.path, self._offset, seq=self._seq, crc=self._crc):
                    self._reset()
            if self._fold_error is not None and seen == self._failed_seen:
                raise self._fold_error  # the same corrupt log as last time: no need to read it again
            try:
                if st.st_size - self._offset > _GC_PAUSE_BYTES:
                    with gc_paused():
                        n = self._fold_tolerant()
                else:
                    n = self._fold_tolerant()
            except CorruptLogError as exc:
                self._fold_error, self._failed_seen = exc, seen
                raise
            self._fold_error = self._failed_seen = None
            self._seen = seen  # the size read *before* folding: anything appended meanwhile is seen next time
            return n

    def _fold_tolerant(self) -> int:
        """:meth:`_fold`; when a handler raised, fold again from the start (the snapshot, or the first record)
        with the stretch where it raised folded record by record, so that only that record is skipped."""
        start, rebuilt = self._seq, False
        while True:
            try:
                n = self._fold()
                return self._seq - start if rebuilt else n
            except _FoldFailed as failed:
                rebuilt = True
                _log.warning("%s; folding that stretch again record by record", failed)
                self._careful.append((failed.first, failed.last))
                check, unchecked = self._check, self._unchecked_end
                self._reset(keep_check=True)
                self._unchecked_end = 0
                if self.snapshot_used:
                    self._load_snapshot(max_seq=self._until)
                if self._unchecked_end != unchecked:  # another snapshot, or none: the check covers other records
                    if check is not None:
                        check.stop()
                    self._check = None

    def _fold(self) -> int:
        appliers = [(p, p.apply_batch, getattr(p, "handled_types", None)) for p in self._projections]
        n = 0
        for recs, end, skipped, crc in _batches(self.path, offset=self._offset, seq=self._seq, until_seq=self._until):
            if skipped is not None:
                self._skip(skipped)
                self._seq, self._offset, self._crc = skipped.seq, end, crc
                n += 1
                continue
            # the batch's event classes, found in C: a projection that folds none of them skips it
            # (most batches of a big log are dataset events that most projections do not fold)
            present = set(event_classes(recs))
            first, last = recs[0], recs[-1]
            careful = any(a <= last.seq and first.seq <= b for a, b in self._careful)
            for p, apply_batch, handled in appliers:
                if handled is None or not present.isdisjoint(handled):
                    if careful:
                        self._apply_one_by_one(p, recs)
                        continue
                    try:
                        apply_batch(recs)
                    except Exception as exc:  # noqa: BLE001 - a record that passed its checksum never stops the fold
                        raise _FoldFailed(first.seq, last.seq, p.name, exc) from exc
            self._seq, self._offset, self._crc = last.seq, end, last.crc
            n += len(recs)
        return n

    def _apply_one_by_one(self, p: ProjectionProtocol, recs: Sequence[Recorded]) -> None:
        for rec in recs:
            try:
                p.apply_batch((rec,))
            except Exception as exc:  # noqa: BLE001 - skip that record for this projection, and say so
                reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
                self._skip(SkippedRecord(seq=rec.seq, type=type(rec.event).__name__, reason=reason,
                                         projection=p.name))

    def _reset(self, *, keep_check: bool = False) -> None:
        """Forget every folded record (the log was rewritten, or a stretch is to be folded again)."""
        self._projections = tuple(p.fresh() for p in self._projections)
        self._seq = self._offset = self._crc = 0
        self._seen = None
        self._skipped, self._skipped_count = [], 0  # (the careful ranges stay: at worst they fold slower)
        if not keep_check:
            if self._check is not None:
                self._check.stop()  # it checks records this model no longer stands on
            self._check = None
            self._unchecked_end = 0

    # -- time travel ---------------------------------------------------------------

    def as_of(self, seq: int) -> ReadModel:
        """A separate model of the same projections folded up to and including ``seq`` (and never further).

        Its :attr:`seq` is lower than ``seq`` when the log is shorter than that.
        """
        if seq < 0:
            raise ValueError(f"seq must be >= 0 (0 is the empty log), got {seq}")
        rm = ReadModel(self.data_dir, [p.fresh() for p in self._projections], until_seq=seq)
        with rm.lock:
            rm._load_snapshot(max_seq=seq)
            rm.catch_up()
        return rm

    # -- snapshots -------------------------------------------------------------------

    def _load_snapshot(self, *, max_seq: int | None = None) -> bool:
        """Start from the snapshot if it is valid for these projections and this log; False otherwise."""
        try:
            data = self.snapshot_path.read_bytes()
        except OSError:
            return False
        header = _read_header(data)
        if (
            header is None
            or header.format != SNAPSHOT_FORMAT
            or header.fingerprint != fingerprint(self._projections)
            or (max_seq is not None and header.seq > max_seq)
            or [ref.name for ref in header.states] != [p.name for p in self._projections]
            or not record_ends_at(self.path, header.offset, seq=header.seq, crc=header.crc)
        ):
            return False
        view = memoryview(data)
        raws = [view[ref.start : ref.start + ref.length] for ref in header.states]
        if any(zlib.crc32(raw) != ref.crc for raw, ref in zip(raws, header.states, strict=True)):
            return False
        try:
            with gc_paused():
                states = [
                    msgspec.msgpack.decode(raw, type=getattr(p, "state_type", Any))
                    for p, raw in zip(self._projections, raws, strict=True)
                ]
                for p, state in zip(self._projections, states, strict=True):
                    p.load_snapshot_state(state)
        except Exception:  # noqa: BLE001 - a cache that does not load must never stop start-up: replay instead
            self._reset()
            return False
        self._seq, self._offset, self._crc = header.seq, header.offset, header.crc
        self._snapshot_seq = header.seq
        self.snapshot_used = True
        self._unchecked_end = header.offset
        self._skipped_count, self._skipped = header.skipped_count, list(header.skipped)
        return True

    def save_snapshot(self) -> Path:
        """Write the projections' state at :attr:`seq` to the snapshot file, atomically; returns its path.

        The lock is held while the states are encoded and written (not while they are fsynced).
        """
        if self._until is not None:
            raise RuntimeError(
                "this read model is an as_of() view of the past; save the snapshot from the model opened with "
                "ReadModel.open(), which stands at the end of the log"
            )
        path = self.snapshot_path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                with self.lock:
                    fh.write(_MAGIC)
                    refs = []
                    for p in self._projections:
                        start, crc = fh.tell(), 0
                        parts = p.snapshot_parts() if hasattr(p, "snapshot_parts") else (
                            _encoder.encode(p.snapshot_state()),
                        )  # fmt: skip
                        for part in parts:
                            fh.write(part)
                            crc = zlib.crc32(part, crc)
                        refs.append(StateRef(p.name, start, fh.tell() - start, crc))
                    seq = self._seq
                    header = SnapshotHeader(
                        SNAPSHOT_FORMAT, fingerprint(self._projections), seq, self._offset, self._crc, refs,
                        self._skipped_count, self._skipped,
                    )
                encoded = _encoder.encode(header)
                fh.write(encoded + len(encoded).to_bytes(8, "big"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
        self._snapshot_seq = seq
        return path

    def maybe_save_snapshot(self, *, min_new_records: int = DEFAULT_SNAPSHOT_EVERY) -> bool:
        """Save a snapshot when at least ``min_new_records`` were folded since the last one; True if it did."""
        if self._until is not None or self._seq - self._snapshot_seq < min_new_records:
            return False
        self.save_snapshot()
        return True

    # -- access ------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The last record folded (0: none)."""
        return self._seq

    @property
    def offset(self) -> int:
        """The log offset where that record ends."""
        return self._offset

    @property
    def snapshot_seq(self) -> int:
        """The seq of the snapshot this model loaded or saved last (0: none)."""
        return self._snapshot_seq

    @property
    def until_seq(self) -> int | None:
        """For an :meth:`as_of` model, the seq it stops at; None for a live one."""
        return self._until

    @property
    def projections(self) -> tuple[ProjectionProtocol, ...]:
        return self._projections

    def get(self, cls: type[P]) -> P:
        """The projection of this class."""
        for p in self._projections:
            if isinstance(p, cls):
                return p
        raise KeyError(
            f"no {cls.__name__} projection in this read model; pass one in ReadModel.open(projections=...)"
        )

    def __getitem__(self, name: str) -> ProjectionProtocol:
        for p in self._projections:
            if p.name == name:
                return p
        raise KeyError(f"no projection named {name!r}; these exist: {[p.name for p in self._projections]}")

    @property
    def datasets(self) -> Datasets:
        return self.get(Datasets)

    @property
    def projects(self) -> Projects:
        return self.get(Projects)

    @property
    def jobs(self) -> Jobs:
        return self.get(Jobs)

    @property
    def evaluations(self) -> Evaluations:
        return self.get(Evaluations)

    @property
    def stats(self) -> EventStats:
        return self.get(EventStats)

    @property
    def endpoints(self) -> Endpoints:
        return self.get(Endpoints)

    def __repr__(self) -> str:
        until = f" until {self._until}" if self._until is not None else ""
        return f"<ReadModel {self.data_dir} seq {self._seq}{until}: {', '.join(p.name for p in self._projections)}>"


def _read_header(data: bytes) -> SnapshotHeader | None:
    if len(data) < len(_MAGIC) + 8 or not data.startswith(_MAGIC):
        return None
    size = int.from_bytes(data[-8:], "big")
    if not len(_MAGIC) < len(data) - 8 - size:
        return None
    try:
        header = _header_decoder.decode(data[len(data) - 8 - size : -8])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    end = len(data) - 8 - size
    if any(
        ref.start < len(_MAGIC) or ref.length < 0 or ref.start + ref.length > end for ref in header.states
    ):
        return None
    return header
