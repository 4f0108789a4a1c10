"""What every command shares: the data directory option, --budget's parsing, the built-in simulator of
--simulate, and the exit codes (from ``dsetlog.errors``'s kinds)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dsetlog.engine.progress import Budget
from dsetlog.errors import Kind, UsageError

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


def parse_budget(text: str | None) -> Budget:
    """--budget: a token count (50000, 200k, 1m tokens) or a cost ($2.50, 2.5 usd)."""
    if not text:
        return Budget()
    m = re.fullmatch(r"\s*\$\s*([0-9]*\.?[0-9]+)\s*|\s*([0-9]*\.?[0-9]+)\s*(usd|\$)\s*", text, re.IGNORECASE)
    if m:
        return Budget(cost=float(m.group(1) or m.group(2)))
    m = re.fullmatch(r"\s*([0-9][0-9_,]*)\s*(k|m)?\s*(tokens?)?\s*", text, re.IGNORECASE)
    if m:
        scale = {"k": 1_000, "m": 1_000_000}.get((m.group(2) or "").lower(), 1)
        return Budget(tokens=int(m.group(1).replace(",", "").replace("_", "")) * scale)
    raise UsageError(f"--budget {text!r}: give a token count (50000, 200k) or a cost ($2.50)")


@contextmanager
def simulator_url(enabled: bool, *, latency_ms: float, jitter_ms: float = 0.0) -> Iterator[str | None]:
    """--simulate: the base URL of a simulator running in this process meanwhile; None when not asked for."""
    if not enabled:
        yield None
        return
    from dsetlog.simulator.server import SimConfig, Simulator  # only a simulated run pays for its import

    with Simulator(SimConfig(latency_ms=latency_ms, jitter_ms=jitter_ms)) as sim:
        yield sim.base_url
