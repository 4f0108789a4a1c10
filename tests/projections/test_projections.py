"""Projections and the ReadModel on real log files.

The key property: a read model rebuilt from scratch, one caught up a few
records at a time, and one loaded from a snapshot plus the tail all hold the
same state. Then the rules each projection promises (item status, order,
quality summary, feedback), snapshots that must be ignored, and time travel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers import append, three_ways
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsetlog.store.errors import CorruptLogError
from dsetlog.store.events import (
    AttemptFailed,
    AttemptStarted,
    DatasetCreated,
    EntryEdited,
    EntryGenerated,
    EntryRegenerated,
    EntryScored,
    Event,
    FeedbackGiven,
    ItemBookmarked,
    QuestionQueued,
    RegenerationRequested,
    RunFinished,
    RunStarted,
    SlotQueued,
    Usage,
)
from dsetlog.store.log import LOG_NAME
from dsetlog.store.scan import read_records, record_ends_at
from projections import (
    DONE,
    FAILED,
    PENDING,
    Datasets,
    EventStats,
    Projection,
    ReadModel,
    handles,
)
from projections import datasets as datasets_module
from projections import readmodel as readmodel_module
from projections.columns import COLUMN_PARTS

DS = "ds-1"


# --- helpers ---------------------------------------------------------------------------------------


def state(rm: ReadModel) -> dict[str, bytes]:
    """Every projection's snapshot state, encoded: equal bytes, equal state (dict order included)."""
    with rm.lock:
        return {p.name: msgspec.msgpack.encode(p.snapshot_state()) for p in rm.projections}


def views(rm: ReadModel) -> list[Any]:
    """What the accessors show, as builtins: a readable diff when states differ."""
    d = rm.datasets
    out: list[Any] = [rm.stats.counts, rm.stats.last_seq]
    for v in d.datasets():
        out += [
            msgspec.to_builtins(x)
            for x in (v, d.items(v.id), d.entries(v.id), d.runs(v.id), d.quality_summary(v.id))
        ]
    return out


def assert_same(a: ReadModel, b: ReadModel) -> None:
    assert (a.seq, a.offset) == (b.seq, b.offset)
    assert views(a) == views(b)
    assert state(a) == state(b)


def queued(item: str, question: str | None = None, *, ds: str = DS, row: int = 0) -> QuestionQueued:
    return QuestionQueued(dataset_id=ds, item_id=item, question=question or f"question {item}?", row=row)


def generated(item: str, entry: str | None = None, *, ds: str = DS, **fields: Any) -> EntryGenerated:
    fields.setdefault("question", f"question {item}?")
    fields.setdefault("answer", f"answer to {item}")
    return EntryGenerated(dataset_id=ds, item_id=item, entry_id=entry or f"e-{item}", **fields)


def created(ds: str = DS, name: str = "qs") -> DatasetCreated:
    return DatasetCreated(dataset_id=ds, name=name, source="q.csv", params={"t": 0.7})


def scenario() -> list[Event]:
    """Every event type the standard projections fold, in a plausible order, two datasets."""
    return [
        created(),
        RunStarted(
            run_id="r1", dataset_id=DS, command="generate", model="m", provider="simulated", simulated=True
        ),
        queued("a", row=1),
        queued("b", row=2),
        queued("c", row=3),
        created("ds-2", "other"),
        queued("x", ds="ds-2"),
        AttemptStarted(dataset_id=DS, item_id="a", attempt=1, run_id="r1"),
        AttemptFailed(dataset_id=DS, item_id="a", attempt=1, reason="HTTP 429", status_code=429),
        AttemptStarted(dataset_id=DS, item_id="a", attempt=2, run_id="r1"),
        generated(
            "a", quality_score=0.9, category="Science", usage=Usage(prompt_tokens=5, completion_tokens=7)
        ),
        AttemptStarted(dataset_id=DS, item_id="b", attempt=1),
        ItemBookmarked(dataset_id=DS, item_id="b", reason="timeout", attempts=3),
        AttemptStarted(dataset_id=DS, item_id="c", attempt=1),
        generated("c", quality_score=0.4),
        generated("x", ds="ds-2", quality_score=0.6),
        RunFinished(run_id="r1", dataset_id=DS, outcome="completed", answered=2, failed=1, cost=0.01),
        EntryEdited(dataset_id=DS, entry_id="e-a", answer="better answer", feedback="fixed the tone"),
        FeedbackGiven(
            dataset_id=DS, entry_ids=["e-a", "e-c"], feedback_type="quality_issue", comments="vague", rating=2
        ),
        RegenerationRequested(dataset_id=DS, entry_ids=["e-c"], job_id="job-1"),
        queued("d", row=4),
    ]


# --- the key property --------------------------------------------------------------------------------


