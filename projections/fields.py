"""An entry field's values for many rows at once, read from a dataset's columns (:class:`~projections.columns.Rows`).

What :meth:`Rows.entry_views` puts into each view, a column at a time: an export of millions wants a dozen of a
view's 33 fields, and reading each as one C loop over its column (``map`` of the array's ``__getitem__``) costs
a fraction of making the views. :func:`field_values` of a field equals that field of the views of the same rows
(tests/projections/test_fields.py holds it for every field).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from projections.columns import ANALYZED, BELOW_THRESHOLD, FLAGGED, SIMULATED, Rows, Views
from projections.views import FeedbackView

Part = Sequence[int]  # entry rows (an array slice of Views.order)

# fields kept as Strings codes, as numbers, and as flag bits
_STRING_FIELDS = ("category", "model", "provider", "prompt_name", "prompt_hash", "source_chunk", "difficulty", "run_id",
                  "regeneration_job_id")
_NUMBER_FIELDS = ("question_at", "answer_at", "reasoning_at", "prompt_tokens", "completion_tokens", "latency_ms",
                  "revision")
_FLAG_FIELDS = {"simulated": SIMULATED, "flagged": FLAGGED, "below_threshold": BELOW_THRESHOLD,
                "quality_analyzed": ANALYZED}


def field_values(rows: Rows, name: str, part: Part) -> list[Any]:
    """The ``name`` field (an EntryView field's name) of the entries at these rows, in their order."""
    e = rows.entries
    if name in _STRING_FIELDS:
        return list(map(rows.strings.values.__getitem__, map(getattr(e, name).__getitem__, part)))
    if name in _NUMBER_FIELDS:
        return list(map(getattr(e, name).__getitem__, part))
    if name in _FLAG_FIELDS:
        bit, flags = _FLAG_FIELDS[name], e.flags
        return [bool(flags[r] & bit) for r in part]
    read = _OTHERS.get(name)
    if read is None:
        raise KeyError(f"{name!r} is not a field of an entry's view (projections.views.EntryView)")
    return read(rows, part)


def fields_of(views: Views, names: Sequence[str]) -> dict[str, list[Any]]:
    """These fields of the entries of ``views``, in their order: a list each by name."""
    return {name: field_values(views.rows, name, views.order) for name in names}


def _ids(rows: Rows, part: Part) -> list[str]:
    e = rows.entries
    if e.odd_ids:
        return [rows.entry_id(r) for r in part]
    digits = rows.items.ids.digits  # every id is the engine's entry_<its item's digits>
    return [f"entry_{d:016x}" for d in map(digits.__getitem__, map(e.item.__getitem__, part))]


def _item_ids(rows: Rows, part: Part) -> list[str]:
    return list(map(rows.items.ids.id, map(rows.entries.item.__getitem__, part)))


def _scores(rows: Rows, part: Part) -> list[float | None]:
    return [None if x != x else x for x in map(rows.entries.quality_score.__getitem__, part)]  # NaN: none


def _created(rows: Rows, part: Part) -> list[str]:
    return list(map(rows.times.text, map(rows.entries.created_at.__getitem__, part)))


def _updated(rows: Rows, part: Part) -> list[str]:
    e, text = rows.entries, rows.times.text
    if not e.updated_at:
        return _created(rows, part)
    created, updated = e.created_at, e.updated_at.get
    return [text(updated(r, created[r])) for r in part]


def _shared(table: str, column: str) -> Callable[[Rows, Part], list[Any]]:
    def read(rows: Rows, part: Part) -> list[Any]:
        return list(map(getattr(rows, table).values.__getitem__, map(getattr(rows.entries, column).__getitem__, part)))

    return read


def _by_row(column: str) -> Callable[[Rows, Part], list[Any]]:
    def read(rows: Rows, part: Part) -> list[Any]:
        values = getattr(rows.entries, column)
        return list(map(values.get, part)) if values else [None] * len(part)

    return read


def _feedback(rows: Rows, part: Part) -> list[FeedbackView | None]:
    get = rows.entries.feedback.get
    return [None if (fb := get(r)) is None else FeedbackView(fb.count, list(fb.ratings), list(fb.comments),
                                                             list(fb.types)) for r in part]


def _history(rows: Rows, part: Part) -> list[tuple[int, ...]]:
    first, later = rows.entries.first_seq, rows.entries.history.get
    return [(first[r], *later(r, ())) for r in part]


_OTHERS: dict[str, Callable[[Rows, Part], list[Any]]] = {
    "id": _ids,
    "dataset_id": lambda rows, part: [rows.dataset_id] * len(part),
    "item_id": _item_ids,
    "quality_score": _scores,
    "quality": _shared("qualities", "quality"),
    "metadata": _shared("metadata", "metadata"),
    "created_at": _created,
    "updated_at": _updated,
    "feedback": _feedback,
    "history": _history,
    "duplicate_of": _by_row("duplicate_of"),
    "set_aside": _by_row("set_aside"),
}

