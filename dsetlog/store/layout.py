"""The log's line format: how a record is written, read back, checked and explained.

Each line is an envelope written in one fixed layout::

    {"seq":N,"ts":"2026-11-23T06:22:10.123456Z","crc":C,"event":{...}}

``seq`` is gap-free from 1, ``ts`` is UTC, ``crc`` is the CRC32 of the exact event bytes. This module
encodes such lines (:func:`encode_records`), decodes and checks one (:func:`parse_line`) or a buffer of
them in C (:func:`count_checked`), and says in words why a line is refused (:func:`why_bad`). It reads
no file: :mod:`dsetlog.store.scan` does, with these.
"""

from __future__ import annotations

import operator
import re
import time
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from dsetlog import redaction
from dsetlog.store.events import AnyEvent, Event

_crc_of = operator.attrgetter("crc")
_event_of = operator.attrgetter("event")


class Recorded(msgspec.Struct, frozen=True):
    """An event as it sits in the log: its position, commit time and checksum."""

    seq: int
    ts: str
    crc: int
    event: AnyEvent  # type: ignore[valid-type]


class _Envelope(msgspec.Struct, gc=False):
    """A line with its event left as the exact bytes the checksum covers."""

    seq: int
    ts: str
    crc: int
    event: msgspec.Raw


record_decoder = msgspec.json.Decoder(Recorded)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_encoder = msgspec.json.Encoder()
# RecursionError: a line nested too deep to decode (none can be written now: dsetlog.store.limits), from an old log
DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
# the layout itself, to check the checksum and seq of a line the decoder cannot read at all
_LAYOUT = re.compile(rb'\{"seq":(\d{1,20}),"ts":"[^"\\]{0,64}","crc":(\d{1,10}),"event":(.*)\}\Z', re.S)
_TYPE = re.compile(rb'\{"type":"([A-Za-z0-9_]{1,64})"')


def parse_line(line: bytes | memoryview) -> Recorded | None:
    """Decode one line (without its newline); None when it is not a whole, valid record.

    Valid means: one JSON envelope whose ``crc`` is the CRC32 of its event's exact
    bytes, and whose event is one this version knows.
    """
    try:
        env = _envelope_decoder.decode(line)
        if zlib.crc32(env.event) != env.crc:
            return None
        return record_decoder.decode(line)
    except DECODE_ERRORS:
        return None


_EVENT_AT = b',"event":'  # in the layout, the event's bytes follow this, up to the envelope's closing brace


def event_decoder(event_type: Any) -> msgspec.json.Decoder[Any]:
    """A decoder of whole lines into their crc and their event as ``event_type`` (a Struct that may declare only
    the fields a reader wants: msgspec skips the rest), in one pass; for :func:`checked_event`."""
    return msgspec.json.Decoder(msgspec.defstruct("Checked", [("crc", int), ("event", event_type)], gc=False))


def checked_event(line: bytes, decoder: msgspec.json.Decoder[Any]) -> Any | None:
    """The event of one line (no newline) by an :func:`event_decoder`; None unless the line is a record whose
    checksum holds over its event's exact bytes."""
    at = line.find(_EVENT_AT)
    try:
        rec = decoder.decode(line)
    except DECODE_ERRORS:
        return None
    if at < 0 or zlib.crc32(memoryview(line)[at + len(_EVENT_AT) : -1]) != rec.crc:
        return None
    return rec.event


def checked_events(lines: Sequence[bytes], decoder: msgspec.json.Decoder[Any]) -> list[Any | None]:
    """:func:`checked_event` of each line, the lines decoded by one call (a read of thousands of texts)."""
    try:
        recs = decoder.decode_lines(b"\n".join(lines))
    except DECODE_ERRORS:
        recs = []
    if len(recs) != len(lines):  # one is not a whole line: each is judged alone
        return [checked_event(line, decoder) for line in lines]
    out: list[Any | None] = []
    add, crc32, skip = out.append, zlib.crc32, len(_EVENT_AT)
    for line, rec in zip(lines, recs, strict=True):
        at = line.find(_EVENT_AT)
        add(rec.event if at >= 0 and crc32(memoryview(line)[at + skip : -1]) == rec.crc else None)
    return out


