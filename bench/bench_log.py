"""How fast the event log makes events durable.

    python bench/bench_log.py [--dir DIR] [--events N] [--latency-appends N]

1. Group commit: durable appends/s of ~300-byte EntryGenerated events in batches
   of 100, 1,000 and 10,000 (one write + one fdatasync per batch).
2. One event per append: p50/p99 latency of EventLog.append over N appends, next
   to the floor any durable append pays on this disk: one os.write + os.fdatasync
   of a 300-byte line on a plain file in the same directory, measured in the same
   run. The ratio is the log's own overhead (lock, tail check, encoding).

Prints figures; not a test. The log files live in a temporary directory under
--dir (default: the system temp dir), so put --dir on the disk you care about.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dsetlog.store.events import EntryGenerated, Usage
from dsetlog.store.layout import encode_records, utc_now
from dsetlog.store.log import EventLog

LINE_TARGET = 300


def make_event(i: int, answer_len: int) -> EntryGenerated:
    return EntryGenerated(
        dataset_id="bench", item_id=f"i{i:08d}", entry_id=f"e{i:08d}", question=f"Question {i:08d}?",
        answer=("lorem ipsum dolor sit amet " * 20)[:answer_len], model="sim",
        usage=Usage(prompt_tokens=42, completion_tokens=87),
    )


def sized_answer() -> int:
    """The answer length that makes one encoded log line ~LINE_TARGET bytes (newline included)."""
    line = encode_records([make_event(0, 0)], first_seq=1, ts=utc_now())
    return max(0, LINE_TARGET - len(line))


def line_len(answer_len: int) -> int:
    return len(encode_records([make_event(1, answer_len)], first_seq=1, ts=utc_now()))


def bench_group_commit(directory: Path, batch: int, total: int, answer_len: int) -> tuple[float, float]:
    """(events/s, MB/s) for ``total`` events appended durably ``batch`` at a time."""
    path = directory / f"group-{batch}.jsonl"
    batches = [[make_event(b * batch + i, answer_len) for i in range(batch)] for b in range(total // batch)]
    with EventLog(path) as log:
        t0 = time.perf_counter()
        for events in batches:
            log.append_many(events)
        elapsed = time.perf_counter() - t0
        size = log.size
    path.unlink()
    n = len(batches) * batch
    return n / elapsed, size / elapsed / 1e6


def bench_single(directory: Path, count: int, answer_len: int) -> list[float]:
    path = directory / "single.jsonl"
    events = [make_event(i, answer_len) for i in range(count)]
    times = []
    with EventLog(path) as log:
        for event in events:
            t0 = time.perf_counter()
            log.append(event)
            times.append(time.perf_counter() - t0)
    path.unlink()
    return times


def bench_raw(directory: Path, count: int, line: bytes) -> list[float]:
    path = directory / "raw.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            os.write(fd, line)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return times


def pct(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="where the temporary log files go (default: system temp dir)")
    parser.add_argument("--events", type=int, default=200_000, help="events per group-commit run")
    parser.add_argument("--latency-appends", type=int, default=2000)
    parser.add_argument("--batches", default="100,1000,10000")
    args = parser.parse_args(argv)

    answer_len = sized_answer()
    size = line_len(answer_len)
    with tempfile.TemporaryDirectory(prefix="bench-log-", dir=args.dir) as tmp:
        directory = Path(tmp)
        # warm up imports, the page cache and the disk's journal before timing anything
        bench_single(directory, 50, answer_len)
        bench_raw(directory, 50, b"x" * (size - 1) + b"\n")

        group = []
        for batch in (int(b) for b in args.batches.split(",")):
            total = max(batch, args.events // batch * batch)
            rate, mbs = bench_group_commit(directory, batch, total, answer_len)
            group.append((batch, total, rate, mbs))

        # interleave the two latency runs in rounds so disk weather hits both alike
        single: list[float] = []
        raw: list[float] = []
        rounds = 4
        for _ in range(rounds):
            single += bench_single(directory, args.latency_appends // rounds, answer_len)
            raw += bench_raw(directory, args.latency_appends // rounds, b"x" * (size - 1) + b"\n")

    cmd = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    print(f"$ {cmd}")
    print(f"event line: {size} bytes (EntryGenerated); dir: {args.dir or tempfile.gettempdir()}; "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print()
    print("group commit (one write + one fdatasync per batch)")
    print(f"{'batch':>8} {'events':>9} {'events/s':>12} {'MB/s':>8}")
    for batch, total, rate, mbs in group:
        print(f"{batch:>8} {total:>9} {rate:>12,.0f} {mbs:>8.1f}")
    print()
    print(f"one event per append, {len(single)} appends (latency in ms)")
    print(f"{'':<34} {'p50':>7} {'p99':>7} {'mean':>7}")
    s50, s99, smean = pct(single, 0.5), pct(single, 0.99), statistics.fmean(single) * 1e3
    r50, r99, rmean = pct(raw, 0.5), pct(raw, 0.99), statistics.fmean(raw) * 1e3
    print(f"{'EventLog.append':<34} {s50:>7.3f} {s99:>7.3f} {smean:>7.3f}")
    print(f"{'os.write + os.fdatasync (floor)':<34} {r50:>7.3f} {r99:>7.3f} {rmean:>7.3f}")
    print(f"{'ratio':<34} {s50 / r50:>7.2f} {s99 / r99:>7.2f} {smean / rmean:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
