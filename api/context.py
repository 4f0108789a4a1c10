"""What every resource shares: the data dir, the log, the read model, the job worker, the caches."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

from api.entries import EntryCache
from api.errors import bad_request
from dsetlog.jobs import JobWorker
from dsetlog.log import EventLog
from projections.readmodel import ReadModel

_log = logging.getLogger("api")

AS_OF_MODELS = 4  # read models of the past kept for ?as_of= (each is a replay up to its seq)


class Context:
    def __init__(self, data_dir: str | Path, *, max_body: int, simulator_url: str | None = None,
                 start_worker: bool = True, max_jobs: int = 4, rpm: int = 0, tpm: int = 0,
                 rm: ReadModel | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.max_body = max_body
        self.simulator_url = simulator_url
        self.log = EventLog.in_dir(self.data_dir)
        self.rm = rm if rm is not None else ReadModel.open(self.data_dir)
        self.entries = EntryCache()
        self._as_of: OrderedDict[int, ReadModel] = OrderedDict()
        self._as_of_lock = threading.Lock()
        self.worker = JobWorker(self.data_dir, self.log, simulator_url=simulator_url, max_jobs=max_jobs,
                                rpm=rpm, tpm=tpm, after_job=self._after_job, jobs_model=self.rm)
        if start_worker:
            with self.rm.lock:
                unfinished = [j.id for j in self.rm.jobs.unfinished()]
            if self.worker.start(resume=unfinished) and unfinished:
                _log.info("resuming %d unfinished job(s): %s", len(unfinished), ", ".join(unfinished))

    def model(self, as_of: int | None = None) -> ReadModel:
        """The read model, caught up; with ``as_of``: the projections as they were at that seq."""
        rm = self.rm
        rm.catch_up()
        if as_of is None or as_of >= rm.seq:
            if as_of is not None and as_of > rm.seq:
                raise bad_request(f"as_of {as_of} is past the end of the log (its last seq is {rm.seq})")
            return rm
        with self._as_of_lock:
            past = self._as_of.get(as_of)
            if past is None:
                past = rm.as_of(as_of)
                self._as_of[as_of] = past
                while len(self._as_of) > AS_OF_MODELS:
                    self._as_of.popitem(last=False)
            else:
                self._as_of.move_to_end(as_of)
            return past

    def _after_job(self) -> None:
        """A job added many records: keep the start-up snapshot recent (a kill -9 then replays little)."""
        self.rm.catch_up()
        if self.rm.maybe_save_snapshot():
            _log.info("read model snapshot saved at seq %d", self.rm.seq)

    def close(self, *, save_snapshot: bool = False) -> None:
        self.worker.stop()
        if save_snapshot:
            try:
                self.rm.catch_up()
                if self.rm.maybe_save_snapshot(min_new_records=1):
                    _log.info("read model snapshot saved at seq %d", self.rm.seq)
            except OSError as exc:
                _log.warning("could not save the read model snapshot: %s", exc)
        self.log.close()
