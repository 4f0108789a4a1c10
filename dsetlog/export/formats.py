"""Dataset files: the seed's three outputs plus formats fine-tuning tools read.

Every writer streams: it takes an iterable of entries and writes as it goes,
into a temp file that replaces the target atomically, so a 1,000,000-entry
dataset never sits in memory and a reader never sees half a file.
:data:`EXPORT_FORMATS` is the one list of the formats a document dataset is exported in.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
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
_BATCH = 5_000  # entries in a parquet row group
_READ_BATCH = 2048  # entries read from columns (and a jsonl export encodes) at a time
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


def write_dataset_csv(fh: BinaryIO, entries: Iterable[Entry] | EntryColumns, opts: ExportOptions = _DEFAULTS) -> int:
    """A dataset's CSV: the seed's columns, then id, category, difficulty, quality_score, source_chunk."""
    return _csv(fh, list(DATASET_CSV_COLUMNS),
                ([e.created_at, e.question, e.reasoning, e.answer, e.id, e.category, e.difficulty,
                  "" if e.quality_score is None else e.quality_score, e.source_chunk]
                 for e in _reading(entries, _CsvEntry)),
                opts.csv_bom)


# what the csv and the instruction formats (dsetlog.export.instruct) read of an entry: read from columns, an entry
# is one of these rather than a FullEntry of 36 fields
_CsvEntry = msgspec.defstruct("_CsvEntry", [(name, Any) for name in (
    "created_at", "question", "reasoning", "answer", "id", "category", "difficulty", "quality_score", "source_chunk")],
    gc=False)
_InstructEntry = msgspec.defstruct("_InstructEntry", [(name, Any) for name in (
    "question", "answer", "reasoning", "metadata", "source_chunk", "run_id")], gc=False)


def _reading(entries: Iterable[Entry] | EntryColumns, struct: Any) -> Iterator[Any]:
    """The entries as they are, or, when they can be read from columns, a batch at a time as ``struct``s."""
    columns = getattr(entries, "columns", None)
    if columns is None:
        yield from entries
        return
    fields = struct.__struct_fields__
    for batch in columns(fields, _READ_BATCH):
        yield from map(struct, *(batch[name] for name in fields))


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
_ROW_FIELDS = (*ENTRY_COLUMNS[:-1], "run_id")  # what a row reads of an entry: ..., "metadata", then its run
_row_values = attrgetter(*_ROW_FIELDS)


class EntryColumns(Protocol):
    """Entries that can also be read a batch of fields at a time (projections.texts.FullEntries): an export of
    millions then makes no object per entry."""

    def __iter__(self) -> Iterator[Entry]: ...

    def columns(self, names: Sequence[str], size: int, *, json_texts: bool = False
                ) -> Iterator[dict[str, list[Any]]]: ...


def _row_columns(entries: Iterable[Entry] | EntryColumns, opts: ExportOptions, size: int, *,
                 json_texts: bool = False) -> Iterator[list[list[Any]]]:
    """ENTRY_COLUMNS' values of the entries, ``size`` entries at a time: one list per column. ``json_texts``: the
    texts may come as msgspec.Raw JSON strings (what msgspec writes as they are; a str where there are no columns)."""
    columns = getattr(entries, "columns", None)
    batches = (columns(_ROW_FIELDS, size, json_texts=json_texts) if columns is not None
               else _transposed(entries, size))
    for batch in batches:
        runs = batch["run_id"]
        systems = [opts.systems.get(run, "") for run in runs] if opts.systems else [""] * len(runs)
        yield [*(batch[name] for name in ENTRY_COLUMNS[:-2]), _metadata_texts(batch["metadata"]), systems]


def _transposed(entries: Iterable[Entry], size: int) -> Iterator[dict[str, list[Any]]]:
    for batch in _batches(entries, size):
        try:
            values = list(map(_row_values, batch))
        except AttributeError:  # an Entry that has not every field: the ones it lacks are None
            values = [tuple(getattr(e, f, None) for f in _ROW_FIELDS) for e in batch]
        yield dict(zip(_ROW_FIELDS, map(list, zip(*values, strict=True)), strict=True))


def _metadata_texts(values: list[dict[str, Any]]) -> list[str]:
    """Each metadata dict as its JSON text; one text for each dict object (entries read from columns share the
    dicts of equal metadata: a dataset has a few)."""
    memo: dict[int, str] = {}  # by id(): every dict is held by ``values`` while this runs
    out = []
    for m in values:
        text = memo.get(id(m))
        if text is None:
            text = memo[id(m)] = _json.encode(m).decode() if m else "{}"
        out.append(text)
    return out


def write_jsonl(fh: BinaryIO, entries: Iterable[Entry] | EntryColumns, opts: ExportOptions = _DEFAULTS) -> int:
    """Every field of every entry, one JSON object per line."""
    n = 0
    with _behind(fh.write) as write:
        for columns in _row_columns(entries, opts, _READ_BATCH, json_texts=True):
            rows = list(map(EntryRow, *columns))
            write(_json.encode_lines(rows))
            n += len(rows)
    return n


@contextmanager
def _behind(write: Callable[[Any], Any]) -> Iterator[Callable[[Any], None]]:
    """``write`` called on a second thread, one call behind the caller: what it does without the GIL (the file's
    write, Arrow's encoding and compression) overlaps the reading of the next batch. At most one call is in
    flight; its error is raised by the next call or on leaving, and leaving waits for it."""
    pending: list[Future[Any]] = []
    with ThreadPoolExecutor(1, thread_name_prefix="dsetlog-export") as pool:

        def call(value: Any) -> None:
            if pending:
                pending.pop().result()
            pending.append(pool.submit(write, value))

        yield call
        if pending:
            pending.pop().result()


def write_alpaca(fh: BinaryIO, entries: Iterable[Entry] | EntryColumns, opts: ExportOptions = _DEFAULTS) -> int:
    return _jsonl(fh, (instruct.alpaca_row(e, opts) for e in _reading(entries, _InstructEntry) if instruct.kept(e, opts)))


def write_sharegpt(fh: BinaryIO, entries: Iterable[Entry] | EntryColumns, opts: ExportOptions = _DEFAULTS) -> int:
    return _jsonl(fh, (instruct.sharegpt_row(e, opts) for e in _reading(entries, _InstructEntry) if instruct.kept(e, opts)))


def write_openai_chat(fh: BinaryIO, entries: Iterable[Entry] | EntryColumns, opts: ExportOptions = _DEFAULTS) -> int:
    return _jsonl(fh, (instruct.openai_chat_row(e, opts) for e in _reading(entries, _InstructEntry) if instruct.kept(e, opts)))


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


_TEXT_COLUMNS = ("question", "answer", "reasoning")
_UNIQUE_COLUMNS = ("id", *_TEXT_COLUMNS)


def write_parquet(fh: BinaryIO, entries: Iterable[Entry] | EntryColumns, opts: ExportOptions = _DEFAULTS) -> int:
    """The columns of the jsonl format, typed (timestamps as timestamps). Written in row groups of 5,000 (two are in
    memory at once: one written, one made; 10,000 took ~15 MB more and were no faster)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    # the texts and ids are unique: a dictionary of them is built to be dropped, and min/max statistics of texts
    # tell a reader nothing (a third of the writer's time, for the same file to read)
    repeated = [name for name in ENTRY_COLUMNS if name not in _UNIQUE_COLUMNS]
    # the C library's malloc, not Arrow's default pool (mimalloc, in the wheels), which kept ~60 MB more of what
    # the row groups' arrays took, made and freed on two threads, and never gave it back (bench_scale's export)
    pool = pa.system_memory_pool()
    n = 0
    with pq.ParquetWriter(fh, schema, compression="zstd", use_dictionary=repeated, memory_pool=pool,
                          write_statistics=[name for name in ENTRY_COLUMNS if name not in _TEXT_COLUMNS]) as writer:
        group: list[Any] = []
        def write_group(table: Any) -> None:
            writer.write_table(table)
            pool.release_unused()

        with _behind(write_group) as write:
            # a fifth of a row group read at a time, each part made into Arrow arrays at once: Python holds one
            # part's texts, Arrow the row group's
            for columns in _row_columns(entries, opts, _BATCH // 5):
                group.append(pa.record_batch([_arrow(values, field.type, pool)
                                              for field, values in zip(schema, columns, strict=True)], schema=schema))
                n += len(columns[0])
                if len(group) == 5:
                    write(pa.Table.from_batches(group, schema=schema))
                    group = []
            if group:
                write(pa.Table.from_batches(group, schema=schema))
    return n


def _arrow(values: list[Any], type_: Any, pool: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(type_):  # the log's ISO-8601 text, parsed by arrow in C
        return pc.cast(pa.array(values, type=pa.string(), memory_pool=pool), type_, memory_pool=pool)
    return pa.array(values, type=type_, memory_pool=pool)


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
