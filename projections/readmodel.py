"""ReadModel: a data dir's projections, folded from its log and kept caught up.

    rm = ReadModel.open("data")          # snapshot (if still valid) + the tail, or a full replay
    rm.wait_verified()                   # before the first write: the records the snapshot stands for are sound
    rm.catch_up()                        # fold what other processes appended; one os.stat when nothing did
    with rm.lock:                        # consistent reads while another thread catches up
        view = rm.datasets.dataset(dataset_id)
    old = rm.as_of(seq)                  # the same projections folded only up to ``seq``
    rows = rm.full(view_list)            # entries with their texts, which only the log holds
    rm.maybe_save_snapshot()             # start-up cache, written atomically

The snapshot (``<data>/snapshots/readmodel.msgpack``, :mod:`projections.snapshot`) is only a cache. It is
used when its format and the projections' fingerprint (class names and
versions) match, its checksums hold, and the log still has the very record it
ends at (same offset, seq and crc); anything else, including an unreadable file,
means a replay from the first record. Deleting it changes start-up time only.
The model reads the log only through :mod:`dsetlog.store`.

A snapshot stands for records nobody checked in this process. Start-up from one still checks the whole
log: ``ReadModel.open(data, verify=True)`` starts a background check (:class:`dsetlog.store.check.LogCheck`) that reads the
records the snapshot covers with every check of a replay (:func:`dsetlog.store.tolerant.read_batches_tolerant`: checksums,
seqs, layout, decoding), in a child process for a big log (so on the second core, its checksums on a
``dsetlog.store.crc_worker`` of its own), while reads are served from the snapshot. Whoever writes first calls
:meth:`ReadModel.wait_verified`, which waits for that verdict and raises
:class:`~dsetlog.store.errors.CorruptLogError` (naming the line, saying to run `dset log verify` / `dset log
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
import threading
from collections.abc import Sequence
from pathlib import Path

from dsetlog.store.check import LogCheckStatus
from dsetlog.store.errors import CorruptLogError, LogError
from dsetlog.store.layout import Recorded
from dsetlog.store.log import log_path
from dsetlog.store.scan import file_identity, record_ends_at
from dsetlog.store.tolerant import read_batches_tolerant
from projections.base import ProjectionProtocol, event_classes, gc_paused
from projections.lean import fold_decoder
from projections.skipped import Skipped, SkippedRecord
from projections.snapshot import (
    SNAPSHOT_DIR,
    SNAPSHOT_NAME,
    Folded,
    load_states,
    read_snapshot,
    write_snapshot,
)
from projections.soundness import Soundness
from projections.standard import StandardProjections, standard_projections
from projections.texts import TextReads

# records folded since the last snapshot before maybe_save_snapshot() writes a new one
DEFAULT_SNAPSHOT_EVERY = 50_000
_GC_PAUSE_BYTES = 1 << 20  # a catch-up reading more than this pauses the cyclic GC
_BULK_BYTES = 64 << 20  # and more than this is folded in bulk (Projection.bulk)

_log = logging.getLogger("projections")


class _FoldFailed(Exception):
    """A projection's handler raised somewhere in a batch: fold that stretch again record by record."""

    def __init__(self, first: int, last: int, projection: str, exc: Exception) -> None:
        super().__init__(f"{projection} failed folding seqs {first}-{last}: {type(exc).__name__}: {exc}")
        self.first, self.last = first, last


