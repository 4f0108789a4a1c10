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
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import msgspec

from dsetlog.fsutil import atomic_writer


class Entry(Protocol):
    """What an exporter reads from an entry (projections.datasets.EntryView has it all)."""

    id: str
    question: str
    answer: str
    reasoning: str
    category: str
    model: str
    created_at: str


_json = msgspec.json.Encoder()
_BATCH = 10_000


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


def _text_stream(fh: BinaryIO) -> io.TextIOWrapper:
    return io.TextIOWrapper(fh, encoding="utf-8", newline="", write_through=False)


def write_csv(fh: BinaryIO, entries: Iterable[Entry]) -> int:
    """The seed's output.csv: timestamp, question, thoughts, final_answer."""
    text = _text_stream(fh)
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["timestamp", "question", "thoughts", "final_answer"])
    n = 0
    for e in entries:
        writer.writerow([e.created_at, e.question, e.reasoning, e.answer])
        n += 1
    text.flush()
    text.detach()
    return n


def write_seed_json(fh: BinaryIO, entries: Iterable[Entry]) -> int:
    """The seed's output.json, JSON Lines: {"metadata": {timestamp, question}, "response": {reasoning, answer}}."""
    return _jsonl(fh, ({"metadata": {"timestamp": e.created_at, "question": e.question},
                        "response": {"reasoning": e.reasoning, "answer": e.answer}} for e in entries))


def write_txt(fh: BinaryIO, entries: Iterable[Entry]) -> int:
    """The seed's human-readable log: one block per answered question."""
    text = _text_stream(fh)
    n = 0
    for e in entries:
        n += 1
        text.write(f"=== {n} === {e.created_at}\nQuestion: {e.question}\n\n")
        if e.reasoning:
            text.write(f"Thoughts:\n{e.reasoning}\n\n")
        text.write(f"Answer:\n{e.answer}\n\n")
    text.flush()
    text.detach()
    return n


def _entry_doc(e: Entry) -> dict[str, Any]:
    doc = {f: getattr(e, f) for f in _ENTRY_FIELDS if hasattr(e, f)}
    return doc


_ENTRY_FIELDS = ("id", "question", "answer", "reasoning", "category", "quality_score", "difficulty", "source_chunk",
                 "model", "provider", "simulated", "created_at", "updated_at", "revision", "prompt_tokens",
                 "completion_tokens", "metadata")


def write_jsonl(fh: BinaryIO, entries: Iterable[Entry]) -> int:
    """Every field of every entry, one JSON object per line."""
    return _jsonl(fh, (_entry_doc(e) for e in entries))


def write_alpaca(fh: BinaryIO, entries: Iterable[Entry]) -> int:
    return _jsonl(fh, ({"instruction": e.question, "input": "", "output": e.answer} for e in entries))


def write_sharegpt(fh: BinaryIO, entries: Iterable[Entry]) -> int:
    return _jsonl(fh, ({"conversations": [{"from": "human", "value": e.question},
                                          {"from": "gpt", "value": e.answer}]} for e in entries))


def write_openai_chat(fh: BinaryIO, entries: Iterable[Entry]) -> int:
    return _jsonl(fh, ({"messages": [{"role": "user", "content": e.question},
                                     {"role": "assistant", "content": e.answer}]} for e in entries))


def _batches(entries: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    it = iter(entries)
    while batch := list(islice(it, size)):
        yield batch


def write_parquet(fh: BinaryIO, entries: Iterable[Entry]) -> int:
    """Columns of the jsonl format; metadata as a JSON string. Written in row groups of 10,000."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("id", pa.string()), ("question", pa.string()), ("answer", pa.string()), ("reasoning", pa.string()),
        ("category", pa.string()), ("quality_score", pa.float64()), ("difficulty", pa.string()),
        ("source_chunk", pa.string()), ("model", pa.string()), ("provider", pa.string()), ("simulated", pa.bool_()),
        ("created_at", pa.string()), ("updated_at", pa.string()), ("revision", pa.int64()),
        ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()), ("metadata", pa.string()),
    ])
    n = 0
    with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
        for batch in _batches(entries, _BATCH):
            cols: dict[str, list[Any]] = {name: [] for name in schema.names}
            for e in batch:
                doc = _entry_doc(e)
                for name in schema.names:
                    value = doc.get(name)
                    if name == "metadata":
                        value = _json.encode(value or {}).decode()
                    cols[name].append(value)
            writer.write_table(pa.table(cols, schema=schema))
            n += len(batch)
    return n


class Format(msgspec.Struct, frozen=True):
    name: str
    filename: str
    media_type: str
    write: Callable[[BinaryIO, Iterable[Entry]], int]


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


def export(entries: Callable[[], Iterable[Entry]], out_dir: Path, formats: Iterable[str]) -> dict[str, Path]:
    """Write each format into ``out_dir`` atomically; ``entries`` is called once per format (a fresh stream)."""
    written: dict[str, Path] = {}
    for name in formats:
        fmt = FORMATS[name]
        target = out_dir / fmt.filename
        with atomic_writer(target) as fh:
            fmt.write(fh, entries())
        written[name] = target
    return written
