"""projections.fields: an entry field's values for many rows, read from the columns, are the views' values."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from helpers import three_ways

from dsetlog.ids import entry_id_for
from dsetlog.store.events import (
    DatasetCreated,
    EntryEdited,
    EntryGenerated,
    EntryRegenerated,
    EntryScored,
    Event,
    FeedbackGiven,
    QuestionQueued,
    RegenerationRequested,
    Usage,
)
from projections.fields import field_values
from projections.views import EntryView

DS = "ds"


def _item(i: int) -> str:
    return f"q_{i:016x}"


def _events(*, odd_ids: bool) -> list[Event]:
    events: list[Event] = [DatasetCreated(dataset_id=DS, name="qs")]
    events += [QuestionQueued(dataset_id=DS, item_id=_item(i), question=f"question {i}?", row=i) for i in range(24)]
    for i in reversed(range(24)):  # entries in another order than their items
        events.append(EntryGenerated(
            dataset_id=DS, item_id=_item(i), entry_id=f"odd-{i}" if odd_ids and i % 7 == 0 else entry_id_for(_item(i)),
            question=f"q{i}", answer=f"a{i}", reasoning="r" if i % 2 else "", category=("Science", "Math", "")[i % 3],
            quality_score=None if i % 5 == 0 else i / 24, quality={"length": i % 3 / 2}, difficulty=("easy", "hard")[i % 2],
            metadata={"slot": i % 2, "tags": ["x"]} if i % 4 else {}, usage=Usage(prompt_tokens=i, completion_tokens=2 * i),
            latency_ms=i * 1.5, simulated=bool(i % 2), model="m", provider="p", run_id=f"run-{i % 2}",
            prompt_name="default", prompt_hash="abc", source_chunk=f"chunk-{i % 3}"))
    some = [entry_id_for(_item(i)) for i in (1, 2, 3)]
    events += [
        EntryEdited(dataset_id=DS, entry_id=some[0], answer="edited", category="Other"),
        EntryScored(dataset_id=DS, entry_id=some[1], quality_score=0.9, quality={"judge": 0.9}, below_threshold=True,
                    duplicate_of=some[2], analyzed=True),
        FeedbackGiven(dataset_id=DS, entry_ids=[some[1], some[2]], feedback_type="content_error", rating=2,
                      comments="no"),
        RegenerationRequested(dataset_id=DS, entry_ids=[some[2]], job_id="job-1"),
        EntryRegenerated(dataset_id=DS, entry_id=some[2], job_id="job-1", answer="better", current=False,
                         quality_score=0.1, replaced_score=0.5),
    ]
    return events


@pytest.mark.parametrize("odd_ids", [False, True], ids=["engine ids", "some ids kept as strings"])
def test_every_field_read_from_the_columns_is_the_views(tmp_path: Path, odd_ids: bool) -> None:
    names = [name for name in EntryView.__struct_fields__]
    for rm in three_ways(tmp_path, _events(odd_ids=odd_ids), cuts=[10, 40, 49], snap_at=45):
        views = rm.datasets.views(DS)
        part = views.order[::-1]  # in another order than the model's
        made = views.rows.entry_views(part)
        assert len(made) == 24
        assert all(any(check(v) for v in made) for check in (  # every kind of value is there to be read
            lambda v: v.set_aside, lambda v: v.feedback, lambda v: v.duplicate_of, lambda v: v.quality_score is None,
            lambda v: v.updated_at != v.created_at, lambda v: len(v.history) > 1, lambda v: v.below_threshold))
        for name in names:
            from_columns = field_values(views.rows, name, part)
            assert msgspec.to_builtins(from_columns) == msgspec.to_builtins([getattr(v, name) for v in made]), name


def test_a_name_that_is_no_field_is_refused(tmp_path: Path) -> None:
    rm = three_ways(tmp_path, _events(odd_ids=False), cuts=[], snap_at=0)[0]
    with pytest.raises(KeyError, match="not a field"):
        field_values(rm.datasets.views(DS).rows, "answer_text", [0])
