"""The errors of a document generation run: a request that cannot run as asked, a dataset another run holds."""

from __future__ import annotations

from dsetlog.errors import UsageError
from dsetlog.store import locks


class DocGenError(UsageError, ValueError):
    """The request cannot run as asked; the message says what to change."""


class DatasetBusy(locks.LockBusy, DocGenError):
    """Another run is generating this dataset and this one was told not to wait; the message names it."""


# what a refused `dset datasets generate` is told (only the CLI runs without waiting)
BUSY_ADVICE = "run the same command with --wait to start once it has finished"