def test_rebuild_equals_incremental_equals_snapshot(tmp_path: Path) -> None:
    events = scenario()
    live = ReadModel.open(tmp_path)
    assert live.seq == 0 and live.catch_up() == 0  # no log yet: nothing to fold, no error
    for lo, hi in ((0, 1), (1, 6), (6, 7), (7, 15), (15, len(events))):
        append(tmp_path, *events[lo:hi])
        assert live.catch_up() == hi - lo
        if hi == 7:
            live.save_snapshot()
    scratch = ReadModel.open(tmp_path, use_snapshot=False)
    from_snapshot = ReadModel.open(tmp_path)
    assert from_snapshot.snapshot_used and from_snapshot.snapshot_seq == 7
    assert scratch.seq == len(events)
    assert_same(scratch, live)
    assert_same(scratch, from_snapshot)
    # and a snapshot taken by a model that itself came from a snapshot holds the same state again
    from_snapshot.save_snapshot()
    again = ReadModel.open(tmp_path)
    assert again.snapshot_used and again.snapshot_seq == len(events)
    assert_same(scratch, again)


_ITEMS = ["i1", "i2", "i3", "i4"]
_DATASETS = ["d1", "d2"]


@st.composite
def _event(draw: st.DrawFn) -> Event:
    ds = draw(st.sampled_from(_DATASETS))
    item = draw(st.sampled_from(_ITEMS))
    entry = f"e-{item}-{draw(st.integers(0, 1))}"  # sometimes a second entry id for an item
    return draw(
        st.sampled_from(
            [
                created(ds, f"name-{ds}"),
                queued(item, f"q {item} {draw(st.integers(0, 2))}", ds=ds),
                AttemptStarted(dataset_id=ds, item_id=item, attempt=1),
                AttemptFailed(
                    dataset_id=ds, item_id=item, attempt=1, reason=draw(st.sampled_from(["429", "500"]))
                ),
                ItemBookmarked(dataset_id=ds, item_id=item, reason="gave up"),
                generated(item, entry, ds=ds, quality_score=draw(st.none() | st.floats(0, 1)), category="C"),
                EntryEdited(
                    dataset_id=ds, entry_id=entry, answer=draw(st.none() | st.just("edited")), feedback="fb"
                ),
                FeedbackGiven(
                    dataset_id=ds,
                    entry_ids=[entry],
                    feedback_type=draw(st.sampled_from(["bulk_edit", "content_error"])),
                    rating=draw(st.none() | st.integers(1, 5)),
                ),
                RegenerationRequested(dataset_id=ds, entry_ids=[entry], job_id="j"),
                SlotQueued(dataset_id=ds, item_id=item, chunk_id="c1", slot=draw(st.integers(0, 3))),
                EntryScored(
                    dataset_id=ds, entry_id=entry, quality_score=draw(st.floats(0, 1)), difficulty="hard"
                ),
                EntryRegenerated(dataset_id=ds, entry_id=entry, job_id="j", answer="regenerated"),
                RunStarted(run_id="r", dataset_id=ds, command="generate"),
                RunFinished(run_id="r", dataset_id=ds, outcome="completed"),
            ]
        )
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(_event(), min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=4),
    snap_at=st.integers(0, 40),
)
def test_property_rebuild_incremental_snapshot_agree(
    events: list[Event], cuts: list[int], snap_at: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        snap_at = min(snap_at, len(events))
        scratch, live, from_snapshot = three_ways(data, events, cuts, snap_at)
        assert_same(scratch, live)
        assert from_snapshot.seq - from_snapshot.snapshot_seq == len(events) - snap_at or snap_at == 0
        assert_same(scratch, from_snapshot)
        # and the past agrees with a scratch rebuild of that prefix
        assert_same(live.as_of(snap_at), scratch.as_of(snap_at))


# --- catching up -----------------------------------------------------------------------------------------


def test_catch_up_with_nothing_new_costs_one_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    append(tmp_path, created(), queued("a"))
    rm = ReadModel.open(tmp_path)
    stats: list[object] = []
    reads: list[object] = []
    real_stat, real_read = readmodel_module.file_identity, readmodel_module.read_batches_tolerant
    monkeypatch.setattr(readmodel_module, "file_identity", lambda *a, **k: stats.append(a) or real_stat(*a, **k))
    monkeypatch.setattr(
        readmodel_module, "read_batches_tolerant", lambda *a, **k: reads.append(a) or real_read(*a, **k)
    )
    assert rm.catch_up() == 0
    assert len(stats) == 1 and reads == []
    append(tmp_path, queued("b"))
    assert rm.catch_up() == 1
    assert len(reads) == 1
    assert [it.item_id for it in rm.datasets.items(DS)] == ["a", "b"]


def test_catch_up_reads_only_the_bytes_appended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    append(tmp_path, created(), *[queued(f"q{i}") for i in range(3000)])  # a few hundred KB
    rm = ReadModel.open(tmp_path)
    before = rm.offset
    append(tmp_path, queued("late"))
    reads: list[tuple[int, int]] = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: reads.append((off, n)) or real_pread(fd, n, off))
    assert rm.catch_up() == 1
    assert reads and min(off for off, _ in reads) >= before  # from the last offset on, nothing before it
    assert sum(n for _, n in reads) < 64 * 1024 + (rm.offset - before) * 2


