"""ReadModel: a data dir's projections, folded from its log and kept caught up.

    rm = ReadModel.open("data")          # snapshot (if still valid) + the tail, or a full replay
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
"""

from __future__ import annotations

import os
import tempfile
import threading
import zlib
from collections.abc import Iterable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from dsetlog.log import LOG_NAME, parse_line, read_batches
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

P = TypeVar("P", bound=ProjectionProtocol)


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

    # -- opening and catching up ---------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        projections: Sequence[ProjectionProtocol] | None = None,
        use_snapshot: bool = True,
    ) -> ReadModel:
        """Fold the whole log (from the snapshot when it is valid). ``projections`` must be new, empty ones."""
        rm = cls(data_dir, projections)
        with rm.lock:
            if use_snapshot:
                rm._load_snapshot()
            rm.catch_up()
        return rm

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
            if st.st_size - self._offset > _GC_PAUSE_BYTES:
                with gc_paused():
                    n = self._fold()
            else:
                n = self._fold()
            self._seen = seen  # the size read *before* folding: anything appended meanwhile is seen next time
            return n

    def _fold(self) -> int:
        appliers = [(p.apply_batch, getattr(p, "handled_types", None)) for p in self._projections]
        n = 0
        for recs, end in read_batches(self.path, offset=self._offset, seq=self._seq, until_seq=self._until):
            # the batch's event classes, found in C: a projection that folds none of them skips it
            # (most batches of a big log are dataset events that most projections do not fold)
            present = set(event_classes(recs))
            for apply_batch, handled in appliers:
                if handled is None or not present.isdisjoint(handled):
                    apply_batch(recs)
            last = recs[-1]
            self._seq, self._offset, self._crc = last.seq, end, last.crc
            n += len(recs)
        return n

    def _reset(self) -> None:
        self._projections = tuple(p.fresh() for p in self._projections)
        self._seq = self._offset = self._crc = 0
        self._seen = None

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
                        SNAPSHOT_FORMAT, fingerprint(self._projections), seq, self._offset, self._crc, refs
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
