"""Whether the records a read model stands on are known to be sound, and why nothing may be written if not.

Records a model folded from the log were checked as they were read. Those a snapshot stands for were
checked by nobody in this process: a :class:`~dsetlog.store.check.LogCheck` reads them in the background
while reads are served. A catch-up that meets corruption keeps that error too, until one gets past it.
:class:`Soundness` holds both verdicts for one model; the model calls it under its own lock.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from dsetlog.store.check import LogCheck, LogCheckStatus
from dsetlog.store.errors import LogError


class Soundness:
    """The background check of the records a snapshot stood for, and the corruption a catch-up met."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # the records before this offset came from a snapshot: nobody checked them in this process yet
        self.unchecked_end = 0
        self.check: LogCheck | None = None  # the check of those records, once started
        self.fold_error: LogError | None = None  # corruption a catch-up met (cleared when one gets past it)
        self.failed_seen: tuple[int, int, int] | None = None  # the log's (size, inode, device) then

    def start(self) -> LogCheck | None:
        """The check of the records the snapshot stands for, started (None: nothing to check)."""
        if self.check is None and self.unchecked_end:
            self.check = LogCheck(self.path, self.unchecked_end).start()
        return self.check

    @staticmethod
    def wait(check: LogCheck | None, timeout: float | None) -> None:
        """Wait for the check's verdict (not holding the model's lock); TimeoutError when it has none in time."""
        if check is not None and not check.wait(timeout):
            st = check.status()
            raise TimeoutError(
                f"the log's records are still being checked ({st.checked_bytes / 1e6:,.0f} of "
                f"{st.total_bytes / 1e6:,.0f} MB after {st.seconds:.1f} s); writes wait for that, try again shortly"
            )

    @property
    def problem(self) -> LogError | None:
        """Why nothing may be written now (the corruption found), or None; does not wait for the check."""
        check = self.check
        if check is not None and check.error is not None:
            return check.error
        return self.fold_error

    def status(self, folded_to: int) -> LogCheckStatus:
        """Where the check stands (the background check's, or that of the replay, which folded to ``folded_to``)."""
        check = self.check
        if check is not None:
            st = check.status()
        elif self.unchecked_end:
            st = LogCheckStatus(state="checking", checked_bytes=0, total_bytes=self.unchecked_end, seconds=0.0)
        else:
            st = LogCheckStatus(state="ok", checked_bytes=folded_to, total_bytes=folded_to, seconds=0.0)
        if self.fold_error is not None and st.state != "corrupt":
            st = msgspec.structs.replace(st, state="corrupt", error=str(self.fold_error))
        return st

    def stop(self) -> None:
        """Stop the background check, if one runs (closing a server); its verdict is then void."""
        check = self.check
        if check is not None and check.running:
            check.stop()

    def drop_check(self) -> None:
        """The model no longer stands on the records the check reads: stop it, and forget its verdict."""
        if self.check is not None:
            self.check.stop()
        self.check = None
