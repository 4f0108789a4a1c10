"""What the simulator counts: requests, completions, faults, attempts per prompt, the most chat requests
in flight at once, the Batch API's uploads, creates, cancels and answered lines, and a bounded log of the
chat request bodies it was sent.

Mutated on the server's loop and read from any thread (``Simulator.stats()``, ``requests()``), so every
change and every snapshot holds the one lock.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from dsetlog.simulator.config import FAULT_KINDS
from dsetlog.simulator.reply import Reply

_STAT_FAULTS: tuple[str, ...] = (*FAULT_KINDS, "401", "402")


class Stats:
    """Counters mutated on the server's loop and read from any thread; one lock keeps snapshots whole."""

    def __init__(self, request_log: int = 0) -> None:
        self.lock = threading.Lock()
        self.bodies: deque[Any] = deque(maxlen=request_log)
        self.in_flight = 0
        self.clear()

    def clear(self) -> None:
        self.requests = 0
        self.completions = 0
        self.rate_limited = 0
        self.file_uploads = 0
        self.batch_creates = 0
        self.batch_cancels = 0
        self.batch_lines = 0  # batch input lines answered (never counted in requests)
        self.faults = dict.fromkeys(_STAT_FAULTS, 0)
        self.by_prompt: dict[str, int] = {}
        self.max_in_flight = self.in_flight  # requests still being served when cleared stay counted
        self.bodies.clear()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "completions": self.completions,
                "rate_limited": self.rate_limited,
                "file_uploads": self.file_uploads,
                "batch_creates": self.batch_creates,
                "batch_cancels": self.batch_cancels,
                "batch_lines": self.batch_lines,
                "faults": dict(self.faults),
                "by_prompt": dict(self.by_prompt),
                "max_in_flight": self.max_in_flight,
            }

    def logged(self, last: int | None) -> list[Any]:
        """The last ``last`` request bodies kept (all of them when None), oldest first."""
        with self.lock:
            bodies = list(self.bodies)
        return bodies if last is None else bodies[-last:] if last > 0 else []

    # -- counting, on the loop

    def count(self, counter: str) -> None:
        """Add one to ``requests``, ``completions``, ``rate_limited`` or one of the batch counters."""
        with self.lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def fault(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] += 1

    def seen(self, key: str) -> int:
        """Count a request for a prompt key; how many there were before it (its server-side attempt)."""
        with self.lock:
            seen = self.by_prompt.get(key, 0)
            self.by_prompt[key] = seen + 1
        return seen

    def log(self, body: Any) -> None:
        with self.lock:
            self.bodies.append(body)

    # -- chat requests in flight

    def began(self) -> None:
        with self.lock:
            self.in_flight += 1
            if self.in_flight > self.max_in_flight:
                self.max_in_flight = self.in_flight

    def abandoned(self) -> None:
        """A chat request began but no reply came of it (the simulator failed on it)."""
        with self.lock:
            self.in_flight -= 1

    def ended(self, reply: Reply) -> None:
        if reply.tracked:
            reply.tracked = False
            with self.lock:
                self.in_flight -= 1