def test_entries_share_their_repeated_strings(tmp_path: Path) -> None:
    """Millions of entries name a handful of models, prompts and runs: one string each, however they were
    folded (from the log, or from a snapshot); their texts are not in memory at all, but in the log."""
    run = {"model": "deepseek-chat", "provider": "deepseek", "prompt_name": "answer", "prompt_hash": "3f9a1c",
           "run_id": "run-1", "category": "Science", "difficulty": "easy"}
    append(tmp_path, created(), *[queued(f"q{i}") for i in range(3)], *[generated(f"q{i}", **run) for i in range(3)])
    for opened in ("log", "snapshot"):
        rm = ReadModel.open(tmp_path, use_snapshot=opened == "snapshot")
        a, b, c = rm.datasets.entries(DS)
        for field in run:
            assert getattr(a, field) is getattr(b, field) is getattr(c, field), (opened, field)
        for e in (a, b, c):  # an entry and its work item share their ids (one string each)
            item = rm.datasets.item(DS, e.item_id)
            assert item is not None and item.item_id == e.item_id and item.entry_id == e.id, opened
        assert not hasattr(a, "question") and not hasattr(a, "answer")
        assert rm.text_of(a).question == "question q0?"
        if opened == "log":
            rm.save_snapshot()


def test_catch_up_sees_what_another_process_appended(tmp_path: Path) -> None:
    append(tmp_path, created())
    rm = ReadModel.open(tmp_path)
    code = (
        "import sys; from dsetlog.store.log import EventLog; from dsetlog.store.events import QuestionQueued\n"
        "with EventLog.in_dir(sys.argv[1]) as log:\n"
        "    log.append_many([QuestionQueued(dataset_id='ds-1', item_id=f'p{i}', question='from afar?')"
        " for i in range(3)])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    assert rm.catch_up() == 3
    assert rm.datasets.dataset(DS).items == 3  # type: ignore[union-attr]
    assert rm.catch_up() == 0


def test_catch_up_ignores_a_write_in_flight_until_it_is_whole(tmp_path: Path) -> None:
    append(tmp_path, created(), queued("a"))
    rm = ReadModel.open(tmp_path)
    with open(tmp_path / LOG_NAME, "ab") as fh:
        fh.write(b'{"seq":3,"ts":"2026-01-01T00:00:00.000000Z","crc":1,"event":{"type":"Quest')
    assert rm.catch_up() == 0 and rm.seq == 2
    # the writer's next open cuts the torn line off and appends a whole one
    append(tmp_path, queued("b"))
    assert rm.catch_up() == 1
    assert [it.item_id for it in rm.datasets.items(DS)] == ["a", "b"]


def test_corruption_in_the_middle_stops_catch_up_with_the_log_error(tmp_path: Path) -> None:
    append(tmp_path, created(), queued("a"), queued("b"))
    lines = (tmp_path / LOG_NAME).read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"question a", b"question X")  # checksum no longer matches
    (tmp_path / LOG_NAME).write_bytes(b"".join(lines))
    with pytest.raises(CorruptLogError, match="line 2"):
        ReadModel.open(tmp_path)


def test_lock_is_held_while_folding(tmp_path: Path) -> None:
    append(tmp_path, created())
    rm = ReadModel.open(tmp_path)
    append(tmp_path, queued("a"))
    seen: list[bool] = []

    class Probe(Projection):
        name = "probe"

        @handles(QuestionQueued)
        def _q(self, rec: Any, ev: Any) -> None:
            got = []
            t = threading.Thread(target=lambda: got.append(rm.lock.acquire(timeout=0.05)))
            t.start()
            t.join()
            seen.extend(got)

    rm._projections += (Probe(),)
    assert rm.catch_up() == 1
    assert seen == [False]  # another thread could not take the lock mid-fold
    with rm.lock:  # re-entrant for the thread that holds it
        assert rm.catch_up() == 0


# --- snapshots: a cache, never trusted blindly ------------------------------------------------------------


def _snapshotted(tmp_path: Path) -> ReadModel:
    events = scenario()
    append(tmp_path, *events[:12])
    ReadModel.open(tmp_path).save_snapshot()
    append(tmp_path, *events[12:])
    return ReadModel.open(tmp_path, use_snapshot=False)


