"""A document dataset's files: one per split (train, validation, test) when it has splits, else
``dataset``, in batches of at most :data:`EXPORT_BATCH` entries, streamed and written atomically.

Used by the end of a generation run, `dset export` and GET /datasets/{id}/download. Entries under the
quality threshold stay in the log only.
"""

from __future__ import annotations

from array import array
from dataclasses import replace
from pathlib import Path

from dsetlog.evaluation.splits import SPLITS
from dsetlog.export.cards import split_files, write_cards
from dsetlog.export.formats import ENTRY_COLUMNS, EXPORT_FORMATS, EXPORT_SUFFIX, EXPORT_WRITERS
from dsetlog.export.options import INSTRUCTION_FORMATS, ExportError, ExportOptions
from dsetlog.fsutil import atomic_writer
from dsetlog.paths import export_dir
from projections.columns import BELOW_THRESHOLD, Views
from projections.readmodel import ReadModel
from projections.texts import FullEntries

EXPORT_BATCH = 100_000  # entries per file: bigger datasets are split into numbered batch files


__all__ = ["EXPORT_BATCH", "ExportError", "export_dataset", "exportable"]


def exportable(rm: ReadModel, dataset_id: str) -> Views:
    """Entries that go into files (their views made as they are read): those under the quality threshold stay
    in the log only."""
    every = rm.datasets.views(dataset_id)
    return Views(every.rows, every.rows.where(every.order, without=BELOW_THRESHOLD))


def export_dataset(rm: ReadModel, dataset_id: str, *, data_dir: Path, output_dir: str = ".",
                   format_type: str = "jsonl", batch_size: int = EXPORT_BATCH,
                   options: ExportOptions | None = None) -> tuple[list[Path], int]:
    """Write the dataset into ``<data>/<output_dir>/<dataset_id>/``: one file per split (train, validation,
    test) when it has splits, else ``dataset``; ``batch_size`` entries per file at most. Streamed and atomic.
    Then the folder's dataset card (README.md) and LLaMA-Factory's dataset_info.json, which describe every
    format's files there (dsetlog.export.cards). The count returned is of the entries written: an instruction
    format leaves the negatives out unless it carries their text (``options.context``).

    :class:`ExportError` for an unknown format or options it cannot carry; :class:`dsetlog.paths.OutputDirError`
    for an output_dir that leads outside the data dir (resolved and checked where it leads: a job resumed from a
    log older than the API's own check meets it here)."""
    if format_type not in EXPORT_FORMATS:
        raise ExportError(f"format_type {format_type!r} is not one of {', '.join(EXPORT_FORMATS)}")
    opts = _filled(rm, dataset_id, options or ExportOptions())
    opts.check([format_type])
    base = export_dir(data_dir, output_dir, dataset_id) / dataset_id
    suffix = EXPORT_SUFFIX[format_type]
    files: list[Path] = []
    total = 0
    for name, entries in _groups(rm, dataset_id).items():
        written, count = _write_batches(rm, base, name, suffix, format_type, entries, batch_size, opts)
        files += written
        total += count
    _remove_stale(base, suffix, set(files))
    view = rm.datasets.dataset(dataset_id)
    present = {fmt: split_files(base, sfx) for fmt, sfx in EXPORT_SUFFIX.items()}
    ours = [p.name for fmt, sfx in EXPORT_SUFFIX.items() for p in base.glob(f"*{sfx}")]
    write_cards(base, title=view.name if view is not None else dataset_id, default=format_type, files=present,
                entry_columns=ENTRY_COLUMNS, instruction=INSTRUCTION_FORMATS, ours=ours)
    return files, total


def run_systems(rm: ReadModel, dataset_id: str) -> dict[str, str]:
    """The system prompt each of the dataset's runs sent, by run id (runs that sent none left out)."""
    return {run.run_id: run.system for run in rm.datasets.runs(dataset_id) if run.system}


def _filled(rm: ReadModel, dataset_id: str, opts: ExportOptions) -> ExportOptions:
    """The options with what the dataset says: the system prompts its runs sent, the chunks' texts."""
    systems = run_systems(rm, dataset_id)

    def chunk_text(chunk_id: str) -> str | None:
        chunk = rm.projects.chunk(chunk_id)
        return chunk.text if chunk is not None else None

    return replace(opts, systems=systems, chunk_text=opts.chunk_text or chunk_text)


def _groups(rm: ReadModel, dataset_id: str) -> dict[str, Views]:
    """The files' names and what goes into each: the splits when the dataset has them, else one ``dataset``."""
    assignment = rm.evaluations.splits(dataset_id)
    entries = exportable(rm, dataset_id)
    if not assignment:
        return {"dataset": entries}
    groups: dict[str | None, array[int]] = {name: array("i") for name in SPLITS}
    for r, entry_id in zip(entries.order, entries.ids(), strict=True):
        group = groups.get(assignment.get(entry_id))
        if group is not None:
            group.append(r)
    return {name: Views(entries.rows, groups[name]) for name in SPLITS}


def _write_batches(rm: ReadModel, base: Path, name: str, suffix: str, format_type: str, entries: Views,
                   batch_size: int, opts: ExportOptions) -> tuple[list[Path], int]:
    """The entries into one file, or into numbered parts of ``batch_size``; each streamed with its texts read
    from the log a chunk at a time (memory holds a chunk, not a file's worth)."""
    write = EXPORT_WRITERS[format_type]
    files: list[Path] = []
    total = 0
    parts = max(1, -(-len(entries) // batch_size))
    for part in range(parts):
        # one file when it all fits (a dataset of exactly batch_size entries too), else numbered parts
        stem = name if parts == 1 else f"{name}_part{part + 1:04d}"
        target = base / f"{stem}{suffix}"
        with atomic_writer(target) as fh:
            total += write(fh, FullEntries(rm, entries[part * batch_size : (part + 1) * batch_size]), opts)
        files.append(target)
    return files, total


def _remove_stale(base: Path, suffix: str, written: set[Path]) -> None:
    """Files an earlier export of this dataset left here (other parts, other splits) would be read as part of it."""
    for name in ("dataset", "train", "validation", "test"):
        for stale in [base / f"{name}{suffix}", *base.glob(f"{name}_part[0-9][0-9][0-9][0-9]{suffix}")]:
            if stale not in written and stale.is_file():
                stale.unlink()
