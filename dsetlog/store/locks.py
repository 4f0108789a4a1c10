"""Named locks in ``<data>/locks/``: one holder at a time across processes, and whoever is refused learns who.

A lock is an exclusive ``flock`` on ``<data>/locks/<name>.lock`` (through portalocker, like the log's and the
job worker's locks). Its holder writes who it is into the file (pid, host, command line, job id, what for and
since when), so a run that finds it taken can say exactly what it is waiting for or what to stop. The kernel
drops the lock when its process dies, even after ``kill -9``: a lock is never stale, whatever the file says.

Who uses which lock:

* ``dataset_lock`` / :func:`dataset` (``<dataset_id>.lock``): one generator per dataset at a time. ``dset
  generate``, ``dset datasets generate``, server generation jobs and regeneration jobs hold it while they
  make, score, split or benchmark a dataset's entries, so no slot and no helper call is paid for twice.
* :func:`project_titles` (``<project_id>.titles.lock``): chunk titles are a project's, not a dataset's; jobs
  of several datasets on one project take turns titling, and each one titles only what is untitled once it
  holds the lock.

In one process two holders of one lock also exclude each other (flock locks belong to the open file, and a
registry here makes it so whatever the locking primitive), so two jobs of one server queue like two processes.
The files are never deleted: removing a lock file while someone waits on it would let two holders in.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import msgspec
import portalocker

from dsetlog import redaction
from dsetlog.errors import Conflict

LOCK_DIR = "locks"
POLL_SECONDS = 0.2  # how often a waiter tries again: flock has no async wait, and 0.2 s is nothing beside a call
# a run refused "at once" still tries for this long: a probe (:func:`running_elsewhere`) holds a free lock for
# an instant, and must not be mistaken for a holder
REFUSE_AFTER = 0.1
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")


class Holder(msgspec.Struct, kw_only=True, frozen=True):
    """Who holds a lock, as written into its file."""

    pid: int
    host: str
    command: str
    job_id: str = ""
    purpose: str = ""  # what it holds the lock for, in words ("generating dataset dataset_...")
    since: str = ""  # UTC ISO-8601

    @classmethod
    def here(cls, *, job_id: str = "", purpose: str = "", command: str | None = None) -> Holder:
        """This process, now."""
        return cls(pid=os.getpid(), host=socket.gethostname(), command=command or command_line(), job_id=job_id,
                   purpose=purpose, since=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    @property
    def is_server(self) -> bool:
        return self.command.startswith("dset serve")

    def describe(self) -> str:
        """One phrase naming the holder: "job job_1 of `dset serve --port 8000` (pid 42 on host-a, since ...)"."""
        who = f"job {self.job_id} of `{self.command}`" if self.job_id else f"`{self.command}`"
        return f"{who} (pid {self.pid} on {self.host}, since {self.since})"

    def how_to_stop(self) -> str:
        if self.is_server and self.job_id:
            return f"cancel it with POST /api/v1/jobs/{self.job_id}/cancel"
        return f"stop it first (pid {self.pid} on {self.host})"


def who(holder: Holder | None) -> str:
    """The holder as a message names it (a lock just taken may not have its identity written yet)."""
    return holder.describe() if holder else "another run (it has not written who it is yet)"


def command_line(argv: list[str] | None = None) -> str:
    """This process's command as a user typed it ("dset datasets generate --project med ..."), secrets
    redacted and bounded: it is shown to other users of the data dir."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return "python"
    first = Path(argv[0])
    # `python -m dsetlog` runs dsetlog/__main__.py; the console script is `dset`
    head = "dset" if first.name in ("dset", "__main__.py") else first.name
    text = " ".join([head, *argv[1:]])
    text = redaction.redact(text)
    return text if len(text) <= 300 else text[:297] + "..."


class LockError(Conflict):
    """The lock cannot be taken; the message says why and what to do (a conflict: a command exits 2)."""