def test_snapshot_is_used_when_valid_and_deleting_it_changes_nothing(tmp_path: Path) -> None:
    truth = _snapshotted(tmp_path)
    rm = ReadModel.open(tmp_path)
    assert rm.snapshot_used and rm.snapshot_seq == 12
    assert_same(truth, rm)
    (tmp_path / "snapshots" / "readmodel.msgpack").unlink()
    rm = ReadModel.open(tmp_path)
    assert not rm.snapshot_used
    assert_same(truth, rm)


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "empty", "flipped state byte", "a directory"],
)
def test_unreadable_snapshot_is_ignored(tmp_path: Path, damage: str) -> None:
    truth = _snapshotted(tmp_path)
    snap = tmp_path / "snapshots" / "readmodel.msgpack"
    data = snap.read_bytes()
    if damage == "garbage":
        snap.write_bytes(os.urandom(4096))
    elif damage == "truncated":
        snap.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        snap.write_bytes(b"")
    elif damage == "flipped state byte":
        at = data.index(b"e-a")  # inside the datasets state (an entry's id): only its crc can tell
        snap.write_bytes(data[:at] + b"Q" + data[at + 1 :])
    else:
        snap.unlink()
        snap.mkdir()
    rm = ReadModel.open(tmp_path)
    assert not rm.snapshot_used
    assert_same(truth, rm)


def test_snapshot_ignored_when_the_log_was_cut_below_it(tmp_path: Path) -> None:
    events = scenario()
    append(tmp_path, *events)
    ReadModel.open(tmp_path).save_snapshot()
    # a repair kept only the first 10 records, then the tool went on writing
    kept = [rec.event for rec in read_records(tmp_path / LOG_NAME)][:10]
    (tmp_path / LOG_NAME).unlink()
    append(tmp_path, *kept, queued("z"))
    rm = ReadModel.open(tmp_path)
    assert not rm.snapshot_used
    assert_same(ReadModel.open(tmp_path, use_snapshot=False), rm)


def test_snapshot_ignored_when_the_log_differs_at_the_same_offset(tmp_path: Path) -> None:
    append(tmp_path, created(), queued("a"), queued("b"))
    ReadModel.open(tmp_path).save_snapshot()
    (tmp_path / LOG_NAME).unlink()
    append(tmp_path, created(), queued("a"), queued("c"))  # same length and seq, another record
    rm = ReadModel.open(tmp_path)
    assert not rm.snapshot_used
    assert [it.item_id for it in rm.datasets.items(DS)] == ["a", "c"]


def test_snapshot_ignored_when_a_projection_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    truth = _snapshotted(tmp_path)
    monkeypatch.setattr(Datasets, "version", Datasets.version + 1)
    rm = ReadModel.open(tmp_path)
    assert not rm.snapshot_used
    assert_same(truth, rm)
    # another set of projections does not match either
    only_stats = ReadModel.open(tmp_path, projections=[EventStats()])
    assert not only_stats.snapshot_used


def test_live_model_rebuilds_when_the_log_is_rewritten_under_it(tmp_path: Path) -> None:
    append(tmp_path, created(), queued("a"), queued("b"))
    rm = ReadModel.open(tmp_path)
    (tmp_path / LOG_NAME).unlink()
    append(tmp_path, created(), queued("c"))
    assert rm.catch_up() == 2
    assert [it.item_id for it in rm.datasets.items(DS)] == ["c"]


def test_snapshot_anchor_finds_records_longer_than_its_window(tmp_path: Path) -> None:
    append(tmp_path, created(), generated("a", answer="word " * 40_000))  # a 200 KB line
    rm = ReadModel.open(tmp_path)
    assert record_ends_at(tmp_path / LOG_NAME, rm.offset, seq=2, crc=rm._crc)
    assert not record_ends_at(tmp_path / LOG_NAME, rm.offset - 1, seq=2, crc=rm._crc)
    assert not record_ends_at(tmp_path / LOG_NAME, rm.offset + 1, seq=2, crc=rm._crc)
    rm.save_snapshot()
    again = ReadModel.open(tmp_path)
    assert again.snapshot_used
    assert again.text_of(again.datasets.entry(DS, "e-a")).answer.startswith("word word")  # type: ignore[arg-type]


def test_maybe_save_snapshot_policy(tmp_path: Path) -> None:
    append(tmp_path, created(), *[queued(f"q{i}") for i in range(9)])
    rm = ReadModel.open(tmp_path)
    assert not rm.maybe_save_snapshot(min_new_records=11)
    assert rm.maybe_save_snapshot(min_new_records=10)
    assert rm.snapshot_seq == 10
    append(tmp_path, queued("late"))
    rm.catch_up()
    assert not rm.maybe_save_snapshot(min_new_records=2)
    assert list((tmp_path / "snapshots").iterdir()) == [tmp_path / "snapshots" / "readmodel.msgpack"]


