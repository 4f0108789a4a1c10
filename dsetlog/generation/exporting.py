"""Exporting, the last stage of every run (a stopped one too): the dataset's files in the run's format,
through :func:`dsetlog.export.datasets.export_dataset`."""

from __future__ import annotations

from dsetlog.engine.stages import Phase
from dsetlog.export.datasets import export_dataset
from dsetlog.generation.context import RunContext


def export_files(ctx: RunContext) -> tuple[list[str], int]:
    """Write the files: their paths relative to the data dir, and the entries written."""
    ctx.rm.catch_up()
    ctx.calls.show(Phase.EXPORTING, "Exporting")
    # an OutputDirError (a job resumed from a log older than the API's check) is the job's failure, its message kept
    files, exported = export_dataset(ctx.rm, ctx.dataset_id, data_dir=ctx.data_dir, output_dir=ctx.req.output_dir,
                                     format_type=ctx.plan.format_type, options=ctx.req.export_options)
    return [str(p.relative_to(ctx.data_dir)) for p in files], exported
