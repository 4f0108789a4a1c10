"""Export of a document dataset of up to 1,000,000 entries to parquet and jsonl: seconds and memory.

    python bench/bench_export.py                                  # 100k, 300k and 1M entries; parquet and jsonl
    python bench/bench_export.py --sizes 100000,300000 --formats jsonl

For each size a log is written once into --cache (DatasetCreated, then a SlotQueued and an EntryGenerated
per entry, with 10-20 word questions and 30-60 word answers, appended with EventLog.append_many in batches
of 20,000 and no LLM), then each (size, format) is measured in a fresh interpreter:

* load      : ReadModel.open(use_snapshot=False), every projection folded from the first record
* export    : docgen.export_dataset (the code behind `dset export` and the end of a run) into a scratch dir,
              in files of EXPORT_BATCH entries
* RSS       : after load (what the read model holds), the process peak (getrusage), and the export's own
              growth: the highest RSS sampled every 5 ms during the export minus the RSS just before it.

The export streams, so its own growth should stay flat while the dataset grows tenfold; the read model
itself holds every entry, so the RSS after load grows with the dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DATASET_ID = "dataset_bench_export"
_WORDS = (
    "the harbour lighthouse market ferry museum boatyard tides birds weather festival railway school keeper "
    "granite lamp crossing estuary toll quay vessel register catch cod mackerel crab stall ice plant station "
    "hull oak larch varnish apprentice spring neap metre bay gale fog coastguard channel forecast rowing crew "
    "barge pier branch line passenger cycle path navigation knot engine ketch navy lifeboat which when where"
).split()


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


@contextmanager
def peak_rss(start_mb: float) -> Iterator[list[float]]:
    """The highest RSS (MB) of this process while inside, sampled every 5 ms: ``high[0]`` once out."""
    high = [start_mb]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            high[0] = max(high[0], _rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield high
    finally:
        done.set()
        sampler.join()
        high[0] = max(high[0], _rss_mb())


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB on Linux


# --- the log ----------------------------------------------------------------------------


def write_log(data: Path, entries: int, *, seed: int = 11, batch: int = 20_000) -> None:
    from dsetlog.store.events import DatasetCreated, EntryGenerated, SlotQueued, Usage
    from dsetlog.store.log import EventLog

    rng = random.Random(seed)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choices(_WORDS, k=rng.randint(lo, hi)))

    data.mkdir(parents=True, exist_ok=True)
    with EventLog.in_dir(data) as log:
        log.append(DatasetCreated(dataset_id=DATASET_ID, name="bench-export", kind="documents", source="bench",
                                  project_id="proj_bench", format_type="parquet"))
        for start in range(0, entries, batch):
            events = []
            for i in range(start, min(entries, start + batch)):
                chunk, slot = f"chunk_{i // 3:08d}", i % 3
                item = f"slot_{i:010d}"
                events.append(SlotQueued(dataset_id=DATASET_ID, item_id=item, chunk_id=chunk, slot=slot))
                events.append(EntryGenerated(
                    dataset_id=DATASET_ID, item_id=item, entry_id=f"entry_{i:010d}", question=words(10, 20) + "?",
                    answer=words(30, 60) + ".", category=rng.choice(_WORDS), model="deepseek-chat",
                    provider="deepseek", usage=Usage(prompt_tokens=300, completion_tokens=90), latency_ms=850.0,
                    prompt_name="qa_pairs", prompt_hash="0123456789abcdef", source_chunk=chunk,
                    metadata={"mode": "default", "negative": False, "chunk_length": 1200, "slot": slot}))
            log.append_many(events)


def ensure_log(cache: Path, entries: int) -> Path:
    from dsetlog.store.log import LOG_NAME

    data = cache / f"export-{entries}"
    if not (data / LOG_NAME).exists():
        tmp = cache / f".tmp-export-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.perf_counter()
        write_log(tmp, entries)
        tmp.rename(data)
        print(f"# wrote {entries:,} entries ({(data / LOG_NAME).stat().st_size / 1e6:.0f} MB log) to {data} "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
    return data


# --- one measurement, in its own interpreter ------------------------------------------------


def measure(data: Path, format_type: str) -> dict[str, float]:
    from dsetlog.export.datasets import export_dataset
    from projections.readmodel import ReadModel

    t0 = time.perf_counter()
    rm = ReadModel.open(data, use_snapshot=False)
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_mb()
    out = Path(tempfile.mkdtemp(prefix="bench-export-out-", dir=data.parent))
    with peak_rss(rss_loaded) as high:
        t1 = time.perf_counter()
        files, n = export_dataset(rm, DATASET_ID, data_dir=out, output_dir=".", format_type=format_type)
        export_s = time.perf_counter() - t1
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    shutil.rmtree(out, ignore_errors=True)
    return {"entries": n, "files": len(files), "load_s": load_s, "export_s": export_s, "rss_loaded_mb": rss_loaded,
            "export_growth_mb": high[0] - rss_loaded, "peak_mb": _peak_mb(), "size_mb": size_mb}


def run_child(data: Path, format_type: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--measure", str(data), format_type], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000", help="entries, comma-separated")
    parser.add_argument("--formats", default="parquet,jsonl")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dsetlog-bench")
    parser.add_argument("--measure", nargs=2, metavar=("DATA", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1])))
        return 0

    from dsetlog.export.datasets import EXPORT_BATCH

    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    formats = [f.strip() for f in args.formats.split(",")]
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"# python bench/bench_export.py --sizes {args.sizes} --formats {args.formats}")
    print(f"# {os.cpu_count()} CPUs, python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}; "
          f"files of {EXPORT_BATCH:,} entries; each row in a fresh process")
    header = (f"{'entries':>9}  {'format':<8} {'load s':>7} {'export s':>9} {'entries/s':>10} {'files':>5} "
              f"{'file MB':>8} {'RSS loaded':>11} {'export +MB':>11} {'peak RSS':>9}")
    rows = []
    for n in sizes:
        data = ensure_log(args.cache, n)
        for fmt in formats:
            r = run_child(data, fmt)
            rows.append(f"{n:>9,}  {fmt:<8} {r['load_s']:>7.1f} {r['export_s']:>9.1f} "
                        f"{r['entries'] / r['export_s']:>10,.0f} {int(r['files']):>5} {r['size_mb']:>8.0f} "
                        f"{r['rss_loaded_mb']:>8.0f} MB {r['export_growth_mb']:>8.0f} MB {r['peak_mb']:>6.0f} MB")
            if rows and len(rows) == 1:
                print(header)
            print(rows[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
