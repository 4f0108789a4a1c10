"""A background check of the records a snapshot stands for, with every check of a replay, folding nothing.

A read model started from a snapshot serves reads at once, but nobody in this process has checked the
records the snapshot covers: :class:`LogCheck` reads them (:func:`~dsetlog.store.tolerant.read_batches_tolerant`:
checksums, seqs, layout, decoding) while reads go on, and whoever writes first waits for its verdict. A big
log is checked by a child process (``python -m dsetlog.store.check FD END``, on the log's inherited
descriptor, its checksums on a ``dsetlog.store.crc_worker`` of its own), so that decoding hundreds of MB
does not hold this process's GIL and stall the requests it serves. The child prints the offset checked up
to after each batch, then ``ok``, ``corrupt LINE REASON`` or ``error MESSAGE``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Literal

import msgspec

from dsetlog.store.errors import CorruptLogError, LogError
from dsetlog.store.scan import PARALLEL_CHECK_BYTES
from dsetlog.store.tolerant import read_batches_tolerant

# a background check of this much or more runs in a child process (see LogCheck)
CHILD_CHECK_BYTES = PARALLEL_CHECK_BYTES
_log = logging.getLogger("projections")  # where the read model's own messages have always gone


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

    It reads with :func:`~dsetlog.store.tolerant.read_batches_tolerant` and holds no lock of the read model:
    reads go on meanwhile. A small log is read by a thread; one of :data:`CHILD_CHECK_BYTES` or more by a
    child process (``python -m dsetlog.store.check`` running :func:`main` on the log's descriptor, so the very
    file opened here), whose replay hands the checksums on to its own ``dsetlog.store.crc_worker``: decoding
    hundreds of MB in this process would hold its GIL ~45 ms per 8 MiB chunk and stall the requests served
    meanwhile. If the child cannot start or dies
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
                for batch in read_batches_tolerant(self.path, end=self.end):
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
            root = str(Path(__file__).resolve().parents[2])  # the child imports this very code
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
            try:
                self._proc = proc = subprocess.Popen(
                    [sys.executable, "-m", "dsetlog.store.check", str(fd), str(self.end)],
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


def main(argv: list[str]) -> int:
    """The child of a :class:`LogCheck`: ``FD END``. Checks ``[0, END)`` of the log open as descriptor FD
    (inherited) and prints the offset checked up to after each batch, then ``ok``, ``corrupt LINE REASON``
    or ``error MESSAGE``."""
    fd, end = int(argv[0]), int(argv[1])
    out = sys.stdout
    try:
        for batch in read_batches_tolerant(Path(f"/dev/fd/{fd}"), end=end):
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


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
