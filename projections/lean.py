"""What a replay decodes: every event as it is logged, less the fields that no projection folds.

An EntryGenerated line is mostly its texts (a question, an answer of ~600 characters, reasoning), and a
QuestionQueued line its question. The read model keeps where each entry's and work item's texts are (the line
of the record that wrote them) and reads them from the log when a page, an export, a search or a bookmark
needs them (:mod:`projections.texts`), so a replay need not build them: it decodes those events as Structs
with every other field, and msgspec skips the texts without making a string of them. The lean Struct is derived here from the event's own fields: the schema is declared once,
in :mod:`dsetlog.store.events`, and a field added there is folded here too.

Handlers keep naming the event classes (``@handles(EntryGenerated)``): :class:`~projections.base.Projection`
routes the lean class to the same handler. A handler must not read a field left out here.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from dsetlog.store.events import EVENT_TYPES, EntryGenerated, Event, QuestionQueued, SlotQueued
from dsetlog.store.layout import Recorded

# event class -> the fields a replay skips (read from the log by projections.texts when needed)
SKIPPED: dict[type[Event], frozenset[str]] = {
    EntryGenerated: frozenset({"question", "answer", "reasoning"}),
    QuestionQueued: frozenset({"question"}),  # a work item's question: ReadModel.questions
    SlotQueued: frozenset({"question"}),
}


def _lean(cls: type[Event], skipped: frozenset[str]) -> type[Event]:
    fields: list[tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(cls):
        if f.name in skipped:
            continue
        if f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
        elif f.default is not msgspec.NODEFAULT:
            fields.append((f.name, f.type, f.default))
        else:
            fields.append((f.name, f.type, msgspec.field()))
    # the same name, so the same tag: it decodes exactly the lines the full class does
    return msgspec.defstruct(cls.__name__, fields, bases=(Event,), module=__name__, frozen=True, kw_only=True)


# full class -> lean class
LEAN: dict[type[Event], type[Event]] = {cls: _lean(cls, skipped) for cls, skipped in SKIPPED.items()}
FOLDED_TYPES: tuple[type[Event], ...] = tuple(LEAN.get(cls, cls) for cls in EVENT_TYPES)
FoldedEvent = Union[FOLDED_TYPES]  # type: ignore[valid-type]  # noqa: UP007 - built at run time


class FoldRecorded(Recorded, frozen=True):
    """A record as a replay decodes it: its event lean where :data:`SKIPPED` says so."""

    event: FoldedEvent  # type: ignore[valid-type]


fold_decoder: msgspec.json.Decoder[FoldRecorded] = msgspec.json.Decoder(FoldRecorded)
