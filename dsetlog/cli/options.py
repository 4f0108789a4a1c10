"""What every command shares: the data directory option, and the exit codes (from ``dsetlog.errors``'s kinds)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dsetlog.errors import Kind

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WRITE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# An error's kind decides the exit code, here and nowhere else.
EXIT_CODES = {
    Kind.INVALID: EXIT_USAGE,
    Kind.NOT_FOUND: EXIT_USAGE,
    Kind.CONFLICT: EXIT_USAGE,
    Kind.TOO_LARGE: EXIT_USAGE,
    Kind.UNAVAILABLE: EXIT_WRITE,
    Kind.FATAL: EXIT_FAILED,
}


def data_dir(args: argparse.Namespace) -> Path:
    """``--data``, else ``$DSET_DATA_DIR``, else ``./data``."""
    return Path(getattr(args, "data", None) or os.environ.get("DSET_DATA_DIR") or "data")


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="DIR", help="data directory holding events.jsonl (env DSET_DATA_DIR, default ./data)"
    )