# --- time travel ------------------------------------------------------------------------------------------


def test_as_of_shows_the_state_at_that_seq(tmp_path: Path) -> None:
    seqs = append(tmp_path, created(), queued("a"), generated("a", answer="first"))
    append(tmp_path, EntryEdited(dataset_id=DS, entry_id="e-a", answer="second"), queued("b"))
    rm = ReadModel.open(tmp_path)
    assert rm.text_of(rm.datasets.entry(DS, "e-a")).answer == "second"  # type: ignore[arg-type]
    past = rm.as_of(seqs[-1])
    assert past.seq == 3 and past.until_seq == 3
    assert past.text_of(past.datasets.entry(DS, "e-a")).answer == "first"  # type: ignore[arg-type]
    assert [it.item_id for it in past.datasets.items(DS)] == ["a"]
    assert rm.as_of(0).datasets.datasets() == []
    assert rm.as_of(99).seq == 5  # past the end: all there is
    # it stays in the past
    append(tmp_path, queued("c"))
    assert past.catch_up() == 0 and past.seq == 3
    with pytest.raises(RuntimeError, match="as_of"):
        past.save_snapshot()
    with pytest.raises(ValueError):
        rm.as_of(-1)


def test_as_of_uses_the_snapshot_only_when_it_is_not_newer(tmp_path: Path) -> None:
    append(tmp_path, created(), queued("a"), queued("b"), queued("c"))
    rm = ReadModel.open(tmp_path)
    rm.save_snapshot()  # at seq 4
    append(tmp_path, queued("d"))
    rm.catch_up()
    newer = rm.as_of(5)
    assert newer.snapshot_used and newer.seq == 5
    older = rm.as_of(2)
    assert not older.snapshot_used
    assert [it.item_id for it in older.datasets.items(DS)] == ["a"]
    assert_same(older, ReadModel.open(tmp_path, use_snapshot=False).as_of(2))


# --- Datasets: item status, order, quality, feedback --------------------------------------------------------


def fold(tmp_path: Path, *events: Event) -> Datasets:
    append(tmp_path, *events)
    return ReadModel.open(tmp_path).datasets


def test_item_status_rules(tmp_path: Path) -> None:
    d = fold(
        tmp_path,
        created(),
        queued("p"),  # queued only
        queued("q"),
        AttemptStarted(dataset_id=DS, item_id="q", attempt=1),
        AttemptFailed(dataset_id=DS, item_id="q", attempt=1, reason="HTTP 500"),  # still pending
        queued("f"),
        AttemptStarted(dataset_id=DS, item_id="f", attempt=1),
        ItemBookmarked(dataset_id=DS, item_id="f", reason="exhausted"),  # failed
        queued("r"),
        ItemBookmarked(dataset_id=DS, item_id="r", reason="exhausted"),
        AttemptStarted(dataset_id=DS, item_id="r", attempt=1),  # retried after the bookmark: pending
        queued("d"),
        AttemptStarted(dataset_id=DS, item_id="d", attempt=1),
        ItemBookmarked(dataset_id=DS, item_id="d", reason="exhausted"),
        AttemptStarted(dataset_id=DS, item_id="d", attempt=2),
        generated("d"),  # done
        ItemBookmarked(dataset_id=DS, item_id="d", reason="late bookmark"),  # done is final
        AttemptFailed(dataset_id=DS, item_id="d", attempt=3, reason="late failure"),
    )
    status = {it.item_id: (it.status, it.attempts, it.last_error, it.entry_id) for it in d.items(DS)}
    assert status == {
        "p": (PENDING, 0, None, None),
        "q": (PENDING, 1, "HTTP 500", None),
        "f": (FAILED, 1, "exhausted", None),
        "r": (PENDING, 1, "exhausted", None),
        "d": (DONE, 2, "late failure", "e-d"),
    }
    v = d.dataset(DS)
    assert v is not None
    assert (v.items, v.done, v.failed, v.pending, v.entries) == (5, 1, 1, 3, 1)
    assert [it.item_id for it in d.items(DS, status=PENDING)] == ["p", "q", "r"]
    assert d.item(DS, "f").status == FAILED  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="status must be one of"):
        d.items(DS, status="queued")


def test_at_most_one_entry_per_item_and_requeue_is_idempotent(tmp_path: Path) -> None:
    d = fold(
        tmp_path,
        created(),
        queued("a", "original?", row=1),
        queued("b", row=2),
        generated("a", "e1", answer="first"),
        generated("a", "e2", answer="second"),  # must never happen; ignored if it does
        queued("a", "re-queued on resume?", row=9),
        queued("b", row=2),
    )
    rm = ReadModel.open(tmp_path)
    items = d.items(DS)
    assert [(it.item_id, q, it.row) for it, q in zip(items, rm.questions(items), strict=True)] == [
        ("a", "original?", 1),
        ("b", "question b?", 2),
    ]
    assert [e.id for e in d.entries(DS)] == ["e1"]
    assert d.entry(DS, "e2") is None
    assert ReadModel.open(tmp_path).text_of(d.entry(DS, "e1")).answer == "first"  # type: ignore[arg-type]
    v = d.dataset(DS)
    assert v is not None and (v.items, v.done, v.entries, v.pending) == (2, 1, 1, 1)


