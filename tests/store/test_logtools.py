"""`dset log verify | repair | stats | history` through the real command line, plus repair's edge cases."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from dsetlog.store.contents import history, stats
from dsetlog.store.events import (
    AttemptFailed,
    AttemptStarted,
    DatasetCreated,
    EntryEdited,
    EntryGenerated,
    Event,
    FeedbackGiven,
    QuestionQueued,
    RegenerationRequested,
    RunFinished,
    RunStarted,
)
from dsetlog.store.log import LOG_NAME, EventLog
from dsetlog.store.repair import repair
from dsetlog.store.scan import read_records
from dsetlog.store.verify import verify

LONG_ANSWER = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. " * 6


def sample_events() -> list[Event]:
    events: list[Event] = [
        DatasetCreated(dataset_id="ds1", name="biology"),
        RunStarted(run_id="r1", dataset_id="ds1", command="generate", model="sim"),
    ]
    for i in (1, 2, 3):
        events.append(QuestionQueued(dataset_id="ds1", item_id=f"i{i}", question=f"Question {i}?", row=i))
    events.append(AttemptStarted(dataset_id="ds1", item_id="i1", attempt=1, run_id="r1"))
    events.append(AttemptFailed(dataset_id="ds1", item_id="i1", attempt=1, reason="429", status_code=429))
    for i in (1, 2, 3):
        events.append(EntryGenerated(dataset_id="ds1", item_id=f"i{i}", entry_id=f"e{i}", question=f"Question {i}?",
                                     answer=LONG_ANSWER, model="sim", run_id="r1"))
    events += [
        EntryEdited(dataset_id="ds1", entry_id="e2", answer="A shorter, edited answer."),
        FeedbackGiven(dataset_id="ds1", entry_ids=["e2", "e3"], feedback_type="rating", rating=2),
        RegenerationRequested(dataset_id="ds1", entry_ids=["e2"], job_id="job-9"),
        RunFinished(run_id="r1", dataset_id="ds1", outcome="completed", answered=3),
    ]
    return events


@pytest.fixture
def data(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    with EventLog.in_dir(directory) as log:
        log.append_many(sample_events()[:5])
        for event in sample_events()[5:]:
            log.append(event)
    return directory


def dset(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "dsetlog.cli.main", "log", *args, "--data", str(data)],
        capture_output=True, text=True, timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def corrupt_line(path: Path, number: int) -> bytes:
    """Flip one byte in an event's text (still JSON, checksum wrong); returns the bad line."""
    lines = path.read_bytes().splitlines(keepends=True)
    line = bytearray(lines[number - 1])
    at = line.index(b'"dataset_id":"ds1"') + len(b'"dataset_id":"d')
    line[at] ^= 0x01
    lines[number - 1] = bytes(line)
    path.write_bytes(b"".join(lines))
    return bytes(line).rstrip(b"\n")


def test_verify_ok(data: Path) -> None:
    n = len(sample_events())
    size = (data / LOG_NAME).stat().st_size
    result = dset("verify", data=data)
    assert result.returncode == 0
    assert result.stdout.strip() == f"ok: {n} records, last seq {n}, {size} bytes"


def test_verify_names_the_first_corrupt_line(data: Path) -> None:
    corrupt_line(data / LOG_NAME, 4)
    corrupt_line(data / LOG_NAME, 9)
    before = (data / LOG_NAME).read_bytes()
    result = dset("verify", data=data)
    assert result.returncode == 1
    assert re.search(r"\bline 4\b.*checksum", result.stdout)
    assert "line 9" in result.stdout  # the others are listed too
    assert f"dset log repair --data {data}" in result.stdout
    assert (data / LOG_NAME).read_bytes() == before
    as_json = json.loads(dset("verify", "--json", data=data).stdout)
    assert [b["line"] for b in as_json["bad"]] == [4, 9]


