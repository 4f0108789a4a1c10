"""The event log on real files and real processes: torn tails at every byte, corruption, big replays, two
writer processes, kill -9. (What every configuration of the log must do is in test_log_contract.py.)"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
import types
import typing
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest

import dsetlog.store.scan as scan_module
from dsetlog.store.errors import CorruptLogError
from dsetlog.store.events import (
    EVENT_TYPES,
    EntryEdited,
    EntryGenerated,
    Event,
    QuestionQueued,
    TornTailSetAside,
    Usage,
)
from dsetlog.store.log import LOG_NAME, EventLog
from dsetlog.store.repair import repair
from dsetlog.store.scan import read_batches, read_records, seek_seq
from dsetlog.store.verify import verify

WRITER = Path(__file__).with_name("log_writer.py")


# --- building sample events generically, so a new event type is covered without touching this file ---------


def sample(tp: Any, name: str, depth: int = 0) -> Any:
    """A non-default value of type ``tp`` for field ``name`` (recursive types stop after two levels)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return sample(next(a for a in args if a is not type(None)), name, depth)
    if tp is Any:
        return {"nested": [1, "two", None], "flag": True}
    if tp is str:
        return f"{name} value: ünïcode \"quoted\"\nsecond line"
    if tp is bool:
        return True
    if tp is int:
        return 7
    if tp is float:
        return 2.5
    if origin in (list, tuple):
        item = args[0] if args else str
        return origin([sample(item, name, depth), sample(item, name + "2", depth)])
    if origin is dict or tp is dict:
        value = args[1] if args else Any
        return {"k1": sample(value, name, depth), "k2": sample(value, name, depth)}
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return build(tp, everything=depth < 2, depth=depth + 1)
    raise AssertionError(f"no sample for {name}: {tp!r}; teach sample() this type")


def build(cls: type[msgspec.Struct], *, everything: bool, depth: int = 0) -> Any:
    """An instance with every required field set (and, with ``everything``, every optional one too)."""
    values = {
        f.name: sample(f.type, f.name, depth)
        for f in msgspec.structs.fields(cls)
        if everything or f.required
    }
    return cls(**values)


def qq(i: int, tag: str = "t") -> QuestionQueued:
    return QuestionQueued(dataset_id="ds", item_id=f"{tag}-{i}", question=f"question {i}?", row=i)


def entry(i: int) -> EntryGenerated:
    return EntryGenerated(
        dataset_id="ds", item_id=f"item-{i}", entry_id=f"entry-{i}", question=f"What is {i}?",
        answer="An answer of a realistic length, long enough that a torn write can cut it anywhere. " * 2,
        model="sim", usage=Usage(prompt_tokens=12, completion_tokens=40),
    )


def make_log(directory: Path, events: list[Event]) -> Path:
    with EventLog.in_dir(directory) as log:
        log.append_many(events)
    return directory / LOG_NAME


def raw_line(seq: int, event_json: bytes, ts: str = "2026-01-01T00:00:00.000000Z", extra: bytes = b"") -> bytes:
    return b'{"seq":%d,"ts":"%s","crc":%d%s,"event":%s}\n' % (seq, ts.encode(), zlib.crc32(event_json), extra, event_json)


def seqs_of(path: Path) -> list[int]:
    return [rec.seq for rec in read_records(path)]


# --- round trips ------------------------------------------------------------------------------------------


def test_each_event_type_carries_its_tag_and_names_its_ids() -> None:
    """(Their round trip through the log is in test_log_contract.py, on every configuration.)"""
    for cls in EVENT_TYPES:  # each type carries its tag, and ids() finds the ids it names
        full = build(cls, everything=True)
        assert msgspec.json.decode(msgspec.json.encode(full))["type"] == cls.__name__
        id_fields = [f for f in cls.__struct_fields__ if f.endswith("_id") or f.endswith("_ids")]
        for f in id_fields:
            value = getattr(full, f)
            for v in value if isinstance(value, list) else [value]:
                assert v in full.ids()


