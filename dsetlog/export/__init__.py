"""Writing datasets to files: the export formats."""