def test_verify_reports_a_torn_tail_and_opening_cuts_it(data: Path) -> None:
    path = data / LOG_NAME
    with path.open("ab") as fh:
        fh.write(b'{"seq":15,"ts":"2026-01-0')
    result = dset("verify", data=data)
    assert result.returncode == 1
    assert "torn tail" in result.stdout and "25 bytes" in result.stdout and ".torn" in result.stdout
    EventLog(path).close()
    assert dset("verify", data=data).returncode == 0
    assert (data / (LOG_NAME + ".torn")).read_bytes() == b'{"seq":15,"ts":"2026-01-0'


def test_verify_does_not_create_or_change_anything(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    lines = [
        b'{"seq":%d,"ts":"2026-01-01T00:00:00.000000Z","crc":%d,"event":%s}\n' % (i, zlib.crc32(body), body)
        for i, body in enumerate([msgspec.json.encode(e) for e in sample_events()[:3]], start=1)
    ]
    (data / LOG_NAME).write_bytes(b"".join(lines))
    result = dset("verify", data=data)
    assert result.returncode == 0, result.stdout
    assert sorted(p.name for p in data.iterdir()) == [LOG_NAME]  # not even a lock file


def test_repair_keeps_a_backup_then_verifies(data: Path) -> None:
    path = data / LOG_NAME
    bad = corrupt_line(path, 3)
    before = path.read_bytes()
    (data / "snapshots").mkdir()
    (data / "snapshots" / "readmodel-12.bin").write_bytes(b"stale")
    result = dset("repair", data=data)
    assert result.returncode == 0, result.stdout + result.stderr
    backups = list(data.glob(LOG_NAME + ".bak-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == before
    assert str(backups[0]) in result.stdout
    rejected = list(data.glob(LOG_NAME + ".rejected-*"))
    assert len(rejected) == 1 and bad in rejected[0].read_bytes()
    assert b"# line 3," in rejected[0].read_bytes()
    assert list((data / "snapshots").iterdir()) == []
    n = len(sample_events()) - 1
    ok = dset("verify", data=data)
    assert ok.returncode == 0 and ok.stdout.startswith(f"ok: {n} records, last seq {n},")
    again = dset("repair", data=data)
    assert again.returncode == 0 and "nothing to repair" in again.stdout
    assert len(list(data.glob(LOG_NAME + ".bak-*"))) == 1


def test_stats_counts_by_type(data: Path) -> None:
    (data / (LOG_NAME + ".torn")).write_bytes(b"x" * 17)
    expected = Counter(type(e).__name__ for e in sample_events())
    result = dset("stats", "--json", data=data)
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["by_type"] == dict(expected)
    assert list(report["by_type"])[0] == "EntryGenerated"  # most frequent first
    assert report["records"] == report["last_seq"] == sum(expected.values())
    assert report["size"] == (data / LOG_NAME).stat().st_size
    assert report["torn_file_bytes"] == 17
    assert report["first_ts"] <= report["last_ts"]
    table = dset("stats", data=data)
    assert table.returncode == 0
    for name, count in expected.items():
        assert re.search(rf"^{name}\s+{count}\s", table.stdout, re.M), table.stdout
    assert "17 bytes" in table.stdout


def test_history_of_an_entry(data: Path) -> None:
    result = dset("history", "e2", data=data)
    assert result.returncode == 0
    headers = re.findall(r"^seq (\d+)\s+\S+Z\s+(\w+)$", result.stdout, re.M)
    assert [t for _, t in headers] == ["EntryGenerated", "EntryEdited", "FeedbackGiven", "RegenerationRequested"]
    seqs = [int(s) for s, _ in headers]
    assert seqs == sorted(seqs)
    assert "A shorter, edited answer." in result.stdout
    assert LONG_ANSWER not in result.stdout and f"({len(LONG_ANSWER)} chars)" in result.stdout
    as_json = json.loads(dset("history", "e2", "--json", data=data).stdout)
    assert [item["seq"] for item in as_json] == seqs
    assert as_json[0]["fields"]["answer"] == LONG_ANSWER


def test_history_of_an_unknown_id(data: Path) -> None:
    result = dset("history", "no-such-entry", data=data)
    assert result.returncode == 1
    assert "no-such-entry" in result.stderr


@pytest.mark.parametrize("command", [["stats"], ["history", "e2"]])
def test_stats_and_history_refuse_a_corrupt_log_cleanly(data: Path, command: list[str]) -> None:
    corrupt_line(data / LOG_NAME, 5)
    result = dset(*command, data=data)
    assert result.returncode == 1
    assert "line 5" in result.stderr and "dset log repair" in result.stderr


@pytest.mark.parametrize("command", [["verify"], ["repair"], ["stats"], ["history", "e1"]])
def test_missing_log_is_a_clear_usage_error(tmp_path: Path, command: list[str]) -> None:
    result = dset(*command, data=tmp_path / "nowhere")
    assert result.returncode == 2
    assert "no event log" in result.stderr
    assert not (tmp_path / "nowhere").exists()


# --- repair's edge cases, through the functions --------------------------------------------------------------


def events_of(path: Path) -> list[Event]:
    return [rec.event for rec in read_records(path)]


def test_repair_drops_an_exact_duplicate_line(data: Path) -> None:
    path = data / LOG_NAME
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(6, lines[5])  # line 6 copied right after itself
    path.write_bytes(b"".join(lines))
    report = verify(path)
    assert report.bad[0].line == 7 and "duplicate of line 6" in report.bad[0].reason
    fixed = repair(path)
    assert fixed.rejected_count == 1 and fixed.renumbered == 0
    assert events_of(path) == sample_events() and verify(path).ok


def test_repair_renumbers_a_record_whose_seq_was_damaged(data: Path) -> None:
    path = data / LOG_NAME
    raw = path.read_bytes()
    lines = raw.splitlines(keepends=True)
    lines[3] = lines[3].replace(b'{"seq":4,', b'{"seq":9,', 1)  # the crc covers the event only: still "valid"
    path.write_bytes(b"".join(lines))
    report = verify(path)
    assert report.bad[0].line == 4 and "seq 9 where 4 was due" in report.bad[0].reason
    assert report.bad_count == 1  # the lines after it are not blamed
    fixed = repair(path)
    assert fixed.rejected_count == 0 and fixed.renumbered == 1 and fixed.rejected_file is None
    assert path.read_bytes() == raw and verify(path).ok


def test_repair_of_a_torn_tail_only(data: Path) -> None:
    path = data / LOG_NAME
    good = path.read_bytes()
    path.write_bytes(good + b"\0" * 100)
    fixed = repair(path)
    assert fixed.changed and fixed.torn_bytes == 100 and fixed.rejected_count == 0
    assert path.read_bytes() == good
    assert Path(fixed.torn_file).read_bytes() == b"\0" * 100
    assert Path(fixed.backup).read_bytes() == good + b"\0" * 100


def test_repair_many_bad_lines_keeps_every_good_record(data: Path) -> None:
    path = data / LOG_NAME
    lines = path.read_bytes().splitlines(keepends=True)
    garbage = [b"\n", b"\0\0\0\n", b"not json at all\n", b'{"seq":1}\n', b"\xff\xfe binary\n"]
    mixed = []
    for i, line in enumerate(lines):
        mixed.append(line)
        if i % 3 == 1 and i < len(lines) - 1:  # garbage after the last record would be a torn tail
            mixed.append(garbage[i % len(garbage)])
    path.write_bytes(b"".join(mixed))
    assert not verify(path).ok
    fixed = repair(path)
    assert fixed.rejected_count == len(mixed) - len(lines)
    assert events_of(path) == sample_events()
    assert [rec.seq for rec in read_records(path)] == list(range(1, len(lines) + 1))
    assert verify(path).ok


def test_stats_and_history_functions(data: Path) -> None:
    report = stats(data / LOG_NAME)
    assert report.records == len(sample_events()) and report.uncut_tail_bytes == 0
    assert [item.type for item in history(data / LOG_NAME, "job-9")] == ["RegenerationRequested"]
    assert [item.type for item in history(data / LOG_NAME, "i1")] == [
        "QuestionQueued", "AttemptStarted", "AttemptFailed", "EntryGenerated",
    ]