def test_unknown_extra_fields_are_tolerated(tmp_path: Path) -> None:
    newer = b'{"type":"EntryEdited","dataset_id":"d","entry_id":"e","answer":"x","added_in_v9":{"a":[1,2]}}'
    path = tmp_path / LOG_NAME
    path.write_bytes(raw_line(1, newer) + raw_line(2, b'{"type":"EntryEdited","dataset_id":"d","entry_id":"f"}',
                                                   extra=b',"envelope_v":2'))
    assert [r.event for r in read_records(path)] == [
        EntryEdited(dataset_id="d", entry_id="e", answer="x"), EntryEdited(dataset_id="d", entry_id="f"),
    ]
    with EventLog(path) as log:
        assert log.last_seq == 2
    assert verify(path).ok


# --- torn tails -------------------------------------------------------------------------------------------


def check_recovers(directory: Path, good: bytes, tail: bytes, n_good: int) -> None:
    """A log of ``good`` (n_good records) plus ``tail``: opening cuts exactly the tail, and appending goes on.

    A tail of whole lines (newline-terminated) failing their checksum is reported: a TornTailSetAside record
    follows the good ones."""
    directory.mkdir()
    path = directory / LOG_NAME
    path.write_bytes(good + tail)
    torn = directory / (LOG_NAME + ".torn")
    loud = int(tail.endswith(b"\n"))
    with EventLog(path) as log:
        assert log.last_seq == n_good + loud
        assert path.read_bytes().startswith(good)
        if tail:
            assert torn.read_bytes() == tail
        else:
            assert not torn.exists()
        assert log.append(qq(999, "after")) == n_good + loud + 1
    records = [r for r in read_records(path)]
    assert [r.seq for r in records] == list(range(1, n_good + loud + 2))
    assert records[-1].event == qq(999, "after")
    if loud:
        assert records[n_good].event == TornTailSetAside(bytes=len(tail), lines=tail.count(b"\n"),
                                                         torn_file=torn.name, offset=len(good))
    report = verify(path)
    assert report.ok, report


def test_torn_tail_at_every_byte_of_the_last_record(tmp_path: Path) -> None:
    full = make_log(tmp_path / "src", [entry(i) for i in range(3)]).read_bytes()
    lines = full.splitlines(keepends=True)
    good, last = b"".join(lines[:-1]), lines[-1]
    assert 250 < len(last) < 450
    for k in range(len(last)):  # includes k == len - 1: the whole line but its newline
        check_recovers(tmp_path / f"cut{k}", good, last[:k], 2)
    check_recovers(tmp_path / "no-newline", good, last.rstrip(b"\n"), 2)


def test_any_flipped_bit_in_the_last_event_is_a_torn_tail(tmp_path: Path) -> None:
    full = make_log(tmp_path / "src", [entry(i) for i in range(3)]).read_bytes()
    lines = full.splitlines(keepends=True)
    good, last = b"".join(lines[:-1]), lines[-1]
    body_start = last.index(b',"event":') + len(b',"event":')
    for i in range(body_start, len(last) - 2, 3):  # every third byte of the event: crc32 catches any one flip
        flipped = bytearray(last)
        flipped[i] ^= 0x01
        check_recovers(tmp_path / f"flip{i}", good, bytes(flipped), 2)


@pytest.mark.parametrize(
    "kind",
    ["zeros", "garbage", "garbage-lines", "plausible"],
)
def test_zeros_or_garbage_after_a_good_log(tmp_path: Path, kind: str) -> None:
    good = make_log(tmp_path / "src", [entry(i) for i in range(5)]).read_bytes()
    rng = random.Random(kind)
    tail = {
        "zeros": b"\0" * 4096,
        "garbage": rng.randbytes(3000),
        "garbage-lines": b"\n".join(rng.randbytes(rng.randrange(0, 80)) for _ in range(60)) + b"\n",
        "plausible": raw_line(6, b'{"type":"EntryEdited","dataset_id":"d","entry_id":"e"}').replace(b'"e"}', b'"f"}')
        + b'{"seq":7,"ts":"2026',
    }[kind]
    check_recovers(tmp_path / "log", good, tail, 5)


