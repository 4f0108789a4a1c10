"""The read model's memory per entry, and the cost of a dataset's first use from a snapshot, for one or more
checkouts of this repository side by side on the same log (issue 15: the columnar read model).

    python bench/bench_memory.py --entries 200000
    python bench/bench_memory.py --entries 1000000 --code /tmp/old-checkout --code .

The log is bench/make_log.py's entries mode (questions ~100 characters, answers ~600, edits, feedback,
regenerations and judge scores), written once into --cache and reused. For each --code (a checkout: its
``projections`` and ``dsetlog`` are imported from there) a fresh process measures:

* fold          : ReadModel.open(use_snapshot=False) with every dataset read: the Python heap it keeps
                  (tracemalloc, after a collection) per entry (an entry with its work item), and the wall time
* snapshot      : its size on disk, saved by that code
* first use     : a new process opens the snapshot and looks up an entry in every dataset: the time of that
                  first read (it decodes the datasets' parts of the snapshot) and the RSS it adds; then the time
                  Datasets.entries() takes per entry, the list of every dataset's views
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_FOLD = r"""
import gc, json, sys, time, tracemalloc
from projections import ReadModel
data = sys.argv[1]
gc.collect()
tracemalloc.start()
t = time.perf_counter()
rm = ReadModel.open(data, use_snapshot=False)
n = sum(rm.datasets.dataset(v.id).entries for v in rm.datasets.datasets())
for v in rm.datasets.datasets():
    rm.datasets.entry(v.id, "")  # every dataset decoded (nothing to decode after a replay)
wall = time.perf_counter() - t
gc.collect()
heap = tracemalloc.get_traced_memory()[0]
tracemalloc.stop()
rm.save_snapshot()
print(json.dumps({"entries": n, "heap": heap, "fold_s": wall, "snapshot": rm.snapshot_path.stat().st_size}))
"""

_FIRST_USE = r"""
import json, sys, time
from projections import ReadModel
def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmRSS:"))
t = time.perf_counter()
rm = ReadModel.open(sys.argv[1])
opened, before = time.perf_counter() - t, rss()
t = time.perf_counter()
for v in rm.datasets.datasets():
    rm.datasets.entry(v.id, "")  # decodes the dataset's part of the snapshot
decoded, added = time.perf_counter() - t, rss() - before
t = time.perf_counter()
n = sum(len(rm.datasets.entries(v.id)) for v in rm.datasets.datasets())
print(json.dumps({"snapshot_used": rm.snapshot_used, "open_s": opened, "first_use_s": decoded, "rss_added": added,
                  "views_us": (time.perf_counter() - t) / n * 1e6}))
"""


def _run(code: Path, script: str, data: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, "-c", script, str(data)], env=env, check=True, capture_output=True,
                         text=True, cwd=code)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--code", action="append", type=Path, help="a checkout to measure (default: this one)")
    parser.add_argument("--cache", type=Path, help="where the log is kept (default /tmp/dsetlog-bench/memory-N)")
    args = parser.parse_args(argv)
    cache = args.cache or Path(f"/tmp/dsetlog-bench/memory-{args.entries}")
    log = cache / "log"
    if not (log / "events.jsonl").exists():
        log.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_log.py"), str(log), "--entries",
                        str(args.entries)], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(f"log: {(log / 'events.jsonl').stat().st_size / 1e6:,.0f} MB, {args.entries:,} entries")
    print(f"{'code':40} {'bytes/entry':>12} {'fold':>8} {'snapshot':>10} {'first use':>10} {'+RSS':>9} "
          f"{'entries()':>10}")
    for code in args.code or [ROOT]:
        data = cache / f"data-{hashlib.sha256(str(code.resolve()).encode()).hexdigest()[:12]}"  # stable: reused
        if data.exists():
            for p in data.rglob("*"):
                if p.is_file() or p.is_symlink():
                    p.unlink()
        (data / "snapshots").mkdir(parents=True, exist_ok=True)
        (data / "events.jsonl").symlink_to(log / "events.jsonl")
        fold = _run(code.resolve(), _FOLD, data)
        first = _run(code.resolve(), _FIRST_USE, data)
        assert first["snapshot_used"], first
        n = int(fold["entries"])  # type: ignore[call-overload]
        print(f"{str(code):40} {int(fold['heap']) / n:12,.0f} {fold['fold_s']:7.1f}s "  # type: ignore[call-overload]
              f"{int(fold['snapshot']) / 1e6:8,.0f} MB {first['first_use_s']:9.2f}s "  # type: ignore[call-overload]
              f"{int(first['rss_added']) / 1e6:6,.0f} MB {first['views_us']:7.2f} us")  # type: ignore[call-overload]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