def test_entries_follow_queue_order_not_generation_order(tmp_path: Path) -> None:
    d = fold(
        tmp_path,
        created(),
        *[queued(i, row=n) for n, i in enumerate("abcd", 1)],
        generated("c"),
        generated("a"),
        generated("d"),
    )
    assert [e.item_id for e in d.entries(DS)] == ["a", "c", "d"]
    assert [e.dataset_id for e in d.entries(DS)] == [DS] * 3


def test_items_named_before_queued_or_without_a_dataset(tmp_path: Path) -> None:
    d = fold(
        tmp_path,
        AttemptStarted(dataset_id="chunks", item_id="chunk-1/0", attempt=1),  # no DatasetCreated, no queue
        generated("chunk-1/0", ds="chunks", question="from the chunk?"),
        queued("chunk-1/0", "queued late?", ds="chunks", row=3),
        created("chunks", "documents"),
    )
    it = d.item("chunks", "chunk-1/0")
    assert it is not None and (it.status, it.row, it.queued) == (DONE, 3, True)
    assert ReadModel.open(tmp_path).questions([it]) == ["queued late?"]
    v = d.dataset("chunks")
    assert v is not None and (v.name, v.created_seq, v.items, v.done) == ("documents", 4, 1, 1)
    assert d.dataset("nope") is None and d.items("nope") == [] and d.entries("nope") == []


def test_datasets_listing(tmp_path: Path) -> None:
    d = fold(
        tmp_path,
        created("d1", "alpha"),
        DatasetCreated(dataset_id="d2", name="beta", kind="documents", project_id="p1"),
        created("d3", "alpha"),
        created("d1", "renamed?"),  # a repeat of the first: the first stands
    )
    assert [v.id for v in d.datasets()] == ["d1", "d2", "d3"]
    assert [v.id for v in d.datasets(name="alpha")] == ["d1", "d3"]
    assert [v.id for v in d.datasets(kind="documents")] == ["d2"]
    assert [v.id for v in d.datasets(name="alpha", kind="documents")] == []
    v1 = d.dataset("d1")
    assert v1 is not None and (v1.name, v1.params, v1.created_seq) == ("alpha", {"t": 0.7}, 1)


def test_quality_summary(tmp_path: Path) -> None:
    scores = {"a": 0.95, "b": 0.8, "c": 0.79, "d": 0.5, "e": 0.2, "f": None}
    cats = {"a": "Science", "b": "Science", "c": "", "d": "History", "e": "", "f": "History"}
    d = fold(
        tmp_path,
        created(),
        *[queued(i) for i in scores],
        *[generated(i, quality_score=scores[i], category=cats[i]) for i in scores],
    )
    summary = d.quality_summary(DS)
    assert summary["average_score"] == pytest.approx((0.95 + 0.8 + 0.79 + 0.5 + 0.2) / 5)
    assert summary["distribution"] == {"high": 2, "medium": 2, "low": 1}
    assert summary["categories"] == {"Science": 2, "Other": 2, "History": 2}
    assert d.quality_summary("empty") == {
        "average_score": 0.0,
        "distribution": {"high": 0, "medium": 0, "low": 0},
        "categories": {},
    }