class ReadModel(StandardProjections, TextReads):
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
        self.path = log_path(self.data_dir)
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
        self._sound = Soundness(self.path)
        self._skipped = Skipped(self.path)
        self._careful: list[tuple[int, int]] = []  # seq ranges folded record by record (a handler raised there)
        self._bulk = False  # the catch-up running folds a long stretch (Projection.bulk)

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
                rm._sound.start()
        return rm

    # -- is the log sound? ---------------------------------------------------------------

    def wait_verified(self, timeout: float | None = None) -> None:
        """Return once every record of the log is known to be sound; call it before the first write.

        Records folded from the log were checked as they were read; those a snapshot stands for are checked
        by a background thread (started here if :meth:`open` did not). Raises
        :class:`~dsetlog.store.errors.CorruptLogError` (its message names the line and says to run `dset log verify` /
        `dset log repair`) when that check or a catch-up found corruption, and ``TimeoutError`` when the
        check has no verdict within ``timeout`` seconds (None: wait as long as it takes).
        """
        with self.lock:
            check = self._sound.start()
        self._sound.wait(check, timeout)
        with self.lock:  # a catch-up folding meanwhile (a replay after a repair) has its verdict too
            problem = self._sound.problem
        if problem is not None:
            raise problem

    @property
    def problem(self) -> LogError | None:
        """Why nothing may be written now (the corruption found), or None; does not wait for the check."""
        return self._sound.problem

    def verification(self) -> LogCheckStatus:
        """Where the check of the log's records stands (the background check's, or that of the replay)."""
        return self._sound.status(self._offset)

    def stop_check(self) -> None:
        """Stop the background check, if one runs (closing a server); its verdict is then void."""
        self._sound.stop()

    @property
    def skipped_count(self) -> int:
        """Records that passed their checksum and could not be folded (see the module's description)."""
        return self._skipped.count

    @property
    def skipped(self) -> list[SkippedRecord]:
        """The first :data:`~projections.skipped.SKIPPED_KEPT` of them."""
        return list(self._skipped.first)

    def catch_up(self) -> int:
        """Fold the records appended since the last call; returns how many. One ``os.stat`` when none were."""
        with self.lock:
            if self._until is not None and self._seq >= self._until:
                return 0
            seen = file_identity(self.path)
            if seen is None:
                return 0  # no log yet: nothing happened
            if seen == self._seen:
                return 0
            if self._seq and (
                seen[0] < self._offset or (self._seen is not None and seen[1:] != self._seen[1:])
            ):
                # shorter, or another file (repair swaps one in): still ours up to where we stand?
                if not record_ends_at(self.path, self._offset, seq=self._seq, crc=self._crc):
                    self._reset()
            sound = self._sound
            if sound.fold_error is not None and seen == sound.failed_seen:
                raise sound.fold_error  # the same corrupt log as last time: no need to read it again
            self._bulk = seen[0] - self._offset > _BULK_BYTES
            try:
                if seen[0] - self._offset > _GC_PAUSE_BYTES:
                    with gc_paused():
                        n = self._fold_tolerant()
                else:
                    n = self._fold_tolerant()
            except CorruptLogError as exc:
                sound.fold_error, sound.failed_seen = exc, seen
                raise
            finally:
                if self._bulk:
                    self._settle()
            sound.fold_error = sound.failed_seen = None
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
                unchecked = self._sound.unchecked_end
                self._reset(keep_check=True)
                self._sound.unchecked_end = 0
                if self.snapshot_used:
                    self._load_snapshot(max_seq=self._until)
                if self._sound.unchecked_end != unchecked:  # another snapshot, or none: the check covers others
                    self._sound.drop_check()

    def _settle(self) -> None:
        self._bulk = False
        for p in self._projections:
            if getattr(p, "bulk", False):
                p.bulk = False  # type: ignore[attr-defined]
                p.settle()  # type: ignore[attr-defined]

    def _fold(self) -> int:
        for p in self._projections:  # (projections made anew by a reset meanwhile too)
            if hasattr(p, "bulk"):
                p.bulk = self._bulk  # type: ignore[attr-defined]
        appliers = [(p, p.apply_batch, getattr(p, "handled_types", None)) for p in self._projections]
        n = 0
        batches = read_batches_tolerant(self.path, offset=self._offset, seq=self._seq, until_seq=self._until,
                                        decoder=fold_decoder)
        for recs, end, unreadable, bounds in batches:
            if unreadable is not None:
                self._skipped.add(SkippedRecord(seq=unreadable.seq, type=unreadable.type, reason=unreadable.reason))
                self._seq, self._offset, self._crc = unreadable.seq, end, unreadable.crc
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
                        self._apply_one_by_one(p, recs, bounds)
                        continue
                    try:
                        apply_batch(recs, bounds)
                    except Exception as exc:  # noqa: BLE001 - a record that passed its checksum never stops the fold
                        raise _FoldFailed(first.seq, last.seq, p.name, exc) from exc
            self._seq, self._offset, self._crc = last.seq, end, last.crc
            n += len(recs)
        return n

    def _apply_one_by_one(self, p: ProjectionProtocol, recs: Sequence[Recorded], bounds: Sequence[int]) -> None:
        for i, rec in enumerate(recs):
            try:
                p.apply_batch((rec,), bounds[i : i + 2])
            except Exception as exc:  # noqa: BLE001 - skip that record for this projection, and say so
                reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
                self._skipped.add(SkippedRecord(seq=rec.seq, type=type(rec.event).__name__, reason=reason,
                                                projection=p.name))

    def _reset(self, *, keep_check: bool = False) -> None:
        """Forget every folded record (the log was rewritten, or a stretch is to be folded again)."""
        self._projections = tuple(p.fresh() for p in self._projections)
        self._seq = self._offset = self._crc = 0
        self._seen = None
        self._skipped = Skipped(self.path)  # (the careful ranges stay: at worst they fold slower)
        if not keep_check:
            self._sound.drop_check()  # it checks records this model no longer stands on
            self._sound.unchecked_end = 0

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
        found = read_snapshot(self.snapshot_path, self._projections, log=self.path, max_seq=max_seq)
        if found is None:
            return False
        header, raws = found
        try:
            load_states(self._projections, raws)
        except Exception:  # noqa: BLE001 - a cache that does not load must never stop start-up: replay instead
            self._reset()
            return False
        self._seq, self._offset, self._crc = header.seq, header.offset, header.crc
        self._snapshot_seq = header.seq
        self.snapshot_used = True
        self._sound.unchecked_end = header.offset
        self._skipped = Skipped(self.path, header.skipped_count, header.skipped)
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
        self._snapshot_seq = write_snapshot(self.snapshot_path, self.lock, lambda: Folded(
            self._projections, self._seq, self._offset, self._crc, self._skipped.count, self._skipped.first))
        return self.snapshot_path

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

    def __repr__(self) -> str:
        until = f" until {self._until}" if self._until is not None else ""
        return f"<ReadModel {self.data_dir} seq {self._seq}{until}: {', '.join(p.name for p in self._projections)}>"

