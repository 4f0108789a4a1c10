"""The search index's segment files (:mod:`projections.search`): their rows, how a search reads them, how they
are merged.

A segment is one Arrow IPC file of the lines of a stretch of the log: a row per (dataset, word), sorted, holding
the codes of its texts (``line * 2 + field``, lines counted from the segment's first line of that dataset) as a
list, or as a bitmap of the segment's texts for a word of at least one text in ``DENSE``; and a row per dataset
with the word "" holding its lines' starts in the log. It may hold several batches (a merge writes a piece at a
time), so its columns are read as chunked arrays.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from itertools import accumulate

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

MERGE_PIECE = 4096  # words of a dataset merged at once: a merge holds one piece's codes, whatever its size


class Part(msgspec.Struct, array_like=True):
    """One dataset's part of a segment: its rows [lo, hi) (the first its word "", the lines' starts) and lines
    [first, first + lines) of the dataset."""

    lo: int
    hi: int
    first: int
    lines: int


class Segment(msgspec.Struct):
    name: str
    lines: int  # of all its datasets
    parts: dict[str, Part]


SCHEMA = pa.schema([("dataset", pa.string()), ("word", pa.string()), ("codes", pa.list_(pa.int32())),
                     ("starts", pa.list_(pa.int64())), ("bits", pa.binary())])
DENSE = 32  # a word held by at least one text in DENSE is kept as a bitmap of the texts (its codes would be larger)


def holding(table: pa.Table, part: Part, terms: list[str], prefix: bool) -> pa.Array:
    """The mask of this segment part's texts (a bit a code) that hold every one of these words (the last as a
    prefix of theirs)."""
    names, codes, dense_rows = table["word"], table["codes"], table["bits"]  # a batch a piece merged
    size, sorted_words = 2 * part.lines, Words(names)
    mask: pa.Array | None = None
    for k, term in enumerate(terms):
        lo = bisect_left(sorted_words, term, part.lo + 1, part.hi)
        if prefix and k == len(terms) - 1:
            hi = bisect_left(sorted_words, term + "\U0010ffff", lo, part.hi)  # never in a word (a noncharacter)
        else:
            hi = lo + 1 if lo < part.hi and names[lo].as_py() == term else lo
        held = pc.list_flatten(codes.slice(lo, hi - lo)).combine_chunks()
        bits = mask_of(held, size)
        for dense in dense_rows.slice(lo, hi - lo).drop_null():
            bits = pc.or_(bits, _bools(dense, size))
        mask = bits if mask is None else pc.and_(mask, bits)
    assert mask is not None
    return mask


def mask_of(positions: Iterable[int] | pa.Array, size: int) -> pa.Array:
    """A bool array of ``size``, True at these positions (Arrow's scatter: one C loop, sequential when they are
    ascending)."""
    at = positions if isinstance(positions, pa.Array) else pa.array(sorted(positions), pa.int32())
    trues = pa.Array.from_buffers(pa.bool_(), len(at), [None, pa.py_buffer(b"\xff" * (-(-len(at) // 8)))])
    return pc.scatter(trues, at, max_index=size - 1).is_valid()


class Words(Sequence[str]):
    """A segment's word column as a sequence bisect can search (each look-up one value, not the column)."""

    def __init__(self, names: pa.StringArray) -> None:
        self._names = names

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        return self._names[i].as_py()


def lists_of(lengths: list[int], parts: list[array[int]], typecode: str, kind: pa.DataType) -> pa.Array:
    """A list array of these lengths whose values are the parts, joined."""
    values = array(typecode)
    for part in parts:
        values.extend(part)
    flat = pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])
    offsets = pa.array(list(accumulate(lengths, initial=0)), pa.int32())
    return pa.ListArray.from_arrays(offsets, flat)


def put(writer: pa.ipc.RecordBatchFileWriter, table: pa.Table) -> None:
    writer.write_table(table, max_chunksize=max(1, table.num_rows))  # one batch


