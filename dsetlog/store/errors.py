"""The event log's errors: each one's message says what is wrong and what to run.

They sit below every other module of the store (the layout, the readers, the writer, verify and repair
all raise them) and derive from :class:`dsetlog.errors.DsetError`, whose kind the CLI and the API map
once: a corrupt or unreadable log is FATAL, a write the disk refused is UNAVAILABLE.
"""

from __future__ import annotations

import errno
from pathlib import Path

from dsetlog.errors import DsetError, Kind


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
    """A bad line with good records after it: not a torn tail, so readers refuse the log until it is repaired."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        data_dir = path.parent
        super().__init__(
            f"{path}: line {line} is corrupt ({reason}) and good records follow it, so it is not a torn "
            f"tail. Nothing was changed. Run `dset log verify --data {data_dir}` to see it and "
            f"`dset log repair --data {data_dir}` to set it aside (a full copy of the log is kept first)."
        )
