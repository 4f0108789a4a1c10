"""Read models folded from the event log: see :class:`ReadModel` and the standard projections."""

from projections.base import Projection, ProjectionProtocol, gc_paused, handles
from projections.datasets import DONE, FAILED, ITEM_STATUSES, PENDING, Datasets
from projections.evaluations import BenchmarkView, Evaluations, SplitsView
from projections.jobs import (
    JOB_CANCELLED,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_PENDING,
    JOB_RUNNING,
    JOB_STATUSES,
    TERMINAL_JOB_STATUSES,
    Jobs,
    JobView,
)
from projections.projects import (
    CATEGORY_PATH_SEP,
    ChunkView,
    DocumentView,
    ParametersView,
    Projects,
    ProjectView,
    PromptView,
    TaxonomyView,
    flat_categories,
)
from projections.readmodel import ReadModel
from projections.snapshot import SNAPSHOT_DIR, SNAPSHOT_NAME, fingerprint
from projections.standard import standard_projections
from projections.stats import EventStats
from projections.views import DatasetView, EntryView, FeedbackView, FullEntry, ItemView, RunView

__all__ = [
    "BenchmarkView",
    "Evaluations",
    "SplitsView",
    "CATEGORY_PATH_SEP",
    "DONE",
    "FAILED",
    "ITEM_STATUSES",
    "JOB_CANCELLED",
    "JOB_COMPLETED",
    "JOB_FAILED",
    "JOB_PENDING",
    "JOB_RUNNING",
    "JOB_STATUSES",
    "PENDING",
    "SNAPSHOT_DIR",
    "SNAPSHOT_NAME",
    "TERMINAL_JOB_STATUSES",
    "ChunkView",
    "DatasetView",
    "Datasets",
    "DocumentView",
    "EntryView",
    "EventStats",
    "FeedbackView",
    "FullEntry",
    "ItemView",
    "JobView",
    "Jobs",
    "ParametersView",
    "ProjectView",
    "Projection",
    "ProjectionProtocol",
    "Projects",
    "PromptView",
    "ReadModel",
    "RunView",
    "TaxonomyView",
    "fingerprint",
    "flat_categories",
    "gc_paused",
    "handles",
    "standard_projections",
]
