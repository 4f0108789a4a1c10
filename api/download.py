"""GET /datasets/{dataset_id}/download: the dataset's file, or a ZIP of its files, streamed; and GET
/export-formats: the formats offered (dsetlog.export.formats.EXPORT_FORMATS), which the review page shows.

The export is written by :func:`dsetlog.export.datasets.export_dataset` (one file per split, batches of
100,000 entries) into a temporary folder, from the entries as they stand at one seq (the read model's
lock is held only to take the list). One file is streamed as it is, with its format's content type;
several are zipped on the fly into the response (zipfile in streaming mode: no second copy on disk,
nothing whole in memory). The temporary folder is removed when the server closes the response.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import falcon
import msgspec

from api.context import Context
from api.datasets import dataset_or_404
from api.errors import bad_request
from api.schemas import DownloadQuery
from api.spec import operation
from dsetlog.export.cards import CARD, DATASET_INFO
from dsetlog.export.datasets import ExportError, export_dataset
from dsetlog.export.formats import EXPORT_FORMATS, EXPORT_SUFFIX, FORMATS
from dsetlog.export.options import ExportOptions
from dsetlog.paths import OutputDirError

BLOCK = 1 << 20
ZIP_TYPE = "application/zip"
MEDIA_TYPES = tuple(dict.fromkeys([FORMATS[f].media_type for f in EXPORT_FORMATS] + [ZIP_TYPE]))


class _Frozen:
    """What export_dataset reads of a read model, taken at one seq (so the export runs without the lock):
    the entries, the splits, the runs (their system prompts), the dataset, and the texts of the chunks the
    entries were made from when the export carries them."""

    def __init__(self, rm: Any, dataset_id: str, *, chunks: bool) -> None:
        # the entries' rows at this seq (their views are made as the export reads them: values as the model has
        # them then, as a page shows them)
        views, runs = rm.datasets.views(dataset_id), list(rm.datasets.runs(dataset_id))
        view, splits = rm.datasets.dataset(dataset_id), dict(rm.evaluations.splits(dataset_id))
        texts = {}
        if chunks:
            strings, source_chunk = views.rows.strings.values, views.rows.entries.source_chunk
            for code in dict.fromkeys(source_chunk[r] for r in views.order):
                chunk_id = strings[code]
                if chunk_id:
                    texts[chunk_id] = rm.projects.chunk(chunk_id)
        self.datasets = SimpleNamespace(views=lambda _id: views, runs=lambda _id: runs, dataset=lambda _id: view)
        self.evaluations = SimpleNamespace(splits=lambda _id: splits)
        self.projects = SimpleNamespace(chunk=texts.get)
        # texts are read from the log, which only grows: no lock needed
        self.iter_full, self.iter_columns = rm.iter_full, rm.iter_columns


class _Sink:
    """A write-only, unseekable file for zipfile: what is written is handed out by :meth:`take`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def write(self, data: bytes) -> int:
        self._buf += data
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


class TempStream:
    """A WSGI response body over a generator; closing it (the server does) removes the temporary folder."""

    def __init__(self, chunks: Iterator[bytes], tmp: Path) -> None:
        self._chunks, self._tmp = chunks, tmp

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(BLOCK):
            yield chunk


def _zip_chunks(files: list[Path], base: Path) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:  # type: ignore[arg-type]
        for path in files:
            with open(path, "rb") as src, zf.open(str(path.relative_to(base)), "w", force_zip64=True) as dst:
                while chunk := src.read(BLOCK):
                    dst.write(chunk)
                    out = sink.take()
                    if out:
                        yield out
            out = sink.take()
            if out:
                yield out
    yield sink.take()


class DownloadResource:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation("Download the dataset: one file, or a ZIP of its split or batch files", query=DownloadQuery,
               binary=MEDIA_TYPES, errors=(400,), tags=("datasets",),
               description="format_type defaults to the dataset's own. Entries under the quality threshold "
                           "stay out of the files (they are kept in the log). A ZIP also holds the dataset card "
                           "(README.md: Hugging Face datasets' configs and splits) and LLaMA-Factory's "
                           "dataset_info.json; reasoning, context and csv_bom as in POST /datasets/generate.")
    def on_get(self, req: falcon.Request, resp: falcon.Response, dataset_id: str) -> None:
        q: DownloadQuery = req.context.query
        rm = self.ctx.model(q.as_of)
        with rm.lock:
            view = dataset_or_404(rm, dataset_id, q.as_of)
            fmt = q.format_type or view.format_type
            if fmt not in EXPORT_FORMATS:
                fmt = "jsonl"
            frozen = _Frozen(rm, dataset_id, chunks=q.context == "chunk")
        tmp = Path(tempfile.mkdtemp(prefix="dset-download-", dir=self._tmp_root()))
        base = tmp.resolve() / dataset_id
        try:
            options = ExportOptions(reasoning=q.reasoning, context=q.context, csv_bom=q.csv_bom)
            files, _ = export_dataset(frozen, dataset_id, data_dir=tmp, output_dir=".",  # type: ignore[arg-type]
                                      format_type=fmt, options=options)
            if len(files) > 1:  # a ZIP: with the card and dataset_info.json that say which file is which split
                files += [base / name for name in (CARD, DATASET_INFO) if (base / name).is_file()]
        except (ExportError, OutputDirError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise bad_request(str(exc)) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if len(files) == 1:
            path = files[0]
            name = f"{dataset_id}{path.suffix}" if path.stem == "dataset" else f"{dataset_id}_{path.name}"
            resp.content_type = FORMATS[fmt].media_type
            resp.content_length = os.path.getsize(path)
            resp.stream = TempStream(_file_chunks(path), tmp)
        else:
            name = f"{dataset_id}.zip"
            resp.content_type = ZIP_TYPE
            resp.stream = TempStream(_zip_chunks(files, base), tmp)
        resp.downloadable_as = name

    def _tmp_root(self) -> Path:
        root = self.ctx.data_dir / "tmp"
        root.mkdir(parents=True, exist_ok=True)
        return root


class ExportFormat(msgspec.Struct, frozen=True):
    name: str  # the format_type to ask for
    media_type: str  # of one file of it (several files come as a ZIP)
    suffix: str  # of its files


class ExportFormats(msgspec.Struct, frozen=True):
    formats: list[ExportFormat]  # in the order they are offered


EXPORT_FORMATS_RESPONSE = ExportFormats(formats=[ExportFormat(name, FORMATS[name].media_type, EXPORT_SUFFIX[name])
                                                 for name in EXPORT_FORMATS])


class ExportFormatsResource:
    """GET /export-formats: the review page offers a download button per format from this list."""

    @operation("The formats a dataset can be downloaded or exported in (format_type), in the order offered",
               response=ExportFormats, tags=("datasets",))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = EXPORT_FORMATS_RESPONSE
