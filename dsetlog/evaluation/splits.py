"""Train / validation / test splits: seeded, stratified by category, leak-free across near-duplicates."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import msgspec

from dsetlog.evaluation.quality import DIFFICULTIES

SPLITS = ("train", "validation", "test")


class SplitInput(msgspec.Struct, frozen=True, kw_only=True):
    entry_id: str
    category: str
    group: str | None = None  # near-duplicate cluster id: a group never straddles two splits


class DifficultyInput(msgspec.Struct, frozen=True, kw_only=True):
    entry_id: str
    difficulty: str | None  # None: not rated


def assign_splits(
    entries: Sequence[SplitInput], *, ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int
) -> dict[str, str]:
    """entry_id -> "train" / "validation" / "test".

    Systematic stratified allocation: groups are ordered by category (then shuffled
    by the seed within it) and each goes to the split furthest below its share of
    everything placed so far. Every category is spread over the splits in
    proportion (within an entry or so of its quota), and many small categories do
    not all fall into train, as rounding each category on its own would do. Entries
    sharing a ``group`` go to one split together, in the stratum of their most
    common category. The result depends on the entries and the seed only.
    """
    _check_ratios(ratios)
    _check_unique(entries)
    assignment: dict[str, str] = {}
    filled = [0] * len(SPLITS)
    for category, groups in sorted(_strata(entries).items()):
        random.Random(f"{seed}\x00{category}").shuffle(groups)
        for members in groups:
            placed = sum(filled) + len(members)
            i = max(range(len(SPLITS)), key=lambda s: (ratios[s] * placed - filled[s], ratios[s], -s))
            filled[i] += len(members)
            for entry_id in members:
                assignment[entry_id] = SPLITS[i]
    return assignment


def _check_ratios(ratios: Sequence[float]) -> None:
    if len(ratios) != len(SPLITS):
        raise ValueError(f"ratios needs {len(SPLITS)} values (train, validation, test), got {len(ratios)}")
    if any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ValueError(f"ratios must be non-negative and sum to 1 (got {tuple(ratios)})")


def _check_unique(entries: Sequence[SplitInput]) -> None:
    counts = Counter(e.entry_id for e in entries)
    repeated = [entry_id for entry_id, n in counts.items() if n > 1]
    if repeated:
        raise ValueError(f"entry ids given more than once: {', '.join(sorted(repeated)[:5])}")


def _strata(entries: Sequence[SplitInput]) -> dict[str, list[list[str]]]:
    """Groups of entry ids (sorted, so input order does not matter) by their most common category."""
    groups: dict[str, list[SplitInput]] = defaultdict(list)
    for entry in entries:
        # "\x00" cannot start a caller's group id, so ungrouped entries never merge with a group
        groups[entry.group if entry.group is not None else "\x00" + entry.entry_id].append(entry)
    strata: dict[str, list[list[str]]] = defaultdict(list)
    for key in sorted(groups):
        members = groups[key]
        counts = Counter(m.category for m in members)
        category = min(counts, key=lambda c: (-counts[c], c))
        strata[category].append(sorted(m.entry_id for m in members))
    return strata


def largest_remainder(total: int, ratios: Sequence[float]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``ratios`` (Hamilton's method); ties go to earlier parts."""
    scale = sum(ratios)  # ratios within tolerance of summing to 1 must not create or lose an entry
    quotas = [total * r / scale for r in ratios]
    parts = [math.floor(q + 1e-9) for q in quotas]
    by_remainder = sorted(range(len(ratios)), key=lambda i: (-(quotas[i] - parts[i]), i))
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


def difficulty_buckets(entries: Iterable[DifficultyInput]) -> dict[str, list[str]]:
    """Entry ids by difficulty, in DIFFICULTIES order; entries without one go to "unrated" (only if any)."""
    buckets: dict[str, list[str]] = {level: [] for level in DIFFICULTIES}
    for entry in entries:
        if entry.difficulty is None:
            buckets.setdefault("unrated", []).append(entry.entry_id)
        elif entry.difficulty in buckets and entry.difficulty != "unrated":
            buckets[entry.difficulty].append(entry.entry_id)
        else:
            raise ValueError(f"entry {entry.entry_id!r}: unknown difficulty {entry.difficulty!r}")
    return buckets
