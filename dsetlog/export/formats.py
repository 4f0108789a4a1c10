"""Dataset files: the seed's three outputs plus formats fine-tuning tools read.

Every writer streams: it takes an iterable of entries and writes as it goes,
into a temp file that replaces the target atomically, so a 1,000,000-entry
dataset never sits in memory and a reader never sees half a file.
:data:`EXPORT_FORMATS` is the one list of the formats a document dataset is exported in.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import msgspec

from dsetlog.export import instruct
from dsetlog.export.options import ExportOptions
from dsetlog.fsutil import atomic_writer


class Entry(Protocol):
    """What an exporter reads from an entry (projections.datasets.FullEntry has it all)."""

    id: str
    question: str
    answer: str
    reasoning: str
    category: str
    model: str
    created_at: str
    source_chunk: str
    metadata: dict[str, Any]
    run_id: str  # its run's system prompt is in ExportOptions.systems
    quality_score: float | None
    difficulty: str


_json = msgspec.json.Encoder()
_BATCH = 10_000
_DEFAULTS = ExportOptions()


def _jsonl(fh: BinaryIO, docs: Iterable[Any]) -> int:
    n = 0
    buf = bytearray()
    for doc in docs:
        _json.encode_into(doc, buf, len(buf))
        buf += b"\n"
        n += 1
        if len(buf) > 1 << 20:
            fh.write(buf)
            buf.clear()
    fh.write(buf)
    return n


def _text_stream(fh: BinaryIO, *, bom: bool = False) -> io.TextIOWrapper:
    # utf-8-sig writes the BOM that Excel needs to read the file as UTF-8 rather than the locale's code page
    return io.TextIOWrapper(fh, encoding="utf-8-sig" if bom else "utf-8", newline="", write_through=False)


def _csv(fh: BinaryIO, header: list[str], rows: Iterable[list[Any]], bom: bool) -> int:
    text = _text_stream(fh, bom=bom)
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    n = 0
    for row in rows:
        writer.writerow(row)
        n += 1
    text.flush()
    text.detach()
    return n


# A document dataset's CSV: the seed's four columns first (a reader of output.csv reads it too), then what
# tells its rows apart and sorts them
SEED_CSV_COLUMNS = ("timestamp", "question", "thoughts", "final_answer")
DATASET_CSV_COLUMNS = (*SEED_CSV_COLUMNS, "id", "category", "difficulty", "quality_score", "source_chunk")


def write_csv(fh: BinaryIO, entries: Iterable[Entry], opts: ExportOptions = _DEFAULTS) -> int:
    """The seed's output.csv: timestamp, question, thoughts, final_answer."""
    return _csv(fh, list(SEED_CSV_COLUMNS), ([e.created_at, e.question, e.reasoning, e.answer] for e in entries),
                opts.csv_bom)


def write_dataset_csv(fh: BinaryIO, entries: Iterable[Entry], opts: ExportOptions = _DEFAULTS) -> int:
    """A dataset's CSV: the seed's columns, then id, category, difficulty, quality_score, source_chunk."""
    return _csv(fh, list(DATASET_CSV_COLUMNS),
                ([e.created_at, e.question, e.reasoning, e.answer, e.id, e.category, e.difficulty,
                  "" if e.quality_score is None else e.quality_score, e.source_chunk] for e in entries),
                opts.csv_bom)


def write_seed_json(fh: BinaryIO, entries: Iterable[Entry], opts: ExportOptions = _DEFAULTS) -> int:
    """The seed's output.json, JSON Lines: {"metadata": {timestamp, question}, "response": {reasoning, answer}}."""
    return _jsonl(fh, ({"metadata": {"timestamp": e.created_at, "question": e.question},
                        "response": {"reasoning": e.reasoning, "answer": e.answer}} for e in entries))


def write_txt(fh: BinaryIO, entries: Iterable[Entry], opts: ExportOptions = _DEFAULTS) -> int:
    """The seed's human-readable log: one block per answered question."""
    text = _text_stream(fh)
    n = 0
    for e in entries:
        n += 1
        system = opts.system_of(e)
        if system:
            text.write(f"=== {n} === {e.created_at}\nSystem: {system}\nQuestion: {e.question}\n\n")
        else:
            text.write(f"=== {n} === {e.created_at}\nQuestion: {e.question}\n\n")
        if e.reasoning:
            text.write(f"Thoughts:\n{e.reasoning}\n\n")
        text.write(f"Answer:\n{e.answer}\n\n")
    text.flush()
    text.detach()
    return n


# The full formats' columns, the same in jsonl and parquet (so Hugging Face datasets concatenates the two,
# and a questions dataset joins a document one): metadata is a JSON object's text in both, since its keys
# differ from dataset to dataset and a nested column's type would differ with them.
ENTRY_COLUMNS = ("id", "question", "answer", "reasoning", "category", "quality_score", "quality_analyzed",
                 "difficulty", "source_chunk",
                 "model", "provider", "simulated", "created_at", "updated_at", "revision", "prompt_tokens",
                 "completion_tokens", "metadata", "system")


# A row of the jsonl and parquet formats. The log's entries give every field but the last two, as they are;
# metadata becomes its JSON text and system comes from the entry's run.
EntryRow = msgspec.defstruct("EntryRow", [(name, Any) for name in ENTRY_COLUMNS], gc=False)
_FROM_ENTRY = ENTRY_COLUMNS[:-1]  # ..., "metadata" (then "system")
_entry_values = attrgetter(*_FROM_ENTRY)


