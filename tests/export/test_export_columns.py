"""The full formats (jsonl, parquet) read a dataset a batch of columns at a time (projections.texts.FullEntries):
the files are those written from entry objects, byte for byte (jsonl) and value for value (parquet), and an
export that cannot be written fails whole, leaving no file."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import three_ways

from dsetlog.export.datasets import export_dataset
from dsetlog.export.formats import EXPORT_WRITERS, write_jsonl, write_parquet
from dsetlog.export.options import ExportOptions
from dsetlog.ids import entry_id_for
from dsetlog.store.events import (
    DatasetCreated,
    EntryEdited,
    EntryGenerated,
    EntryScored,
    Event,
    QuestionQueued,
    RunStarted,
    Usage,
)
from projections.readmodel import ReadModel
from projections.texts import FullEntries

DS = "ds"
# texts a writer must escape or carry as they are: quotes, backslashes, control characters, line separators,
# other scripts, an emoji outside the BMP, and null's text
TRICKY = ['He said "stop" \\ then\n\tleft', "\u2028line\u2029sep \x00\x1f", "日本語のテキスト", "مرحبا بالعالم",
          "Ελληνικά 😀", "null", ""]


def _item(i: int) -> str:
    return f"q_{i:016x}"


def _events(n: int = 40) -> list[Event]:
    events: list[Event] = [DatasetCreated(dataset_id=DS, name="tricky"),
                           RunStarted(run_id="run-1", dataset_id=DS, command="generate", system="Be brief.")]
    events += [QuestionQueued(dataset_id=DS, item_id=_item(i), question=f"q {i}", row=i) for i in range(n)]
    events += [EntryGenerated(
        dataset_id=DS, item_id=_item(i), entry_id=entry_id_for(_item(i)) if i % 9 else f"mine-{i}",
        question=TRICKY[i % len(TRICKY)] + f" {i}?", answer=TRICKY[(i + 1) % len(TRICKY)], reasoning=TRICKY[i % 3],
        category=("Science", "", "Math")[i % 3], quality_score=None if i % 4 == 0 else i / n, difficulty="hard",
        metadata={"negative": True} if i % 10 == 5 else {"slot": i % 3, "text": TRICKY[i % 2]} if i % 2 else {}, usage=Usage(prompt_tokens=i, completion_tokens=i),
        run_id="run-1" if i % 2 else "", simulated=bool(i % 3), source_chunk=f"chunk-{i % 4}") for i in range(n)]
    events += [EntryEdited(dataset_id=DS, entry_id=entry_id_for(_item(1)), question="edited \"q\"\n"),
               EntryEdited(dataset_id=DS, entry_id=entry_id_for(_item(2)), answer="edited a"),
               EntryScored(dataset_id=DS, entry_id=entry_id_for(_item(3)), quality_score=0.5, analyzed=True)]
    return events


def _both(rm: ReadModel, write: Callable[..., int], **options: object) -> tuple[bytes, bytes]:
    views = rm.datasets.views(DS)
    opts = ExportOptions(systems={"run-1": "Be brief."}, **options)  # type: ignore[arg-type]
    from_columns, from_entries = io.BytesIO(), io.BytesIO()
    assert write(from_columns, FullEntries(rm, views), opts) == write(from_entries, list(rm.iter_full(views)), opts)
    return from_columns.getvalue(), from_entries.getvalue()


@pytest.mark.parametrize(("format_type", "options"), [
    ("csv", {"csv_bom": True}), ("alpaca", {"reasoning": "think"}), ("sharegpt", {"reasoning": "field"}),
    ("openai-chat", {"context": "chunk"}), ("openai-chat", {})])
def test_the_other_formats_from_the_columns_are_those_of_the_entries(tmp_path: Path, format_type: str,
                                                                    options: dict[str, str]) -> None:
    rm = three_ways(tmp_path, _events(), cuts=[30], snap_at=50)[2]
    columns, entries = _both(rm, EXPORT_WRITERS[format_type], **options)
    assert columns == entries and len(columns) > 1000


def test_jsonl_from_the_columns_is_the_jsonl_of_the_entries(tmp_path: Path) -> None:
    for rm in three_ways(tmp_path, _events(), cuts=[30, 60], snap_at=50):
        columns, entries = _both(rm, write_jsonl)
        assert columns == entries
        rows = [json.loads(line) for line in columns.splitlines()]
        by_id = {r["id"]: r for r in rows}
        assert by_id[entry_id_for(_item(1))]["question"] == "edited \"q\"\n"
        assert by_id[entry_id_for(_item(2))]["answer"] == "edited a"
        assert {r["question"].rsplit(" ", 1)[0] for r in rows} >= {t for t in TRICKY if t} - {""}
        assert by_id["mine-9"]["system"] == "Be brief." and by_id["mine-0"]["system"] == ""


def test_parquet_from_the_columns_holds_the_values_of_the_entries(tmp_path: Path) -> None:
    for rm in three_ways(tmp_path, _events(), cuts=[30], snap_at=50):
        columns, entries = (pq.read_table(io.BytesIO(raw)) for raw in _both(rm, write_parquet))
        assert columns.schema == entries.schema
        assert columns.to_pylist() == entries.to_pylist()
        assert columns.num_rows == 40 and columns.column("question").null_count == 0


def test_a_dataset_larger_than_a_batch_comes_out_whole_and_in_order(tmp_path: Path) -> None:
    for rm in three_ways(tmp_path, _events(4500), cuts=[], snap_at=0):  # batches of 2,048 and 2,000 entries
        views = rm.datasets.views(DS)
        out = tmp_path / "out"
        export_dataset(rm, DS, data_dir=tmp_path, output_dir="out", format_type="jsonl")
        export_dataset(rm, DS, data_dir=tmp_path, output_dir="out", format_type="parquet")
        jsonl = [json.loads(line)["id"] for line in (out / DS / "dataset.jsonl").read_bytes().splitlines()]
        table = pq.read_table(out / DS / "dataset.parquet")
        assert jsonl == table.column("id").to_pylist() == list(views.ids())
        meta = pq.ParquetFile(out / DS / "dataset.parquet").metadata
        assert (meta.num_row_groups, meta.row_group(0).num_rows) == (1, 4500)  # its parts (of 1,000) in one row group


@pytest.mark.parametrize("format_type", ["jsonl", "parquet"])
def test_a_full_disk_fails_the_export_and_leaves_no_file(tmp_path: Path, tmpfs: Callable[[str], Path],
                                                         format_type: str) -> None:
    data = tmp_path / "data"
    rm = three_ways(data, _events(3000), cuts=[], snap_at=0)[0]
    disk = tmpfs("16k")  # far less than the dataset's files (its parquet too: its texts repeat)
    with pytest.raises(OSError) as failed:
        export_dataset(rm, DS, data_dir=disk, output_dir=".", format_type=format_type)
    assert "No space left" in str(failed.value)
    assert [p for p in disk.rglob("*") if p.is_file()] == []  # no half file, no temp file left behind


class _FailingFile(io.RawIOBase):
    """A file whose second write fails (an I/O error on the writer's thread)."""

    def __init__(self) -> None:
        self.writes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        if self.writes == 2:
            raise OSError(5, "Input/output error")
        return len(data)


def test_a_write_failing_on_the_writers_thread_is_raised_by_the_export(tmp_path: Path) -> None:
    rm = three_ways(tmp_path, _events(6000), cuts=[], snap_at=0)[0]
    with pytest.raises(OSError, match="Input/output error"):
        write_jsonl(_FailingFile(), FullEntries(rm, rm.datasets.views(DS)))  # type: ignore[arg-type]