def test_feedback_edits_and_flags(tmp_path: Path) -> None:
    append(tmp_path, created(), queued("a"), queued("b"))
    gen = append(tmp_path, generated("a", category="Old", usage=Usage(prompt_tokens=3, completion_tokens=4)))
    gen_b = append(tmp_path, generated("b"))
    fb1 = append(tmp_path, FeedbackGiven(dataset_id=DS, entry_ids=["e-a", "e-b"], comments="ok", rating=4))
    edit = append(
        tmp_path,
        EntryEdited(dataset_id=DS, entry_id="e-a", answer="new answer", category="New", feedback="reworded"),
    )
    fb2 = append(
        tmp_path,
        FeedbackGiven(
            dataset_id=DS, entry_ids=["e-a", "e-a", "missing"], feedback_type="content_error", rating=1
        ),
    )
    regen = append(tmp_path, RegenerationRequested(dataset_id=DS, entry_ids=["e-b"], job_id="job-9"))
    rm = ReadModel.open(tmp_path)
    a = rm.datasets.entry(DS, "e-a")
    b = rm.datasets.entry(DS, "e-b")
    assert a is not None and b is not None
    assert (rm.text_of(a).question, rm.text_of(a).answer, a.category) == ("question a?", "new answer", "New")
    assert (a.revision, a.prompt_tokens, a.completion_tokens) == (2, 3, 4)
    assert a.updated_at != a.created_at or a.updated_at == rm.stats.last_ts  # stamped by the edit's record
    assert a.feedback is not None
    assert a.feedback.count == 3  # two FeedbackGiven (an id named twice counts once) and the edit's feedback
    assert a.feedback.ratings == [4, 1] and a.feedback.average_rating == 2.5
    assert a.feedback.comments == ["ok", "reworded"]
    assert a.feedback.types == ["bulk_edit", "edit", "content_error"]
    assert a.flagged
    assert a.history == (gen[0], fb1[0], edit[0], fb2[0])
    assert not b.flagged and b.feedback is not None and b.feedback.count == 1
    assert b.regeneration_job_id == "job-9"
    assert b.history == (gen_b[0], fb1[0], regen[0])
    quality = append(tmp_path, FeedbackGiven(dataset_id=DS, entry_ids=["e-b"], feedback_type="quality_issue"))
    rm.catch_up()
    assert not b.flagged  # a view is a copy: it does not change with the model
    b = rm.datasets.entry(DS, "e-b")
    assert b is not None and b.flagged and b.history[-1] == quality[0]


def test_feedback_keeps_the_last_comments_only(tmp_path: Path) -> None:
    from projections.datasets import FEEDBACK_COMMENTS_KEPT

    n = FEEDBACK_COMMENTS_KEPT + 3
    d = fold(
        tmp_path,
        created(),
        queued("a"),
        generated("a"),
        *[FeedbackGiven(dataset_id=DS, entry_ids=["e-a"], comments=f"c{i}", rating=5) for i in range(n)],
    )
    fb = d.entry(DS, "e-a").feedback  # type: ignore[union-attr]
    assert fb is not None and fb.count == n and len(fb.ratings) == n
    assert fb.comments == [f"c{i}" for i in range(3, n)]


def test_runs(tmp_path: Path) -> None:
    d = fold(
        tmp_path,
        created(),
        RunStarted(run_id="r1", dataset_id=DS, command="generate", model="m1", provider="deepseek"),
        RunFinished(
            run_id="r1", dataset_id=DS, outcome="interrupted", answered=3, prompt_tokens=10, cost=0.5
        ),
        RunStarted(run_id="r2", dataset_id=DS, command="generate", simulated=True),
        RunFinished(run_id="r0", dataset_id=DS, outcome="completed"),  # its start is unknown
    )
    runs = {r.run_id: r for r in d.runs(DS)}
    assert list(runs) == ["r1", "r2", "r0"]
    r1 = runs["r1"]
    assert (r1.outcome, r1.answered, r1.prompt_tokens, r1.cost, r1.model) == ("interrupted", 3, 10, 0.5, "m1")
    assert runs["r2"].outcome is None and runs["r2"].simulated
    assert runs["r0"].started_seq is None and runs["r0"].outcome == "completed"


def test_event_stats(tmp_path: Path) -> None:
    append(tmp_path, *scenario())
    rm = ReadModel.open(tmp_path)
    s = rm.stats
    assert s.total == rm.seq == s.last_seq == len(scenario())
    assert s.counts["QuestionQueued"] == 5 and s.counts["EntryGenerated"] == 3
    assert list(s.counts)[0] == "QuestionQueued"  # most frequent first
    assert s.first_ts is not None and s.last_ts is not None and s.first_ts <= s.last_ts


def test_a_projection_ignores_event_types_it_does_not_handle(tmp_path: Path) -> None:
    class Queued(Projection):
        name = "queued"

        def __init__(self) -> None:
            super().__init__()
            self.ids: list[str] = []

        @handles(QuestionQueued)
        def _q(self, rec: Any, ev: QuestionQueued) -> None:
            self.ids.append(ev.item_id)

        def snapshot_state(self) -> list[str]:
            return self.ids

        def load_snapshot_state(self, state: list[str]) -> None:
            self.ids = list(state)

    append(tmp_path, *scenario())
    rm = ReadModel.open(tmp_path, projections=[Queued()])
    assert rm["queued"].ids == ["a", "b", "c", "x", "d"]  # type: ignore[attr-defined]
    rm.save_snapshot()
    again = ReadModel.open(tmp_path, projections=[Queued()])
    assert again.snapshot_used and again.get(Queued).ids == rm.get(Queued).ids
    with pytest.raises(KeyError, match="no Datasets projection"):
        _ = again.datasets
    with pytest.raises(TypeError, match="needs at least one event type"):
        handles()


