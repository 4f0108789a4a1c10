"""The standard projections, and a model's access to its projections by class or by name.

:class:`StandardProjections` is what a read model (:class:`~projections.readmodel.ReadModel`) offers its
readers: ``rm.datasets``, ``rm.get(Datasets)``, ``rm["datasets"]``, over the tuple it folds into.
"""

from __future__ import annotations

from typing import TypeVar

from projections.base import ProjectionProtocol
from projections.batches import Batches
from projections.datasets import Datasets
from projections.endpoints import Endpoints
from projections.evaluations import Evaluations
from projections.jobs import Jobs
from projections.projects import Projects
from projections.stats import EventStats

P = TypeVar("P", bound=ProjectionProtocol)


def standard_projections() -> list[ProjectionProtocol]:
    """New, empty instances of every standard projection."""
    return [EventStats(), Datasets(), Projects(), Jobs(), Evaluations(), Endpoints(), Batches()]


class StandardProjections:
    """Access to the projections a model holds (``_projections``: it may replace them, when it rebuilds)."""

    _projections: tuple[ProjectionProtocol, ...]

    @property
    def projections(self) -> tuple[ProjectionProtocol, ...]:
        return self._projections

    def get(self, cls: type[P]) -> P:
        """The projection of this class."""
        for p in self._projections:
            if isinstance(p, cls):
                return p
        raise KeyError(
            f"no {cls.__name__} projection in this read model; pass one in ReadModel.open(projections=...)"
        )

    def __getitem__(self, name: str) -> ProjectionProtocol:
        for p in self._projections:
            if p.name == name:
                return p
        raise KeyError(f"no projection named {name!r}; these exist: {[p.name for p in self._projections]}")

    @property
    def datasets(self) -> Datasets:
        return self.get(Datasets)

    @property
    def projects(self) -> Projects:
        return self.get(Projects)

    @property
    def jobs(self) -> Jobs:
        return self.get(Jobs)

    @property
    def evaluations(self) -> Evaluations:
        return self.get(Evaluations)

    @property
    def stats(self) -> EventStats:
        return self.get(EventStats)

    @property
    def endpoints(self) -> Endpoints:
        return self.get(Endpoints)

    @property
    def batches(self) -> Batches:
        return self.get(Batches)
