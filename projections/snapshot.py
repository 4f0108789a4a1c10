"""The read model's snapshot file: its projections' states at one record of the log, a start-up cache.

The file (``<data>/snapshots/readmodel.msgpack``): MAGIC, each projection's state (msgpack) back to back,
the header (msgpack), the header's length (8 bytes, big-endian). States are written as they are encoded,
a projection (or a piece of one) at a time, so a save never holds a second copy of the whole state; the
header comes last because only then are the lengths and checksums known.

A snapshot is used only when its format and the projections' fingerprint (class names and versions)
match, its checksums hold, and the log still has the very record it ends at (same offset, seq and crc,
:func:`dsetlog.store.scan.record_ends_at`); anything else, an unreadable file too, means a replay.
It also keeps the records the fold skipped (:class:`~projections.skipped.SkippedRecord`), so that a start-up
from it says so.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from dsetlog.store.scan import record_ends_at
from projections.base import ProjectionProtocol, gc_paused
from projections.skipped import SkippedRecord

SNAPSHOT_DIR = "snapshots"
SNAPSHOT_NAME = "readmodel.msgpack"
SNAPSHOT_FORMAT = 1


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


class Folded(NamedTuple):
    """What a read model stands on, read under its lock when a snapshot is written."""

    projections: Sequence[ProjectionProtocol]
    seq: int
    offset: int
    crc: int
    skipped_count: int
    skipped: list[SkippedRecord]


_MAGIC = b"DSETSNAP"
_header_decoder = msgspec.msgpack.Decoder(SnapshotHeader)
_encoder = msgspec.msgpack.Encoder()


def fingerprint(projections: Iterable[ProjectionProtocol]) -> str:
    """Names and versions of the projections' classes: a snapshot made by other code does not match."""
    return ";".join(f"{p.name}={type(p).__module__}.{type(p).__qualname__}:v{p.version}" for p in projections)


def read_snapshot(path: Path, projections: Sequence[ProjectionProtocol], *, log: Path,
                  max_seq: int | None = None) -> tuple[SnapshotHeader, list[memoryview]] | None:
    """The snapshot's header and each projection's encoded state, when it is valid for these projections
    and this log (and ends at or before ``max_seq``); None otherwise."""
    try:
        with open(path, "rb") as fh:
            # mapped, not read: the states stay views of the file's pages (the kernel's to keep or drop) until
            # decoded, not a copy on the heap as big as the file (9 GB at 10M entries)
            view = memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return None
    header = _read_header(view)
    if (
        header is None
        or header.format != SNAPSHOT_FORMAT
        or header.fingerprint != fingerprint(projections)
        or (max_seq is not None and header.seq > max_seq)
        or [ref.name for ref in header.states] != [p.name for p in projections]
        or not record_ends_at(log, header.offset, seq=header.seq, crc=header.crc)
    ):
        return None
    raws = [view[ref.start : ref.start + ref.length] for ref in header.states]
    if any(zlib.crc32(raw) != ref.crc for raw, ref in zip(raws, header.states, strict=True)):
        return None
    release_pages((view,))  # checked: the pages read need not stay in this process's memory until decoded
    return header, raws


def release_pages(views: Iterable[memoryview]) -> None:
    """Let go of the snapshot file's pages these views (of its mapping) have been read through: they leave the
    process's resident memory and stay in the page cache, read again if a view is used again. A state decoded
    or checked keeps none of the file's bytes in memory (at 10M entries the file is 9 GB)."""
    for obj in {id(v.obj): v.obj for v in views}.values():
        if isinstance(obj, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            with suppress(OSError, ValueError):  # ValueError: closed
                obj.madvise(mmap.MADV_DONTNEED)


def load_states(projections: Sequence[ProjectionProtocol], raws: Sequence[memoryview]) -> None:
    """Decode each projection's state and load it; raises when one does not (the caller starts afresh)."""
    with gc_paused():
        states = [
            msgspec.msgpack.decode(raw, type=getattr(p, "state_type", Any))
            for p, raw in zip(projections, raws, strict=True)
        ]
        for p, state in zip(projections, states, strict=True):
            p.load_snapshot_state(state)


def write_snapshot(path: Path, lock: AbstractContextManager[Any], folded: Callable[[], Folded]) -> int:
    """Write the states ``folded()`` gives, under ``lock`` (not while they are fsynced), atomically over
    ``path``; returns the seq they stand at."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            with lock:
                now = folded()
                fh.write(_MAGIC)
                refs = [_write_state(fh, p) for p in now.projections]
                header = SnapshotHeader(SNAPSHOT_FORMAT, fingerprint(now.projections), now.seq, now.offset,
                                        now.crc, refs, now.skipped_count, now.skipped)
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
    return now.seq


def _write_state(fh: Any, p: ProjectionProtocol) -> StateRef:
    start, crc = fh.tell(), 0
    parts = p.snapshot_parts() if hasattr(p, "snapshot_parts") else (_encoder.encode(p.snapshot_state()),)
    for part in parts:
        fh.write(part)
        crc = zlib.crc32(part, crc)
    return StateRef(p.name, start, fh.tell() - start, crc)


def _read_header(data: memoryview) -> SnapshotHeader | None:
    if len(data) < len(_MAGIC) + 8 or data[: len(_MAGIC)] != _MAGIC:
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