def test_snapshot_pages_leave_memory_once_checked_and_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot is mapped: its pages, read to check it and to decode a dataset, must not stay resident
    (the file is 9 GB at 10M entries). A dataset in several parts shares ids across them."""
    monkeypatch.setattr(datasets_module, "PART_ENTRIES", 250)
    events: list[Any] = [created()] + [queued(f"q{i}") for i in range(2000)]
    # entries in another order than their items, each with 2 KB the snapshot keeps (metadata)
    events += [generated(f"q{i}", metadata={"note": f"{i}" * 2000}) for i in reversed(range(2000))]
    append(tmp_path, *events)
    ReadModel.open(tmp_path).save_snapshot()

    def file_kb() -> int:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("RssFile:"))

    size_kb = (tmp_path / "snapshots" / "readmodel.msgpack").stat().st_size // 1024
    before = file_kb()
    rm = ReadModel.open(tmp_path)
    assert rm.snapshot_used
    after_open = file_kb()
    entries = rm.datasets.entries(DS)
    after_decode = file_kb()
    assert len(entries) == 2000 and rm.datasets._shards[DS].part_count() == 2 + 8 + COLUMN_PARTS
    assert size_kb > 4000
    assert after_open - before < size_kb // 4 and after_decode - before < size_kb // 4, (before, after_open, after_decode)
    for e in entries:
        item = rm.datasets.item(DS, e.item_id)
        assert item is not None and item.item_id == e.item_id and item.entry_id == e.id


def test_shards_from_a_snapshot_fold_their_queued_records_when_read(tmp_path: Path) -> None:
    append(tmp_path, created("d1"), created("d2"), queued("a", ds="d1"), queued("b", ds="d2"))
    ReadModel.open(tmp_path).save_snapshot()
    append(tmp_path, generated("a", ds="d1"), queued("c", ds="d1"))
    rm = ReadModel.open(tmp_path)
    assert rm.snapshot_used
    d = rm.datasets
    v1 = d.dataset("d1")
    assert v1 is not None and (v1.items, v1.done) == (2, 1)
    assert [e.id for e in d.entries("d1")] == ["e-a"]
    assert [it.item_id for it in d.items("d2")] == ["b"]


def test_slots_scores_and_regenerations(tmp_path: Path) -> None:
    seqs = append(
        tmp_path,
        created("docs", "from documents"),
        SlotQueued(dataset_id="docs", item_id="c1/0", chunk_id="c1", slot=0),
        SlotQueued(dataset_id="docs", item_id="c1/1", chunk_id="c1", slot=1, mode="answer", question="given?"),
        SlotQueued(dataset_id="docs", item_id="c1/0", chunk_id="c1", slot=0),  # re-queued on resume
        generated("c1/1", ds="docs", quality_score=0.3, difficulty="easy"),
        EntryScored(dataset_id="docs", entry_id="e-c1/1", quality_score=0.85, quality={"len": 1.0}, below_threshold=False),
        EntryRegenerated(
            dataset_id="docs", entry_id="e-c1/1", job_id="job-2", answer="regenerated", reasoning="why",
            usage=Usage(prompt_tokens=1, completion_tokens=2),
        ),
        EntryScored(dataset_id="docs", entry_id="nope", quality_score=0.1),
    )  # fmt: skip
    rm = ReadModel.open(tmp_path)
    d = rm.datasets
    items = d.items("docs")
    assert [(it.item_id, it.row, it.source, q, it.status) for it, q in zip(items, rm.questions(items), strict=True)] == [
        ("c1/0", 0, "c1", "", PENDING),
        ("c1/1", 1, "c1", "given?", DONE),
    ]
    e = d.entry("docs", "e-c1/1")
    assert e is not None
    assert (e.quality_score, e.quality, e.difficulty) == (0.85, {"len": 1.0}, "easy")
    full = rm.text_of(e)
    assert (full.answer, full.reasoning, e.revision, e.regeneration_job_id) == ("regenerated", "why", 2, "job-2")
    assert (e.prompt_tokens, e.completion_tokens) == (1, 2)
    assert e.history == (seqs[4], seqs[5], seqs[6])
    assert d.quality_summary("docs")["distribution"]["high"] == 1


def test_streamed_snapshot_parts_are_the_encoded_state(tmp_path: Path) -> None:
    many = [created(f"d{i:02d}") for i in range(17)]  # past msgpack's fixarray: a 16-bit array header
    append(tmp_path, *many, queued("a", ds="d03"), generated("a", ds="d03", answer="x" * 70_000))
    rm = ReadModel.open(tmp_path)
    rm.save_snapshot()
    rm = ReadModel.open(tmp_path)  # bodies now views into the snapshot file, one shard decoded below
    rm.datasets.entries("d05")
    for p in rm.projections:
        assert b"".join(p.snapshot_parts()) == msgspec.msgpack.encode(p.snapshot_state())
