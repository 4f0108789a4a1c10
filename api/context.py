"""What every resource shares: the data dir, the log, the read model, the job worker, the caches.

Writes wait for the log to be known sound. Started from a snapshot, the read model checks the records the
snapshot stands for in the background (:meth:`ReadModel.wait_verified`); reads are served meanwhile, while
every write (:meth:`Context.wait_writable`, called by ``api.middleware.WriteGateMiddleware`` before any
POST, PUT, PATCH or DELETE) waits for the verdict, at most ``write_wait`` seconds. The job worker starts,
and resumes unfinished jobs, only once the log has passed. If the check (or a later catch-up) finds
corruption, every write is refused with the CorruptLogError's message and /health says so; reads go on
from the model as it stands.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import falcon

from api.entry_index import EntryCache
from api.errors import not_found
from dsetlog.jobs.worker import JobWorker
from dsetlog.store.errors import CorruptLogError, LogError
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel

_log = logging.getLogger("api")

AS_OF_MODELS = 4  # read models of the past kept for ?as_of= (each is a replay up to its seq)
WRITE_WAIT = 30.0  # seconds a write waits for the start-up check of the log before it is answered 503
# What a job's first model call imports: the openai SDK (pydantic models built in long stretches that hold the
# GIL) and its aiohttp transport, ~1.5 s of CPU. A server with a worker imports them in the background as it
# starts, so neither the first job nor a request answered meanwhile (waiting on the GIL, or on a module that
# thread is importing) pays for it at the first POST.
JOB_MODULES = ("dsetlog.llm.client", "dsetlog.llm.ratelimit", "dsetlog.engine.engine", "aiohttp")
SEARCH_CHILD_BYTES = 1 << 20  # of log behind the search index, past which a child process indexes it
SEARCH_INDEX_RETRY = 60.0  # seconds before an indexing child that failed is started again
SEARCH_INDEX_EVERY = 1.0  # seconds between looks at the log for texts the search index has not seen yet


class Context:
    def __init__(self, data_dir: str | Path, *, max_body: int, simulator_url: str | None = None,
                 start_worker: bool = True, max_jobs: int = 4, rpm: int = 0, tpm: int = 0,
                 rm: ReadModel | None = None, write_wait: float = WRITE_WAIT, search_index: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.max_body = max_body
        self.simulator_url = simulator_url
        self.write_wait = write_wait
        self.log = EventLog.in_dir(self.data_dir)
        self.rm = rm if rm is not None else ReadModel.open(self.data_dir, verify=True)
        self.entries = EntryCache()
        self._as_of: OrderedDict[int, ReadModel] = OrderedDict()
        self._as_of_lock = threading.Lock()
        self._reported: LogError | None = None  # the last corruption logged (each is logged once)
        self.worker = JobWorker(self.data_dir, self.log, simulator_url=simulator_url, max_jobs=max_jobs,
                                rpm=rpm, tpm=tpm, after_job=self._after_job, jobs_model=self.rm)
        self._start_worker = start_worker
        self._closing = False
        self._writes_ready = threading.Event()  # set once the start-up check has its verdict (and the worker runs)
        self._stop = threading.Event()
        self._indexer: threading.Thread | None = None
        if start_worker:
            threading.Thread(target=_import_job_modules, name="dset-warm-up", daemon=True).start()
        if search_index:
            self._indexer = threading.Thread(target=self._keep_search_index, name="dset-search-index", daemon=True)
            self._indexer.start()
        if self.rm.verification().state == "checking":
            threading.Thread(target=self._when_verified, name="dset-writes-ready", daemon=True).start()
        else:
            self._when_verified()

    def _when_verified(self) -> None:
        """Once the log has passed: start the job worker (resuming unfinished jobs), then let writes in."""
        try:
            self.rm.wait_verified()
        except LogError as exc:
            if not self._closing:  # (closing stops the check: no verdict, nothing to report)
                self._report(exc)
            self._writes_ready.set()  # the verdict is in: every write is refused with it
            return
        try:
            if self._start_worker and not self._closing:
                with self.rm.lock:
                    unfinished = [j.id for j in self.rm.jobs.unfinished()]
                if self.worker.start(resume=unfinished) and unfinished:
                    _log.info("resuming %d unfinished job(s): %s", len(unfinished), ", ".join(unfinished))
        finally:
            self._writes_ready.set()

    def wait_writable(self, timeout: float | None = None) -> None:
        """Return when a write may be made: once the log is known sound (waiting at most ``timeout`` seconds,
        ``write_wait`` by default). Raises ``TimeoutError`` while it is still being checked, and the
        :class:`~dsetlog.store.log.CorruptLogError` found when it is corrupt."""
        if not self._writes_ready.wait(self.write_wait if timeout is None else timeout):
            self.rm.wait_verified(0)  # raises TimeoutError saying how far the check is
            self._writes_ready.wait(5)  # it just finished: the worker is starting
        problem = self.rm.problem
        if problem is not None:
            self._report(problem)
            raise problem

    def _report(self, problem: LogError) -> None:
        if problem is not self._reported:
            self._reported = problem
            _log.error("writes are refused: %s", problem)

    def model(self, as_of: int | None = None) -> ReadModel:
        """The read model, caught up; with ``as_of``: the projections as they were at that seq."""
        rm = self.rm
        try:
            rm.catch_up()
        except CorruptLogError as exc:  # writes are refused from now on; reads go on from the model as it stands
            self._report(exc)
        if as_of is None or as_of >= rm.seq:
            if as_of is not None and as_of > rm.seq:
                # the state at a seq the log has not reached is not there (yet): 404, like any resource not found
                raise not_found(f"as_of {as_of} is past the end of the log (its last seq is {rm.seq})")
            return rm
        with self._as_of_lock:
            past = self._as_of.get(as_of)
            if past is None:
                try:
                    past = rm.as_of(as_of)
                except CorruptLogError as exc:
                    raise falcon.HTTPServiceUnavailable(title="Service Unavailable", description=str(exc)) from None
                self._as_of[as_of] = past
                while len(self._as_of) > AS_OF_MODELS:
                    self._as_of.popitem(last=False)
            else:
                self._as_of.move_to_end(as_of)
            return past

    def _keep_search_index(self) -> None:
        """Keep the search index up with the log (projections.search), so a search seldom has texts to read that
        the index does not reach: at start-up it indexes the log it has not seen. More than SEARCH_CHILD_BYTES of
        it is indexed in a child process at a lower priority (``python -m projections.search``): its tokenizing
        then holds that interpreter's GIL, and this one's stays with the requests (pages kept their speed beside
        it); a shorter tail is indexed here."""
        index = self.rm.search_index()
        wait = SEARCH_INDEX_EVERY
        while not self._stop.wait(wait) and not index.off:  # off: no index here (read-only, full)
            wait = SEARCH_INDEX_EVERY
            behind = self.rm.offset - index.reach()
            if behind <= 0:
                continue
            if behind <= SEARCH_CHILD_BYTES:  # a short tail (what a job or an edit adds): here, at once
                index.catch_up()
                continue
            failed = self._index_in_child()
            if failed:
                _log.warning("the search index could not be brought up (searches read the texts meanwhile; tried "
                             "again in %.0f s): %s", SEARCH_INDEX_RETRY, failed)
                wait = SEARCH_INDEX_RETRY

    def _index_in_child(self) -> str | None:
        """Run the indexing child to its end (or to the server's stop); what went wrong, or None."""
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)  # where this checkout's packages are
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "projections.search", str(self.data_dir),
                                     str(self.log.path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env=env, text=True)
        except OSError as exc:
            return f"cannot start python -m projections.search: {exc}"
        _log.info("search index: indexing the log in process %d", proc.pid)
        while True:
            try:
                _, err = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if self._stop.is_set():
                    proc.terminate()
                    proc.communicate(timeout=30)
                    return None
        return None if proc.returncode == 0 else f"exit {proc.returncode}: {err.strip()[-2000:]}"

    def _after_job(self) -> None:
        """A job added many records: keep the start-up snapshot recent (a kill -9 then replays little)."""
        self.rm.catch_up()
        if self.rm.maybe_save_snapshot():
            _log.info("read model snapshot saved at seq %d", self.rm.seq)

    def close(self, *, save_snapshot: bool = False) -> None:
        self._closing = True
        self._stop.set()
        if self._indexer is not None:
            self._indexer.join(30)
        self.rm.stop_check()
        self._writes_ready.wait(5)  # a worker starting as the check ends is started, and stopped next
        self.worker.stop()
        if save_snapshot:
            try:
                self.rm.catch_up()
                if self.rm.maybe_save_snapshot(min_new_records=1):
                    _log.info("read model snapshot saved at seq %d", self.rm.seq)
            except (OSError, LogError) as exc:
                _log.warning("could not save the read model snapshot: %s", exc)
        self.rm.search_index().close()
        self.log.close()


def _import_job_modules() -> None:
    for name in JOB_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # the job that needs it reports it; a warm-up never stops a server
            _log.warning("warming up: cannot import %s: %s", name, exc)