# --- corruption in the middle --------------------------------------------------------------------------------


def test_corrupt_middle_line_is_refused_then_repaired(tmp_path: Path) -> None:
    events = [entry(i) for i in range(10)]
    path = make_log(tmp_path, events)
    lines = path.read_bytes().splitlines(keepends=True)
    bad = bytearray(lines[2])
    bad[bad.index(b"realistic")] ^= 0x20  # r -> R: still JSON, checksum wrong
    lines[2] = bytes(bad)
    path.write_bytes(b"".join(lines))
    before = path.read_bytes()

    with pytest.raises(CorruptLogError) as exc:
        list(read_records(path))
    assert "line 3" in str(exc.value) and "dset log repair" in str(exc.value)
    with EventLog(path) as log, pytest.raises(CorruptLogError, match="line 3"):
        list(log.read())

    report = verify(path)
    assert not report.ok and report.bad[0].line == 3 and "checksum" in report.bad[0].reason
    assert path.read_bytes() == before  # verify changes nothing

    fixed = repair(path)
    assert fixed.changed and fixed.rejected_count == 1 and fixed.renumbered == 7
    assert Path(fixed.backup).read_bytes() == before
    assert bytes(bad) in Path(fixed.rejected_file).read_bytes()
    assert b"line 3" in Path(fixed.rejected_file).read_bytes()
    assert verify(path).ok
    records = [r for r in read_records(path)]
    assert [r.seq for r in records] == list(range(1, 10))
    assert [r.event for r in records] == events[:2] + events[3:]
    old_ts = [msgspec.json.decode(line)["ts"] for i, line in enumerate(lines) if i != 2]
    assert [r.ts for r in records] == old_ts

    assert repair(path).changed is False  # a second repair finds nothing to do and makes no backup
    assert len(list(tmp_path.glob(LOG_NAME + ".bak-*"))) == 1


def test_writer_open_during_repair_appends_to_the_repaired_log(tmp_path: Path) -> None:
    path = make_log(tmp_path, [entry(i) for i in range(6)])
    with EventLog(path) as long_lived:
        lines = path.read_bytes().splitlines(keepends=True)
        lines[1] = b"this line was overwritten by something\n"
        path.write_bytes(b"".join(lines))
        assert repair(path).records == 5
        assert long_lived.append(qq(1)) == 6  # not 7, and not into the replaced file
    assert seqs_of(path) == list(range(1, 7))
    assert verify(path).ok


# --- replay from a seq ----------------------------------------------------------------------------------


def test_a_replay_from_a_seq_seeks_to_it(tmp_path: Path) -> None:
    events: list[Event] = [entry(i) if i % 3 else qq(i) for i in range(3000)]  # lines of two lengths
    path = make_log(tmp_path, events)
    data = path.read_bytes()
    ends = list(itertools.accumulate(len(line) for line in data.splitlines(keepends=True)))
    with EventLog(path) as log:
        for after in (0, 1, 2, 999, 1000, 1777, 2999, 3000, 5000):
            assert [r.seq for r in log.read(after=after)] == list(range(after + 1, 3001)), after
            if 0 < after <= 3000:
                assert seek_seq(path, after) == (ends[after - 1], after)
    assert seek_seq(path, 5000) == (len(data), 3000)

    # reading from seq 2000 reads nothing before it: a bad line early on does not stop it (a full read says so)
    lines = data.splitlines(keepends=True)
    bad = bytearray(lines[9])
    bad[bad.index(b"question")] ^= 0x20
    path.write_bytes(b"".join(lines[:9]) + bytes(bad) + b"".join(lines[10:]) + b'{"seq":3001,"ts":"20')
    with EventLog(path) as log:  # opening cuts the torn tail
        assert [r.seq for r in log.read(after=2000)] == list(range(2001, 3001))
        assert seek_seq(path, 5000) == (len(data), 3000)
        with pytest.raises(CorruptLogError, match="line 10"):
            list(log.read())
        with pytest.raises(CorruptLogError, match="line 10"):  # a bad line where the search lands: from the start
            list(log.read(after=10))


