"""`dset log repair`: the one command that rewrites the log, and it never loses a byte.

Under the log's lock the whole file is copied aside first, bad lines go to a ``rejected`` file with their
line numbers, a torn tail goes to ``.torn`` exactly as :class:`~dsetlog.store.log.EventLog` would put it,
the records left are renumbered gap-free (their event bytes, checksums and timestamps kept), and the new
log replaces the old one atomically. A log that verifies is left alone.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import BinaryIO

import msgspec

from dsetlog.fsutil import atomic_writer, fsync_dir
from dsetlog.store.errors import LogError
from dsetlog.store.layout import renumbered
from dsetlog.store.verify import (
    LISTED,
    BadLine,
    LineJudge,
    lock_path,
    open_log,
    scan_log,
    try_lock,
    whole_lines,
)

_CHUNK = 1 << 22
_LOCK_WAIT_REPAIR = 30.0


class RepairReport(msgspec.Struct):
    path: str
    changed: bool
    records: int
    last_seq: int
    size: int
    backup: str | None = None
    rejected_file: str | None = None
    rejected_count: int = 0
    rejected: list[BadLine] = []  # the first few
    renumbered: int = 0
    torn_bytes: int = 0
    torn_file: str | None = None
    snapshots_removed: int = 0



def _stamp(path: Path) -> str:
    """A UTC timestamp for the side files, unique among this log's existing ones."""
    base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    stamp, n = base, 1
    while any(path.with_name(f"{path.name}.{kind}-{stamp}").exists() for kind in ("bak", "rejected")):
        n += 1
        stamp = f"{base}-{n}"
    return stamp


def _copy(fd: int, size: int, dest: Path, mode: int) -> None:
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        pos = 0
        while pos < size:
            chunk = os.pread(fd, min(_CHUNK, size - pos), pos)
            if not chunk:
                raise LogError(f"{dest}: the log shrank while it was being copied; nothing was changed")
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
            pos += len(chunk)
        os.fsync(out)
    finally:
        os.close(out)




def _clear_snapshots(data: Path) -> int:
    snapshots = data / "snapshots"
    if not snapshots.is_dir():
        return 0
    removed = 0
    for entry in snapshots.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed += 1
    return removed


def repair(path: str | os.PathLike[str]) -> RepairReport:
    """Under the log's lock: back the log up, set bad lines and a torn tail aside, renumber, replace.

    A log that verifies is left alone (no backup either).
    """
    path = Path(path)
    fd = open_log(path)
    try:
        with open(lock_path(path), "a+b") as lock_fh:
            if not try_lock(lock_fh, _LOCK_WAIT_REPAIR):
                raise LogError(
                    f"{path}: another process has held the log's lock for {_LOCK_WAIT_REPAIR:.0f} s; "
                    "stop it and run `dset log repair` again. Nothing was changed."
                )
            return _repair_locked(path, fd)
    finally:
        os.close(fd)


def _repair_locked(path: Path, fd: int) -> RepairReport:
    st = os.fstat(fd)
    size = st.st_size
    found = scan_log(path, fd, size)
    if found.ok:
        return RepairReport(str(path), False, found.records, found.last_seq, size)

    stamp = _stamp(path)
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    _copy(fd, size, backup, st.st_mode & 0o777)
    fsync_dir(path.parent)  # the backup must exist for sure before the log is touched

    report = RepairReport(str(path), True, 0, 0, 0, backup=str(backup))
    valid_end = found.torn.offset if found.torn else size
    with atomic_writer(path) as out, _Rejected(path.with_name(f"{path.name}.rejected-{stamp}"), report) as rejected:
        report.records = report.last_seq = _rewrite(fd, valid_end, out, rejected, report)
        report.size = out.tell()
        # Everything set aside is durable before the rename makes the new log the log.
        rejected.sync()
        if found.torn is not None:
            torn_path = path.with_name(path.name + ".torn")
            with open(torn_path, "ab") as fh:
                fh.write(os.pread(fd, size - valid_end, valid_end))
                fh.flush()
                os.fsync(fh.fileno())
            report.torn_bytes, report.torn_file = size - valid_end, str(torn_path)
    # Projection snapshots name seqs of the old numbering; they are only caches.
    report.snapshots_removed = _clear_snapshots(path.parent)
    check_fd = os.open(path, os.O_RDONLY)
    try:
        check = scan_log(path, check_fd, os.fstat(check_fd).st_size)
    finally:
        os.close(check_fd)
    if not check.ok:  # cannot happen unless the disk lies; say so rather than claim success
        raise LogError(f"{path}: still does not verify after repair; the original is in {backup}")
    return report


def _rewrite(fd: int, valid_end: int, out: BinaryIO, rejected: _Rejected, report: RepairReport) -> int:
    """Write the good lines of ``[0, valid_end)`` to ``out``, renumbered from 1; returns the last seq."""
    judge = LineJudge()
    seq = number = 0
    for offset, line in whole_lines(fd, valid_end):
        number += 1
        kind, rec, why = judge.judge(number, line)
        if rec is None or kind == "dup":
            rejected.add(number, offset, line, why)
            continue
        seq += 1
        if rec.seq != seq:
            report.renumbered += 1
        out.write(renumbered(line, rec, seq) + b"\n")
    return seq


class _Rejected:
    """The ``rejected`` file, created at the first bad line: each one after a header naming it."""

    def __init__(self, path: Path, report: RepairReport) -> None:
        self.path, self.report = path, report
        self._fh: BinaryIO | None = None

    def add(self, number: int, offset: int, line: bytes, why: str) -> None:
        if self._fh is None:
            self._fh = open(self.path, "xb")  # noqa: SIM115 - closed on exit
        # A header line, then the line's exact bytes, so it can be inspected or mended by hand.
        self._fh.write(b"# line %d, byte %d: %s\n" % (number, offset, why.encode()))
        self._fh.write(line + b"\n")
        self.report.rejected_count += 1
        if len(self.report.rejected) < LISTED:
            self.report.rejected.append(BadLine(number, offset, len(line) + 1, why))

    def sync(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.report.rejected_file = str(self.path)

    def __enter__(self) -> _Rejected:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
