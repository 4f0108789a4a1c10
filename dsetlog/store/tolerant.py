"""Replays that go on past a record which passed its checksum but which this version cannot decode.

Such a record (nested too deep for msgspec: ``RecursionError``; none can be written now, see
:mod:`dsetlog.store.limits`) is no corruption: its checksum holds, so no repair would ever remove it, and
refusing it would brick the data dir for good. :func:`read_batches_tolerant` therefore yields it as an
:class:`Unreadable` batch, after checking its seq and checksum by the layout alone, and every other check
and error of :func:`~dsetlog.store.scan.read_batches` stays as it is.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from dsetlog.store.errors import CorruptLogError
from dsetlog.store.layout import Recorded, event_type_of, raw_fields, record_decoder
from dsetlog.store.limits import json_depth
from dsetlog.store.scan import last_line_end, line_chunks, read_located


class Unreadable(NamedTuple):
    """A record that passed its checksum and cannot be decoded: what a reader can say of it."""

    seq: int
    crc: int
    type: str  # its event type ("" when not even that could be read)
    reason: str  # why, in one line


class Batch(NamedTuple):
    recs: list[Recorded]  # empty for an unreadable record
    end: int  # the offset just after the last of them
    unreadable: Unreadable | None = None
    bounds: list[int] = []  # where each record's line starts, and ``end`` (see read_located)


class _Undecodable(NamedTuple):
    """A whole line at [start, end) whose decoding raises (not a plain decode error: RecursionError)."""

    start: int
    end: int
    line: bytes
    last: bool  # no whole line after it (before the end read to)


def read_batches_tolerant(path: Path, *, offset: int = 0, seq: int = 0, until_seq: int | None = None,
                          end: int | None = None, decoder: msgspec.json.Decoder[list[Any]] | None = None,
                          ) -> Iterator[Batch]:
    """:func:`~dsetlog.store.scan.read_located`, with its every check and error, except that a record which passed
    its checksum but which the decoder cannot read (``RecursionError``) comes as an :class:`Unreadable` one."""
    while True:
        try:
            for recs, bounds in read_located(path, offset=offset, seq=seq, until_seq=until_seq, end=end,
                                             decoder=decoder):
                yield Batch(recs, bounds[-1], None, bounds)
                offset, seq = bounds[-1], recs[-1].seq
            return
        except RecursionError:
            found = _find_undecodable(path, offset, end)
            if found is None:
                raise
        if found.start > offset:  # the records before it, with every check
            for recs, bounds in read_located(path, offset=offset, seq=seq, until_seq=until_seq, end=found.start,
                                             decoder=decoder):
                yield Batch(recs, bounds[-1], None, bounds)
                offset, seq = bounds[-1], recs[-1].seq
            if until_seq is not None and seq >= until_seq:
                return
            if offset != found.start:  # what is before it is not valid records, and a record follows
                raise CorruptLogError(path, seq + 1, "not a valid record, and records follow it")
        if until_seq is not None and seq >= until_seq:
            return
        unreadable = _unreadable(path, found, seq + 1)
        if unreadable is None:
            return
        yield Batch([], found.end, unreadable)
        offset, seq = found.end, seq + 1


def _find_undecodable(path: Path, offset: int, end: int | None) -> _Undecodable | None:
    """The first whole line at or after ``offset`` whose decoding raises something other than a decode error."""
    with open(path, "rb", buffering=0) as fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size if end is None else min(end, os.fstat(fd).st_size)
        last_end = last_line_end(fd, size, offset)
        for pos, data, n in line_chunks(fd, offset, last_end):
            try:
                record_decoder.decode_lines(memoryview(data)[:n])
                continue
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                pass  # one line or more to look at one by one
            start = 0
            while start < n:
                stop = data.index(b"\n", start) + 1
                line = data[start : stop - 1]
                try:
                    record_decoder.decode(line)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    pass  # not a valid record: the reader's own checks name it
                except RecursionError:
                    return _Undecodable(pos + start, pos + stop, line, pos + stop == last_end)
                start = stop
    return None


def _unreadable(path: Path, found: _Undecodable, due: int) -> Unreadable | None:
    """Check a line the decoder cannot read by the writer's layout: what can be said of it when its checksum
    and seq hold. Otherwise CorruptLogError, or None when it is the last line (a tail, as for reads)."""
    fields = raw_fields(found.line)
    if fields is None:
        why = "not a record in the log's layout, and nested too deep to decode"
    else:
        seq, crc, event = fields
        if zlib.crc32(event) != crc:
            why = f"checksum mismatch (stored {crc}, event bytes give {zlib.crc32(event)})"
        elif seq != due:
            why = f"seq {seq} where {due} was due"
        else:
            reason = f"RecursionError: nested {json_depth(event)} levels deep, more than this version can decode"
            return Unreadable(seq=due, crc=crc, type=event_type_of(event), reason=reason)
    if found.last:
        return None
    raise CorruptLogError(path, due, why)
