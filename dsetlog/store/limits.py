"""Limits that keep every record readable: nothing appended may be too deep or too big for replay to decode.

msgspec decodes nested JSON recursively: a record nested ~950 levels deep raises ``RecursionError`` in
replay (sooner on a deep thread stack), and a record that does not fit its Struct again (a NaN stored as
``null`` in a float field, a value outside its constraints) is not a record at all to the reader. Either
would make the log unreadable after its append had returned. So:

* the API refuses a JSON body nested more than :data:`MAX_BODY_DEPTH` levels with a 422 before anything
  runs (:func:`json_depth`, from ``api.middleware``);
* the log writer checks the exact lines it is about to write with :func:`check_decodable`: each at most
  :data:`MAX_RECORD_BYTES`, nested at most :data:`MAX_RECORD_DEPTH` levels (envelope included), and decoded
  back by the replay's own decoder. A batch that fails is refused whole with :class:`RecordLimitError`,
  before anything is written.

Depth counts JSON objects and arrays: ``{}`` is 1, ``{"a": [1]}`` is 2; brackets inside strings do not count.
"""

from __future__ import annotations

import re
from itertools import accumulate, repeat
from operator import add
from typing import Any

import msgspec

from dsetlog.errors import UsageError
from dsetlog.store.layout import record_decoder

MAX_BODY_DEPTH = 64  # the deepest JSON body the API accepts
# the deepest log line the writer accepts, its envelope included: a body of MAX_BODY_DEPTH stored in an event
# (a level or two below the event's own object) fits with room, and it is a tenth of what replay can decode
MAX_RECORD_DEPTH = 100
# the longest log line the writer accepts: a 50 MB document's text (ingest's own limit) as one chunk, escaped
MAX_RECORD_BYTES = 128 * 2**20

# a JSON string, escapes included (unrolled: no alternation per character)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


class RecordLimitError(UsageError, ValueError):
    """Events that replay could not read back (too deep, too big or not decodable): none of them was appended."""


def json_depth(data: bytes | bytearray | memoryview) -> int:
    """How deeply the JSON text ``data`` nests objects and arrays (0 for a scalar), without decoding it.

    Computed in C (strings cut out, the brackets left counted by ``accumulate``): ~10 ms per MB at worst.
    For text that is not JSON the answer is only an estimate; the decoder then says what is wrong.
    """
    data = bytes(data)
    if data.count(b"[") + data.count(b"{") == 0:
        return 0
    if b'\\"' in data:  # escaped quotes: find the strings with the regex
        outside = _STRING.sub(b"", data)
    else:  # every quote opens or closes a string: what is outside them are the even pieces
        outside = b"".join(data.split(b'"')[::2])
    brackets = outside.translate(None, _NOT_BRACKETS)
    return max(0, max(accumulate(map(_STEP.__getitem__, brackets)), default=0))


def deeper_than(data: bytes | bytearray | memoryview, limit: int) -> int | None:
    """The nesting depth of ``data`` when it is over ``limit``, else None (at once when it has few brackets)."""
    if data.count(b"[") + data.count(b"{") <= limit:  # depth is at most the number of opening brackets
        return None
    depth = json_depth(data)
    return depth if depth > limit else None


def max_depth(obj: Any) -> int:
    """How deeply a Python value (dicts, lists, tuples, Structs) nests, the way it would be encoded as JSON."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, msgspec.Struct):
            value = [getattr(value, f) for f in value.__struct_fields__]  # encoded as an object: one level
        elif isinstance(value, dict):
            value = list(value.values())
        elif not isinstance(value, (list, tuple, set, frozenset)):
            continue
        depth = max(depth, level)
        stack.extend((item, level + 1) for item in value)
    return depth




def _event_type(line: bytes) -> str:
    found = re.search(rb'"event":\{"type":"([A-Za-z0-9_]{1,64})"', line[:4096])
    return found.group(1).decode() if found else "event"


def check_decodable(data: bytes | memoryview, *, decode: bool = True) -> None:
    """Check encoded log lines (as ``dsetlog.store.layout.encode_records`` makes them, newline-terminated) before they
    are written: raise :class:`RecordLimitError` naming the first that replay could not read back.

    Checked per line: its size (:data:`MAX_RECORD_BYTES`), its depth (:data:`MAX_RECORD_DEPTH`, checked before
    decoding, so the check itself cannot recurse too deep), and that the replay's decoder reads every line
    back (``decode``). For 450-byte EntryGenerated lines in batches of 100 to 10,000 that costs 1.4-2.7 us
    an event, about what encoding them took; the size and depth checks alone ~0.8 us. Checksums are not
    checked: the writer made them from these very bytes.
    """
    data = bytes(data)
    if not data:
        return
    lines = data.split(b"\n")
    if lines[-1]:
        raise RecordLimitError("internal error: encoded log lines must end with a newline")
    lines.pop()
    longest = max(map(len, lines))
    if longest > MAX_RECORD_BYTES:
        i = next(i for i, line in enumerate(lines) if len(line) == longest)
        raise RecordLimitError(
            f"the {_event_type(lines[i])} event (number {i + 1} of {len(lines)} in this batch) would be a "
            f"{longest:,}-byte log line, over the log's limit of {MAX_RECORD_BYTES:,} bytes; "
            "nothing was appended. Make it smaller (a smaller chunk_size, a shorter text)."
        )
    # a line's depth is at most its number of opening brackets: counted in C, most batches stop here
    opens = list(map(add, map(bytes.count, lines, repeat(b"{")), map(bytes.count, lines, repeat(b"["))))
    if max(opens) > MAX_RECORD_DEPTH:
        for i, line in enumerate(lines):
            if opens[i] > MAX_RECORD_DEPTH and (depth := deeper_than(line, MAX_RECORD_DEPTH)) is not None:
                raise RecordLimitError(
                    f"the {_event_type(line)} event (number {i + 1} of {len(lines)} in this batch) is nested "
                    f"{depth} levels deep, over the log's limit of {MAX_RECORD_DEPTH}; nothing was appended. "
                    f"Flatten it (the API accepts bodies nested at most {MAX_BODY_DEPTH} levels)."
                )
    if not decode:
        return
    decode_lines = record_decoder.decode_lines
    try:
        decode_lines(data)
        return
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    for i, line in enumerate(lines):  # which one, and why
        try:
            decode_lines(line + b"\n")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RecordLimitError(
                f"the {_event_type(line)} event (number {i + 1} of {len(lines)} in this batch) would not read "
                f"back from the log ({exc}); nothing was appended. This is a bug in what made the event (a NaN "
                "or infinite float, a value outside its field's constraints?): report it with this message."
            ) from None
    raise RecordLimitError("these events would not read back from the log as one batch; nothing was appended")
