"""When a run should use a second core: its process is CPU-bound and the machine has a core to spare.

The engine asks :func:`second_core` whether to move its requests to a send process
(:class:`dsetlog.llm.sender.SendProcess`). ``cores`` is the user's word (``--cores``): 1 never, 2 at once,
None (auto) once the run's process has kept one core busy for two seconds running while the machine had at
least half a core idle (a busy machine gains nothing from one more process), and only when enough work is left
to pay for starting one. Auto then keeps the send process only if it pays: :func:`rows_per_s` over a few
seconds before it and after it, and back to one process when the rows a second did not rise by ``PAYS``. (On
a 2-core machine whose other core also runs the model server, it does not: bench/bench_rows_per_core.py.)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

BUSY = 0.85  # of one core: the run's process is CPU-bound
SPARE = 0.5  # idle cores the machine must have for a second process to run
WINDOW_S = 1.0
WINDOWS = 2  # busy windows in a row before a second process starts
MIN_LEFT = 4  # items left, per call in flight, for a process start (0.2-0.5 s of CPU) to pay
PAYS = 1.1  # the rows a second with a send process, against without, for it to stay
MEASURE_S = 2.0  # seconds of rows counted before and after


def _idle_ticks() -> tuple[int, int] | None:
    """(idle, total) clock ticks of all the machine's cores since boot; None where /proc/stat is not there."""
    try:
        with open("/proc/stat", "rb") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields[:8]]
    return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, of user nice system idle iowait irq softirq steal


class CpuWatch:
    """The run's process's share of a core, and the machine's idle cores, over each interval between samples."""

    def __init__(self) -> None:
        self._cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self._wall, self._cpu, self._ticks = time.monotonic(), time.process_time(), _idle_ticks()

    @property
    def cores(self) -> int:
        return self._cores

    def sample(self) -> tuple[float, float | None]:
        """(this process's CPU share of one core, idle cores of the machine or None when unknown) since the last."""
        wall, cpu, ticks = time.monotonic(), time.process_time(), _idle_ticks()
        share = (cpu - self._cpu) / max(wall - self._wall, 1e-9)
        idle = None
        if ticks is not None and self._ticks is not None and ticks[1] > self._ticks[1]:
            idle = (ticks[0] - self._ticks[0]) / (ticks[1] - self._ticks[1]) * self._cores
        self._wall, self._cpu, self._ticks = wall, cpu, ticks
        return share, idle


async def second_core(cores: int | None, left: Callable[[], int], concurrency: int) -> bool:
    """Wait until a second process would pay (see the module's text); False when it never will for this run."""
    if cores == 1:
        return False
    if cores is not None:
        return True
    watch = CpuWatch()
    if watch.cores < 2:
        return False
    busy = 0
    while busy < WINDOWS:
        await asyncio.sleep(WINDOW_S)
        if left() < MIN_LEFT * concurrency:
            return False
        share, idle = watch.sample()
        busy = busy + 1 if share >= BUSY and (idle is None or idle >= SPARE) else 0
    return True


async def rows_per_s(done: Callable[[], int], seconds: float = MEASURE_S) -> float:
    """The rate ``done()`` grows at over the next ``seconds``."""
    start, began = done(), time.monotonic()
    await asyncio.sleep(seconds)
    return (done() - start) / max(time.monotonic() - began, 1e-9)
