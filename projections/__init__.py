"""Read models folded from the event log: see :class:`ReadModel` and the standard projections."""

from projections.base import Projection, ProjectionProtocol, gc_paused, handles
from projections.datasets import (
    DONE,
    FAILED,
    ITEM_STATUSES,
    PENDING,
    Datasets,
    DatasetView,
    EntryView,
    FeedbackView,
    ItemView,
    RunView,
)
from projections.readmodel import (
    SNAPSHOT_DIR,
    SNAPSHOT_NAME,
    ReadModel,
    fingerprint,
    record_ends_at,
    standard_projections,
)
from projections.stats import EventStats

__all__ = [
    "DONE",
    "FAILED",
    "ITEM_STATUSES",
    "PENDING",
    "SNAPSHOT_DIR",
    "SNAPSHOT_NAME",
    "DatasetView",
    "Datasets",
    "EntryView",
    "EventStats",
    "FeedbackView",
    "ItemView",
    "Projection",
    "ProjectionProtocol",
    "ReadModel",
    "RunView",
    "fingerprint",
    "gc_paused",
    "handles",
    "record_ends_at",
    "standard_projections",
]