class LockBusy(LockError):
    """Refused at once: someone else holds the lock. The message names the holder."""

    def __init__(self, message: str, holder: Holder | None) -> None:
        super().__init__(message)
        self.holder = holder


def lock_path(data_dir: str | os.PathLike[str], name: str) -> Path:
    """``<data>/locks/<name>.lock``; a name unsafe as a file name is hashed (ids of this project are safe)."""
    if not _SAFE_NAME.fullmatch(name):
        name = "h_" + hashlib.sha256(name.encode()).hexdigest()[:24]
    return Path(data_dir) / LOCK_DIR / f"{name}.lock"


# Held in this process: path -> holder. Guards against a locker whose locks are per process (POSIX record
# locks) and answers "who" without reading the file.
_held: dict[str, Holder] = {}
_held_mutex = threading.Lock()


class FileLock:
    """One named lock; acquire it at once or not (:meth:`acquire`), waiting (:meth:`acquire`, ``wait=True``)
    or on an event loop without blocking it (:meth:`acquire_async`). Not re-entrant: acquire it once."""

    def __init__(self, path: Path, holder: Holder) -> None:
        self.path = path
        self.identity = holder
        self._fh: IO[bytes] | None = None
        self._key = str(path.resolve())  # one key per file, however the data dir was named

    @property
    def held(self) -> bool:
        return self._fh is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this object holds it now."""
        if self._fh is not None:
            return True
        with _held_mutex:
            if self._key in _held:
                return False
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # O_RDWR without O_TRUNC: opening must not wipe the name of a holder we are about to be refused by
                fh = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), "r+b")
            except OSError as exc:
                raise LockError(f"cannot open the lock file {self.path}: {exc.strerror}; the data directory "
                                "must be writable by this user") from None
            try:
                portalocker.lock(fh, portalocker.LOCK_EX | portalocker.LOCK_NB)
            except portalocker.LockException:
                fh.close()
                return False
            _held[self._key] = self.identity
        self._fh = fh
        self._write_identity()
        return True

    def _write_identity(self) -> None:
        assert self._fh is not None
        try:
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.write(msgspec.json.encode(self.identity) + b"\n")
            self._fh.flush()  # no fsync: after a crash the kernel has dropped the lock, and the text is moot
        except OSError:
            pass  # a full disk must not stop the run: a refused one then says it cannot tell who holds it

    def holder(self, *, patient: bool = True) -> Holder | None:
        """Who holds the lock now, as far as can be told (None: free, or the holder is still writing its name;
        ``patient``: the lock was just found taken, so give a fresh holder a moment to write it)."""
        with _held_mutex:
            mine = _held.get(self._key)
        if mine is not None:
            return mine
        for _ in range(5 if patient else 1):
            try:
                raw = self.path.read_bytes()
            except OSError:
                return None
            if raw.strip():
                try:
                    return msgspec.json.decode(raw, type=Holder)
                except msgspec.DecodeError:
                    pass
            time.sleep(0.01)
        return None

    def busy_message(self, what: str, advice: str) -> str:
        holder = self.holder()
        stop = holder.how_to_stop() if holder else "stop it first"
        return f"{what} is busy: {who(holder)} holds it; {advice}, or {stop}"

    def acquire(self, *, wait: bool = False, what: str = "", advice: str = "wait for it to finish",
                on_wait: Callable[[Holder | None], None] | None = None, timeout: float | None = None) -> None:
        """Take the lock. ``wait=False``: now or :class:`LockBusy` naming the holder; ``wait=True``: block
        until it is free (``on_wait(holder)`` each time the holder changes; :class:`LockBusy` after
        ``timeout`` seconds). For an event loop, use :meth:`acquire_async`."""
        grace = time.monotonic() + REFUSE_AFTER
        while not self.try_acquire():
            if time.monotonic() >= grace:
                break
            time.sleep(0.02)
        else:
            return
        if not wait:
            raise LockBusy(self.busy_message(what or str(self.path), advice), self.holder())
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: Holder | None | str = "-"
        while not self.try_acquire():
            current = self.holder()
            if current != seen and on_wait is not None:
                on_wait(current)
            seen = current
            if deadline is not None and time.monotonic() >= deadline:
                raise LockBusy(self.busy_message(what or str(self.path), f"waited {timeout:g} s; {advice}"),
                               current)
            time.sleep(POLL_SECONDS)

    async def acquire_async(self, *, on_wait: Callable[[Holder | None], None] | None = None,
                            stop: Callable[[], bool] = lambda: False) -> bool:
        """Take the lock, waiting without blocking the loop; False if ``stop()`` turned true first (a cancelled
        job stops waiting at once). ``on_wait(holder)`` is called each time the holder changes."""
        seen: Holder | None | str = "-"
        while not self.try_acquire():
            if stop():
                return False
            current = self.holder()
            if current != seen and on_wait is not None:
                on_wait(current)
            seen = current
            await asyncio.sleep(POLL_SECONDS)
        return True

    def is_free(self) -> bool:
        """Nobody holds the lock right now (found by taking and dropping it, without writing a name)."""
        if self._fh is not None:
            return False
        with _held_mutex:
            if self._key in _held:
                return False
            try:
                fh = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), "r+b")
            except FileNotFoundError:
                return True  # no locks dir yet: nobody ever took it
            with fh:
                try:
                    portalocker.lock(fh, portalocker.LOCK_EX | portalocker.LOCK_NB)
                except portalocker.LockException:
                    return False
                portalocker.unlock(fh)
                return True

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            try:
                fh.seek(0)
                fh.truncate()  # the next holder writes its own name; a refused run must not read ours meanwhile
            except OSError:
                pass
            portalocker.unlock(fh)
        finally:
            fh.close()
            with _held_mutex:
                _held.pop(self._key, None)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def dataset(data_dir: str | os.PathLike[str], dataset_id: str, *, job_id: str = "",
            command: str | None = None) -> FileLock:
    """The lock of one dataset's generation (not taken yet)."""
    return FileLock(lock_path(data_dir, dataset_id),
                    Holder.here(job_id=job_id, purpose=f"generating dataset {dataset_id}", command=command))


