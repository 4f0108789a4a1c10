"""EventStats: how many events of each type the log holds, and its first and last record."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import msgspec

from dsetlog.store.layout import Recorded
from projections.base import Projection, event_classes


class StatsState(msgspec.Struct, array_like=True):
    counts: dict[str, int]
    first_ts: str | None
    last_ts: str | None
    last_seq: int


class EventStats(Projection):
    """Counts by event type, first/last timestamp and last seq; every record counts, handled elsewhere or not."""

    name = "stats"
    version = 1
    state_type = StatsState

    def __init__(self) -> None:
        super().__init__()
        self.handled_types = None  # every record counts
        self._counts: Counter[str] = Counter()
        self.first_ts: str | None = None
        self.last_ts: str | None = None
        self.last_seq = 0

    @property
    def counts(self) -> dict[str, int]:
        """Event type name -> count, most frequent first (ties by name)."""
        return dict(sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def apply_batch(self, recs: Sequence[Recorded], bounds: Sequence[int] | None = None) -> None:
        if not recs:
            return
        # counted by class in C (Counter over attrgetter), then a handful of classes turned into names
        counts = self._counts
        for cls, n in Counter(event_classes(recs)).items():
            counts[cls.__name__] += n
        if self.first_ts is None:
            self.first_ts = recs[0].ts
        last = recs[-1]
        self.last_ts, self.last_seq = last.ts, last.seq

    def snapshot_state(self) -> StatsState:
        return StatsState(self.counts, self.first_ts, self.last_ts, self.last_seq)

    def load_snapshot_state(self, state: StatsState) -> None:
        self._counts = Counter(state.counts)
        self.first_ts, self.last_ts, self.last_seq = state.first_ts, state.last_ts, state.last_seq
