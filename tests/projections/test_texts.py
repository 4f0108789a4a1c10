"""Entry texts live in the log, not in the read model: read back where they are, following every revision,
never read wrong after the log changed, and never decoded by a replay (issue 15)."""

from __future__ import annotations

import gc
import os
import tracemalloc
from pathlib import Path

import msgspec
import pytest
from helpers import append, three_ways

from api.entry_index import EntryCache
from api.schemas import EntriesQuery
from dsetlog.store.events import (
    DatasetCreated,
    EntryEdited,
    EntryGenerated,
    EntryRegenerated,
    Event,
    QuestionQueued,
    RevisionRestored,
)
from dsetlog.store.log import LOG_NAME
from dsetlog.store.scan import read_records
from projections import ReadModel
from projections.lean import LEAN, SKIPPED, fold_decoder
from projections.texts import StaleTextError

DS = "ds"


def entry(i: int, answer: str, *, question: str | None = None, reasoning: str = "") -> list[Event]:
    q = question or f"question {i}?"
    return [QuestionQueued(dataset_id=DS, item_id=f"q{i}", question=q, row=i),
            EntryGenerated(dataset_id=DS, item_id=f"q{i}", entry_id=f"e{i}", question=q, answer=answer,
                           reasoning=reasoning, quality_score=0.5)]


def texts(rm: ReadModel, entry_id: str) -> tuple[str, str, str]:
    view = rm.datasets.entry(DS, entry_id)
    assert view is not None
    full = rm.text_of(view)
    return full.question, full.answer, full.reasoning


def test_texts_follow_every_revision_and_agree_three_ways(tmp_path: Path) -> None:
    events: list[Event] = [DatasetCreated(dataset_id=DS, name="qs"), *entry(0, "first answer", reasoning="why")]
    steps = [
        (EntryEdited(dataset_id=DS, entry_id="e0", question="edited question?"),
         ("edited question?", "first answer", "why")),
        (EntryEdited(dataset_id=DS, entry_id="e0", answer="edited answer"),
         ("edited question?", "edited answer", "why")),  # an edit keeps the reasoning
        (EntryRegenerated(dataset_id=DS, entry_id="e0", job_id="j1", answer="lower", reasoning="r", current=False),
         ("edited question?", "edited answer", "why")),  # set aside: the content stays
        (EntryRegenerated(dataset_id=DS, entry_id="e0", job_id="j2", answer="regenerated", reasoning="new why"),
         ("edited question?", "regenerated", "new why")),
        (EntryRegenerated(dataset_id=DS, entry_id="e0", job_id="j3", answer="a3", question="q3?"),
         ("q3?", "a3", "")),
        (RevisionRestored(dataset_id=DS, entry_id="e0", seq=3, answer="first answer", reasoning="why"),
         ("q3?", "first answer", "why")),  # no question in the revision: the entry's stays
    ]
    append(tmp_path, *events)
    rm = ReadModel.open(tmp_path)
    assert texts(rm, "e0") == ("question 0?", "first answer", "why")
    for ev, want in steps:
        append(tmp_path, ev)
        rm.catch_up()
        assert texts(rm, "e0") == want, ev

    other = tmp_path / "other"
    other.mkdir()
    all_events = [*events, *(ev for ev, _ in steps), *entry(1, "b" * 3000)]
    for model in three_ways(other, all_events, cuts=[2, 4, 6], snap_at=5):
        assert texts(model, "e0") == ("q3?", "first answer", "why")
        assert texts(model, "e1") == ("question 1?", "b" * 3000, "")
        assert [texts(model.as_of(s), "e0")[1] for s in (3, 4, 5, 6, 7)] == [
            "first answer", "first answer", "edited answer", "edited answer", "regenerated"]


def _folded_bytes(data: Path) -> tuple[int, ReadModel]:
    gc.collect()
    tracemalloc.start()
    try:
        rm = ReadModel.open(data, use_snapshot=False)
        rm.datasets.entries(DS)
        gc.collect()
        return tracemalloc.get_traced_memory()[0], rm
    finally:
        tracemalloc.stop()


def test_the_read_model_does_not_grow_with_the_text(tmp_path: Path) -> None:
    """The same 3,000 entries with 40-character and with 4,000-character texts: the read model's memory is
    the same (before, every text was in it: ~24 MB more for the long ones)."""
    n = 3000
    sizes = {}
    for length in (40, 4000):
        data = tmp_path / str(length)
        data.mkdir()
        append(data, DatasetCreated(dataset_id=DS, name="qs"),
               *(ev for i in range(n) for ev in entry(i, f"{i} " + "a" * length, reasoning="r" * length)))
        sizes[length], rm = _folded_bytes(data)
        assert texts(rm, f"e{n - 1}")[1] == f"{n - 1} " + "a" * length
    grown = sizes[4000] - sizes[40]
    assert grown < 0.05 * sizes[40], sizes  # the texts would add 2 x 3,960 bytes an entry: 24 MB