def merge(writer: pa.ipc.RecordBatchFileWriter, tables: list[pa.Table], segments: list[Segment]) -> dict[str, Part]:
    """Adjacent segments written as one: each dataset's lines' starts joined, and each (dataset, word)'s texts,
    their codes made offsets from the dataset's first line in the merged segment. A dataset's words are merged
    ``MERGE_PIECE`` of the largest segment's at a time (a batch each), so a merge holds one piece's codes."""
    first: dict[str, int] = {}
    lines: dict[str, int] = {}
    for seg in segments:
        for ds, part in seg.parts.items():
            first.setdefault(ds, part.first)
            lines[ds] = lines.get(ds, 0) + part.lines
    parts, row = {}, 0
    for ds in sorted(lines):
        inputs = [(table, seg.parts[ds]) for table, seg in zip(tables, segments, strict=True) if ds in seg.parts]
        starts = pa.concat_arrays([table["starts"][part.lo].values for table, part in inputs])
        put(writer, pa.table([pa.array([ds]), pa.array([""]), _no_lists(1, pa.int32()),
                               pa.ListArray.from_arrays(pa.array([0, len(starts)], pa.int32()), starts),
                               pa.nulls(1, pa.binary())], schema=SCHEMA))
        lo, row = row, row + 1
        cuts = sorted({table["word"][r].as_py() for table, part in inputs
                       for r in range(part.lo + 1 + MERGE_PIECE, part.hi, MERGE_PIECE)})
        for a, b in zip([None, *cuts], [*cuts, None], strict=True):
            pieces = []
            for table, part in inputs:
                names = Words(table["word"])
                r0 = part.lo + 1 if a is None else bisect_left(names, a, part.lo + 1, part.hi)
                r1 = part.hi if b is None else bisect_left(names, b, r0, part.hi)
                pieces.append((table.slice(r0, r1 - r0).combine_chunks(), part))
            merged = _merge_piece(ds, pieces, first[ds], lines[ds])
            put(writer, merged)
            row += merged.num_rows
        parts[ds] = Part(lo, row, first[ds], lines[ds])
    return parts


def _merge_piece(ds: str, pieces: list[tuple[pa.Table, Part]], first: int, lines: int) -> pa.Table:
    """One dataset's rows of some words, from each segment (in the log's order), as the merged segment's rows:
    the words of at least one text in DENSE as bitmaps (joined bit by bit), the others' codes listed."""
    counts = []
    for table, part in pieces:
        count = pc.cast(pc.list_value_length(table["codes"].combine_chunks()), pa.int64()).to_pylist()
        bits = table["bits"].combine_chunks()
        for r in pc.indices_nonzero(bits.is_valid()).to_pylist():
            count[r] = _bools(bits[r], 2 * part.lines).true_count
        counts.append(pa.table({"word": table["word"].combine_chunks(), "count": pa.array(count, pa.int64())}))
    totals = pa.concat_tables(counts).group_by("word").aggregate([("count", "sum")])
    dense = totals.filter(pc.greater_equal(pc.multiply(totals["count_sum"], DENSE), 2 * lines))["word"]
    rows = [_sparse_rows(table, part, first, dense) for table, part in pieces]
    joined = pa.concat_tables(rows).combine_chunks()
    # a stable sort: each word's rows stay in the segments' order, so their codes ascend
    joined = joined.take(pc.sort_indices(joined, sort_keys=[("word", "ascending")]))
    names = joined["word"].combine_chunks()
    n = len(names)
    heads = (pa.concat_arrays([pa.array([0], pa.int64()), pc.add(pc.indices_nonzero(
        pc.not_equal(names[1:], names[:-1])), 1)]) if n > 1 else pa.array(range(n), pa.int64()))
    lists = joined["codes"].combine_chunks()
    offsets = pc.take(lists.offsets, pa.concat_arrays([heads, pa.array([n], pa.int64())]))
    sparse = pa.table([pc.take(joined["dataset"].combine_chunks(), heads), pc.take(names, heads),
                       pa.ListArray.from_arrays(pc.subtract(offsets, offsets[0]), lists.flatten()),
                       _no_lists(len(heads), pa.int64()),
                       pa.nulls(len(heads), pa.binary())], schema=SCHEMA)
    words_dense = dense.to_pylist()
    bitmaps = [_joined_bits(word, pieces, lines) for word in words_dense]
    out = pa.concat_tables([sparse, pa.table([
        pa.array([ds] * len(words_dense), pa.string()), pa.array(words_dense, pa.string()),
        _no_lists(len(words_dense), pa.int32()), _no_lists(len(words_dense), pa.int64()),
        pa.array(bitmaps, pa.binary())], schema=SCHEMA)]).combine_chunks()
    return out.take(pc.sort_indices(out, sort_keys=[("word", "ascending")]))


def _sparse_rows(table: pa.Table, part: Part, first: int, dense: pa.Array) -> pa.Table:
    """A segment's rows of the words that stay listed (not in ``dense``), their bitmaps listed as codes and the
    codes made offsets from the merged segment's first line."""
    table = table.filter(pc.invert(pc.is_in(table["word"], value_set=dense)))
    table = _unpacked(table, 2 * part.lines)
    codes = table["codes"].combine_chunks()
    shift = 2 * (part.first - first)
    offsets = pc.subtract(codes.offsets, codes.offsets[0])  # a slice's offsets start where it does
    codes = pa.ListArray.from_arrays(offsets, pc.add(codes.flatten(), pa.scalar(shift, pa.int32())))
    return pa.table([table["dataset"], table["word"], codes, table["starts"], table["bits"]], schema=SCHEMA)


