"""EntryIndex's orders and filters over the read model's columns, against the definition on the views."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from helpers import append

from api.entry_index import DIFFICULTY_RANK, EntryIndex
from api.schemas import EntriesQuery
from dsetlog.ids import entry_id_for
from dsetlog.store.events import DatasetCreated, EntryEdited, EntryGenerated, EntryScored, QuestionQueued
from projections import ReadModel
from projections.views import EntryView

DS = "ds"
CATEGORIES = ["Science", "science", "Math", "", "History", "ÉTUDES", "études"]
DIFFICULTIES = ["beginner", "expert", "", "intermediate", "advanced", "unheard-of"]


def _log(data: Path, *, odd_ids: bool, n: int = 400) -> None:
    rng = random.Random(11)
    events: list[Any] = [DatasetCreated(dataset_id=DS, name="qs")]
    items = [f"q_{rng.getrandbits(64):016x}" for _ in range(n)]
    events += [QuestionQueued(dataset_id=DS, item_id=item, question=f"q{i}", row=i) for i, item in enumerate(items)]
    order = list(range(n))
    rng.shuffle(order)  # entries in another order than their items
    for i in order:
        entry_id = f"e-{rng.getrandbits(20):05x}-{i}" if odd_ids and i % 3 == 0 else entry_id_for(items[i])
        score = None if i % 7 == 0 else rng.choice([0.25, 0.5, 0.75, 0.9, rng.random()])
        events.append(EntryGenerated(dataset_id=DS, item_id=items[i], entry_id=entry_id, question=f"q{i}",
                                     answer=f"a{i}", category=rng.choice(CATEGORIES), quality_score=score,
                                     difficulty=rng.choice(DIFFICULTIES)))
    append(data, *events[: len(events) // 2])
    append(data, *events[len(events) // 2 :])  # two appends: two timestamps
    rm = ReadModel.open(data)
    picked = rng.sample(rm.datasets.entries(DS), 40)
    append(data, *(EntryEdited(dataset_id=DS, entry_id=e.id, category="Zoology") for e in picked[:20]))
    append(data, *(EntryScored(dataset_id=DS, entry_id=e.id, quality_score=0.1) for e in picked[20:30]))


def _reference(entries: list[EntryView], sort_by: str, descending: bool) -> list[str]:
    if sort_by == "position":
        ids = [e.id for e in entries]
        return ids[::-1] if descending else ids
    key: dict[str, Any] = {
        "quality": lambda e: e.quality_score,
        "category": lambda e: e.category.casefold() or None,
        "difficulty": lambda e: DIFFICULTY_RANK.get(e.difficulty, 9) if e.difficulty else None,
        "updated": lambda e: e.updated_at,
    }[sort_by]
    by_id = sorted(entries, key=lambda e: e.id)
    known = [e for e in by_id if key(e) is not None]
    known.sort(key=key, reverse=descending)  # stable: ties in id order
    return [e.id for e in known] + [e.id for e in by_id if key(e) is None]


@pytest.mark.parametrize("odd_ids", [False, True], ids=["engine-ids", "hand-made-ids"])
def test_every_order_is_the_definition(tmp_path: Path, odd_ids: bool) -> None:
    _log(tmp_path, odd_ids=odd_ids)
    rm = ReadModel.open(tmp_path)
    entries = rm.datasets.entries(DS)
    with rm.lock:
        index = EntryIndex(rm, DS)
        assert len(index) == len(entries) == 400
        for sort_by in ("quality", "category", "difficulty", "position", "updated"):
            for descending in (False, True):
                got = [index.entry_id(i) for i in index.order(sort_by, "desc" if descending else "asc")]
                assert got == _reference(entries, sort_by, descending), (sort_by, descending)


def test_filters_are_the_definition(tmp_path: Path) -> None:
    _log(tmp_path, odd_ids=True)
    rm = ReadModel.open(tmp_path)
    entries = {e.id: e for e in rm.datasets.entries(DS)}
    cases = [{"category": "SCIENCE"}, {"category": "études"}, {"difficulty": "expert"}, {"min_quality": 0.5},
             {"max_quality": 0.5}, {"filter_quality": 0.75, "category": "zoology"}, {"flagged": False},
             {"difficulty": "unheard-of", "max_quality": 0.9}]
    with rm.lock:
        index = EntryIndex(rm, DS)
        for case in cases:
            positions, _ = index.query(rm, EntriesQuery(sort_by="position", **case))  # type: ignore[arg-type]
            low = max(case.get("filter_quality", 0.0), case.get("min_quality", 0.0))
            high = case.get("max_quality")

            def keep(e: EntryView, case: dict[str, Any] = case, low: float = low, high: Any = high) -> bool:
                score = e.quality_score
                return ((low == 0.0 or (score is not None and score >= low))
                        and (high is None or (score is not None and score <= high))
                        and ("category" not in case or e.category.casefold() == case["category"].casefold())
                        and ("difficulty" not in case or e.difficulty == case["difficulty"])
                        and ("flagged" not in case or e.flagged == case["flagged"]))

            assert [index.entry_id(i) for i in positions] == [i for i, e in entries.items() if keep(e)], case