def test_a_replay_decodes_no_text(tmp_path: Path) -> None:
    append(tmp_path, DatasetCreated(dataset_id=DS, name="qs"), *entry(0, "an answer", reasoning="why"))
    line = (tmp_path / LOG_NAME).read_bytes().splitlines()[-1]
    ev = fold_decoder.decode(line).event
    assert type(ev) is LEAN[EntryGenerated]
    assert ev.type == "EntryGenerated" and ev.entry_id == "e0" and ev.quality_score == 0.5
    assert not any(hasattr(ev, name) for name in SKIPPED[EntryGenerated])
    # derived from the event's own fields: a field added to EntryGenerated is folded without a second schema
    full = {f.name for f in msgspec.structs.fields(EntryGenerated)}
    assert {f.name for f in msgspec.structs.fields(LEAN[EntryGenerated])} == full - SKIPPED[EntryGenerated]


def test_a_log_changed_under_the_model_is_never_read_as_the_wrong_text(tmp_path: Path) -> None:
    append(tmp_path, DatasetCreated(dataset_id=DS, name="qs"), *entry(0, "zero"), *entry(1, "one"))
    rm = ReadModel.open(tmp_path)
    e1 = rm.datasets.entry(DS, "e1")
    assert e1 is not None
    # another log in its place whose lines fall elsewhere (what a repair that drops a line does)
    other = tmp_path / "elsewhere"
    other.mkdir()
    append(other, DatasetCreated(dataset_id=DS, name="a longer name"), *entry(1, "one"), *entry(0, "zero"))
    os.replace(other / LOG_NAME, tmp_path / LOG_NAME)
    with pytest.raises(StaleTextError, match="changed under the read model"):
        rm.text_of(e1)
    rm.catch_up()  # folds the new log from its start
    assert texts(rm, "e1") == ("question 1?", "one", "")


def test_a_text_whose_bytes_changed_in_place_is_refused_by_its_checksum(tmp_path: Path) -> None:
    append(tmp_path, DatasetCreated(dataset_id=DS, name="qs"), *entry(0, "the answer"))
    rm = ReadModel.open(tmp_path)
    log = tmp_path / LOG_NAME
    log.write_bytes(log.read_bytes().replace(b"the answer", b"the ANSWER"))  # same length, same place
    with pytest.raises(StaleTextError, match="no longer holds the record that wrote entry e0"):
        rm.text_of(rm.datasets.entry(DS, "e0"))  # type: ignore[arg-type]


def test_search_reads_the_text_now_in_the_log(tmp_path: Path) -> None:
    """q= searches the texts in the log; an edit of an answer moves the entry in and out of a cached search."""
    append(tmp_path, DatasetCreated(dataset_id=DS, name="qs"), *entry(0, "about photosynthesis"),
           *entry(1, "about tides"), *entry(2, "more photosynthesis"))
    rm = ReadModel.open(tmp_path)
    cache = EntryCache()

    def found(q: str) -> list[str]:
        with rm.lock:
            index = cache.index(rm, DS)
            positions, _ = index.query(rm, EntriesQuery(q=q, sort_by="position"))
            return [msgspec.json.decode(raw)["id"] for raw in index.page(rm, positions)]

    assert found("PHOTOSYNTHESIS") == ["e0", "e2"]
    assert found("tides") == ["e1"]
    append(tmp_path, EntryEdited(dataset_id=DS, entry_id="e1", answer="about photosynthesis too"))
    rm.catch_up()
    assert found("photosynthesis") == ["e0", "e1", "e2"]
    assert found("tides") == []
    page = msgspec.json.decode(cache.index(rm, DS).page(rm, [1])[0])
    assert (page["question"], page["answer"]) == ("question 1?", "about photosynthesis too")
    assert len(list(read_records(tmp_path / LOG_NAME))) == 8


def test_a_dataset_of_millions_is_snapshotted_in_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """msgpack's bin holds less than 4 GiB, and 10M entries' dataset is more (issue 15: the save failed with
    OverflowError): a shard's body is kept in parts of PART_ENTRIES, here 2, and reads back the same."""
    from projections import datasets
    from projections.columns import COLUMN_PARTS

    monkeypatch.setattr(datasets, "PART_ENTRIES", 2)
    events: list[Event] = [DatasetCreated(dataset_id=DS, name="qs")]
    for i in range(7):
        events += entry(i, f"answer {i}")
    events.append(EntryEdited(dataset_id=DS, entry_id="e5", answer="edited"))
    for model in three_ways(tmp_path, events, cuts=[3, 9], snap_at=11):
        assert [texts(model, f"e{i}")[1] for i in range(7)] == [
            "answer 0", "answer 1", "answer 2", "answer 3", "answer 4", "edited", "answer 6"]
        assert [it.item_id for it in model.datasets.items(DS)] == [f"q{i}" for i in range(7)]
    again = ReadModel.open(tmp_path)
    assert again.snapshot_used
    shard = again.datasets._shards[DS]
    # its runs, the columns' head, 5 item ids at the snapshot (seq 11) in 3 parts, and the columns
    assert shard.body is not None and len(shard.body) == 2 + 3 + COLUMN_PARTS
    again.save_snapshot()  # parts loaded and not yet decoded are written back as they are
    assert [texts(ReadModel.open(tmp_path), f"e{i}")[1] for i in (0, 6)] == ["answer 0", "answer 6"]


def test_a_snapshot_part_too_big_for_msgpack_says_what_to_do() -> None:
    from projections.datasets import _bin_header

    with pytest.raises(ValueError, match="lower projections.datasets.PART_ENTRIES"):
        _bin_header(1 << 32)