# --- big replays: the checksums checked by a worker process on another core ------------------------------


@pytest.fixture
def small_replays(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Make a few hundred records a "big" replay; returns the checkers started (None: none could be)."""
    monkeypatch.setattr(scan_module, "PARALLEL_CHECK_BYTES", 4096)
    monkeypatch.setattr(scan_module, "_CHECK_HEAD", 1024)
    monkeypatch.setattr(scan_module, "_READ_CHUNK", 2048)
    started: list[Any] = []
    real_start = scan_module._Checker.start.__func__

    def start(cls: Any, *args: Any) -> Any:
        checker = real_start(cls, *args)
        started.append(checker)
        return checker

    monkeypatch.setattr(scan_module._Checker, "start", classmethod(start))
    return started


def corrupt_line(path: Path, number: int) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    bad = bytearray(lines[number - 1])
    bad[bad.index(b"realistic")] ^= 0x20  # still JSON, still the same event type: only the checksum tells
    lines[number - 1] = bytes(bad)
    path.write_bytes(b"".join(lines))


def read_until_error(path: Path) -> tuple[list[int], CorruptLogError | None]:
    seen: list[int] = []
    try:
        for recs, _ in read_batches(path):
            seen += [r.seq for r in recs]
    except CorruptLogError as exc:
        return seen, exc
    return seen, None


@pytest.mark.skipif(scan_module.usable_cpus() < 2, reason="the worker is only used with two cores")
def test_a_big_replay_has_its_checksums_checked_by_a_worker(tmp_path: Path, small_replays: list[Any]) -> None:
    path = make_log(tmp_path, [entry(i) for i in range(400)])
    clean, error = read_until_error(path)
    assert error is None and clean == list(range(1, 401))
    assert len(small_replays) == 1 and small_replays[0] is not None
    assert small_replays[0].checked == path.stat().st_size  # the worker passed every line after the head

    corrupt_line(path, 300)
    seen, error = read_until_error(path)
    assert error is not None and error.line == 300 and "checksum" in error.reason
    assert seen and max(seen) < 300  # nothing at or after the bad line was handed out
    assert small_replays[1].proc.returncode is not None  # reaped, not left running


def test_one_record_a_line_is_checked_too(tmp_path: Path, small_replays: list[Any]) -> None:
    """Two records run together on one line, or an empty line: valid JSON, but not the log's layout."""
    path = make_log(tmp_path, [entry(i) for i in range(400)])
    lines = path.read_bytes().splitlines(keepends=True)
    joined = lines[:249] + [lines[249].rstrip(b"\n") + lines[250]] + lines[251:]
    path.write_bytes(b"".join(joined))
    _, error = read_until_error(path)
    assert error is not None and error.line == 250

    path.write_bytes(b"".join(lines[:320] + [b"\n"] + lines[320:]))
    _, error = read_until_error(path)
    assert error is not None and error.line == 321 and "empty line" in error.reason


def test_a_killed_worker_leaves_the_checking_to_the_reader(tmp_path: Path, small_replays: list[Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real_start = scan_module._Checker.start

    def start_and_kill(*args: Any) -> Any:
        checker = real_start(*args)
        if checker is not None:
            checker.proc.kill()
            checker.proc.wait()
        return checker

    monkeypatch.setattr(scan_module._Checker, "start", start_and_kill)
    path = make_log(tmp_path, [entry(i) for i in range(400)])
    assert read_until_error(path) == (list(range(1, 401)), None)
    corrupt_line(path, 350)
    seen, error = read_until_error(path)
    assert error is not None and error.line == 350 and max(seen) < 350


def test_read_batches_stops_after_until_seq_at_its_exact_end(tmp_path: Path, small_replays: list[Any]) -> None:
    path = make_log(tmp_path, [entry(i) for i in range(400)])
    ends = list(itertools.accumulate(len(line) for line in path.read_bytes().splitlines(keepends=True)))
    for until in (1, 7, 123, 400, 500):
        batches = list(read_batches(path, until_seq=until))
        seqs = [r.seq for recs, _ in batches for r in recs]
        assert seqs == list(range(1, min(until, 400) + 1))
        assert batches[-1][1] == ends[min(until, 400) - 1]
    # and from the middle: offset and seq of record 100
    rest = [r.seq for recs, _ in read_batches(path, offset=ends[99], seq=100) for r in recs]
    assert rest == list(range(101, 401))


# --- concurrency ----------------------------------------------------------------------------------------------


def read_tagged(path: Path) -> list[tuple[int, str]]:
    return [(rec.seq, rec.event.item_id) for rec in read_records(path)]


def test_two_processes_append_at_once(tmp_path: Path) -> None:
    path = tmp_path / LOG_NAME
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, str(WRITER), "mixed", str(path), tag, "5000", tag, str(go)],
                         stdout=subprocess.PIPE, text=True)
        for tag in ("A", "B")
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    go.touch()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]

    raw = path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 10_000
    tagged = read_tagged(path)
    assert [s for s, _ in tagged] == list(range(1, 10_001))
    items = [item for _, item in tagged]
    assert sorted(items) == sorted(f"{t}-{i}" for t in "AB" for i in range(5000))
    for tag in "AB":  # each writer's own events keep their order
        own = [int(item.split("-")[1]) for item in items if item.startswith(tag)]
        assert own == list(range(5000))
    by_seq = dict(tagged)
    for out in outputs:  # what each writer was told matches what is in the log
        for line in out.splitlines():
            first, last, tag, c0 = line.split()
            for k, seq in enumerate(range(int(first), int(last) + 1)):
                assert by_seq[seq] == f"{tag}-{int(c0) + k}"
    # both really ran at once: their batches interleave
    assert sum(1 for a, b in itertools.pairwise(items) if a[0] != b[0]) > 10
    assert verify(path).ok


