"""The EventLog contract, one set of tests run against each configuration a user meets.

:class:`EventLogContract` holds the tests (the eventsourcing library's habit: one recorder test-case that
every backend reuses); it is not collected itself. Each ``Test*`` subclass says where the data dir is and
how the log is held while a test runs:

* :class:`TestLocalDiskKeptOpen`: a data dir on the local disk, one EventLog kept open throughout (the API
  server, a generation run);
* :class:`TestLocalDiskFreshPerOperation`: every operation opens a new EventLog and closes it (one CLI
  command after another: ``dset ingest``, ``dset log``...);
* :class:`TestTmpfsKeptOpen`: a data dir on a real tmpfs (``/dev/shm``: containers and CI runners often
  put their scratch space there), skipped where there is none;
* :class:`TestLocalDiskBesideAnotherProcess`: a log kept open while a second process holds its own
  EventLog on the same file and appends between the test's steps (a CLI run beside the server).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_log import build, entry, qq, raw_line

from dsetlog.errors import Kind
from dsetlog.store import limits
from dsetlog.store.events import EVENT_TYPES, EntryGenerated, Event, TornTailSetAside, Usage
from dsetlog.store.limits import RecordLimitError
from dsetlog.store.log import LOG_NAME, EventLog, records_at
from dsetlog.store.scan import read_seqs, seek_seq
from dsetlog.store.verify import verify

WRITER = Path(__file__).with_name("log_writer.py")


class EventLogContract:
    """What every EventLog must do, wherever its data dir is and however long it is held open."""

    __test__ = False  # the subclasses below are the test-cases; this is their common body

    @pytest.fixture
    def data_dir(self, tmp_path: Path) -> Iterator[Path]:
        """The data dir the log lives in (subclasses put it elsewhere)."""
        yield tmp_path / "data"

    @contextmanager
    def log(self, data_dir: Path) -> Iterator[EventLog]:
        """The EventLog a step of a test uses: this configuration's way of holding it."""
        with EventLog.in_dir(data_dir) as log:
            yield log

    def after_step(self, data_dir: Path) -> None:
        """Called between steps: what happens around the log meanwhile (nothing, unless a subclass says so)."""

    def append(self, data_dir: Path, *events: Event) -> range:
        with self.log(data_dir) as log:
            seqs = log.append_many(events)
        self.after_step(data_dir)
        return seqs

    def read_all(self, data_dir: Path) -> list[Any]:
        with self.log(data_dir) as log:
            return list(log.read())

    # -- appending ---------------------------------------------------------------------------------------------

    def test_appends_get_gap_free_seqs(self, data_dir: Path) -> None:
        first = self.append(data_dir, qq(0))
        base = first.start - 1  # a configuration may have appended before: seqs go on from there
        assert first == range(base + 1, base + 2)
        with self.log(data_dir) as log:
            assert log.append(qq(1)) == log.last_seq
            single = log.last_seq
            many = log.append_many(qq(i) for i in range(2, 5))
            assert many == range(single + 1, single + 4) and log.last_seq == many.stop - 1
            assert log.append_many([]) == range(log.last_seq + 1, log.last_seq + 1)  # nothing, nowhere
        records = self.read_all(data_dir)
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        mine = [r.event.item_id for r in records if r.event.dataset_id == "ds"]
        assert mine == [f"t-{i}" for i in range(5)]
        assert all(r.ts.endswith("Z") for r in records)

    def test_every_event_type_round_trips(self, data_dir: Path) -> None:
        assert len(EVENT_TYPES) >= 10
        events = [build(cls, everything=e) for cls in EVENT_TYPES for e in (False, True)]
        seqs = self.append(data_dir, *events)
        with self.log(data_dir) as log:
            back = [r for r in log.read(after=seqs.start - 1)][: len(events)]
        assert [r.event for r in back] == events
        assert [r.seq for r in back] == list(seqs)

    def test_old_lines_decode_with_defaults(self, data_dir: Path) -> None:
        old = b'{"type":"EntryGenerated","dataset_id":"d","item_id":"i","entry_id":"e","question":"q","answer":"a"}'
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / LOG_NAME).write_bytes(raw_line(1, old))
        with self.log(data_dir) as log:
            assert log.append(qq(1)) == 2
            (rec, _) = list(log.read())
        ev = rec.event
        assert isinstance(ev, EntryGenerated)
        assert (ev.answer, ev.usage, ev.quality_score, ev.quality, ev.attempt) == ("a", Usage(), None, {}, 1)
        assert verify(data_dir / LOG_NAME).ok

    def test_a_record_over_the_limits_is_refused_whole(self, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.append(data_dir, qq(0))
        size = (data_dir / LOG_NAME).stat().st_size
        monkeypatch.setattr(limits, "MAX_RECORD_BYTES", 250)  # in this process: a neighbour keeps its own limit
        with self.log(data_dir) as log, pytest.raises(RecordLimitError, match="over the log's limit of 250") as caught:
            log.append_many([qq(1), entry(2)])  # a big EntryGenerated: the batch fails, its small event too
        assert caught.value.kind is Kind.INVALID  # the API's 422, the CLI's usage error
        assert (data_dir / LOG_NAME).stat().st_size == size
        self.append(data_dir, qq(3))
        records = self.read_all(data_dir)
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        assert [r.event.item_id for r in records if r.event.dataset_id == "ds"] == ["t-0", "t-3"]

    # -- reading -----------------------------------------------------------------------------------------------

    def test_read_after_a_seq_and_records_at_seqs(self, data_dir: Path) -> None:
        self.append(data_dir, *[entry(i) if i % 3 else qq(i) for i in range(600)])  # lines of two lengths
        path = data_dir / LOG_NAME
        last = len(self.read_all(data_dir))
        ends = [0]
        for line in path.read_bytes().splitlines(keepends=True):
            ends.append(ends[-1] + len(line))
        with self.log(data_dir) as log:
            for after in (0, 1, 2, 299, last - 1, last, last + 50):
                assert [r.seq for r in log.read(after=after)] == list(range(after + 1, last + 1)), after
                assert seek_seq(path, after) == (ends[min(after, last)], min(after, last))
        wanted = [last, 1, 7, 7, 300, last + 5, 0]
        assert [r.seq for r in records_at(data_dir, wanted)] == [1, 7, 300, last]
        assert records_at(data_dir, wanted) == read_seqs(path, wanted)
        assert records_at(data_dir / "nowhere", [1]) == []

    def test_refresh_sees_another_instance(self, data_dir: Path) -> None:
        with self.log(data_dir) as log:
            mine = log.append_many(qq(i, "mine") for i in range(3))
            with EventLog.in_dir(data_dir) as other:  # another writer on the same file
                theirs = other.append_many(qq(i, "other") for i in range(5))
            assert theirs.start > mine.stop - 1
            assert log.refresh() == theirs.stop - 1 == log.last_seq
            later = list(log.read(after=mine.stop - 1))
            assert [r.event.item_id for r in later][:5] == [f"other-{i}" for i in range(5)]
            assert log.append(qq(9, "mine")) == log.last_seq > theirs.stop - 1

    def test_a_second_process_appends_between_ours(self, data_dir: Path) -> None:
        first = self.append(data_dir, qq(0, "mine"))
        subprocess.run([sys.executable, str(WRITER), "mixed", str(data_dir / LOG_NAME), "proc", "7"], check=True,
                       capture_output=True, timeout=60)
        after = self.append(data_dir, qq(1, "mine"))
        assert after.start >= first.start + 8
        records = self.read_all(data_dir)
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        assert [r.event.item_id for r in records if r.event.item_id.startswith("proc")] == [
            f"proc-{i}" for i in range(7)]

    # -- torn tails --------------------------------------------------------------------------------------------

    @pytest.mark.parametrize("tail", [b'{"seq":99,"ts":"2026', b"\0" * 512, b"garbage\n"])
    def test_a_torn_tail_is_set_aside_before_the_next_append(self, data_dir: Path, tail: bytes) -> None:
        self.append(data_dir, *[entry(i) for i in range(3)])
        path = data_dir / LOG_NAME
        with self.log(data_dir) as log:
            good = path.read_bytes()
            with open(path, "ab") as fh:  # a writer that crashed mid-write (another process)
                fh.write(tail)
            seq = log.append(qq(1, "after"))
        torn = (data_dir / (LOG_NAME + ".torn")).read_bytes()
        assert torn.endswith(tail) and path.read_bytes().startswith(good)
        records = self.read_all(data_dir)
        assert [r.seq for r in records] == list(range(1, len(records) + 1)) and records[-1].seq >= seq
        loud = tail.endswith(b"\n")  # whole lines failing their checksum are said to be more than a crash
        assert any(isinstance(r.event, TornTailSetAside) for r in records) == loud
        assert verify(path).ok

    # -- group commit --------------------------------------------------------------------------------------------

    def test_threads_appending_at_once_lose_nothing(self, data_dir: Path) -> None:
        n_threads, per_thread = 4, 150
        errors: list[BaseException] = []

        def work(t: int) -> None:
            rng = random.Random(t)
            i = 0
            try:
                while i < per_thread:
                    n = min(per_thread - i, rng.choice((1, 1, 4)))
                    self.append(data_dir, *[qq(i + k, f"th{t}") for k in range(n)])
                    i += n
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        records = self.read_all(data_dir)
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        items = [r.event.item_id for r in records if r.event.item_id.startswith("th")]
        assert sorted(items) == sorted(f"th{t}-{i}" for t in range(n_threads) for i in range(per_thread))
        for t in range(n_threads):  # each thread's own events keep their order
            own = [int(item.split("-")[1]) for item in items if item.startswith(f"th{t}-")]
            assert own == list(range(per_thread))


class TestLocalDiskKeptOpen(EventLogContract):
    __test__ = True

    @pytest.fixture(autouse=True)
    def _held(self, data_dir: Path) -> Iterator[None]:
        self._log = EventLog.in_dir(data_dir)
        yield
        self._log.close()

    @contextmanager
    def log(self, data_dir: Path) -> Iterator[EventLog]:
        yield self._log


class TestLocalDiskFreshPerOperation(EventLogContract):
    __test__ = True


def _tmpfs_dirs() -> list[Path]:
    """Writable tmpfs mounts of this machine (from /proc/mounts)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in mounts:
        parts = line.split()
        if len(parts) > 3 and parts[2] == "tmpfs" and "rw" in parts[3].split(",") and os.access(parts[1], os.W_OK):
            found.append(Path(parts[1]))
    return sorted(found, key=lambda p: (p != Path("/dev/shm"), str(p)))


class TestTmpfsKeptOpen(TestLocalDiskKeptOpen):
    __test__ = True

    @pytest.fixture
    def data_dir(self) -> Iterator[Path]:
        mounts = _tmpfs_dirs()
        if not mounts:
            pytest.skip("no writable tmpfs mount here (/dev/shm or another in /proc/mounts)")
        root = mounts[0] / f"dset-log-contract-{uuid.uuid4().hex}"
        try:
            yield root / "data"
        finally:
            shutil.rmtree(root, ignore_errors=True)


class TestLocalDiskBesideAnotherProcess(TestLocalDiskKeptOpen):
    """Another process keeps its own EventLog on the file and appends a few events after each step."""

    __test__ = True

    @pytest.fixture(autouse=True)
    def _neighbour(self, data_dir: Path, _held: None) -> Iterator[None]:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _NEIGHBOUR, str(data_dir / LOG_NAME)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None and self._proc.stdout.readline() == "ready\n"
        yield
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        assert self._proc.wait(timeout=30) == 0

    def after_step(self, data_dir: Path) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # one neighbour, spoken to from the test's own thread
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write("append\n")
        self._proc.stdin.flush()
        assert self._proc.stdout.readline() == "done\n"


# the neighbour: appends two events each time it is told to, with the EventLog it opened at the start
_NEIGHBOUR = """
import sys
from dsetlog.store.events import QuestionQueued
from dsetlog.store.log import EventLog
with EventLog(sys.argv[1]) as log:
    print("ready", flush=True)
    n = 0
    for line in sys.stdin:
        log.append_many(QuestionQueued(dataset_id="neighbour", item_id=f"nb-{n + k}", question="?", row=n + k)
                        for k in range(2))
        n += 2
        print("done", flush=True)
"""
