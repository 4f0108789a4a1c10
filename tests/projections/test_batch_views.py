"""The Batches projection: uploads open until their batch is recorded, batches open until they end (ends final),
the items they hold, whose they are (the dataset's, or a regeneration's own), and the same state rebuilt, caught up
in pieces, or read from a snapshot."""

from __future__ import annotations

from pathlib import Path

import msgspec
from helpers import three_ways

from dsetlog.store.events import (
    BatchCancelled,
    BatchCompleted,
    BatchExpired,
    BatchFailed,
    BatchInputUploaded,
    BatchProgress,
    BatchSubmitted,
    Event,
    RegenerationRequested,
)


def history() -> list[Event]:
    return [
        BatchInputUploaded(dataset_id="ds1", input_file_id="f1", item_ids=["a", "b"], requests=2, estimated_tokens=900),
        BatchSubmitted(dataset_id="ds1", batch_id="b1", input_file_id="f1", item_ids=["a", "b"], requests=2,
                       status="validating", run_id="r1"),
        BatchSubmitted(dataset_id="ds1", batch_id="b1", input_file_id="f1", item_ids=["zzz"]),  # a repeat: ignored
        BatchInputUploaded(dataset_id="ds1", input_file_id="f2", item_ids=["c"], requests=1),  # never created
        BatchInputUploaded(dataset_id="ds1", input_file_id="f3", item_ids=["d"], requests=1),
        BatchFailed(dataset_id="ds1", batch_id="", input_file_id="f3", reason="file expired"),  # upload closed
        BatchInputUploaded(dataset_id="ds2", input_file_id="f4", item_ids=["e"], requests=1),
        BatchSubmitted(dataset_id="ds2", batch_id="b2", input_file_id="f4", item_ids=["e"], requests=1),
        BatchProgress(dataset_id="ds1", batch_id="b1", status="in_progress", total=2, completed=1),
        BatchExpired(dataset_id="ds2", batch_id="b2", total=1, completed=0, failed=1, retried=1),
        BatchProgress(dataset_id="ds2", batch_id="b2", status="in_progress", total=1, completed=1),  # after the end
        BatchCompleted(dataset_id="ds2", batch_id="b2", total=1, completed=1, answered=1),  # a second end: ignored
        BatchProgress(dataset_id="ds9", batch_id="unknown", status="in_progress"),  # never submitted: ignored
    ]


def test_batches_rules_and_three_ways_agree(tmp_path: Path) -> None:
    models = three_ways(tmp_path / "data", history(), cuts=[2, 5, 9], snap_at=7)
    states = [msgspec.to_builtins(rm.batches.snapshot_state()) for rm in models]
    assert states[0] == states[1] == states[2]
    for rm in models:
        b = rm.batches
        [b1] = b.open_batches("ds1")
        assert (b1.batch_id, b1.item_ids, b1.status, b1.completed, b1.estimated_tokens) == (
            "b1", ["a", "b"], "in_progress", 1, 900)
        assert [u.input_file_id for u in b.open_uploads("ds1")] == ["f2"]
        assert b.held("ds1") == {"a", "b", "c"}
        b2 = b.batch("b2")
        assert b2 is not None and (b2.status, b2.ended, b2.completed, b2.failed) == ("expired", True, 0, 1)
        assert b.open_batches("ds2") == [] and b.held("ds2") == set()
        assert b.batch("unknown") is None


def test_a_cancelled_batch_ends_and_frees_its_items(tmp_path: Path) -> None:
    events = [BatchInputUploaded(dataset_id="d", input_file_id="f", item_ids=["x", "y"], requests=2),
              BatchSubmitted(dataset_id="d", batch_id="b", input_file_id="f", item_ids=["x", "y"], requests=2),
              BatchCancelled(dataset_id="d", batch_id="b", total=2, completed=1, answered=1)]
    for rm in three_ways(tmp_path / "data", events, cuts=[1], snap_at=2):
        view = rm.batches.batch("b")
        assert view is not None and (view.status, view.ended, view.answered) == ("cancelled", True, 1)
        assert rm.batches.held("d") == set() and rm.batches.open_uploads("d") == []


def test_a_regenerations_batches_are_its_own(tmp_path: Path) -> None:
    """A generation's batches are the dataset's (any later run of it takes them up); a regeneration's are its job's
    alone, held and polled apart from the dataset's, however the state was folded."""
    events: list[Event] = [
        BatchInputUploaded(dataset_id="d", input_file_id="f1", item_ids=["s1"], requests=1, run_id="gen-1"),
        BatchSubmitted(dataset_id="d", batch_id="b1", input_file_id="f1", item_ids=["s1"], run_id="gen-1"),
        RegenerationRequested(dataset_id="d", entry_ids=["e1", "e2"], job_id="regen-1"),
        BatchInputUploaded(dataset_id="d", input_file_id="f2", item_ids=["i1"], requests=1, run_id="regen-1"),
        BatchSubmitted(dataset_id="d", batch_id="b2", input_file_id="f2", item_ids=["i1"], run_id="regen-1"),
        BatchInputUploaded(dataset_id="d", input_file_id="f3", item_ids=["i2"], requests=1, run_id="regen-1"),
        BatchInputUploaded(dataset_id="d", input_file_id="f4", item_ids=["s2"], requests=1, run_id="gen-2"),
    ]
    for rm in three_ways(tmp_path / "data", events, cuts=[1, 3, 5], snap_at=4):
        b = rm.batches
        assert b.owner_of("regen-1") == "regen-1" and b.owner_of("gen-1") == b.owner_of("gen-3") == ""
        assert [v.batch_id for v in b.open_batches("d")] == ["b1"] and b.held("d") == {"s1", "s2"}
        assert [u.input_file_id for u in b.open_uploads("d")] == ["f4"]
        assert [v.batch_id for v in b.open_batches("d", "regen-1")] == ["b2"] and b.held("d", "regen-1") == {"i1", "i2"}
        assert [u.input_file_id for u in b.open_uploads("d", "regen-1")] == ["f3"]
        assert [v.batch_id for v in b.batches("d", "regen-1")] == ["b2"] and b.open_batches("d", "regen-2") == []