# --- kill -9 ----------------------------------------------------------------------------------------------------


def test_kill_9_never_loses_an_acknowledged_append(tmp_path: Path) -> None:
    path = tmp_path / LOG_NAME
    rng = random.Random(1234)
    everything: dict[int, str] = {}  # seq -> item_id, for every append a writer reported done
    for run in range(24):
        proc = subprocess.Popen([sys.executable, str(WRITER), "loop", str(path), f"run{run}"],
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0, 0.2))
        os.kill(proc.pid, signal.SIGKILL)
        out = proc.stdout.read()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        acknowledged: dict[int, str] = {}
        for line in out.split(b"\n")[:-1]:  # only whole lines were promises
            first, last, tag, c0 = line.decode().split()
            for k, seq in enumerate(range(int(first), int(last) + 1)):
                acknowledged[seq] = f"{tag}-{int(c0) + k}"
        with EventLog(path) as log:  # reopening cuts whatever the kill left half-written
            present = {rec.seq: rec.event.item_id for rec in log.read(after=min(acknowledged, default=1) - 1)}
            assert log.last_seq >= max(acknowledged, default=0)
        missing = [s for s, item in acknowledged.items() if present.get(s) != item]
        assert not missing, f"run {run}: acknowledged seqs lost or wrong: {missing[:10]}"
        report = verify(path)
        assert report.ok, report
        everything.update(acknowledged)
    final = {rec.seq: rec.event.item_id for rec in read_records(path)}
    assert list(final) == list(range(1, len(final) + 1))
    assert all(final.get(s) == item for s, item in everything.items())
