"""The `dset` command line: one small function per command over the shared core.

Each command module exposes ``register(subparsers)`` that adds its parser and
sets ``func``; ``func(args) -> int`` returns the exit code. Exit codes: 0 done,
1 the work did not all succeed (details printed), 2 bad input or usage, 3 the log
could not be written (disk full, read-only, I/O error: the message says what to
free; run the same command again after), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dsetlog import redaction
from dsetlog.log import LogError, LogWriteError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WRITE = 0, 1, 2, 3


class UsageError(Exception):
    """Bad input from the user: printed as one clear line, exit code 2."""


def data_dir(args: argparse.Namespace) -> Path:
    """``--data``, else ``$DSET_DATA_DIR``, else ``./data``."""
    return Path(getattr(args, "data", None) or os.environ.get("DSET_DATA_DIR") or "data")


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="DIR", help="data directory holding events.jsonl (env DSET_DATA_DIR, default ./data)"
    )


def build_parser() -> argparse.ArgumentParser:
    from dsetlog import datasets_cmd, generate_cmd, ingest_cmd, logtools, serve_cmd, simulate_cmd

    parser = argparse.ArgumentParser(
        prog="dset", description="Turn questions and documents into LLM training datasets, never losing work."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (generate_cmd, ingest_cmd, datasets_cmd, logtools, simulate_cmd, serve_cmd):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"dset: error: {redaction.redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except LogWriteError as exc:
        lost = (f" {exc.lost_entries} answer(s) received at that moment could not be recorded; the next run asks "
                "for them again." if exc.lost_entries else "")
        print(f"dset: stopped: {redaction.redact(str(exc))}{lost}", file=sys.stderr)
        return EXIT_WRITE
    except LogError as exc:
        print(f"dset: error: {redaction.redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("dset: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: command modules raise dsetlog.cli.UsageError,
    # which is a different class from this copy's.
    from dsetlog.cli import main as _main

    sys.exit(_main())
