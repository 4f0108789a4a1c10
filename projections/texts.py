"""Entry texts, read from the log where the read model says they are.

The read model keeps no entry's question, answer or reasoning: it keeps, for each, where the record that
wrote it sits in the log (a line ref, :func:`dsetlog.store.scan.line_ref`), and :func:`iter_full` reads
them back when a page, an export, a search or a job needs them. The log is the store; nothing else holds
the texts.

Reads are made in the log's order, neighbouring lines by one ``pread``, and each line is checked as a replay
checks it (its checksum) and must be the record its ref was taken from (an event naming the entry): a log
rewritten under a model (`dset log repair`) is caught, never read as the wrong text.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec
from msgspec.structs import astuple

from dsetlog.store.errors import LogError
from dsetlog.store.scan import read_lines, ref_start
from projections.datasets import EntryView, FullEntry

TEXTS_CHUNK = 2048  # entries whose texts iter_full reads at a time


class StaleTextError(LogError):
    """A ref does not point at the record it was taken from: the log changed under the read model."""


class _Line(msgspec.Struct, gc=False):
    seq: int
    crc: int
    event: msgspec.Raw


class _Texts(msgspec.Struct, gc=False):
    """The text fields of the events that write an entry's content; the rest of the event is skipped."""

    entry_id: str = ""
    question: str | None = None
    answer: str | None = None
    reasoning: str | None = None


_line_decoder = msgspec.json.Decoder(_Line)
_texts_decoder = msgspec.json.Decoder(_Texts)


def iter_full(path: Path, entries: Iterable[EntryView], *, chunk: int = TEXTS_CHUNK) -> Iterator[FullEntry]:
    """These entries with their texts, ``chunk`` at a time (an export of millions holds one chunk's texts).

    :class:`StaleTextError` when the log at ``path`` no longer holds a text where the entry's ref says.
    """
    it = iter(entries)
    while part := list(itertools.islice(it, chunk)):
        owners: dict[int, str] = {}
        for e in part:
            for at in (e.question_at, e.answer_at, e.reasoning_at):
                if not at:
                    raise StaleTextError(f"entry {e.id} was folded without its place in the log (records fed to a "
                                         "projection by hand?): open it with ReadModel.open to read its texts")
                owners[at] = e.id
        try:
            lines = read_lines(path, owners)
        except FileNotFoundError:
            raise StaleTextError(f"the log {path} is gone: entry texts cannot be read") from None
        found = {at: _decode(path, at, line, owners[at]) for at, line in lines.items()}
        for e in part:
            yield FullEntry(*astuple(e), found[e.question_at].question or "", found[e.answer_at].answer or "",
                            found[e.reasoning_at].reasoning or "")


def _decode(path: Path, at: int, line: bytes, entry_id: str) -> _Texts:
    try:
        rec = _line_decoder.decode(line)
        texts = _texts_decoder.decode(rec.event) if zlib.crc32(rec.event) == rec.crc else None
    except msgspec.DecodeError:
        texts = None
    if texts is None or texts.entry_id != entry_id:
        raise StaleTextError(
            f"the log {path} changed under the read model: byte {ref_start(at)} no longer holds the record that "
            f"wrote entry {entry_id} (was it repaired?); catch up and read again")
    return texts
