"""How long projections take to rebuild, and how much memory.

    python bench/bench_rebuild.py                   # 1,000,000 events, 3 runs of each measurement
    python bench/bench_rebuild.py --events 200000 --runs 1
    python bench/bench_rebuild.py --only verify     # the background check alone (a snapshot is saved first)

Each measurement runs in a fresh interpreter (so peak RSS, from getrusage's
ru_maxrss, belongs to that measurement alone) and prints its best and median:

* decode only     : msgspec decoding every line into its Recorded, nothing else (the floor of any replay)
* read only       : read_batches over the whole log, no projection (GC paused, as in a rebuild)
* rebuild         : ReadModel.open(use_snapshot=False): every standard projection from the first record
                   (--gc-compare: once more with the cyclic GC left on during the replay)
* save snapshot   : ReadModel.open() from scratch, then save_snapshot() (the save alone is timed)
* from snapshot   : ReadModel.open() with a valid snapshot and --tail records appended after it
* first read      : after that, the first read of the dataset the tail touched (decodes its shard)
* verify          : ReadModel.open(verify=True) from that snapshot, then wait_verified(): the background check
                   of every record the snapshot stands for (what `dset serve` does before its first write),
                   timed from the open; and a small read (a dataset's summary, under the model's lock) every
                   ms meanwhile, the delay from its arrival to its answer (p50/p99) next to the same after the check
* catch_up idle   : catch_up() with nothing new, per call

The log is written once per --events/--seed into --cache (bench/make_log.py)
and copied to a scratch dir for the runs, so the tail never touches the cache.
Targets from the issue: rebuild <= 3 s and <= 1 GB peak RSS; from snapshot <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
    """CPU seconds (user + system) of this process, or of its finished children: steadier than wall time."""
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


# --- one measurement, in its own interpreter ---------------------------------------


def measure(kind: str, data: Path) -> dict[str, float]:
    from dsetlog.store.log import LOG_NAME
    from dsetlog.store.scan import read_batches
    from projections import ReadModel

    c0 = _cpu()
    if kind == "decode":
        # the floor under any replay in Python: msgspec turning every line into Python objects, nothing else
        import msgspec

        from dsetlog.store.layout import Recorded
        from dsetlog.store.scan import line_chunks
        from projections import gc_paused

        decode_lines = msgspec.json.Decoder(Recorded).decode_lines
        fd = os.open(data / LOG_NAME, os.O_RDONLY)
        t0 = time.perf_counter()
        with gc_paused():
            n = sum(len(decode_lines(memoryview(buf)[:k])) for _, buf, k in line_chunks(fd, 0, os.fstat(fd).st_size))
        os.close(fd)
        return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - c0, "records": n, "peak_mb": _peak_mb()}
    if kind == "read":
        from projections import gc_paused

        t0 = time.perf_counter()
        with gc_paused():  # as a rebuild reads
            n = sum(len(recs) for recs, _ in read_batches(data / LOG_NAME))
        return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - c0, "records": n, "peak_mb": _peak_mb()}
    if kind == "rebuild-gc-on":
        import contextlib

        import projections.readmodel

        projections.readmodel.gc_paused = contextlib.nullcontext  # type: ignore[assignment]
        kind = "rebuild"
    if kind == "rebuild":
        t0 = time.perf_counter()
        rm = ReadModel.open(data, use_snapshot=False)
        return {
            "seconds": time.perf_counter() - t0,
            "cpu": _cpu() - c0,
            "records": rm.seq,
            "peak_mb": _peak_mb(),
        }
    if kind == "save":
        rm = ReadModel.open(data, use_snapshot=False)
        t0, c0 = time.perf_counter(), _cpu()
        path = rm.save_snapshot()
        return {
            "seconds": time.perf_counter() - t0,
            "cpu": _cpu() - c0,
            "mb": path.stat().st_size / 1e6,
            "peak_mb": _peak_mb(),
        }
    if kind == "snapshot":
        t0 = time.perf_counter()
        rm = ReadModel.open(data)
        opened, cpu = time.perf_counter() - t0, _cpu() - c0
        if not rm.snapshot_used:
            raise SystemExit("the snapshot was not used: run the 'save' measurement first")
        tail = rm.seq - rm.snapshot_seq
        last = rm.stats.last_seq
        t1, c1 = time.perf_counter(), _cpu()
        with rm.lock:
            touched = [d.id for d in rm.datasets.datasets()]
            n_entries = len(rm.datasets.entries(touched[-1]))
        first_read, first_cpu = time.perf_counter() - t1, _cpu() - c1
        return {
            "seconds": opened,
            "cpu": cpu,
            "first_read_cpu": first_cpu,
            "tail": tail,
            "last_seq": last,
            "first_read_seconds": first_read,
            "entries": n_entries,
            "peak_mb": _peak_mb(),
        }
    if kind == "verify":
        t0 = time.perf_counter()
        rm = ReadModel.open(data, verify=True)
        opened = time.perf_counter() - t0
        if not rm.snapshot_used:
            raise SystemExit("the snapshot was not used: run the 'save' measurement first")
        ds = rm.datasets.datasets()[0].id

        def small_read() -> float:
            """A request arriving 1 ms after the last: how long after its arrival it is answered."""
            t = time.perf_counter()
            time.sleep(0.001)  # the wait for the GIL after this is the request's too
            with rm.lock:
                rm.datasets.dataset(ds)
            return time.perf_counter() - t - 0.001

        during: list[float] = []
        while rm.verification().state == "checking":
            during.append(small_read())
        rm.wait_verified()
        checked = time.perf_counter() - t0
        after = [small_read() for _ in range(max(200, len(during)))]
        during.sort()
        after.sort()

        def pct(xs: list[float], q: float) -> float:
            return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3 if xs else 0.0

        return {
            "seconds": checked,
            "cpu": _cpu() - c0,
            "opened": opened,
            "checked_mb": rm.verification().total_bytes / 1e6,
            "reads": len(during),
            "p50_during": pct(during, 0.5), "p99_during": pct(during, 0.99),
            "p50_after": pct(after, 0.5), "p99_after": pct(after, 0.99),
            "peak_mb": _peak_mb(),
        }
    if kind == "idle":
        rm = ReadModel.open(data)
        calls = 20_000
        t0, c0 = time.perf_counter(), _cpu()
        for _ in range(calls):
            rm.catch_up()
        return {
            "seconds": (time.perf_counter() - t0) / calls,
            "cpu": (_cpu() - c0) / calls,
            "peak_mb": _peak_mb(),
        }
    raise SystemExit(f"unknown measurement {kind!r}")


def run_child(kind: str, data: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", kind, str(data)], check=True, capture_output=True, text=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # the checksum worker (dsetlog.store.crc_worker) a big replay starts is a child of the measured process
    result["worker_cpu"] = json.loads(out.stdout.strip().splitlines()[-2])["worker_cpu"]
    return result


# --- the driver ------------------------------------------------------------------------


def ensure_log(cache: Path, events: int, seed: int) -> Path:
    from make_log import write_log

    from dsetlog.store.log import LOG_NAME

    src = cache / f"log-{events}-{seed}"
    if not (src / LOG_NAME).exists():
        tmp = cache / f".tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.perf_counter()
        write_log(tmp, events, seed=seed)
        tmp.rename(src)
        print(f"# wrote {events} events to {src} in {time.perf_counter() - t0:.1f} s", flush=True)
    return src / LOG_NAME


def append_tail(data: Path, n: int) -> None:
    """``n`` more events for the last dataset, as a run resumed after the snapshot would write."""
    from dsetlog.store.events import AttemptStarted, EntryGenerated, QuestionQueued
    from dsetlog.store.log import EventLog
    from projections import ReadModel

    rm = ReadModel.open(data)
    ds = rm.datasets.datasets()[-1].id
    events = []
    for i in range(n // 3):
        item = f"tail-{i}"
        events += [
            QuestionQueued(dataset_id=ds, item_id=item, question=f"tail question {i}?", row=10**6 + i),
            AttemptStarted(dataset_id=ds, item_id=item, attempt=1),
            EntryGenerated(
                dataset_id=ds, item_id=item, entry_id=f"e-{item}", question=f"q{i}", answer="an answer"
            ),
        ]
    with EventLog.in_dir(data) as log:
        log.append_many(events)


def summarise(name: str, results: list[dict[str, float]], unit: float = 1.0, fmt: str = "{:.3f} s",
              children: str = "the checksum worker") -> str:
    secs = [r["seconds"] * unit for r in results]
    cpu = [r["cpu"] * unit for r in results]
    peak = max(r["peak_mb"] for r in results)
    worker = max(r.get("worker_cpu", 0.0) for r in results)
    return (
        f"{name:<14} wall best {fmt.format(min(secs))} median {fmt.format(statistics.median(secs))}"
        f"  cpu best {fmt.format(min(cpu))}" + (f" (+{worker:.2f} s in {children})" if worker else "")
        + f"  peak RSS {peak:.0f} MB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tail", type=int, default=3000, help="records appended after the snapshot")
    parser.add_argument(
        "--gc-compare", action="store_true", help="also rebuild once with the cyclic GC left on"
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dsetlog-bench")
    parser.add_argument("--only", choices=["verify"], help="only this measurement (and the snapshot it needs)")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        result = measure(args.measure[0], Path(args.measure[1]))
        print(json.dumps({"worker_cpu": _cpu(resource.RUSAGE_CHILDREN)}))
        print(json.dumps(result))
        return 0

    from dsetlog.store.log import LOG_NAME

    src = ensure_log(args.cache, args.events, args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-rebuild-", dir=args.cache))
    try:
        shutil.copyfile(src, work / LOG_NAME)
        size_mb = (work / LOG_NAME).stat().st_size / 1e6
        print(
            f"# {args.events} events, {size_mb:.0f} MB log, {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
            f"load {os.getloadavg()[0]:.1f}; each measurement in a fresh process; cpu: its user+system seconds"
        )
        runs = range(args.runs)
        everything = args.only is None
        if everything:
            print(summarise("decode only", [run_child("decode", work) for _ in runs]), flush=True)
            print(summarise("read only", [run_child("read", work) for _ in runs]), flush=True)
            print(summarise("rebuild", [run_child("rebuild", work) for _ in runs]), flush=True)
        if args.gc_compare:
            print(summarise("rebuild, GC on", [run_child("rebuild-gc-on", work)]), flush=True)
        saves = [run_child("save", work) for _ in (runs if everything else range(1))]
        print(summarise("save snapshot", saves) + f"  ({saves[-1]['mb']:.0f} MB)", flush=True)
        append_tail(work, args.tail)
        if everything:
            snaps = [run_child("snapshot", work) for _ in runs]
            print(
                summarise("from snapshot", snaps) + f"  (+{int(snaps[-1]['tail'])} records of tail)", flush=True
            )
            first = [
                {"seconds": s["first_read_seconds"], "cpu": s["first_read_cpu"], "peak_mb": s["peak_mb"]}
                for s in snaps
            ]
            print(
                summarise("first read", first) + f"  (entries() of a {int(snaps[-1]['entries'])}-entry dataset)"
            )
        checks = [run_child("verify", work) for _ in runs]
        last = checks[-1]
        print(
            summarise("verify", checks, children="the check's child process and its checksum worker")
            + f"  (the {last['checked_mb']:.0f} MB the snapshot stands for, in the "
            f"background; open {min(c['opened'] for c in checks):.2f} s)", flush=True
        )
        print(
            f"{'':<14} a small read meanwhile: p50 {last['p50_during']:.3f} ms, p99 {last['p99_during']:.2f} ms "
            f"({int(last['reads'])} reads); after the check: p50 {last['p50_after']:.3f} ms, "
            f"p99 {last['p99_after']:.2f} ms",
            flush=True,
        )
        if everything:
            idle = [run_child("idle", work) for _ in runs]
            print(summarise("catch_up idle", idle, unit=1e6, fmt="{:.1f} us"), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
