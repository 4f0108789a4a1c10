"""The records a read model's fold skipped: they passed their checksum, and could not be folded.

This version cannot decode one (nested too deep: ``RecursionError``), or a projection's handler raised on
it. Each is logged as an error and counted; the first :data:`SKIPPED_KEPT` are described (in the model,
its snapshot and the API's /health). See :mod:`projections.readmodel` for why they are skipped, not refused.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

SKIPPED_KEPT = 100  # skipped records described (in the model, the snapshot and /health); the count is exact
_log = logging.getLogger("projections")


class SkippedRecord(msgspec.Struct, frozen=True):
    """A record that passed its checksum and was not folded: this version cannot decode it, or a handler raised."""

    seq: int
    type: str  # its event type ("" when not even that could be read)
    reason: str  # the exception, in one line
    projection: str = ""  # the projection whose handler raised; "": undecodable, no projection folded it


class Skipped:
    """The exact count of skipped records and the first :data:`SKIPPED_KEPT` of them, for one log."""

    def __init__(self, path: Path, count: int = 0, first: list[SkippedRecord] | None = None) -> None:
        self.path, self.count = path, count
        self.first: list[SkippedRecord] = list(first or ())

    def add(self, skipped: SkippedRecord) -> None:
        """Count one, keep it if there is room, and say so in the log."""
        self.count += 1
        if len(self.first) < SKIPPED_KEPT:
            self.first.append(skipped)
        who = f"projection {skipped.projection!r}" if skipped.projection else "every projection"
        _log.error("%s: record %d (%s) passed its checksum but was not folded by %s: %s. It stays in the log; "
                   "the read model goes on without it", self.path, skipped.seq, skipped.type or "unknown type",
                   who, skipped.reason)
