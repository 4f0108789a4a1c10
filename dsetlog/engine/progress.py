"""What bounds and shows a run: the one-line progress display (done, failed, rate, ETA, tokens, estimated
cost), the token or cost :class:`Budget`, and the :class:`Cancel` signal a user's cancel sets.

On a terminal the display redraws in place; into a file or pipe it prints a plain line
every ``interval`` seconds so logs of long runs still show progress.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


def duration(seconds: float) -> str:
    """A span as people read it: MM:SS, or H:MM:SS past an hour."""
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


@dataclass
class Progress:
    total: int
    done: int = 0  # answered, including those answered by earlier runs
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    priced: bool = True
    enabled: bool = True
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    interval: float = 0.0  # 0: pick by stream (0.2 s on a terminal, 10 s otherwise)
    # what a run waiting on others' work shows after the counts (a batch run: its batches' states and ETA)
    detail: str = ""
    _start: float = field(default_factory=time.monotonic)
    _start_done: int = -1
    _last: float = 0.0
    _width: int = 0

    def __post_init__(self) -> None:
        self._tty = self.stream.isatty()
        if not self.interval:
            self.interval = 0.2 if self._tty else 10.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def line(self) -> str:
        if self._start_done < 0:
            self._start_done = self.done
        elapsed = max(1e-6, time.monotonic() - self._start)
        rate = (self.done - self._start_done) / elapsed
        left = self.total - self.done - self.failed
        eta = duration(left / rate) if rate > 0 and left > 0 else "--:--"
        share = (self.done + self.failed) / self.total if self.total else 1.0
        bar = "#" * int(share * 20)
        cost = f"${self.cost:.4f}" if self.priced else "cost n/a"
        if self.detail:  # the rate of entries says nothing while a provider works on them: the detail has the ETA
            return f"[{bar:<20}] {self.done}/{self.total} done, {self.failed} failed | {self.detail} | {cost}"
        return (f"[{bar:<20}] {self.done}/{self.total} done, {self.failed} failed | {rate:.1f}/s | "
                f"ETA {eta} | {self.tokens:,} tokens | {cost}")

    def start(self) -> None:
        self._start = time.monotonic()
        self._start_done = self.done

    def refresh(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        text = self.line()
        if self._tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.refresh(force=True)
            if self._tty:
                self.stream.write("\n")
                self.stream.flush()


@dataclass
class Budget:
    tokens: int | None = None
    cost: float | None = None

    def reached(self, progress: Progress) -> bool:
        return (self.tokens is not None and progress.tokens >= self.tokens) or (
            self.cost is not None and progress.cost >= self.cost
        )

    def __str__(self) -> str:
        parts = ([f"{self.tokens:,} tokens"] if self.tokens is not None else []) + (
            [f"${self.cost:.2f}"] if self.cost is not None else [])
        return " / ".join(parts) or "none"


class Cancel:
    """A request to stop a run from outside (a user cancelling its job): engines start no new call once it is
    set, beside their budget; calls in flight may finish. Unlike a budget it carries why (``reason``).

    The job worker makes one per job and passes it down to every engine of the job's run."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str = "") -> None:
        self.reason = reason

    def is_set(self) -> bool:
        return self.reason is not None
