"""Endpoints: what the log has learned about the model servers it called (their structured-output modes)."""

from __future__ import annotations

import msgspec

from dsetlog.store.events import StructuredModeLearned
from dsetlog.store.layout import Recorded
from projections.base import Projection, handles


class LearnedMode(msgspec.Struct, array_like=True):
    endpoint: str
    model: str
    mode: str
    reason: str
    seq: int


class EndpointsState(msgspec.Struct, array_like=True):
    modes: list[LearnedMode]


class Endpoints(Projection):
    """The structured-output mode learned for each (endpoint, model): the last one recorded stands."""

    name = "endpoints"
    version = 1
    state_type = EndpointsState

    def __init__(self) -> None:
        super().__init__()
        self._modes: dict[tuple[str, str], LearnedMode] = {}

    @handles(StructuredModeLearned)
    def _learned(self, rec: Recorded, ev: StructuredModeLearned) -> None:
        self._modes[(ev.endpoint, ev.model)] = LearnedMode(ev.endpoint, ev.model, ev.mode, ev.reason, rec.seq)

    def modes(self) -> list[LearnedMode]:
        """Every learned mode, oldest first."""
        return sorted(self._modes.values(), key=lambda m: m.seq)

    def mode(self, endpoint: str, model: str) -> str | None:
        found = self._modes.get((endpoint, model))
        return found.mode if found is not None else None

    def snapshot_state(self) -> EndpointsState:
        return EndpointsState(self.modes())

    def load_snapshot_state(self, state: EndpointsState) -> None:
        self._modes = {(m.endpoint, m.model): m for m in state.modes}
