"""Writing datasets to files: the export formats and their one list (formats.py), a document dataset's
files per split and batch (datasets.py)."""
