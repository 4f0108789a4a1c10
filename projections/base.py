"""What a projection is: a deterministic fold of the log's records, in order, into read state.

A projection never reads the clock, the environment or another projection:
the same records in the same order give the same state, which is what lets a
read model be rebuilt from scratch, caught up incrementally, or loaded from a
snapshot plus the tail, all with equal results.

Subclass :class:`Projection` and mark handlers with :func:`handles`::

    class Counter(Projection):
        name = "counter"
        version = 1

        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        @handles(QuestionQueued)
        def _queued(self, rec: Recorded, ev: QuestionQueued) -> None:
            self.n += 1

Event types without a handler are ignored, so older code reads newer logs.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from operator import attrgetter
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import msgspec

from dsetlog.store.events import Event
from dsetlog.store.layout import Recorded
from projections.lean import LEAN

Handler = Callable[[Recorded, Any], None]
_encoder = msgspec.msgpack.Encoder()
F = TypeVar("F", bound=Callable[..., None])


_event_of = attrgetter("event")


def event_classes(recs: Iterable[Recorded]) -> Iterator[type[Event]]:
    """The records' event classes, computed in C (a replay asks this of every batch)."""
    return map(type, map(_event_of, recs))


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC inside: folding allocates millions of long-lived objects, and the collections
    they trigger walk everything allocated so far, which makes a big replay quadratic."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@runtime_checkable
class ProjectionProtocol(Protocol):
    """The contract a :class:`~projections.readmodel.ReadModel` relies on."""

    name: str  # the key of this projection's state in a snapshot
    version: int  # bump when the fold or the state's shape changes: old snapshots are then ignored
    # the event classes it folds (a batch with none of them is not handed to it); None: every record
    handled_types: frozenset[type[Event]] | None

    def apply(self, rec: Recorded) -> None: ...

    # bounds: where the records' lines are in the log (see dsetlog.store.scan.read_located), or None
    def apply_batch(self, recs: Sequence[Recorded], bounds: Sequence[int] | None = None) -> None: ...

    def snapshot_state(self) -> Any: ...

    def load_snapshot_state(self, state: Any) -> None: ...

    def snapshot_parts(self) -> Iterable[bytes | memoryview]: ...

    def fresh(self) -> ProjectionProtocol: ...


def handles(*event_types: type[Event]) -> Callable[[F], F]:
    """Mark a method ``(self, rec, ev)`` as the handler of these event types."""
    if not event_types:
        raise TypeError("@handles needs at least one event type, e.g. @handles(QuestionQueued)")

    def mark(fn: F) -> F:
        fn.__handles__ = event_types  # type: ignore[attr-defined]
        return fn

    return mark


class Projection:
    """Base of the standard projections: dispatch by event class to the ``@handles`` methods.

    ``state_type`` is the msgspec type a snapshot's state is decoded into before
    :meth:`load_snapshot_state` sees it (``Any``: plain msgpack values), so a
    projection whose state is Structs gets them validated and built in C.

    ``handled_types`` (the ``@handles`` types) lets the read model skip a batch
    holding none of them; a subclass whose :meth:`apply_batch` wants other
    records too sets it to None. Handlers get ``(rec, ev)``; a subclass that
    overrides :meth:`apply_batch` may call them with other arguments (Datasets
    passes its per-dataset state first).
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    state_type: ClassVar[Any] = Any
    _handler_names: ClassVar[dict[type[Event], str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[type[Event], str] = {}
        for klass in reversed(cls.__mro__):  # subclasses override their bases' handlers
            for attr, fn in vars(klass).items():
                for event_type in getattr(fn, "__handles__", ()):
                    found[event_type] = attr
        cls._handler_names = found

    def __init__(self) -> None:
        if not self.name:
            raise TypeError(f"{type(self).__name__} needs a class attribute `name` (its snapshot key)")
        # bound once: a dict lookup plus a call is the whole cost of dispatch
        self._handlers: dict[type[Event], Handler] = {
            event_type: getattr(self, attr) for event_type, attr in self._handler_names.items()
        }
        # a replay decodes some events as lean classes (projections.lean): the same handler folds them
        for full, lean in LEAN.items():
            if full in self._handlers:
                self._handlers[lean] = self._handlers[full]
        self.handled_types: frozenset[type[Event]] | None = frozenset(self._handlers)

    @property
    def handlers(self) -> dict[type[Event], Handler]:
        """Event class -> bound handler ``(rec, ev)``."""
        return self._handlers

    def apply(self, rec: Recorded) -> None:
        """Fold one record: :meth:`apply_batch` of one (a subclass overrides that one only)."""
        self.apply_batch((rec,))

    def apply_batch(self, recs: Sequence[Recorded], bounds: Sequence[int] | None = None) -> None:
        """Fold records in order; the same result as :meth:`apply` on each, with less overhead per record.

        ``bounds``: where their lines are in the log, for a projection that keeps that (Datasets)."""
        get = self._handlers.get
        for rec in recs:
            ev = rec.event
            handler = get(ev.__class__)
            if handler is not None:
                handler(rec, ev)

    # True while the read model folds a long stretch of the log (a replay): a projection may keep what only
    # speeds folding, and drop it in settle(), which the model calls after that stretch
    bulk = False

    def settle(self) -> None:
        """The long stretch is folded: drop what only sped it up."""

    def snapshot_state(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement snapshot_state()")

    def load_snapshot_state(self, state: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement load_snapshot_state()")

    def snapshot_parts(self) -> Iterable[bytes | memoryview]:
        """The msgpack of :meth:`snapshot_state` in pieces; override to stream a big state to the file."""
        return (_encoder.encode(self.snapshot_state()),)

    def fresh(self) -> Projection:
        """A new, empty projection of the same kind (for rebuilds and time travel)."""
        return type(self)()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} v{self.version}>"
