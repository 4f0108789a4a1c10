"""The `dset` command line: one small function per command over the shared core.

Each command module exposes ``register(subparsers)`` that adds its parser and
sets ``func``; ``func(args) -> int`` returns the exit code. Exit codes: 0 done,
1 the work did not all succeed (details printed), 2 bad input or usage, 3 the log
could not be written (disk full, read-only, I/O error: the message says what to
free; run the same command again after), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dsetlog import redaction
from dsetlog.cli import datasets, generate, ingest, log, serve, simulate
from dsetlog.cli.options import EXIT_CODES, EXIT_INTERRUPTED
from dsetlog.errors import DsetError, Kind


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dset", description="Turn questions and documents into LLM training datasets, never losing work."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (generate, ingest, datasets, log, simulate, serve):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except DsetError as exc:
        lost = getattr(exc, "lost_entries", 0)
        lost_text = (f" {lost} answer(s) received at that moment could not be recorded; the next run asks for "
                     "them again." if lost else "")
        verb = "stopped" if exc.kind is Kind.UNAVAILABLE else "error"
        print(f"dset: {verb}: {redaction.redact(str(exc))}{lost_text}", file=sys.stderr)
        return EXIT_CODES[exc.kind]
    except KeyboardInterrupt:
        print("dset: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