def _entry_row(e: Entry, opts: ExportOptions) -> tuple[Any, ...]:
    """An entry's values in ENTRY_COLUMNS' order (one C call for what an entry has: an export does millions)."""
    try:
        values = _entry_values(e)
    except AttributeError:  # an Entry that has not every field: the ones it lacks are None
        values = tuple(getattr(e, f, None) for f in _FROM_ENTRY)
    metadata = values[-1]
    return (*values[:-1], _json.encode(metadata).decode() if metadata else "{}", opts.system_of(e))


def write_jsonl(fh: BinaryIO, entries: Iterable[Entry], opts: ExportOptions = _DEFAULTS) -> int:
    """Every field of every entry, one JSON object per line."""
    return _jsonl(fh, (EntryRow(*_entry_row(e, opts)) for e in entries))


def write_alpaca(fh: BinaryIO, entries: Iterable[Entry], opts: ExportOptions = _DEFAULTS) -> int:
    return _jsonl(fh, (instruct.alpaca_row(e, opts) for e in entries if instruct.kept(e, opts)))


def write_sharegpt(fh: BinaryIO, entries: Iterable[Entry], opts: ExportOptions = _DEFAULTS) -> int:
    return _jsonl(fh, (instruct.sharegpt_row(e, opts) for e in entries if instruct.kept(e, opts)))


def write_openai_chat(fh: BinaryIO, entries: Iterable[Entry], opts: ExportOptions = _DEFAULTS) -> int:
    return _jsonl(fh, (instruct.openai_chat_row(e, opts) for e in entries if instruct.kept(e, opts)))


def _batches(entries: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    it = iter(entries)
    while batch := list(islice(it, size)):
        yield batch


def parquet_schema() -> Any:
    """The parquet file's columns: the jsonl format's, with created_at and updated_at as UTC timestamps."""
    import pyarrow as pa

    when = pa.timestamp("us", tz="UTC")
    types = {"quality_score": pa.float64(), "quality_analyzed": pa.bool_(), "simulated": pa.bool_(), "created_at": when, "updated_at": when,
             "revision": pa.int64(), "prompt_tokens": pa.int64(), "completion_tokens": pa.int64()}
    return pa.schema([(name, types.get(name, pa.string())) for name in ENTRY_COLUMNS])


def write_parquet(fh: BinaryIO, entries: Iterable[Entry], opts: ExportOptions = _DEFAULTS) -> int:
    """The columns of the jsonl format, typed (timestamps as timestamps). Written in row groups of 10,000."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    n = 0
    with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
        for batch in _batches(entries, _BATCH):
            cols = []
            for field, values in zip(schema, zip(*(_entry_row(e, opts) for e in batch), strict=True), strict=True):
                if pa.types.is_timestamp(field.type):  # the log's ISO-8601 text, parsed by arrow in C
                    cols.append(pa.array(values, type=pa.string()).cast(field.type))
                else:
                    cols.append(pa.array(values, type=field.type))
            writer.write_table(pa.Table.from_arrays(cols, schema=schema))
            n += len(batch)
    return n


class Format(msgspec.Struct, frozen=True):
    name: str
    filename: str
    media_type: str
    write: Callable[[BinaryIO, Iterable[Entry], ExportOptions], int]


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("csv", "output.csv", "text/csv", write_csv),
        Format("json", "output.json", "application/x-ndjson", write_seed_json),
        Format("txt", "output.txt", "text/plain", write_txt),
        Format("jsonl", "dataset.jsonl", "application/x-ndjson", write_jsonl),
        Format("parquet", "dataset.parquet", "application/vnd.apache.parquet", write_parquet),
        Format("alpaca", "alpaca.jsonl", "application/x-ndjson", write_alpaca),
        Format("sharegpt", "sharegpt.jsonl", "application/x-ndjson", write_sharegpt),
        Format("openai-chat", "openai_chat.jsonl", "application/x-ndjson", write_openai_chat),
    )
}
SEED_FORMATS = ("csv", "json", "txt")

# The one list of the formats a document dataset is exported in (`dset export`, a download, the end of a
# run, the review page's buttons), in the order they are offered, with each one's file suffix: exports of
# several formats share a folder, so the fine-tuning formats carry their name before .jsonl.
EXPORT_SUFFIX: dict[str, str] = {"jsonl": ".jsonl", "parquet": ".parquet", "csv": ".csv", "alpaca": ".alpaca.jsonl",
                                 "sharegpt": ".sharegpt.jsonl", "openai-chat": ".openai-chat.jsonl"}
EXPORT_FORMATS: tuple[str, ...] = tuple(EXPORT_SUFFIX)
# a dataset's writer per export format: as dset generate's, but its CSV has the columns that tell rows apart
EXPORT_WRITERS: dict[str, Callable[[BinaryIO, Iterable[Entry], ExportOptions], int]] = {
    name: write_dataset_csv if name == "csv" else FORMATS[name].write for name in EXPORT_FORMATS}


def export(entries: Callable[[], Iterable[Entry]], out_dir: Path, formats: Iterable[str],
           opts: ExportOptions = _DEFAULTS) -> dict[str, Path]:
    """Write each format into ``out_dir`` atomically; ``entries`` is called once per format (a fresh stream)."""
    written: dict[str, Path] = {}
    for name in formats:
        fmt = FORMATS[name]
        target = out_dir / fmt.filename
        with atomic_writer(target) as fh:
            fmt.write(fh, entries(), opts)
        written[name] = target
    return written