def event_bytes(line: bytes) -> bytes:
    """The exact bytes of a valid line's event (what its crc covers)."""
    return bytes(_envelope_decoder.decode(line).event)


def raw_fields(line: bytes) -> tuple[int, int, bytes] | None:
    """(seq, crc, event bytes) read by the layout alone, without decoding; None when the line is not in it."""
    m = _LAYOUT.match(line)
    return None if m is None else (int(m.group(1)), int(m.group(2)), m.group(3))


def event_type_of(event: bytes) -> str:
    """The ``type`` an event's bytes start with, or "" (read by the layout, without decoding)."""
    t = _TYPE.match(event)
    return t.group(1).decode() if t else ""


def renumbered(line: bytes, rec: Recorded, seq: int) -> bytes:
    """The line with seq ``seq`` instead of its own: the event's bytes, crc and ts are kept as they are."""
    if rec.seq == seq:
        return line  # untouched lines keep their exact bytes
    body = event_bytes(line)  # so crc stays valid: the event bytes are not re-encoded
    return b'{"seq":%d,"ts":%s,"crc":%d,"event":%s}' % (seq, _encoder.encode(rec.ts), rec.crc, body)


def why_bad(line: bytes | memoryview) -> str:
    """Why :func:`parse_line` refuses a line, in words a user can act on."""
    line = bytes(line)
    if not line:
        return "empty line"
    if not line.strip(b"\0"):
        return f"{len(line)} NUL bytes"
    try:
        obj = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        return f"not JSON ({exc})"
    if not isinstance(obj, dict) or not {"seq", "ts", "crc", "event"} <= obj.keys():
        return "not an envelope (seq, ts, crc, event)"
    try:
        env = _envelope_decoder.decode(line)
        record_decoder.decode(line)
    except DECODE_ERRORS as exc:
        return f"undecodable ({exc}; an event type or field this version does not know?)"
    crc = zlib.crc32(env.event)
    if crc != env.crc:
        return f"checksum mismatch (stored {env.crc}, event bytes give {crc})"
    return "invalid record"


def first_bad(data: bytes, n: int) -> tuple[int, str]:
    """Line by line: the index of the first line in ``data[:n]`` that is not a valid record, and why."""
    lines = data[:n].split(b"\n")[:-1]
    for i, line in enumerate(lines):
        if parse_line(line) is None:
            return i, why_bad(line)
    return len(lines), ""


def count_checked(data: bytes, n: int) -> tuple[int, str]:
    """Check the checksums of the whole lines in ``data[:n]``: (how many pass before the first that fails, why).

    The reason is "" when all pass. Done in C over the whole buffer (msgspec's line
    decoder, zlib over the raw event bytes), this is the share of a replay that
    :func:`dsetlog.store.scan.read_batches` hands to another core when there is much to read.
    """
    try:
        envs = _envelope_decoder.decode_lines(memoryview(data)[:n])
    except DECODE_ERRORS:
        return first_bad(data, n)
    if len(envs) != data.count(b"\n", 0, n):
        return first_bad(data, n)  # an empty line, or two records on one
    ok = list(map(operator.eq, map(zlib.crc32, map(_event_of, envs)), map(_crc_of, envs)))
    if all(ok):
        return len(ok), ""
    return first_bad(data, n)


def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def encode_records(events: Iterable[Event], *, first_seq: int, ts: str) -> bytes:
    """Envelope lines for events numbered from ``first_seq``, all stamped ``ts``."""
    ts_b = ts.encode()
    out = []
    seq = first_seq
    for event in events:
        # the last guard: no event carries a key or token the process knows, whoever made it
        body = redaction.redact_bytes(_encoder.encode(event))
        out.append(b'{"seq":%d,"ts":"%s","crc":%d,"event":%s}\n' % (seq, ts_b, zlib.crc32(body), body))
        seq += 1
    return b"".join(out)
