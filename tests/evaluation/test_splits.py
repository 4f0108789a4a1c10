"""Splits: stratified proportions, whole groups, seeding, validation, difficulty buckets."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from dsetlog.evaluation.splits import (
    SPLITS,
    DifficultyInput,
    SplitInput,
    assign_splits,
    difficulty_buckets,
    largest_remainder,
)

SIZES = {"Cardiology": 100, "Neurology": 37, "Endocrinology": 5, "Other": 1}


def _entries(groups: bool = False) -> list[SplitInput]:
    rng = random.Random(3)
    entries = []
    for category, size in SIZES.items():
        for i in range(size):
            group = f"g{rng.randrange(40)}" if groups and rng.random() < 0.5 else None
            entries.append(SplitInput(entry_id=f"{category}-{i}", category=category, group=group))
    return entries


def _counts(entries: list[SplitInput], assignment: dict[str, str]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for entry in entries:
        counts[entry.category][assignment[entry.entry_id]] += 1
    return counts


def test_every_category_is_split_by_the_ratios() -> None:
    entries = _entries()
    assignment = assign_splits(entries, seed=1)
    assert set(assignment) == {e.entry_id for e in entries}
    for category, counts in _counts(entries, assignment).items():
        expected = largest_remainder(SIZES[category], (0.8, 0.1, 0.1))
        assert all(abs(counts[s] - e) <= 1 for s, e in zip(SPLITS, expected, strict=True)), (category, counts)
    overall = Counter(assignment.values())
    assert [overall[s] for s in SPLITS] == largest_remainder(len(entries), (0.8, 0.1, 0.1))
    assert largest_remainder(100, (0.8, 0.1, 0.1)) == [80, 10, 10]
    assert largest_remainder(37, (0.8, 0.1, 0.1)) == [29, 4, 4]  # 29.6, 3.7, 3.7
    assert largest_remainder(5, (0.8, 0.1, 0.1)) == [4, 1, 0]


def test_many_small_categories_do_not_all_fall_into_train() -> None:
    entries = [SplitInput(entry_id=f"e{i}", category=f"topic-{i}") for i in range(20)]
    overall = Counter(assign_splits(entries, seed=0).values())
    assert [overall[s] for s in SPLITS] == [16, 2, 2]


def test_custom_ratios_are_used() -> None:
    entries = _entries()
    counts = _counts(entries, assign_splits(entries, ratios=(0.5, 0.25, 0.25), seed=1))
    assert [counts["Cardiology"][s] for s in SPLITS] == [50, 25, 25]
    counts = _counts(entries, assign_splits(entries, ratios=(1.0, 0.0, 0.0), seed=1))
    assert all(c["train"] == SIZES[cat] for cat, c in counts.items())


def test_groups_never_straddle_splits_and_proportions_stay_close() -> None:
    entries = _entries(groups=True)
    assignment = assign_splits(entries, seed=7)
    by_group: dict[str, set[str]] = defaultdict(set)
    for entry in entries:
        if entry.group is not None:
            by_group[entry.group].add(assignment[entry.entry_id])
    assert by_group and all(len(splits) == 1 for splits in by_group.values())
    train_share = sum(1 for s in assignment.values() if s == "train") / len(assignment)
    assert abs(train_share - 0.8) < 0.08


def test_seeded_and_independent_of_input_order() -> None:
    entries = _entries(groups=True)
    first = assign_splits(entries, seed=42)
    shuffled = entries[:]
    random.Random(0).shuffle(shuffled)
    assert assign_splits(shuffled, seed=42) == first
    assert assign_splits(entries, seed=43) != first


@pytest.mark.parametrize("ratios", [(0.8, 0.1), (0.8, 0.2, 0.2), (1.2, -0.1, -0.1)])
def test_bad_ratios_are_refused(ratios: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="ratios"):
        assign_splits(_entries(), ratios=ratios, seed=1)


def test_repeated_entry_ids_are_refused() -> None:
    entry = SplitInput(entry_id="e1", category="A")
    with pytest.raises(ValueError, match="e1"):
        assign_splits([entry, entry], seed=1)


def test_difficulty_buckets() -> None:
    entries = [
        DifficultyInput(entry_id="a", difficulty="expert"),
        DifficultyInput(entry_id="b", difficulty="beginner"),
        DifficultyInput(entry_id="c", difficulty="expert"),
    ]
    assert difficulty_buckets(entries) == {
        "beginner": ["b"],
        "intermediate": [],
        "advanced": [],
        "expert": ["a", "c"],
    }
    assert difficulty_buckets([*entries, DifficultyInput(entry_id="d", difficulty=None)])["unrated"] == ["d"]
    with pytest.raises(ValueError, match="unknown difficulty"):
        difficulty_buckets([DifficultyInput(entry_id="e", difficulty="medium")])