def project_titles(data_dir: str | os.PathLike[str], project_id: str, *, job_id: str = "",
                   command: str | None = None) -> FileLock:
    """The lock under which a project's chunks are titled (not taken yet)."""
    return FileLock(lock_path(data_dir, f"{project_id}.titles"),
                    Holder.here(job_id=job_id, purpose=f"titling the chunks of project {project_id}", command=command))


def running_elsewhere(data_dir: str | os.PathLike[str], dataset_id: str, job_id: str) -> Holder | None:
    """The holder of the dataset's lock if it is running job ``job_id`` itself, in another process: a job that
    `dset datasets generate` recorded and runs. The server's worker leaves such a job to it (running it too
    would only wait for it and then record the job's end twice) and resumes it only if that process dies."""
    lock = dataset(data_dir, dataset_id)
    holder = lock.holder(patient=False)  # called on the job worker's loop: no sleeping
    if holder is None or holder.job_id != job_id or (holder.pid, holder.host) == (os.getpid(), socket.gethostname()):
        return None
    # the file names this job; but a holder killed with SIGKILL leaves its name behind: is the lock taken?
    return None if lock.is_free() else holder


@contextmanager
def dataset_lock(data_dir: str | os.PathLike[str], dataset_id: str, *, wait: bool = False, job_id: str = "",
                 advice: str = "run the same command again when it has finished",
                 on_wait: Callable[[Holder | None], None] | None = None) -> Iterator[FileLock]:
    """Hold a dataset's lock for the block: at once or :class:`LockBusy` (exit 2 from a command) naming the
    holder, or with ``wait=True`` once it is free. ``dset generate``'s one lock per dataset."""
    lock = dataset(data_dir, dataset_id, job_id=job_id)
    lock.acquire(wait=wait, what=f"dataset {dataset_id}", advice=advice, on_wait=on_wait)
    try:
        yield lock
    finally:
        lock.release()