def _joined_bits(word: str, pieces: list[tuple[pa.Table, Part]], lines: int) -> bytes:
    """A word's bitmap over the merged segment's texts: each segment's, bit after bit, in the log's order."""
    parts = []
    for table, part in pieces:
        size = 2 * part.lines
        names = Words(table["word"])
        r = bisect_left(names, word)
        if r < len(names) and names[r] == word:
            bits = table["bits"][r]
            parts.append(_bools(bits, size) if bits.is_valid else mask_of(table["codes"][r].values, size))
        else:
            parts.append(mask_of([], size))
    return _bitmap(pa.concat_arrays(parts))


def _bitmap(mask: pa.Array) -> bytes:
    """A bool array's bits as a bitmap row keeps them (from bit 0: an offset array is copied first)."""
    if mask.offset:
        mask = pc.and_(mask, mask)
    return mask.buffers()[1].to_pybytes()[: -(-len(mask) // 8)]


def _bools(bitmap: pa.Scalar, size: int) -> pa.Array:
    """A bitmap row as a bool array of its ``size`` texts (over the segment's bytes, no copy)."""
    return pa.Array.from_buffers(pa.bool_(), size, [None, bitmap.as_buffer()])


def _no_lists(n: int, kind: pa.DataType) -> pa.Array:
    """``n`` empty lists of this type."""
    return pa.ListArray.from_arrays(pa.array([0] * (n + 1), pa.int32()), pa.array([], kind))


def _sizes(datasets: pa.Array, lines: dict[str, int]) -> pa.Array:
    """Each row's number of texts in its dataset's part (a bitmap's length)."""
    names = list(lines)
    return pc.take(pa.array([2 * lines[ds] for ds in names], pa.int64()),
                   pc.index_in(datasets, value_set=pa.array(names, pa.string())))


def packed(table: pa.Table, lines: dict[str, int]) -> pa.Table:
    """The table (every word's codes listed) with the words of at least one text in DENSE kept as bitmaps."""
    datasets, codes = table["dataset"].combine_chunks(), table["codes"].combine_chunks()
    lengths = pc.cast(pc.list_value_length(codes), pa.int64())
    sizes = _sizes(datasets, lines)
    dense = pc.and_(pc.greater_equal(pc.multiply(lengths, DENSE), sizes),
                    pc.greater(lengths, 0))  # not the "" rows, nor an empty part's
    rows = pc.indices_nonzero(dense).to_pylist()
    if not rows:
        return table
    bits: list[bytes | None] = [None] * len(codes)
    for r in rows:
        size = sizes[r].as_py()
        bits[r] = _bitmap(mask_of(codes[r].values, size))
    kept = pc.invert(pc.take(dense, codes.value_parent_indices()))
    left = pc.if_else(dense, 0, lengths)
    offsets = pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum(left)])
    listed = pa.ListArray.from_arrays(pc.cast(offsets, pa.int32()), pc.filter(codes.flatten(), kept))
    return pa.table([datasets, table["word"].combine_chunks(), listed, table["starts"].combine_chunks(),
                     pa.array(bits, pa.binary())], schema=SCHEMA)


def _unpacked(table: pa.Table, size: int) -> pa.Table:
    """One dataset's rows with their bitmaps (of ``size`` texts) listed as codes again (those rows moved to the
    end: a segment has one row a word, so its order among the segment's rows does not matter to a merge)."""
    bits = table["bits"].combine_chunks()
    if bits.null_count == len(bits):
        return table
    dense = bits.is_valid()
    rows = pc.indices_nonzero(dense)
    listed = [pc.cast(pc.indices_nonzero(_bools(bits[r], size)), pa.int32()) for r in rows.to_pylist()]
    lengths = [len(c) for c in listed]
    extra = pa.table([pc.take(table["dataset"], rows), pc.take(table["word"], rows),
                      pa.ListArray.from_arrays(pa.array(list(accumulate(lengths, initial=0)), pa.int32()),
                                               pa.concat_arrays([pa.array([], pa.int32()), *listed])),
                      _no_lists(len(lengths), pa.int64()),
                      pa.nulls(len(lengths), pa.binary())], schema=SCHEMA)
    return pa.concat_tables([table.filter(pc.invert(dense)), extra]).combine_chunks()
